//! Test-host helpers for the tests and the bench: network namespaces joined
//! by a veth pair, running code inside a namespace, and a raw `AF_PACKET`
//! socket to send and capture frames. Not for the daemon's data path.
//!
//! Everything created here is removed on drop (namespaces deleted, which
//! deletes their veth ends), also when a test panics. Names carry the
//! process id so parallel runs do not collide; addresses are from
//! 198.18.0.0/15, the benchmarking range.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sys;

/// Whether the process runs as root (uid 0), from `/proc/self/status`.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
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

/// Whether a program is on `PATH`.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
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
    /// Creates `dpr-<tag>-<pid>x<n>`.
    pub fn new(tag: &str) -> io::Result<Self> {
        let name = format!("dpr-{tag}-{}", unique_suffix());
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
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
        let f = std::fs::File::open(format!("/var/run/netns/{}", self.name))?;
        sys::setns_net(f.as_fd())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
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

/// An in-kernel traffic generator: a two-instruction XDP program returning
/// `XDP_TX`, run by `BPF_PROG_TEST_RUN` in live-frames mode, so the kernel
/// transmits copies of one frame out of an interface (`ndo_xdp_xmit`) far
/// faster than a socket can. On veth the peer needs a NAPI instance: a
/// native XDP program, or GRO turned on.
#[derive(Debug)]
pub struct LiveFrameGenerator {
    prog: OwnedFd,
}

impl LiveFrameGenerator {
    /// Loads the program.
    pub fn new() -> Result<Self, crate::Error> {
        use crate::asm::{Asm, Reg};
        let mut a = Asm::new();
        a.mov_imm(Reg::R0, crate::program::XDP_TX as i32);
        a.exit();
        let words = crate::asm::encode(&a.finish()?);
        Ok(Self {
            prog: crate::loader::load_xdp(&words, "dpr_trafficgen")?,
        })
    }

    /// Sends `count` copies of `frame` out of `ifindex` (calling thread's
    /// namespace), in kernel batches of 64.
    pub fn send(&self, ifindex: u32, frame: &[u8], count: u32) -> io::Result<()> {
        sys::prog_test_run_live(self.prog.as_fd(), frame, ifindex, count, 64)
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    sys::pin_current_thread(cpu)
}

/// A raw `AF_PACKET` socket bound to one interface: sends whole Ethernet
/// frames and receives every frame arriving on it (not its own).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens and binds it (in the calling thread's namespace).
    pub fn bind(ifindex: u32) -> io::Result<Self> {
        Ok(Self {
            fd: sys::packet_socket(ifindex)?,
        })
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        sys::send(self.fd.as_fd(), frame, 0)
    }

    /// Receives one frame, waiting at most `timeout`; `Ok(None)` on timeout.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        sys::set_recv_timeout(self.fd.as_fd(), timeout)?;
        match sys::recv(self.fd.as_fd(), buf, 0) {
            Ok(n) => Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Receives without waiting; `Ok(None)` when nothing is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match sys::recv(self.fd.as_fd(), buf, libc::MSG_DONTWAIT) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets the receive buffer size (bytes).
    pub fn set_recv_buffer(&self, bytes: i32) -> io::Result<()> {
        sys::set_recv_buffer(self.fd.as_fd(), bytes)
    }
}
