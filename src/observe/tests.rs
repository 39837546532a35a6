use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// A barrier whose waiters spin: they leave it within nanoseconds of each
/// other, which a parked thread's wake-up (microseconds) would not, so the
/// reports that follow really race.
struct SpinBarrier {
    threads: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl SpinBarrier {
    /// Waits for every thread; true in exactly one of them.
    fn wait(&self) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return true;
        }
        let mut spins = 0_u32;
        while self.generation.load(Ordering::Acquire) == generation {
            // Yield once spinning is long: the other thread may need this core.
            spins += 1;
            if spins > 1_000 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        false
    }
}

#[test]
fn concurrent_reports_warn_once() {
    // Two threads (CI has two cores) cross 90 % at the same instant, many
    // times: a check-then-set instead of the one-step swap warns twice in
    // some crossing.
    const THREADS: usize = 2;
    const CROSSINGS: usize = 20_000;
    let capture = Capture::default();
    let dispatch = capture.dispatch();
    let observer = Observer::new(100, None);
    let barrier = SpinBarrier {
        threads: THREADS,
        arrived: AtomicUsize::new(0),
        generation: AtomicUsize::new(0),
    };
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                tracing::dispatcher::with_default(&dispatch, || {
                    for _ in 0..CROSSINGS {
                        barrier.wait();
                        observer.created(90);
                        // Once both reported, back below 80 %: the next
                        // crossing may warn again.
                        if barrier.wait() {
                            observer.closed(&id("x"), CloseReason::Evicted, Duration::ZERO, 79);
                        }
                    }
                });
            });
        }
    });
    assert_eq!(capture.at(Level::WARN).len(), CROSSINGS);
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
    observer.refused(Creation::RateLimited(Duration::ZERO));
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
            observer.refused(Creation::RateLimited(Duration::ZERO));
            observer.refused(Creation::AtCapacity);
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
            observer.refused(Creation::ClientQuota);
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
