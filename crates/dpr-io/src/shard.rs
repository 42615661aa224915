//! An engine per queue: each worker owns a [`Shard`] (an [`Engine`] with
//! its own flow tables and counters); the control thread holds the
//! [`EngineSet`], which keeps what the shards share and tells them.
//!
//! ```text
//!  control thread                               worker i (owns Shard i, no lock)
//!  EngineSet ── commands (mpsc, per shard) ──►  poll(): peers, reports, modes, policy,
//!   control Engine: peers, load table,             routes restored, measurements, tick
//!   the host's load (measured + Σ shards)      process(): the engine on each packet it owns
//!   ◄── ShardReport at each tick (counters, ── packets of another shard's flows ─► ring ─► worker j
//!       table sizes, own load count, cut peers,
//!       decisions)
//! ```
//!
//! What is per flow stays in its shard: the routing and served tables,
//! the counters, the connections opened and ended since the last load
//! measurement. What is shared is replicated: every call that changes
//! peers, their loads or the host's modes is applied to the control
//! engine and sent to every shard, in order, so all load tables apply the
//! same reports. Each shard's estimate of this host's load is the
//! measurement, plus what it counted, plus what the other shards counted as
//! of their last report (one tick old at most). A flow belongs to shard
//! `dpr_table::worker_for(hasher, flow, n)`: its packets are handled there
//! whichever queue received them, so no table is shared.

use dpr_packet::FlowKey;
use dpr_policy::Policy;
use dpr_router::{
    ClusterEngine, Counters, DecisionRecord, Engine, EngineError, PacketBuf, Verdict,
};
use dpr_table::{
    Capacity, LoadFigures, LoadReport, LoadTable, PeerId, ReportOutcome, TableStats, Timestamp,
    worker_for,
};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

/// Work for one shard's engine, run on its worker thread.
pub type EngineFn = Box<dyn FnOnce(&mut Engine) + Send>;

/// Which connections a load measurement listed (client to service).
pub type Listed = Arc<dyn Fn(&FlowKey) -> bool + Send + Sync>;

/// Reads the host's count of its service connections that ended (their
/// application closed them), a counter the kernel keeps as they happen
/// (`dpr_xdp::CloseWatch`); read before each batch.
pub type ClosesReader = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Ends counted by `reader` since `base`, as the load table takes them.
fn closed_since(reader: &ClosesReader, base: u64) -> u32 {
    u32::try_from(reader().saturating_sub(base)).unwrap_or(u32::MAX)
}

enum Command {
    Run(EngineFn),
    SetCloses(Option<ClosesReader>),
    BeginMeasurement(Sender<usize>),
    FinishMeasurement {
        epoch: u64,
        closes_base: u64,
        figures: LoadFigures,
        capacity: Capacity,
        listed: Option<Listed>,
    },
    Tick {
        now: Timestamp,
        budget: usize,
        others: i64,
        walk: bool,
    },
}

/// A flow table's size and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSummary {
    /// Entries.
    pub len: usize,
    /// Capacity.
    pub capacity: usize,
    /// Counters.
    pub stats: TableStats,
}

impl TableSummary {
    fn add(&mut self, o: &TableSummary) {
        self.len += o.len;
        self.capacity += o.capacity;
        self.stats.inserted += o.stats.inserted;
        self.stats.evicted += o.stats.evicted;
        self.stats.evicted_half_open += o.stats.evicted_half_open;
        self.stats.evicted_established += o.stats.evicted_established;
        self.stats.expired += o.stats.expired;
        self.stats.reset += o.stats.reset;
        self.stats.removed += o.stats.removed;
    }
}

/// What a shard tells the control thread after each tick.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    /// Which shard.
    pub shard: usize,
    /// Its engine's counters.
    pub counters: Counters,
    /// Its routing table.
    pub routes: TableSummary,
    /// Its served table.
    pub served: TableSummary,
    /// Connections it still forwards to peers (walked only when asked:
    /// while draining).
    pub forwarding: Option<usize>,
    /// Connections it counted opened less ended since the measurement of
    /// `measure_epoch`.
    pub local_net: i64,
    /// The measurement its count is on top of.
    pub measure_epoch: u64,
    /// Peers it cut connections of and has not told yet.
    pub cut_peers: Vec<PeerId>,
    /// Its SYN decisions since its last report (`decision_log`).
    pub decisions: Vec<DecisionRecord>,
    /// New connections peers redirected to it since its last report.
    pub arrivals: Vec<(Timestamp, PeerId, f64)>,
    /// The peer that last redirected a connection to it.
    pub last_redirector: Option<PeerId>,
    /// VIP mode: the flows it missed and wants the peers asked about.
    pub flow_queries: Vec<FlowKey>,
}

