//! Where everything lives in Redis. All names start with the configured
//! prefix, so several deployments (or tests) share one Redis without
//! meeting; the prefix holds no `{` or `}` (checked when the stores
//! connect), so the hash tag below is the first one of every key.
//!
//! | key | type | holds | lifetime |
//! |---|---|---|---|
//! | `<prefix>{<id>}:session` | string | the session's `initialize` parameters (JSON) | TTL, refreshed while an instance holds the session; removed by DELETE |
//! | `<prefix>{<id>}:deleted` | string | a DELETE happened (tombstone) | four times the TTL |
//! | `<prefix>{<id>}:stream:<suffix>` | list | the events of the session's stream `<id>:<suffix>`, each `<generation>-<sequence> <server> <retry ms, -, or ! for a gap> <message JSON>` | TTL, refreshed on each write and, while an instance holds its session, by that instance's upkeep; trimmed to the replay capacity |
//! | `<prefix>{<id>}:streams` | sorted set | the stream keys of session `<id>` (score: last append, µs), at most 128, the standalone one always among them | as its streams; removed by DELETE |
//! | `<prefix>{<id>}:requests` | hash | the session's requests whose answer is not stored yet: field, their stream's suffix; value, `<instance> <request id JSON>` (`events::lost`) | as its streams; removed by DELETE |
//! | `<prefix>{<id>}:void:<suffix>` | set | nonces of appends to `<id>:<suffix>` reported failed (`unsettled`) | TTL |
//! | `<prefix>{<stream>}:stream`, `<prefix>{<stream>}:void` | list, set | the same for a stateless stream (protocol 2026-07-28, no session) | TTL |
//! | `<prefix>{<instance>}:live` | string | instance `<instance>` runs (`events::lost`) | the request-lost delay, refreshed every third of it; removed when a drain ends |
//!
//! and two pub/sub channels: `<prefix>deleted`, carrying the id of each
//! DELETEd session to every instance, and `<prefix>standalone`, carrying
//! each event stored on a session's standalone stream (`<id>:common`) as
//! `<instance> <stream> <entry>`, so another instance's GET gets it live
//! (`relay`).
//!
//! A stream belongs to session `<id>` when its name is `<id>:<suffix>`
//! (the manager names sessions' streams so); rmcp's stateless streams are
//! UUIDs and belong to none.
//!
//! # Invariant kept here
//!
//! Every key of a session carries the session's hash tag `{<id>}`, every
//! key of a stateless stream its stream's `{<stream>}`, and an instance's
//! liveness key its instance's: Redis Cluster hashes only the tag, so the
//! keys one script or one command touches are always in one slot, on one node, and move together when the
//! slot migrates. A tag is the name as it is, unless it holds `{`, `}` or
//! `%` (percent-escaped then) or is empty (`%`): an empty tag, or one cut
//! short by a `}`, would hash the keys of one stream to different slots.
//! The escaping is one-to-one, so two names never share a key.
//!
//! There is no key over all sessions: what spans sessions (the DELETEs,
//! the standalone notifications) travels over pub/sub, which a cluster
//! carries to every node (`deletions`).

use std::fmt::Write as _;

/// The slots of Redis Cluster.
pub(crate) const SLOTS: u16 = 16_384;

/// The key names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: String) -> Self {
        Self { prefix }
    }

    /// `<prefix>{<tag>}<rest>`.
    fn tagged(&self, tag: &str, rest: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + tag.len() + rest.len() + 2);
        key.push_str(&self.prefix);
        key.push('{');
        push_tag(&mut key, tag);
        key.push('}');
        key.push_str(rest);
        key
    }

    pub(crate) fn session(&self, id: &str) -> String {
        self.tagged(id, ":session")
    }

    pub(crate) fn tombstone(&self, id: &str) -> String {
        self.tagged(id, ":deleted")
    }

    pub(crate) fn stream(&self, stream: &str) -> String {
        self.of_stream(stream, ":stream")
    }

    pub(crate) fn void(&self, stream: &str) -> String {
        self.of_stream(stream, ":void")
    }

    /// A key of `stream` of the kind `kind`: under its session's tag if it
    /// belongs to one, else under its own.
    fn of_stream(&self, stream: &str, kind: &str) -> String {
        match stream.split_once(':') {
            Some((session, suffix)) => self.tagged(session, &format!("{kind}:{suffix}")),
            None => self.tagged(stream, kind),
        }
    }

    /// The index of a session's streams, for a stream that belongs to a
    /// session.
    pub(crate) fn streams_of(&self, stream: &str) -> Option<String> {
        let (session, _) = stream.split_once(':')?;
        Some(self.session_streams(session))
    }

    /// The unfinished requests of the session `stream` belongs to
    /// (`events::lost`); only for a stream that belongs to a session.
    pub(crate) fn requests_of(&self, stream: &str) -> String {
        let session = stream
            .split_once(':')
            .map_or(stream, |(session, _)| session);
        self.session_requests(session)
    }

    pub(crate) fn session_requests(&self, id: &str) -> String {
        self.tagged(id, ":requests")
    }

    /// An instance's liveness key (`events::lost`), under the instance's
    /// own tag.
    pub(crate) fn live(&self, instance: &str) -> String {
        self.tagged(instance, ":live")
    }

    pub(crate) fn session_streams(&self, id: &str) -> String {
        self.tagged(id, ":streams")
    }

    pub(crate) fn deletions_channel(&self) -> String {
        format!("{}deleted", self.prefix)
    }

    pub(crate) fn standalone_channel(&self) -> String {
        format!("{}standalone", self.prefix)
    }
}

