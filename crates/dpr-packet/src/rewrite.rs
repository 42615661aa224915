//! In-place rewrites of whole IP packets, with checksums fixed incrementally
//! (RFC 1624): MSS clamping, TTL / hop-limit decrement, address rewrite.
//! Each function parses what it needs and leaves the packet untouched when
//! it returns an error.

use crate::checksum;
use crate::error::{Error, Layer, Malformed, Result};
use crate::ip::IpProtocol;
use crate::ipv4::Ipv4Packet;
use crate::ipv6::Ipv6Packet;
use crate::parse::{Fragment, parse_ip};
use crate::tcp::{MssClamp, TcpSegment};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Clamps the MSS option of a TCP SYN or SYN-ACK in the IP packet `packet`
/// (starting at the IP header) to `max`. Other packets come back as
/// [`MssClamp::NotSyn`].
pub fn clamp_mss(packet: &mut [u8], max: u16) -> Result<MssClamp> {
    let m = parse_ip(packet)?;
    if m.flow.protocol != IpProtocol::Tcp || m.fragment == Fragment::Later {
        return Ok(MssClamp::NotSyn);
    }
    let l4 = usize::from(m.l4_offset)..m.l3_range().end;
    let mut seg = TcpSegment::new_checked(&mut packet[l4])?;
    seg.clamp_mss(max)
        .map_err(|e| e.shifted(usize::from(m.l4_offset)))
}

/// The MSS that makes a segment fit `path_mtu` after encapsulation with
/// `overhead` bytes of outer header, for an inner packet of `version`
/// (IPv4: 40 bytes of IP and TCP headers; IPv6: 60). Saturates at 0.
pub fn mss_for_mtu(path_mtu: u16, overhead: u16, inner_v6: bool) -> u16 {
    let headers = if inner_v6 { 60 } else { 40 };
    path_mtu.saturating_sub(overhead).saturating_sub(headers)
}

/// Decrements the TTL (IPv4, checksum updated) or hop limit (IPv6). Returns
/// the new value, or `None` with the packet unchanged when it would reach 0:
/// the packet must not be forwarded (answer ICMP time exceeded).
pub fn decrement_ttl(packet: &mut [u8]) -> Result<Option<u8>> {
    match crate::ip::version_of(packet) {
        Some(crate::ip::IpVersion::V4) => Ok(Ipv4Packet::new_checked(packet)?.decrement_ttl()),
        Some(crate::ip::IpVersion::V6) => {
            Ok(Ipv6Packet::new_checked(packet)?.decrement_hop_limit())
        }
        None => Err(Error::malformed(Layer::Ipv4, 0, Malformed::Version)),
    }
}

/// Which address to rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The source address.
    Source,
    /// The destination address.
    Destination,
}

/// Rewrites an address of an IP packet and fixes the IPv4 header checksum
/// and the TCP or UDP checksum (whose pseudo-header covers the address).
/// A zero UDP-over-IPv4 checksum ("none") stays zero; a later fragment has no
/// transport header to fix. The new address must be of the packet's family.
pub fn set_address(packet: &mut [u8], which: Direction, new: IpAddr) -> Result<()> {
    let m = parse_ip(packet)?;
    let old = match which {
        Direction::Source => m.flow.src,
        Direction::Destination => m.flow.dst,
    };
    let (old_b, new_b): (&[u8], &[u8]) = match (old, new) {
        (IpAddr::V4(o), IpAddr::V4(n)) => (&o.octets()[..], &n.octets()[..]),
        (IpAddr::V6(o), IpAddr::V6(n)) => (&o.octets()[..], &n.octets()[..]),
        _ => return Err(Error::malformed(Layer::Ipv4, 0, Malformed::AddressFamily)),
    };
    let mut old_copy = [0u8; 16];
    old_copy[..old_b.len()].copy_from_slice(old_b);
    let old_b = &old_copy[..old_b.len()];
    // Transport checksum offset within the packet, when there is one to fix.
    let l4 = usize::from(m.l4_offset);
    let csum_at = match (m.flow.protocol, m.fragment) {
        (_, Fragment::Later) => None,
        (IpProtocol::Tcp, _) => Some(l4 + 16),
        (IpProtocol::Udp, _) => {
            let c = crate::ethernet::be16(packet, l4 + 6);
            (c != 0 || m.version == crate::ip::IpVersion::V6).then_some(l4 + 6)
        }
        _ => None,
    };
    if let Some(at) = csum_at {
        let c = crate::ethernet::be16(packet, at);
        let mut n = checksum::update_bytes(c, old_b, new_b);
        if n == 0 && m.flow.protocol == IpProtocol::Udp {
            n = 0xffff;
        }
        packet[at..at + 2].copy_from_slice(&n.to_be_bytes());
    }
    match (new, which) {
        (IpAddr::V4(a), Direction::Source) => Ipv4Packet::new_checked(packet)?.set_src(a),
        (IpAddr::V4(a), Direction::Destination) => Ipv4Packet::new_checked(packet)?.set_dst(a),
        (IpAddr::V6(a), Direction::Source) => Ipv6Packet::new_checked(packet)?.set_src(a),
        (IpAddr::V6(a), Direction::Destination) => Ipv6Packet::new_checked(packet)?.set_dst(a),
    }
    Ok(())
}

/// Convenience: [`set_address`] for IPv4.
pub fn set_ipv4_address(packet: &mut [u8], which: Direction, new: Ipv4Addr) -> Result<()> {
    set_address(packet, which, IpAddr::V4(new))
}

/// Convenience: [`set_address`] for IPv6.
pub fn set_ipv6_address(packet: &mut [u8], which: Direction, new: Ipv6Addr) -> Result<()> {
    set_address(packet, which, IpAddr::V6(new))
}
