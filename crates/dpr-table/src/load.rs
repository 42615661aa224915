//! The load table: what this host knows of every peer's load and health,
//! and its own load beside them.
//!
//! Besides the records, the table keeps two small indices up to date on
//! every change, so that a policy decision over 1,000 peers costs O(1) or
//! O(log N) instead of a scan: a min-tree of normalised peer loads (the
//! least-loaded eligible peer is its root) and a Fenwick tree of capacity
//! weights over all eligible hosts, this one included (for weighted
//! sampling). Ineligible peers (anything but [`PeerState::Alive`]) carry an
//! infinite load and a zero weight, so no index can return them.

use crate::error::{Result, TableError};
use crate::time::{Timestamp, duration_nanos};
use core::net::IpAddr;
use core::time::Duration;

/// A host's identity in the cluster (this host has one too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u16);

/// Health of a peer as seen from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Reporting on time: eligible for redirects.
    Alive,
    /// Missed `suspect_after_missed` report intervals (or never reported).
    Suspect,
    /// Missed `dead_after_missed` report intervals.
    Dead,
    /// Finishing its connections; takes no new ones.
    Draining,
    /// Left the cluster.
    Left,
}

/// A host's load figures as it reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadFigures {
    /// Open connections served.
    pub open_connections: u32,
    /// CPU utilisation, 0.0 ..= 1.0 per unit of CPU capacity.
    pub cpu_utilisation: f32,
    /// Connections this host redirected to peers.
    pub redirected_connections: u32,
    /// Active sockets.
    pub active_sockets: u32,
}

/// A host's capacity relative to a reference host (1.0 = reference).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Capacity {
    /// CPU capacity.
    pub cpu: f32,
    /// Memory capacity.
    pub memory: f32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            cpu: 1.0,
            memory: 1.0,
        }
    }
}

/// One load report received from a peer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadReport {
    /// Sequence number; reports not newer than the last applied are stale.
    pub seq: u64,
    /// The figures.
    pub figures: LoadFigures,
    /// The peer's capacity.
    pub capacity: Capacity,
    /// The peer is draining.
    pub draining: bool,
}

/// Weights of a combined load metric (each finite and >= 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricWeights {
    /// Weight of open connections.
    pub open_connections: f64,
    /// Weight of CPU utilisation (0..1 scaled by `cpu_scale`).
    pub cpu_utilisation: f64,
    /// Weight of redirected connections.
    pub redirected_connections: f64,
    /// Weight of active sockets.
    pub active_sockets: f64,
}

/// Which figure is "the load".
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoadMetric {
    /// Open connections (the seed design's best metric).
    OpenConnections,
    /// CPU utilisation.
    CpuUtilisation,
    /// Redirected connections.
    RedirectedConnections,
    /// Active sockets.
    ActiveSockets,
    /// A weighted sum of all four.
    Weighted(MetricWeights),
}

/// How a capacity becomes one number: `cpu * cpu + memory * memory`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapacityWeights {
    /// Weight of CPU capacity.
    pub cpu: f64,
    /// Weight of memory capacity.
    pub memory: f64,
}

/// Configuration of a [`LoadTable`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadTableConfig {
    /// Interval at which peers report.
    pub report_interval: Duration,
    /// Missed intervals before a peer is `Suspect` (>= 1).
    pub suspect_after_missed: u32,
    /// Missed intervals before a peer is `Dead` (>= `suspect_after_missed`).
    pub dead_after_missed: u32,
    /// The load metric.
    pub metric: LoadMetric,
    /// How CPU and memory capacity combine into one capacity figure.
    pub capacity_weights: CapacityWeights,
    /// CPU utilisation one connection is assumed to add, for optimistic
    /// accounting under a CPU metric.
    pub cpu_per_connection: f64,
}

impl Default for LoadTableConfig {
    fn default() -> Self {
        Self {
            report_interval: Duration::from_millis(250),
            suspect_after_missed: 1,
            dead_after_missed: 4,
            metric: LoadMetric::OpenConnections,
            capacity_weights: CapacityWeights {
                cpu: 1.0,
                memory: 0.0,
            },
            cpu_per_connection: 0.001,
        }
    }
}

