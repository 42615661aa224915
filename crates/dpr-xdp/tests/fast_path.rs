//! The send side's fast path of the XDP program, run by the kernel on
//! crafted frames with `BPF_PROG_TEST_RUN` (root; no interface needed):
//! what it sends must be what the engine's encapsulation
//! (`dpr_packet::ipip`) makes of the same packet, and everything the
//! engine must see still goes to it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dpr_packet::checksum;
use dpr_packet::gre::GreFields;
use dpr_packet::ipip::{self, EncapParams};
use dpr_xdp::program::{XDP_DROP, XDP_TX};
use dpr_xdp::{
    Counter, FastPathEncap, FastPathPeer, FastPathRoute, KeyedFlow, MissingSocket, ProgramConfig,
    RouterProgram,
};
use std::net::{Ipv4Addr, SocketAddr};

const SVC4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 100);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 2);
const TUNNEL_SELF: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x2];
const TTL: u8 = 61;

/// The program with the fast path for outer packets up to `mtu`, service
/// 198.18.7.100:80, no sockets (router traffic dropped, so "to the engine"
/// shows as XDP_DROP).
fn loaded(mtu: u16) -> RouterProgram {
    let cfg = ProgramConfig {
        missing_socket: MissingSocket::Drop,
        fast_path_mtu: Some(mtu),
        ..ProgramConfig::default()
    };
    let mut p = RouterProgram::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    p.add_service(SocketAddr::new(SVC4.into(), 80)).unwrap();
    p
}

fn flow(port: u16) -> KeyedFlow {
    KeyedFlow {
        client: SocketAddr::new(CLIENT4.into(), port),
        service: SocketAddr::new(SVC4.into(), 80),
    }
}

fn peer(generation: u32) -> FastPathPeer {
    FastPathPeer {
        dst_mac: PEER_MAC,
        src_mac: MAC_B,
        ttl: TTL,
        src: TUNNEL_SELF,
        dst: PEER4,
        generation,
    }
}