/// One worker's engine and its link to the [`EngineSet`].
pub struct Shard {
    index: usize,
    count: usize,
    engine: Engine,
    commands: Receiver<Command>,
    reports: Sender<ShardReport>,
    measure_epoch: u64,
    closes: Option<ClosesReader>,
    closes_base: u64,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shard({}/{})", self.index, self.count)
    }
}

impl Shard {
    /// This shard's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many shards there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The engine (for tests and for what the control thread does not do).
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The shard that owns the flow of `packet` (an IP packet): this one
    /// when any will do.
    pub fn owner_of(&self, packet: &[u8]) -> usize {
        if self.count <= 1 {
            return self.index;
        }
        match self.engine.steer_key(packet) {
            Some(flow) => worker_for(self.engine.flow_hasher(), &flow, self.count),
            None => self.index,
        }
    }

    /// [`Shard::owner_of`] and the packet's flow hash
    /// ([`Engine::flow_hash`], `None` when it has no flow to steer by):
    /// the hash that steered the packet is the one its table look-up uses
    /// ([`Shard::process_batch`]), so a packet is hashed once.
    pub fn owner_and_hash(&self, packet: &[u8]) -> (usize, Option<u64>) {
        let hash = self.engine.flow_hash(packet);
        let owner = match hash {
            Some(h) if self.count > 1 => dpr_table::shard::shard_of_hash(h, self.count),
            _ => self.index,
        };
        (owner, hash)
    }

    /// Runs the engine on a batch of packets this shard owns, with the
    /// hashes [`Shard::owner_and_hash`] gave (see
    /// [`Engine::process_batch_hashed`]); appends the verdicts to `out`.
    pub fn process_batch(
        &mut self,
        now: Timestamp,
        pkts: &mut [PacketBuf<'_>],
        hashes: &[Option<u64>],
        out: &mut Vec<Verdict>,
    ) {
        self.apply_closes();
        self.engine.process_batch_hashed(now, pkts, hashes, out);
    }

    /// Runs the engine on one packet (see [`Engine::process`]).
    pub fn process(&mut self, now: Timestamp, pkt: &mut PacketBuf<'_>) -> Verdict {
        self.apply_closes();
        self.engine.process(now, pkt)
    }

    /// The host's closes since the measurement, into the estimate the
    /// next SYN decision uses (one load of shared memory).
    fn apply_closes(&mut self) {
        if let Some(r) = &self.closes {
            self.engine
                .set_local_closed(closed_since(r, self.closes_base));
        }
    }

    /// Applies the commands the control thread sent. Returns how many;
    /// false in the second field when the control thread has gone.
    pub fn poll(&mut self) -> (usize, bool) {
        let mut n = 0;
        loop {
            match self.commands.try_recv() {
                Ok(c) => {
                    n += 1;
                    self.apply(c);
                }
                Err(TryRecvError::Empty) => return (n, true),
                Err(TryRecvError::Disconnected) => return (n, false),
            }
        }
    }

    fn apply(&mut self, c: Command) {
        match c {
            Command::Run(f) => f(&mut self.engine),
            Command::SetCloses(r) => {
                self.engine.set_ends_from_host(r.is_some());
                self.closes_base = r.as_ref().map_or(0, |r| r());
                self.closes = r;
            }
            Command::BeginMeasurement(ack) => {
                self.engine.begin_load_measurement();
                let _ = ack.send(self.index);
            }
            Command::FinishMeasurement {
                epoch,
                closes_base,
                figures,
                capacity,
                listed,
            } => {
                let l = listed.as_deref().map(|f| f as &dyn Fn(&FlowKey) -> bool);
                if let Err(e) = self.engine.finish_load_measurement(figures, capacity, l) {
                    tracing::warn!(shard = self.index, error = %e, "load measurement");
                }
                self.measure_epoch = epoch;
                self.closes_base = closes_base;
                self.apply_closes();
            }
            Command::Tick {
                now,
                budget,
                others,
                walk,
            } => {
                self.apply_closes();
                let e = &mut self.engine;
                e.tick(now, budget);
                e.set_local_others(others);
                let cut_peers = e
                    .loads()
                    .peers()
                    .iter()
                    .map(|p| p.id)
                    .filter(|p| e.has_cut(*p))
                    .collect();
                let r = ShardReport {
                    shard: self.index,
                    counters: e.counters(),
                    routes: TableSummary {
                        len: e.routes().len(),
                        capacity: e.routes().capacity(),
                        stats: e.routes().stats(),
                    },
                    served: TableSummary {
                        len: e.served().len(),
                        capacity: e.served().capacity(),
                        stats: e.served().stats(),
                    },
                    forwarding: walk.then(|| e.forwarding_connections(now)),
                    local_net: e.loads().local_net(),
                    measure_epoch: self.measure_epoch,
                    cut_peers,
                    decisions: e.take_decisions(),
                    arrivals: e.take_peer_arrivals(),
                    last_redirector: e.last_redirector(),
                    flow_queries: e.take_flow_queries(),
                };
                let _ = self.reports.send(r);
            }
        }
    }
}

/// The control thread's side: the shared state (peers, the load table,
/// modes) in a control engine that routes nothing, and a link to every
/// shard. Implements [`ClusterEngine`], so the cluster protocol steers all
/// shards as it would one engine.
pub struct EngineSet {
    control: Engine,
    links: Vec<Sender<Command>>,
    reports: Receiver<ShardReport>,
    last: Vec<Option<ShardReport>>,
    measure_epoch: u64,
    measuring: Option<(Receiver<usize>, usize)>,
    next_idle: usize,
    draining: bool,
    last_walk: Option<Timestamp>,
    last_redirector: Option<PeerId>,
    /// VIP mode: flows the shards missed, for the protocol to ask about.
    flow_queries: Vec<FlowKey>,
    decisions: Vec<DecisionRecord>,
    arrivals: Vec<(Timestamp, PeerId, f64)>,
    query_timeout: Duration,
    unanswered: u64,
    closes: Option<ClosesReader>,
    /// The reading of `closes` when the last measurement's dump began.
    closes_base: u64,
}

impl std::fmt::Debug for EngineSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EngineSet({} shards)", self.links.len())
    }
}

