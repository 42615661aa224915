//! The cluster protocol on the in-memory cluster: reports, authentication,
//! liveness, membership, draining, restart recovery and bounded fan-out.
//! Every host runs a real engine and a real protocol node; control
//! messages cross the simulated network as signed bytes.
#![allow(clippy::unwrap_used, clippy::panic)]

use dpr_packet::control::{
    self, Header, HostState, LoadEntry, MAX_MESSAGE_LEN, MessageKind, TAG_LEN,
};
use dpr_policy::{LeastLoad, Policy, Threshold, ThresholdConfig};
use dpr_router::DropReason;
use dpr_router::cluster::{KeyRing, NodePhase, PeerConfig, Reject, ReportMode};
use dpr_router::harness::tcp::ClientState;
use dpr_router::harness::{CLUSTER_KEY, Cluster, ClusterConfig, UNIX_EPOCH_OFFSET, tunnel_addr};
use dpr_table::{PeerId, PeerRecord, PeerState, Timestamp};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(100);

fn least_load(_: usize) -> Box<dyn Policy + Send> {
    Box::new(LeastLoad)
}

fn threshold(_: usize) -> Box<dyn Policy + Send> {
    Box::new(Threshold::new(ThresholdConfig { threshold: 10.0 }).unwrap())
}

fn cfg(hosts: usize) -> ClusterConfig {
    ClusterConfig {
        hosts,
        report_interval: INTERVAL,
        ..ClusterConfig::default()
    }
}

fn state(c: &Cluster, at: usize, of: usize) -> PeerState {
    c.hosts[at]
        .engine
        .loads()
        .peer(PeerId(of as u16))
        .unwrap()
        .state
}

fn peers(c: &Cluster, at: usize) -> Vec<PeerRecord> {
    c.hosts[at].engine.loads().peers().to_vec()
}

/// Where host `at` routes client `client`'s connection `port` (None: local).
fn routed_to(c: &Cluster, at: usize, client: usize, port: u16) -> Option<PeerId> {
    let conn = c.conn(client, port).unwrap();
    let key = dpr_packet::FlowKey::new(
        dpr_packet::IpProtocol::Tcp,
        conn.local.ip(),
        conn.local.port(),
        conn.remote.ip(),
        conn.remote.port(),
    );
    match c.hosts[at].engine.routes().get(&key)?.route {
        dpr_table::Route::Peer(p) => Some(p),
        dpr_table::Route::Local => None,
    }
}

#[test]
fn reports_flow_and_least_load_follows_them() {
    let mut c = Cluster::new(cfg(4), least_load).unwrap();
    for (i, l) in [(0, 100), (1, 50), (2, 5), (3, 60)] {
        c.hosts[i].forced_load = Some(l);
    }
    c.run_for(INTERVAL * 2);
    // Every host knows every other host's figures, and they are alive.
    for i in 0..4 {
        for j in (0..4).filter(|&j| j != i) {
            let p = c.hosts[i].engine.loads().peer(PeerId(j as u16)).unwrap();
            assert_eq!(p.state, PeerState::Alive, "{i} sees {j}");
            assert_eq!(p.figures.open_connections, c.hosts[j].forced_load.unwrap());
        }
        let n = &c.hosts[i].node.counters();
        assert!(n.reports_applied >= 6, "{n:?}");
        assert_eq!(n.rejected.iter().sum::<u64>(), 0);
    }
    let port = c.connect(0, 0, true);
    c.settle(Duration::from_millis(10));
    assert_eq!(routed_to(&c, 0, 0, port), Some(PeerId(2)));
    // The loads move; the choice follows the next reports.
    c.hosts[2].forced_load = Some(90);
    c.hosts[3].forced_load = Some(1);
    c.run_for(INTERVAL * 2);
    let port = c.connect(1, 0, true);
    c.settle(Duration::from_millis(10));
    assert_eq!(routed_to(&c, 0, 1, port), Some(PeerId(3)));
    assert_eq!(c.conn(1, port).unwrap().served_by(), Some("host3"));
}

/// A genuine report from host 1 to host 0, captured off the wire.
fn captured_report(c: &mut Cluster) -> Vec<u8> {
    c.record_control = true;
    c.run_for(INTERVAL * 2);
    c.record_control = false;
    c.control_wire
        .iter()
        .find(|(from, to, b)| {
            *from == 1
                && *to == tunnel_addr(0)
                && control::parse(b).is_ok_and(|m| m.header.kind == MessageKind::Report)
        })
        .map(|(_, _, b)| b.clone())
        .unwrap()
}

