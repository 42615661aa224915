//! The cluster protocol under control-datagram loss, sans-io: three
//! [`Node`]s on a simulated network that drops each datagram with a fixed
//! probability (a seeded random source), each node over a stand-in engine
//! with a real load table (the liveness judge) and a flow list for
//! recovery. Timers run on a 1 ms step, datagrams take 0.2 ms; the
//! configuration is `dprd`'s default (reports every 200 ms with 20%
//! jitter, dead after 1000 ms, recovery paced at 32 chunks per 5 ms,
//! probes every 25 ms).
//!
//! What it shows: a live peer is never declared dead at 30% loss (and is,
//! often, with probes off); a dead peer still is within `dead_after`;
//! recovery of a large table completes at 10% and 30% loss; the paced
//! sender never sends more than its budget per interval.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use dpr_packet::control::MessageKind;
use dpr_packet::{FlowKey, IpProtocol};
use dpr_policy::{RandomSource, SplitMix64};
use dpr_router::EngineError;
use dpr_router::cluster::{Clock, KeyRing, Node, NodeConfig, NodePhase, PeerConfig};
use dpr_router::harness::CLUSTER_KEY;
use dpr_router::ops::ClusterEngine;
use dpr_table::{
    Capacity, LoadReport, LoadTable, LoadTableConfig, PeerId, PeerState, ReportOutcome, Timestamp,
};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const HOSTS: usize = 3;
const INTERVAL: Duration = Duration::from_millis(200);
const DEAD_AFTER: Duration = Duration::from_millis(1000);
const STEP_NS: u64 = 1_000_000;
const LATENCY_NS: u64 = 200_000;
const EPOCH: u64 = 1_800_000_000_000_000_000;

fn tunnel(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1 + i as u8))
}

fn service(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1 + i as u8))
}

/// Flow number `n` (< 2^24) to host `to`'s service address.
fn flow(n: usize, to: usize) -> FlowKey {
    let src = Ipv4Addr::new(198, 19, (n >> 16) as u8, (n >> 8) as u8);
    FlowKey::new(
        IpProtocol::Tcp,
        IpAddr::V4(src),
        1024 + (n & 0xff) as u16,
        service(to),
        80,
    )
}

fn flow_number(f: &FlowKey) -> Option<usize> {
    let IpAddr::V4(a) = f.src else { return None };
    let o = a.octets();
    let low = usize::from(f.src_port.checked_sub(1024)?);
    Some(usize::from(o[2]) << 16 | usize::from(o[3]) << 8 | low)
}

/// What the protocol needs of a router: a real load table, the flows this
/// host serves for each peer, and a bitmap of the routes restored.
struct Stub {
    loads: LoadTable,
    serves: BTreeMap<PeerId, Vec<FlowKey>>,
    restored: Vec<bool>,
    restored_count: usize,
}

impl Stub {
    fn new(id: usize, restorable: usize) -> Self {
        let cfg = LoadTableConfig {
            report_interval: INTERVAL,
            suspect_after_missed: 1,
            dead_after_missed: (DEAD_AFTER.as_millis() / INTERVAL.as_millis()) as u32,
            ..LoadTableConfig::default()
        };
        Self {
            loads: LoadTable::new(cfg, PeerId(id as u16), Capacity::default()).unwrap(),
            serves: BTreeMap::new(),
            restored: vec![false; restorable],
            restored_count: 0,
        }
    }
}

