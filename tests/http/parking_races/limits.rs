//! Quotas, bound sessions, deadlines and refused restores under parking.

use super::*;

/// Cap 2, one session per client. A's restores (of its two sessions in
/// turn, sometimes two at once) replace A's own live session; B's idle
/// session, the least recently active of all, is never parked, and B
/// never loses its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_at_quota_never_parks_another_clients_session() {
    let _timed = common::load::timed().await;
    let parked: Arc<Mutex<Vec<String>>> = Arc::default();
    let (server, store) = probe_server(2, 100, |builder| {
        let parked = parked.clone();
        builder
            .max_sessions_per_client(1)
            .idle_timeout(Duration::from_secs(60))
            .on_park(move |id, _| parked.lock().unwrap().push(id.to_string()))
    })
    .await;
    let a = server.client_from(loopback(60));
    let b = server.client_from(loopback(61));
    let b1 = b.initialize().await.unwrap();
    let a1 = a.initialize().await.unwrap();
    // A's second replaces (parks) its first.
    let a2 = a.initialize().await.unwrap();
    assert_eq!(store.parked(), 1);
    let mut statuses = Vec::new();
    for round in 0..12u64 {
        if round % 3 == 2 {
            let (x, y) = tokio::join!(echo(&a, &a1, round), echo(&a, &a2, round + 100));
            statuses.push(x);
            statuses.push(y);
        } else {
            let session = if round % 2 == 0 { &a1 } else { &a2 };
            statuses.push(echo(&a, session, round).await);
        }
        assert!(
            server.manager.session(&sid(&b1)).is_some(),
            "round {round}: B's session is not live ({:?} parked so far)",
            parked.lock().unwrap()
        );
    }
    assert!(
        !parked.lock().unwrap().contains(&b1),
        "B's session was parked: {:?}",
        parked.lock().unwrap()
    );
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert_eq!(echo(&b, &b1, 999).await, StatusCode::OK);
}

/// Bound sessions: while another client floods a parked session's id
/// (four requests at a time, of every kind: a call, a notification, a
/// `GET`, a resume), its requests all answer 404 and restore
/// nothing, and the owner's restores, each after its session was parked
/// again by `park_after` (thirty times), all succeed: the flood neither takes the
/// session nor denies it to its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_flood_neither_restores_nor_blocks_the_owner() {
    let _timed = common::load::timed().await;
    let restores = Arc::new(AtomicUsize::new(0));
    let (server, store) = probe_server(4, 100, |builder| {
        let restores = restores.clone();
        builder
            .bind_sessions_to_client(true)
            .idle_timeout(Duration::from_secs(60))
            .park_after(Duration::from_millis(20))
            .on_restore(move |_| {
                restores.fetch_add(1, Ordering::SeqCst);
            })
    })
    .await;
    let owner = server.client_from(loopback(70));
    let other = server.client_from(loopback(71));
    let session = owner.initialize().await.unwrap();
    assert!(eventually(Duration::from_secs(3), || store.parked() == 1).await);

    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..4)
        .map(|_| {
            let (other, session, stop) = (other.clone(), session.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    // Every kind of request: a call, a notification, a
                    // `GET`, a resume.
                    let status = match statuses.len() % 4 {
                        0 => other.status_of(&session).await,
                        1 => {
                            let notification = json!({ "jsonrpc": "2.0",
                                "method": "notifications/roots/list_changed" });
                            other.request(&session, notification).await.0
                        }
                        2 => other.open_standalone(&session).await.status(),
                        _ => other
                            .resume(Some(&session), common::PROTOCOL_VERSION, "0/0")
                            .await
                            .status(),
                    };
                    statuses.push(status);
                }
                statuses
            })
        })
        .collect();
    let mut owners = Vec::new();
    for round in 0..30u64 {
        // Parked again (park_after 20 ms; a restored copy stays 100 ms).
        let parked = eventually(Duration::from_secs(3), || store.parked() == 1).await;
        owners.push((parked, echo(&owner, &session, round).await));
    }
    stop.store(true, Ordering::SeqCst);
    let mut theirs = Vec::new();
    for task in flood {
        theirs.extend(task.await.unwrap());
    }
    assert!(
        theirs.iter().all(|s| *s == StatusCode::NOT_FOUND),
        "the other client was answered: {theirs:?}"
    );
    assert!(
        owners.iter().all(|(_, s)| *s == StatusCode::OK),
        "the owner was refused its session: {owners:?}"
    );
    let successes = owners.iter().filter(|(p, _)| *p).count();
    assert!(
        restores.load(Ordering::SeqCst) <= successes,
        "{} restores for the owner's {successes} parked calls",
        restores.load(Ordering::SeqCst)
    );
}

