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
//! in-memory cluster of [`harness`].
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

pub mod buffer;
pub mod config;
pub mod counters;
pub mod engine;
#[cfg(any(fuzzing, test))]
pub mod fuzz_checks;
pub mod harness;
mod reply;
pub mod verdict;

pub use buffer::PacketBuf;
pub use config::{ConfigError, DeadPeerAction, EngineConfig};
pub use counters::{Counters, PeerCounters};
pub use engine::{Engine, EngineError};
pub use verdict::{DropReason, Verdict};
