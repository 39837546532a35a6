//! Request and listen-stream admission (the layer's per-request path)
//! under every interleaving loom explores: the global and per-client
//! bounds hold at every instant, a unit is given back by every drop, and a
//! listen stream's replacement touches only its own client's streams.
use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use tokio::time::Instant;

use super::table::RequestTable;
use super::{ListenAtQuota, RequestLimits};
use crate::clients::ClientKey;
use crate::refusal::RequestRefusal;

/// A request table with these bounds (`None`: none) and no rate limit.
fn request_table(
    max_in_flight: Option<usize>,
    max_in_flight_per_client: Option<usize>,
    max_listen: Option<usize>,
    max_listen_per_client: Option<usize>,
    listen_at_quota: ListenAtQuota,
) -> Arc<RequestTable> {
    Arc::new(RequestTable::new(&RequestLimits {
        max_in_flight,
        max_in_flight_per_client,
        max_listen,
        max_listen_per_client,
        listen_at_quota,
        ..Default::default()
    }))
}

/// Admits one request of `client` at cost 1, counting it in `running` while
/// it is held, and checks the global bound from inside.
fn hold_one(
    table: &Arc<RequestTable>,
    client: &ClientKey,
    running: &loom::sync::Arc<AtomicUsize>,
    global: usize,
) -> Result<(), RequestRefusal> {
    let units = table.admit_request(client, 1, Instant::now())?;
    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
    assert!(now <= global, "{now} requests held at a bound of {global}");
    assert!(table.in_flight() <= global);
    running.fetch_sub(1, Ordering::SeqCst);
    drop(units);
    Ok(())
}

/// Three clients race for a global bound of 2, one of them already holding
/// a unit: never more than two held at once, and every unit comes back.
#[test]
fn the_global_bound_holds_at_every_instant_and_every_unit_comes_back() {
    loom::model(|| {
        let table = request_table(Some(2), None, None, None, ListenAtQuota::ReplaceOldest);
        let running = loom::sync::Arc::new(AtomicUsize::new(0));
        let held = table
            .admit_request(&ClientKey::named("held"), 1, Instant::now())
            .unwrap();
        running.fetch_add(1, Ordering::SeqCst);
        let racers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let (table, running) = (table.clone(), running.clone());
                thread::spawn(move || hold_one(&table, &ClientKey::named(name), &running, 2))
            })
            .collect();
        let admitted = racers
            .into_iter()
            .map(|racer| racer.join().unwrap())
            .filter(Result::is_ok)
            .count();
        // With one unit held, at least one racer fits; a refusal is only
        // for the global bound.
        assert!(admitted >= 1);
        drop(held);
        assert_eq!(table.in_flight(), 0, "a unit was not given back");
    });
}

/// A client at its bound races itself and another client at the global
/// bound: the client never holds more than its bound, and its refused
/// attempt never takes global units, so the other client always fits.
#[test]
fn a_clients_bound_racing_the_global_bound_never_costs_another_client() {
    loom::model(|| {
        let table = request_table(Some(2), Some(1), None, None, ListenAtQuota::ReplaceOldest);
        let running = loom::sync::Arc::new(AtomicUsize::new(0));
        let a = ClientKey::named("a");
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (table, running, a) = (table.clone(), running.clone(), a.clone());
                thread::spawn(move || {
                    let units = table.admit_request(&a, 1, Instant::now());
                    if units.is_ok() {
                        running.fetch_add(1, Ordering::SeqCst);
                    }
                    units
                })
            })
            .collect();
        // b needs one of the two global units: a may take at most one.
        let b = table.admit_request(&ClientKey::named("b"), 1, Instant::now());
        assert!(b.is_ok(), "another client's refused attempt cost b: {b:?}");
        let held: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(running.load(Ordering::SeqCst), 1, "a exceeded its bound");
        for refused in held.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(*refused, RequestRefusal::RequestQuota { limit: 1 });
        }
        drop((held, b));
        assert_eq!(table.in_flight(), 0);
    });
}

/// A client at its listen quota opens another while a second client opens
/// its first at the global bound's last place and the client's oldest
/// stream ends on its own: the replaced stream is the client's own, the
/// other client always gets its place, and the count is exact afterwards.
#[test]
fn a_listen_replacement_takes_only_the_clients_own_place() {
    loom::model(|| {
        let table = request_table(None, None, Some(2), Some(1), ListenAtQuota::ReplaceOldest);
        let a = ClientKey::named("a");
        let oldest = table.admit_listen(&a, Instant::now()).unwrap();
        let ending = thread::spawn(move || drop(oldest));
        let replacing = {
            let (table, a) = (table.clone(), a.clone());
            thread::spawn(move || table.admit_listen(&a, Instant::now()))
        };
        let b = table.admit_listen(&ClientKey::named("b"), Instant::now());
        // Every thread joined before any assertion: a panic while another
        // thread is blocked on a lock hides the assertion's message.
        let newer = replacing.join().unwrap();
        ending.join().unwrap();
        assert!(b.is_ok(), "b lost its place to a's replacement: {b:?}");
        let newer = newer.expect("a's own place, replaced or free");
        assert!(table.listening() <= 2);
        assert!(!b.as_ref().unwrap().replaced().is_cancelled());
        assert!(!newer.replaced().is_cancelled());
        assert_eq!(table.listening(), 2);
        drop((newer, b));
        assert_eq!(table.listening(), 0, "a place was not given back");
    });
}

/// A client whose name puts it in a shard other than `other`'s.
fn in_another_shard(table: &RequestTable, other: &ClientKey) -> ClientKey {
    (0..)
        .map(|i| ClientKey::named(format!("c{i}")))
        .find(|key| table.shard_index(key) != table.shard_index(other))
        .expect("a name in another shard")
}

/// The bound (32 here: large enough, at loom's four shards, that shards
/// borrow a spare unit beyond what a request needs) is filled exactly by
/// three clients in different shards, one taking 30 units: in every
/// interleaving, whether shards hold spare when the free units run out
/// (the last admission then collects it with every shard's lock) or
/// not, all three are admitted, never more than 32 units are held, and
/// every unit comes back as free or spare.
#[test]
fn units_lent_to_shards_never_cost_an_admission_the_bound_has_room_for() {
    loom::model(|| {
        const BOUND: usize = 32;
        let table = request_table(Some(BOUND), None, None, None, ListenAtQuota::ReplaceOldest);
        let running = loom::sync::Arc::new(AtomicUsize::new(0));
        let a = ClientKey::named("a");
        let c = in_another_shard(&table, &a);
        let b = in_another_shard(&table, &c);
        let threads: Vec<_> = [(a, 1), (b, BOUND - 2)]
            .into_iter()
            .map(|(client, cost)| {
                let (table, running) = (table.clone(), running.clone());
                thread::spawn(move || {
                    let units = table.admit_request(&client, cost, Instant::now());
                    if units.is_ok() {
                        let now = running.fetch_add(cost, Ordering::SeqCst) + cost;
                        assert!(now <= BOUND, "{now} units held");
                        running.fetch_sub(cost, Ordering::SeqCst);
                    }
                    units.map(drop)
                })
            })
            .collect();
        let last = table.admit_request(&c, 1, Instant::now());
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(last.is_ok(), "refused with room in the bound: {last:?}");
        for result in results {
            assert!(result.is_ok(), "refused with room in the bound: {result:?}");
        }
        drop(last);
        assert_eq!(table.in_flight(), 0, "a unit was not given back");
        let again = table.admit_request(&ClientKey::named("all"), BOUND, Instant::now());
        assert!(again.is_ok(), "units lost as spare: {again:?}");
    });
}
