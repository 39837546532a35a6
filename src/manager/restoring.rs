//! What a restore holds while it runs: its id, listed so that one restore
//! of an id runs at a time (`Restoring`), and its wait for a copy of the
//! session that another thread is ending (`EndingWait`).

use dashmap::DashSet;
use rmcp::transport::streamable_http_server::session::SessionId;

/// A restore's wait for a copy of its session that another thread is
/// ending (removing it from the registry, then parking it): a few
/// instructions, unless that thread is preempted in between, which on a
/// loaded machine lasts a scheduler tick or more. So it first yields, then
/// sleeps a millisecond at a time, and gives up after [`Self::LIMIT`] (a
/// copy still ending by then is not being ended).
pub(super) struct EndingWait {
    yields: u32,
    since: Option<tokio::time::Instant>,
}

impl EndingWait {
    const YIELDS: u32 = 64;
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

    pub(super) fn new() -> Self {
        Self {
            yields: 0,
            since: None,
        }
    }

    /// Waits a little; `false`, at once, once the limit is reached.
    pub(super) async fn wait(&mut self) -> bool {
        if self.yields < Self::YIELDS {
            self.yields += 1;
            tokio::task::yield_now().await;
            return true;
        }
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= Self::LIMIT {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        true
    }
}

/// An id being restored, listed in the manager's set until dropped.
pub(super) struct Restoring<'a> {
    set: &'a DashSet<SessionId>,
    id: SessionId,
}

impl<'a> Restoring<'a> {
    /// Lists `id`, or `None` if a restore of it is already under way.
    pub(super) fn claim(set: &'a DashSet<SessionId>, id: &SessionId) -> Option<Self> {
        set.insert(id.clone()).then(|| Self {
            set,
            id: id.clone(),
        })
    }
}

impl Drop for Restoring<'_> {
    fn drop(&mut self) {
        self.set.remove(&self.id);
    }
}
