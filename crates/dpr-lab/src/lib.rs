//! `dpr-lab`: dpr's lab and benchmark tooling, outside the libraries and
//! the daemon.
//!
//! It builds DPR clusters in network namespaces and measures them: [`lab`]
//! (a client, hosts and a bridge; the `dpr-lab lab` comparison of DPR off,
//! an ideal dispatcher and DPR on; the clusters of the end-to-end tests),
//! [`bench`](mod@bench) (the data-path benchmarks of `docs/benchmarks.md`), [`httpd`]
//! (the lab's web server), [`loadgen`] (its client), [`bulk`] (a 20 MB
//! download or upload, direct or through a redirect, in MB/s), [`truth`] (the daemon's
//! decisions against the web servers' open connections), [`flood`] (a
//! bounded SYN flood from random sources, for the flood tests), [`netns`]
//! (namespaces and veth pairs, for the lab and the tests alike), [`nic`]
//! (an `XDP_PASS` program on the bridge ports, as a NIC driver) and [`stop`]
//! (SIGINT, SIGTERM and SIGHUP end a run cleanly).
//!
//! ```text
//!   dpr-lab lab / bench ─► Lab ─► netns: ip netns add, veths, a bridge   (198.18.0.0/15 only)
//!                           ├─► dpr-lab httpd    in each host's namespace
//!                           ├─► dprd run         in each host's namespace (the dprd beside this binary)
//!                           ├─► dpr-lab loadgen  in the client's namespace ─► JSON results
//!                           └─► dprd's admin socket: status, decisions ─► tables, ground truth
//! ```
//!
//! What it may not do: be depended on by the libraries or by `dprd` (it
//! depends on them: `dprd::status`, `dprd::status::admin_request`), or make
//! system calls of its own: `setns`, raw sockets and the traffic generator
//! are `dpr_xdp::tools`'. Everything it creates is removed when it is done,
//! on error, on panic, and on a signal.
#![forbid(unsafe_code)]

pub mod bench;
pub mod bulk;
pub mod flood;
pub mod frontdoor;
pub mod httpd;
pub mod lab;
pub mod loadgen;
pub mod netns;
pub mod nic;
pub mod sink;
pub mod stop;
pub mod truth;
