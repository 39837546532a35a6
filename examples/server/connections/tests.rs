//! The connection limits, driven through `Places` and `axum::serve`.

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Places with these limits, trusting the proxies at `trusted` as the
/// manager's layer would.
fn places(per_client: Option<usize>, total: Option<usize>, trusted: &[&str]) -> Arc<Places> {
    let mut builder = mcp_bounded_session::BoundedSessionManagerBuilder::new(1);
    if !trusted.is_empty() {
        builder = builder.trusted_proxies("x-forwarded-for", trusted);
    }
    let manager = builder.build();
    let limits = ConnectionLimits::new(per_client, total, move |peer| {
        manager.is_trusted_proxy(peer)
    });
    Arc::new(Places::new(limits))
}

#[test]
fn an_address_holds_at_most_its_limit_and_gets_its_places_back() {
    let places = places(Some(2), None, &[]);
    let a1 = Places::take(&places, ip("127.0.0.2")).unwrap();
    let a2 = Places::take(&places, ip("127.0.0.2")).unwrap();
    assert_eq!(
        Places::take(&places, ip("127.0.0.2")).unwrap_err(),
        Over::PerClient
    );
    // Another address has its own places.
    let b = Places::take(&places, ip("127.0.0.3")).unwrap();
    assert_eq!((places.open(), places.addresses()), (3, 2));
    drop(a1);
    let a3 = Places::take(&places, ip("127.0.0.2")).unwrap();
    drop((a2, a3, b));
    // Every place back, and no entry left behind.
    assert_eq!((places.open(), places.addresses()), (0, 0));
}

#[test]
fn the_total_bounds_every_address_together() {
    let places = places(Some(2), Some(3), &[]);
    let held: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        .into_iter()
        .map(|peer| Places::take(&places, ip(peer)).unwrap())
        .collect();
    assert_eq!(
        Places::take(&places, ip("10.0.0.4")).unwrap_err(),
        Over::Total
    );
    // A refusal by the total leaves no entry for the refused address.
    assert_eq!(places.addresses(), 3);
    drop(held);
    assert_eq!((places.open(), places.addresses()), (0, 0));
    assert!(Places::take(&places, ip("10.0.0.4")).is_ok());
}

#[test]
fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_is_the_ipv4() {
    let places = places(Some(1), None, &[]);
    let _a = Places::take(&places, ip("2001:db8:1:2::1")).unwrap();
    assert!(Places::take(&places, ip("2001:db8:1:2:ffff::9")).is_err());
    assert!(Places::take(&places, ip("2001:db8:1:3::1")).is_ok());
    let _v4 = Places::take(&places, ip("192.0.2.1")).unwrap();
    assert!(Places::take(&places, ip("::ffff:192.0.2.1")).is_err());
}

#[test]
fn a_trusted_proxy_has_no_per_address_limit_but_counts_in_the_total() {
    let places = places(Some(1), Some(3), &["10.0.0.0/8", "::ffff:192.0.2.0/120"]);
    let proxy: Vec<_> = (0..3)
        .map(|_| Places::take(&places, ip("10.1.2.3")).unwrap())
        .collect();
    assert_eq!((places.open(), places.addresses()), (3, 0));
    assert_eq!(
        Places::take(&places, ip("10.1.2.3")).unwrap_err(),
        Over::Total
    );
    drop(proxy);
    let _mapped = Places::take(&places, ip("192.0.2.7")).unwrap();
    let _again = Places::take(&places, ip("::ffff:192.0.2.7")).unwrap();
    assert_eq!(places.addresses(), 0);
}

#[test]
fn with_no_limit_nothing_is_counted() {
    let places = places(None, None, &[]);
    for _ in 0..3 {
        assert!(Places::take(&places, ip("127.0.0.2")).unwrap().is_none());
    }
    assert_eq!((places.open(), places.addresses()), (0, 0));
}

#[test]
fn the_map_shrinks_after_a_burst_of_addresses() {
    let places = places(Some(1), None, &[]);
    let burst: Vec<_> = (0..10_000u32)
        .map(|n| Places::take(&places, IpAddr::V4(n.into())).unwrap())
        .collect();
    drop(burst);
    let counts = places.counts.lock();
    let capacity = counts.by_client.capacity();
    assert!(counts.by_client.is_empty());
    assert!(capacity <= 128, "{capacity}");
}

/// A connection from `source` (a 127.0.0.0/8 address) to `server`.
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(source), 0)).unwrap();
    socket.connect(server).await.unwrap()
}

async fn read_to_end(mut tcp: TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut text = Vec::new();
    let read = tcp.read_to_end(&mut text);
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    String::from_utf8_lossy(&text).into_owned()
}

/// Through `axum::serve`, as main.rs serves: `tap_io` on top, the peer
/// address in each request.
#[tokio::test]
async fn axum_serves_within_the_limits_and_refuses_past_them() {
    use axum::extract::ConnectInfo;
    use axum::serve::ListenerExt;
    use tokio::io::AsyncWriteExt;

    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let limits = ConnectionLimits::new(Some(2), Some(3), |_| false);
    let listener = BoundedListener::new(tcp, limits);
    let places = Arc::clone(&listener.places);
    let server = listener.local_addr().unwrap();
    let listener = listener.tap_io(|connection| {
        connection.tcp().set_nodelay(true).unwrap();
    });
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
            peer.ip().to_string()
        }),
    );
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut a1 = connect_from("127.0.0.2", server).await;
    let _a2 = connect_from("127.0.0.2", server).await;
    // The third from the same address: 503, closed.
    let a3 = connect_from("127.0.0.2", server).await;
    let refused = read_to_end(a3).await;
    assert!(
        refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{refused:?}"
    );
    assert!(refused.contains("Retry-After: 1\r\n"), "{refused:?}");
    // Another address gets the last place of the total, then the total
    // is full for everyone.
    let _b1 = connect_from("127.0.0.3", server).await;
    let b2 = connect_from("127.0.0.3", server).await;
    assert!(read_to_end(b2).await.starts_with("HTTP/1.1 503"));
    assert_eq!(places.open(), 3);

    // An admitted connection is served, with its peer address.
    a1.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_end(a1).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer.ends_with("127.0.0.2"), "{answer:?}");
    // Its place is given back once hyper drops the connection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while places.open() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "place not given back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = connect_from("127.0.0.2", server).await;
    again
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_end(again).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
}
