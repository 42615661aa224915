//! `dpr-policy`: the decision layer of dpr.
//!
//! When a SYN arrives for a connection the [`ConnTable`](dpr_table::ConnTable)
//! does not know, a [`Policy`] answers one question: serve it here, or
//! redirect it to which peer? It sees the new connection's
//! `FlowKey` (and whether it already arrived from a
//! peer), the [`LoadTable`] with this host's own load beside the peers',
//! and an injected [`RandomSource`]. Six strategies, one module each:
//! [`threshold`] (the seed design), [`least_load`], [`stateless_hash`]
//! (weighted rendezvous over a bucket table), [`two_choices`] (power of
//! two choices), [`threshold_two_choices`] (threshold decides whether, two
//! choices where) and [`join_idle`] (the same, preferring peers that
//! advertised they were idle). Each factors its pure selection function out
//! so property tests reach it directly. [`metric`] describes how load is
//! measured.
//!
//! What this layer may not do: read a clock, a socket or a file, or draw
//! randomness of its own; it keeps no per-connection state. The only state
//! a strategy keeps is derived from the load table (the hash strategy's
//! bucket table), rebuilt when the table's membership epoch moves, or
//! handed to it by the caller (join-idle's idle advertisements). It never
//! redirects a connection that arrived from a peer (one hop only) and never
//! names a peer that is not `Alive` (dead, suspect, draining or left).
//!
//! ```text
//!  SYN, unknown flow ─► NewConnection { flow, arrived_from_peer }
//!        │                         LoadTable (peers + local, min-tree, weights)
//!        ▼                              │
//!  decide_and_account(policy, conn, &mut loads, rng)
//!        ├─ policy.decide(conn, &loads, rng) ─► ServeLocally | Redirect(peer)
//!        ├─ guard: one hop only, peer must be Alive
//!        └─ Redirect(peer) ─► loads.record_redirect(peer)   (optimistic accounting)
//!        ▼
//!  ConnTable::insert(flow, Route::Local | Route::Peer(peer), now)
//! ```
#![forbid(unsafe_code)]

pub mod error;
pub mod join_idle;
pub mod least_load;
pub mod metric;
pub mod random;
pub mod stateless_hash;
pub mod threshold;
pub mod threshold_two_choices;
pub mod two_choices;

#[cfg(test)]
mod tests;

pub use error::PolicyError;
pub use join_idle::{JoinIdle, JoinIdleConfig};
pub use least_load::LeastLoad;
pub use random::{RandomSource, SplitMix64};
pub use stateless_hash::{StatelessHash, StatelessHashConfig};
pub use threshold::{Threshold, ThresholdConfig};
pub use threshold_two_choices::ThresholdTwoChoices;
pub use two_choices::TwoChoices;

use dpr_packet::FlowKey;
use dpr_table::{LoadTable, PeerId};

/// A connection about to be routed (its SYN is in hand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewConnection {
    /// The connection, client to server.
    pub flow: FlowKey,
    /// The SYN came from a peer over IP-in-IP: it must be served here.
    pub arrived_from_peer: bool,
}

impl NewConnection {
    /// A connection that arrived directly from a client.
    pub const fn from_client(flow: FlowKey) -> Self {
        Self {
            flow,
            arrived_from_peer: false,
        }
    }
}

/// A policy's answer for one new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedirectDecision {
    /// Serve the connection on this host.
    ServeLocally,
    /// Redirect it to this peer.
    Redirect(PeerId),
}

/// A redirect strategy.
pub trait Policy {
    /// Decides where `conn` goes. Implementations must return
    /// `ServeLocally` when `conn.arrived_from_peer`, and may only name a
    /// peer for which `loads.is_eligible` holds.
    fn decide(
        &mut self,
        conn: &NewConnection,
        loads: &LoadTable,
        rng: &mut dyn RandomSource,
    ) -> RedirectDecision;

    /// A short name for status output.
    fn name(&self) -> &'static str;

    /// `peer` advertised that it has just become idle (the cluster
    /// protocol's idle advertisement). Only strategies that use it
    /// (join-idle) do anything.
    fn peer_idle(&mut self, _peer: PeerId) {}
}

/// Runs `policy`, enforces the two rules whatever the strategy returned
/// (one hop only; only `Alive` peers), and on a redirect counts the
/// connection against the peer until its next report.
pub fn decide_and_account<P: Policy + ?Sized>(
    policy: &mut P,
    conn: &NewConnection,
    loads: &mut LoadTable,
    rng: &mut dyn RandomSource,
) -> RedirectDecision {
    if conn.arrived_from_peer {
        return RedirectDecision::ServeLocally;
    }
    match policy.decide(conn, loads, rng) {
        RedirectDecision::Redirect(peer) if loads.is_eligible(peer) => {
            // Cannot fail: eligibility implies the peer is known.
            let _ = loads.record_redirect(peer);
            RedirectDecision::Redirect(peer)
        }
        _ => RedirectDecision::ServeLocally,
    }
}
