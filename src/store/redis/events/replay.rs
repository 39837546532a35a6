//! Replaying a stream after an id: only what was kept after it, complete or
//! refused, and, for a request whose instance is gone, the answer saying
//! so (`lost`).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use rmcp::model::ServerJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::ServerSseMessage;

use super::super::unsettled::SERVER;
use super::RedisEventStore;
use crate::store::{StoreError, StoredEventId};

/// Reads a stream's kept entries, the server's identity and, for a request
/// stream (KEYS[2]: its session's unfinished requests, ARGV[1]: the
/// stream's field there), the record of its request if it is unfinished,
/// as `{server, record or "", entries...}`. Only reads: a replay works on
/// a replica too, and the upkeep keeps a held session's streams alive.
static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
{SERVER}
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local record = ''
if #KEYS == 2 then record = redis.call('HGET', KEYS[2], ARGV[1]) or '' end
table.insert(entries, 1, record)
table.insert(entries, 1, server)
return entries
"
    ))
});
/// One kept entry, parsed.
pub(in super::super) struct Entry<'a> {
    generation: u64,
    sequence: u64,
    /// The start of the `run_id` of the server that wrote it.
    server: &'a str,
    /// A gap: an event went to the client without an id here (`unsettled`).
    gap: bool,
    retry: Option<Duration>,
    message: &'a str,
}

impl<'a> Entry<'a> {
    /// `<generation>-<sequence> <server> <retry ms, - or ! for a gap>
    /// <message JSON or nothing>`.
    pub(in super::super) fn parse(text: &'a str) -> Option<Self> {
        let (id, rest) = text.split_once(' ')?;
        let (server, rest) = rest.split_once(' ')?;
        let (retry, message) = rest.split_once(' ')?;
        let (generation, sequence) = id.split_once('-')?;
        Some(Self {
            generation: generation.parse().ok()?,
            sequence: sequence.parse().ok()?,
            server,
            gap: retry == "!",
            retry: match retry {
                "-" | "!" => None,
                ms => Some(Duration::from_millis(ms.parse().ok()?)),
            },
            message,
        })
    }
}

impl Entry<'_> {
    /// The event this entry of `stream` holds, under its id.
    pub(in super::super) fn to_event(&self, stream: &str) -> Result<ServerSseMessage, StoreError> {
        let mut event = ServerSseMessage::default();
        if !self.message.is_empty() {
            let message: ServerJsonRpcMessage = serde_json::from_str(self.message)?;
            event.message = Some(Arc::new(message));
        }
        event.retry = self.retry;
        event.event_id = Some(format!("{stream}#{}-{}", self.generation, self.sequence));
        Ok(event)
    }

    /// A gap left by a failed append (`unsettled`), no event.
    pub(in super::super) fn is_gap(&self) -> bool {
        self.gap
    }
}

impl RedisEventStore {
    /// The kept events after `last_event_id`, then, if its stream's
    /// request is unfinished and the instance serving it is gone, the
    /// answer saying the request was lost (`lost`).
    pub(super) async fn replay(
        &self,
        last_event_id: &str,
    ) -> Result<Vec<ServerSseMessage>, StoreError> {
        let id = StoredEventId::parse(last_event_id)?;
        let inner = &self.inner;
        // Appends of this instance that failed on this stream leave their
        // gap first, so this replay cannot repeat or skip them.
        inner.settle(id.stream).await?;
        let mut invocation = REPLAY.key(inner.keys.stream(id.stream));
        let field = super::lost::request_stream_field(id.stream);
        if let Some(field) = field {
            invocation.key(inner.keys.requests_of(id.stream)).arg(field);
        }
        let mut connection = inner.connection.clone();
        let mut kept: Vec<String> = inner
            .call(
                "replay_events_after",
                inner.stream_slot(id.stream),
                invocation.invoke_async(&mut connection),
            )
            .await?;
        let unknown = || StoreError::UnknownEvent(last_event_id.to_owned());
        if kept.len() < 2 {
            return Err(unknown());
        }
        let server = kept.remove(0);
        let record = kept.remove(0);
        let entries = kept
            .iter()
            .map(|text| Entry::parse(text).ok_or_else(unknown))
            .collect::<Result<Vec<_>, _>>()?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Err(unknown());
        };
        // Written by another server (Redis restarted, or a replica took
        // over): events after the newest kept may have been sent and lost.
        if first.generation != id.generation || last.sequence < id.sequence || last.server != server
        {
            return Err(unknown());
        }
        if first.sequence > id.sequence.saturating_add(1) {
            return Err(StoreError::EventTrimmed {
                id: last_event_id.to_owned(),
                oldest_kept: first.sequence,
            });
        }
        let after = entries.iter().filter(|entry| entry.sequence > id.sequence);
        if after.clone().any(|entry| entry.gap) {
            return Err(StoreError::ReplayGap(last_event_id.to_owned()));
        }
        let mut events = after
            .map(|entry| entry.to_event(id.stream))
            .collect::<Result<Vec<_>, _>>()?;
        if !record.is_empty() {
            // Redis failing on this part costs the answer, not the replay:
            // the next resume looks again.
            match self.answer_if_lost(id.stream, &record).await {
                Ok(Some(answer)) => events.push(answer),
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(stream = id.stream, %error, "could not tell whether a request was lost");
                }
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_parses_into_its_parts() {
        let entry = Entry::parse("1795646469674123-7 ab12 3000 {\"a\": 1}").unwrap();
        assert_eq!(
            (entry.generation, entry.sequence, entry.server, entry.gap),
            (1_795_646_469_674_123, 7, "ab12", false)
        );
        assert_eq!(entry.retry, Some(Duration::from_secs(3)));
        assert_eq!(entry.message, "{\"a\": 1}");
        let priming = Entry::parse("5-1 ab12 - ").unwrap();
        assert_eq!((priming.retry, priming.message), (None, ""));
        let gap = Entry::parse("5-2 ab12 ! ").unwrap();
        assert!(gap.gap);
        for bad in [
            "",
            "5-1",
            "5-1 ab12 -",
            "x-1 ab12 - ",
            "5 ab12 - ",
            "5-1 ab12 x {}",
            "5-1 - ",
        ] {
            assert!(Entry::parse(bad).is_none(), "{bad:?}");
        }
    }
}
