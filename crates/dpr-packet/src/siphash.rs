//! SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit PRF for short
//! inputs, the keyed tunnel's tag ([`crate::gre::tunnel_tag`]).
//!
//! Written here (about forty lines) rather than taken from a crate: this
//! crate has no runtime dependencies, and the tag is part of the wire
//! format, so its algorithm must not change with a dependency's version.
//! Checked against the reference implementation's test vectors.

/// A 128-bit SipHash key as two little-endian words (`k0` = bytes 0..8).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SipKey {
    k0: u64,
    k1: u64,
}

impl core::fmt::Debug for SipKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        f.write_str("SipKey(..)")
    }
}

impl SipKey {
    /// The key from its 16 bytes, as the reference implementation reads them.
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        let [
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            b0,
            b1,
            b2,
            b3,
            b4,
            b5,
            b6,
            b7,
        ] = b;
        Self {
            k0: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            k1: u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
        }
    }

    /// SipHash-2-4 of `msg`.
    #[inline]
    pub fn hash(&self, msg: &[u8]) -> u64 {
        let mut v = [
            self.k0 ^ 0x736f_6d65_7073_6575,
            self.k1 ^ 0x646f_7261_6e64_6f6d,
            self.k0 ^ 0x6c79_6765_6e65_7261,
            self.k1 ^ 0x7465_6462_7974_6573,
        ];
        let mut blocks = msg.chunks_exact(8);
        for b in &mut blocks {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            let m = u64::from_le_bytes(w);
            v[3] ^= m;
            round(&mut v);
            round(&mut v);
            v[0] ^= m;
        }
        let rest = blocks.remainder();
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        w[7] = msg.len() as u8;
        let m = u64::from_le_bytes(w);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
        v[2] ^= 0xff;
        for _ in 0..4 {
            round(&mut v);
        }
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }
}

#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_key() -> SipKey {
        let mut k = [0u8; 16];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        SipKey::from_bytes(k)
    }

    #[test]
    fn matches_the_reference_vectors() {
        // vectors.h of the reference implementation (SipHash-2-4, 64-bit
        // output): key 00..0f, message 00..(n-1), for n = 0, 1, 7, 8, 15, 63.
        let k = reference_key();
        let msg: [u8; 64] = core::array::from_fn(|i| i as u8);
        for (n, want) in [
            (0, [0x31, 0x0e, 0x0e, 0xdd, 0x47, 0xdb, 0x6f, 0x72]),
            (1, [0xfd, 0x67, 0xdc, 0x93, 0xc5, 0x39, 0xf8, 0x74]),
            (7, [0x37, 0xd1, 0x01, 0x8b, 0xf5, 0x00, 0x02, 0xab]),
            (8, [0x62, 0x24, 0x93, 0x9a, 0x79, 0xf5, 0xf5, 0x93]),
            (15, [0xe5, 0x45, 0xbe, 0x49, 0x61, 0xca, 0x29, 0xa1]),
            (63, [0x72, 0x45, 0x06, 0xeb, 0x4c, 0x32, 0x8a, 0x95]),
        ] {
            assert_eq!(k.hash(&msg[..n]).to_le_bytes(), want, "length {n}");
        }
    }

    #[test]
    #[allow(deprecated)] // the standard library's SipHasher is SipHash-2-4: a second reference
    fn agrees_with_the_standard_librarys_siphasher_on_every_length() {
        use core::hash::Hasher;
        let k = reference_key();
        let msg: [u8; 100] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        for n in 0..msg.len() {
            let mut h = core::hash::SipHasher::new_with_keys(k.k0, k.k1);
            h.write(&msg[..n]);
            assert_eq!(k.hash(&msg[..n]), h.finish(), "length {n}");
        }
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", reference_key()), "SipKey(..)");
    }
}
