//! The lab's client (`dpr-lab loadgen`): an open-loop, bounded load. Arrivals
//! are Poisson at `--rate` for `--duration` seconds (seeded, so two runs
//! send the same trace); each picks host 0 with probability `--skew` and
//! another host uniformly otherwise (cached RR-DNS answers), opens a TCP
//! connection to its service address, sends one request and reads the
//! answer. At most `--max-inflight` connections at once (more are counted
//! as errors, never queued without bound). Progress goes to stderr; the
//! per-target results to stdout as one JSON object.
//!
//! `--dispatch jsq` sends each arrival instead to the target with the fewest
//! of this client's connections in flight: a central join-shortest-queue
//! dispatcher with perfect knowledge, the ideal `dpr-lab lab` compares DPR
//! with. It makes the same random draws, so the arrival times are the same.

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
    /// What the first failures were (at most [`FAILURES_KEPT`]): the
    /// client's port when it had one, the time into the connection, and
    /// the error, so a failure can be matched to a host's tables.
    #[serde(default)]
    pub failures: Vec<String>,
}

/// How many failures a target keeps the text of.
pub const FAILURES_KEPT: usize = 32;

impl TargetResult {
    /// The p-quantile of the latencies (0 when none).
    pub fn quantile(&self, p: f64) -> f64 {
        quantile(&self.latencies_ms, p)
    }
}

/// The p-quantile (nearest rank) of sorted values (0 when none).
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = (((sorted.len() - 1) as f64) * p.clamp(0.0, 1.0)).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// The whole run.
pub type LoadResult = BTreeMap<String, TargetResult>;

/// The latencies of every completed connection of a run, sorted.
pub fn all_latencies(r: &LoadResult) -> Vec<f64> {
    let mut l: Vec<f64> = r
        .values()
        .flat_map(|t| t.latencies_ms.iter().copied())
        .collect();
    l.sort_by(f64::total_cmp);
    l
}

/// How each arrival picks its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dispatch {
    /// The first target with probability `skew`, another uniformly
    /// otherwise (clients with cached RR-DNS answers).
    #[default]
    Skewed,
    /// The target with the fewest connections in flight from this client
    /// (ties: the first): join-shortest-queue.
    Jsq,
}

impl std::str::FromStr for Dispatch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skewed" => Ok(Self::Skewed),
            "jsq" => Ok(Self::Jsq),
            other => Err(format!("--dispatch {other:?}: skewed or jsq")),
        }
    }
}

impl Dispatch {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Skewed => "skewed",
            Self::Jsq => "jsq",
        }
    }
}

/// The index of the smallest count (the first of equals); 0 when empty.
pub fn shortest_queue(inflight: &[usize]) -> usize {
    inflight
        .iter()
        .enumerate()
        .min_by_key(|&(i, n)| (*n, i))
        .map_or(0, |(i, _)| i)
}

fn one(addr: SocketAddr, size: usize) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
    exchange(&mut s, size).map_err(|e| format!("port {port}: {e}"))
}

