//! What the manager tells the outside about sessions coming and going: a
//! user's `on_close` hook, a warning as the cap nears and, with the `metrics`
//! feature, metrics through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! # Invariants kept here
//!
//! 1. **Reporting never breaks bookkeeping.** Every method takes `&self`, is
//!    synchronous, never blocks and returns normally whatever the user's hook
//!    does: a panic in the hook is caught and logged, so the caller's own
//!    state changes around the report (freeing a slot, waking a creator) are
//!    never skipped. The hook still runs on the caller's thread, so a hook
//!    that blocks blocks that close; it should only hand the data on.
//! 2. **One warning per crossing.** The 90 % warning is logged once each
//!    time the reported count rises to 90 % of the cap, however many
//!    threads report at once (see below).
//!
//! # Calling it
//!
//! The manager calls [`Observer::created`] after it admitted a session,
//! [`Observer::closed`] after a session left the registry and its slot was
//! freed, and [`Observer::refused`] when it turned a creation down. Each is
//! given the live count *after* the change, as the caller saw it.
//!
//! # The 90 % warning
//!
//! A report whose live count reaches 90 % of `max_sessions`
//! (`live * 10 >= max * 9`) while the warning is *armed* logs one WARN event
//! and disarms it. Only a report below 80 % (`live * 10 < max * 8`) arms it
//! again. So "once per crossing" means once per excursion: from the first
//! report at 90 % or more until the count falls below 80 %, one event,
//! however the count moves in between. The gap is hysteresis: a full server
//! hovers around the cap (each creation at the cap evicts, closes and
//! creations alternate), and a single threshold would log on every step back
//! up. With fewer than 10 slots no count may lie between the two thresholds
//! (with 2 slots: warns at 2, re-arms at 1).
//!
//! The state is one `AtomicBool`: a warning needs a successful
//! `compare_exchange(false, true)`, so of any number of concurrent reports
//! exactly one logs. Each report changes the flag in one atomic step, so the
//! warnings are exactly those of the reports taken in the order of their
//! steps on the flag. Reports that race may carry their counts in another
//! order than the counts happened; the warning follows the reports.
//!
//! # The `on_close` hook
//!
//! [`Observer::closed`] calls the hook with the session's id, why it ended
//! and how long it lived. A panic in the hook is caught
//! (`std::panic::catch_unwind`) and logged as one ERROR event per panic, with
//! the session id and the panic message; the close, the metrics and the
//! warning's state are not affected. The process's panic hook still runs
//! first (by default it prints the panic to stderr), and under
//! `panic = "abort"` nothing can be caught: the process aborts.
//!
//! # Metrics (feature `metrics`)
//!
//! | name | type | labels | unit | value |
//! |---|---|---|---|---|
//! | `mcp_sessions_active` | gauge | none | sessions | live sessions after the latest creation or close |
//! | `mcp_sessions_max` | gauge | none | sessions | the cap, `max_sessions` |
//! | `mcp_sessions_created_total` | counter | none | sessions | sessions admitted |
//! | `mcp_sessions_closed_total` | counter | `reason` | sessions | sessions ended, by why: `evicted`, `max_lifetime`, `closed`, `idle_timeout`, `init_timeout`, `worker_ended`, `handler_ended` ([`CloseReason::label`]) |
//! | `mcp_sessions_refused_total` | counter | `reason` | creations | creations refused, by why: `rate_limited`, `client_rate_limited`, `client_quota`, `at_capacity` |
//! | `mcp_session_duration_seconds` | histogram | none | seconds | each ended session's lifetime, from admission to close |
//!
//! Each value goes to the recorder in force when it is reported (the global
//! one, or the calling thread's local one); with none it is dropped.
//! Counters count what happened while a recorder was installed. The gauges
//! are set, not added to, so they are right from the first report after a
//! recorder is installed. `mcp_sessions_max` is set at construction, which
//! is lost if no recorder is installed yet, so it is set again with each
//! creation and close: it is always present once anything happened. The
//! descriptions and units are given to the recorder at construction only.
//!
//! Without the feature none of this is compiled; the hook and the warning
//! work the same.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
// Not `crate::sync`'s: this flag guards only itself and is not part of the
// loom-checked core, whose invariants nothing here touches.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::SessionId;

