//! The entries of a [`MemorySessionStore`](super::MemorySessionStore) and
//! their park order (see the parent module for the invariants).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use hashlink::LinkedHashMap;
use parking_lot::Mutex;
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::time::Instant;

use crate::clients::ClientKey;

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Copy `generation` of the session runs.
    Live { generation: u64 },
    /// No copy runs; restorable until `until`.
    Parked { until: Instant },
    /// A restore took it.
    Restoring { until: Instant },
}

#[derive(Debug)]
struct Entry {
    /// rmcp's `SessionState` as JSON; `None` until rmcp stores it.
    state: Option<Arc<[u8]>>,
    owner: ClientKey,
    phase: Phase,
}

/// The store's state.
#[derive(Debug)]
pub(crate) struct Inner {
    entries: DashMap<SessionId, Entry, foldhash::fast::RandomState>,
    /// The parked entries' ids, least recently parked first. Its lock is
    /// taken before a map shard's, never after.
    order: Mutex<LinkedHashMap<SessionId, (), foldhash::fast::RandomState>>,
    pub(super) max_parked: usize,
    ttl: Duration,
}

/// What parking a session's copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parked {
    /// Parked: restorable.
    Yes,
    /// Not this store's to park (another copy's entry, a restore's, or
    /// none): nothing changed.
    NotHere,
    /// Its state never reached the store (rmcp was not given it as its
    /// `session_store`): the entry is gone.
    NoState,
}

impl Inner {
    pub(super) fn new(max_parked: usize, ttl: Duration) -> Self {
        Self {
            entries: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            order: Mutex::new(LinkedHashMap::with_hasher(
                foldhash::fast::RandomState::default(),
            )),
            max_parked,
            ttl,
        }
    }

    #[cfg(test)]
    pub(super) fn entries_len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn parked_count(&self) -> usize {
        self.order.lock().len()
    }

    /// A live copy's entry after its handshake: a created session's, its
    /// state to come from rmcp; a restored one's keeps the state and the
    /// owner it had (rmcp stores nothing on a restore).
    pub(crate) fn expect(&self, id: &SessionId, generation: u64, owner: ClientKey) {
        let mut order = self.order.lock();
        order.remove(id);
        match self.entries.get_mut(id) {
            Some(mut entry) => entry.phase = Phase::Live { generation },
            None => {
                self.entries.insert(
                    id.clone(),
                    Entry {
                        state: None,
                        owner,
                        phase: Phase::Live { generation },
                    },
                );
            }
        }
    }

    /// rmcp's state for a live copy's entry that has none yet.
    pub(crate) fn fill(&self, id: &str, state: Arc<[u8]>) {
        if let Some(mut entry) = self.entries.get_mut(id)
            && matches!(entry.phase, Phase::Live { .. })
            && entry.state.is_none()
        {
            entry.state = Some(state);
        }
    }

    /// The state to restore `id` from, unless it is past its deadline. A
    /// live entry's too: rmcp asks only for sessions the manager does not
    /// hold (for this client), so its copy is ending (the restore waits
    /// for it to be parked) or bound to another client (the restore
    /// refuses).
    /// One found past its deadline leaves memory (the only case the read
    /// takes the park order's lock).
    pub(super) fn state_of(&self, id: &str) -> Option<Arc<[u8]>> {
        let entry = self.entries.get(id)?;
        match entry.phase {
            Phase::Parked { until } if Instant::now() >= until => {
                drop(entry);
                let mut order = self.order.lock();
                let expired = self.entries.remove_if(id, |_, entry| {
                    matches!(entry.phase, Phase::Parked { until } if Instant::now() >= until)
                });
                if expired.is_some() {
                    order.remove(id);
                }
                None
            }
            Phase::Restoring { until } if Instant::now() >= until => None,
            _ => entry.state.clone(),
        }
    }

    /// Forgets `id` whatever its phase.
    pub(super) fn remove(&self, id: &str) {
        let mut order = self.order.lock();
        order.remove(id);
        self.entries.remove(id);
    }

