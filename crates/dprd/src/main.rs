//! `dprd`: the dpr daemon and its admin client. `dprd --help` lists the
//! commands; `dprd COMMAND --help` prints one command's usage and does
//! nothing else. `dprd completions SHELL` and `dprd man` write shell
//! completions and man pages from the same definitions.

use clap::{CommandFactory, Parser, Subcommand};
use dprd::Error;
use dprd::config::{Config, DEFAULT_SOCKET};
use dprd::error::Report;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// dprd — Distributed Packet Rewriting daemon.
#[derive(Debug, Parser)]
#[command(
    name = "dprd",
    version,
    about = "Distributed Packet Rewriting daemon",
    long_about = "dprd — Distributed Packet Rewriting daemon\n\n\
        Every host of a cluster is both a server and a connection router: a host over its load \
        threshold forwards a new connection's packets to a less-loaded peer in IP-in-IP, and the \
        peer answers the client directly. `dprd run` is the router on one host; `status`, \
        `drain` and `reload` talk to a running one over its admin socket. Configuration, field \
        by field: docs/configuration.md.",
    after_help = "The cluster simulator is its own program, `dpr-sim`; the lab's programs are \
        `dpr-lab`'s.",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the router (root; undoes its setup on exit)
    #[command(long_about = "Run the router on this host (root).\n\n\
        Sets up the TUN device or AF_XDP sockets, policy routes and sysctls, joins the cluster, \
        serves the admin socket and metrics. SIGTERM or Ctrl-C undoes the setup, unless \
        connections are routed to peers: then the diversion is held in place for the next \
        `dprd run` (a restart breaks no connection; `[backend] hold_on_exit`). A start takes \
        over what a previous instance held or left when it died (its journal in \
        `[admin] state_dir`); a second live instance is refused. SIGHUP reloads the \
        configuration (as `dprd reload` does).")]
    Run {
        /// The configuration file (docs/configuration.md)
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Undo what a stopped or dead dprd left on this host (root)
    #[command(
        long_about = "Undo the host set-up a dprd left in place: held at a stop \
        with connections routed to peers, or left when it died (rules, routes, addresses, \
        sysctls, the persistent TUN device, the XDP program), as its journal in \
        `[admin] state_dir` records them. Refused while a dprd runs with that state directory."
    )]
    Cleanup {
        /// The configuration file (for `[admin] state_dir`)
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration, naming the bad field
    #[command(
        long_about = "Validate a configuration file (and the key file it names) and say \
        what it describes, or name the bad field, e.g. `cluster.peers[1].tunnel_addr`.\n\n\
        Needs no root and changes nothing."
    )]
    CheckConfig {
        /// The configuration file
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Peers, loads, table and counters of a running dprd
    #[command(
        long_about = "Peers, loads, states, table and counters of the dprd listening on \
        the admin socket, as a table read at a glance (in the manner of `ipvsadm -Ln --stats`).\n\n\
        With --watch, the view is redrawn every --interval seconds with per-second rates (each \
        counter's difference between two reads over the daemon's uptime between them), as \
        `watch ipvsadm -Ln --stats` does, until Ctrl-C or --count reads."
    )]
    Status {
        /// Print the daemon's raw JSON answer
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Redraw every --interval seconds, with rates per second
        #[arg(long, short = 'w')]
        watch: bool,
        /// Seconds between reads with --watch (0.1 to 3600)
        #[arg(long, short = 'n', value_name = "S", default_value_t = 1.0,
              value_parser = parse_interval, requires = "watch")]
        interval: f64,
        /// Stop after N reads with --watch (default: until Ctrl-C)
        #[arg(long, value_name = "N", requires = "watch",
              value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// The admin socket (`[admin] socket` of its configuration)
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Send new connections to peers; established ones stay
    #[command(
        long_about = "Start draining the dprd listening on the admin socket: new \
        connections go to peers, established ones stay until they end; then the host announces \
        it is leaving (at the latest after `[cluster] drain_deadline_s`)."
    )]
    Drain {
        /// The admin socket (`[admin] socket` of its configuration)
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Then wait up to S seconds for the host to leave the cluster (no
        /// connection left, local or routed); exit 1 if it has not
        #[arg(long, value_name = "S", value_parser = parse_wait)]
        wait: Option<f64>,
    },
    /// Reload the configuration (as SIGHUP does)
    #[command(long_about = "Make the dprd listening on the admin socket reload its \
        configuration (as SIGHUP does): peers, keys and policy; no connection is dropped. \
        Changes to [host], [backend], [tunnel] or [vip] need a restart and are refused.")]
    Reload {
        /// The admin socket (`[admin] socket` of its configuration)
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Print a new cluster key file (the same file on every host)
    #[command(
        long_about = "Print a new cluster key file: one random 256-bit key from the \
        kernel's random source. Put the same file on every host, mode 0600, and name it in \
        `[cluster] key_file`."
    )]
    Keygen,
    /// Print shell completions for dprd
    #[command(long_about = "Print the completion script of dprd for SHELL, e.g.\n  \
        dprd completions bash > /etc/bash_completion.d/dprd\n  \
        dprd completions zsh > \"${fpath[1]}/_dprd\"")]
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages of dprd and its commands
    #[command(
        long_about = "Write the man pages of dprd and of each of its commands \
        (dprd.1, dprd-run.1, ...) to DIR, or print dprd.1 alone when no DIR is given, e.g.\n  \
        dprd man | man -l -\n  \
        dprd man --out /usr/local/share/man/man1"
    )]
    Man {
        /// The directory to write the pages to (created if missing)
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// A DPR cluster in network namespaces (root), by `dpr-lab`
    #[command(
        disable_help_flag = true,
        disable_version_flag = true,
        long_about = "A cluster in network namespaces (root): DPR off (RR-DNS), an ideal \
            (central join-shortest-queue) and DPR on under one load, and the ground truth of \
            DPR's decisions. Runs `dpr-lab lab ARGS...` (the binary beside dprd) with the \
            arguments unchanged: `dprd lab --help` prints the lab's options."
    )]
    Lab {
        /// Arguments of `dpr-lab lab`, passed through unchanged
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// The data-path benchmarks (root), by `dpr-lab`
    #[command(
        disable_help_flag = true,
        disable_version_flag = true,
        long_about = "The data-path benchmarks of docs/benchmarks.md (root; needs wrk and \
            haproxy: use scripts/bench). Runs `dpr-lab bench ARGS...` (the binary beside dprd) \
            with the arguments unchanged: `dprd bench --help` prints its options."
    )]
    Bench {
        /// Arguments of `dpr-lab bench`, passed through unchanged
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
}

