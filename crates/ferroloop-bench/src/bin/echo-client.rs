//! `echo-client`: the load generator of `benchmarks/bench_io.py`'s TCP echo rows.
//!
//! Why a separate Rust process: the echo rows measure how much CPU the *server* (an event loop
//! in the benchmark's Python process) burns per request. A client in the same process would
//! share the GIL and the CPU-time counter with the server, and a Python client in another
//! process would be slow enough to be the bottleneck and noisy on its own. This client is plain
//! blocking std I/O, one OS thread per connection, so it costs little per request and its cost
//! never lands in the server's `process_time()`.
//!
//! Each connection: connect, `TCP_NODELAY`, wait until every connection is up (so they all load
//! the server at once), then R times: `write_all` S bytes, `read_exact` S bytes and compare them
//! with what was sent. Finally half-close and require a clean EOF, so a server that echoes extra
//! bytes is caught too. Each request's bytes differ (connection and request numbers are in the
//! first 12 bytes, the rest is a per-connection pattern), so a misrouted or replayed buffer is a
//! mismatch, not a pass.
//!
//! Output: one JSON line on stdout, e.g.
//! `{"connections":8,"size":1024,"requests_per_connection":1000,"requests":8000,"seconds":0.31,"error":null}`.
//! `seconds` runs from before the first connect to after the last connection finished. Exit
//! status: 0 when every request came back intact, 1 on any error (the first one is in
//! `"error"`), 2 on bad arguments.
//!
//! One request is written completely before its echo is read, so S must fit in the socket
//! buffers of both directions (several hundred KiB on Linux loopback); the benchmark uses at most
//! 100 KiB. A read or write that blocks longer than `--timeout` (default 60 s) is an error rather
//! than a hang.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: echo-client HOST:PORT CONNECTIONS SIZE REQUESTS [--timeout SECONDS]";

/// Bytes at the start of every request that carry (request number, connection number).
const HEADER_LEN: usize = 12;

struct Config {
    addr: SocketAddr,
    connections: usize,
    size: usize,
    requests: u64,
    timeout: Duration,
}

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut positional = Vec::new();
    let mut timeout = Duration::from_secs(60);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--timeout" {
            let value = iter.next().ok_or("--timeout needs a value")?;
            let secs: f64 = value
                .parse()
                .map_err(|_| format!("bad --timeout {value:?}"))?;
            if !(secs.is_finite() && secs > 0.0) {
                return Err(format!("bad --timeout {value:?}"));
            }
            timeout = Duration::from_secs_f64(secs);
        } else {
            positional.push(arg.as_str());
        }
    }
    let [addr, connections, size, requests] = positional[..] else {
        return Err(format!("expected 4 arguments, got {}", positional.len()));
    };
    let addr = addr
        .to_socket_addrs()
        .map_err(|err| format!("bad address {addr:?}: {err}"))?
        .next()
        .ok_or_else(|| format!("address {addr:?} resolves to nothing"))?;
    let positive = |name: &str, text: &str| -> Result<u64, String> {
        match text.parse::<u64>() {
            Ok(value) if value > 0 => Ok(value),
            _ => Err(format!("{name} must be a positive integer, got {text:?}")),
        }
    };
    let to_usize = |value: u64| usize::try_from(value).map_err(|err| err.to_string());
    Ok(Config {
        addr,
        connections: to_usize(positive("CONNECTIONS", connections)?)?,
        size: to_usize(positive("SIZE", size)?)?,
        requests: positive("REQUESTS", requests)?,
        timeout,
    })
}

/// The per-connection body of every request: cheap to build once, different per connection.
fn base_pattern(conn: usize, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| ((i.wrapping_mul(31).wrapping_add(conn.wrapping_mul(17))) % 251) as u8)
        .collect()
}

/// Stamp request `req` of connection `conn` into the first bytes of `buf`.
fn stamp(buf: &mut [u8], conn: usize, req: u64) {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&req.to_le_bytes());
    header[8..].copy_from_slice(&(conn as u32).to_le_bytes());
    let n = buf.len().min(HEADER_LEN);
    buf[..n].copy_from_slice(&header[..n]);
}

/// The outcome of one connection: requests echoed intact, and the error that stopped it.
struct Outcome {
    done: u64,
    error: Option<String>,
}

fn connect(cfg: &Config) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&cfg.addr, cfg.timeout)
        .map_err(|err| format!("connect to {}: {err}", cfg.addr))?;
    stream
        .set_nodelay(true)
        .map_err(|err| format!("TCP_NODELAY: {err}"))?;
    stream
        .set_read_timeout(Some(cfg.timeout))
        .and_then(|()| stream.set_write_timeout(Some(cfg.timeout)))
        .map_err(|err| format!("socket timeouts: {err}"))?;
    Ok(stream)
}

fn run_connection(cfg: &Config, conn: usize, barrier: &Barrier) -> Outcome {
    let stream = connect(cfg);
    // Every thread reaches the barrier, also one whose connect failed, so none waits forever.
    barrier.wait();
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(error) => {
            return Outcome {
                done: 0,
                error: Some(format!("connection {conn}: {error}")),
            }
        }
    };
    let mut sent = base_pattern(conn, cfg.size);
    let mut received = vec![0u8; cfg.size];
    let mut done = 0;
    let fail = |done: u64, what: String| Outcome {
        done,
        error: Some(format!("connection {conn}, request {done}: {what}")),
    };
    for req in 0..cfg.requests {
        stamp(&mut sent, conn, req);
        if let Err(err) = stream.write_all(&sent) {
            return fail(done, format!("write: {err}"));
        }
        if let Err(err) = stream.read_exact(&mut received) {
            let what = if err.kind() == ErrorKind::UnexpectedEof {
                "server closed the connection before echoing the whole request".to_owned()
            } else {
                format!("read: {err}")
            };
            return fail(done, what);
        }
        if received != sent {
            let at = sent
                .iter()
                .zip(&received)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return fail(
                done,
                format!(
                    "echo differs from the request at byte {at} of {} (sent {:#04x}, got {:#04x})",
                    cfg.size, sent[at], received[at]
                ),
            );
        }
        done += 1;
    }
    // Half-close: the server must see EOF, close its side and have nothing more to say.
    if let Err(err) = stream.shutdown(Shutdown::Write) {
        return fail(done, format!("shutdown: {err}"));
    }
    let mut extra = [0u8; 1];
    match stream.read(&mut extra) {
        Ok(0) => Outcome { done, error: None },
        Ok(_) => fail(done, "server sent bytes nobody asked for".to_owned()),
        Err(err) => fail(done, format!("waiting for the server to close: {err}")),
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
    let mut done = 0;
    let mut errors = Vec::new();
    for handle in workers {
        match handle.join() {
            Ok(outcome) => {
                done += outcome.done;
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
    println!(
        "{{\"connections\":{},\"size\":{},\"requests_per_connection\":{},\"requests\":{done},\
         \"seconds\":{seconds:.6},\"error\":{error}}}",
        cfg.connections, cfg.size, cfg.requests
    );
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
