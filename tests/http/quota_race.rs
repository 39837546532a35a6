//! A client at its quota racing itself at a full cap, through real HTTP:
//! its concurrent `initialize`s may replace only its own sessions, never
//! another client's, and leave no slot empty. Each loopback source address
//! (127.0.0.x) is a distinct client.

use crate::common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use common::{TestServer, assert_conserved};
use mcp_bounded_session::{BoundedSessionManagerBuilder, CloseReason, SessionId};
use reqwest::StatusCode;

/// Other clients, each holding one idle session.
const OTHERS: u8 = 5;
/// The cap is exactly what the scenario needs: the others' sessions plus
/// the racing client's one, so every creation of the racer happens at a
/// full cap and must replace.
const CAP: usize = OTHERS as usize + 1;
/// Concurrent creators of the racing client.
const RACERS: usize = 8;
/// Creations each racer attempts.
const ATTEMPTS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_at_its_quota_never_evicts_another_clients_session() {
    let _heavy = common::load::heavy().await;
    let evicted = Arc::new(Mutex::new(HashSet::<SessionId>::new()));
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(CAP)
            .max_sessions_per_client(1)
            .on_close({
                let evicted = evicted.clone();
                move |id, reason, _| {
                    if reason == CloseReason::Evicted {
                        evicted.lock().unwrap().insert(id.clone());
                    }
                }
            })
            .build(),
    )
    .await;
    let mut others = Vec::new();
    for i in 0..OTHERS {
        let client = server.client_from(Ipv4Addr::new(127, 0, 0, 20 + i));
        let session = client.initialize().await.expect("a free slot");
        others.push((client, session));
    }
    let racer = server.client_from(Ipv4Addr::new(127, 0, 0, 10));
    racer.initialize().await.expect("the last free slot");
    assert_eq!(server.manager.session_count(), CAP);

    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let racer = racer.clone();
            tokio::spawn(async move {
                let mut created = 0;
                for _ in 0..ATTEMPTS {
                    match racer.initialize().await {
                        Ok(_) => created += 1,
                        // Every one of its sessions was being replaced or
                        // initialized by a sibling: refused as at its quota.
                        Err((StatusCode::TOO_MANY_REQUESTS, _)) => {}
                        // Created, then replaced by a sibling before its
                        // `initialize` was answered (503) or before its
                        // `notifications/initialized` arrived (404).
                        Err((StatusCode::SERVICE_UNAVAILABLE | StatusCode::NOT_FOUND, _)) => {
                            created += 1
                        }
                        Err((status, body)) => panic!("{status}: {body}"),
                    }
                }
                created
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        created += task.await.unwrap();
    }

    let evicted = evicted.lock().unwrap().clone();
    for (client, session) in &others {
        assert!(
            !evicted.contains(&SessionId::from(session.as_str())),
            "another client's session was evicted"
        );
        assert!(client.works(session).await, "another client lost {session}");
    }
    // Each creation replaced exactly one of the racer's own sessions, and
    // none left its slot empty.
    assert!(created > RACERS, "the race never ran: {created} creations");
    assert_eq!(evicted.len(), created);
    assert_eq!(server.manager.session_count(), CAP);
    assert_conserved(&server.manager);
}