use crate::close_reason::CloseReason;

/// The user's hook, called once per ended session.
pub(crate) type CloseHook = Arc<dyn Fn(&SessionId, CloseReason, Duration) + Send + Sync>;

/// Why a session creation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RefusalReason {
    /// The manager's creation rate limit was reached.
    RateLimited,
    /// One client's creation rate limit was reached.
    ClientRateLimited,
    /// One client already holds as many sessions as it may.
    ClientQuota,
    /// The cap was full and the manager refuses rather than evicts.
    AtCapacity,
}

impl RefusalReason {
    /// The stable snake_case label, for metrics and logs.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::ClientRateLimited => "client_rate_limited",
            Self::ClientQuota => "client_quota",
            Self::AtCapacity => "at_capacity",
        }
    }
}

/// Reports sessions' creations, closes and refusals: to the `on_close` hook,
/// to the log (the 90 % warning) and, with the `metrics` feature, to the
/// `metrics` recorder. See the module docs.
pub(crate) struct Observer {
    max_sessions: usize,
    on_close: Option<CloseHook>,
    /// The smallest live count at 90 % of the cap or more.
    warn_at: usize,
    /// Live counts below this one (80 % of the cap) re-arm the warning.
    rearm_below: usize,
    /// Whether the warning was logged and not re-armed since.
    warned: AtomicBool,
}

impl Observer {
    /// An observer for a manager with this cap (the manager never has 0)
    /// and optional hook.
    pub(crate) fn new(max_sessions: usize, on_close: Option<CloseHook>) -> Self {
        #[cfg(feature = "metrics")]
        emit::describe_and_set_max(max_sessions);
        Self {
            max_sessions,
            on_close,
            warn_at: tenths_of(max_sessions, 9),
            rearm_below: tenths_of(max_sessions, 8),
            warned: AtomicBool::new(false),
        }
    }

    /// A session was admitted; `live_after` is the live count after it.
    pub(crate) fn created(&self, live_after: usize) {
        #[cfg(feature = "metrics")]
        emit::created(self.max_sessions, live_after);
        self.track_level(live_after);
    }

    /// A session ended after living `lived`; `live_after` is the live count
    /// after it left. Calls the hook, which may panic: see the module docs.
    pub(crate) fn closed(
        &self,
        id: &SessionId,
        reason: CloseReason,
        lived: Duration,
        live_after: usize,
    ) {
        // The metrics and the warning first: a hook that panics or blocks
        // then cannot hold them back.
        #[cfg(feature = "metrics")]
        emit::closed(self.max_sessions, reason, lived, live_after);
        self.track_level(live_after);
        self.call_hook(id, reason, lived);
    }

    /// A session creation was refused.
    pub(crate) fn refused(&self, reason: RefusalReason) {
        #[cfg(feature = "metrics")]
        emit::refused(reason);
        // Without the feature a refusal has nothing to update: the caller
        // logs or returns the refusal itself.
        #[cfg(not(feature = "metrics"))]
        let _ = reason;
    }

