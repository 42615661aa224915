//! The command line: `dpr-sim <scenario> [options]`.

use crate::plot::write_plots;
use crate::scenario::{run_scenario, scenario, scenario_names};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: dpr-sim <scenario> [--seed N] [--quick] [--jobs N] [--policies a,b,..]
               [--hosts N,..] [--plots DIR | --no-plots]
       dpr-sim --list

Runs a named scenario of the DPR cluster simulator and prints the comparison
table; writes SVG plots to DIR (default docs/img). --quick runs the small
version (seconds). --jobs runs that many simulations at once (default 1);
the output does not depend on it. --policies keeps only the policies with
these labels (e.g. rr-dns,threshold-4,ideal); --hosts only the cases of
these cluster sizes. The scenario vip-steps (issue 18) prints the long-lived
connections a host joining, draining, restarting and dying breaks under
RR-DNS, a VIP without shared state, and a VIP with ask-on-miss.";

/// Parsed options.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Small version.
    pub quick: bool,
    /// Parallel runs.
    pub jobs: usize,
    /// Where plots go (`None`: no plots).
    pub plots: Option<PathBuf>,
    /// Only these policy labels (empty: all).
    pub policies: Vec<String>,
    /// Only cases of these cluster sizes (empty: all).
    pub hosts: Vec<usize>,
}

/// Parses `args` (without the program name). `Ok(None)`: help or list was
/// printed.
pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut it = args.iter();
    let mut opts = Options {
        scenario: String::new(),
        seed: 1,
        quick: false,
        jobs: 1,
        plots: Some(PathBuf::from("docs/img")),
        policies: Vec::new(),
        hosts: Vec::new(),
    };
    let num = |v: Option<&String>, what: &str| -> Result<u64, String> {
        v.ok_or(format!("{what} needs a value"))?
            .parse()
            .map_err(|_| format!("{what}: not a number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--list" => {
                for n in scenario_names() {
                    if let Some(s) = scenario(n, false) {
                        println!("{n:<10} {}", s.title);
                    }
                }
                println!(
                    "{:<10} a host joins, drains, restarts, dies: connections broken by access mode",
                    "vip-steps"
                );
                return Ok(None);
            }
            "--seed" => opts.seed = num(it.next(), "--seed")?,
            "--jobs" => opts.jobs = num(it.next(), "--jobs")?.clamp(1, 64) as usize,
            "--quick" => opts.quick = true,
            "--policies" => {
                let v = it.next().ok_or("--policies needs a list")?;
                opts.policies = v.split(',').map(str::to_string).collect();
            }
            "--hosts" => {
                let v = it.next().ok_or("--hosts needs a list")?;
                opts.hosts = v
                    .split(',')
                    .map(|n| {
                        n.parse()
                            .map_err(|_| format!("--hosts: {n} is not a number"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--no-plots" => opts.plots = None,
            "--plots" => {
                opts.plots = Some(PathBuf::from(it.next().ok_or("--plots needs a directory")?))
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s if opts.scenario.is_empty() => opts.scenario = s.to_string(),
            s => return Err(format!("unexpected argument {s}\n{USAGE}")),
        }
    }
    if opts.scenario.is_empty() {
        return Err(USAGE.to_string());
    }
    Ok(Some(opts))
}

/// Runs the command line `args` (without the program name).
pub fn main(args: &[String]) -> ExitCode {
    match try_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dpr-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

/// As [`main`], returning the error instead of printing it.
pub fn try_main(args: &[String]) -> Result<(), String> {
    let Some(opts) = parse(args)? else {
        return Ok(());
    };
    if opts.scenario == "vip-steps" {
        // Issue 18's membership steps: connections broken, not a queueing run.
        for ecmp in [
            crate::vip_steps::Ecmp::Modulo,
            crate::vip_steps::Ecmp::Resilient(64),
        ] {
            let cfg = crate::vip_steps::StepsConfig {
                ecmp,
                seed: opts.seed,
                ..Default::default()
            };
            print!("{}", crate::vip_steps::table(&cfg));
        }
        return Ok(());
    }
    let mut sc = scenario(&opts.scenario, opts.quick).ok_or_else(|| {
        format!(
            "no scenario {:?}; known: {}",
            opts.scenario,
            scenario_names().join(", ")
        )
    })?;
    if !opts.hosts.is_empty() {
        sc.cases.retain(|c| opts.hosts.contains(&c.config.hosts));
        if sc.cases.is_empty() {
            return Err(format!(
                "no case with {:?} hosts in this scenario",
                opts.hosts
            ));
        }
    }
    if !opts.policies.is_empty() {
        for c in &mut sc.cases {
            c.policies.retain(|p| opts.policies.contains(&p.label()));
        }
        sc.cases.retain(|c| !c.policies.is_empty());
        if sc.cases.is_empty() {
            return Err(format!("no policy of {:?} in this scenario", opts.policies));
        }
    }
    println!(
        "# {}{} (seed {})\n# {}",
        sc.name,
        if opts.quick { " --quick" } else { "" },
        opts.seed,
        sc.title
    );
    let progress =
        |done: usize, total: usize, r: &crate::stats::RunReport, c: &crate::scenario::Case| {
            eprintln!(
                "[{done}/{total}] {} / {} {}: {} events",
                c.label, r.policy, r.mode, r.events
            );
        };
    let report = run_scenario(&sc, opts.seed, opts.jobs, &progress)?;
    print!("{}", report.table());
    if let Some(dir) = opts.plots {
        for f in write_plots(&report, &dir)? {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}
