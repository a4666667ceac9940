//! `echo-client`: the load generator of `benchmarks/bench_io.py`'s and
//! `benchmarks/bench_streams.py`'s server rows.
//!
//! Why a separate Rust process: the server rows measure how much CPU the *server* (an event loop
//! in the benchmark's Python process) burns per request. A client in the same process would
//! share the GIL and the CPU-time counter with the server, and a Python client in another
//! process would be slow enough to be the bottleneck and noisy on its own. This client is plain
//! blocking std I/O, one OS thread per connection, so it costs little per request and its cost
//! never lands in the server's `process_time()`.
//!
//! `ADDRESS` is `HOST:PORT` (TCP, with `TCP_NODELAY`) or `unix:PATH` (a Unix stream socket).
//! Every connection connects, then waits until every connection is up (so they all load the
//! server at once). Then, by mode:
//!
//! - **echo** (default): R times, `write_all` S bytes, `read_exact` the response and compare it
//!   with what was sent. With `--header-bytes H` the response is H header bytes (byte `i` is
//!   `b'A' + i % 26`) followed by the echoed request, as a server that answers with a header
//!   and a body sends it. Finally half-close and wait for the server to close: bytes after the
//!   last response are an error. Each request's bytes differ (connection and request numbers are
//!   in the first 12 bytes, the rest is a per-connection pattern), so a misrouted or replayed
//!   buffer is a mismatch, not a pass. Each request's latency (from just before its write to
//!   the end of its response's read) is recorded; the report gives the mean, p99 and maximum
//!   over all requests of all connections.
//! - **sink** (`--sink`): write nothing; read, counting bytes and checking that the byte at
//!   stream offset `k` is `k % 251`. The connection must deliver exactly BYTES bytes,
//!   then close. This is the reading end of a one-way bulk transfer.
//!
//! In both modes, a server that sends nothing more but never closes (no EOF within
//! `--eof-timeout`, default `--timeout`) is not an error: the report counts the connections it
//! did close (`closed_by_server`), and the caller decides. rloop 0.5, for one, never closes the
//! socket of a closed transport, yet does all the work.
//!
//! Output: one JSON line on stdout, e.g.
//! `{"mode":"echo","connections":8,"size":1024,"header_bytes":0,"requests_per_connection":1000,`
//! `"requests":8000,"bytes":8192000,"closed_by_server":8,"seconds":0.31,"latency_mean_us":38.1,`
//! `"latency_p99_us":95.2,"latency_max_us":410.7,"error":null}`. `requests` counts complete requests (sink mode:
//! connections that received all their bytes), `bytes` the response bytes received and checked.
//! `seconds` runs from before the first connect to after the last connection finished; the
//! latency fields are `null` in sink mode. Exit status: 0 when everything arrived intact, 1 on
//! any error (the first one is in `"error"`), 2 on bad arguments.
//!
//! One request is written completely before its response is read, so S must fit in the socket
//! buffers of both directions (several hundred KiB on Linux loopback); the benchmarks use at
//! most 100 KiB. A read or write that blocks longer than `--timeout` (default 60 s) is an error
//! rather than a hang.

use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: echo-client ADDRESS CONNECTIONS SIZE REQUESTS [--header-bytes N] \
                     [--timeout SECONDS] [--eof-timeout SECONDS]\n       echo-client --sink \
                     ADDRESS CONNECTIONS BYTES [--timeout SECONDS] [--eof-timeout SECONDS]\n\
                     ADDRESS is HOST:PORT or unix:PATH";

/// Bytes at the start of every request that carry (request number, connection number).
const HEADER_LEN: usize = 12;

/// The sink mode's stream pattern repeats every this many bytes (a prime, so it never lines up
/// with a power-of-two buffer size).
const SINK_PERIOD: usize = 251;

/// Sink mode's read size.
const SINK_READ: usize = 256 * 1024;

enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "{addr}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

enum Mode {
    Echo {
        size: usize,
        requests: u64,
        header_bytes: usize,
    },
    Sink {
        bytes: u64,
    },
}

