//! Where everything lives in Redis. All names start with the configured
//! prefix, so several deployments (or tests) share one Redis without
//! meeting.
//!
//! | key | type | holds | lifetime |
//! |---|---|---|---|
//! | `<prefix>session:<id>` | string | the session's `initialize` parameters (JSON) | TTL, refreshed while an instance holds the session; removed by DELETE |
//! | `<prefix>deleted:<id>` | string | a DELETE happened (tombstone) | four times the TTL |
//! | `<prefix>stream:<stream>` | list | the stream's last events, each `<generation>-<sequence> <server> <retry ms, -, or ! for a gap> <message JSON>` | TTL, refreshed on each write and, while an instance holds its session, by that instance's upkeep; trimmed to the replay capacity |
//! | `<prefix>streams:<id>` | sorted set | the stream keys of session `<id>` (score: last append, µs), at most 128, the standalone one always among them | as its streams; removed by DELETE |
//! | `<prefix>void:<stream>` | set | nonces of appends reported failed (`unsettled`) | TTL |
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

/// The key names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: String) -> Self {
        Self { prefix }
    }

    pub(crate) fn session(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    pub(crate) fn tombstone(&self, id: &str) -> String {
        format!("{}deleted:{id}", self.prefix)
    }

    pub(crate) fn stream(&self, stream: &str) -> String {
        format!("{}stream:{stream}", self.prefix)
    }

    pub(crate) fn void(&self, stream: &str) -> String {
        format!("{}void:{stream}", self.prefix)
    }

    /// The index of a session's streams, for a stream that belongs to a
    /// session.
    pub(crate) fn streams_of(&self, stream: &str) -> Option<String> {
        let (session, _) = stream.split_once(':')?;
        Some(self.session_streams(session))
    }

    pub(crate) fn session_streams(&self, id: &str) -> String {
        format!("{}streams:{id}", self.prefix)
    }

    pub(crate) fn deletions_channel(&self) -> String {
        format!("{}deleted", self.prefix)
    }

    pub(crate) fn standalone_channel(&self) -> String {
        format!("{}standalone", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stream_is_indexed_under_its_session_and_a_stateless_one_is_not() {
        let keys = Keys::new("app:".into());
        assert_eq!(keys.stream("s1:common"), "app:stream:s1:common");
        assert_eq!(
            keys.streams_of("s1:common").as_deref(),
            Some("app:streams:s1")
        );
        assert_eq!(
            keys.streams_of("0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b"),
            None
        );
        assert_eq!(keys.session("s1"), "app:session:s1");
        assert_eq!(keys.tombstone("s1"), "app:deleted:s1");
        assert_eq!(keys.deletions_channel(), "app:deleted");
        assert_eq!(keys.standalone_channel(), "app:standalone");
    }
}
