//! Small helpers of the engine's per-packet fast path, read straight from
//! the bytes.

use dpr_packet::tcp::TcpFlags;
use dpr_packet::{FlowKey, Fragment, IpProtocol, IpVersion, PacketMeta};
use std::net::{IpAddr, Ipv4Addr};

/// The parse of an IPv4 TCP packet without IP options and not a fragment,
/// read straight from its bytes: exactly what [`dpr_packet::parse_ip`] returns for
/// such a packet (the tests check it), or `None` for any other packet
/// (which then takes `parse_ip`). Inlined, so the metadata is built where
/// it is used instead of returned through memory and copied.
#[inline(always)]
pub(crate) fn v4_tcp_meta(b: &[u8]) -> Option<PacketMeta> {
    let h = b.first_chunk::<20>()?;
    let total = u16::from_be_bytes([h[2], h[3]]);
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if h[0] != 0x45 || h[9] != 6 || frag & 0x3fff != 0 || usize::from(total) > b.len() {
        return None;
    }
    let t = b.get(20..usize::from(total))?.first_chunk::<20>()?;
    let thl = usize::from(t[12] >> 4) * 4;
    if thl < 20 || thl > usize::from(total) - 20 {
        return None;
    }
    Some(PacketMeta {
        l3_offset: 0,
        l4_offset: 20,
        l3_len: u32::from(total),
        version: IpVersion::V4,
        flow: FlowKey {
            src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
            dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
            src_port: u16::from_be_bytes([t[0], t[1]]),
            dst_port: u16::from_be_bytes([t[2], t[3]]),
            protocol: IpProtocol::Tcp,
        },
        fragment: Fragment::Whole,
        tcp_flags: TcpFlags(u16::from_be_bytes([t[12], t[13]]) & 0x01ff),
        ttl: h[8],
        dont_frag: frag & 0x4000 != 0,
    })
}

/// Whether `packet` is IPv4 or IPv6 carrying a tunnel protocol (IP-in-IP,
/// IPv6-in-IP, GRE) right after its fixed header: its flow is in the
/// served table (a guess for warming only; any answer is correct).
#[inline]
pub(crate) fn is_tunnel_proto(packet: &[u8]) -> bool {
    let proto = match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(9),
        Some(6) => packet.get(6),
        _ => None,
    };
    matches!(proto, Some(4 | 41 | 47))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpr_packet::parse_ip;
    use proptest::prelude::*;

    /// IPv4 TCP 198.18.0.10:40000 -> 198.19.255.1:80, ACK, 4 bytes of data.
    fn packet() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 10, 198, 19, 255, 1, //
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0,
        ];
        p.extend_from_slice(b"data");
        p
    }

    #[test]
    fn the_common_packet_takes_the_fast_parse() {
        let p = packet();
        assert_eq!(v4_tcp_meta(&p), Some(parse_ip(&p).unwrap()));
    }

    proptest! {
        /// Whatever the bytes (a valid packet with some bytes changed, cut
        /// or extended), the fast parse either declines or says exactly
        /// what the full parse says.
        #[test]
        fn same_as_parse_ip(
            edits in proptest::collection::vec((0usize..48, any::<u8>()), 0..4),
            cut in 0usize..50,
            extra in 0usize..8,
        ) {
            let mut p = packet();
            for (i, b) in edits {
                if let Some(x) = p.get_mut(i) {
                    *x = b;
                }
            }
            p.truncate(p.len().min(cut.max(1) + 20));
            p.extend(std::iter::repeat_n(0u8, extra));
            if let Some(m) = v4_tcp_meta(&p) {
                prop_assert_eq!(Ok(m), parse_ip(&p));
            }
        }

        /// Header bytes that matter, exhaustively random: never a
        /// disagreement.
        #[test]
        fn same_as_parse_ip_random_headers(b in proptest::collection::vec(any::<u8>(), 0..64), v45: bool) {
            let mut b = b;
            if v45 && !b.is_empty() {
                b[0] = 0x45;
                if b.len() > 9 { b[9] = 6; }
            }
            if let Some(m) = v4_tcp_meta(&b) {
                prop_assert_eq!(Ok(m), parse_ip(&b));
            }
        }
    }
}
