//! The global bound on request units in flight, lent to the request
//! table's shards a few units at a time, so that admitting and releasing
//! the requests of clients in different shards writes no cache line they
//! share.
//!
//! # Invariant kept here
//!
//! **The bound is exact, both ways.** Each of the bound's `max` units is
//! at every instant in one place: *free* (one shared word), *spare* in a
//! shard (lent to it, not in use), or *held* by an admitted request. A
//! request is admitted only with units taken from its shard's spare or
//! from the free ones, so held units never exceed `max`. A request is
//! refused only when, at one instant, fewer units than its cost are free
//! or spare anywhere: it is never refused while the bound has room for it.
//!
//! How a refusal knows that nothing is spare elsewhere: the shared word
//! holds the free count *and* the number of lending shards (those whose
//! spare is not zero), and every change that makes a shard lending or not
//! changes both in one atomic step, made under that shard's lock together
//! with the change to its spare. So reading "fewer free than needed, no
//! lending shard" in one load proves there is no spare anywhere at that
//! instant: the refusal is exact. If some shard is lending, the admission
//! takes every shard's lock, in index order, moves all spare back to free,
//! and decides with the whole budget in view (every change to the word is
//! made under some shard's lock, so none can happen meanwhile).
//!
//! # Why lend
//!
//! With one shared counter, every admission and every release of every
//! core writes the same cache line, and two cores serving different
//! clients take it from each other twice per request. A shard that keeps
//! a chunk spare admits and releases from it under its own lock, without
//! touching the shared word while its spare stays between one unit and
//! two chunks. Lending happens only while the bound is far from full
//! (more than `floor` units, a quarter of the bound, stay free after the loan), and a
//! shard keeps at most two chunks, so at most a quarter of the bound is
//! ever spare; near the bound, shards borrow exactly what a request needs
//! and give back all they release, their spare stays empty, and a refusal
//! at the bound reads one word. A collection (every shard's lock, a few
//! microseconds) happens only when the free units run out while some
//! shard still lends; it leaves no shard lending, and shards lend again
//! only once more than a quarter of the bound is free: at most one
//! collection per swing of the load from a quarter free to full. A bound
//! too small to lend (`max < 8 * SHARDS`) behaves as one shared counter.

use crossbeam_utils::CachePadded;

use super::table::SHARDS;
use crate::sync::{AtomicU64, Ordering};

/// Low bits of the shared word: the lending shards' count.
const LENDER_BITS: u32 = 8;
const LENDER_MASK: u64 = (1 << LENDER_BITS) - 1;
const _: () = assert!(SHARDS as u64 <= LENDER_MASK, "lenders fit in their bits");

/// The largest bound the shared word holds.
pub(crate) const MAX_BOUND: usize = (u64::MAX >> LENDER_BITS) as usize;

/// The global bound's units: free, and lent to shards.
#[derive(Debug)]
pub(super) struct Budget {
    /// Free units above [`LENDER_BITS`], lending shards below.
    word: CachePadded<AtomicU64>,
    /// Units a shard keeps spare after a loan; 0: no lending.
    chunk: usize,
    /// Lend only while more than this many units stay free after the loan.
    floor: usize,
}

/// What [`Budget::take`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Take {
    Taken,
    /// Fewer free units than needed and nothing spare anywhere: refused,
    /// exactly.
    Refused,
    /// Fewer free units than needed, but some shard has spare: decide
    /// with every shard's lock held ([`Budget::settle`]).
    Collect,
}

fn split(word: u64) -> (usize, usize) {
    (
        (word >> LENDER_BITS) as usize,
        (word & LENDER_MASK) as usize,
    )
}

fn join(free: usize, lenders: usize) -> u64 {
    ((free as u64) << LENDER_BITS) | lenders as u64
}

impl Budget {
    /// `max` units, all free.
    pub(super) fn new(max: usize) -> Self {
        assert!(
            max <= MAX_BOUND,
            "max_requests_in_flight must be at most {MAX_BOUND}"
        );
        let chunk = max / (SHARDS * 8);
        Self {
            word: CachePadded::new(AtomicU64::new(join(max, 0))),
            chunk,
            floor: SHARDS * 2 * chunk,
        }
    }

