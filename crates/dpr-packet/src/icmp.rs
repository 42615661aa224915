//! ICMPv4 and ICMPv6: message views, and error messages with the quoted
//! original packet parsed far enough to recover its flow.
//!
//! A router needs the quote to send an ICMP error (fragmentation needed,
//! packet too big, unreachable, time exceeded) to the host that serves the
//! flow it is about. A quote may carry only the first 8 bytes of the original
//! transport header (RFC 792): enough for the ports, not for TCP flags.

use crate::checksum;
use crate::error::{Error, Layer, Malformed, Result};
use crate::ethernet::be16;
use crate::flow::FlowKey;
use crate::ip::IpProtocol;
use crate::ipv4::Ipv4Packet;
use crate::ipv6::{self, Ipv6Packet};
use crate::parse::Fragment;
use crate::tcp::transport_checksum;
use core::net::IpAddr;

/// Length of the ICMP header (type, code, checksum, four bytes of rest).
pub const HEADER_LEN: usize = 8;

macro_rules! icmp_view {
    ($name:ident, $layer:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy)]
        pub struct $name<T> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Checks that the eight-byte header is present.
            pub fn new_checked(buffer: T) -> Result<Self> {
                let n = buffer.as_ref().len();
                if n < HEADER_LEN {
                    return Err(Error::too_short($layer, n));
                }
                Ok(Self { buffer })
            }
            /// Message type.
            pub fn msg_type(&self) -> u8 {
                self.buffer.as_ref()[0]
            }
            /// Code.
            pub fn code(&self) -> u8 {
                self.buffer.as_ref()[1]
            }
            /// Checksum field.
            pub fn checksum(&self) -> u16 {
                be16(self.buffer.as_ref(), 2)
            }
            /// The four type-specific bytes after the checksum.
            pub fn rest(&self) -> u32 {
                let b = self.buffer.as_ref();
                u32::from_be_bytes([b[4], b[5], b[6], b[7]])
            }
            /// The data after the header (the quote, for error messages).
            pub fn data(&self) -> &[u8] {
                &self.buffer.as_ref()[HEADER_LEN..]
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Sets the checksum field.
            pub fn set_checksum(&mut self, v: u16) {
                self.buffer.as_mut()[2..4].copy_from_slice(&v.to_be_bytes());
            }
        }
    };
}

icmp_view!(
    Icmpv4Packet,
    Layer::Icmpv4,
    "A checked view of an ICMPv4 message."
);
icmp_view!(
    Icmpv6Packet,
    Layer::Icmpv6,
    "A checked view of an ICMPv6 message."
);

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// True when the checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}
impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Computes and stores the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}
impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// True when the checksum (with the IPv6 pseudo-header) verifies.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        transport_checksum(src, dst, IpProtocol::Icmpv6, self.buffer.as_ref()) == 0
    }
}
impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Computes and stores the checksum (with the IPv6 pseudo-header).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let c = transport_checksum(src, dst, IpProtocol::Icmpv6, self.buffer.as_ref());
        self.set_checksum(c);
    }
}

/// The ICMP error messages a router acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IcmpErrorKind {
    /// ICMPv4 type 3 (any code but 4) or ICMPv6 type 1.
    DestUnreachable {
        /// The code.
        code: u8,
    },
    /// ICMPv4 type 3 code 4: fragmentation needed and DF set (RFC 1191).
    FragmentationNeeded {
        /// Next-hop MTU (0 from pre-RFC 1191 routers).
        mtu: u16,
    },
    /// ICMPv6 type 2.
    PacketTooBig {
        /// The MTU of the next hop.
        mtu: u32,
    },
    /// ICMPv4 type 11 or ICMPv6 type 3.
    TimeExceeded {
        /// The code (0: TTL / hop limit, 1: reassembly).
        code: u8,
    },
}

impl IcmpErrorKind {
    /// Type and code and the four "rest of header" bytes for ICMPv4;
    /// `None` for the ICMPv6-only kind.
    pub fn v4_header(&self) -> Option<(u8, u8, u32)> {
        match *self {
            Self::DestUnreachable { code } => Some((3, code, 0)),
            Self::FragmentationNeeded { mtu } => Some((3, 4, u32::from(mtu))),
            Self::TimeExceeded { code } => Some((11, code, 0)),
            Self::PacketTooBig { .. } => None,
        }
    }
    /// Type, code and rest for ICMPv6; `None` for the ICMPv4-only kind.
    pub fn v6_header(&self) -> Option<(u8, u8, u32)> {
        match *self {
            Self::DestUnreachable { code } => Some((1, code, 0)),
            Self::PacketTooBig { mtu } => Some((2, 0, mtu)),
            Self::TimeExceeded { code } => Some((3, code, 0)),
            Self::FragmentationNeeded { .. } => None,
        }
    }
}

/// The original packet quoted in an ICMP error, as far as it was recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    /// The quoted packet's flow, as it was sent (source = the sender the
    /// error goes back to). Ports are 0 for a later fragment or a protocol
    /// without ports.
    pub flow: FlowKey,
    /// The quoted packet's fragment status.
    pub fragment: Fragment,
    /// When the quoted packet is itself IP-in-IP (an error about a tunnel
    /// packet) and the quote reaches far enough: the inner packet's flow.
    pub inner: Option<FlowKey>,
}

