use std::time::Duration;

use tokio::time::Instant;

use super::table::RequestTable;
use super::*;

/// Admits `request` as the layer does (its MCP headers read once).
fn admit(
    admission: &RequestAdmission,
    request: &Parts,
    client: &ClientKey,
) -> Result<Option<Admitted>, RequestRefusal> {
    admission.admit(request, McpHeaders::of_post(request).as_ref(), client)
}

fn limits(config: impl FnOnce(&mut RequestLimits)) -> RequestLimits {
    let mut limits = RequestLimits::default();
    config(&mut limits);
    limits
}

fn table(config: impl FnOnce(&mut RequestLimits)) -> Arc<RequestTable> {
    Arc::new(RequestTable::new(&limits(config)))
}

fn client(name: &str) -> ClientKey {
    ClientKey::named(name)
}

/// A `POST` of protocol 2026-07-28 with `method` in `Mcp-Method`, or a
/// legacy one without the header.
fn post(method: Option<&str>) -> Parts {
    let mut request = http::Request::post("/mcp");
    if let Some(method) = method {
        request = request
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
    }
    request.body(()).unwrap().into_parts().0
}

#[tokio::test(start_paused = true)]
async fn a_clients_units_never_exceed_its_bound_and_a_refusal_costs_it_nothing() {
    let table = table(|l| {
        l.max_in_flight_per_client = Some(3);
        l.rate_per_client = Some((5, Duration::from_secs(60)));
    });
    let (a, b) = (client("a"), client("b"));
    let now = Instant::now();
    let first = table.admit_request(&a, 2, now).unwrap();
    let _second = table.admit_request(&a, 1, now).unwrap();
    assert_eq!(
        table.admit_request(&a, 1, now).unwrap_err(),
        RequestRefusal::RequestQuota { limit: 3 }
    );
    // Another client is not affected.
    let _other = table.admit_request(&b, 3, now).unwrap();
    drop(first);
    let _third = table.admit_request(&a, 2, now).unwrap();
    assert_eq!(table.in_flight(), 6);
    // Three grants taken by a, one refused and given back: two are left.
    let _fourth = table.admit_request(&a, 0, now).unwrap();
    let _fifth = table.admit_request(&a, 0, now).unwrap();
    assert!(matches!(
        table.admit_request(&a, 0, now).unwrap_err(),
        RequestRefusal::RequestRate { limit: 5, retry_after } if retry_after == Duration::from_secs(60)
    ));
}

