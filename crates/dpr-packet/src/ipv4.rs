//! IPv4 headers, including options and fragment fields.

use crate::checksum;
use crate::error::{Error, Layer, Malformed, Result};
use crate::ethernet::be16;
use crate::ip::{Ecn, IpProtocol};
use core::net::Ipv4Addr;

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Length of the longest IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;
/// Largest options area.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - MIN_HEADER_LEN;

mod field {
    pub(super) const TOS: usize = 1;
    pub(super) const LENGTH: usize = 2;
    pub(super) const IDENT: usize = 4;
    pub(super) const FLAGS: usize = 6;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: usize = 10;
    pub(super) const SRC: core::ops::Range<usize> = 12..16;
    pub(super) const DST: core::ops::Range<usize> = 16..20;
}

const DF: u16 = 0x4000;
const MF: u16 = 0x2000;

/// A checked view of an IPv4 packet. After [`Ipv4Packet::new_checked`] the
/// header, its options and the `total length` it declares are all inside the
/// buffer, so no accessor can panic. The buffer may be longer than the packet
/// (Ethernet padding); [`Ipv4Packet::payload`] stops at the declared length.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Validates version, IHL and total length against the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        check_header(b, false)?;
        Ok(Self { buffer })
    }

    /// A view that only requires the header (with options) to be present,
    /// not the whole declared length: for the quote inside an ICMP error.
    pub fn new_truncated(buffer: T) -> Result<Self> {
        check_header(buffer.as_ref(), true)?;
        Ok(Self { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[0] & 0x0f) * 4
    }
    /// The DSCP (upper six bits of the TOS byte).
    pub fn dscp(&self) -> u8 {
        self.b()[field::TOS] >> 2
    }
    /// The ECN field.
    pub fn ecn(&self) -> Ecn {
        Ecn::from_bits(self.b()[field::TOS])
    }
    /// The whole TOS / traffic-class byte.
    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }
    /// Total length field.
    pub fn total_len(&self) -> u16 {
        be16(self.b(), field::LENGTH)
    }
    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.b(), field::IDENT)
    }
    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        be16(self.b(), field::FLAGS) & DF != 0
    }
    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        be16(self.b(), field::FLAGS) & MF != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.b(), field::FLAGS) & 0x1fff) << 3
    }
    /// True for any fragment (first or later).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }
    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }
    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.b()[field::PROTOCOL])
    }
    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }
    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        addr(&self.b()[field::SRC])
    }
    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        addr(&self.b()[field::DST])
    }
    /// The options bytes (possibly empty).
    pub fn options(&self) -> &[u8] {
        &self.b()[MIN_HEADER_LEN..self.header_len()]
    }
    /// An iterator over the options.
    pub fn option_iter(&self) -> Ipv4Options<'_> {
        Ipv4Options {
            data: self.options(),
            at: 0,
        }
    }
    /// True when the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.b()[..self.header_len()])) == 0
    }
    /// The payload, up to the declared total length (or the buffer end for a
    /// truncated view).
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.total_len()).min(self.b().len());
        &self.b()[self.header_len().min(end)..end]
    }
    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    fn set16_with_checksum(&mut self, at: usize, new: u16) {
        let old = be16(self.b(), at);
        let c = checksum::update_u16(self.checksum(), old, new);
        self.m()[at..at + 2].copy_from_slice(&new.to_be_bytes());
        self.m()[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
    /// Sets the TTL, updating the header checksum incrementally.
    pub fn set_ttl(&mut self, ttl: u8) {
        let word = u16::from(ttl) << 8 | u16::from(self.b()[field::PROTOCOL]);
        self.set16_with_checksum(field::TTL, word);
    }
    /// Decrements the TTL (RFC 1624 update). Returns the new TTL, or `None`
    /// (packet unchanged) when it was already 0 or 1 and must not be forwarded.
    pub fn decrement_ttl(&mut self) -> Option<u8> {
        let ttl = self.ttl();
        if ttl <= 1 {
            return None;
        }
        self.set_ttl(ttl - 1);
        Some(ttl - 1)
    }
    /// Sets the TOS byte (DSCP and ECN), updating the checksum.
    pub fn set_tos(&mut self, tos: u8) {
        let word = u16::from(self.b()[0]) << 8 | u16::from(tos);
        self.set16_with_checksum(0, word);
    }
    /// Sets the ECN field, updating the checksum.
    pub fn set_ecn(&mut self, ecn: Ecn) {
        self.set_tos(self.tos() & !3 | ecn.bits());
    }
    /// Sets the source address, updating the header checksum (not the
    /// transport checksum: see [`crate::rewrite`]).
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.set_addr(field::SRC.start, a);
    }
    /// Sets the destination address, updating the header checksum.
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.set_addr(field::DST.start, a);
    }
    fn set_addr(&mut self, at: usize, a: Ipv4Addr) {
        let o = a.octets();
        self.set16_with_checksum(at, u16::from_be_bytes([o[0], o[1]]));
        self.set16_with_checksum(at + 2, u16::from_be_bytes([o[2], o[3]]));
    }
    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        let h = self.header_len();
        self.m()[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&self.b()[..h]);
        self.m()[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
    /// The payload, mutable, up to the declared total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.total_len()).min(self.b().len());
        let start = self.header_len().min(end);
        &mut self.m()[start..end]
    }
}

