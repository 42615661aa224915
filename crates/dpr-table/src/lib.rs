//! `dpr-table`: the state layer of dpr.
//!
//! Two tables live here. The [`ConnTable`] maps each connection's
//! [`FlowKey`](dpr_packet::FlowKey) to where its packets go (served here or
//! redirected to a peer), its TCP progress, when it was last seen and how
//! much it carried; it is bounded (least recently used entries are evicted
//! in O(1), counted; half-open ones first past a reserve, so a SYN flood
//! cannot empty it of established connections) and ages entries by
//! state-dependent idle timeouts. The
//! [`LoadTable`] holds every peer's identity, tunnel address, last load
//! report and health, and this host's own load beside them, with indices
//! that let a policy find the least-loaded or a capacity-weighted random
//! eligible host without scanning.
//!
//! What this layer may not do: read a clock, a socket or a file, draw
//! random numbers, or decide anything. Time comes in as a [`Timestamp`]
//! argument, load figures as reports; decisions belong to `dpr-policy`.
//! It uses no `unsafe` and does not panic on any input.
//!
//! ```text
//!  packet ─► parse (dpr-packet) ─► FlowKey ─► worker_for(hash) ─► worker's ConnTable
//!                                                  │
//!          ConnTable::on_packet(key, dir, flags, len, now)
//!             ├─ Forward(route) / Reset(route) ─► serve / encapsulate to peer
//!             └─ Unknown + SYN ─► dpr-policy decides with &LoadTable ─► ConnTable::insert
//!  load report (from a peer) ─► LoadTable::apply_report(id, report, now)
//!  timer tick ─► LoadTable::refresh(now), ConnTable::sweep(now, budget)
//!  restart ─► ConnTable::export(now) bytes ─► ConnTable::import(bytes, now)
//! ```
#![forbid(unsafe_code)]

pub mod conn;
pub mod error;
pub mod key;
pub mod load;
pub mod shard;
pub mod time;

#[cfg(test)]
mod tests;

pub use conn::{
    BATCH, ConnEntry, ConnState, ConnTable, ConnTableConfig, Direction, InsertOutcome, MemoryHook,
    PacketInfo, PacketOutcome, PrefetchHook, Route, TableStats,
};
pub use error::{Result, TableError};
pub use key::{IsnSlot, TableKey, V4Key, WideKey};
pub use load::{
    Capacity, CapacityWeights, HostRef, LoadFigures, LoadMetric, LoadReport, LoadTable,
    LoadTableConfig, MetricWeights, PeerId, PeerRecord, PeerState, ReportOutcome,
};
pub use shard::{ShardedConnTable, worker_for};
pub use time::Timestamp;
