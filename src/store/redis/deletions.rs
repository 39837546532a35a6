//! The pub/sub listener: one subscription per instance, to the prefix's
//! `deleted` channel (DELETEs between instances: this instance ends its
//! copy of every session announced there) and to its `standalone` channel
//! (other instances' standalone notifications, handed to this instance's
//! copies: `relay`).
//!
//! Delivery is at most once (Redis pub/sub): a DELETE published while this
//! instance's subscription is down is not seen here, so after each
//! reconnection the listener asks the upkeep for a round at once, which
//! finds such sessions by their tombstone. A standalone notification
//! missed so is replayed by id from the store (see `relay`).
//!
//! Each message is handled without waiting, so one session (a slow
//! client, say) never holds up the others' messages.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Inner, RESPONSE_TIMEOUT, relay};

/// The longest wait between two attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Listens until the stores are dropped, resubscribing after each failure
/// with a backoff.
pub(super) async fn listen(
    inner: Weak<Inner>,
    shutdown: CancellationToken,
    upkeep_now: Arc<Notify>,
) {
    let mut failures: u32 = 0;
    loop {
        let Some((client, channel)) = inner.upgrade().map(|inner| {
            let keys = &inner.keys;
            (
                inner.client.clone(),
                [keys.deletions_channel(), keys.standalone_channel()],
            )
        }) else {
            return;
        };
        let subscribe = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel[..]).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let error = match tokio::time::timeout(RESPONSE_TIMEOUT, subscribe).await {
            Ok(Ok(pubsub)) => {
                if failures > 0 {
                    upkeep_now.notify_one();
                }
                failures = 0;
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        message = messages.next() => {
                            let Some(message) = message else { break };
                            let Some(inner) = inner.upgrade() else { return };
                            if message.get_channel_name() == channel[1] {
                                relay::deliver(&inner, message.get_payload_bytes());
                                continue;
                            }
                            // The entry in `held` stays: if a restore is
                            // registering this session right now, the close
                            // finds nothing, and the upkeep's next round
                            // finds the tombstone and ends the late copy.
                            if let Ok(id) = message.get_payload::<String>()
                                && let Some(host) = inner.host()
                            {
                                host.close_deleted_elsewhere(&id.into());
                            }
                        }
                    }
                }
                "the subscription's connection was lost".to_owned()
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no answer in time".to_owned(),
        };
        failures = failures.saturating_add(1);
        if let Some(inner) = inner.upgrade() {
            inner
                .errors
                .failed("subscribe to DELETEs and notifications", &error);
        }
        let backoff = Duration::from_millis(100)
            .saturating_mul(2u32.saturating_pow(failures.min(16)))
            .min(MAX_BACKOFF);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}