    fn track_level(&self, live: usize) {
        if live >= self.warn_at {
            if self
                .warned
                .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                tracing::warn!(
                    live,
                    max_sessions = self.max_sessions,
                    "live sessions reached 90 % of max_sessions"
                );
            }
        } else if live < self.rearm_below && self.warned.load(Ordering::Relaxed) {
            // Load before storing: most reports find the warning armed, and a
            // plain load leaves the cache line shared between the cores.
            self.warned.store(false, Ordering::Relaxed);
        }
    }

    fn call_hook(&self, id: &SessionId, reason: CloseReason, lived: Duration) {
        let Some(hook) = &self.on_close else { return };
        // Unwind safety: the hook is given only shared references to values
        // it cannot invalidate, and nothing of the observer's is mid-change
        // while it runs; whatever state of its own a panicking hook leaves
        // behind is the hook's.
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| hook(id, reason, lived))) {
            tracing::error!(
                session_id = %id,
                reason = %reason,
                panic = panic_message(payload.as_ref()),
                "the on_close hook panicked; the session is closed all the same"
            );
        }
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer")
            .field("max_sessions", &self.max_sessions)
            .field("on_close", &self.on_close.as_ref().map(|_| "Fn"))
            .field("warned", &self.warned.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The smallest count `n` with `n * 10 >= max * tenths`, so that comparing
/// with it is comparing with that fraction of the cap. In `u128` so that no
/// cap overflows; the result is at most `max`, so it fits back.
const fn tenths_of(max: usize, tenths: u128) -> usize {
    (max as u128 * tenths).div_ceil(10) as usize
}

/// What `panic!` was given, when it was a message.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "a panic payload that is not a string"
    }
}

/// The metrics, through the facade's macros. The facade finds the recorder
/// on every call, so a recorder installed after the manager was built is
/// used from then on.
#[cfg(feature = "metrics")]
mod emit {
    use std::time::Duration;

    use metrics::Unit;

    use super::RefusalReason;
    use crate::close_reason::CloseReason;

    pub(super) const ACTIVE: &str = "mcp_sessions_active";
    pub(super) const MAX: &str = "mcp_sessions_max";
    pub(super) const CREATED: &str = "mcp_sessions_created_total";
    pub(super) const CLOSED: &str = "mcp_sessions_closed_total";
    pub(super) const REFUSED: &str = "mcp_sessions_refused_total";
    pub(super) const DURATION: &str = "mcp_session_duration_seconds";

    pub(super) fn describe_and_set_max(max_sessions: usize) {
        metrics::describe_gauge!(ACTIVE, Unit::Count, "Live sessions.");
        metrics::describe_gauge!(MAX, Unit::Count, "The cap on live sessions.");
        metrics::describe_counter!(CREATED, Unit::Count, "Sessions admitted.");
        metrics::describe_counter!(CLOSED, Unit::Count, "Sessions ended, by reason.");
        metrics::describe_counter!(
            REFUSED,
            Unit::Count,
            "Session creations refused, by reason."
        );
        metrics::describe_histogram!(
            DURATION,
            Unit::Seconds,
            "Lifetime of each ended session, from admission to close."
        );
        metrics::gauge!(MAX).set(max_sessions as f64);
    }

    pub(super) fn created(max_sessions: usize, live_after: usize) {
        metrics::counter!(CREATED).increment(1);
        set_gauges(max_sessions, live_after);
    }

    pub(super) fn closed(
        max_sessions: usize,
        reason: CloseReason,
        lived: Duration,
        live_after: usize,
    ) {
        // A label that is not a literal costs the facade one small vector per
        // call; closes are rarer than the allocations of a session's life.
        metrics::counter!(CLOSED, "reason" => reason.label()).increment(1);
        metrics::histogram!(DURATION).record(lived.as_secs_f64());
        set_gauges(max_sessions, live_after);
    }

    pub(super) fn refused(reason: RefusalReason) {
        metrics::counter!(REFUSED, "reason" => reason.label()).increment(1);
    }

