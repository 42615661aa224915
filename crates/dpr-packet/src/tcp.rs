//! TCP headers: flags, options, MSS read and rewrite, checksums.

use crate::checksum;
use crate::error::{Error, Layer, Malformed, Result};
use crate::ethernet::be16;
use crate::ip::IpProtocol;
use core::net::IpAddr;

/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Length of the longest TCP header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;

/// TCP control flags (the nine bits of the flags field, NS included).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    /// FIN.
    pub const FIN: Self = Self(0x001);
    /// SYN.
    pub const SYN: Self = Self(0x002);
    /// RST.
    pub const RST: Self = Self(0x004);
    /// PSH.
    pub const PSH: Self = Self(0x008);
    /// ACK.
    pub const ACK: Self = Self(0x010);
    /// URG.
    pub const URG: Self = Self(0x020);
    /// ECE.
    pub const ECE: Self = Self(0x040);
    /// CWR.
    pub const CWR: Self = Self(0x080);
    /// NS (RFC 3540, historic).
    pub const NS: Self = Self(0x100);

    /// True when every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    /// True when any flag of `other` is set.
    #[inline]
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
    /// A connection-opening SYN: SYN set, ACK and RST clear.
    #[inline]
    pub const fn is_syn(self) -> bool {
        self.0 & (Self::SYN.0 | Self::ACK.0 | Self::RST.0) == Self::SYN.0
    }
    /// A SYN-ACK.
    #[inline]
    pub const fn is_syn_ack(self) -> bool {
        self.0 & (Self::SYN.0 | Self::ACK.0 | Self::RST.0) == Self::SYN.0 | Self::ACK.0
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = Self;
    fn bitor(self, o: Self) -> Self {
        Self(self.0 | o.0)
    }
}

impl core::fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const NAMES: [&str; 9] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"];
        let mut first = true;
        for (i, n) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(n)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// One TCP option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// End of option list (kind 0).
    EndOfList,
    /// No-operation (kind 1).
    Nop,
    /// Maximum segment size (kind 2).
    Mss(u16),
    /// Window scale shift (kind 3).
    WindowScale(u8),
    /// SACK permitted (kind 4).
    SackPermitted,
    /// SACK blocks, raw (kind 5): pairs of 32-bit left and right edges.
    Sack(&'a [u8]),
    /// Timestamps (kind 8).
    Timestamps {
        /// TSval.
        value: u32,
        /// TSecr.
        echo: u32,
    },
    /// Any other option, raw.
    Unknown {
        /// Kind byte.
        kind: u8,
        /// Data after the kind and length bytes.
        data: &'a [u8],
    },
}

impl TcpOption<'_> {
    /// Bytes this option occupies when emitted.
    pub fn buffer_len(&self) -> usize {
        match self {
            Self::EndOfList | Self::Nop => 1,
            Self::Mss(_) => 4,
            Self::WindowScale(_) => 3,
            Self::SackPermitted => 2,
            Self::Sack(d) | Self::Unknown { data: d, .. } => 2 + d.len(),
            Self::Timestamps { .. } => 10,
        }
    }

    /// Writes the option at the start of `b`; returns its length.
    pub fn emit(&self, b: &mut [u8]) -> Result<usize> {
        let n = self.buffer_len();
        if b.len() < n || n > 40 {
            return Err(Error::too_short(Layer::TcpOption, b.len()));
        }
        let (kind, data): (u8, &[u8]) = match self {
            Self::EndOfList => (0, &[]),
            Self::Nop => (1, &[]),
            Self::Mss(v) => {
                b[..4].copy_from_slice(&[2, 4, (v >> 8) as u8, *v as u8]);
                return Ok(4);
            }
            Self::WindowScale(s) => {
                b[..3].copy_from_slice(&[3, 3, *s]);
                return Ok(3);
            }
            Self::SackPermitted => (4, &[]),
            Self::Sack(d) => (5, d),
            Self::Timestamps { value, echo } => {
                b[..2].copy_from_slice(&[8, 10]);
                b[2..6].copy_from_slice(&value.to_be_bytes());
                b[6..10].copy_from_slice(&echo.to_be_bytes());
                return Ok(10);
            }
            Self::Unknown { kind, data } => (*kind, data),
        };
        b[0] = kind;
        if n > 1 {
            b[1] = n as u8;
            b[2..n].copy_from_slice(data);
        }
        Ok(n)
    }
}

