//! Differential test: the same frames through `dpr-packet` and through
//! `etherparse` (an independent parser this crate is not built on), fields
//! compared. Frames come from etherparse's builder (random), from this
//! crate's emitters (random), and from the committed captures: real traffic
//! (`tests/data/capture.pcap`) and scapy-written frames, broken ones included
//! (`tests/data/scapy_frames.pcap`).
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;
use common::*;
use dpr_packet::ip::IpProtocol;
use dpr_packet::tcp::TcpFlags;
use dpr_packet::{Fragment, PacketMeta, parse_frame};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice, VlanId};
use proptest::prelude::*;
use std::net::IpAddr;

/// What both parsers must agree on.
#[derive(Debug, PartialEq, Eq)]
struct Fields {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    ports: Option<(u16, u16)>,
    flags: Option<u16>,
    fragmented: bool,
}

fn ours(m: &PacketMeta) -> Fields {
    let has_ports = matches!(m.flow.protocol, IpProtocol::Tcp | IpProtocol::Udp)
        && m.fragment != Fragment::Later;
    Fields {
        src: m.flow.src,
        dst: m.flow.dst,
        protocol: m.flow.protocol.into(),
        ports: has_ports.then_some((m.flow.src_port, m.flow.dst_port)),
        flags: (m.flow.protocol == IpProtocol::Tcp && m.fragment != Fragment::Later)
            .then_some(m.tcp_flags.0),
        fragmented: m.fragment != Fragment::Whole,
    }
}

fn theirs(p: &SlicedPacket<'_>) -> Option<Fields> {
    let (src, dst, protocol, fragmented) = match p.net.as_ref()? {
        NetSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                IpAddr::from(h.source_addr()),
                IpAddr::from(h.destination_addr()),
                v4.payload().ip_number.0,
                v4.is_payload_fragmented(),
            )
        }
        NetSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                IpAddr::from(h.source_addr()),
                IpAddr::from(h.destination_addr()),
                v6.payload().ip_number.0,
                v6.is_payload_fragmented(),
            )
        }
        NetSlice::Arp(_) => return None,
    };
    let (ports, flags) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let f = u16::from(t.ns()) << 8 | u16::from(t.slice()[13]);
            (Some((t.source_port(), t.destination_port())), Some(f))
        }
        Some(TransportSlice::Udp(u)) => (Some((u.source_port(), u.destination_port())), None),
        _ => (None, None),
    };
    Some(Fields {
        src,
        dst,
        protocol,
        ports,
        flags,
        fragmented,
    })
}

/// Compares one frame. Returns a disagreement description, if any.
fn compare(frame: &[u8]) -> Option<String> {
    let a = parse_frame(frame);
    let b = SlicedPacket::from_ethernet(frame);
    match (a, b) {
        (Ok(m), Ok(p)) => {
            let t = theirs(&p)?;
            let o = ours(&m);
            // etherparse slices a first fragment's transport header only when
            // it is not fragmented; compare addresses and protocol then.
            if o.fragmented {
                return (o.src != t.src
                    || o.dst != t.dst
                    || o.protocol != t.protocol
                    || !t.fragmented)
                    .then(|| format!("fragment: ours {o:?} theirs {t:?}"));
            }
            (o != t).then(|| format!("ours {o:?} theirs {t:?}"))
        }
        (Err(_), Err(_)) => None,
        (Ok(m), Err(e)) => Some(format!("only ours accepts ({m:?}); etherparse: {e:?}")),
        (Err(e), Ok(p)) => {
            // Non-IP frames (ARP and others) are not ours to parse.
            theirs(&p).map(|_| format!("only etherparse accepts; ours: {e}"))
        }
    }
}

/// Replays a capture: (frames, frames both parsers accepted, disagreements).
fn replay(name: &str) -> (usize, usize, Vec<String>) {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let frames = read_pcap(&bytes);
    let diffs = frames
        .iter()
        .enumerate()
        .filter_map(|(i, f)| compare(f).map(|d| format!("#{i}: {d}")))
        .collect();
    let both = frames
        .iter()
        .filter(|f| parse_frame(f).is_ok() && SlicedPacket::from_ethernet(f).is_ok())
        .count();
    (frames.len(), both, diffs)
}