    fn set_gauges(max_sessions: usize, live_after: usize) {
        metrics::gauge!(ACTIVE).set(live_after as f64);
        // Again on every report: the one at construction is lost when no
        // recorder was installed yet.
        metrics::gauge!(MAX).set(max_sessions as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    use super::*;

    /// One captured tracing event: its level, message and other fields.
    #[derive(Debug, Clone)]
    struct Captured {
        level: Level,
        message: String,
        fields: BTreeMap<String, String>,
    }

    /// A layer that keeps every event, to count the real log events.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Captured>>>);

    impl Capture {
        fn dispatch(&self) -> tracing::Dispatch {
            tracing::Dispatch::new(tracing_subscriber::registry().with(self.clone()))
        }
        fn at(&self, level: Level) -> Vec<Captured> {
            let events = self.0.lock().unwrap();
            events
                .iter()
                .filter(|e| e.level == level)
                .cloned()
                .collect()
        }
    }

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            self.0.lock().unwrap().push(Captured {
                level: *event.metadata().level(),
                message: fields.0.remove("message").unwrap_or_default(),
                fields: fields.0,
            });
        }
    }

    #[derive(Default)]
    struct Fields(BTreeMap<String, String>);

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    fn id(text: &str) -> SessionId {
        SessionId::from(text)
    }

    #[test]
    fn thresholds_are_the_percentages() {
        for max in 0..=200usize {
            let observer = Observer::new(max, None);
            for live in 0..=max {
                assert_eq!(
                    live >= observer.warn_at,
                    live * 10 >= max * 9,
                    "{live}/{max}"
                );
                assert_eq!(
                    live < observer.rearm_below,
                    live * 10 < max * 8,
                    "{live}/{max}"
                );
            }
        }
        // No overflow at the largest caps.
        assert_eq!(tenths_of(usize::MAX, 10), usize::MAX);
        assert!(tenths_of(usize::MAX, 9) < usize::MAX);
    }

    #[test]
    fn warns_once_per_crossing() {
        let capture = Capture::default();
        let observer = Observer::new(10, None);
        let warnings = || capture.at(Level::WARN).len();
        tracing::dispatcher::with_default(&capture.dispatch(), || {
            for live in 1..=8 {
                observer.created(live);
            }
            assert_eq!(warnings(), 0);
            observer.created(9);
            assert_eq!(warnings(), 1);
            // Hovering at the cap, and down to 80 %, is the same excursion.
            observer.created(10);
            observer.closed(&id("a"), CloseReason::Closed, Duration::ZERO, 9);
            observer.created(10);
            observer.closed(&id("b"), CloseReason::Closed, Duration::ZERO, 8);
            observer.created(9);
            observer.closed(&id("c"), CloseReason::Closed, Duration::ZERO, 8);
            assert_eq!(warnings(), 1);
            // Below 80 %: the next rise warns again.
            observer.closed(&id("d"), CloseReason::Closed, Duration::ZERO, 7);
            observer.created(8);
            assert_eq!(warnings(), 1);
            observer.created(9);
            assert_eq!(warnings(), 2);
        });
        let warning = &capture.at(Level::WARN)[0];
        assert_eq!(
            warning.message,
            "live sessions reached 90 % of max_sessions"
        );
        assert_eq!(warning.fields["live"], "9");
        assert_eq!(warning.fields["max_sessions"], "10");
    }

    #[test]
    fn concurrent_reports_warn_once() {
        let capture = Capture::default();
        let dispatch = capture.dispatch();
        let observer = Observer::new(100, None);
        for round in 1..=2 {
            std::thread::scope(|scope| {
                for _ in 0..4 {
                    scope.spawn(|| {
                        tracing::dispatcher::with_default(&dispatch, || {
                            for live in 85..=100 {
                                observer.created(live);
                                observer.closed(&id("x"), CloseReason::Evicted, Duration::ZERO, 99);
                            }
                        });
                    });
                }
            });
            assert_eq!(capture.at(Level::WARN).len(), round);
            tracing::dispatcher::with_default(&dispatch, || observer.created(79));
        }
    }

