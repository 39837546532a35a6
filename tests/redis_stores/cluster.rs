//! What only a Redis Cluster shows: every key of a session in one slot,
//! and the stores working on through a slot's migration.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::parse_event_id;
use crate::common::redis_backend::{Backend, key};
use crate::common::redis_cluster::RedisCluster;
use crate::common::redis_server::unique_prefix;
use crate::helpers::{
    instance, message, replay, session_id, session_state, store, store_error, stores,
};
use mcp_bounded_session::StoreError;
use reqwest::StatusCode;
use serde_json::json;

/// Sessions made and used through a server (their values, standalone and
/// request streams, indexes, a DELETE's tombstone) and a stateless
/// stream: the keys of each session, and of the stateless stream, are in
/// one slot (`CLUSTER KEYSLOT`), and the sessions are not all in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_a_session_is_in_one_slot() {
    let backend = Backend::cluster();
    let Backend::Cluster(cluster) = &backend else {
        unreachable!()
    };
    let prefix = unique_prefix("slots");
    let stores = stores(&backend, &prefix, None).await;
    let server = instance(&stores, 16).await;
    let client = server.client();
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let session = client.initialize().await.unwrap();
        let standalone = client.open_standalone(&session).await;
        assert_eq!(standalone.status(), StatusCode::OK);
        let (status, _) = client
            .request(
                &session,
                json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                        "params": { "name": "announce", "arguments": { "count": 2 } } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(client.works(&session).await);
        drop(standalone);
        sessions.push(session);
    }
    assert!(client.delete(&sessions[0]).await.is_success());
    let stateless = "0b7e1c2a-5f7e-4c1b-9d7e-00000000beef";
    store(&stores.event_store(), stateless, &message(1)).await;

    let keys = backend.keys(&prefix).await;
    let mut slots: BTreeMap<String, Vec<(String, u16)>> = BTreeMap::new();
    for key in &keys {
        let tag = key::tag(key).unwrap_or_else(|| panic!("{key} has no hash tag"));
        slots
            .entry(tag.to_owned())
            .or_default()
            .push((key.clone(), cluster.keyslot(key)));
    }
    drop(server);
    drop(stores);
    backend.clean(&prefix).await;
    for session in &sessions[1..] {
        let of_session = &slots[session.as_str()];
        assert!(
            of_session.len() >= 4,
            "value, index and two streams at least: {of_session:?}"
        );
    }
    assert_eq!(slots[sessions[0].as_str()].len(), 1, "only the tombstone");
    assert!(slots.contains_key(stateless), "{keys:?}");
    for (tag, keys) in &slots {
        let (_, first) = keys[0];
        assert!(
            keys.iter().all(|(_, slot)| *slot == first),
            "the keys of {tag} are in several slots: {keys:?}"
        );
    }
    let distinct: std::collections::BTreeSet<u16> = slots.values().map(|keys| keys[0].1).collect();
    assert!(distinct.len() > 1, "every session in one slot: {slots:?}");
}

