//! `udp-peer`: the load generator of `benchmarks/bench_udp.py`.
//!
//! Why a separate Rust process: the benchmark measures how much CPU the *event loop* (in the
//! benchmark's Python process) spends per datagram. A peer in the same process would share
//! the GIL and the CPU-time counter with it; a Python peer would be slow enough to be the
//! bottleneck. This one is a single thread on non-blocking std sockets that spins while it
//! waits (the benchmark pins it to a CPU of its own): waking blocked threads was, on a 2-CPU
//! machine, slower than the loops under test, so a loop that was faster only drained its
//! queue sooner and slept more often, and the numbers measured the peer's wake-ups.
//!
//! Modes (ADDRESS is `HOST:PORT`, the loop's UDP endpoint):
//!
//! - **pingpong** `ADDRESS FLOWS SIZE REQUESTS`: FLOWS flows, each with its own socket
//!   connected to ADDRESS, send a SIZE-byte datagram and wait for the same bytes to come back,
//!   REQUESTS times; each flow has one request outstanding at any time. A datagram of 12 bytes or more carries the flow and request numbers in
//!   its first 12 bytes and a per-flow pattern after; a smaller one is a byte value that
//!   changes with every request and flow. An answer that differs is an error, and so is no
//!   answer within `--timeout` (loopback does not lose datagrams that are answered one at a
//!   time).
//! - **blast** `ADDRESS SIZE COUNT`: one socket sends COUNT datagrams of SIZE bytes (at least
//!   8: the first 8 are the datagram's number, little endian, then a pattern) to ADDRESS,
//!   never more than `--window` (default 64) ahead of the acknowledgements: 8-byte datagrams
//!   (little-endian u64) from the loop saying how many it has received so far. The window
//!   keeps the loop's receive buffer from overflowing, so nothing is dropped; it ends when
//!   the loop acknowledges COUNT.
//! - **sink** `ADDRESS SIZE COUNT`: the other direction. The socket first sends one 8-byte
//!   datagram (`0`) so the loop learns its address, then receives COUNT datagrams of SIZE
//!   bytes numbered as in blast (checked: every number once), acknowledging every
//!   `--ack-every` (default 16) datagrams and the last with the count received so far.
//!
//! Output: one JSON line on stdout, e.g. `{"mode":"pingpong","flows":8,"size":1,`
//! `"requests":80000,"bytes":80000,"seconds":1.2,"latency_mean_us":95.1,`
//! `"latency_p99_us":180.3,"error":null}` (`requests` counts answered requests or datagrams
//! moved; latency fields are null outside pingpong). Exit status: 0 when everything arrived
//! intact, 1 on any error (the first one is in `"error"`), 2 on bad arguments.

use std::fmt::Write as _;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: udp-peer pingpong ADDRESS FLOWS SIZE REQUESTS [--timeout S]\n       \
                     udp-peer blast ADDRESS SIZE COUNT [--window N] [--timeout S]\n       \
                     udp-peer sink ADDRESS SIZE COUNT [--ack-every N] [--timeout S]";

#[derive(Clone)]
struct Args {
    mode: String,
    target: SocketAddr,
    flows: usize,
    size: usize,
    count: u64,
    window: u64,
    ack_every: u64,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut window = 64u64;
    let mut ack_every = 16u64;
    let mut timeout = Duration::from_secs(30);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<String, String> {
            it.next().ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--window" => window = num(&value("--window")?)?,
            "--ack-every" => ack_every = num(&value("--ack-every")?)?,
            "--timeout" => {
                let s: f64 = value("--timeout")?
                    .parse()
                    .map_err(|e| format!("--timeout: {e}"))?;
                timeout = Duration::from_secs_f64(s);
            }
            _ => positional.push(arg),
        }
    }
    let mode = positional.first().cloned().ok_or("no mode")?;
    let want = if mode == "pingpong" { 5 } else { 4 };
    if positional.len() != want || !["pingpong", "blast", "sink"].contains(&mode.as_str()) {
        return Err("wrong arguments".into());
    }
    let target = positional[1]
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", positional[1]))?
        .next()
        .ok_or("address resolves to nothing")?;
    let (flows, rest) = if mode == "pingpong" {
        (num(&positional[2])? as usize, &positional[3..])
    } else {
        (1, &positional[2..])
    };
    let size = num(&rest[0])? as usize;
    let count = num(&rest[1])?;
    if flows == 0 || window == 0 || ack_every == 0 || (mode != "pingpong" && size < 8) {
        return Err(
            "FLOWS, --window and --ack-every must be >= 1, SIZE >= 8 for blast/sink".into(),
        );
    }
    Ok(Args {
        mode,
        target,
        flows,
        size,
        count,
        window,
        ack_every,
        timeout,
    })
}

