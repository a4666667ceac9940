//! The ready queue: callbacks that run on the next loop iteration, in the order they were
//! scheduled (asyncio's `_ready` deque).
//!
//! The one rule that makes it more than a `VecDeque`: an iteration runs exactly the callbacks
//! that were queued when it began. Callbacks scheduled while a batch runs wait for the next
//! iteration, so a callback that re-schedules itself cannot starve I/O or timers. The caller
//! asks for the batch size with [`ReadyQueue::begin_batch`] and pops that many.

use std::collections::VecDeque;

/// FIFO of ready items with asyncio's batch semantics.
#[derive(Debug)]
pub struct ReadyQueue<T> {
    items: VecDeque<T>,
    /// Items ever pushed (`loop.stats()` counts callbacks run from it).
    pushed: u64,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ReadyQueue<T> {
    pub fn new() -> Self {
        Self {
            items: VecDeque::with_capacity(1024),
            pushed: 0,
        }
    }

    /// Appends an item; it runs after everything already queued.
    #[inline]
    pub fn push(&mut self, item: T) {
        self.items.push_back(item);
        self.pushed += 1;
    }

    /// How many items were ever pushed.
    #[inline]
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// The number of items the batch starting now must run (everything queued so far).
    #[inline]
    pub fn begin_batch(&self) -> usize {
        self.items.len()
    }

    /// Takes the oldest item.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Removes every item (used when a loop is closed); the caller drops them.
    pub fn drain_all(&mut self) -> Vec<T> {
        self.items.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order() {
        let mut q = ReadyQueue::new();
        for i in 0..5 {
            q.push(i);
        }
        let got: Vec<i32> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn items_pushed_during_a_batch_wait_for_the_next() {
        let mut q = ReadyQueue::new();
        q.push("a");
        q.push("b");
        let n = q.begin_batch();
        let mut ran = Vec::new();
        for _ in 0..n {
            let item = q.pop().unwrap();
            ran.push(item);
            q.push("later"); // scheduled while the batch runs
        }
        assert_eq!(ran, vec!["a", "b"]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.begin_batch(), 2);
    }

    #[test]
    fn drain_all_empties() {
        let mut q = ReadyQueue::new();
        q.push(1);
        q.push(2);
        assert_eq!(q.drain_all(), vec![1, 2]);
        assert!(q.is_empty());
    }
}
