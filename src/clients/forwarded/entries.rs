//! The entries of one forwarding header, right to left, without allocating.
//!
//! # Invariant kept here
//!
//! How an entry is read depends only on the bytes to its right. The lines
//! are taken last first and each is scanned from its end, so nothing a
//! sender writes to the left of a proxy's entry (an unclosed quote, a stray
//! separator, garbage) can change where that entry starts or what it says;
//! it can only make the sender's own entries unreadable. A forward scan
//! would not have this property: an unclosed quote opened by the sender
//! swallows every entry the proxies append after it.
//!
//! Only as many entries are read as the caller asks for, so a long header
//! costs the walk up to its first untrusted entry, not its whole length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderValue;
use http::header::ValueIter;

/// One hop: the address a proxy wrote, or `None` for an entry that is not
/// one (`unknown`, an obfuscated identifier, a `Forwarded` element without
/// `for`, broken quoting, garbage).
pub(super) type Entry = Option<IpAddr>;

/// Which header's syntax the lines follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Syntax {
    /// `X-Forwarded-For`: comma-separated addresses.
    XForwardedFor,
    /// RFC 7239 `Forwarded`: comma-separated elements of `;`-separated
    /// `name=value` pairs, values possibly quoted strings.
    Forwarded,
}

/// The entries of a header's lines, last first (a proxy may append a line
/// instead of extending the last one; both mean the same list).
pub(super) struct Entries<'a> {
    syntax: Syntax,
    lines: ValueIter<'a, HeaderValue>,
    /// What is left of the current line, its entries not yet returned.
    rest: Option<&'a [u8]>,
}

impl<'a> Entries<'a> {
    pub(super) fn new(syntax: Syntax, lines: ValueIter<'a, HeaderValue>) -> Self {
        Self {
            syntax,
            lines,
            rest: None,
        }
    }
}

impl Iterator for Entries<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            let line = match self.rest {
                Some(line) => line,
                None => self.lines.next_back()?.as_bytes(),
            };
            let (rest, element) = match self.syntax {
                Syntax::XForwardedFor => split_last(line, b','),
                Syntax::Forwarded => match split_last_outside_quotes(line) {
                    Some(split) => split,
                    // A quote the sender left open: the rest of the line is
                    // one unreadable entry.
                    None => {
                        self.rest = None;
                        return Some(None);
                    }
                },
            };
            self.rest = rest;
            let element = trim(element);
            // Empty list elements are ignored (RFC 9110, section 5.6.1).
            if element.is_empty() {
                continue;
            }
            return Some(match self.syntax {
                Syntax::XForwardedFor => parse_node(element),
                Syntax::Forwarded => forwarded_for(element),
            });
        }
    }
}

/// The part after the last `separator` and the part before it (`None` if
/// there was no separator, so the line is used up).
fn split_last(line: &[u8], separator: u8) -> (Option<&[u8]>, &[u8]) {
    match line.iter().rposition(|&byte| byte == separator) {
        Some(index) => (Some(&line[..index]), &line[index + 1..]),
        None => (None, line),
    }
}

/// [`split_last`] at the last comma outside quoted strings, scanning from
/// the right; `None` if a quoted string is still open at the line's start.
fn split_last_outside_quotes(line: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let mut quoted = false;
    let mut index = line.len();
    while index > 0 {
        index -= 1;
        match line[index] {
            b'"' if quoted => {
                // Escaped by an odd run of backslashes before it; a run
                // starts fresh after any other byte, so counting it is
                // exact.
                let run = line[..index]
                    .iter()
                    .rev()
                    .take_while(|&&byte| byte == b'\\')
                    .count();
                if run % 2 == 0 {
                    quoted = false;
                } else {
                    index -= run;
                }
            }
            b'"' => quoted = true,
            b',' if !quoted => return Some((Some(&line[..index]), &line[index + 1..])),
            _ => {}
        }
    }
    (!quoted).then_some((None, line))
}

