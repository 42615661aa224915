//! Invariant checks shared by the fuzz targets (`fuzz/`) and by the corpus
//! replay test. Each takes arbitrary bytes, must never panic on its own, and
//! asserts the properties the crate promises; a failed assertion is a bug.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[cfg(not(test))]
extern crate std;
use std::vec::Vec;

use crate::ethernet::{EthernetFrame, EthernetRepr};
use crate::icmp::{self, IcmpErrorKind};
use crate::ip::{Ecn, IpProtocol, IpVersion};
use crate::ipip::{self, ChecksumCheck, DfPolicy, EcnMode, EncapParams};
use crate::ipv4::{Ipv4Packet, Ipv4Repr};
use crate::ipv6::{Ipv6Packet, Ipv6Repr};
use crate::parse::{Fragment, parse_frame, parse_ip};
use crate::rewrite;
use crate::tcp::{MssClamp, TcpRepr, TcpSegment};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Frame parsing: offsets in bounds, the IP-level parse agrees with the
/// frame-level one, and every header re-emits to the same bytes.
pub fn frame(data: &[u8]) {
    if let Ok(eth) = EthernetFrame::new_checked(data) {
        let r = EthernetRepr::parse(&eth);
        let mut out = [0u8; 22];
        r.emit(&mut out).unwrap();
        assert_eq!(&out[..r.buffer_len()], &data[..eth.header_len()]);
    }
    let Ok(m) = parse_frame(data) else { return };
    let l3 = m.l3_range();
    assert!(l3.end <= data.len());
    assert!(usize::from(m.l4_offset) <= l3.end);
    let mut again = parse_ip(&data[l3.clone()]).unwrap();
    again.l3_offset += m.l3_offset;
    again.l4_offset += m.l3_offset;
    assert_eq!(again, m);
    ip_headers_round_trip(&data[l3]);
}

fn ip_headers_round_trip(ip: &[u8]) {
    let m = parse_ip(ip).unwrap();
    match m.version {
        IpVersion::V4 => {
            let p = Ipv4Packet::new_checked(ip).unwrap();
            let mut out = [0u8; 60];
            let r = Ipv4Repr::parse(&p);
            r.emit(&mut out).unwrap();
            let hl = p.header_len();
            assert_eq!(r.buffer_len(), hl);
            // The reserved flag bit (RFC 3514) is not represented: emitted as 0.
            let mut expect = ip[..hl].to_vec();
            expect[6] &= 0x7f;
            assert_eq!(&out[..10], &expect[..10]);
            assert_eq!(&out[12..hl], &expect[12..hl]);
        }
        IpVersion::V6 => {
            let p = Ipv6Packet::new_checked(ip).unwrap();
            let mut out = [0u8; 40];
            Ipv6Repr::parse(&p).emit(&mut out).unwrap();
            assert_eq!(&out[..], &ip[..40]);
        }
    }
    if m.version == IpVersion::V4 {
        let p = Ipv4Packet::new_checked(ip).unwrap();
        // Options iterate to the end, yielding at most one error, last.
        let opts: Vec<_> = p.option_iter().collect();
        assert!(opts.iter().rev().skip(1).all(Result::is_ok));
        let _ = p.verify_checksum();
    }
    let l4 = &ip[usize::from(m.l4_offset)..m.l3_range().end];
    if m.fragment == Fragment::Later {
        return;
    }
    match m.flow.protocol {
        IpProtocol::Tcp => {
            let t = TcpSegment::new_checked(l4).unwrap();
            let r = TcpRepr::parse(&t);
            assert_eq!(r.buffer_len(), t.header_len());
            assert_eq!((r.src_port, r.dst_port), (m.flow.src_port, m.flow.dst_port));
            assert_eq!(r.flags, m.tcp_flags);
            let opts: Vec<_> = t.option_iter().collect();
            assert!(opts.iter().rev().skip(1).all(Result::is_ok));
            // The MSS read fails exactly when an error comes before any MSS option.
            let has_mss = opts
                .iter()
                .any(|o| matches!(o, Ok(crate::tcp::TcpOption::Mss(_))));
            let has_err = opts.iter().any(Result::is_err);
            assert_eq!(t.mss().is_err(), has_err && !has_mss);
            // Re-emitting header and payload with a fresh checksum verifies.
            let mut out = std::vec![0u8; l4.len()];
            r.emit(&mut out, m.flow.src, m.flow.dst, t.payload())
                .unwrap();
            assert!(
                TcpSegment::new_checked(&out[..])
                    .unwrap()
                    .verify_checksum(m.flow.src, m.flow.dst)
            );
            assert_eq!(&out[..12], &l4[..12]);
        }
        IpProtocol::Udp if m.fragment == Fragment::Whole => {
            let u = crate::udp::UdpDatagram::new_checked(l4).unwrap();
            assert_eq!(
                (u.src_port(), u.dst_port()),
                (m.flow.src_port, m.flow.dst_port)
            );
            let _ = (u.payload(), u.verify_checksum(m.flow.src, m.flow.dst));
        }
        IpProtocol::Icmp if m.fragment == Fragment::Whole => {
            let _ = icmp::parse_icmpv4_error(l4);
        }
        IpProtocol::Icmpv6 if m.fragment == Fragment::Whole => {
            let _ = icmp::parse_icmpv6_error(l4);
        }
        _ => {}
    }
}

