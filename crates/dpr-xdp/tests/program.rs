//! The XDP program itself, run by the kernel on crafted frames with
//! `BPF_PROG_TEST_RUN` (root; no interface needed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dpr_xdp::program::{XDP_DROP, XDP_PASS};
use dpr_xdp::{Counter, KeyedFlow, MissingSocket, ProgramConfig, RouterProgram};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

const SVC4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 100);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 2);
const PEER4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const STRANGER4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 9);
const SVC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);

/// The program with services 198.18.7.100:80 and [2001:db8::100]:443 and
/// peers 198.19.0.2 and 2001:db8:1::2, no sockets, router traffic dropped
/// (so "would redirect" shows as XDP_DROP, distinct from XDP_PASS).
fn loaded(missing: MissingSocket) -> RouterProgram {
    loaded_for(missing, None)
}

/// [`loaded`], with the interface's MAC built in.
fn loaded_for(missing: MissingSocket, own_mac: Option<[u8; 6]>) -> RouterProgram {
    let cfg = ProgramConfig {
        missing_socket: missing,
        own_mac,
        ..ProgramConfig::default()
    };
    let mut p = match RouterProgram::load(&cfg) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    p.add_service(SocketAddr::new(SVC4.into(), 80)).unwrap();
    p.add_service(SocketAddr::new(SVC6.into(), 443)).unwrap();
    p.add_peer(PEER4.into()).unwrap();
    p.add_peer(PEER6.into()).unwrap();
    p
}

fn v4_syn(dport: u16) -> Vec<u8> {
    eth(
        MAC_A,
        MAC_B,
        0x0800,
        &ipv4(CLIENT4, SVC4, 6, &tcp_syn_v4(CLIENT4, SVC4, 40000, dport)),
    )
}

fn v6_syn(dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    eth(
        MAC_A,
        MAC_B,
        0x86dd,
        &ipv6(CLIENT6, dst, 6, &tcp_header(40000, dport, 2)),
    )
}

fn vlan(tag_type: u16, inner_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x00, 0x07];
    p.extend_from_slice(&inner_type.to_be_bytes());
    p.extend_from_slice(payload);
    eth(MAC_A, MAC_B, tag_type, &p)
}

