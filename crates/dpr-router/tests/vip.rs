//! VIP mode on the in-memory cluster (issue 18): every host holds the
//! same IPv4 and IPv6 VIP, an upstream router spreads flows over the hosts
//! that announce it (ECMP by an L4 hash: modulo the next hops, or a
//! resilient group), and ask-on-miss keeps every established connection
//! reaching the host that serves it while hosts join, drain, restart and
//! die. Each step prints its counts.
#![allow(clippy::unwrap_used, clippy::panic)]

use dpr_packet::{FlowKey, IpProtocol};
use dpr_policy::{Policy, Threshold, ThresholdConfig};
use dpr_router::harness::tcp::ClientState;
use dpr_router::harness::{Cluster, ClusterConfig, EcmpMode};
use dpr_router::{Counters, DropReason, PacketBuf, Verdict, VipCounters};
use dpr_table::{PeerId, Route};
use std::net::IpAddr;
use std::time::Duration;

/// Long-lived connections through the VIP.
const LONG: usize = 200;
/// Hosts announcing the VIP at the start (a fifth joins in step 1).
const FIRST_HOPS: usize = 4;

fn threshold(_: usize) -> Box<dyn Policy + Send> {
    // About 50 connections per host over 4 hosts: some served where ECMP
    // brought them, some redirected (both kinds must survive a move).
    Box::new(Threshold::new(ThresholdConfig { threshold: 30.0 }).unwrap())
}

/// A long-lived connection: the client's address and port.
type Conn = (IpAddr, u16);

struct Vip {
    c: Cluster,
    long: Vec<Conn>,
    /// Client index for the next batch of new connections.
    next_client: usize,
    /// Counters of engines and nodes a restart replaced.
    retired: Counters,
    retired_queries: u64,
}

/// What a step did to the connections.
#[derive(Debug, Default)]
struct Step {
    /// Long-lived connections that answered the step's request.
    ok: usize,
    /// Long-lived connections reset or silent.
    broken: Vec<Conn>,
    /// New connections opened during the step, and those that completed.
    new_opened: usize,
    new_done: usize,
}

impl Vip {
    fn new(mode: EcmpMode) -> Self {
        let cfg = ClusterConfig {
            hosts: FIRST_HOPS + 1,
            vip: Some(mode),
            response_len: 1000,
            ..ClusterConfig::default()
        };
        let mut c = Cluster::new(cfg, threshold).unwrap();
        for i in 0..FIRST_HOPS {
            c.announce(i);
        }
        let mut v = Self {
            c,
            long: Vec::new(),
            next_client: 100,
            retired: Counters::default(),
            retired_queries: 0,
        };
        // 200 held-open connections, half IPv4 and half IPv6, from 50
        // clients of each family, opened over 200 ms.
        for k in 0..LONG {
            let (client, v6) = (k / 2 % 50, k % 2 == 1);
            v.long.push(v.c.connect_vip(client, v6, true));
            v.c.run_for(Duration::from_millis(1));
        }
        v.c.run_for(Duration::from_millis(300));
        for &(a, p) in &v.long {
            let conn = v.c.conn_of(a, p).unwrap();
            assert_eq!(conn.state, ClientState::Established, "{a}:{p}");
            assert!(conn.finished_at.is_some(), "{a}:{p}: no first response");
        }
        v
    }

    fn served_by(&self, (a, p): Conn) -> String {
        self.c
            .conn_of(a, p)
            .and_then(|c| c.served_by())
            .unwrap_or("?")
            .to_string()
    }

    /// Restarts host `i`'s router, keeping its counters for the report.
    fn restart(&mut self, i: usize) {
        self.retired.merge(&self.c.hosts[i].engine.counters());
        self.retired_queries += self.c.hosts[i].node.counters().flow_query_messages;
        self.c.restart(i).unwrap();
    }

    fn query_messages(&self) -> u64 {
        self.retired_queries
            + self
                .c
                .hosts
                .iter()
                .map(|h| h.node.counters().flow_query_messages)
                .sum::<u64>()
    }

    fn counters(&self) -> Counters {
        let mut t = self.retired.clone();
        for h in &self.c.hosts {
            t.merge(&h.engine.counters());
        }
        t
    }

    /// Opens `n` short connections (one request each, then closed), one
    /// per millisecond, alternating families, running the cluster
    /// meanwhile. Returns them.
    fn open_new(&mut self, n: usize) -> Vec<Conn> {
        let mut out = Vec::new();
        for k in 0..n {
            let client = self.next_client + k % 50;
            out.push(self.c.connect_vip(client, k % 2 == 1, false));
            self.c.run_for(Duration::from_millis(1));
        }
        self.next_client += 50;
        out
    }

    fn done(&self, conns: &[Conn]) -> usize {
        conns
            .iter()
            .filter(|&&(a, p)| {
                self.c
                    .conn_of(a, p)
                    .is_some_and(|c| c.state == ClientState::Done)
            })
            .count()
    }

