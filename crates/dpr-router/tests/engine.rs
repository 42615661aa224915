//! One engine, packet by packet: every verdict and drop reason, with the
//! counters that record them.
#![allow(clippy::unwrap_used, clippy::panic)]

use dpr_packet::ipip::{self, EncapParams};
use dpr_packet::ipv4::Ipv4Packet;
use dpr_packet::tcp::TcpFlags;
use dpr_packet::{Ecn, parse_ip};
use dpr_policy::{NewConnection, Policy, RandomSource, RedirectDecision, SplitMix64};
use dpr_router::harness::tcp::tcp_packet;
use dpr_router::{DeadPeerAction, DropReason, Engine, EngineConfig, PacketBuf, Verdict};
use dpr_table::{
    Capacity, LoadFigures, LoadReport, LoadTable, LoadTableConfig, PeerId, Route, Timestamp,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

const A_SVC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const A_TUN: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const B_TUN: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const B_SVC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);

/// Redirects every new connection to peer 1 (or serves locally when told).
struct Fixed(Option<PeerId>);
impl Policy for Fixed {
    fn decide(
        &mut self,
        _: &NewConnection,
        _: &LoadTable,
        _: &mut dyn RandomSource,
    ) -> RedirectDecision {
        self.0
            .map_or(RedirectDecision::ServeLocally, RedirectDecision::Redirect)
    }
    fn name(&self) -> &'static str {
        "fixed"
    }
}

fn engine_with(target: Option<PeerId>, tweak: impl FnOnce(&mut EngineConfig)) -> Engine {
    engine_with_policy(Box::new(Fixed(target)), tweak)
}

/// Engine A with `policy`, peer 1 (B) alive.
fn engine_with_policy(
    policy: Box<dyn Policy + Send>,
    tweak: impl FnOnce(&mut EngineConfig),
) -> Engine {
    let mut cfg = EngineConfig::new(A_TUN.into(), vec![A_SVC.into()], vec![80]);
    tweak(&mut cfg);
    let loads = LoadTableConfig {
        report_interval: Duration::from_millis(100),
        ..LoadTableConfig::default()
    };
    let mut e = Engine::new(
        cfg,
        PeerId(0),
        Capacity::default(),
        loads,
        policy,
        Box::new(SplitMix64::new(1)),
    )
    .unwrap();
    e.add_peer(PeerId(1), B_TUN.into(), vec![B_SVC.into()], Timestamp::ZERO)
        .unwrap();
    alive(&mut e, 1, Timestamp::ZERO);
    e
}

fn alive(e: &mut Engine, seq: u64, now: Timestamp) {
    let r = LoadReport {
        seq,
        figures: LoadFigures::default(),
        capacity: Capacity::default(),
        draining: false,
    };
    e.apply_report(PeerId(1), &r, now).unwrap();
}

fn client(port: u16) -> SocketAddr {
    SocketAddr::new(CLIENT.into(), port)
}
fn svc() -> SocketAddr {
    SocketAddr::new(A_SVC.into(), 80)
}

/// Runs one packet through the engine with 64 bytes of headroom; returns
/// the verdict and the bytes it left in the range.
fn run(e: &mut Engine, now: Timestamp, pkt: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 64 + pkt.len()];
    buf[64..].copy_from_slice(pkt);
    let end = buf.len();
    let mut pb = PacketBuf::new(&mut buf, 64, end).unwrap();
    let v = e.process(now, &mut pb);
    (v, pb.bytes().to_vec())
}

fn syn(port: u16) -> Vec<u8> {
    tcp_packet(client(port), svc(), 100, 0, TcpFlags::SYN, Some(1460), &[])
}
fn ack(port: u16, data: &[u8]) -> Vec<u8> {
    tcp_packet(client(port), svc(), 101, 7, TcpFlags::ACK, None, data)
}

#[test]
fn syn_redirected_then_the_flow_follows() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    let t = Timestamp::from_millis(1);
    let (v, out) = run(&mut e, t, &syn(1000));
    assert_eq!(
        v,
        Verdict::Forward {
            peer: PeerId(1),
            to: B_TUN.into()
        }
    );
    let d = ipip::decapsulate(&out, ipip::ChecksumCheck::Verify).unwrap();
    assert_eq!(
        (d.outer_src, d.outer_dst),
        (IpAddr::from(A_TUN), IpAddr::from(B_TUN))
    );
    assert_eq!(parse_ip(&out[d.inner]).unwrap().flow.src_port, 1000);
    assert_eq!(
        run(&mut e, t, &ack(1000, b"GET")).0,
        Verdict::Forward {
            peer: PeerId(1),
            to: B_TUN.into()
        }
    );
    // A retransmitted SYN follows the recorded route without asking the policy again.
    assert!(matches!(
        run(&mut e, t, &syn(1000)).0,
        Verdict::Forward { .. }
    ));
    let c = e.counters();
    assert_eq!(
        (c.new_redirected, c.syn_retransmits, c.forwarded),
        (1, 1, 3)
    );
    assert_eq!(c.peers[&PeerId(1)].forwarded_packets, 3);
}

#[test]
fn local_unknown_and_other_traffic() {
    let mut e = engine_with(None, |_| {});
    let t = Timestamp::from_millis(1);
    assert_eq!(run(&mut e, t, &syn(1)).0, Verdict::Deliver);
    assert_eq!(run(&mut e, t, &ack(1, b"x")).0, Verdict::Deliver);
    let flow = parse_ip(&syn(1)).unwrap().flow;
    assert_eq!(e.routes().get(&flow).unwrap().route, Route::Local);
    // A non-SYN of a connection nobody routed: delivered, counted.
    assert_eq!(run(&mut e, t, &ack(2, b"x")).0, Verdict::Deliver);
    // Another port, another address, UDP: not the router's.
    let other_port = tcp_packet(
        client(3),
        SocketAddr::new(A_SVC.into(), 22),
        1,
        0,
        TcpFlags::SYN,
        None,
        &[],
    );
    let other_addr = tcp_packet(
        client(3),
        SocketAddr::new(B_SVC.into(), 80),
        1,
        0,
        TcpFlags::SYN,
        None,
        &[],
    );
    assert_eq!(run(&mut e, t, &other_port).0, Verdict::Pass);
    assert_eq!(run(&mut e, t, &other_addr).0, Verdict::Pass);
    let c = e.counters();
    assert_eq!(
        (c.new_local, c.unknown_flow_delivered, c.delivered, c.passed),
        (1, 1, 3, 2)
    );
}