#[inline]
fn check_header(b: &[u8], truncated_ok: bool) -> Result<()> {
    if b.len() < MIN_HEADER_LEN {
        return Err(Error::too_short(Layer::Ipv4, b.len()));
    }
    if b[0] >> 4 != 4 {
        return Err(Error::malformed(Layer::Ipv4, 0, Malformed::Version));
    }
    let hl = usize::from(b[0] & 0x0f) * 4;
    if hl < MIN_HEADER_LEN {
        return Err(Error::malformed(Layer::Ipv4, 0, Malformed::HeaderLength));
    }
    if hl > b.len() {
        return Err(Error::too_short(Layer::Ipv4, b.len()));
    }
    let total = usize::from(be16(b, field::LENGTH));
    if total < hl {
        return Err(Error::malformed(
            Layer::Ipv4,
            field::LENGTH,
            Malformed::TotalLength,
        ));
    }
    if total > b.len() && !truncated_ok {
        return Err(Error::too_short(Layer::Ipv4, b.len()));
    }
    Ok(())
}

fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// One IPv4 option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Option<'a> {
    /// The option type byte (copied flag, class and number).
    pub kind: u8,
    /// The option data after the type and length bytes (empty for EOL / NOP).
    pub data: &'a [u8],
}

/// Iterator over IPv4 options; yields an error for a bad length and then stops.
#[derive(Clone, Debug)]
pub struct Ipv4Options<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Ipv4Options<'a> {
    type Item = Result<Ipv4Option<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        let kind = *self.data.get(self.at)?;
        let start = self.at;
        match kind {
            0 => {
                self.at = self.data.len();
                Some(Ok(Ipv4Option { kind, data: &[] }))
            }
            1 => {
                self.at += 1;
                Some(Ok(Ipv4Option { kind, data: &[] }))
            }
            _ => {
                let bad = |at| {
                    Error::malformed(Layer::Ipv4, MIN_HEADER_LEN + at, Malformed::OptionLength)
                };
                let Some(&len) = self.data.get(start + 1) else {
                    self.at = self.data.len();
                    return Some(Err(bad(start + 1)));
                };
                let len = usize::from(len);
                if len < 2 || start + len > self.data.len() {
                    self.at = self.data.len();
                    return Some(Err(bad(start + 1)));
                }
                self.at = start + len;
                Some(Ok(Ipv4Option {
                    kind,
                    data: &self.data[start + 2..start + len],
                }))
            }
        }
    }
}

/// Owned IPv4 options, up to 40 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4OptionsBuf {
    bytes: [u8; MAX_OPTIONS_LEN],
    len: u8,
}

impl Default for Ipv4OptionsBuf {
    fn default() -> Self {
        Self {
            bytes: [0; MAX_OPTIONS_LEN],
            len: 0,
        }
    }
}

impl Ipv4OptionsBuf {
    /// Options from raw bytes; `None` when longer than 40 bytes.
    pub fn new(raw: &[u8]) -> Option<Self> {
        if raw.len() > MAX_OPTIONS_LEN {
            return None;
        }
        let mut bytes = [0u8; MAX_OPTIONS_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(Self {
            bytes,
            len: raw.len() as u8,
        })
    }
    /// The raw option bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
    /// Length once padded to a multiple of four.
    pub fn padded_len(&self) -> usize {
        (usize::from(self.len) + 3) & !3
    }
}

impl core::fmt::Debug for Ipv4OptionsBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.as_bytes()).finish()
    }
}

/// The owned form of an IPv4 header. The reserved flag bit (RFC 3514) is
/// not represented and is emitted as zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Payload length in bytes (total length minus header).
    pub payload_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// DSCP (six bits).
    pub dscp: u8,
    /// ECN field.
    pub ecn: Ecn,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
    /// Options (padded with end-of-list bytes on emit).
    pub options: Ipv4OptionsBuf,
}

impl Ipv4Repr {
    /// Reads the header of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Self {
        Self {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: p.total_len() - p.header_len() as u16,
            ttl: p.ttl(),
            dscp: p.dscp(),
            ecn: p.ecn(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
            // The checked view bounds the options to 40 bytes.
            options: Ipv4OptionsBuf::new(p.options()).unwrap_or_default(),
        }
    }