fn check_weight(field: &'static str, w: f64) -> Result<()> {
    if w.is_finite() && w >= 0.0 {
        Ok(())
    } else {
        Err(TableError::InvalidConfig {
            field,
            reason: "must be finite and non-negative",
        })
    }
}

impl LoadTableConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason| Err(TableError::InvalidConfig { field, reason });
        if self.report_interval.is_zero() {
            return bad("report_interval", "must be greater than zero");
        }
        if self.suspect_after_missed == 0 {
            return bad("suspect_after_missed", "must be at least 1");
        }
        if self.dead_after_missed < self.suspect_after_missed {
            return bad("dead_after_missed", "must be at least suspect_after_missed");
        }
        if let LoadMetric::Weighted(w) = self.metric {
            check_weight("metric.open_connections", w.open_connections)?;
            check_weight("metric.cpu_utilisation", w.cpu_utilisation)?;
            check_weight("metric.redirected_connections", w.redirected_connections)?;
            check_weight("metric.active_sockets", w.active_sockets)?;
            if w.open_connections + w.cpu_utilisation + w.redirected_connections + w.active_sockets
                == 0.0
            {
                return bad("metric", "weights must not all be zero");
            }
        }
        check_weight("capacity_weights.cpu", self.capacity_weights.cpu)?;
        check_weight("capacity_weights.memory", self.capacity_weights.memory)?;
        if self.capacity_weights.cpu + self.capacity_weights.memory == 0.0 {
            return bad("capacity_weights", "must not both be zero");
        }
        check_weight("cpu_per_connection", self.cpu_per_connection)
    }

    /// The raw (not normalised) load of `f` plus `pending` optimistic
    /// connections, under the configured metric.
    pub fn raw_load(&self, f: &LoadFigures, pending: u32) -> f64 {
        self.raw_load_delta(f, i64::from(pending))
    }

    /// [`Self::raw_load`] with a signed correction: connections opened
    /// minus connections ended since `f` was measured. No figure goes
    /// below zero, whatever the correction.
    pub fn raw_load_delta(&self, f: &LoadFigures, delta: i64) -> f64 {
        let p = delta as f64;
        let conns = (f64::from(f.open_connections) + p).max(0.0);
        let cpu = (f64::from(f.cpu_utilisation) + p * self.cpu_per_connection).max(0.0);
        let redirected = f64::from(f.redirected_connections);
        let sockets = (f64::from(f.active_sockets) + p).max(0.0);
        match self.metric {
            LoadMetric::OpenConnections => conns,
            LoadMetric::CpuUtilisation => cpu,
            LoadMetric::RedirectedConnections => redirected,
            LoadMetric::ActiveSockets => sockets,
            LoadMetric::Weighted(w) => {
                w.open_connections * conns
                    + w.cpu_utilisation * cpu
                    + w.redirected_connections * redirected
                    + w.active_sockets * sockets
            }
        }
    }

    /// The capacity as one number (> 0 for a valid capacity).
    pub fn capacity_scalar(&self, c: &Capacity) -> f64 {
        self.capacity_weights.cpu * f64::from(c.cpu)
            + self.capacity_weights.memory * f64::from(c.memory)
    }

    /// Load divided by capacity: what every policy compares.
    pub fn normalised_load(&self, f: &LoadFigures, pending: u32, c: &Capacity) -> f64 {
        self.raw_load(f, pending) / self.capacity_scalar(c)
    }

    /// [`Self::normalised_load`] with a signed correction (see
    /// [`Self::raw_load_delta`]).
    pub fn normalised_load_delta(&self, f: &LoadFigures, delta: i64, c: &Capacity) -> f64 {
        self.raw_load_delta(f, delta) / self.capacity_scalar(c)
    }

    fn check_capacity(&self, c: &Capacity) -> Result<()> {
        for (field, v) in [("capacity.cpu", c.cpu), ("capacity.memory", c.memory)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TableError::InvalidReport { field });
            }
        }
        let s = self.capacity_scalar(c);
        if s.is_finite() && s > 0.0 {
            Ok(())
        } else {
            Err(TableError::InvalidReport { field: "capacity" })
        }
    }

    fn check_figures(f: &LoadFigures) -> Result<()> {
        if f.cpu_utilisation.is_finite() && f.cpu_utilisation >= 0.0 {
            Ok(())
        } else {
            Err(TableError::InvalidReport {
                field: "figures.cpu_utilisation",
            })
        }
    }
}

