//! `dpr-io`: the I/O layer of dpr — the data plane (packet backends, the
//! worker loop, an engine per queue) and host network setup.
//!
//! A [`Backend`] queue lends the packets it receives, in buffers with
//! headroom for an outer IP-in-IP header, to a handler that rewrites them in
//! place and returns their [`Egress`]; the backend transmits them from the
//! same buffers. Three backends, one module each: [`tun`] (a multi-queue
//! TUN device, one queue per worker thread, through [`BatchBackend`]),
//! [`mem`] (in-memory queues for tests) and [`afxdp`] (an AF_XDP socket per
//! uplink queue, forwarding in place, delivering through a TUN queue).
//! [`worker::run_worker`] is the one worker loop; [`shard`] gives each
//! worker its own engine ([`Shard`]) and the control thread the
//! [`EngineSet`] that steers them all. [`xdp`] starts the AF_XDP backend
//! from a plain [`xdp::XdpPlan`] (program, maps, sockets, attachment) and
//! keeps its maps in step with the peers. [`host`] prepares the host
//! (addresses, policy routing, sysctls) from a plain [`host::HostPlan`] over
//! netlink and undoes it when its guard is dropped; [`neigh`] reads next
//! hops' MACs from the neighbour table; [`sockdiag`] counts open
//! connections; [`privs`] drops root after setup.
//!
//! What this layer may not do: decide anything about a packet. It parses
//! only to find which engine owns a packet's flow
//! (`Engine::steer_key`); the engine (`dpr-router`) decides.
//!
//! ```text
//!  kernel ──(policy routing: service TCP, IP-in-IP to the tunnel address)──► TUN queue i
//!  queue i ─► worker i: rx_tx ─► owner = worker_for(flow) ─┬ i: Shard i ─► Egress ─► out of queue i
//!                                                          └ j: ring ─► worker j: Shard j ─► transmit on queue j
//!  control thread: EngineSet ── commands ──► every shard;  ◄── reports at each tick
//! ```
//!
//! Every system call of this crate goes through [`sys`], the only module
//! where `unsafe` is allowed (`#![deny(unsafe_code)]` elsewhere); the TUN
//! backend reaches the device through the small [`sys::TunSys`] trait, so
//! its batching is tested against [`sys::FakeTun`] without a device; every
//! netlink message goes through [`netlink::NetlinkSys`] and host setup
//! through [`host::HostSys`] ([`fake::FakeKernel`] in tests); every
//! `bpf(2)` request through `dpr_xdp::BpfSys` (`dpr_xdp::FakeBpf`). Set-up
//! and undo order, peer updates and XDP map maintenance are tested on the
//! exact sequence of requests, without root.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod afxdp;
pub mod backend;
pub mod fake;
pub mod host;
pub mod mem;
pub mod neigh;
pub mod netlink;
pub mod privs;
pub mod shard;
pub mod sockdiag;
pub mod state;
pub mod sys;
pub mod tun;
pub mod worker;
pub mod xdp;

pub use backend::{Backend, Batch, BatchBackend, BatchIo, Egress, Frame, RxTx, TxOutcome};
pub use shard::{EngineSet, Shard};
pub use worker::{IoStats, WorkerCtx, WorkerStats, Workers, run_worker};