/// A parsed ICMP error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpError {
    /// What the error says.
    pub kind: IcmpErrorKind,
    /// The quoted packet's flow.
    pub quote: Quote,
}

/// Parses an ICMPv4 message (starting at the ICMP header) as an error.
/// Non-error messages (echo, for example) are `Malformed::NotIcmpError`.
pub fn parse_icmpv4_error(msg: &[u8]) -> Result<IcmpError> {
    let p = Icmpv4Packet::new_checked(msg)?;
    let kind = match (p.msg_type(), p.code()) {
        (3, 4) => IcmpErrorKind::FragmentationNeeded {
            mtu: p.rest() as u16,
        },
        (3, code) => IcmpErrorKind::DestUnreachable { code },
        (11, code) => IcmpErrorKind::TimeExceeded { code },
        _ => return Err(Error::malformed(Layer::Icmpv4, 0, Malformed::NotIcmpError)),
    };
    let quote = parse_quote(p.data()).map_err(|e| e.shifted(HEADER_LEN))?;
    Ok(IcmpError { kind, quote })
}

/// Parses an ICMPv6 message (starting at the ICMP header) as an error.
pub fn parse_icmpv6_error(msg: &[u8]) -> Result<IcmpError> {
    let p = Icmpv6Packet::new_checked(msg)?;
    let kind = match p.msg_type() {
        1 => IcmpErrorKind::DestUnreachable { code: p.code() },
        2 => IcmpErrorKind::PacketTooBig { mtu: p.rest() },
        3 => IcmpErrorKind::TimeExceeded { code: p.code() },
        _ => return Err(Error::malformed(Layer::Icmpv6, 0, Malformed::NotIcmpError)),
    };
    let quote = parse_quote(p.data()).map_err(|e| e.shifted(HEADER_LEN))?;
    Ok(IcmpError { kind, quote })
}

/// Recovers the flow of a quoted (possibly truncated) IP packet. Errors are
/// reported at [`Layer::IcmpQuote`] with offsets relative to `quote`.
pub fn parse_quote(quote: &[u8]) -> Result<Quote> {
    let as_quote = |e: Error| Error {
        layer: Layer::IcmpQuote,
        ..e
    };
    let (src, dst, proto, fragment, l4) = match quote.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_truncated(quote).map_err(as_quote)?;
            let fragment = match (ip.frag_offset(), ip.more_frags()) {
                (0, false) => Fragment::Whole,
                (0, true) => Fragment::First,
                _ => Fragment::Later,
            };
            (
                IpAddr::V4(ip.src()),
                IpAddr::V4(ip.dst()),
                ip.protocol(),
                fragment,
                ip.header_len(),
            )
        }
        Some(6) => {
            let ip = Ipv6Packet::new_truncated(quote).map_err(as_quote)?;
            let chain = ip.ext_chain().map_err(as_quote)?;
            let fragment = match chain.fragment {
                Some(f) if f.offset != 0 => Fragment::Later,
                Some(f) if f.more_frags => Fragment::First,
                _ => Fragment::Whole,
            };
            let l4 = ipv6::HEADER_LEN + chain.offset;
            (
                IpAddr::V6(ip.src()),
                IpAddr::V6(ip.dst()),
                chain.protocol,
                fragment,
                l4,
            )
        }
        Some(_) => return Err(Error::malformed(Layer::IcmpQuote, 0, Malformed::Version)),
        None => return Err(Error::too_short(Layer::IcmpQuote, 0)),
    };
    // The quote may stop short of the declared length: take what is there.
    let rest = quote.get(l4..).unwrap_or(&[]);
    let has_ports = matches!(proto, IpProtocol::Tcp | IpProtocol::Udp);
    let (src_port, dst_port) = if has_ports && fragment != Fragment::Later {
        if rest.len() < 4 {
            return Err(Error::too_short(Layer::IcmpQuote, quote.len()));
        }
        (be16(rest, 0), be16(rest, 2))
    } else {
        (0, 0)
    };
    let inner = match proto {
        IpProtocol::IpIp | IpProtocol::Ipv6 if fragment != Fragment::Later => {
            parse_inner_quote(rest)
        }
        _ => None,
    };
    Ok(Quote {
        flow: FlowKey {
            src,
            dst,
            src_port,
            dst_port,
            protocol: proto,
        },
        fragment,
        inner,
    })
}

/// The inner flow of a quoted tunnel packet: one level only, and only when
/// the quote reaches the inner ports.
fn parse_inner_quote(rest: &[u8]) -> Option<FlowKey> {
    let q = parse_quote(rest).ok()?;
    matches!(q.flow.protocol, IpProtocol::Tcp | IpProtocol::Udp).then_some(q.flow)
}

