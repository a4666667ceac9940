//! The platform seam: everything that differs between operating systems.
//!
//! Linux (epoll, eventfd, `CLOCK_MONOTONIC`) is what ferroloop runs on today. Each item here
//! is small and stands alone, so adding kqueue for macOS means adding a sibling of `linux`
//! with the same names, not editing the engine. The syscalls go through `rustix`, which gives
//! safe, typed wrappers. rustix runs on its libc backend (`use-libc`): its raw-syscall backend
//! finds the vDSO by parsing the auxiliary vector itself, which crashed under valgrind (whose
//! auxv differs), and the suite must run under valgrind (issue 10).

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub use linux::*;

#[cfg(not(any(target_os = "linux", target_os = "android")))]
compile_error!("ferroloop supports Linux (epoll) so far; a kqueue seam is the next port");
