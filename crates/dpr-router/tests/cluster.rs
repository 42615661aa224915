//! The seed's scenarios on the in-memory cluster: every test builds hosts
//! with real engines and runs real packets between them.
#![allow(clippy::unwrap_used, clippy::panic)]

use dpr_packet::IpProtocol;
use dpr_packet::icmp::IcmpErrorKind;
use dpr_packet::ipip::{self, EncapParams};
use dpr_packet::tcp::TcpFlags;
use dpr_policy::{
    LeastLoad, NewConnection, Policy, RandomSource, RedirectDecision, StatelessHash,
    StatelessHashConfig, Threshold, ThresholdConfig, TwoChoices,
};
use dpr_router::harness::tcp::{ClientState, tcp_packet};
use dpr_router::harness::{
    Cluster, ClusterConfig, SERVICE_PORT, client_addr, service_addr, tunnel_addr,
};
use dpr_router::{DropReason, EngineConfig};
use dpr_table::{LoadTable, PeerId, Route};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

type MakePolicy = fn(usize) -> Box<dyn Policy + Send>;

fn threshold(_: usize) -> Box<dyn Policy + Send> {
    Box::new(Threshold::new(ThresholdConfig { threshold: 10.0 }).unwrap())
}
fn least_load(_: usize) -> Box<dyn Policy + Send> {
    Box::new(LeastLoad)
}
fn stateless(_: usize) -> Box<dyn Policy + Send> {
    Box::new(
        StatelessHash::new(StatelessHashConfig {
            seed: 7,
            buckets: 4096,
        })
        .unwrap(),
    )
}
fn two_choices(_: usize) -> Box<dyn Policy + Send> {
    Box::new(TwoChoices)
}

const POLICIES: [(&str, MakePolicy); 4] = [
    ("threshold", threshold),
    ("least-load", least_load),
    ("stateless-hash", stateless),
    ("two-choices", two_choices),
];

/// Host 0 is over its threshold (50 open connections reported), the others idle.
fn overloaded_a(cfg: ClusterConfig, policy: MakePolicy) -> Cluster {
    let mut c = Cluster::new(cfg, policy).unwrap();
    c.hosts[0].forced_load = Some(50);
    c.run_for(Duration::from_millis(250)); // two report rounds
    c
}

fn open_many(c: &mut Cluster, client: usize, host: usize, n: usize, hold: bool) -> Vec<u16> {
    (0..n).map(|_| c.connect(client, host, hold)).collect()
}

/// The seed scenario: C connects to A; A is over its threshold and
/// redirects to a peer; the peer serves C and replies directly with A's
/// service address as source; C never sees another address.
#[test]
fn seed_scenario_for_each_policy() {
    for (name, policy) in POLICIES {
        let mut c = overloaded_a(ClusterConfig::default(), policy);
        let ports = open_many(&mut c, 0, 0, 30, false);
        c.run_for(Duration::from_millis(50));
        let a = SocketAddr::new(service_addr(0, false), SERVICE_PORT);
        let mut by_peer = 0;
        for &p in &ports {
            let conn = c.conn(0, p).unwrap();
            assert_eq!(conn.state, ClientState::Done, "{name}: port {p}: {conn:?}");
            assert_eq!(conn.sources_seen, vec![a], "{name}: transparency");
            assert_eq!(
                conn.received.len(),
                conn.received.iter().position(|&b| b == b'\n').unwrap() + 1 + 2000
            );
            if conn.served_by() != Some("host0") {
                by_peer += 1;
            }
        }
        let ctr = c.hosts[0].engine.counters();
        assert_eq!(ctr.new_redirected, by_peer, "{name}");
        assert_eq!(ctr.new_local + ctr.new_redirected, 30, "{name}");
        let served: u64 = c.hosts[1..]
            .iter()
            .map(|h| h.engine.counters().new_from_peer)
            .sum();
        assert_eq!(served, by_peer, "{name}");
        match name {
            // Load-based strategies send everything away from the loaded host.
            "threshold" | "least-load" => assert_eq!(by_peer, 30, "{name}"),
            // p2c keeps a connection only when it samples host 0 twice.
            "two-choices" => assert!(by_peer >= 20, "{name}: {by_peer}"),
            // The hash ignores load: about two thirds leave host 0.
            _ => assert!((12..=28).contains(&by_peer), "{name}: {by_peer}"),
        }
        let client = &c.clients[&client_addr(0, false)];
        assert_eq!((client.bad_packets, client.strays), (0, 0), "{name}");
        assert!(
            c.hosts
                .iter()
                .all(|h| h.server.bad_packets == 0 && h.dropped.is_empty()),
            "{name}"
        );
    }
}