fn signed_report(keys: &KeyRing, sender: u16, entry: LoadEntry, sent_at_ns: u64) -> Vec<u8> {
    let h = Header {
        kind: MessageKind::Report,
        key_id: keys.signing_id(),
        sender,
        incarnation: entry.incarnation,
        seq: 1_000_000,
        sent_at_ns,
    };
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let n = control::emit_report(&mut buf, &h, &[entry], &[]).unwrap();
    buf.truncate(n + TAG_LEN);
    let tag = keys.sign(&buf[..n]);
    buf[n..].copy_from_slice(&tag);
    buf
}

#[test]
fn forged_replayed_and_truncated_reports_change_nothing() {
    let mut c = Cluster::new(cfg(3), least_load).unwrap();
    c.hosts[1].forced_load = Some(40);
    let genuine = control::parse(&captured_report(&mut c)).map(|_| ()).ok();
    assert!(genuine.is_some());
    let bytes = captured_report(&mut c);
    let before = peers(&c, 0);
    let from1 = tunnel_addr(1);
    let clock = c.clock();
    let own = match control::parse(&bytes).unwrap().body {
        control::Body::Report(r) => r.own().unwrap(),
        _ => unreachable!(),
    };
    let idle = LoadEntry {
        open_connections: 0,
        seq: own.seq + 100,
        ..own
    };
    let wrong_key = KeyRing::new(&[(1, &[7u8; 32])]).unwrap();
    let other_id = KeyRing::new(&[(9, &CLUSTER_KEY)]).unwrap();
    let right_key = Cluster::key_ring();
    let now_unix = clock.unix_ns;
    let mut inconsistent = idle;
    inconsistent.origin = 2;
    let cases: Vec<(&str, IpAddr, Vec<u8>, Reject)> = vec![
        ("replayed", from1, bytes.clone(), Reject::Replayed),
        (
            "truncated",
            from1,
            bytes[..bytes.len() - 1].to_vec(),
            Reject::Malformed,
        ),
        (
            "header only",
            from1,
            bytes[..40].to_vec(),
            Reject::Malformed,
        ),
        ("empty", from1, Vec::new(), Reject::Malformed),
        (
            "forged: wrong key",
            from1,
            signed_report(&wrong_key, 1, idle, now_unix),
            Reject::BadTag,
        ),
        (
            "forged: unknown key id",
            from1,
            signed_report(&other_id, 1, idle, now_unix),
            Reject::UnknownKey,
        ),
        (
            "genuine, from another address",
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 99)),
            signed_report(&right_key, 1, idle, now_unix),
            Reject::UnknownSender,
        ),
        (
            "genuine, claims host 2 from host 1's address",
            from1,
            signed_report(&right_key, 2, LoadEntry { origin: 2, ..idle }, now_unix),
            Reject::UnknownSender,
        ),
        (
            "signed, a minute old",
            from1,
            signed_report(&right_key, 1, idle, now_unix - 60_000_000_000),
            Reject::OutsideWindow,
        ),
        (
            "signed, own entry names another host",
            from1,
            signed_report(&right_key, 1, inconsistent, now_unix),
            Reject::Inconsistent,
        ),
    ];
    for (what, from, b, want) in cases {
        let h = &mut c.hosts[0];
        let r = h.node.handle_datagram(clock, from, &b, &mut h.engine);
        assert_eq!(r, Err(want), "{what}");
        assert_eq!(peers(&c, 0), before, "{what} changed the load table");
    }
    // Every single-bit change anywhere in the genuine message is refused.
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        let h = &mut c.hosts[0];
        assert!(
            h.node
                .handle_datagram(clock, from1, &b, &mut h.engine)
                .is_err(),
            "bit {i}"
        );
    }
    assert_eq!(peers(&c, 0), before);
    let n = c.hosts[0].node.counters();
    assert_eq!(n.rejected_of(Reject::Replayed), 1);
    assert!(n.rejected_of(Reject::BadTag) > 1);
    // The same forged figures, signed with the cluster key, are accepted:
    // the check above is the key, not the content.
    let h = &mut c.hosts[0];
    let ok = h.node.handle_datagram(
        clock,
        from1,
        &signed_report(&right_key, 1, idle, now_unix),
        &mut h.engine,
    );
    assert_eq!(ok, Ok(MessageKind::Report));
    assert_eq!(
        c.hosts[0]
            .engine
            .loads()
            .peer(PeerId(1))
            .unwrap()
            .figures
            .open_connections,
        0
    );
}

