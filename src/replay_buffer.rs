//! The replay cache of one SSE stream: a fixed-capacity ring of the newest
//! events, addressed by integer index.
//!
//! # Invariant kept here
//!
//! Events get consecutive indices from [`FIRST_INDEX`]; the ring keeps the
//! newest `capacity` of them. [`ReplayBuffer::after`] answers "what follows
//! event `last_seen`" with exactly the kept events whose index is greater,
//! in order, or says why it cannot ([`Miss`]): some of those events were
//! already overwritten, or `last_seen` was never issued. It never answers
//! with a partial or shifted range on its own; what to do with a miss is the
//! caller's decision, made explicit (the session replays what is kept, and
//! the jump in the indices shows the client the gap). Either way no event
//! can be replayed twice: a replay starts strictly after an index.
//!
//! # Why a ring
//!
//! Appending is O(1) and never allocates once the ring is full (the slot of
//! the oldest event is reused); replaying `k` events is O(k) with no search
//! and no id parsing: event `i` lives in slot `(i - first) % capacity`.
//! Memory per stream is bounded by `capacity` entries whatever the traffic,
//! and a stream that never sends allocates nothing.

use std::iter::FusedIterator;

/// The index of a stream's first event. Index 0 is the priming event sent
/// when the stream opens: replaying "after 0" means replaying everything
/// kept.
pub(crate) const FIRST_INDEX: u64 = 1;

/// Why a request's stream cannot be resumed from a `Last-Event-ID`.
///
/// rmcp's service answers a failed resume with an empty `200` stream.
///
/// # Example
///
/// ```
/// use mcp_bounded_session::ReplayError;
///
/// let error = ReplayError::UnknownStream(3);
/// assert!(error.to_string().contains("expired"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// `last_seen` is beyond the newest event this request's stream sent:
    /// the id was not issued by this stream.
    #[error("cannot resume after event {last_seen}: the stream's newest event is {newest}")]
    Ahead {
        /// The index the client claims to have seen.
        last_seen: u64,
        /// The newest index the stream has sent (0 if none).
        newest: u64,
    },
    /// The id names a request stream this session does not have: it never
    /// existed, or it completed and its replay cache expired
    /// (`SessionConfig::completed_cache_ttl`).
    #[error(
        "cannot resume request stream {0}: it does not exist, or it completed and its \
         replay cache expired"
    )]
    UnknownStream(u64),
}

/// Why [`ReplayBuffer::after`] cannot replay exactly what followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// Events after `last_seen` up to `oldest_kept - 1` were overwritten.
    Overwritten { oldest_kept: u64 },
    /// `last_seen` is beyond `newest`.
    Ahead { newest: u64 },
}

/// A ring of the newest `capacity` events of one stream.
#[derive(Debug)]
pub(crate) struct ReplayBuffer<T> {
    slots: Vec<T>,
    capacity: usize,
    /// The index of the first event ever pushed.
    first: u64,
    /// The index the next event gets.
    next: u64,
}

