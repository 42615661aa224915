//! The five-tuple that names a connection, and a fast keyed hash of it.
//!
//! [`FlowKey`] is what the routing table is indexed by and what the stateless
//! policy hashes. [`FlowHasher`] is a keyed hash in the wyhash family (64x64→128
//! multiply, fold the halves): two or three multiplies per key, no loop, and a
//! per-cluster or per-boot seed so that a client cannot aim many flows at one
//! bucket without knowing the seed. It is a load-spreading hash, not a MAC.

use crate::ip::IpProtocol;
use core::fmt;
use core::net::IpAddr;

/// A connection's addresses, ports and protocol, as seen in the packet.
///
/// Ports are zero for protocols without ports and for non-first fragments
/// (see [`crate::parse::Fragment`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 where the protocol has none).
    pub src_port: u16,
    /// Destination port (0 where the protocol has none).
    pub dst_port: u16,
    /// Transport protocol.
    pub protocol: IpProtocol,
}

impl FlowKey {
    /// A key from its parts.
    pub const fn new(
        protocol: IpProtocol,
        src: IpAddr,
        src_port: u16,
        dst: IpAddr,
        dst_port: u16,
    ) -> Self {
        Self {
            src,
            dst,
            src_port,
            dst_port,
            protocol,
        }
    }

    /// The same flow seen in the other direction.
    #[must_use]
    pub const fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
        }
    }

    /// True when both addresses are IPv4.
    pub const fn is_ipv4(&self) -> bool {
        matches!((self.src, self.dst), (IpAddr::V4(_), IpAddr::V4(_)))
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn ep(f: &mut fmt::Formatter<'_>, a: IpAddr, p: u16) -> fmt::Result {
            match a {
                IpAddr::V4(a) => write!(f, "{a}:{p}"),
                IpAddr::V6(a) => write!(f, "[{a}]:{p}"),
            }
        }
        match self.protocol {
            IpProtocol::Tcp => f.write_str("tcp ")?,
            IpProtocol::Udp => f.write_str("udp ")?,
            IpProtocol::Icmp => f.write_str("icmp ")?,
            IpProtocol::Icmpv6 => f.write_str("icmpv6 ")?,
            other => write!(f, "proto {} ", u8::from(other))?,
        }
        ep(f, self.src, self.src_port)?;
        f.write_str(" -> ")?;
        ep(f, self.dst, self.dst_port)
    }
}

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
const P3: u64 = 0x5899_65cc_7537_4cc3;

#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline]
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A keyed hash of [`FlowKey`]s. Same seed, same hashes, on every host and
/// every run: hosts that must agree on a stateless choice share the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHasher {
    k: [u64; 4],
}

impl FlowHasher {
    /// A hasher whose keys are expanded from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut s = seed;
        Self {
            k: [
                splitmix(&mut s),
                splitmix(&mut s),
                splitmix(&mut s),
                splitmix(&mut s),
            ],
        }
    }

    /// The 64-bit hash of `key`.
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        let [k0, k1, k2, k3] = self.k;
        let proto = u64::from(u8::from(key.protocol));
        let ports = u64::from(key.src_port) << 48 | u64::from(key.dst_port) << 32 | proto << 8;
        match (key.src, key.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let a = u64::from(s.to_bits()) << 32 | u64::from(d.to_bits());
                let h = mum(a ^ k0 ^ P0, ports ^ k1 ^ P1);
                mum(h ^ k2, P2 ^ 4)
            }
            (s, d) => {
                let s = v6_bits(s);
                let d = v6_bits(d);
                let h1 = mum((s >> 64) as u64 ^ k0 ^ P0, s as u64 ^ k1 ^ P1);
                let h2 = mum((d >> 64) as u64 ^ k2 ^ P2, d as u64 ^ k3 ^ P3);
                let h = mum(h1 ^ ports ^ P0, h2 ^ k0);
                mum(h ^ k2, P2 ^ 6)
            }
        }
    }
}

