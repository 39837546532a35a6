//! Fairness between clients through real HTTP: per-client quotas and rate
//! limits, refusals while every session is busy, client keys from
//! `X-Forwarded-For`, sessions bound to their client, and the close hook.
//! Each loopback source address (127.0.0.x) is a distinct client.

use crate::common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, SseReader, TestServer, eventually, initialize_body};
use mcp_bounded_session::{AtCapacity, BoundedSessionManagerBuilder, CloseReason};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn echo_body(id: u64, text: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": "echo", "arguments": { "text": text } }
    })
}

fn count_body(id: u64, steps: u32, delay_ms: u64) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": "count",
            "arguments": { "steps": steps, "delay_ms": delay_ms },
            "_meta": { "progressToken": "count" }
        }
    })
}

/// The text of the tool result with JSON-RPC id `id` among `messages`.
fn tool_text(messages: &[Value], id: u64) -> Option<String> {
    messages
        .iter()
        .find(|m| m["id"] == id && m["result"].is_object())
        .and_then(|m| m["result"]["content"][0]["text"].as_str())
        .map(str::to_owned)
}

/// Starts a long `count` call and returns once its first progress
/// notification arrived, so the session is known to be busy; the reader
/// holds the response stream open.
async fn start_count(client: &Client, session: &str, id: u64, steps: u32, delay: u64) -> SseReader {
    let response = client
        .post(Some(HeaderValue::from_str(session).unwrap()))
        .json(&count_body(id, steps, delay))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = SseReader::new(response);
    loop {
        let event = reader
            .next(TIMEOUT)
            .await
            .expect("the count stream ended before any progress");
        if event
            .message
            .as_ref()
            .is_some_and(|m| m["method"] == "notifications/progress")
        {
            return reader;
        }
    }
}

/// Reads a `count` stream to its end; the tool's result text.
async fn finish_count(mut reader: SseReader, id: u64) -> Option<String> {
    let mut messages = Vec::new();
    while let Some(event) = reader.next(TIMEOUT).await {
        messages.extend(event.message);
    }
    tool_text(&messages, id)
}

/// `initialize` and `notifications/initialized` through a proxy that wrote
/// `xff` into `X-Forwarded-For`.
async fn initialize_forwarded(client: &Client, xff: &str) -> Result<String, (StatusCode, String)> {
    client.initialize_with(&[("x-forwarded-for", xff)]).await
}

