//! Kernel-facing tools for tests and benchmarks, not for the router's data
//! path: an in-kernel traffic generator, a raw `AF_PACKET` socket that
//! sends and captures whole frames, a raw IPv4 socket that sends whole IP
//! packets (the lab's SYN flooder), moving a thread into a network
//! namespace, pinning a thread to a CPU.
//!
//! They live here because each is a system call, and this crate's `sys` is
//! where dpr's `bpf(2)`, socket and `setns` calls are made. Creating
//! namespaces and veth pairs (by running `ip`) is `dpr-lab`'s job.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use crate::sys;

/// Moves the *calling thread* into the network namespace whose handle is
/// the file at `path` (`/var/run/netns/NAME`, `/proc/PID/ns/net`): `setns`.
/// Use a thread of its own: it stays there.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    sys::setns_net(f.as_fd())
}

/// Pins the calling thread to `cpu` (`sched_setaffinity`).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    sys::pin_current_thread(cpu)
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

/// A raw IPv4 socket (`IPPROTO_RAW`): sends whole IPv4 packets, header
/// included as the caller wrote it (any source address), routed by the
/// kernel of the calling thread's namespace by their destination.
#[derive(Debug)]
pub struct RawIpv4Socket {
    fd: OwnedFd,
}

impl RawIpv4Socket {
    /// Opens it (root, or `CAP_NET_RAW`).
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            fd: sys::raw_ipv4_socket()?,
        })
    }

    /// Sends one IPv4 packet (header included) towards `dst`.
    pub fn send_to(&self, packet: &[u8], dst: std::net::Ipv4Addr) -> io::Result<usize> {
        sys::send_to_v4(self.fd.as_fd(), packet, dst)
    }
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