#[test]
fn malformed_packets_are_counted_by_layer() {
    let mut e = engine_with(None, |_| {});
    let t = Timestamp::from_millis(1);
    let good = syn(1);
    for n in [0, 1, 19, 25, 39] {
        assert_eq!(
            run(&mut e, t, &good[..n]).0,
            Verdict::Drop(DropReason::Malformed),
            "len {n}"
        );
    }
    let mut bad_offset = good.clone();
    bad_offset[32] = 0x30;
    assert_eq!(
        run(&mut e, t, &bad_offset).0,
        Verdict::Drop(DropReason::Malformed)
    );
    let c = e.counters();
    assert_eq!(c.drops_of(DropReason::Malformed), 6);
    // Cut packets fail at IPv4 (the total length no longer fits).
    assert_eq!(
        c.malformed_by_layer["ipv4"], 5,
        "{:?}",
        c.malformed_by_layer
    );
    assert_eq!(c.malformed_by_layer["tcp"], 1, "{:?}", c.malformed_by_layer);
    assert!(e.routes().is_empty());
}

#[test]
fn fragments_of_service_traffic_are_dropped() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    let mut first = ack(1, &[0u8; 100]);
    first[6] |= 0x20; // more fragments
    Ipv4Packet::new_checked(&mut first[..])
        .unwrap()
        .fill_checksum();
    let mut later = first.clone();
    later[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
    Ipv4Packet::new_checked(&mut later[..])
        .unwrap()
        .fill_checksum();
    for p in [first, later] {
        assert_eq!(
            run(&mut e, Timestamp::from_millis(1), &p).0,
            Verdict::Drop(DropReason::Fragment)
        );
    }
    assert_eq!(e.counters().drops_of(DropReason::Fragment), 2);
}

fn from_b(inner: &[u8], src: Ipv4Addr) -> Vec<u8> {
    let mut buf = vec![0u8; 20];
    buf.extend_from_slice(inner);
    let start =
        ipip::encapsulate(&mut buf, 20, &EncapParams::new(src.into(), A_TUN.into())).unwrap();
    buf[start..].to_vec()
}

#[test]
fn tunnel_input_rules() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    let t = Timestamp::from_millis(1);
    let inner = tcp_packet(
        client(9),
        SocketAddr::new(B_SVC.into(), 80),
        5,
        0,
        TcpFlags::SYN,
        Some(1400),
        &[],
    );
    // From a peer: delivered, recorded as served for that peer, never redirected.
    let (v, out) = run(&mut e, t, &from_b(&inner, B_TUN));
    assert_eq!(v, Verdict::Deliver);
    assert_eq!(out, inner);
    let flow = parse_ip(&inner).unwrap().flow;
    assert_eq!(e.served().get(&flow).unwrap().route, Route::Peer(PeerId(1)));
    assert_eq!(e.counters().new_redirected, 0);
    // From a stranger: dropped.
    assert_eq!(
        run(&mut e, t, &from_b(&inner, Ipv4Addr::new(198, 19, 0, 77))).0,
        Verdict::Drop(DropReason::UnknownTunnelSource)
    );
    // Nested.
    assert_eq!(
        run(&mut e, t, &from_b(&from_b(&inner, B_TUN), B_TUN)).0,
        Verdict::Drop(DropReason::NestedTunnel)
    );
    // Outer checksum broken.
    let mut broken = from_b(&inner, B_TUN);
    broken[10] ^= 0x55;
    assert_eq!(
        run(&mut e, t, &broken).0,
        Verdict::Drop(DropReason::BadTunnel)
    );
    // RFC 6040: CE outside, Not-ECT inside.
    let mut ce = from_b(&inner, B_TUN);
    Ipv4Packet::new_checked(&mut ce[..])
        .unwrap()
        .set_ecn(Ecn::Ce);
    assert_eq!(
        run(&mut e, t, &ce).0,
        Verdict::Drop(DropReason::EcnCeOnNotEct)
    );
    // IP-in-IP to an address that is not our tunnel address: not ours.
    let mut elsewhere = vec![0u8; 20];
    elsewhere.extend_from_slice(&inner);
    let s = ipip::encapsulate(
        &mut elsewhere,
        20,
        &EncapParams::new(B_TUN.into(), Ipv4Addr::new(198, 19, 0, 3).into()),
    )
    .unwrap();
    assert_eq!(run(&mut e, t, &elsewhere[s..]).0, Verdict::Pass);
    let c = e.counters();
    assert_eq!(c.peers[&PeerId(1)].served_connections, 1);
    assert_eq!(c.dropped, 4);
}

#[test]
fn no_headroom_and_oversize() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    let p = syn(1);
    let mut buf = p.clone();
    let end = buf.len();
    let mut pb = PacketBuf::new(&mut buf, 0, end).unwrap();
    assert_eq!(
        e.process(Timestamp::from_millis(1), &mut pb),
        Verdict::Drop(DropReason::NoHeadroom)
    );
    assert_eq!(pb.bytes(), &p[..], "untouched");
    // A 65 516-byte IPv4 packet cannot take a 20-byte outer header. With
    // DF clear there is no "too big" to send: it is dropped as oversize.
    let mut big = tcp_packet(
        client(2),
        svc(),
        1,
        0,
        TcpFlags::SYN,
        None,
        &vec![0u8; 65_476],
    );
    assert_eq!(big.len(), 65_516);
    big[6] &= !0x40;
    Ipv4Packet::new_checked(&mut big[..])
        .unwrap()
        .fill_checksum();
    assert_eq!(
        run(&mut e, Timestamp::from_millis(1), &big).0,
        Verdict::Drop(DropReason::Oversize)
    );
}

