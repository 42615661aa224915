//! The control plane: the one module that speaks the cluster protocol.
//!
//! It is shaped like the sans-io `dpr_router::cluster::Node` that issue 5
//! brings (quinn-proto style): the daemon feeds it datagrams and timeouts
//! and asks it for datagrams to send; it never touches a socket or a clock.
//! The daemon's event loop (`daemon::control_loop`) is the only caller, so
//! swapping the implementation touches this file and nothing else.
//!
//! TODO(issue5): everything below the `Interim` marker is a stand-in,
//! kept to this module on purpose: plain, UNAUTHENTICATED load reports
//! (`DPRi` magic, host id, sequence number, open connections, capacity,
//! draining flag) sent to every configured peer each report interval, and
//! accepted only from the tunnel address configured for the claimed id.
//! It gives the lab and the e2e tests real loads and real liveness (a
//! killed host goes dead after `dead_after_ms`). Replace it with
//! `dpr_router::cluster::Node` (HMAC with `cluster.key_file`, membership,
//! drain, recovery): `ControlPlane` keeps its methods and delegates.

use crate::config::Config;
use dpr_router::Engine;
use dpr_table::{Capacity, LoadFigures, LoadReport, PeerId, PeerState, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

/// Both clocks, read once by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Monotonic time (what the engine uses).
    pub mono: Timestamp,
    /// Wall-clock time in nanoseconds since the Unix epoch (for reports).
    pub unix_ns: u64,
}

/// A datagram to send to a peer's tunnel address on the control port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination (a peer's tunnel address).
    pub to: IpAddr,
    /// Payload.
    pub payload: Vec<u8>,
}

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
    /// Age of the last report in milliseconds (`None`: none yet).
    pub report_age_ms: Option<u64>,
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

/// An error of the control plane (bad peer set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError(pub String);

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ControlError {}

/// The control plane of one host.
#[derive(Debug)]
pub struct ControlPlane {
    inner: Interim,
}

impl ControlPlane {
    /// Builds it and adds the configured peers to the engine.
    pub fn new(cfg: &Config, now: Clock, engine: &mut Engine) -> Result<Self, ControlError> {
        Ok(Self {
            inner: Interim::new(cfg, now, engine)?,
        })
    }

    /// A datagram arrived on the control port from `from`.
    pub fn handle_datagram(&mut self, now: Clock, from: IpAddr, bytes: &[u8], engine: &mut Engine) {
        self.inner.handle_datagram(now, from, bytes, engine);
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self, now: Clock, engine: &Engine) -> Option<Transmit> {
        self.inner.poll_transmit(now, engine)
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Timestamp {
        self.inner.next_report
    }

    /// Timer work (report scheduling).
    pub fn handle_timeout(&mut self, now: Clock, engine: &mut Engine) {
        self.inner.handle_timeout(now, engine);
    }

    /// A new configuration (SIGHUP): peers added, removed or moved.
    pub fn reload(
        &mut self,
        cfg: &Config,
        now: Clock,
        engine: &mut Engine,
    ) -> Result<(), ControlError> {
        self.inner.reload(cfg, now, engine)
    }

    /// Starts draining: tell peers to send nothing new here.
    pub fn start_drain(&mut self, now: Clock, deadline: Duration, engine: &mut Engine) {
        let _ = (now, deadline, engine);
        self.inner.draining = true;
        // Tell peers at once rather than at the next interval.
        self.inner.next_report = now.mono;
    }

    /// Whether this host is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.draining
    }

    /// Datagrams rejected (unknown source, bad format, stale).
    pub fn rejected(&self) -> u64 {
        self.inner.rejected
    }

    /// Reports sent.
    pub fn sent(&self) -> u64 {
        self.inner.sent
    }

    /// The peers as status output shows them.
    pub fn peers(&self, now: Clock, engine: &Engine) -> Vec<PeerView> {
        engine
            .loads()
            .peers()
            .iter()
            .filter(|p| p.state != PeerState::Left)
            .map(|p| PeerView {
                id: p.id.0,
                name: self.inner.names.get(&p.id).cloned().unwrap_or_default(),
                tunnel_addr: p.tunnel_addr,
                state: state_name(p.state).into(),
                load: p.load(),
                open_connections: p.figures.open_connections,
                report_age_ms: p
                    .seq
                    .map(|_| now.mono.0.saturating_sub(p.received_at.0) / 1_000_000),
            })
            .collect()
    }
}

// ---- Interim -------------------------------------------------------------
// TODO(issue5): replace from here to the end of the file with
// `dpr_router::cluster::Node`.

const MAGIC: &[u8; 4] = b"DPRi";
const REPORT_LEN: usize = 4 + 1 + 1 + 2 + 8 + 4 + 4;

#[derive(Debug)]
struct Interim {
    id: PeerId,
    interval: Duration,
    next_report: Timestamp,
    seq: u64,
    draining: bool,
    peers: BTreeMap<PeerId, IpAddr>,
    names: BTreeMap<PeerId, String>,
    queue: VecDeque<Transmit>,
    rejected: u64,
    sent: u64,
}