#[tokio::test(start_paused = true)]
async fn the_global_bound_is_exact_and_its_refusal_gives_the_clients_units_back() {
    let table = table(|l| {
        l.max_in_flight = Some(4);
        l.max_in_flight_per_client = Some(4);
        l.rate_per_client = Some((3, Duration::from_secs(60)));
    });
    let now = Instant::now();
    let held = table.admit_request(&client("a"), 3, now).unwrap();
    assert_eq!(
        table.admit_request(&client("b"), 2, now).unwrap_err(),
        RequestRefusal::RequestsAtCapacity { limit: 4 }
    );
    // b's refusal took neither its units nor its grants.
    drop(held);
    let whole = table.admit_request(&client("b"), 4, now).unwrap();
    assert_eq!(table.in_flight(), 4);
    drop(whole);
    for _ in 0..2 {
        drop(table.admit_request(&client("b"), 1, now).unwrap());
    }
    assert!(matches!(
        table.admit_request(&client("b"), 1, now),
        Err(RequestRefusal::RequestRate { .. })
    ));
    assert_eq!(table.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_listen_stream_at_the_quota_replaces_the_clients_own_oldest() {
    let table = table(|l| {
        l.max_listen = Some(3);
        l.max_listen_per_client = Some(2);
    });
    let now = Instant::now();
    let (a, b) = (client("a"), client("b"));
    let oldest = table.admit_listen(&a, now).unwrap();
    let newer = table.admit_listen(&a, now).unwrap();
    let others = table.admit_listen(&b, now).unwrap();
    assert_eq!(table.listening(), 3);
    // At a's quota and at the global bound: a's oldest makes room.
    let newest = table.admit_listen(&a, now).unwrap();
    assert!(oldest.replaced().is_cancelled());
    assert!(!newer.replaced().is_cancelled() && !others.replaced().is_cancelled());
    assert_eq!(table.listening(), 3, "the place passed on");
    // The replaced stream's end gives nothing back: its place is taken.
    drop(oldest);
    assert_eq!(table.listening(), 3);
    // b, below its quota, needs a place of its own: none is free, and
    // another client's stream is never taken for it.
    assert_eq!(
        table.admit_listen(&b, now).unwrap_err(),
        RequestRefusal::ListenAtCapacity { limit: 3 }
    );
    assert!(!newer.replaced().is_cancelled());
    drop((newer, newest, others));
    assert_eq!(table.listening(), 0);
    assert_eq!(table.tracked_clients(), 0, "nothing left to remember");
}

#[tokio::test(start_paused = true)]
async fn refuse_mode_answers_a_client_at_its_listen_quota() {
    let table = table(|l| {
        l.max_listen_per_client = Some(1);
        l.listen_at_quota = ListenAtQuota::Refuse;
    });
    let now = Instant::now();
    let open = table.admit_listen(&client("a"), now).unwrap();
    assert_eq!(
        table.admit_listen(&client("a"), now).unwrap_err(),
        RequestRefusal::ListenQuota { limit: 1 }
    );
    assert!(!open.replaced().is_cancelled());
    // The refusal left the open stream listed: its end frees its place.
    drop(open);
    assert_eq!(table.listening(), 0);
    assert_eq!(table.tracked_clients(), 0);
}

#[test]
fn the_layer_counts_posts_and_tells_listen_streams_apart_by_their_header() {
    let admission = RequestAdmission::new(&limits(|l| {
        l.max_in_flight = Some(10);
        l.max_listen = Some(10);
    }))
    .unwrap();
    let a = client("a");
    let get = http::Request::get("/mcp").body(()).unwrap().into_parts().0;
    assert!(admit(&admission, &get, &a).unwrap().is_none());
    let listen = admit(&admission, &post(Some("subscriptions/listen")), &a).unwrap();
    assert!(matches!(listen, Some(Admitted::Listen(_))));
    let call = admit(&admission, &post(Some("tools/call")), &a).unwrap();
    let legacy = admit(&admission, &post(None), &a).unwrap();
    assert!(matches!(call, Some(Admitted::Request(_))));
    assert!(matches!(legacy, Some(Admitted::Request(_))));
    // Before 2026-07-28 rmcp checks no header against the body: a session's
    // POST that claims to be a listen stream is a request.
    let posing = http::Request::post("/mcp")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-method", "subscriptions/listen")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let posing = admit(&admission, &posing, &a).unwrap();
    assert!(matches!(posing, Some(Admitted::Request(_))));
    drop(posing);
    assert_eq!((admission.in_flight(), admission.listen_streams()), (2, 1));
    drop((listen, call, legacy));
    assert_eq!((admission.in_flight(), admission.listen_streams()), (0, 0));
}

#[test]
fn a_cost_is_what_the_users_function_says_within_the_smallest_bound() {
    let admission = RequestAdmission::new(&limits(|l| {
        l.max_in_flight = Some(100);
        l.max_in_flight_per_client = Some(8);
        l.cost = Some(RequestCost(Arc::new(
            |request: &RequestInfo<'_>| match request.method {
                Some("tools/call") => 1_000,
                Some("tools/list") => 0,
                _ => 3,
            },
        )));
    }))
    .unwrap();
    let a = client("a");
    let expensive = admit(&admission, &post(Some("tools/call")), &a).unwrap();
    assert_eq!(admission.in_flight(), 8, "clamped to the client's bound");
    assert!(admit(&admission, &post(Some("tools/list")), &a).is_err());
    drop(expensive);
    let _cheap = admit(&admission, &post(Some("tools/list")), &a).unwrap();
    let _legacy = admit(&admission, &post(None), &a).unwrap();
    assert_eq!(admission.in_flight(), 4, "a cost of 0 counts as 1");
}

#[test]
fn no_limit_means_no_admission() {
    assert!(RequestAdmission::new(&RequestLimits::default()).is_none());
}

#[test]
#[should_panic(expected = "max_requests_in_flight_per_client must be at least 1")]
fn a_zero_bound_panics() {
    RequestLimits {
        max_in_flight_per_client: Some(0),
        ..RequestLimits::default()
    }
    .validate();
}

/// A flood from 200,000 distinct clients each sending one request: the
/// table holds the busy clients plus at most its idle bound.
#[test]
fn a_flood_of_distinct_clients_keeps_the_table_flat() {
    let table = table(|l| {
        l.rate_per_client = Some((10, Duration::from_secs(3600)));
        l.max_idle_keys = 1_000;
    });
    let now = Instant::now();
    let mut largest = 0;
    for n in 0..200_000u32 {
        let key = ClientKey::from_ip(std::net::Ipv4Addr::from(n).into(), 64);
        drop(table.admit_request(&key, 1, now).unwrap());
        if n % 1_000 == 0 {
            largest = largest.max(table.tracked_clients());
        }
    }
    // Each shard keeps its share of the idle bound, rounded up.
    assert!(largest <= 1_000usize.div_ceil(table::SHARDS) * table::SHARDS);
    assert!(
        table.tracked_clients() >= 900,
        "recent clients are remembered"
    );
}

#[tokio::test(start_paused = true)]
async fn the_global_bound_is_exact_with_units_lent_to_shards() {
    let table = table(|l| l.max_in_flight = Some(1_024));
    let now = Instant::now();
    // 1,024 clients spread over every shard, each holding one unit: the
    // early ones borrowed spare, the last ones find the free units gone
    // and collect the spare back. Every one is admitted.
    let mut held: Vec<_> = (0..1_024)
        .map(|i| table.admit_request(&client(&format!("c{i}")), 1, now))
        .collect::<Result<_, _>>()
        .expect("the bound has room for every one");
    assert_eq!(table.in_flight(), 1_024);
    assert_eq!(table.budget_state(), Some((0, 0, 0)));
    assert_eq!(
        table.admit_request(&client("late"), 1, now).unwrap_err(),
        RequestRefusal::RequestsAtCapacity { limit: 1_024 }
    );
    // One unit back, wherever it was held: the next client gets it.
    drop(held.swap_remove(17));
    let late = table.admit_request(&client("late"), 1, now).unwrap();
    drop(late);
    drop(held);
    assert_eq!(table.in_flight(), 0);
    let (free, _, spare) = table.budget_state().unwrap();
    assert_eq!(free + spare, 1_024, "every unit is free or spare again");
    assert!(
        spare <= 1_024 / 4,
        "at most a quarter of the bound is spare"
    );
}
