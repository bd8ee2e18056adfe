//! `openloop`: a fixed-rate (open-loop) HTTP/1.1 load generator for latency at a given request
//! rate, corrected for coordinated omission.
//!
//! ```sh
//! cargo run --release --example openloop -- --rate 20000 --duration 10 --connections 50 \
//!     http://127.0.0.1:8080/
//! ```
//!
//! wrk measures a closed loop: a connection sends its next request only when the previous
//! response is in, so a slow response delays the requests behind it and they are never
//! counted as slow (coordinated omission). Here request `i` is *due* at `start + i / rate`,
//! whatever the target does; a pacer thread releases the due requests into one queue, any idle
//! keep-alive connection takes the next one, and its latency is measured **from the time it
//! was due** to the last byte of the response, so a stall of the target shows as the latency
//! of every request that should have been sent during it (as wrk2 and HdrHistogram's
//! corrected mode do). A request that could not be sent before the end (`--duration` plus
//! `--timeout`) is counted in `unsent`, and the run is then not valid at that rate.
//!
//! The response must carry a Content-Length (the bench upstream's does); any error closes the
//! connection, which is reopened. One thread does the I/O (tokio, current-thread runtime), one
//! paces; the pacer sleeps with `std::thread::sleep`, so due times are met within the kernel's
//! timer slack (≈ 50 µs), which is part of every figure and cancels out in "added over direct".
//!
//! Output: one JSON object on stdout: rate, duration, sent, completed, errors, unsent,
//! achieved rps, and latency percentiles in microseconds (p50, p90, p99, p99.9, max).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

struct Args {
    rate: u64,
    duration: Duration,
    connections: usize,
    timeout: Duration,
    host: String,
    port: u16,
    path: String,
}

const USAGE: &str = "usage: openloop --rate N [--duration S] [--connections N] [--timeout S] \
                     http://HOST:PORT/PATH";

fn parse_args() -> Result<Args, String> {
    let mut rate = None;
    let mut duration = 10.0;
    let mut connections = 50;
    let mut timeout = 5.0;
    let mut url = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--rate" => {
                rate = Some(
                    value("--rate")?
                        .parse()
                        .map_err(|e| format!("--rate: {e}"))?,
                )
            }
            "--duration" => {
                duration = value("--duration")?
                    .parse()
                    .map_err(|e| format!("--duration: {e}"))?
            }
            "--connections" => {
                connections = value("--connections")?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--timeout" => {
                timeout = value("--timeout")?
                    .parse()
                    .map_err(|e| format!("--timeout: {e}"))?
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ if a.starts_with("http://") => url = Some(a),
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    let rate: u64 = rate.ok_or(format!("--rate is required\n{USAGE}"))?;
    let url = url.ok_or(format!("a http:// URL is required\n{USAGE}"))?;
    if rate == 0 || connections == 0 || !(duration > 0.0 && duration <= 600.0) {
        return Err("--rate and --connections must be > 0, --duration in (0, 600]".into());
    }
    let rest = &url["http://".len()..];
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or("the URL needs an explicit port")?;
    Ok(Args {
        rate,
        duration: Duration::from_secs_f64(duration),
        connections,
        timeout: Duration::from_secs_f64(timeout),
        host: host.to_string(),
        port: port.parse().map_err(|e| format!("port: {e}"))?,
        path,
    })
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    non_2xx: AtomicU64,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(run(args));
    println!("{report}");
}