#[inline]
fn v6_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
        IpAddr::V6(a) => a.to_bits(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;
    use std::string::ToString;

    fn v4(sp: u16) -> FlowKey {
        FlowKey::new(
            IpProtocol::Tcp,
            Ipv4Addr::new(198, 18, 0, 10).into(),
            sp,
            Ipv4Addr::new(198, 18, 1, 1).into(),
            80,
        )
    }

    #[test]
    fn display() {
        assert_eq!(
            v4(1234).to_string(),
            "tcp 198.18.0.10:1234 -> 198.18.1.1:80"
        );
        let k = FlowKey::new(
            IpProtocol::Udp,
            "2001:2::1".parse::<Ipv6Addr>().unwrap().into(),
            5,
            "2001:2::2".parse::<Ipv6Addr>().unwrap().into(),
            53,
        );
        assert_eq!(k.to_string(), "udp [2001:2::1]:5 -> [2001:2::2]:53");
        assert_eq!(k.reversed().reversed(), k);
        assert!(!k.is_ipv4());
    }

    #[test]
    fn seed_changes_hash_and_is_deterministic() {
        let a = FlowHasher::new(1);
        let b = FlowHasher::new(2);
        assert_eq!(a.hash(&v4(1)), FlowHasher::new(1).hash(&v4(1)));
        assert_ne!(a.hash(&v4(1)), b.hash(&v4(1)));
        assert_ne!(a.hash(&v4(1)), a.hash(&v4(1).reversed()));
    }

    /// Sequential source ports (the common case: one client, many
    /// connections) spread evenly over 64 buckets: chi-square well within
    /// what a uniform hash gives (63 degrees of freedom; 0.1% tail ≈ 104).
    #[test]
    fn sequential_ports_spread_evenly() {
        for seed in [0u64, 7, 0xdead_beef] {
            let h = FlowHasher::new(seed);
            let n = 64_000u32;
            let mut buckets = [0u32; 64];
            for p in 0..n {
                buckets[(h.hash(&v4(p as u16)) >> 58) as usize] += 1;
            }
            let expect = f64::from(n) / 64.0;
            let chi2: f64 = buckets
                .iter()
                .map(|&c| (f64::from(c) - expect).powi(2) / expect)
                .sum();
            assert!(chi2 < 110.0, "seed {seed}: chi2 {chi2}");
        }
    }

    /// Flipping one input bit flips about half of the output bits.
    #[test]
    fn avalanche() {
        let h = FlowHasher::new(42);
        let mut total = 0u32;
        let mut count = 0u32;
        for i in 0..200u16 {
            let base = v4(i.wrapping_mul(313));
            let hb = h.hash(&base);
            for bit in 0..16 {
                let mut k = base;
                k.src_port ^= 1 << bit;
                total += (hb ^ h.hash(&k)).count_ones();
                count += 1;
            }
        }
        let mean = f64::from(total) / f64::from(count);
        assert!((28.0..36.0).contains(&mean), "mean flipped bits {mean}");
    }

    proptest! {
        #[test]
        fn v6_hash_depends_on_every_part(s in any::<u128>(), d in any::<u128>(), sp in any::<u16>(), dp in any::<u16>()) {
            let h = FlowHasher::new(9);
            let k = FlowKey::new(IpProtocol::Tcp, Ipv6Addr::from_bits(s).into(), sp, Ipv6Addr::from_bits(d).into(), dp);
            let base = h.hash(&k);
            let mut k2 = k; k2.src_port = sp ^ 1;
            prop_assert_ne!(base, h.hash(&k2));
            let mut k3 = k; k3.dst = Ipv6Addr::from_bits(d ^ 1).into();
            prop_assert_ne!(base, h.hash(&k3));
            let mut k4 = k; k4.protocol = IpProtocol::Udp;
            prop_assert_ne!(base, h.hash(&k4));
        }
    }
}
