//! The Internet checksum: RFC 1071 full sums and RFC 1624 incremental updates.
//!
//! Full sums are used to fill and verify headers; incremental updates are used
//! by in-place rewrites (MSS clamping, TTL decrement, address rewrite) so a
//! router never re-sums a payload it only touched two bytes of.

use core::net::{Ipv4Addr, Ipv6Addr};

/// The ones'-complement sum of `data` as 16-bit big-endian words (an odd final
/// byte is padded with zero), folded into 32 bits but not complemented.
/// Feed the result to [`fold`] or add more partial sums first.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // Accumulate 32-bit big-endian words into a u64: no carry can be lost for
    // any buffer shorter than 2^34 bytes, and the loop is twice as wide as a
    // 16-bit one.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_be_bytes(tail));
    fold64(acc)
}

#[inline]
fn fold64(mut acc: u64) -> u32 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    // Fold to 16 bits of value in a u32 (the sum is congruent mod 0xffff).
    let mut s = (acc & 0xffff) + (acc >> 16 & 0xffff) + (acc >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u32
}

/// The checksum of a fixed-size header (an IPv4 header without options, for
/// example): the loop is unrolled at compile time.
#[inline(always)]
pub fn checksum_array<const N: usize>(data: &[u8; N]) -> u16 {
    // 32-bit big-endian words into a u64: N is a constant, so this unrolls
    // into a handful of loads and adds with no carry handling in the loop.
    let mut acc: u64 = 0;
    let mut i = 0;
    while i + 4 <= N {
        acc += u64::from(u32::from_be_bytes([
            data[i],
            data[i + 1],
            data[i + 2],
            data[i + 3],
        ]));
        i += 4;
    }
    while i + 2 <= N {
        acc += u64::from(u16::from_be_bytes([data[i], data[i + 1]]));
        i += 2;
    }
    if i < N {
        acc += u64::from(data[i]) << 8;
    }
    fold(fold64(acc))
}

/// Adds two partial sums (as returned by [`sum`]).
#[inline]
pub fn combine(a: u32, b: u32) -> u32 {
    fold64(u64::from(a) + u64::from(b))
}

/// Folds a partial sum to 16 bits and complements it: the value to store in a
/// checksum field.
#[inline]
pub fn fold(partial: u32) -> u16 {
    let mut s = partial;
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The checksum of `data` alone (for an IPv4 header or an ICMPv4 message).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(data))
}

/// The partial sum of the IPv4 pseudo-header for TCP/UDP.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    let acc = u64::from(u32::from_be_bytes(s))
        + u64::from(u32::from_be_bytes(d))
        + u64::from(protocol)
        + u64::from(length);
    fold64(acc)
}

/// The partial sum of the IPv6 pseudo-header for TCP/UDP/ICMPv6.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u32 {
    let acc = u64::from(sum(&src.octets()))
        + u64::from(sum(&dst.octets()))
        + u64::from(next_header)
        + u64::from(length >> 16)
        + u64::from(length & 0xffff);
    fold64(acc)
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered
/// data changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!check) + u32::from(!old) + u32::from(new);
    fold(s)
}

/// Incremental update for a 32-bit field (two words).
#[inline]
pub fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!check)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    fold(s)
}