impl ClusterEngine for Stub {
    fn add_peer(
        &mut self,
        id: PeerId,
        tunnel_addr: IpAddr,
        service_addrs: Vec<IpAddr>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        Ok(self.loads.add_peer(id, tunnel_addr, service_addrs, now)?)
    }
    fn remove_peer(&mut self, _: PeerId) -> Result<(), EngineError> {
        Ok(())
    }
    fn mark_peer_left(&mut self, id: PeerId) -> Result<(), EngineError> {
        Ok(self.loads.mark_left(id)?)
    }
    fn apply_report(
        &mut self,
        id: PeerId,
        report: &LoadReport,
        now: Timestamp,
    ) -> Result<ReportOutcome, EngineError> {
        Ok(self.loads.apply_report(id, report, now)?)
    }
    fn set_draining(&mut self, _: bool) {}
    fn set_recovering(&mut self, _: bool) {}
    fn peer_idle(&mut self, _: PeerId) {}
    fn loads(&self) -> &LoadTable {
        &self.loads
    }
    fn forwarding_connections(&self, _: Timestamp) -> usize {
        0
    }
    fn has_cut(&self, _: PeerId) -> bool {
        false
    }
    fn take_cut(&mut self, _: PeerId) -> Vec<FlowKey> {
        Vec::new()
    }
    fn forget_served(&mut self, _: &FlowKey) -> bool {
        false
    }
    fn restore_route(&mut self, f: &FlowKey, _: PeerId, _: Timestamp) -> Result<bool, EngineError> {
        let Some(slot) = flow_number(f).and_then(|n| self.restored.get_mut(n)) else {
            return Ok(false);
        };
        let new = !*slot;
        *slot = true;
        self.restored_count += usize::from(new);
        Ok(new)
    }
    fn served_for(&mut self, origin: PeerId, _: Timestamp) -> Vec<FlowKey> {
        self.serves.get(&origin).cloned().unwrap_or_default()
    }
    fn last_redirector(&self) -> Option<PeerId> {
        None
    }
    fn serves_flows(&mut self, _: &[FlowKey], _: Timestamp) -> Vec<FlowKey> {
        Vec::new()
    }
    fn claim_flow(&mut self, _: &FlowKey, _: PeerId, _: Timestamp) -> bool {
        false
    }
}

struct Sim {
    now: u64,
    nodes: Vec<Node>,
    stubs: Vec<Stub>,
    alive: Vec<bool>,
    loss: f64,
    rng: SplitMix64,
    wire: VecDeque<(u64, usize, IpAddr, Vec<u8>)>,
    /// Per host: when it sent each recovery reply chunk.
    reply_times: Vec<Vec<u64>>,
    /// Datagrams sent and dropped, by kind.
    sent: BTreeMap<&'static str, u64>,
    dropped: u64,
    /// (observer, peer, time) of every live peer seen dead.
    false_deaths: Vec<(usize, usize, u64)>,
    was_dead: Vec<Vec<bool>>,
}

fn kind_name(b: &[u8]) -> &'static str {
    match b.get(3).map(|k| MessageKind::from(*k)) {
        Some(MessageKind::Report) => "report",
        Some(MessageKind::RecoveryRequest) => "recovery_request",
        Some(MessageKind::RecoveryReply) => "recovery_reply",
        Some(MessageKind::Probe) => "probe",
        _ => "other",
    }
}

fn node_config(i: usize, probes: bool) -> NodeConfig {
    let mut c = NodeConfig::new(PeerId(i as u16), vec![service(i)]);
    c.report_interval = INTERVAL;
    c.seed = 0x5eed ^ (i as u64) << 32;
    if !probes {
        c.probe_interval = Duration::ZERO;
    }
    c
}

fn peers_of(i: usize) -> Vec<PeerConfig> {
    (0..HOSTS)
        .filter(|&j| j != i)
        .map(|j| PeerConfig {
            id: PeerId(j as u16),
            tunnel_addr: tunnel(j),
            service_addrs: vec![service(j)],
        })
        .collect()
}

fn keys() -> KeyRing {
    KeyRing::new(&[(1, &CLUSTER_KEY)]).unwrap()
}

