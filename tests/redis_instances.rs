#![cfg(feature = "redis")]
//! Two real `examples/server` processes sharing one Redis (127.0.0.1:6379)
//! under a key prefix of the test's own: a session made on one instance is
//! restored on the other, its streams replay there, a DELETE on one ends
//! the copy on the other, and a replay never crosses sessions.
//!
//! The example binary is the one `cargo test --features redis` builds
//! (`target/debug/examples/server`); every request is spoken by hand with
//! reqwest, so every header is the test's.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis_server::{SHARED_URL, clean, keys, unique_prefix};
use common::{Client, PROTOCOL_VERSION, SseEvent, SseReader, sse_messages};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

/// The protocol revision without sessions (SEP-2567).
const STATELESS_VERSION: &str = "2026-07-28";
/// Longest wait for one event of a live stream.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------

/// `target/debug/examples/server`, next to this test's `deps` directory.
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("server"))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        binary.is_file(),
        "the example server is not built at {}: run `cargo test --features redis` \
         (or `cargo build --features redis --example server`) first",
        binary.display()
    );
    binary
}

/// Removes ANSI colour sequences (`ESC [ ... letter`) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One `examples/server` process; killed when dropped.
struct Instance {
    name: &'static str,
    url: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    /// Starts the server on a free port with `--redis` and `prefix`; waits
    /// for its `MCP server listening on http://ADDR/mcp` line.
    fn start(name: &'static str, prefix: &str) -> Self {
        let binary = server_binary();
        let mut child = Command::new(&binary)
            .args(["--bind", "127.0.0.1:0", "--redis", SHARED_URL])
            .args(["--redis-prefix", prefix])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        // Both pipes are drained for the process's whole life (its log goes
        // to stdout: a full pipe would block the server).
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn({
            let log = log.clone();
            move || {
                let mut url_tx = Some(url_tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let line = strip_ansi(&line);
                    if let Some(rest) = line.split("MCP server listening on ").nth(1)
                        && let Some(tx) = url_tx.take()
                    {
                        let _ = tx.send(rest.trim().to_owned());
                    }
                    log.lock().unwrap().push(line);
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn({
            let log = log.clone();
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock()
                        .unwrap()
                        .push(format!("stderr: {}", strip_ansi(&line)));
                }
            }
        });
        let url = match url_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "server {name} ({}) printed no `MCP server listening on` line \
                     (is it built with --features redis?); its output:\n{}",
                    binary.display(),
                    log.lock().unwrap().join("\n")
                );
            }
        };
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
            "unexpected listening line: {url}"
        );
        Self {
            name,
            url,
            child,
            log,
        }
    }

    /// A client of this instance whose connections come from `source`.
    fn client(&self, source: Ipv4Addr) -> Client {
        Client {
            http: reqwest::Client::builder()
                .local_address(IpAddr::V4(source))
                .tcp_nodelay(true)
                .build()
                .unwrap(),
            url: self.url.clone(),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log.lock().unwrap();
            let tail = &log[log.len().saturating_sub(40)..];
            eprintln!(
                "--- last lines of server {} ({}) ---\n{}",
                self.name,
                self.url,
                tail.join("\n")
            );
        }
    }
}

/// Two instances, A and B, on one Redis prefix: both killed, then the
/// prefix's keys removed, when dropped (also when a test fails).
struct Pair {
    a: Instance,
    b: Instance,
    prefix: String,
}

impl Pair {
    fn start(test: &str) -> Self {
        let prefix = unique_prefix(test);
        // Started one after the other, but each takes a fraction of a
        // second; no need for threads.
        let a = Instance::start("A", &prefix);
        let b = Instance::start("B", &prefix);
        Self { a, b, prefix }
    }

