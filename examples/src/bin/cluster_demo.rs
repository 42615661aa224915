//! `cluster-demo`: a DPR cluster in memory, with and without DPR, same load.
//!
//! Builds N hosts (real engines, simulated TCP stacks whose response time
//! grows with their open connections) and drives one arrival trace of
//! client connections, skewed as cached RR-DNS answers are (most clients on
//! host 0), twice: once with every host serving what it receives (DPR off)
//! and once with the chosen redirect policy. Prints a table per host.
//!
//! ```text
//! cargo run --release -p dpr-examples --bin cluster-demo -- [--hosts 4] [--connections 3000]
//!     [--rate 1500] [--skew 0.7] [--policy threshold|least-load|hash|p2c] [--seed 1]
//! ```
//! Runs in well under a second; needs no root and sends nothing anywhere.

use dpr_policy::{
    LeastLoad, NewConnection, Policy, RandomSource, RedirectDecision, SplitMix64, StatelessHash,
    StatelessHashConfig, Threshold, ThresholdConfig, TwoChoices,
};
use dpr_router::harness::tcp::ClientState;
use dpr_router::harness::{Cluster, ClusterConfig};
use dpr_table::LoadTable;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

struct Options {
    hosts: usize,
    connections: usize,
    rate: f64,
    skew: f64,
    policy: String,
    seed: u64,
}

/// DPR off: every host serves what it receives.
struct Off;
impl Policy for Off {
    fn decide(
        &mut self,
        _: &NewConnection,
        _: &LoadTable,
        _: &mut dyn RandomSource,
    ) -> RedirectDecision {
        RedirectDecision::ServeLocally
    }
    fn name(&self) -> &'static str {
        "off"
    }
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        hosts: 4,
        connections: 3000,
        rate: 1500.0,
        skew: 0.7,
        policy: "threshold".into(),
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--hosts" => {
                o.hosts = value()?
                    .parse()
                    .map_err(|_| "--hosts: a number from 2 to 100")?
            }
            "--connections" => {
                o.connections = value()?.parse().map_err(|_| "--connections: a number")?
            }
            "--rate" => {
                o.rate = value()?
                    .parse()
                    .map_err(|_| "--rate: connections per second")?
            }
            "--skew" => {
                o.skew = value()?
                    .parse()
                    .map_err(|_| "--skew: a fraction from 0 to 1")?
            }
            "--policy" => o.policy = value()?,
            "--seed" => o.seed = value()?.parse().map_err(|_| "--seed: a number")?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if !(2..=100).contains(&o.hosts) {
        return Err("--hosts: a number from 2 to 100".into());
    }
    if !(0.0..=1.0).contains(&o.skew) {
        return Err("--skew: a fraction from 0 to 1".into());
    }
    if !(o.rate > 0.0 && o.rate.is_finite()) || o.connections == 0 || o.connections > 200_000 {
        return Err("--rate must be positive and --connections in 1 ..= 200000".into());
    }
    if !["threshold", "least-load", "hash", "p2c"].contains(&o.policy.as_str()) {
        return Err(format!(
            "--policy {}: one of threshold, least-load, hash, p2c",
            o.policy
        ));
    }
    Ok(o)
}

fn make_policy(name: &str) -> Box<dyn Policy + Send> {
    match name {
        "off" => Box::new(Off),
        "least-load" => Box::new(LeastLoad),
        "hash" => match StatelessHash::new(StatelessHashConfig::default()) {
            Ok(p) => Box::new(p),
            Err(_) => Box::new(Off),
        },
        "p2c" => Box::new(TwoChoices),
        _ => match Threshold::new(ThresholdConfig { threshold: 8.0 }) {
            Ok(p) => Box::new(p),
            Err(_) => Box::new(Off),
        },
    }
}

