//! Client keys through real HTTP: which key a request gets from its peer
//! and its trusted proxies' header, and that no header a client writes
//! moves it onto another key. Each loopback source address (127.0.0.x) is
//! a distinct peer; 127.0.0.1 plays the trusted proxy.
//!
//! Keys are observed through a quota of one session per client: a second
//! session under the same key replaces the first (which then answers 404),
//! one under another key leaves it alone.

use crate::common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Client, TestServer};
use mcp_bounded_session::{BoundedSessionManager, BoundedSessionManagerBuilder};
use reqwest::StatusCode;

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

const PROXY: u8 = 1;

/// One session per client, behind a proxy at 127.0.0.1 appending to
/// `X-Forwarded-For`.
fn behind_proxy() -> BoundedSessionManagerBuilder {
    BoundedSessionManagerBuilder::new(50)
        .trusted_proxies("x-forwarded-for", ["127.0.0.1/32"])
        .max_sessions_per_client(1)
}

async fn start(manager: std::sync::Arc<BoundedSessionManager>) -> (TestServer, Client) {
    let server = TestServer::start(manager).await;
    let proxy = server.client_from(addr(PROXY));
    (server, proxy)
}

/// A session created with `headers`; panics if refused.
async fn session(client: &Client, headers: &[(&str, &str)]) -> String {
    client
        .initialize_with(headers)
        .await
        .unwrap_or_else(|refused| panic!("initialize with {headers:?} refused: {refused:?}"))
}

fn xff(value: &str) -> [(&str, &str); 1] {
    [("x-forwarded-for", value)]
}

#[tokio::test]
async fn the_mixed_chain_spoof_no_longer_chooses_the_key() {
    let (server, proxy) = start(behind_proxy().build()).await;
    // An honest client at 6.6.6.6, right behind the proxy.
    let victim = session(&proxy, &xff("6.6.6.6")).await;
    // The review's chain: an outer proxy (198.51.100.2) that writes only
    // Forwarded, the inner one (the peer) only X-Forwarded-For; the client
    // wrote 6.6.6.6 into both. Only X-Forwarded-For is read, and its first
    // untrusted entry from the right is the outer proxy.
    let mixed = [
        ("forwarded", "for=6.6.6.6, for=203.0.113.66"),
        ("x-forwarded-for", "6.6.6.6, 198.51.100.2"),
    ];
    let first = session(&proxy, &mixed).await;
    assert!(proxy.works(&victim).await, "the spoof took 6.6.6.6's key");
    // Both spoofing requests share the outer proxy's key: the second
    // replaced the first.
    let second = session(&proxy, &mixed).await;
    assert_eq!(proxy.status_of(&first).await, StatusCode::NOT_FOUND);
    assert!(proxy.works(&second).await);
    assert!(proxy.works(&victim).await);
    assert_eq!(server.manager.session_count(), 2);
}

#[tokio::test]
async fn a_contradicting_header_gives_no_fresh_budget_on_a_shared_key() {
    let (_server, proxy) = start(
        BoundedSessionManagerBuilder::new(50)
            .trusted_proxies("x-forwarded-for", ["127.0.0.1"])
            .rate_limit_per_client(1, Duration::from_secs(600))
            .build(),
    )
    .await;
    let client = xff("203.0.113.5");
    session(&proxy, &client).await;
    let (status, _) = proxy.initialize_with(&client).await.unwrap_err();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Its budget spent, the client contradicts the proxy's header, or
    // prepends garbage: still its own key, still refused.
    for headers in [
        &[
            ("x-forwarded-for", "203.0.113.5"),
            ("forwarded", "for=1.1.1.1"),
        ][..],
        &xff("garbage, 203.0.113.5"),
        &xff("127.0.0.1, 203.0.113.5"),
    ] {
        let (status, _) = proxy.initialize_with(headers).await.unwrap_err();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{headers:?}");
    }
    // A chain whose client entry is no address is refused outright, and
    // spends no one's budget.
    for value in ["unknown", "203.0.113.5, _hidden"] {
        let (status, body) = proxy.initialize_with(&xff(value)).await.unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
        assert!(body.contains("not an IP address"), "{body}");
    }
    // The proxy's own requests (a health check) still have their budget.
    session(&proxy, &[]).await;
}

