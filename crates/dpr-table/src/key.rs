//! Compact stored forms of a [`FlowKey`].
//!
//! A [`FlowKey`] is 40 bytes because `IpAddr` is an enum of a 16-byte
//! address. The table stores keys in compact forms instead: every flow
//! whose addresses are both IPv4 as a [`V4Key`] (13 bytes, alignment 1, so
//! it packs into the entry's padding), and, in a table whose [`TableKey`]
//! form is [`WideKey`] (38 bytes), any other flow as a `WideKey` in a slab
//! beside the entries. The form names what a table accepts: `V4Key`
//! tables refuse IPv6 flows.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use dpr_packet::{FlowKey, IpProtocol};

/// A stored key form: converts from and to [`FlowKey`] without loss.
///
/// Whatever the form, a [`ConnTable`](crate::ConnTable) stores a flow whose
/// two addresses are IPv4 as a [`V4Key`] inside its entry, and only other
/// flows in this form (beside the entries, see the table's module
/// documentation): so a form must accept every IPv4 flow.
pub trait TableKey: Copy + Eq + core::fmt::Debug {
    /// Where an entry keeps its opening SYN's sequence number: `u32` where
    /// the entry has room for it in its padding ([`WideKey`]), `()` where
    /// it would make the entry larger ([`V4Key`]: 48 bytes, no spare byte).
    type Isn: IsnSlot;
    /// The stored form of `flow`, or `None` if this form cannot hold it.
    fn from_flow(flow: &FlowKey) -> Option<Self>;
    /// The flow this key stands for.
    fn to_flow(&self) -> FlowKey;
}

/// Storage for an initial sequence number, or none.
pub trait IsnSlot: Copy + Default + core::fmt::Debug {
    /// Stores `isn` (a no-op where there is no room).
    fn store(isn: u32) -> Self;
    /// The stored number, if this form keeps one.
    fn load(&self) -> Option<u32>;
}

impl IsnSlot for u32 {
    #[inline]
    fn store(isn: u32) -> Self {
        isn
    }
    #[inline]
    fn load(&self) -> Option<u32> {
        Some(*self)
    }
}

impl IsnSlot for () {
    #[inline]
    fn store(_: u32) -> Self {}
    #[inline]
    fn load(&self) -> Option<u32> {
        None
    }
}

/// An IPv4 five-tuple in 13 bytes with alignment 1.
#[derive(Clone, Copy, Debug, Eq)]
pub struct V4Key {
    bytes: [u8; 13],
}

impl PartialEq for V4Key {
    /// Three word compares (8 + 4 + 1 bytes) instead of a byte loop.
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.bytes, &other.bytes);
        let w8 =
            |x: &[u8; 13]| u64::from_ne_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]);
        let w4 = |x: &[u8; 13]| u32::from_ne_bytes([x[8], x[9], x[10], x[11]]);
        w8(a) == w8(b) && w4(a) == w4(b) && a[12] == b[12]
    }
}

impl V4Key {
    /// A stand-in for a key stored elsewhere: its position `i` in the
    /// table's wide-key slab, in the first four bytes.
    #[inline]
    pub(crate) fn from_side(i: u32) -> Self {
        let mut bytes = [0u8; 13];
        bytes[0..4].copy_from_slice(&i.to_ne_bytes());
        Self { bytes }
    }