/// A peer stops reporting: once dead, its connections' packets get an RST
/// (default) or are dropped; a retransmitted SYN is routed afresh.
#[test]
fn dead_peer_reset_drop_and_reroute() {
    for action in [DeadPeerAction::Reset, DeadPeerAction::Drop] {
        let mut e = engine_with(Some(PeerId(1)), |c| c.dead_peer = action);
        let t0 = Timestamp::from_millis(1);
        run(&mut e, t0, &syn(1));
        run(&mut e, t0, &syn(2));
        let later = Timestamp::from_millis(1000); // 10 intervals of silence
        e.tick(later, 16);
        let (v, out) = run(&mut e, later, &ack(1, b"more"));
        match action {
            DeadPeerAction::Reset => {
                assert_eq!(v, Verdict::Reply);
                let m = parse_ip(&out).unwrap();
                assert_eq!(m.flow, parse_ip(&ack(1, b"")).unwrap().flow.reversed());
                assert!(m.tcp_flags.contains(TcpFlags::RST));
                let t = dpr_packet::tcp::TcpSegment::new_checked(&out[20..]).unwrap();
                assert_eq!(t.seq(), 7, "RST seq = the client's ACK");
                assert!(t.verify_checksum(m.flow.src, m.flow.dst));
            }
            DeadPeerAction::Drop => assert_eq!(v, Verdict::Drop(DropReason::DeadPeer)),
        }
        let flow = parse_ip(&ack(1, b"")).unwrap().flow;
        assert!(e.routes().get(&flow).is_none(), "route removed");
        // The peer is dead: the policy's redirect is refused, so the
        // retransmitted SYN of connection 2 is served locally.
        assert_eq!(run(&mut e, later, &syn(2)).0, Verdict::Deliver);
        assert_eq!(e.counters().dead_peer_reroutes, 1);
        // The peer reports again: it takes new connections.
        alive(&mut e, 2, later);
        assert!(matches!(
            run(&mut e, later, &syn(3)).0,
            Verdict::Forward { .. }
        ));
    }
}

#[test]
fn removed_peer_is_handled_as_dead() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    let t = Timestamp::from_millis(1);
    run(&mut e, t, &syn(1));
    e.remove_peer(PeerId(1)).unwrap();
    assert_eq!(run(&mut e, t, &ack(1, b"x")).0, Verdict::Reply);
    let inner = syn(5);
    assert_eq!(
        run(&mut e, t, &from_b(&inner, B_TUN)).0,
        Verdict::Drop(DropReason::UnknownTunnelSource)
    );
}

#[test]
fn bad_configuration_names_the_field() {
    let base = EngineConfig::new(A_TUN.into(), vec![A_SVC.into()], vec![80]);
    type Edit = fn(&mut EngineConfig);
    let cases: [(&str, Edit); 7] = [
        ("tunnel_addr", |c| {
            c.tunnel_addr = Ipv4Addr::UNSPECIFIED.into()
        }),
        ("tunnel_addr", |c| c.tunnel_addr = A_SVC.into()),
        ("service_addrs", |c| c.service_addrs.clear()),
        ("service_ports", |c| c.service_ports = vec![0]),
        ("tunnel_mtu", |c| c.tunnel_mtu = 500),
        ("outer_ttl", |c| c.outer_ttl = 0),
        ("routes", |c| c.routes.capacity = 0),
    ];
    for (field, f) in cases {
        let mut c = base.clone();
        f(&mut c);
        let err = c.validate().unwrap_err();
        assert_eq!(err.field, field);
        assert!(err.to_string().contains(field));
    }
    let mut e = engine_with(None, |_| {});
    let v6 = IpAddr::V6("2001:2::1".parse().unwrap());
    assert!(
        e.add_peer(PeerId(2), v6, vec![], Timestamp::ZERO)
            .unwrap_err()
            .to_string()
            .contains("peers.tunnel_addr")
    );
    assert!(
        e.add_peer(PeerId(2), B_TUN.into(), vec![], Timestamp::ZERO)
            .is_err(),
        "duplicate tunnel"
    );
}

/// IPv6 tunnel endpoints: IPv4 service traffic goes out IPv4-in-IPv6 with a
/// flow label from the flow hash, and IPv4-in-IPv6 from the peer comes in.
#[test]
fn ipv6_tunnels() {
    let me: IpAddr = "2001:2:0:1::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .into();
    let peer: IpAddr = "2001:2:0:1::2"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .into();
    let cfg = EngineConfig::new(me, vec![A_SVC.into()], vec![80]);
    let loads = LoadTableConfig {
        report_interval: Duration::from_millis(100),
        ..LoadTableConfig::default()
    };
    let mut e = Engine::new(
        cfg,
        PeerId(0),
        Capacity::default(),
        loads,
        Box::new(Fixed(Some(PeerId(1)))),
        Box::new(SplitMix64::new(1)),
    )
    .unwrap();
    e.add_peer(PeerId(1), peer, vec![B_SVC.into()], Timestamp::ZERO)
        .unwrap();
    alive(&mut e, 1, Timestamp::ZERO);
    let t = Timestamp::from_millis(1);
    let (v, out) = run(&mut e, t, &syn(7));
    assert_eq!(
        v,
        Verdict::Forward {
            peer: PeerId(1),
            to: peer
        }
    );
    let outer = dpr_packet::ipv6::Ipv6Packet::new_checked(&out[..]).unwrap();
    assert_ne!(outer.flow_label(), 0);
    let d = ipip::decapsulate(&out, ipip::ChecksumCheck::Verify).unwrap();
    // Clamped for a 40-byte outer header: 1500 - 40 - 40.
    let inner = &out[d.inner];
    let m = parse_ip(inner).unwrap();
    let seg = dpr_packet::tcp::TcpSegment::new_checked(&inner[usize::from(m.l4_offset)..]).unwrap();
    assert_eq!(seg.mss().unwrap(), Some(1420));
    // From the IPv6 peer.
    let inner = tcp_packet(
        client(9),
        SocketAddr::new(B_SVC.into(), 80),
        5,
        0,
        TcpFlags::SYN,
        None,
        &[],
    );
    let mut buf = vec![0u8; 40];
    buf.extend_from_slice(&inner);
    let s = ipip::encapsulate(&mut buf, 40, &EncapParams::new(peer, me)).unwrap();
    let (v, out) = run(&mut e, t, &buf[s..]);
    assert_eq!((v, out), (Verdict::Deliver, inner));
}