#[test]
fn silent_peer_goes_suspect_then_dead_and_back() {
    let mut c = Cluster::new(cfg(3), threshold).unwrap();
    c.hosts[0].forced_load = Some(50);
    c.run_for(INTERVAL);
    c.kill(2);
    c.run_for(INTERVAL + INTERVAL / 2);
    assert_eq!(state(&c, 0, 2), PeerState::Suspect);
    c.run_for(INTERVAL * 2);
    assert_eq!(state(&c, 0, 2), PeerState::Dead);
    assert_eq!(state(&c, 1, 2), PeerState::Dead);
    // Dead: no new connections go there.
    let ports: Vec<u16> = (0..20).map(|_| c.connect(0, 0, true)).collect();
    c.settle(Duration::from_millis(20));
    for &p in &ports {
        assert_ne!(routed_to(&c, 0, 0, p), Some(PeerId(2)));
        assert_eq!(c.conn(0, p).unwrap().state, ClientState::Established);
    }
    // It reports again: back in service.
    c.revive(2);
    c.run_for(INTERVAL + INTERVAL / 2);
    assert_eq!(state(&c, 0, 2), PeerState::Alive);
    let ports: Vec<u16> = (0..20).map(|_| c.connect(1, 0, true)).collect();
    c.settle(Duration::from_millis(20));
    assert!(
        ports
            .iter()
            .any(|&p| routed_to(&c, 0, 1, p) == Some(PeerId(2)))
    );
}

#[test]
fn config_reload_adds_and_removes_a_peer() {
    let mut c = Cluster::new(cfg(4), threshold).unwrap();
    c.hosts[0].forced_load = Some(50);
    c.hosts[1].forced_load = Some(30);
    c.hosts[2].forced_load = Some(30);
    c.run_for(INTERVAL * 2);
    // A connection host 0 redirected to host 3, held open.
    let port = c.connect(0, 0, true);
    c.settle(Duration::from_millis(10));
    assert_eq!(routed_to(&c, 0, 0, port), Some(PeerId(3)));
    // Host 3 is taken out of every configuration.
    for i in 0..3 {
        let p: Vec<PeerConfig> = c
            .peer_configs(i)
            .into_iter()
            .filter(|p| p.id != PeerId(3))
            .collect();
        c.reload(i, p).unwrap();
    }
    c.reload(3, Vec::new()).unwrap();
    assert_eq!(state(&c, 0, 3), PeerState::Left);
    c.run_for(INTERVAL * 2);
    // Its reports are no longer accepted, and it gets no new connections.
    assert_eq!(state(&c, 0, 3), PeerState::Left);
    let ports: Vec<u16> = (0..10).map(|_| c.connect(1, 0, true)).collect();
    c.settle(Duration::from_millis(10));
    for &p in &ports {
        assert_ne!(routed_to(&c, 0, 1, p), Some(PeerId(3)));
    }
    // Its flows are handled as a dead peer's: reset, so the client retries.
    assert!(c.request(0, port));
    c.settle(Duration::from_millis(10));
    assert_eq!(c.conn(0, port).unwrap().state, ClientState::Reset);
    assert_eq!(c.hosts[0].engine.counters().dead_peer_resets, 1);
    // Added back: it reports, comes alive, and takes connections again.
    for i in 0..4 {
        let p = c.peer_configs(i);
        c.reload(i, p).unwrap();
    }
    c.run_for(INTERVAL * 2);
    assert_eq!(state(&c, 0, 3), PeerState::Alive);
    let p = c.connect(2, 0, true);
    c.settle(Duration::from_millis(10));
    assert_eq!(routed_to(&c, 0, 2, p), Some(PeerId(3)));
    assert_eq!(c.conn(2, p).unwrap().served_by(), Some("host3"));
}