#[tokio::test]
async fn a_peer_that_is_no_trusted_proxy_is_keyed_by_itself() {
    let (server, proxy) = start(behind_proxy().build()).await;
    let direct = server.client_from(addr(2));
    let first = session(&direct, &xff("203.0.113.5")).await;
    // Another claimed address, same peer: the same key, which replaces.
    let second = session(&direct, &xff("203.0.113.6")).await;
    assert_eq!(direct.status_of(&first).await, StatusCode::NOT_FOUND);
    assert!(direct.works(&second).await);
    // Its headers are not read at all: garbage is not even refused.
    let third = session(&direct, &xff("unknown")).await;
    assert_eq!(direct.status_of(&second).await, StatusCode::NOT_FOUND);
    // Through the proxy, 203.0.113.6 is a client of its own.
    let proxied = session(&proxy, &xff("203.0.113.6")).await;
    assert!(direct.works(&third).await);
    assert!(proxy.works(&proxied).await);
    assert_eq!(server.manager.session_count(), 2);
}

#[tokio::test]
async fn a_trusted_peers_header_names_the_client_walking_past_trusted_hops() {
    let (server, proxy) = start(
        BoundedSessionManagerBuilder::new(50)
            .trusted_proxies("X-Forwarded-For", ["127.0.0.1", "10.0.0.0/8"])
            .max_sessions_per_client(1)
            .build(),
    )
    .await;
    let five = session(&proxy, &xff("203.0.113.5")).await;
    let six = session(&proxy, &xff("203.0.113.6")).await;
    assert!(proxy.works(&five).await, "203.0.113.6 replaced 203.0.113.5");
    // Through a second trusted hop, with a spoofed entry further left:
    // 203.0.113.7, whose session the plain one then replaces.
    let via_two = session(&proxy, &xff("6.6.6.6, 203.0.113.7, 10.0.0.2")).await;
    let seven = session(&proxy, &xff("203.0.113.7")).await;
    assert_eq!(proxy.status_of(&via_two).await, StatusCode::NOT_FOUND);
    for live in [&five, &six, &seven] {
        assert!(proxy.works(live).await);
    }
    assert_eq!(server.manager.session_count(), 3);
}