/// Found in review: a client's full-size segment (its MSS came from the
/// serving host's SYN-ACK, which never crosses the tunnel) does not fit the
/// tunnel once encapsulated. With DF set the client gets "fragmentation
/// needed" with the MTU that fits, quoting its packet; with DF clear the
/// outer packet is sent with DF clear.
#[test]
fn too_big_for_the_tunnel() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    let t = Timestamp::from_millis(1);
    run(&mut e, t, &syn(1));
    let big = tcp_packet(client(1), svc(), 101, 7, TcpFlags::ACK, None, &[7u8; 1460]);
    let (v, out) = run(&mut e, t, &big);
    assert_eq!(v, Verdict::Reply);
    let m = parse_ip(&out).unwrap();
    assert_eq!(
        (m.flow.src, m.flow.dst),
        (IpAddr::from(A_SVC), IpAddr::from(CLIENT))
    );
    let msg = &out[20..];
    assert!(
        dpr_packet::icmp::Icmpv4Packet::new_checked(msg)
            .unwrap()
            .verify_checksum()
    );
    let err = dpr_packet::icmp::parse_icmpv4_error(msg).unwrap();
    assert_eq!(
        err.kind,
        dpr_packet::icmp::IcmpErrorKind::FragmentationNeeded { mtu: 1480 }
    );
    assert_eq!(err.quote.flow, parse_ip(&big).unwrap().flow);
    assert_eq!(out.len(), 576, "quote limited to 548 bytes");
    assert_eq!(e.counters().too_big_replies, 1);
    // The route is untouched: a segment that fits still goes through.
    let fits = tcp_packet(client(1), svc(), 101, 7, TcpFlags::ACK, None, &[7u8; 1440]);
    let (v, out) = run(&mut e, t, &fits);
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(out.len(), 1500);
    // DF clear: forwarded, and routers may fragment the outer packet.
    let mut nodf = big.clone();
    nodf[6] &= !0x40;
    Ipv4Packet::new_checked(&mut nodf[..])
        .unwrap()
        .fill_checksum();
    let (v, out) = run(&mut e, t, &nodf);
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!((out.len(), out[6] & 0x40), (1520, 0));
}

fn v6_packet(src: &str, dst: &str, next: u8, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0u8; 40 + payload_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    p[6] = next;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.parse::<std::net::Ipv6Addr>().unwrap().octets());
    p[24..40].copy_from_slice(&dst.parse::<std::net::Ipv6Addr>().unwrap().octets());
    p
}

/// Found in review: an IPv6 packet of 65 575 bytes (payload length 65 535)
/// overflowed a 16-bit length and panicked. Now: no panic; a redirected SYN
/// that big gets "packet too big"; an ICMPv6 one is handled normally.
#[test]
fn largest_ipv6_packets() {
    let svc6 = "2001:2:0:10::1";
    let mut e = engine_with(Some(PeerId(1)), |c| {
        c.service_addrs.push(IpAddr::V6(svc6.parse().unwrap()))
    });
    let t = Timestamp::from_millis(1);
    let mut synp = v6_packet("2001:2:0:64::1", svc6, 6, 65_535);
    synp[40..42].copy_from_slice(&40000u16.to_be_bytes());
    synp[42..44].copy_from_slice(&80u16.to_be_bytes());
    synp[52] = 0x50;
    synp[53] = 0x02;
    assert_eq!(parse_ip(&synp).unwrap().l3_len, 65_575);
    let (v, out) = run(&mut e, t, &synp);
    assert_eq!(v, Verdict::Reply);
    let err = dpr_packet::icmp::parse_icmpv6_error(&out[40..]).unwrap();
    assert_eq!(
        err.kind,
        dpr_packet::icmp::IcmpErrorKind::PacketTooBig { mtu: 1480 }
    );
    let mut icmp = v6_packet("2001:2:0:64::1", "2001:2:0:10::9", 58, 65_535);
    icmp[40] = 1;
    let (v, _) = run(&mut e, t, &icmp);
    assert!(matches!(v, Verdict::Pass | Verdict::Drop(_)), "{v:?}");
}

/// An IPv6 later fragment to a service address is dropped, not passed.
#[test]
fn ipv6_later_fragment_is_dropped() {
    let svc6 = "2001:2:0:10::1";
    let mut e = engine_with(None, |c| {
        c.service_addrs.push(IpAddr::V6(svc6.parse().unwrap()))
    });
    let mut p = v6_packet("2001:2:0:64::1", svc6, 44, 24);
    p[40] = 6;
    p[42..44].copy_from_slice(&(16u16 << 3).to_be_bytes());
    assert_eq!(
        run(&mut e, Timestamp::from_millis(1), &p).0,
        Verdict::Drop(DropReason::Fragment)
    );
}

