//! IP-in-IP: IPv4 or IPv6 inside IPv4 or IPv6 (RFC 2003, RFC 2473, RFC 4213),
//! plainly or with the keyed tunnel's GRE header between the two (see
//! [`crate::gre`]).
//!
//! [`encapsulate`] writes the outer header into headroom the caller reserved
//! in front of the inner packet: no allocation, no copy of the inner packet.
//! [`decapsulate`] validates the outer header and returns where the inner
//! packet lies and who sent it; the caller checks the outer source against
//! its known peers (anyone can send IP-in-IP). ECN follows RFC 6040 both ways.

use crate::error::{Error, Layer, Malformed, Result};
use crate::ip::{Ecn, IpProtocol, IpVersion};
use crate::ipv4::{self, Ipv4Packet};
use crate::ipv6::{self, Ipv6Packet, Ipv6Repr};
use core::net::IpAddr;
use core::ops::Range;

/// Outer header length over IPv4.
pub const OUTER_V4_LEN: usize = ipv4::MIN_HEADER_LEN;
/// Outer header length over IPv6.
pub const OUTER_V6_LEN: usize = ipv6::HEADER_LEN;
/// The most headroom encapsulation needs (IPv6 outer header and GRE).
pub const MAX_OVERHEAD: usize = OUTER_V6_LEN + crate::gre::HEADER_LEN;

/// How the outer IPv4 header's don't-fragment bit is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DfPolicy {
    /// Copy DF from an IPv4 inner packet; set it for IPv6 inner packets,
    /// which are never fragmented on path (RFC 4213 section 3.2).
    #[default]
    Copy,
    /// Always set: path-MTU discovery for the tunnel.
    Set,
    /// Always clear: let routers fragment the outer packet.
    Clear,
}

/// RFC 6040 encapsulation mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EcnMode {
    /// Normal mode: the outer ECN field is a copy of the inner one, so
    /// congestion marks made on the tunnel path reach the endpoints.
    #[default]
    Normal,
    /// Compatibility mode: outer Not-ECT, for paths with legacy decapsulators.
    Compatibility,
}

/// The outer header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncapParams {
    /// Tunnel source (this host's tunnel address).
    pub src: IpAddr,
    /// Tunnel destination (the peer's tunnel address). Same family as `src`.
    pub dst: IpAddr,
    /// Outer TTL / hop limit.
    pub ttl: u8,
    /// Outer DF policy (IPv4 outer only).
    pub df: DfPolicy,
    /// ECN mode.
    pub ecn: EcnMode,
    /// Outer identification (IPv4 outer; matters when DF is clear).
    pub ident: u16,
    /// Outer flow label (IPv6 outer; RFC 6438 suggests a hash of the inner
    /// flow: see [`flow_label_from_hash`]).
    pub flow_label: u32,
}

impl EncapParams {
    /// Defaults for a tunnel between `src` and `dst`: TTL 64, DF copied,
    /// ECN normal mode, identification 0, flow label 0.
    pub const fn new(src: IpAddr, dst: IpAddr) -> Self {
        Self {
            src,
            dst,
            ttl: 64,
            df: DfPolicy::Copy,
            ecn: EcnMode::Normal,
            ident: 0,
            flow_label: 0,
        }
    }

    /// The outer header length for these endpoints.
    pub const fn outer_len(&self) -> usize {
        match self.src {
            IpAddr::V4(_) => OUTER_V4_LEN,
            IpAddr::V6(_) => OUTER_V6_LEN,
        }
    }
}

/// A non-zero 20-bit flow label from a flow hash (RFC 6437, RFC 6438).
pub fn flow_label_from_hash(h: u64) -> u32 {
    let l = ((h ^ (h >> 20) ^ (h >> 40)) & 0xf_ffff) as u32;
    if l == 0 { 1 } else { l }
}