struct Config {
    addr: Address,
    connections: usize,
    mode: Mode,
    timeout: Duration,
    /// How long to wait for the server's close (EOF) once everything expected has arrived.
    eof_timeout: Duration,
}

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut positional = Vec::new();
    let mut timeout = Duration::from_secs(60);
    let mut eof_timeout = None;
    let mut header_bytes = 0;
    let mut sink = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--timeout" => timeout = seconds(arg, iter.next())?,
            "--eof-timeout" => eof_timeout = Some(seconds(arg, iter.next())?),
            "--header-bytes" => {
                let value = iter.next().ok_or("--header-bytes needs a value")?;
                header_bytes = value
                    .parse()
                    .map_err(|_| format!("bad --header-bytes {value:?}"))?;
            }
            "--sink" => sink = true,
            _ => positional.push(arg.as_str()),
        }
    }
    let positive = |name: &str, text: &str| -> Result<u64, String> {
        match text.parse::<u64>() {
            Ok(value) if value > 0 => Ok(value),
            _ => Err(format!("{name} must be a positive integer, got {text:?}")),
        }
    };
    let to_usize = |value: u64| usize::try_from(value).map_err(|err| err.to_string());
    let (addr, connections, mode) = if sink {
        if header_bytes != 0 {
            return Err("--header-bytes does not apply to --sink".to_owned());
        }
        let [addr, connections, bytes] = positional[..] else {
            return Err(format!(
                "--sink expects 3 arguments, got {}",
                positional.len()
            ));
        };
        let bytes = positive("BYTES", bytes)?;
        (addr, connections, Mode::Sink { bytes })
    } else {
        let [addr, connections, size, requests] = positional[..] else {
            return Err(format!("expected 4 arguments, got {}", positional.len()));
        };
        let mode = Mode::Echo {
            size: to_usize(positive("SIZE", size)?)?,
            requests: positive("REQUESTS", requests)?,
            header_bytes,
        };
        (addr, connections, mode)
    };
    let addr = match addr.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Address::Unix(PathBuf::from(path)),
        Some(_) => return Err("unix: needs a path".to_owned()),
        None => Address::Tcp(
            addr.to_socket_addrs()
                .map_err(|err| format!("bad address {addr:?}: {err}"))?
                .next()
                .ok_or_else(|| format!("address {addr:?} resolves to nothing"))?,
        ),
    };
    Ok(Config {
        addr,
        connections: to_usize(positive("CONNECTIONS", connections)?)?,
        mode,
        timeout,
        eof_timeout: eof_timeout.unwrap_or(timeout),
    })
}

fn seconds(option: &str, value: Option<&String>) -> Result<Duration, String> {
    let value = value.ok_or_else(|| format!("{option} needs a value"))?;
    match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("bad {option} {value:?}")),
    }
}

/// A connected TCP or Unix stream socket.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(cfg: &Config) -> Result<Stream, String> {
        let stream = match &cfg.addr {
            Address::Tcp(addr) => {
                let stream = TcpStream::connect_timeout(addr, cfg.timeout)
                    .map_err(|err| format!("connect to {addr}: {err}"))?;
                stream
                    .set_nodelay(true)
                    .map_err(|err| format!("TCP_NODELAY: {err}"))?;
                Stream::Tcp(stream)
            }
            Address::Unix(path) => Stream::Unix(
                UnixStream::connect(path)
                    .map_err(|err| format!("connect to unix:{}: {err}", path.display()))?,
            ),
        };
        let timeout = Some(cfg.timeout);
        match &stream {
            Stream::Tcp(s) => s
                .set_read_timeout(timeout)
                .and_then(|()| s.set_write_timeout(timeout)),
            Stream::Unix(s) => s
                .set_read_timeout(timeout)
                .and_then(|()| s.set_write_timeout(timeout)),
        }
        .map_err(|err| format!("socket timeouts: {err}"))?;
        Ok(stream)
    }

    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(timeout)),
            Stream::Unix(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The per-connection body of every request: cheap to build once, different per connection.
fn base_pattern(conn: usize, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| ((i.wrapping_mul(31).wrapping_add(conn.wrapping_mul(17))) % 251) as u8)
        .collect()
}

/// The response header of `--header-bytes`: byte `i` is `b'A' + i % 26`.
fn header_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'A' + (i % 26) as u8).collect()
}

/// Stamp request `req` of connection `conn` into the first bytes of `buf`.
fn stamp(buf: &mut [u8], conn: usize, req: u64) {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&req.to_le_bytes());
    header[8..].copy_from_slice(&(conn as u32).to_le_bytes());
    let n = buf.len().min(HEADER_LEN);
    buf[..n].copy_from_slice(&header[..n]);
}

/// The outcome of one connection: requests done intact, response bytes checked, each request's
/// latency in nanoseconds (echo mode), and the error that stopped it.
struct Outcome {
    done: u64,
    bytes: u64,
    latencies_ns: Vec<u64>,
    /// The server closed the connection (EOF arrived within `--eof-timeout`).
    closed: bool,
    error: Option<String>,
}

