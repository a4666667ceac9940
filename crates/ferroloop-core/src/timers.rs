//! The timer heap: callbacks waiting for a deadline (asyncio's `_scheduled` list).
//!
//! Deadlines are `loop.time()` floats. Entries are ordered by deadline and, among equal
//! deadlines, by the order they were scheduled, so `call_at(t, a)` then `call_at(t, b)` always
//! runs `a` first (asyncio's `heapq` does not promise that; we do).
//!
//! Cancelling a timer is O(1): the caller marks its own item cancelled and tells the heap with
//! [`TimerHeap::note_cancelled`]. Cancelled entries are dropped lazily: from the head before
//! each poll, and by a full rebuild when they make up more than half of a heap of more than
//! 100 entries (the rule asyncio's base loop uses), so a program that schedules and cancels
//! millions of timeouts keeps a small heap.
//!
//! A NaN deadline is ordered before every other one (it is due at once). asyncio's heap
//! cannot order NaN at all; in practice its loop sees `when >= now` fail and runs such a
//! timer on the next iteration, which is what this ordering gives.

/// `pop_due` switches from popping one entry at a time to one pass over the whole heap when
/// every entry of a heap larger than this is due, or after popping this many (or a sixteenth
/// of the heap, whichever is more) in one call.
const BULK_THRESHOLD: usize = 64;

/// Rebuild only heaps larger than this ...
pub const MIN_SCHEDULED_FOR_COMPACTION: usize = 100;
/// ... whose cancelled share is above this fraction.
pub const CANCELLED_FRACTION_FOR_COMPACTION: f64 = 0.5;

/// Maps a deadline to an integer whose order is `f64::total_cmp`'s, so that a deadline and
/// its sequence number compare as one `u128`.
#[inline]
fn ordered_bits(when: f64) -> u64 {
    let b = when.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b ^ (1 << 63)
    }
}

#[inline]
fn from_ordered_bits(u: u64) -> f64 {
    f64::from_bits(if u >> 63 == 1 { u ^ (1 << 63) } else { !u })
}

#[inline]
fn heap_key(when: f64, seq: u64) -> u128 {
    ((ordered_bits(when) as u128) << 64) | seq as u128
}

#[inline]
fn key_deadline(key: u128) -> f64 {
    from_ordered_bits((key >> 64) as u64)
}

/// A 4-ary min-heap, earliest key first, with the keys and the items in separate arrays.
///
/// `std`'s binary heap spends a cache miss per level when a few hundred thousand timers are
/// pending. With four children per node the tree is half as deep, and with 16-byte keys kept
/// apart from the items, a node's four children fill exactly one 64-byte cache line: keys are
/// stored in 64-byte-aligned lines of four, shifted by `PAD` slots, so that node `j`'s children
/// (nodes `4j+1 ..= 4j+4`) are line `j + 1`.
struct QuadHeap<T> {
    /// Node `j`'s key is slot `j + PAD` of this array of lines.
    lines: Vec<KeyLine>,
    /// Node `j`'s item at index `j`.
    items: Vec<T>,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct KeyLine([u128; ARITY]);

const ARITY: usize = 4;
const PAD: usize = ARITY - 1;

impl<T> QuadHeap<T> {
    fn new() -> Self {
        Self {
            lines: Vec::new(),
            items: Vec::new(),
        }
    }

    fn from_parts(keys: Vec<u128>, items: Vec<T>) -> Self {
        debug_assert_eq!(keys.len(), items.len());
        let mut h = Self {
            lines: Vec::with_capacity((keys.len() + PAD).div_ceil(ARITY)),
            items: Vec::new(),
        };
        for (j, key) in keys.into_iter().enumerate() {
            h.grow_to(j + 1);
            h.set_key(j, key);
        }
        h.items = items;
        let n = h.len();
        if n > 1 {
            for i in (0..=(n - 2) / ARITY).rev() {
                h.sift_down(i);
            }
        }
        h
    }

    fn into_parts(self) -> (Vec<u128>, Vec<T>) {
        let keys = (0..self.len()).map(|j| self.key(j)).collect();
        (keys, self.items)
    }

    /// Makes room for `n` keys.
    #[inline]
    fn grow_to(&mut self, n: usize) {
        let need = (n + PAD).div_ceil(ARITY);
        if self.lines.len() < need {
            self.lines.resize(need, KeyLine([u128::MAX; ARITY]));
        }
    }

    #[inline]
    fn key(&self, j: usize) -> u128 {
        let k = j + PAD;
        self.lines[k / ARITY].0[k % ARITY]
    }