#[test]
fn drain_completes_without_breaking_a_connection() {
    let mut c = Cluster::new(cfg(3), threshold).unwrap();
    // Host 0 is loaded: it redirects; hosts 1 and 2 share.
    c.hosts[0].forced_load = Some(50);
    c.run_for(INTERVAL * 2);
    let via0: Vec<u16> = (0..12).map(|_| c.connect(0, 0, true)).collect();
    let at1: Vec<u16> = (0..4).map(|_| c.connect(1, 1, true)).collect();
    c.settle(Duration::from_millis(20));
    let served_by_1 = via0
        .iter()
        .filter(|&&p| c.conn(0, p).unwrap().served_by() == Some("host1"))
        .count();
    assert!(served_by_1 > 0);
    c.drain(1, Some(Duration::from_secs(60)));
    c.run_for(INTERVAL);
    assert_eq!(c.hosts[1].node.phase(), NodePhase::Draining);
    assert_eq!(state(&c, 0, 1), PeerState::Draining);
    assert_eq!(state(&c, 2, 1), PeerState::Draining);
    // New connections avoid it, including those that arrive at it.
    let new0: Vec<u16> = (0..10).map(|_| c.connect(2, 0, true)).collect();
    let new1: Vec<u16> = (0..5).map(|_| c.connect(3, 1, true)).collect();
    c.settle(Duration::from_millis(20));
    for &p in &new0 {
        assert_ne!(c.conn(2, p).unwrap().served_by(), Some("host1"));
    }
    for &p in &new1 {
        assert_eq!(c.conn(3, p).unwrap().served_by(), Some("host2"));
    }
    assert_eq!(c.hosts[1].engine.counters().drain_redirects, 5);
    // Established connections keep working while it drains.
    for &p in via0.iter() {
        assert!(c.request(0, p));
    }
    for &p in at1.iter() {
        assert!(c.request(1, p));
    }
    c.run_for(INTERVAL * 3);
    assert_eq!(c.hosts[1].node.phase(), NodePhase::Draining);
    // They end; the drain completes; it announces leaving; peers mark it.
    for (client, ports) in [(0, &via0), (1, &at1), (2, &new0), (3, &new1)] {
        for &p in ports.iter() {
            assert!(c.close(client, p));
        }
    }
    // Host 1 forwarded the five it drained away; their routes close when
    // the FIN grace time (4 s) has passed.
    c.run_for(INTERVAL * 10);
    assert_eq!(c.hosts[1].node.phase(), NodePhase::Draining);
    c.run_for(Duration::from_secs(4));
    assert_eq!(c.hosts[1].node.phase(), NodePhase::Left);
    assert_eq!(state(&c, 0, 1), PeerState::Left);
    assert_eq!(state(&c, 2, 1), PeerState::Left);
    for (client, ports) in [(0, &via0), (1, &at1), (2, &new0), (3, &new1)] {
        for &p in ports.iter() {
            let conn = c.conn(client, p).unwrap();
            assert_eq!(conn.state, ClientState::Done, "client {client} port {p}");
        }
    }
    // Left, but clients that still reach its address (cached RR-DNS
    // answers) are redirected, and its peers still accept its IP-in-IP.
    let late: Vec<u16> = (0..4).map(|_| c.connect(4, 1, false)).collect();
    c.settle(Duration::from_millis(20));
    for &p in &late {
        let conn = c.conn(4, p).unwrap();
        assert_eq!(conn.state, ClientState::Done, "late port {p}");
        assert_ne!(conn.served_by(), Some("host1"));
    }
    assert_eq!(
        c.hosts[0]
            .engine
            .counters()
            .drops_of(DropReason::UnknownTunnelSource),
        0
    );
    assert_eq!(
        c.hosts[2]
            .engine
            .counters()
            .drops_of(DropReason::UnknownTunnelSource),
        0
    );
}

#[test]
fn drain_deadline_bounds_the_wait() {
    let mut c = Cluster::new(cfg(2), threshold).unwrap();
    let p = c.connect(0, 1, true);
    c.settle(Duration::from_millis(10));
    c.drain(1, Some(INTERVAL * 3));
    c.run_for(INTERVAL * 2);
    assert_eq!(c.hosts[1].node.phase(), NodePhase::Draining);
    c.run_for(INTERVAL * 6);
    assert_eq!(c.hosts[1].node.phase(), NodePhase::Left);
    assert_eq!(state(&c, 0, 1), PeerState::Left);
    // The connection was still open when the deadline passed.
    assert_eq!(c.conn(0, p).unwrap().state, ClientState::Established);
}

