//! Live delivery of a session's standalone notifications across
//! instances.
//!
//! Without sticky routing, the copy of a session that sends a notification
//! to its standalone stream (`<id>:common`) may sit on another instance
//! than the client's `GET`. The append script (`events`) publishes each
//! event it stores on a standalone stream, in the same atomic step, on
//! `<prefix>standalone` as `<instance> <stream> <entry>`; each instance's
//! pub/sub listener (`deletions`) hands those of *other* instances to its
//! own copy of the session, if it holds one, which queues the event on its
//! standalone stream under the id the writer got.
//!
//! # Invariants kept here
//!
//! - An event is stored once: the receiving copy queues it as already
//!   stored and never stores it again; an instance ignores its own
//!   publications (tagged with its random instance id), whose events its
//!   copy queued when their append returned.
//! - On each instance, every event reaches the standalone stream at most
//!   once, in the order it is routed there: pub/sub hands each publication
//!   to a subscription once, in publish order, which for one stream is the
//!   list's (id) order, since appending and publishing are one script.
//!   Across instances the live order may differ from the id order: this
//!   instance queues its own event when its append returns, another's when
//!   the publication arrives on the listener's connection. A client that
//!   resumes with `Last-Event-ID` gets the list's order from the store.
//! - Nothing waits and nothing queues between the listener and a session:
//!   a copy whose client has a full queue drops the event (it stays
//!   replayable by id from the store; logged at most once per
//!   [`QUIET_PERIOD`], with the count, so a stalled client cannot flood
//!   the log). A publication for a session this
//!   instance does not hold costs a split of its head (an instance id and
//!   a stream name, at most about 170 bytes) and one map lookup; its event
//!   is not decoded. (redis-rs queues what the socket delivered until the
//!   listener takes it; the listener takes each message without waiting.)
//! - The copy keeps the event in its standalone stream's recent ring, so
//!   a shadow taking over, or a plain `GET` on this instance after this
//!   instance's response ended, replays what that response did not
//!   deliver. Which instance's response a client read last is known to
//!   none: a plain `GET` on another instance than that one replays what
//!   that instance's own previous response did not deliver, some of which
//!   the client may have read elsewhere (a `Last-Event-ID` avoids that).
//! - Delivery is at most once (Redis pub/sub): an event published while
//!   this instance's subscription is down is not delivered live here; the
//!   client gets it by resuming with a `Last-Event-ID` before it.

use std::time::Duration;

use parking_lot::Mutex;
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::time::Instant;

use super::Inner;
use super::events::Entry;
use crate::store::is_session_id;

/// The suffix of a session's standalone stream (rmcp's name, see
/// `session::event_stream`).
const STANDALONE_SUFFIX: &str = ":common";

/// At most one log line per this long about events dropped for full
/// queues.
const QUIET_PERIOD: Duration = Duration::from_secs(10);

/// Events dropped because a client's queue was full: when the last line
/// about them was logged, and how many since.
#[derive(Debug, Default)]
pub(super) struct Drops(Mutex<(Option<Instant>, u64)>);

impl Drops {
    fn dropped(&self, session: &str) {
        let mut drops = self.0.lock();
        drops.1 += 1;
        if drops.0.is_some_and(|at| at.elapsed() < QUIET_PERIOD) {
            return;
        }
        let count = std::mem::take(&mut drops.1);
        drops.0 = Some(Instant::now());
        drop(drops);
        tracing::warn!(
            session_id = session,
            count,
            "standalone notifications from another instance not sent live: their client's \
             queue was full (they replay by Last-Event-ID)"
        );
    }
}

/// The session whose standalone stream `stream` is, if it is one.
fn session_of(stream: &str) -> Option<&str> {
    stream
        .strip_suffix(STANDALONE_SUFFIX)
        .filter(|id| is_session_id(id))
}

/// The head of the publications of events appended to `stream`, if other
/// instances are to deliver them: those of a session's standalone stream.
/// The append script publishes only the events with a message (a
/// message-less one is a `retry` hint for the response it was sent on,
/// meaningless elsewhere).
pub(super) fn publication_head(inner: &Inner, stream: &str) -> Option<String> {
    session_of(stream).map(|_| format!("{} {stream}", inner.instance))
}

/// Hands a publication of another instance to this instance's copy of its
/// session, if it holds one. Never waits.
pub(super) fn deliver(inner: &Inner, payload: &[u8]) {
    let mut parts = payload.splitn(3, |byte| *byte == b' ');
    let (Some(instance), Some(stream), Some(entry)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    if instance == inner.instance.as_bytes() {
        return;
    }
    let Some(session) = std::str::from_utf8(stream).ok().and_then(session_of) else {
        return;
    };
    let Some(host) = inner.host() else {
        return;
    };
    let Some(handle) = host.session(&SessionId::from(session)) else {
        return;
    };
    let stream = format!("{session}{STANDALONE_SUFFIX}");
    let event = std::str::from_utf8(entry)
        .ok()
        .and_then(Entry::parse)
        .filter(|entry| !entry.is_gap())
        .map(|entry| entry.to_event(&stream));
    let Some(Ok(event)) = event else {
        tracing::debug!(
            session_id = session,
            "unreadable standalone event from another instance; ignored"
        );
        return;
    };
    if !handle.push_stored_elsewhere(event) {
        inner.relay_drops.dropped(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sessions_standalone_stream_is_relayed() {
        let id = "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b";
        assert_eq!(session_of(&format!("{id}:common")), Some(id));
        for other in [
            id.to_owned(),
            format!("{id}:0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1c"),
            "x:common".to_owned(),
            ":common".to_owned(),
        ] {
            assert_eq!(session_of(&other), None, "{other:?}");
        }
    }
}