/// Found in review: an off-path RST with any sequence number removed the
/// route, so the live connection's next packet went to the wrong stack. The
/// server ignores such an RST (RFC 5961); the route now survives it.
#[test]
fn blind_rst_does_not_cut_the_route() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    let t = Timestamp::from_millis(1);
    run(&mut e, t, &syn(1));
    run(&mut e, t, &ack(1, b"GET"));
    let rst = tcp_packet(client(1), svc(), 0xdead_beef, 0, TcpFlags::RST, None, &[]);
    assert!(
        matches!(run(&mut e, t, &rst).0, Verdict::Forward { .. }),
        "the RST itself goes to the server"
    );
    assert!(matches!(
        run(&mut e, t, &ack(1, b"x")).0,
        Verdict::Forward { .. }
    ));
    let flow = parse_ip(&syn(1)).unwrap().flow;
    assert_eq!(
        e.routes().get(&flow).unwrap().state,
        dpr_table::ConnState::Established
    );
}

/// Found in review: IP-in-IP from a peer delivered whatever it carried.
/// Only service TCP or an ICMP error for one of that peer's service
/// addresses is delivered.
#[test]
fn peer_delivers_only_service_traffic() {
    let mut e = engine_with(None, |_| {});
    let t = Timestamp::from_millis(1);
    let ssh = tcp_packet(
        client(1),
        SocketAddr::new(B_SVC.into(), 22),
        1,
        0,
        TcpFlags::SYN,
        None,
        &[],
    );
    let elsewhere = tcp_packet(
        client(1),
        SocketAddr::new(Ipv4Addr::new(198, 18, 200, 9).into(), 80),
        1,
        0,
        TcpFlags::SYN,
        None,
        &[],
    );
    let mut later = tcp_packet(
        client(1),
        SocketAddr::new(B_SVC.into(), 80),
        1,
        0,
        TcpFlags::ACK,
        None,
        &[0; 16],
    );
    later[6..8].copy_from_slice(&0x0002u16.to_be_bytes());
    Ipv4Packet::new_checked(&mut later[..])
        .unwrap()
        .fill_checksum();
    for inner in [ssh, elsewhere, later] {
        assert_eq!(
            run(&mut e, t, &from_b(&inner, B_TUN)).0,
            Verdict::Drop(DropReason::UnexpectedInner)
        );
    }
    assert!(e.served().is_empty());
    assert_eq!(e.counters().drops_of(DropReason::UnexpectedInner), 3);
}

/// Found in review: a removed peer id re-added as a different host (new
/// tunnel address) inherited the old host's connections. They are purged;
/// re-adding the same host keeps them.
#[test]
fn readded_peer_id_starts_clean() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    let t = Timestamp::from_millis(1);
    run(&mut e, t, &syn(1));
    e.remove_peer(PeerId(1)).unwrap();
    e.add_peer(PeerId(1), B_TUN.into(), vec![B_SVC.into()], t)
        .unwrap();
    alive(&mut e, 9, t);
    assert!(
        matches!(run(&mut e, t, &ack(1, b"x")).0, Verdict::Forward { .. }),
        "same host: kept"
    );
    e.remove_peer(PeerId(1)).unwrap();
    e.add_peer(
        PeerId(1),
        Ipv4Addr::new(198, 19, 0, 9).into(),
        vec![B_SVC.into()],
        t,
    )
    .unwrap();
    alive(&mut e, 10, t);
    assert_eq!(
        run(&mut e, t, &ack(1, b"x")).0,
        Verdict::Deliver,
        "another host: the old route is gone"
    );
    assert_eq!(e.counters().unknown_flow_delivered, 1);
}

/// Between two measurements of the local load, every connection served
/// here counts against it (as a redirect counts against a peer): a burst of
/// SYNs below the threshold is served locally only until the threshold is
/// reached, then goes to the less loaded peer; a new measurement resets
/// the count.
#[test]
fn local_connections_count_until_the_next_measurement() {
    use dpr_policy::{Threshold, ThresholdConfig};
    let policy = Threshold::new(ThresholdConfig { threshold: 5.0 }).unwrap();
    let mut e = engine_with_policy(Box::new(policy), |_| {});
    let measured = |open| LoadFigures {
        open_connections: open,
        ..LoadFigures::default()
    };
    e.set_local_load(measured(3), Capacity::default()).unwrap();
    let now = Timestamp::from_nanos(1_000_000);
    let verdicts: Vec<bool> = (0..4)
        .map(|i| {
            matches!(
                run(&mut e, now, &syn(40_000 + i)).0,
                Verdict::Forward { .. }
            )
        })
        .collect();
    // 3 measured + 2 taken = 5: the threshold; the next ones are redirected.
    assert_eq!(verdicts, vec![false, false, true, true]);
    assert_eq!(e.loads().local_pending(), 2);
    // A fresh measurement replaces the optimistic count.
    e.set_local_load(measured(0), Capacity::default()).unwrap();
    assert_eq!(e.loads().local_pending(), 0);
    assert!(!matches!(
        run(&mut e, now, &syn(40_100)).0,
        Verdict::Forward { .. }
    ));
    let c = e.counters();
    assert_eq!((c.new_local, c.new_redirected), (3, 2));
}

/// The socket table's confirmations: an entry made on a SYN is kept; a
/// connection the engine never saw (a restart, packets decapsulated in XDP)
/// is learned for the one peer that owns its service address, and only
/// then.
#[test]
fn confirmed_connections_are_learned_for_the_peer_that_owns_the_address() {
    let mut e = engine_with(None, |_| {});
    let to_b = |port| {
        dpr_packet::FlowKey::new(
            dpr_packet::IpProtocol::Tcp,
            CLIENT.into(),
            port,
            B_SVC.into(),
            80,
        )
    };
    let now = Timestamp::from_nanos(5);
    assert!(e.confirm_served(&to_b(41_000), now));
    assert_eq!(e.served_for(PeerId(1), now), vec![to_b(41_000)]);
    // Not a peer's service address: nothing learned.
    let to_a = dpr_packet::FlowKey::new(
        dpr_packet::IpProtocol::Tcp,
        CLIENT.into(),
        41_001,
        A_SVC.into(),
        80,
    );
    assert!(!e.confirm_served(&to_a, now));
    // An address two peers share: the origin is unknown.
    e.add_peer(
        PeerId(2),
        Ipv4Addr::new(198, 19, 0, 3).into(),
        vec![B_SVC.into()],
        Timestamp::ZERO,
    )
    .unwrap();
    assert!(!e.confirm_served(&to_b(41_002), now));
    assert!(e.confirm_served(&to_b(41_000), now), "known ones stay");
    assert_eq!(e.served().len(), 1);
}