/// Writes an ICMP error message (header and quote) into `buf`, which must be
/// exactly `HEADER_LEN + quote.len()` long, with its checksum. For ICMPv6 the
/// checksum covers the pseudo-header of `src` and `dst` (the addresses of the
/// IPv6 packet that will carry it); for ICMPv4 they are ignored.
pub fn emit_error(
    buf: &mut [u8],
    kind: IcmpErrorKind,
    v6: bool,
    src: IpAddr,
    dst: IpAddr,
    quote: &[u8],
) -> Result<()> {
    let layer = if v6 { Layer::Icmpv6 } else { Layer::Icmpv4 };
    if buf.len() != HEADER_LEN + quote.len() {
        return Err(Error::too_short(layer, buf.len()));
    }
    let hdr = if v6 {
        kind.v6_header()
    } else {
        kind.v4_header()
    };
    let Some((t, c, rest)) = hdr else {
        return Err(Error::malformed(layer, 0, Malformed::NotIcmpError));
    };
    buf[0] = t;
    buf[1] = c;
    buf[4..8].copy_from_slice(&rest.to_be_bytes());
    buf[HEADER_LEN..].copy_from_slice(quote);
    if v6 {
        Icmpv6Packet::new_checked(buf)?.fill_checksum(src, dst);
    } else {
        Icmpv4Packet::new_checked(buf)?.fill_checksum();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use core::net::Ipv6Addr;

    /// An echo request as ping sends it (id 0x1234, seq 1, 4 data bytes).
    const ECHO: [u8; 12] = [
        8, 0, 0x48, 0x2d, 0x12, 0x34, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn decode_echo() {
        let p = Icmpv4Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!((p.msg_type(), p.code(), p.rest()), (8, 0, 0x1234_0001));
        assert_eq!(p.data(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum());
        let mut b = ECHO;
        let mut q = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        q.set_checksum(0);
        q.fill_checksum();
        assert_eq!(b, ECHO);
        for n in 0..HEADER_LEN {
            assert!(
                Icmpv4Packet::new_checked(&ECHO[..n])
                    .unwrap_err()
                    .is_too_short()
            );
            assert!(
                Icmpv6Packet::new_checked(&ECHO[..n])
                    .unwrap_err()
                    .is_too_short()
            );
        }
    }

    /// A hand-assembled ICMPv4 fragmentation-needed message quoting an IPv4
    /// TCP header and the first eight bytes of TCP.
    #[test]
    fn decode_frag_needed_vector() {
        let mut m = [
            3, 4, 0, 0, 0, 0, 0x05, 0x78, // type 3 code 4, MTU 1400
            0x45, 0, 0x05, 0xdc, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 10, 198, 18, 1, 1, 0x9c,
            0x40, 0x00, 0x50, 0, 0, 0, 1,
        ];
        let c = checksum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        assert!(Icmpv4Packet::new_checked(&m[..]).unwrap().verify_checksum());
        let e = parse_icmpv4_error(&m).unwrap();
        assert_eq!(e.kind, IcmpErrorKind::FragmentationNeeded { mtu: 1400 });
        assert_eq!(
            std::format!("{}", e.quote.flow),
            "tcp 198.18.0.10:40000 -> 198.18.1.1:80"
        );
        assert_eq!(e.quote.fragment, Fragment::Whole);
        // Cut inside the quoted ports: too short, at the quote layer.
        let e = parse_icmpv4_error(&m[..8 + 22]).unwrap_err();
        assert_eq!((e.layer, e.kind), (Layer::IcmpQuote, ErrorKind::TooShort));
        // A quote with a version nibble that is neither 4 nor 6.
        let mut bad = m;
        bad[8] = 0x55;
        assert_eq!(
            parse_icmpv4_error(&bad).unwrap_err().kind,
            ErrorKind::Malformed(Malformed::Version)
        );
    }

    #[test]
    fn v6_checksum_covers_pseudo_header() {
        let s: IpAddr = "2001:2::1".parse::<Ipv6Addr>().unwrap().into();
        let d: IpAddr = "2001:2::2".parse::<Ipv6Addr>().unwrap().into();
        let mut b = [128u8, 0, 0, 0, 0, 7, 0, 1];
        let mut p = Icmpv6Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(s, d);
        assert!(p.verify_checksum(s, d));
        assert!(!p.verify_checksum(d, d));
        assert_eq!(
            parse_icmpv6_error(&b).unwrap_err().kind,
            ErrorKind::Malformed(Malformed::NotIcmpError)
        );
    }

    #[test]
    fn kinds_map_to_type_and_code() {
        assert_eq!(
            IcmpErrorKind::TimeExceeded { code: 1 }.v4_header(),
            Some((11, 1, 0))
        );
        assert_eq!(
            IcmpErrorKind::TimeExceeded { code: 0 }.v6_header(),
            Some((3, 0, 0))
        );
        assert_eq!(
            IcmpErrorKind::DestUnreachable { code: 4 }.v6_header(),
            Some((1, 4, 0))
        );
        assert_eq!(
            IcmpErrorKind::PacketTooBig { mtu: 1280 }.v6_header(),
            Some((2, 0, 1280))
        );
        assert_eq!(
            IcmpErrorKind::FragmentationNeeded { mtu: 9 }.v6_header(),
            None
        );
    }
}