    /// Every long-lived connection still open sends one more request; the
    /// step counts those whose whole response arrived.
    fn probe(&mut self, step: &mut Step) {
        let open: Vec<Conn> = self
            .long
            .iter()
            .copied()
            .filter(|&(a, p)| {
                self.c
                    .conn_of(a, p)
                    .is_some_and(|c| c.state != ClientState::Done)
            })
            .collect();
        let before: Vec<String> = open.iter().map(|&c| self.served_by(c)).collect();
        for &(a, p) in &open {
            self.c.request_from(a, p);
        }
        self.c.run_for(Duration::from_millis(300));
        for (&(a, p), host) in open.iter().zip(before) {
            let c = self.c.conn_of(a, p).unwrap();
            // The whole response, from the host that served the first.
            if c.state == ClientState::Established
                && c.finished_at.is_some()
                && c.served_by() == Some(host.as_str())
            {
                step.ok += 1;
            } else {
                if step.broken.len() < 3 {
                    println!(
                        "  broken {a}:{p}: {:?}, {} bytes, served by {:?} (was {host})",
                        c.state,
                        c.received.len(),
                        c.served_by()
                    );
                }
                step.broken.push((a, p));
            }
        }
    }

    fn report(&self, name: &str, step: &Step, before: &(VipCounters, u64)) {
        let v = self.counters().vip;
        let (before, msgs_before) = (&before.0, before.1);
        let d = |a: u64, b: u64| a - b;
        let claimed = d(v.flows_claimed, before.flows_claimed);
        let wait = d(v.claim_wait_ns, before.claim_wait_ns);
        let msgs = self.query_messages() - msgs_before;
        println!(
            "{name:<8} long ok {:>3} broken {:>3} | new {:>4}/{:<4} ({:.2} %) | misses {:>3} \
             claimed {:>3} timed out {:>3} held {:>4} released {:>4} | claim wait {:.0} us avg \
             | query datagrams {msgs}",
            step.ok,
            step.broken.len(),
            step.new_done,
            step.new_opened,
            100.0 * step.new_done as f64 / step.new_opened.max(1) as f64,
            d(v.misses_asked, before.misses_asked),
            claimed,
            d(v.flows_timed_out, before.flows_timed_out),
            d(v.packets_held, before.packets_held),
            d(v.packets_released, before.packets_released),
            wait as f64 / claimed.max(1) as f64 / 1000.0,
        );
    }
}

fn assert_new_ok(step: &Step, name: &str) {
    // At least 99.9 % of the new connections of the step complete.
    assert!(
        step.new_done * 1000 >= step.new_opened * 999,
        "{name}: {} of {} new connections completed",
        step.new_done,
        step.new_opened
    );
}