/// What this host knows about one peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRecord {
    /// Identity.
    pub id: PeerId,
    /// Outer destination of IP-in-IP packets redirected to it.
    pub tunnel_addr: IpAddr,
    /// Service (virtual) addresses it serves.
    pub service_addrs: Vec<IpAddr>,
    /// Last reported figures.
    pub figures: LoadFigures,
    /// Last reported capacity.
    pub capacity: Capacity,
    /// Sequence number of the last applied report (`None`: none yet).
    pub seq: Option<u64>,
    /// When the last report arrived (when the peer was added, before one).
    pub received_at: Timestamp,
    /// Health.
    pub state: PeerState,
    /// Connections redirected to it since its last report (optimistic
    /// accounting: they count against its load until the next report).
    pub pending_redirects: u32,
    /// Connections this host had redirected to it that ended (the client's
    /// FIN or RST, or a timeout) since its last report: they no longer
    /// count against its load, whether they began before the report or
    /// after it.
    pub ended_redirects: u32,
    score: f64,
    /// Drained by [`LoadTable::mark_draining`] (an operator's decision
    /// here), not by its own report: reports cannot undo it.
    held_draining: bool,
}

impl PeerRecord {
    /// Redirects since the last report less those that ended since.
    fn delta(&self) -> i64 {
        i64::from(self.pending_redirects) - i64::from(self.ended_redirects)
    }

    /// Normalised load including pending redirects (as last reported;
    /// meaningful for status output even when the peer is not eligible).
    pub fn load(&self) -> f64 {
        self.score
    }
}

/// A host a policy can choose: this one or a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostRef {
    /// This host.
    Local,
    /// A peer.
    Peer(PeerId),
}

/// What [`LoadTable::apply_report`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Applied.
    Applied,
    /// Ignored: not newer than the last applied report.
    Stale,
    /// Ignored: the peer has left.
    PeerLeft,
}

/// Peer records plus this host's own load, with the indices policies use.
#[derive(Clone, Debug)]
pub struct LoadTable {
    config: LoadTableConfig,
    interval_ns: u64,
    local_id: PeerId,
    local_figures: LoadFigures,
    local_capacity: Capacity,
    local_score: f64,
    local_pending: u32,
    local_ended: u32,
    /// Connections opened less those ended since the last measurement
    /// that other routers of this host counted (an engine per queue: the
    /// other queues' engines), as last told ([`Self::set_local_others`]).
    local_others: i64,
    /// Connections the host itself saw end since the last measurement
    /// (its application closed them: [`Self::set_local_closed`]).
    local_closed: u32,
    peers: Vec<PeerRecord>,
    /// Slot of each peer id (`NO_SLOT` where none): a dense array, because
    /// ids are small and this is on the decision path.
    slot_of: Vec<u32>,
    /// Id of each slot, dense, so sampling does not touch the records.
    ids: Vec<PeerId>,
    /// Min-tree over peer slots: `(load, slot)`; leaves at `tree_size + i`.
    tree: Vec<(f64, u32)>,
    /// Beside each node of `tree`: how many leaves below it hold its
    /// minimum (for a uniform choice among equally loaded peers).
    ties: Vec<u32>,
    tree_size: usize,
    /// Fenwick tree over hosts: position 1 is this host, `2 + slot` a peer.
    fenwick: Vec<u64>,
    weights: Vec<u64>,
    total_weight: u64,
    epoch: u64,
}

