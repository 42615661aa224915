//! What `dprd status` shows: a snapshot built by the control loop, sent as
//! JSON over the admin socket, rendered as a table read at a glance (in the
//! manner of `ipvsadm -Ln --stats`).

use crate::control::PeerView;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// One peer with its counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    /// Identity, state, load.
    pub peer: PeerView,
    /// Connections redirected to it.
    pub redirected_connections: u64,
    /// Packets forwarded to it.
    pub forwarded_packets: u64,
    /// Bytes forwarded to it.
    pub forwarded_bytes: u64,
    /// IP-in-IP packets received from it.
    pub received_packets: u64,
    /// Connections it redirected here.
    pub served_connections: u64,
}

/// The daemon's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Status {
    /// Host name.
    pub host: String,
    /// Host id.
    pub id: u16,
    /// Policy name.
    pub policy: String,
    /// Backend.
    pub backend: String,
    /// Draining.
    pub draining: bool,
    /// Cluster protocol phase: recovering, active, draining, leaving, left.
    #[serde(default)]
    pub phase: String,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Open service connections on this host (the load metric).
    pub open_connections: u32,
    /// This host's normalised load.
    pub load: f64,
    /// Routing table entries.
    pub routes: usize,
    /// Served-for-peers table entries.
    pub served: usize,
    /// Capacity of each table.
    pub table_capacity: usize,
    /// Table entries evicted at capacity (both tables).
    pub evicted: u64,
    /// Table entries expired (both tables).
    pub expired: u64,
    /// Peers.
    pub peers: Vec<PeerRow>,
    /// Packets per verdict.
    pub verdicts: BTreeMap<String, u64>,
    /// New connections and other events.
    pub events: BTreeMap<String, u64>,
    /// Drops per reason.
    pub drops: BTreeMap<String, u64>,
    /// Malformed packets per layer.
    pub malformed: BTreeMap<String, u64>,
    /// Backend and control-plane counters.
    pub io: BTreeMap<String, u64>,
}

fn kv(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join("  ")
}

impl Status {
    /// The table `dprd status` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let state = match self.phase.as_str() {
            "" if self.draining => "DRAINING".to_string(),
            "" | "active" => "serving".to_string(),
            p => p.to_uppercase(),
        };
        let _ = writeln!(
            s,
            "dprd {} (id {})  policy {}  backend {}  {}  up {:.0}s",
            self.host, self.id, self.policy, self.backend, state, self.uptime_s
        );
        let _ = writeln!(
            s,
            "local: open connections {}  load {:.2}  routes {}/{}  served-for-peers {}  evicted {}  expired {}",
            self.open_connections,
            self.load,
            self.routes,
            self.table_capacity,
            self.served,
            self.evicted,
            self.expired
        );
        let _ = writeln!(
            s,
            "{:<12} {:>4} {:<16} {:<9} {:>8} {:>6} {:>8} {:>10} {:>10} {:>12} {:>10} {:>10}",
            "Peer",
            "Id",
            "Tunnel",
            "State",
            "Load",
            "Conns",
            "Age(ms)",
            "RedirConn",
            "FwdPkts",
            "FwdBytes",
            "RecvPkts",
            "ServedConn"
        );
        for p in &self.peers {
            let age = p
                .peer
                .report_age_ms
                .map_or_else(|| "-".to_string(), |a| a.to_string());
            let _ = writeln!(
                s,
                "  -> {:<7} {:>4} {:<16} {:<9} {:>8.2} {:>6} {:>8} {:>10} {:>10} {:>12} {:>10} {:>10}",
                p.peer.name,
                p.peer.id,
                p.peer.tunnel_addr.to_string(),
                p.peer.state,
                if p.peer.load.is_finite() {
                    p.peer.load
                } else {
                    -1.0
                },
                p.peer.open_connections,
                age,
                p.redirected_connections,
                p.forwarded_packets,
                p.forwarded_bytes,
                p.received_packets,
                p.served_connections
            );
        }
        let _ = writeln!(s, "verdicts:    {}", kv(&self.verdicts));
        let _ = writeln!(s, "connections: {}", kv(&self.events));
        let _ = writeln!(s, "drops:       {}", kv(&self.drops));
        if !self.malformed.is_empty() {
            let _ = writeln!(s, "malformed:   {}", kv(&self.malformed));
        }
        let _ = writeln!(s, "io:          {}", kv(&self.io));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_section_and_round_trips_as_json() {
        let mut st = Status {
            host: "h0".into(),
            policy: "threshold".into(),
            ..Status::default()
        };
        st.drops.insert("malformed".into(), 3);
        st.peers.push(PeerRow {
            peer: PeerView {
                id: 1,
                name: "h1".into(),
                tunnel_addr: "198.19.0.2".parse().unwrap_or_else(|_| unreachable!()),
                state: "alive".into(),
                load: 2.0,
                open_connections: 2,
                report_age_ms: Some(40),
            },
            redirected_connections: 5,
            forwarded_packets: 50,
            forwarded_bytes: 5000,
            received_packets: 0,
            served_connections: 1,
        });
        let r = st.render();
        assert!(r.contains("  -> h1"), "{r}");
        assert!(r.contains("malformed 3"), "{r}");
        let j = serde_json::to_string(&st).unwrap_or_default();
        let back: Status = serde_json::from_str(&j).unwrap_or_default();
        assert_eq!(back, st);
    }
}