/// A redirected connection's whole life: handshake, data both ways, FIN
/// close; then both hosts' tables empty once the timeouts pass.
#[test]
fn redirected_connection_full_life_and_cleanup() {
    let cfg = ClusterConfig {
        hosts: 2,
        response_len: 10_000,
        tweak: |_, e: &mut EngineConfig| {
            e.routes.closing_timeout = Duration::from_millis(300);
            e.served.closing_timeout = Duration::from_millis(300);
        },
        ..ClusterConfig::default()
    };
    let mut c = overloaded_a(cfg, threshold);
    let port = c.connect(0, 0, false);
    c.run_for(Duration::from_millis(20));
    let conn = c.conn(0, port).unwrap();
    assert_eq!(conn.state, ClientState::Done);
    assert_eq!(conn.served_by(), Some("host1"));
    assert_eq!(conn.out_of_order, 0);
    assert_eq!(c.hosts[1].server.accepted, 1);
    assert_eq!(c.hosts[1].server.closed, 1);
    let flow = dpr_packet::FlowKey::new(
        IpProtocol::Tcp,
        client_addr(0, false),
        port,
        service_addr(0, false),
        SERVICE_PORT,
    );
    let a = c.hosts[0].engine.routes().get(&flow).unwrap();
    assert_eq!(a.route, Route::Peer(PeerId(1)));
    assert!(a.packets >= 4, "SYN, request, ACKs, FIN all routed: {a:?}");
    let b = c.hosts[1].engine.served().get(&flow).unwrap();
    assert_eq!(
        b.route,
        Route::Peer(PeerId(0)),
        "B remembers who redirected it"
    );
    // Per-peer counters agree with what crossed.
    let pa = c.hosts[0].engine.counters().peers[&PeerId(1)];
    let pb = c.hosts[1].engine.counters().peers[&PeerId(0)];
    assert_eq!(pa.forwarded_packets, pb.received_packets);
    assert_eq!(pa.redirected_connections, 1);
    assert_eq!(pb.served_connections, 1);
    // Past the closing timeout, the sweep removes both entries.
    c.run_for(Duration::from_millis(600));
    assert!(c.hosts[0].engine.routes().is_empty());
    assert!(c.hosts[1].engine.served().is_empty());
}

/// IP-in-IP to a host's tunnel address from an address that is not a
/// peer is dropped and counted: it would let anyone inject packets as any client.
#[test]
fn ipip_from_non_peer_is_dropped() {
    let mut c = Cluster::new(ClusterConfig::default(), threshold).unwrap();
    let client = SocketAddr::new(client_addr(0, false), 5555);
    let svc = SocketAddr::new(service_addr(0, false), SERVICE_PORT);
    let syn = tcp_packet(client, svc, 1, 0, TcpFlags::SYN, Some(1460), &[]);
    let mut buf = vec![0u8; 20];
    buf.extend_from_slice(&syn);
    let intruder = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 99));
    let start =
        ipip::encapsulate(&mut buf, 20, &EncapParams::new(intruder, tunnel_addr(1))).unwrap();
    c.inject(buf[start..].to_vec());
    c.settle(Duration::from_millis(5));
    assert_eq!(c.hosts[1].dropped, vec![DropReason::UnknownTunnelSource]);
    assert_eq!(
        c.hosts[1]
            .engine
            .counters()
            .drops_of(DropReason::UnknownTunnelSource),
        1
    );
    assert_eq!(c.hosts[1].server.accepted, 0);
    assert!(c.hosts[1].engine.served().is_empty());
}