impl<T> ReplayBuffer<T> {
    /// # Panics
    ///
    /// Panics if `capacity` is 0 (the builder rejects it first).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn new(capacity: usize) -> Self {
        Self::starting_at(capacity, FIRST_INDEX)
    }

    /// A ring whose first event gets index `first` (at least 1).
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    pub(crate) fn starting_at(capacity: usize, first: u64) -> Self {
        assert!(capacity > 0, "a replay buffer keeps at least one event");
        let first = first.max(FIRST_INDEX);
        Self {
            slots: Vec::new(),
            capacity,
            first,
            next: first,
        }
    }

    /// The index of the first event this ring ever got (or will get).
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// The newest index pushed, or `first - 1` if none.
    pub(crate) fn newest(&self) -> u64 {
        self.next - 1
    }

    /// The oldest index still kept (`next_index()` if none is).
    pub(crate) fn oldest_kept(&self) -> u64 {
        self.next - self.slots.len() as u64
    }

    /// How many events are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    fn slot(&self, index: u64) -> usize {
        // `capacity` fits in u64 and the remainder is below it.
        ((index - self.first) % self.capacity as u64) as usize
    }

    /// Appends an event, overwriting the oldest when full; returns its index.
    pub(crate) fn push(&mut self, event: T) -> u64 {
        let index = self.next;
        if self.slots.len() < self.capacity {
            if self.slots.capacity() == 0 {
                self.slots.reserve_exact(self.capacity);
            }
            self.slots.push(event);
        } else {
            let slot = self.slot(index);
            self.slots[slot] = event;
        }
        self.next += 1;
        index
    }

    /// The kept events after `last_seen`, oldest first, with their indices;
    /// or why they cannot be replayed exactly (see the module docs).
    pub(crate) fn after(&self, last_seen: u64) -> Result<Replay<'_, T>, Miss> {
        if last_seen > self.newest() {
            return Err(Miss::Ahead {
                newest: self.newest(),
            });
        }
        let oldest_kept = self.oldest_kept();
        if last_seen + 1 < oldest_kept {
            return Err(Miss::Overwritten { oldest_kept });
        }
        Ok(self.from(last_seen + 1))
    }

    /// The kept events from index `first` on (clamped to what is kept).
    pub(crate) fn from(&self, first: u64) -> Replay<'_, T> {
        Replay {
            buffer: self,
            next: first.clamp(self.oldest_kept(), self.next),
        }
    }
}

/// The iterator [`ReplayBuffer::after`] returns.
#[derive(Debug)]
pub(crate) struct Replay<'a, T> {
    buffer: &'a ReplayBuffer<T>,
    next: u64,
}

impl<T> Replay<'_, T> {
    /// The index of the first event not yet yielded.
    pub(crate) fn next_index(&self) -> u64 {
        self.next
    }
}

impl<'a, T> Iterator for Replay<'a, T> {
    type Item = (u64, &'a T);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.buffer.next {
            return None;
        }
        let index = self.next;
        self.next += 1;
        Some((index, &self.buffer.slots[self.buffer.slot(index)]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.buffer.next - self.next) as usize;
        (left, Some(left))
    }
}

impl<T> ExactSizeIterator for Replay<'_, T> {}
impl<T> FusedIterator for Replay<'_, T> {}