/// The five steps of issue 18, in order, on one cluster.
fn five_steps(mode: EcmpMode) {
    println!("ECMP {mode:?}, {LONG} long-lived connections (IPv4 and IPv6 clients)");
    let mut v = Vip::new(mode);
    let mut s = Step::default();
    let base = (v.counters().vip, v.query_messages());
    v.probe(&mut s);
    v.report("start", &s, &base);
    assert!(s.broken.is_empty(), "start: {} broken", s.broken.len());
    let spread: Vec<usize> = (0..FIRST_HOPS)
        .map(|i| {
            let name = format!("host{i}");
            v.long.iter().filter(|&&c| v.served_by(c) == name).count()
        })
        .collect();
    println!("served per host at the start: {spread:?}");
    assert!(spread.iter().all(|&n| n > 0), "{spread:?}");

    // 1. A fifth host announces the VIP: ECMP moves flows to it.
    let mut s = Step::default();
    let base = (v.counters().vip, v.query_messages());
    let before_hops: Vec<usize> = v.long.iter().map(|&c| v.served_by(c).len()).collect();
    let mut new = v.open_new(250);
    v.c.announce(FIRST_HOPS);
    new.extend(v.open_new(250));
    v.probe(&mut s);
    s.new_opened = new.len();
    s.new_done = v.done(&new);
    v.report("join", &s, &base);
    assert_eq!(before_hops.len(), LONG);
    assert!(s.broken.is_empty(), "join broke {:?}", s.broken);
    assert_new_ok(&s, "join");
    assert!(
        v.counters().vip.flows_claimed > base.0.flows_claimed,
        "the join moved no flow: the test tests nothing"
    );

    // 2. Host 3 drains (new SYNs go elsewhere), withdraws the VIP, its
    // connections finish, and it is removed.
    let mut s = Step::default();
    let base = (v.counters().vip, v.query_messages());
    v.c.drain(3, None);
    let mut new = v.open_new(200);
    v.c.withdraw(3);
    new.extend(v.open_new(200));
    v.probe(&mut s);
    assert!(s.broken.is_empty(), "drain broke {:?}", s.broken);
    // Host 3's own connections finish (their clients close them).
    let mine: Vec<Conn> = v
        .long
        .iter()
        .copied()
        .filter(|&c| v.served_by(c) == "host3")
        .collect();
    for &(a, p) in &mine {
        v.c.close_from(a, p);
    }
    v.c.run_for(Duration::from_millis(800));
    for &(a, p) in &mine {
        assert_eq!(v.c.conn_of(a, p).unwrap().state, ClientState::Done);
    }
    assert_eq!(v.c.hosts[3].server.open_connections(), 0);
    // Removed: stopped, and out of every peer's configuration.
    v.c.kill(3);
    for i in (0..=FIRST_HOPS).filter(|&i| i != 3) {
        let peers =
            v.c.peer_configs(i)
                .into_iter()
                .filter(|p| p.id != PeerId(3))
                .collect();
        v.c.reload(i, peers).unwrap();
    }
    new.extend(v.open_new(200));
    v.probe(&mut s);
    s.new_opened = new.len();
    s.new_done = v.done(&new);
    v.report("drain", &s, &base);
    println!(
        "         (host 3 served {} of them; closed cleanly)",
        mine.len()
    );
    assert!(s.broken.is_empty(), "drain broke {:?}", s.broken);
    assert_new_ok(&s, "drain");

    // 3. Host 1's router restarts: its engine state is lost, its kernel
    // keeps the sockets.
    let mut s = Step::default();
    let base = (v.counters().vip, v.query_messages());
    let mut new = v.open_new(200);
    // Long connections that reach host 1 (ECMP) but are served elsewhere:
    // host 1's routes to them go with its engine.
    let through_1 = v
        .long
        .iter()
        .filter(|&&(a, p)| {
            let f = dpr_packet::FlowKey::new(
                dpr_packet::IpProtocol::Tcp,
                a,
                p,
                dpr_router::harness::vip_addr(a.is_ipv6()),
                dpr_router::harness::SERVICE_PORT,
            );
            v.c.ecmp_pick(&f) == Some(1)
                && v.c
                    .conn_of(a, p)
                    .is_some_and(|c| c.state == ClientState::Established)
                && v.served_by((a, p)) != "host1"
        })
        .count();
    println!("         {through_1} long connections reach host 1 and are served elsewhere");
    assert!(through_1 > 0, "the restart tests nothing");
    v.restart(1);
    new.extend(v.open_new(300));
    v.probe(&mut s);
    s.new_opened = new.len();
    s.new_done = v.done(&new);
    v.report("restart", &s, &base);
    assert!(s.broken.is_empty(), "restart broke {:?}", s.broken);
    assert!(v.counters().vip.flows_claimed - base.0.flows_claimed >= through_1 as u64);
    assert_new_ok(&s, "restart");
    assert!(v.c.hosts[1].engine.counters().vip.adopted_local > 0);

    // 4. Host 2 dies. The front door withdraws it after the BGP hold time
    // (here the peers' failure detection, 3 report intervals); new
    // connections opened after that succeed; only host 2's own
    // connections break.
    let mut s = Step::default();
    let base = (v.counters().vip, v.query_messages());
    let victims: Vec<Conn> = v
        .long
        .iter()
        .copied()
        .filter(|&c| {
            v.served_by(c) == "host2"
                && v.c
                    .conn_of(c.0, c.1)
                    .is_some_and(|x| x.state != ClientState::Done)
        })
        .collect();
    v.c.kill(2);
    let hold = Duration::from_millis(300);
    // New connections every millisecond through the failure, in batches
    // of 50 so each batch's success is known.
    let mut batches = Vec::new();
    for b in 0..16 {
        if b == 6 {
            v.c.withdraw(2);
        }
        let t = b * 50;
        batches.push((t, v.open_new(50)));
    }
    v.c.run_for(Duration::from_millis(300));
    let first_ok = batches
        .iter()
        .rposition(|(_, conns)| v.done(conns) < conns.len())
        .map_or(0, |i| i + 1);
    let detect_ms = batches.get(first_ok).map_or(u64::MAX, |(t, _)| *t as u64);
    for (t, conns) in &batches {
        println!(
            "         new at +{t:>3} ms: {}/{}",
            v.done(conns),
            conns.len()
        );
    }
    let after: Vec<Conn> = batches[first_ok..]
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    v.probe(&mut s);
    s.new_opened = after.len();
    s.new_done = v.done(&after);
    v.report("death", &s, &base);
    println!(
        "         host 2 served {} long connections; new connections all succeed from +{detect_ms} ms \
         (withdrawn at +300 ms, peers' detection {} ms)",
        victims.len(),
        hold.as_millis()
    );
    let mut broken = s.broken.clone();
    broken.sort();
    let mut expected = victims.clone();
    expected.sort();
    assert_eq!(broken, expected, "exactly host 2's connections break");
    assert!(!victims.is_empty());
    assert!(
        detect_ms <= 400,
        "new connections failed until +{detect_ms} ms"
    );
    assert_new_ok(&s, "death");
    // The failure detection, not a stuck queue, bounds it.
    let held: usize =
        v.c.hosts
            .iter()
            .filter(|h| h.alive)
            .map(|h| h.engine.held().1)
            .sum();
    assert_eq!(held, 0);
    let full: u64 =
        v.c.hosts
            .iter()
            .map(|h| h.engine.counters().drops_of(DropReason::HeldQueueFull))
            .sum();
    assert_eq!(full, 0);
}

#[test]
fn five_steps_with_modulo_ecmp() {
    five_steps(EcmpMode::Modulo);
}

#[test]
fn five_steps_with_a_resilient_group() {
    five_steps(EcmpMode::Resilient { buckets: 64 });
}

/// A VIP cluster of `n` hosts, all announcing, with `tweak` applied.
fn small(n: usize, tweak: fn(usize, &mut dpr_router::EngineConfig)) -> Cluster {
    let cfg = ClusterConfig {
        hosts: n,
        vip: Some(EcmpMode::Modulo),
        tweak,
        ..ClusterConfig::default()
    };
    let mut c = Cluster::new(cfg, threshold).unwrap();
    for i in 0..n {
        c.announce(i);
    }
    c.run_for(Duration::from_millis(250));
    c
}