/// How often a draining host walks its routing tables for the
/// connections it still forwards.
const WALK_EVERY_NS: u64 = 100_000_000;

impl EngineSet {
    /// `control` keeps the shared state (its tables stay empty: give it
    /// small ones); `shards` are the per-queue engines, built from the same
    /// configuration (the same flow hash seed: steering depends on it), each
    /// with its share of the table capacity ([`split_capacity`]) and its
    /// own policy instance and random source. Returns the set and the
    /// shards, in queue order, for the workers.
    pub fn new(control: Engine, shards: Vec<Engine>) -> (Self, Vec<Shard>) {
        let count = shards.len();
        let (report_tx, reports) = mpsc::channel();
        let mut links = Vec::with_capacity(count);
        let mut out = Vec::with_capacity(count);
        for (index, mut engine) in shards.into_iter().enumerate() {
            // The data path's engines sweep with the CPU's prefetch hint.
            engine.set_prefetch(Some(crate::sys::prefetch));
            // And their tables (still empty) on huge pages: fewer TLB
            // misses on a large table (docs/benchmarks.md, issue 17).
            engine.advise_memory(crate::sys::advise_huge_pages);
            let (tx, commands) = mpsc::channel();
            links.push(tx);
            out.push(Shard {
                index,
                count,
                engine,
                commands,
                reports: report_tx.clone(),
                measure_epoch: 0,
                closes: None,
                closes_base: 0,
            });
        }
        let set = Self {
            control,
            links,
            reports,
            last: vec![None; count],
            measure_epoch: 0,
            measuring: None,
            next_idle: 0,
            draining: false,
            last_walk: None,
            last_redirector: None,
            flow_queries: Vec::new(),
            decisions: Vec::new(),
            arrivals: Vec::new(),
            query_timeout: Duration::from_millis(500),
            unanswered: 0,
            closes: None,
            closes_base: 0,
        };
        (set, out)
    }

    /// The host counts its connections' ends itself (`reader`, see
    /// [`ClosesReader`]; `None`: the engines count them from the clients'
    /// FINs, as before). Every engine stops counting ends; the
    /// measurements must then list only the connections the application
    /// still holds (`dpr_xdp::closes::HELD_STATES`).
    pub fn set_closes(&mut self, reader: Option<ClosesReader>) {
        self.control.set_ends_from_host(reader.is_some());
        self.closes_base = reader.as_ref().map_or(0, |r| r());
        self.closes = reader.clone();
        for i in 0..self.links.len() {
            self.send(i, Command::SetCloses(reader.clone()));
        }
    }

    /// The host's close count now (`None` without [`Self::set_closes`]).
    pub fn closes_now(&self) -> Option<u64> {
        self.closes.as_ref().map(|r| r())
    }