/// Encapsulates the inner IP packet `buf[inner_start..]` in place: the outer
/// header is written into `buf[inner_start - outer_len..inner_start]` and its
/// start offset is returned. `buf` must end where the inner packet ends.
#[inline]
pub fn encapsulate(buf: &mut [u8], inner_start: usize, p: &EncapParams) -> Result<usize> {
    encapsulate_with(buf, inner_start, p, None)
}

/// Encapsulates like [`encapsulate`], with a GRE header (RFC 2784 with the
/// key and sequence fields of RFC 2890) between the outer IP header and the
/// inner packet: `buf[inner_start - outer_len - 12..inner_start]`. The
/// outer protocol is 47; see [`crate::gre`] for what the fields carry.
#[inline]
pub fn encapsulate_gre(
    buf: &mut [u8],
    inner_start: usize,
    p: &EncapParams,
    gre: crate::gre::GreFields,
) -> Result<usize> {
    encapsulate_with(buf, inner_start, p, Some(gre))
}

#[inline]
fn encapsulate_with(
    buf: &mut [u8],
    inner_start: usize,
    p: &EncapParams,
    gre: Option<crate::gre::GreFields>,
) -> Result<usize> {
    let shim_len = if gre.is_some() {
        crate::gre::HEADER_LEN
    } else {
        0
    };
    let outer_len = p.outer_len();
    let Some(outer_start) = inner_start.checked_sub(outer_len + shim_len) else {
        return Err(Error::malformed(Layer::Tunnel, 0, Malformed::Headroom));
    };
    let Some(inner) = buf.get(inner_start..) else {
        return Err(Error::too_short(Layer::Tunnel, buf.len()));
    };
    let inner_len = inner.len();
    // Read what the outer header copies from the inner one.
    let (version, tos, inner_df) = match crate::ip::version_of(inner) {
        Some(IpVersion::V4) if inner_len >= ipv4::MIN_HEADER_LEN => {
            (IpVersion::V4, inner[1], inner[6] & 0x40 != 0)
        }
        Some(IpVersion::V6) if inner_len >= ipv6::HEADER_LEN => {
            (IpVersion::V6, (inner[0] << 4) | (inner[1] >> 4), true)
        }
        None => {
            return Err(Error::malformed(
                Layer::Tunnel,
                inner_start,
                Malformed::Version,
            ));
        }
        Some(_) => return Err(Error::too_short(Layer::Tunnel, buf.len())),
    };
    let proto = match (gre, version) {
        (Some(_), _) => IpProtocol::Gre,
        (None, IpVersion::V4) => IpProtocol::IpIp,
        (None, IpVersion::V6) => IpProtocol::Ipv6,
    };
    let ecn = match p.ecn {
        EcnMode::Normal => Ecn::from_bits(tos),
        EcnMode::Compatibility => Ecn::NotEct,
    };
    let payload_len = inner_len + shim_len;
    let (out, shim) = buf[outer_start..inner_start].split_at_mut(outer_len);
    match (p.src, p.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let total = payload_len + OUTER_V4_LEN;
            if total > usize::from(u16::MAX) {
                return Err(Error::malformed(
                    Layer::Tunnel,
                    inner_start,
                    Malformed::Oversize,
                ));
            }
            let dont_frag = match p.df {
                DfPolicy::Copy => inner_df,
                DfPolicy::Set => true,
                DfPolicy::Clear => false,
            };
            // Written directly (not through Ipv4Repr): this is the per-packet
            // hot path of a redirecting host.
            let [t0, t1] = (total as u16).to_be_bytes();
            let [i0, i1] = p.ident.to_be_bytes();
            let [s0, s1, s2, s3] = src.octets();
            let [d0, d1, d2, d3] = dst.octets();
            let mut h: [u8; OUTER_V4_LEN] = [
                0x45,
                tos & !3 | ecn.bits(),
                t0,
                t1,
                i0,
                i1,
                if dont_frag { 0x40 } else { 0 },
                0,
                p.ttl,
                u8::from(proto),
                0,
                0,
                s0,
                s1,
                s2,
                s3,
                d0,
                d1,
                d2,
                d3,
            ];
            let c = crate::checksum::checksum_array(&h).to_be_bytes();
            h[10] = c[0];
            h[11] = c[1];
            out.copy_from_slice(&h);
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            if payload_len > usize::from(u16::MAX) {
                return Err(Error::malformed(
                    Layer::Tunnel,
                    inner_start,
                    Malformed::Oversize,
                ));
            }
            Ipv6Repr {
                src,
                dst,
                next_header: proto,
                payload_len: payload_len as u16,
                hop_limit: p.ttl,
                traffic_class: tos & !3 | ecn.bits(),
                flow_label: p.flow_label,
            }
            .emit(out)?;
        }
        _ => return Err(Error::malformed(Layer::Tunnel, 0, Malformed::AddressFamily)),
    }
    if let Some(g) = gre {
        crate::gre::emit(shim, version, g);
    }
    Ok(outer_start)
}