/// Every class of frame with the counter it must hit.
fn cases() -> Vec<(&'static str, Vec<u8>, Counter)> {
    let tcp80 = tcp_syn_v4(CLIENT4, SVC4, 40000, 80);
    let inner = ipv4(CLIENT4, SVC4, 6, &tcp80);
    let v4_ip = ipv4(CLIENT4, SVC4, 6, &tcp80);
    let v6_tcp = tcp_header(40000, 443, 2);
    let mut frag6 = vec![6, 0, 0, 0, 0, 0, 0, 7]; // fragment header, next = TCP, offset 0, id 7
    frag6.extend_from_slice(&v6_tcp);
    let mut frag6_udp = vec![17, 0, 0, 0, 0, 0, 0, 7];
    frag6_udp.extend_from_slice(&udp(1, 2, b"x"));
    vec![
        ("IPv4 TCP to service:80", v4_syn(80), Counter::ServiceV4),
        ("IPv4 TCP to service:22", v4_syn(22), Counter::Pass),
        (
            "IPv4 TCP to another address:80",
            eth(MAC_A, MAC_B, 0x0800, &ipv4(CLIENT4, CLIENT4, 6, &tcp80)),
            Counter::Pass,
        ),
        (
            "IPv4 UDP to service:80",
            eth(
                MAC_A,
                MAC_B,
                0x0800,
                &ipv4(CLIENT4, SVC4, 17, &udp(40000, 80, b"hi")),
            ),
            Counter::Pass,
        ),
        (
            "IPv4 ICMP echo to service",
            eth(
                MAC_A,
                MAC_B,
                0x0800,
                &ipv4(CLIENT4, SVC4, 1, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0]),
            ),
            Counter::Pass,
        ),
        (
            "IPv4 TCP with 8 bytes of options to service:80",
            eth(
                MAC_A,
                MAC_B,
                0x0800,
                &ipv4_with(CLIENT4, SVC4, 6, 0x4000, &[1, 1, 1, 0], &tcp80),
            ),
            Counter::ServiceV4,
        ),
        (
            "IPv4 TCP, options, to service:22",
            eth(
                MAC_A,
                MAC_B,
                0x0800,
                &ipv4_with(
                    CLIENT4,
                    SVC4,
                    6,
                    0,
                    &[1, 1, 1, 0],
                    &tcp_syn_v4(CLIENT4, SVC4, 1, 22),
                ),
            ),
            Counter::Pass,
        ),
        (
            "IPv4 first fragment (MF) of TCP to service",
            eth(
                MAC_A,
                MAC_B,
                0x0800,
                &ipv4_with(CLIENT4, SVC4, 6, 0x2000, &[], &tcp80),
            ),
            Counter::FragmentV4,
        ),
        (
            "IPv4 later fragment of TCP to service",
            eth(
                MAC_A,
                MAC_B,
                0x0800,
                &ipv4_with(CLIENT4, SVC4, 6, 0x0010, &[], &[0; 16]),
            ),
            Counter::FragmentV4,
        ),
        (
            "IPv4 fragment of TCP to another address",
            eth(
                MAC_A,
                MAC_B,
                0x0800,
                &ipv4_with(CLIENT4, CLIENT4, 6, 0x2000, &[], &tcp80),
            ),
            Counter::Pass,
        ),
        (
            "IPv4 fragment of UDP to service",
            eth(
                MAC_A,
                MAC_B,
                0x0800,
                &ipv4_with(CLIENT4, SVC4, 17, 0x2000, &[], &udp(1, 80, b"x")),
            ),
            Counter::Pass,
        ),
        (
            "IPIP from a peer",
            eth(MAC_A, MAC_B, 0x0800, &ipv4(PEER4, CLIENT4, 4, &inner)),
            Counter::PeerV4,
        ),
        (
            "IPv6-in-IPv4 (41) from a peer",
            eth(
                MAC_A,
                MAC_B,
                0x0800,
                &ipv4(PEER4, CLIENT4, 41, &ipv6(CLIENT6, SVC6, 6, &v6_tcp)),
            ),
            Counter::PeerV4,
        ),
        (
            "IPIP from a stranger",
            eth(MAC_A, MAC_B, 0x0800, &ipv4(STRANGER4, CLIENT4, 4, &inner)),
            Counter::Pass,
        ),
        (
            "IPv4 with version 5",
            {
                let mut f = v4_syn(80);
                f[14] = 0x55;
                f
            },
            Counter::Pass,
        ),
        (
            "IPv4 with IHL 4",
            {
                let mut f = v4_syn(80);
                f[14] = 0x44;
                f
            },
            Counter::Pass,
        ),
        (
            "IPv4 ethertype, IPv6 packet",
            eth(MAC_A, MAC_B, 0x0800, &ipv6(CLIENT6, SVC6, 6, &v6_tcp)),
            Counter::Pass,
        ),
        (
            "ARP request for the service address",
            arp_request(MAC_B, CLIENT4, SVC4),
            Counter::Pass,
        ),
        (
            "802.1Q-tagged IPv4 TCP to service:80",
            vlan(0x8100, 0x0800, &v4_ip),
            Counter::ServiceV4,
        ),
        (
            "802.1ad-tagged IPv4 TCP to service:80",
            vlan(0x88a8, 0x0800, &v4_ip),
            Counter::ServiceV4,
        ),
        (
            "two VLAN tags (QinQ) around service TCP",
            vlan(0x88a8, 0x8100, &[&[0u8, 7, 8, 0][..], &v4_ip].concat()),
            Counter::Pass,
        ),
        (
            "802.1Q-tagged ARP",
            vlan(0x8100, 0x0806, &arp_request(MAC_B, CLIENT4, SVC4)[14..]),
            Counter::Pass,
        ),
        (
            "IPv6 TCP to service:443",
            v6_syn(SVC6, 443),
            Counter::ServiceV6,
        ),
        ("IPv6 TCP to service:80", v6_syn(SVC6, 80), Counter::Pass),
        (
            "IPv6 TCP to another address:443",
            v6_syn(CLIENT6, 443),
            Counter::Pass,
        ),
        (
            "IPv6 UDP to service",
            eth(
                MAC_A,
                MAC_B,
                0x86dd,
                &ipv6(CLIENT6, SVC6, 17, &udp(1, 443, b"x")),
            ),
            Counter::Pass,
        ),
        (
            "IPv6 fragment of TCP to service",
            eth(MAC_A, MAC_B, 0x86dd, &ipv6(CLIENT6, SVC6, 44, &frag6)),
            Counter::FragmentV6,
        ),
        (
            "IPv6 fragment of UDP to service",
            eth(MAC_A, MAC_B, 0x86dd, &ipv6(CLIENT6, SVC6, 44, &frag6_udp)),
            Counter::Pass,
        ),
        (
            "IPv6 hop-by-hop header before TCP to service",
            eth(
                MAC_A,
                MAC_B,
                0x86dd,
                &ipv6(
                    CLIENT6,
                    SVC6,
                    0,
                    &[&[6u8, 0, 1, 4, 0, 0, 0, 0][..], &v6_tcp].concat(),
                ),
            ),
            Counter::Pass,
        ),
        (
            "IPv4-in-IPv6 from a peer",
            eth(MAC_A, MAC_B, 0x86dd, &ipv6(PEER6, SVC6, 4, &inner)),
            Counter::PeerV6,
        ),
        (
            "GRE over IPv6 from a peer",
            eth(
                MAC_A,
                MAC_B,
                0x86dd,
                &ipv6(
                    PEER6,
                    SVC6,
                    47,
                    &[&[0x30u8, 0, 0x08, 0, 1, 2, 3, 4, 0, 0, 0, 1][..], &inner].concat(),
                ),
            ),
            Counter::PeerV6,
        ),
        (
            "IPv6-in-IPv6 from a peer",
            eth(
                MAC_A,
                MAC_B,
                0x86dd,
                &ipv6(PEER6, SVC6, 41, &ipv6(CLIENT6, SVC6, 6, &v6_tcp)),
            ),
            Counter::PeerV6,
        ),
        (
            "IPv6-in-IPv6 from a stranger",
            eth(
                MAC_A,
                MAC_B,
                0x86dd,
                &ipv6(CLIENT6, SVC6, 41, &ipv6(CLIENT6, SVC6, 6, &v6_tcp)),
            ),
            Counter::Pass,
        ),
        (
            "IPv6 ICMPv6 to service",
            eth(
                MAC_A,
                MAC_B,
                0x86dd,
                &ipv6(CLIENT6, SVC6, 58, &[128, 0, 0, 0, 0, 0, 0, 0]),
            ),
            Counter::Pass,
        ),
        (
            "LLDP-like unknown ethertype",
            eth(MAC_A, MAC_B, 0x88cc, &[0; 46]),
            Counter::Pass,
        ),
    ]
}

