//! UDP headers.

use crate::error::{Error, Layer, Malformed, Result};
use crate::ethernet::be16;
use crate::ip::IpProtocol;
use crate::tcp::transport_checksum;
use core::net::IpAddr;

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A checked view of a UDP datagram: header present, length field between 8
/// and the buffer length.
#[derive(Debug, Clone, Copy)]
pub struct UdpDatagram<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    /// Validates the length field against the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::too_short(Layer::Udp, b.len()));
        }
        let len = usize::from(be16(b, 4));
        if len < HEADER_LEN {
            return Err(Error::malformed(Layer::Udp, 4, Malformed::TotalLength));
        }
        if len > b.len() {
            return Err(Error::too_short(Layer::Udp, b.len()));
        }
        Ok(Self { buffer })
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.b(), 0)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.b(), 2)
    }
    /// Length field (header and payload).
    pub fn len(&self) -> u16 {
        be16(self.b(), 4)
    }
    /// True when the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() as usize == HEADER_LEN
    }
    /// Checksum field (0: none, IPv4 only).
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 6)
    }
    /// The payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..usize::from(self.len())]
    }
    /// True when the checksum verifies, or is absent (zero) over IPv4.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if self.checksum() == 0 {
            return matches!(src, IpAddr::V4(_));
        }
        let l = usize::from(self.len());
        transport_checksum(src, dst, IpProtocol::Udp, &self.b()[..l]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    /// Computes and stores the checksum (0 is sent as 0xffff).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.buffer.as_mut()[6..8].copy_from_slice(&[0, 0]);
        let l = usize::from(self.len());
        let mut c = transport_checksum(src, dst, IpProtocol::Udp, &self.b()[..l]);
        if c == 0 {
            c = 0xffff;
        }
        self.buffer.as_mut()[6..8].copy_from_slice(&c.to_be_bytes());
    }
}

/// The owned form of a UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Reads a checked datagram's header.
    pub fn parse<T: AsRef<[u8]>>(d: &UdpDatagram<T>) -> Self {
        Self {
            src_port: d.src_port(),
            dst_port: d.dst_port(),
        }
    }
    /// Always [`HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    /// Writes header and payload into `b` (exactly 8 + payload bytes) with a
    /// checksum for the given addresses.
    pub fn emit(&self, b: &mut [u8], src: IpAddr, dst: IpAddr, payload: &[u8]) -> Result<()> {
        let total = HEADER_LEN + payload.len();
        if b.len() != total || total > usize::from(u16::MAX) {
            return Err(Error::too_short(Layer::Udp, b.len()));
        }
        b[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        b[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        b[4..6].copy_from_slice(&(total as u16).to_be_bytes());
        b[HEADER_LEN..].copy_from_slice(payload);
        UdpDatagram::new_checked(&mut *b)?.fill_checksum(src, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;

    const S4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const D4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

    #[test]
    fn decode_encode() {
        let mut b = [0u8; 12];
        UdpRepr {
            src_port: 5353,
            dst_port: 53,
        }
        .emit(&mut b, S4, D4, b"abcd")
        .unwrap();
        let d = UdpDatagram::new_checked(&b[..]).unwrap();
        assert_eq!((d.src_port(), d.dst_port(), d.len()), (5353, 53, 12));
        assert_eq!(d.payload(), b"abcd");
        assert!(d.verify_checksum(S4, D4) && !d.is_empty());
        assert_eq!(
            UdpRepr::parse(&d),
            UdpRepr {
                src_port: 5353,
                dst_port: 53
            }
        );
    }

    #[test]
    fn zero_checksum_means_none_on_v4_only() {
        let mut b = [0u8; 8];
        UdpRepr {
            src_port: 1,
            dst_port: 2,
        }
        .emit(&mut b, S4, D4, &[])
        .unwrap();
        b[6..8].copy_from_slice(&[0, 0]);
        let d = UdpDatagram::new_checked(&b[..]).unwrap();
        assert!(d.verify_checksum(S4, D4));
        let s6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(!d.verify_checksum(s6, s6));
    }

    #[test]
    fn lengths() {
        let mut b = [0u8; 12];
        UdpRepr {
            src_port: 1,
            dst_port: 2,
        }
        .emit(&mut b, S4, D4, b"abcd")
        .unwrap();
        for n in 0..12 {
            assert!(
                UdpDatagram::new_checked(&b[..n])
                    .unwrap_err()
                    .is_too_short()
            );
        }
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpDatagram::new_checked(&b[..]).unwrap_err().kind,
            ErrorKind::Malformed(Malformed::TotalLength)
        );
        // Length shorter than the buffer: trailing bytes are not payload.
        b[4..6].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(UdpDatagram::new_checked(&b[..]).unwrap().payload(), b"ab");
        assert!(
            UdpRepr {
                src_port: 1,
                dst_port: 2
            }
            .emit(&mut b, S4, D4, b"abc")
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn round_trip_v6(sp in any::<u16>(), dp in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..100)) {
            let s = IpAddr::V6("2001:2::1".parse().unwrap());
            let d = IpAddr::V6("2001:2::2".parse().unwrap());
            let mut b = std::vec![0u8; 8 + payload.len()];
            UdpRepr { src_port: sp, dst_port: dp }.emit(&mut b, s, d, &payload).unwrap();
            let u = UdpDatagram::new_checked(&b[..]).unwrap();
            prop_assert!(u.checksum() != 0 && u.verify_checksum(s, d));
            prop_assert_eq!(u.payload(), &payload[..]);
        }
    }
}
