//! Ids of events kept in this crate's event stores:
//! `<stream>#<generation>-<sequence>`.
//!
//! # Invariant kept here
//!
//! An id names one event and says where it lives: its stream (so a replay
//! finds that stream without a scan and reads nothing of another), the
//! stream's generation (a stream dropped and started again under the same
//! name gets a new one, so an old id can never point into the new events)
//! and the event's sequence number in that generation (1, 2, 3, ...: a
//! contiguous count, so a replay can tell that an event it should start
//! after was trimmed away). Parsing is strict and total: a string is either
//! exactly the id some event carried, or an error, never a nearby id.

use std::fmt;

use super::StoreError;

/// Longest stream name a store accepts: rmcp's names are UUIDs (36
/// characters) and this crate's are a session id, a colon and a suffix.
pub(crate) const MAX_STREAM_LEN: usize = 128;

/// The parts of a stored event's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredEventId<'a> {
    pub(crate) stream: &'a str,
    pub(crate) generation: u64,
    pub(crate) sequence: u64,
}

impl<'a> StoredEventId<'a> {
    /// Parses an id as sent in an event's `id:` field.
    pub(crate) fn parse(text: &'a str) -> Result<Self, StoreError> {
        let malformed = || StoreError::MalformedEventId;
        let (stream, position) = text.rsplit_once('#').ok_or_else(malformed)?;
        let (generation, sequence) = position.split_once('-').ok_or_else(malformed)?;
        if stream.is_empty() || stream.len() > MAX_STREAM_LEN {
            return Err(malformed());
        }
        let id = Self {
            stream,
            generation: parse_number(generation).ok_or_else(malformed)?,
            sequence: parse_number(sequence).ok_or_else(malformed)?,
        };
        // Sequences start at 1 in every generation.
        if id.sequence == 0 {
            return Err(malformed());
        }
        Ok(id)
    }
}

impl fmt::Display for StoredEventId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}-{}", self.stream, self.generation, self.sequence)
    }
}

/// Whether a store accepts `stream` as a stream name: not empty, not longer
/// than [`MAX_STREAM_LEN`] (an id must stay short enough to parse).
pub(crate) fn check_stream_name(stream: &str) -> Result<(), StoreError> {
    if stream.is_empty() || stream.len() > MAX_STREAM_LEN {
        return Err(StoreError::InvalidStreamName {
            length: stream.len(),
        });
    }
    Ok(())
}

/// Decimal digits only, no leading zero (one spelling per number), at most
/// 64 bits.
fn parse_number(text: &str) -> Option<u64> {
    let well_formed = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if well_formed { text.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_parses_back_to_its_parts() {
        let id = StoredEventId {
            stream: "0b7e1c2a-session:common",
            generation: 1_764_000_000_123,
            sequence: 42,
        };
        let text = id.to_string();
        assert_eq!(text, "0b7e1c2a-session:common#1764000000123-42");
        assert_eq!(StoredEventId::parse(&text).unwrap(), id);
    }

    #[test]
    fn a_stream_name_may_hold_the_separators() {
        let id = StoredEventId::parse("a#b-c#7-3").unwrap();
        assert_eq!((id.stream, id.generation, id.sequence), ("a#b-c", 7, 3));
    }

    #[test]
    fn anything_but_an_issued_spelling_is_malformed() {
        for text in [
            "",
            "#1-1",
            "s",
            "s#",
            "s#1",
            "s#1-",
            "s#-1",
            "s#01-1",
            "s#1-01",
            "s#1-0",
            "s#+1-1",
            "s#1-1 ",
            "s# 1-1",
            "s#1-18446744073709551616",
            "s#1-2-3",
            "s#1/2",
        ] {
            assert!(
                matches!(
                    StoredEventId::parse(text),
                    Err(StoreError::MalformedEventId)
                ),
                "{text:?} parsed"
            );
        }
        let long = format!("{}#1-1", "x".repeat(MAX_STREAM_LEN + 1));
        assert!(StoredEventId::parse(&long).is_err());
        let longest = format!("{}#0-18446744073709551615", "x".repeat(MAX_STREAM_LEN));
        assert!(StoredEventId::parse(&longest).is_ok());
    }

    #[test]
    fn stream_names_are_bounded() {
        assert!(check_stream_name("").is_err());
        assert!(check_stream_name(&"x".repeat(MAX_STREAM_LEN + 1)).is_err());
        assert!(check_stream_name(&"x".repeat(MAX_STREAM_LEN)).is_ok());
    }
}