/// Whether [`decapsulate`] verifies the outer IPv4 header checksum. Skip it
/// when the NIC already did (offload); IPv6 has no header checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChecksumCheck {
    /// Verify.
    #[default]
    Verify,
    /// Trust the caller (hardware verified it).
    Skip,
}

/// The result of a successful decapsulation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decapsulated {
    /// Outer source: the sending tunnel endpoint. Check it against the peers.
    pub outer_src: IpAddr,
    /// Outer destination.
    pub outer_dst: IpAddr,
    /// The inner packet's bytes in the buffer (trimmed to its own length).
    pub inner: Range<usize>,
    /// The inner packet's IP version.
    pub inner_version: IpVersion,
    /// True when the inner packet is itself IP-in-IP. Only one level is
    /// removed; callers normally drop such packets.
    pub inner_is_tunnel: bool,
    /// The outer ECN field.
    pub outer_ecn: Ecn,
    /// The GRE header's key and sequence fields when the outer protocol
    /// is GRE (47); `None` for plain IP-in-IP. The caller checks them.
    pub gre: Option<crate::gre::GreFields>,
}

/// Validates an IP-in-IP packet (the buffer starts at the outer IP header)
/// and locates the inner packet. Refuses: a version or length that lies, a
/// bad outer checksum (unless skipped), an outer fragment (no reassembly
/// here), a protocol other than 4 / 41, an inner version that does not match
/// the outer protocol, and an inner packet whose own header is invalid.
pub fn decapsulate(buf: &[u8], check: ChecksumCheck) -> Result<Decapsulated> {
    let tunnel = |e: Error| Error {
        layer: Layer::Tunnel,
        ..e
    };
    let (outer_src, outer_dst, proto, outer_ecn, inner) = match crate::ip::version_of(buf) {
        Some(IpVersion::V4) => {
            let ip = Ipv4Packet::new_checked(buf)?;
            if check == ChecksumCheck::Verify && !ip.verify_checksum() {
                return Err(Error::malformed(Layer::Ipv4, 10, Malformed::Checksum));
            }
            if ip.is_fragment() {
                return Err(Error::malformed(Layer::Tunnel, 6, Malformed::Fragment));
            }
            let range = ip.header_len()..usize::from(ip.total_len());
            (
                IpAddr::V4(ip.src()),
                IpAddr::V4(ip.dst()),
                ip.protocol(),
                ip.ecn(),
                range,
            )
        }
        Some(IpVersion::V6) => {
            let ip = Ipv6Packet::new_checked(buf)?;
            let chain = ip.ext_chain()?;
            if chain.fragment.is_some() {
                return Err(Error::malformed(
                    Layer::Tunnel,
                    ipv6::HEADER_LEN,
                    Malformed::Fragment,
                ));
            }
            let range =
                ipv6::HEADER_LEN + chain.offset..ipv6::HEADER_LEN + usize::from(ip.payload_len());
            (
                IpAddr::V6(ip.src()),
                IpAddr::V6(ip.dst()),
                chain.protocol,
                ip.ecn(),
                range,
            )
        }
        None => {
            return Err(match buf.first() {
                None => Error::too_short(Layer::Tunnel, 0),
                Some(_) => Error::malformed(Layer::Tunnel, 0, Malformed::Version),
            });
        }
    };
    let (expect, inner, gre) = match proto {
        IpProtocol::IpIp => (IpVersion::V4, inner, None),
        IpProtocol::Ipv6 => (IpVersion::V6, inner, None),
        IpProtocol::Gre => {
            let Some(bytes) = buf.get(inner.clone()) else {
                return Err(Error::too_short(Layer::Gre, inner.start));
            };
            let (version, fields) = crate::gre::parse(bytes).map_err(|e| e.shifted(inner.start))?;
            (
                version,
                inner.start + crate::gre::HEADER_LEN..inner.end,
                Some(fields),
            )
        }
        _ => return Err(Error::malformed(Layer::Tunnel, 0, Malformed::Protocol)),
    };
    let start = inner.start;
    let bytes = &buf[inner];
    let (inner_version, inner_len, inner_proto) = match crate::ip::version_of(bytes) {
        Some(IpVersion::V4) if expect == IpVersion::V4 => {
            let ip = Ipv4Packet::new_checked(bytes).map_err(|e| tunnel(e.shifted(start)))?;
            (IpVersion::V4, usize::from(ip.total_len()), ip.protocol())
        }
        Some(IpVersion::V6) if expect == IpVersion::V6 => {
            let ip = Ipv6Packet::new_checked(bytes).map_err(|e| tunnel(e.shifted(start)))?;
            let p = ip
                .ext_chain()
                .map(|c| c.protocol)
                .unwrap_or(ip.next_header());
            (
                IpVersion::V6,
                ipv6::HEADER_LEN + usize::from(ip.payload_len()),
                p,
            )
        }
        None if bytes.is_empty() => return Err(Error::too_short(Layer::Tunnel, start)),
        _ => return Err(Error::malformed(Layer::Tunnel, start, Malformed::Version)),
    };
    Ok(Decapsulated {
        outer_src,
        outer_dst,
        inner: start..start + inner_len,
        inner_version,
        inner_is_tunnel: matches!(
            inner_proto,
            IpProtocol::IpIp | IpProtocol::Ipv6 | IpProtocol::Gre
        ),
        outer_ecn,
        gre,
    })
}