fn syn_isn(port: u16, isn: u32) -> Vec<u8> {
    tcp_packet(client(port), svc(), isn, 0, TcpFlags::SYN, Some(1460), &[])
}
fn fin(port: u16) -> Vec<u8> {
    tcp_packet(
        client(port),
        svc(),
        101,
        7,
        TcpFlags::FIN | TcpFlags::ACK,
        None,
        &[],
    )
}
fn rst(port: u16) -> Vec<u8> {
    tcp_packet(client(port), svc(), 101, 0, TcpFlags::RST, None, &[])
}

/// The threshold policy on engine A, with this host measured at `open`.
fn threshold_engine(threshold: f64, open: u32) -> Engine {
    use dpr_policy::{Threshold, ThresholdConfig};
    let policy = Threshold::new(ThresholdConfig { threshold }).unwrap();
    let mut e = engine_with_policy(Box::new(policy), |c| c.decision_log = 16);
    e.set_local_load(
        LoadFigures {
            open_connections: open,
            ..LoadFigures::default()
        },
        Capacity::default(),
    )
    .unwrap();
    e
}

fn redirected(v: Verdict) -> bool {
    matches!(v, Verdict::Forward { .. })
}

/// A connection served here counts against the local load from its SYN to
/// its client's FIN or RST, not until the next measurement: a host that
/// serves short connections one after another stays under its threshold
/// however long the daemon goes without measuring.
#[test]
fn a_connection_that_ended_stops_counting() {
    let mut e = threshold_engine(3.0, 0);
    let now = Timestamp::from_millis(1);
    for i in 0..100u16 {
        let port = 20_000 + i;
        assert!(!redirected(run(&mut e, now, &syn(port)).0), "SYN {i}");
        run(&mut e, now, &ack(port, b"GET /"));
        if i % 2 == 0 {
            run(&mut e, now, &fin(port));
        } else {
            run(&mut e, now, &rst(port));
        }
        // A retransmitted FIN is not a second end.
        run(&mut e, now, &fin(port));
    }
    assert_eq!(e.loads().local_load(), 0.0);
    let c = e.counters();
    assert_eq!(
        (c.new_local, c.new_redirected, c.connections_ended),
        (100, 0, 100)
    );
    // Three open at once reach the threshold of 3: the fourth goes away.
    let v: Vec<bool> = (0..4)
        .map(|i| redirected(run(&mut e, now, &syn(30_000 + i)).0))
        .collect();
    assert_eq!(v, [false, false, false, true]);
    // One of the three ends: room for one more here.
    run(&mut e, now, &fin(30_000));
    assert!(!redirected(run(&mut e, now, &syn(30_010)).0));
}

/// Where the host counts its connections' ends itself (its application's
/// closes, as they happen), the client's FIN or RST ends nothing in the
/// estimate: the closes the host reports do, once each, until the next
/// measurement. A connection the server closed frees its slot before the
/// client's FIN comes back.
#[test]
fn with_the_hosts_own_close_count_the_clients_fin_ends_nothing_twice() {
    let mut e = threshold_engine(3.0, 0);
    e.set_ends_from_host(true);
    let now = Timestamp::from_millis(1);
    for i in 0..3 {
        assert!(!redirected(run(&mut e, now, &syn(23_000 + i)).0));
    }
    assert!(
        redirected(run(&mut e, now, &syn(23_010)).0),
        "at the threshold"
    );
    // The server closed one: room again, before any FIN from the client.
    e.set_local_closed(1);
    assert_eq!(e.loads().local_load(), 2.0);
    assert!(!redirected(run(&mut e, now, &syn(23_011)).0));
    // The client's FIN and RST now change nothing (already counted).
    run(&mut e, now, &fin(23_000));
    run(&mut e, now, &rst(23_001));
    assert_eq!(e.loads().local_load(), 3.0);
    assert_eq!(e.loads().local_ended(), 0);
    assert_eq!(
        e.counters().connections_ended,
        2,
        "still counted as ended flows"
    );
    // Without it, the FIN lowers the estimate (the default).
    let mut d = threshold_engine(3.0, 0);
    run(&mut d, now, &syn(23_020));
    run(&mut d, now, &fin(23_020));
    assert_eq!(d.loads().local_load(), 0.0);
}

/// Ends are counted against the measurement too: a connection open at the
/// measurement that ends after it leaves the estimate (never below zero).
#[test]
fn ends_after_a_measurement_lower_the_measured_load() {
    let mut e = threshold_engine(3.0, 0);
    let now = Timestamp::from_millis(1);
    for i in 0..3 {
        run(&mut e, now, &syn(21_000 + i));
    }
    // The measurement sees the three; then two end.
    e.set_local_load(
        LoadFigures {
            open_connections: 3,
            ..LoadFigures::default()
        },
        Capacity::default(),
    )
    .unwrap();
    run(&mut e, now, &fin(21_000));
    run(&mut e, now, &fin(21_001));
    assert_eq!(e.loads().local_load(), 1.0);
    assert_eq!(e.loads().local_ended(), 2);
    // More ends than anything counted: the estimate stops at zero.
    e.set_local_load(LoadFigures::default(), Capacity::default())
        .unwrap();
    run(&mut e, now, &fin(21_002));
    assert_eq!(e.loads().local_load(), 0.0);
}