    #[test]
    fn hook_sees_each_close() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hook: CloseHook = {
            let seen = Arc::clone(&seen);
            Arc::new(move |id: &SessionId, reason, lived| {
                seen.lock().unwrap().push((id.clone(), reason, lived));
            })
        };
        let observer = Observer::new(10, Some(hook));
        observer.created(1);
        observer.created(2);
        observer.refused(RefusalReason::RateLimited);
        observer.closed(
            &id("a"),
            CloseReason::Evicted,
            Duration::from_millis(1500),
            1,
        );
        observer.closed(
            &id("b"),
            CloseReason::IdleTimeout,
            Duration::from_secs(900),
            0,
        );
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (id("a"), CloseReason::Evicted, Duration::from_millis(1500)),
                (id("b"), CloseReason::IdleTimeout, Duration::from_secs(900)),
            ]
        );
    }

    #[test]
    fn panicking_hook_is_contained() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let hook: CloseHook = {
            let calls = Arc::clone(&calls);
            Arc::new(move |id: &SessionId, reason, _| {
                calls.lock().unwrap().push(id.clone());
                if reason == CloseReason::Evicted {
                    panic!("hook bug for {id}");
                }
            })
        };
        let capture = Capture::default();
        let observer = Observer::new(10, Some(hook));
        tracing::dispatcher::with_default(&capture.dispatch(), || {
            observer.created(9);
            observer.closed(&id("a"), CloseReason::Evicted, Duration::ZERO, 9);
            observer.closed(&id("b"), CloseReason::Closed, Duration::ZERO, 8);
            // The panicking closes still count: the 7 re-arms the warning,
            // so the rise to 9 warns a second time.
            observer.closed(&id("c"), CloseReason::Evicted, Duration::ZERO, 7);
            observer.created(9);
        });
        assert_eq!(*calls.lock().unwrap(), [id("a"), id("b"), id("c")]);
        let errors = capture.at(Level::ERROR);
        assert_eq!(errors.len(), 2, "one per panic: {errors:?}");
        assert_eq!(errors[0].fields["panic"], "hook bug for a");
        assert_eq!(errors[0].fields["session_id"], "a");
        assert_eq!(errors[0].fields["reason"], "Evicted");
        assert_eq!(capture.at(Level::WARN).len(), 2);
    }

    #[test]
    fn panic_messages() {
        let literal = panic::catch_unwind(|| panic!("literal")).unwrap_err();
        assert_eq!(panic_message(literal.as_ref()), "literal");
        let formatted = panic::catch_unwind(|| panic!("{}", 42)).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "42");
        let other = panic::catch_unwind(|| panic::panic_any(7u8)).unwrap_err();
        assert_eq!(
            panic_message(other.as_ref()),
            "a panic payload that is not a string"
        );
    }

    #[test]
    fn refusal_labels() {
        assert_eq!(RefusalReason::RateLimited.label(), "rate_limited");
        assert_eq!(
            RefusalReason::ClientRateLimited.label(),
            "client_rate_limited"
        );
        assert_eq!(RefusalReason::ClientQuota.label(), "client_quota");
        assert_eq!(RefusalReason::AtCapacity.label(), "at_capacity");
    }

    #[test]
    fn observer_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Observer>();
        let observer = Observer::new(3, Some(Arc::new(|_: &SessionId, _, _| {})));
        assert!(format!("{observer:?}").contains("max_sessions: 3"));
    }

    #[cfg(feature = "metrics")]
    mod with_metrics {
        use metrics::Unit;
        use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

        use super::super::emit::{ACTIVE, CLOSED, CREATED, DURATION, MAX, REFUSED};
        use super::*;

        #[derive(Debug, PartialEq)]
        enum Value {
            Counter(u64),
            Gauge(f64),
            Histogram(Vec<f64>),
        }

        /// Every metric in the recorder, by name and labels
        /// (`name{key=value}`), with its unit and whether it has a
        /// description.
        fn read(snapshotter: &Snapshotter) -> BTreeMap<String, (Value, Option<Unit>, bool)> {
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, unit, description, value)| {
                    let key = key.key();
                    let labels: Vec<String> = key
                        .labels()
                        .map(|label| format!("{}={}", label.key(), label.value()))
                        .collect();
                    let name = if labels.is_empty() {
                        key.name().to_owned()
                    } else {
                        format!("{}{{{}}}", key.name(), labels.join(","))
                    };
                    let value = match value {
                        DebugValue::Counter(n) => Value::Counter(n),
                        DebugValue::Gauge(x) => Value::Gauge(x.0),
                        DebugValue::Histogram(xs) => {
                            Value::Histogram(xs.into_iter().map(|x| x.0).collect())
                        }
                    };
                    (name, (value, unit, description.is_some()))
                })
                .collect()
        }

        fn values(snapshotter: &Snapshotter) -> BTreeMap<String, Value> {
            read(snapshotter)
                .into_iter()
                .map(|(name, (value, _, _))| (name, value))
                .collect()
        }

        #[test]
        fn records_a_scripted_sequence() {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            metrics::with_local_recorder(&recorder, || {
                let observer = Observer::new(10, None);
                observer.created(1);
                observer.created(2);
                observer.created(3);
                observer.closed(
                    &id("a"),
                    CloseReason::Evicted,
                    Duration::from_millis(2500),
                    2,
                );
                observer.closed(
                    &id("b"),
                    CloseReason::IdleTimeout,
                    Duration::from_secs(60),
                    1,
                );
                observer.refused(RefusalReason::RateLimited);
                observer.refused(RefusalReason::AtCapacity);
            });
            let expected = BTreeMap::from([
                (ACTIVE.to_owned(), Value::Gauge(1.0)),
                (MAX.to_owned(), Value::Gauge(10.0)),
                (CREATED.to_owned(), Value::Counter(3)),
                (format!("{CLOSED}{{reason=evicted}}"), Value::Counter(1)),
                (
                    format!("{CLOSED}{{reason=idle_timeout}}"),
                    Value::Counter(1),
                ),
                (
                    format!("{REFUSED}{{reason=rate_limited}}"),
                    Value::Counter(1),
                ),
                (
                    format!("{REFUSED}{{reason=at_capacity}}"),
                    Value::Counter(1),
                ),
                (DURATION.to_owned(), Value::Histogram(vec![2.5, 60.0])),
            ]);
            assert_eq!(values(&snapshotter), expected);
        }

        #[test]
        fn names_are_the_documented_ones() {
            assert_eq!(
                [ACTIVE, MAX, CREATED, CLOSED, REFUSED, DURATION],
                [
                    "mcp_sessions_active",
                    "mcp_sessions_max",
                    "mcp_sessions_created_total",
                    "mcp_sessions_closed_total",
                    "mcp_sessions_refused_total",
                    "mcp_session_duration_seconds",
                ]
            );
        }

        #[test]
        fn describes_units_when_the_recorder_comes_first() {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            metrics::with_local_recorder(&recorder, || {
                let observer = Observer::new(4, None);
                observer.created(1);
                observer.closed(&id("a"), CloseReason::Closed, Duration::from_secs(1), 0);
                observer.refused(RefusalReason::ClientQuota);
            });
            let read = read(&snapshotter);
            assert_eq!(read.len(), 6, "{read:?}");
            for (name, (_, unit, described)) in &read {
                assert!(described, "{name} has no description");
                let expected = if name == DURATION {
                    Unit::Seconds
                } else {
                    Unit::Count
                };
                assert_eq!(*unit, Some(expected), "{name}");
            }
        }

        #[test]
        fn max_is_present_under_a_late_recorder() {
            // Built before any recorder: the gauge set at construction is lost.
            let observer = Observer::new(7, None);
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            metrics::with_local_recorder(&recorder, || observer.created(1));
            let values = values(&snapshotter);
            assert_eq!(values[MAX], Value::Gauge(7.0));
            assert_eq!(values[ACTIVE], Value::Gauge(1.0));
        }
    }
}