/// A flow from client port `port` on, to the IPv4 VIP, that ECMP sends to
/// host `host`; and an ACK of it that no host knows.
fn stray_ack_to(c: &Cluster, host: usize, mut port: u16) -> (dpr_packet::FlowKey, Vec<u8>) {
    use dpr_router::harness::{SERVICE_PORT, tcp::tcp_packet, vip_addr};
    let client: IpAddr = "198.18.100.200".parse().unwrap();
    loop {
        let f = dpr_packet::FlowKey::new(
            dpr_packet::IpProtocol::Tcp,
            client,
            port,
            vip_addr(false),
            SERVICE_PORT,
        );
        if c.ecmp_pick(&f) == Some(host) {
            let p = tcp_packet(
                std::net::SocketAddr::new(client, port),
                std::net::SocketAddr::new(vip_addr(false), SERVICE_PORT),
                7,
                9,
                dpr_packet::tcp::TcpFlags::ACK,
                None,
                b"x",
            );
            return (f, p);
        }
        port += 1;
    }
}

/// Misses nobody claims: held within their bounds (the excess counted and
/// dropped), asked again once, then handed to the local stack at the
/// deadline (which resets them: their owner is gone), and routed there
/// from then on without asking again.
#[test]
fn unclaimed_misses_are_bounded_and_go_to_the_local_stack_at_the_deadline() {
    let mut c = small(3, |_, e| {
        if let Some(v) = e.vip.as_mut() {
            v.max_held_per_flow = 2;
            v.max_held_flows = 3;
            v.max_held_packets = 5;
        }
    });
    let mut flows = Vec::new();
    let mut port = 20_000;
    for _ in 0..4 {
        let (f, p) = stray_ack_to(&c, 0, port);
        port = f.src_port + 1;
        flows.push((f, p));
    }
    // Flow 0: three packets (one over its share); flows 1-3: one each (the
    // fourth flow over the flow bound).
    for k in [0, 0, 0, 1, 2, 3] {
        c.inject(flows[k].1.clone());
    }
    c.run_for(Duration::from_millis(1));
    let e = &c.hosts[0].engine;
    assert_eq!(e.held(), (3, 4));
    assert_eq!(e.counters().drops_of(DropReason::HeldQueueFull), 2);
    assert_eq!(e.counters().vip.misses_asked, 3);
    let rst_before = c.hosts[0].server.rst_sent;
    c.run_for(Duration::from_millis(60));
    let e = &c.hosts[0].engine;
    let v = e.counters().vip;
    assert_eq!(e.held(), (0, 0));
    assert_eq!((v.flows_timed_out, v.packets_timed_out), (3, 4));
    assert_eq!(v.flows_claimed, 0);
    assert!(v.reasks >= 3, "each flow asked again once: {}", v.reasks);
    assert_eq!(c.hosts[0].server.rst_sent - rst_before, 4);
    // The peers were asked and claimed nothing.
    for h in &c.hosts[1..] {
        assert!(h.node.counters().flow_queries_received >= 3);
        assert_eq!(h.node.counters().flow_claims_sent, 0);
    }
    // Not a connection host 0 serves: it would not claim it if asked.
    let now = c.now();
    assert!(
        c.hosts[0]
            .engine
            .serves_flows(&[flows[0].0], now)
            .is_empty()
    );
    // From now on flow 0 is the local stack's, at once.
    c.inject(flows[0].1.clone());
    c.run_for(Duration::from_millis(1));
    assert_eq!(c.hosts[0].engine.counters().vip.misses_asked, 3);
    assert_eq!(c.hosts[0].server.rst_sent - rst_before, 5);
}

static LOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lost queries and claims: the re-ask finds the owner before the
/// deadline, and no connection breaks.
#[test]
fn a_lost_query_is_asked_again() {
    use std::sync::atomic::Ordering;
    let mut c = small(3, |_, _| {});
    let conns: Vec<Conn> = (0..30)
        .map(|k| c.connect_vip(k, k % 3 == 0, true))
        .collect();
    c.run_for(Duration::from_millis(100));
    c.withdraw(0);
    c.control_loss = |_, _| LOSE.load(Ordering::Relaxed);
    LOSE.store(true, Ordering::Relaxed);
    for &(a, p) in &conns {
        assert!(c.request_from(a, p));
    }
    c.run_for(Duration::from_millis(12));
    LOSE.store(false, Ordering::Relaxed);
    c.run_for(Duration::from_millis(200));
    let mut v = VipCounters::default();
    for h in &c.hosts {
        let x = h.engine.counters().vip;
        v.misses_asked += x.misses_asked;
        v.reasks += x.reasks;
        v.flows_claimed += x.flows_claimed;
        v.flows_timed_out += x.flows_timed_out;
    }
    println!("{v:?}, control datagrams lost {}", c.control_lost);
    assert!(c.control_lost > 0 && v.reasks > 0 && v.flows_claimed > 0);
    assert_eq!(v.flows_timed_out, 0);
    for &(a, p) in &conns {
        let x = c.conn_of(a, p).unwrap();
        assert!(
            x.state == ClientState::Established && x.finished_at.is_some(),
            "{a}:{p}"
        );
    }
}