    /// Takes `cost` units for a shard whose spare is `spare` (under that
    /// shard's lock): from the spare if it has more, else the rest from
    /// the free units, with a chunk more to keep spare while the bound is
    /// far from full.
    pub(super) fn take(&self, spare: &mut usize, cost: usize) -> Take {
        if *spare > cost {
            // Still lending after: the word already counts this shard.
            *spare -= cost;
            return Take::Taken;
        }
        let was_lending = *spare > 0;
        let need = cost - *spare;
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let (free, lenders) = split(word);
            if free < need {
                return match lenders {
                    0 => Take::Refused,
                    _ => Take::Collect,
                };
            }
            let rest = free - need;
            let loan = match self.chunk > 0 && rest > self.floor + self.chunk {
                true => self.chunk,
                false => 0,
            };
            let lenders = lenders + usize::from(loan > 0) - usize::from(was_lending);
            match self.word.compare_exchange_weak(
                word,
                join(rest - loan, lenders),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    *spare = loan;
                    return Take::Taken;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Gives back `cost` units released in a shard whose spare is `spare`
    /// (under that shard's lock): kept spare while the shard stays within
    /// two chunks and the bound far from full, else back to free.
    pub(super) fn give_back(&self, spare: &mut usize, cost: usize) {
        let was_lending = *spare > 0;
        let held = *spare + cost;
        if was_lending && held <= 2 * self.chunk {
            *spare = held;
            return;
        }
        if self.chunk == 0 {
            // Never lending: one addition.
            self.word
                .fetch_add((cost as u64) << LENDER_BITS, Ordering::AcqRel);
            return;
        }
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let (free, lenders) = split(word);
            let keep = match free + held > self.floor + self.chunk {
                true => self.chunk.min(held),
                false => 0,
            };
            let lenders = lenders + usize::from(keep > 0) - usize::from(was_lending);
            match self.word.compare_exchange_weak(
                word,
                join(free + held - keep, lenders),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    *spare = keep;
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// With every shard's lock held and their spare (`collected`, already
    /// zeroed in the shards) back in hand: takes `cost` units if the whole
    /// budget has them. No shard lends afterwards.
    pub(super) fn settle(&self, collected: usize, cost: usize) -> bool {
        // Every change to the word is made under some shard's lock, and the
        // caller holds them all: the word cannot change before the store.
        let (free, _) = split(self.word.load(Ordering::Acquire));
        let free = free + collected;
        let taken = free >= cost;
        let left = if taken { free - cost } else { free };
        self.word.store(join(left, 0), Ordering::Release);
        taken
    }

    /// Free units and lending shards now.
    #[cfg(test)]
    pub(super) fn free_and_lenders(&self) -> (usize, usize) {
        split(self.word.load(Ordering::Acquire))
    }

    /// See the module docs.
    #[cfg(test)]
    pub(super) fn floor(&self) -> usize {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_far_from_the_bound_admits_and_releases_without_the_shared_word() {
        let budget = Budget::new(1_024);
        let mut spare = 0;
        assert_eq!(budget.take(&mut spare, 1), Take::Taken);
        let after_loan = budget.free_and_lenders();
        assert_eq!(after_loan, (1_024 - 1 - spare, 1));
        assert!(spare > 0, "a loan beyond the request");
        for _ in 0..1_000 {
            budget.give_back(&mut spare, 1);
            assert_eq!(budget.take(&mut spare, 1), Take::Taken);
        }
        assert_eq!(
            budget.free_and_lenders(),
            after_loan,
            "the word was not written"
        );
        budget.give_back(&mut spare, 1);
        let (free, lenders) = budget.free_and_lenders();
        assert_eq!(free + spare, 1_024);
        assert_eq!(lenders, usize::from(spare > 0));
    }

    #[test]
    fn near_the_bound_a_shard_borrows_exactly_and_gives_back_everything() {
        let budget = Budget::new(1_024);
        let mut spare = 0;
        let big = 1_024 - budget.floor();
        assert_eq!(budget.take(&mut spare, big), Take::Taken);
        assert_eq!(spare, 0, "no loan with no more than the floor left free");
        let mut other = 0;
        assert_eq!(budget.take(&mut other, 1), Take::Taken);
        assert_eq!(other, 0);
        budget.give_back(&mut other, 1);
        assert_eq!((other, budget.free_and_lenders()), (0, (budget.floor(), 0)));
    }

    #[test]
    fn a_refusal_with_nothing_lent_is_read_from_the_word_and_one_with_spare_asks_to_collect() {
        let budget = Budget::new(4);
        let (mut a, mut b) = (0, 0);
        assert_eq!(budget.take(&mut a, 4), Take::Taken);
        assert_eq!(budget.take(&mut b, 1), Take::Refused);
        let budget = Budget::new(1_024);
        assert_eq!(budget.take(&mut a, 1), Take::Taken);
        assert!(a > 0);
        let rest = budget.free_and_lenders().0;
        assert_eq!(budget.take(&mut b, rest), Take::Taken);
        let mut c = 0;
        assert_eq!(
            budget.take(&mut c, 1),
            Take::Collect,
            "a's spare may serve it"
        );
        // What a collection does with every shard's lock held.
        let collected = std::mem::take(&mut a);
        assert!(budget.settle(collected, 1));
        assert_eq!(budget.free_and_lenders(), (collected - 1, 0));
    }
}
