//! `dpr-xdp`: the kernel-facing pieces of dpr's AF_XDP backend.
//!
//! This layer loads and attaches the XDP program that steers the router's
//! traffic into AF_XDP sockets, fills its maps, moves frames through the
//! sockets' rings, and reads the kernel's neighbour table. It decides nothing
//! about a packet beyond the program's coarse "is it the router's" test: the
//! engine above decides the rest. It talks to the kernel only through
//! its `sys` module (bpf(2), sockets, mmap, setns); `unsafe` lives there and in
//! [`xsk`] (shared frame memory), nowhere else.
//!
//! ```text
//!   NIC queue q ──► XDP program (program.rs, assembled by asm.rs)
//!                     │ TCP to services_v4/v6 (addr, port)  ─┐
//!                     │ IPv4/IPv6 TCP fragment to a service  ├─► bpf_redirect_map(xsks, q)
//!                     │ IP-in-IP from peers_v4/v6            ─┘        │
//!                     └ everything else ─► XDP_PASS (kernel)           ▼
//!                                                   XskSocket (xsk.rs): rx_batch ─► engine
//!                                                   frame reused for tx (headroom for the
//!                                                   outer header), or tx_copy ─► NIC
//!   neigh.rs: next hop's MAC from the kernel's neighbour table (RTM_GETNEIGH)
//! ```
//!
//! [`RouterProgram`] owns the program and maps; [`XdpLink`] is an attachment
//! (detached on drop); [`xsk::XskSocket`] is one AF_XDP socket on one queue;
//! [`neigh::lookup`] resolves a next hop. [`tools`] holds the kernel-facing
//! tools of the tests and benchmarks (a live-frame traffic generator, a raw
//! packet socket, `setns`); the namespaces and veth pairs they run in are
//! `dpr-lab`'s.
#![deny(unsafe_code)]

pub mod asm;
mod loader;
pub mod neigh;
mod netlink;
pub mod program;
mod sys;
pub mod tools;
pub mod xsk;

pub use loader::{Counters, ProgramConfig, RouterProgram, XdpLink, XdpMode};
pub use program::{Counter, MissingSocket};

use std::io;

/// The interface index of `name`, in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<u32, Error> {
    sys::if_nametoindex(name).map_err(|source| Error::Syscall {
        op: "if_nametoindex",
        source,
    })
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
}