/// An IPv4 TCP packet of the client with `flags`, a payload, `frag` as
/// the flags and fragment field, with correct checksums.
fn client_packet(port: u16, flags: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = tcp_header(port, 80, flags);
    t.extend_from_slice(payload);
    let sum = checksum::combine(
        checksum::pseudo_header_v4(CLIENT4, SVC4, 6, t.len() as u16),
        checksum::sum(&t),
    );
    let c = checksum::fold(sum);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = ipv4_with(CLIENT4, SVC4, 6, frag, &[], &t);
    ip[1] = 0x2a | 0x01; // DSCP and ECT(1): copied outside
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

/// What the engine sends for `inner` towards the peer (its encapsulation,
/// the Ethernet header the AF_XDP worker writes), identification 0.
fn engine_frame(inner: &[u8], gre: Option<GreFields>) -> Vec<u8> {
    let head = 64;
    let mut buf = vec![0u8; head + inner.len()];
    buf[head..].copy_from_slice(inner);
    let mut params = EncapParams::new(TUNNEL_SELF.into(), PEER4.into());
    params.ttl = TTL;
    let start = match gre {
        Some(g) => ipip::encapsulate_gre(&mut buf, head, &params, g).unwrap(),
        None => ipip::encapsulate(&mut buf, head, &params).unwrap(),
    };
    eth(PEER_MAC, MAC_B, 0x0800, &buf[start..])
}

/// ACK-flagged data of a flow in the map, its peer's generation current,
/// leaves encapsulated exactly as the engine would send it (GRE with the
/// flow's tag, or IP-in-IP), counted once per packet and in the flow's
/// entry; the program's checksum is valid.
#[test]
fn established_packets_leave_encapsulated_as_the_engine_would() {
    if !root_or_skip("established_packets_leave_encapsulated_as_the_engine_would") {
        return;
    }
    let mut p = loaded(1500);
    p.set_fast_path_peer(3, &peer(7)).unwrap();
    let gre = GreFields {
        tag: 0xdead_beef,
        key_id: 0x0102,
    };
    let cases = [
        (
            40001,
            FastPathEncap::Gre {
                tag: gre.tag,
                key_id: gre.key_id,
            },
            Some(gre),
        ),
        (40002, FastPathEncap::IpIp, None),
    ];
    let mut sent = 0;
    for (port, encap, fields) in cases {
        let route = FastPathRoute {
            peer: 3,
            generation: 7,
            encap,
        };
        p.add_fast_path_flow(&flow(port), &route).unwrap();
        for (flags, payload) in [(0x10, &b""[..]), (0x18, &b"GET / HTTP/1.1\r\n\r\n"[..])] {
            let inner = client_packet(port, flags, 0x4000, payload);
            let frame = eth(MAC_A, MAC_B, 0x0800, &inner);
            let (verdict, out) = p.test_run_output(&frame).unwrap();
            assert_eq!(verdict, XDP_TX, "{encap:?} flags {flags:#x}");
            sent += 1;
            let want = engine_frame(&inner, fields);
            assert_eq!(out.len(), want.len(), "{encap:?}");
            assert_eq!(checksum::checksum(&out[14..34]), 0, "outer checksum valid");
            // Identical but for the identification (the engine counts it;
            // DF is set, so it means nothing) and so the checksum.
            let mask = |f: &[u8]| {
                let mut f = f.to_vec();
                f[18..20].fill(0);
                f[24..26].fill(0);
                f
            };
            assert_eq!(mask(&out), mask(&want), "{encap:?} flags {flags:#x}");
        }
        assert_eq!(p.fast_path_flow_packets(&flow(port)).unwrap(), Some(2));
    }
    assert_eq!(p.counters().unwrap().get(Counter::ForwardV4), sent);
}

/// What the engine must see or judge goes to it untouched: SYN, FIN, RST,
/// unknown flows, a stale or cleared generation, a missing peer entry, DF
/// clear, fragments, an outer packet over the MTU.
#[test]
fn everything_else_goes_to_the_engine_untouched() {
    if !root_or_skip("everything_else_goes_to_the_engine_untouched") {
        return;
    }
    let mut p = loaded(100);
    p.set_fast_path_peer(0, &peer(2)).unwrap();
    let route = |peer, generation| FastPathRoute {
        peer,
        generation,
        encap: FastPathEncap::Gre { tag: 1, key_id: 1 },
    };
    p.add_fast_path_flow(&flow(1), &route(0, 2)).unwrap();
    p.add_fast_path_flow(&flow(2), &route(0, 1)).unwrap(); // an old generation
    p.add_fast_path_flow(&flow(3), &route(5, 2)).unwrap(); // no peer entry 5
    let ack = |port| client_packet(port, 0x10, 0x4000, b"");
    // Sanity: the flow's plain ACK is forwarded.
    let (v, _) = p
        .test_run_output(&eth(MAC_A, MAC_B, 0x0800, &ack(1)))
        .unwrap();
    assert_eq!(v, XDP_TX);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("SYN", client_packet(1, 0x02, 0x4000, b"")),
        ("FIN", client_packet(1, 0x11, 0x4000, b"")),
        ("RST", client_packet(1, 0x14, 0x4000, b"")),
        ("unknown flow", ack(9)),
        ("stale generation", ack(2)),
        ("no peer entry", ack(3)),
        ("DF clear", client_packet(1, 0x10, 0, b"")),
        ("first fragment", client_packet(1, 0x10, 0x2000, b"")),
        ("over the MTU", client_packet(1, 0x10, 0x4000, &[0u8; 60])),
    ];
    for (name, inner) in &cases {
        p.add_fast_path_flow(&flow(1), &route(0, 2)).unwrap();
        let frame = eth(MAC_A, MAC_B, 0x0800, inner);
        let (v, out) = p.test_run_output(&frame).unwrap();
        assert_eq!((v, &out), (XDP_DROP, &frame), "{name}");
        // SYN, FIN and RST take their flow out of the fast path at once.
        let left = p.fast_path_flow_packets(&flow(1)).unwrap().is_none();
        assert_eq!(left, ["SYN", "FIN", "RST"].contains(name), "{name}");
    }
    p.add_fast_path_flow(&flow(1), &route(0, 2)).unwrap();
    // A VLAN-tagged ACK of the flow: to the engine too.
    let mut tagged = vec![0x00, 0x07, 0x08, 0x00];
    tagged.extend_from_slice(&ack(1));
    let frame = eth(MAC_A, MAC_B, 0x8100, &tagged);
    assert_eq!(p.test_run_output(&frame).unwrap(), (XDP_DROP, frame));
    // The peer dies: its generation is bumped, the flow goes to the engine.
    p.set_fast_path_peer(0, &peer(3)).unwrap();
    let frame = eth(MAC_A, MAC_B, 0x0800, &ack(1));
    assert_eq!(p.test_run_output(&frame).unwrap().0, XDP_DROP);
    // Cleared (generation 0) even with a flow of generation 0: never.
    p.set_fast_path_peer(0, &peer(0)).unwrap();
    p.add_fast_path_flow(&flow(1), &route(0, 0)).unwrap();
    assert_eq!(p.test_run_output(&frame).unwrap().0, XDP_DROP);
    // Removed: to the engine.
    p.set_fast_path_peer(0, &peer(4)).unwrap();
    p.add_fast_path_flow(&flow(1), &route(0, 4)).unwrap();
    assert_eq!(p.test_run_output(&frame).unwrap().0, XDP_TX);
    assert!(p.remove_fast_path_flow(&flow(1)).unwrap());
    assert_eq!(p.test_run_output(&frame).unwrap().0, XDP_DROP);
    let c = p.counters().unwrap();
    assert_eq!(c.get(Counter::ForwardV4), 2);
    // The fragment is counted as one; the VLAN frame and the three after
    // the peer's changes as service packets.
    assert_eq!(c.get(Counter::FragmentV4), 1);
    assert_eq!(c.get(Counter::ServiceV4), cases.len() as u64 - 1 + 4);
}