#[test]
fn every_frame_class_gets_its_verdict() {
    if !root_or_skip("every_frame_class_gets_its_verdict") {
        return;
    }
    let p = loaded(MissingSocket::Drop);
    let mut want = [0u64; Counter::COUNT as usize];
    for (name, frame, counter) in cases() {
        let action = p.test_run(&frame).unwrap();
        let expected = if counter == Counter::Pass {
            XDP_PASS
        } else {
            XDP_DROP
        };
        assert_eq!(action, expected, "{name}: action {action}");
        want[counter as usize] += 1;
        if counter != Counter::Pass {
            want[Counter::NoSocket as usize] += 1;
        }
        assert_eq!(p.counters().unwrap().0, want, "{name}: counters");
    }
}

/// With the interface's MAC built in, a frame addressed to it gets the
/// verdict it gets without (every class), and the same frame addressed to
/// another host's MAC (a switch flooding unknown unicast, a promiscuous
/// interface) is passed to the kernel and counted, whatever it carries:
/// the router never answers a connection that is not its own.
#[test]
fn frames_for_another_mac_go_to_the_kernel() {
    if !root_or_skip("frames_for_another_mac_go_to_the_kernel") {
        return;
    }
    // The cases are addressed to MAC_A.
    let ours = loaded_for(MissingSocket::Drop, Some(MAC_A));
    let theirs = loaded_for(MissingSocket::Drop, Some(MAC_B));
    let mut want = [0u64; Counter::COUNT as usize];
    let (mut other, mut group) = (0, 0);
    for (name, frame, counter) in cases() {
        // A group address (the ARP broadcast) is nobody's in particular:
        // passed by both, as a frame that is not the router's.
        let is_group = frame[0] & 1 == 1;
        let counter = if is_group { Counter::Pass } else { counter };
        let expected = if counter == Counter::Pass {
            XDP_PASS
        } else {
            XDP_DROP
        };
        assert_eq!(ours.test_run(&frame).unwrap(), expected, "{name}");
        want[counter as usize] += 1;
        if counter != Counter::Pass {
            want[Counter::NoSocket as usize] += 1;
        }
        assert_eq!(ours.counters().unwrap().0, want, "{name}: counters");
        assert_eq!(theirs.test_run(&frame).unwrap(), XDP_PASS, "{name}");
        if is_group {
            group += 1;
        } else {
            other += 1;
        }
        let c = theirs.counters().unwrap();
        assert_eq!(
            (c.get(Counter::OtherHost), c.get(Counter::Pass)),
            (other, group),
            "{name}"
        );
        assert_eq!(c.0.iter().sum::<u64>(), other + group, "{name}: {:?}", c.0);
    }
    assert!(other > 20 && group > 0, "{other} {group}");
    // Only the destination decides: MAC_A differs from MAC_B in its last
    // byte; one differing in the first byte is another host too.
    let mut frame = v4_syn(80);
    frame[0] ^= 0x80;
    assert_eq!(ours.test_run(&frame).unwrap(), XDP_PASS);
    assert_eq!(ours.counters().unwrap().get(Counter::OtherHost), 1);
}