/// Decapsulation: the inner packet lies inside the buffer and is a valid IP
/// packet of the announced version; the in-place variant agrees and follows
/// RFC 6040; re-encapsulating gives back the same inner packet.
pub fn decap(data: &[u8]) {
    let skip = ipip::decapsulate(data, ChecksumCheck::Skip);
    let Ok(d) = ipip::decapsulate(data, ChecksumCheck::Verify) else {
        if let Ok(d) = skip {
            assert!(d.inner.end <= data.len());
        }
        return;
    };
    assert_eq!(Ok(&d), skip.as_ref());
    assert!(d.inner.start <= d.inner.end && d.inner.end <= data.len());
    let inner = &data[d.inner.clone()];
    let (inner_ecn, v4_ok) = match d.inner_version {
        IpVersion::V4 => {
            let p = Ipv4Packet::new_checked(inner).unwrap();
            assert_eq!(usize::from(p.total_len()), inner.len());
            (p.ecn(), p.verify_checksum())
        }
        IpVersion::V6 => (Ipv6Packet::new_checked(inner).unwrap().ecn(), true),
    };
    let mut copy = data.to_vec();
    match ipip::decapsulate_in_place(&mut copy, ChecksumCheck::Verify) {
        Err(e) => {
            assert_eq!(
                e.kind,
                crate::ErrorKind::Malformed(crate::Malformed::CeOnNotEct)
            );
            assert_eq!((d.outer_ecn, inner_ecn), (Ecn::Ce, Ecn::NotEct));
        }
        Ok(d2) => {
            assert_eq!(d2, d);
            let new_inner = &copy[d.inner.clone()];
            let ecn = match d.inner_version {
                IpVersion::V4 => {
                    let p = Ipv4Packet::new_checked(new_inner).unwrap();
                    assert_eq!(p.verify_checksum(), v4_ok);
                    p.ecn()
                }
                IpVersion::V6 => Ipv6Packet::new_checked(new_inner).unwrap().ecn(),
            };
            if d.outer_ecn == Ecn::Ce {
                assert_eq!(ecn, Ecn::Ce);
            } else if d.outer_ecn != Ecn::Ect1 {
                assert_eq!(ecn, inner_ecn);
            }
        }
    }
    // Re-encapsulate the inner packet between the same endpoints, the same
    // way (plain, or GRE with the same fields).
    let p = EncapParams::new(d.outer_src, d.outer_dst);
    let mut buf = std::vec![0u8; ipip::MAX_OVERHEAD];
    buf.extend_from_slice(inner);
    let start = match d.gre {
        Some(g) => ipip::encapsulate_gre(&mut buf, ipip::MAX_OVERHEAD, &p, g),
        None => ipip::encapsulate(&mut buf, ipip::MAX_OVERHEAD, &p),
    }
    .unwrap();
    let back = ipip::decapsulate(&buf[start..], ChecksumCheck::Verify).unwrap();
    assert_eq!(back.gre, d.gre);
    assert_eq!(&buf[start..][back.inner], inner);
}

