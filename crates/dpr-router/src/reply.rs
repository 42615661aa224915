//! Packets the engine generates: the TCP RST that makes a client of a dead
//! peer's connection fail fast, and the ICMP "too big" error that makes a
//! client lower its segment size to fit the tunnel.

use dpr_packet::icmp::{self, IcmpErrorKind};
use dpr_packet::tcp::{TcpFlags, TcpOptionsBuf, TcpRepr, TcpSegment};
use dpr_packet::{IpProtocol, PacketMeta, ip};
use std::ops::Range;

/// Length of the RST for a packet of this IP version.
pub(crate) fn rst_len(v6: bool) -> usize {
    if v6 { 60 } else { 40 }
}

/// Writes, over `buf` (which holds the offending IP packet described by
/// `meta`), the RST that answers it (RFC 9293 section 3.10.7.1): from the
/// service address to the client. Returns the RST's length, or `None` when
/// the packet is not TCP with a whole header or `buf` is too small.
pub(crate) fn write_rst(buf: &mut [u8], meta: &PacketMeta) -> Option<usize> {
    let l4 = usize::from(meta.l4_offset)..meta.l3_range().end;
    let seg = TcpSegment::new_checked(buf.get(l4)?).ok()?;
    if seg.flags().contains(TcpFlags::RST) {
        return None; // never answer a reset with a reset
    }
    let seg_len = seg.payload().len() as u32
        + u32::from(seg.flags().contains(TcpFlags::SYN))
        + u32::from(seg.flags().contains(TcpFlags::FIN));
    let (seq, ack, flags) = if seg.flags().contains(TcpFlags::ACK) {
        (seg.ack(), 0, TcpFlags::RST)
    } else {
        (
            0,
            seg.seq().wrapping_add(seg_len),
            TcpFlags::RST | TcpFlags::ACK,
        )
    };
    let tcp = TcpRepr {
        src_port: meta.flow.dst_port,
        dst_port: meta.flow.src_port,
        seq,
        ack,
        flags,
        window: 0,
        urgent: 0,
        options: TcpOptionsBuf::default(),
    };
    let (src, dst) = (meta.flow.dst, meta.flow.src);
    let v6 = src.is_ipv6();
    let len = rst_len(v6);
    let out = buf.get_mut(..len)?;
    let ip_len = ip::emit_header(out, src, dst, IpProtocol::Tcp, 20, 64, true).ok()?;
    tcp.emit(&mut out[ip_len..], src, dst, &[]).ok()?;
    Some(len)
}

/// Builds, in `buf`, the ICMP error that tells the sender of the IP packet
/// at `pkt` (described by `meta`) that the path MTU is `mtu`: ICMPv4
/// "fragmentation needed" or ICMPv6 "packet too big", from the address the
/// sender used to the sender, quoting as much of the packet as RFC 1812 /
/// RFC 4443 allow. The quote stays where it is; the IP and ICMP headers go
/// in the headroom before it. Returns the reply's range, or `None` without
/// enough headroom.
pub(crate) fn write_too_big(
    buf: &mut [u8],
    pkt: Range<usize>,
    meta: &PacketMeta,
    mtu: u16,
) -> Option<Range<usize>> {
    let v6 = meta.flow.dst.is_ipv6();
    let (ip_len, max_quote) = if v6 { (40, 1280 - 48) } else { (20, 576 - 28) };
    let hdrs = ip_len + icmp::HEADER_LEN;
    let start = pkt.start.checked_sub(hdrs)?;
    let quote_len = pkt.len().min(max_quote);
    let end = pkt.start + quote_len;
    let (src, dst) = (meta.flow.dst, meta.flow.src);
    let kind = if v6 {
        IcmpErrorKind::PacketTooBig {
            mtu: u32::from(mtu.max(1280)),
        }
    } else {
        IcmpErrorKind::FragmentationNeeded { mtu }
    };
    let (t, c, rest) = if v6 {
        kind.v6_header()?
    } else {
        kind.v4_header()?
    };
    let msg_len = icmp::HEADER_LEN + quote_len;
    let out = buf.get_mut(start..end)?;
    let proto = if v6 {
        IpProtocol::Icmpv6
    } else {
        IpProtocol::Icmp
    };
    ip::emit_header(out, src, dst, proto, msg_len, 64, false).ok()?;
    let m = &mut out[ip_len..];
    m[0] = t;
    m[1] = c;
    m[2..4].copy_from_slice(&[0, 0]);
    m[4..8].copy_from_slice(&rest.to_be_bytes());
    if v6 {
        icmp::Icmpv6Packet::new_checked(&mut *m)
            .ok()?
            .fill_checksum(src, dst);
    } else {
        icmp::Icmpv4Packet::new_checked(&mut *m)
            .ok()?
            .fill_checksum();
    }
    Some(start..end)
}