/// Host 0 redirects everything; `n` held-open connections through it.
fn redirected_through_0(recover: bool) -> (Cluster, Vec<u16>, usize) {
    let mut c = Cluster::new(cfg(3), threshold).unwrap();
    c.hosts[0].forced_load = Some(50);
    c.run_for(INTERVAL * 2);
    let ports: Vec<u16> = (0..30).map(|_| c.connect(0, 0, true)).collect();
    c.settle(Duration::from_millis(20));
    for &p in &ports {
        assert_eq!(c.conn(0, p).unwrap().state, ClientState::Established);
        assert_ne!(c.conn(0, p).unwrap().served_by(), Some("host0"));
    }
    c.restart(0).unwrap();
    if !recover {
        let now = c.clock();
        let h = &mut c.hosts[0];
        // As a host without recovery: give up on it at once.
        h.node.start_drain(now, None, &mut h.engine);
        h.node.cancel_drain(now, &mut h.engine);
    }
    c.hosts[0].forced_load = Some(50);
    (c, ports, 30)
}

#[test]
fn restart_recovery_keeps_every_redirected_connection() {
    let (mut c, ports, n) = redirected_through_0(true);
    assert!(c.hosts[0].engine.is_recovering());
    // A request during recovery is held back (dropped; TCP retransmits).
    assert!(c.request(0, ports[0]));
    c.settle(Duration::from_millis(1));
    assert!(c.hosts[0].dropped.contains(&DropReason::Recovering));
    c.run_for(INTERVAL);
    assert_eq!(c.hosts[0].node.phase(), NodePhase::Active);
    assert!(!c.hosts[0].engine.is_recovering());
    assert_eq!(c.hosts[0].engine.counters().routes_restored, n as u64);
    assert!(c.retransmit(0, ports[0]));
    for &p in &ports[1..] {
        assert!(c.request(0, p));
    }
    c.settle(Duration::from_millis(50));
    for &p in &ports {
        let conn = c.conn(0, p).unwrap();
        assert_eq!(conn.state, ClientState::Established, "port {p}");
        assert!(conn.finished_at.is_some(), "port {p}: response complete");
        assert_ne!(conn.served_by(), Some("host0"));
    }
    let s = &c.hosts[0].node.status();
    assert!(s.recovery_pending.is_empty());
    assert_eq!(s.counters.recovery_flows_received, n as u64);
    // The peers saw a restart.
    assert_eq!(c.hosts[1].node.counters().peer_restarts, 1);
}

#[test]
fn without_recovery_the_same_restart_breaks_them() {
    // The control: the same scenario with recovery skipped.
    let (mut c, ports, n) = redirected_through_0(false);
    assert!(!c.hosts[0].engine.is_recovering());
    for &p in &ports {
        assert!(c.request(0, p));
    }
    c.settle(Duration::from_millis(50));
    let broken = ports
        .iter()
        .filter(|&&p| c.conn(0, p).unwrap().state == ClientState::Reset)
        .count();
    assert_eq!(broken, n);
}

#[test]
fn recovery_gives_up_at_its_timeout_when_a_peer_is_silent() {
    let mut c = Cluster::new(cfg(3), threshold).unwrap();
    c.kill(2);
    c.restart(0).unwrap();
    c.run_for(INTERVAL * 3);
    assert_eq!(c.hosts[0].node.phase(), NodePhase::Recovering);
    assert_eq!(c.hosts[0].node.status().recovery_pending, vec![PeerId(2)]);
    c.run_for(INTERVAL * 8);
    assert_eq!(c.hosts[0].node.phase(), NodePhase::Active);
    assert!(!c.hosts[0].engine.is_recovering());
}

