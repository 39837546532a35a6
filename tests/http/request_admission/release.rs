//! Every path that ends a request gives its units back: an answer read to
//! its end, a client gone before the answer or in the middle of its
//! stream, a handler that panics, and requests rmcp itself refuses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcp_bounded_session::BoundedSessionManagerBuilder;
use reqwest::StatusCode;
use serde_json::json;

use super::{TIMEOUT, addr, wait_in_flight};
use crate::common::admission::{call, call_with_progress, result_text_of};
use crate::common::mcp::STATELESS_VERSION;
use crate::common::{Client, TestServer};

/// The full soak is 100,000 requests with random disconnects
/// (`REQUEST_SOAK=100000 cargo test --release --test http
/// every_way`: 960 s in a release build on 2 cores shared with other work,
/// each path about 12,500 times, the units back to 0); by default 8 clients of 200 (1,600 requests, each path
/// about 200 times), which run in about 15 s in a debug build on 2 cores
/// busy with other builds (load average 4), the most a CI run should spend
/// on it.
const CLIENTS: u8 = 8;
const DEFAULT_PER_CLIENT: usize = 200;

/// Requests per client: `REQUEST_SOAK` in all, if set.
fn per_client() -> usize {
    std::env::var("REQUEST_SOAK")
        .ok()
        .and_then(|total| total.parse::<usize>().ok())
        .map_or(DEFAULT_PER_CLIENT, |total| {
            total.div_ceil(usize::from(CLIENTS))
        })
}

/// How a request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    /// Answered and read to the end.
    Answered,
    /// The client reads the first event of a streamed answer and goes.
    GoneMidStream,
    /// The client goes before the answer's head.
    GoneBeforeAnswer,
    /// The handler panics.
    Panics,
    /// rmcp refuses a content type other than JSON.
    BadContentType,
    /// rmcp refuses an `Accept` without both JSON and SSE.
    BadAccept,
    /// rmcp refuses a body that is not JSON.
    MalformedBody,
    /// rmcp refuses an `Mcp-Name` contradicting the body.
    HeaderMismatch,
}

const PATHS: [Path; 8] = [
    Path::Answered,
    Path::GoneMidStream,
    Path::GoneBeforeAnswer,
    Path::Panics,
    Path::BadContentType,
    Path::BadAccept,
    Path::MalformedBody,
    Path::HeaderMismatch,
];

/// A small deterministic generator (xorshift64), one seed per client.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A raw 2026-07-28 POST of `body` with these `content_type` and `accept`.
fn raw_post(
    client: &Client,
    content_type: &str,
    accept: &str,
    body: String,
) -> reqwest::RequestBuilder {
    client
        .http
        .post(&client.url)
        .header("content-type", content_type)
        .header("accept", accept)
        .header("mcp-protocol-version", STATELESS_VERSION)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(body)
}

fn echo_body(id: u64) -> String {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": "echo", "arguments": { "text": "x" },
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": { "name": "tests", "version": "1" }
            }
        }
    })
    .to_string()
}

