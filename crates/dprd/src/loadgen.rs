//! The lab's client (`dprd loadgen`): an open-loop, bounded load. Arrivals
//! are Poisson at `--rate` for `--duration` seconds (seeded, so two runs
//! send the same trace); each picks host 0 with probability `--skew` and
//! another host uniformly otherwise (cached RR-DNS answers), opens a TCP
//! connection to its service address, sends one request and reads the
//! answer. At most `--max-inflight` connections at once (more are counted
//! as errors, never queued without bound). Progress goes to stderr; the
//! per-target results to stdout as one JSON object.

use crate::httpd::parse_opt as opt;
use dpr_policy::{RandomSource, SplitMix64};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Results for one target address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    /// Connections sent to it.
    pub sent: usize,
    /// Completed with a full answer.
    pub ok: usize,
    /// Failed (connect, reset, timeout, short answer, client limit).
    pub errors: usize,
    /// Latencies of the completed ones, milliseconds, sorted.
    pub latencies_ms: Vec<f64>,
    /// Answers per serving host name.
    pub served_by: BTreeMap<String, usize>,
}

impl TargetResult {
    /// The p-quantile of the latencies (0 when none).
    pub fn quantile(&self, p: f64) -> f64 {
        let l = &self.latencies_ms;
        if l.is_empty() {
            return 0.0;
        }
        l[(((l.len() - 1) as f64) * p).round() as usize]
    }
}

/// The whole run.
pub type LoadResult = BTreeMap<String, TargetResult>;

fn one(addr: SocketAddr, size: usize) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /?size={size} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&body);
    let (head, rest) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .ok_or("no content-length")?;
    if rest.len() != len {
        return Err(format!("short body: {} of {len}", rest.len()));
    }
    rest.strip_prefix("served-by ")
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| "no served-by".to_string())
}

/// Runs the load; `label` prefixes progress lines.
#[allow(clippy::too_many_arguments)]
pub fn run(
    targets: &[IpAddr],
    port: u16,
    rate: f64,
    duration: Duration,
    skew: f64,
    seed: u64,
    size: usize,
    max_inflight: usize,
    label: &str,
) -> LoadResult {
    let results: Arc<Mutex<LoadResult>> = Arc::new(Mutex::new(BTreeMap::new()));
    let inflight = Arc::new(AtomicUsize::new(0));
    let mut rng = SplitMix64::new(seed);
    let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let start = Instant::now();
    let mut t = 0.0f64;
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let mut handles = Vec::with_capacity(total);
    let mut last_progress = Instant::now();
    for i in 0..total {
        t += -(1.0 - unit()).ln() / rate;
        let due = start + Duration::from_secs_f64(t);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let n = targets.len();
        let h = if n <= 1 || unit() < skew {
            0
        } else {
            1 + (unit() * (n - 1) as f64) as usize % (n - 1)
        };
        let target = targets[h];
        let key = target.to_string();
        results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .sent += 1;
        if inflight.load(Ordering::Relaxed) >= max_inflight {
            results
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_default()
                .errors += 1;
            continue;
        }
        inflight.fetch_add(1, Ordering::Relaxed);
        let (results, inflight_c) = (results.clone(), inflight.clone());
        let began = Instant::now();
        let spawned = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let r = one(SocketAddr::new(target, port), size);
                let ms = began.elapsed().as_secs_f64() * 1000.0;
                let mut g = results.lock().unwrap_or_else(PoisonError::into_inner);
                let e = g.entry(key).or_default();
                match r {
                    Ok(by) => {
                        e.ok += 1;
                        e.latencies_ms.push(ms);
                        *e.served_by.entry(by).or_default() += 1;
                    }
                    Err(_) => e.errors += 1,
                }
                inflight_c.fetch_sub(1, Ordering::Relaxed);
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(_) => {
                inflight.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(1) || i + 1 == total {
            last_progress = Instant::now();
            eprintln!(
                "  {label}: {:>3}% of {total} connections sent, {} in flight",
                (i + 1) * 100 / total.max(1),
                inflight.load(Ordering::Relaxed)
            );
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let mut out = std::mem::take(&mut *results.lock().unwrap_or_else(PoisonError::into_inner));
    for r in out.values_mut() {
        r.latencies_ms.sort_by(f64::total_cmp);
    }
    out
}

/// What `dprd loadgen --help` prints.
pub const USAGE: &str = "\
USAGE: dprd loadgen --targets A,B,.. [--port 80] [--rate 150] [--duration 8] [--skew 0.7]
                    [--seed 1] [--size 2000] [--max-inflight 1000] [--label X]

The lab's client: open-loop Poisson arrivals at --rate per second for --duration s,
one HTTP request per connection, to the first target with probability --skew and
another uniformly otherwise (cached RR-DNS answers); prints per-target results as
JSON on stdout.
";

/// `dprd loadgen --targets A,B,.. [--port 80] [--rate 150] [--duration 8]
/// [--skew 0.7] [--seed 1] [--size 2000] [--max-inflight 1000] [--label X]`.
pub fn main(args: &[String]) -> Result<(), String> {
    let targets: String = opt(args, "--targets", String::new())?;
    let targets: Vec<IpAddr> = targets
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad target {s}")))
        .collect::<Result<_, _>>()?;
    if targets.is_empty() {
        return Err("--targets needs at least one address".into());
    }
    let rate: f64 = opt(args, "--rate", 150.0)?;
    let secs: f64 = opt(args, "--duration", 8.0)?;
    if !(rate > 0.0 && rate <= 5000.0 && secs > 0.0 && secs <= 600.0) {
        return Err("--rate must be in (0, 5000] and --duration in (0, 600]".into());
    }
    let r = run(
        &targets,
        opt(args, "--port", 80u16)?,
        rate,
        Duration::from_secs_f64(secs),
        opt(args, "--skew", 0.7)?,
        opt(args, "--seed", 1u64)?,
        opt(args, "--size", 2000usize)?,
        opt(args, "--max-inflight", 1000usize)?,
        &opt(args, "--label", "load".to_string())?,
    );
    println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    Ok(())
}