#[test]
fn recovery_survives_lost_messages() {
    let mut c = Cluster::new(cfg(3), threshold).unwrap();
    c.hosts[0].forced_load = Some(50);
    c.run_for(INTERVAL * 2);
    // Enough flows that host 1's answer takes more than one message.
    let ports: Vec<u16> = (0..300).map(|_| c.connect(0, 0, true)).collect();
    c.settle(Duration::from_millis(20));
    let redirected = ports
        .iter()
        .filter(|&&p| c.conn(0, p).unwrap().served_by() != Some("host0"))
        .count();
    assert!(redirected >= 60, "{redirected}");
    c.restart(0).unwrap();
    c.hosts[0].forced_load = Some(50);
    // Host 1's first answers are lost; it is asked again.
    c.control_loss = |from, _| from == 1;
    c.run_for(INTERVAL + INTERVAL / 2);
    assert_eq!(c.hosts[0].node.phase(), NodePhase::Recovering);
    c.control_loss = |_, _| false;
    c.run_for(INTERVAL * 2);
    assert_eq!(c.hosts[0].node.phase(), NodePhase::Active);
    assert_eq!(
        c.hosts[0].engine.counters().routes_restored,
        redirected as u64
    );
    assert!(c.control_lost > 0);
    for &p in &ports {
        assert!(c.request(0, p));
    }
    c.settle(Duration::from_millis(50));
    for &p in &ports {
        let conn = c.conn(0, p).unwrap();
        assert!(conn.finished_at.is_some() && conn.state == ClientState::Established);
    }
}

#[test]
fn key_roll_without_a_rejected_report() {
    let mut c = Cluster::new(cfg(3), least_load).unwrap();
    let old = CLUSTER_KEY;
    let new = [0x5au8; 32];
    // Step 1, host by host: sign with the old key, accept the new one.
    for i in 0..3 {
        c.hosts[i]
            .node
            .set_keys(KeyRing::new(&[(1, &old), (2, &new)]).unwrap());
        c.run_for(INTERVAL);
    }
    // Step 2, host by host: sign with the new key, accept the old one.
    for i in 0..3 {
        c.hosts[i]
            .node
            .set_keys(KeyRing::new(&[(2, &new), (1, &old)]).unwrap());
        c.run_for(INTERVAL);
    }
    for i in 0..3 {
        assert_eq!(c.hosts[i].node.counters().rejected.iter().sum::<u64>(), 0);
        for j in (0..3).filter(|&j| j != i) {
            assert_eq!(state(&c, i, j), PeerState::Alive);
        }
    }
    // Step 3: the old key retired; a message signed with it is refused.
    c.hosts[0]
        .node
        .set_keys(KeyRing::new(&[(2, &new)]).unwrap());
    let clock = c.clock();
    let entry = LoadEntry {
        origin: 1,
        state: HostState::Active,
        incarnation: c.hosts[1].node.incarnation(),
        seq: 1 << 40,
        age_ms: 0,
        open_connections: 0,
        cpu_utilisation: 0.0,
        redirected_connections: 0,
        active_sockets: 0,
        capacity_cpu: 1.0,
        capacity_memory: 1.0,
    };
    let b = signed_report(
        &KeyRing::new(&[(1, &old)]).unwrap(),
        1,
        entry,
        clock.unix_ns,
    );
    let h = &mut c.hosts[0];
    assert_eq!(
        h.node
            .handle_datagram(clock, tunnel_addr(1), &b, &mut h.engine),
        Err(Reject::UnknownKey)
    );
}

/// Messages per host per interval, and whether every host holds every
/// other host's current figures, for a mode at `n` hosts.
fn convergence(mode: ReportMode, n: usize, intervals: u32) -> (f64, Cluster) {
    let mut cfg = cfg(n);
    cfg.report_mode = mode;
    cfg.suspect_after_missed = 6;
    cfg.dead_after_missed = 12;
    let mut c = Cluster::new(cfg, least_load).unwrap();
    for i in 0..n {
        c.hosts[i].forced_load = Some(i as u32 * 3 + 1);
    }
    let sent0: u64 = c
        .hosts
        .iter()
        .map(|h| h.node.counters().sent_messages)
        .sum();
    c.run_for(INTERVAL * intervals);
    let sent1: u64 = c
        .hosts
        .iter()
        .map(|h| h.node.counters().sent_messages)
        .sum();
    let per_host = (sent1 - sent0) as f64 / n as f64 / f64::from(intervals);
    (per_host, c)
}

fn all_know_all(c: &Cluster) -> (usize, Duration) {
    let n = c.hosts.len();
    let now = c.now();
    let mut wrong = 0;
    let mut oldest = Duration::ZERO;
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            let p = c.hosts[i].engine.loads().peer(PeerId(j as u16)).unwrap();
            if p.state != PeerState::Alive
                || p.figures.open_connections != c.hosts[j].forced_load.unwrap()
            {
                wrong += 1;
            }
            oldest = oldest.max(Duration::from_nanos(now.0 - p.received_at.0));
        }
    }
    (wrong, oldest)
}

