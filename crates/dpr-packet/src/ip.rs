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
    fn ecn_round_trips() {
        for v in 0..4u8 {
            assert_eq!(Ecn::from_bits(v).bits(), v);
        }
        assert_eq!(Ecn::from_bits(0xff), Ecn::Ce);
    }
}
