//! The manager driven by an arbitrary operation sequence and checked, after
//! every operation, against a sequential model: the cap, oldest-first
//! eviction, 404 (no session) after close, eviction or handler end, and the
//! exact rolling-window rate limit.
//!
//! Input: the first byte picks the configuration (cap 1 to 4, rate limit
//! none or 1 to 3 per 10 s), then each pair of bytes is one operation.

use std::collections::VecDeque;
use std::time::Duration;

use mcp_bounded_session::{
    BoundedSessionError, BoundedSessionManager, SessionConfig, SessionId, SessionTransport,
};
use rmcp::transport::streamable_http_server::session::SessionManager;
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(10);

/// Ids the model remembers as gone, to check they stay gone; bounded so a
/// long input stays cheap.
const GONE_KEPT: usize = 64;

pub fn check(data: &[u8]) {
    let Some((&config, operations)) = data.split_first() else {
        return;
    };
    let cap = usize::from(config % 4) + 1;
    let rate = usize::from((config >> 2) % 4);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // No worker timers: time only moves for the rate limiter.
        let mut session_config = SessionConfig::default();
        session_config.keep_alive = None;
        session_config.init_timeout = None;
        let mut manager = BoundedSessionManager::new(session_config, cap);
        if rate > 0 {
            manager = manager.with_rate_limit(rate, WINDOW);
        }
        let mut model = Model {
            cap,
            rate,
            live: VecDeque::new(),
            gone: VecDeque::new(),
            grants: VecDeque::new(),
        };
        for operation in operations.chunks(2) {
            let (kind, argument) = (operation[0], operation.get(1).copied().unwrap_or(0));
            model.apply(&manager, kind, argument).await;
            model.assert_matches(&manager).await;
        }
    });
}

struct Model {
    cap: usize,
    rate: usize,
    /// Live sessions, oldest first, with the transport that keeps each open.
    live: VecDeque<(SessionId, SessionTransport)>,
    gone: VecDeque<SessionId>,
    /// Times of the grants still inside the window.
    grants: VecDeque<Instant>,
}

impl Model {
    async fn apply(&mut self, manager: &BoundedSessionManager, kind: u8, argument: u8) {
        match kind % 5 {
            0 => self.create(manager).await,
            1 if !self.live.is_empty() => {
                let (id, _transport) = self.remove(argument);
                manager.close_session(&id).await.expect("close never fails");
            }
            2 if !self.live.is_empty() => {
                // The handler ends without a DELETE: dropping the transport.
                let (id, transport) = self.remove(argument);
                drop(transport);
                let _ = id;
            }
            3 => tokio::time::advance(Duration::from_millis(u64::from(argument) * 250)).await,
            _ => {}
        }
    }

    async fn create(&mut self, manager: &BoundedSessionManager) {
        let now = Instant::now();
        while self
            .grants
            .front()
            .is_some_and(|&at| now.duration_since(at) >= WINDOW)
        {
            self.grants.pop_front();
        }
        let refused = self.rate > 0 && self.grants.len() >= self.rate;
        match manager.create_session().await {
            Err(BoundedSessionError::RateLimited) => {
                assert!(
                    refused,
                    "refused with {} grants in the window",
                    self.grants.len()
                );
            }
            Err(error) => panic!("create failed: {error}"),
            Ok((id, transport)) => {
                assert!(
                    !refused,
                    "granted with {} grants in the window",
                    self.grants.len()
                );
                if self.rate > 0 {
                    self.grants.push_back(now);
                }
                if self.live.len() == self.cap {
                    let (oldest, _) = self.live.pop_front().expect("cap >= 1");
                    self.forget(oldest);
                }
                self.live.push_back((id, transport));
            }
        }
    }

    fn remove(&mut self, argument: u8) -> (SessionId, SessionTransport) {
        let index = usize::from(argument) % self.live.len();
        let (id, transport) = self.live.remove(index).expect("index in range");
        self.forget(id.clone());
        (id, transport)
    }

    fn forget(&mut self, id: SessionId) {
        if self.gone.len() == GONE_KEPT {
            self.gone.pop_front();
        }
        self.gone.push_back(id);
    }

    async fn assert_matches(&self, manager: &BoundedSessionManager) {
        assert_eq!(manager.session_count(), self.live.len());
        let stats = manager.stats();
        assert_eq!(stats.mapped, self.live.len(), "{stats:?}");
        assert!(stats.is_consistent(), "{stats:?}");
        for (id, _) in &self.live {
            assert!(manager.has_session(id).await.unwrap(), "live {id} missing");
        }
        for id in &self.gone {
            assert!(!manager.has_session(id).await.unwrap(), "{id} came back");
        }
    }
}