#[test]
fn bounded_fan_out_converges() {
    let n = 48;
    let (mesh_rate, mesh) = convergence(ReportMode::FullMesh, n, 20);
    let (fan_rate, fan) = convergence(ReportMode::FanOut { k: 3, relay: 26 }, n, 20);
    // Full mesh: N-1 messages per host per report; fan-out: k. Reports
    // come every 0.9 intervals on average (jitter shortens them by 0-20%).
    let per_interval = |per_report: f64| per_report / 0.9;
    assert!(
        (mesh_rate / per_interval((n - 1) as f64) - 1.0).abs() < 0.05,
        "{mesh_rate}"
    );
    assert!(
        (fan_rate / per_interval(3.0) - 1.0).abs() < 0.1,
        "{fan_rate}"
    );
    let (wrong_mesh, age_mesh) = all_know_all(&mesh);
    let (wrong_fan, age_fan) = all_know_all(&fan);
    assert_eq!(wrong_mesh, 0);
    assert_eq!(wrong_fan, 0, "every host holds every other host's figures");
    assert!(age_mesh <= INTERVAL + INTERVAL / 10, "{age_mesh:?}");
    // Relayed knowledge is older, but bounded: a few intervals.
    assert!(age_fan <= INTERVAL * 6, "{age_fan:?}");
    eprintln!(
        "{n} hosts: full mesh {mesh_rate:.1} msgs/host/interval, oldest figures {age_mesh:?}; \
         fan-out k=3 {fan_rate:.1} msgs/host/interval, oldest {age_fan:?}"
    );
    // A change reaches everyone.
    let mut fan = fan;
    fan.hosts[7].forced_load = Some(999);
    fan.run_for(INTERVAL * 6);
    for i in (0..n).filter(|&i| i != 7) {
        let p = fan.hosts[i].engine.loads().peer(PeerId(7)).unwrap();
        assert_eq!(p.figures.open_connections, 999, "host {i}");
    }
}

#[test]
fn multicast_mode_sends_one_message_per_interval() {
    let group: IpAddr = "239.198.18.1".parse().unwrap();
    let (rate, c) = convergence(ReportMode::Multicast(group), 6, 10);
    assert!((rate * 0.9 - 1.0).abs() < 0.1, "{rate}");
    assert_eq!(all_know_all(&c).0, 0);
}