const WEIGHT_SCALE: f64 = 1000.0;
const NO_SLOT: u32 = u32::MAX;

impl LoadTable {
    /// A table with no peers; this host is `local_id` with `local_capacity`.
    pub fn new(
        config: LoadTableConfig,
        local_id: PeerId,
        local_capacity: Capacity,
    ) -> Result<Self> {
        config.validate()?;
        config.check_capacity(&local_capacity)?;
        let mut t = Self {
            config,
            interval_ns: duration_nanos(config.report_interval),
            local_id,
            local_figures: LoadFigures::default(),
            local_capacity,
            local_score: 0.0,
            local_pending: 0,
            local_ended: 0,
            local_others: 0,
            local_closed: 0,
            peers: Vec::new(),
            slot_of: Vec::new(),
            ids: Vec::new(),
            tree: Vec::new(),
            ties: Vec::new(),
            tree_size: 0,
            fenwick: Vec::new(),
            weights: Vec::new(),
            total_weight: 0,
            epoch: 0,
        };
        t.local_score = config.normalised_load(&t.local_figures, 0, &local_capacity);
        t.rebuild_indices();
        Ok(t)
    }

    /// The configuration.
    pub fn config(&self) -> &LoadTableConfig {
        &self.config
    }

    /// This host's identity.
    pub fn local_id(&self) -> PeerId {
        self.local_id
    }

    /// This host's normalised load.
    pub fn local_load(&self) -> f64 {
        self.local_score
    }

    /// The estimate of this host's load between two measurements: the
    /// last measurement ([`Self::set_local`]), plus the connections taken
    /// since ([`Self::record_local`]), less those that ended since
    /// ([`Self::record_local_end`]). Both corrections are let go at the
    /// next measurement, so the estimate is right between measurements
    /// however far apart they are, and a measurement that is late (a
    /// descheduled daemon) cannot inflate it.
    ///
    /// Counts one new connection served here.
    pub fn record_local(&mut self) {
        self.local_pending = self.local_pending.saturating_add(1);
        self.update_local_score();
    }

    /// Counts the end of a connection served here (the client's FIN or
    /// RST, or its entry timed out), whether it began before the last
    /// measurement or after it.
    pub fn record_local_end(&mut self) {
        self.local_ended = self.local_ended.saturating_add(1);
        self.update_local_score();
    }

    /// Where the host counts the ends of its connections itself (its
    /// application's closes, seen by the kernel as they happen), `closed`
    /// is how many ended since the last measurement: taken off the
    /// estimate instead of the ends [`Self::record_local_end`] counts
    /// (the caller then counts none). Let go at the next measurement.
    pub fn set_local_closed(&mut self, closed: u32) {
        if self.local_closed != closed {
            self.local_closed = closed;
            self.update_local_score();
        }
    }

    fn update_local_score(&mut self) {
        let delta = i64::from(self.local_pending) - i64::from(self.local_ended) + self.local_others
            - i64::from(self.local_closed);
        self.local_score =
            self.config
                .normalised_load_delta(&self.local_figures, delta, &self.local_capacity);
    }

    /// New local connections counted by [`Self::record_local`] since the
    /// last [`Self::set_local`].
    pub fn local_pending(&self) -> u32 {
        self.local_pending
    }

    /// Local connections whose end [`Self::record_local_end`] counted
    /// since the last [`Self::set_local`].
    pub fn local_ended(&self) -> u32 {
        self.local_ended
    }

    /// What this table counted on top of the last measurement: opened
    /// less ended connections (the part of the estimate that is its own).
    pub fn local_net(&self) -> i64 {
        i64::from(self.local_pending) - i64::from(self.local_ended)
    }

    /// Where several routers share this host's load (an engine per
    /// queue), each counts only the connections it sees: `others` is what
    /// the others counted on top of the same measurement (the sum of their
    /// [`Self::local_net`]), added to this table's estimate until the next
    /// call or measurement.
    pub fn set_local_others(&mut self, others: i64) {
        if self.local_others != others {
            self.local_others = others;
            self.update_local_score();
        }
    }

