//! Packet builders shared by the integration tests (built with this crate's
//! own `Repr` emitters; the differential test cross-checks them).
#![allow(dead_code, clippy::unwrap_used, clippy::panic, unreachable_pub)]

use dpr_packet::ip::{Ecn, IpProtocol};
use dpr_packet::ipv4::{Ipv4OptionsBuf, Ipv4Repr};
use dpr_packet::ipv6::Ipv6Repr;
use dpr_packet::tcp::{TcpFlags, TcpOptionsBuf, TcpRepr};
use dpr_packet::udp::UdpRepr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const C4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const S4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const T4A: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const T4B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

pub fn c6() -> Ipv6Addr {
    "2001:2::10".parse().unwrap()
}
pub fn s6() -> Ipv6Addr {
    "2001:2::1:1".parse().unwrap()
}
pub fn t6a() -> Ipv6Addr {
    "2001:2:0:1::1".parse().unwrap()
}
pub fn t6b() -> Ipv6Addr {
    "2001:2:0:1::2".parse().unwrap()
}

pub fn tcp_bytes(
    src: IpAddr,
    dst: IpAddr,
    sp: u16,
    dp: u16,
    flags: TcpFlags,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let r = TcpRepr {
        src_port: sp,
        dst_port: dp,
        seq: 1000,
        ack: if flags.contains(TcpFlags::ACK) {
            5000
        } else {
            0
        },
        flags,
        window: 64240,
        urgent: 0,
        options: TcpOptionsBuf::new(opts).unwrap(),
    };
    let mut b = vec![0u8; r.buffer_len() + payload.len()];
    r.emit(&mut b, src, dst, payload).unwrap();
    b
}

pub fn v4_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    l4: &[u8],
    tos: u8,
    df: bool,
) -> Vec<u8> {
    let r = Ipv4Repr {
        src,
        dst,
        protocol: proto,
        payload_len: l4.len() as u16,
        ttl: 64,
        dscp: tos >> 2,
        ecn: Ecn::from_bits(tos),
        ident: 0x4242,
        dont_frag: df,
        more_frags: false,
        frag_offset: 0,
        options: Ipv4OptionsBuf::default(),
    };
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b).unwrap();
    b.extend_from_slice(l4);
    b
}

pub fn v6_packet(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: IpProtocol,
    payload: &[u8],
    tc: u8,
) -> Vec<u8> {
    let r = Ipv6Repr {
        src,
        dst,
        next_header: next,
        payload_len: payload.len() as u16,
        hop_limit: 64,
        traffic_class: tc,
        flow_label: 0xbeef,
    };
    let mut b = vec![0u8; 40];
    r.emit(&mut b).unwrap();
    b.extend_from_slice(payload);
    b
}

/// MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
pub const SYN_OPTS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
];

pub fn syn_v4() -> Vec<u8> {
    let t = tcp_bytes(
        C4.into(),
        S4.into(),
        40000,
        80,
        TcpFlags::SYN,
        &SYN_OPTS,
        &[],
    );
    v4_packet(C4, S4, IpProtocol::Tcp, &t, 0, true)
}

pub fn syn_v6() -> Vec<u8> {
    let t = tcp_bytes(
        c6().into(),
        s6().into(),
        40000,
        443,
        TcpFlags::SYN,
        &SYN_OPTS,
        &[],
    );
    v6_packet(c6(), s6(), IpProtocol::Tcp, &t, 0)
}

pub fn udp_v4(payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8 + payload.len()];
    UdpRepr {
        src_port: 5353,
        dst_port: 53,
    }
    .emit(&mut u, C4.into(), S4.into(), payload)
    .unwrap();
    v4_packet(C4, S4, IpProtocol::Udp, &u, 0, false)
}

pub fn ether(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads a classic pcap file (either byte order, Ethernet link type).
pub fn read_pcap(bytes: &[u8]) -> Vec<Vec<u8>> {
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => panic!("not a pcap file: magic {m:#x}"),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(u32_at(20), 1, "link type must be Ethernet");
    let mut at = 24;
    let mut frames = Vec::new();
    while at + 16 <= bytes.len() {
        let caplen = u32_at(at + 8) as usize;
        frames.push(bytes[at + 16..at + 16 + caplen].to_vec());
        at += 16 + caplen;
    }
    frames
}
