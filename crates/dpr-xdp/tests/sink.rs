//! The forwarding benchmark's sink program (`dpr_xdp::sink`), run by the
//! kernel on crafted frames with `BPF_PROG_TEST_RUN` (root; no interface
//! needed): it drops and counts exactly the benchmark's packets, plain and
//! in both tunnels, and passes everything else, truncated frames included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dpr_xdp::program::{XDP_DROP, XDP_PASS};
use dpr_xdp::{SinkConfig, SinkCounts, SinkProgram};
use std::net::Ipv4Addr;

// Last octets above 127: a sign-extended comparison would miss them.
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
const SINK_NET: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 0);
const SINK_DST: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 201);
const TUNNEL_A: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const TUNNEL_B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 202);
const SERVICE_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 129);

fn sink() -> SinkProgram {
    SinkProgram::load(&SinkConfig {
        plain_prefix: SINK_NET,
        plain_prefix_len: 24,
        tunnel_dst: TUNNEL_B,
        inner_dst: SERVICE_A,
        port: 80,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn frame(ip: &[u8]) -> Vec<u8> {
    eth(MAC_B, MAC_A, 0x0800, ip)
}

fn ack(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    ipv4(CLIENT, dst, 6, &tcp_header(10_000, dport, 0x10))
}

fn gre(flags: [u8; 2], proto: u16, words: usize, inner: &[u8]) -> Vec<u8> {
    let mut g = flags.to_vec();
    g.extend_from_slice(&proto.to_be_bytes());
    g.extend(std::iter::repeat_n(0xab, 4 * words));
    g.extend_from_slice(inner);
    ipv4(TUNNEL_A, TUNNEL_B, 47, &g)
}

#[test]
fn drops_and_counts_the_benchmarks_packets_only() {
    if !root_or_skip("drops_and_counts_the_benchmarks_packets_only") {
        return;
    }
    let s = sink();
    let inner = ack(SERVICE_A, 80);
    let drops: Vec<(&str, Vec<u8>)> = vec![
        ("plain TCP to the prefix", frame(&ack(SINK_DST, 80))),
        (
            "plain UDP to the prefix",
            frame(&ipv4(CLIENT, SINK_DST, 17, &udp(1, 80, b"x"))),
        ),
        ("IP-in-IP", frame(&ipv4(TUNNEL_A, TUNNEL_B, 4, &inner))),
        (
            "GRE, key and sequence",
            frame(&gre([0x30, 0], 0x0800, 2, &inner)),
        ),
        ("GRE, bare", frame(&gre([0, 0], 0x0800, 0, &inner))),
        ("GRE, checksum", frame(&gre([0x80, 0], 0x0800, 1, &inner))),
    ];
    for (what, f) in &drops {
        assert_eq!(s.test_run(f).unwrap(), XDP_DROP, "{what}");
    }
    let mut passes: Vec<(&str, Vec<u8>)> = vec![
        ("other port", frame(&ack(SINK_DST, 81))),
        (
            "outside the prefix",
            frame(&ack(Ipv4Addr::new(198, 19, 2, 201), 80)),
        ),
        (
            "ICMP to the prefix",
            frame(&ipv4(CLIENT, SINK_DST, 1, &[8, 0, 0, 0, 0, 0, 0, 0])),
        ),
        (
            "a later fragment",
            frame(&ipv4_with(
                CLIENT,
                SINK_DST,
                6,
                0x0010,
                &[],
                &tcp_header(1, 80, 0x10),
            )),
        ),
        (
            "the daemons' UDP reports",
            frame(&ipv4(TUNNEL_A, TUNNEL_B, 17, &udp(6870, 6870, b"load"))),
        ),
        (
            "IP-in-IP to another tunnel address",
            frame(&ipv4(TUNNEL_A, Ipv4Addr::new(198, 19, 0, 3), 4, &inner)),
        ),
        (
            "IP-in-IP, inner to another address",
            frame(&ipv4(
                TUNNEL_A,
                TUNNEL_B,
                4,
                &ack(Ipv4Addr::new(198, 18, 0, 2), 80),
            )),
        ),
        (
            "IP-in-IP, inner to another port",
            frame(&ipv4(TUNNEL_A, TUNNEL_B, 4, &ack(SERVICE_A, 443))),
        ),
        (
            "GRE, routing bit",
            frame(&gre([0x40, 0], 0x0800, 0, &inner)),
        ),
        ("GRE, version 1", frame(&gre([0x30, 1], 0x0800, 2, &inner))),
        ("GRE, IPv6 inside", frame(&gre([0, 0], 0x86dd, 0, &inner))),
        ("ARP", arp_request(MAC_A, CLIENT, SINK_DST)),
        ("IPv6", eth(MAC_B, MAC_A, 0x86dd, &[0x60; 40])),
    ];
    // Every truncation of a dropped frame before the inner destination
    // port's end (at least the 14 bytes the kernel needs) is passed: the program never reads past the end.
    let whole = frame(&gre([0x30, 0], 0x0800, 2, &inner));
    let cut: Vec<Vec<u8>> = (14..14 + 20 + 12 + 20 + 4)
        .map(|n| whole[..n].to_vec())
        .collect();
    for c in &cut {
        passes.push(("truncated GRE", c.clone()));
    }
    for (what, f) in &passes {
        assert_eq!(
            s.test_run(f).unwrap(),
            XDP_PASS,
            "{what} ({} bytes)",
            f.len()
        );
    }
    assert_eq!(
        s.counts().unwrap(),
        SinkCounts {
            plain: 2,
            ipip: 1,
            gre: 3,
            passed: passes.len() as u64,
        }
    );
}