/// `max_lifetime` 1.2 s counts from the creation across parks and
/// restores: a session parked by `park_after` (50 ms) and restored every
/// ~150 ms never answers after creation + 1.2 s (with 0.8 s of margin),
/// answers 404 from then on, and leaves the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_counts_from_creation_across_parks_and_restores() {
    let _timed = common::load::timed().await;
    let restores = Arc::new(AtomicUsize::new(0));
    let (server, store) = probe_server(4, 100, |builder| {
        let restores = restores.clone();
        builder
            .idle_timeout(Duration::from_secs(30))
            .max_lifetime(Duration::from_millis(1_200))
            .park_after(Duration::from_millis(50))
            .on_restore(move |_| {
                restores.fetch_add(1, Ordering::SeqCst);
            })
    })
    .await;
    let client = server.client_from(loopback(80));
    let session = client.initialize().await.unwrap();
    // The lifetime ends at most 1.2 s after this.
    let created = Instant::now();
    let mut late = Vec::new();
    let mut round = 0;
    while created.elapsed() < Duration::from_millis(3_000) {
        round += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let sent = created.elapsed();
        let status = echo(&client, &session, round).await;
        if status == StatusCode::OK && sent > Duration::from_millis(2_000) {
            late.push((sent, status));
        }
    }
    assert!(
        restores.load(Ordering::SeqCst) >= 2,
        "never parked and restored: {} restores",
        restores.load(Ordering::SeqCst)
    );
    assert!(
        late.is_empty(),
        "answered past creation + max_lifetime + 0.8 s: {late:?}"
    );
    assert_eq!(client.status_of(&session).await, StatusCode::NOT_FOUND);
    assert!(server.manager.session(&sid(&session)).is_none());
    assert_eq!(store.parked(), 0, "an ended session stayed parked");
}

/// Cap 1, idle timeout 2 s: a session parked by an eviction, past its idle
/// timeout (counted from its last activity), answers 404 and leaves the
/// store; one restored at 1 s counts its idle timeout from there and is
/// still there at 2.5 s; the one that restore evicted (idle since 0 s) is
/// gone at 2.5 s too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_ends_parked_sessions_but_not_restored_ones() {
    let _timed = common::load::timed().await;
    let (server, store) = probe_server(1, 100, |builder| {
        builder.idle_timeout(Duration::from_secs(2))
    })
    .await;
    let client = server.client_from(loopback(90));
    let expiring = client.initialize().await.unwrap();
    let kept = client.initialize().await.unwrap();
    let filler = client.initialize().await.unwrap();
    let start = Instant::now();
    assert_eq!(store.parked(), 2);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // `kept` restored (`filler` parked): its idle timeout counts from here.
    assert_eq!(echo(&client, &kept, 1).await, StatusCode::OK);
    tokio::time::sleep_until(start + Duration::from_millis(2_500)).await;
    assert_eq!(client.status_of(&expiring).await, StatusCode::NOT_FOUND);
    assert!(server.manager.session(&sid(&expiring)).is_none());
    assert_eq!(echo(&client, &kept, 2).await, StatusCode::OK);
    assert_eq!(client.status_of(&filler).await, StatusCode::NOT_FOUND);
    assert_eq!(store.parked(), 0, "{} parked", store.parked());
}

