//! The client address recorded by trusted reverse proxies, from
//! `X-Forwarded-For` or RFC 7239 `Forwarded`.
//!
//! # Invariant kept here
//!
//! A client cannot choose the address read here. Each proxy appends the
//! address it received the request from to the right of the list, so
//! behind `n` trusted proxies the `n` rightmost entries were written by
//! them, and everything to their left by whoever sent the request. Only
//! the `n`-th entry from the right is read: the one the outermost trusted
//! proxy wrote about its own peer. Every doubt (too few entries, an entry
//! that is not an address, a list that cannot be split reliably, two
//! headers that disagree) gives `None`, and the caller falls back to the
//! peer address, which nobody can forge.
//!
//! # Both headers present
//!
//! A proxy usually writes one of the two headers and passes any other
//! header through untouched, so the one it does not write is the
//! client's to fill. Preferring either header would let a client forge its
//! address behind proxies that write the other. When both are present,
//! their entries at the chosen position must name the same address (as
//! they do behind a proxy that writes both); otherwise the result is
//! `None`. A client that sends the other header therefore gains nothing
//! but being counted with the proxy's own address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderMap;
use http::header::{FORWARDED, GetAll, HeaderValue};

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The address `hops` entries from the right of the forwarding headers
/// (1 = the rightmost), or `None` if it cannot be trusted. `hops >= 1`.
pub(super) fn client_address(headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    let forwarded = headers.get_all(FORWARDED);
    let x_forwarded_for = headers.get_all(X_FORWARDED_FOR);
    let has = |values: &GetAll<'_, HeaderValue>| values.iter().next().is_some();
    match (has(&forwarded), has(&x_forwarded_for)) {
        (false, false) => None,
        (true, false) => from_forwarded(forwarded, hops),
        (false, true) => from_x_forwarded_for(x_forwarded_for, hops),
        (true, true) => {
            // Compared as the same address however written (`::ffff:a.b.c.d`).
            let address = from_forwarded(forwarded, hops)?.to_canonical();
            let other = from_x_forwarded_for(x_forwarded_for, hops)?.to_canonical();
            (address == other).then_some(address)
        }
    }
}

/// `X-Forwarded-For`: comma-separated addresses, over all header lines in
/// order (a proxy may append a line instead of extending the last one).
fn from_x_forwarded_for(lines: GetAll<'_, HeaderValue>, hops: usize) -> Option<IpAddr> {
    let entries: Vec<&[u8]> = lines
        .iter()
        .flat_map(|line| line.as_bytes().split(|&byte| byte == b','))
        .map(trim)
        // Empty list elements are ignored (RFC 9110, section 5.6.1).
        .filter(|entry| !entry.is_empty())
        .collect();
    let entry = nth_from_right(&entries, hops)?;
    parse_node(std::str::from_utf8(entry).ok()?)
}

/// `Forwarded`: one comma-separated element per hop, each a `;`-separated
/// list of `name=value` pairs whose values may be quoted strings.
fn from_forwarded(lines: GetAll<'_, HeaderValue>, hops: usize) -> Option<IpAddr> {
    let mut elements = Vec::new();
    for line in lines {
        // A quote left open would swallow the proxies' elements after it
        // and shift the count onto the sender's: trust nothing then.
        elements.extend(split_outside_quotes(line.as_bytes(), b',')?);
    }
    elements.retain(|element| !element.is_empty());
    let element = nth_from_right(&elements, hops)?;
    let value = split_outside_quotes(element, b';')?
        .into_iter()
        .find_map(|pair| {
            let (name, value) = split_once(pair, b'=')?;
            trim(name).eq_ignore_ascii_case(b"for").then(|| trim(value))
        })?;
    parse_node(&unquote(value)?)
}

fn nth_from_right<'a>(entries: &[&'a [u8]], hops: usize) -> Option<&'a [u8]> {
    entries.len().checked_sub(hops).map(|index| entries[index])
}

