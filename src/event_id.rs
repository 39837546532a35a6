//! SSE event ids: `index` on the standalone stream, `index/stream` on the
//! stream of one HTTP request, the format rmcp 3.11's local session manager uses, so
//! clients that stored an id keep working after the migration.
//!
//! # Invariant kept here
//!
//! Parsing is total and strict: any string a client may put in
//! `Last-Event-ID` is either exactly the id some event of this crate carried,
//! or an [`EventIdError`]. No sign, no whitespace, no leading zero, no number
//! wider than 64 bits, nothing after the second number: a lenient parse
//! could map two different strings to one id, and a replay would then start
//! at an event the client never saw.
//!
//! A session never parses ids on its hot path: it keeps integer indices and
//! only formats them, once per event sent.

use std::fmt;

/// The identity of one event: its position on its stream, and which HTTP
/// request's stream that is (`None`: the standalone GET stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EventId {
    pub(crate) index: u64,
    pub(crate) stream: Option<u64>,
}

/// Why a `Last-Event-ID` is not an id this crate issued.
///
/// # Example
///
/// ```
/// use mcp_bounded_session::EventIdError;
///
/// let error = EventIdError::Malformed;
/// assert!(error.to_string().contains("Last-Event-ID"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventIdError {
    /// Not of the form `index` or `index/stream` with decimal digits only.
    #[error(
        "malformed Last-Event-ID: expected `<index>` or `<index>/<stream>` in decimal digits, \
         as sent in an event's `id:` field"
    )]
    Malformed,
    /// A number in the id does not fit in 64 bits.
    #[error("Last-Event-ID out of range: its numbers must fit in 64 bits")]
    OutOfRange,
    /// With an event store: the id names an event of another session's
    /// stream (or of a stateless stream), which a session never replays.
    #[error(
        "Last-Event-ID names an event of another session's stream; a session replays \
         only its own events"
    )]
    OtherSession,
}

/// Longest id worth looking at: two 20-digit numbers and a slash.
const MAX_LEN: usize = 41;

impl EventId {
    pub(crate) fn parse(text: &str) -> Result<Self, EventIdError> {
        if text.len() > MAX_LEN {
            return Err(EventIdError::Malformed);
        }
        let (index, stream) = match text.split_once('/') {
            Some((index, stream)) => (index, Some(stream)),
            None => (text, None),
        };
        Ok(Self {
            index: parse_decimal(index)?,
            stream: stream.map(parse_decimal).transpose()?,
        })
    }

    /// The id's text. Formatted by hand: this runs once per event sent or
    /// replayed, and `core::fmt` costs several times more.
    pub(crate) fn to_text(self) -> String {
        let mut digits = [0u8; MAX_LEN];
        let mut start = MAX_LEN;
        if let Some(stream) = self.stream {
            start = write_decimal(stream, &mut digits[..start]);
            start -= 1;
            digits[start] = b'/';
        }
        start = write_decimal(self.index, &mut digits[..start]);
        // Only ASCII digits and '/' were written, so this never defaults.
        std::str::from_utf8(&digits[start..])
            .map(str::to_owned)
            .unwrap_or_default()
    }
}

impl fmt::Display for EventId {
    /// The same text as [`EventId::to_text`], from the one formatter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// Writes `value`'s decimal digits at the end of `out`; returns where they
/// start.
fn write_decimal(mut value: u64, out: &mut [u8]) -> usize {
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return at;
        }
    }
}

/// Digits only (`u64::from_str` would also take a leading `+`), and no
/// leading zero, so that each number has one spelling.
fn parse_decimal(text: &str) -> Result<u64, EventIdError> {
    let canonical = text == "0" || !text.starts_with('0');
    if text.is_empty() || !canonical || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(EventIdError::Malformed);
    }
    text.parse().map_err(|_| EventIdError::OutOfRange)
}

/// One spelling per id: whatever text parses must print back as itself.
/// Run by the fuzz target `replay_ring` and the unit tests.
#[cfg(any(test, fuzzing))]
pub(crate) fn check_one_spelling(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(id) = EventId::parse(text)
    {
        assert_eq!(
            id.to_text(),
            text,
            "parsed {text:?} but it prints otherwise"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_rmcp_and_parses_back() {
        for id in [
            EventId {
                index: 0,
                stream: None,
            },
            EventId {
                index: 17,
                stream: Some(3),
            },
            EventId {
                index: u64::MAX,
                stream: Some(u64::MAX),
            },
        ] {
            let text = id.to_text();
            assert_eq!(text, id.to_string());
            assert_eq!(EventId::parse(&text), Ok(id));
        }
        assert_eq!(
            EventId {
                index: 4,
                stream: Some(9)
            }
            .to_text(),
            "4/9"
        );
    }

    #[test]
    fn rejects_everything_it_did_not_issue() {
        for text in [
            "", "/", "1/", "/1", "-1", "+1", " 1", "1 ", "1/2/3", "1/-2", "1/+2", "0x10", "1.0",
            "١", "1/a", "abc", "1//2", "01", "1/007", "00",
        ] {
            assert_eq!(
                EventId::parse(text),
                Err(EventIdError::Malformed),
                "{text:?}"
            );
        }
        assert_eq!(
            EventId::parse("18446744073709551616"),
            Err(EventIdError::OutOfRange)
        );
        assert_eq!(
            EventId::parse("1/18446744073709551616"),
            Err(EventIdError::OutOfRange)
        );
        assert_eq!(
            EventId::parse(&"9".repeat(10_000)),
            Err(EventIdError::Malformed)
        );
    }

    #[test]
    fn every_accepted_text_prints_back_as_itself() {
        for text in [
            "0",
            "7",
            "10/0",
            "18446744073709551615/3",
            "00",
            "1/01",
            "+1",
            "",
        ] {
            check_one_spelling(text.as_bytes());
        }
    }
}