impl Outcome {
    fn failed(conn: usize, error: String) -> Outcome {
        Outcome {
            done: 0,
            bytes: 0,
            latencies_ns: Vec::new(),
            closed: false,
            error: Some(format!("connection {conn}: {error}")),
        }
    }
}

fn first_difference(expected: &[u8], got: &[u8]) -> String {
    let at = expected
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    format!(
        "byte {at} of {} differs (expected {:#04x}, got {:#04x})",
        expected.len(),
        expected[at],
        got[at]
    )
}

/// After everything expected has arrived, the server must close without sending more: `Ok(true)`
/// when its EOF arrives within `timeout`, `Ok(false)` when nothing arrives in that time (a
/// server that never closes its socket; the caller reports it), an error for extra bytes.
fn await_eof(stream: &mut Stream, timeout: Duration) -> Result<bool, String> {
    stream
        .set_read_timeout(timeout)
        .map_err(|err| format!("socket timeout: {err}"))?;
    let mut extra = [0u8; 1];
    loop {
        return match stream.read(&mut extra) {
            Ok(0) => Ok(true),
            Ok(_) => Err("server sent bytes nobody asked for".to_owned()),
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Ok(false)
            }
            Err(err) => Err(format!("waiting for the server to close: {err}")),
        };
    }
}

fn run_echo(
    stream: &mut Stream,
    conn: usize,
    (size, requests, header_bytes): (usize, u64, usize),
    eof_timeout: Duration,
) -> Outcome {
    let mut sent = base_pattern(conn, size);
    let header = header_pattern(header_bytes);
    let response_len = header_bytes + size;
    let mut received = vec![0u8; response_len];
    let mut latencies_ns = Vec::with_capacity(usize::try_from(requests).unwrap_or(0));
    let mut done = 0;
    let fail = |done: u64, latencies_ns: Vec<u64>, what: String| Outcome {
        done,
        bytes: done * response_len as u64,
        latencies_ns,
        closed: false,
        error: Some(format!("connection {conn}, request {done}: {what}")),
    };
    for req in 0..requests {
        stamp(&mut sent, conn, req);
        let started = Instant::now();
        if let Err(err) = stream.write_all(&sent) {
            return fail(done, latencies_ns, format!("write: {err}"));
        }
        if let Err(err) = stream.read_exact(&mut received) {
            let what = if err.kind() == ErrorKind::UnexpectedEof {
                "server closed the connection before the whole response arrived".to_owned()
            } else {
                format!("read: {err}")
            };
            return fail(done, latencies_ns, what);
        }
        latencies_ns.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let (got_header, got_body) = received.split_at(header_bytes);
        if got_header != header {
            let what = format!("response header: {}", first_difference(&header, got_header));
            return fail(done, latencies_ns, what);
        }
        if got_body != sent {
            let what = format!(
                "echo differs from the request: {}",
                first_difference(&sent, got_body)
            );
            return fail(done, latencies_ns, what);
        }
        done += 1;
    }
    // Half-close: the server must see EOF, close its side and have nothing more to say.
    if let Err(err) = stream.shutdown_write() {
        return fail(done, latencies_ns, format!("shutdown: {err}"));
    }
    match await_eof(stream, eof_timeout) {
        Ok(closed) => Outcome {
            done,
            bytes: done * response_len as u64,
            latencies_ns,
            closed,
            error: None,
        },
        Err(what) => fail(done, latencies_ns, what),
    }
}

fn run_sink(stream: &mut Stream, conn: usize, expected: u64, eof_timeout: Duration) -> Outcome {
    // reference[k..k + n] is what n bytes starting at a stream offset ≡ k (mod SINK_PERIOD) are.
    let reference: Vec<u8> = (0..SINK_READ + SINK_PERIOD)
        .map(|k| (k % SINK_PERIOD) as u8)
        .collect();
    let mut buf = vec![0u8; SINK_READ];
    let mut offset: u64 = 0;
    let fail = |offset: u64, what: String| Outcome {
        done: 0,
        bytes: offset,
        latencies_ns: Vec::new(),
        closed: false,
        error: Some(format!("connection {conn}, at byte {offset}: {what}")),
    };
    while offset < expected {
        let want = usize::try_from(expected - offset).map_or(SINK_READ, |left| left.min(SINK_READ));
        let n = match stream.read(&mut buf[..want]) {
            Ok(0) => return fail(offset, format!("EOF after {offset} of {expected} bytes")),
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => return fail(offset, format!("read: {err}")),
        };
        let phase = (offset % SINK_PERIOD as u64) as usize;
        let expected_bytes = &reference[phase..phase + n];
        if buf[..n] != *expected_bytes {
            let what = first_difference(expected_bytes, &buf[..n]);
            return fail(offset, format!("stream pattern: {what}"));
        }
        offset += n as u64;
    }
    match await_eof(stream, eof_timeout) {
        Ok(closed) => Outcome {
            done: 1,
            bytes: offset,
            latencies_ns: Vec::new(),
            closed,
            error: None,
        },
        Err(what) => fail(offset, what),
    }
}