/// Incremental update for a changed byte run that starts at an even offset of
/// the covered data (addresses, for example). `old` and `new` must have the
/// same length; an odd final byte is treated as the high byte of a word.
#[inline]
pub fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    // `!fold(x)` is the folded, uncomplemented sum of a run: m and m' of eqn. 3.
    let m_old = !fold(sum(old));
    let m_new = !fold(sum(new));
    fold(u32::from(!check) + u32::from(!m_old) + u32::from(m_new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// The textbook RFC 1071 loop, 16 bits at a time, as the reference.
    fn naive(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            s += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            i += 2;
        }
        if i < data.len() {
            s += u32::from(data[i]) << 8;
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example bytes: sum is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(!checksum(&data), 0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A real IPv4 header with checksum 0xb861 (zeroed for the sum).
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
    }

    #[test]
    fn fixed_size_matches() {
        let hdr: [u8; 20] = core::array::from_fn(|i| (i * 37 + 11) as u8);
        assert_eq!(checksum_array(&hdr), naive(&hdr));
        let odd: [u8; 7] = [1, 2, 3, 4, 5, 6, 0xff];
        assert_eq!(checksum_array(&odd), naive(&odd));
    }

    #[test]
    fn empty_and_odd() {
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(checksum(&[0xab]), naive(&[0xab]));
    }

    proptest! {
        #[test]
        fn full_sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(checksum(&data), naive(&data));
        }

        #[test]
        fn split_sums_combine(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..300) {
            let cut = (cut * 2).min(data.len() & !1);
            let s = combine(sum(&data[..cut]), sum(&data[cut..]));
            prop_assert_eq!(fold(s), naive(&data));
        }

        #[test]
        fn incremental_u16_equals_full(
            data in proptest::collection::vec(any::<u8>(), 2..400),
            word in any::<proptest::sample::Index>(),
            new in any::<u16>(),
        ) {
            let mut data: Vec<u8> = data;
            if data.len() % 2 == 1 { data.push(0); }
            let i = word.index(data.len() / 2) * 2;
            let before = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let inc = update_u16(before, old, new);
            // 0x0000 and 0xffff are the same value in ones' complement.
            let full = checksum(&data);
            prop_assert!(inc == full || (inc == 0 && full == 0xffff) || (inc == 0xffff && full == 0));
        }

        #[test]
        fn incremental_u32_and_bytes_equal_full(
            data in proptest::collection::vec(any::<u8>(), 4..400),
            at in any::<proptest::sample::Index>(),
            new in any::<u32>(),
            new16 in any::<[u8; 16]>(),
        ) {
            let mut data: Vec<u8> = data;
            if data.len() % 2 == 1 { data.push(0); }
            let i = at.index(data.len() / 2 - 1) * 2;
            let before = checksum(&data);
            let old = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            data[i..i + 4].copy_from_slice(&new.to_be_bytes());
            let inc = update_u32(before, old, new);
            prop_assert!(same(inc, checksum(&data)));

            if data.len() >= 16 {
                let j = at.index(data.len() / 2 - 7) * 2;
                let before = checksum(&data);
                let old: Vec<u8> = data[j..j + 16].to_vec();
                data[j..j + 16].copy_from_slice(&new16);
                let inc = update_bytes(before, &old, &new16);
                prop_assert!(same(inc, checksum(&data)));
            }
        }

        #[test]
        fn pseudo_headers_match_naive(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), p in any::<u8>(), len in any::<u32>()) {
            let mut ph = Vec::new();
            ph.extend_from_slice(&src[..4]);
            ph.extend_from_slice(&dst[..4]);
            ph.extend_from_slice(&[0, p]);
            ph.extend_from_slice(&(len as u16).to_be_bytes());
            let v4 = pseudo_header_v4(Ipv4Addr::from(<[u8; 4]>::try_from(&src[..4]).unwrap()),
                Ipv4Addr::from(<[u8; 4]>::try_from(&dst[..4]).unwrap()), p, len as u16);
            prop_assert_eq!(fold(v4), naive(&ph));

            let mut ph6 = Vec::new();
            ph6.extend_from_slice(&src);
            ph6.extend_from_slice(&dst);
            ph6.extend_from_slice(&len.to_be_bytes());
            ph6.extend_from_slice(&[0, 0, 0, p]);
            let v6 = pseudo_header_v6(Ipv6Addr::from(src), Ipv6Addr::from(dst), p, len);
            prop_assert_eq!(fold(v6), naive(&ph6));
        }
    }

    fn same(a: u16, b: u16) -> bool {
        a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
    }
}