/// Claims are authenticated like every control message: a forged one is
/// refused and routes nothing; a genuine peer's claim of a flow this host
/// did not ask about routes nothing either.
#[test]
fn forged_and_unsolicited_claims_route_nothing() {
    use dpr_packet::control::{self, Header, MAX_MESSAGE_LEN, MessageKind, TAG_LEN};
    use dpr_router::cluster::{KeyRing, Reject};
    use dpr_router::harness::tunnel_addr;
    let mut c = small(3, |_, _| {});
    let (held, ack) = stray_ack_to(&c, 0, 30_000);
    let (other, _) = stray_ack_to(&c, 0, held.src_port + 1);
    c.inject(ack);
    c.run_for(Duration::from_millis(1));
    assert_eq!(c.hosts[0].engine.held().0, 1);
    let claim = |c: &Cluster, keys: &KeyRing, seq: u64, flow| {
        let h = Header {
            kind: MessageKind::FlowClaim,
            key_id: keys.signing_id(),
            sender: 1,
            incarnation: c.hosts[1].node.incarnation(),
            seq,
            sent_at_ns: c.clock().unix_ns,
        };
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        let n = control::emit_flow_claim(&mut buf, &h, 1, &[flow]).unwrap();
        buf.truncate(n + TAG_LEN);
        let tag = keys.sign(&buf[..n]);
        buf[n..].copy_from_slice(&tag);
        buf
    };
    let forger = KeyRing::new(&[(1, &[7u8; 32][..])]).unwrap();
    let bad_tag = c.hosts[0].node.counters().rejected_of(Reject::BadTag);
    let forged = claim(&c, &forger, 1_000_000, held);
    c.inject_control(0, tunnel_addr(1), forged);
    c.run_for(Duration::from_micros(500));
    assert_eq!(
        c.hosts[0].node.counters().rejected_of(Reject::BadTag),
        bad_tag + 1
    );
    assert!(c.hosts[0].engine.routes().get(&held).is_none());
    assert_eq!(c.hosts[0].engine.held().0, 1, "still waiting");
    // Host 1's genuine claim of a flow host 0 never asked about.
    let genuine = claim(&c, &Cluster::key_ring(), 1_000_001, other);
    c.inject_control(0, tunnel_addr(1), genuine);
    c.run_for(Duration::from_micros(500));
    assert!(c.hosts[0].engine.routes().get(&other).is_none());
    assert_eq!(c.hosts[0].engine.counters().vip.claims_late, 1);
    c.run_for(Duration::from_millis(60));
    assert_eq!(c.hosts[0].engine.counters().vip.flows_timed_out, 1);
    // Given up on: no route (a stray flow fills no table), never claimed.
    assert!(c.hosts[0].engine.routes().get(&held).is_none());
    let now = c.now();
    assert!(c.hosts[0].engine.serves_flows(&[held], now).is_empty());
}

/// A route to a dead peer may be an older connection's on the same
/// 4-tuple (its end went through another host): in VIP mode the packet is
/// asked about, and the live peer that serves this connection claims it,
/// instead of the client getting a reset. (In the lab: a client port used
/// again 35 s later; a host still routed it to the host that then died,
/// and reset the new connection a live host served when ECMP moved it
/// there.)
#[test]
fn a_route_to_a_dead_peer_is_asked_about_not_reset() {
    use dpr_router::harness::{SERVICE_PORT, vip_addr};
    use dpr_table::PeerState;
    let mut c = small(3, |_, _| {});
    // A held-open connection that ECMP brings to host 1, which serves it
    // (every host is under the threshold).
    let mut found = None;
    for _ in 0..60 {
        let (a, p) = c.connect_vip(7, false, true);
        c.run_for(Duration::from_millis(5));
        if c.conn_of(a, p).and_then(|x| x.served_by()) == Some("host1") {
            found = Some((a, p));
            break;
        }
    }
    let (caddr, port) = found.expect("no connection landed on host 1 in 60");
    let flow = FlowKey::new(IpProtocol::Tcp, caddr, port, vip_addr(false), SERVICE_PORT);
    // Host 0 holds a route for the same 4-tuple to host 2: a SYN host 0
    // once redirected there (over its threshold, host 2 the least loaded).
    force_loads(&mut c, &[50, 40, 0]);
    let (v, _) = syn_at(&mut c, 0, &flow, 1);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(route_at(&c, 0, &flow), Some(Route::Peer(PeerId(2))));
    // Host 2 dies and leaves the ECMP group; host 1 withdraws (it still
    // serves its connections): every flow now reaches host 0.
    c.kill(2);
    c.withdraw(2);
    c.withdraw(1);
    c.run_for(Duration::from_secs(1));
    let st = c.hosts[0].engine.loads().peer(PeerId(2)).unwrap().state;
    assert!(matches!(st, PeerState::Dead), "{st:?}");
    // The connection's next request: host 0 asks, host 1 claims.
    answered_again_by(&mut c, caddr, port, "host1");
    let e = c.hosts[0].engine.counters();
    assert_eq!(e.vip.dead_routes_asked, 1);
    assert_eq!(e.dead_peer_resets, 0);
    assert_eq!(e.vip.flows_claimed, 1);
    assert_eq!(c.hosts[1].engine.counters().vip.claims_answered, 1);
}

