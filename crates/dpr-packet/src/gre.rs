//! The keyed tunnel's GRE header (RFC 2784, with the key and sequence
//! fields of RFC 2890) and its tag.
//!
//! A redirected packet travels as `outer IP (protocol 47) | GRE | inner IP
//! packet`. The GRE header is always 12 bytes, in one form:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0|0|1|1|0 0 0 0 0 0 0 0 0|0 0 0|  protocol type 0x0800 / 0x86DD |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   key: the 32-bit tag                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  sequence: reserved, 0 (16)   |  key id (16)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! C (checksum) and R are clear, K and S set, version 0. The key field is
//! [`tunnel_tag`]: SipHash-2-4 under the cluster's tunnel key, truncated to
//! 32 bits, over the key id, both tunnel endpoints and the inner flow. The
//! sequence field is not a sequence number here: it names the key that
//! made the tag, so a receiver computes one tag with that key and never
//! tries two (which would halve the cost of a forgery). Any other header
//! (other flags, a version, a protocol type, a reserved bit) is refused:
//! this crate's tunnel never sends one.

use crate::error::{Error, Layer, Malformed, Result};
use crate::flow::FlowKey;
use crate::ip::IpVersion;
use crate::siphash::SipKey;
use core::net::IpAddr;

/// The GRE header's length in the keyed tunnel.
pub const HEADER_LEN: usize = 12;

/// Flags and version, the header's first two bytes: K and S set.
const FLAGS_KS: [u8; 2] = [0x30, 0x00];

/// The fields of the keyed tunnel's GRE header that vary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GreFields {
    /// The key field: the tag ([`tunnel_tag`]).
    pub tag: u32,
    /// The key id of the tunnel key that made the tag.
    pub key_id: u16,
}

/// Writes the 12-byte header for an inner packet of `inner` version into
/// `out` (exactly [`HEADER_LEN`] bytes).
pub(crate) fn emit(out: &mut [u8], inner: IpVersion, f: GreFields) {
    let ptype: u16 = match inner {
        IpVersion::V4 => 0x0800,
        IpVersion::V6 => 0x86dd,
    };
    let [p0, p1] = ptype.to_be_bytes();
    let [t0, t1, t2, t3] = f.tag.to_be_bytes();
    let [k0, k1] = f.key_id.to_be_bytes();
    let h = [
        FLAGS_KS[0],
        FLAGS_KS[1],
        p0,
        p1,
        t0,
        t1,
        t2,
        t3,
        0,
        0,
        k0,
        k1,
    ];
    out.copy_from_slice(&h);
}

/// Parses the GRE header at the start of `b`: the inner packet's version
/// (from the protocol type) and the fields. Offsets in errors are from the
/// start of `b`.
pub fn parse(b: &[u8]) -> Result<(IpVersion, GreFields)> {
    let Some(h) = b.get(..HEADER_LEN) else {
        return Err(Error::too_short(Layer::Gre, b.len()));
    };
    if h[..2] != FLAGS_KS {
        return Err(Error::malformed(Layer::Gre, 0, Malformed::FieldValue));
    }
    let version = match u16::from_be_bytes([h[2], h[3]]) {
        0x0800 => IpVersion::V4,
        0x86dd => IpVersion::V6,
        _ => return Err(Error::malformed(Layer::Gre, 2, Malformed::Protocol)),
    };
    if h[8..10] != [0, 0] {
        return Err(Error::malformed(Layer::Gre, 8, Malformed::FieldValue));
    }
    Ok((
        version,
        GreFields {
            tag: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            key_id: u16::from_be_bytes([h[10], h[11]]),
        },
    ))
}

