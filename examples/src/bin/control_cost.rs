//! What the cluster protocol costs as the cluster grows, measured on the
//! in-memory cluster (real nodes, real signed messages, simulated network):
//! messages and bytes each host sends per second, and how old the load
//! figures a host holds for its peers are, for full mesh and bounded
//! fan-out, at 4 to 200 hosts (the harness's limit), then extrapolated to
//! 1,000 hosts from the message sizes.
//!
//! Run: `cargo run --release -p dpr-examples --bin control-cost`
//! (about a minute; `--quick` for 4 and 16 hosts only).

use dpr_packet::control::{ENTRY_LEN, HEADER_LEN, REPORT_PREFIX_LEN, TAG_LEN};
use dpr_policy::{LeastLoad, Policy};
use dpr_router::cluster::ReportMode;
use dpr_router::harness::{Cluster, ClusterConfig};
use dpr_table::PeerId;
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(250);
/// UDP and IPv4 headers around each message.
const UDP_IP: usize = 28;

fn least_load(_: usize) -> Box<dyn Policy + Send> {
    Box::new(LeastLoad)
}

struct Row {
    msgs_per_s: f64,
    bytes_per_s: f64,
    mean_age: Duration,
    max_age: Duration,
}

fn measure(n: usize, mode: ReportMode, intervals: u32) -> Result<Row, Box<dyn std::error::Error>> {
    let cfg = ClusterConfig {
        hosts: n,
        report_interval: INTERVAL,
        report_mode: mode,
        suspect_after_missed: 40,
        dead_after_missed: 80,
        ..ClusterConfig::default()
    };
    let mut c = Cluster::new(cfg, least_load)?;
    // Warm up, then measure over `intervals`.
    c.run_for(INTERVAL * 20);
    let sent = |c: &Cluster| -> (u64, u64) {
        c.hosts.iter().fold((0, 0), |(m, b), h| {
            let k = h.node.counters();
            (m + k.sent_messages, b + k.sent_bytes)
        })
    };
    let (m0, b0) = sent(&c);
    let mut ages: Vec<u64> = Vec::new();
    for _ in 0..intervals {
        c.run_for(INTERVAL);
        let now = c.now();
        for h in &c.hosts {
            for j in 0..n {
                if let Some(p) = h.engine.loads().peer(PeerId(j as u16)) {
                    ages.push(now.0.saturating_sub(p.received_at.0));
                }
            }
        }
    }
    let (m1, b1) = sent(&c);
    let secs = INTERVAL.as_secs_f64() * f64::from(intervals);
    let msgs = (m1 - m0) as f64 / n as f64 / secs;
    Ok(Row {
        msgs_per_s: msgs,
        bytes_per_s: ((b1 - b0) as f64 / n as f64 / secs) + msgs * UDP_IP as f64,
        mean_age: Duration::from_nanos(ages.iter().sum::<u64>() / ages.len().max(1) as u64),
        max_age: Duration::from_nanos(ages.iter().copied().max().unwrap_or(0)),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick { &[4, 16] } else { &[4, 16, 64, 200] };
    let fan = ReportMode::FanOut { k: 3, relay: 26 };
    println!(
        "report interval {INTERVAL:?} (each shortened by 0-20% jitter); bytes include UDP/IPv4 headers"
    );
    println!(
        "{:>6}  {:<12} {:>11} {:>12} {:>13} {:>13}",
        "hosts", "mode", "msgs/host/s", "bytes/host/s", "mean fig. age", "max fig. age"
    );
    for &n in sizes {
        for (name, mode) in [("full-mesh", ReportMode::FullMesh), ("fan-out k=3", fan)] {
            let r = measure(n, mode, 20)?;
            println!(
                "{n:>6}  {name:<12} {:>11.1} {:>12.0} {:>13.0?} {:>13.0?}",
                r.msgs_per_s, r.bytes_per_s, r.mean_age, r.max_age
            );
        }
    }
    // At 1,000 hosts, from the message sizes: reports every 0.9 intervals.
    let per_s = 1.0 / (0.9 * INTERVAL.as_secs_f64());
    let own = HEADER_LEN + REPORT_PREFIX_LEN + ENTRY_LEN + 5 + TAG_LEN + UDP_IP;
    let relay = own + 26 * ENTRY_LEN;
    println!(
        "{:>6}  {:<12} {:>11.1} {:>12.0} {:>13} {:>13}   (computed)",
        1000,
        "full-mesh",
        999.0 * per_s,
        999.0 * per_s * own as f64,
        "-",
        "-"
    );
    println!(
        "{:>6}  {:<12} {:>11.1} {:>12.0} {:>13} {:>13}   (computed; figures refresh at best every {:.0} reports)",
        1000,
        "fan-out k=3",
        3.0 * per_s,
        3.0 * per_s * relay as f64,
        "-",
        "-",
        999.0 / (3.0 * 27.0)
    );
    Ok(())
}
