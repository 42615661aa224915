//! The discrete-event model of a DPR cluster at connection level.
//!
//! Hosts are processor-sharing servers: `n` open connections on a host of
//! capacity `c` each progress at `c / n`. Each host keeps a virtual clock
//! `v` (the service every one of its connections has received) and a heap
//! of finish points `v0 + demand`, so an arrival or a departure costs
//! O(log n) and only the host's next departure is ever scheduled; a
//! departure event made stale by a later arrival is recognised by its
//! generation number and skipped.
//!
//! Each host that runs a DPR policy owns a real [`LoadTable`], fed by
//! simulated load reports (full mesh or gossip, with network delay), and
//! routes each client connection with the real strategy through
//! [`decide_and_account`]. The model reads no clock: time is the event
//! queue's, and every random draw comes from a stream seeded by the run.

use crate::candidates::{Candidate, WithIdle};
use crate::config::{
    AddressMode, ClientModel, ClusterConfig, FULL_MESH_REPORT_BYTES, GOSSIP_BASE_BYTES,
    GOSSIP_ENTRY_BYTES, IDLE_AD_BYTES, PolicyKind, ReportMode,
};
use crate::rng::Rng;
use crate::stats::{Histogram, RunReport, SeriesPoint};
use core::cmp::{Ordering, Reverse};
use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;
use dpr_packet::{FlowKey, IpProtocol};
use dpr_policy::{
    JoinIdle, JoinIdleConfig, LeastLoad, NewConnection, Policy, RandomSource, RedirectDecision,
    StatelessHash, StatelessHashConfig, Threshold, ThresholdConfig, TwoChoices, decide_and_account,
};
use dpr_table::{
    Capacity, LoadFigures, LoadReport, LoadTable, LoadTableConfig, PeerId, PeerState, Timestamp,
};
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;

/// `f64` ordered by `total_cmp`, for heaps.
#[derive(Clone, Copy, Debug, PartialEq)]
struct OrdF(f64);
impl Eq for OrdF {}
impl PartialOrd for OrdF {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// A load entry as a host knows it (and gossips it).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Entry {
    host: u32,
    seq: u64,
    generated: f64,
    open: u32,
}

#[derive(Debug)]
enum Ev {
    Arrival,
    FlashArrival,
    Join {
        host: u32,
        conn: u32,
        epoch: u32,
        from: u32,
    },
    Departure {
        host: u32,
        generation: u64,
    },
    Tick {
        host: u32,
        epoch: u32,
    },
    Mesh {
        entry: Entry,
    },
    Gossip {
        to: u32,
        entries: Rc<[Entry]>,
    },
    Sample,
    Down {
        host: u32,
    },
    Up {
        host: u32,
    },
    Idle {
        to: u32,
        from: u32,
    },
    /// The client's FIN of a connection `host` redirected to `peer`
    /// reaches `host` (`epoch`: `host`'s, when it redirected).
    RedirectEnd {
        host: u32,
        peer: u32,
        epoch: u32,
    },
}

struct Scheduled {
    t: f64,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap, we want the earliest (then the
    // first scheduled) on top, so runs are deterministic.
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    arrival: f64,
    demand: f64,
    measured: bool,
    /// The host that redirected this connection here, and its epoch then.
    redirected_by: Option<(u32, u32)>,
}

struct Host {
    cap: f64,
    up: bool,
    epoch: u32,
    /// Service received by each open connection so far (virtual time).
    v: f64,
    last: f64,
    active: BinaryHeap<Reverse<(OrdF, u32)>>,
    generation: u64,
    seq: u64,
}

/// A min-tree over hosts keyed by `(open + 1) / capacity`: the ideal
/// dispatcher's view.
struct MinTree {
    size: usize,
    tree: Vec<(f64, u32)>,
}

impl MinTree {
    fn new(n: usize) -> Self {
        let size = n.next_power_of_two();
        let mut t = Self {
            size,
            tree: vec![(f64::INFINITY, u32::MAX); 2 * size],
        };
        for i in 0..n {
            t.tree[size + i] = (f64::INFINITY, i as u32);
        }
        t
    }
    fn set(&mut self, i: usize, key: f64) {
        let mut j = self.size + i;
        self.tree[j].0 = key;
        while j > 1 {
            j /= 2;
            let (a, b) = (self.tree[2 * j], self.tree[2 * j + 1]);
            self.tree[j] = if b.0 < a.0 || (b.0 == a.0 && b.1 < a.1) {
                b
            } else {
                a
            };
        }
    }
    fn min(&self) -> Option<usize> {
        let (k, i) = self.tree[1];
        k.is_finite().then_some(i as usize)
    }
}

/// The stateless hash over a membership view every host shares.
///
/// Every host's own [`StatelessHash`] would hold a 65,536-bucket table and
/// rebuild it at O(buckets x hosts): 1,000 of them do not fit a small
/// machine. All hosts that agree on the membership compute the same table,
/// so the simulator keeps one, synced with a reference [`LoadTable`] fed by
/// every host's reports and aged like the others. The reference table's
/// own "local host" is a phantom of tiny capacity (weight 1 against 1,000
/// for a reference host), which owns about 0.1 % / N of the buckets; a
/// connection hashed to it is served where it arrived. The deciding host
/// then applies the strategy's own rule with its own table: redirect to
/// the owner if it is another host and `Alive` here, else serve locally.
struct SharedHash {
    hash: StatelessHash,
    reference: LoadTable,
}

/// The deciding host's view of [`SharedHash`], as a [`Policy`].
struct SharedHashPolicy<'a>(&'a SharedHash);

