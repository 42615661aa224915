//! One pass from a frame (or an IP packet) to everything a router decides on.
//!
//! [`parse_frame`] and [`parse_ip`] validate each header once, on the way to
//! the transport header, and return a [`PacketMeta`]: the [`FlowKey`], the
//! offsets of the IP and transport headers, the fragment status and the TCP
//! flags. Nothing is copied and nothing is allocated.

use crate::error::{Error, Layer, Malformed, Result};
use crate::ethernet::{self, EtherType, EthernetFrame};
use crate::flow::FlowKey;
use crate::ip::{IpProtocol, IpVersion};
use crate::ipv4::Ipv4Packet;
use crate::ipv6::{self, Ipv6Packet};
use crate::tcp::{TcpFlags, TcpSegment};
use crate::udp::UdpDatagram;
use core::net::{IpAddr, Ipv4Addr};

/// Where a packet stands with respect to IP fragmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// Not a fragment.
    Whole,
    /// The first fragment (offset 0, more fragments): it carries the ports.
    First,
    /// A later fragment: no transport header, so the key's ports are 0.
    Later,
}

/// What one parse of a packet tells the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// Offset of the IP header in the buffer parsed.
    pub l3_offset: u16,
    /// Offset of the transport header (for a later fragment: of its data).
    pub l4_offset: u16,
    /// Length of the IP packet (header and payload), without link padding.
    /// Up to 65 575 bytes: an IPv6 payload of 65 535 plus its 40-byte header.
    pub l3_len: u32,
    /// IP version.
    pub version: IpVersion,
    /// The flow key; ports are 0 where the protocol has none or for a later fragment.
    pub flow: FlowKey,
    /// Fragment status.
    pub fragment: Fragment,
    /// TCP flags (empty for other protocols and later fragments).
    pub tcp_flags: TcpFlags,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Routers on the path may not fragment it: IPv4 with DF set, or any
    /// IPv6 packet (only its source fragments).
    pub dont_frag: bool,
}

impl PacketMeta {
    /// The IP packet's bytes within the buffer that was parsed.
    pub fn l3_range(&self) -> core::ops::Range<usize> {
        usize::from(self.l3_offset)..usize::from(self.l3_offset) + self.l3_len as usize
    }
}

/// Parses an Ethernet frame through to the transport header. A frame that
/// is not IPv4 or IPv6 is `Malformed::EtherType` at the Ethernet layer.
#[inline]
pub fn parse_frame(frame: &[u8]) -> Result<PacketMeta> {
    // Fast path: untagged IPv4 or IPv6, the common case on a service port.
    let l3 = match frame.get(12..14) {
        Some([0x08, 0x00] | [0x86, 0xdd]) => ethernet::HEADER_LEN,
        _ => {
            let eth = EthernetFrame::new_checked(frame)?;
            match eth.ethertype() {
                EtherType::Ipv4 | EtherType::Ipv6 => eth.header_len(),
                _ => {
                    let at = eth.header_len() - 2;
                    return Err(Error::malformed(Layer::Ethernet, at, Malformed::EtherType));
                }
            }
        }
    };
    let expect_v4 = frame[l3 - 2] == 0x08;
    let ip = &frame[l3..];
    let mut m = match ip.first().map(|b| b >> 4) {
        Some(4) if expect_v4 => parse_v4(ip),
        Some(6) if !expect_v4 => parse_v6(ip),
        None => Err(Error::too_short(Layer::Ipv4, 0)),
        Some(_) => {
            return Err(Error::malformed(
                Layer::Ethernet,
                l3 - 2,
                Malformed::EtherType,
            ));
        }
    }
    .map_err(|e| e.shifted(l3))?;
    m.l3_offset += l3 as u16;
    m.l4_offset += l3 as u16;
    Ok(m)
}

/// Parses an IP packet (the buffer starts at the IP header; it may be longer
/// than the packet) through to the transport header.
#[inline]
pub fn parse_ip(packet: &[u8]) -> Result<PacketMeta> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => parse_v4(packet),
        Some(6) => parse_v6(packet),
        Some(_) => Err(Error::malformed(Layer::Ipv4, 0, Malformed::Version)),
        None => Err(Error::too_short(Layer::Ipv4, 0)),
    }
}

