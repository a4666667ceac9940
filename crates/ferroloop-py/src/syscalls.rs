//! The per-packet socket system calls: one seam for the transports and `sock_*` paths.
//!
//! On Linux they are made with `syscall(2)`: glibc's `recv`/`recvfrom`/`sendto`/`sendmsg`
//! are thread-cancellation points, and in a process with more than one thread (any program
//! with an executor, a subprocess watcher or a blocking-call detector) each call then switches
//! asynchronous cancellation on and off around the system call. Profiling showed that as 4-5%
//! of a UDP echo server's CPU, and about 60 user-space instructions of a 1 KiB stream echo.
//! Python threads are never cancelled that way, so nothing is lost. Elsewhere the libc
//! functions are called.

/// `recvfrom(fd, buf, len, 0, addr, addrlen)`: bytes received, or -1 with `errno` set.
///
/// # Safety
/// `buf` must have room for `len` bytes, `addr` for `*addrlen` bytes.
pub(crate) unsafe fn sys_recvfrom(
    fd: i32,
    buf: *mut libc::c_void,
    len: usize,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
) -> isize {
    #[cfg(target_os = "linux")]
    // SAFETY: the caller's contract; the arguments are recvfrom(2)'s, in its order.
    unsafe {
        libc::syscall(libc::SYS_recvfrom, fd, buf, len, 0, addr, addrlen) as isize
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: the caller's contract.
    unsafe {
        libc::recvfrom(fd, buf, len, 0, addr, addrlen)
    }
}

/// `sendto(fd, buf, len, MSG_NOSIGNAL, addr, addrlen)` (`addr` null for a connected socket):
/// bytes sent, or -1 with `errno` set.
///
/// # Safety
/// `buf` must hold `len` readable bytes, `addr` (unless null) `addrlen` bytes.
pub(crate) unsafe fn sys_sendto(
    fd: i32,
    buf: *const libc::c_void,
    len: usize,
    addr: *const libc::sockaddr,
    addrlen: libc::socklen_t,
) -> isize {
    #[cfg(target_os = "linux")]
    // SAFETY: the caller's contract; the arguments are sendto(2)'s, in its order.
    unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf,
            len,
            libc::MSG_NOSIGNAL,
            addr,
            addrlen,
        ) as isize
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: the caller's contract.
    unsafe {
        libc::sendto(fd, buf, len, libc::MSG_NOSIGNAL, addr, addrlen)
    }
}

/// `recv(fd, buf, len, 0)`: bytes received, or -1 with `errno` set.
///
/// # Safety
/// `buf` must have room for `len` bytes.
pub(crate) unsafe fn sys_recv(fd: i32, buf: *mut libc::c_void, len: usize) -> isize {
    // SAFETY: the caller's contract; a null address asks for none.
    unsafe { sys_recvfrom(fd, buf, len, std::ptr::null_mut(), std::ptr::null_mut()) }
}

/// `sendmsg(fd, msg, MSG_NOSIGNAL)`: bytes sent, or -1 with `errno` set.
///
/// # Safety
/// `msg` must be a valid `msghdr` whose iovecs point at readable memory of their lengths.
pub(crate) unsafe fn sys_sendmsg(fd: i32, msg: *const libc::msghdr) -> isize {
    #[cfg(target_os = "linux")]
    // SAFETY: the caller's contract; the arguments are sendmsg(2)'s, in its order.
    unsafe {
        libc::syscall(libc::SYS_sendmsg, fd, msg, libc::MSG_NOSIGNAL) as isize
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: the caller's contract.
    unsafe {
        libc::sendmsg(fd, msg, libc::MSG_NOSIGNAL)
    }
}