/// The Redis Cluster slot of the keys of session `id`.
pub(crate) fn session_slot(id: &str) -> u16 {
    let mut tag = String::with_capacity(id.len());
    push_tag(&mut tag, id);
    slot(tag.as_bytes())
}

/// The Redis Cluster slot of the keys of `stream` (its session's, if it
/// belongs to one).
pub(crate) fn stream_slot(stream: &str) -> u16 {
    session_slot(
        stream
            .split_once(':')
            .map_or(stream, |(session, _)| session),
    )
}

/// The Redis Cluster slot of `key`: of its hash tag, the text between its
/// first `{` and the `}` after it, if not empty; else of the whole key.
pub(crate) fn key_slot(key: &str) -> u16 {
    let tag = key
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(tag, _)| tag)
        .filter(|tag| !tag.is_empty());
    slot(tag.unwrap_or(key).as_bytes())
}

/// Appends the tag text of `name`: itself, with `%`, `{` and `}`
/// percent-escaped, or `%` for an empty name.
fn push_tag(key: &mut String, name: &str) {
    if name.is_empty() {
        key.push('%');
        return;
    }
    for c in name.chars() {
        match c {
            '%' | '{' | '}' => {
                let _ = write!(key, "%{:02X}", c as u32);
            }
            c => key.push(c),
        }
    }
}

/// The slot of a hash tag's text: CRC16 (XMODEM) modulo [`SLOTS`], as
/// Redis Cluster computes it.
fn slot(tag: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in tag {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stream_is_indexed_under_its_session_and_a_stateless_one_is_not() {
        let keys = Keys::new("app:".into());
        assert_eq!(keys.stream("s1:common"), "app:{s1}:stream:common");
        assert_eq!(keys.void("s1:common"), "app:{s1}:void:common");
        assert_eq!(
            keys.streams_of("s1:common").as_deref(),
            Some("app:{s1}:streams")
        );
        let stateless = "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b";
        assert_eq!(keys.streams_of(stateless), None);
        assert_eq!(
            keys.stream(stateless),
            format!("app:{{{stateless}}}:stream")
        );
        assert_eq!(keys.void(stateless), format!("app:{{{stateless}}}:void"));
        assert_eq!(keys.session("s1"), "app:{s1}:session");
        assert_eq!(keys.tombstone("s1"), "app:{s1}:deleted");
        assert_eq!(keys.requests_of("s1:x9"), "app:{s1}:requests");
        assert_eq!(keys.live("i1"), "app:{i1}:live");
        assert_eq!(keys.deletions_channel(), "app:deleted");
        assert_eq!(keys.standalone_channel(), "app:standalone");
    }

    #[test]
    fn tags_escape_braces_and_are_never_empty() {
        let keys = Keys::new("p:".into());
        assert_eq!(keys.stream("a}b"), "p:{a%7Db}:stream");
        assert_eq!(keys.stream("{x}"), "p:{%7Bx%7D}:stream");
        assert_eq!(keys.stream("100%"), "p:{100%25}:stream");
        assert_eq!(keys.stream(":x"), "p:{%}:stream:x");
        // One-to-one: the escaped form of one name is not another's.
        assert_ne!(keys.stream("%7D"), keys.stream("}"));
        assert_ne!(keys.stream("%"), keys.stream(":"));
    }

    #[test]
    fn slots_are_redis_clusters() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"foo"), 12_182);
        assert_eq!(slot(b"123456789"), 12_739);
        assert_eq!(slot(b"user1000"), 3_443);
        let id = "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b";
        assert_eq!(stream_slot(&format!("{id}:common")), session_slot(id));
        assert_eq!(stream_slot(id), session_slot(id));
        let keys = Keys::new("p:".into());
        assert_eq!(key_slot(&keys.session(id)), session_slot(id));
        assert_eq!(key_slot("foo"), 12_182);
        assert_eq!(key_slot("{}foo"), slot(b"{}foo"));
    }
}