/// The address in a `Forwarded` element's `for` parameter.
fn forwarded_for(element: &[u8]) -> Entry {
    let mut found = None;
    let mut rest = Some(element);
    while let Some(text) = rest {
        let (pair, after) = split_first_outside_quotes(text, b';')?;
        rest = after;
        let Some(equals) = pair.iter().position(|&byte| byte == b'=') else {
            continue;
        };
        if !trim(&pair[..equals]).eq_ignore_ascii_case(b"for") {
            continue;
        }
        // A parameter occurs at most once per element (RFC 7239, 4).
        if found.is_some() {
            return None;
        }
        found = Some(trim(&pair[equals + 1..]));
    }
    let value = found?;
    let mut buffer = [0; MAX_NODE];
    parse_node(unquote(value, &mut buffer)?)
}

/// The longest node read: a bracketed IPv6 address with an IPv4 tail
/// (47 bytes) and a port (6); longer values are no address.
const MAX_NODE: usize = 64;

/// The part before the first `separator` outside quoted strings and what
/// follows it; `None` if a quoted string is not closed.
fn split_first_outside_quotes(text: &[u8], separator: u8) -> Option<(&[u8], Option<&[u8]>)> {
    let (mut quoted, mut escaped) = (false, false);
    for (index, &byte) in text.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && byte == b'\\' {
            escaped = true;
        } else if byte == b'"' {
            quoted = !quoted;
        } else if !quoted && byte == separator {
            return Some((&text[..index], Some(&text[index + 1..])));
        }
    }
    (!quoted).then_some((text, None))
}