    /// [`Self::set_local`] for a measurement that took time, with the
    /// corrections that already apply to it: `opened` connections it did
    /// not see yet and `ended` ones it still counted. The caller (the
    /// engine, which knows which connections opened and ended while the
    /// measurement ran and which of them it listed) works them out.
    pub fn set_local_corrected(
        &mut self,
        figures: LoadFigures,
        capacity: Capacity,
        opened: u32,
        ended: u32,
    ) -> Result<()> {
        self.set_local(figures, capacity)?;
        self.local_pending = opened;
        self.local_ended = ended;
        self.update_local_score();
        Ok(())
    }

    /// This host's figures.
    pub fn local_figures(&self) -> LoadFigures {
        self.local_figures
    }

    /// This host's capacity as one number.
    pub fn local_capacity_scalar(&self) -> f64 {
        self.config.capacity_scalar(&self.local_capacity)
    }

    /// Updates this host's own figures (and capacity, if it changed).
    pub fn set_local(&mut self, figures: LoadFigures, capacity: Capacity) -> Result<()> {
        LoadTableConfig::check_figures(&figures)?;
        self.config.check_capacity(&capacity)?;
        self.local_figures = figures;
        self.local_capacity = capacity;
        self.local_pending = 0;
        self.local_ended = 0;
        self.local_others = 0;
        self.local_closed = 0;
        self.local_score = self.config.normalised_load(&figures, 0, &capacity);
        self.set_weight(0, self.weight_of(&capacity));
        Ok(())
    }

    /// Adds a peer, in state `Suspect` until its first report. Re-adding a
    /// peer that has `Left` resets it; any other duplicate is an error.
    pub fn add_peer(
        &mut self,
        id: PeerId,
        tunnel_addr: IpAddr,
        service_addrs: Vec<IpAddr>,
        now: Timestamp,
    ) -> Result<()> {
        if id == self.local_id {
            return Err(TableError::DuplicatePeer(id.0));
        }
        let rec = PeerRecord {
            id,
            tunnel_addr,
            service_addrs,
            figures: LoadFigures::default(),
            capacity: Capacity::default(),
            seq: None,
            received_at: now,
            state: PeerState::Suspect,
            pending_redirects: 0,
            ended_redirects: 0,
            score: 0.0,
            held_draining: false,
        };
        if let Some(slot) = self.slot(id) {
            if self.peers[slot as usize].state != PeerState::Left {
                return Err(TableError::DuplicatePeer(id.0));
            }
            self.peers[slot as usize] = rec;
            self.update_slot(slot);
            return Ok(());
        }
        let slot = u32::try_from(self.peers.len()).map_err(|_| TableError::InvalidConfig {
            field: "peers",
            reason: "too many peers",
        })?;
        self.peers.push(rec);
        self.ids.push(id);
        let i = usize::from(id.0);
        if self.slot_of.len() <= i {
            self.slot_of.resize(i + 1, NO_SLOT);
        }
        self.slot_of[i] = slot;
        self.rebuild_indices();
        Ok(())
    }

    /// Applies a report received at `now`: figures, capacity, sequence
    /// number; clears pending redirects; the peer becomes `Alive`, or
    /// `Draining` if it says so (or was marked draining here). A peer that
    /// was `Dead` accepts any sequence number (it may have restarted).
    pub fn apply_report(
        &mut self,
        id: PeerId,
        report: &LoadReport,
        now: Timestamp,
    ) -> Result<ReportOutcome> {
        let slot = self.slot(id).ok_or(TableError::UnknownPeer(id.0))?;
        LoadTableConfig::check_figures(&report.figures)?;
        self.config.check_capacity(&report.capacity)?;
        let p = &mut self.peers[slot as usize];
        if p.state == PeerState::Left {
            return Ok(ReportOutcome::PeerLeft);
        }
        if let Some(last) = p.seq {
            if report.seq <= last && p.state != PeerState::Dead {
                return Ok(ReportOutcome::Stale);
            }
        }
        p.figures = report.figures;
        p.capacity = report.capacity;
        p.seq = Some(report.seq);
        p.received_at = now;
        p.pending_redirects = 0;
        p.ended_redirects = 0;
        p.state = if report.draining || p.held_draining {
            PeerState::Draining
        } else {
            PeerState::Alive
        };
        self.update_slot(slot);
        Ok(ReportOutcome::Applied)
    }