/// With an empty socket slot and the default fallback, this kernel's
/// `bpf_redirect_map` returns the fallback action (XDP_PASS), and
/// BPF_PROG_TEST_RUN reports it: router traffic goes to the kernel until a
/// socket is bound. (With a socket in the slot it returns XDP_REDIRECT: see
/// the netns test.)
#[test]
fn empty_socket_slot_falls_back_to_pass() {
    if !root_or_skip("empty_socket_slot_falls_back_to_pass") {
        return;
    }
    let p = loaded(MissingSocket::Pass);
    assert_eq!(p.test_run(&v4_syn(80)).unwrap(), XDP_PASS);
    let c = p.counters().unwrap();
    assert_eq!(
        (
            c.get(Counter::ServiceV4),
            c.get(Counter::NoSocket),
            c.get(Counter::Pass)
        ),
        (1, 1, 0)
    );
}

/// Every prefix of every frame: a prefix that cuts into the bytes the
/// program needs is passed (and never read past its end: the verifier
/// proved the bounds checks, the kernel's test run would fault otherwise).
#[test]
fn truncated_frames_pass() {
    if !root_or_skip("truncated_frames_pass") {
        return;
    }
    let p = loaded(MissingSocket::Drop);
    // Bytes the program needs to decide "router" for each class.
    let needs = |c: Counter, frame: &[u8]| -> usize {
        let tag = if frame[12..14] == [0x81, 0x00] || frame[12..14] == [0x88, 0xa8] {
            4
        } else {
            0
        };
        let l3 = 14 + tag;
        match c {
            Counter::ServiceV4 => l3 + usize::from(frame[l3] & 0x0f) * 4 + 4,
            Counter::FragmentV4 | Counter::PeerV4 => l3 + 20,
            Counter::ServiceV6 => l3 + 44,
            Counter::FragmentV6 => l3 + 48,
            Counter::PeerV6 => l3 + 40,
            _ => 0,
        }
    };
    let mut runs = 0;
    for (name, frame, counter) in cases() {
        let need = needs(counter, &frame);
        for len in 14..=frame.len() {
            let action = p.test_run(&frame[..len]).unwrap();
            let expected = if counter != Counter::Pass && len >= need {
                XDP_DROP
            } else {
                XDP_PASS
            };
            assert_eq!(
                action,
                expected,
                "{name} cut to {len} of {} bytes",
                frame.len()
            );
            runs += 1;
        }
    }
    assert!(runs > 1000, "{runs}");
}