/// A session's slot migrates from one primary to another, by hand as
/// `redis-cli --cluster reshard` does it, while the stores use it:
/// - its keys split between the two nodes, an append answers `TRYAGAIN`
///   (and goes on answering it while the slot is migrating: its void set
///   does not exist, so its keys are never all on either node) until the
///   slot is handed over, and then lands (sent again, not failed);
/// - its keys all moved but the slot not yet handed over, a load and a
///   replay (one key each) answer `ASK` and go to the new node after
///   `ASKING`;
/// - the slot handed over, calls answer `MOVED` and go to the new owner.
///
/// The stream then goes on in a new generation (its entries name the old
/// node as their writer: the scripts cannot tell a migrated list from one
/// a lagging replica kept), so no id is issued twice, a replay from before
/// the migration is refused, and one after it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stores_go_on_while_a_sessions_slot_migrates() {
    // A cluster of its own: the slot's owner changes.
    let cluster = std::sync::Arc::new(RedisCluster::start());
    let backend = Backend::Cluster(cluster.clone());
    let prefix = unique_prefix("migrate");
    let stores = stores(&backend, &prefix, Some(Duration::from_secs(60))).await;
    let (sessions, events) = (stores.session_store(), stores.event_store());
    let id = session_id(0x5107);
    let stream = format!("{id}:common");
    sessions.store(&id, &session_state()).await.unwrap();
    let mut ids = vec![store(&events, &stream, &message(1)).await];
    ids.push(store(&events, &stream, &message(2)).await);

    let session_key = key::session(&prefix, &id);
    let slot = cluster.keyslot(&session_key);
    let source = cluster.owner(slot);
    let target = (source + 1) % 3;
    let (source_id, target_id) = (cluster.node_id(source), cluster.node_id(target));
    let slot_arg = slot.to_string();
    cluster.cli(
        target,
        &["cluster", "setslot", &slot_arg, "importing", &source_id],
    );
    cluster.cli(
        source,
        &["cluster", "setslot", &slot_arg, "migrating", &target_id],
    );
    let target_port = cluster.ports[target].to_string();
    let migrate = |keys: &[String]| {
        let mut args = vec![
            "migrate",
            "127.0.0.1",
            &target_port,
            "",
            "0",
            "5000",
            "keys",
        ];
        args.extend(keys.iter().map(String::as_str));
        let answer = cluster.cli(source, &args);
        assert!(answer.contains("OK"), "MIGRATE {keys:?}: {answer}");
    };

    // The stream moves first: the append's keys are split, TRYAGAIN.
    migrate(&[key::stream(&prefix, &stream)]);
    let appending = tokio::spawn({
        let events = events.clone();
        let stream = stream.clone();
        async move { events.store_event(&stream, &message(3)).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!appending.is_finished(), "the split append did not wait");
    // The rest: every key of the session now on the target, ASK.
    migrate(&[session_key.clone(), key::index(&prefix, &id)]);
    assert!(
        sessions.load(&id).await.unwrap().is_some(),
        "a load through ASK"
    );
    // Run on the new node (an old id is refused there: another writer).
    let through_ask = replay(&events, &ids[0]).await;
    assert!(
        matches!(&through_ask, Err(error) if matches!(store_error(error), StoreError::UnknownEvent(_))),
        "a replay through ASK: {:?}",
        through_ask.map(|events| events.len())
    );
    assert!(
        !appending.is_finished(),
        "the append did not wait for the handover"
    );

    // The slot handed over: MOVED.
    for node in 0..3 {
        cluster.cli(node, &["cluster", "setslot", &slot_arg, "node", &target_id]);
    }
    let third = appending
        .await
        .unwrap()
        .expect("the append sent again after TRYAGAIN, then MOVED");
    ids.push(third);
    ids.push(store(&events, &stream, &message(4)).await);
    assert!(
        sessions.load(&id).await.unwrap().is_some(),
        "a load after MOVED"
    );
    assert_eq!(cluster.owner(slot), target);

    let generation = |id: &str| parse_event_id(id).1;
    let sequence = |id: &str| parse_event_id(id).2;
    assert_eq!(
        ids.iter().map(|id| sequence(id)).collect::<Vec<_>>(),
        [1, 2, 1, 2],
        "{ids:?}"
    );
    assert_eq!(generation(&ids[0]), generation(&ids[1]));
    assert_ne!(generation(&ids[1]), generation(&ids[2]), "a new generation");
    assert_eq!(generation(&ids[2]), generation(&ids[3]));
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an id issued twice: {ids:?}");
    let old = replay(&events, &ids[1]).await;
    assert!(
        matches!(&old, Err(error) if matches!(store_error(error), StoreError::UnknownEvent(_))),
        "a replay across the migration: {:?}",
        old.map(|events| events.len())
    );
    let replayed = replay(&events, &ids[2])
        .await
        .expect("a replay after MOVED");
    let replayed: Vec<String> = replayed
        .iter()
        .map(|event| event.event_id.clone().unwrap())
        .collect();
    assert_eq!(replayed, ids[3..].to_vec());
    // DELETE through the new owner removes every key of the session.
    sessions.delete(&id).await.unwrap();
    assert_eq!(
        backend.stored_keys(&prefix).await,
        vec![key::tombstone(&prefix, &id)]
    );
}
