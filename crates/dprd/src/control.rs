//! The control plane: the daemon's adapter to the cluster protocol.
//!
//! The protocol itself is `dpr_router::cluster::Node` (sans-io: signed load
//! reports, liveness, membership, drain, restart recovery; see
//! `docs/cluster-protocol.md`). This module builds it from the daemon's
//! configuration and shapes what it knows for status output; the daemon's
//! event loop (`daemon::control_loop`) owns the UDP socket and the clock
//! and is the only caller.

use crate::config::Config;
pub use crate::error::ControlError;
use dpr_router::ClusterEngine;
use dpr_router::cluster::{KeyRing, Node, NodePhase, Reject};
use dpr_table::PeerState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

pub use dpr_router::cluster::{Clock, Transmit};

/// What status output shows of one peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// Id.
    pub id: u16,
    /// Name from the configuration.
    pub name: String,
    /// Tunnel address.
    pub tunnel_addr: IpAddr,
    /// State.
    pub state: String,
    /// Normalised load (with pending redirects).
    pub load: f64,
    /// Reported open connections.
    pub open_connections: u32,
    /// Age of the freshest figures held for it, in milliseconds (`None`:
    /// none yet).
    pub report_age_ms: Option<u64>,
    /// Times this host has held it dead since it started (entries into
    /// the state, seen every control tick).
    #[serde(default)]
    pub deaths: u64,
}

/// Name of a peer state for output.
pub fn state_name(s: PeerState) -> &'static str {
    match s {
        PeerState::Alive => "alive",
        PeerState::Suspect => "suspect",
        PeerState::Dead => "dead",
        PeerState::Draining => "draining",
        PeerState::Left => "left",
    }
}

/// Name of a node phase for output.
pub fn phase_name(p: NodePhase) -> &'static str {
    match p {
        NodePhase::Recovering => "recovering",
        NodePhase::Active => "active",
        NodePhase::Draining => "draining",
        NodePhase::Leaving => "leaving",
        NodePhase::Left => "left",
    }
}

/// A control tick this late (ms) is logged: the loop runs every 5 ms, and
/// peers hold a host silent for `dead_after_ms` dead.
const HELD_UP_MS: u64 = 250;

/// The control plane of one host.
#[derive(Debug)]
pub struct ControlPlane {
    node: Node,
    names: BTreeMap<u16, String>,
    /// Each peer's state at the last tick, and how often it became dead.
    liveness: BTreeMap<u16, (PeerState, u64)>,
    /// The last tick, and the longest time between two ticks (ms): how
    /// long the control loop was held up at worst (a busy machine).
    last_tick: Option<dpr_table::Timestamp>,
    tick_gap_max_ms: u64,
}

fn names(cfg: &Config) -> BTreeMap<u16, String> {
    cfg.cluster
        .peers
        .iter()
        .map(|p| (p.id, p.name.clone().unwrap_or_default()))
        .collect()
}

impl ControlPlane {
    /// Starts the protocol: adds the configured peers to the engine and,
    /// unless `cluster.recover_on_start` is off, recovers the routes of
    /// connections this host redirected before a restart.
    pub fn new(
        cfg: &Config,
        keys: KeyRing,
        now: Clock,
        engine: &mut dyn ClusterEngine,
    ) -> Result<Self, ControlError> {
        let node = Node::new(cfg.node_config(), keys, cfg.peer_configs(), now, engine)?;
        Ok(Self {
            node,
            names: names(cfg),
            liveness: BTreeMap::new(),
            last_tick: None,
            tick_gap_max_ms: 0,
        })
    }

