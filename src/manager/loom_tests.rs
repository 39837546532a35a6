//! Per-client admission (quota replacement, rate limits) against the
//! registry, under every interleaving loom explores: the manager's own
//! admission path (`admit`, then `Admitted::insert`) with sessions that
//! give their client's quota unit back when they leave the registry, as the
//! manager's do.
use std::time::Duration;

use super::admission::{Clients, Membership, admit};
use crate::clients::ClientKey;
use crate::close_reason::CloseReason;
use crate::rate_limiter::RateLimiter;
use crate::refusal::Creation;
use crate::registry::{Registry, Stop};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// A per-client table with a quota of `max_sessions` sessions and, if
/// given, a rate limit of `.0` creations per window `.1`.
fn client_table(max_sessions: Option<usize>, rate: Option<(usize, Duration)>) -> Clients {
    Clients::new(crate::clients::limits::ClientLimits {
        max_sessions,
        rate,
        ..Default::default()
    })
}

/// A session that counts its stops and holds its client's quota unit while
/// it is in the registry.
#[derive(Debug)]
struct Member {
    stops: std::sync::Arc<AtomicUsize>,
    membership: Option<Membership>,
}

impl Stop for Member {
    fn stop(&self, _reason: CloseReason, _generation: u64) {
        self.stops.fetch_add(1, Ordering::SeqCst);
    }

    fn left_registry(&mut self) {
        self.membership = None;
    }
}

/// One model's world: a registry, a per-client table and an optional
/// global rate limiter, shared by its threads.
struct World {
    registry: Registry<Member>,
    clients: std::sync::Arc<Clients>,
    limiter: Option<RateLimiter>,
}

impl World {
    fn new(cap: usize, quota: usize, limiter: Option<RateLimiter>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            registry: Registry::new(cap),
            clients: std::sync::Arc::new(client_table(Some(quota), None)),
            limiter,
        })
    }

    /// Creates session `id` for `client` through the manager's admission
    /// path; returns its stop counter, or why it was refused.
    fn create(
        &self,
        client: &ClientKey,
        id: &str,
    ) -> Result<std::sync::Arc<AtomicUsize>, Creation> {
        let admitted = loom::future::block_on(admit(
            &self.registry,
            self.limiter.as_ref(),
            Some(&self.clients),
            client,
        ))?;
        let stops = std::sync::Arc::new(AtomicUsize::new(0));
        let activity = admitted.insert(&self.registry, id.into(), |listed| Member {
            stops: stops.clone(),
            membership: listed
                .map(|listed| Membership::new(self.clients.clone(), client.clone(), listed)),
        });
        assert!(activity.is_some(), "ids are unique in a model");
        Ok(stops)
    }

    fn stops(stops: &Option<std::sync::Arc<AtomicUsize>>) -> usize {
        stops
            .as_ref()
            .map_or(0, |stops| stops.load(Ordering::SeqCst))
    }

    /// Slots are conserved and every live session is listed once.
    fn assert_conserved(&self) {
        let stats = self.registry.stats();
        assert!(stats.is_consistent(), "{stats:?}");
    }
}

/// Two creations of one client at its quota (1) race at a full cap (2)
/// beside another client's idle session: the other client's session is
/// never stopped, whatever the interleaving, and no slot is left empty.
/// (Before the quota unit moved inside the claim, the victim's end freed
/// the unit for a moment; the second creation took it and evicted the
/// other client's session for a slot, then the first was refused.)
#[test]
fn a_replacement_never_evicts_another_clients_session() {
    loom::model(|| {
        let world = World::new(2, 1, None);
        let (c, d) = (ClientKey::named("c"), ClientKey::named("d"));
        let own = world.create(&c, "own").unwrap();
        let other = world.create(&d, "other").unwrap();
        let racer = {
            let (world, c) = (world.clone(), c.clone());
            thread::spawn(move || world.create(&c, "second").ok())
        };
        let first = world.create(&c, "first").ok();
        let second = racer.join().unwrap();
        assert_eq!(
            other.load(Ordering::SeqCst),
            0,
            "another client's session was evicted"
        );
        assert!(world.registry.contains(&"other".into()));
        assert_eq!(
            own.load(Ordering::SeqCst),
            1,
            "the own session was replaced once"
        );
        // One creation replaced `own`; the other was refused or replaced
        // the first one's session: the cap stays full, c holds one.
        let created = usize::from(first.is_some()) + usize::from(second.is_some());
        assert!(created >= 1);
        assert_eq!(World::stops(&first) + World::stops(&second), created - 1);
        assert_eq!(world.registry.session_count(), 2, "a slot was left empty");
        assert_eq!(world.clients.sessions_of(&c).len(), 1);
        world.assert_conserved();
    });
}

/// A replacement races a DELETE of the very session it chose: the session
/// stops once, another client's session never, and the client never holds
/// more than its quota.
#[test]
fn a_replacement_racing_a_close_of_its_victim_costs_nobody_else() {
    loom::model(|| {
        let world = World::new(2, 1, None);
        let (c, d) = (ClientKey::named("c"), ClientKey::named("d"));
        let own = world.create(&c, "own").unwrap();
        let other = world.create(&d, "other").unwrap();
        let closer = {
            let world = world.clone();
            thread::spawn(move || {
                world
                    .registry
                    .close(&"own".into(), None, CloseReason::Closed)
            })
        };
        let created = world.create(&c, "new");
        closer.join().unwrap();
        assert_eq!(own.load(Ordering::SeqCst), 1);
        assert_eq!(
            other.load(Ordering::SeqCst),
            0,
            "another client's session was evicted"
        );
        // Creation only as at its quota (it chose `own` before the close
        // took it), never for capacity.
        if let Err(refused) = &created {
            assert_eq!(*refused, Creation::ClientQuota);
        }
        assert!(world.clients.sessions_of(&c).len() <= 1);
        assert_eq!(
            world.registry.session_count(),
            1 + usize::from(created.is_ok())
        );
        world.assert_conserved();
    });
}

/// A client's replacement and another client's creation race for the one
/// grant the global rate limit has left at a full cap: exactly one wins,
/// and the refused one evicted nobody (the grant is taken before any
/// eviction).
#[test]
fn a_replacement_racing_the_global_rate_limit_evicts_only_for_the_winner() {
    loom::model(|| {
        let limiter = RateLimiter::new(3, Duration::from_secs(3600));
        let world = World::new(2, 1, Some(limiter));
        let (c, d, e) = (
            ClientKey::named("c"),
            ClientKey::named("d"),
            ClientKey::named("e"),
        );
        // Two of the three grants go to the sessions already there.
        let own = world.create(&c, "own").unwrap();
        let other = world.create(&e, "other").unwrap();
        let newcomer = {
            let (world, d) = (world.clone(), d.clone());
            thread::spawn(move || world.create(&d, "newcomer"))
        };
        let replacement = world.create(&c, "replacement");
        let newcomer = newcomer.join().unwrap();
        let created = usize::from(replacement.is_ok()) + usize::from(newcomer.is_ok());
        assert_eq!(created, 1, "one grant, one creation");
        for refused in [&replacement, &newcomer]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
        {
            assert!(matches!(refused, Creation::RateLimited(_)), "{refused:?}");
        }
        let evicted = own.load(Ordering::SeqCst) + other.load(Ordering::SeqCst);
        assert_eq!(evicted, 1, "only the winner evicts, once");
        if replacement.is_ok() {
            assert_eq!(
                other.load(Ordering::SeqCst),
                0,
                "c replaced its own session"
            );
        }
        assert_eq!(world.registry.session_count(), 2);
        world.assert_conserved();
    });
}