    /// The measurement's dump begins now: the closes counted from here on
    /// come off its figures. (A close racing the dump may be taken off
    /// once too often, until the next measurement.)
    pub fn dump_begins(&mut self) {
        if let Some(r) = &self.closes {
            self.closes_base = r();
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.links.len()
    }

    /// The control engine: peers, the load table, the configuration.
    pub fn control(&self) -> &Engine {
        &self.control
    }

    /// Questions no shard answered in time (a stuck worker).
    pub fn unanswered(&self) -> u64 {
        self.unanswered
    }

    fn send(&self, shard: usize, c: Command) {
        if let Some(l) = self.links.get(shard) {
            // A shard whose worker has stopped takes nothing: shutdown.
            let _ = l.send(c);
        }
    }

    /// Runs `f` on every shard's engine.
    pub fn broadcast(&self, f: impl Fn(&mut Engine) + Send + Sync + 'static) {
        let f = Arc::new(f);
        for i in 0..self.links.len() {
            let f = f.clone();
            self.send(i, Command::Run(Box::new(move |e| f(e))));
        }
    }

    /// Runs `f` on the engine of the shard that owns `flow`.
    pub fn on_owner(&self, flow: &FlowKey, f: impl FnOnce(&mut Engine) + Send + 'static) {
        self.send(self.owner(flow), Command::Run(Box::new(f)));
    }

    fn owner(&self, flow: &FlowKey) -> usize {
        worker_for(self.control.flow_hasher(), flow, self.links.len().max(1))
    }

    /// Asks every shard and waits for the answers, in shard order (up to half a second:
    /// a worker reads its commands between batches, and at least every
    /// few milliseconds when idle). For rare questions (a peer's recovery
    /// request, a cut notice), never per packet.
    pub fn ask<T: Send + 'static>(
        &mut self,
        f: impl Fn(&mut Engine) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel();
        for i in 0..self.links.len() {
            let (f, tx) = (f.clone(), tx.clone());
            self.send(
                i,
                Command::Run(Box::new(move |e| {
                    let _ = tx.send((i, f(e)));
                })),
            );
        }
        drop(tx);
        let deadline = Instant::now() + self.query_timeout;
        let mut out = Vec::with_capacity(self.links.len());
        while out.len() < self.links.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) => out.push(v),
                Err(_) => {
                    self.unanswered += 1;
                    break;
                }
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// [`Engine::restart_silence`] on the control engine and every shard.
    pub fn restart_silence(&mut self, now: Timestamp) {
        self.control.restart_silence(now);
        self.broadcast(move |e| e.restart_silence(now));
    }

    /// Replaces every shard's policy with a new instance from `make`.
    pub fn set_policy(&mut self, make: &mut dyn FnMut() -> Box<dyn Policy + Send>) {
        self.control.set_policy(make());
        for i in 0..self.links.len() {
            let p = make();
            self.send(i, Command::Run(Box::new(move |e| e.set_policy(p))));
        }
    }

    /// Timer work: applies the shards' reports, refreshes the control
    /// engine's peer states and this host's load, and sends each shard
    /// its tick with what the others counted.
    pub fn tick(&mut self, now: Timestamp, budget: usize) {
        self.collect();
        self.control.tick(now, 0);
        let walk = self.draining
            && self
                .last_walk
                .is_none_or(|t| now.0.saturating_sub(t.0) >= WALK_EVERY_NS);
        if walk {
            self.last_walk = Some(now);
        }
        let nets: Vec<i64> = self.last.iter().map(|r| self.net_of(r.as_ref())).collect();
        let total: i64 = nets.iter().sum();
        self.control.set_local_others(total);
        if let Some(r) = &self.closes {
            self.control
                .set_local_closed(closed_since(r, self.closes_base));
        }
        for (i, net) in nets.iter().enumerate() {
            self.send(
                i,
                Command::Tick {
                    now,
                    budget,
                    others: total - net,
                    walk,
                },
            );
        }
    }

    fn net_of(&self, r: Option<&ShardReport>) -> i64 {
        r.filter(|r| r.measure_epoch == self.measure_epoch)
            .map_or(0, |r| r.local_net)
    }

    /// Applies the reports that came in (done by [`Self::tick`]).
    pub fn collect(&mut self) {
        while let Ok(mut r) = self.reports.try_recv() {
            let keep = self.control.config().decision_log;
            move_bounded(&mut self.decisions, &mut r.decisions, keep);
            move_bounded(&mut self.arrivals, &mut r.arrivals, keep);

            if r.last_redirector.is_some() {
                self.last_redirector = r.last_redirector;
            }
            self.flow_queries.append(&mut r.flow_queries);
            if let Some(slot) = self.last.get_mut(r.shard) {
                *slot = Some(r);
            }
        }
    }

    /// VIP mode: the flows the shards missed since the last call, for
    /// `cluster::Node::ask_flows` (they arrive with the shards' reports,
    /// every tick).
    pub fn take_flow_queries(&mut self) -> Vec<FlowKey> {
        std::mem::take(&mut self.flow_queries)
    }

