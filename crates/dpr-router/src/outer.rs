//! Outer IPv4 headers precomputed per peer, for the forwarding hot path.
//!
//! Between two tunnel endpoints most of an outer IPv4 header never changes
//! (version, TTL, addresses, and the protocol for a given inner version):
//! [`OuterV4`] keeps them and the one's-complement sum of their words, so a
//! packet fills in only the type of service, the total length, the
//! identification and DF, and finishes the checksum with four additions
//! (RFC 1624's incremental form) instead of summing the whole header. The
//! bytes are those [`dpr_packet::ipip::encapsulate`] (or `encapsulate_gre`)
//! writes with the engine's parameters (ECN normal mode, DF copied): the
//! tests check it.

use dpr_packet::IpProtocol;
use std::net::Ipv4Addr;

/// The outer IPv4 header towards one peer, for an inner packet of either
/// version, with or without the keyed tunnel's GRE header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OuterV4 {
    /// The peer's tunnel address (the cache is checked against it).
    pub(crate) to: Ipv4Addr,
    /// Bytes 8..20 of the header: TTL, protocol, checksum (zero), source,
    /// destination; the protocol is that of an IPv4 inner packet.
    tail: [u8; 12],
    /// The sum of the constant words (version and header length, TTL and
    /// protocol, addresses), protocol of an IPv4 inner packet.
    sum: u32,
    /// The protocol byte for an IPv6 inner packet (the same with GRE).
    proto_v6: u8,
}

impl OuterV4 {
    /// The header from `from` to `to` with `ttl`; `gre` when the tunnel
    /// is keyed.
    pub(crate) fn new(from: Ipv4Addr, to: Ipv4Addr, ttl: u8, gre: bool) -> Self {
        let (p4, p6) = if gre {
            (IpProtocol::Gre, IpProtocol::Gre)
        } else {
            (IpProtocol::IpIp, IpProtocol::Ipv6)
        };
        let [s0, s1, s2, s3] = from.octets();
        let [d0, d1, d2, d3] = to.octets();
        let tail = [ttl, u8::from(p4), 0, 0, s0, s1, s2, s3, d0, d1, d2, d3];
        let mut sum = 0x4500u32;
        for w in tail.chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        Self {
            to,
            tail,
            sum,
            proto_v6: u8::from(p6),
        }
    }

    /// The header for an inner packet: `tos` is the inner type of service
    /// (IPv6: traffic class), copied whole (ECN normal mode); `total` the
    /// outer total length; `v6_inner` whether the inner packet is IPv6.
    #[inline]
    pub(crate) fn header(
        &self,
        tos: u8,
        total: u16,
        ident: u16,
        dont_frag: bool,
        v6_inner: bool,
    ) -> [u8; 20] {
        let mut sum = self.sum
            + u32::from(tos)
            + u32::from(total)
            + u32::from(ident)
            + if dont_frag { 0x4000 } else { 0 };
        let mut tail = self.tail;
        if v6_inner {
            sum = sum - u32::from(tail[1]) + u32::from(self.proto_v6);
            tail[1] = self.proto_v6;
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let [c0, c1] = (!(sum as u16)).to_be_bytes();
        let [t0, t1] = total.to_be_bytes();
        let [i0, i1] = ident.to_be_bytes();
        [
            0x45,
            tos,
            t0,
            t1,
            i0,
            i1,
            if dont_frag { 0x40 } else { 0 },
            0,
            tail[0],
            tail[1],
            c0,
            c1,
            tail[4],
            tail[5],
            tail[6],
            tail[7],
            tail[8],
            tail[9],
            tail[10],
            tail[11],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpr_packet::gre::GreFields;
    use dpr_packet::ipip::{self, EncapParams};
    use proptest::prelude::*;

    proptest! {
        /// The template writes what the general encapsulation writes.
        #[test]
        fn same_bytes_as_encapsulate(
            from: u32, to: u32, ttl: u8, tos: u8, ident: u16, df: bool, v6: bool, gre: bool,
            len in 40usize..1500,
        ) {
            let (from, to) = (Ipv4Addr::from(from), Ipv4Addr::from(to));
            let mut inner = vec![0u8; len];
            if v6 {
                inner[0] = 0x60 | tos >> 4;
                inner[1] = tos << 4;
            } else {
                inner[0] = 0x45;
                inner[1] = tos;
                inner[6] = if df { 0x40 } else { 0 };
            }
            let shim = if gre { 12 } else { 0 };
            let mut buf = vec![0u8; 32];
            buf.extend_from_slice(&inner);
            let mut p = EncapParams::new(from.into(), to.into());
            p.ttl = ttl;
            p.ident = ident;
            let start = if gre {
                ipip::encapsulate_gre(&mut buf, 32, &p, GreFields { tag: 1, key_id: 2 })
            } else {
                ipip::encapsulate(&mut buf, 32, &p)
            }
            .unwrap();
            let o = OuterV4::new(from, to, ttl, gre);
            let h = o.header(tos, (20 + shim + len) as u16, ident, df || v6, v6);
            prop_assert_eq!(&buf[start..start + 20], &h[..]);
        }
    }
}
