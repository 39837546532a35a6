//! The synchronisation primitives the concurrent core is built on, behind one
//! facade so that the same algorithm code is model-checked by loom.
//!
//! Normal builds use the ecosystem's crates: `DashMap`, `crossbeam`'s
//! `SegQueue`, `parking_lot` locks, `tokio`'s `Semaphore` and `Notify`. Those
//! are opaque to loom (their atomics are not loom's), so under
//! `--cfg mcp_bounded_session_loom` each is replaced by a small stand-in with
//! the same contract built on loom's primitives. The crate's own atomics and
//! fences are then what loom explores. Only the methods the core uses exist.

#[cfg(not(mcp_bounded_session_loom))]
mod imp {
    use std::hash::Hash;

    pub(crate) use parking_lot::{Mutex, RwLock};
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
    pub(crate) use tokio::sync::{Notify, Semaphore};

    /// A concurrent hash map (`DashMap`): sharded locks held only inside
    /// each call.
    ///
    /// Hashed with foldhash's fast variant rather than SipHash: hashing the
    /// 36-byte id is a large share of a lookup, and with foldhash the
    /// lookups at 10,000 live sessions ran 25-35 % faster (CHANGELOG.md,
    /// performance history: foldhash). foldhash is seeded per process (not from
    /// a cryptographic source) and resists HashDoS only minimally; SipHash
    /// matters where clients choose the stored keys. Here they do not: a
    /// key is inserted when rmcp's `session_id()` draws a random UUID, or
    /// when a `SessionStore` restores an id it holds (rmcp restores only
    /// after the store's `load` found it). A client-sent id is otherwise
    /// only looked up. A store that restores ids it never saw would let
    /// clients pick keys, but never more than the cap of them, each taking
    /// a slot and counting against the rate limit.
    #[derive(Debug)]
    pub(crate) struct ConcurrentMap<K: Eq + Hash, V>(
        dashmap::DashMap<K, V, foldhash::fast::RandomState>,
    );

    impl<K: Eq + Hash + Clone, V> ConcurrentMap<K, V> {
        pub(crate) fn new() -> Self {
            Self(dashmap::DashMap::with_hasher(
                foldhash::fast::RandomState::default(),
            ))
        }
        pub(crate) fn contains_key(&self, key: &K) -> bool {
            self.0.contains_key(key)
        }
        pub(crate) fn with<R>(&self, key: &K, read: impl FnOnce(&V) -> R) -> Option<R> {
            self.0.get(key).map(|value| read(value.value()))
        }
        /// Inserts unless `key` is present; gives `value` back if it was.
        pub(crate) fn insert_if_vacant(&self, key: K, value: V) -> Result<(), V> {
            match self.0.entry(key) {
                dashmap::Entry::Occupied(_) => Err(value),
                dashmap::Entry::Vacant(vacant) => {
                    vacant.insert(value);
                    Ok(())
                }
            }
        }
        pub(crate) fn remove_if(&self, key: &K, keep: impl FnOnce(&V) -> bool) -> Option<(K, V)> {
            self.0.remove_if(key, |_, value| keep(value))
        }
        pub(crate) fn len(&self) -> usize {
            self.0.len()
        }
        /// What `pick` returns for each entry, one shard's lock at a time
        /// (not a snapshot: entries may come and go meanwhile).
        pub(crate) fn filter_map<R>(&self, mut pick: impl FnMut(&K, &V) -> Option<R>) -> Vec<R> {
            self.0
                .iter()
                .filter_map(|entry| pick(entry.key(), entry.value()))
                .collect()
        }
    }

    /// An unbounded lock-free FIFO (`crossbeam`'s `SegQueue`).
    #[derive(Debug)]
    pub(crate) struct Fifo<T>(crossbeam_queue::SegQueue<T>);

    impl<T> Fifo<T> {
        pub(crate) fn new() -> Self {
            Self(crossbeam_queue::SegQueue::new())
        }
        pub(crate) fn push(&self, value: T) {
            self.0.push(value);
        }
        pub(crate) fn pop(&self) -> Option<T> {
            self.0.pop()
        }
        pub(crate) fn len(&self) -> usize {
            self.0.len()
        }
    }
}

#[cfg(mcp_bounded_session_loom)]
mod imp {
    //! Loom stand-ins. Each keeps the contract the core relies on:
    //! linearizable map and queue operations, a counting semaphore, and a
    //! `Notify` whose `Notified` futures are woken by every `notify_waiters`
    //! after their creation (and that stores no permit).

    use std::collections::{HashMap, VecDeque};
    use std::future::Future;
    use std::hash::Hash;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