impl Sim {
    fn new(loss: f64, seed: u64, probes: bool) -> Self {
        let now = 1_000_000_000;
        let mut stubs: Vec<Stub> = (0..HOSTS).map(|i| Stub::new(i, 0)).collect();
        let nodes = (0..HOSTS)
            .map(|i| {
                let mut c = node_config(i, probes);
                c.recover_on_start = false;
                let clock = Clock {
                    mono: Timestamp(now),
                    unix_ns: EPOCH + now + i as u64,
                };
                Node::new(c, keys(), peers_of(i), clock, &mut stubs[i]).unwrap()
            })
            .collect();
        Self {
            now,
            nodes,
            stubs,
            alive: vec![true; HOSTS],
            loss,
            rng: SplitMix64::new(seed),
            wire: VecDeque::new(),
            reply_times: vec![Vec::new(); HOSTS],
            sent: BTreeMap::new(),
            dropped: 0,
            false_deaths: Vec::new(),
            was_dead: vec![vec![false; HOSTS]; HOSTS],
        }
    }

    fn clock(&self) -> Clock {
        Clock {
            mono: Timestamp(self.now),
            unix_ns: EPOCH + self.now,
        }
    }

    fn flush(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            let kind = kind_name(&t.payload);
            *self.sent.entry(kind).or_default() += 1;
            if kind == "recovery_reply" {
                self.reply_times[i].push(self.now);
            }
            let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if u < self.loss {
                self.dropped += 1;
                continue;
            }
            let Some(to) = (0..HOSTS).find(|&j| tunnel(j) == t.to) else {
                continue;
            };
            self.wire
                .push_back((self.now + LATENCY_NS, to, tunnel(i), t.payload));
        }
    }

    /// One step: deliver what has arrived, run due timers, refresh every
    /// load table, note every live peer some host holds dead.
    fn step(&mut self) {
        self.now += STEP_NS;
        let clock = self.clock();
        while self.wire.front().is_some_and(|w| w.0 <= self.now) {
            let Some((_, to, from, bytes)) = self.wire.pop_front() else {
                break;
            };
            if self.alive[to] {
                let _ = self.nodes[to].handle_datagram(clock, from, &bytes, &mut self.stubs[to]);
                self.flush(to);
            }
        }
        for i in 0..HOSTS {
            if !self.alive[i] {
                continue;
            }
            if clock.mono >= self.nodes[i].poll_timeout() {
                self.nodes[i].handle_timeout(clock, &mut self.stubs[i]);
            }
            self.flush(i);
            self.stubs[i].loads.refresh(clock.mono);
            for j in 0..HOSTS {
                let dead = self.stubs[i]
                    .loads
                    .peer(PeerId(j as u16))
                    .is_some_and(|p| p.state == PeerState::Dead);
                if dead && !self.was_dead[i][j] && self.alive[j] {
                    self.false_deaths.push((i, j, self.now));
                }
                self.was_dead[i][j] = dead;
            }
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d.as_nanos() as u64;
        while self.now < end {
            self.step();
        }
    }

    /// Restarts host `i`'s protocol with recovery on and a fresh engine
    /// that can restore flows numbered below `restorable`.
    fn restart(&mut self, i: usize, restorable: usize) {
        self.stubs[i] = Stub::new(i, restorable);
        let clock = self.clock();
        self.nodes[i] = Node::new(
            node_config(i, true),
            keys(),
            peers_of(i),
            clock,
            &mut self.stubs[i],
        )
        .unwrap();
        self.alive[i] = true;
    }

    fn sent(&self, kind: &str) -> u64 {
        self.sent.get(kind).copied().unwrap_or(0)
    }
}

#[test]
fn a_live_peer_is_never_declared_dead_at_30_percent_loss() {
    let minutes = 10;
    let mut with = Sim::new(0.3, 7, true);
    with.run(Duration::from_secs(60 * minutes));
    let probes: u64 = with.nodes.iter().map(|n| n.counters().probes_sent).sum();
    let answered: u64 = with
        .nodes
        .iter()
        .map(|n| n.counters().probes_answered)
        .sum();
    eprintln!(
        "30% loss, {minutes} simulated minutes, probes on: {} reports, {probes} probes ({answered} \
         answered), {} of {} datagrams dropped, false deaths: {:?}",
        with.sent("report"),
        with.dropped,
        with.sent.values().sum::<u64>(),
        with.false_deaths
    );
    assert!(with.dropped > 0 && probes > 0);
    assert!(with.false_deaths.is_empty(), "{:?}", with.false_deaths);

    // The same network without probes: reports alone lose live peers.
    let mut without = Sim::new(0.3, 7, false);
    without.run(Duration::from_secs(60 * minutes));
    eprintln!(
        "30% loss, {minutes} simulated minutes, probes off: {} false deaths (observer, peer, ms): \
         {:?}",
        without.false_deaths.len(),
        without
            .false_deaths
            .iter()
            .map(|(i, j, t)| (i, j, t / 1_000_000))
            .collect::<Vec<_>>()
    );
    assert!(
        !without.false_deaths.is_empty(),
        "without probes, 30% loss should have made some live peer dead in {minutes} minutes"
    );
}