/// Iterator over the options area. Yields one error for a bad length (0, 1,
/// past the end, or wrong for a known kind) and then stops; stops after
/// end-of-list.
#[derive(Clone, Debug)]
pub struct TcpOptions<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> TcpOptions<'a> {
    /// Options from a raw options area (for callers holding the bytes only).
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    /// Like [`Iterator::next`], but also returns the option's offset within
    /// the options area.
    pub fn next_with_offset(&mut self) -> Option<Result<(usize, TcpOption<'a>)>> {
        let start = self.at;
        self.next().map(|r| r.map(|o| (start, o)))
    }

    fn fail(&mut self, at: usize, why: Malformed) -> Option<Result<TcpOption<'a>>> {
        self.at = self.data.len();
        Some(Err(Error::malformed(
            Layer::TcpOption,
            MIN_HEADER_LEN + at,
            why,
        )))
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.at;
        let kind = *self.data.get(start)?;
        match kind {
            0 => {
                self.at = self.data.len();
                return Some(Ok(TcpOption::EndOfList));
            }
            1 => {
                self.at += 1;
                return Some(Ok(TcpOption::Nop));
            }
            _ => {}
        }
        let Some(&len) = self.data.get(start + 1) else {
            return self.fail(start + 1, Malformed::OptionLength);
        };
        let len = usize::from(len);
        if len < 2 || start + len > self.data.len() {
            return self.fail(start + 1, Malformed::OptionLength);
        }
        let d = &self.data[start + 2..start + len];
        self.at = start + len;
        let opt = match (kind, len) {
            (2, 4) => TcpOption::Mss(be16(d, 0)),
            (3, 3) => TcpOption::WindowScale(d[0]),
            (4, 2) => TcpOption::SackPermitted,
            (5, l) if l >= 10 && (l - 2) % 8 == 0 => TcpOption::Sack(d),
            (8, 10) => TcpOption::Timestamps {
                value: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
                echo: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
            },
            (2..=5 | 8, _) => return self.fail(start + 1, Malformed::OptionValue),
            _ => TcpOption::Unknown { kind, data: d },
        };
        Some(Ok(opt))
    }
}

/// What [`TcpSegment::clamp_mss`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MssClamp {
    /// Not a SYN or SYN-ACK: nothing to do.
    NotSyn,
    /// A SYN without an MSS option (the peer assumes 536 / 1220).
    NoOption,
    /// The MSS was already at or below the limit.
    Unchanged(u16),
    /// Rewritten from `from` to `to`, checksum updated.
    Clamped {
        /// The MSS before.
        from: u16,
        /// The MSS after.
        to: u16,
    },
}