#[inline]
fn parse_v4(packet: &[u8]) -> Result<PacketMeta> {
    // Validate once with the checked view, then read from a fixed-size
    // array so the field reads need no bounds checks.
    let hl = Ipv4Packet::new_checked(packet)?.header_len();
    let Some(h) = packet.first_chunk::<20>() else {
        return Err(Error::too_short(Layer::Ipv4, packet.len()));
    };
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let fragment = match (frag & 0x1fff, frag & 0x2000 != 0) {
        (0, false) => Fragment::Whole,
        (0, true) => Fragment::First,
        _ => Fragment::Later,
    };
    let total = u16::from_be_bytes([h[2], h[3]]);
    let protocol = IpProtocol::from(h[9]);
    let l4 = &packet[hl..usize::from(total)];
    let (src_port, dst_port, tcp_flags) =
        transport(protocol, l4, fragment).map_err(|e| e.shifted(hl))?;
    Ok(PacketMeta {
        l3_offset: 0,
        l4_offset: hl as u16,
        l3_len: u32::from(total),
        version: IpVersion::V4,
        flow: FlowKey {
            src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
            dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
            src_port,
            dst_port,
            protocol,
        },
        fragment,
        tcp_flags,
        ttl: h[8],
        dont_frag: frag & 0x4000 != 0,
    })
}

fn parse_v6(packet: &[u8]) -> Result<PacketMeta> {
    let ip = Ipv6Packet::new_checked(packet)?;
    let chain = ip.ext_chain()?;
    let fragment = match chain.fragment {
        None => Fragment::Whole,
        Some(f) if f.offset != 0 => Fragment::Later,
        Some(f) if f.more_frags => Fragment::First,
        // An atomic fragment (offset 0, no more): the whole packet (RFC 6946).
        Some(_) => Fragment::Whole,
    };
    let l4_off = ipv6::HEADER_LEN + chain.offset;
    let l3_len = ipv6::HEADER_LEN + usize::from(ip.payload_len());
    let l4 = &packet[l4_off..l3_len];
    let (src_port, dst_port, tcp_flags) =
        transport(chain.protocol, l4, fragment).map_err(|e| e.shifted(l4_off))?;
    Ok(PacketMeta {
        l3_offset: 0,
        l4_offset: l4_off as u16,
        l3_len: l3_len as u32,
        version: IpVersion::V6,
        flow: FlowKey {
            src: IpAddr::V6(ip.src()),
            dst: IpAddr::V6(ip.dst()),
            src_port,
            dst_port,
            protocol: chain.protocol,
        },
        fragment,
        tcp_flags,
        ttl: ip.hop_limit(),
        dont_frag: true,
    })
}

/// Ports and TCP flags. A first fragment must carry the whole TCP header (or
/// the UDP header): one that does not is the RFC 1858 tiny-fragment attack.
#[inline]
fn transport(p: IpProtocol, l4: &[u8], frag: Fragment) -> Result<(u16, u16, TcpFlags)> {
    if frag == Fragment::Later {
        return Ok((0, 0, TcpFlags::default()));
    }
    let tiny = |e: Error| {
        if frag == Fragment::First && e.is_too_short() {
            Error::malformed(e.layer, e.offset.into(), Malformed::Fragment)
        } else {
            e
        }
    };
    match p {
        IpProtocol::Tcp => {
            let hl = TcpSegment::new_checked(l4).map_err(tiny)?.header_len();
            debug_assert!(hl >= 20);
            let Some(t) = l4.first_chunk::<20>() else {
                return Err(Error::too_short(Layer::Tcp, l4.len()));
            };
            let flags = TcpFlags(u16::from_be_bytes([t[12], t[13]]) & 0x01ff);
            Ok((
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
                flags,
            ))
        }
        IpProtocol::Udp if frag == Fragment::First => {
            if l4.len() < crate::udp::HEADER_LEN {
                return Err(tiny(Error::too_short(Layer::Udp, l4.len())));
            }
            Ok((
                crate::ethernet::be16(l4, 0),
                crate::ethernet::be16(l4, 2),
                TcpFlags::default(),
            ))
        }
        IpProtocol::Udp => {
            let u = UdpDatagram::new_checked(l4)?;
            Ok((u.src_port(), u.dst_port(), TcpFlags::default()))
        }
        _ => Ok((0, 0, TcpFlags::default())),
    }
}
