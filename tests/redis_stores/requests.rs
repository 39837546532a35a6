//! The record of a session's unanswered requests (what lets another
//! instance tell a resuming client that a request was lost with its
//! instance): written while a request's answer is not stored, gone with
//! the answer, never written for a quick call, bounded, removed by DELETE.

use std::time::Duration;

use crate::common::mcp::{start_count, tool_call};
use crate::common::redis_server::unique_prefix;
use crate::helpers::{instance, stores};
use reqwest::StatusCode;
use serde_json::json;

/// The fields and values of session `id`'s requests hash.
async fn records(
    backend: &crate::common::redis_backend::Backend,
    prefix: &str,
    id: &str,
) -> Vec<String> {
    backend
        .query(redis::cmd("HGETALL").arg(format!("{prefix}{{{id}}}:requests")))
        .await
}

crate::redis_test! {
    /// A quick `echo` writes no record (its priming event and answer are
    /// stored in one append); a `count` of 12 steps of 100 ms is recorded,
    /// under its stream, with its request id, while it runs, and its record
    /// is gone once answered; a DELETE removes the hash.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_is_recorded_until_its_answer_is_stored(backend) {
        let prefix = unique_prefix("requests");
        let stores = stores(backend, &prefix, None).await;
        let server = instance(&stores, 8).await;
        let client = server.client();
        let session = client.initialize().await.unwrap();

        let (status, _) = client
            .request(&session, tool_call(2, "echo", json!({ "text": "hi" })))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(records(backend, &prefix, &session).await, Vec::<String>::new());

        let (mut stream, first) = start_count(&client, &session, 3, (12, 100), "tok", 2).await;
        let record = records(backend, &prefix, &session).await;
        assert_eq!(record.len(), 2, "one request recorded: {record:?}");
        let (stream_name, _) = first[1].0.split_once('#').unwrap();
        assert_eq!(
            format!("{session}:{}", record[0]),
            stream_name,
            "recorded under its stream's suffix"
        );
        let (instance, id) = record[1].split_once(' ').unwrap();
        assert!(!instance.is_empty());
        assert_eq!(id, "3", "with its request id");

        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = stream.next(Duration::from_secs(5)).await {
                if event.message.is_some_and(|m| m["id"] == json!(3)) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(answered, Ok(true));
        assert_eq!(
            records(backend, &prefix, &session).await,
            Vec::<String>::new(),
            "answered: no record left"
        );

        assert!(client.delete(&session).await.is_success());
        let key = format!("{prefix}{{{session}}}:requests");
        assert!(!backend.exists(&key).await, "a DELETE removes the hash");
        drop(server);
        drop(stores);
        backend.clean(&prefix).await;
    }
}

/// The scripts a Redis ran so far (`EVAL` and `EVALSHA`), from `INFO
/// commandstats`.
async fn scripts_run(url: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut crate::common::redis_server::connection(url).await)
        .await
        .unwrap();
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// One round trip per tool call: on a Redis of the test's own (nothing
/// else runs scripts there; the upkeep's round is a minute away), 20
/// `echo` calls run 20 scripts, not 40: each call's priming event and
/// answer are stored by one. (A call slower than the priming event's
/// 50 ms wait, on a loaded machine, stores its priming event alone: a few
/// are allowed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_costs_one_script() {
    let redis = crate::common::redis_server::PrivateRedis::start();
    let stores = mcp_bounded_session::RedisStores::builder(redis.url())
        .prefix("calls:")
        .connect()
        .await
        .unwrap();
    let server = instance(&stores, 8).await;
    let client = server.client();
    let session = client.initialize().await.unwrap();
    assert!(client.works(&session).await);
    let before = scripts_run(&redis.url()).await;
    for n in 0..20 {
        let (status, messages) = client
            .request(&session, tool_call(10 + n, "echo", json!({ "text": "hi" })))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            messages.iter().any(|m| m["id"] == json!(10 + n)),
            "{messages:?}"
        );
    }
    let scripts = scripts_run(&redis.url()).await - before;
    assert!(
        (20..=25).contains(&scripts),
        "{scripts} scripts for 20 calls"
    );
}