    #[inline]
    fn set_key(&mut self, j: usize, key: u128) {
        let k = j + PAD;
        self.lines[k / ARITY].0[k % ARITY] = key;
    }

    #[inline]
    fn swap(&mut self, a: usize, b: usize) {
        let (ka, kb) = (self.key(a), self.key(b));
        self.set_key(a, kb);
        self.set_key(b, ka);
        self.items.swap(a, b);
    }

    #[inline]
    fn len(&self) -> usize {
        self.items.len()
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    #[inline]
    fn peek(&self) -> Option<(u128, &T)> {
        let item = self.items.first()?;
        Some((self.key(0), item))
    }

    #[inline]
    fn push(&mut self, key: u128, item: T) {
        let mut i = self.len();
        self.grow_to(i + 1);
        self.set_key(i, key);
        self.items.push(item);
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if self.key(i) < self.key(parent) {
                self.swap(i, parent);
                i = parent;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn pop(&mut self) -> Option<(u128, T)> {
        let last = self.len().checked_sub(1)?;
        let last_key = self.key(last);
        let last_item = self.items.pop().expect("checked");
        if last == 0 {
            return Some((last_key, last_item));
        }
        let top_key = self.key(0);
        self.set_key(0, last_key);
        let top_item = std::mem::replace(&mut self.items[0], last_item);
        self.sift_down(0);
        Some((top_key, top_item))
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.len();
        loop {
            let first = i * ARITY + 1;
            if first >= n {
                break;
            }
            let end = (first + ARITY).min(n);
            let mut best = first;
            for c in first + 1..end {
                if self.key(c) < self.key(best) {
                    best = c;
                }
            }
            if self.key(best) < self.key(i) {
                self.swap(i, best);
                i = best;
            } else {
                break;
            }
        }
    }
}

#[inline]
fn sort_key(when: f64) -> f64 {
    if when.is_nan() {
        f64::NEG_INFINITY
    } else {
        when
    }
}

/// Min-heap of `(deadline, item)` with FIFO ties and lazy cancellation.
pub struct TimerHeap<T> {
    heap: QuadHeap<T>,
    /// An upper bound of the keys in the heap (exact until entries are popped), so that
    /// `pop_due` can tell cheaply that every entry is due.
    max_key: u128,
    next_seq: u64,
    cancelled: usize,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// What the heap asks of its items: whether their owner cancelled them.
pub trait Cancellable {
    fn is_cancelled(&self) -> bool;
}

impl<T: Cancellable> TimerHeap<T> {
    /// asyncio's housekeeping before computing the poll timeout: either rebuild the heap
    /// without cancelled entries (when they dominate), or pop the cancelled ones off the
    /// head. Removed items are appended to `removed` so the caller can release them outside
    /// any borrow (dropping a Python object may run arbitrary code).
    pub fn purge_cancelled(&mut self, removed: &mut Vec<T>) {
        let len = self.heap.len();
        if len > MIN_SCHEDULED_FOR_COMPACTION
            && (self.cancelled as f64) / (len as f64) > CANCELLED_FRACTION_FOR_COMPACTION
        {
            let live_len = len - self.cancelled.min(len);
            let mut live_keys = Vec::with_capacity(live_len);
            let mut live_items = Vec::with_capacity(live_len);
            let (keys, items) = std::mem::replace(&mut self.heap, QuadHeap::new()).into_parts();
            for (key, item) in keys.into_iter().zip(items) {
                if item.is_cancelled() {
                    removed.push(item);
                } else {
                    live_keys.push(key);
                    live_items.push(item);
                }
            }
            self.heap = QuadHeap::from_parts(live_keys, live_items);
            self.cancelled = 0;
        } else {
            while let Some((_, top)) = self.heap.peek() {
                if !top.is_cancelled() {
                    break;
                }
                let (_, item) = self.heap.pop().expect("peeked");
                self.cancelled = self.cancelled.saturating_sub(1);
                removed.push(item);
            }
        }
    }

    /// Pops every entry due before `end_time` (deadline `< end_time`), earliest first, FIFO
    /// among equal deadlines. Cancelled entries are passed along too (the caller skips them,
    /// as asyncio does when it runs its ready queue) but no longer count as cancelled here.
    #[inline]
    pub fn pop_due(&mut self, end_time: f64, mut sink: impl FnMut(T)) {
        // Deadline `< end_time` ⇔ key `< (end_time, seq 0)` in the heap's integer order.
        let end = heap_key(end_time, 0);
        if self.heap.len() > BULK_THRESHOLD && self.max_key < end {
            // Everything is due (a burst of timers armed together has fallen due).
            self.drain_due_bulk(end, &mut sink);
            return;
        }
        // Pop one by one, which costs a walk down the tree per entry. If that goes on for a
        // sixteenth of the heap, many more are probably due (a burst armed over a few
        // milliseconds): switch to one linear pass, whose cost the pops so far have paid for.
        let switch_at = (self.heap.len() / 16).max(BULK_THRESHOLD);
        let mut popped = 0usize;
        while let Some((key, _)) = self.heap.peek() {
            if key >= end {
                break;
            }
            if popped == switch_at {
                self.drain_due_bulk(end, &mut sink);
                return;
            }
            let (_, item) = self.heap.pop().expect("peeked");
            popped += 1;
            if item.is_cancelled() {
                self.cancelled = self.cancelled.saturating_sub(1);
            }
            sink(item);
        }
    }

    /// `pop_due`'s bulk path: one pass splits the entries into due and pending, the due ones
    /// are sorted and handed out, and the pending ones are rebuilt into a heap. Sequential
    /// passes over the arrays beat a pop per entry, which reads the tree at random.
    fn drain_due_bulk(&mut self, end: u128, sink: &mut impl FnMut(T)) {
        let (keys, items) = std::mem::replace(&mut self.heap, QuadHeap::new()).into_parts();
        let mut due: Vec<(u128, T)> = Vec::new();
        let mut pending_keys = Vec::new();
        let mut pending_items = Vec::new();
        for (key, item) in keys.into_iter().zip(items) {
            if key < end {
                due.push((key, item));
            } else {
                pending_keys.push(key);
                pending_items.push(item);
            }
        }
        if pending_items.is_empty() {
            self.max_key = 0;
        } else {
            self.heap = QuadHeap::from_parts(pending_keys, pending_items);
        }
        due.sort_unstable_by_key(|&(key, _)| key);
        for (_, item) in due {
            if item.is_cancelled() {
                self.cancelled = self.cancelled.saturating_sub(1);
            }
            sink(item);
        }
    }
}

impl<T> TimerHeap<T> {
    pub fn new() -> Self {
        Self {
            heap: QuadHeap::new(),
            max_key: 0,
            next_seq: 0,
            cancelled: 0,
        }
    }

    /// Schedules `item` at `when` (seconds on the loop's clock).
    #[inline]
    pub fn push(&mut self, when: f64, item: T) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let key = heap_key(sort_key(when), seq);
        self.max_key = self.max_key.max(key);
        self.heap.push(key, item);
    }

    /// Records that one scheduled entry was cancelled by its owner.
    #[inline]
    pub fn note_cancelled(&mut self) {
        self.cancelled += 1;
    }

    /// Earliest deadline (NaN deadlines read as minus infinity: due now).
    #[inline]
    pub fn next_deadline(&self) -> Option<f64> {
        self.heap.peek().map(|(key, _)| key_deadline(key))
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// How many entries still in the heap were cancelled.
    pub fn cancelled_count(&self) -> usize {
        self.cancelled
    }

    /// Removes every entry (used when a loop is closed).
    pub fn drain_all(&mut self) -> Vec<T> {
        self.cancelled = 0;
        self.max_key = 0;
        std::mem::replace(&mut self.heap, QuadHeap::new())
            .into_parts()
            .1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Clone, Debug)]
    struct Item {
        id: usize,
        cancelled: Rc<Cell<bool>>,
    }
    impl Cancellable for Item {
        fn is_cancelled(&self) -> bool {
            self.cancelled.get()
        }
    }
    fn item(id: usize) -> Item {
        Item {
            id,
            cancelled: Rc::new(Cell::new(false)),
        }
    }
    fn cancel(heap: &mut TimerHeap<Item>, it: &Item) {
        it.cancelled.set(true);
        heap.note_cancelled();
    }
    fn drain_due(heap: &mut TimerHeap<Item>, end: f64) -> Vec<usize> {
        let mut out = Vec::new();
        heap.pop_due(end, |it| {
            if !it.is_cancelled() {
                out.push(it.id)
            }
        });
        out
    }

    #[test]
    fn ordered_bits_follow_total_cmp_and_round_trip() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -1e-300,
            -0.0,
            0.0,
            1e-300,
            1.0,
            1.5,
            12345.678,
            1e300,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(
                ordered_bits(w[0]) < ordered_bits(w[1]),
                "{} < {}",
                w[0],
                w[1]
            );
        }
        for &x in &xs {
            assert_eq!(from_ordered_bits(ordered_bits(x)).to_bits(), x.to_bits());
            assert_eq!(key_deadline(heap_key(x, 7)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn pops_in_deadline_order() {
        let mut h = TimerHeap::new();
        for (id, when) in [(0, 5.0), (1, 1.0), (2, 3.0), (3, 4.0), (4, 2.0)] {
            h.push(when, item(id));
        }
        assert_eq!(h.next_deadline(), Some(1.0));
        assert_eq!(drain_due(&mut h, 10.0), vec![1, 4, 2, 3, 0]);
        assert!(h.is_empty());
    }

    #[test]
    fn equal_deadlines_are_fifo() {
        let mut h = TimerHeap::new();
        for id in 0..1000 {
            h.push(7.0, item(id));
        }
        h.push(1.0, item(5000));
        let got = drain_due(&mut h, 8.0);
        assert_eq!(got[0], 5000);
        assert_eq!(&got[1..], &(0..1000).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn a_burst_that_is_all_due_comes_out_sorted() {
        // More than BULK_THRESHOLD entries, all due: the one-sort path.
        let mut h = TimerHeap::new();
        let items: Vec<Item> = (0..1000).map(item).collect();
        for it in &items {
            h.push(((it.id * 7919) % 50) as f64, it.clone());
        }
        for it in items.iter().step_by(3) {
            cancel(&mut h, it);
        }
        let got = drain_due(&mut h, 100.0);
        let mut want: Vec<(usize, usize)> = items
            .iter()
            .filter(|it| !it.is_cancelled())
            .map(|it| ((it.id * 7919) % 50, it.id))
            .collect();
        want.sort();
        assert_eq!(got, want.into_iter().map(|(_, id)| id).collect::<Vec<_>>());
        assert!(h.is_empty());
        assert_eq!(h.cancelled_count(), 0);
        // And the heap works normally afterwards.
        h.push(5.0, item(1));
        h.push(1.0, item(2));
        assert_eq!(drain_due(&mut h, 10.0), vec![2, 1]);
    }

    #[test]
    fn a_burst_that_is_mostly_due_switches_to_one_pass() {
        // 4000 entries over 50 deadlines, 40 of them due: pop_due pops a sixteenth of the heap
        // one by one, then splits the rest in one pass. Order, cancellation counts and the
        // pending entries left behind must be as if every entry had been popped.
        let mut h = TimerHeap::new();
        let items: Vec<Item> = (0..4000).map(item).collect();
        let when = |id: usize| ((id * 7919) % 50) as f64;
        for it in &items {
            h.push(when(it.id), it.clone());
        }
        for it in items.iter().step_by(7) {
            cancel(&mut h, it);
        }
        let got = drain_due(&mut h, 40.0);
        let sorted = |pred: &dyn Fn(f64) -> bool| {
            let mut v: Vec<(usize, usize)> = items
                .iter()
                .filter(|it| !it.is_cancelled() && pred(when(it.id)))
                .map(|it| (when(it.id) as usize, it.id))
                .collect();
            v.sort();
            v.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
        };
        assert_eq!(got, sorted(&|w| w < 40.0));
        let pending_cancelled = items
            .iter()
            .step_by(7)
            .filter(|it| when(it.id) >= 40.0)
            .count();
        assert_eq!(h.cancelled_count(), pending_cancelled);
        assert_eq!(h.next_deadline(), Some(40.0));
        // Timers pushed later still order correctly against the rebuilt heap.
        h.push(40.5, item(9000));
        let rest = drain_due(&mut h, 1000.0);
        let mut want = sorted(&|w| w >= 40.0);
        let at = want.iter().position(|&id| when(id) > 40.0).unwrap();
        want.insert(at, 9000);
        assert_eq!(rest, want);
        assert!(h.is_empty());
        assert_eq!(h.cancelled_count(), 0);
    }

    #[test]
    fn only_entries_before_end_time_are_due() {
        let mut h = TimerHeap::new();
        h.push(1.0, item(1));
        h.push(2.0, item(2));
        h.push(3.0, item(3));
        assert_eq!(drain_due(&mut h, 2.0), vec![1]);
        assert_eq!(drain_due(&mut h, 2.0 + 1e-9), vec![2]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn nan_is_due_at_once_and_inf_never() {
        let mut h = TimerHeap::new();
        h.push(f64::INFINITY, item(1));
        h.push(f64::NAN, item(2));
        h.push(0.5, item(3));
        assert_eq!(h.next_deadline(), Some(f64::NEG_INFINITY));
        assert_eq!(drain_due(&mut h, 1.0), vec![2, 3]);
        assert_eq!(drain_due(&mut h, 1e300), Vec::<usize>::new());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn cancelled_heads_are_dropped_lazily() {
        let mut h = TimerHeap::new();
        let items: Vec<Item> = (0..10).map(item).collect();
        for (i, it) in items.iter().enumerate() {
            h.push(i as f64, it.clone());
        }
        cancel(&mut h, &items[0]);
        cancel(&mut h, &items[1]);
        cancel(&mut h, &items[5]);
        let mut removed = Vec::new();
        h.purge_cancelled(&mut removed);
        // Only the cancelled head entries go; the one in the middle waits.
        assert_eq!(removed.iter().map(|i| i.id).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(h.len(), 8);
        assert_eq!(h.cancelled_count(), 1);
        assert_eq!(h.next_deadline(), Some(2.0));
        assert_eq!(drain_due(&mut h, 100.0), vec![2, 3, 4, 6, 7, 8, 9]);
        assert_eq!(h.cancelled_count(), 0);
    }

    #[test]
    fn compaction_when_cancelled_dominate() {
        let mut h = TimerHeap::new();
        let items: Vec<Item> = (0..1000).map(item).collect();
        for it in &items {
            h.push(1000.0 - it.id as f64, it.clone());
        }
        // Cancel 600 entries that are not at the head.
        for it in &items[..600] {
            cancel(&mut h, it);
        }
        let mut removed = Vec::new();
        h.purge_cancelled(&mut removed);
        assert_eq!(removed.len(), 600);
        assert_eq!(h.len(), 400);
        assert_eq!(h.cancelled_count(), 0);
        let got = drain_due(&mut h, f64::INFINITY);
        assert_eq!(got, (600..1000).rev().collect::<Vec<_>>());
    }

    #[test]
    fn no_compaction_below_threshold() {
        let mut h = TimerHeap::new();
        let items: Vec<Item> = (0..100).map(item).collect();
        for it in &items {
            h.push(it.id as f64, it.clone());
        }
        for it in &items[50..] {
            cancel(&mut h, it);
        }
        let mut removed = Vec::new();
        h.purge_cancelled(&mut removed);
        assert!(removed.is_empty(), "100 entries is not above the threshold");
        assert_eq!(h.len(), 100);
    }

    #[test]
    fn random_pushes_pops_and_cancels_match_a_sorted_model() {
        // A small linear congruential generator: deterministic, no extra crates.
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        let mut h = TimerHeap::new();
        let mut model: Vec<(f64, usize, Item)> = Vec::new();
        let mut id = 0usize;
        let mut removed = Vec::new();
        for round in 0..200 {
            for _ in 0..(next() % 300) {
                let when = (next() % 50) as f64 + round as f64;
                let it = item(id);
                h.push(when, it.clone());
                model.push((when, id, it));
                id += 1;
            }
            for _ in 0..(next() % 100) {
                if model.is_empty() {
                    break;
                }
                let k = (next() as usize) % model.len();
                if !model[k].2.is_cancelled() {
                    cancel(&mut h, &model[k].2);
                }
            }
            h.purge_cancelled(&mut removed);
            let end = round as f64 + 10.0;
            let got = drain_due(&mut h, end);
            model.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let (due, rest): (Vec<_>, Vec<_>) = model.into_iter().partition(|e| e.0 < end);
            let want: Vec<usize> = due
                .iter()
                .filter(|e| !e.2.is_cancelled())
                .map(|e| e.1)
                .collect();
            assert_eq!(got, want, "round {round}");
            model = rest;
            let live = model.iter().filter(|e| !e.2.is_cancelled()).count();
            assert_eq!(h.len() - h.cancelled_count(), live, "round {round}");
        }
    }

    #[test]
    fn a_million_cancelled_timers_keep_the_heap_small() {
        let mut h = TimerHeap::new();
        let mut removed = Vec::new();
        let mut peak = 0;
        for i in 0..1_000_000usize {
            let it = item(i);
            h.push(10.0 + (i % 977) as f64, it.clone());
            cancel(&mut h, &it);
            if i % 64 == 0 {
                h.purge_cancelled(&mut removed);
                removed.clear();
            }
            peak = peak.max(h.len());
        }
        assert!(peak < 400, "heap grew to {peak}");
        h.purge_cancelled(&mut removed);
        assert_eq!(drain_due(&mut h, f64::INFINITY), Vec::<usize>::new());
    }
}