/// One run's result per host.
struct Row {
    received: usize,
    served: u32,
    redirected_out: u64,
    redirected_in: u64,
    peak_open: u32,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

fn run(o: &Options, policy: &'static str) -> Result<Vec<Row>, String> {
    let cfg = ClusterConfig {
        hosts: o.hosts,
        service_time: Duration::from_millis(2),
        response_len: 4000,
        seed: o.seed,
        ..ClusterConfig::default()
    };
    let name = if policy == "off" {
        "off".to_string()
    } else {
        o.policy.clone()
    };
    let mut c = Cluster::new(cfg, move |_| make_policy(&name)).map_err(|e| e.to_string())?;
    let mut rng = SplitMix64::new(o.seed);
    let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut sent = Vec::with_capacity(o.connections); // (client, port, host)
    let progress_every = (o.connections / 10).max(1);
    let tty = std::io::stderr().is_terminal();
    for i in 0..o.connections {
        // Poisson arrivals; host 0 with probability `skew`, else uniform.
        let gap = -(1.0 - unit()).ln() / o.rate;
        c.run_for(Duration::from_secs_f64(gap));
        let host = if unit() < o.skew {
            0
        } else {
            1 + (unit() * (o.hosts - 1) as f64) as usize % (o.hosts - 1)
        };
        let client = i % 250;
        let port = c.connect(client, host, false);
        sent.push((client, port, host));
        if tty && (i + 1) % progress_every == 0 {
            eprint!(
                "\r  DPR {policy:<3}: {:>3}% of {} connections",
                (i + 1) * 100 / o.connections,
                o.connections
            );
        }
    }
    c.run_for(Duration::from_secs(5)); // drain
    if tty {
        eprintln!();
    }
    let mut rows = Vec::new();
    for (h, host) in c.hosts.iter().enumerate() {
        let mut lat: Vec<f64> = Vec::new();
        let mut errors = 0;
        let mut received = 0;
        for &(client, port, _) in sent.iter().filter(|s| s.2 == h) {
            received += 1;
            match c.conn(client, port) {
                Some(conn) if conn.state == ClientState::Done => {
                    if let Some(f) = conn.finished_at {
                        lat.push(f.saturating_since(conn.opened_at).as_secs_f64() * 1000.0);
                    }
                }
                _ => errors += 1,
            }
        }
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let ctr = host.engine.counters();
        rows.push(Row {
            received,
            served: host.server.accepted,
            redirected_out: ctr.new_redirected,
            redirected_in: ctr.new_from_peer,
            peak_open: host.server.peak_open,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            errors,
        });
    }
    Ok(rows)
}

fn print(title: &str, rows: &[Row]) {
    println!("{title}");
    println!(
        "  host   received   served  redir-out  redir-in  peak-open   p50 ms   p99 ms  errors"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "  host{i:<2} {:>8} {:>8} {:>10} {:>9} {:>10} {:>8.1} {:>8.1} {:>7}",
            r.received,
            r.served,
            r.redirected_out,
            r.redirected_in,
            r.peak_open,
            r.p50_ms,
            r.p99_ms,
            r.errors
        );
    }
    let peaks: Vec<f64> = rows.iter().map(|r| f64::from(r.peak_open)).collect();
    let mean = peaks.iter().sum::<f64>() / peaks.len() as f64;
    let max = peaks.iter().copied().fold(0.0, f64::max);
    let worst_p99 = rows.iter().map(|r| r.p99_ms).fold(0.0, f64::max);
    println!(
        "  peak-load imbalance (max/mean) {:.2}; worst host p99 {worst_p99:.1} ms\n",
        if mean > 0.0 { max / mean } else { 0.0 }
    );
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("cluster-demo: {e}");
            }
            eprintln!(
                "usage: cluster-demo [--hosts N] [--connections N] [--rate R] [--skew F] [--policy threshold|least-load|hash|p2c] [--seed S]"
            );
            return ExitCode::from(2);
        }
    };
    println!(
        "In-memory DPR cluster: {} hosts, {} connections at {}/s, {:.0}% of clients on host0 (cached RR-DNS), policy {}\n",
        o.hosts,
        o.connections,
        o.rate,
        o.skew * 100.0,
        o.policy
    );
    let off = match run(&o, "off") {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cluster-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let on = match run(&o, "on") {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cluster-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    print("DPR off (each host serves what RR-DNS sent it):", &off);
    print(&format!("DPR on ({}):", o.policy), &on);
    ExitCode::SUCCESS
}