    /// Kills both servers, then removes the prefix's keys.
    async fn finish(self) {
        let prefix = self.prefix.clone();
        drop(self);
        clean(SHARED_URL, &prefix).await;
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // The instances drop (and are killed) after this body runs; kill
        // them first so that nothing writes after the clean-up.
        let _ = self.a.child.kill();
        let _ = self.a.child.wait();
        let _ = self.b.child.kill();
        let _ = self.b.child.wait();
        // Best effort: a failed test leaves no keys either.
        if let Ok(client) = redis::Client::open(SHARED_URL)
            && let Ok(mut connection) = client.get_connection()
        {
            let found: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query(&mut connection)
                .unwrap_or_default();
            if !found.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(found).query(&mut connection);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// MCP by hand
// ---------------------------------------------------------------------------

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

fn session_header(session: &str) -> HeaderValue {
    HeaderValue::from_str(session).unwrap()
}

fn tool_call(id: u64, name: &str, arguments: Value) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": name, "arguments": arguments }
    })
}

fn tool_call_with_progress(id: u64, name: &str, arguments: Value, token: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": name, "arguments": arguments, "_meta": { "progressToken": token } }
    })
}

/// The text of a `tools/call` result (its first content block).
fn result_text(message: &Value) -> Option<&str> {
    message["result"]["content"][0]["text"].as_str()
}

/// The `progress` of a progress notification, a whole number (rmcp sends
/// it as a float: `1.0`).
fn progress_of(message: &Value) -> u64 {
    let progress = message["params"]["progress"]
        .as_f64()
        .unwrap_or_else(|| panic!("no progress in {message}"));
    assert!(progress.fract() == 0.0 && progress >= 0.0, "{message}");
    progress as u64
}

fn is_method(message: &Value, method: &str) -> bool {
    message["method"].as_str() == Some(method)
}

/// `<stream>`, generation and sequence of an id `<stream>#<gen>-<seq>`.
fn parse_id(id: &str) -> (&str, u64, u64) {
    let (stream, position) = id
        .rsplit_once('#')
        .unwrap_or_else(|| panic!("event id {id:?} is not `<stream>#<gen>-<seq>`"));
    let (generation, sequence) = position
        .split_once('-')
        .unwrap_or_else(|| panic!("event id {id:?} is not `<stream>#<gen>-<seq>`"));
    (
        stream,
        generation.parse().expect("numeric generation"),
        sequence.parse().expect("numeric sequence"),
    )
}

/// A `GET` resuming after `last_event_id`, with `session` if any, under
/// protocol `version`.
async fn resume(
    client: &Client,
    session: Option<&str>,
    version: &str,
    last_event_id: &str,
) -> reqwest::Response {
    let mut request = client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", version)
        .header("last-event-id", last_event_id);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request.send().await.expect("server reachable")
}

/// Every event of a stream that is expected to end (a replay): the events,
/// and whether the body ended within `timeout` (else what came so far).
async fn read_to_end(response: reqwest::Response, timeout: Duration) -> (Vec<SseEvent>, bool) {
    use futures::StreamExt;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let ended = tokio::time::timeout(timeout, async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => break,
            }
        }
    })
    .await
    .is_ok();
    (parse_events(&text), ended)
}

/// The events of an SSE body with an id or a data line (comments and
/// `retry:`-only events are left out).
fn parse_events(body: &str) -> Vec<SseEvent> {
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|raw| {
            let mut id = None;
            let mut data = String::new();
            let mut has_data = false;
            for line in raw.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim_start().to_owned());
                } else if let Some(chunk) = line.strip_prefix("data:") {
                    has_data = true;
                    data.push_str(chunk.trim_start());
                }
            }
            (id.is_some() || has_data).then(|| SseEvent {
                id,
                message: serde_json::from_str(&data).ok(),
            })
        })
        .collect()
}

/// Reads `reader` until `wanted` events with a message satisfying `keep`
/// arrived; those events (priming events and other messages are skipped).
async fn read_messages(
    reader: &mut SseReader,
    wanted: usize,
    keep: impl Fn(&Value) -> bool,
) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    while got.len() < wanted {
        let event = reader
            .next(EVENT_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("the stream ended after {} of {wanted} events", got.len()));
        if let Some(message) = event.message
            && keep(&message)
        {
            let id = event.id.expect("a kept event carries an id");
            got.push((id, message));
        }
    }
    got
}

