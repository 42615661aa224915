//! `dprd`: the dpr daemon, a thin layer over the library crates.
//!
//! It reads a TOML [`config`], opens the TUN backend of `dpr-io` (and,
//! with `backend.kind = "af-xdp`, attaches the XDP program and binds the
//! AF_XDP sockets: [`xdp`]), sets the
//! host up (and undoes it on exit), runs one data-path worker per queue
//! (`dpr_io::run_worker`, each owning its engine shard), and runs the control
//! plane on tokio ([`daemon`]): the cluster protocol
//! (`dpr_router::cluster::Node`: signed load reports, membership, drain,
//! restart recovery) through the [`control`] adapter, the admin socket
//! ([`status`], drain, reload), Prometheus [`metrics`], signals. The lab
//! and the benchmarks that run it in network namespaces are `dpr-lab`'s;
//! the simulator is `dpr-sim`'s.
//!
//! What it may not do: contain packet logic. Every per-packet decision is
//! the engine's; every system call is `dpr-io`'s or the standard library's.
#![forbid(unsafe_code)]

pub mod bgp;
pub mod config;
pub mod control;
pub mod daemon;
pub mod error;
pub mod keygen;
pub mod load;
pub mod metrics;
pub mod status;
pub mod watch;
pub mod xdp;

pub use error::Error;