/// Splits at `separator` where it is not inside a quoted string; `None` if
/// a quoted string is not closed. The parts are trimmed.
fn split_outside_quotes(text: &[u8], separator: u8) -> Option<Vec<&[u8]>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (index, &byte) in text.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && byte == b'\\' {
            escaped = true;
        } else if byte == b'"' {
            quoted = !quoted;
        } else if !quoted && byte == separator {
            parts.push(trim(&text[start..index]));
            start = index + 1;
        }
    }
    if quoted {
        return None;
    }
    parts.push(trim(&text[start..]));
    Some(parts)
}

/// A token as is, or a quoted string's content with its escapes resolved;
/// `None` for text that is neither UTF-8 nor a well-formed quoted string.
fn unquote(value: &[u8]) -> Option<String> {
    let Some(inner) = value
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
    else {
        return String::from_utf8(value.to_vec()).ok();
    };
    let mut text = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&byte) = bytes.next() {
        text.push(if byte == b'\\' { *bytes.next()? } else { byte });
    }
    String::from_utf8(text).ok()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711` (a port may be
/// obfuscated, `_x`). `unknown`, obfuscated identifiers (`_hidden`) and
/// anything else give `None`.
fn parse_node(text: &str) -> Option<IpAddr> {
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

fn split_once(text: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let index = text.iter().position(|&byte| byte == separator)?;
    Some((&text[..index], &text[index + 1..]))
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

    fn headers(lines: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for &(name, value) in lines {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn xff(value: &str, hops: usize) -> Option<IpAddr> {
        client_address(&headers(&[(X_FORWARDED_FOR, value)]), hops)
    }

    fn forwarded(value: &str, hops: usize) -> Option<IpAddr> {
        client_address(&headers(&[("forwarded", value)]), hops)
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn x_forwarded_for_counts_hops_from_the_right() {
        let chain = "203.0.113.7, 198.51.100.1, 192.0.2.9";
        assert_eq!(xff(chain, 1), ip("192.0.2.9"));
        assert_eq!(xff(chain, 2), ip("198.51.100.1"));
        assert_eq!(xff(chain, 3), ip("203.0.113.7"));
    }

    #[test]
    fn spoofed_leftmost_entries_are_ignored() {
        // The client sent "1.1.1.1, 2.2.2.2"; the one trusted proxy
        // appended the real peer.
        assert_eq!(xff("1.1.1.1, 2.2.2.2, 192.0.2.9", 1), ip("192.0.2.9"));
    }

    #[test]
    fn fewer_entries_than_trusted_proxies_is_no_address() {
        assert_eq!(xff("192.0.2.9", 2), None);
        assert_eq!(xff(" , ,", 1), None);
    }

    #[test]
    fn x_forwarded_for_lines_join_in_order() {
        let map = headers(&[
            (X_FORWARDED_FOR, "1.1.1.1, 192.0.2.1"),
            (X_FORWARDED_FOR, "192.0.2.2"),
        ]);
        assert_eq!(client_address(&map, 1), ip("192.0.2.2"));
        assert_eq!(client_address(&map, 2), ip("192.0.2.1"));
    }

    #[test]
    fn whitespace_and_empty_elements_are_skipped() {
        assert_eq!(xff("\t1.1.1.1 ,, 192.0.2.9 \t,", 1), ip("192.0.2.9"));
        assert_eq!(xff("1.1.1.1 ,, 192.0.2.9 ", 2), ip("1.1.1.1"));
    }

    #[test]
    fn garbage_at_the_chosen_position_is_no_address() {
        assert_eq!(xff("192.0.2.1, not-an-ip", 1), None);
        assert_eq!(xff("192.0.2.1, unknown", 1), None);
        assert_eq!(xff("192.0.2.1, 192.0.2.300", 1), None);
        // Garbage elsewhere does not matter.
        assert_eq!(xff("garbage, 192.0.2.1", 1), ip("192.0.2.1"));
    }

    #[test]
    fn x_forwarded_for_entries_with_ports_and_brackets() {
        assert_eq!(xff("192.0.2.1:4711", 1), ip("192.0.2.1"));
        assert_eq!(xff("2001:db8::1", 1), ip("2001:db8::1"));
        assert_eq!(xff("[2001:db8::1]:4711", 1), ip("2001:db8::1"));
        assert_eq!(xff("192.0.2.1:port", 1), None);
    }

    #[test]
    fn forwarded_reads_the_for_parameter_of_the_chosen_element() {
        let value = "for=192.0.2.60;proto=http;by=203.0.113.43, for=198.51.100.17";
        assert_eq!(forwarded(value, 1), ip("198.51.100.17"));
        assert_eq!(forwarded(value, 2), ip("192.0.2.60"));
        assert_eq!(forwarded(value, 3), None);
    }

    #[test]
    fn forwarded_quoted_ipv6_with_port_and_case_insensitive_names() {
        assert_eq!(
            forwarded(r#"For="[2001:db8:cafe::17]:4711""#, 1),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(forwarded(r#"for="[2001:db8::1]""#, 1), ip("2001:db8::1"));
        assert_eq!(forwarded(r#"for="192.0.2.1:_p0rt""#, 1), ip("192.0.2.1"));
        assert_eq!(forwarded("proto=https; for=192.0.2.1", 1), ip("192.0.2.1"));
    }

    #[test]
    fn forwarded_unknown_obfuscated_or_missing_for_is_no_address() {
        assert_eq!(forwarded("for=192.0.2.1, for=unknown", 1), None);
        assert_eq!(forwarded("for=192.0.2.1, for=_hidden", 1), None);
        assert_eq!(forwarded("for=192.0.2.1, proto=https", 1), None);
        assert_eq!(forwarded(r#"for="[2001:db8::1]x""#, 1), None);
    }

    #[test]
    fn forwarded_separators_inside_quotes_do_not_split() {
        let value = r#"for="_a,b;c\"d", for=192.0.2.1"#;
        assert_eq!(forwarded(value, 1), ip("192.0.2.1"));
        assert_eq!(forwarded(value, 2), None);
    }

    #[test]
    fn an_unclosed_quote_cannot_shift_the_count_onto_the_sender() {
        // The sender opens a quote; the proxies' elements would end up
        // inside it and the sender's 6.6.6.6 would be second from the right.
        let value = r#"for=6.6.6.6, for=", for=192.0.2.1, for=192.0.2.2"#;
        assert_eq!(forwarded(value, 2), None);
        let map = headers(&[
            ("forwarded", r#"for="6.6.6.6"#),
            ("forwarded", "for=192.0.2.2"),
        ]);
        assert_eq!(client_address(&map, 1), None);
    }

    #[test]
    fn both_headers_must_agree() {
        let agree = headers(&[
            ("forwarded", "for=192.0.2.1"),
            (X_FORWARDED_FOR, "192.0.2.1"),
        ]);
        assert_eq!(client_address(&agree, 1), ip("192.0.2.1"));
        // A proxy that appends X-Forwarded-For passed the sender's own
        // Forwarded header through: neither is believed.
        let forged = headers(&[("forwarded", "for=6.6.6.6"), (X_FORWARDED_FOR, "192.0.2.1")]);
        assert_eq!(client_address(&forged, 1), None);
        let mapped = headers(&[
            ("forwarded", r#"for="[::ffff:192.0.2.1]""#),
            (X_FORWARDED_FOR, "192.0.2.1"),
        ]);
        assert_eq!(client_address(&mapped, 1), ip("192.0.2.1"));
    }

    #[test]
    fn no_header_is_no_address() {
        assert_eq!(client_address(&HeaderMap::new(), 1), None);
    }

    #[test]
    fn non_utf8_bytes_are_garbage_entries() {
        let mut map = HeaderMap::new();
        map.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff\xfe, 192.0.2.1").unwrap(),
        );
        assert_eq!(client_address(&map, 1), ip("192.0.2.1"));
        assert_eq!(client_address(&map, 2), None);
    }
}