/// A host that a peer sends the SYN of a 4-tuple serves that connection:
/// a route it still holds for the 4-tuple is an older connection's (its
/// end went through another host) and is dropped, or it would send the new
/// connection's packets away when ECMP brings them straight here. (In the
/// lab: a reused client port; the serving host still routed it to a third
/// host, and the client timed out after a drain moved its flow there.)
#[test]
fn a_connection_served_for_a_peer_drops_an_older_route_of_its_4_tuple() {
    let mut c = small(3, |_, _| {});
    let (j, flow) = client_sent_to(&c, 0);
    // Host 1 holds a route for that 4-tuple to host 2: an older connection
    // it redirected (over its threshold, host 2 the least loaded).
    force_loads(&mut c, &[40, 50, 0]);
    assert!(matches!(
        syn_at(&mut c, 1, &flow, 1).0,
        Verdict::Forward { .. }
    ));
    assert_eq!(route_at(&c, 1, &flow), Some(Route::Peer(PeerId(2))));
    // The new connection on that 4-tuple: host 0 redirects it to host 1.
    force_loads(&mut c, &[50, 0, 40]);
    let (caddr, port) = c.connect_vip(j, false, true);
    assert_eq!(port, flow.src_port);
    c.run_for(Duration::from_millis(50));
    assert_eq!(c.conn_of(caddr, port).unwrap().served_by(), Some("host1"));
    assert_eq!(route_at(&c, 1, &flow), None, "the older route is gone");
    assert_eq!(c.hosts[1].engine.counters().vip.stale_routes_dropped, 1);
    // ECMP now brings the flow straight to host 1, which serves it.
    c.withdraw(0);
    answered_again_by(&mut c, caddr, port, "host1");
}

/// The held-open connection's next request gets its whole response (the
/// request cleared the first) from `host`, and the connection stays open.
fn answered_again_by(c: &mut Cluster, caddr: IpAddr, port: u16, host: &str) {
    assert!(c.request_from(caddr, port));
    c.run_for(Duration::from_millis(200));
    let conn = c.conn_of(caddr, port).unwrap();
    assert_eq!(conn.state, ClientState::Established);
    assert!(conn.finished_at.is_some(), "no second response");
    assert_eq!(conn.served_by(), Some(host));
}

/// A route to a live host that no longer serves the flow: behind ECMP a
/// host may hold a route of an older connection on the same 4-tuple (its
/// end went through another host) to a peer that has since forgotten it.
/// The peer it reaches asks who serves the flow instead of handing it to
/// its stack (which would reset it), and passes it on to the claimer.
/// (In the lab: a reused client port; one held connection timed out when
/// a drain moved its flow to a host with such a route.)
#[test]
fn a_route_to_a_live_host_that_no_longer_serves_the_flow_is_asked_about() {
    let mut c = small(3, |_, _| {});
    let (j, flow) = client_sent_to(&c, 1);
    // Host 0 holds a route for the 4-tuple to host 2: an older connection
    // it redirected there (over its threshold, host 2 the least loaded),
    // long ended at host 2 (here: the forwarded SYN never reached it).
    force_loads(&mut c, &[50, 40, 0]);
    assert!(matches!(
        syn_at(&mut c, 0, &flow, 1).0,
        Verdict::Forward { .. }
    ));
    assert_eq!(route_at(&c, 0, &flow), Some(Route::Peer(PeerId(2))));
    // And host 2 one back to host 0 (another older connection).
    force_loads(&mut c, &[0, 40, 50]);
    assert!(matches!(
        syn_at(&mut c, 2, &flow, 1).0,
        Verdict::Forward { .. }
    ));
    assert_eq!(route_at(&c, 2, &flow), Some(Route::Peer(PeerId(0))));
    // The new connection on that 4-tuple: ECMP brings it to host 1, which
    // serves it (every host under the threshold).
    force_loads(&mut c, &[0, 0, 0]);
    let (caddr, port) = c.connect_vip(j, false, true);
    assert_eq!(port, flow.src_port);
    c.run_for(Duration::from_millis(50));
    assert_eq!(c.conn_of(caddr, port).unwrap().served_by(), Some("host1"));
    // Hosts 1 and 2 withdraw (both live, host 1 still serving): the flow
    // now reaches host 0, whose route sends it to host 2.
    c.withdraw(1);
    c.withdraw(2);
    answered_again_by(&mut c, caddr, port, "host1");
    let h2 = c.hosts[2].engine.counters();
    assert!(h2.vip.strays_asked >= 1, "{:?}", h2.vip);
    assert_eq!(h2.vip.flows_claimed, 1);
    assert!(c.hosts[1].engine.counters().vip.claims_answered >= 1);
    // The claim replaced host 2's route back to host 0: the next request
    // follows it without asking again.
    assert_eq!(route_at(&c, 2, &flow), Some(Route::Peer(PeerId(1))));
    answered_again_by(&mut c, caddr, port, "host1");
    let h2 = c.hosts[2].engine.counters();
    assert_eq!(h2.vip.misses_asked, 1, "{:?}", h2.vip);
    assert_eq!(h2.vip.flows_claimed, 1);
}

