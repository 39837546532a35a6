//! The per-client and global bounds on requests in flight, and request
//! costs.

use futures::future::join_all;
use mcp_bounded_session::{BoundedSessionManagerBuilder, RequestInfo};
use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinHandle;

use super::{LONG_MS, TIMEOUT, addr, wait_in_flight};
use crate::common::admission::{assert_refused, call, result_text_of};
use crate::common::{Client, TestServer, eventually};

/// Starts a `hold` call of `client` in a task; its status and body once
/// answered.
fn spawn_hold(client: &Client, id: u64, tool: &'static str) -> JoinHandle<reqwest::Response> {
    let request = call(client, id, tool, json!({ "ms": LONG_MS }));
    tokio::spawn(async move { request.send().await.unwrap() })
}

/// Sends a call that must be answered at once (refused, or a quick tool).
async fn send_now(request: reqwest::RequestBuilder) -> reqwest::Response {
    tokio::time::timeout(TIMEOUT, request.send())
        .await
        .expect("answered at once, not held")
        .unwrap()
}

/// Checks a held call's answer: 200 and the `hold` result.
async fn assert_held_answer(handle: JoinHandle<reqwest::Response>) {
    let response = handle.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    assert_eq!(result_text_of(&body).as_deref(), Some("held"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_at_its_quota_is_refused_while_twenty_others_are_served() {
    const QUOTA: usize = 3;
    const OTHERS: u8 = 20;
    let (server, probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(100)
            .max_requests_in_flight_per_client(QUOTA)
            .build(),
    )
    .await;
    let busy = server.client_from(addr(2));
    let held: Vec<_> = (0..QUOTA as u64)
        .map(|id| spawn_hold(&busy, id, "hold"))
        .collect();
    wait_in_flight(&server.manager, QUOTA).await;

    let one_more = send_now(call(&busy, 99, "echo", json!({ "text": "one more" }))).await;
    assert_refused(one_more, StatusCode::TOO_MANY_REQUESTS, "request_quota", 1).await;

    // Twenty other addresses, all at once, while the three calls hold.
    let answers = join_all((0..OTHERS).map(|i| {
        let client = server.client_from(addr(10 + i));
        async move {
            let response =
                send_now(call(&client, 1, "echo", json!({ "text": format!("c{i}") }))).await;
            (response.status(), response.text().await.unwrap())
        }
    }))
    .await;
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "client {i}: {body}");
        assert_eq!(result_text_of(body), Some(format!("c{i}")), "{body}");
    }
    assert!(
        eventually(TIMEOUT, || probe.running() == QUOTA).await,
        "the held calls were touched"
    );
    assert_eq!(server.manager.requests_in_flight(), QUOTA);

    probe.release();
    for handle in held {
        assert_held_answer(handle).await;
    }
    wait_in_flight(&server.manager, 0).await;
    // Its quota is free again.
    let again = send_now(call(&busy, 100, "echo", json!({ "text": "again" }))).await;
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_bound_is_exact_at_the_handlers() {
    const BOUND: usize = 50;
    const CLIENTS: usize = 64;
    let (server, probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(100)
            .max_requests_in_flight(BOUND)
            .build(),
    )
    .await;
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|i| server.client_from(addr(10 + i as u8)))
        .collect();
    // All 64 fired together; each holds until released.
    let calls: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| spawn_hold(client, i as u64, "hold"))
        .collect();
    // Every call is either answered (a refusal: the admitted ones hold) or
    // running in the handler.
    let settled = eventually(TIMEOUT, || {
        probe.running() + calls.iter().filter(|call| call.is_finished()).count() >= CLIENTS
    })
    .await;
    let refused = calls.iter().filter(|call| call.is_finished()).count();
    assert!(settled, "{} running, {refused} answered", probe.running());
    assert_eq!(probe.running(), BOUND);
    assert_eq!(refused, CLIENTS - BOUND);
    assert_eq!(server.manager.requests_in_flight(), BOUND);

    probe.release();
    let mut answered = 0;
    for call in calls {
        let response = call.await.unwrap();
        if response.status() == StatusCode::OK {
            let body = response.text().await.unwrap();
            assert_eq!(result_text_of(&body).as_deref(), Some("held"), "{body}");
            answered += 1;
        } else {
            assert_refused(response, StatusCode::SERVICE_UNAVAILABLE, "at_capacity", 1).await;
        }
    }
    assert_eq!(answered, BOUND);
    assert_eq!(
        probe.max_running(),
        BOUND,
        "more handlers ran at once than the bound"
    );
    wait_in_flight(&server.manager, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expensive_tool_counts_as_its_cost() {
    const COST: u32 = 3;
    let (server, probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(100)
            .max_requests_in_flight_per_client(4)
            .max_requests_in_flight(6)
            .request_cost(
                |request: &RequestInfo<'_>| match (request.method, request.name) {
                    (Some("tools/call"), Some("expensive")) => COST,
                    _ => 1,
                },
            )
            .build(),
    )
    .await;
    let a = server.client_from(addr(2));
    let b = server.client_from(addr(3));
    let c = server.client_from(addr(4));

    let mut held = vec![spawn_hold(&a, 1, "expensive")];
    wait_in_flight(&server.manager, 3).await;
    // 3 + 1 fits A's 4: a cheap call is served.
    let cheap = send_now(call(&a, 2, "echo", json!({ "text": "cheap" }))).await;
    assert_eq!(cheap.status(), StatusCode::OK);
    let body = cheap.text().await.unwrap();
    assert_eq!(result_text_of(&body).as_deref(), Some("cheap"), "{body}");
    // Its unit is back once its answer ended.
    wait_in_flight(&server.manager, 3).await;
    held.push(spawn_hold(&a, 3, "hold"));
    wait_in_flight(&server.manager, 4).await;
    assert!(eventually(TIMEOUT, || probe.running() == 2).await);
    // 4 + 1 does not.
    assert_refused(
        send_now(call(&a, 4, "echo", json!({ "text": "x" }))).await,
        StatusCode::TOO_MANY_REQUESTS,
        "request_quota",
        1,
    )
    .await;
    // B's expensive call would make 7 of the server's 6.
    assert_refused(
        send_now(call(&b, 5, "expensive", json!({ "ms": 0 }))).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "at_capacity",
        1,
    )
    .await;
    held.push(spawn_hold(&b, 6, "hold"));
    held.push(spawn_hold(&b, 7, "hold"));
    wait_in_flight(&server.manager, 6).await;
    // Four handlers run: the expensive one holds three units.
    assert!(eventually(TIMEOUT, || probe.running() == 4).await);
    assert_refused(
        send_now(call(&c, 8, "echo", json!({ "text": "x" }))).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "at_capacity",
        1,
    )
    .await;

    probe.release();
    for handle in held {
        assert_held_answer(handle).await;
    }
    wait_in_flight(&server.manager, 0).await;
    // With everything back, the expensive tool runs for B too.
    let response = send_now(call(&b, 9, "expensive", json!({ "ms": 0 }))).await;
    assert_eq!(response.status(), StatusCode::OK);
}
