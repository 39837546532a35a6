//! Admitting one more session: the client's quota and rate limit, the global
//! rate limit, then a slot (free, or an idle session's).
//!
//! # Why this order
//!
//! The client's own limits come first, so that a client refused by them
//! never spends the global budget nor takes a slot: one client's flood
//! cannot lock out the others. The global limit comes before a client at
//! its quota replaces one of its sessions, so that a refusal never costs
//! it one. Every grant is rolled back if a later step refuses (dropping an
//! uncommitted [`Reservation`] or [`Grant`] returns it), so a refused
//! creation costs nobody anything.
//!
//! A client at its quota replaces its own least recently active idle session
//! (never another client's): that session is evicted with its slot handed
//! over, its quota unit comes free as it leaves, and the creation reserves
//! it. Only a creation of the same client racing this one can take the unit
//! in between; this one is then refused as at its quota.

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::SessionId;

use super::BoundedSessionManager;
use crate::clients::ClientKey;
use crate::clients::limits::ClientRefusal;
use crate::clients::table::{ClientTable, Reservation};
use crate::error::BoundedSessionError;
use crate::eviction::activity::Activity;
use crate::http::{self, Refusal};
use crate::observe::RefusalReason;
use crate::rate_limiter::Grant;
use crate::registry::Slot;

/// One of a client's sessions, as the per-client table lists it: its id and
/// admission number (an id restored later is another session).
pub(crate) type ClientSession = (SessionId, u64);

/// The per-client table of a manager.
pub(crate) type Clients = ClientTable<ClientKey, ClientSession>;

/// Everything one admission holds until the session is in the registry;
/// dropping it gives everything back.
pub(super) struct Admission<'a> {
    pub(super) slot: Slot<'a>,
    pub(super) client: ClientKey,
    pub(super) reservation: Option<Reservation<'a, ClientKey, ClientSession>>,
    pub(super) grant: Option<Grant<'a>>,
}

/// Keeps one session listed under its client in the per-client table for
/// as long as the session is in the registry: dropped with the registry's
/// entry, it frees the client's quota unit.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(super) clients: Arc<Clients>,
    pub(super) client: ClientKey,
    pub(super) session: ClientSession,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.clients.session_ended(&self.client, &self.session);
    }
}

impl BoundedSessionManager {
    /// Reserves everything a new session needs, in the order of the module
    /// docs.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the only `.await` is the registry's wait for a close in
    /// flight; every grant taken before it is returned on drop.
    pub(super) async fn admission(&self) -> Result<Admission<'_>, BoundedSessionError> {
        let client = http::current_client();
        let table = self.clients.as_deref().filter(|_| !client.is_anonymous());
        let mut reservation = None;
        let mut at_quota = false;
        if let Some(table) = table {
            match table.reserve(&client) {
                Ok(reserved) => reservation = Some(reserved),
                Err(ClientRefusal::AtQuota | ClientRefusal::VictimEnded) => at_quota = true,
                Err(ClientRefusal::RateLimited { retry_after }) => {
                    return Err(self.client_rate_limited(retry_after));
                }
            }
        }
        // Before replacing one of the client's sessions: a creation the
        // global limit refuses must not have cost the client a session.
        let grant = self.rate_grant()?;
        let slot = match table.filter(|_| at_quota) {
            Some(table) => {
                let (reserved, slot) = self.replace_own(table, &client)?;
                reservation = Some(reserved);
                slot
            }
            None => self.slot().await?,
        };
        Ok(Admission {
            slot,
            client,
            reservation,
            grant,
        })
    }

    /// A client at its quota: evicts its least recently active idle
    /// session, takes that session's slot and reserves its quota unit.
    fn replace_own<'a>(
        &'a self,
        table: &'a Clients,
        client: &ClientKey,
    ) -> Result<(Reservation<'a, ClientKey, ClientSession>, Slot<'a>), BoundedSessionError> {
        // The chosen session may turn busy or end before it is claimed:
        // choose again, a few times (each try is O(quota)).
        for _ in 0..3 {
            let Some(victim) = self.least_recently_active_idle(table, client) else {
                break;
            };
            let Some(slot) = self.registry.evict_idle(&victim) else {
                continue;
            };
            return match table.reserve(client) {
                Ok(reserved) => Ok((reserved, slot)),
                Err(ClientRefusal::RateLimited { retry_after }) => {
                    Err(self.client_rate_limited(retry_after))
                }
                Err(_) => Err(self.client_quota()),
            };
        }
        Err(self.client_quota())
    }

    /// Among `client`'s sessions, the idle one to replace: one without a
    /// stream before one holding a standalone stream, then the least
    /// recently active.
    fn least_recently_active_idle(
        &self,
        table: &Clients,
        client: &ClientKey,
    ) -> Option<Arc<Activity>> {
        table
            .sessions_of(client)
            .iter()
            .filter_map(|(id, admission)| {
                self.registry
                    .with_activity(id, |_, activity| {
                        (activity.admission() == *admission).then(|| activity.clone())
                    })
                    .flatten()
            })
            .filter(|activity| activity.is_idle())
            .min_by_key(|activity| (activity.is_listening(), activity.last_active()))
    }

    fn client_rate_limited(&self, retry_after: std::time::Duration) -> BoundedSessionError {
        http::record(Refusal::ClientRateLimited { retry_after });
        self.registry
            .observer()
            .refused(RefusalReason::ClientRateLimited);
        tracing::debug!(
            retry_after_secs = retry_after.as_secs_f64(),
            "session admission refused by the client's rate limit"
        );
        BoundedSessionError::ClientRateLimited
    }

    fn client_quota(&self) -> BoundedSessionError {
        http::record(Refusal::ClientQuota);
        self.registry.observer().refused(RefusalReason::ClientQuota);
        tracing::debug!("session admission refused: the client's sessions are all busy");
        BoundedSessionError::ClientQuota
    }
}