/// The kernel itself refuses test input shorter than an Ethernet header
/// (EINVAL), so such frames never reach the program in a test run; on a
/// real interface the program's first bounds check passes them.
#[test]
fn frames_shorter_than_ethernet_are_refused_by_test_run() {
    if !root_or_skip("frames_shorter_than_ethernet_are_refused_by_test_run") {
        return;
    }
    let p = loaded(MissingSocket::Drop);
    for len in [0, 1, 13] {
        assert!(p.test_run(&v4_syn(80)[..len]).is_err(), "len {len}");
    }
}

#[test]
fn maps_follow_adds_and_removes() {
    if !root_or_skip("maps_follow_adds_and_removes") {
        return;
    }
    let mut p = loaded(MissingSocket::Drop);
    let svc = SocketAddr::new(SVC4.into(), 80);
    let svc8080 = SocketAddr::new(SVC4.into(), 8080);
    let later_frag = eth(
        MAC_A,
        MAC_B,
        0x0800,
        &ipv4_with(CLIENT4, SVC4, 6, 0x0010, &[], &[0; 16]),
    );
    p.add_service(svc8080).unwrap();
    assert_eq!(p.test_run(&v4_syn(8080)).unwrap(), XDP_DROP);
    assert!(p.remove_service(svc).unwrap());
    assert!(!p.remove_service(svc).unwrap());
    assert_eq!(p.test_run(&v4_syn(80)).unwrap(), XDP_PASS);
    // 8080 still there: the address still takes fragments.
    assert_eq!(p.test_run(&later_frag).unwrap(), XDP_DROP);
    assert!(p.remove_service(svc8080).unwrap());
    assert_eq!(p.test_run(&later_frag).unwrap(), XDP_PASS);
    assert!(p.remove_peer(PEER4.into()).unwrap());
    let ipip = eth(
        MAC_A,
        MAC_B,
        0x0800,
        &ipv4(PEER4, CLIENT4, 4, &ipv4(CLIENT4, SVC4, 6, &[0; 20])),
    );
    assert_eq!(p.test_run(&ipip).unwrap(), XDP_PASS);
    assert!(p.add_service(SocketAddr::new(SVC4.into(), 0)).is_err());
}

/// What the program costs per packet, as the kernel measures a test run
/// (printed, not asserted: the machine is shared).
#[test]
fn program_cost_per_packet() {
    if !root_or_skip("program_cost_per_packet") {
        return;
    }
    let p = loaded(MissingSocket::Drop);
    for (name, frame) in [("service SYN", v4_syn(80)), ("other port", v4_syn(22))] {
        let (_, ns) = p.test_run_timed(&frame, 100_000).unwrap();
        eprintln!("program_cost_per_packet: {name}: {ns} ns/run");
    }
}