    /// Header length this repr emits.
    pub fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN + self.options.padded_len()
    }

    /// Writes the header (with a correct checksum) at the start of `buf`.
    /// Fails when `buf` is too short, the total length overflows, or the
    /// fragment offset is not a multiple of 8.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let hl = self.buffer_len();
        if buf.len() < hl {
            return Err(Error::too_short(Layer::Ipv4, buf.len()));
        }
        let total = usize::from(self.payload_len) + hl;
        if total > usize::from(u16::MAX) {
            return Err(Error::malformed(
                Layer::Ipv4,
                field::LENGTH,
                Malformed::Oversize,
            ));
        }
        if self.frag_offset % 8 != 0 {
            return Err(Error::malformed(
                Layer::Ipv4,
                field::FLAGS,
                Malformed::Fragment,
            ));
        }
        let h = &mut buf[..hl];
        h[0] = 0x40 | (hl / 4) as u8;
        h[field::TOS] = self.dscp << 2 | self.ecn.bits();
        h[field::LENGTH..field::LENGTH + 2].copy_from_slice(&(total as u16).to_be_bytes());
        h[field::IDENT..field::IDENT + 2].copy_from_slice(&self.ident.to_be_bytes());
        let flags = (if self.dont_frag { DF } else { 0 })
            | (if self.more_frags { MF } else { 0 })
            | (self.frag_offset >> 3);
        h[field::FLAGS..field::FLAGS + 2].copy_from_slice(&flags.to_be_bytes());
        h[field::TTL] = self.ttl;
        h[field::PROTOCOL] = u8::from(self.protocol);
        h[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&[0, 0]);
        h[field::SRC].copy_from_slice(&self.src.octets());
        h[field::DST].copy_from_slice(&self.dst.octets());
        let opts = self.options.as_bytes();
        h[MIN_HEADER_LEN..MIN_HEADER_LEN + opts.len()].copy_from_slice(opts);
        h[MIN_HEADER_LEN + opts.len()..].fill(0);
        let c = checksum::checksum(h);
        h[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use proptest::prelude::*;

    /// 198.18.0.1 -> 198.18.0.2, TCP, DF, TTL 64, 4 bytes of payload, with a
    /// router-alert option (RFC 2113), checksum filled.
    fn with_options() -> [u8; 28] {
        let mut p = [
            0x46, 0xb8, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 198, 18, 0, 1,
            198, 18, 0, 2, 0x94, 0x04, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef,
        ];
        let c = checksum::checksum(&p[..24]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn decode() {
        let b = with_options();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.dscp(), 46);
        assert_eq!(p.ecn(), Ecn::NotEct);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Tcp);
        assert_eq!(p.src(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum());
        let opts: std::vec::Vec<_> = p.option_iter().collect();
        assert_eq!(
            opts,
            [Ok(Ipv4Option {
                kind: 0x94,
                data: &[0, 0]
            })]
        );
    }

    #[test]
    fn encode_round_trips_byte_exact() {
        let b = with_options();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        let r = Ipv4Repr::parse(&p);
        let mut out = [0u8; 24];
        r.emit(&mut out).unwrap();
        assert_eq!(&out[..], &b[..24]);
    }

    #[test]
    fn padding_after_total_length_is_ignored() {
        let mut b = [0u8; 46];
        b[..28].copy_from_slice(&with_options());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
    }

    #[test]
    fn too_short_at_every_byte() {
        let b = with_options();
        for n in 0..b.len() {
            let e = Ipv4Packet::new_checked(&b[..n]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::TooShort, "len {n}");
        }
    }

    #[test]
    fn lying_lengths() {
        let mut b = with_options();
        b[0] = 0x44; // IHL 4 < 5
        let e = Ipv4Packet::new_checked(&b[..]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Malformed(Malformed::HeaderLength));
        b[0] = 0x4f; // IHL 15 = 60 bytes, past the 28-byte buffer
        assert!(Ipv4Packet::new_checked(&b[..]).unwrap_err().is_too_short());
        b[0] = 0x46;
        b[2..4].copy_from_slice(&20u16.to_be_bytes()); // total < header
        let e = Ipv4Packet::new_checked(&b[..]).unwrap_err();
        assert_eq!(e, Error::malformed(Layer::Ipv4, 2, Malformed::TotalLength));
        b[2..4].copy_from_slice(&29u16.to_be_bytes()); // total > buffer
        assert!(Ipv4Packet::new_checked(&b[..]).unwrap_err().is_too_short());
        assert!(Ipv4Packet::new_truncated(&b[..]).is_ok());
        b[0] = 0x65; // version 6
        let e = Ipv4Packet::new_checked(&b[..]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Malformed(Malformed::Version));
    }

    #[test]
    fn bad_option_lengths() {
        for (opts, at) in [
            ([0x94u8, 0x00, 0, 0], 21),
            ([0x94, 0x01, 0, 0], 21),
            ([0x94, 0x09, 0, 0], 21),
            ([1, 1, 1, 0x94], 24),
        ] {
            let mut b = with_options();
            b[20..24].copy_from_slice(&opts);
            let p = Ipv4Packet::new_checked(&b[..]).unwrap();
            let last = p.option_iter().last().unwrap();
            assert_eq!(
                last,
                Err(Error::malformed(Layer::Ipv4, at, Malformed::OptionLength)),
                "{opts:?}"
            );
        }
    }

    #[test]
    fn fragments() {
        let mut b = with_options();
        b[6..8].copy_from_slice(&(0x2000u16 | 185).to_be_bytes());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        let mut r = Ipv4Repr::parse(&p);
        r.frag_offset = 3;
        assert_eq!(
            r.emit(&mut [0u8; 24]).unwrap_err().kind,
            ErrorKind::Malformed(Malformed::Fragment)
        );
    }

    #[test]
    fn setters_keep_checksum_valid() {
        let mut b = with_options();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.decrement_ttl(), Some(63));
        assert!(p.verify_checksum());
        p.set_src(Ipv4Addr::new(198, 19, 255, 254));
        p.set_dst(Ipv4Addr::new(198, 18, 7, 9));
        p.set_ecn(Ecn::Ce);
        assert!(p.verify_checksum());
        assert_eq!(p.ecn(), Ecn::Ce);
        assert_eq!(p.dscp(), 46);
        p.set_ttl(1);
        assert_eq!(p.decrement_ttl(), None);
        assert_eq!(p.ttl(), 1);
        assert!(p.verify_checksum());
        p.payload_mut()[0] = 0;
        p.fill_checksum();
        assert!(p.verify_checksum());
    }

    #[test]
    fn reserved_flag_is_not_represented() {
        // Found by the `frame` fuzz target: flags byte 0xff.
        let mut b = with_options();
        b[6] = 0xff;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.dont_frag() && p.more_frags());
        let mut out = [0u8; 24];
        Ipv4Repr::parse(&p).emit(&mut out).unwrap();
        assert_eq!(out[6], 0x7f);
    }

    #[test]
    fn emit_errors() {
        let r = Ipv4Repr::parse(&Ipv4Packet::new_checked(&with_options()[..]).unwrap());
        assert!(r.emit(&mut [0u8; 23]).unwrap_err().is_too_short());
        let big = Ipv4Repr {
            payload_len: u16::MAX - 10,
            ..r
        };
        assert_eq!(
            big.emit(&mut [0u8; 24]).unwrap_err().kind,
            ErrorKind::Malformed(Malformed::Oversize)
        );
    }

    fn repr_strategy() -> impl Strategy<Value = Ipv4Repr> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            0u16..1000,
            any::<u8>(),
            0u8..64,
            0u8..4,
            any::<u16>(),
            any::<bool>(),
            any::<bool>(),
            0u16..8191,
            proptest::collection::vec(any::<u8>(), 0..=40),
        )
            .prop_map(
                |(s, d, p, len, ttl, dscp, ecn, id, df, mf, off, opts)| Ipv4Repr {
                    src: s.into(),
                    dst: d.into(),
                    protocol: p.into(),
                    payload_len: len,
                    ttl,
                    dscp,
                    ecn: Ecn::from_bits(ecn),
                    ident: id,
                    dont_frag: df,
                    more_frags: mf,
                    frag_offset: off << 3,
                    options: Ipv4OptionsBuf::new(&opts).unwrap(),
                },
            )
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(r in repr_strategy()) {
            let mut buf = std::vec![0u8; r.buffer_len() + usize::from(r.payload_len)];
            r.emit(&mut buf).unwrap();
            let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum());
            let back = Ipv4Repr::parse(&p);
            // Options come back padded to a multiple of four.
            let mut padded = [0u8; 40];
            padded[..r.options.as_bytes().len()].copy_from_slice(r.options.as_bytes());
            let expect = Ipv4Repr { options: Ipv4OptionsBuf::new(&padded[..r.options.padded_len()]).unwrap(), ..r };
            prop_assert_eq!(back, expect);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Ipv4Packet::new_checked(&data[..]) {
                let _ = (p.payload(), p.options(), p.verify_checksum(), Ipv4Repr::parse(&p));
                for o in p.option_iter() { let _ = o; }
            }
            if let Ok(p) = Ipv4Packet::new_truncated(&data[..]) {
                let _ = p.payload();
            }
        }
    }
}