fn encode(id: PeerId, seq: u64, figures: LoadFigures, cap: Capacity, draining: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(REPORT_LEN);
    b.extend_from_slice(MAGIC);
    b.push(0);
    b.push(u8::from(draining));
    b.extend_from_slice(&id.0.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&figures.open_connections.to_be_bytes());
    b.extend_from_slice(&cap.cpu.to_bits().to_be_bytes());
    b
}

fn decode(b: &[u8]) -> Option<(PeerId, LoadReport)> {
    if b.len() != REPORT_LEN || &b[..4] != MAGIC || b[4] != 0 {
        return None;
    }
    let id = PeerId(u16::from_be_bytes([b[6], b[7]]));
    let seq = u64::from_be_bytes(b[8..16].try_into().ok()?);
    let open = u32::from_be_bytes(b[16..20].try_into().ok()?);
    let cpu = f32::from_bits(u32::from_be_bytes(b[20..24].try_into().ok()?));
    Some((
        id,
        LoadReport {
            seq,
            figures: LoadFigures {
                open_connections: open,
                ..LoadFigures::default()
            },
            capacity: Capacity { cpu, memory: 1.0 },
            draining: b[5] != 0,
        },
    ))
}

impl Interim {
    fn new(cfg: &Config, now: Clock, engine: &mut Engine) -> Result<Self, ControlError> {
        let mut s = Self {
            id: cfg.local_id(),
            interval: Duration::from_millis(cfg.cluster.report_interval_ms),
            next_report: now.mono,
            // Start from the wall clock so a restarted host's reports are
            // newer than its previous life's.
            seq: now.unix_ns / 1000,
            draining: false,
            peers: BTreeMap::new(),
            names: BTreeMap::new(),
            queue: VecDeque::new(),
            rejected: 0,
            sent: 0,
        };
        s.reload(cfg, now, engine)?;
        Ok(s)
    }

    fn reload(
        &mut self,
        cfg: &Config,
        now: Clock,
        engine: &mut Engine,
    ) -> Result<(), ControlError> {
        let want: BTreeMap<PeerId, (IpAddr, Vec<IpAddr>, String)> = cfg
            .cluster
            .peers
            .iter()
            .map(|p| {
                (
                    PeerId(p.id),
                    (
                        p.tunnel_addr,
                        p.service_addrs.clone(),
                        p.name.clone().unwrap_or_else(|| format!("peer{}", p.id)),
                    ),
                )
            })
            .collect();
        let gone: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, addr)| want.get(id).is_none_or(|w| w.0 != **addr))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            engine
                .remove_peer(id)
                .map_err(|e| ControlError(format!("removing peer {}: {e}", id.0)))?;
            self.peers.remove(&id);
            self.names.remove(&id);
        }
        for (id, (tunnel, services, name)) in want {
            self.names.insert(id, name);
            if self.peers.contains_key(&id) {
                continue;
            }
            engine
                .add_peer(id, tunnel, services, now.mono)
                .map_err(|e| ControlError(format!("adding peer {}: {e}", id.0)))?;
            self.peers.insert(id, tunnel);
        }
        self.interval = Duration::from_millis(cfg.cluster.report_interval_ms);
        Ok(())
    }

    fn handle_datagram(&mut self, now: Clock, from: IpAddr, bytes: &[u8], engine: &mut Engine) {
        let Some((id, report)) = decode(bytes) else {
            self.rejected += 1;
            return;
        };
        if self.peers.get(&id) != Some(&from) {
            self.rejected += 1;
            return;
        }
        match engine.apply_report(id, &report, now.mono) {
            Ok(dpr_table::ReportOutcome::Applied) => {}
            _ => self.rejected += 1,
        }
    }

    fn handle_timeout(&mut self, now: Clock, engine: &mut Engine) {
        if now.mono < self.next_report {
            return;
        }
        self.seq += 1;
        let figures = engine.loads().local_figures();
        let cap = Capacity {
            cpu: engine.loads().local_capacity_scalar() as f32,
            memory: 1.0,
        };
        let payload = encode(self.id, self.seq, figures, cap, self.draining);
        for to in self.peers.values() {
            self.queue.push_back(Transmit {
                to: *to,
                payload: payload.clone(),
            });
        }
        self.next_report = now.mono.saturating_add(self.interval);
    }

    fn poll_transmit(&mut self, _now: Clock, _engine: &Engine) -> Option<Transmit> {
        let t = self.queue.pop_front();
        if t.is_some() {
            self.sent += 1;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trip_and_rejects() {
        let f = LoadFigures {
            open_connections: 7,
            ..LoadFigures::default()
        };
        let b = encode(PeerId(3), 9, f, Capacity::default(), true);
        let (id, r) = decode(&b).unwrap_or_else(|| unreachable!());
        assert_eq!(
            (id, r.seq, r.figures.open_connections, r.draining),
            (PeerId(3), 9, 7, true)
        );
        assert!(decode(&b[..10]).is_none());
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(decode(&bad).is_none());
    }
}