/// A connection served for a peer, closed by its client once ECMP brought
/// it straight to the serving host: the FIN ends its served entry there,
/// so the host does not claim a later connection on the 4-tuple. And SYNs
/// of that 4-tuple: the same SYN again (same sequence number) straight
/// from the client is delivered (the stack has it), another one is a new
/// connection and drops the entry, from the client or from a peer. (In the
/// lab: a host that still claimed an older connection's 4-tuple drew a
/// reused port's packets to its stack.)
#[test]
fn a_served_entry_follows_its_connection_and_yields_to_a_new_one() {
    use dpr_table::ConnState;
    // A held-open connection ECMP sends to host 0, which redirects it to
    // host 1; and the SYN's sequence number host 1 recorded.
    let served_at_1 = || {
        // With the XDP program's keyed-flow events (AF_XDP): an entry's end
        // must reach the program, or it goes on handing a stale route's
        // packets to the stack.
        let mut c = small(3, |_, e| e.keyed_flow_events = true);
        force_loads(&mut c, &[50, 0, 40]);
        let (j, flow) = client_sent_to(&c, 0);
        let (caddr, port) = c.connect_vip(j, false, true);
        assert_eq!(port, flow.src_port);
        c.run_for(Duration::from_millis(50));
        assert_eq!(c.conn_of(caddr, port).unwrap().served_by(), Some("host1"));
        let e = c.hosts[1].engine.served().get(&flow).unwrap();
        assert_eq!(e.route, Route::Peer(PeerId(0)));
        let isn = e.isn.expect("the SYN's sequence number");
        (c, flow, isn)
    };
    // The peers whose keyed flow `flow` host 1 ended since the last call.
    let ended = |c: &mut Cluster, flow: &FlowKey| {
        let evs = c.hosts[1].engine.take_keyed_flow_events();
        evs.iter()
            .filter(|e| e.flow == *flow && e.tag.is_none())
            .map(|e| e.peer)
            .collect::<Vec<_>>()
    };

    // The FIN straight to host 1 ends the entry.
    let (mut c, flow, _) = served_at_1();
    let tunnel_0 = c.hosts[0].engine.config().tunnel_addr;
    c.withdraw(0);
    c.withdraw(2);
    answered_again_by(&mut c, flow.src, flow.src_port, "host1");
    assert!(c.close_from(flow.src, flow.src_port));
    c.run_for(Duration::from_secs(5));
    let st = c.hosts[1].engine.served().get(&flow).map(|e| e.state);
    assert!(
        matches!(st, None | Some(ConnState::Closing | ConnState::Closed)),
        "{st:?}"
    );
    let now = c.now();
    assert!(c.hosts[1].engine.serves_flows(&[flow], now).is_empty());
    assert_eq!(ended(&mut c, &flow), [tunnel_0]);

    // SYNs straight from the client.
    let (mut c, flow, isn) = served_at_1();
    let before = c.hosts[1].engine.counters();
    let (v, _) = syn_at(&mut c, 1, &flow, isn);
    assert_eq!(v, Verdict::Deliver, "the same SYN: the stack has it");
    let e = c.hosts[1].engine.served().get(&flow).unwrap();
    assert_eq!(e.route, Route::Peer(PeerId(0)));
    let after = c.hosts[1].engine.counters();
    assert_eq!(after.syn_retransmits, before.syn_retransmits + 1);
    assert_eq!(after.vip.stale_served_dropped, 0);
    let (v, _) = syn_at(&mut c, 1, &flow, isn.wrapping_add(1_000_000));
    assert_eq!(
        v,
        Verdict::Deliver,
        "a new connection, served here (load 0)"
    );
    assert!(c.hosts[1].engine.served().get(&flow).is_none());
    assert_eq!(route_at(&c, 1, &flow), Some(Route::Local));
    assert_eq!(c.hosts[1].engine.counters().vip.stale_served_dropped, 1);
    assert_eq!(ended(&mut c, &flow), [tunnel_0]);

    // A new connection's SYN from another peer.
    let (mut c, flow, isn) = served_at_1();
    force_loads(&mut c, &[40, 0, 50]);
    let (v, tunnelled) = syn_at(&mut c, 2, &flow, isn.wrapping_add(1_000_000));
    assert!(
        matches!(
            v,
            Verdict::Forward {
                peer: PeerId(1),
                ..
            }
        ),
        "{v:?}"
    );
    assert_eq!(deliver_at(&mut c, 1, &tunnelled), Verdict::Deliver);
    let e = c.hosts[1].engine.served().get(&flow).unwrap();
    assert_eq!(
        e.route,
        Route::Peer(PeerId(2)),
        "the new connection's origin"
    );
    assert_eq!(e.state, ConnState::SynSeen);
    assert_eq!(c.hosts[1].engine.counters().vip.stale_served_dropped, 1);
    assert_eq!(ended(&mut c, &flow), [tunnel_0]);
}

/// A client (index) whose first connection to the IPv4 VIP (port 40000)
/// ECMP sends to `host`, and that connection's flow.
fn client_sent_to(c: &Cluster, host: usize) -> (usize, FlowKey) {
    use dpr_router::harness::{SERVICE_PORT, client_addr, vip_addr};
    (20..200)
        .map(|j| {
            let f = FlowKey::new(
                IpProtocol::Tcp,
                client_addr(j, false),
                40000,
                vip_addr(false),
                SERVICE_PORT,
            );
            (j, f)
        })
        .find(|(_, f)| c.ecmp_pick(f) == Some(host))
        .unwrap_or_else(|| panic!("no client ECMP sends to host {host}"))
}