#[tokio::test]
async fn forwarded_is_read_when_configured_and_x_forwarded_for_is_not() {
    let (server, proxy) = start(
        BoundedSessionManagerBuilder::new(50)
            .trusted_proxies(http::header::FORWARDED, ["127.0.0.1"])
            .max_sessions_per_client(1)
            .build(),
    )
    .await;
    let five = session(&proxy, &[("forwarded", r#"for="203.0.113.5:4711""#)]).await;
    // X-Forwarded-For naming 203.0.113.5 is not read: this is the proxy's
    // own key, and 203.0.113.5's session stays.
    let own = session(&proxy, &xff("203.0.113.5")).await;
    assert!(proxy.works(&five).await);
    assert!(proxy.works(&own).await);
    assert_eq!(server.manager.session_count(), 2);
}

#[tokio::test]
async fn nat64_and_6to4_clients_are_keyed_by_their_ipv4_address() {
    let (server, proxy) = start(behind_proxy().build()).await;
    // 203.0.113.8 is cb00:7108: natively, through NAT64, and as two 6to4
    // /64s it is one client; each session replaces the previous one.
    let mut previous = session(&proxy, &xff("203.0.113.8")).await;
    for address in [
        "64:ff9b::203.0.113.8",
        "2002:cb00:7108:1::1",
        "2002:cb00:7108:ffff::2",
    ] {
        let next = session(&proxy, &xff(address)).await;
        assert_eq!(
            proxy.status_of(&previous).await,
            StatusCode::NOT_FOUND,
            "{address} is another client than 203.0.113.8"
        );
        previous = next;
    }
    // Another IPv4 client behind the same NAT64 translator is another key.
    let other = session(&proxy, &xff("64:ff9b::203.0.113.9")).await;
    assert!(proxy.works(&previous).await);
    assert!(proxy.works(&other).await);
    assert_eq!(server.manager.session_count(), 2);
}

#[tokio::test]
async fn retry_after_saturates_for_a_window_the_clock_cannot_reach() {
    let (_server, proxy) = start(
        BoundedSessionManagerBuilder::new(50)
            .rate_limit_per_client(1, Duration::MAX)
            .build(),
    )
    .await;
    session(&proxy, &[]).await;
    let refused = proxy
        .post(None)
        .json(&common::initialize_body())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // 2^31 - 1 seconds: never a small value for a limit that never frees.
    assert_eq!(refused.headers()["retry-after"], "2147483647");
}

/// Stands in for a PROXY-protocol middleware: inserts the address named by
/// the test's `x-test-proxy-protocol` header as a bare `SocketAddr`.
async fn proxy_protocol(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let source = request
        .headers()
        .get("x-test-proxy-protocol")
        .and_then(|value| value.to_str().ok()?.parse::<SocketAddr>().ok());
    if let Some(source) = source {
        request.extensions_mut().insert(source);
    }
    next.run(request).await
}

#[tokio::test]
async fn a_bare_socket_addr_wins_over_the_connections_address() {
    let server = TestServer::start_wrapped(
        BoundedSessionManagerBuilder::new(50)
            .max_sessions_per_client(1)
            .build(),
        |app| app.layer(axum::middleware::from_fn(proxy_protocol)),
    )
    .await;
    let balancer = server.client_from(addr(3));
    let via = |source: &'static str| [("x-test-proxy-protocol", source)];
    let five = session(&balancer, &via("203.0.113.5:40000")).await;
    let six = session(&balancer, &via("203.0.113.6:40000")).await;
    let own = session(&balancer, &[]).await;
    for live in [&five, &six, &own] {
        assert!(balancer.works(live).await, "the balancer's address won");
    }
    // Another connection of 203.0.113.5 is the same client.
    let again = session(&balancer, &via("203.0.113.5:40001")).await;
    assert_eq!(balancer.status_of(&five).await, StatusCode::NOT_FOUND);
    assert!(balancer.works(&again).await);
    assert_eq!(server.manager.session_count(), 3);
}

/// An inner service that answers 200 at once, allocating the same for
/// every request.
#[derive(Clone)]
struct Ok200;

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

impl<B> tower_service::Service<http::Request<B>> for Ok200 {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<http::Response<Body>, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        use http_body_util::BodyExt;
        let body = http_body_util::Empty::new().boxed();
        std::future::ready(Ok(http::Response::new(body)))
    }
}

#[tokio::test]
async fn a_long_forwarding_header_costs_no_allocation() {
    use tower_layer::Layer;
    use tower_service::Service;
    let manager = BoundedSessionManagerBuilder::new(50)
        .trusted_proxies("x-forwarded-for", ["10.0.0.0/8"])
        .build();
    let mut service = manager.layer().layer(Ok200);
    // Every entry a trusted hop, so the walk reads all of them (~400 KB).
    let long = vec!["10.0.0.2"; 40_000].join(", ");
    let mut cost = Vec::new();
    for header in ["10.0.0.2", long.as_str()] {
        let mut request = http::Request::new(());
        request
            .headers_mut()
            .insert("x-forwarded-for", header.parse().unwrap());
        request
            .extensions_mut()
            .insert(SocketAddr::from(([10, 0, 0, 1], 4711)));
        let before = crate::allocations::allocated();
        let response = service.call(request).await.unwrap();
        cost.push(crate::allocations::allocated() - before);
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(
        cost[0], cost[1],
        "bytes allocated: short header, long header"
    );
}

#[tokio::test]
async fn no_header_reaches_the_sessions_bound_to_the_proxys_own_key() {
    let (_server, proxy) = start(
        BoundedSessionManagerBuilder::new(50)
            .trusted_proxies("x-forwarded-for", ["127.0.0.1"])
            .bind_sessions_to_client(true)
            .build(),
    )
    .await;
    // A session of the proxy's own (no header: its key is the proxy's).
    let own = session(&proxy, &[]).await;
    let status_with = |headers: &'static [(&'static str, &'static str)]| {
        let request = proxy
            .post(Some(own.parse().unwrap()))
            .json(&common::tools_list_body(7));
        async move {
            let mut request = request;
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.send().await.unwrap().status()
        }
    };
    // A client behind the proxy, with or without a contradicting header,
    // is itself: the session is unknown to it.
    let contradicting = &[
        ("x-forwarded-for", "203.0.113.5"),
        ("forwarded", "for=1.1.1.1"),
    ];
    assert_eq!(status_with(contradicting).await, StatusCode::NOT_FOUND);
    assert_eq!(
        status_with(&[("x-forwarded-for", "203.0.113.5")]).await,
        StatusCode::NOT_FOUND
    );
    // An unreadable chain is refused, not let in under the proxy's key.
    assert_eq!(
        status_with(&[("x-forwarded-for", "unknown")]).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(status_with(&[]).await, StatusCode::OK);
}
