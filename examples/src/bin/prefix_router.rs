//! `prefix-router`: a complete DPR router whose policy is written here, in
//! a few lines: clients from the configured prefixes are always served
//! locally (say, a partner network with a contract on this host), every
//! other new connection goes to the least-loaded host when this one is
//! over its threshold. Everything else — TUN backend, host setup and
//! teardown, an engine per queue, this host's load counted from its open
//! sockets — is the library's, through [`dpr_examples::run`] (static
//! membership: the configured peers are alive, with no load of their own;
//! `dprd` adds the cluster protocol and runs such a policy with
//! `dprd::daemon::run_with_policy`).
//!
//! ```text
//! cargo build --release -p dpr-examples --bin prefix-router
//! sudo ./target/release/prefix-router examples/config/lab-h0.toml 198.18.0.0/25 [MORE/PREFIXES]
//! ```
//! (The config is a normal `dprd` file; of `[policy]` only the threshold is read.)

use dpr_examples::{StaticConfig, run};
use dpr_policy::{NewConnection, Policy, RandomSource, RedirectDecision, threshold};
use dpr_table::LoadTable;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;

/// Serve `local_prefixes` here; the rest by load above `threshold`.
#[derive(Clone)]
struct PartnersStayLocal {
    local_prefixes: Vec<(Ipv4Addr, u8)>,
    threshold: f64,
}

impl Policy for PartnersStayLocal {
    fn decide(
        &mut self,
        c: &NewConnection,
        loads: &LoadTable,
        _: &mut dyn RandomSource,
    ) -> RedirectDecision {
        let partner = match c.flow.src {
            IpAddr::V4(a) => self.local_prefixes.iter().any(|(net, len)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(*net) & mask
            }),
            IpAddr::V6(_) => false,
        };
        if partner || c.arrived_from_peer {
            return RedirectDecision::ServeLocally;
        }
        threshold::select(
            loads.local_load(),
            self.threshold,
            loads.least_loaded_peer(),
        )
    }
    fn name(&self) -> &'static str {
        "partners-stay-local"
    }
}

fn parse_prefix(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, l) = s.split_once('/').ok_or(format!("{s}: expected ADDR/LEN"))?;
    let a: Ipv4Addr = a.parse().map_err(|_| format!("{s}: bad address"))?;
    let l: u8 = l
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or(format!("{s}: bad length"))?;
    Ok((a, l))
}

const HELP: &str =
    "Runs a DPR router on this host (root) until Ctrl-C or SIGTERM, then undoes its set-up.";

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("usage: prefix-router CONFIG.toml PREFIX/LEN...\n\n{}", HELP);
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(config) = args.first() else {
        eprintln!("usage: prefix-router CONFIG.toml PREFIX/LEN...");
        return ExitCode::from(2);
    };
    let prefixes: Result<Vec<_>, _> = args[1..].iter().map(|s| parse_prefix(s)).collect();
    let local_prefixes = match prefixes {
        Ok(p) => p,
        Err(e) => {
            eprintln!("prefix-router: {e}");
            return ExitCode::from(2);
        }
    };
    let result = StaticConfig::load(config).and_then(|cfg| {
        let policy = PartnersStayLocal {
            local_prefixes,
            threshold: cfg.policy.threshold,
        };
        run(&cfg, &mut || Box::new(policy.clone()), true)
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prefix-router: {e}");
            ExitCode::FAILURE
        }
    }
}