/// The hosts report these loads (one per host), and their peers hear it.
fn force_loads(c: &mut Cluster, loads: &[u32]) {
    for (h, &l) in c.hosts.iter_mut().zip(loads) {
        h.forced_load = Some(l);
    }
    c.run_for(Duration::from_millis(300));
}

/// Host `at`'s engine decides a client SYN of `flow` with sequence number
/// `seq`, as if it had just arrived: the verdict and the packet as it
/// left (nothing carries it on).
fn syn_at(c: &mut Cluster, at: usize, flow: &FlowKey, seq: u32) -> (Verdict, Vec<u8>) {
    packet_at(c, at, flow, seq, dpr_packet::tcp::TcpFlags::SYN, b"")
}

/// [`syn_at`] for any client packet of `flow` (an MSS option on a SYN).
fn packet_at(
    c: &mut Cluster,
    at: usize,
    flow: &FlowKey,
    seq: u32,
    flags: dpr_packet::tcp::TcpFlags,
    payload: &[u8],
) -> (Verdict, Vec<u8>) {
    use dpr_router::harness::tcp::tcp_packet;
    use std::net::SocketAddr;
    let (client, vip) = (
        SocketAddr::new(flow.src, flow.src_port),
        SocketAddr::new(flow.dst, flow.dst_port),
    );
    let mss = flags.is_syn().then_some(1400);
    let p = tcp_packet(client, vip, seq, 1, flags, mss, payload);
    let mut buf = vec![0u8; 64 + p.len() + 64];
    buf[64..64 + p.len()].copy_from_slice(&p);
    let mut pb = PacketBuf::new(&mut buf, 64, 64 + p.len()).unwrap();
    let now = c.now();
    let v = c.hosts[at].engine.process(now, &mut pb);
    (v, pb.bytes().to_vec())
}

/// Host `at`'s engine takes a packet another host's engine sent it.
fn deliver_at(c: &mut Cluster, at: usize, sent: &[u8]) -> Verdict {
    let mut buf = vec![0u8; 64 + sent.len()];
    buf[64..].copy_from_slice(sent);
    let len = buf.len();
    let mut pb = PacketBuf::new(&mut buf, 64, len).unwrap();
    let now = c.now();
    c.hosts[at].engine.process(now, &mut pb)
}

/// A served entry that outlived its connection (its end went through
/// another host; here the client's next connection on the 4-tuple simply
/// starts elsewhere in sequence space) does not take a later connection's
/// packets: their sequence number lies far past the entry's SYN. Straight
/// from the client or through a peer's route (the older connection's),
/// they are asked about; the entry's own connection is delivered as
/// before. (In the lab: a host's kernel still held the older connection's
/// socket and answered the new one's data with duplicate ACKs until the
/// client timed out.)
#[test]
fn a_served_entry_does_not_take_a_later_connections_packets() {
    use dpr_packet::tcp::TcpFlags;
    let mut c = small(3, |_, _| {});
    force_loads(&mut c, &[50, 0, 40]);
    let (j, flow) = client_sent_to(&c, 0);
    let (caddr, port) = c.connect_vip(j, false, true);
    c.run_for(Duration::from_millis(50));
    assert_eq!(c.conn_of(caddr, port).unwrap().served_by(), Some("host1"));
    let isn = c.hosts[1].engine.served().get(&flow).unwrap().isn.unwrap();
    // The entry's own connection, straight to host 1: delivered.
    let (v, _) = packet_at(&mut c, 1, &flow, isn.wrapping_add(1), TcpFlags::ACK, b"");
    assert_eq!(v, Verdict::Deliver);
    // A later connection's data (its SYN 500 MB of sequence space on, as a
    // Linux client's clock-driven ISN is after ~30 s): asked about.
    let later = isn.wrapping_add(500_000_000);
    let (v, _) = packet_at(&mut c, 1, &flow, later, TcpFlags::ACK, b"x");
    assert_eq!(v, Verdict::Held);
    let h1 = c.hosts[1].engine.counters().vip;
    assert_eq!((h1.out_of_sequence, h1.misses_asked), (1, 1), "{h1:?}");
    // Through host 0's route (the older connection's) to host 1: asked.
    let (v, sent) = packet_at(&mut c, 0, &flow, later.wrapping_add(1), TcpFlags::ACK, b"y");
    assert!(
        matches!(
            v,
            Verdict::Forward {
                peer: PeerId(1),
                ..
            }
        ),
        "{v:?}"
    );
    assert_eq!(deliver_at(&mut c, 1, &sent), Verdict::Held);
    let h1 = c.hosts[1].engine.counters().vip;
    assert_eq!((h1.out_of_sequence, h1.strays_asked), (2, 1), "{h1:?}");
    // And the entry's own connection through that route: delivered.
    let (_, sent) = packet_at(&mut c, 0, &flow, isn.wrapping_add(1), TcpFlags::ACK, b"");
    assert_eq!(deliver_at(&mut c, 1, &sent), Verdict::Deliver);
}

/// Host `at`'s route for `flow`, if it has one.
fn route_at(c: &Cluster, at: usize, flow: &FlowKey) -> Option<Route> {
    c.hosts[at].engine.routes().get(flow).map(|e| e.route)
}
