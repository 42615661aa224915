//! Ethernet II frames with up to two VLAN tags (802.1ad outer, 802.1Q inner).

use crate::error::{Error, Layer, Malformed, Result};

/// Length of the untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_TAG_LEN: usize = 4;
/// The most VLAN tags a frame may carry here.
pub const MAX_VLAN_TAGS: usize = 2;

/// An EtherType. Unknown values are data, not errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// IPv4 (0x0800).
    Ipv4,
    /// ARP (0x0806).
    Arp,
    /// 802.1Q customer VLAN tag (0x8100).
    Vlan,
    /// 802.1ad service VLAN tag (0x88a8).
    QinQ,
    /// IPv6 (0x86dd).
    Ipv6,
    /// Anything else.
    Unknown(u16),
}

impl From<u16> for EtherType {
    #[inline]
    fn from(v: u16) -> Self {
        match v {
            0x0800 => Self::Ipv4,
            0x0806 => Self::Arp,
            0x8100 => Self::Vlan,
            0x88a8 => Self::QinQ,
            0x86dd => Self::Ipv6,
            other => Self::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    #[inline]
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::QinQ => 0x88a8,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(v) => v,
        }
    }
}

impl EtherType {
    const fn is_tag(self) -> bool {
        matches!(self, Self::Vlan | Self::QinQ)
    }
}

/// One VLAN tag: its TPID and the 16-bit TCI (PCP, DEI, VID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// The tag protocol identifier ([`EtherType::Vlan`] or [`EtherType::QinQ`]).
    pub tpid: EtherType,
    /// Tag control information.
    pub tci: u16,
}

impl VlanTag {
    /// The 12-bit VLAN identifier.
    pub const fn vid(&self) -> u16 {
        self.tci & 0x0fff
    }
    /// The 3-bit priority code point.
    pub const fn pcp(&self) -> u8 {
        (self.tci >> 13) as u8
    }
}

/// A checked view of an Ethernet II frame. After [`EthernetFrame::new_checked`]
/// the MAC header and every tag it declares are known to be in the buffer.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T> {
    buffer: T,
    tags: u8,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Validates the header and up to [`MAX_VLAN_TAGS`] tags.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::too_short(Layer::Ethernet, b.len()));
        }
        let mut tags = 0u8;
        let mut type_at = 12;
        while EtherType::from(be16(b, type_at)).is_tag() {
            if usize::from(tags) == MAX_VLAN_TAGS {
                return Err(Error::malformed(
                    Layer::Vlan,
                    type_at,
                    Malformed::TooManyVlanTags,
                ));
            }
            if b.len() < type_at + 2 + VLAN_TAG_LEN {
                return Err(Error::too_short(Layer::Vlan, b.len()));
            }
            tags += 1;
            type_at += VLAN_TAG_LEN;
        }
        Ok(Self { buffer, tags })
    }

    /// Destination MAC.
    pub fn dst(&self) -> [u8; 6] {
        mac(self.buffer.as_ref(), 0)
    }
    /// Source MAC.
    pub fn src(&self) -> [u8; 6] {
        mac(self.buffer.as_ref(), 6)
    }
    /// Number of VLAN tags (0, 1 or 2).
    pub fn tag_count(&self) -> usize {
        usize::from(self.tags)
    }
    /// The `i`-th VLAN tag from the outside in.
    pub fn tag(&self, i: usize) -> Option<VlanTag> {
        (i < self.tag_count()).then(|| {
            let b = self.buffer.as_ref();
            let at = 12 + i * VLAN_TAG_LEN;
            VlanTag {
                tpid: EtherType::from(be16(b, at)),
                tci: be16(b, at + 2),
            }
        })
    }
    /// The EtherType of the payload (after all tags).
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(be16(
            self.buffer.as_ref(),
            12 + self.tag_count() * VLAN_TAG_LEN,
        ))
    }
    /// Length of the MAC header including tags: the payload's offset.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.tag_count() * VLAN_TAG_LEN
    }
    /// The payload (possibly with Ethernet padding at the end).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    pub fn set_dst(&mut self, m: [u8; 6]) {
        self.buffer.as_mut()[0..6].copy_from_slice(&m);
    }
    /// Sets the source MAC.
    pub fn set_src(&mut self, m: [u8; 6]) {
        self.buffer.as_mut()[6..12].copy_from_slice(&m);
    }
    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

