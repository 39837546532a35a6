//! Admitting one more session: the client's quota and rate limit, the global
//! rate limit, then a slot (free, or an idle session's).
//!
//! # Invariants kept here
//!
//! 1. **A refused creation costs nobody anything.** The client's own limits
//!    come first, so that a client refused by them never spends the global
//!    budget nor takes a slot: one client's flood cannot lock out the
//!    others. The global limit comes before any eviction, so that a
//!    refusal never costs a session. Every grant is rolled back if a later
//!    step refuses (dropping an uncommitted [`Reservation`] or [`Grant`]
//!    returns it), and no step after an eviction can refuse: an eviction
//!    always ends in the new session taking the victim's slot.
//! 2. **A client at its quota replaces only its own session.** It evicts
//!    its least recently active idle session and takes over both the slot
//!    and the quota unit of that session, never another client's, and
//!    never more than one.
//!
//! # Why the quota unit moves inside the claim
//!
//! A client at its quota holds a reservation without a unit (it has its
//! grant). Its victim's unit moves to that reservation in the one step
//! between the victim's claim (from which its eviction is certain) and its
//! removal from the registry, under the client table's lock. So the
//! client's count of sessions plus reservations never dips below its quota
//! while the replacement is under way: a second creation of the same
//! client racing this one finds the client at its quota too, and can only
//! replace one of the client's own idle sessions, never take a free unit
//! and then a slot by evicting another client's session. (Moving the unit
//! after the victim left, as an earlier version did, let the victim's end
//! free the unit for a moment: the racing creation took it, evicted
//! another client's session for a slot, and the first creation was then
//! refused with the victim's slot in hand: two sessions lost, one slot
//! left empty. Loom model
//! `manager::loom_tests::a_replacement_never_evicts_another_clients_session`.)
//!
//! The code here is generic over the registry's session type so that the
//! loom models in `manager/loom_tests.rs` run exactly this path.

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::SessionId;

use crate::clients::ClientKey;
use crate::clients::limits::ClientRefusal;
use crate::clients::table::{ClientTable, Reservation};
use crate::eviction::activity::Activity;
use crate::rate_limiter::{Grant, RateLimiter};
use crate::refusal::Creation;
use crate::registry::{Registry, Slot, Stop};

/// One of a client's sessions, as the per-client table lists it: its id and
/// generation (an id restored later is another session).
pub(crate) type ClientSession = (SessionId, u64);

/// The per-client table of a manager.
pub(crate) type Clients = ClientTable<ClientKey, ClientSession>;

/// How often a client at its quota chooses another victim when the chosen
/// one turned busy or ended before it was claimed (each try is O(quota)).
const REPLACEMENT_TRIES: usize = 3;

/// Everything one admission holds until the session is in the registry;
/// dropping it gives everything back.
#[derive(Debug)]
pub(crate) struct Admitted<'a> {
    slot: Slot<'a>,
    client: ClientKey,
    reservation: Option<Reservation<'a, ClientKey, ClientSession>>,
    grant: Option<Grant<'a>>,
}

/// Reserves everything a new session of `client` needs, in the order of
/// the module docs. `clients` is the per-client table, if the client is
/// subject to one.
///
/// # Cancel safety
///
/// Cancel safe: the only `.await` is the registry's wait for a close in
/// flight, which evicts nothing; every grant taken before it is returned on
/// drop.
pub(crate) async fn admit<'a, H: Stop>(
    registry: &'a Registry<H>,
    limiter: Option<&'a RateLimiter>,
    clients: Option<&'a Clients>,
    client: &ClientKey,
) -> Result<Admitted<'a>, Creation> {
    let mut reservation = match clients {
        Some(table) => Some(table.reserve_or_replace(client).map_err(|refusal| {
            match refusal {
                ClientRefusal::RateLimited { retry_after } => {
                    Creation::ClientRateLimited(retry_after)
                }
                // At its quota the client gets a reservation without a unit.
                _ => Creation::ClientQuota,
            }
        })?),
        None => None,
    };
    // Before any eviction: a creation the global limit refuses must not
    // have cost anyone a session.
    let grant = limiter
        .map(|limiter| limiter.try_acquire().map_err(Creation::RateLimited))
        .transpose()?;
    let slot = match (clients, reservation.as_mut()) {
        (Some(table), Some(unitless)) if !unitless.holds_unit() => {
            replace_own(registry, table, client, unitless)?
        }
        _ => registry.acquire_slot().await.ok_or(Creation::AtCapacity)?,
    };
    Ok(Admitted {
        slot,
        client: client.clone(),
        reservation,
        grant,
    })
}