/// An IPv4-in-IPv4 frame from `outer_src` carrying `inner` (an IPv4 packet).
fn tunnelled(outer_src: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    eth(MAC_A, MAC_B, 0x0800, &ipv4(outer_src, SVC4, 4, inner))
}

/// An inner IPv4 TCP packet client → service with `flags` and a payload.
fn inner_tcp(dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = tcp_header(40000, dport, flags);
    t.extend_from_slice(payload);
    ipv4(CLIENT4, SVC4, 6, &t)
}

/// Plain tunnelled packets of a connection in progress are decapsulated by
/// the program and passed to the kernel as the client's own packet (same
/// MAC addresses); everything the engine must judge or record still goes
/// to it, untouched.
#[test]
fn plain_tunnel_traffic_is_decapsulated_and_the_rest_goes_to_the_router() {
    if !root_or_skip("plain_tunnel_traffic_is_decapsulated_and_the_rest_goes_to_the_router") {
        return;
    }
    const OTHER_PEER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 3);
    let mut p = loaded(MissingSocket::Drop);
    p.add_peer(OTHER_PEER.into()).unwrap();
    let svc80 = SocketAddr::new(SVC4.into(), 80);
    p.add_tunnel_service(PEER4.into(), svc80).unwrap();
    assert!(
        p.add_tunnel_service(PEER6.into(), svc80).is_err(),
        "IPv4 only"
    );

    let ack = inner_tcp(80, 0x10, b"GET / HTTP/1.1\r\n\r\n");
    let (action, out) = p.test_run_output(&tunnelled(PEER4, &ack)).unwrap();
    assert_eq!(action, XDP_PASS);
    assert_eq!(
        out,
        eth(MAC_A, MAC_B, 0x0800, &ack),
        "the inner packet, same MACs"
    );
    assert_eq!(p.counters().unwrap().get(Counter::DecapV4), 1);
    // The same ECN codepoint outside and inside (ECT(0)): decapsulated too.
    let mut ect = ack.clone();
    ect[1] |= 0b10;
    let mut frame = tunnelled(PEER4, &ect);
    frame[14 + 1] |= 0b10;
    assert_eq!(
        p.test_run_output(&frame).unwrap(),
        (XDP_PASS, eth(MAC_A, MAC_B, 0x0800, &ect))
    );

    let mut ce_outside = frame.clone();
    ce_outside[14 + 1] |= 0b11; // CE outside, ECT(0) inside: the engine combines
    let options = eth(
        MAC_A,
        MAC_B,
        0x0800,
        &ipv4_with(PEER4, SVC4, 4, 0x4000, &[1, 1, 1, 0], &ack),
    );
    let mut long = tunnelled(PEER4, &ack);
    long[14 + 3] += 4; // the outer header claims 4 more bytes than the inner
    let inner_frag = ipv4_with(CLIENT4, SVC4, 6, 0x2000, &[], &tcp_header(40000, 80, 0x10));
    let to_router: Vec<(&str, Vec<u8>)> = vec![
        ("SYN", tunnelled(PEER4, &inner_tcp(80, 0x02, b""))),
        ("FIN", tunnelled(PEER4, &inner_tcp(80, 0x11, b""))),
        ("RST", tunnelled(PEER4, &inner_tcp(80, 0x04, b""))),
        (
            "not a service port",
            tunnelled(PEER4, &inner_tcp(22, 0x10, b"x")),
        ),
        ("a service of another peer", tunnelled(OTHER_PEER, &ack)),
        ("ECN to combine", ce_outside),
        ("outer options", options),
        ("inner fragment", tunnelled(PEER4, &inner_frag)),
        ("lengths disagree", long),
        (
            "inner UDP",
            tunnelled(PEER4, &ipv4(CLIENT4, SVC4, 17, &udp(1, 80, b"x"))),
        ),
        (
            "truncated inner TCP",
            tunnelled(PEER4, &ack)[..14 + 20 + 20 + 10].to_vec(),
        ),
        (
            "VLAN-tagged",
            vlan(0x8100, 0x0800, &ipv4(PEER4, SVC4, 4, &ack)),
        ),
    ];
    for (name, frame) in to_router {
        let before = p.counters().unwrap();
        let (action, out) = p.test_run_output(&frame).unwrap();
        assert_eq!(
            action, XDP_DROP,
            "{name}: to the router (dropped: no socket)"
        );
        assert_eq!(out, frame, "{name}: untouched");
        let after = p.counters().unwrap();
        assert_eq!(
            after.get(Counter::DecapV4),
            before.get(Counter::DecapV4),
            "{name}"
        );
        assert_eq!(
            after.get(Counter::PeerV4),
            before.get(Counter::PeerV4) + 1,
            "{name}"
        );
    }
    // Forgetting the pair sends its traffic back to the router.
    assert!(p.remove_tunnel_service(PEER4.into(), svc80).unwrap());
    assert_eq!(p.test_run(&tunnelled(PEER4, &ack)).unwrap(), XDP_DROP);
}