/// The owned form of an Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// Up to two VLAN tags, outer first; `None` entries come last.
    pub tags: [Option<VlanTag>; MAX_VLAN_TAGS],
    /// Payload EtherType.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Reads the header from a checked frame.
    pub fn parse<T: AsRef<[u8]>>(f: &EthernetFrame<T>) -> Self {
        Self {
            dst: f.dst(),
            src: f.src(),
            tags: [f.tag(0), f.tag(1)],
            ethertype: f.ethertype(),
        }
    }

    /// Header length this repr emits.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.tags.iter().flatten().count() * VLAN_TAG_LEN
    }

    /// Writes the header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let len = self.buffer_len();
        if buf.len() < len {
            return Err(Error::too_short(Layer::Ethernet, buf.len()));
        }
        buf[0..6].copy_from_slice(&self.dst);
        buf[6..12].copy_from_slice(&self.src);
        let mut at = 12;
        for t in self.tags.iter().flatten() {
            buf[at..at + 2].copy_from_slice(&u16::from(t.tpid).to_be_bytes());
            buf[at + 2..at + 4].copy_from_slice(&t.tci.to_be_bytes());
            at += VLAN_TAG_LEN;
        }
        buf[at..at + 2].copy_from_slice(&u16::from(self.ethertype).to_be_bytes());
        Ok(())
    }
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn mac(b: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const UNTAGGED: [u8; 16] = [
        0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0x00,
    ];
    const QINQ: [u8; 22] = [
        0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x88, 0xa8, 0x20, 0x64, 0x81, 0x00, 0x00, 0xc8,
        0x86, 0xdd,
    ];

    #[test]
    fn decode_untagged() {
        let f = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.src(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.payload(), &[0x45, 0x00]);
    }

    #[test]
    fn decode_double_tagged() {
        let f = EthernetFrame::new_checked(&QINQ[..]).unwrap();
        assert_eq!(f.tag_count(), 2);
        let outer = f.tag(0).unwrap();
        assert_eq!(
            (outer.tpid, outer.vid(), outer.pcp()),
            (EtherType::QinQ, 100, 1)
        );
        assert_eq!(f.tag(1).unwrap().vid(), 200);
        assert_eq!(f.tag(2), None);
        assert_eq!(f.ethertype(), EtherType::Ipv6);
        assert_eq!(f.header_len(), 22);
        assert!(f.payload().is_empty());
    }

    #[test]
    fn encode_round_trips() {
        for frame in [&UNTAGGED[..14], &QINQ[..]] {
            let f = EthernetFrame::new_checked(frame).unwrap();
            let r = EthernetRepr::parse(&f);
            let mut out = [0u8; 22];
            r.emit(&mut out).unwrap();
            assert_eq!(&out[..r.buffer_len()], frame);
        }
    }

    #[test]
    fn too_short_at_every_byte() {
        for n in 0..QINQ.len() - 1 {
            let e = EthernetFrame::new_checked(&QINQ[..n]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::TooShort, "len {n}");
        }
    }

    #[test]
    fn three_tags_rejected() {
        let mut f = [0u8; 30];
        f[12..14].copy_from_slice(&[0x88, 0xa8]);
        f[16..18].copy_from_slice(&[0x81, 0x00]);
        f[20..22].copy_from_slice(&[0x81, 0x00]);
        let e = EthernetFrame::new_checked(&f[..]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Malformed(Malformed::TooManyVlanTags));
        assert_eq!(e.offset, 20);
    }

    #[test]
    fn emit_into_short_buffer_fails() {
        let r = EthernetRepr::parse(&EthernetFrame::new_checked(&QINQ[..]).unwrap());
        assert!(r.emit(&mut [0u8; 21]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn repr_round_trip(dst in proptest::prelude::any::<[u8; 6]>(), src in proptest::prelude::any::<[u8; 6]>(),
                           n in 0usize..3, tci in proptest::prelude::any::<[u16; 2]>(), et in 0u16..0x8000) {
            let tag = |i: usize, tpid| (i < n).then_some(VlanTag { tpid, tci: tci[i] });
            let r = EthernetRepr {
                dst, src,
                tags: [tag(0, if n == 2 { EtherType::QinQ } else { EtherType::Vlan }), tag(1, EtherType::Vlan)],
                ethertype: EtherType::from(et),
            };
            let mut b = [0u8; 22];
            r.emit(&mut b).unwrap();
            let f = EthernetFrame::new_checked(&b[..r.buffer_len()]).unwrap();
            proptest::prop_assert_eq!(EthernetRepr::parse(&f), r);
        }
    }

    #[test]
    fn setters() {
        let mut buf = UNTAGGED;
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst([1; 6]);
        f.set_src([3; 6]);
        f.payload_mut()[0] = 0x46;
        assert_eq!(&buf[..12], &[1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3]);
        assert_eq!(buf[14], 0x46);
    }
}