/// A token as is, or a quoted string's content with its escapes resolved
/// into `buffer`; `None` if it does not fit or is malformed.
fn unquote<'a>(value: &'a [u8], buffer: &'a mut [u8; MAX_NODE]) -> Option<&'a [u8]> {
    let Some(inner) = value
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
    else {
        return (!value.contains(&b'"')).then_some(value);
    };
    let mut length = 0;
    let mut bytes = inner.iter();
    while let Some(&byte) = bytes.next() {
        let byte = if byte == b'\\' { *bytes.next()? } else { byte };
        *buffer.get_mut(length)? = byte;
        length += 1;
    }
    Some(&buffer[..length])
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711` (a port may be
/// obfuscated, `_x`). `unknown`, obfuscated identifiers (`_hidden`) and
/// anything else give `None`.
fn parse_node(text: &[u8]) -> Entry {
    let text = std::str::from_utf8(text).ok()?;
    if let Some(rest) = text.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(is_port) {
            return None;
        }
        return address.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(address);
    }
    // With a port only IPv4: an IPv6 address with a port needs brackets.
    let (address, port) = text.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    address.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port number or an obfuscated port (RFC 7239, section 6).
fn is_port(text: &str) -> bool {
    match text.strip_prefix('_') {
        Some(obfuscated) => {
            !obfuscated.is_empty()
                && obfuscated
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte))
        }
        None => !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Without the optional whitespace (spaces and tabs) around list elements.
fn trim(text: &[u8]) -> &[u8] {
    let is_space = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = text.iter().position(|b| !is_space(b)).unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &text[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    /// Every entry of `lines` (one header's lines), right to left.
    fn entries(syntax: Syntax, lines: &[&[u8]]) -> Vec<Entry> {
        let mut map = HeaderMap::new();
        for &line in lines {
            map.append("h", HeaderValue::from_bytes(line).unwrap());
        }
        Entries::new(syntax, map.get_all("h").iter()).collect()
    }

    fn xff(line: &str) -> Vec<Entry> {
        entries(Syntax::XForwardedFor, &[line.as_bytes()])
    }

    fn forwarded(line: &str) -> Vec<Entry> {
        entries(Syntax::Forwarded, &[line.as_bytes()])
    }

    fn ip(text: &str) -> Entry {
        Some(text.parse().unwrap())
    }

    #[test]
    fn x_forwarded_for_right_to_left_skipping_empty_elements() {
        assert_eq!(
            xff("\t203.0.113.7 ,, 198.51.100.1, 192.0.2.9 \t,"),
            [ip("192.0.2.9"), ip("198.51.100.1"), ip("203.0.113.7")]
        );
        assert_eq!(xff(" , ,"), []);
        assert_eq!(xff(""), []);
    }

    #[test]
    fn lines_are_read_last_first() {
        let lines: &[&[u8]] = &[b"1.1.1.1, 192.0.2.1", b"192.0.2.2"];
        assert_eq!(
            entries(Syntax::XForwardedFor, lines),
            [ip("192.0.2.2"), ip("192.0.2.1"), ip("1.1.1.1")]
        );
    }

    #[test]
    fn nodes_with_ports_brackets_or_garbage() {
        assert_eq!(xff("192.0.2.1:4711"), [ip("192.0.2.1")]);
        assert_eq!(xff("2001:db8::1"), [ip("2001:db8::1")]);
        assert_eq!(xff("[2001:db8::1]:4711"), [ip("2001:db8::1")]);
        assert_eq!(xff("[2001:db8::1]:_p"), [ip("2001:db8::1")]);
        for garbage in [
            "192.0.2.1:port",
            "unknown",
            "192.0.2.300",
            "[::1]x",
            "_hidden",
        ] {
            assert_eq!(xff(garbage), [None], "{garbage}");
        }
        assert_eq!(
            entries(Syntax::XForwardedFor, &[b"\xff\xfe, 192.0.2.1"]),
            [ip("192.0.2.1"), None]
        );
    }

    #[test]
    fn forwarded_reads_each_elements_for_parameter() {
        assert_eq!(
            forwarded("for=192.0.2.60;proto=http;by=203.0.113.43, For=198.51.100.17"),
            [ip("198.51.100.17"), ip("192.0.2.60")]
        );
        assert_eq!(
            forwarded(r#"proto=https; for="[2001:db8:cafe::17]:4711""#),
            [ip("2001:db8:cafe::17")]
        );
        assert_eq!(forwarded(r#"for="192.0.2.1:_p0rt""#), [ip("192.0.2.1")]);
        assert_eq!(forwarded(r#"for="192.0.2\.1""#), [ip("192.0.2.1")]);
        for unreadable in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=192.0.2.1;for=192.0.2.2",
            r#"for="[2001:db8::1]x""#,
            r#"for=192.0.2.1""#,
        ] {
            assert_eq!(forwarded(unreadable), [None], "{unreadable}");
        }
        let long = format!(r#"for="[{}]""#, "0".repeat(MAX_NODE));
        assert_eq!(forwarded(&long), [None]);
    }

    #[test]
    fn separators_inside_quotes_do_not_split() {
        assert_eq!(
            forwarded(r#"for="_a,b;c\"d", for=192.0.2.1"#),
            [ip("192.0.2.1"), None]
        );
        // An escaped backslash before the closing quote.
        assert_eq!(
            forwarded(r#"for="x\\", for=192.0.2.1"#),
            [ip("192.0.2.1"), None]
        );
    }

    #[test]
    fn an_unclosed_quote_cannot_reach_the_entries_to_its_right() {
        // The sender opened a quote; the proxies appended after it. Read
        // from the left, the quote would swallow both proxies' elements.
        assert_eq!(
            forwarded(r#"for=6.6.6.6, for=", for=192.0.2.1, for=192.0.2.2"#),
            [ip("192.0.2.2"), ip("192.0.2.1"), None]
        );
        let lines: &[&[u8]] = &[br#"for="6.6.6.6"#, b"for=192.0.2.2"];
        assert_eq!(entries(Syntax::Forwarded, lines), [ip("192.0.2.2"), None]);
    }
}