/// The keyed tunnel's GRE from a peer: decapsulated here only for a flow
/// the engine accepted from that peer (in `keyed_flows_v4`) and with the
/// tag it accepted; everything else goes to the router whole. From anyone
/// else it is the kernel's.
#[test]
fn keyed_tunnel_traffic_is_decapsulated_only_for_flows_the_engine_accepted() {
    if !root_or_skip("keyed_tunnel_traffic_is_decapsulated_only_for_flows_the_engine_accepted") {
        return;
    }
    const OTHER_PEER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 3);
    let mut p = loaded(MissingSocket::Drop);
    p.add_peer(OTHER_PEER.into()).unwrap();
    let flow = KeyedFlow {
        client: SocketAddr::new(CLIENT4.into(), 40000),
        service: SocketAddr::new(SVC4.into(), 80),
    };
    let gre = |tag: u32, inner: &[u8]| {
        let mut g = vec![0x30, 0, 0x08, 0];
        g.extend_from_slice(&tag.to_be_bytes());
        g.extend_from_slice(&[0, 0, 0, 1]);
        g.extend_from_slice(inner);
        g
    };
    let from = |peer: Ipv4Addr, tag: u32, inner: &[u8]| {
        eth(
            MAC_A,
            MAC_B,
            0x0800,
            &ipv4(peer, SVC4, 47, &gre(tag, inner)),
        )
    };
    let ack = inner_tcp(80, 0x10, b"GET / HTTP/1.1\r\n\r\n");
    let to_router = |p: &RouterProgram, name: &str, frame: &[u8]| {
        let before = p.counters().unwrap();
        let (action, out) = p.test_run_output(frame).unwrap();
        assert_eq!(
            action, XDP_DROP,
            "{name}: to the router (dropped: no socket)"
        );
        assert_eq!(out, frame, "{name}: untouched");
        let after = p.counters().unwrap();
        assert_eq!(
            after.get(Counter::DecapGreV4),
            before.get(Counter::DecapGreV4),
            "{name}"
        );
    };
    to_router(&p, "not accepted yet", &from(PEER4, 0xdead_beef, &ack));
    p.add_keyed_flow(PEER4.into(), &flow, 0xdead_beef).unwrap();
    let (action, out) = p.test_run_output(&from(PEER4, 0xdead_beef, &ack)).unwrap();
    assert_eq!(action, XDP_PASS);
    assert_eq!(
        out,
        eth(MAC_A, MAC_B, 0x0800, &ack),
        "the inner packet, same MACs"
    );
    assert_eq!(p.counters().unwrap().get(Counter::DecapGreV4), 1);
    let mut long = from(PEER4, 0xdead_beef, &ack);
    long[14 + 3] += 4; // the outer header claims 4 more bytes than the inner
    let mut ce = from(PEER4, 0xdead_beef, &ack);
    ce[14 + 1] |= 3; // CE outside, Not-ECT inside: the engine decides
    let mut ks_only = from(PEER4, 0xdead_beef, &ack);
    ks_only[14 + 20] = 0xb0; // a checksum present
    for (name, frame) in [
        ("another tag", from(PEER4, 0xdead_bef0, &ack)),
        ("another peer", from(OTHER_PEER, 0xdead_beef, &ack)),
        ("SYN", from(PEER4, 0xdead_beef, &inner_tcp(80, 0x02, b""))),
        ("FIN", from(PEER4, 0xdead_beef, &inner_tcp(80, 0x11, b""))),
        ("RST", from(PEER4, 0xdead_beef, &inner_tcp(80, 0x04, b""))),
        (
            "another port",
            from(PEER4, 0xdead_beef, &inner_tcp(81, 0x10, b"x")),
        ),
        ("lengths disagree", long),
        ("ECN to combine", ce),
        ("another GRE header", ks_only),
        ("plain IP-in-IP of the flow", tunnelled(PEER4, &ack)),
        (
            "VLAN-tagged",
            vlan(
                0x8100,
                0x0800,
                &ipv4(PEER4, SVC4, 47, &gre(0xdead_beef, &ack)),
            ),
        ),
    ] {
        to_router(&p, name, &frame);
    }
    // A key roll: the engine replaces the tag.
    p.add_keyed_flow(PEER4.into(), &flow, 0x0102_0304).unwrap();
    assert_eq!(
        p.test_run(&from(PEER4, 0x0102_0304, &ack)).unwrap(),
        XDP_PASS
    );
    to_router(&p, "the old tag", &from(PEER4, 0xdead_beef, &ack));
    // The connection ended: its packets go to the router again.
    assert!(p.remove_keyed_flow(PEER4.into(), &flow).unwrap());
    to_router(&p, "removed", &from(PEER4, 0x0102_0304, &ack));
    // From a stranger's address: the kernel's (it has no GRE tunnel).
    let stranger = eth(
        MAC_A,
        MAC_B,
        0x0800,
        &ipv4(CLIENT4, SVC4, 47, &gre(1, &ack)),
    );
    assert_eq!(p.test_run(&stranger).unwrap(), XDP_PASS);
    assert_eq!(p.counters().unwrap().get(Counter::DecapGreV4), 2);
}

