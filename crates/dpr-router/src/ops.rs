//! What the cluster protocol needs of the router it steers.
//!
//! [`cluster::Node`](crate::cluster::Node) works on one [`Engine`], or on
//! an engine per queue behind a handle that applies each call to all of
//! them (`dpr_io::shard::EngineSet`). Calls that change peers, loads or
//! modes go to every engine; calls about one flow go to the engine that
//! owns it; questions about flows ask them all.

use crate::engine::{Engine, EngineError};
use dpr_packet::FlowKey;
use dpr_table::{LoadReport, LoadTable, PeerId, ReportOutcome, Timestamp};
use std::net::IpAddr;

/// The router operations the cluster protocol uses. See [`Engine`]'s
/// methods of the same names for what each does.
pub trait ClusterEngine {
    /// [`Engine::add_peer`].
    fn add_peer(
        &mut self,
        id: PeerId,
        tunnel_addr: IpAddr,
        service_addrs: Vec<IpAddr>,
        now: Timestamp,
    ) -> Result<(), EngineError>;
    /// [`Engine::remove_peer`].
    fn remove_peer(&mut self, id: PeerId) -> Result<(), EngineError>;
    /// [`Engine::mark_peer_left`].
    fn mark_peer_left(&mut self, id: PeerId) -> Result<(), EngineError>;
    /// [`Engine::apply_report`].
    fn apply_report(
        &mut self,
        id: PeerId,
        report: &LoadReport,
        now: Timestamp,
    ) -> Result<ReportOutcome, EngineError>;
    /// [`Engine::set_draining`].
    fn set_draining(&mut self, draining: bool);
    /// [`Engine::set_recovering`].
    fn set_recovering(&mut self, recovering: bool);
    /// [`Engine::peer_idle`].
    fn peer_idle(&mut self, peer: PeerId);
    /// [`Engine::loads`]: peers and this host's load (the whole host's).
    fn loads(&self) -> &LoadTable;
    /// [`Engine::forwarding_connections`].
    fn forwarding_connections(&self, now: Timestamp) -> usize;
    /// [`Engine::has_cut`].
    fn has_cut(&self, peer: PeerId) -> bool;
    /// [`Engine::take_cut`].
    fn take_cut(&mut self, peer: PeerId) -> Vec<FlowKey>;
    /// [`Engine::forget_served`]; true when the engine that owns the flow
    /// is known to have had it (a handle that cannot wait says true).
    fn forget_served(&mut self, flow: &FlowKey) -> bool;
    /// [`Engine::restore_route`]; true when a route was added (a handle
    /// that cannot wait says true once the owner was told).
    fn restore_route(
        &mut self,
        flow: &FlowKey,
        peer: PeerId,
        now: Timestamp,
    ) -> Result<bool, EngineError>;
    /// [`Engine::served_for`].
    fn served_for(&mut self, origin: PeerId, now: Timestamp) -> Vec<FlowKey>;
    /// [`Engine::last_redirector`].
    fn last_redirector(&self) -> Option<PeerId>;
    /// [`Engine::serves_flows`] (a handle over several engines asks them
    /// all: a peer's flow query, one per datagram, never per packet).
    fn serves_flows(&mut self, flows: &[FlowKey], now: Timestamp) -> Vec<FlowKey>;
    /// [`Engine::claim_flow`]; true when the flow was held (a handle that
    /// cannot wait says true once the owner was told).
    fn claim_flow(&mut self, flow: &FlowKey, peer: PeerId, now: Timestamp) -> bool;
}

impl ClusterEngine for Engine {
    fn add_peer(
        &mut self,
        id: PeerId,
        tunnel_addr: IpAddr,
        service_addrs: Vec<IpAddr>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        Engine::add_peer(self, id, tunnel_addr, service_addrs, now)
    }
    fn remove_peer(&mut self, id: PeerId) -> Result<(), EngineError> {
        Engine::remove_peer(self, id)
    }
    fn mark_peer_left(&mut self, id: PeerId) -> Result<(), EngineError> {
        Engine::mark_peer_left(self, id)
    }
    fn apply_report(
        &mut self,
        id: PeerId,
        report: &LoadReport,
        now: Timestamp,
    ) -> Result<ReportOutcome, EngineError> {
        Engine::apply_report(self, id, report, now)
    }
    fn set_draining(&mut self, draining: bool) {
        Engine::set_draining(self, draining);
    }
    fn set_recovering(&mut self, recovering: bool) {
        Engine::set_recovering(self, recovering);
    }
    fn peer_idle(&mut self, peer: PeerId) {
        Engine::peer_idle(self, peer);
    }
    fn loads(&self) -> &LoadTable {
        Engine::loads(self)
    }
    fn forwarding_connections(&self, now: Timestamp) -> usize {
        Engine::forwarding_connections(self, now)
    }
    fn has_cut(&self, peer: PeerId) -> bool {
        Engine::has_cut(self, peer)
    }
    fn take_cut(&mut self, peer: PeerId) -> Vec<FlowKey> {
        Engine::take_cut(self, peer)
    }
    fn forget_served(&mut self, flow: &FlowKey) -> bool {
        Engine::forget_served(self, flow)
    }
    fn restore_route(
        &mut self,
        flow: &FlowKey,
        peer: PeerId,
        now: Timestamp,
    ) -> Result<bool, EngineError> {
        Engine::restore_route(self, flow, peer, now)
    }
    fn served_for(&mut self, origin: PeerId, now: Timestamp) -> Vec<FlowKey> {
        Engine::served_for(self, origin, now)
    }
    fn last_redirector(&self) -> Option<PeerId> {
        Engine::last_redirector(self)
    }
    fn serves_flows(&mut self, flows: &[FlowKey], now: Timestamp) -> Vec<FlowKey> {
        Engine::serves_flows(self, flows, now)
    }
    fn claim_flow(&mut self, flow: &FlowKey, peer: PeerId, now: Timestamp) -> bool {
        Engine::claim_flow(self, flow, peer, now)
    }
}