fn run_connection(cfg: &Config, conn: usize, barrier: &Barrier) -> Outcome {
    let stream = Stream::connect(cfg);
    // Every thread reaches the barrier, also one whose connect failed, so none waits forever.
    barrier.wait();
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(error) => return Outcome::failed(conn, error),
    };
    match cfg.mode {
        Mode::Echo {
            size,
            requests,
            header_bytes,
        } => run_echo(
            &mut stream,
            conn,
            (size, requests, header_bytes),
            cfg.eof_timeout,
        ),
        Mode::Sink { bytes } => run_sink(&mut stream, conn, bytes, cfg.eof_timeout),
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

/// `(mean, p99, max)` in microseconds as JSON numbers, or `null`s when nothing was measured.
/// p99 is the nearest-rank percentile: the smallest latency that at least 99% of requests did
/// not exceed.
fn latency_summary(latencies_ns: &mut [u64]) -> [String; 3] {
    if latencies_ns.is_empty() {
        return ["null".to_owned(), "null".to_owned(), "null".to_owned()];
    }
    latencies_ns.sort_unstable();
    let n = latencies_ns.len();
    let mean = latencies_ns.iter().map(|&ns| ns as f64).sum::<f64>() / n as f64;
    let rank = (n * 99).div_ceil(100).max(1);
    let us = |ns: f64| format!("{:.2}", ns / 1e3);
    [
        us(mean),
        us(latencies_ns[rank - 1] as f64),
        us(latencies_ns[n - 1] as f64),
    ]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(cfg) => Arc::new(cfg),
        Err(err) => {
            eprintln!("echo-client: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let barrier = Arc::new(Barrier::new(cfg.connections));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(cfg.connections);
    for conn in 0..cfg.connections {
        let (cfg, barrier) = (Arc::clone(&cfg), Arc::clone(&barrier));
        let spawned = thread::Builder::new()
            .name(format!("echo-{conn}"))
            .stack_size(256 * 1024)
            .spawn(move || run_connection(&cfg, conn, &barrier));
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(err) => {
                // The threads already started wait at the barrier for this one: give up.
                eprintln!("echo-client: cannot start thread {conn}: {err}");
                return ExitCode::from(1);
            }
        }
    }
    let (mut done, mut bytes, mut closed) = (0, 0, 0);
    let mut latencies_ns = Vec::new();
    let mut errors = Vec::new();
    for handle in workers {
        match handle.join() {
            Ok(outcome) => {
                done += outcome.done;
                bytes += outcome.bytes;
                closed += u32::from(outcome.closed);
                latencies_ns.extend(outcome.latencies_ns);
                errors.extend(outcome.error);
            }
            Err(_) => errors.push("a connection thread panicked".to_owned()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    let error = match errors.len() {
        0 => "null".to_owned(),
        1 => json_string(&errors[0]),
        n => json_string(&format!("{} (and {} more)", errors[0], n - 1)),
    };
    let (mode, size, header_bytes, per_connection) = match cfg.mode {
        Mode::Echo {
            size,
            requests,
            header_bytes,
        } => ("echo", size as u64, header_bytes, requests),
        Mode::Sink { bytes } => ("sink", bytes, 0, 1),
    };
    let [mean, p99, max] = latency_summary(&mut latencies_ns);
    println!(
        "{{\"mode\":\"{mode}\",\"connections\":{},\"size\":{size},\"header_bytes\":{header_bytes},\
         \"requests_per_connection\":{per_connection},\"requests\":{done},\"bytes\":{bytes},\
         \"closed_by_server\":{closed},\"seconds\":{seconds:.6},\"latency_mean_us\":{mean},\"latency_p99_us\":{p99},\
         \"latency_max_us\":{max},\"error\":{error}}}",
        cfg.connections
    );
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