/// A client at its quota: evicts its least recently active idle session,
/// moving that session's quota unit to `reservation` inside the claim (see
/// the module docs), and takes its slot.
fn replace_own<'a, H: Stop>(
    registry: &'a Registry<H>,
    table: &Clients,
    client: &ClientKey,
    reservation: &mut Reservation<'a, ClientKey, ClientSession>,
) -> Result<Slot<'a>, Creation> {
    for _ in 0..REPLACEMENT_TRIES {
        let Some(victim) = least_recently_active_idle(registry, table, client) else {
            break;
        };
        let listed = (victim.id().clone(), victim.generation());
        let mut moved = false;
        let Some(slot) = registry.evict_idle(&victim, || {
            // Claimed, so still in the registry with its membership: still
            // listed, and the move cannot fail.
            moved = reservation.take_unit_of(&listed).is_ok();
        }) else {
            continue;
        };
        debug_assert!(moved, "a claimed session of the client is listed");
        if moved {
            return Ok(slot);
        }
    }
    Err(Creation::ClientQuota)
}

/// Among `client`'s sessions, the idle one to replace: one without a
/// stream before one holding a standalone stream, then the least recently
/// active.
fn least_recently_active_idle<H: Stop>(
    registry: &Registry<H>,
    table: &Clients,
    client: &ClientKey,
) -> Option<Arc<Activity>> {
    table
        .sessions_of(client)
        .iter()
        .filter_map(|(id, generation)| {
            registry
                .with_activity(id, |_, activity| {
                    (activity.generation() == *generation).then(|| activity.clone())
                })
                .flatten()
        })
        .filter(|activity| activity.is_idle())
        .min_by_key(|activity| (activity.is_listening(), activity.last_active()))
}

impl<'a> Admitted<'a> {
    /// The client the session is admitted for.
    pub(crate) fn client(&self) -> &ClientKey {
        &self.client
    }

    /// Puts session `id` in the registry with what this admission holds.
    /// `session` makes it from how its client's table lists it (`None`
    /// without a table): the session must end that listing when it leaves
    /// the registry (a [`Membership`]). Returns its standing, or `None`
    /// (everything given back but the client's rate grant, the session
    /// dropped) if `id` is already live: a concurrent restore of the same
    /// id, or a random id drawn twice.
    pub(crate) fn insert<H: Stop>(
        self,
        registry: &'a Registry<H>,
        id: SessionId,
        session: impl FnOnce(Option<ClientSession>) -> H,
    ) -> Option<Arc<Activity>> {
        let Admitted {
            slot,
            reservation,
            grant,
            ..
        } = self;
        let generation = registry.draw_generation();
        // Listed under its client before it is in the registry: it may be
        // evicted the moment it is, and its end must find it listed.
        let listed = reservation.map(|reservation| {
            let listed = (id.clone(), generation);
            reservation.commit(listed.clone());
            listed
        });
        match registry.insert(slot, id, generation, session(listed)) {
            Ok(activity) => {
                if let Some(grant) = grant {
                    grant.commit();
                }
                Some(activity)
            }
            // Dropping the slot frees it, the session its membership.
            Err((_slot, _session)) => None,
        }
    }
}

/// Keeps one session listed under its client in the per-client table for
/// as long as the session is in the registry: dropped with the registry's
/// entry, it frees the client's quota unit.
#[derive(Debug)]
pub(crate) struct Membership {
    clients: Arc<Clients>,
    client: ClientKey,
    session: ClientSession,
}

impl Membership {
    /// `session`, listed under `client` in `clients`.
    pub(crate) fn new(clients: Arc<Clients>, client: ClientKey, session: ClientSession) -> Self {
        Self {
            clients,
            client,
            session,
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.clients.session_ended(&self.client, &self.session);
    }
}