#[test]
fn real_capture_agrees() {
    let (n, both, diffs) = replay("capture.pcap");
    println!("capture.pcap: {n} frames, {both} parsed by both");
    assert!(n >= 100, "capture has only {n} frames");
    assert!(
        both >= n * 9 / 10,
        "only {both} of {n} real frames compared"
    );
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn scapy_frames_agree() {
    let (n, both, diffs) = replay("scapy_frames.pcap");
    println!("scapy_frames.pcap: {n} frames, {both} parsed by both");
    assert!(n >= 30, "only {n} frames");
    assert!(both >= n / 2, "only {both} of {n} frames compared");
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

fn vlan(v: u16) -> VlanId {
    VlanId::try_new(v & 0x0fff).unwrap()
}

proptest! {
    /// Frames written by etherparse's builder parse identically here.
    #[test]
    fn etherparse_built_frames(
        v6 in any::<bool>(), tcp in any::<bool>(), tags in 0u8..3, vids in any::<(u16, u16)>(),
        sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(), flags in any::<u8>(),
        a in any::<[u8; 16]>(), b in any::<[u8; 16]>(), payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let base = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut frame = Vec::new();
        macro_rules! finish {
            ($step:expr) => {{
                let ip = if v6 { $step.ipv6(a, b, 64) } else { $step.ipv4(a[..4].try_into().unwrap(), b[..4].try_into().unwrap(), 64) };
                if tcp {
                    let mut t = ip.tcp(sp, dp, seq, 1000);
                    if flags & 1 != 0 { t = t.fin(); }
                    if flags & 2 != 0 { t = t.syn(); }
                    if flags & 4 != 0 { t = t.rst(); }
                    if flags & 8 != 0 { t = t.psh(); }
                    if flags & 16 != 0 { t = t.ack(7); }
                    if flags & 32 != 0 { t = t.urg(1); }
                    if flags & 64 != 0 { t = t.ece(); }
                    if flags & 128 != 0 { t = t.cwr(); }
                    t.write(&mut frame, &payload).unwrap();
                } else {
                    ip.udp(sp, dp).write(&mut frame, &payload).unwrap();
                }
            }};
        }
        match tags {
            0 => finish!(base),
            1 => finish!(base.single_vlan(vlan(vids.0))),
            _ => finish!(base.double_vlan(vlan(vids.0), vlan(vids.1))),
        }
        let m = parse_frame(&frame).unwrap();
        prop_assert_eq!(m.l3_offset as usize, 14 + 4 * usize::from(tags));
        prop_assert_eq!((m.flow.src_port, m.flow.dst_port), (sp, dp));
        if tcp { prop_assert_eq!(m.tcp_flags, TcpFlags(u16::from(flags))); }
        prop_assert_eq!(compare(&frame), None);
    }

    /// Frames written by this crate's emitters parse identically in etherparse.
    #[test]
    fn own_frames_in_etherparse(v6 in any::<bool>(), flags in any::<u8>(), opts_len in 0usize..5, payload in proptest::collection::vec(any::<u8>(), 0..100)) {
        let opts = &SYN_OPTS[..opts_len * 4];
        let (src, dst): (IpAddr, IpAddr) = if v6 { (c6().into(), s6().into()) } else { (C4.into(), S4.into()) };
        let t = tcp_bytes(src, dst, 12345, 80, TcpFlags(u16::from(flags)), opts, &payload);
        let ip = if v6 { v6_packet(c6(), s6(), IpProtocol::Tcp, &t, 0) } else { v4_packet(C4, S4, IpProtocol::Tcp, &t, 0, true) };
        let frame = ether(if v6 { 0x86dd } else { 0x0800 }, &ip);
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(TransportSlice::Tcp(ts)) = &p.transport else { panic!("no tcp") };
        prop_assert_eq!(ts.options(), opts);
        prop_assert_eq!(ts.payload(), &payload[..]);
        prop_assert_eq!(compare(&frame), None);
    }
}
