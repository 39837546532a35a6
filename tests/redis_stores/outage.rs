//! Redis stopped and restarted under two instances, and a DELETE the
//! pub/sub did not carry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::redis_backend::key;
use crate::common::redis_server::{PrivateRedis, keys, unique_prefix};
use crate::common::{eventually_async, tools_list_body};
use crate::helpers::{exists, instance};
use mcp_bounded_session::RedisStores;
use reqwest::StatusCode;

/// Panics seen on tokio worker threads (tasks of a multi-thread runtime;
/// only the outage test uses one, so they are its panics).
static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_worker_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("tokio-runtime-worker") {
                WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Two instances A and B on a private Redis that is killed and restarted
/// empty. Every check is recorded and all failures are reported together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_redis_outage_and_are_written_again() {
    count_worker_panics();
    let panics_before = WORKER_PANICS.load(Ordering::SeqCst);
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let prefix = unique_prefix("outage");
    let connect = || async {
        RedisStores::builder(url.as_str())
            .prefix(prefix.as_str())
            .ttl(Duration::from_secs(3))
            .upkeep_interval(Duration::from_millis(100))
            .connect()
            .await
            .unwrap()
    };
    let (stores_a, stores_b) = (connect().await, connect().await);
    let (a, b) = (instance(&stores_a, 16).await, instance(&stores_b, 16).await);
    let (client_a, client_b) = (a.client(), b.client());
    let session_key = |id: &str| key::session(&prefix, id);
    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        eprintln!("[outage] {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures.push(what);
        }
    };

    let s_a = client_a.initialize().await.expect("initialize on A");
    let s_del = client_a.initialize().await.expect("initialize on A");
    assert!(client_a.works(&s_a).await);
    assert!(exists(&url, &session_key(&s_a)).await);
    // B restores a session of A while Redis is up (the control).
    assert!(client_b.works(&s_del).await, "B restores a session of A");

    redis.stop();

    let (status, messages) = client_a.request(&s_a, tools_list_body(5)).await;
    check(
        status == StatusCode::OK && messages.iter().any(|m| m["result"]["tools"].is_array()),
        format!("a request on A for its session while Redis is down: {status}, {messages:?}"),
    );
    let s_new = client_a.initialize().await;
    check(
        s_new.is_ok(),
        format!("initialize on A while Redis is down: {s_new:?}"),
    );
    let s_new = s_new.ok();
    if let Some(s_new) = &s_new {
        let (status, messages) = client_a.request(s_new, tools_list_body(6)).await;
        check(
            status == StatusCode::OK && messages.iter().any(|m| m["result"]["tools"].is_array()),
            format!("the new session on A while Redis is down: {status}, {messages:?}"),
        );
    }
    let unknown_on_b = s_new
        .clone()
        .unwrap_or_else(|| "no-such-session".to_owned());
    let response = client_b
        .post(Some(unknown_on_b.parse().unwrap()))
        .json(&tools_list_body(7))
        .send()
        .await
        .unwrap();
    let (status, retry_after) = (
        response.status(),
        response.headers().get("retry-after").cloned(),
    );
    check(
        status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some(),
        format!(
            "a session unknown to B while Redis is down: {status}, Retry-After {retry_after:?}"
        ),
    );
    let deleted = client_a.delete(&s_del).await;
    check(
        deleted.is_success(),
        format!("DELETE on A while Redis is down: {deleted}"),
    );

    redis.restart();

    let mut written_again = vec![session_key(&s_a)];
    written_again.extend(s_new.iter().map(|id| session_key(id)));
    let back = eventually_async(Duration::from_secs(3), || async {
        let present = keys(&url, &prefix).await;
        written_again.iter().all(|key| present.contains(key))
    })
    .await;
    check(
        back,
        format!(
            "A's sessions written again after the restart: {:?}",
            keys(&url, &prefix).await
        ),
    );
    let tombstone = key::tombstone(&prefix, &s_del);
    let tombstoned = eventually_async(Duration::from_secs(3), || exists(&url, &tombstone)).await;
    check(
        tombstoned,
        "the DELETE issued during the outage left its tombstone".to_owned(),
    );
    if let Some(s_new) = &s_new {
        check(
            client_b.works(s_new).await,
            "B restores the session created on A during the outage".to_owned(),
        );
    }
    check(
        client_a.works(&s_a).await,
        "A's session works after the restart".to_owned(),
    );
    // A few upkeep rounds later, the DELETEd session is still gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    check(
        !exists(&url, &session_key(&s_del)).await,
        "the DELETEd session's key is not written again".to_owned(),
    );
    let status = client_b.status_of(&s_del).await;
    check(
        status == StatusCode::NOT_FOUND,
        format!("the DELETEd session on B: {status}"),
    );
    let panics = WORKER_PANICS.load(Ordering::SeqCst) - panics_before;
    check(
        panics == 0,
        format!("{panics} panics in the servers' tasks"),
    );

    drop((a, b));
    drop((stores_a, stores_b));
    drop(redis);
    assert!(failures.is_empty(), "failed checks: {failures:#?}");
}

crate::redis_test! {
    /// A session whose key is gone and whose tombstone is there (a DELETE
    /// published while this instance was not subscribed) is closed by the
    /// upkeep; one whose key is gone without a tombstone (Redis lost it) is
    /// written again and goes on.
    #[tokio::test]
    async fn the_upkeep_ends_sessions_deleted_elsewhere_and_rewrites_lost_ones(backend) {
        let prefix = unique_prefix("upkeep");
        let stores = backend
            .builder()
            .prefix(prefix.as_str())
            .ttl(Duration::from_secs(5))
            .upkeep_interval(Duration::from_millis(100))
            .connect()
            .await
            .unwrap();
        let server = instance(&stores, 16).await;
        let client = server.client();
        let deleted = client.initialize().await.unwrap();
        let lost = client.initialize().await.unwrap();
        let session_key = |id: &str| key::session(&prefix, id);
        assert!(backend.exists(&session_key(&deleted)).await);
        assert!(client.works(&deleted).await && client.works(&lost).await);

        // The tombstone first, as a DELETE leaves it (atomically with the
        // key's removal): an upkeep round between the key's removal and a
        // later tombstone would write the session back, rightly. Then the
        // keys, in two steps: they are in two slots.
        let _: () = backend
            .query(
                redis::cmd("SET")
                    .arg(key::tombstone(&prefix, &deleted))
                    .arg("1")
                    .arg("PX")
                    .arg(20_000),
            )
            .await;
        backend.del(&session_key(&deleted)).await;
        backend.del(&session_key(&lost)).await;

        // Rounds come every 100 ms; the margin is for a loaded machine
        // (the cluster variant failed once at 2 s with other builds running).
        let closed = eventually_async(Duration::from_secs(5), || async {
            client.status_of(&deleted).await == StatusCode::NOT_FOUND
        })
        .await;
        assert!(closed, "the session with a tombstone was not closed");
        let lost_key = session_key(&lost);
        let rewritten =
            eventually_async(Duration::from_secs(5), || backend.exists(&lost_key)).await;
        assert!(rewritten, "the lost session's key was not written again");
        assert!(client.works(&lost).await);
        assert!(!backend.exists(&session_key(&deleted)).await);
        drop(server);
        drop(stores);
        backend.clean(&prefix).await;
    }
}