    /// The position that [`from_side`](Self::from_side) stored.
    #[inline]
    pub(crate) fn side(&self) -> u32 {
        let b = &self.bytes;
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl TableKey for V4Key {
    type Isn = ();
    #[inline]
    fn from_flow(flow: &FlowKey) -> Option<Self> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (flow.src, flow.dst) else {
            return None;
        };
        // Written in the widths `eq` reads (8, 4 and 1 bytes): a key just
        // built is compared at once, and a wide load of bytes written one
        // field at a time waits for them to reach the cache instead of
        // being forwarded from the stores (~15 cycles a look-up).
        let [s0, s1, s2, s3] = s.octets();
        let [d0, d1, d2, d3] = d.octets();
        let [p0, p1] = flow.src_port.to_be_bytes();
        let [q0, q1] = flow.dst_port.to_be_bytes();
        let addrs = u64::from_ne_bytes([s0, s1, s2, s3, d0, d1, d2, d3]);
        let ports = u32::from_ne_bytes([p0, p1, q0, q1]);
        let mut bytes = [0u8; 13];
        bytes[0..8].copy_from_slice(&addrs.to_ne_bytes());
        bytes[8..12].copy_from_slice(&ports.to_ne_bytes());
        bytes[12] = u8::from(flow.protocol);
        Some(Self { bytes })
    }

    fn to_flow(&self) -> FlowKey {
        let b = &self.bytes;
        FlowKey::new(
            IpProtocol::from(b[12]),
            Ipv4Addr::new(b[0], b[1], b[2], b[3]).into(),
            u16::from_be_bytes([b[8], b[9]]),
            Ipv4Addr::new(b[4], b[5], b[6], b[7]).into(),
            u16::from_be_bytes([b[10], b[11]]),
        )
    }
}

/// Any five-tuple (IPv4, IPv6 or mixed) in 38 bytes with alignment 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WideKey {
    src: [u8; 16],
    dst: [u8; 16],
    ports: [u8; 4],
    protocol: u8,
    /// Bit 0: source is IPv4; bit 1: destination is IPv4.
    families: u8,
}

fn addr_bytes(a: IpAddr) -> ([u8; 16], bool) {
    match a {
        IpAddr::V4(v) => (v.to_ipv6_mapped().octets(), true),
        IpAddr::V6(v) => (v.octets(), false),
    }
}

fn addr_from(bytes: [u8; 16], v4: bool) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match (v4, v6.to_ipv4_mapped()) {
        (true, Some(v)) => IpAddr::V4(v),
        _ => IpAddr::V6(v6),
    }
}

impl TableKey for WideKey {
    type Isn = u32;
    #[inline]
    fn from_flow(flow: &FlowKey) -> Option<Self> {
        let (src, s4) = addr_bytes(flow.src);
        let (dst, d4) = addr_bytes(flow.dst);
        let mut ports = [0u8; 4];
        ports[0..2].copy_from_slice(&flow.src_port.to_be_bytes());
        ports[2..4].copy_from_slice(&flow.dst_port.to_be_bytes());
        Some(Self {
            src,
            dst,
            ports,
            protocol: u8::from(flow.protocol),
            families: u8::from(s4) | u8::from(d4) << 1,
        })
    }

    fn to_flow(&self) -> FlowKey {
        FlowKey::new(
            IpProtocol::from(self.protocol),
            addr_from(self.src, self.families & 1 != 0),
            u16::from_be_bytes([self.ports[0], self.ports[1]]),
            addr_from(self.dst, self.families & 2 != 0),
            u16::from_be_bytes([self.ports[2], self.ports[3]]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from_bits(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from_bits(a))),
        ]
    }

    #[test]
    fn sizes() {
        assert_eq!(core::mem::size_of::<V4Key>(), 13);
        assert_eq!(core::mem::align_of::<V4Key>(), 1);
        assert_eq!(core::mem::size_of::<WideKey>(), 38);
    }

    proptest! {
        #[test]
        fn round_trip(src in arb_addr(), dst in arb_addr(), sp: u16, dp: u16, proto: u8) {
            let flow = FlowKey::new(IpProtocol::from(proto), src, sp, dst, dp);
            let wide = WideKey::from_flow(&flow).unwrap();
            prop_assert_eq!(wide.to_flow(), flow);
            match V4Key::from_flow(&flow) {
                Some(k) => prop_assert_eq!(k.to_flow(), flow),
                None => prop_assert!(!flow.is_ipv4()),
            }
        }
    }
}