fn num(s: &str) -> Result<u64, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

fn socket_for(target: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if target.is_ipv4() {
        "127.0.0.1:0".parse().expect("literal")
    } else {
        "[::1]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(target)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Gives up when nothing has happened for the timeout.
struct Watchdog {
    timeout: Duration,
    last_progress: Instant,
    idle_spins: u32,
}

impl Watchdog {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            last_progress: Instant::now(),
            idle_spins: 0,
        }
    }

    fn progress(&mut self) {
        self.idle_spins = 0;
        self.last_progress = Instant::now();
    }

    /// One idle turn of a spin loop; `Err` once the timeout has passed without progress.
    fn idle(&mut self, what: impl FnOnce() -> String) -> Result<(), String> {
        self.idle_spins += 1;
        if self.idle_spins % 4096 == 0 && self.last_progress.elapsed() > self.timeout {
            return Err(what());
        }
        std::hint::spin_loop();
        Ok(())
    }
}

/// One non-blocking `recv`: `Ok(None)` if nothing is there.
fn try_recv(sock: &UdpSocket, buf: &mut [u8]) -> Result<Option<usize>, String> {
    loop {
        match sock.recv(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
}

/// One `send`, retried while the socket's send buffer is full.
fn send_all(sock: &UdpSocket, data: &[u8], dog: &mut Watchdog) -> Result<(), String> {
    loop {
        match sock.send(data) {
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                dog.idle(|| "send blocked for the whole timeout".into())?
            }
            Err(e) => return Err(format!("send: {e}")),
        }
    }
}

/// The datagram of request `seq` of flow `flow`, written over `buf`, which holds the flow's
/// previous request (or is empty): only the parts that change are written.
fn request(flow: usize, seq: u64, size: usize, buf: &mut Vec<u8>) {
    if size < 12 {
        let b = (flow as u64 * 131 + seq) as u8;
        buf.clear();
        buf.resize(size, b);
        return;
    }
    if buf.len() != size {
        buf.clear();
        buf.extend_from_slice(&(flow as u32).to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend((12..size).map(|i| ((i + flow) % 251) as u8));
    }
    buf[4..12].copy_from_slice(&seq.to_le_bytes());
}

struct Report {
    requests: u64,
    bytes: u64,
    seconds: f64,
    latency: Option<(f64, f64)>,
    error: Option<String>,
}

impl Report {
    fn new() -> Self {
        Report {
            requests: 0,
            bytes: 0,
            seconds: 0.0,
            latency: None,
            error: None,
        }
    }
}

struct Flow {
    sock: UdpSocket,
    seq: u64,
    sent_at: Instant,
    request: Vec<u8>,
}

fn pingpong(args: &Args) -> Report {
    let mut report = Report::new();
    let t0 = Instant::now();
    let mut latencies: Vec<f64> = Vec::with_capacity((args.count as usize) * args.flows);
    let mut run = || -> Result<(), String> {
        let mut dog = Watchdog::new(args.timeout);
        let mut flows = Vec::with_capacity(args.flows);
        for f in 0..args.flows {
            let sock = socket_for(args.target).map_err(|e| format!("flow {f}: socket: {e}"))?;
            flows.push(Flow {
                sock,
                seq: 0,
                sent_at: Instant::now(),
                request: Vec::with_capacity(args.size),
            });
        }
        let mut active = 0;
        for (f, flow) in flows.iter_mut().enumerate() {
            if args.count > 0 {
                request(f, 0, args.size, &mut flow.request);
                flow.sent_at = Instant::now();
                send_all(&flow.sock, &flow.request, &mut dog)?;
                active += 1;
            }
        }
        let mut inb = vec![0u8; 65536];
        while active > 0 {
            let mut moved = false;
            for (f, flow) in flows.iter_mut().enumerate() {
                if flow.seq >= args.count {
                    continue;
                }
                let Some(n) = try_recv(&flow.sock, &mut inb)
                    .map_err(|e| format!("flow {f} request {}: {e}", flow.seq))?
                else {
                    continue;
                };
                if inb[..n] != flow.request[..] {
                    return Err(format!(
                        "flow {f} request {}: wrong answer ({n} bytes, expected {})",
                        flow.seq,
                        flow.request.len()
                    ));
                }
                latencies.push(flow.sent_at.elapsed().as_secs_f64() * 1e6);
                report.requests += 1;
                flow.seq += 1;
                moved = true;
                if flow.seq < args.count {
                    request(f, flow.seq, args.size, &mut flow.request);
                    flow.sent_at = Instant::now();
                    send_all(&flow.sock, &flow.request, &mut dog)?;
                } else {
                    active -= 1;
                }
            }
            if moved {
                dog.progress();
            } else {
                dog.idle(|| "no answer within the timeout".into())?;
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        report.error = Some(e);
    }
    report.seconds = t0.elapsed().as_secs_f64();
    report.bytes = report.requests * args.size as u64;
    if !latencies.is_empty() {
        latencies.sort_by(f64::total_cmp);
        let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
        let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
        report.latency = Some((mean, p99));
    }
    report
}

fn ack_value(buf: &[u8], n: usize) -> Result<u64, String> {
    if n != 8 {
        return Err(format!("acknowledgement of {n} bytes, expected 8"));
    }
    Ok(u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")))
}

fn blast(args: &Args) -> Report {
    let mut report = Report::new();
    let t0 = Instant::now();
    let mut run = || -> Result<(), String> {
        let mut dog = Watchdog::new(args.timeout);
        let sock = socket_for(args.target).map_err(|e| format!("socket: {e}"))?;
        let mut out: Vec<u8> = (0..args.size).map(|i| (i % 251) as u8).collect();
        let mut ack = [0u8; 64];
        let (mut sent, mut acked) = (0u64, 0u64);
        while acked < args.count {
            let mut moved = false;
            while let Some(n) = try_recv(&sock, &mut ack)? {
                let n = ack_value(&ack, n)?;
                if n > sent {
                    return Err(format!("acknowledged {n} datagrams, sent {sent}"));
                }
                acked = acked.max(n);
                moved = true;
            }
            report.requests = acked;
            if sent < args.count && sent - acked < args.window {
                out[..8].copy_from_slice(&sent.to_le_bytes());
                send_all(&sock, &out, &mut dog)?;
                sent += 1;
                moved = true;
            }
            if moved {
                dog.progress();
            } else {
                dog.idle(|| format!("acknowledged {acked} of {sent} sent, then nothing"))?;
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        report.error = Some(e);
    }
    report.bytes = report.requests * args.size as u64;
    report.seconds = t0.elapsed().as_secs_f64();
    report
}

fn sink(args: &Args) -> Report {
    let mut report = Report::new();
    let t0 = Instant::now();
    let mut run = || -> Result<(), String> {
        let mut dog = Watchdog::new(args.timeout);
        let sock = socket_for(args.target).map_err(|e| format!("socket: {e}"))?;
        send_all(&sock, &0u64.to_le_bytes(), &mut dog)?;
        let mut seen = vec![false; args.count as usize];
        let expected: Vec<u8> = (0..args.size).map(|i| (i % 251) as u8).collect();
        let mut inb = vec![0u8; 65536];
        while report.requests < args.count {
            let Some(n) = try_recv(&sock, &mut inb)? else {
                let got = report.requests;
                dog.idle(|| format!("{got} of {} datagrams arrived", args.count))?;
                continue;
            };
            dog.progress();
            if n != args.size {
                return Err(format!("datagram of {n} bytes, expected {}", args.size));
            }
            let seq = u64::from_le_bytes(inb[..8].try_into().expect("8 bytes"));
            match seen.get_mut(seq as usize) {
                Some(s) if !*s => *s = true,
                Some(_) => return Err(format!("datagram {seq} arrived twice")),
                None => return Err(format!("datagram {seq} out of range")),
            }
            if inb[8..n] != expected[8..] {
                return Err(format!("datagram {seq}: corrupted payload"));
            }
            report.requests += 1;
            let received = report.requests;
            if received % args.ack_every == 0 || received == args.count {
                send_all(&sock, &received.to_le_bytes(), &mut dog)?;
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        report.error = Some(e);
    }
    report.bytes = report.requests * args.size as u64;
    report.seconds = t0.elapsed().as_secs_f64();
    report
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("udp-peer: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let report = match args.mode.as_str() {
        "pingpong" => pingpong(&args),
        "blast" => blast(&args),
        _ => sink(&args),
    };
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |x| format!("{x:.3}"));
    println!(
        "{{\"mode\":{},\"flows\":{},\"size\":{},\"requests\":{},\"bytes\":{},\"seconds\":{:.6},\
         \"latency_mean_us\":{},\"latency_p99_us\":{},\"error\":{}}}",
        json_str(&args.mode),
        args.flows,
        args.size,
        report.requests,
        report.bytes,
        report.seconds,
        opt(report.latency.map(|l| l.0)),
        opt(report.latency.map(|l| l.1)),
        report.error.as_deref().map_or("null".to_string(), json_str),
    );
    if report.error.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