/// A redirected connection counts against its peer until the client ends
/// it, then no longer (optimistic accounting both ways).
#[test]
fn a_redirected_connection_that_ended_stops_counting_against_the_peer() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    let now = Timestamp::from_millis(1);
    for i in 0..4 {
        assert!(redirected(run(&mut e, now, &syn(22_000 + i)).0));
    }
    let b = |e: &Engine| e.loads().host_load(dpr_table::HostRef::Peer(PeerId(1)));
    assert_eq!(b(&e), 4.0);
    run(&mut e, now, &fin(22_000));
    run(&mut e, now, &rst(22_001));
    assert_eq!(b(&e), 2.0);
    // The peer's next report counts what it serves; our corrections reset.
    alive(&mut e, 2, now);
    assert_eq!(b(&e), 0.0);
    assert_eq!(e.loads().peer(PeerId(1)).unwrap().ended_redirects, 0);
}

/// Clients reuse ports within seconds. A SYN for the 4-tuple of a
/// connection that ended (FIN or RST seen) is a new connection, decided
/// afresh with the loads of now; a retransmitted SYN (the same initial
/// sequence number) follows the route of the first; a SYN with another
/// initial sequence number is a new connection too.
#[test]
fn a_new_incarnation_of_a_four_tuple_is_decided_afresh() {
    // Over the threshold: the first connection goes to B.
    let mut e = threshold_engine(2.0, 5);
    let now = Timestamp::from_millis(1);
    assert!(redirected(run(&mut e, now, &syn_isn(23_000, 1000)).0));
    // Retransmission: same ISN, same route, not a decision.
    assert!(redirected(run(&mut e, now, &syn_isn(23_000, 1000)).0));
    assert_eq!(e.counters().syn_retransmits, 1);
    run(&mut e, now, &ack(23_000, b"GET /"));
    run(&mut e, now, &fin(23_000));
    // The load fell meanwhile: the port's next connection is served here.
    e.set_local_load(LoadFigures::default(), Capacity::default())
        .unwrap();
    assert!(!redirected(run(&mut e, now, &syn_isn(23_000, 9000)).0));
    // Its retransmission stays here too.
    assert!(!redirected(run(&mut e, now, &syn_isn(23_000, 9000)).0));
    let c = e.counters();
    assert_eq!((c.syn_retransmits, c.syn_new_incarnations), (2, 1));
    assert_eq!((c.new_local, c.new_redirected), (1, 1));
    // After an RST, the same.
    run(&mut e, now, &rst(23_000));
    e.set_local_load(
        LoadFigures {
            open_connections: 5,
            ..LoadFigures::default()
        },
        Capacity::default(),
    )
    .unwrap();
    assert!(redirected(run(&mut e, now, &syn_isn(23_000, 20_000)).0));
    // A SYN with another ISN while the entry is still half-open: the
    // client gave up on the first attempt and made a new one.
    e.set_local_load(LoadFigures::default(), Capacity::default())
        .unwrap();
    assert!(!redirected(run(&mut e, now, &syn_isn(23_000, 30_000)).0));
    let c = e.counters();
    assert_eq!(c.syn_new_incarnations, 3);
    assert_eq!(
        c.new_local + c.new_redirected,
        4,
        "every incarnation decided"
    );
    // The decision log has each one, with the load the policy saw.
    let d = e.take_decisions();
    let seen: Vec<(f64, bool, bool)> = d
        .iter()
        .map(|d| (d.local_load, d.route == Route::Local, d.new_incarnation))
        .collect();
    assert_eq!(
        seen,
        [
            (5.0, false, false),
            (0.0, true, true),
            (5.0, false, true),
            (0.0, true, true)
        ]
    );
    assert!(e.take_decisions().is_empty(), "taken once");
}

/// The decision log keeps the latest `decision_log` decisions only.
#[test]
fn the_decision_log_is_bounded() {
    let mut e = threshold_engine(100.0, 0);
    let now = Timestamp::from_millis(1);
    for i in 0..40 {
        run(&mut e, now, &syn(24_000 + i));
    }
    let d = e.take_decisions();
    assert_eq!(d.len(), 16);
    assert_eq!(d[0].flow.src_port, 24_024);
    assert_eq!(d[15].flow.src_port, 24_039);
    // Off by default.
    let mut quiet = engine_with(None, |_| {});
    run(&mut quiet, now, &syn(1));
    assert!(quiet.take_decisions().is_empty());
}

/// A load measurement takes time (a socket-table dump): connections that
/// open or end while it runs may or may not be in it. The engine notes
/// them and reconciles with what the dump listed, so the estimate starts
/// right whichever way each one raced the dump.
#[test]
fn connections_that_race_a_measurement_are_counted_once() {
    let mut e = threshold_engine(100.0, 0);
    let now = Timestamp::from_millis(1);
    let flow = |port| {
        dpr_packet::FlowKey::new(
            dpr_packet::IpProtocol::Tcp,
            CLIENT.into(),
            port,
            A_SVC.into(),
            80,
        )
    };
    // B and D were open before the measurement began.
    run(&mut e, now, &syn(2));
    run(&mut e, now, &syn(4));
    e.begin_load_measurement();
    run(&mut e, now, &syn(1)); // A opens: the dump missed it
    run(&mut e, now, &fin(2)); // B ends: the dump still listed it
    run(&mut e, now, &syn(3)); // C opens and ends: the dump missed both
    run(&mut e, now, &fin(3));
    run(&mut e, now, &fin(4)); // D ends: the dump no longer listed it
    run(&mut e, now, &syn(5)); // E opens: the dump listed it already
    let listed = [flow(2), flow(5)];
    let seen = |f: &dpr_packet::FlowKey| listed.contains(f);
    let measured = LoadFigures {
        open_connections: 2,
        ..LoadFigures::default()
    };
    e.finish_load_measurement(measured, Capacity::default(), Some(&seen))
        .unwrap();
    // Open now: A and E.
    assert_eq!(e.loads().local_load(), 2.0);
    // Without a list (the /proc fallback) every event counts on top.
    run(&mut e, now, &syn(6));
    e.begin_load_measurement();
    run(&mut e, now, &syn(7));
    run(&mut e, now, &fin(6));
    e.finish_load_measurement(measured, Capacity::default(), None)
        .unwrap();
    assert_eq!(e.loads().local_load(), 2.0);
    assert_eq!((e.loads().local_pending(), e.loads().local_ended()), (1, 1));
}