/// Cap 2 (evicting at capacity), both slots busy with other clients' long
/// calls: restores of a parked session are refused (`503`, never `404`),
/// four at once and then one by one, and the session stays parked; once
/// the calls end, it comes back. The client's rate limit (three creations)
/// is not spent by the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_refused_at_a_busy_cap_stays_parked_and_never_404s() {
    let _timed = common::load::timed().await;
    let (server, store) = probe_server(2, 100, |builder| {
        builder
            .idle_timeout(Duration::from_secs(60))
            .rate_limit_per_client(3, Duration::from_secs(60))
    })
    .await;
    let client = server.client_from(loopback(100));
    let parked = client.initialize().await.unwrap();
    let busy: Vec<_> = (0..2u8)
        .map(|n| server.client_from(loopback(101 + n)))
        .collect();
    let mut calls = Vec::new();
    for other in &busy {
        let session = other.initialize().await.unwrap();
        let other = other.clone();
        calls.push(tokio::spawn(async move {
            count(&other, &session, 1, 15, 100).await
        }));
    }
    assert!(eventually(Duration::from_secs(3), || store.parked() == 1).await);
    // Both calls running (1.5 s each).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let together = futures::future::join_all((0..4u64).map(|n| echo(&client, &parked, n))).await;
    let mut one_by_one = Vec::new();
    for n in 0..4u64 {
        one_by_one.push(echo(&client, &parked, 10 + n).await);
    }
    assert_eq!(store.parked(), 1, "a refused restore lost the parked entry");
    for call in calls {
        assert_eq!(call.await.unwrap(), (StatusCode::OK, true));
    }
    assert_eq!(
        echo(&client, &parked, 20).await,
        StatusCode::OK,
        "not restored once free"
    );
    assert!(
        together
            .iter()
            .chain(&one_by_one)
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "refused restores: together {together:?}, one by one {one_by_one:?}"
    );
}

/// `park_after` 1 ms: a session running a 1 s `count` call, while the same
/// client sends it short calls and notifications that end before it, is
/// never parked while the call runs (sampled throughout, and the park
/// hook), and the call completes; parked once quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_is_never_parked_under_park_after_of_1ms() {
    let _timed = common::load::timed().await;
    let parks = Arc::new(AtomicUsize::new(0));
    let (server, store) = probe_server(2, 100, |builder| {
        let parks = parks.clone();
        builder
            .idle_timeout(Duration::from_secs(60))
            .park_after(Duration::from_millis(1))
            .on_park(move |_, _| {
                parks.fetch_add(1, Ordering::SeqCst);
            })
    })
    .await;
    let client = server.client_from(loopback(110));
    let session = client.initialize().await.unwrap();
    // Parked right after its handshake (1 ms), restored by the call.
    assert!(eventually(Duration::from_secs(3), || store.parked() == 1).await);
    let parks_before = parks.load(Ordering::SeqCst);
    let running = Arc::new(AtomicBool::new(true));
    let call = tokio::spawn({
        let (client, session, running) = (client.clone(), session.clone(), running.clone());
        async move {
            let answer = count(&client, &session, 1, 10, 100).await;
            running.store(false, Ordering::SeqCst);
            answer
        }
    });
    // Wait until the call restored the session.
    assert!(eventually(Duration::from_secs(3), || store.parked() == 0).await);
    let parks_at_start = parks.load(Ordering::SeqCst);
    assert_eq!(parks_at_start, parks_before);
    let sampler = tokio::spawn({
        let (store, running) = (store.clone(), running.clone());
        async move {
            let mut seen = 0;
            while running.load(Ordering::SeqCst) {
                seen = seen.max(store.parked());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        }
    });
    let mut side = Vec::new();
    for n in 0..6u64 {
        side.push(echo(&client, &session, 100 + n).await);
        let (notified, _) = client
            .request(
                &session,
                json!({ "jsonrpc": "2.0", "method": "notifications/roots/list_changed" }),
            )
            .await;
        side.push(notified);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let parks_while_running = parks.load(Ordering::SeqCst) - parks_at_start;
    let answer = call.await.unwrap();
    let seen = sampler.await.unwrap();
    assert_eq!(
        answer,
        (StatusCode::OK, true),
        "the long call did not complete"
    );
    assert_eq!(seen, 0, "parked while its call ran");
    assert_eq!(parks_while_running, 0, "parked while its call ran");
    assert!(
        side.iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::ACCEPTED),
        "{side:?}"
    );
    assert!(eventually(Duration::from_secs(3), || store.parked() == 1).await);
}