/// A user-written policy: always redirect to the next host.
struct Next(PeerId);
impl Policy for Next {
    fn decide(
        &mut self,
        conn: &NewConnection,
        _: &LoadTable,
        _: &mut dyn RandomSource,
    ) -> RedirectDecision {
        assert!(
            !conn.arrived_from_peer,
            "the engine never asks about a redirected connection"
        );
        RedirectDecision::Redirect(self.0)
    }
    fn name(&self) -> &'static str {
        "next"
    }
}

/// A connection that arrived from a peer is served there, even when that
/// host's own policy would redirect everything: one hop only.
#[test]
fn no_second_redirect() {
    let mut c = Cluster::new(ClusterConfig::default(), |i| {
        Box::new(Next(PeerId(((i + 1) % 3) as u16)))
    })
    .unwrap();
    let via_a = c.connect(0, 0, false);
    let via_b = c.connect(1, 1, false);
    c.run_for(Duration::from_millis(20));
    assert_eq!(c.conn(0, via_a).unwrap().served_by(), Some("host1"));
    assert_eq!(c.conn(1, via_b).unwrap().served_by(), Some("host2"));
    let b = c.hosts[1].engine.counters();
    assert_eq!((b.new_redirected, b.new_from_peer), (1, 1));
    assert_eq!(c.hosts[2].engine.counters().new_from_peer, 1);
    assert_eq!(c.hosts[0].engine.counters().new_from_peer, 0);
}

/// A router between the serving host and the client sends "fragmentation
/// needed" to the packet's source, which is the redirecting host's service
/// address; that host forwards it to the serving peer.
#[test]
fn icmp_too_big_reaches_the_serving_peer() {
    for v6 in [false, true] {
        let cfg = ClusterConfig {
            hosts: 2,
            client_mtu: Some(1000),
            response_len: 5000,
            ipv6_service: v6,
            ..ClusterConfig::default()
        };
        let mut c = overloaded_a(cfg, threshold);
        let port = c.connect(0, 0, false);
        c.run_for(Duration::from_millis(20));
        assert!(c.router_icmp > 0);
        let a = c.hosts[0].engine.counters();
        assert!(a.peers[&PeerId(1)].icmp_forwarded > 0, "v6={v6}");
        let errs = &c.hosts[1].server.icmp_errors;
        let client = SocketAddr::new(client_addr(0, v6), port);
        let expect = if v6 {
            IcmpErrorKind::PacketTooBig { mtu: 1000 }
        } else {
            IcmpErrorKind::FragmentationNeeded { mtu: 1000 }
        };
        assert!(errs.contains(&(expect, client)), "v6={v6}: {errs:?}");
    }
}

/// A peer dies mid-run: connections routed to it are reset by the
/// redirecting host once the peer is declared dead (the clients fail fast);
/// new connections keep succeeding and none goes to the dead peer.
#[test]
fn a_peer_dies_mid_run() {
    let mut c = overloaded_a(ClusterConfig::default(), least_load);
    let held = open_many(&mut c, 0, 0, 8, true);
    c.run_for(Duration::from_millis(20));
    let on_b: Vec<u16> = held
        .iter()
        .copied()
        .filter(|&p| c.conn(0, p).unwrap().served_by() == Some("host1"))
        .collect();
    let on_c: Vec<u16> = held
        .iter()
        .copied()
        .filter(|&p| c.conn(0, p).unwrap().served_by() == Some("host2"))
        .collect();
    assert!(
        !on_b.is_empty() && !on_c.is_empty(),
        "both peers serve: {on_b:?} {on_c:?}"
    );
    c.kill(1);
    c.run_for(Duration::from_millis(450)); // > 3 missed 100 ms intervals
    for &p in held.iter() {
        assert!(c.request(0, p));
    }
    c.run_for(Duration::from_millis(20));
    for &p in &on_b {
        assert_eq!(c.conn(0, p).unwrap().state, ClientState::Reset, "port {p}");
    }
    for &p in &on_c {
        let conn = c.conn(0, p).unwrap();
        assert_eq!(conn.state, ClientState::Established);
        assert_eq!(conn.served_by(), Some("host2"));
    }
    let a = c.hosts[0].engine.counters();
    assert_eq!(a.dead_peer_resets, on_b.len() as u64);
    let fresh = open_many(&mut c, 1, 0, 10, false);
    c.run_for(Duration::from_millis(20));
    for p in fresh {
        let conn = c.conn(1, p).unwrap();
        assert_eq!(conn.state, ClientState::Done);
        assert_ne!(conn.served_by(), Some("host1"));
    }
}