/// Steering: a packet's owner is found from the flow its entry would be
/// under (client to service), whichever way the packet carries it, and the
/// fast path for plain IPv4 agrees with the full parse.
#[test]
fn steer_key_names_the_flow_the_tables_hold() {
    let e = engine_with(Some(PeerId(1)), |_| {});
    let flow = dpr_packet::FlowKey::new(
        dpr_packet::IpProtocol::Tcp,
        CLIENT.into(),
        40000,
        A_SVC.into(),
        80,
    );
    let s = syn(40000);
    assert_eq!(e.steer_key(&s), Some(flow));
    // The same packet with an IP option (a NOP, padded): the full parse.
    let mut opt = s[..20].to_vec();
    opt[0] = 0x46;
    opt.extend_from_slice(&[1, 1, 1, 0]);
    opt.extend_from_slice(&s[20..]);
    let total = u16::try_from(opt.len()).unwrap();
    opt[2..4].copy_from_slice(&total.to_be_bytes());
    assert_eq!(e.steer_key(&opt), Some(flow));
    // IP-in-IP from a peer to the tunnel address: the inner flow.
    assert_eq!(e.steer_key(&from_b(&ack(40000, b"x"), B_TUN)), Some(flow));
    // Not TCP: any engine.
    let mut udp = s.clone();
    udp[9] = 17;
    assert_eq!(e.steer_key(&udp), None);
    assert_eq!(e.steer_key(&[0x45, 0, 0]), None);
}

/// What a restarted peer is told to restore: the connections it routed
/// here that are open, or closing with a packet within the FIN grace time;
/// not the ones that ended (it would restore them as established and count
/// them as connections a stop must not break).
#[test]
fn recovery_answers_name_open_connections_only() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    let t = Timestamp::from_millis(1);
    let to_b = |port, seq, flags| {
        tcp_packet(
            client(port),
            SocketAddr::new(B_SVC.into(), 80),
            seq,
            1,
            flags,
            None,
            &[],
        )
    };
    let flow = |port| parse_ip(&to_b(port, 0, TcpFlags::SYN)).unwrap().flow;
    for port in [1, 2, 3] {
        assert_eq!(
            run(&mut e, t, &from_b(&to_b(port, 0, TcpFlags::SYN), B_TUN)).0,
            Verdict::Deliver
        );
        run(&mut e, t, &from_b(&to_b(port, 1, TcpFlags::ACK), B_TUN));
    }
    // 2 closes (the client's FIN: all a server of a redirected connection sees).
    run(
        &mut e,
        t,
        &from_b(&to_b(2, 1, TcpFlags::FIN | TcpFlags::ACK), B_TUN),
    );
    // 3 is reset.
    run(&mut e, t, &from_b(&to_b(3, 1, TcpFlags::RST), B_TUN));
    let mut now = e.served_for(PeerId(1), t);
    now.sort_by_key(|f| f.src_port);
    assert_eq!(
        now,
        vec![flow(1), flow(2)],
        "closing within the grace time counts"
    );
    let later = Timestamp::from_millis(1 + 5_000);
    assert_eq!(e.served_for(PeerId(1), later), vec![flow(1)]);
    assert!(e.served_for(PeerId(2), t).is_empty());
}

/// A client reuses the 4-tuple of a redirected connection that ended: the
/// served entry starts afresh with the new SYN (counted as a new
/// incarnation), so the new connection is named to its origin and claimed
/// in VIP mode, instead of staying `Closing` from the old one and dropping
/// out after the FIN grace time while it lives.
#[test]
fn a_reused_four_tuple_is_served_afresh() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    let to_b = |seq, flags| {
        tcp_packet(
            client(7),
            SocketAddr::new(B_SVC.into(), 80),
            seq,
            1,
            flags,
            None,
            &[],
        )
    };
    let flow = parse_ip(&to_b(0, TcpFlags::SYN)).unwrap().flow;
    let t = Timestamp::from_millis(1);
    run(&mut e, t, &from_b(&to_b(0, TcpFlags::SYN), B_TUN));
    run(&mut e, t, &from_b(&to_b(1, TcpFlags::ACK), B_TUN));
    run(
        &mut e,
        t,
        &from_b(&to_b(1, TcpFlags::FIN | TcpFlags::ACK), B_TUN),
    );
    // The same 4-tuple again, within the closing timeout.
    let t2 = Timestamp::from_millis(2_000);
    assert_eq!(
        run(&mut e, t2, &from_b(&to_b(9_000, TcpFlags::SYN), B_TUN)).0,
        Verdict::Deliver
    );
    run(&mut e, t2, &from_b(&to_b(9_001, TcpFlags::ACK), B_TUN));
    assert_eq!(e.counters().syn_new_incarnations, 1);
    // Long after the old one's grace time, the new one is still served.
    let later = Timestamp::from_millis(2_000 + 10_000);
    assert_eq!(e.served_for(PeerId(1), later), vec![flow]);
}

/// A route restored after a restart counts as forwarded until its client's
/// FIN, then for the FIN grace time only.
#[test]
fn a_restored_route_stops_counting_after_its_fin() {
    let mut e = engine_with(Some(PeerId(1)), |_| {});
    alive(&mut e, 1, Timestamp::from_millis(1));
    let t = Timestamp::from_millis(2);
    let flow = parse_ip(&syn(1000)).unwrap().flow;
    assert!(e.restore_route(&flow, PeerId(1), t).unwrap());
    assert_eq!(e.forwarding_connections(t), 1);
    assert!(redirected(run(&mut e, t, &ack(1000, b"data")).0));
    assert!(redirected(run(&mut e, t, &fin(1000)).0));
    assert_eq!(
        e.forwarding_connections(t),
        1,
        "closing, within the grace time"
    );
    let later = Timestamp::from_millis(2 + 4_001);
    assert_eq!(e.forwarding_connections(later), 0);
}
