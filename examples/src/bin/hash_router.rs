//! `hash-router`: the seed's *stateless* DPR, built directly on the library
//! crates — no load reports, no control plane. Every host knows the same
//! static peer list; the hash of the client's address and port picks the
//! serving host (the same answer on every host), so no host needs to know
//! any other's load. Peers are assumed alive (static membership: a failed
//! host must be removed from every config), which this program states by
//! feeding the engine a synthetic "alive" report per peer each interval.
//!
//! It shows the whole I/O stack in one page: `dpr_io::tun::TunDevice`, host
//! setup with `dpr_io::host::HostGuard` (undone on exit), one worker per
//! queue with `dprd::datapath::run_worker`.
//!
//! ```text
//! cargo build --release -p dpr-examples --bin hash-router
//! sudo ./target/release/hash-router examples/config/lab-h0.toml    # Ctrl-C to stop and undo
//! ```
//! (A normal `dprd` config file; `[policy]`, `[cluster]` timers and `[admin]` are ignored.)
//!
//! Tested for real by `examples/tests/routers.rs` (two hosts in network
//! namespaces: connections to one host's address are served by both).

use dpr_io::host::HostGuard;
use dpr_io::tun::{TunConfig, TunDevice};
use dpr_policy::{SplitMix64, StatelessHash, StatelessHashConfig};
use dpr_router::Engine;
use dpr_table::{Capacity, LoadFigures, LoadReport, PeerId};
use dprd::config::Config;
use dprd::datapath::{Shared, run_worker};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn run(path: &str) -> Result<(), String> {
    let cfg = Config::load(path.as_ref()).map_err(|e| e.to_string())?;
    let mut tun = TunDevice::create(&TunConfig {
        name: cfg.backend.tun_name.clone(),
        mtu: cfg.tunnel.mtu,
        queues: cfg.backend.queues,
    })
    .map_err(|e| e.to_string())?;
    let _guard =
        HostGuard::setup(&dprd::daemon::host_plan(&cfg, &tun, true)).map_err(|e| e.to_string())?;
    // Every host must use the same seed and buckets to agree on the owner.
    let policy = StatelessHash::new(StatelessHashConfig {
        seed: cfg.policy.hash_seed,
        buckets: cfg.policy.hash_buckets,
    })
    .map_err(|e| e.to_string())?;
    let mut engine = Engine::new(
        cfg.engine_config(),
        cfg.local_id(),
        Capacity::default(),
        cfg.load_table_config(),
        Box::new(policy),
        Box::new(SplitMix64::new(1)),
    )
    .map_err(|e| e.to_string())?;
    add_peers(&mut engine, &cfg)?;
    let shared = Arc::new(Shared::new(engine));
    let mut workers = Vec::new();
    for q in tun.take_queues() {
        let s = shared.clone();
        workers.push(std::thread::spawn(move || run_worker(q, s, 32, 1500)));
    }
    let stop = shared.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut seq = 0u64;
        // Faster than the load table's report interval, so that no peer
        // ever looks late (a late peer's connections would be reset).
        let every = Duration::from_millis((cfg.cluster.report_interval_ms / 2).max(1));
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {
                    // Static membership: every configured peer is alive.
                    seq += 1;
                    let now = stop.now();
                    let mut e = stop.lock();
                    for p in &cfg.cluster.peers {
                        let r = LoadReport { seq, figures: LoadFigures::default(), capacity: Capacity::default(), draining: false };
                        let _ = e.apply_report(PeerId(p.id), &r, now);
                    }
                    e.tick(now, 1024);
                }
            }
        }
    });
    stop.stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let c = shared.lock().counters();
    eprintln!(
        "hash-router: {} delivered, {} forwarded, {} dropped; host setup undone",
        c.delivered, c.forwarded, c.dropped
    );
    Ok(())
}

fn add_peers(engine: &mut Engine, cfg: &Config) -> Result<(), String> {
    for p in &cfg.cluster.peers {
        engine
            .add_peer(
                PeerId(p.id),
                p.tunnel_addr,
                p.service_addrs.clone(),
                dpr_table::Timestamp::ZERO,
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: hash-router CONFIG.toml");
        return ExitCode::from(2);
    };
    match run(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hash-router: {e}");
            ExitCode::FAILURE
        }
    }
}