/// A raw `initialize`, for its status and headers.
async fn raw_initialize(client: &Client) -> reqwest::Response {
    client
        .post(None)
        .json(&initialize_body())
        .send()
        .await
        .unwrap()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_never_displaces_active_clients() {
    let _heavy = common::load::heavy().await;
    const CAP: usize = 30;
    const QUOTA: usize = 5;
    const ACTIVE: u8 = 20;
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(CAP)
            .max_sessions_per_client(QUOTA)
            .build(),
    )
    .await;

    let active: Vec<(Client, String)> = {
        let mut active = Vec::new();
        for i in 0..ACTIVE {
            let client = server.client_from(addr(10 + i));
            let session = client.initialize().await.unwrap();
            active.push((client, session));
        }
        active
    };
    let long_client = server.client_from(addr(9));
    let long_session = long_client.initialize().await.unwrap();

    let flooding = Arc::new(AtomicBool::new(true));
    let sampler_done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let manager = server.manager.clone();
        let done = sampler_done.clone();
        std::thread::spawn(move || {
            let mut max_seen = 0;
            while !done.load(Ordering::Relaxed) {
                max_seen = max_seen.max(manager.session_count());
                std::thread::sleep(Duration::from_micros(200));
            }
            max_seen
        })
    };

    // The active clients call `echo` every ~100 ms while the flood lasts.
    let calls = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = active
        .iter()
        .cloned()
        .enumerate()
        .map(|(n, (client, session))| {
            let flooding = flooding.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                let mut id = 1;
                let mut failures = Vec::new();
                loop {
                    let text = format!("client {n} call {id}");
                    let (status, messages) = client.request(&session, echo_body(id, &text)).await;
                    if status != StatusCode::OK || tool_text(&messages, id) != Some(text) {
                        failures.push((status, messages));
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                    id += 1;
                    if !flooding.load(Ordering::Relaxed) {
                        return failures;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();

    let long_call = {
        let client = long_client.clone();
        let session = long_session.clone();
        tokio::spawn(async move {
            let (status, messages) = client.request(&session, count_body(7, 4, 250)).await;
            (status, tool_text(&messages, 7))
        })
    };

    // The flood: ~200 initializes from 4 concurrent tasks, never DELETE.
    let flooder = server.client_from(addr(200));
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let flooder = flooder.clone();
            tokio::spawn(async move {
                let mut created = Vec::new();
                let mut refused = Vec::new();
                for _ in 0..50 {
                    match flooder.initialize().await {
                        Ok(session) => created.push(session),
                        Err(refusal) => refused.push(refusal),
                    }
                }
                (created, refused)
            })
        })
        .collect();
    let mut flood_sessions = Vec::new();
    for flood in floods {
        let (created, refused) = flood.await.unwrap();
        flood_sessions.extend(created);
        for (status, body) in refused {
            // At its quota with every own session mid-handshake (429), or
            // replaced by its own next session before the handshake ended
            // (503 on initialize, 404 on notifications/initialized).
            assert!(
                status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::SERVICE_UNAVAILABLE
                    || status == StatusCode::NOT_FOUND,
                "flooder refused with {status}: {body}"
            );
        }
    }
    let (status, result) = long_call.await.unwrap();
    flooding.store(false, Ordering::Relaxed);
    let mut all_failures = Vec::new();
    for worker in workers {
        all_failures.extend(worker.await.unwrap());
    }
    sampler_done.store(true, Ordering::Relaxed);
    let max_seen = sampler.join().unwrap();

    assert!(
        all_failures.is_empty(),
        "active clients' calls failed: {all_failures:?}"
    );
    assert!(calls.load(Ordering::Relaxed) >= usize::from(ACTIVE));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result.as_deref(), Some("counted to 4"));
    assert!(
        flood_sessions.len() >= 50,
        "the flood mostly succeeded in creating ({} sessions)",
        flood_sessions.len()
    );
    let bound = usize::from(ACTIVE) + 1 + QUOTA;
    assert!(
        max_seen <= bound,
        "saw {max_seen} live sessions; 20 active + 1 long + quota 5 = {bound}"
    );
    assert!(max_seen <= CAP);

    for (client, session) in &active {
        assert!(
            client.works(session).await,
            "an active client lost its session"
        );
    }
    assert!(long_client.works(&long_session).await);
    let mut flood_alive = 0;
    for session in &flood_sessions {
        if flooder.works(session).await {
            flood_alive += 1;
        } else {
            assert_eq!(flooder.status_of(session).await, StatusCode::NOT_FOUND);
        }
    }
    assert!(
        (1..=QUOTA).contains(&flood_alive),
        "{flood_alive} flood sessions alive"
    );
    assert_eq!(server.manager.session_count(), bound - QUOTA + flood_alive);
}

#[tokio::test]
async fn all_busy_is_503_until_one_goes_idle() {
    let _timed = common::load::timed().await;
    let server = TestServer::start(BoundedSessionManagerBuilder::new(1).build()).await;
    let first_client = server.client_from(addr(2));
    let other = server.client_from(addr(3));
    let first = first_client.initialize().await.unwrap();

    let count = start_count(&first_client, &first, 5, 3, 300).await;
    let refused = raw_initialize(&other).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after(&refused) >= 1);
    assert!(refused.headers().get("mcp-session-id").is_none());
    assert!(
        first_client.works(&first).await,
        "a busy session was evicted"
    );
    assert_eq!(server.manager.session_count(), 1);

    assert_eq!(
        finish_count(count, 5).await.as_deref(),
        Some("counted to 3")
    );
    // The session goes idle once its answer is out; creating then evicts it.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let newest = loop {
        match other.initialize().await {
            Ok(session) => break session,
            Err((StatusCode::SERVICE_UNAVAILABLE, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(refusal) => panic!("initialize after the call ended: {refusal:?}"),
        }
    };
    assert!(other.works(&newest).await);
    assert_eq!(first_client.status_of(&first).await, StatusCode::NOT_FOUND);
    assert_eq!(server.manager.session_count(), 1);
}

#[tokio::test]
async fn refuse_at_capacity_is_503_and_keeps_the_idle_session() {
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(1)
            .at_capacity(AtCapacity::Refuse)
            .build(),
    )
    .await;
    let client = server.client_from(addr(2));
    let other = server.client_from(addr(3));
    let first = client.initialize().await.unwrap();
    for _ in 0..3 {
        let refused = raw_initialize(&other).await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry_after(&refused) >= 1);
    }
    let (status, _) = other.initialize().await.unwrap_err();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(client.works(&first).await);
    assert_eq!(server.manager.session_count(), 1);
}