/// The tag of a tunnelled packet: SipHash-2-4 under `key` of
///
/// ```text
/// key id (u16) | protocol (u8) | families (u8: bit 0 outer IPv6, bit 1 inner IPv6)
/// | outer source | outer destination | inner source | inner destination
/// | source port (u16) | destination port (u16)
/// ```
///
/// (addresses 4 or 16 bytes, integers big-endian), truncated to its low 32
/// bits. `flow` is the inner packet's flow as [`crate::parse_ip`] reads it
/// (ports 0 for ICMP). The tag is the same for every packet of a flow
/// between the same two hosts: it proves the sender knows the key and
/// meant this flow, not that the packet is fresh (see
/// `docs/cluster-protocol.md`, "The keyed tunnel").
#[inline]
pub fn tunnel_tag(
    key: &SipKey,
    key_id: u16,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    flow: &FlowKey,
) -> u32 {
    let mut m = [0u8; 2 + 1 + 1 + 4 * 16 + 4];
    m[..2].copy_from_slice(&key_id.to_be_bytes());
    m[2] = u8::from(flow.protocol);
    m[3] = u8::from(outer_src.is_ipv6()) | u8::from(flow.src.is_ipv6()) << 1;
    let mut n = 4;
    for a in [outer_src, outer_dst, flow.src, flow.dst] {
        match a {
            IpAddr::V4(a) => {
                m[n..n + 4].copy_from_slice(&a.octets());
                n += 4;
            }
            IpAddr::V6(a) => {
                m[n..n + 16].copy_from_slice(&a.octets());
                n += 16;
            }
        }
    }
    m[n..n + 2].copy_from_slice(&flow.src_port.to_be_bytes());
    m[n + 2..n + 4].copy_from_slice(&flow.dst_port.to_be_bytes());
    key.hash(&m[..n + 4]) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::IpProtocol;
    use crate::ipip::{self, ChecksumCheck, EncapParams};
    use core::net::Ipv4Addr;

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    /// IPv4 TCP SYN 198.18.1.1:40000 -> 198.18.0.11:80, 40 bytes.
    fn inner_syn() -> [u8; 40] {
        let mut p = [0u8; 40];
        p[..20].copy_from_slice(&[
            0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0, 0, 198, 18, 1, 1, 198,
            18, 0, 11,
        ]);
        let c = crate::checksum::checksum(&p[..20]).to_be_bytes();
        p[10..12].copy_from_slice(&c);
        p[20..24].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
        p[32] = 0x50; // data offset 5
        p[33] = 0x02; // SYN
        p
    }

    const KEY: SipKey = SipKey::from_bytes([7; 16]);

    #[test]
    fn header_vector() {
        let mut h = [0u8; HEADER_LEN];
        emit(
            &mut h,
            IpVersion::V4,
            GreFields {
                tag: 0xdead_beef,
                key_id: 0x0102,
            },
        );
        assert_eq!(
            h,
            [
                0x30, 0, 0x08, 0x00, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0x01, 0x02
            ]
        );
        let (v, f) = parse(&h).unwrap();
        assert_eq!(v, IpVersion::V4);
        assert_eq!(f.tag, 0xdead_beef);
        assert_eq!(f.key_id, 0x0102);
    }

    #[test]
    fn encapsulate_then_decapsulate_round_trips() {
        let inner = inner_syn();
        let fields = GreFields {
            tag: 0x0102_0304,
            key_id: 9,
        };
        let mut buf = [0u8; 32 + 40];
        buf[32..].copy_from_slice(&inner);
        let p = EncapParams::new(v4([198, 18, 0, 1]), v4([198, 18, 0, 2]));
        let start = ipip::encapsulate_gre(&mut buf, 32, &p, fields).unwrap();
        assert_eq!(start, 0);
        assert_eq!(buf[9], 47, "outer protocol GRE");
        assert_eq!(
            u16::from_be_bytes([buf[2], buf[3]]),
            72,
            "outer total length"
        );
        assert_eq!(buf[6] & 0x40, 0x40, "DF copied from the inner packet");
        let d = ipip::decapsulate(&buf, ChecksumCheck::Verify).unwrap();
        assert_eq!(d.inner, 32..72);
        assert_eq!(&buf[d.inner.clone()], &inner);
        assert_eq!(d.gre, Some(fields));
        assert_eq!(d.inner_version, IpVersion::V4);
        assert!(!d.inner_is_tunnel);
        // Plain IP-in-IP reports no GRE fields.
        let mut plain = [0u8; 20 + 40];
        plain[20..].copy_from_slice(&inner);
        ipip::encapsulate(&mut plain, 20, &p).unwrap();
        assert_eq!(
            ipip::decapsulate(&plain, ChecksumCheck::Verify)
                .unwrap()
                .gre,
            None
        );
    }

    #[test]
    fn ipv6_outer_round_trips() {
        let inner = inner_syn();
        let fields = GreFields { tag: 5, key_id: 1 };
        let mut buf = [0u8; 52 + 40];
        buf[52..].copy_from_slice(&inner);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        let start = ipip::encapsulate_gre(&mut buf, 52, &EncapParams::new(a, b), fields).unwrap();
        assert_eq!(start, 0);
        let d = ipip::decapsulate(&buf, ChecksumCheck::Verify).unwrap();
        assert_eq!((d.outer_src, d.gre), (a, Some(fields)));
        assert_eq!(d.inner, 52..92);
    }

    #[test]
    fn too_little_headroom_is_refused() {
        let mut buf = [0u8; 31 + 40];
        buf[31..].copy_from_slice(&inner_syn());
        let p = EncapParams::new(v4([1, 1, 1, 1]), v4([2, 2, 2, 2]));
        let e =
            ipip::encapsulate_gre(&mut buf, 31, &p, GreFields { tag: 0, key_id: 0 }).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Malformed(Malformed::Headroom));
    }

    /// A valid GRE packet with byte `at` of the GRE header set to `v`.
    fn with_gre_byte(at: usize, v: u8) -> [u8; 72] {
        let mut buf = [0u8; 72];
        buf[32..].copy_from_slice(&inner_syn());
        let p = EncapParams::new(v4([198, 18, 0, 1]), v4([198, 18, 0, 2]));
        ipip::encapsulate_gre(&mut buf, 32, &p, GreFields { tag: 1, key_id: 1 }).unwrap();
        buf[20 + at] = v;
        buf
    }

    #[test]
    fn malformed_gre_headers_are_refused_with_their_offset() {
        for (at, v, offset, why) in [
            (0, 0xb0, 20, Malformed::FieldValue), // checksum present
            (0, 0x20, 20, Malformed::FieldValue), // no sequence (key id)
            (0, 0x10, 20, Malformed::FieldValue), // no key (tag)
            (0, 0x70, 20, Malformed::FieldValue), // reserved bit R
            (1, 0x01, 20, Malformed::FieldValue), // version 1 (PPTP)
            (2, 0x65, 22, Malformed::Protocol),   // transparent Ethernet bridging
            (8, 0x01, 28, Malformed::FieldValue), // reserved half of the sequence
        ] {
            let b = with_gre_byte(at, v);
            let e = ipip::decapsulate(&b, ChecksumCheck::Verify).unwrap_err();
            assert_eq!(e.layer, Layer::Gre, "byte {at}");
            assert_eq!(e.offset, offset, "byte {at}");
            assert_eq!(e.kind, crate::ErrorKind::Malformed(why), "byte {at}");
        }
        // The protocol type says IPv6, the inner packet is IPv4.
        let mut b = with_gre_byte(2, 0x86);
        b[23] = 0xdd;
        let e = ipip::decapsulate(&b, ChecksumCheck::Verify).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Malformed(Malformed::Version));
    }

    #[test]
    fn truncated_gre_never_panics_and_is_too_short() {
        let full = with_gre_byte(0, 0x30);
        for n in 20..32 {
            let mut b = full;
            // Make the outer header's length agree with the cut.
            b[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            b[10..12].copy_from_slice(&[0, 0]);
            let c = crate::checksum::checksum(&b[..20]).to_be_bytes();
            b[10..12].copy_from_slice(&c);
            let e = ipip::decapsulate(&b[..n], ChecksumCheck::Verify).unwrap_err();
            assert_eq!(e.layer, Layer::Gre, "length {n}");
            assert!(e.is_too_short(), "length {n}: {e}");
        }
        for n in 0..full.len() {
            let _ = ipip::decapsulate(&full[..n], ChecksumCheck::Skip);
        }
    }

    #[test]
    fn the_ipv4_tag_is_the_siphash_of_the_documented_message() {
        let flow = FlowKey::new(
            IpProtocol::Tcp,
            v4([198, 18, 1, 1]),
            40000,
            v4([198, 18, 0, 11]),
            80,
        );
        let m = [
            0, 7, 6, 0, 198, 19, 0, 1, 198, 19, 0, 2, 198, 18, 1, 1, 198, 18, 0, 11, 0x9c, 0x40, 0,
            80,
        ];
        assert_eq!(
            tunnel_tag(&KEY, 7, v4([198, 19, 0, 1]), v4([198, 19, 0, 2]), &flow),
            KEY.hash(&m) as u32
        );
    }

    #[test]
    fn the_tag_binds_key_id_endpoints_and_every_field_of_the_flow() {
        let a = v4([198, 18, 0, 1]);
        let b = v4([198, 18, 0, 2]);
        let flow = FlowKey::new(
            IpProtocol::Tcp,
            v4([198, 18, 1, 1]),
            40000,
            v4([198, 18, 0, 11]),
            80,
        );
        let t = tunnel_tag(&KEY, 1, a, b, &flow);
        assert_eq!(t, tunnel_tag(&KEY, 1, a, b, &flow), "deterministic");
        let other_key = SipKey::from_bytes([8; 16]);
        let mut changed = [
            tunnel_tag(&other_key, 1, a, b, &flow),
            tunnel_tag(&KEY, 2, a, b, &flow),
            tunnel_tag(&KEY, 1, b, a, &flow),
            tunnel_tag(&KEY, 1, a, v4([198, 18, 0, 3]), &flow),
            tunnel_tag(
                &KEY,
                1,
                a,
                b,
                &FlowKey {
                    src_port: 40001,
                    ..flow
                },
            ),
            tunnel_tag(
                &KEY,
                1,
                a,
                b,
                &FlowKey {
                    dst_port: 81,
                    ..flow
                },
            ),
            tunnel_tag(
                &KEY,
                1,
                a,
                b,
                &FlowKey {
                    src: v4([198, 18, 1, 2]),
                    ..flow
                },
            ),
            tunnel_tag(
                &KEY,
                1,
                a,
                b,
                &FlowKey {
                    dst: v4([198, 18, 0, 12]),
                    ..flow
                },
            ),
            tunnel_tag(
                &KEY,
                1,
                a,
                b,
                &FlowKey {
                    protocol: IpProtocol::Udp,
                    ..flow
                },
            ),
        ];
        assert!(changed.iter().all(|c| *c != t), "{t:08x} {changed:08x?}");
        changed.sort_unstable();
        assert!(changed.windows(2).all(|w| w[0] != w[1]));
    }
}
