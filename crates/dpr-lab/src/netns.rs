//! Network namespaces and veth pairs for the lab, the benchmarks and the
//! tests, by running `ip`: one module for all of them.
//!
//! Everything created here is removed on drop (a namespace deleted deletes
//! its veth ends and bridges), also when a test panics; the lab's binary
//! also drops them on SIGINT, SIGTERM and SIGHUP ([`crate::stop`]). Names
//! carry the process id so parallel runs do not collide; addresses are from
//! 198.18.0.0/15, the benchmarking range. The system calls (`setns`, raw
//! sockets, the traffic generator) are `dpr_xdp::tools`'.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    dpr_io::sys::geteuid() == 0
}

/// Runs a command; an error unless it exits 0 (with its stderr).
pub fn run(cmd: &str, args: &[&str]) -> io::Result<Output> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// Runs `cmd`, returning its stdout, or an error naming the command with
/// its stderr.
pub fn sh(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    stdout_of(cmd, &out)
}

/// `cmd`'s stdout when it exited 0, else an error naming it with its stderr.
pub fn stdout_of(cmd: &Command, out: &Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip ARGS`, returning its stdout.
pub fn ip(args: &[&str]) -> Result<String, String> {
    sh(Command::new("ip").args(args))
}

/// Whether a program is on `PATH`.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A command that runs `program` inside namespace `ns` (`ip netns exec`,
/// which execs it: the child's pid is the program's).
pub fn command_in(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short suffix: process id and a per-process sequence number.
pub fn unique_suffix() -> String {
    format!(
        "{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `dpr-<tag>-<pid>x<n>`, loopback up.
    pub fn new(tag: &str) -> io::Result<Self> {
        Self::named(&format!("dpr-{tag}-{}", unique_suffix()))
    }

    /// Creates the namespace `name` (which the caller made unique), loopback up.
    pub fn named(name: &str) -> io::Result<Self> {
        run("ip", &["netns", "add", name])?;
        let ns = Self {
            name: name.to_string(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its handle (`/var/run/netns/NAME`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Runs a command inside (`ip netns exec`); an error unless it exits 0.
    pub fn exec(&self, args: &[&str]) -> io::Result<Output> {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Moves the *calling thread* into this namespace (setns). Use it in a
    /// thread of its own: see [`in_netns`].
    pub fn enter(&self) -> io::Result<()> {
        dpr_xdp::tools::enter_netns(&self.path())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `f` on a new thread inside `ns` and returns its result.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter()?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("thread in netns panicked"))?
    })
}

/// Two namespaces joined by a veth pair, each end up and addressed:
/// `a` holds `198.18.<net>.1/24`, `b` holds `198.18.<net>.2/24`.
#[derive(Debug)]
pub struct VethPair {
    /// Namespace of end `a` (typically the router under test).
    pub ns_a: Netns,
    /// Namespace of end `b` (typically the traffic source).
    pub ns_b: Netns,
    /// Device name of end `a` (inside `ns_a`).
    pub dev_a: String,
    /// Device name of end `b` (inside `ns_b`).
    pub dev_b: String,
    /// Address of end `a`.
    pub addr_a: Ipv4Addr,
    /// Address of end `b`.
    pub addr_b: Ipv4Addr,
    /// MAC of end `a`.
    pub mac_a: [u8; 6],
    /// MAC of end `b`.
    pub mac_b: [u8; 6],
    /// Whether transmit checksum offload could be turned off (ethtool).
    pub tx_offload_off: bool,
}

impl VethPair {
    /// Creates the pair on subnet 198.18.`net`.0/24 with fixed MACs
    /// 02:00:00:00:`net`:0a / 0b. Turns off transmit checksum offload on
    /// both ends when `ethtool` exists (else frames from `b` may carry
    /// partial checksums, which matters only to checksum-verifying readers).
    pub fn new(net: u8) -> io::Result<Self> {
        let ns_a = Netns::new("a")?;
        let ns_b = Netns::new("b")?;
        let sfx = unique_suffix();
        // Interface names: at most 15 bytes.
        let dev_a: String = format!("dxa{sfx}").chars().take(15).collect();
        let dev_b: String = format!("dxb{sfx}").chars().take(15).collect();
        let mac_a = [0x02, 0, 0, 0, net, 0x0a];
        let mac_b = [0x02, 0, 0, 0, net, 0x0b];
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        run(
            "ip",
            &[
                "link",
                "add",
                &dev_a,
                "netns",
                ns_a.name(),
                "address",
                &mac(mac_a),
                "type",
                "veth",
                "peer",
                "name",
                &dev_b,
                "netns",
                ns_b.name(),
                "address",
                &mac(mac_b),
            ],
        )?;
        let addr_a = Ipv4Addr::new(198, 18, net, 1);
        let addr_b = Ipv4Addr::new(198, 18, net, 2);
        let mut tx_offload_off = have("ethtool");
        for (ns, dev, addr) in [(&ns_a, &dev_a, addr_a), (&ns_b, &dev_b, addr_b)] {
            ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ns.exec(&["ip", "link", "set", dev, "up"])?;
            if tx_offload_off && ns.exec(&["ethtool", "-K", dev, "tx", "off"]).is_err() {
                tx_offload_off = false;
            }
        }
        Ok(Self {
            ns_a,
            ns_b,
            dev_a,
            dev_b,
            addr_a,
            addr_b,
            mac_a,
            mac_b,
            tx_offload_off,
        })
    }

    /// Runs the receiving veth's NAPI in its own kernel thread
    /// (`/sys/class/net/DEV/threaded`), which native XDP on veth needs to
    /// keep up with a sender on the other core.
    pub fn set_threaded_napi(&self, on: bool) -> io::Result<()> {
        let v = if on { "1" } else { "0" };
        let cmd = format!("echo {v} > /sys/class/net/{}/threaded", self.dev_a);
        self.ns_a.exec(&["sh", "-c", &cmd]).map(drop)
    }
}

/// The namespaces named `PREFIX*` that exist now (`ip netns list`).
pub fn namespaces_with_prefix(prefix: &str) -> Result<Vec<String>, String> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_suffixes_differ_and_carry_the_pid() {
        let (a, b) = (unique_suffix(), unique_suffix());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{}x", std::process::id())), "{a}");
    }

    #[test]
    fn a_command_in_a_namespace_is_ip_netns_exec() {
        let c = command_in("dprlab-1-0-h0", "curl");
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c.get_program(), "ip");
        assert_eq!(args, ["netns", "exec", "dprlab-1-0-h0", "curl"]);
    }

    #[test]
    fn a_failing_command_names_itself_and_its_stderr() {
        let e = sh(Command::new("sh").args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        assert!(e.contains("\"sh\"") && e.contains("nope"), "{e}");
        assert!(run("sh", &["-c", "exit 1"]).is_err());
        assert_eq!(
            sh(Command::new("sh").args(["-c", "echo yes"])).unwrap(),
            "yes\n"
        );
    }
}