/// The keyed tunnel's GRE header: any bytes parse or fail cleanly; what
/// parses is emitted back byte for byte; decapsulation of the same bytes
/// behind an outer header agrees with the header parse.
pub fn gre(data: &[u8]) {
    let parsed = crate::gre::parse(data);
    if let Ok((version, fields)) = parsed {
        let mut h = [0u8; crate::gre::HEADER_LEN];
        crate::gre::emit(&mut h, version, fields);
        assert_eq!(&h[..], &data[..crate::gre::HEADER_LEN]);
    }
    // Behind an IPv4 header of protocol 47 whose length covers `data`.
    let Ok(total) = u16::try_from(20 + data.len()) else {
        return;
    };
    let mut pkt = std::vec![0u8; 20];
    pkt[0] = 0x45;
    pkt[2..4].copy_from_slice(&total.to_be_bytes());
    pkt[8] = 64;
    pkt[9] = 47;
    pkt[12..16].copy_from_slice(&[198, 19, 0, 1]);
    pkt[16..20].copy_from_slice(&[198, 19, 0, 2]);
    pkt.extend_from_slice(data);
    match ipip::decapsulate(&pkt, ChecksumCheck::Skip) {
        Ok(d) => {
            assert_eq!(d.gre, parsed.ok().map(|(_, f)| f));
            assert_eq!(d.inner.start, 20 + crate::gre::HEADER_LEN);
            decap(&pkt);
        }
        Err(e) => {
            if parsed.is_err() {
                assert_eq!(e.layer, crate::Layer::Gre);
            }
        }
    }
}

/// ICMP errors: any bytes parse or fail cleanly; a parsed error's quote is
/// recovered again after re-emitting the message.
pub fn icmp_quote(data: &[u8]) {
    let _ = icmp::parse_quote(data);
    let _ = icmp::parse_icmpv4_error(data);
    let _ = icmp::parse_icmpv6_error(data);
    let Ok(m) = parse_ip(data) else { return };
    let l4 = &data[usize::from(m.l4_offset)..m.l3_range().end];
    let parsed = match m.flow.protocol {
        IpProtocol::Icmp => icmp::parse_icmpv4_error(l4).map(|e| (e, false)),
        IpProtocol::Icmpv6 => icmp::parse_icmpv6_error(l4).map(|e| (e, true)),
        _ => return,
    };
    let Ok((err, v6)) = parsed else { return };
    if let Some(inner) = err.quote.inner {
        assert!(matches!(inner.protocol, IpProtocol::Tcp | IpProtocol::Udp));
    }
    let quote = &l4[icmp::HEADER_LEN..];
    let mut buf = std::vec![0u8; icmp::HEADER_LEN + quote.len()];
    icmp::emit_error(&mut buf, err.kind, v6, m.flow.dst, m.flow.src, quote).unwrap();
    let again = if v6 {
        icmp::parse_icmpv6_error(&buf)
    } else {
        icmp::parse_icmpv4_error(&buf)
    };
    let again = again.unwrap();
    // Type 3 code 4 with MTU above 65535 narrows; everything else is exact.
    if !matches!(err.kind, IcmpErrorKind::FragmentationNeeded { .. }) {
        assert_eq!(again, err);
    }
    assert_eq!(again.quote, err.quote);
    if v6 {
        assert!(
            icmp::Icmpv6Packet::new_checked(&buf[..])
                .unwrap()
                .verify_checksum(m.flow.dst, m.flow.src)
        );
    } else {
        assert!(
            icmp::Icmpv4Packet::new_checked(&buf[..])
                .unwrap()
                .verify_checksum()
        );
    }
}

