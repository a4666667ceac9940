//! ferroloop's engine: the parts of an asyncio event loop that know nothing about Python.
//!
//! An asyncio loop is, underneath, four small machines: a FIFO of callbacks that are ready
//! to run ([`ReadyQueue`]), a heap of callbacks waiting for a deadline ([`TimerHeap`]), a
//! poller that sleeps until a file descriptor is ready or the next deadline passes
//! ([`Poller`]), and a way for another thread to cut that sleep short ([`Waker`]). They live
//! here, in plain Rust with `cargo test`s of their own, so that the PyO3 layer
//! (`ferroloop-py`) is only glue: it stores Python objects in these structures and calls
//! them back.
//!
//! Everything that touches the operating system sits behind the [`sys`] seam (epoll,
//! eventfd, the monotonic clock on Linux); nothing outside it assumes Linux.

pub mod poller;
pub mod ready;
pub mod sys;
pub mod timers;
pub mod waker;

pub use poller::{Event, Events, Interest, Mode, Poller, Token, WAKER_TOKEN};
pub use ready::ReadyQueue;
pub use timers::{Cancellable, TimerHeap};
pub use waker::Waker;

/// Seconds on the clock `time.monotonic()` reads, as a float: the clock `loop.time()` uses.
#[inline]
pub fn monotonic() -> f64 {
    sys::monotonic_seconds()
}