/// Waits until the last entry of Redis stream `<prefix>stream:<stream>`
/// holds a JSON-RPC response (the request's result was stored).
async fn wait_for_stored_result(prefix: &str, stream: &str) {
    let mut connection = common::redis_server::connection(SHARED_URL).await;
    let key = format!("{prefix}stream:{stream}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await
            .unwrap();
        let done = last.ids.first().is_some_and(|entry| {
            entry
                .get::<String>("m")
                .and_then(|m| serde_json::from_str::<Value>(&m).ok())
                .is_some_and(|m| m.get("result").is_some() || m.get("error").is_some())
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the tool's result never reached {key}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks a replay after the id `resumed`: exactly the events after it, in
/// order, once, each in its stream and generation with sequences
/// increasing by one from its own + 1; returns their messages. Events without data (priming) are
/// allowed and left out.
fn replayed_messages(events: &[SseEvent], resumed: &str) -> Vec<Value> {
    let (stream, generation, after) = parse_id(resumed);
    let mut expected_sequence = after + 1;
    let mut messages = Vec::new();
    for event in events {
        let Some(message) = &event.message else {
            continue;
        };
        let id = event
            .id
            .as_deref()
            .unwrap_or_else(|| panic!("a replayed event without id: {message}"));
        let (event_stream, event_generation, sequence) = parse_id(id);
        assert_eq!(
            (event_stream, event_generation),
            (stream, generation),
            "replayed event {id} of another stream or generation than {resumed}"
        );
        assert_eq!(
            sequence, expected_sequence,
            "replayed ids out of order or with a hole: {events:#?}"
        );
        expected_sequence += 1;
        messages.push(message.clone());
    }
    messages
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// A session made on A answers a tool call on B under the same id, without
/// a new `initialize`, from its copy in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_instance_answers_on_the_other() {
    let pair = Pair::start("restore");
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let session = on_a.initialize().await.expect("initialize on A");
    let stored = format!("{}session:{session}", pair.prefix);
    assert!(
        keys(SHARED_URL, &pair.prefix).await.contains(&stored),
        "{stored} not written after initialize"
    );

    let response = on_b
        .post(Some(session_header(&session)))
        .json(&tool_call(7, "echo", json!({ "text": "across instances" })))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let header = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "echo on B: {body}");
    assert!(
        header.as_deref().is_none_or(|h| h == session),
        "B answered under another session id: {header:?}"
    );
    let messages = sse_messages(&body);
    assert!(
        !messages
            .iter()
            .any(|m| m["result"]["serverInfo"].is_object()),
        "B answered with an initialize result: {body}"
    );
    let answer = messages
        .iter()
        .find(|m| m["id"] == json!(7))
        .unwrap_or_else(|| panic!("no answer to the call: {body}"));
    assert_eq!(result_text(answer), Some("across instances"), "{answer}");

    // Still one stored session, under the same id.
    let sessions: Vec<String> = keys(SHARED_URL, &pair.prefix)
        .await
        .into_iter()
        .filter(|k| k.starts_with(&format!("{}session:", pair.prefix)))
        .collect();
    assert_eq!(sessions, vec![stored]);
    // And A still answers it too.
    assert!(on_a.works(&session).await, "A lost the session");
    pair.finish().await;
}

/// The standalone stream's notifications, sent on A, replay on B after the
/// last one the client saw: the rest, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_stream_replays_on_the_other_instance() {
    let pair = Pair::start("replay_get");
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let session = on_a.initialize().await.expect("initialize on A");

    let get = on_a.open_standalone(&session).await;
    assert_eq!(get.status(), StatusCode::OK);
    let mut reader = SseReader::new(get);
    let (status, messages) = on_a
        .request(&session, tool_call(2, "announce", json!({ "count": 5 })))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        messages
            .iter()
            .any(|m| result_text(m) == Some("announced 5")),
        "{messages:?}"
    );
    let seen = read_messages(&mut reader, 2, |m| {
        is_method(m, "notifications/resources/updated")
    })
    .await;
    drop(reader);
    for (n, (id, message)) in seen.iter().enumerate() {
        assert_eq!(
            message["params"]["uri"],
            json!(format!("demo://announce/{}", n + 1))
        );
        let (stream, _, _) = parse_id(id);
        assert_eq!(stream, format!("{session}:common"), "id {id}");
    }
    let (last_id, _) = &seen[1];

    let response = resume(&on_b, Some(&session), PROTOCOL_VERSION, last_id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (events, ended) = read_to_end(response, Duration::from_secs(5)).await;
    assert!(ended, "the replay did not end: {events:#?}");
    let messages = replayed_messages(&events, last_id);
    let uris: Vec<&str> = messages
        .iter()
        .map(|m| {
            assert!(
                is_method(m, "notifications/resources/updated"),
                "unexpected {m}"
            );
            m["params"]["uri"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        uris,
        [
            "demo://announce/3",
            "demo://announce/4",
            "demo://announce/5"
        ]
    );
    pair.finish().await;
}

/// A request's stream, cut after a few progress notifications on A, replays
/// the rest and the result on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stream_replays_on_the_other_instance() {
    const STEPS: u64 = 12;
    let pair = Pair::start("replay_post");
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let session = on_a.initialize().await.expect("initialize on A");

    let response = on_a
        .post(Some(session_header(&session)))
        .json(&tool_call_with_progress(
            3,
            "count",
            json!({ "steps": STEPS, "delay_ms": 80 }),
            "tok",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = SseReader::new(response);
    let seen = read_messages(&mut reader, 3, |m| is_method(m, "notifications/progress")).await;
    drop(reader);
    for (n, (_, message)) in seen.iter().enumerate() {
        assert_eq!(progress_of(message), n as u64 + 1, "{message}");
    }
    let (last_id, _) = &seen[2];
    let (stream, _, _) = parse_id(last_id);
    assert!(
        stream.starts_with(&format!("{session}:")) && stream != format!("{session}:common"),
        "a request stream named {stream}"
    );

    wait_for_stored_result(&pair.prefix, stream).await;
    let response = resume(&on_b, Some(&session), PROTOCOL_VERSION, last_id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (events, ended) = read_to_end(response, Duration::from_secs(5)).await;
    assert!(ended, "the replay did not end: {events:#?}");
    let messages = replayed_messages(&events, last_id);
    let (result, progress) = messages.split_last().expect("a replay with events");
    let steps: Vec<u64> = progress
        .iter()
        .map(|m| {
            assert!(is_method(m, "notifications/progress"), "unexpected {m}");
            assert_eq!(m["params"]["progressToken"], json!("tok"));
            progress_of(m)
        })
        .collect();
    assert_eq!(steps, (4..=STEPS).collect::<Vec<_>>());
    assert_eq!(result["id"], json!(3), "{result}");
    assert_eq!(
        result_text(result),
        Some(format!("counted to {STEPS}").as_str())
    );
    pair.finish().await;
}

/// A DELETE on B ends A's copy too (over pub/sub), and leaves nothing of
/// the session in Redis but its tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_one_instance_ends_the_session_on_the_other() {
    const BOUND: Duration = Duration::from_secs(2);
    let pair = Pair::start("delete");
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let session = on_a.initialize().await.expect("initialize on A");
    assert!(on_a.works(&session).await);
    // Restored on B: both instances hold a copy now.
    assert!(on_b.works(&session).await, "B did not restore the session");
    let before = keys(SHARED_URL, &pair.prefix).await;
    for key in [
        format!("{}session:{session}", pair.prefix),
        format!("{}streams:{session}", pair.prefix),
    ] {
        assert!(before.contains(&key), "{key} missing: {before:?}");
    }
    assert!(
        before
            .iter()
            .any(|k| k.starts_with(&format!("{}stream:{session}:", pair.prefix))),
        "no stream of the session stored: {before:?}"
    );

    let status = on_b.delete(&session).await;
    assert!(
        status == StatusCode::ACCEPTED || status == StatusCode::OK,
        "DELETE on B: {status}"
    );
    let deleted_at = Instant::now();
    // Polled with a notification: unlike a request, it opens no stream, so
    // the polling itself cannot write to Redis while A still holds a copy.
    let notification = json!({ "jsonrpc": "2.0", "method": "notifications/roots/list_changed" });
    let delay = loop {
        let status = on_a
            .post(Some(session_header(&session)))
            .json(&notification)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::NOT_FOUND {
            break deleted_at.elapsed();
        }
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "A answered neither 202 nor 404"
        );
        assert!(
            deleted_at.elapsed() < BOUND,
            "A still accepts the session {BOUND:?} after its DELETE on B"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("A ended its copy {delay:?} after the DELETE on B");
    assert_eq!(on_a.status_of(&session).await, StatusCode::NOT_FOUND);
    assert_eq!(on_b.status_of(&session).await, StatusCode::NOT_FOUND);

    let tombstone = format!("{}deleted:{session}", pair.prefix);
    let after = keys(SHARED_URL, &pair.prefix).await;
    assert_eq!(after, vec![tombstone.clone()], "keys left after the DELETE");
    // Nor does anything come back later (an upkeep round, a late write).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(keys(SHARED_URL, &pair.prefix).await, vec![tombstone]);
    pair.finish().await;
}

/// A DELETE on an instance that never held the session (a load balancer
/// may send it anywhere) still ends the copy on the instance that does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_an_instance_without_a_copy_ends_the_session() {
    let pair = Pair::start("delete_unheld");
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let session = on_a.initialize().await.expect("initialize on A");
    assert!(on_a.works(&session).await);

    let status = on_b.delete(&session).await;
    assert!(
        status == StatusCode::ACCEPTED || status == StatusCode::OK,
        "DELETE on B (which never held the session): {status}"
    );
    let deleted_at = Instant::now();
    let notification = json!({ "jsonrpc": "2.0", "method": "notifications/roots/list_changed" });
    loop {
        let status = on_a
            .post(Some(session_header(&session)))
            .json(&notification)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            deleted_at.elapsed() < Duration::from_secs(2),
            "A still answers {status} 2 s after the DELETE on B"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(on_b.status_of(&session).await, StatusCode::NOT_FOUND);
    assert_eq!(
        keys(SHARED_URL, &pair.prefix).await,
        vec![format!("{}deleted:{session}", pair.prefix)]
    );
    pair.finish().await;
}

/// A `Last-Event-ID` of session S1 replays nothing in session S2, on the
/// instance that restores S2 as on the one that made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_never_crosses_sessions() {
    let pair = Pair::start("isolation");
    let s1_on_a = pair.a.client(loopback(2));
    let s1_on_b = pair.b.client(loopback(2));
    let s2_on_a = pair.a.client(loopback(3));
    let s2_on_b = pair.b.client(loopback(3));
    let s1 = s1_on_a.initialize().await.expect("initialize S1 on A");
    let s2 = s2_on_a.initialize().await.expect("initialize S2 on A");
    assert_ne!(s1, s2);

    let mut reader = SseReader::new(s1_on_a.open_standalone(&s1).await);
    let (status, _) = s1_on_a
        .request(&s1, tool_call(2, "announce", json!({ "count": 3 })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let seen = read_messages(&mut reader, 3, |m| {
        is_method(m, "notifications/resources/updated")
    })
    .await;
    drop(reader);
    let first_id = &seen[0].0;

    // Control: in S1 the id replays S1's two later notifications.
    let (events, _) = read_to_end(
        resume(&s1_on_b, Some(&s1), PROTOCOL_VERSION, first_id).await,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        events.iter().filter(|e| e.message.is_some()).count(),
        2,
        "{events:#?}"
    );

    for (instance, client) in [("B", &s2_on_b), ("A", &s2_on_a)] {
        let response = resume(client, Some(&s2), PROTOCOL_VERSION, first_id).await;
        let status = response.status();
        let (events, _) = read_to_end(response, Duration::from_secs(3)).await;
        assert!(
            status == StatusCode::OK || status.is_client_error(),
            "S2's GET with S1's id on {instance}: {status}"
        );
        let data: Vec<&SseEvent> = events.iter().filter(|e| e.message.is_some()).collect();
        assert!(
            data.is_empty(),
            "S2's GET with S1's id on {instance} replayed: {data:#?}"
        );
    }
    // S2 itself still works on both.
    assert!(s2_on_a.works(&s2).await && s2_on_b.works(&s2).await);
    pair.finish().await;
}

/// A GET of protocol 2026-07-28 (no session) with a session's event id
/// must not replay that session's events: rmcp sends such a GET straight to
/// the manager's `event_store()`, which holds the sessions' streams too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_get_does_not_replay_a_sessions_stream() {
    let pair = Pair::start("isolation_stateless");
    let s1_on_a = pair.a.client(loopback(2));
    let other_on_b = pair.b.client(loopback(3));
    let s1 = s1_on_a.initialize().await.expect("initialize S1 on A");
    let mut reader = SseReader::new(s1_on_a.open_standalone(&s1).await);
    let (status, _) = s1_on_a
        .request(&s1, tool_call(2, "announce", json!({ "count": 3 })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let seen = read_messages(&mut reader, 3, |m| {
        is_method(m, "notifications/resources/updated")
    })
    .await;
    drop(reader);
    let first_id = &seen[0].0;

    let response = resume(&other_on_b, None, STATELESS_VERSION, first_id).await;
    let status = response.status();
    let (events, _) = read_to_end(response, Duration::from_secs(3)).await;
    let data: Vec<&SseEvent> = events.iter().filter(|e| e.message.is_some()).collect();
    assert!(
        data.is_empty(),
        "a sessionless GET (MCP-Protocol-Version {STATELESS_VERSION}, another client, on B) \
         with S1's Last-Event-ID got {status} and S1's events: {data:#?}"
    );
    pair.finish().await;
}

/// Protocol 2026-07-28 (no session): a `count` with progress on A, cut
/// after a few events, resumes on B from the shared event store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_request_stream_replays_on_the_other_instance() {
    const STEPS: u64 = 12;
    let pair = Pair::start("stateless");
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let body = json!({
        "jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {
            "name": "count",
            "arguments": { "steps": STEPS, "delay_ms": 80 },
            "_meta": {
                "progressToken": "stateless",
                "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": { "name": "redis-instances", "version": "1" }
            }
        }
    });
    // SEP-2243: from 2026-07-28 a POST names its method (and a tool call
    // its tool) in headers too; the request carries no session.
    let response = on_a
        .http
        .post(&on_a.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", STATELESS_VERSION)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "count")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        response.headers().get("mcp-session-id").is_none(),
        "a stateless request got a session"
    );
    if status != StatusCode::OK {
        let text = response.text().await.unwrap_or_default();
        panic!("stateless count on A: {status}: {text}");
    }
    let mut reader = SseReader::new(response);
    let seen = read_messages(&mut reader, 3, |m| is_method(m, "notifications/progress")).await;
    drop(reader);
    for (n, (_, message)) in seen.iter().enumerate() {
        assert_eq!(progress_of(message), n as u64 + 1, "{message}");
    }
    let (last_id, _) = &seen[2];
    let (stream, _, _) = parse_id(last_id);
    assert!(
        !stream.contains(':'),
        "a stateless stream named like a session's: {stream}"
    );

    wait_for_stored_result(&pair.prefix, stream).await;
    let response = resume(&on_b, None, STATELESS_VERSION, last_id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (events, ended) = read_to_end(response, Duration::from_secs(5)).await;
    assert!(ended, "the replay did not end: {events:#?}");
    let messages = replayed_messages(&events, last_id);
    let (result, progress) = messages.split_last().expect("a replay with events");
    let steps: Vec<u64> = progress
        .iter()
        .map(|m| {
            assert!(is_method(m, "notifications/progress"), "unexpected {m}");
            progress_of(m)
        })
        .collect();
    assert_eq!(steps, (4..=STEPS).collect::<Vec<_>>());
    assert_eq!(result["id"], json!(5), "{result}");
    assert_eq!(
        result_text(result),
        Some(format!("counted to {STEPS}").as_str())
    );
    pair.finish().await;
}
