//! IPv6 headers and the extension-header chain.

use crate::error::{Error, Layer, Malformed, Result};
use crate::ethernet::be16;
use crate::ip::{Ecn, IpProtocol};
use core::net::Ipv6Addr;

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// The longest extension-header chain walked before giving up. RFC 8200
/// recommends at most one of each kind plus a repeated destination-options
/// header; eight leaves room for AH and ESP-less oddities while bounding work.
pub const MAX_EXT_HEADERS: usize = 8;
/// Length of the fragment extension header.
pub const FRAG_HEADER_LEN: usize = 8;

/// A checked view of an IPv6 packet: after [`Ipv6Packet::new_checked`] the
/// fixed header and the declared payload are inside the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Validates the version and the payload length against the buffer.
    /// Jumbograms (payload length 0 with a hop-by-hop header) are refused.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        check_header(buffer.as_ref(), false)?;
        Ok(Self { buffer })
    }

    /// A view that only requires the fixed header: for ICMP quotes.
    pub fn new_truncated(buffer: T) -> Result<Self> {
        check_header(buffer.as_ref(), true)?;
        Ok(Self { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// Traffic class byte (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (be16(self.b(), 0) >> 4) as u8
    }
    /// DSCP (upper six bits of the traffic class).
    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }
    /// ECN field.
    pub fn ecn(&self) -> Ecn {
        Ecn::from_bits(self.traffic_class())
    }
    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }
    /// Payload length field.
    pub fn payload_len(&self) -> u16 {
        be16(self.b(), 4)
    }
    /// Next header of the fixed header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.b()[6])
    }
    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.b()[7]
    }
    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        addr(&self.b()[8..24])
    }
    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        addr(&self.b()[24..40])
    }
    /// The payload (extension headers and upper layer), up to the declared
    /// length or, for a truncated view, the buffer end.
    pub fn payload(&self) -> &[u8] {
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(self.b().len());
        &self.b()[HEADER_LEN..end]
    }
    /// Walks the extension-header chain to the upper-layer header.
    pub fn ext_chain(&self) -> Result<ExtChain> {
        walk_ext(self.next_header(), self.payload()).map_err(|e| e.shifted(HEADER_LEN))
    }
    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.m()[7] = v;
    }
    /// Decrements the hop limit; `None` (unchanged) when it is 0 or 1.
    pub fn decrement_hop_limit(&mut self) -> Option<u8> {
        let h = self.hop_limit();
        if h <= 1 {
            return None;
        }
        self.set_hop_limit(h - 1);
        Some(h - 1)
    }
    /// Sets the traffic class byte.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = self.m();
        b[0] = 0x60 | tc >> 4;
        b[1] = (tc & 0x0f) << 4 | (b[1] & 0x0f);
    }
    /// Sets the ECN field.
    pub fn set_ecn(&mut self, ecn: Ecn) {
        self.set_traffic_class(self.traffic_class() & !3 | ecn.bits());
    }
    /// Sets the source address (the transport checksum is the caller's; see
    /// [`crate::rewrite`]).
    pub fn set_src(&mut self, a: Ipv6Addr) {
        self.m()[8..24].copy_from_slice(&a.octets());
    }
    /// Sets the destination address.
    pub fn set_dst(&mut self, a: Ipv6Addr) {
        self.m()[24..40].copy_from_slice(&a.octets());
    }
    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(self.b().len());
        &mut self.m()[HEADER_LEN..end]
    }
}

#[inline]
fn check_header(b: &[u8], truncated_ok: bool) -> Result<()> {
    if b.len() < HEADER_LEN {
        return Err(Error::too_short(Layer::Ipv6, b.len()));
    }
    if b[0] >> 4 != 6 {
        return Err(Error::malformed(Layer::Ipv6, 0, Malformed::Version));
    }
    let plen = usize::from(be16(b, 4));
    if plen == 0 && b[6] == 0 && b.len() > HEADER_LEN && !truncated_ok {
        return Err(Error::malformed(Layer::Ipv6, 4, Malformed::Jumbogram));
    }
    if HEADER_LEN + plen > b.len() && !truncated_ok {
        return Err(Error::too_short(Layer::Ipv6, b.len()));
    }
    Ok(())
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(b);
    Ipv6Addr::from(o)
}