/// A checked view of a TCP segment. After [`TcpSegment::new_checked`] the
/// header and the options area it declares are in the buffer.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Validates the data offset against the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::too_short(Layer::Tcp, b.len()));
        }
        let hl = usize::from(b[12] >> 4) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(Error::malformed(Layer::Tcp, 12, Malformed::HeaderLength));
        }
        if hl > b.len() {
            return Err(Error::too_short(Layer::Tcp, b.len()));
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
    /// Sequence number.
    pub fn seq(&self) -> u32 {
        u32_at(self.b(), 4)
    }
    /// Acknowledgement number.
    pub fn ack(&self) -> u32 {
        u32_at(self.b(), 8)
    }
    /// Header length (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[12] >> 4) * 4
    }
    /// Control flags.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(be16(self.b(), 12) & 0x01ff)
    }
    /// Receive window.
    pub fn window(&self) -> u16 {
        be16(self.b(), 14)
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 16)
    }
    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        be16(self.b(), 18)
    }
    /// The raw options area.
    pub fn options(&self) -> &[u8] {
        &self.b()[MIN_HEADER_LEN..self.header_len()]
    }
    /// An iterator over the options.
    pub fn option_iter(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options())
    }
    /// The MSS option's value, if present and well formed.
    pub fn mss(&self) -> Result<Option<u16>> {
        for o in self.option_iter() {
            if let TcpOption::Mss(v) = o? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
    /// The payload after the options.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }
    /// True when the checksum verifies over this segment (whose length is the
    /// whole buffer) with the given pseudo-header addresses.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        transport_checksum(src, dst, IpProtocol::Tcp, self.b()) == 0
    }
    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    /// Sets the source port (checksum not updated; see [`Self::fill_checksum`]).
    pub fn set_src_port(&mut self, v: u16) {
        self.m()[0..2].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the destination port (checksum not updated).
    pub fn set_dst_port(&mut self, v: u16) {
        self.m()[2..4].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.m()[16..18].copy_from_slice(&v.to_be_bytes());
    }
    /// Computes and stores the checksum for this segment (the whole buffer).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let c = transport_checksum(src, dst, IpProtocol::Tcp, self.b());
        self.set_checksum(c);
    }
    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.m()[h..]
    }

    /// Lowers the MSS option of a SYN or SYN-ACK to at most `max`, updating
    /// the checksum incrementally (RFC 1624) so a bad checksum stays bad and
    /// a good one stays good. A malformed options area is an error and the
    /// segment is left untouched.
    pub fn clamp_mss(&mut self, max: u16) -> Result<MssClamp> {
        let f = self.flags();
        if !(f.is_syn() || f.is_syn_ack()) {
            return Ok(MssClamp::NotSyn);
        }
        let mut it = self.option_iter();
        let mut found = None;
        while let Some(r) = it.next_with_offset() {
            if let (at, TcpOption::Mss(v)) = r? {
                found = Some((MIN_HEADER_LEN + at + 2, v));
                break;
            }
        }
        let Some((at, from)) = found else {
            return Ok(MssClamp::NoOption);
        };
        if from <= max {
            return Ok(MssClamp::Unchanged(from));
        }
        // The value may sit at an odd offset (after one NOP): update the
        // 16-bit-aligned window that covers it. The header length is a
        // multiple of 4, so the window stays inside the header.
        let start = at & !1;
        let end = (at + 3) & !1;
        let mut old = [0u8; 4];
        old[..end - start].copy_from_slice(&self.b()[start..end]);
        self.m()[at..at + 2].copy_from_slice(&max.to_be_bytes());
        let new = &self.b()[start..end];
        let c = checksum::update_bytes(self.checksum(), &old[..end - start], new);
        self.set_checksum(c);
        Ok(MssClamp::Clamped { from, to: max })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The checksum of a transport segment or ICMPv6 message `data` (its own
/// checksum field included as it stands) under the pseudo-header of `src`,
/// `dst` and `protocol`: 0 when a filled-in checksum verifies; the value to
/// store when the field was zeroed first.
#[inline]
pub fn transport_checksum(src: IpAddr, dst: IpAddr, protocol: IpProtocol, data: &[u8]) -> u16 {
    let ph = pseudo_header(src, dst, protocol, data.len());
    checksum::fold(checksum::combine(ph, checksum::sum(data)))
}

/// The pseudo-header partial sum for a transport segment of `len` bytes.
/// Mixed address families (a caller bug) sum as IPv4-mapped IPv6.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: IpProtocol, len: usize) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            checksum::pseudo_header_v4(s, d, protocol.into(), len as u16)
        }
        (s, d) => checksum::pseudo_header_v6(to6(s), to6(d), protocol.into(), len as u32),
    }
}

fn to6(a: IpAddr) -> core::net::Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// Owned TCP options area (up to 40 bytes, padded on emit).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpOptionsBuf {
    bytes: [u8; 40],
    len: u8,
}

impl Default for TcpOptionsBuf {
    fn default() -> Self {
        Self {
            bytes: [0; 40],
            len: 0,
        }
    }
}