/// `--interval`: seconds, 0.1 to 3600.
fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if (0.1..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0.1 and 3600 seconds"))
    }
}

/// `drain --wait`: seconds, 0 to 86400.
fn parse_wait(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if (0.0..=86_400.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 86400 seconds"))
    }
}

/// After `drain`: polls the status until the host has left the cluster
/// (its drain ends once neither the local stack nor the routing table has
/// had a connection for a report interval, or at `drain_deadline_s`), or
/// `limit` passes.
fn drain_wait(socket: &Path, limit: std::time::Duration) -> Result<(), Error> {
    let start = std::time::Instant::now();
    loop {
        let st = dprd::status::request_status(socket)?;
        if st.phase == "left" {
            return print(&format!(
                "left the cluster after {:.1} s\n",
                start.elapsed().as_secs_f64()
            ));
        }
        if start.elapsed() >= limit {
            return Err(Error::DrainTimeout {
                path: socket.to_path_buf(),
                phase: st.phase,
                waited_s: start.elapsed().as_secs_f64(),
                open_connections: st.open_connections,
                routes: st.routes,
            });
        }
        let left = limit.saturating_sub(start.elapsed());
        std::thread::sleep(left.min(std::time::Duration::from_millis(200)));
    }
}

/// Writes `text` to stdout; a closed pipe is an error, not a panic.
fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io {
            syscall: "write",
            path: "<stdout>".into(),
            source,
        })
}

fn check_config(file: &Path) -> Result<(), Error> {
    let c = Config::load(file)?;
    print(&format!(
        "{}: ok — host {} (id {}), {} peer(s), policy {}, backend {}\n",
        file.display(),
        c.host.name,
        c.host.id,
        c.cluster.peers.len(),
        c.policy.kind_name(),
        c.backend_name()
    ))
}

fn completions(shell: clap_complete::Shell) -> Result<(), Error> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "dprd", &mut script);
    print(&String::from_utf8_lossy(&script))
}

/// The man pages: dprd's, then one per command (`help` excepted).
fn man_pages() -> Vec<clap_mangen::Man> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let page = |c: &clap::Command| {
        clap_mangen::Man::new(c.clone())
            .source(concat!("dprd ", env!("CARGO_PKG_VERSION")))
            .manual("dpr")
    };
    let mut pages = vec![page(&cmd)];
    pages.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(page));
    pages
}

fn man(out: Option<&Path>) -> Result<(), Error> {
    let io = |syscall, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            syscall,
            path,
            source,
        }
    };
    let pages = man_pages();
    let Some(dir) = out else {
        let mut page = Vec::new();
        if let Some(p) = pages.first() {
            p.render(&mut page)
                .map_err(io("write", Path::new("<stdout>")))?;
        }
        return print(&String::from_utf8_lossy(&page));
    };
    std::fs::create_dir_all(dir).map_err(io("mkdir", dir))?;
    let mut written = String::new();
    for p in &pages {
        let path = dir.join(p.get_filename());
        let mut page = Vec::new();
        p.render(&mut page).map_err(io("write", &path))?;
        std::fs::write(&path, page).map_err(io("write", &path))?;
        written.push_str(&format!("{}\n", path.display()));
    }
    print(&written)
}

