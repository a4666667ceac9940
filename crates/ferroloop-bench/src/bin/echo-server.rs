//! `echo-server`: the Rust-only ceiling of `benchmarks/bench_streams.py`'s echo rows.
//!
//! An event loop driven from Python can at best approach what a single-threaded, non-blocking
//! epoll loop written directly in Rust costs per request. This is that loop, with no framework
//! in between: `std` and raw `libc` calls only. It serves the same echo protocol as the Python
//! servers, under the same client (`echo-client`), so its CPU per request is the ceiling
//! against which a loop's server efficiency can be stated as a percentage.
//!
//! It does what a good event loop does and nothing more: level-triggered `epoll`, one `recv` per
//! readiness event into one 256 KiB buffer (asyncio's transport read size), the echo `send`
//! tried at once, and only what the kernel refuses kept and sent when the socket becomes
//! writable (reading from that connection pauses meanwhile). Accepted TCP sockets get
//! `TCP_NODELAY`, as asyncio's transports do.
//!
//! `echo-server --fd FD CONNECTIONS [--timeout SECONDS]`: FD is a listening socket (TCP or Unix)
//! inherited from the parent, which bound it, so that the parent knows the address before the
//! server runs. The server accepts exactly CONNECTIONS connections, echoes each until EOF and
//! then closes it; when the last one is closed it prints one JSON line and exits, e.g.
//! `{"connections":8,"echoed":[4096000,...],"seconds":0.21,"user_s":0.03,"sys_s":0.17,"error":null}`.
//! The window, like the Python servers', runs from the first accepted connection to the last
//! close: `seconds` is its wall time, `user_s`/`sys_s` this process's CPU time over it
//! (`getrusage`). `echoed` is the number of bytes echoed per connection, in accept order. If no
//! event arrives for `--timeout` seconds (default 60), or a socket call fails, the report carries
//! the error and the exit status is 1; bad arguments exit with 2.

use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: echo-server --fd FD CONNECTIONS [--timeout SECONDS]";

/// Bytes per `recv`, as asyncio's socket transport reads (`max_size`).
const READ_SIZE: usize = 256 * 1024;

/// The epoll token of the listening socket; connections use their index.
const LISTENER: u64 = u64::MAX;

const MAX_EVENTS: usize = 64;

struct Config {
    fd: RawFd,
    connections: usize,
    timeout: Duration,
}

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut fd = None;
    let mut timeout = Duration::from_secs(60);
    let mut positional = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--fd" => {
                let value = iter.next().ok_or("--fd needs a value")?;
                fd = Some(
                    value
                        .parse::<RawFd>()
                        .ok()
                        .filter(|fd| *fd >= 0)
                        .ok_or_else(|| format!("bad --fd {value:?}"))?,
                );
            }
            "--timeout" => {
                let value = iter.next().ok_or("--timeout needs a value")?;
                let secs: f64 = value
                    .parse()
                    .map_err(|_| format!("bad --timeout {value:?}"))?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(format!("bad --timeout {value:?}"));
                }
                timeout = Duration::from_secs_f64(secs);
            }
            _ => positional.push(arg.as_str()),
        }
    }
    let fd = fd.ok_or("--fd is required")?;
    let [connections] = positional[..] else {
        return Err(format!("expected 1 argument, got {}", positional.len()));
    };
    let connections = match connections.parse::<usize>() {
        Ok(value) if value > 0 => value,
        _ => {
            return Err(format!(
                "CONNECTIONS must be a positive integer, got {connections:?}"
            ))
        }
    };
    Ok(Config {
        fd,
        connections,
        timeout,
    })
}

// --------------------------------------------------------------------------------------------
// Thin wrappers over the libc calls: each `unsafe` block is one call.
// --------------------------------------------------------------------------------------------

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// Take ownership of the listening socket the parent passed down.
fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor flags of `fd`; an fd number that is not open
    // just makes it fail with EBADF.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: `fd` is open (checked above) and was handed to this process to own: nothing else
    // in this program refers to it, so the OwnedFd is its only owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL reads the status flags of an fd we own; no pointers are involved.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: F_SETFL with an int argument on an fd we own; no pointers are involved.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