#[test]
fn a_dead_peer_is_declared_dead_within_dead_after_even_with_probes() {
    for (trial, loss) in [0.0, 0.1, 0.3].into_iter().enumerate() {
        for seed in 0..5u64 {
            let mut sim = Sim::new(loss, 100 + seed + 10 * trial as u64, true);
            sim.run(Duration::from_secs(3) + Duration::from_millis(37 * seed));
            let killed_at = sim.now;
            sim.alive[2] = false;
            let mut seen = [None::<u64>; 2];
            while seen.iter().any(Option::is_none) {
                sim.step();
                for (i, s) in seen.iter_mut().enumerate() {
                    let dead = sim.stubs[i]
                        .loads
                        .peer(PeerId(2))
                        .is_some_and(|p| p.state == PeerState::Dead);
                    if dead && s.is_none() {
                        *s = Some(sim.now - killed_at);
                    }
                }
                assert!(
                    sim.now - killed_at <= 2 * DEAD_AFTER.as_nanos() as u64,
                    "loss {loss}: h2 never dead"
                );
            }
            for s in seen.into_iter().flatten() {
                assert!(
                    s <= DEAD_AFTER.as_nanos() as u64,
                    "loss {loss}, seed {seed}: dead after {} ms",
                    s / 1_000_000
                );
            }
            assert!(sim.false_deaths.is_empty(), "{:?}", sim.false_deaths);
        }
    }
}

/// Hosts 1 and 2 serve `flows` connections for host 0 between them; host
/// 0 restarts and recovers them at `loss`. Returns the figures.
fn recover(flows: usize, loss: f64, seed: u64) -> String {
    let mut sim = Sim::new(loss, seed, true);
    for (n, host) in [(0..flows / 2, 1), (flows / 2..flows, 2)] {
        sim.stubs[host]
            .serves
            .insert(PeerId(0), n.map(|k| flow(k, 0)).collect());
    }
    sim.run(Duration::from_secs(2));
    sim.restart(0, flows);
    let start = sim.now;
    let limit = Duration::from_secs(120).as_nanos() as u64;
    while sim.nodes[0].phase() == NodePhase::Recovering {
        assert!(
            sim.now - start < limit,
            "recovery still running after 120 s"
        );
        sim.step();
    }
    let took_ms = (sim.now - start) / 1_000_000;
    let c0 = sim.nodes[0].counters().clone();
    let c = |i: usize| sim.nodes[i].counters().clone();
    let figures = format!(
        "{flows} flows at {:.0}% loss: recovered {} in {took_ms} ms (node says {} ms); \
         {} requests sent ({} received by peers), chunks sent {} + {} for {} distinct, {} \
         duplicates; {} of {} datagrams dropped; incomplete: {}",
        loss * 100.0,
        sim.stubs[0].restored_count,
        c0.recovery_ms,
        c0.recovery_requests_sent,
        c(1).recovery_requests_received + c(2).recovery_requests_received,
        c(1).recovery_chunks_sent,
        c(2).recovery_chunks_sent,
        c0.recovery_chunks_received,
        c0.recovery_chunks_duplicate,
        sim.dropped,
        sim.sent.values().sum::<u64>(),
        c0.recovery_incomplete,
    );
    eprintln!("{figures}");
    assert_eq!(c0.recovery_incomplete, 0, "{figures}");
    assert_eq!(sim.stubs[0].restored_count, flows, "{figures}");
    assert!(sim.false_deaths.is_empty(), "{:?}", sim.false_deaths);
    // The paced sender: never more than `recovery_burst` chunks in any
    // window of `recovery_pace`.
    let cfg = sim.nodes[1].config().clone();
    let pace = cfg.recovery_pace.as_nanos() as u64;
    for (i, times) in sim.reply_times.iter().enumerate() {
        let mut lo = 0;
        let mut most = 0;
        for hi in 0..times.len() {
            while times[hi] - times[lo] >= pace {
                lo += 1;
            }
            most = most.max(hi - lo + 1);
        }
        eprintln!(
            "h{i}: {} chunks sent, at most {most} in any {} ms (budget {})",
            times.len(),
            pace / 1_000_000,
            cfg.recovery_burst
        );
        assert!(
            most <= cfg.recovery_burst as usize,
            "h{i}: {most} in one pace interval"
        );
    }
    figures
}