    /// `parking_lot::Mutex`'s API on loom's mutex.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0.lock().expect("loom mutex poisoned")
        }
    }

    /// `parking_lot::RwLock`'s API on loom's lock.
    #[derive(Debug)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::RwLock::new(value))
        }
        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().expect("loom lock poisoned")
        }
        pub(crate) fn try_write(&self) -> Option<loom::sync::RwLockWriteGuard<'_, T>> {
            self.0.try_write().ok()
        }
    }

    impl<T: Default> Default for RwLock<T> {
        fn default() -> Self {
            Self::new(T::default())
        }
    }

    #[derive(Debug)]
    pub(crate) struct ConcurrentMap<K, V>(Mutex<HashMap<K, V>>);

    impl<K: Eq + Hash + Clone, V> ConcurrentMap<K, V> {
        pub(crate) fn new() -> Self {
            Self(Mutex::new(HashMap::new()))
        }
        pub(crate) fn contains_key(&self, key: &K) -> bool {
            self.0.lock().contains_key(key)
        }
        pub(crate) fn with<R>(&self, key: &K, read: impl FnOnce(&V) -> R) -> Option<R> {
            self.0.lock().get(key).map(read)
        }
        pub(crate) fn insert_if_vacant(&self, key: K, value: V) -> Result<(), V> {
            let mut map = self.0.lock();
            if map.contains_key(&key) {
                return Err(value);
            }
            map.insert(key, value);
            Ok(())
        }
        pub(crate) fn remove_if(&self, key: &K, keep: impl FnOnce(&V) -> bool) -> Option<(K, V)> {
            let mut map = self.0.lock();
            if map.get(key).is_some_and(keep) {
                map.remove_entry(key)
            } else {
                None
            }
        }
        pub(crate) fn len(&self) -> usize {
            self.0.lock().len()
        }
        pub(crate) fn filter_map<R>(&self, mut pick: impl FnMut(&K, &V) -> Option<R>) -> Vec<R> {
            let map = self.0.lock();
            map.iter()
                .filter_map(|(key, value)| pick(key, value))
                .collect()
        }
    }

    /// A hook a model sets to run once, in the popping thread, when a pop
    /// finds the queue empty: lets a model act at that exact point of a
    /// creator's attempt (a std lock: it is never contended for long and
    /// adds no branch for loom to explore).
    pub(crate) type EmptyPopHook = Box<dyn FnOnce() + Send>;

    pub(crate) struct Fifo<T> {
        queue: Mutex<VecDeque<T>>,
        on_empty: std::sync::Mutex<Option<EmptyPopHook>>,
    }

    impl<T> std::fmt::Debug for Fifo<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Fifo").finish_non_exhaustive()
        }
    }

    impl<T> Fifo<T> {
        pub(crate) fn new() -> Self {
            Self {
                queue: Mutex::new(VecDeque::new()),
                on_empty: std::sync::Mutex::new(None),
            }
        }
        pub(crate) fn push(&self, value: T) {
            self.queue.lock().push_back(value);
        }
        pub(crate) fn pop(&self) -> Option<T> {
            let popped = self.queue.lock().pop_front();
            if popped.is_none() {
                let hook = self.on_empty.lock().expect("hook lock").take();
                if let Some(hook) = hook {
                    hook();
                }
            }
            popped
        }
        pub(crate) fn len(&self) -> usize {
            self.queue.lock().len()
        }
        /// Runs `hook` at the next pop that finds the queue empty.
        #[cfg(test)]
        pub(crate) fn on_next_empty_pop(&self, hook: EmptyPopHook) {
            *self.on_empty.lock().expect("hook lock") = Some(hook);
        }
    }

    /// Counting semaphore with tokio's contract for the calls used here
    /// (`try_acquire`, `add_permits`; nobody queues on it, see
    /// `registry/`, so tokio's hand-over of permits to queued waiters
    /// never happens and need not be modelled).
    #[derive(Debug)]
    pub(crate) struct Semaphore {
        permits: Mutex<usize>,
    }

    #[derive(Debug)]
    pub(crate) struct TryAcquireError;

    /// A permit; `forget` keeps it taken, dropping it gives it back.
    #[derive(Debug)]
    pub(crate) struct SemaphorePermit<'a>(Option<&'a Semaphore>);

    impl SemaphorePermit<'_> {
        pub(crate) fn forget(mut self) {
            self.0 = None;
        }
    }

    impl Drop for SemaphorePermit<'_> {
        fn drop(&mut self) {
            if let Some(semaphore) = self.0 {
                semaphore.add_permits(1);
            }
        }
    }

    impl Semaphore {
        pub(crate) const MAX_PERMITS: usize = usize::MAX >> 3;

        pub(crate) fn new(permits: usize) -> Self {
            Self {
                permits: Mutex::new(permits),
            }
        }
        pub(crate) fn try_acquire(&self) -> Result<SemaphorePermit<'_>, TryAcquireError> {
            let mut permits = self.permits.lock();
            if *permits == 0 {
                return Err(TryAcquireError);
            }
            *permits -= 1;
            Ok(SemaphorePermit(Some(self)))
        }
        pub(crate) fn add_permits(&self, n: usize) {
            *self.permits.lock() += n;
        }
        pub(crate) fn available_permits(&self) -> usize {
            *self.permits.lock()
        }
    }

    /// `tokio::sync::Notify`, for `notified()` and `notify_waiters`.
    #[derive(Debug)]
    pub(crate) struct Notify {
        generation: Mutex<u64>,
        waiters: Mutex<Vec<Waker>>,
    }

    impl Notify {
        pub(crate) fn new() -> Self {
            Self {
                generation: Mutex::new(0),
                waiters: Mutex::new(Vec::new()),
            }
        }
        pub(crate) fn notify_waiters(&self) {
            *self.generation.lock() += 1;
            for waker in std::mem::take(&mut *self.waiters.lock()) {
                waker.wake();
            }
        }
        /// Like tokio's, the future is tied to the `notify_waiters` calls
        /// made after its creation.
        pub(crate) fn notified(&self) -> Notified<'_> {
            Notified {
                notify: self,
                created_at: *self.generation.lock(),
            }
        }
    }

    /// Completes once `notify_waiters` ran after its creation.
    #[derive(Debug)]
    pub(crate) struct Notified<'a> {
        notify: &'a Notify,
        created_at: u64,
    }

    impl Future for Notified<'_> {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let this = self.get_mut();
            let created_at = this.created_at;
            if *this.notify.generation.lock() != created_at {
                return Poll::Ready(());
            }
            this.notify.waiters.lock().push(cx.waker().clone());
            if *this.notify.generation.lock() != created_at {
                return Poll::Ready(());
            }
            Poll::Pending
        }
    }
}

pub(crate) use imp::*;