/// The fragment header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6FragmentRepr {
    /// Next header after the fragment header.
    pub next_header: IpProtocol,
    /// Fragment offset in bytes (a multiple of 8).
    pub offset: u16,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

impl Ipv6FragmentRepr {
    /// Parses the eight bytes of a fragment header.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < FRAG_HEADER_LEN {
            return Err(Error::too_short(Layer::Ipv6Ext, b.len()));
        }
        let off = be16(b, 2);
        Ok(Self {
            next_header: IpProtocol::from(b[0]),
            offset: off & 0xfff8,
            more_frags: off & 1 != 0,
            ident: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
    /// Always [`FRAG_HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        FRAG_HEADER_LEN
    }
    /// Writes the header.
    pub fn emit(&self, b: &mut [u8]) -> Result<()> {
        if b.len() < FRAG_HEADER_LEN {
            return Err(Error::too_short(Layer::Ipv6Ext, b.len()));
        }
        if self.offset % 8 != 0 {
            return Err(Error::malformed(Layer::Ipv6Ext, 2, Malformed::Fragment));
        }
        b[0] = self.next_header.into();
        b[1] = 0;
        b[2..4].copy_from_slice(&(self.offset | u16::from(self.more_frags)).to_be_bytes());
        b[4..8].copy_from_slice(&self.ident.to_be_bytes());
        Ok(())
    }
}

/// Where the extension-header chain ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExtChain {
    /// The upper-layer protocol (or the last header kind not walked, such as ESP).
    pub protocol: IpProtocol,
    /// Offset of the upper-layer header from the start of the IPv6 payload.
    pub offset: usize,
    /// The fragment header, when the chain has one.
    pub fragment: Option<Ipv6FragmentRepr>,
    /// Number of extension headers walked.
    pub count: u8,
}

/// True for the next-header values this crate walks as extension headers.
pub fn is_extension(p: IpProtocol) -> bool {
    matches!(
        p,
        IpProtocol::HopByHop
            | IpProtocol::Ipv6Route
            | IpProtocol::Ipv6Frag
            | IpProtocol::Ipv6Opts
            | IpProtocol::Ah
    )
}

/// Walks the extension headers of an IPv6 payload starting at `first` until
/// an upper-layer protocol (including ESP and no-next-header, which are not
/// walked). For a non-first fragment the walk stops after the fragment header:
/// the upper-layer header is in an earlier fragment. Bounded by
/// [`MAX_EXT_HEADERS`]; offsets in errors are relative to `payload`.
pub fn walk_ext(first: IpProtocol, payload: &[u8]) -> Result<ExtChain> {
    let mut next = first;
    let mut at = 0usize;
    let mut fragment = None;
    let mut count = 0u8;
    while is_extension(next) {
        if usize::from(count) == MAX_EXT_HEADERS {
            return Err(Error::malformed(
                Layer::Ipv6Ext,
                at,
                Malformed::ExtChainTooLong,
            ));
        }
        if payload.len() < at + 2 {
            return Err(Error::too_short(Layer::Ipv6Ext, payload.len()));
        }
        let this = next;
        next = IpProtocol::from(payload[at]);
        let len = match this {
            IpProtocol::Ipv6Frag => FRAG_HEADER_LEN,
            IpProtocol::Ah => (usize::from(payload[at + 1]) + 2) * 4,
            _ => (usize::from(payload[at + 1]) + 1) * 8,
        };
        if payload.len() < at + len {
            return Err(Error::too_short(Layer::Ipv6Ext, payload.len()));
        }
        count += 1;
        if this == IpProtocol::Ipv6Frag {
            let f = Ipv6FragmentRepr::parse(&payload[at..at + len]).map_err(|e| e.shifted(at))?;
            fragment = Some(f);
            at += len;
            if f.offset != 0 {
                break;
            }
            continue;
        }
        at += len;
    }
    Ok(ExtChain {
        protocol: next,
        offset: at,
        fragment,
        count,
    })
}