/// Encapsulate then decapsulate: byte 0 = flags (bit 0 outer IPv6, bit 1 ECN
/// compatibility mode, bits 2-3 DF policy, bit 4 GRE), byte 1 = TTL, the
/// rest = inner.
pub fn encap_roundtrip(data: &[u8]) {
    let (Some(&flags), Some(&ttl)) = (data.first(), data.get(1)) else {
        return;
    };
    let inner = &data[2..];
    let (src, dst): (IpAddr, IpAddr) = if flags & 1 == 0 {
        (
            Ipv4Addr::new(198, 19, 0, 1).into(),
            Ipv4Addr::new(198, 19, 0, 2).into(),
        )
    } else {
        (
            Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1).into(),
            Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 2).into(),
        )
    };
    let p = EncapParams {
        ttl,
        ecn: if flags & 2 == 0 {
            EcnMode::Normal
        } else {
            EcnMode::Compatibility
        },
        df: match (flags >> 2) & 3 {
            0 => DfPolicy::Copy,
            1 => DfPolicy::Set,
            _ => DfPolicy::Clear,
        },
        ident: u16::from(flags) << 8 | u16::from(ttl),
        flow_label: ipip::flow_label_from_hash(u64::from(ttl)),
        ..EncapParams::new(src, dst)
    };
    let mut buf: Vec<u8> = std::vec![0u8; ipip::MAX_OVERHEAD];
    buf.extend_from_slice(inner);
    let gre = (flags & 0x10 != 0).then_some(crate::gre::GreFields {
        tag: u32::from(flags) << 24 | u32::from(ttl),
        key_id: u16::from(ttl),
    });
    let encapsulated = match gre {
        Some(g) => ipip::encapsulate_gre(&mut buf, ipip::MAX_OVERHEAD, &p, g),
        None => ipip::encapsulate(&mut buf, ipip::MAX_OVERHEAD, &p),
    };
    let Ok(start) = encapsulated else {
        return;
    };
    let shim = if gre.is_some() {
        crate::gre::HEADER_LEN
    } else {
        0
    };
    assert_eq!(start, ipip::MAX_OVERHEAD - p.outer_len() - shim);
    assert_eq!(&buf[ipip::MAX_OVERHEAD..], inner, "inner bytes untouched");
    let outer = &buf[start..];
    // The inner packet comes back exactly when it is a whole, valid packet.
    let valid = match crate::ip::version_of(inner) {
        Some(IpVersion::V4) => {
            Ipv4Packet::new_checked(inner).is_ok_and(|p| usize::from(p.total_len()) == inner.len())
        }
        Some(IpVersion::V6) => Ipv6Packet::new_checked(inner)
            .is_ok_and(|p| 40 + usize::from(p.payload_len()) == inner.len()),
        None => false,
    };
    let d = ipip::decapsulate(outer, ChecksumCheck::Verify);
    if !valid {
        return;
    }
    let d = d.unwrap();
    assert_eq!((d.outer_src, d.outer_dst), (src, dst));
    assert_eq!(d.gre, gre);
    assert_eq!(&outer[d.inner.clone()], inner);
    let inner_ecn = Ecn::from_bits(match d.inner_version {
        IpVersion::V4 => inner[1],
        IpVersion::V6 => (inner[0] << 4) | (inner[1] >> 4),
    });
    match p.ecn {
        EcnMode::Normal => assert_eq!(d.outer_ecn, inner_ecn),
        EcnMode::Compatibility => assert_eq!(d.outer_ecn, Ecn::NotEct),
    }
    if flags & 1 == 0 {
        let o = Ipv4Packet::new_checked(outer).unwrap();
        assert!(o.verify_checksum());
        assert_eq!(o.ttl(), ttl);
        let df = match p.df {
            DfPolicy::Set => true,
            DfPolicy::Clear => false,
            DfPolicy::Copy => d.inner_version == IpVersion::V6 || inner[6] & 0x40 != 0,
        };
        assert_eq!(o.dont_frag(), df);
    }
    let mut copy = outer.to_vec();
    let d2 = ipip::decapsulate_in_place(&mut copy, ChecksumCheck::Verify).unwrap();
    assert_eq!(
        &copy[d2.inner], inner,
        "ECN egress must not change a self-encapsulated packet"
    );
}

