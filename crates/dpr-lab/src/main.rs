//! `dpr-lab`: the lab, the benchmarks, and the programs they run in each
//! network namespace. `dpr-lab help` and `dpr-lab COMMAND --help` print
//! usage and do nothing else.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// dpr's lab: DPR clusters in network namespaces, measured (root).
///
/// `lab` and `bench` start the `dprd` found next to this program (the same
/// target directory: build both, e.g. `cargo build --release -p dprd -p dpr-lab`).
/// Everything they create is removed when they end, also on Ctrl-C, SIGTERM
/// or SIGHUP.
#[derive(Debug, Parser)]
#[command(name = "dpr-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A DPR cluster in network namespaces: DPR off, an ideal dispatcher, DPR on.
    ///
    /// --hosts hosts on a bridge, each running the lab web server (`dpr-lab httpd`)
    /// and, in the last phase, `dprd run` (the `dprd` next to this program); a client
    /// namespace runs an open-loop Poisson load (`dpr-lab loadgen`), --skew of it on h0.
    /// Three phases on the same arrivals: DPR off (RR-DNS: every host serves what it
    /// receives), ideal (a central join-shortest-queue dispatcher in the client, no
    /// dprd), DPR on. Prints a table per phase, DPR's and RR-DNS's p50 and p99 against
    /// the ideal's, and the ground truth of DPR's decisions: the load each one used
    /// against the web server's open connections at that instant (each server's
    /// --trace), and the share of connections a host redirected while under its
    /// threshold. Everything it creates is removed at the end, also on an error, on
    /// Ctrl-C, SIGTERM or SIGHUP.
    Lab(dpr_lab::lab::LabArgs),
    /// The data-path benchmarks of docs/benchmarks.md (root).
    ///
    /// In network namespaces it builds itself (a client and two hosts on a bridge):
    /// small-packet forwarding through DPR over AF_XDP and TUN against the kernel's
    /// own forwarding; HTTP (a connection per request, and keep-alive) through DPR
    /// against direct connections, the kernel's forwarding and HAProxy; a 20 MB
    /// transfer through a redirect; the engine in-process; the memory of 1 million
    /// tracked flows. Ends with issue 17's goals table (--json FILE writes it too).
    /// Needs wrk, haproxy, curl and ethtool (scripts/bench installs them and runs
    /// this). Every figure is the median of --runs runs with its range. Everything it
    /// creates is removed at the end, also on an error, on Ctrl-C, SIGTERM or SIGHUP.
    Bench(dpr_lab::bench::BenchArgs),
    /// The benchmark's small-packet generator (run by `bench` in a namespace).
    ///
    /// Sends --count 60-byte TCP frames (at most --secs seconds, at --rate packets per
    /// second if set) of --flows flows round-robin out of --ifname: with --method live
    /// (default) the kernel's live-frame BPF_PROG_TEST_RUN of an XDP_TX program, --per-call
    /// copies of one flow's frame per call (the next hop's veth end needs an XDP program);
    /// with --method xsk an AF_XDP socket (copy mode, transmit only) on queue 0. Prints
    /// `{"sent": N, "secs": S, "cpu_ns": C}` (C: its own CPU time).
    #[command(hide = true)]
    BenchGen(dpr_lab::bench::GenArgs),
    /// The lab's web server (run by `lab` in each host's namespace).
    ///
    /// Every request holds one of --workers slots for --service-ms, then gets
    /// --size bytes (GET /?size=N for another size) starting with `served-by NAME`.
    #[command(hide = true)]
    Httpd(dpr_lab::httpd::HttpdArgs),
    /// The lab's load generator (run by `lab` in the client's namespace).
    ///
    /// Open-loop Poisson arrivals at --rate per second for --duration seconds, one
    /// HTTP request per connection; prints the per-target results as JSON on stdout.
    /// `--dispatch skewed` (the default) sends an arrival to the first target with
    /// probability --skew and to another uniformly otherwise (cached RR-DNS answers);
    /// `--dispatch jsq` to the target with the fewest of this client's connections in
    /// flight (ties: the first), an ideal central dispatcher, with the same arrival
    /// times and random draws for the same --seed.
    #[command(hide = true)]
    Loadgen(dpr_lab::loadgen::LoadgenArgs),
    /// A bounded SYN flood (the flood tests; root).
    ///
    /// Sends exactly --count SYNs (paced to --rate per second, 0: unpaced) to
    /// --dst:--port from random addresses of --sources (within 198.18.0.0/15 only)
    /// and random ports, through a raw IPv4 socket in the current namespace; prints
    /// `{"sent": N, "retries": R, "secs": S}`.
    #[command(hide = true)]
    Flood(dpr_lab::flood::FloodArgs),
    /// A 20 MB download direct and through a redirect, per backend.
    #[command(hide = true)]
    Bulk(dpr_lab::bulk::BulkArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(a) => dpr_lab::stop::install().and_then(|()| dpr_lab::lab::main(&a)),
        Command::Bench(a) => dpr_lab::stop::install().and_then(|()| dpr_lab::bench::main(&a)),
        Command::BenchGen(a) => dpr_lab::bench::gen_main(&a),
        Command::Httpd(a) => dpr_lab::httpd::main(a),
        Command::Loadgen(a) => dpr_lab::loadgen::main(a),
        Command::Flood(a) => dpr_lab::flood::main(&a),
        Command::Bulk(a) => dpr_lab::stop::install().and_then(|()| dpr_lab::bulk::main(&a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dpr-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_is_an_answer_not_a_run() {
        for cmd in [
            "lab",
            "bench",
            "bench-gen",
            "httpd",
            "loadgen",
            "flood",
            "bulk",
        ] {
            let e = Cli::try_parse_from(["dpr-lab", cmd, "--help"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{cmd}");
        }
    }
}
