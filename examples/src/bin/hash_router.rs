//! `hash-router`: the seed's *stateless* DPR, built directly on the library
//! crates — no load reports, no control plane. Every host knows the same
//! static peer list; the hash of the client's address and port picks the
//! serving host (the same answer on every host), so no host needs to know
//! any other's load. Peers are assumed alive (static membership: a failed
//! host must be removed from every config).
//!
//! The I/O stack is `dpr-io`'s, through [`dpr_examples::run`]: the TUN
//! device, host set-up with `HostGuard` (undone on exit), an engine per
//! queue (`EngineSet`) and one `run_worker` per queue.
//!
//! ```text
//! cargo build --release -p dpr-examples --bin hash-router
//! sudo ./target/release/hash-router examples/config/lab-h0.toml    # Ctrl-C to stop and undo
//! ```
//! (A normal `dprd` config file; only `[host]`, `[backend]`, `[tunnel]`, the
//! hash fields of `[policy]` and the peers of `[cluster]` are read.)

use dpr_examples::{StaticConfig, run};
use dpr_policy::{Policy, StatelessHash, StatelessHashConfig};
use std::process::ExitCode;

const HELP: &str =
    "Runs a DPR router on this host (root) until Ctrl-C or SIGTERM, then undoes its set-up.";

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("usage: hash-router CONFIG.toml\n\n{}", HELP);
        return ExitCode::SUCCESS;
    }
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: hash-router CONFIG.toml");
        return ExitCode::from(2);
    };
    let result = StaticConfig::load(&path).and_then(|cfg| {
        // Every host must use the same seed and buckets to agree on the owner.
        let hash = StatelessHashConfig {
            seed: cfg.policy.hash_seed,
            buckets: cfg.policy.hash_buckets,
        };
        StatelessHash::new(hash).map_err(|e| format!("policy: {e}"))?;
        let mut make = move || -> Box<dyn Policy + Send> {
            match StatelessHash::new(hash) {
                Ok(p) => Box::new(p),
                Err(_) => Box::new(dpr_policy::LeastLoad),
            }
        };
        run(&cfg, &mut make, false)
    });
    match result {
        Ok((c, io)) => {
            eprintln!(
                "hash-router: {} delivered, {} forwarded, {} dropped ({} packets handed between queues); host setup undone",
                c.delivered, c.forwarded, c.dropped, io.handed_over
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hash-router: {e}");
            ExitCode::FAILURE
        }
    }
}
