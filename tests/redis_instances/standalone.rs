//! A session's standalone notifications reach its `GET` live whichever
//! instance sent them, each once.

use std::time::Duration;

use crate::common::redis_server::PrivateRedis;
use crate::common::{SseReader, parse_event_id};
use crate::mcp::{is_method, loopback, read_messages, result_text, tool_call};
use crate::processes::Pair;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Calls `announce` with `count` on `client`'s instance and checks its
/// result.
pub(crate) async fn announce(client: &crate::common::Client, session: &str, id: u64, count: u32) {
    let (status, messages) = client
        .request(
            session,
            tool_call(id, "announce", json!({ "count": count })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        messages
            .iter()
            .any(|m| result_text(m)
                .is_some_and(|text| text.starts_with(&format!("announced {count}")))),
        "{messages:?}"
    );
}

/// The ids of the entries of the stored `stream`, in list order.
async fn stored_ids(
    backend: &crate::common::redis_backend::Backend,
    prefix: &str,
    stream: &str,
) -> Vec<String> {
    let entries: Vec<String> = backend
        .query(
            redis::cmd("LRANGE")
                .arg(crate::common::redis_backend::key::stream(prefix, stream))
                .arg(0)
                .arg(-1),
        )
        .await;
    // Entries are `<generation>-<sequence> <server> <retry> <message JSON>`.
    entries
        .iter()
        .map(|entry| format!("{stream}#{}", entry.split(' ').next().unwrap()))
        .collect()
}

/// GET open on A; `announce` twice on A, twice on B, once on A (issue
/// 19, item 5): A's GET gets all five, each once, B's two in their id
/// order, and nothing more; each is the stored event of that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_on_one_instance_receives_the_notifications_sent_on_another() {
    let redis = PrivateRedis::start();
    relay_across_instances(Pair::start_on("relay", &redis.url())).await;
    drop(redis);
}

/// The same on a Redis Cluster: the publication crosses the cluster bus
/// from the node of the session's slot to the node A listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_get_on_one_instance_receives_the_notifications_sent_on_another() {
    let backend = crate::common::redis_backend::Backend::cluster();
    relay_across_instances(Pair::start_on_backend("relay_cluster", &backend)).await;
}