/// MSS rewrite: bytes 0-1 = the maximum MSS, the rest = an IP packet. A
/// checksum that verified before verifies after; only the MSS value and the
/// checksum change; an error leaves the packet untouched.
pub fn mss_rewrite(data: &[u8]) {
    let (Some(&hi), Some(&lo)) = (data.first(), data.get(1)) else {
        return;
    };
    let max = u16::from_be_bytes([hi, lo]);
    let before = data[2..].to_vec();
    let mut pkt = before.clone();
    let verified = |pkt: &[u8]| -> Option<bool> {
        let m = parse_ip(pkt).ok()?;
        if m.flow.protocol != IpProtocol::Tcp || m.fragment == Fragment::Later {
            return None;
        }
        let seg = TcpSegment::new_checked(&pkt[usize::from(m.l4_offset)..m.l3_range().end]).ok()?;
        Some(seg.verify_checksum(m.flow.src, m.flow.dst))
    };
    let ok_before = verified(&pkt);
    match rewrite::clamp_mss(&mut pkt, max) {
        Err(_) | Ok(MssClamp::NotSyn | MssClamp::NoOption | MssClamp::Unchanged(_)) => {
            assert_eq!(pkt, before);
        }
        Ok(MssClamp::Clamped { from, to }) => {
            assert!(from > max && to == max);
            assert_eq!(verified(&pkt), ok_before);
            let m = parse_ip(&pkt).unwrap();
            let seg =
                TcpSegment::new_checked(&pkt[usize::from(m.l4_offset)..m.l3_range().end]).unwrap();
            assert_eq!(seg.mss().unwrap(), Some(max));
            let changed = before.iter().zip(&pkt).filter(|(a, b)| a != b).count();
            assert!(changed <= 4, "{changed} bytes changed");
        }
    }
}

/// Control messages: a message that parses re-emits to the same bytes
/// (one encoding per message), and nothing panics.
pub fn control(data: &[u8]) {
    use crate::control::{self, Body, TAG_LEN};
    let Ok(m) = control::parse(data) else { return };
    assert_eq!(m.signed.len() + TAG_LEN, data.len());
    let mut out = std::vec![0u8; data.len().max(control::MAX_MESSAGE_LEN)];
    let n = match m.body {
        Body::Report(r) => {
            let entries: Vec<_> = r.entries().collect();
            let addrs: Vec<_> = r.service_addrs().collect();
            assert_eq!(addrs.len(), r.service_addr_count());
            control::emit_report(&mut out, &m.header, &entries, &addrs)
        }
        Body::RecoveryRequest {
            request_id,
            known_chunks,
            missing,
        } => {
            let ranges: Vec<_> = missing.iter().collect();
            assert_eq!(ranges.len(), missing.len());
            control::emit_recovery_request_missing(
                &mut out,
                &m.header,
                request_id,
                known_chunks,
                &ranges,
            )
        }
        Body::RecoveryReply(r) => {
            let flows: Vec<_> = r.flows().collect();
            assert_eq!(flows.len(), r.flow_count());
            control::emit_recovery_reply(
                &mut out,
                &m.header,
                r.request_id,
                r.chunk,
                r.chunks,
                &flows,
            )
        }
        Body::IdleAdvert => control::emit_idle_advert(&mut out, &m.header),
        Body::Probe => control::emit_probe(&mut out, &m.header),
        Body::CutNotice(r) => {
            let flows: Vec<_> = r.flows().collect();
            assert_eq!(flows.len(), r.flow_count());
            control::emit_cut_notice(&mut out, &m.header, r.chunk, r.chunks, &flows)
        }
        Body::FlowQuery(r) | Body::FlowClaim(r) => {
            let flows: Vec<_> = r.flows().collect();
            assert_eq!(flows.len(), r.flow_count());
            if matches!(m.body, Body::FlowQuery(_)) {
                control::emit_flow_query(&mut out, &m.header, r.request_id, &flows)
            } else {
                control::emit_flow_claim(&mut out, &m.header, r.request_id, &flows)
            }
        }
        Body::Unknown(_) => return,
    };
    // Anything that parses fits a message this version would send, except
    // longer than it sends: then emit refuses, it never truncates.
    match n {
        Ok(n) => assert_eq!(&out[..n], m.signed),
        Err(_) => assert!(data.len() > control::MAX_MESSAGE_LEN),
    }
}