/// Replaces this process with `dpr-lab COMMAND ARGS...`, the binary beside
/// this one: signals (the lab cleans up on SIGTERM and SIGHUP) and the exit
/// status are then the lab's own. Returns only on failure.
fn exec_lab(command: &'static str, args: &[OsString]) -> Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(source) => {
            return Error::Io {
                syscall: "readlink",
                path: "/proc/self/exe".into(),
                source,
            };
        }
    };
    let lab = exe.with_file_name("dpr-lab");
    if !lab.is_file() {
        return Error::LabMissing { path: lab, command };
    }
    let source = std::process::Command::new(&lab)
        .arg(command)
        .args(args)
        .exec();
    Error::Io {
        syscall: "execve",
        path: lab,
        source,
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Run { config } => dprd::daemon::run(&config).map_err(Error::from),
        Command::Cleanup { config } => dprd::daemon::cleanup(&config).map_err(Error::from),
        Command::CheckConfig { file } => check_config(&file),
        Command::Status {
            json,
            watch,
            interval,
            count,
            socket,
        } => {
            if watch {
                use std::io::IsTerminal;
                let mut out = std::io::stdout();
                let clear = out.is_terminal();
                dprd::watch::watch(
                    &socket,
                    std::time::Duration::from_secs_f64(interval),
                    count,
                    clear,
                    &mut out,
                )
            } else if json {
                print(&(dprd::status::admin_request(&socket, "status")? + "\n"))
            } else {
                print(&dprd::status::request_status(&socket)?.render())
            }
        }
        Command::Drain { socket, wait } => {
            print(&(dprd::status::admin_command(&socket, "drain")? + "\n"))?;
            match wait {
                Some(s) => drain_wait(&socket, std::time::Duration::from_secs_f64(s)),
                None => Ok(()),
            }
        }
        Command::Reload { socket } => {
            print(&(dprd::status::admin_command(&socket, "reload")? + "\n"))
        }
        Command::Keygen => print(&dprd::keygen::new_key_file()?),
        Command::Completions { shell } => completions(shell),
        Command::Man { out } => man(out.as_deref()),
        Command::Lab { args } => Err(exec_lab("lab", &args)),
        Command::Bench { args } => Err(exec_lab("bench", &args)),
    }
}

fn main() -> ExitCode {
    // Usage errors exit with 2 and the usage; --help and --version with 0.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "dprd: {}", Report(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn lab_and_bench_take_every_argument_unchanged() {
        for (sub, args) in [
            ("lab", vec!["--help"]),
            ("lab", vec!["--hosts", "2", "-h", "--", "x"]),
            ("bench", vec!["--only", "fwd", "--version"]),
            ("bench", vec!["--version"]),
            ("lab", vec![]),
        ] {
            let argv = ["dprd", sub].into_iter().chain(args.iter().copied());
            let got = match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Lab { args } | Command::Bench { args }) => args,
                other => unreachable!("{other:?}"),
            };
            let want: Vec<OsString> = args.iter().map(OsString::from).collect();
            assert_eq!(got, want, "dprd {sub}");
        }
    }

    #[test]
    fn status_watch_takes_an_interval_and_a_count_only_with_watch() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["dprd", "status"].iter().chain(args)).map(|c| c.command)
        };
        match parse(&["--watch", "-n", "0.5", "--count", "3"]) {
            Ok(Command::Status {
                watch: true,
                interval,
                count: Some(3),
                json: false,
                ..
            }) => assert_eq!(interval, 0.5),
            other => unreachable!("{other:?}"),
        }
        match parse(&["-w"]) {
            Ok(Command::Status {
                interval, count, ..
            }) => assert_eq!((interval, count), (1.0, None)),
            other => unreachable!("{other:?}"),
        }
        for bad in [
            &["--interval", "2"][..],
            &["--count", "2"],
            &["--watch", "--json"],
            &["--watch", "-n", "0"],
            &["--watch", "-n", "nan"],
            &["--watch", "-n", "5000"],
            &["--watch", "--count", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        let help = parse(&["--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(help.to_string().contains("--watch"), "{help}");
    }

    #[test]
    fn there_is_a_man_page_per_command() {
        let names: Vec<String> = man_pages().iter().map(|p| p.get_filename()).collect();
        for want in [
            "dprd.1",
            "dprd-run.1",
            "dprd-check-config.1",
            "dprd-status.1",
            "dprd-drain.1",
            "dprd-reload.1",
            "dprd-keygen.1",
            "dprd-completions.1",
            "dprd-man.1",
            "dprd-lab.1",
            "dprd-bench.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
    }
}