/// A worker's own descriptor of the keyed-flows map writes to the same map
/// the program reads.
#[test]
fn a_workers_keyed_flow_map_is_the_programs() {
    if !root_or_skip("a_workers_keyed_flow_map_is_the_programs") {
        return;
    }
    let p = loaded(MissingSocket::Drop);
    let w = p.keyed_flow_map().unwrap();
    let flow = KeyedFlow {
        client: SocketAddr::new(CLIENT4.into(), 40000),
        service: SocketAddr::new(SVC4.into(), 80),
    };
    let ack = inner_tcp(80, 0x10, b"x");
    let mut g = vec![0x30, 0, 0x08, 0, 0, 0, 0, 42, 0, 0, 0, 1];
    g.extend_from_slice(&ack);
    let frame = eth(MAC_A, MAC_B, 0x0800, &ipv4(PEER4, SVC4, 47, &g));
    assert_eq!(p.test_run(&frame).unwrap(), XDP_DROP, "to the router");
    w.add(PEER4.into(), &flow, 42).unwrap();
    assert_eq!(p.test_run(&frame).unwrap(), XDP_PASS, "decapsulated");
    assert!(w.remove(PEER4.into(), &flow).unwrap());
    assert!(!w.remove(PEER4.into(), &flow).unwrap());
    assert_eq!(p.test_run(&frame).unwrap(), XDP_DROP);
    assert!(w.add(PEER6.into(), &flow, 1).is_err(), "IPv4 only");
}