/// Without `fast_path_mtu` the program has no fast path: a flow in the map
/// still goes to the engine.
#[test]
fn without_the_fast_path_the_map_is_not_used() {
    if !root_or_skip("without_the_fast_path_the_map_is_not_used") {
        return;
    }
    let cfg = ProgramConfig {
        missing_socket: MissingSocket::Drop,
        ..ProgramConfig::default()
    };
    let mut p = RouterProgram::load(&cfg).unwrap();
    p.add_service(SocketAddr::new(SVC4.into(), 80)).unwrap();
    p.set_fast_path_peer(0, &peer(1)).unwrap();
    let route = FastPathRoute {
        peer: 0,
        generation: 1,
        encap: FastPathEncap::IpIp,
    };
    p.add_fast_path_flow(&flow(1), &route).unwrap();
    let frame = eth(MAC_A, MAC_B, 0x0800, &client_packet(1, 0x10, 0x4000, b""));
    assert_eq!(p.test_run_output(&frame).unwrap().0, XDP_DROP);
}

/// The fast path's cost per packet, beside the plain redirect's (printed).
#[test]
fn fast_path_cost_per_packet() {
    if !root_or_skip("fast_path_cost_per_packet") {
        return;
    }
    let mut p = loaded(1500);
    p.set_fast_path_peer(0, &peer(1)).unwrap();
    let route = FastPathRoute {
        peer: 0,
        generation: 1,
        encap: FastPathEncap::Gre { tag: 1, key_id: 1 },
    };
    p.add_fast_path_flow(&flow(1), &route).unwrap();
    let fwd = eth(MAC_A, MAC_B, 0x0800, &client_packet(1, 0x10, 0x4000, b""));
    let other = eth(MAC_A, MAC_B, 0x0800, &client_packet(2, 0x10, 0x4000, b""));
    for (name, frame) in [
        ("fast path (GRE)", fwd),
        ("unknown flow, to the socket", other),
    ] {
        let (_, ns) = p.test_run_timed(&frame, 100_000).unwrap();
        eprintln!("fast_path_cost_per_packet: {name}: {ns} ns/run");
    }
}