async fn relay_across_instances(pair: Pair) {
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let session = on_a.initialize().await.expect("initialize on A");
    let get = on_a.open_standalone(&session).await;
    assert_eq!(get.status(), StatusCode::OK);
    let mut reader = SseReader::new(get);

    // Each call's result is back before the next starts, so the stored
    // order is A's two, B's two, A's one.
    announce(&on_a, &session, 2, 1).await;
    announce(&on_a, &session, 3, 1).await;
    announce(&on_b, &session, 4, 1).await;
    announce(&on_b, &session, 5, 1).await;
    announce(&on_a, &session, 6, 1).await;

    let updated = |m: &Value| is_method(m, "notifications/resources/updated");
    let seen = read_messages(&mut reader, 5, updated).await;
    // Nothing more comes: no event twice (an instance's own publication
    // delivered again, say).
    let late = tokio::time::timeout(Duration::from_millis(1_500), async {
        loop {
            match reader.next(Duration::from_secs(10)).await {
                Some(event) if event.message.as_ref().is_some_and(updated) => break event,
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    })
    .await;
    assert!(late.is_err(), "a sixth notification arrived: {late:?}");

    let stream = format!("{session}:common");
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    for id in &ids {
        assert_eq!(parse_event_id(id).0, stream, "id {id}");
    }
    let stored = stored_ids(&pair.backend, &pair.prefix, &stream).await;
    assert_eq!(stored.len(), 5, "stored: {stored:?}");
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| stored.iter().position(|s| s == id));
    assert_eq!(
        sorted, stored,
        "the GET got {ids:?}: not the five stored events once each"
    );
    for (_, message) in &seen {
        assert_eq!(message["params"]["uri"], json!("demo://announce/1"));
    }
    // B's events in their id order (the order across the two instances
    // may differ: see `store::redis::relay`).
    let positions: Vec<usize> = ids
        .iter()
        .map(|id| stored.iter().position(|s| s == id).unwrap())
        .collect();
    let from_b: Vec<usize> = positions
        .iter()
        .copied()
        .filter(|p| (2..4).contains(p))
        .collect();
    assert_eq!(from_b, [2, 3], "B's events out of order: {positions:?}");
    drop(reader);
    pair.finish().await;
}

/// Announce calls at most (100 notifications each): a few MB, beyond what
/// a small receive buffer and the server's send buffer hold.
const MAX_CALLS: u64 = 200;

/// A standalone `GET` on a raw socket with a small receive buffer, read
/// only at the end.
struct RawGet {
    stream: tokio::net::TcpStream,
}

impl RawGet {
    async fn open(url: &str, source: std::net::Ipv4Addr, session: &str) -> Self {
        use tokio::io::AsyncWriteExt;
        let authority = url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .expect("an http URL");
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .bind(std::net::SocketAddr::new(source.into(), 0))
            .unwrap();
        let mut stream = socket
            .connect(authority.parse().unwrap())
            .await
            .expect("server reachable");
        let request = format!(
            "GET /mcp HTTP/1.1\r\nhost: {authority}\r\naccept: text/event-stream\r\n\
             mcp-session-id: {session}\r\nmcp-protocol-version: {}\r\n\r\n",
            crate::common::PROTOCOL_VERSION
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        Self { stream }
    }

    /// Reads the response to its last chunk (or `timeout`): its SSE events,
    /// and whether it ended.
    async fn read_to_end(&mut self, timeout: Duration) -> (Vec<crate::common::SseEvent>, bool) {
        use tokio::io::AsyncReadExt;
        let mut raw = Vec::new();
        let ended = tokio::time::timeout(timeout, async {
            let mut buffer = [0u8; 65536];
            loop {
                let read = self.stream.read(&mut buffer).await.unwrap_or(0);
                raw.extend_from_slice(&buffer[..read]);
                if read == 0 || raw.ends_with(b"\r\n0\r\n\r\n") {
                    return;
                }
            }
        })
        .await
        .is_ok();
        let text = String::from_utf8_lossy(&raw);
        let (head, chunked) = text.split_once("\r\n\r\n").expect("a response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // De-chunk: a hex size line, that many bytes, a blank line.
        let mut body = String::new();
        let mut rest = chunked;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if size == 0 || after.len() < size {
                break;
            }
            body.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        (crate::common::parse_events(&body), ended)
    }
}

/// A client that does not read its GET on A: what B sends beyond the
/// client's queue is dropped on A (logged), nothing waits for it (A's
/// listener still ends A's copy at B's DELETE), and what the GET then
/// reads is B's notifications once each, in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_costs_its_instance_nothing_unbounded() {
    const NOT_SENT_LIVE: &str = "not sent live";
    let redis = PrivateRedis::start();
    let pair = Pair::start_on("relay_full", &redis.url());
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let session = on_a.initialize().await.expect("initialize on A");
    // Never read until the end: the socket's buffers fill, then the
    // client's queue on A. A small receive buffer (which also turns the
    // kernel's autotuning off) so that they fill within the calls below
    // whatever the machine's TCP settings: reqwest's socket could absorb
    // tens of MB on loopback.
    let mut get = RawGet::open(&pair.a.url, loopback(2), &session).await;

    let mut sent = 0;
    for call in 0..MAX_CALLS {
        announce(&on_b, &session, 10 + call, 100).await;
        sent += 100;
        if pair.a.logged(NOT_SENT_LIVE) {
            break;
        }
    }
    assert!(
        pair.a.logged(NOT_SENT_LIVE),
        "{sent} notifications from B never filled the client's queue on A"
    );

    let status = on_b.delete(&session).await;
    assert!(
        status == StatusCode::ACCEPTED || status == StatusCode::OK,
        "{status}"
    );
    let (events, ended) = get.read_to_end(Duration::from_secs(20)).await;
    assert!(
        ended,
        "A's GET outlived the DELETE on B: its listener is stuck"
    );
    let sequences: Vec<u64> = events
        .iter()
        .filter(|event| event.message.is_some())
        .map(|event| parse_event_id(event.id.as_deref().expect("an id")).2)
        .collect();
    assert!(
        !sequences.is_empty() && sequences.len() < sent,
        "{} of {sent} delivered",
        sequences.len()
    );
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "not once each in id order: {sequences:?}"
    );
    pair.finish().await;
    drop(redis);
}