fn socket_family(fd: &OwnedFd) -> io::Result<libc::sa_family_t> {
    // SAFETY: sockaddr_storage is plain data for which all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` is a writable sockaddr_storage and `len` holds its size, so the kernel
    // writes at most that many bytes into it; `len` is a valid out-pointer too.
    check(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&raw mut addr).cast::<libc::sockaddr>(),
            &mut len,
        )
    })?;
    Ok(addr.ss_family)
}

fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes only a flags argument.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by epoll_create1, so it is open and owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn epoll_ctl(ep: &OwnedFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: `event` is a valid epoll_event that outlives the call (the kernel copies it);
    // both descriptors are open.
    check(unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut event) })?;
    Ok(())
}

fn epoll_wait(
    ep: &OwnedFd,
    events: &mut [libc::epoll_event],
    timeout_ms: libc::c_int,
) -> io::Result<usize> {
    let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `events` is a writable buffer of `max` epoll_event entries, and the kernel writes
    // at most `max` of them.
    let n =
        check(unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) })?;
    Ok(n as usize)
}

fn accept(listener: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers ask accept4 not to report the peer address.
    let fd = check(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by accept4, so it is open and owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nodelay(fd: &OwnedFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value points to a live c_int and the length passed is its size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const on).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes, the most recv writes.
    check_size(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })
}

fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is readable for `buf.len()` bytes, the most send reads. MSG_NOSIGNAL turns
    // a closed peer into EPIPE instead of SIGPIPE.
    check_size(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    })
}

/// Wall time and this process's user and system CPU seconds.
#[derive(Clone, Copy)]
struct Clock {
    wall: Instant,
    user: f64,
    sys: f64,
}

impl Clock {
    fn now() -> Clock {
        // SAFETY: rusage is plain data for which all-zero bytes are a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a writable rusage; RUSAGE_SELF cannot fail with a valid pointer.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        Clock {
            wall: Instant::now(),
            user: secs(usage.ru_utime),
            sys: secs(usage.ru_stime),
        }
    }
}

// --------------------------------------------------------------------------------------------
// The loop
// --------------------------------------------------------------------------------------------

struct Conn {
    fd: OwnedFd,
    echoed: u64,
    /// What the kernel did not take yet; reading pauses until it is sent.
    pending: Vec<u8>,
    sent: usize,
}

#[derive(Default)]
struct Report {
    echoed: Vec<u64>,
    window: Option<(Clock, Clock)>,
}