fn recovery_flows() -> usize {
    std::env::var("DPR_RECOVERY_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

#[test]
fn recovery_of_a_large_table_completes_at_10_percent_loss() {
    recover(recovery_flows(), 0.1, 11);
}

#[test]
fn recovery_of_a_large_table_completes_at_30_percent_loss() {
    recover(recovery_flows(), 0.3, 13);
}

#[test]
fn a_lost_single_chunk_answer_is_asked_for_again() {
    // Small tables: one chunk each, whose loss only a re-ask repairs.
    for seed in 0..20 {
        recover(50, 0.3, 1000 + seed);
    }
}

/// False deaths per hour per (observer, peer) pair the design predicts at
/// `loss`, with independent drops: each applied report opens a window of
/// `DEAD_AFTER` in which the peer's next 5 reports (one every 160-200 ms)
/// must all be lost, and, with probes, all 27 probes (every 25 ms from 300
/// to 950 ms of silence) or their answers: `N (1-p) p^5 q^27`, with `N` =
/// 20,000 reports an hour (one per 180 ms on average) and `q = 1 -
/// (1-p)^2`.
fn predicted_per_hour(loss: f64, probes: bool) -> f64 {
    let reports = 3600.0 / 0.18 * (1.0 - loss);
    let q = 1.0 - (1.0 - loss) * (1.0 - loss);
    let probes = if probes { q.powi(27) } else { 1.0 };
    reports * loss.powi(5) * probes
}

#[test]
fn false_deaths_follow_the_model_where_they_are_frequent_enough_to_count() {
    // At 30% loss the model predicts 4e-7 false deaths per pair per hour
    // with probes: too rare to count. Where they are common enough (60%
    // loss with probes, 30% without), the simulation agrees with the
    // model within Poisson noise, which is what the figures for 10% and
    // 30% rest on.
    let pairs = (HOSTS * (HOSTS - 1)) as f64;
    for (loss, probes, minutes) in [(0.6, true, 20u64), (0.3, false, 10)] {
        let mut sim = Sim::new(loss, 21, probes);
        sim.run(Duration::from_secs(60 * minutes));
        let seen = sim.false_deaths.len() as f64;
        let want = predicted_per_hour(loss, probes) * pairs * minutes as f64 / 60.0;
        eprintln!(
            "{:.0}% loss, probes {}: {seen} false deaths in {minutes} simulated minutes, model \
             {want:.1}",
            loss * 100.0,
            if probes { "on" } else { "off" }
        );
        assert!(
            seen > want / 3.0 && seen < want * 3.0,
            "{seen} false deaths against a model of {want:.1}"
        );
    }
    for loss in [0.1, 0.3] {
        eprintln!(
            "model, false deaths per pair per hour at {:.0}% loss: {:.2e} with probes, {:.2e} \
             without",
            loss * 100.0,
            predicted_per_hour(loss, true),
            predicted_per_hour(loss, false)
        );
    }
}
