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
//!
//! # On a Redis Cluster: classic pub/sub, not sharded
//!
//! The scripts `PUBLISH` on the node of the session's slot; a cluster
//! broadcasts every classic publication over its bus to every node, so
//! the listener subscribes (`SUBSCRIBE`) on any one node, the first of the
//! nodes given that answers, and moves to the next when that one fails.
//! Sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, Redis 7.0) was weighed and
//! left:
//!
//! - *Cost.* A classic publication crosses the bus to every node, once per
//!   node whatever the subscribers; a sharded one stays on the shard of
//!   its channel's slot. The traffic here is one message per DELETE and
//!   per standalone notification, small next to the scripts that produce
//!   them. But a shard channel lives in one slot: for every instance to
//!   hear every session, each instance would subscribe to one channel per
//!   slot in use (up to 16,384, on every primary, moved by hand at each
//!   resharding), or the sessions' publications would go to a few fixed
//!   channels, whose shards would then carry them all, with their
//!   scripts then no longer able to publish them (a script may only
//!   `SPUBLISH` on its own slot).
//! - *Ordering.* What one node publishes reaches a subscriber on another
//!   node in publish order (one bus link each way); a stream's
//!   publications all come from its slot's primary, so they keep the
//!   stream's order (`relay`), as on a single Redis. During a slot's
//!   migration or a failover, two nodes may publish for one stream, and
//!   an event published by the new owner may overtake one of the old
//!   owner's; the ids tell the client the order, and a replay gives the
//!   store's.
//! - *The subscribed node failing.* Classic: the connection drops, the
//!   listener subscribes on the next node given, and what was published
//!   in between is missed, as in a single Redis's outage (the upkeep's
//!   round at the reconnection finds DELETEs by their tombstones; missed
//!   notifications replay by id). Sharded: the same per shard, plus the
//!   forced unsubscribe at every slot migration.
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
    // The node subscribed on: the next one after each failure.
    let mut node: usize = 0;
    loop {
        let Some((client, channel)) = inner.upgrade().map(|inner| {
            let keys = &inner.keys;
            (
                inner.subscribers[node % inner.subscribers.len()].clone(),
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
        node = node.wrapping_add(1);
        if let Some(inner) = inner.upgrade() {
            inner
                .errors
                .lost("subscribe to DELETEs and notifications", &error);
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
