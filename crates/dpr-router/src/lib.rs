//! `dpr-router`: the DPR router engine, sans-io.
//!
//! [`Engine::process`] takes `now` and one IP packet in a caller-owned
//! buffer with headroom, and returns a [`Verdict`]: pass it to the kernel,
//! deliver it to the local stack, forward it (already encapsulated) to a
//! peer, send the generated reply in its place, or drop it for a counted
//! [`DropReason`]. It composes `dpr-packet` (parse, rewrite, IP-in-IP),
//! `dpr-table` (the routing table and the load table) and `dpr-policy` (the
//! redirect decision) into the seed's per-packet algorithm. It performs no
//! I/O, reads no clock and draws no randomness of its own, so it can be
//! embedded behind any backend, fuzzed, and run deterministically on the
//! in-memory cluster of `harness` (test tooling: cargo feature `testkit`).
//!
//! ```text
//!  IP packet ─► parse_ip ─┬─ IP-in-IP to our tunnel address ─► from a known peer? ─► decapsulate ─► Deliver
//!                         │      (record "served for peer X"; never redirected again)      └─ no ─► Drop
//!                         ├─ TCP to a service address:port
//!                         │     SYN, new ─► policy ─► Local: record, Deliver
//!                         │                       └► Redirect(p): record, clamp MSS, encapsulate ─► Forward
//!                         │     other ─► routes: Local ─► Deliver; Peer(p) alive ─► Forward
//!                         │                      Peer(p) dead ─► RST (Reply) or Drop; unknown ─► Deliver
//!                         ├─ ICMP error quoting a redirected connection ─► Forward to the serving peer
//!                         ├─ fragment of service TCP ─► Drop (no reassembly)
//!                         └─ anything else ─► Pass
//! ```
//!
//! # Embedding the engine
//!
//! ```
//! use dpr_policy::{SplitMix64, Threshold, ThresholdConfig};
//! use dpr_router::{Engine, EngineConfig, PacketBuf, Verdict};
//! use dpr_table::{Capacity, LoadFigures, LoadReport, LoadTableConfig, PeerId, Timestamp};
//! use std::net::Ipv4Addr;
//!
//! // This host: tunnel 198.19.0.1, serving 198.18.1.1:80; one peer at tunnel 198.19.0.2.
//! let cfg = EngineConfig::new(Ipv4Addr::new(198, 19, 0, 1).into(), vec![Ipv4Addr::new(198, 18, 1, 1).into()], vec![80]);
//! let policy = Box::new(Threshold::new(ThresholdConfig { threshold: 100.0 })?);
//! let mut engine = Engine::new(cfg, PeerId(0), Capacity::default(), LoadTableConfig::default(), policy, Box::new(SplitMix64::new(7)))?;
//! engine.add_peer(PeerId(1), Ipv4Addr::new(198, 19, 0, 2).into(), vec![], Timestamp::ZERO)?;
//! // Load figures come from the I/O layer: the peer's report, this host's own count.
//! let idle = LoadReport { seq: 1, figures: LoadFigures::default(), capacity: Capacity::default(), draining: false };
//! engine.apply_report(PeerId(1), &idle, Timestamp::ZERO)?;
//! engine.set_local_load(LoadFigures { open_connections: 250, ..LoadFigures::default() }, Capacity::default())?;
//!
//! // A SYN from 198.18.100.1:40000 to the service, after 64 bytes of headroom.
//! let mut buf = vec![0u8; 64];
//! buf.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 100, 1, 198, 18, 1, 1]);
//! buf.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
//! let end = buf.len();
//! let mut pkt = PacketBuf::new(&mut buf, 64, end).expect("range inside the buffer");
//! match engine.process(Timestamp::from_millis(1), &mut pkt) {
//!     // Over its threshold (250 >= 100) with an idle peer: redirected.
//!     // `pkt.bytes()` is now the IP-in-IP packet to send to 198.19.0.2.
//!     Verdict::Forward { peer, to } => assert_eq!((peer, to), (PeerId(1), Ipv4Addr::new(198, 19, 0, 2).into())),
//!     other => panic!("expected a redirect, got {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Rules worth knowing:
//! - **Two tables.** `routes` holds the connections this host routes (the
//!   seed's routing table, with local ones too so local load is known);
//!   `served` holds those that arrived from a peer, with the peer that sent
//!   them (for restart recovery). A flood through one cannot evict the other.
//! - **Direct server return** means a router sees only the client's
//!   direction. A FIN in both directions is never observed at the
//!   redirecting host, so redirected entries end by the closing timeout
//!   after the client's FIN (or by RST, or idle expiry).
//! - **MSS clamping** rewrites SYN / SYN-ACK segments that cross the tunnel.
//!   The client's segments reach the serving host through the tunnel, but
//!   the SYN-ACK that sets their size goes from the serving host straight
//!   to the client: the serving host must also announce a small enough MSS
//!   (the daemon sets `advmss` on its route to clients).
//! - **Fragments** of service TCP are dropped and counted: later fragments
//!   carry no ports, the router does not reassemble, and clamped TCP with DF
//!   set does not fragment.
//! - **Dead peers**: packets of a connection routed to a dead or removed
//!   peer get an RST to the client (default) or are dropped; the route is
//!   removed. A retransmitted SYN of such a connection is routed afresh.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
mod batch_checks;
pub mod buffer;
pub mod cluster;
pub mod config;
pub mod counters;
pub mod engine;
mod fast;
#[cfg(any(fuzzing, test))]
pub mod fuzz_checks;
#[cfg(any(feature = "testkit", test))]
pub mod harness;
pub mod ops;
mod outer;
mod reply;
pub mod verdict;

pub use buffer::PacketBuf;
pub use config::{ConfigError, DeadPeerAction, EngineConfig, TunnelAuth, TunnelKeys, VipConfig};
pub use counters::{Counters, PeerCounters, VipCounters};
pub use engine::{
    DecisionRecord, Engine, EngineError, KeyedFlowEvent, MAX_KEYED_FLOW_EVENTS, ReleasedPacket,
};
pub use ops::ClusterEngine;
pub use verdict::{DropReason, Verdict};