/// Sends one request ending by `path`; the status it got, if it got one.
async fn run(client: &Client, id: u64, path: Path, random: &mut Random) -> Option<StatusCode> {
    let status_of = |response: reqwest::Response| async move {
        let status = response.status();
        let _ = response.bytes().await;
        Some(status)
    };
    match path {
        Path::Answered => {
            let response = call(client, id, "echo", json!({ "text": "x" }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert_eq!(result_text_of(&body).as_deref(), Some("x"), "{body}");
            Some(status)
        }
        Path::GoneMidStream => {
            let response = call_with_progress(client, id, "hold", json!({ "ms": 200 }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let mut body = response.bytes_stream();
            // The progress notification, then the client is gone.
            let first = tokio::time::timeout(TIMEOUT, body.next()).await.unwrap();
            assert!(matches!(first, Some(Ok(_))), "{first:?}");
            Some(status)
        }
        Path::GoneBeforeAnswer => {
            let request = call(client, id, "hold", json!({ "ms": 200 })).send();
            let wait = Duration::from_millis(random.below(30));
            match tokio::time::timeout(wait, request).await {
                Ok(response) => status_of(response.unwrap()).await,
                Err(_) => None,
            }
        }
        Path::Panics => {
            // rmcp 3.11 never answers a 2026-07-28 request whose handler
            // panicked: the client gives up, which ends the request.
            let request = call(client, id, "boom", json!({ "ms": 0 })).send();
            let wait = Duration::from_millis(10 + random.below(40));
            match tokio::time::timeout(wait, request).await {
                Ok(response) => status_of(response.unwrap()).await,
                Err(_) => None,
            }
        }
        Path::BadContentType => {
            let request = raw_post(
                client,
                "text/plain",
                "application/json, text/event-stream",
                echo_body(id),
            );
            status_of(request.send().await.unwrap()).await
        }
        Path::BadAccept => {
            let request = raw_post(client, "application/json", "text/plain", echo_body(id));
            status_of(request.send().await.unwrap()).await
        }
        Path::MalformedBody => {
            let request = raw_post(
                client,
                "application/json",
                "application/json, text/event-stream",
                "{\"jsonrpc\": \"2.0\", \"id\": ".to_owned(),
            );
            status_of(request.send().await.unwrap()).await
        }
        Path::HeaderMismatch => {
            // The header names `echo`, the body `hold`.
            let body = echo_body(id).replace("\"echo\"", "\"hold\"");
            let request = raw_post(
                client,
                "application/json",
                "application/json, text/event-stream",
                body,
            );
            status_of(request.send().await.unwrap()).await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_request_ends_gives_its_units_back() {
    let (server, probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(100)
            .max_requests_in_flight(10_000)
            .max_requests_in_flight_per_client(1_000)
            .build(),
    )
    .await;
    let started = Instant::now();
    let clients = (0..CLIENTS).map(|n| {
        let client = server.client_from(addr(20 + n));
        tokio::spawn(async move {
            let seed = 0x9e37_79b9_7f4a_7c15 ^ u64::from(n).wrapping_mul(0x2545_f491_4f6c_dd1d);
            let mut random = Random(seed | 1);
            let mut seen: BTreeMap<Path, Vec<Option<StatusCode>>> = BTreeMap::new();
            for i in 0..per_client() {
                let path = PATHS[random.below(PATHS.len() as u64) as usize];
                let status = run(&client, i as u64, path, &mut random).await;
                seen.entry(path).or_default().push(status);
            }
            seen
        })
    });
    let mut seen: BTreeMap<Path, Vec<Option<StatusCode>>> = BTreeMap::new();
    for client in clients {
        for (path, statuses) in client.await.unwrap() {
            seen.entry(path).or_default().extend(statuses);
        }
    }
    eprintln!(
        "{} requests in {:?}",
        usize::from(CLIENTS) * per_client(),
        started.elapsed()
    );
    for path in PATHS {
        let statuses = &seen[&path];
        let mut counted: BTreeMap<Option<u16>, usize> = BTreeMap::new();
        for status in statuses {
            *counted.entry(status.map(|s| s.as_u16())).or_default() += 1;
        }
        eprintln!("{path:?}: {counted:?}");
        let ok = |status: &Option<StatusCode>| match path {
            Path::Answered | Path::GoneMidStream => *status == Some(StatusCode::OK),
            // rmcp answers nothing (see `run`); a 5xx if it ever does.
            Path::GoneBeforeAnswer | Path::Panics => {
                status.is_none_or(|s| s == StatusCode::OK || s.is_server_error())
            }
            _ => status.is_some_and(|s| s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS),
        };
        assert!(statuses.iter().all(ok), "{path:?}: {counted:?}");
        assert!(statuses.len() >= 100, "{path:?} too rarely: {counted:?}");
    }
    wait_in_flight(&server.manager, 0).await;
    probe.release();
}