    /// Marks a peer draining (administrative): no new connections, until
    /// it is re-added. Its reports no longer change that.
    pub fn mark_draining(&mut self, id: PeerId) -> Result<()> {
        self.set_state(id, PeerState::Draining)?;
        if let Some(slot) = self.slot(id) {
            self.peers[slot as usize].held_draining = true;
        }
        Ok(())
    }

    /// Marks a peer as having left the cluster.
    pub fn mark_left(&mut self, id: PeerId) -> Result<()> {
        self.set_state(id, PeerState::Left)
    }

    fn set_state(&mut self, id: PeerId, state: PeerState) -> Result<()> {
        let slot = self.slot(id).ok_or(TableError::UnknownPeer(id.0))?;
        self.peers[slot as usize].state = state;
        self.update_slot(slot);
        Ok(())
    }

    /// Re-derives every peer's health from `now`: `Suspect` after
    /// `suspect_after_missed` whole report intervals without a report,
    /// `Dead` after `dead_after_missed`. `Draining` and `Left` are kept.
    /// Returns the number of peers whose state changed.
    pub fn refresh(&mut self, now: Timestamp) -> usize {
        let mut changed = 0;
        for slot in 0..self.peers.len() {
            let p = &self.peers[slot];
            if matches!(p.state, PeerState::Draining | PeerState::Left) {
                continue;
            }
            let missed = now.0.saturating_sub(p.received_at.0) / self.interval_ns;
            let state = if missed >= u64::from(self.config.dead_after_missed) {
                PeerState::Dead
            } else if missed >= u64::from(self.config.suspect_after_missed) || p.seq.is_none() {
                PeerState::Suspect
            } else {
                PeerState::Alive
            };
            if state != p.state {
                self.peers[slot].state = state;
                self.update_slot(slot as u32);
                changed += 1;
            }
        }
        changed
    }

    /// Counts the silence of every peer not heard from yet from `now`: the
    /// host starts listening only now (a daemon that took long to start,
    /// on a busy machine, must not find its peers dead before it could
    /// hear their first report). Peers heard from are unchanged.
    pub fn restart_silence(&mut self, now: Timestamp) {
        for p in self.peers.iter_mut().filter(|p| p.seq.is_none()) {
            p.received_at = now;
        }
        self.refresh(now);
    }

    /// Optimistic accounting: counts one new connection against `id`'s
    /// load until its next report.
    pub fn record_redirect(&mut self, id: PeerId) -> Result<()> {
        let slot = self.slot(id).ok_or(TableError::UnknownPeer(id.0))?;
        let p = &mut self.peers[slot as usize];
        p.pending_redirects = p.pending_redirects.saturating_add(1);
        self.update_slot(slot);
        Ok(())
    }

    /// Optimistic accounting, the other way: a connection this host had
    /// redirected to `id` ended, so it stops counting against `id`'s load
    /// until `id`'s next report (which no longer counts it either).
    pub fn record_redirect_end(&mut self, id: PeerId) -> Result<()> {
        let slot = self.slot(id).ok_or(TableError::UnknownPeer(id.0))?;
        let p = &mut self.peers[slot as usize];
        p.ended_redirects = p.ended_redirects.saturating_add(1);
        self.update_slot(slot);
        Ok(())
    }

    /// The record of peer `id`.
    pub fn peer(&self, id: PeerId) -> Option<&PeerRecord> {
        self.slot(id).map(|s| &self.peers[s as usize])
    }

    /// Every peer record, in the order added.
    pub fn peers(&self) -> &[PeerRecord] {
        &self.peers
    }