#[tokio::test]
async fn per_client_rate_limit_spares_others_and_keeps_the_global_limit_exact() {
    // Longer windows than the test takes, so that none slides open meanwhile.
    const WINDOW: Duration = Duration::from_secs(10);
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(50)
            .rate_limit_per_client(2, WINDOW)
            .rate_limit(10, WINDOW)
            .build(),
    )
    .await;
    let a = server.client_from(addr(2));
    let b = server.client_from(addr(3));
    a.initialize().await.unwrap();
    a.initialize().await.unwrap();
    for _ in 0..3 {
        let refused = raw_initialize(&a).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait = retry_after(&refused);
        assert!(
            (1..=WINDOW.as_secs()).contains(&wait),
            "Retry-After: {wait}"
        );
        let body = refused.text().await.unwrap();
        assert!(body.contains("client"), "{body}");
    }
    b.initialize().await.unwrap();
    b.initialize().await.unwrap();

    // A's refusals spent no global grant: exactly 6 remain.
    for last in 4..=6 {
        let client = server.client_from(addr(last));
        client.initialize().await.unwrap();
        client.initialize().await.unwrap();
    }
    let late = server.client_from(addr(7));
    let refused = raw_initialize(&late).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&refused);
    assert!(
        (1..=WINDOW.as_secs()).contains(&wait),
        "Retry-After: {wait}"
    );
    let body = refused.text().await.unwrap();
    assert!(
        body.contains("rate limit") && !body.contains("client"),
        "expected the global limit's refusal: {body}"
    );
    assert_eq!(server.manager.session_count(), 10);
}

#[tokio::test]
async fn quota_replaces_the_clients_own_least_recently_active_idle_session() {
    let _timed = common::load::timed().await;
    // A cap under 8: every activity re-queues its session.
    quota_replacement(7).await;
}

#[tokio::test]
async fn quota_replaces_the_least_recently_active_at_a_larger_cap() {
    let _timed = common::load::timed().await;
    // From a cap of 8 up, activity near the tail does not re-queue: the
    // choice among a client's own sessions must not depend on that.
    quota_replacement(20).await;
}

async fn quota_replacement(cap: usize) {
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(cap)
            .max_sessions_per_client(2)
            .build(),
    )
    .await;
    let a = server.client_from(addr(2));
    let b = server.client_from(addr(3));
    let b1 = b.initialize().await.unwrap();
    let b2 = b.initialize().await.unwrap();
    let s1 = a.initialize().await.unwrap();
    let s2 = a.initialize().await.unwrap();
    let (status, messages) = a.request(&s1, echo_body(1, "hi")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tool_text(&messages, 1).as_deref(), Some("hi"));

    let s3 = a.initialize().await.unwrap();
    assert_eq!(a.status_of(&s2).await, StatusCode::NOT_FOUND);
    assert!(a.works(&s1).await);
    assert!(a.works(&s3).await);
    assert!(b.works(&b1).await);
    assert!(b.works(&b2).await);
    assert_eq!(server.manager.session_count(), 4);

    // Both of A's sessions busy: no own session to replace, and never
    // another client's.
    let c1 = start_count(&a, &s1, 10, 3, 300).await;
    let c3 = start_count(&a, &s3, 11, 3, 300).await;
    let refused = raw_initialize(&a).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&refused) >= 1);
    assert!(refused.headers().get("mcp-session-id").is_none());
    assert!(b.works(&b1).await);
    assert!(b.works(&b2).await);
    assert_eq!(finish_count(c1, 10).await.as_deref(), Some("counted to 3"));
    assert_eq!(finish_count(c3, 11).await.as_deref(), Some("counted to 3"));
    assert!(a.works(&s1).await);
    assert!(a.works(&s3).await);
    assert_eq!(server.manager.session_count(), 4);
}