fn would_block(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Serve `cfg.connections` connections; `report` holds what was done even when this fails.
fn serve(cfg: &Config, report: &mut Report) -> Result<(), String> {
    let listener = inherited_fd(cfg.fd).map_err(|err| format!("--fd {}: {err}", cfg.fd))?;
    set_nonblocking(&listener).map_err(|err| format!("listener O_NONBLOCK: {err}"))?;
    let tcp = matches!(
        socket_family(&listener).map_err(|err| format!("listener getsockname: {err}"))?,
        f if i32::from(f) == libc::AF_INET || i32::from(f) == libc::AF_INET6
    );
    let ep = epoll_create().map_err(|err| format!("epoll_create1: {err}"))?;
    let (readable, writable) = (libc::EPOLLIN as u32, libc::EPOLLOUT as u32);
    epoll_ctl(
        &ep,
        libc::EPOLL_CTL_ADD,
        listener.as_raw_fd(),
        readable,
        LISTENER,
    )
    .map_err(|err| format!("epoll_ctl(listener): {err}"))?;
    let mut listener = Some(listener);

    let timeout_ms = libc::c_int::try_from(cfg.timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
    let mut buf = vec![0u8; READ_SIZE];
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(cfg.connections);
    let mut start = None;
    let mut open = 0usize;
    loop {
        let n = match epoll_wait(&ep, &mut events, timeout_ms) {
            Ok(0) => {
                return Err(format!(
                    "no event for {:?} ({} of {} connections accepted, {open} open)",
                    cfg.timeout,
                    conns.len(),
                    cfg.connections
                ))
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(format!("epoll_wait: {err}")),
        };
        for event in &events[..n] {
            let (flags, token) = (event.events, event.u64);
            if token == LISTENER {
                let Some(lfd) = listener.as_ref() else {
                    continue;
                };
                while conns.len() < cfg.connections {
                    let fd = match accept(lfd) {
                        Ok(fd) => fd,
                        Err(err) if would_block(&err) => break,
                        Err(err) => return Err(format!("accept4: {err}")),
                    };
                    if start.is_none() {
                        start = Some(Clock::now());
                    }
                    if tcp {
                        set_nodelay(&fd).map_err(|err| format!("TCP_NODELAY: {err}"))?;
                    }
                    let index = conns.len() as u64;
                    epoll_ctl(&ep, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), readable, index)
                        .map_err(|err| format!("epoll_ctl(add): {err}"))?;
                    conns.push(Some(Conn {
                        fd,
                        echoed: 0,
                        pending: Vec::new(),
                        sent: 0,
                    }));
                    report.echoed.push(0);
                    open += 1;
                }
                if conns.len() == cfg.connections {
                    // Everything expected is in: stop watching (and close) the listener.
                    listener = None;
                }
                continue;
            }
            let index = token as usize;
            let Some(conn) = conns.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let fail = |what: &str, err: io::Error| format!("connection {index}: {what}: {err}");
            if !conn.pending.is_empty() {
                if flags & (writable | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32) == 0 {
                    continue;
                }
                match send(&conn.fd, &conn.pending[conn.sent..]) {
                    Ok(sent) => conn.sent += sent,
                    Err(err) if would_block(&err) => continue,
                    Err(err) => return Err(fail("send", err)),
                }
                if conn.sent == conn.pending.len() {
                    conn.pending.clear();
                    conn.sent = 0;
                    epoll_ctl(
                        &ep,
                        libc::EPOLL_CTL_MOD,
                        conn.fd.as_raw_fd(),
                        readable,
                        token,
                    )
                    .map_err(|err| fail("epoll_ctl(mod)", err))?;
                }
                continue;
            }
            let got = match recv(&conn.fd, &mut buf) {
                Ok(got) => got,
                Err(err) if would_block(&err) => continue,
                Err(err) => return Err(fail("recv", err)),
            };
            if got == 0 {
                // EOF: everything was echoed (reading pauses while a send is pending). Closing
                // the fd also removes it from the epoll set.
                report.echoed[index] = conn.echoed;
                conns[index] = None;
                open -= 1;
                if open == 0 && listener.is_none() {
                    report.window = start.map(|start| (start, Clock::now()));
                    return Ok(());
                }
                continue;
            }
            conn.echoed += got as u64;
            let sent = match send(&conn.fd, &buf[..got]) {
                Ok(sent) => sent,
                Err(err) if would_block(&err) => 0,
                Err(err) => return Err(fail("send", err)),
            };
            if sent < got {
                conn.pending.extend_from_slice(&buf[sent..got]);
                epoll_ctl(
                    &ep,
                    libc::EPOLL_CTL_MOD,
                    conn.fd.as_raw_fd(),
                    writable,
                    token,
                )
                .map_err(|err| fail("epoll_ctl(mod)", err))?;
            }
        }
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            ch if (ch as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", ch as u32);
            }
            ch => out.push(ch),
        }
    }
    out.push('"');
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("echo-server: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut report = Report::default();
    let outcome = serve(&cfg, &mut report);
    let (seconds, user, sys) = match report.window {
        Some((start, end)) => (
            format!("{:.6}", end.wall.duration_since(start.wall).as_secs_f64()),
            format!("{:.6}", end.user - start.user),
            format!("{:.6}", end.sys - start.sys),
        ),
        None => ("null".to_owned(), "null".to_owned(), "null".to_owned()),
    };
    let echoed: Vec<String> = report.echoed.iter().map(u64::to_string).collect();
    let error = match &outcome {
        Ok(()) => "null".to_owned(),
        Err(err) => json_string(err),
    };
    println!(
        "{{\"connections\":{},\"echoed\":[{}],\"seconds\":{seconds},\"user_s\":{user},\
         \"sys_s\":{sys},\"error\":{error}}}",
        cfg.connections,
        echoed.join(",")
    );
    if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