/// The SYN that crosses the tunnel carries an MSS that fits the tunnel:
/// 1500 - 20 (outer IPv4) - 40 = 1440 for IPv4 inside, 1420 for IPv6 inside.
/// Locally served SYNs are untouched.
#[test]
fn mss_clamped_on_the_syn() {
    for (v6, mss) in [(false, 1440), (true, 1420)] {
        let cfg = ClusterConfig {
            hosts: 2,
            ipv6_service: v6,
            ..ClusterConfig::default()
        };
        let mut c = overloaded_a(cfg, threshold);
        c.connect(0, 0, false);
        c.connect(0, 1, false); // host 1 is idle: served locally
        c.run_for(Duration::from_millis(20));
        // The local SYN arrives one hop earlier than the redirected one.
        let mut seen = c.hosts[1].server.syn_mss_seen.clone();
        seen.sort();
        assert_eq!(seen, vec![Some(mss), Some(1460)], "v6={v6}");
        assert_eq!(c.hosts[0].engine.counters().mss_clamped, 1);
    }
}

/// IPv6 service addresses over IPv4 tunnels, end to end.
#[test]
fn ipv6_service_over_ipv4_tunnels() {
    let cfg = ClusterConfig {
        ipv6_service: true,
        ..ClusterConfig::default()
    };
    let mut c = overloaded_a(cfg, threshold);
    let ports = open_many(&mut c, 0, 0, 5, false);
    c.run_for(Duration::from_millis(20));
    let a = SocketAddr::new(service_addr(0, true), SERVICE_PORT);
    for p in ports {
        let conn = c.conn(0, p).unwrap();
        assert_eq!(conn.state, ClientState::Done);
        assert_eq!(conn.sources_seen, vec![a]);
        assert_ne!(conn.served_by(), Some("host0"));
    }
}

/// Same seed, same run: the harness is deterministic.
#[test]
fn runs_are_deterministic() {
    let run = || {
        let mut c = overloaded_a(
            ClusterConfig {
                hosts: 4,
                ..ClusterConfig::default()
            },
            two_choices,
        );
        c.record_wire = true;
        open_many(&mut c, 0, 0, 20, false);
        c.run_for(Duration::from_millis(30));
        let counters: Vec<_> = c.hosts.iter().map(|h| h.engine.counters()).collect();
        (counters, c.wire)
    };
    assert_eq!(run(), run());
}

/// An off-path attacker who knows a redirected connection's addresses and
/// ports sends an RST with a guessed sequence number. The redirecting host
/// forwards it (it cannot check sequence numbers), the serving host's stack
/// ignores it (RFC 5961), and the connection carries on through the same
/// route: the RST did not cut it.
#[test]
fn blind_rst_does_not_break_a_redirected_connection() {
    let mut c = overloaded_a(
        ClusterConfig {
            hosts: 2,
            ..ClusterConfig::default()
        },
        threshold,
    );
    let port = c.connect(0, 0, true);
    c.run_for(Duration::from_millis(20));
    assert_eq!(c.conn(0, port).unwrap().served_by(), Some("host1"));
    let client = SocketAddr::new(client_addr(0, false), port);
    let svc = SocketAddr::new(service_addr(0, false), SERVICE_PORT);
    c.inject(tcp_packet(
        client,
        svc,
        0x0bad_5eed,
        0,
        TcpFlags::RST,
        None,
        &[],
    ));
    c.run_for(Duration::from_millis(5));
    assert_eq!(c.hosts[1].server.ignored_rst, 1);
    assert!(c.request(0, port));
    c.run_for(Duration::from_millis(20));
    let conn = c.conn(0, port).unwrap();
    assert_eq!(conn.state, ClientState::Established);
    assert_eq!(conn.served_by(), Some("host1"));
    assert_eq!(c.hosts[0].engine.counters().unknown_flow_delivered, 0);
}
