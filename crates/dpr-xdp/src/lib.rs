//! `dpr-xdp`: the kernel-facing pieces of dpr's AF_XDP backend.
//!
//! This layer is the kernel-program side of AF_XDP: it assembles, loads and
//! attaches the XDP program that steers the router's traffic into AF_XDP
//! sockets, fills its maps, and moves frames through the sockets' rings. It
//! decides nothing about a packet beyond the program's coarse "is it the
//! router's" test: the engine above decides the rest. Everything else that
//! talks to the host (netlink: routes, addresses, neighbours, sock_diag;
//! starting the backend from a plan) is `dpr-io`'s, which depends on this
//! crate. It talks to the kernel only through its `sys`
//! module (bpf(2), sockets, mmap, poll, setns); `unsafe` lives there and in
//! [`xsk`] (shared frame memory), nowhere else. Every `bpf(2)` request of the
//! loader goes through the [`bpf::BpfSys`] trait, so map maintenance is
//! tested against [`bpf::FakeBpf`] without root.
//!
//! ```text
//!   NIC queue q ──► XDP program (program.rs, assembled by asm.rs)
//!                     │ established redirected flow (fwd_flows_v4, fwd_peers) ─► outer headers, XDP_TX
//!                     │ TCP to services_v4/v6 (addr, port)  ─┐
//!                     │ IPv4/IPv6 TCP fragment to a service  ├─► bpf_redirect_map(xsks, q)
//!                     │ IP-in-IP from peers_v4/v6            ─┘        │
//!                     └ everything else ─► XDP_PASS (kernel)           ▼
//!                                                   XskSocket (xsk.rs): rx_lend ─► engine
//!                                                   frame reused for tx (headroom for the
//!                                                   outer header), or tx_copy ─► NIC
//!   loader.rs ─► bpf.rs (BpfSys: RealBpf = bpf(2), FakeBpf = in memory, recorded)
//! ```
//!
//! [`sink`] is the forwarding benchmark's receiver: a separate small
//! program that counts and drops the benchmark's packets and passes the rest.
//!
//! [`RouterProgram`] owns the program and maps; [`XdpLink`] is an attachment
//! (detached on drop); [`xsk::XskSocket`] is one AF_XDP socket on one queue.
//! [`ifindex`] and [`poll_readable`] are the workspace's one interface-index
//! look-up and one poll helper (`dpr-io` re-exports them). [`tools`] holds
//! the kernel-facing tools of the tests and benchmarks (a live-frame traffic
//! generator, a raw packet socket, `setns`); the namespaces and veth pairs
//! they run in are `dpr-lab`'s.
#![deny(unsafe_code)]

pub mod asm;
pub mod bpf;
pub mod closes;
mod loader;
pub mod program;
pub mod sink;
mod sys;
pub mod tools;
pub mod xsk;

pub use bpf::{BpfSys, FakeBpf, RealBpf};
pub use closes::CloseWatch;
pub use loader::{
    Counters, FastPathEncap, FastPathMaps, FastPathPeer, FastPathRoute, KeyedFlow, KeyedFlowMap,
    ProgramConfig, RouterProgram, XdpLink, XdpMode, load_pass_program,
};
pub use program::{Counter, MissingSocket};
pub use sink::{SinkConfig, SinkCounter, SinkCounts, SinkProgram};

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// The interface index of `name`, in the calling thread's network
/// namespace. A missing interface is `NotFound`, naming it.
pub fn ifindex(name: &str) -> Result<u32, Error> {
    sys::if_nametoindex(name).map_err(|source| Error::Syscall {
        op: "if_nametoindex",
        source,
    })
}

/// Waits up to `timeout` for `fd` to become readable (`poll(2)`): `true`
/// when it is (or has an error or hang-up to report: the next read says
/// which), `false` on timeout or when a signal interrupted the wait.
pub fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    match sys::poll_one(fd, libc::POLLIN, timeout) {
        Ok(revents) => Ok(revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// An error of this layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{op}: {source}")]
    Syscall {
        /// Which call.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The verifier refused the program; `log` is its explanation.
    #[error("the verifier refused the XDP program ({source}):\n{log}")]
    Verifier {
        /// The load's OS error.
        source: io::Error,
        /// The verifier log.
        log: String,
    },
    /// The program did not assemble (a bug in `program.rs`).
    #[error("assembling the XDP program: {0}")]
    Asm(#[from] asm::AsmError),
    /// Something read from the kernel or given by the caller did not parse.
    #[error("cannot parse {0}")]
    Parse(&'static str),
    /// A ring or UMEM invariant was not met (sizes, frame bounds).
    #[error("AF_XDP: {0}")]
    Xsk(String),
    /// A program's configuration is out of range; the message names the field.
    #[error("{0}")]
    Config(String),
}

impl From<Error> for io::Error {
    /// Keeps the kind of a system call's error, and names the call.
    fn from(e: Error) -> Self {
        match e {
            Error::Syscall { op, source } => {
                io::Error::new(source.kind(), format!("{op}: {source}"))
            }
            other => io::Error::other(other.to_string()),
        }
    }
}