    /// A datagram arrived on the control port from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Clock,
        from: IpAddr,
        bytes: &[u8],
        engine: &mut dyn ClusterEngine,
    ) {
        if let Err(r) = self.node.handle_datagram(now, from, bytes, engine) {
            tracing::debug!(%from, reason = r.name(), "control message refused");
        }
    }

    /// Tells peers when this host has just become idle (join-idle).
    /// Also notes every peer that has just become dead (the daemon calls
    /// this every tick, after the engine's refresh of the load table).
    pub fn check_idle(&mut self, now: Clock, engine: &dyn ClusterEngine) {
        self.node.check_idle(now, engine);
        if let Some(t) = self.last_tick.replace(now.mono) {
            let gap = now.mono.0.saturating_sub(t.0) / 1_000_000;
            self.tick_gap_max_ms = self.tick_gap_max_ms.max(gap);
            if gap >= HELD_UP_MS {
                // Peers may hold this host dead meanwhile: it was silent.
                tracing::warn!(gap_ms = gap, "control loop held up");
            }
        }
        for p in engine.loads().peers() {
            let e = self.liveness.entry(p.id.0).or_insert((p.state, 0));
            if p.state == PeerState::Dead && e.0 != PeerState::Dead {
                e.1 += 1;
                let silent_ms = now.mono.0.saturating_sub(p.received_at.0) / 1_000_000;
                let name = self.names.get(&p.id.0).map_or("", String::as_str);
                tracing::warn!(peer = p.id.0, name, silent_ms, "peer dead");
            }
            e.0 = p.state;
        }
    }

    /// The next connection a peer cut while this host was away (client to
    /// service): its socket here, if any, is to be aborted.
    pub fn poll_abort(&mut self) -> Option<dpr_packet::FlowKey> {
        self.node.poll_abort()
    }

    /// VIP mode: asks the live peers who serves `flows` (see
    /// `Node::ask_flows`).
    pub fn ask_flows(
        &mut self,
        now: Clock,
        flows: &[dpr_packet::FlowKey],
        engine: &dyn ClusterEngine,
    ) {
        self.node.ask_flows(now, flows, engine);
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.node.poll_transmit()
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> dpr_table::Timestamp {
        self.node.poll_timeout()
    }

    /// Timer work: reports, drain progress, recovery.
    pub fn handle_timeout(&mut self, now: Clock, engine: &mut dyn ClusterEngine) {
        let before = self.node.phase();
        self.node.handle_timeout(now, engine);
        let after = self.node.phase();
        if before != after {
            tracing::info!(
                from = phase_name(before),
                to = phase_name(after),
                "cluster phase"
            );
            if after == NodePhase::Left {
                tracing::info!("drained and announced: this host can be stopped");
            }
        }
    }

    /// A new configuration (SIGHUP): peers added, removed or moved, the
    /// key ring replaced.
    pub fn reload(
        &mut self,
        cfg: &Config,
        keys: KeyRing,
        now: Clock,
        engine: &mut dyn ClusterEngine,
    ) -> Result<(), ControlError> {
        self.node.reload(cfg.peer_configs(), now, engine)?;
        self.node.set_keys(keys);
        self.names = names(cfg);
        Ok(())
    }

    /// Starts draining (`deadline`: the configured one when `None`).
    pub fn start_drain(
        &mut self,
        now: Clock,
        deadline: Option<Duration>,
        engine: &mut dyn ClusterEngine,
    ) {
        self.node.start_drain(now, deadline, engine);
    }

    /// Whether this host is draining (or has drained).
    pub fn is_draining(&self) -> bool {
        matches!(
            self.node.phase(),
            NodePhase::Draining | NodePhase::Leaving | NodePhase::Left
        )
    }

    /// The protocol's phase.
    pub fn phase(&self) -> NodePhase {
        self.node.phase()
    }

    /// This host's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.node.incarnation()
    }

    /// Control messages refused, all reasons.
    pub fn rejected(&self) -> u64 {
        self.node.counters().rejected.iter().sum()
    }

    /// Control messages refused, by reason.
    pub fn rejected_by_reason(&self) -> Vec<(&'static str, u64)> {
        Reject::ALL
            .iter()
            .map(|r| (r.name(), self.node.counters().rejected_of(*r)))
            .collect()
    }

    /// The protocol's counters.
    pub fn counters(&self) -> &dpr_router::cluster::ClusterCounters {
        self.node.counters()
    }

    /// The protocol's counters of recovery and liveness under loss, by
    /// their status names.
    pub fn loss_counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.node.counters();
        vec![
            ("recovery_requests_sent", c.recovery_requests_sent),
            ("recovery_requests_received", c.recovery_requests_received),
            ("recovery_requests_answered", c.recovery_requests_answered),
            ("recovery_chunks_sent", c.recovery_chunks_sent),
            ("recovery_flows_sent", c.recovery_flows_sent),
            ("recovery_chunks_received", c.recovery_chunks_received),
            ("recovery_chunks_duplicate", c.recovery_chunks_duplicate),
            ("recovery_flows_received", c.recovery_flows_received),
            ("recovery_incomplete", c.recovery_incomplete),
            ("recovery_ms", c.recovery_ms),
            ("reports_applied", c.reports_applied),
            ("probes_sent", c.probes_sent),
            ("probes_answered", c.probes_answered),
            ("control_tick_gap_max_ms", self.tick_gap_max_ms),
            (
                "peers_declared_dead",
                self.liveness.values().map(|l| l.1).sum(),
            ),
        ]
    }

    /// Control messages sent.
    pub fn sent(&self) -> u64 {
        self.node.counters().sent_messages
    }

    /// The peers as status output shows them.
    pub fn peers(&self, now: Clock, engine: &dyn ClusterEngine) -> Vec<PeerView> {
        let fresh: BTreeMap<u16, dpr_table::Timestamp> = self
            .node
            .status()
            .peers
            .iter()
            .filter_map(|p| Some((p.id.0, p.figures_at?)))
            .collect();
        engine
            .loads()
            .peers()
            .iter()
            .filter(|p| self.names.contains_key(&p.id.0))
            .map(|p| PeerView {
                id: p.id.0,
                name: self.names.get(&p.id.0).cloned().unwrap_or_default(),
                tunnel_addr: p.tunnel_addr,
                state: state_name(p.state).into(),
                load: p.load(),
                open_connections: p.figures.open_connections,
                report_age_ms: fresh
                    .get(&p.id.0)
                    .map(|t| now.mono.0.saturating_sub(t.0) / 1_000_000),
                deaths: self.liveness.get(&p.id.0).map_or(0, |l| l.1),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpr_policy::SplitMix64;
    use dpr_router::Engine;
    use dpr_router::cluster::ClusterError;
    use dpr_table::Timestamp;

    const CFG: &str = r#"
[host]
name = "h0"
id = 0
tunnel_addr = "198.19.0.1"
service_addrs = ["198.18.0.1"]
service_ports = [80]
uplink = "eth0"

[[cluster.peers]]
id = 1
name = "h1"
tunnel_addr = "198.19.0.2"
service_addrs = ["198.18.0.2"]
"#;

    fn setup() -> (Config, KeyRing, Engine) {
        let cfg = Config::parse(CFG).unwrap_or_else(|e| unreachable!("{e}"));
        let keys = KeyRing::new(&[(1, &[7u8; 32])]).unwrap_or_else(|e| unreachable!("{e}"));
        let policy = cfg.make_policy().unwrap_or_else(|e| unreachable!("{e}"));
        let engine = Engine::new(
            cfg.engine_config(),
            cfg.local_id(),
            cfg.capacity(),
            cfg.load_table_config(),
            policy,
            Box::new(SplitMix64::new(1)),
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        (cfg, keys, engine)
    }

    fn at(s: u64) -> Clock {
        Clock {
            mono: Timestamp(s * 1_000_000_000),
            unix_ns: 1_700_000_000_000_000_000 + s * 1_000_000_000,
        }
    }

    #[test]
    fn a_peer_set_the_engine_refuses_is_a_typed_error() {
        let (mut cfg, keys, mut engine) = setup();
        let mut ok_cfg = cfg.clone();
        // What validation would refuse, handed over unvalidated: a peer
        // with this host's id.
        cfg.cluster.peers[0].id = 0;
        match ControlPlane::new(&cfg, keys.clone(), at(1), &mut engine) {
            Err(ControlError(ClusterError::Engine(_) | ClusterError::Config { .. })) => {}
            other => unreachable!("{other:?}"),
        }
        // A good start, then a reload with that peer set: refused, typed,
        // and the peers in force stay.
        let mut cp = ControlPlane::new(&ok_cfg, keys.clone(), at(1), &mut engine)
            .unwrap_or_else(|e| unreachable!("{e}"));
        let e = cp.reload(&cfg, keys.clone(), at(2), &mut engine);
        assert!(e.is_err(), "{e:?}");
        let ids: Vec<u16> = cp.peers(at(2), &engine).iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![1]);
        // And a good reload goes through.
        ok_cfg.cluster.peers[0].name = Some("renamed".into());
        assert!(cp.reload(&ok_cfg, keys, at(3), &mut engine).is_ok());
        let names: Vec<String> = cp
            .peers(at(3), &engine)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, vec!["renamed".to_string()]);
    }
}