impl Policy for SharedHashPolicy<'_> {
    fn decide(
        &mut self,
        conn: &NewConnection,
        loads: &LoadTable,
        _rng: &mut dyn RandomSource,
    ) -> RedirectDecision {
        match self.0.hash.owner_of(&conn.flow) {
            Some(id) if id != loads.local_id() && loads.is_eligible(id) => {
                RedirectDecision::Redirect(id)
            }
            _ => RedirectDecision::ServeLocally,
        }
    }
    fn name(&self) -> &'static str {
        "stateless-hash"
    }
}

/// Per-run counters and accumulators.
#[derive(Default)]
struct Stats {
    arrivals: u64,
    completed: u64,
    errors: u64,
    redirected: u64,
    msgs: u64,
    bytes: u64,
    response: Histogram,
    imbalance_sum: f64,
    imbalance_n: u64,
    age_sum: f64,
    age_n: u64,
    not_alive: u64,
    pairs: u64,
    series_rt: Vec<(f64, u64)>,
    series_arrivals: Vec<u64>,
    series_errors: Vec<u64>,
    series_imb: Vec<(f64, u64)>,
}

/// One simulation run: a cluster, a workload, one policy.
pub struct Sim {
    cfg: ClusterConfig,
    policy: PolicyKind,
    n: usize,
    hosts: Vec<Host>,
    tables: Vec<LoadTable>,
    policies: Vec<Box<dyn Policy>>,
    candidates: Vec<Candidate>,
    join_idle: Vec<JoinIdle>,
    /// Per host: peers that advertised they were idle (candidates only).
    idle: Vec<VecDeque<PeerId>>,
    rng_idle: Rng,
    /// Per host: the peer that last redirected a connection to it.
    last_redirector: Vec<Option<usize>>,
    shared_hash: Option<SharedHash>,
    ideal: Option<MinTree>,
    /// `know[observer * n + subject]`: the freshest entry the observer has.
    know: Vec<Entry>,
    conns: Vec<Conn>,
    free: Vec<u32>,
    queue: BinaryHeap<Scheduled>,
    next_seq: u64,
    rng_arrival: Rng,
    rng_flash: Rng,
    rng_policy: Rng,
    rng_gossip: Rng,
    resolvers: Vec<(usize, f64)>,
    resolver_cdf: Vec<f64>,
    rr_next: usize,
    outstanding_measured: u64,
    stats: Stats,
    events: u64,
    table_config: LoadTableConfig,
    scratch: Vec<(f64, u32)>,
}

fn ts(t: f64) -> Timestamp {
    Timestamp((t.max(0.0) * 1e9) as u64)
}

fn peer(i: usize) -> PeerId {
    PeerId(i as u16)
}

fn tunnel_addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32))
}

const SERVICE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);