#[test]
fn protocol_runs_are_deterministic() {
    let run = || {
        let (_, mut c) = convergence(ReportMode::FanOut { k: 2, relay: 8 }, 12, 7);
        let _ = c.connect(0, 0, false);
        c.run_for(INTERVAL);
        c.hosts
            .iter()
            .map(|h| {
                (
                    h.node.counters().clone(),
                    peers_summary(h.engine.loads().peers()),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

fn peers_summary(p: &[PeerRecord]) -> Vec<(PeerId, PeerState, u32, Timestamp)> {
    p.iter()
        .map(|r| (r.id, r.state, r.figures.open_connections, r.received_at))
        .collect()
}

#[test]
fn report_sizes() {
    // The figures the issue note and docs quote, from the real encoder.
    let mut c = Cluster::new(cfg(2), least_load).unwrap();
    let b = captured_report(&mut c);
    assert_eq!(b.len(), 125, "one entry, one IPv4 service address");
    let _ = UNIX_EPOCH_OFFSET;
}

/// A peer whose router was down came back: the connections routed to it
/// that were cut meanwhile (their clients got an RST) are named to it in a
/// cut notice, once, so it can abort its own sockets of them instead of
/// counting them as load until they time out.
#[test]
fn connections_cut_while_a_peer_was_down_are_named_to_it_when_it_is_back() {
    let mut c = Cluster::new(cfg(3), least_load).unwrap();
    for (i, l) in [(0, 100), (1, 0), (2, 50)] {
        c.hosts[i].forced_load = Some(l);
    }
    c.run_for(INTERVAL * 2);
    let port = c.connect(0, 0, true);
    c.settle(Duration::from_millis(10));
    assert_eq!(routed_to(&c, 0, 0, port), Some(PeerId(1)));
    let flow = {
        let conn = c.conn(0, port).unwrap();
        dpr_packet::FlowKey::new(
            dpr_packet::IpProtocol::Tcp,
            conn.local.ip(),
            conn.local.port(),
            conn.remote.ip(),
            conn.remote.port(),
        )
    };
    // Host 1's router goes down; host 0 declares it dead and resets the
    // client at its next packet.
    c.kill(1);
    c.run_for(INTERVAL * 6);
    assert_eq!(state(&c, 0, 1), PeerState::Dead);
    assert!(c.request(0, port));
    c.settle(Duration::from_millis(10));
    assert_eq!(c.conn(0, port).unwrap().state, ClientState::Reset);
    assert!(c.hosts[0].engine.has_cut(PeerId(1)));
    // Nothing is said while it is away.
    assert_eq!(c.hosts[0].node.counters().cut_flows_sent, 0);
    // Back (a restarted router over the same stack): told once.
    c.restart(1).unwrap();
    c.hosts[1].forced_load = Some(0);
    c.run_for(INTERVAL * 3);
    assert_eq!(state(&c, 0, 1), PeerState::Alive);
    assert_eq!(c.hosts[0].node.counters().cut_flows_sent, 1);
    assert!(!c.hosts[0].engine.has_cut(PeerId(1)));
    assert_eq!(c.hosts[1].node.counters().cut_flows_received, 1);
    assert_eq!(c.hosts[1].node.poll_abort(), Some(flow));
    assert_eq!(c.hosts[1].node.poll_abort(), None);
    c.run_for(INTERVAL * 3);
    assert_eq!(c.hosts[0].node.counters().cut_flows_sent, 1, "once");
    // A notice from host 2 naming a flow to host 0's address is not acted
    // on: host 2 routes nothing to host 1 on host 0's address.
    let keys = dpr_router::harness::Cluster::key_ring();
    let h = Header {
        kind: MessageKind::CutNotice,
        key_id: keys.signing_id(),
        sender: 2,
        incarnation: c.hosts[2].node.incarnation(),
        seq: 1_000_000,
        sent_at_ns: c.clock().unix_ns,
    };
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let n = control::emit_cut_notice(&mut buf, &h, 0, 1, &[flow]).unwrap();
    buf.truncate(n + TAG_LEN);
    let tag = keys.sign(&buf[..n]);
    buf[n..].copy_from_slice(&tag);
    let accepted = c.hosts[1].node.counters().accepted;
    c.inject_control(1, tunnel_addr(2), buf);
    c.run_for(INTERVAL / 10);
    assert!(c.hosts[1].node.counters().accepted > accepted);
    assert_eq!(c.hosts[1].node.counters().cut_flows_received, 1);
    assert_eq!(c.hosts[1].node.poll_abort(), None);
}

/// Join-idle over the protocol: a host whose load falls to zero tells its
/// peers (an idle advertisement); a join-idle host over its threshold then
/// sends its next new connection there, even where reports say another
/// peer is as idle, and uses each advertisement once.
#[test]
fn an_idle_advertisement_draws_the_next_redirect() {
    use dpr_policy::{JoinIdle, JoinIdleConfig};
    let cfg = ClusterConfig {
        idle_advert_fanout: 3,
        ..cfg(4)
    };
    let mut c = Cluster::new(cfg, |_| {
        Box::new(
            JoinIdle::new(JoinIdleConfig {
                threshold: 1.0,
                ..JoinIdleConfig::default()
            })
            .unwrap(),
        )
    })
    .unwrap();
    for (i, l) in [(0, 10), (1, 0), (2, 0), (3, 1)] {
        c.hosts[i].forced_load = Some(l);
    }
    c.run_for(INTERVAL * 2);
    // Nothing changed state: no advertisement yet.
    assert_eq!(c.hosts[0].node.counters().idle_adverts_received, 0);
    // Host 3 finishes its connection: it says so to its three peers.
    c.hosts[3].forced_load = Some(0);
    c.run_for(INTERVAL / 5);
    assert_eq!(c.hosts[3].node.counters().idle_adverts_sent, 3);
    assert_eq!(c.hosts[0].node.counters().idle_adverts_received, 1);
    // Host 0 is over its threshold: the next connection goes to host 3,
    // before its next report says it is idle.
    let port = c.connect(0, 0, true);
    c.settle(Duration::from_millis(5));
    assert_eq!(routed_to(&c, 0, 0, port), Some(PeerId(3)));
    // Used once: the next one goes by sampling (any peer less loaded).
    let port = c.connect(1, 0, true);
    c.settle(Duration::from_millis(5));
    assert!(routed_to(&c, 0, 1, port).is_some());
}