    /// True when new connections may be redirected to `id` (it is `Alive`).
    #[inline]
    pub fn is_eligible(&self, id: PeerId) -> bool {
        self.slot(id)
            .is_some_and(|s| self.tree[self.tree_size + s as usize].0.is_finite())
    }

    #[inline]
    fn slot(&self, id: PeerId) -> Option<u32> {
        self.slot_of
            .get(usize::from(id.0))
            .copied()
            .filter(|&s| s != NO_SLOT)
    }

    /// The least-loaded eligible peer and its normalised load (ties: the
    /// peer added first). O(1).
    pub fn least_loaded_peer(&self) -> Option<(PeerId, f64)> {
        let (load, slot) = *self.tree.get(1)?;
        (load.is_finite()).then(|| (self.ids[slot as usize], load))
    }

    /// A least-loaded eligible peer and its normalised load, chosen
    /// uniformly among the peers that share the least load, from one
    /// uniform random `u64`. O(log N). Choosing by order of addition
    /// instead ([`Self::least_loaded_peer`]) sends every redirect of an
    /// idle cluster to the same peer.
    pub fn least_loaded_peer_among_ties(&self, random: u64) -> Option<(PeerId, f64)> {
        let (load, _) = *self.tree.get(1)?;
        if !load.is_finite() {
            return None;
        }
        let total = u64::from(self.ties[1].max(1));
        let mut rank = ((u128::from(random) * u128::from(total)) >> 64) as u32;
        let mut i = 1;
        while i < self.tree_size {
            let (l, r) = (2 * i, 2 * i + 1);
            i = if self.tree[l].0 == load && self.tree[r].0 == load {
                if rank < self.ties[l] {
                    l
                } else {
                    rank -= self.ties[l];
                    r
                }
            } else if self.tree[l].0 == load {
                l
            } else {
                r
            };
        }
        Some((self.ids[i - self.tree_size], load))
    }

    /// Normalised load of a host (infinite for an ineligible peer).
    #[inline]
    pub fn host_load(&self, host: HostRef) -> f64 {
        match host {
            HostRef::Local => self.local_score,
            HostRef::Peer(id) => self
                .slot(id)
                .map_or(f64::INFINITY, |s| self.tree[self.tree_size + s as usize].0),
        }
    }

    /// Sum of the capacity weights of all eligible hosts, this one included.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// Number of hosts (this one plus every peer, eligible or not).
    pub fn host_count(&self) -> usize {
        self.peers.len() + 1
    }

    /// The identity and sampling weight of host number `i` (0: this host,
    /// `1 + n`: the n-th peer added); weight 0 means ineligible.
    pub fn host_weight(&self, i: usize) -> Option<(PeerId, u64)> {
        let w = *self.weights.get(i)?;
        let id = if i == 0 {
            self.local_id
        } else {
            self.peers[i - 1].id
        };
        Some((id, w))
    }

    /// Increments whenever any host's eligibility or weight changes; a
    /// strategy holding derived state rebuilds it when this moves.
    pub fn membership_epoch(&self) -> u64 {
        self.epoch
    }

    /// Picks an eligible host with probability proportional to its capacity
    /// weight, from one uniform random `u64`. O(log N).
    #[inline]
    pub fn sample_host(&self, random: u64) -> HostRef {
        self.sample_host_with_load(random).0
    }

    /// [`sample_host`](Self::sample_host) and the host's normalised load.
    #[inline]
    pub fn sample_host_with_load(&self, random: u64) -> (HostRef, f64) {
        if self.total_weight == 0 {
            return (HostRef::Local, self.local_score);
        }
        let mut target = ((u128::from(random) * u128::from(self.total_weight)) >> 64) as u64;
        // Fenwick descent: the first position whose prefix sum exceeds target.
        let n = self.fenwick.len() - 1;
        let mut pos = 0usize;
        let mut step = if n == 0 {
            0
        } else {
            1usize << (usize::BITS - 1 - n.leading_zeros())
        };
        while step > 0 {
            let next = pos + step;
            if next <= n && self.fenwick[next] <= target {
                pos = next;
                target -= self.fenwick[next];
            }
            step >>= 1;
        }
        // `pos + 1` is the 1-based host position.
        if pos == 0 {
            (HostRef::Local, self.local_score)
        } else {
            (
                HostRef::Peer(self.ids[pos - 1]),
                self.tree[self.tree_size + pos - 1].0,
            )
        }
    }