    /// The shards' latest reports (None: not reported yet).
    pub fn reports(&self) -> &[Option<ShardReport>] {
        &self.last
    }

    /// The counters of all shards, as of their last reports.
    pub fn counters(&self) -> Counters {
        let mut c = Counters::default();
        for r in self.last.iter().flatten() {
            c.merge(&r.counters);
        }
        c
    }

    /// The routing tables together, as of the shards' last reports.
    pub fn routes(&self) -> TableSummary {
        let mut t = TableSummary::default();
        for r in self.last.iter().flatten() {
            t.add(&r.routes);
        }
        t
    }

    /// The served tables together, as of the shards' last reports.
    pub fn served(&self) -> TableSummary {
        let mut t = TableSummary::default();
        for r in self.last.iter().flatten() {
            t.add(&r.served);
        }
        t
    }

    /// The SYN decisions the shards reported since the last call.
    pub fn take_decisions(&mut self) -> Vec<DecisionRecord> {
        self.collect();
        let mut d = std::mem::take(&mut self.decisions);
        d.sort_by_key(|r| r.at);
        d
    }

    /// The new connections peers redirected here since the last call.
    pub fn take_peer_arrivals(&mut self) -> Vec<(Timestamp, PeerId, f64)> {
        self.collect();
        let mut a = std::mem::take(&mut self.arrivals);
        a.sort_by_key(|r| r.0);
        a
    }

    /// A load measurement begins: every shard starts noting the
    /// connections it sees open and end. Dump the sockets once
    /// [`Self::measurement_ready`] says every shard has begun.
    pub fn begin_load_measurement(&mut self) {
        let (tx, rx) = mpsc::channel();
        for i in 0..self.links.len() {
            self.send(i, Command::BeginMeasurement(tx.clone()));
        }
        self.control.begin_load_measurement();
        self.measuring = Some((rx, 0));
    }

    /// True once every shard has begun the measurement (never waits).
    pub fn measurement_ready(&mut self) -> bool {
        let n = self.links.len();
        match &mut self.measuring {
            Some((rx, acks)) => {
                while rx.try_recv().is_ok() {
                    *acks += 1;
                }
                *acks >= n
            }
            None => false,
        }
    }

    /// True while a measurement is begun and not finished.
    pub fn is_measuring(&self) -> bool {
        self.measuring.is_some()
    }

    /// The measurement is in (see [`Engine::finish_load_measurement`]):
    /// each shard reconciles the connections it saw open and end during
    /// the dump with `listed`.
    pub fn finish_load_measurement(
        &mut self,
        figures: LoadFigures,
        capacity: Capacity,
        listed: Option<Listed>,
    ) -> Result<(), EngineError> {
        self.measuring = None;
        self.measure_epoch += 1;
        self.control
            .finish_load_measurement(figures, capacity, None)?;
        for i in 0..self.links.len() {
            self.send(
                i,
                Command::FinishMeasurement {
                    epoch: self.measure_epoch,
                    closes_base: self.closes_base,
                    figures,
                    capacity,
                    listed: listed.clone(),
                },
            );
        }
        Ok(())
    }

    /// The local stack reports these connections open (see
    /// [`Engine::confirm_served`]): each goes to its shard.
    pub fn confirm_served(&self, flows: Vec<FlowKey>, now: Timestamp) {
        let mut by_shard: Vec<Vec<FlowKey>> = vec![Vec::new(); self.links.len()];
        for f in flows {
            if let Some(v) = by_shard.get_mut(self.owner(&f)) {
                v.push(f);
            }
        }
        for (i, flows) in by_shard.into_iter().enumerate() {
            if !flows.is_empty() {
                self.send(
                    i,
                    Command::Run(Box::new(move |e| {
                        for f in &flows {
                            e.confirm_served(f, now);
                        }
                    })),
                );
            }
        }
    }
}

fn move_bounded<T>(into: &mut Vec<T>, from: &mut Vec<T>, keep: usize) {
    into.append(from);
    if into.len() > keep {
        let extra = into.len() - keep;
        into.drain(..extra);
    }
}

/// Each shard's share of a table capacity: the total split evenly,
/// rounded up, so the bound holds per shard and the sum is at least the
/// total.
pub fn split_capacity(total: u32, shards: usize) -> u32 {
    let n = u32::try_from(shards.max(1)).unwrap_or(u32::MAX);
    total.div_ceil(n).max(1)
}

