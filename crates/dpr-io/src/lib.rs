//! `dpr-io`: the I/O layer of dpr — packet backends and host network setup.
//!
//! A backend moves IP packets between the host and the router engine in
//! batches: [`Backend::recv_batch`] fills a [`Batch`] of frames (each with
//! headroom for an outer IP-in-IP header), and [`Backend::send_batch`]
//! transmits the frames the caller marked. Three backends, one module
//! each: [`tun`] (a multi-queue TUN device, one queue per worker thread),
//! [`mem`] (in-memory queues for tests) and [`afxdp`] (an AF_XDP socket
//! per uplink queue, forwarding in place; its worker runs the engine from
//! a callback instead of the batch trait, and delivers through a TUN queue). [`xdp`]
//! starts the AF_XDP backend from a plain [`xdp::XdpPlan`] (program, maps,
//! sockets, attachment) and keeps its maps in step with the peers. [`host`]
//! prepares the host (addresses, policy routing, sysctls) from a plain
//! [`host::HostPlan`] over netlink and undoes it when its guard is dropped;
//! [`neigh`] reads next hops' MACs
//! from the neighbour table; [`sockdiag`] counts open connections;
//! [`privs`] drops root after setup.
//!
//! What this layer may not do: decide anything about a packet. It never
//! parses past the length of a frame; the engine (`dpr-router`) decides.
//!
//! ```text
//!  kernel ──(policy routing: service TCP, IP-in-IP to the tunnel address)──► TUN queue i
//!  TUN queue i ─► recv_batch ─► Batch ─► worker: lock engine once, process every frame ─► send_batch ─► TUN queue i
//!                                                   (Deliver / Pass / Forward / Reply are all written back:
//!                                                    the kernel delivers, or routes the IP-in-IP packet out)
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
pub mod sockdiag;
pub mod sys;
pub mod tun;
pub mod xdp;

pub use backend::{Backend, Batch, Frame, TxOutcome};