impl Sim {
    /// A run of `policy` on `cfg`, seeded with `seed`.
    pub fn new(cfg: &ClusterConfig, policy: PolicyKind, seed: u64) -> Result<Self, String> {
        cfg.validate()?;
        let n = cfg.hosts;
        let (suspect, dead) = cfg.health_thresholds();
        let table_config = LoadTableConfig {
            report_interval: Duration::from_secs_f64(cfg.report_interval),
            suspect_after_missed: suspect,
            dead_after_missed: dead,
            ..LoadTableConfig::default()
        };
        let hosts = (0..n)
            .map(|i| Host {
                cap: cfg.capacity(i),
                up: true,
                epoch: 0,
                v: 0.0,
                last: 0.0,
                active: BinaryHeap::new(),
                generation: 0,
                seq: 0,
            })
            .collect();
        let mut sim = Self {
            cfg: cfg.clone(),
            policy,
            n,
            hosts,
            tables: Vec::new(),
            policies: Vec::new(),
            candidates: Vec::new(),
            join_idle: Vec::new(),
            idle: Vec::new(),
            rng_idle: Rng::new(seed, 5),
            last_redirector: Vec::new(),
            shared_hash: None,
            ideal: None,
            know: Vec::new(),
            conns: Vec::new(),
            free: Vec::new(),
            queue: BinaryHeap::new(),
            next_seq: 0,
            rng_arrival: Rng::new(seed, 1),
            rng_flash: Rng::new(seed, 2),
            rng_policy: Rng::new(seed, 3),
            rng_gossip: Rng::new(seed, 4),
            resolvers: Vec::new(),
            resolver_cdf: Vec::new(),
            rr_next: 0,
            outstanding_measured: 0,
            stats: Stats::default(),
            events: 0,
            table_config,
            scratch: Vec::new(),
        };
        let buckets = (cfg.duration / cfg.series_bucket).ceil() as usize;
        sim.stats.series_rt = vec![(0.0, 0); buckets];
        sim.stats.series_arrivals = vec![0; buckets];
        sim.stats.series_errors = vec![0; buckets];
        sim.stats.series_imb = vec![(0.0, 0); buckets];
        if let ClientModel::Resolvers { count, zipf_s, .. } = cfg.clients {
            let mut acc = 0.0;
            for i in 0..count.max(1) {
                acc += 1.0 / f64::from(i + 1).powf(zipf_s);
                sim.resolver_cdf.push(acc);
                sim.resolvers.push((0, f64::NEG_INFINITY));
            }
            for c in &mut sim.resolver_cdf {
                *c /= acc;
            }
        }
        if policy.uses_tables() {
            sim.tables = (0..n)
                .map(|i| sim.fresh_table(i, 0.0))
                .collect::<Result<_, _>>()?;
            sim.know = vec![Entry::default(); n * n];
            for i in 0..n {
                let p: Box<dyn Policy> = match policy {
                    PolicyKind::Threshold(t) => Box::new(
                        Threshold::new(ThresholdConfig { threshold: t })
                            .map_err(|e| e.to_string())?,
                    ),
                    PolicyKind::LeastLoad => Box::new(LeastLoad),
                    PolicyKind::TwoChoices => Box::new(TwoChoices),
                    PolicyKind::ThresholdTwoChoices(threshold) => Box::new(
                        dpr_policy::ThresholdTwoChoices::new(dpr_policy::ThresholdConfig {
                            threshold,
                        })
                        .map_err(|e| format!("policy: {e}"))?,
                    ),
                    _ => Box::new(LeastLoad), // unused: see `route`
                };
                sim.policies.push(p);
                let _ = i;
            }
        }
        if let PolicyKind::Candidate(spec) = policy {
            sim.candidates = (0..n).map(|_| Candidate::new(spec)).collect();
            sim.idle = vec![VecDeque::new(); n];
        }
        if let PolicyKind::JoinIdle(threshold) = policy {
            let p = JoinIdle::new(JoinIdleConfig {
                threshold,
                ..JoinIdleConfig::default()
            })
            .map_err(|e| format!("policy: {e}"))?;
            sim.join_idle = vec![p; n];
        }
        if policy.idle_ads().is_some() {
            sim.last_redirector = vec![None; n];
        }
        if policy == PolicyKind::StatelessHash {
            let phantom = Capacity {
                cpu: 1e-6,
                memory: 0.0,
            };
            let mut reference = LoadTable::new(table_config, peer(n), phantom)
                .map_err(|e| format!("reference table: {e}"))?;
            for i in 0..n {
                reference
                    .add_peer(peer(i), tunnel_addr(i), Vec::new(), Timestamp::ZERO)
                    .map_err(|e| format!("reference table: {e}"))?;
            }
            let hash = StatelessHash::new(StatelessHashConfig {
                seed: seed ^ 0x6470_7231,
                ..StatelessHashConfig::default()
            })
            .map_err(|e| e.to_string())?;
            sim.shared_hash = Some(SharedHash { hash, reference });
        }
        if policy == PolicyKind::Ideal {
            let mut t = MinTree::new(n);
            for i in 0..n {
                t.set(i, 1.0 / sim.hosts[i].cap);
            }
            sim.ideal = Some(t);
        }
        Ok(sim)
    }