/// A TUN frame with offloads: the virtio-net header re-emits to the same
/// bytes; completing a partial checksum stays in bounds; a super-packet
/// the segmenter accepts is cut into `count()` segments, each a valid
/// IPv4 or IPv6 TCP packet with correct checksums, no longer than
/// `max_segment_len()`, whose payloads in order are the super-packet's.
pub fn virtio(data: &[u8]) {
    use crate::virtio::{self, TcpCoalescer, TcpSegmenter, VirtioNetHdr};
    let Ok(h) = VirtioNetHdr::parse(data) else {
        assert!(data.len() < virtio::HDR_LEN);
        return;
    };
    let mut out = [0u8; virtio::HDR_LEN];
    h.emit(&mut out).unwrap();
    assert_eq!(&out[..], &data[..virtio::HDR_LEN]);
    let pkt = &data[virtio::HDR_LEN..];
    if h.needs_csum() {
        let mut copy = pkt.to_vec();
        if virtio::complete_checksum(&mut copy, h.csum_start, h.csum_offset).is_ok() {
            let field = usize::from(h.csum_start) + usize::from(h.csum_offset);
            assert_eq!(&copy[..field], &pkt[..field], "only the field changes");
            assert_eq!(&copy[field + 2..], &pkt[field + 2..]);
        }
    }
    let Ok(mut seg) = TcpSegmenter::new(pkt, &h) else {
        return;
    };
    let expect = seg.count();
    let max = seg.max_segment_len();
    let mut buf = std::vec![0u8; max];
    let mut n_segs = 0;
    let mut payload = Vec::new();
    let mut hdr_len = None;
    // The segments merged back, as far as the coalescer takes them.
    let mut merged = std::vec![0u8; virtio::MAX_COALESCED];
    let mut merge: Option<TcpCoalescer> = None;
    let mut merged_payload = Vec::new();
    let mut merging = true;
    while let Some(r) = seg.next_into(pkt, &mut buf) {
        let n = r.unwrap();
        if merging {
            let ok = match &mut merge {
                None => {
                    merge = TcpCoalescer::start(&buf[..n], &mut merged);
                    merge.is_some()
                }
                Some(c) => c.push(&buf[..n], &mut merged),
            };
            merging = ok;
        }
        assert!(n <= max);
        let s = &buf[..n];
        let m = parse_ip(s).unwrap();
        let l4 = usize::from(m.l4_offset);
        let t = TcpSegment::new_checked(&s[l4..]).unwrap();
        match m.version {
            IpVersion::V4 => {
                let ip = Ipv4Packet::new_checked(s).unwrap();
                assert!(ip.verify_checksum());
                assert!(t.verify_checksum(ip.src().into(), ip.dst().into()));
            }
            IpVersion::V6 => {
                let ip = Ipv6Packet::new_checked(s).unwrap();
                assert!(t.verify_checksum(ip.src().into(), ip.dst().into()));
            }
        }
        let hl = l4 + t.header_len();
        assert_eq!(*hdr_len.get_or_insert(hl), hl);
        payload.extend_from_slice(&s[hl..]);
        if merging {
            merged_payload.extend_from_slice(&s[hl..]);
        }
        n_segs += 1;
    }
    if let Some(c) = merge {
        let count = c.count();
        let (h, len) = c.finish(&mut merged);
        let hl = hdr_len.unwrap();
        assert_eq!(&merged[hl..len], &merged_payload[..]);
        if count > 1 {
            assert!(h.needs_csum());
            let mut done = merged[..len].to_vec();
            virtio::complete_checksum(&mut done, h.csum_start, h.csum_offset).unwrap();
            let m = parse_ip(&done).unwrap();
            let t = TcpSegment::new_checked(&done[usize::from(m.l4_offset)..]).unwrap();
            assert!(t.verify_checksum(m.flow.src, m.flow.dst));
        }
    }
    assert_eq!(n_segs, expect);
    let hl = hdr_len.unwrap();
    let end = match pkt[0] >> 4 {
        4 => usize::from(u16::from_be_bytes([pkt[2], pkt[3]])),
        _ => 40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]])),
    };
    assert_eq!(&payload[..], &pkt[hl..end]);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Replays every committed seed through its target's checks, so the
    /// corpus is a regression suite for `cargo test` too.
    #[test]
    fn corpus_replays_cleanly() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        type Check = fn(&[u8]);
        let targets: [(&str, Check); 8] = [
            // The control target's seeds start with its flag byte.
            ("control", |d| super::control(d.get(1..).unwrap_or(&[]))),
            ("frame", super::frame),
            ("decap", super::decap),
            ("icmp_quote", super::icmp_quote),
            ("encap_roundtrip", super::encap_roundtrip),
            ("mss_rewrite", super::mss_rewrite),
            ("gre", super::gre),
            ("virtio", super::virtio),
        ];
        let mut total = 0;
        for (dir, check) in targets {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let data = std::fs::read(e.path()).unwrap();
                check(&data);
                total += 1;
            }
        }
        std::println!("replayed {total} corpus files");
    }
}
