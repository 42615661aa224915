//! `dprd`: the dpr daemon. See `dprd help`; `dprd CMD --help` prints one
//! command's usage and does nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
dprd — Distributed Packet Rewriting daemon

USAGE (`dprd COMMAND --help`: one command's usage):
  dprd run --config FILE          run the router (root; undoes its setup on exit)
  dprd check-config FILE          validate a configuration, naming the bad field
  dprd status [--json] [--socket PATH]   peers, loads, table, counters of a running dprd
  dprd drain [--socket PATH]      send new connections to peers; established ones stay
  dprd reload [--socket PATH]     reload the configuration (as SIGHUP does)
  dprd keygen                     print a new cluster key file (put it on every host)

The lab and the benchmarks (root): `dpr-lab lab`, `dpr-lab bench` (crate dpr-lab).
";

const DEFAULT_SOCKET: &str = "/run/dprd/dprd.sock";

/// The usage of one command, for `dprd CMD --help` (None: no such command,
/// or one that answers `--help` itself).
fn command_usage(cmd: &str) -> Option<&'static str> {
    Some(match cmd {
        "run" => {
            "\
USAGE: dprd run --config FILE

Runs the router on this host (root): sets up the TUN device or AF_XDP sockets,
policy routes and sysctls, joins the cluster, serves the admin socket; SIGTERM
or Ctrl-C undoes the setup, SIGHUP reloads the configuration.
"
        }
        "check-config" => {
            "\
USAGE: dprd check-config FILE

Validates a configuration file and says what it describes, or names the bad field.
"
        }
        "status" => {
            "\
USAGE: dprd status [--json] [--socket PATH]

Peers, loads, states, table and counters of the dprd listening on PATH
(default /run/dprd/dprd.sock); --json prints the raw answer.
"
        }
        "drain" => {
            "\
USAGE: dprd drain [--socket PATH]

New connections go to peers; established ones stay until they end.
"
        }
        "reload" => {
            "\
USAGE: dprd reload [--socket PATH]

Reloads the configuration (as SIGHUP does): peers and policy, no connection dropped.
"
        }
        "keygen" => {
            "\
USAGE: dprd keygen

Prints a new cluster key file (put the same file on every host, mode 0600).
"
        }
        _ => return None,
    })
}

fn take_opt(args: &mut Vec<String>, name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    if i + 1 < args.len() {
        let v = args.remove(i + 1);
        args.remove(i);
        Some(v)
    } else {
        args.remove(i);
        None
    }
}

fn take_flag(args: &mut Vec<String>, name: &str) -> bool {
    match args.iter().position(|a| a == name) {
        Some(i) => {
            args.remove(i);
            true
        }
        None => false,
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    }
    let cmd = args.remove(0);
    if args.iter().any(|a| a == "--help" || a == "-h") {
        if let Some(u) = command_usage(&cmd) {
            print!("{u}");
            return ExitCode::SUCCESS;
        }
    }
    let socket = take_opt(&mut args, "--socket")
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from);
    let result: Result<(), String> = match cmd.as_str() {
        "run" => match take_opt(&mut args, "--config") {
            Some(path) => dprd::daemon::run(&PathBuf::from(path)),
            None => Err("dprd run needs --config FILE".into()),
        },
        "check-config" => match args.first() {
            Some(path) => match dprd::config::Config::load(&PathBuf::from(path)) {
                Ok(c) => {
                    println!(
                        "{path}: ok — host {} (id {}), {} peer(s), policy {}, backend {}",
                        c.host.name,
                        c.host.id,
                        c.cluster.peers.len(),
                        c.policy.kind_name(),
                        c.backend_name()
                    );
                    Ok(())
                }
                Err(e) => Err(format!("{path}: {e}")),
            },
            None => Err("dprd check-config needs a FILE".into()),
        },
        "status" => {
            let json = take_flag(&mut args, "--json");
            dprd::daemon::admin_request(&socket, "status").and_then(|a| {
                if json {
                    println!("{a}");
                    return Ok(());
                }
                let s: dprd::status::Status =
                    serde_json::from_str(&a).map_err(|e| format!("bad answer from dprd: {e}"))?;
                print!("{}", s.render());
                Ok(())
            })
        }
        "drain" | "reload" => dprd::daemon::admin_request(&socket, &cmd).and_then(|a| {
            let v: serde_json::Value = serde_json::from_str(&a).unwrap_or_default();
            let msg = v["message"].as_str().unwrap_or(&a).to_string();
            if v["ok"].as_bool() == Some(true) {
                println!("{msg}");
                Ok(())
            } else {
                Err(msg)
            }
        }),
        "keygen" => dprd::keygen::new_key_file().map(|k| print!("{k}")),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dprd: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_has_its_usage() {
        for cmd in ["run", "check-config", "status", "drain", "reload", "keygen"] {
            let u = super::command_usage(cmd).unwrap_or_default();
            assert!(u.starts_with(&format!("USAGE: dprd {cmd}")), "{cmd}: {u}");
        }
        assert!(super::command_usage("nonsense").is_none());
    }
}