/// The ring against the simplest model that is obviously right (a list of
/// every event ever pushed), driven by arbitrary bytes: the fuzz target
/// `replay_ring` and the unit test below run it.
///
/// Byte 0 picks the capacity (1 to 32); then each byte is an operation: an
/// even byte pushes an event, an odd one asks for the events after an index
/// near the newest (from 8 below it to 7 above).
#[cfg(any(test, fuzzing))]
pub(crate) fn check_against_model(data: &[u8]) {
    let Some((&first, ops)) = data.split_first() else {
        return;
    };
    let capacity = usize::from(first % 32) + 1;
    let mut ring = ReplayBuffer::new(capacity);
    let mut all: Vec<u64> = Vec::new();
    for &op in ops {
        if op % 2 == 0 {
            let index = ring.push(all.len() as u64 + FIRST_INDEX);
            all.push(index);
            assert_eq!(index, all.len() as u64, "consecutive indices from 1");
            continue;
        }
        let newest = all.len() as u64;
        let last_seen = (newest + u64::from(op >> 4)).saturating_sub(8);
        let missed: Vec<u64> = all.iter().copied().filter(|&e| e > last_seen).collect();
        match ring.after(last_seen) {
            Ok(replay) => {
                let replayed: Vec<u64> = replay
                    .map(|(index, &event)| {
                        assert_eq!(index, event);
                        event
                    })
                    .collect();
                assert_eq!(replayed, missed, "exactly the events after {last_seen}");
            }
            Err(Miss::Ahead { newest: said }) => {
                assert!(last_seen > newest);
                assert_eq!(said, newest);
            }
            Err(Miss::Overwritten { oldest_kept }) => {
                assert!(missed.len() > capacity, "refused although all were kept");
                assert_eq!(oldest_kept, newest - capacity as u64 + 1);
                // What the session then replays: the newest `capacity`, in order.
                let kept: Vec<u64> = ring.from(0).map(|(_, &event)| event).collect();
                assert_eq!(kept, missed[missed.len() - capacity..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replayed(buffer: &ReplayBuffer<u64>, last_seen: u64) -> Result<Vec<u64>, Miss> {
        buffer.after(last_seen).map(|replay| {
            replay
                .map(|(index, &event)| {
                    assert_eq!(index, event, "event stored under its own index");
                    event
                })
                .collect()
        })
    }

    #[test]
    fn replays_exactly_what_follows() {
        let mut buffer = ReplayBuffer::new(4);
        assert_eq!(replayed(&buffer, 0), Ok(vec![]));
        assert_eq!(replayed(&buffer, 1), Err(Miss::Ahead { newest: 0 }));
        for event in 1..=3 {
            assert_eq!(buffer.push(event), event);
        }
        assert_eq!(replayed(&buffer, 0), Ok(vec![1, 2, 3]));
        assert_eq!(replayed(&buffer, 2), Ok(vec![3]));
        assert_eq!(replayed(&buffer, 3), Ok(vec![]));
    }

    #[test]
    fn overwrites_the_oldest_and_says_so() {
        let mut buffer = ReplayBuffer::new(4);
        for event in 1..=10 {
            buffer.push(event);
        }
        assert_eq!(buffer.len(), 4);
        assert_eq!(buffer.oldest_kept(), 7);
        // After 6 the kept events 7..=10 are exactly what was missed.
        assert_eq!(replayed(&buffer, 6), Ok(vec![7, 8, 9, 10]));
        assert_eq!(
            replayed(&buffer, 5),
            Err(Miss::Overwritten { oldest_kept: 7 })
        );
        assert_eq!(replayed(&buffer, u64::MAX), Err(Miss::Ahead { newest: 10 }));
        let from = |first| buffer.from(first).map(|(_, &e)| e).collect::<Vec<_>>();
        assert_eq!(from(0), [7, 8, 9, 10], "clamped to the oldest kept");
        assert_eq!(from(9), [9, 10]);
        assert_eq!(from(99), [] as [u64; 0], "clamped to the newest");
        assert_eq!(buffer.after(8).unwrap().len(), 2);
    }

    #[test]
    fn allocates_once_and_only_when_used() {
        let mut buffer = ReplayBuffer::new(3);
        assert_eq!(buffer.slots.capacity(), 0);
        for event in 1..=100 {
            buffer.push(event);
            assert_eq!(buffer.slots.capacity(), 3);
        }
    }

    #[test]
    fn agrees_with_a_vec_of_everything() {
        // Every capacity, every history length, every last_seen: the ring
        // answers as a list of all events would, where it still can.
        for capacity in 1..6 {
            let mut buffer = ReplayBuffer::new(capacity);
            let mut all = Vec::new();
            for event in 1..=12u64 {
                buffer.push(event);
                all.push(event);
                for last_seen in 0..=14u64 {
                    let expected: Vec<u64> =
                        all.iter().copied().filter(|&e| e > last_seen).collect();
                    match replayed(&buffer, last_seen) {
                        Ok(events) => assert_eq!(events, expected),
                        Err(Miss::Ahead { .. }) => assert!(last_seen > event),
                        Err(Miss::Overwritten { .. }) => {
                            assert!(expected.len() > capacity)
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod model_tests {
    /// The model check on pseudo-random inputs (the fuzz target explores
    /// further).
    #[test]
    fn ring_matches_the_model_on_random_histories() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2_000 {
            let len = (state % 200) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            super::check_against_model(&data);
        }
    }
}