    fn fresh_table(&self, i: usize, now: f64) -> Result<LoadTable, String> {
        let cap = Capacity {
            cpu: self.hosts[i].cap as f32,
            memory: 1.0,
        };
        let mut t = LoadTable::new(self.table_config, peer(i), cap).map_err(|e| e.to_string())?;
        for j in 0..self.n {
            if j != i {
                t.add_peer(peer(j), tunnel_addr(j), Vec::new(), ts(now))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(t)
    }

    fn push(&mut self, t: f64, ev: Ev) {
        self.next_seq += 1;
        self.queue.push(Scheduled {
            t,
            seq: self.next_seq,
            ev,
        });
    }

    fn in_window(&self, t: f64) -> bool {
        t >= self.cfg.warmup && t < self.cfg.duration
    }

    fn bucket(&self, t: f64) -> Option<usize> {
        let b = (t / self.cfg.series_bucket) as usize;
        (t >= 0.0 && b < self.stats.series_rt.len()).then_some(b)
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> RunReport {
        let interval = self.cfg.report_interval;
        self.push(0.0, Ev::Arrival);
        if let Some(f) = self.cfg.flash {
            self.push(f.start, Ev::FlashArrival);
        }
        if self.policy.uses_tables() {
            for h in 0..self.n {
                let phase = self.rng_gossip.f64() * interval;
                self.push(
                    phase,
                    Ev::Tick {
                        host: h as u32,
                        epoch: 0,
                    },
                );
            }
        }
        self.push(0.0, Ev::Sample);
        for f in self.cfg.failures.clone() {
            self.push(
                f.at,
                Ev::Down {
                    host: f.host as u32,
                },
            );
            if let Some(b) = f.back_at {
                self.push(
                    b,
                    Ev::Up {
                        host: f.host as u32,
                    },
                );
            }
        }
        // Arrivals go on past `duration` (unmeasured) so the last measured
        // connections see a loaded system, until they have all finished.
        let hard_end = self.cfg.duration + self.cfg.drain;
        while let Some(Scheduled { t, ev, .. }) = self.queue.pop() {
            if t >= self.cfg.duration && self.outstanding_measured == 0 || t > hard_end {
                break;
            }
            self.events += 1;
            match ev {
                Ev::Arrival => self.on_arrival(t, false),
                Ev::FlashArrival => self.on_arrival(t, true),
                Ev::Join {
                    host,
                    conn,
                    epoch,
                    from,
                } => self.on_join(t, host as usize, conn, epoch, from as usize),
                Ev::Departure { host, generation } => {
                    self.on_departure(t, host as usize, generation)
                }
                Ev::Tick { host, epoch } => self.on_tick(t, host as usize, epoch),
                Ev::Mesh { entry } => self.on_mesh(t, entry),
                Ev::Gossip { to, entries } => self.on_gossip(t, to as usize, &entries),
                Ev::Sample => self.on_sample(t),
                Ev::Down { host } => self.on_down(t, host as usize),
                Ev::Up { host } => self.on_up(t, host as usize),
                Ev::Idle { to, from } => self.on_idle(to as usize, from as usize),
                Ev::RedirectEnd { host, peer, epoch } => {
                    self.on_redirect_end(host as usize, peer as usize, epoch)
                }
            }
        }
        self.finish()
    }

    fn on_arrival(&mut self, t: f64, flash: bool) {
        let cfg = &self.cfg;
        let rng = if flash {
            &mut self.rng_flash
        } else {
            &mut self.rng_arrival
        };
        let demand = cfg.demand.sample(rng);
        let src = rng.u64();
        let remap = rng.u64();
        let (first, next) = if let (true, Some(f)) = (flash, cfg.flash) {
            let rate = f.extra_load / cfg.demand.mean();
            let next = t + rng.exp(1.0 / rate);
            (f.target, (next < f.start + f.duration).then_some(next))
        } else {
            let u = rng.f64();
            let v = rng.u64();
            let host = match cfg.clients {
                ClientModel::Uniform => rng.below(self.n),
                ClientModel::Hot { fraction } => {
                    if u < fraction {
                        0
                    } else {
                        rng.below(self.n)
                    }
                }
                ClientModel::Resolvers { ttl, .. } => {
                    let r = self.resolver_cdf.partition_point(|&c| c <= u);
                    let r = r.min(self.resolvers.len() - 1);
                    let slot = &mut self.resolvers[r];
                    if t >= slot.1 {
                        *slot = (self.rr_next, t + ttl);
                        self.rr_next = (self.rr_next + 1) % self.n;
                    }
                    let _ = v;
                    slot.0
                }
            };
            let next = t + rng.exp(1.0 / cfg.arrival_rate());
            (host, Some(next))
        };
        if let Some(next) = next {
            self.push(next, if flash { Ev::FlashArrival } else { Ev::Arrival });
        }
        let measured = self.in_window(t);
        let mut host = first;
        if self.cfg.address_mode == AddressMode::SharedVip && !self.hosts[host].up {
            let up: Vec<usize> = (0..self.n).filter(|&i| self.hosts[i].up).collect();
            if !up.is_empty() {
                host = up[((u128::from(remap) * up.len() as u128) >> 64) as usize];
            }
        }
        if measured {
            self.stats.arrivals += 1;
            self.outstanding_measured += 1;
            if let Some(b) = self.bucket(t) {
                self.stats.series_arrivals[b] += 1;
            }
        }
        let conn = self.alloc(Conn {
            arrival: t,
            demand,
            measured,
            redirected_by: None,
        });
        let flow = FlowKey::new(
            IpProtocol::Tcp,
            IpAddr::V4(Ipv4Addr::from((src >> 32) as u32)),
            src as u16,
            IpAddr::V4(SERVICE_ADDR),
            80,
        );
        self.route(t, host, conn, flow);
    }

    fn route(&mut self, t: f64, host: usize, conn: u32, flow: FlowKey) {
        if self.policy == PolicyKind::Ideal {
            // The central dispatcher owns the address: no host is "first".
            match self.ideal.as_ref().and_then(MinTree::min) {
                Some(best) => self.join(t, best, conn),
                None => self.lose(conn),
            }
            return;
        }
        if !self.hosts[host].up {
            self.lose(conn);
            return;
        }
        if !self.policy.uses_tables() {
            self.join(t, host, conn);
            return;
        }
        let nc = NewConnection::from_client(flow);
        let table = &mut self.tables[host];
        let decision = match (&self.shared_hash, self.policy) {
            (Some(sh), PolicyKind::StatelessHash) => {
                decide_and_account(&mut SharedHashPolicy(sh), &nc, table, &mut self.rng_policy)
            }
            (_, PolicyKind::Candidate(spec)) if spec.idle.is_some() => decide_and_account(
                &mut WithIdle {
                    candidate: &mut self.candidates[host],
                    idle: &mut self.idle[host],
                },
                &nc,
                table,
                &mut self.rng_policy,
            ),
            (_, PolicyKind::Candidate(_)) => {
                decide_and_account(&mut self.candidates[host], &nc, table, &mut self.rng_policy)
            }
            (_, PolicyKind::JoinIdle(_)) => {
                decide_and_account(&mut self.join_idle[host], &nc, table, &mut self.rng_policy)
            }
            _ => decide_and_account(
                self.policies[host].as_mut(),
                &nc,
                table,
                &mut self.rng_policy,
            ),
        };
        match decision {
            RedirectDecision::ServeLocally => self.join(t, host, conn),
            RedirectDecision::Redirect(p) => {
                if self.conns[conn as usize].measured {
                    self.stats.redirected += 1;
                }
                let p = usize::from(p.0);
                let epoch = self.hosts[p].epoch;
                self.push(
                    t + self.cfg.redirect_latency,
                    Ev::Join {
                        host: p as u32,
                        conn,
                        epoch,
                        from: host as u32,
                    },
                );
            }
        }
    }

    fn alloc(&mut self, c: Conn) -> u32 {
        if let Some(i) = self.free.pop() {
            self.conns[i as usize] = c;
            i
        } else {
            self.conns.push(c);
            (self.conns.len() - 1) as u32
        }
    }

    fn lose(&mut self, conn: u32) {
        let c = self.conns[conn as usize];
        if c.measured {
            self.stats.errors += 1;
            self.outstanding_measured -= 1;
            if let Some(b) = self.bucket(c.arrival) {
                self.stats.series_errors[b] += 1;
            }
        }
        self.free.push(conn);
    }

    fn advance(&mut self, h: usize, t: f64) {
        let host = &mut self.hosts[h];
        let n = host.active.len();
        if n > 0 {
            host.v += (t - host.last) * host.cap / n as f64;
        }
        host.last = t;
    }

    fn reschedule(&mut self, h: usize, t: f64) {
        let host = &mut self.hosts[h];
        host.generation += 1;
        let generation = host.generation;
        if let Some(Reverse((OrdF(f), _))) = host.active.peek() {
            let n = host.active.len() as f64;
            let dt = (f - host.v).max(0.0) * n / host.cap;
            self.push(
                t + dt,
                Ev::Departure {
                    host: h as u32,
                    generation,
                },
            );
        }
    }

    fn load_changed(&mut self, h: usize) {
        let host = &self.hosts[h];
        let open = host.active.len();
        if let Some(t) = self.tables.get_mut(h) {
            let cap = Capacity {
                cpu: host.cap as f32,
                memory: 1.0,
            };
            let figures = LoadFigures {
                open_connections: open as u32,
                ..LoadFigures::default()
            };
            let _ = t.set_local(figures, cap);
        }
        if let Some(m) = self.ideal.as_mut() {
            let key = if host.up {
                (open as f64 + 1.0) / host.cap
            } else {
                f64::INFINITY
            };
            m.set(h, key);
        }
    }

    fn join(&mut self, t: f64, h: usize, conn: u32) {
        self.advance(h, t);
        let host = &mut self.hosts[h];
        let finish = host.v + self.conns[conn as usize].demand;
        host.active.push(Reverse((OrdF(finish), conn)));
        self.load_changed(h);
        self.reschedule(h, t);
    }

    fn on_join(&mut self, t: f64, h: usize, conn: u32, epoch: u32, from: usize) {
        if !self.hosts[h].up || self.hosts[h].epoch != epoch {
            self.lose(conn);
        } else {
            if let Some(r) = self.last_redirector.get_mut(h) {
                *r = Some(from);
            }
            if from != h {
                self.conns[conn as usize].redirected_by =
                    Some((from as u32, self.hosts[from].epoch));
            }
            self.join(t, h, conn);
        }
    }

    fn on_departure(&mut self, t: f64, h: usize, generation: u64) {
        if self.hosts[h].generation != generation {
            return;
        }
        self.advance(h, t);
        let Some(Reverse((_, conn))) = self.hosts[h].active.pop() else {
            return;
        };
        let c = self.conns[conn as usize];
        if c.measured {
            let rt = t - c.arrival;
            self.stats.completed += 1;
            self.outstanding_measured -= 1;
            self.stats.response.record(rt);
            if let Some(b) = self.bucket(c.arrival) {
                let s = &mut self.stats.series_rt[b];
                s.0 += rt;
                s.1 += 1;
            }
        }
        if let Some((host, epoch)) = c.redirected_by {
            // The redirecting host forwards the client's packets, so it
            // sees the FIN (one network delay after the last byte) and
            // stops counting the connection against this peer.
            self.push(
                t + self.cfg.net_delay,
                Ev::RedirectEnd {
                    host,
                    peer: h as u32,
                    epoch,
                },
            );
        }
        self.free.push(conn);
        self.load_changed(h);
        self.reschedule(h, t);
        self.advertise_idle(t, h);
    }

    /// `dpr-router` calls `LoadTable::record_redirect_end` when a
    /// connection it redirected ends; a redirecting host that restarted
    /// since has forgotten the connection (and its fresh table never
    /// counted it).
    fn on_redirect_end(&mut self, h: usize, p: usize, epoch: u32) {
        if !self.hosts[h].up || self.hosts[h].epoch != epoch {
            return;
        }
        if let Some(table) = self.tables.get_mut(h) {
            let _ = table.record_redirect_end(peer(p));
        }
    }

    /// Idle advertisements: a host whose open connections just fell to the
    /// watermark tells a few random peers.
    fn advertise_idle(&mut self, t: f64, h: usize) {
        let Some(ads) = self.policy.idle_ads() else {
            return;
        };
        if self.hosts[h].active.len() != ads.watermark as usize || self.n < 2 {
            return;
        }
        let counted = self.in_window(t);
        let redirector = if ads.to_redirector {
            self.last_redirector[h]
        } else {
            None
        };
        for i in 0..ads.fanout.min(self.n as u32 - 1) {
            let to = match redirector {
                Some(r) if i == 0 => r,
                _ => {
                    let to = self.rng_idle.below(self.n - 1);
                    if to >= h { to + 1 } else { to }
                }
            };
            if counted {
                self.stats.msgs += 1;
                self.stats.bytes += IDLE_AD_BYTES;
            }
            self.push(
                t + self.cfg.net_delay,
                Ev::Idle {
                    to: to as u32,
                    from: h as u32,
                },
            );
        }
    }

    fn on_idle(&mut self, to: usize, from: usize) {
        if !self.hosts[to].up {
            return;
        }
        if let Some(p) = self.join_idle.get_mut(to) {
            p.advertised_idle(peer(from));
        } else if let Some(list) = self.idle.get_mut(to) {
            list.retain(|&p| p != peer(from));
            list.push_back(peer(from));
        }
    }

    fn on_tick(&mut self, t: f64, h: usize, epoch: u32) {
        if !self.hosts[h].up || self.hosts[h].epoch != epoch {
            return;
        }
        let host = &mut self.hosts[h];
        host.seq += 1;
        let entry = Entry {
            host: h as u32,
            seq: host.seq,
            generated: t,
            open: host.active.len() as u32,
        };
        let counted = self.in_window(t);
        let n = self.n;
        match self.cfg.report_mode {
            ReportMode::FullMesh => {
                if counted {
                    self.stats.msgs += (n - 1) as u64;
                    self.stats.bytes += (n - 1) as u64 * FULL_MESH_REPORT_BYTES;
                }
                self.push(t + self.cfg.net_delay, Ev::Mesh { entry });
            }
            ReportMode::Gossip {
                fanout,
                max_relayed,
            } => {
                self.know[h * n + h] = entry;
                self.send_gossip(t, h, entry, fanout as usize, max_relayed as usize, counted);
            }
        }
        if let Some(sh) = self.shared_hash.as_mut() {
            let _ =
                sh.reference
                    .apply_report(peer(h), &report_of(&entry, self.hosts[h].cap), ts(t));
        }
        if let Some(table) = self.tables.get_mut(h) {
            table.refresh(ts(t));
        }
        self.push(
            t + self.cfg.report_interval,
            Ev::Tick {
                host: h as u32,
                epoch,
            },
        );
    }

    fn send_gossip(
        &mut self,
        t: f64,
        h: usize,
        own: Entry,
        fanout: usize,
        max_relayed: usize,
        counted: bool,
    ) {
        let n = self.n;
        if n < 2 {
            return;
        }
        // The freshest entries about peers this host sees as Alive.
        self.scratch.clear();
        let table = &self.tables[h];
        for x in 0..n {
            let e = self.know[h * n + x];
            if x != h
                && e.seq > 0
                && table
                    .peer(peer(x))
                    .is_some_and(|p| p.state == PeerState::Alive)
            {
                self.scratch.push((e.generated, x as u32));
            }
        }
        if self.scratch.len() > max_relayed {
            self.scratch
                .select_nth_unstable_by(max_relayed, |a, b| b.0.total_cmp(&a.0));
            self.scratch.truncate(max_relayed);
        }
        let mut entries = Vec::with_capacity(self.scratch.len() + 1);
        entries.push(own);
        entries.extend(
            self.scratch
                .iter()
                .map(|&(_, x)| self.know[h * n + x as usize]),
        );
        let entries: Rc<[Entry]> = entries.into();
        let k = fanout.min(n - 1);
        let mut targets: Vec<usize> = Vec::with_capacity(k);
        while targets.len() < k {
            let mut r = self.rng_gossip.below(n - 1);
            if r >= h {
                r += 1;
            }
            if !targets.contains(&r) {
                targets.push(r);
            }
        }
        if counted {
            self.stats.msgs += k as u64;
            self.stats.bytes +=
                k as u64 * (GOSSIP_BASE_BYTES + GOSSIP_ENTRY_BYTES * (entries.len() as u64 - 1));
        }
        for to in targets {
            self.push(
                t + self.cfg.net_delay,
                Ev::Gossip {
                    to: to as u32,
                    entries: Rc::clone(&entries),
                },
            );
        }
    }

    fn apply(&mut self, t: f64, r: usize, e: Entry) {
        let n = self.n;
        let x = e.host as usize;
        if x == r || e.seq <= self.know[r * n + x].seq {
            return;
        }
        self.know[r * n + x] = e;
        let report = report_of(&e, self.hosts[x].cap);
        let _ = self.tables[r].apply_report(peer(x), &report, ts(t));
    }

    fn on_mesh(&mut self, t: f64, e: Entry) {
        for r in 0..self.n {
            if self.hosts[r].up {
                self.apply(t, r, e);
            }
        }
    }

    fn on_gossip(&mut self, t: f64, to: usize, entries: &[Entry]) {
        if !self.hosts[to].up {
            return;
        }
        for &e in entries {
            self.apply(t, to, e);
        }
    }

    fn on_sample(&mut self, t: f64) {
        if let Some(sh) = self.shared_hash.as_mut() {
            sh.reference.refresh(ts(t));
            sh.hash.sync(&sh.reference);
        }
        if t < self.cfg.duration {
            let (mut sum, mut max, mut up) = (0.0f64, 0.0f64, 0usize);
            for h in &self.hosts {
                if h.up {
                    let l = h.active.len() as f64 / h.cap;
                    sum += l;
                    max = max.max(l);
                    up += 1;
                }
            }
            if sum > 0.0 {
                let ratio = max / (sum / up as f64);
                if self.in_window(t) {
                    self.stats.imbalance_sum += ratio;
                    self.stats.imbalance_n += 1;
                }
                if let Some(b) = self.bucket(t) {
                    let s = &mut self.stats.series_imb[b];
                    s.0 += ratio;
                    s.1 += 1;
                }
            }
            if self.in_window(t) && !self.tables.is_empty() {
                self.sample_knowledge(t);
            }
        }
        self.push(t + self.cfg.sample_interval, Ev::Sample);
    }

    fn sample_knowledge(&mut self, t: f64) {
        let n = self.n;
        let observers: Vec<usize> = (0..n).filter(|&i| self.hosts[i].up).take(8).collect();
        for o in observers {
            let table = &self.tables[o];
            for x in 0..n {
                if x == o || !self.hosts[x].up {
                    continue;
                }
                self.stats.pairs += 1;
                let e = self.know[o * n + x];
                if e.seq > 0 {
                    self.stats.age_sum += t - e.generated;
                    self.stats.age_n += 1;
                }
                if table
                    .peer(peer(x))
                    .is_none_or(|p| p.state != PeerState::Alive)
                {
                    self.stats.not_alive += 1;
                }
            }
        }
    }

    fn on_down(&mut self, _t: f64, h: usize) {
        let host = &mut self.hosts[h];
        host.up = false;
        host.epoch += 1;
        host.generation += 1;
        let lost: Vec<u32> = host.active.drain().map(|Reverse((_, c))| c).collect();
        for c in lost {
            self.lose(c);
        }
        self.load_changed(h);
    }

    fn on_up(&mut self, t: f64, h: usize) {
        let host = &mut self.hosts[h];
        host.up = true;
        host.v = 0.0;
        host.last = t;
        let epoch = host.epoch;
        if self.policy.uses_tables() {
            // A restarted host knows nothing of its peers' loads; its
            // report sequence goes on (peers that have not yet declared it
            // dead would reject a restarted sequence as stale).
            if let Ok(table) = self.fresh_table(h, t) {
                self.tables[h] = table;
            }
            if let Some(list) = self.idle.get_mut(h) {
                list.clear();
            }
            if let (Some(p), PolicyKind::JoinIdle(threshold)) =
                (self.join_idle.get_mut(h), self.policy)
            {
                if let Ok(fresh) = JoinIdle::new(JoinIdleConfig {
                    threshold,
                    ..JoinIdleConfig::default()
                }) {
                    *p = fresh;
                }
            }
            let n = self.n;
            for x in 0..n {
                self.know[h * n + x] = Entry::default();
            }
            self.push(
                t,
                Ev::Tick {
                    host: h as u32,
                    epoch,
                },
            );
        }
        self.load_changed(h);
    }

    fn finish(self) -> RunReport {
        let s = self.stats;
        let window = self.cfg.duration - self.cfg.warmup;
        let series = (0..s.series_rt.len())
            .map(|b| SeriesPoint {
                t: b as f64 * self.cfg.series_bucket,
                mean_response: if s.series_rt[b].1 > 0 {
                    s.series_rt[b].0 / s.series_rt[b].1 as f64
                } else {
                    0.0
                },
                arrivals: s.series_arrivals[b],
                errors: s.series_errors[b],
                imbalance: if s.series_imb[b].1 > 0 {
                    s.series_imb[b].0 / s.series_imb[b].1 as f64
                } else {
                    0.0
                },
            })
            .collect();
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        RunReport {
            policy: self.policy.label(),
            mode: if self.policy.uses_tables() {
                self.cfg.report_mode.label().into()
            } else {
                "-".into()
            },
            hosts: self.n,
            arrivals: s.arrivals,
            completed: s.completed,
            errors: s.errors,
            unfinished: self.outstanding_measured,
            response: s.response,
            imbalance: ratio(s.imbalance_sum, s.imbalance_n as f64),
            redirect_fraction: ratio(s.redirected as f64, s.arrivals as f64),
            msgs_per_host_s: ratio(s.msgs as f64, self.n as f64 * window),
            bytes_per_host_s: ratio(s.bytes as f64, self.n as f64 * window),
            knowledge_age: ratio(s.age_sum, s.age_n as f64),
            not_alive_fraction: ratio(s.not_alive as f64, s.pairs as f64),
            series,
            events: self.events,
        }
    }
}

fn report_of(e: &Entry, cap: f64) -> LoadReport {
    LoadReport {
        seq: e.seq,
        figures: LoadFigures {
            open_connections: e.open,
            ..LoadFigures::default()
        },
        capacity: Capacity {
            cpu: cap as f32,
            memory: 1.0,
        },
        draining: false,
    }
}

/// Runs `policy` on `cfg` with `seed`.
pub fn run(cfg: &ClusterConfig, policy: PolicyKind, seed: u64) -> Result<RunReport, String> {
    Ok(Sim::new(cfg, policy, seed)?.run())
}
