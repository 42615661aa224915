//! Per-packet costs of the wire layer, with etherparse as a same-run baseline.
//!
//! `cargo bench -p dpr-packet --bench packet`
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use dpr_packet::ipip::{self, ChecksumCheck, EncapParams};
use dpr_packet::ipv4::{Ipv4OptionsBuf, Ipv4Repr};
use dpr_packet::tcp::{TcpFlags, TcpOptionsBuf, TcpRepr};
use dpr_packet::{Ecn, FlowHasher, FlowKey, IpProtocol, parse_frame, rewrite};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

const C: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const S: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);

/// A 64-byte frame: Ethernet 14 + IPv4 20 + TCP 20 (ACK) + 10 bytes of data.
fn frame64() -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: 40000,
        dst_port: 80,
        seq: 1,
        ack: 2,
        flags: TcpFlags::ACK | TcpFlags::PSH,
        window: 500,
        urgent: 0,
        options: TcpOptionsBuf::default(),
    };
    let mut t = vec![0u8; 30];
    tcp.emit(&mut t, C.into(), S.into(), b"0123456789").unwrap();
    let ip = Ipv4Repr {
        src: C,
        dst: S,
        protocol: IpProtocol::Tcp,
        payload_len: 30,
        ttl: 64,
        dscp: 0,
        ecn: Ecn::NotEct,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        options: Ipv4OptionsBuf::default(),
    };
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
    let mut h = [0u8; 20];
    ip.emit(&mut h).unwrap();
    f.extend_from_slice(&h);
    f.extend_from_slice(&t);
    assert_eq!(f.len(), 64);
    f
}

fn etherparse_key(frame: &[u8]) -> Option<FlowKey> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst, proto) = match p.net? {
        NetSlice::Ipv4(v) => (
            IpAddr::from(v.header().source_addr()),
            IpAddr::from(v.header().destination_addr()),
            v.payload().ip_number.0,
        ),
        NetSlice::Ipv6(v) => (
            IpAddr::from(v.header().source_addr()),
            IpAddr::from(v.header().destination_addr()),
            v.payload().ip_number.0,
        ),
        NetSlice::Arp(_) => return None,
    };
    let (sp, dp) = match p.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        _ => (0, 0),
    };
    Some(FlowKey::new(proto.into(), src, sp, dst, dp))
}

fn benches(c: &mut Criterion) {
    let frame = frame64();
    let mut g = c.benchmark_group("wire");
    g.bench_function("parse_frame+flowkey/64B-tcp", |b| {
        b.iter(|| parse_frame(black_box(&frame)).map(|m| m.flow))
    });
    g.bench_function("etherparse_sliced+flowkey/64B-tcp", |b| {
        b.iter(|| etherparse_key(black_box(&frame)))
    });
    let key = parse_frame(&frame).unwrap().flow;
    let hasher = FlowHasher::new(0x5eed);
    g.bench_function("flow_hash/v4", |b| b.iter(|| hasher.hash(black_box(&key))));

    // The IP packet of the frame after 20 bytes of headroom.
    let mut buf = vec![0u8; 20];
    buf.extend_from_slice(&frame[14..]);
    let p = EncapParams::new(
        Ipv4Addr::new(198, 19, 0, 1).into(),
        Ipv4Addr::new(198, 19, 0, 2).into(),
    );
    g.bench_function("encapsulate/ipv4-in-ipv4", |b| {
        b.iter(|| ipip::encapsulate(black_box(&mut buf), 20, black_box(&p)))
    });
    let start = ipip::encapsulate(&mut buf, 20, &p).unwrap();
    let outer = buf[start..].to_vec();
    g.bench_function("decapsulate/ipv4-in-ipv4+verify", |b| {
        b.iter(|| ipip::decapsulate(black_box(&outer), ChecksumCheck::Verify))
    });
    // The keyed tunnel: its tag, and GRE encapsulation and decapsulation.
    let tag_key = dpr_packet::siphash::SipKey::from_bytes([0x5a; 16]);
    g.bench_function("tunnel_tag/v4", |b| {
        b.iter(|| {
            dpr_packet::gre::tunnel_tag(black_box(&tag_key), 1, p.src, p.dst, black_box(&key))
        })
    });
    let mut gbuf = vec![0u8; 32];
    gbuf.extend_from_slice(&frame[14..]);
    let fields = dpr_packet::gre::GreFields {
        tag: 0x5eed_1234,
        key_id: 1,
    };
    g.bench_function("encapsulate/gre-ipv4", |b| {
        b.iter(|| ipip::encapsulate_gre(black_box(&mut gbuf), 32, black_box(&p), fields))
    });
    let gstart = ipip::encapsulate_gre(&mut gbuf, 32, &p, fields).unwrap();
    let gouter = gbuf[gstart..].to_vec();
    g.bench_function("decapsulate/gre-ipv4+verify", |b| {
        b.iter(|| ipip::decapsulate(black_box(&gouter), ChecksumCheck::Verify))
    });
    let mut syn = frame[14..].to_vec();
    syn[33] = 0x02;
    g.bench_function("clamp_mss/no-option-syn", |b| {
        b.iter(|| rewrite::clamp_mss(black_box(&mut syn), 1400))
    });
    let mtu = vec![0xa5u8; 1500];
    g.bench_function("checksum/1500B", |b| {
        b.iter(|| dpr_packet::checksum::checksum(black_box(&mtu)))
    });
    g.finish();
}

criterion_group!(wire, benches);
criterion_main!(wire);