/// The owned form of the fixed IPv6 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: IpProtocol,
    /// Payload length (extension headers included).
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow label (20 bits; higher bits are ignored on emit).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Reads the fixed header of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Self {
        Self {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        }
    }
    /// Always [`HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    /// Writes the fixed header at the start of `b`.
    pub fn emit(&self, b: &mut [u8]) -> Result<()> {
        if b.len() < HEADER_LEN {
            return Err(Error::too_short(Layer::Ipv6, b.len()));
        }
        let w0 = 6u32 << 28 | u32::from(self.traffic_class) << 20 | (self.flow_label & 0xf_ffff);
        b[0..4].copy_from_slice(&w0.to_be_bytes());
        b[4..6].copy_from_slice(&self.payload_len.to_be_bytes());
        b[6] = self.next_header.into();
        b[7] = self.hop_limit;
        b[8..24].copy_from_slice(&self.src.octets());
        b[24..40].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn base(next: u8, payload: &[u8]) -> Vec<u8> {
        let r = Ipv6Repr {
            src: "2001:2::1".parse().unwrap(),
            dst: "2001:2::2".parse().unwrap(),
            next_header: next.into(),
            payload_len: payload.len() as u16,
            hop_limit: 64,
            traffic_class: 0xb9,
            flow_label: 0x12345,
        };
        let mut v = std::vec![0u8; 40];
        r.emit(&mut v).unwrap();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decode_fixed_header() {
        let v = base(6, &[1, 2, 3, 4]);
        assert_eq!(&v[..4], &[0x6b, 0x91, 0x23, 0x45]);
        let p = Ipv6Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xb9);
        assert_eq!(p.dscp(), 46);
        assert_eq!(p.ecn(), Ecn::Ect1);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 4);
        assert_eq!(p.next_header(), IpProtocol::Tcp);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        let c = p.ext_chain().unwrap();
        assert_eq!(
            (c.protocol, c.offset, c.fragment, c.count),
            (IpProtocol::Tcp, 0, None, 0)
        );
    }

    #[test]
    fn too_short_and_lying() {
        let v = base(6, &[1, 2, 3, 4]);
        for n in 0..v.len() {
            assert!(
                Ipv6Packet::new_checked(&v[..n]).unwrap_err().is_too_short(),
                "{n}"
            );
        }
        let mut w = v.clone();
        w[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&w[..]).unwrap_err().kind,
            ErrorKind::Malformed(Malformed::Version)
        );
        let mut j = base(0, &[6, 0, 0xc2, 4, 0, 1, 0, 0]);
        j[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(
            Ipv6Packet::new_checked(&j[..]).unwrap_err().kind,
            ErrorKind::Malformed(Malformed::Jumbogram)
        );
        // Declared payload longer than the buffer: accepted only truncated.
        let mut t = v.clone();
        t[5] = 200;
        assert!(Ipv6Packet::new_checked(&t[..]).unwrap_err().is_too_short());
        assert_eq!(
            Ipv6Packet::new_truncated(&t[..]).unwrap().payload().len(),
            4
        );
    }

    #[test]
    fn walks_a_chain() {
        // hop-by-hop (8) -> routing (type 4, 24) -> fragment (8, first) -> dest opts (8) -> TCP
        let mut pl = Vec::new();
        pl.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]);
        pl.extend_from_slice(&[44, 2, 4, 0, 0, 0, 0, 0]);
        pl.extend_from_slice(&[0u8; 16]);
        pl.extend_from_slice(&[60, 0, 0x00, 0x01, 0, 0, 0, 7]);
        pl.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        pl.extend_from_slice(&[0xaa; 20]);
        let v = base(0, &pl);
        let p = Ipv6Packet::new_checked(&v[..]).unwrap();
        let c = p.ext_chain().unwrap();
        assert_eq!(c.protocol, IpProtocol::Tcp);
        assert_eq!(c.offset, 48);
        assert_eq!(c.count, 4);
        let f = c.fragment.unwrap();
        assert_eq!(
            (f.offset, f.more_frags, f.ident, f.next_header),
            (0, true, 7, IpProtocol::Ipv6Opts)
        );
    }

    #[test]
    fn non_first_fragment_stops_the_walk() {
        let v = base(44, &[6, 0, 0x05, 0xc8, 0, 0, 0, 9, 0xde, 0xad]);
        let c = Ipv6Packet::new_checked(&v[..])
            .unwrap()
            .ext_chain()
            .unwrap();
        assert_eq!(c.protocol, IpProtocol::Tcp);
        assert_eq!(c.offset, 8);
        assert_eq!(c.fragment.unwrap().offset, 1480);
    }

    #[test]
    fn chain_errors() {
        // Destination options whose length runs past the end.
        let v = base(60, &[6, 3, 0, 0, 0, 0, 0, 0]);
        let e = Ipv6Packet::new_checked(&v[..])
            .unwrap()
            .ext_chain()
            .unwrap_err();
        assert_eq!((e.layer, e.kind), (Layer::Ipv6Ext, ErrorKind::TooShort));
        // Nine destination-options headers in a row: over the bound.
        let mut pl = Vec::new();
        for _ in 0..9 {
            pl.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        let v = base(60, &pl);
        let e = Ipv6Packet::new_checked(&v[..])
            .unwrap()
            .ext_chain()
            .unwrap_err();
        assert_eq!(
            e,
            Error::malformed(Layer::Ipv6Ext, 40 + 64, Malformed::ExtChainTooLong)
        );
        // A chain with only one byte of header left.
        let v = base(0, &[6]);
        assert!(
            Ipv6Packet::new_checked(&v[..])
                .unwrap()
                .ext_chain()
                .unwrap_err()
                .is_too_short()
        );
    }

    #[test]
    fn setters() {
        let mut v = base(6, &[]);
        let mut p = Ipv6Packet::new_checked(&mut v[..]).unwrap();
        p.set_ecn(Ecn::Ce);
        assert_eq!(p.traffic_class(), 0xbb);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.decrement_hop_limit(), Some(63));
        p.set_hop_limit(1);
        assert_eq!(p.decrement_hop_limit(), None);
        p.set_src("2001:2::9".parse().unwrap());
        p.set_dst("2001:2::a".parse().unwrap());
        assert_eq!(p.src(), "2001:2::9".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst(), "2001:2::a".parse::<Ipv6Addr>().unwrap());
        assert!(p.payload_mut().is_empty());
    }

    #[test]
    fn fragment_repr_round_trip() {
        let f = Ipv6FragmentRepr {
            next_header: IpProtocol::Udp,
            offset: 2960,
            more_frags: true,
            ident: 0xdead_beef,
        };
        let mut b = [0u8; 8];
        f.emit(&mut b).unwrap();
        assert_eq!(Ipv6FragmentRepr::parse(&b).unwrap(), f);
        assert!(Ipv6FragmentRepr::parse(&b[..7]).unwrap_err().is_too_short());
        assert!(Ipv6FragmentRepr { offset: 3, ..f }.emit(&mut b).is_err());
        assert!(f.emit(&mut b[..7]).is_err());
    }

    proptest! {
        #[test]
        fn repr_round_trip(s in any::<u128>(), d in any::<u128>(), nh in any::<u8>(), len in any::<u16>(), hl in any::<u8>(), tc in any::<u8>(), fl in 0u32..0x10_0000) {
            let r = Ipv6Repr { src: Ipv6Addr::from_bits(s), dst: Ipv6Addr::from_bits(d), next_header: nh.into(), payload_len: len, hop_limit: hl, traffic_class: tc, flow_label: fl };
            let mut b = [0u8; 40];
            r.emit(&mut b).unwrap();
            let p = Ipv6Packet::new_truncated(&b[..]).unwrap();
            prop_assert_eq!(Ipv6Repr::parse(&p), r);
        }

        #[test]
        fn walk_never_panics(first in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = walk_ext(first.into(), &data);
        }
    }
}
