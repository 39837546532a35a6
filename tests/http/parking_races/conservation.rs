//! Exact counts under concurrent restores, evictions and DELETEs.

use super::*;

/// Cap 2, four clients of three sessions each (twelve, ten parked), every
/// client calling its sessions in turn (one request at a time per client,
/// so no request waits on another's restore), `park_after` 30 ms mixing
/// idle parks with evictions. Throughout: the cap holds. Afterwards,
/// nothing ended for good (the store holds them all, no idle timeout):
/// live plus parked is exactly twelve (a session live and parked at once
/// counts twice, a lost one not at all), no request was answered `404`,
/// and each session, called once more, answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_restores_and_evictions_conserve_every_session() {
    let _heavy = common::load::heavy().await;
    let (server, store) = probe_server(2, 100, |builder| {
        builder
            .idle_timeout(Duration::from_secs(120))
            .park_after(Duration::from_millis(30))
    })
    .await;
    let mut sessions = Vec::new();
    for n in 0..4u8 {
        let client = server.client_from(loopback(30 + n));
        let mut own = Vec::new();
        for _ in 0..3 {
            own.push(client.initialize().await.unwrap());
        }
        sessions.push((client, own));
    }
    let total = 12;
    assert_eq!(server.manager.session_count() + store.parked(), total);

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (manager, store, stop) = (server.manager.clone(), store.clone(), stop.clone());
        async move {
            let mut worst = 0;
            while !stop.load(Ordering::SeqCst) {
                worst = worst.max(manager.session_count());
                assert!(store.parked() <= total, "{} parked", store.parked());
                tokio::task::yield_now().await;
            }
            worst
        }
    });
    let workers: Vec<_> = sessions
        .iter()
        .cloned()
        .enumerate()
        .map(|(n, (client, own))| {
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for round in 0..15u64 {
                    let session = &own[(round as usize + n) % own.len()];
                    let status = echo(&client, session, 1_000 * n as u64 + round).await;
                    statuses.push(status);
                    if round % 4 == 3 {
                        tokio::time::sleep(Duration::from_millis(40)).await;
                    }
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for worker in workers {
        statuses.extend(worker.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    let worst = sampler.await.unwrap();
    assert!(worst <= 2, "{worst} live sessions at a cap of 2");
    assert!(
        !statuses.contains(&StatusCode::NOT_FOUND),
        "a live or parked session answered 404: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS
        ]
        .contains(s)),
        "{statuses:?}"
    );

    // Quiet: live and parked add up to the twelve.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (live, parked) = (server.manager.session_count(), store.parked());
    assert_eq!(live + parked, total, "{live} live + {parked} parked");
    common::assert_conserved(&server.manager);
    for (client, own) in &sessions {
        for session in own {
            assert_eq!(echo(client, session, 7).await, StatusCode::OK, "{session}");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (live, parked) = (server.manager.session_count(), store.parked());
    assert_eq!(live + parked, total, "{live} live + {parked} parked");
    assert!(live <= 2);
}

/// Cap 2, `max_parked` 2, five clients creating and calling sessions at
/// once: the store never holds more than two parked and the cap never
/// more than two live, sampled throughout; once quiet, live plus parked
/// is at most four and the counters agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounds_hold_under_concurrent_creations_and_restores() {
    let _heavy = common::load::heavy().await;
    let (server, store) = probe_server(2, 2, |builder| builder).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (manager, store, stop) = (server.manager.clone(), store.clone(), stop.clone());
        async move {
            let (mut live, mut parked) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                live = live.max(manager.session_count());
                parked = parked.max(store.parked());
                tokio::task::yield_now().await;
            }
            (live, parked)
        }
    });
    let workers: Vec<_> = (0..5u8)
        .map(|n| {
            let client = server.client_from(loopback(40 + n));
            tokio::spawn(async move {
                let mut own = Vec::new();
                for round in 0..12u64 {
                    if round % 3 == 0
                        && let Ok(session) = client.initialize().await
                    {
                        own.push(session);
                    }
                    for session in &own {
                        let _ = echo(&client, session, round).await;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let (live, parked) = sampler.await.unwrap();
    assert!(live <= 2, "{live} live at a cap of 2");
    assert!(parked <= 2, "{parked} parked at max_parked 2");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.manager.session_count() + store.parked() <= 4);
    common::assert_conserved(&server.manager);
}

/// A DELETE racing a restore of the same parked session, at offsets from
/// 0 to ~3 ms, forty times (the restoring call may be answered, refused, or
/// `200` with its stream cut short by the DELETE): however they
/// interleave, the DELETE ends the session for good: its id answers 404 afterwards, it is not live, and
/// once the other session is deleted too, nothing is live or parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_a_restore_ends_the_session() {
    let _timed = common::load::timed().await;
    let (server, store) = probe_server(1, 100, |builder| builder).await;
    let client = server.client_from(loopback(50));
    let mut outcomes = Vec::new();
    for round in 0..40u64 {
        let parked = client.initialize().await.unwrap();
        let other = client.initialize().await.unwrap();
        assert_eq!(store.parked(), 1);
        let offset = Duration::from_micros((round % 8) * 400);
        let (restored, deleted) = tokio::join!(racing_echo(&client, &parked, round), async {
            tokio::time::sleep(offset).await;
            client.delete(&parked).await
        });
        outcomes.push((restored, deleted));
        assert!(deleted.is_success(), "round {round}: DELETE {deleted}");
        let after = client.status_of(&parked).await;
        assert_eq!(
            after,
            StatusCode::NOT_FOUND,
            "round {round}: a deleted session answered {after} (restore {restored:?})"
        );
        assert!(
            server.manager.session(&sid(&parked)).is_none(),
            "round {round}: deleted, still live"
        );
        assert!(client.delete(&other).await.is_success());
        assert_nothing_left(&server, &store, round).await;
    }
    // The race was run both ways.
    assert!(
        outcomes.iter().any(|((_, answered), _)| *answered),
        "{outcomes:?}"
    );
}

/// The same race, eight pairs at once, twenty rounds: cap 8, sixteen
/// sessions (eight parked); each parked one gets a restore and a DELETE at
/// once. Every deleted id answers 404 afterwards and is not live, and
/// once all are deleted nothing is live or parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_racing_restores_in_parallel_end_every_session() {
    let _heavy = common::load::heavy().await;
    let (server, store) = probe_server(8, 100, |builder| builder).await;
    let client = server.client_from(loopback(51));
    let mut restored_any = false;
    for round in 0..20u64 {
        let mut sessions = Vec::new();
        for _ in 0..16 {
            sessions.push(client.initialize().await.unwrap());
        }
        assert_eq!(store.parked(), 8, "round {round}");
        let (targets, others) = sessions.split_at(8);
        let races: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(n, target)| {
                let (client, target) = (client.clone(), target.clone());
                tokio::spawn(async move {
                    let offset = Duration::from_micros((n as u64 * 7 + round * 3) % 8 * 250);
                    let (restored, deleted) =
                        tokio::join!(racing_echo(&client, &target, n as u64), async {
                            tokio::time::sleep(offset).await;
                            client.delete(&target).await
                        });
                    (restored, deleted)
                })
            })
            .collect();
        for race in races {
            let (restored, deleted) = race.await.unwrap();
            restored_any |= restored.1;
            assert!(deleted.is_success(), "round {round}: DELETE {deleted}");
        }
        for target in targets {
            let after = client.status_of(target).await;
            assert_eq!(
                after,
                StatusCode::NOT_FOUND,
                "round {round}: deleted {target} answered {after}"
            );
            assert!(server.manager.session(&sid(target)).is_none());
        }
        for other in others {
            assert!(client.delete(other).await.is_success());
        }
        assert_nothing_left(&server, &store, round).await;
    }
    assert!(restored_any, "no restore ever won its race");
}

/// Once every session of round `round` is deleted: none live (the ends
/// run on the runtime's workers), none parked.
async fn assert_nothing_left(server: &TestServer, store: &MemorySessionStore, round: u64) {
    assert!(
        eventually(Duration::from_secs(2), || server.manager.session_count()
            == 0)
        .await,
        "round {round}: {} live",
        server.manager.session_count()
    );
    assert_eq!(store.parked(), 0, "round {round}: left parked");
}