    fn weight_of(&self, c: &Capacity) -> u64 {
        let w = (self.config.capacity_scalar(c) * WEIGHT_SCALE).round();
        if w.is_finite() {
            (w as u64).clamp(1, u64::from(u32::MAX))
        } else {
            1
        }
    }

    fn update_slot(&mut self, slot: u32) {
        let p = &self.peers[slot as usize];
        let load = self
            .config
            .normalised_load_delta(&p.figures, p.delta(), &p.capacity);
        let eligible = p.state == PeerState::Alive;
        let (key, weight) = if eligible {
            (load, self.weight_of(&p.capacity))
        } else {
            (f64::INFINITY, 0)
        };
        self.peers[slot as usize].score = load;
        let mut i = self.tree_size + slot as usize;
        self.tree[i] = (key, slot);
        while i > 1 {
            i /= 2;
            self.pull_up(i);
        }
        self.set_weight(slot as usize + 1, weight);
    }

    fn set_weight(&mut self, host: usize, w: u64) {
        let old = self.weights[host];
        if old == w {
            return;
        }
        self.weights[host] = w;
        self.total_weight = self.total_weight - old + w;
        self.epoch += 1;
        let mut i = host + 1;
        while i < self.fenwick.len() {
            self.fenwick[i] = self.fenwick[i].wrapping_sub(old).wrapping_add(w);
            i += i & i.wrapping_neg();
        }
    }

    fn rebuild_indices(&mut self) {
        let n = self.peers.len();
        self.tree_size = n.next_power_of_two().max(1);
        self.tree = vec![(f64::INFINITY, u32::MAX); 2 * self.tree_size];
        let local_w = self.weight_of(&self.local_capacity);
        self.weights = vec![0; n + 1];
        self.weights[0] = local_w;
        for (slot, p) in self.peers.iter_mut().enumerate() {
            p.score = self
                .config
                .normalised_load_delta(&p.figures, p.delta(), &p.capacity);
            let key = if p.state == PeerState::Alive {
                p.score
            } else {
                f64::INFINITY
            };
            self.tree[self.tree_size + slot] = (key, slot as u32);
        }
        for slot in 0..n {
            let p = &self.peers[slot];
            if p.state == PeerState::Alive {
                self.weights[slot + 1] = self.weight_of(&p.capacity);
            }
        }
        self.ties = vec![1; 2 * self.tree_size];
        for i in (1..self.tree_size).rev() {
            self.pull_up(i);
        }
        self.fenwick = vec![0; n + 2];
        for (h, &w) in self.weights.iter().enumerate() {
            let mut i = h + 1;
            while i < self.fenwick.len() {
                self.fenwick[i] += w;
                i += i & i.wrapping_neg();
            }
        }
        self.total_weight = self.weights.iter().sum();
        self.epoch += 1;
    }
}

impl LoadTable {
    /// Recomputes inner node `i` of the min-tree from its children.
    #[inline]
    fn pull_up(&mut self, i: usize) {
        let (l, r) = (self.tree[2 * i], self.tree[2 * i + 1]);
        self.tree[i] = min_pair(l, r);
        self.ties[i] = if l.0 == r.0 {
            self.ties[2 * i] + self.ties[2 * i + 1]
        } else if l.0 < r.0 {
            self.ties[2 * i]
        } else {
            self.ties[2 * i + 1]
        };
    }
}

#[inline]
fn min_pair(a: (f64, u32), b: (f64, u32)) -> (f64, u32) {
    if b.0 < a.0 || (b.0 == a.0 && b.1 < a.1) {
        b
    } else {
        a
    }
}