/// [`decapsulate`], then RFC 6040 egress: a congestion mark (CE) or ECT(1)
/// on the outer header is carried into the inner header (with the inner IPv4
/// checksum updated). An outer CE on a Not-ECT inner packet is refused with
/// `Malformed::CeOnNotEct`: RFC 6040 says drop it.
pub fn decapsulate_in_place(buf: &mut [u8], check: ChecksumCheck) -> Result<Decapsulated> {
    let d = decapsulate(buf, check)?;
    let inner = &mut buf[d.inner.clone()];
    let inner_ecn = match d.inner_version {
        IpVersion::V4 => Ipv4Packet::new_checked(&*inner)?.ecn(),
        IpVersion::V6 => Ipv6Packet::new_checked(&*inner)?.ecn(),
    };
    let new = match (d.outer_ecn, inner_ecn) {
        (Ecn::Ce, Ecn::NotEct) => {
            return Err(Error::malformed(
                Layer::Tunnel,
                d.inner.start,
                Malformed::CeOnNotEct,
            ));
        }
        (Ecn::Ce, _) => Ecn::Ce,
        (Ecn::Ect1, Ecn::Ect0) => Ecn::Ect1,
        _ => inner_ecn,
    };
    if new != inner_ecn {
        match d.inner_version {
            IpVersion::V4 => Ipv4Packet::new_checked(inner)?.set_ecn(new),
            IpVersion::V6 => Ipv6Packet::new_checked(inner)?.set_ecn(new),
        }
    }
    Ok(d)
}
