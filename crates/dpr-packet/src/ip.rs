//! Protocol numbers and fields shared by IPv4 and IPv6.

/// An IP protocol / IPv6 next-header number. Unknown values are data, not errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpProtocol {
    /// IPv6 hop-by-hop options (0).
    HopByHop,
    /// ICMP for IPv4 (1).
    Icmp,
    /// IPv4 encapsulated in IP (4): IP-in-IP.
    IpIp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// IPv6 encapsulated in IP (41).
    Ipv6,
    /// IPv6 routing header (43).
    Ipv6Route,
    /// IPv6 fragment header (44).
    Ipv6Frag,
    /// Generic Routing Encapsulation (47): the keyed tunnel.
    Gre,
    /// Encapsulating security payload (50).
    Esp,
    /// Authentication header (51).
    Ah,
    /// ICMP for IPv6 (58).
    Icmpv6,
    /// IPv6 no next header (59).
    Ipv6NoNext,
    /// IPv6 destination options (60).
    Ipv6Opts,
    /// Any other protocol number.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    #[inline]
    fn from(v: u8) -> Self {
        match v {
            0 => Self::HopByHop,
            1 => Self::Icmp,
            4 => Self::IpIp,
            6 => Self::Tcp,
            17 => Self::Udp,
            41 => Self::Ipv6,
            43 => Self::Ipv6Route,
            44 => Self::Ipv6Frag,
            47 => Self::Gre,
            50 => Self::Esp,
            51 => Self::Ah,
            58 => Self::Icmpv6,
            59 => Self::Ipv6NoNext,
            60 => Self::Ipv6Opts,
            other => Self::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    #[inline]
    fn from(p: IpProtocol) -> u8 {
        match p {
            IpProtocol::HopByHop => 0,
            IpProtocol::Icmp => 1,
            IpProtocol::IpIp => 4,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Ipv6 => 41,
            IpProtocol::Ipv6Route => 43,
            IpProtocol::Ipv6Frag => 44,
            IpProtocol::Gre => 47,
            IpProtocol::Esp => 50,
            IpProtocol::Ah => 51,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Ipv6NoNext => 59,
            IpProtocol::Ipv6Opts => 60,
            IpProtocol::Unknown(v) => v,
        }
    }
}

/// IP version of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// The two-bit ECN field (RFC 3168).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ecn {
    /// Not ECN-capable transport (00).
    NotEct,
    /// ECN-capable transport (1) (01).
    Ect1,
    /// ECN-capable transport (0) (10).
    Ect0,
    /// Congestion experienced (11).
    Ce,
}

impl Ecn {
    /// From the low two bits of a traffic-class / TOS byte.
    #[inline]
    pub const fn from_bits(v: u8) -> Self {
        match v & 3 {
            0 => Self::NotEct,
            1 => Self::Ect1,
            2 => Self::Ect0,
            _ => Self::Ce,
        }
    }

    /// The two-bit value.
    #[inline]
    pub const fn bits(self) -> u8 {
        match self {
            Self::NotEct => 0,
            Self::Ect1 => 1,
            Self::Ect0 => 2,
            Self::Ce => 3,
        }
    }
}

/// Writes a plain IP header for a generated packet at the start of `buf`:
/// IPv4 (no options, identification 0, checksum filled) or IPv6 (traffic
/// class and flow label 0), by the family of `src` and `dst`, which must
/// match. Returns the header length (20 or 40).
pub fn emit_header(
    buf: &mut [u8],
    src: core::net::IpAddr,
    dst: core::net::IpAddr,
    protocol: IpProtocol,
    payload_len: usize,
    ttl: u8,
    dont_frag: bool,
) -> crate::Result<usize> {
    use crate::error::{Error, Layer, Malformed};
    use core::net::IpAddr;
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let payload_len = u16::try_from(payload_len)
                .map_err(|_| Error::malformed(Layer::Ipv4, 2, Malformed::Oversize))?;
            crate::ipv4::Ipv4Repr {
                src,
                dst,
                protocol,
                payload_len,
                ttl,
                dscp: 0,
                ecn: Ecn::NotEct,
                ident: 0,
                dont_frag,
                more_frags: false,
                frag_offset: 0,
                options: crate::ipv4::Ipv4OptionsBuf::default(),
            }
            .emit(buf)?;
            Ok(crate::ipv4::MIN_HEADER_LEN)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let payload_len = u16::try_from(payload_len)
                .map_err(|_| Error::malformed(Layer::Ipv6, 4, Malformed::Oversize))?;
            crate::ipv6::Ipv6Repr {
                src,
                dst,
                next_header: protocol,
                payload_len,
                hop_limit: ttl,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(buf)?;
            Ok(crate::ipv6::HEADER_LEN)
        }
        _ => Err(Error::malformed(Layer::Ipv4, 0, Malformed::AddressFamily)),
    }
}

/// The version nibble of the first byte of an IP packet, if it is 4 or 6.
#[inline]
pub fn version_of(packet: &[u8]) -> Option<IpVersion> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => Some(IpVersion::V4),
        Some(6) => Some(IpVersion::V6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_round_trips_every_value() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(v)), v);
        }
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
        assert_eq!(IpProtocol::from(200), IpProtocol::Unknown(200));
    }

    #[test]
    fn emit_header_both_families() {
        let (s4, d4) = (
            core::net::Ipv4Addr::new(198, 18, 0, 1),
            core::net::Ipv4Addr::new(198, 18, 0, 2),
        );
        let mut b = [0u8; 40];
        assert_eq!(
            emit_header(&mut b, s4.into(), d4.into(), IpProtocol::Tcp, 20, 64, true),
            Ok(20)
        );
        let p = crate::ipv4::Ipv4Packet::new_truncated(&b[..]).unwrap();
        assert!(p.verify_checksum() && p.dont_frag());
        assert_eq!(
            (p.total_len(), p.protocol(), p.ttl()),
            (40, IpProtocol::Tcp, 64)
        );
        let s6: core::net::Ipv6Addr = "2001:2::1".parse().unwrap();
        assert_eq!(
            emit_header(
                &mut b,
                s6.into(),
                s6.into(),
                IpProtocol::Icmpv6,
                8,
                9,
                false
            ),
            Ok(40)
        );
        assert_eq!(b[6], 58);
        assert!(emit_header(&mut b, s4.into(), s6.into(), IpProtocol::Tcp, 0, 1, false).is_err());
        assert!(
            emit_header(
                &mut b,
                s4.into(),
                d4.into(),
                IpProtocol::Tcp,
                70_000,
                1,
                false
            )
            .is_err()
        );
        assert!(
            emit_header(
                &mut b[..19],
                s4.into(),
                d4.into(),
                IpProtocol::Tcp,
                0,
                1,
                false
            )
            .is_err()
        );
    }

    #[test]
    fn ecn_round_trips() {
        for v in 0..4u8 {
            assert_eq!(Ecn::from_bits(v).bits(), v);
        }
        assert_eq!(Ecn::from_bits(0xff), Ecn::Ce);
    }
}