impl ClusterEngine for EngineSet {
    fn add_peer(
        &mut self,
        id: PeerId,
        tunnel_addr: IpAddr,
        service_addrs: Vec<IpAddr>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.control
            .add_peer(id, tunnel_addr, service_addrs.clone(), now)?;
        self.broadcast(move |e| {
            let _ = e.add_peer(id, tunnel_addr, service_addrs.clone(), now);
        });
        Ok(())
    }
    fn remove_peer(&mut self, id: PeerId) -> Result<(), EngineError> {
        self.control.remove_peer(id)?;
        self.broadcast(move |e| {
            let _ = e.remove_peer(id);
        });
        Ok(())
    }
    fn mark_peer_left(&mut self, id: PeerId) -> Result<(), EngineError> {
        self.control.mark_peer_left(id)?;
        self.broadcast(move |e| {
            let _ = e.mark_peer_left(id);
        });
        Ok(())
    }
    fn apply_report(
        &mut self,
        id: PeerId,
        report: &LoadReport,
        now: Timestamp,
    ) -> Result<ReportOutcome, EngineError> {
        let out = self.control.apply_report(id, report, now)?;
        let report = *report;
        self.broadcast(move |e| {
            let _ = e.apply_report(id, &report, now);
        });
        Ok(out)
    }
    fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
        self.control.set_draining(draining);
        self.broadcast(move |e| e.set_draining(draining));
    }
    fn set_recovering(&mut self, recovering: bool) {
        self.control.set_recovering(recovering);
        self.broadcast(move |e| e.set_recovering(recovering));
    }
    /// One shard hears it (join-idle sends the idle peer one connection,
    /// not one per shard), in turn.
    fn peer_idle(&mut self, peer: PeerId) {
        let n = self.links.len().max(1);
        let i = self.next_idle % n;
        self.next_idle = self.next_idle.wrapping_add(1);
        self.send(i, Command::Run(Box::new(move |e| e.peer_idle(peer))));
    }
    fn loads(&self) -> &LoadTable {
        self.control.loads()
    }
    /// As of the shards' last walks (every 100 ms while draining); before
    /// the first, every connection routed to a peer counts.
    fn forwarding_connections(&self, _now: Timestamp) -> usize {
        self.last
            .iter()
            .flatten()
            .map(|r| r.forwarding.unwrap_or(r.routes.len))
            .sum()
    }
    fn has_cut(&self, peer: PeerId) -> bool {
        self.last
            .iter()
            .flatten()
            .any(|r| r.cut_peers.contains(&peer))
    }
    fn take_cut(&mut self, peer: PeerId) -> Vec<FlowKey> {
        for r in self.last.iter_mut().flatten() {
            r.cut_peers.retain(|p| *p != peer);
        }
        self.ask(move |e| e.take_cut(peer)).concat()
    }
    fn forget_served(&mut self, flow: &FlowKey) -> bool {
        let f = *flow;
        self.on_owner(flow, move |e| {
            e.forget_served(&f);
        });
        true
    }
    fn restore_route(
        &mut self,
        flow: &FlowKey,
        peer: PeerId,
        now: Timestamp,
    ) -> Result<bool, EngineError> {
        let f = *flow;
        self.on_owner(flow, move |e| {
            let _ = e.restore_route(&f, peer, now);
        });
        Ok(true)
    }
    fn served_for(&mut self, origin: PeerId, now: Timestamp) -> Vec<FlowKey> {
        self.ask(move |e| e.served_for(origin, now)).concat()
    }
    fn last_redirector(&self) -> Option<PeerId> {
        self.last_redirector
    }
    fn serves_flows(&mut self, flows: &[FlowKey], now: Timestamp) -> Vec<FlowKey> {
        let flows: Arc<Vec<FlowKey>> = Arc::new(flows.to_vec());
        self.ask(move |e| e.serves_flows(&flows, now)).concat()
    }
    fn claim_flow(&mut self, flow: &FlowKey, peer: PeerId, now: Timestamp) -> bool {
        let f = *flow;
        self.on_owner(flow, move |e| {
            e.claim_flow(&f, peer, now);
        });
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dpr_policy::{SplitMix64, Threshold, ThresholdConfig};
    use dpr_router::EngineConfig;
    use std::net::Ipv4Addr;

    pub(crate) fn engine(capacity: u32, threshold: f64) -> Engine {
        let mut cfg = EngineConfig::new(
            Ipv4Addr::new(198, 19, 0, 1).into(),
            vec![Ipv4Addr::new(198, 18, 0, 1).into()],
            vec![80],
        );
        cfg.routes.capacity = capacity;
        cfg.served.capacity = capacity;
        let policy =
            Threshold::new(ThresholdConfig { threshold }).unwrap_or_else(|_| unreachable!());
        Engine::new(
            cfg,
            PeerId(0),
            Capacity::default(),
            dpr_table::LoadTableConfig::default(),
            Box::new(policy),
            Box::new(SplitMix64::new(1)),
        )
        .unwrap_or_else(|_| unreachable!())
    }

    pub(crate) fn syn(src_port: u16) -> Vec<u8> {
        let mut p = vec![0u8; crate::backend::DEFAULT_HEADROOM];
        p.extend_from_slice(&[
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 100, 1, 198, 18, 0, 1,
        ]);
        let [a, b] = src_port.to_be_bytes();
        p.extend_from_slice(&[
            a, b, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        p
    }

    fn flow(src_port: u16) -> FlowKey {
        FlowKey::new(
            dpr_packet::IpProtocol::Tcp,
            Ipv4Addr::new(198, 18, 100, 1).into(),
            src_port,
            Ipv4Addr::new(198, 18, 0, 1).into(),
            80,
        )
    }

    /// Runs the shards on threads that poll their commands until the set
    /// is dropped; returns the threads.
    fn spawn(shards: Vec<Shard>) -> Vec<std::thread::JoinHandle<Shard>> {
        shards
            .into_iter()
            .map(|mut s| {
                std::thread::spawn(move || {
                    while s.poll().1 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    s
                })
            })
            .collect()
    }

    fn process(s: &mut Shard, src_port: u16) -> Verdict {
        let mut b = syn(src_port);
        let end = b.len();
        let mut pkt = PacketBuf::new(&mut b, crate::backend::DEFAULT_HEADROOM, end)
            .unwrap_or_else(|| unreachable!());
        s.process(Timestamp::from_millis(1), &mut pkt)
    }

    /// What changes peers or modes reaches every shard, in order; a
    /// question about flows asks them all; a flow's route goes to its
    /// owner only.
    #[test]
    fn every_shard_hears_the_shared_state_and_flows_go_to_their_owner() {
        let (mut set, mut shards) =
            EngineSet::new(engine(1, 4.0), vec![engine(64, 4.0), engine(64, 4.0)]);
        // Shard 0 serves some flows locally before the threads start.
        let mine: Vec<u16> = (1000..1100)
            .filter(|p| worker_for(shards[0].engine.flow_hasher(), &flow(*p), 2) == 0)
            .take(3)
            .collect();
        for p in &mine {
            assert_eq!(
                shards[0].owner_of(&syn(*p)[crate::backend::DEFAULT_HEADROOM..]),
                0
            );
            assert!(matches!(process(&mut shards[0], *p), Verdict::Deliver));
        }
        let threads = spawn(shards);
        let t = Timestamp::from_millis(2);
        set.add_peer(
            PeerId(1),
            Ipv4Addr::new(198, 19, 0, 2).into(),
            vec![Ipv4Addr::new(198, 18, 0, 2).into()],
            t,
        )
        .unwrap_or_else(|_| unreachable!());
        let report = LoadReport {
            seq: 1,
            figures: LoadFigures {
                open_connections: 7,
                ..LoadFigures::default()
            },
            capacity: Capacity::default(),
            draining: false,
        };
        assert_eq!(
            set.apply_report(PeerId(1), &report, t).ok(),
            Some(ReportOutcome::Applied)
        );
        set.set_draining(true);
        let seen = set.ask(|e| {
            (
                e.loads()
                    .peer(PeerId(1))
                    .map(|p| p.figures.open_connections),
                e.is_draining(),
            )
        });
        assert_eq!(seen, vec![(Some(7), true), (Some(7), true)]);
        // Routes restored by a peer land on the flow's owner.
        let theirs: Vec<u16> = (2000..2100)
            .filter(|p| worker_for(set.control().flow_hasher(), &flow(*p), 2) == 1)
            .take(2)
            .collect();
        for p in &theirs {
            assert_eq!(set.restore_route(&flow(*p), PeerId(1), t).ok(), Some(true));
        }
        let routes = set.ask(|e| e.routes().len());
        assert_eq!(routes, vec![mine.len(), theirs.len()]);
        drop(set);
        for t in threads {
            assert!(t.join().is_ok());
        }
    }

    /// Each shard counts its own new connections; the tick tells it the
    /// others', so every shard and the control engine see the host's load.
    #[test]
    fn the_host_load_is_the_measurement_plus_every_shards_count() {
        let (mut set, mut shards) =
            EngineSet::new(engine(1, 100.0), vec![engine(64, 100.0), engine(64, 100.0)]);
        set.begin_load_measurement();
        for s in &mut shards {
            s.poll();
        }
        assert!(set.measurement_ready());
        let figures = LoadFigures {
            open_connections: 10,
            ..LoadFigures::default()
        };
        set.finish_load_measurement(figures, Capacity::default(), None)
            .unwrap_or_else(|_| unreachable!());
        for s in &mut shards {
            s.poll();
        }
        let (mut n0, mut n1) = (0, 0);
        for p in 3000..3040u16 {
            let owner = worker_for(set.control().flow_hasher(), &flow(p), 2);
            if owner == 0 && n0 < 3 {
                n0 += 1;
            } else if owner == 1 && n1 < 2 {
                n1 += 1;
            } else {
                continue;
            }
            assert!(matches!(process(&mut shards[owner], p), Verdict::Deliver));
        }
        assert_eq!(
            shards[0].engine().loads().local_load(),
            13.0,
            "its own count"
        );
        // Two ticks: the reports of the first reach the set before the second.
        for _ in 0..2 {
            set.tick(Timestamp::from_millis(5), 16);
            for s in &mut shards {
                s.poll();
            }
        }
        assert_eq!(set.loads().local_load(), 15.0);
        assert_eq!(shards[0].engine().loads().local_load(), 15.0);
        assert_eq!(shards[1].engine().loads().local_load(), 15.0);
        assert_eq!(set.counters().new_local, 5);
        assert_eq!(set.routes().len, 5);
        // The next measurement lets the counts go.
        set.begin_load_measurement();
        for s in &mut shards {
            s.poll();
        }
        assert!(set.measurement_ready());
        set.finish_load_measurement(figures, Capacity::default(), None)
            .unwrap_or_else(|_| unreachable!());
        for _ in 0..2 {
            for s in &mut shards {
                s.poll();
            }
            set.tick(Timestamp::from_millis(10), 16);
        }
        for s in &mut shards {
            s.poll();
        }
        assert_eq!(set.loads().local_load(), 10.0);
        assert_eq!(shards[1].engine().loads().local_load(), 10.0);
    }

    /// With the host's close counter, every shard and the control engine
    /// take the closes since the dump began off the measurement, before
    /// the next packet; the next measurement starts from its own reading.
    #[test]
    fn the_hosts_closes_come_off_every_shards_estimate() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let (mut set, mut shards) =
            EngineSet::new(engine(1, 100.0), vec![engine(64, 100.0), engine(64, 100.0)]);
        let counter = Arc::new(AtomicU64::new(40));
        let c = counter.clone();
        set.set_closes(Some(Arc::new(move || c.load(Ordering::Relaxed))));
        let measure = |set: &mut EngineSet, shards: &mut Vec<Shard>, n: u32| {
            set.begin_load_measurement();
            for s in shards.iter_mut() {
                s.poll();
            }
            assert!(set.measurement_ready());
            set.dump_begins();
            let figures = LoadFigures {
                open_connections: n,
                ..LoadFigures::default()
            };
            set.finish_load_measurement(figures, Capacity::default(), None)
                .unwrap_or_else(|_| unreachable!());
            for s in shards.iter_mut() {
                s.poll();
            }
        };
        measure(&mut set, &mut shards, 10);
        assert_eq!(shards[0].engine().loads().local_load(), 10.0);
        // Three closes: the next packet each shard handles sees them.
        counter.fetch_add(3, Ordering::Relaxed);
        let p0 = (4000..4100u16)
            .find(|p| worker_for(set.control().flow_hasher(), &flow(*p), 2) == 0)
            .unwrap_or_else(|| unreachable!());
        assert!(matches!(process(&mut shards[0], p0), Verdict::Deliver));
        assert_eq!(shards[0].engine().loads().local_load(), 8.0, "10 + 1 - 3");
        // The ticks: the other shard and the control engine too.
        for _ in 0..2 {
            set.tick(Timestamp::from_millis(5), 16);
            for s in &mut shards {
                s.poll();
            }
        }
        assert_eq!(set.loads().local_load(), 8.0);
        assert_eq!(shards[1].engine().loads().local_load(), 8.0);
        // A measurement: its dump's reading is the new base.
        measure(&mut set, &mut shards, 6);
        for _ in 0..2 {
            set.tick(Timestamp::from_millis(10), 16);
            for s in &mut shards {
                s.poll();
            }
        }
        assert_eq!(set.loads().local_load(), 6.0);
        assert_eq!(shards[1].engine().loads().local_load(), 6.0);
        counter.fetch_add(1, Ordering::Relaxed);
        set.tick(Timestamp::from_millis(15), 16);
        assert_eq!(set.loads().local_load(), 5.0);
    }

    #[test]
    fn capacity_is_split_rounding_up() {
        assert_eq!(split_capacity(65_536, 2), 32_768);
        assert_eq!(split_capacity(10, 3), 4);
        assert_eq!(split_capacity(5, 0), 5);
        assert_eq!(split_capacity(1, 8), 1);
    }
}