async fn run(args: Args) -> String {
    let args = Arc::new(args);
    let total = (args.rate as f64 * args.duration.as_secs_f64()).round() as u64;
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let counters = Arc::new(Counters::default());
    let done = Arc::new(AtomicBool::new(false));
    // Connect first, so connection setup is not charged to the first requests.
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(connect(&args).await.ok());
    }
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + args.duration + args.timeout;
    let interval = 1e9 / args.rate as f64;
    let done_p = done.clone();
    let pacer = std::thread::spawn(move || {
        let mut i = 0u64;
        while i < total && !done_p.load(Relaxed) {
            let due = start + Duration::from_nanos((i as f64 * interval) as u64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
                continue;
            }
            // Release every request due by now.
            while i < total {
                let due = start + Duration::from_nanos((i as f64 * interval) as u64);
                if due > now || tx.send(due).is_err() {
                    break;
                }
                i += 1;
            }
        }
    });
    let mut tasks = Vec::new();
    for c in conns {
        let (args, rx, counters) = (args.clone(), rx.clone(), counters.clone());
        tasks.push(tokio::spawn(worker(args, c, rx, counters, deadline)));
    }
    let mut lat: Vec<u32> = Vec::with_capacity(total as usize);
    for t in tasks {
        lat.extend(t.await.expect("worker"));
    }
    done.store(true, Relaxed);
    pacer.join().expect("pacer");
    let ended = Instant::now().min(deadline);
    // Due requests no connection took before the end (still queued, or never released).
    let unsent = total.saturating_sub(counters.sent.load(Relaxed));
    lat.sort_unstable();
    let pct = |q: f64| -> u32 {
        if lat.is_empty() {
            return 0;
        }
        let rank = ((q / 100.0) * lat.len() as f64).ceil() as usize;
        lat[rank.clamp(1, lat.len()) - 1]
    };
    let elapsed = ended.saturating_duration_since(start).as_secs_f64();
    let completed = counters.completed.load(Relaxed);
    format!(
        "{{\"rate\": {}, \"duration_s\": {}, \"connections\": {}, \"due\": {}, \"sent\": {}, \
         \"completed\": {}, \"errors\": {}, \"non_2xx\": {}, \"unsent\": {}, \
         \"achieved_rps\": {:.1}, \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \
         \"p999_us\": {}, \"max_us\": {}}}",
        args.rate,
        args.duration.as_secs_f64(),
        args.connections,
        total,
        counters.sent.load(Relaxed),
        completed,
        counters.errors.load(Relaxed),
        counters.non_2xx.load(Relaxed),
        unsent,
        completed as f64 / elapsed.max(1e-9),
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        lat.last().copied().unwrap_or(0),
    )
}

async fn connect(args: &Args) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect((args.host.as_str(), args.port)).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One keep-alive connection: take the next due request, send it, read the whole response,
/// record its latency from the due time.
async fn worker(
    args: Arc<Args>,
    mut conn: Option<TcpStream>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>,
    counters: Arc<Counters>,
    deadline: Instant,
) -> Vec<u32> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: openloop\r\n\r\n",
        args.path, args.host, args.port
    )
    .into_bytes();
    let mut lat = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::from_std(deadline);
    loop {
        let due = {
            let mut rx = rx.lock().await;
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(due)) => due,
                _ => return lat,
            }
        };
        counters.sent.fetch_add(1, Relaxed);
        let outcome = tokio::time::timeout_at(deadline, async {
            if conn.is_none() {
                conn = Some(connect(&args).await?);
            }
            let s = conn.as_mut().expect("connected");
            s.write_all(&request).await?;
            read_response(s, &mut buf).await
        })
        .await;
        match outcome {
            Ok(Ok((status, keep))) => {
                let us = due.elapsed().as_micros().min(u32::MAX as u128) as u32;
                lat.push(us);
                counters.completed.fetch_add(1, Relaxed);
                if !(200..300).contains(&status) {
                    counters.non_2xx.fetch_add(1, Relaxed);
                }
                if !keep {
                    conn = None;
                }
            }
            Ok(Err(_)) => {
                counters.errors.fetch_add(1, Relaxed);
                conn = None;
            }
            Err(_) => {
                counters.errors.fetch_add(1, Relaxed);
                return lat;
            }
        }
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Read one response with a Content-Length body; (status, whether the connection stays open).
async fn read_response(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<(u16, bool)> {
    let mut have = 0;
    let head_end = loop {
        let n = s.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err(invalid("connection closed"));
        }
        have += n;
        if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if have == buf.len() {
            return Err(invalid("response head too large"));
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| invalid("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let mut length = None;
    let mut keep = true;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep = false;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("chunked responses are not supported"));
        }
    }
    let length = length.ok_or_else(|| invalid("no content-length"))?;
    let mut body = have - head_end;
    while body < length {
        let n = s.read(&mut buf[..]).await?;
        if n == 0 {
            return Err(invalid("connection closed in the body"));
        }
        body += n;
    }
    if body > length {
        return Err(invalid(
            "more bytes than the response (pipelining is not used)",
        ));
    }
    Ok((status, keep))
}