impl TcpOptionsBuf {
    /// From raw bytes; `None` when longer than 40 bytes.
    pub fn new(raw: &[u8]) -> Option<Self> {
        if raw.len() > 40 {
            return None;
        }
        let mut bytes = [0u8; 40];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(Self {
            bytes,
            len: raw.len() as u8,
        })
    }
    /// Builds an options area from typed options; `None` when over 40 bytes.
    pub fn from_options(opts: &[TcpOption<'_>]) -> Option<Self> {
        let mut s = Self::default();
        let mut at = 0;
        for o in opts {
            at += o.emit(s.bytes.get_mut(at..)?).ok()?;
        }
        s.len = at as u8;
        Some(s)
    }
    /// Raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
    /// Length padded to a multiple of four.
    pub fn padded_len(&self) -> usize {
        (usize::from(self.len) + 3) & !3
    }
}

impl core::fmt::Debug for TcpOptionsBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list()
            .entries(TcpOptions::new(self.as_bytes()))
            .finish()
    }
}

/// The owned form of a TCP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Window.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Options (padded with zero / end-of-list on emit).
    pub options: TcpOptionsBuf,
}

impl TcpRepr {
    /// Reads the header of a checked segment.
    pub fn parse<T: AsRef<[u8]>>(s: &TcpSegment<T>) -> Self {
        Self {
            src_port: s.src_port(),
            dst_port: s.dst_port(),
            seq: s.seq(),
            ack: s.ack(),
            flags: s.flags(),
            window: s.window(),
            urgent: s.urgent(),
            options: TcpOptionsBuf::new(s.options()).unwrap_or_default(),
        }
    }
    /// Header length this repr emits.
    pub fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN + self.options.padded_len()
    }
    /// Writes header and `payload` into `b` (which must be exactly header +
    /// payload long) with the checksum for the given addresses.
    pub fn emit(&self, b: &mut [u8], src: IpAddr, dst: IpAddr, payload: &[u8]) -> Result<()> {
        let hl = self.buffer_len();
        if b.len() != hl + payload.len() {
            return Err(Error::too_short(Layer::Tcp, b.len()));
        }
        b[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        b[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        b[4..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..12].copy_from_slice(&self.ack.to_be_bytes());
        let off_flags = ((hl / 4) as u16) << 12 | (self.flags.0 & 0x01ff);
        b[12..14].copy_from_slice(&off_flags.to_be_bytes());
        b[14..16].copy_from_slice(&self.window.to_be_bytes());
        b[16..18].copy_from_slice(&[0, 0]);
        b[18..20].copy_from_slice(&self.urgent.to_be_bytes());
        let o = self.options.as_bytes();
        b[20..20 + o.len()].copy_from_slice(o);
        b[20 + o.len()..hl].fill(0);
        b[hl..].copy_from_slice(payload);
        TcpSegment::new_checked(&mut *b)?.fill_checksum(src, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use core::net::Ipv4Addr;
    use proptest::prelude::*;
    use std::vec::Vec;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

    fn syn(opts: &[u8]) -> Vec<u8> {
        let r = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq: 0x0102_0304,
            ack: 0,
            flags: TcpFlags::SYN,
            window: 64240,
            urgent: 0,
            options: TcpOptionsBuf::new(opts).unwrap(),
        };
        let mut b = std::vec![0u8; r.buffer_len()];
        r.emit(&mut b, SRC, DST, &[]).unwrap();
        b
    }

    /// A Linux-style SYN options area: MSS, SACK-perm, TS, NOP, WS.
    const LINUX: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    #[test]
    fn decode_linux_syn() {
        let b = syn(&LINUX);
        assert_eq!(&b[12..14], &[0xa0, 0x02]);
        let s = TcpSegment::new_checked(&b[..]).unwrap();
        assert_eq!(
            (s.src_port(), s.dst_port(), s.seq(), s.ack()),
            (40000, 80, 0x0102_0304, 0)
        );
        assert_eq!(s.header_len(), 40);
        assert!(s.flags().is_syn() && !s.flags().is_syn_ack());
        assert_eq!(s.window(), 64240);
        assert_eq!(s.mss().unwrap(), Some(1460));
        let opts: Result<Vec<_>> = s.option_iter().collect();
        assert_eq!(
            opts.unwrap(),
            [
                TcpOption::Mss(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps { value: 1, echo: 0 },
                TcpOption::Nop,
                TcpOption::WindowScale(7)
            ]
        );
        assert!(s.verify_checksum(SRC, DST));
        assert!(!s.verify_checksum(DST, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3))));
        assert_eq!(std::format!("{:?}", s.flags() | TcpFlags::ACK), "SYN|ACK");
    }

    #[test]
    fn too_short_and_bad_offset() {
        let b = syn(&LINUX);
        for n in 0..40 {
            assert!(
                TcpSegment::new_checked(&b[..n]).unwrap_err().is_too_short(),
                "{n}"
            );
        }
        let mut c = b.clone();
        c[12] = 0x40;
        assert_eq!(
            TcpSegment::new_checked(&c[..]).unwrap_err(),
            Error::malformed(Layer::Tcp, 12, Malformed::HeaderLength)
        );
        c[12] = 0xf0; // 60 bytes declared, 40 present
        assert!(TcpSegment::new_checked(&c[..]).unwrap_err().is_too_short());
    }

    #[test]
    fn bad_options() {
        for (opts, why) in [
            ([2u8, 0, 0, 0], Malformed::OptionLength),
            ([3, 1, 0, 0], Malformed::OptionLength),
            ([8, 12, 0, 0], Malformed::OptionLength),
            ([2, 3, 5, 0], Malformed::OptionValue),
            ([1, 1, 1, 2], Malformed::OptionLength),
        ] {
            let b = syn(&opts);
            let mut s = TcpSegment::new_checked(b.clone()).unwrap();
            let e = s.option_iter().find_map(|o| o.err()).unwrap();
            assert_eq!(e.kind, ErrorKind::Malformed(why), "{opts:?}");
            assert!(s.mss().is_err());
            assert!(s.clamp_mss(1000).is_err());
            assert_eq!(s.into_inner(), b, "untouched on error");
        }
    }

    #[test]
    fn unknown_and_sack_options() {
        let b = syn(&[5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 30, 4, 9, 9, 0, 0]);
        let s = TcpSegment::new_checked(&b[..]).unwrap();
        let v: Vec<_> = s.option_iter().collect::<Result<_>>().unwrap();
        assert_eq!(v[0], TcpOption::Sack(&[0, 0, 0, 1, 0, 0, 0, 2]));
        assert_eq!(
            v[1],
            TcpOption::Unknown {
                kind: 30,
                data: &[9, 9]
            }
        );
        assert_eq!(v[2], TcpOption::EndOfList);
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn clamp_mss_at_even_and_odd_offsets() {
        for opts in [
            &LINUX[..],
            &[1, 2, 4, 0x05, 0xb4, 1, 1, 1][..],
            &[1, 1, 1, 2, 4, 0x23, 0x28, 0][..],
        ] {
            let mut b = syn(opts);
            let before = TcpSegment::new_checked(&b[..])
                .unwrap()
                .mss()
                .unwrap()
                .unwrap();
            let mut s = TcpSegment::new_checked(&mut b[..]).unwrap();
            assert_eq!(
                s.clamp_mss(1360).unwrap(),
                MssClamp::Clamped {
                    from: before,
                    to: 1360
                }
            );
            assert_eq!(s.mss().unwrap(), Some(1360));
            assert!(s.verify_checksum(SRC, DST), "{opts:?}");
            assert_eq!(s.clamp_mss(1360).unwrap(), MssClamp::Unchanged(1360));
            assert_eq!(s.clamp_mss(1400).unwrap(), MssClamp::Unchanged(1360));
        }
    }

    #[test]
    fn clamp_mss_leaves_others_alone() {
        let mut b = syn(&[3, 3, 7, 0]);
        let mut s = TcpSegment::new_checked(&mut b[..]).unwrap();
        assert_eq!(s.clamp_mss(1000).unwrap(), MssClamp::NoOption);
        let mut b = syn(&LINUX);
        b[13] = 0x10; // ACK only
        let mut s = TcpSegment::new_checked(&mut b[..]).unwrap();
        assert_eq!(s.clamp_mss(1000).unwrap(), MssClamp::NotSyn);
        b[13] = 0x12; // SYN-ACK
        let mut s = TcpSegment::new_checked(&mut b[..]).unwrap();
        assert!(matches!(
            s.clamp_mss(1000).unwrap(),
            MssClamp::Clamped { .. }
        ));
    }

    #[test]
    fn option_emit_round_trip() {
        let opts = [
            TcpOption::Mss(1220),
            TcpOption::Nop,
            TcpOption::WindowScale(9),
            TcpOption::SackPermitted,
            TcpOption::Timestamps { value: 7, echo: 8 },
            TcpOption::Unknown {
                kind: 34,
                data: &[1, 2],
            },
        ];
        let buf = TcpOptionsBuf::from_options(&opts).unwrap();
        let back: Vec<_> = TcpOptions::new(buf.as_bytes())
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(back, opts);
        assert!(
            TcpOptionsBuf::from_options(&[TcpOption::Timestamps { value: 0, echo: 0 }; 5])
                .is_none()
        );
    }

    fn repr_strategy() -> impl Strategy<Value = TcpRepr> {
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            0u16..0x200,
            any::<u16>(),
            any::<u16>(),
            0usize..=10,
        )
            .prop_map(|(sp, dp, seq, ack, fl, win, urg, n)| {
                let mut opts = Vec::new();
                for i in 0..n {
                    opts.push(match i % 4 {
                        0 => TcpOption::Mss(win),
                        1 => TcpOption::Nop,
                        2 => TcpOption::WindowScale(n as u8),
                        _ => TcpOption::SackPermitted,
                    });
                }
                TcpRepr {
                    src_port: sp,
                    dst_port: dp,
                    seq,
                    ack,
                    flags: TcpFlags(fl),
                    window: win,
                    urgent: urg,
                    options: TcpOptionsBuf::from_options(&opts).unwrap(),
                }
            })
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(r in repr_strategy(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = std::vec![0u8; r.buffer_len() + payload.len()];
            r.emit(&mut b, SRC, DST, &payload).unwrap();
            let s = TcpSegment::new_checked(&b[..]).unwrap();
            prop_assert!(s.verify_checksum(SRC, DST));
            prop_assert_eq!(s.payload(), &payload[..]);
            let back = TcpRepr::parse(&s);
            let mut padded = [0u8; 40];
            padded[..r.options.as_bytes().len()].copy_from_slice(r.options.as_bytes());
            prop_assert_eq!(back, TcpRepr { options: TcpOptionsBuf::new(&padded[..r.options.padded_len()]).unwrap(), ..r });
        }

        #[test]
        fn clamp_keeps_checksum_valid(pre in 0usize..8, mss in any::<u16>(), max in any::<u16>(), ack in any::<bool>(), payload in proptest::collection::vec(any::<u8>(), 0..9)) {
            let mut opts = std::vec![1u8; pre];
            opts.extend_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
            let mut b = syn(&opts);
            if ack { b[13] |= 0x10; }
            // Add a payload so odd segment lengths are covered too.
            let mut s = TcpSegment::new_checked(b).unwrap();
            let mut v = s.into_inner();
            v.extend_from_slice(&payload);
            TcpSegment::new_checked(&mut v[..]).unwrap().fill_checksum(SRC, DST);
            s = TcpSegment::new_checked(v).unwrap();
            let r = s.clamp_mss(max).unwrap();
            prop_assert!(s.verify_checksum(SRC, DST));
            prop_assert_eq!(s.mss().unwrap(), Some(mss.min(max)));
            prop_assert_eq!(matches!(r, MssClamp::Clamped { .. }), mss > max);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..80), max in any::<u16>()) {
            let mut data = data;
            if let Ok(mut s) = TcpSegment::new_checked(&mut data[..]) {
                for o in s.option_iter() { let _ = o; }
                let _ = (s.mss(), s.payload().len(), TcpRepr::parse(&s));
                let _ = s.clamp_mss(max);
            }
        }
    }
}