    /// Copy `generation` of `id` ended: parked until `until` (at most the
    /// TTL from now) if `park`, else forgotten. Only that copy's entry is
    /// touched.
    pub(crate) fn closed(
        &self,
        id: &SessionId,
        generation: u64,
        park: bool,
        until: Option<Instant>,
    ) -> Parked {
        let now = Instant::now();
        let until = until.map_or(now + self.ttl, |until| until.min(now + self.ttl));
        let mut order = self.order.lock();
        let Some(mut entry) = self.entries.get_mut(id) else {
            return Parked::NotHere;
        };
        if entry.phase != (Phase::Live { generation }) {
            return Parked::NotHere;
        }
        if !park || until <= now {
            drop(entry);
            self.entries.remove(id);
            return Parked::NotHere;
        }
        if entry.state.is_none() {
            drop(entry);
            self.entries.remove(id);
            return Parked::NoState;
        }
        entry.phase = Phase::Parked { until };
        drop(entry);
        self.push_parked(&mut order, id.clone(), now);
        Parked::Yes
    }

    /// Adds `id` at the back of the park order, then drops entries from
    /// the front while over the bound or past their deadline.
    fn push_parked(
        &self,
        order: &mut LinkedHashMap<SessionId, (), foldhash::fast::RandomState>,
        id: SessionId,
        now: Instant,
    ) {
        order.insert(id, ());
        while let Some((front, ())) = order.front() {
            let expired = self
                .entries
                .get(front)
                .is_none_or(|entry| matches!(entry.phase, Phase::Parked { until } if until <= now));
            if order.len() <= self.max_parked && !expired {
                break;
            }
            let (front, ()) = order.pop_front().expect("a front entry");
            self.entries.remove(&front);
        }
    }

    /// Takes parked `id` for a restore: out of the park order, so neither
    /// the bound nor its deadline drops it while the restore admits it.
    pub(crate) fn pin(self: &Arc<Self>, id: &SessionId) -> Result<Pin, NotParked> {
        let now = Instant::now();
        let mut order = self.order.lock();
        let mut entry = self.entries.get_mut(id).ok_or(NotParked::Gone)?;
        let until = match entry.phase {
            Phase::Parked { until } => until,
            Phase::Live { .. } => return Err(NotParked::Live),
            Phase::Restoring { .. } => return Err(NotParked::Gone),
        };
        order.remove(id);
        if until <= now {
            drop(entry);
            self.entries.remove(id);
            return Err(NotParked::Gone);
        }
        entry.phase = Phase::Restoring { until };
        let owner = entry.owner.clone();
        drop(entry);
        Ok(Pin {
            store: self.clone(),
            id: id.clone(),
            owner,
            committed: false,
        })
    }

    /// The client that created parked (or restoring) `id`.
    pub(crate) fn parked_owner(&self, id: &str) -> Option<ClientKey> {
        let entry = self.entries.get(id)?;
        match entry.phase {
            Phase::Parked { .. } | Phase::Restoring { .. } => Some(entry.owner.clone()),
            Phase::Live { .. } => None,
        }
    }
}

/// Why [`Inner::pin`] took nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotParked {
    /// Unknown, past its deadline, or another restore's.
    Gone,
    /// Its copy is live, or ending: it is parked a moment later, if at all.
    Live,
}

/// A parked entry a restore took: parked again when dropped, unless
/// committed.
#[derive(Debug)]
pub(crate) struct Pin {
    store: Arc<Inner>,
    id: SessionId,
    owner: ClientKey,
    committed: bool,
}

impl Pin {
    /// The client that created the session.
    pub(crate) fn owner(&self) -> &ClientKey {
        &self.owner
    }

    /// The restore admitted copy `generation`: the entry is its.
    pub(crate) fn commit(mut self, generation: u64) {
        if let Some(mut entry) = self.store.entries.get_mut(&self.id)
            && matches!(entry.phase, Phase::Restoring { .. })
        {
            entry.phase = Phase::Live { generation };
        }
        self.committed = true;
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let now = Instant::now();
        let mut order = self.store.order.lock();
        let Some(mut entry) = self.store.entries.get_mut(&self.id) else {
            return;
        };
        let Phase::Restoring { until } = entry.phase else {
            return;
        };
        entry.phase = Phase::Parked { until };
        drop(entry);
        self.store.push_parked(&mut order, self.id.clone(), now);
    }
}