#[tokio::test]
async fn forwarded_for_names_the_client_behind_a_trusted_proxy() {
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(20)
            .trusted_proxies("x-forwarded-for", ["127.0.0.1"])
            .max_sessions_per_client(1)
            .build(),
    )
    .await;
    let proxy = server.client_from(addr(1));
    let five = initialize_forwarded(&proxy, "203.0.113.5").await.unwrap();
    let six = initialize_forwarded(&proxy, "203.0.113.6").await.unwrap();
    assert!(
        proxy.works(&five).await,
        "another client replaced 203.0.113.5's session"
    );
    assert!(proxy.works(&six).await);
    assert_eq!(server.manager.session_count(), 2);

    // A client-written entry left of the proxy's is not trusted: this is
    // 203.0.113.5 again, at its quota, replacing its own session.
    let spoofed = initialize_forwarded(&proxy, "1.2.3.4, 203.0.113.5")
        .await
        .unwrap();
    assert_eq!(proxy.status_of(&five).await, StatusCode::NOT_FOUND);
    assert!(proxy.works(&spoofed).await);
    assert!(proxy.works(&six).await);
    assert_eq!(server.manager.session_count(), 2);
}

#[tokio::test]
async fn forwarded_for_is_ignored_without_trusted_proxies() {
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(20)
            .max_sessions_per_client(1)
            .build(),
    )
    .await;
    let peer = server.client_from(addr(1));
    let first = initialize_forwarded(&peer, "203.0.113.5").await.unwrap();
    let second = initialize_forwarded(&peer, "203.0.113.6").await.unwrap();
    assert_eq!(peer.status_of(&first).await, StatusCode::NOT_FOUND);
    assert!(peer.works(&second).await);
    assert_eq!(server.manager.session_count(), 1);
}

#[tokio::test]
async fn a_bound_session_answers_only_its_client() {
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(10)
            .bind_sessions_to_client(true)
            .build(),
    )
    .await;
    let a = server.client_from(addr(2));
    let b = server.client_from(addr(3));
    let session = a.initialize().await.unwrap();
    assert_eq!(b.status_of(&session).await, StatusCode::NOT_FOUND);
    let (status, _) = b.request(&session, echo_body(2, "stolen")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nor can another client end it.
    assert_eq!(b.delete(&session).await, StatusCode::NOT_FOUND);
    assert!(a.works(&session).await);
    let (status, messages) = a.request(&session, echo_body(3, "mine")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tool_text(&messages, 3).as_deref(), Some("mine"));
    assert_eq!(server.manager.session_count(), 1);
}

#[tokio::test]
async fn on_close_sees_each_ended_session_with_its_reason() {
    let _timed = common::load::timed().await;
    let seen: Arc<Mutex<Vec<(String, CloseReason)>>> = Arc::default();
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(2)
            .on_close({
                let seen = seen.clone();
                move |id, reason, _lived| {
                    seen.lock().unwrap().push((id.to_string(), reason));
                }
            })
            .build(),
    )
    .await;
    let client = server.client_from(addr(2));
    let first = client.initialize().await.unwrap();
    let second = client.initialize().await.unwrap();
    let third = client.initialize().await.unwrap();
    assert_eq!(client.status_of(&first).await, StatusCode::NOT_FOUND);
    assert!(client.delete(&second).await.is_success());
    assert_eq!(client.status_of(&second).await, StatusCode::NOT_FOUND);
    assert!(client.works(&third).await);

    assert!(
        eventually(TIMEOUT, || seen.lock().unwrap().len() >= 2).await,
        "{:?}",
        seen.lock().unwrap()
    );
    // Nothing else ends meanwhile.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(first, CloseReason::Evicted), (second, CloseReason::Closed)]
    );
}