fn exchange(s: &mut TcpStream, size: usize) -> Result<String, String> {
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
    dispatch: Dispatch,
    label: &str,
) -> LoadResult {
    let results: Arc<Mutex<LoadResult>> = Arc::new(Mutex::new(BTreeMap::new()));
    let inflight = Arc::new(AtomicUsize::new(0));
    let per_target: Arc<Vec<AtomicUsize>> =
        Arc::new(targets.iter().map(|_| AtomicUsize::new(0)).collect());
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
        // Drawn in both modes, so both make the same draws.
        let skewed = if n <= 1 || unit() < skew {
            0
        } else {
            1 + (unit() * (n - 1) as f64) as usize % (n - 1)
        };
        let h = match dispatch {
            Dispatch::Skewed => skewed,
            Dispatch::Jsq => {
                let counts: Vec<usize> = per_target
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .collect();
                shortest_queue(&counts)
            }
        };
        let Some(&target) = targets.get(h) else {
            continue;
        };
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
        per_target[h].fetch_add(1, Ordering::Relaxed);
        let (results_c, inflight_c, per_target_c) =
            (results.clone(), inflight.clone(), per_target.clone());
        let began = Instant::now();
        let spawned = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let r = one(SocketAddr::new(target, port), size);
                let ms = began.elapsed().as_secs_f64() * 1000.0;
                let mut g = results_c.lock().unwrap_or_else(PoisonError::into_inner);
                let e = g.entry(key).or_default();
                match r {
                    Ok(by) => {
                        e.ok += 1;
                        e.latencies_ms.push(ms);
                        *e.served_by.entry(by).or_default() += 1;
                    }
                    Err(why) => {
                        e.errors += 1;
                        if e.failures.len() < FAILURES_KEPT {
                            e.failures.push(format!("{why} (after {ms:.0} ms)"));
                        }
                    }
                }
                drop(g);
                per_target_c[h].fetch_sub(1, Ordering::Relaxed);
                inflight_c.fetch_sub(1, Ordering::Relaxed);
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(_) => {
                per_target[h].fetch_sub(1, Ordering::Relaxed);
                inflight.fetch_sub(1, Ordering::Relaxed);
                results
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(target.to_string())
                    .or_default()
                    .errors += 1;
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

/// The options of `dpr-lab loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// The targets' addresses, comma-separated; the first gets the --skew share.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub targets: Vec<IpAddr>,
    /// The targets' TCP port.
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// Connections per second, in (0, 5000].
    #[arg(long, default_value_t = 150.0)]
    pub rate: f64,
    /// Seconds of arrivals, in (0, 600].
    #[arg(long, default_value_t = 8.0)]
    pub duration: f64,
    /// Share of the arrivals on the first target (skewed dispatch), 0..=1.
    #[arg(long, default_value_t = 0.7)]
    pub skew: f64,
    /// Random seed: the same seed, the same arrival times.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Response size asked for, bytes.
    #[arg(long, default_value_t = 2000)]
    pub size: usize,
    /// Connections in flight at most (more arrivals are counted as errors).
    #[arg(long, default_value_t = 1000)]
    pub max_inflight: usize,
    /// How arrivals pick their target: skewed or jsq.
    #[arg(long, default_value = "skewed")]
    pub dispatch: Dispatch,
    /// The prefix of the progress lines on stderr.
    #[arg(long, default_value = "load")]
    pub label: String,
}

/// `dpr-lab loadgen`: runs the load and prints the results as JSON.
pub fn main(a: LoadgenArgs) -> Result<(), String> {
    if a.targets.is_empty() {
        return Err("--targets needs at least one address".into());
    }
    if !(a.rate > 0.0 && a.rate <= 5000.0) {
        return Err(format!("--rate {}: must be in (0, 5000]", a.rate));
    }
    if !(a.duration > 0.0 && a.duration <= 600.0) {
        return Err(format!("--duration {}: must be in (0, 600]", a.duration));
    }
    if !(0.0..=1.0).contains(&a.skew) {
        return Err(format!("--skew {}: must be in 0..=1", a.skew));
    }
    let r = run(
        &a.targets,
        a.port,
        a.rate,
        Duration::from_secs_f64(a.duration),
        a.skew,
        a.seed,
        a.size,
        a.max_inflight,
        a.dispatch,
        &a.label,
    );
    println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_queue_takes_the_first_of_the_least_busy() {
        assert_eq!(shortest_queue(&[3, 1, 2, 1]), 1);
        assert_eq!(shortest_queue(&[0, 0, 0]), 0);
        assert_eq!(shortest_queue(&[5, 4, 4, 0]), 3);
        assert_eq!(shortest_queue(&[]), 0);
    }

    #[test]
    fn dispatch_parses_its_two_names() {
        for d in [Dispatch::Skewed, Dispatch::Jsq] {
            assert_eq!(d.name().parse::<Dispatch>(), Ok(d));
        }
        assert!("round-robin".parse::<Dispatch>().is_err());
    }

    #[test]
    fn all_latencies_merges_and_sorts() {
        let mut r = LoadResult::new();
        r.entry("a".into()).or_default().latencies_ms = vec![1.0, 5.0];
        r.entry("b".into()).or_default().latencies_ms = vec![2.0, 3.0];
        assert_eq!(all_latencies(&r), vec![1.0, 2.0, 3.0, 5.0]);
    }
}
