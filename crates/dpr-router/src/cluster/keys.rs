//! The cluster key ring: HMAC-SHA-256 keys, the first one signs.

use super::ClusterError;
use dpr_packet::control::TAG_LEN;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The shortest key accepted, in bytes (the HMAC-SHA-256 output size).
pub const MIN_KEY_LEN: usize = 32;

/// The keys a host signs and verifies control messages with. The first key
/// signs; every key verifies, chosen by the key id a message carries, so a
/// key roll is two configuration pushes (see `docs/cluster-protocol.md`).
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(u16, HmacSha256)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("KeyRing")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

fn key_error(reason: &'static str) -> ClusterError {
    ClusterError::Config {
        field: "cluster_key",
        reason,
    }
}

impl KeyRing {
    /// A ring from `(id, key)` pairs; the first signs. At most two keys
    /// (the current one and the one being rolled out or retired), each at
    /// least [`MIN_KEY_LEN`] bytes, with distinct ids.
    pub fn new(keys: &[(u16, &[u8])]) -> Result<Self, ClusterError> {
        if keys.is_empty() {
            return Err(key_error("at least one key is needed"));
        }
        if keys.len() > 2 {
            return Err(key_error("at most two keys (current and previous)"));
        }
        if keys.len() == 2 && keys[0].0 == keys[1].0 {
            return Err(key_error("key ids must differ"));
        }
        let mut ring = Vec::with_capacity(keys.len());
        for (id, k) in keys {
            if k.len() < MIN_KEY_LEN {
                return Err(key_error("a key must be at least 32 bytes"));
            }
            let mac = HmacSha256::new_from_slice(k).map_err(|_| key_error("unusable key"))?;
            ring.push((*id, mac));
        }
        Ok(Self { keys: ring })
    }

    /// Parses a key file: one key per line as `ID HEX` (a decimal id from
    /// 0 to 65535, then at least 64 hex digits); `#` starts a comment. The
    /// first key signs, a second one is accepted too.
    pub fn parse(text: &str) -> Result<Self, ClusterError> {
        let mut parsed: Vec<(u16, Vec<u8>)> = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(id), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(key_error("each line must be `ID HEX`"));
            };
            let id: u16 = id
                .parse()
                .map_err(|_| key_error("key id must be a number from 0 to 65535"))?;
            let key = decode_hex(hex).ok_or(key_error("key must be hex digits, two per byte"))?;
            parsed.push((id, key));
        }
        let refs: Vec<(u16, &[u8])> = parsed.iter().map(|(i, k)| (*i, k.as_slice())).collect();
        Self::new(&refs)
    }

    /// The ids of the keys, signing key first.
    pub fn key_ids(&self) -> Vec<u16> {
        self.keys.iter().map(|(i, _)| *i).collect()
    }

    /// A 64-bit secret derived from the cluster key for `label`
    /// (HMAC-SHA-256 of the label, first 8 bytes): the flow-hash seeds.
    /// Every host with the same key file derives the same value, and
    /// nobody without the key can compute it. The key with the lowest id
    /// is used, not the signing one, so the value stays the same through
    /// the first two steps of a key roll (add the new key, make it sign)
    /// and changes only when the old key is removed.
    pub fn derive_seed(&self, label: &[u8]) -> u64 {
        let Some((_, mac)) = self.keys.iter().min_by_key(|(id, _)| *id) else {
            return 0;
        };
        let mut m = mac.clone();
        m.update(label);
        let out = m.finalize().into_bytes();
        let mut b = [0u8; 8];
        b.copy_from_slice(&out[..8]);
        u64::from_le_bytes(b)
    }

    /// The keyed tunnel's tag keys, one per cluster key and with its id,
    /// the signing key's first: the first 16 bytes of HMAC-SHA-256 of a
    /// label of their own under each key. A separate key per use: a tag
    /// key that leaked (it sits in every worker's engine) reveals neither
    /// the cluster key nor the flow-hash seeds. The tunnel follows the
    /// control protocol's roll: tags are made with the signing key and
    /// accepted under either.
    pub fn tunnel_keys(&self) -> crate::config::TunnelKeys {
        let keys = self
            .keys
            .iter()
            .map(|(id, mac)| {
                let mut m = mac.clone();
                m.update(b"dpr tunnel tag key v1");
                let out = m.finalize().into_bytes();
                let mut k = [0u8; 16];
                k.copy_from_slice(&out[..16]);
                (*id, dpr_packet::siphash::SipKey::from_bytes(k))
            })
            .collect();
        // A ring holds one or two keys with distinct ids, as TunnelKeys must.
        crate::config::TunnelKeys::from_ring(keys)
    }

    /// The id of the signing key.
    pub fn signing_id(&self) -> u16 {
        self.keys[0].0
    }

    /// The tag of `msg` under the signing key.
    pub fn sign(&self, msg: &[u8]) -> [u8; TAG_LEN] {
        let mut m = self.keys[0].1.clone();
        m.update(msg);
        m.finalize().into_bytes().into()
    }

    /// True when `tag` is `msg`'s tag under key `key_id` (constant time).
    /// `None`: no key with that id.
    pub(crate) fn verify(&self, key_id: u16, msg: &[u8], tag: &[u8]) -> Option<bool> {
        let (_, mac) = self.keys.iter().find(|(i, _)| *i == key_id)?;
        let mut m = mac.clone();
        m.update(msg);
        Some(m.verify_slice(tag).is_ok())
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn hmac_sha256_matches_rfc4231_case_2() {
        // RFC 4231 test case 2 uses a short key; the ring refuses short keys,
        // so check the primitive directly.
        let mut m = HmacSha256::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        let tag: [u8; 32] = m.finalize().into_bytes().into();
        assert_eq!(tag[..8], [0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e]);
    }

    #[test]
    fn parse_sign_verify_and_roll() {
        let old = KeyRing::parse(&format!("# cluster key\n1 {K1}\n")).unwrap();
        let both = KeyRing::parse(&format!("2 {K2}\n1 {K1}  # previous\n")).unwrap();
        assert_eq!(both.key_ids(), vec![2, 1]);
        let t = old.sign(b"hello");
        assert_eq!(both.verify(1, b"hello", &t), Some(true));
        assert_eq!(both.verify(1, b"hellO", &t), Some(false));
        assert_eq!(old.verify(2, b"hello", &both.sign(b"hello")), None);
        assert_eq!(both.verify(2, b"hello", &both.sign(b"hello")), Some(true));
    }

    #[test]
    fn bad_key_files_name_the_field() {
        for text in [
            "",
            "# nothing\n",
            "1 abcd\n",
            &format!("x {K1}\n"),
            &format!("1 {K1}zz\n"),
            &format!("1 {K1}\n1 {K2}\n"),
            &format!("1 {K1}\n2 {K2}\n3 {K1}\n"),
            &format!("1 {K1} extra\n"),
        ] {
            match KeyRing::parse(text) {
                Err(ClusterError::Config { field, .. }) => assert_eq!(field, "cluster_key"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn tunnel_keys_follow_the_ring_and_differ_from_its_other_secrets() {
        let old = KeyRing::parse(&format!("1 {K1}\n")).unwrap();
        let both = KeyRing::parse(&format!("2 {K2}\n1 {K1}\n")).unwrap();
        let (t_old, t_both) = (old.tunnel_keys(), both.tunnel_keys());
        assert_eq!(t_old.ids(), vec![1]);
        assert_eq!(t_both.ids(), vec![2, 1]);
        assert_eq!(t_both.signing().0, 2);
        // The same cluster key gives the same tunnel key on every host.
        assert_eq!(t_old.get(1), t_both.get(1));
        assert_ne!(t_both.get(1), t_both.get(2));
        assert_eq!(format!("{t_both:?}"), "TunnelKeys { key_ids: [2, 1] }");
    }

    #[test]
    fn debug_hides_keys() {
        let k = KeyRing::parse(&format!("1 {K1}\n")).unwrap();
        assert_eq!(format!("{k:?}"), "KeyRing { key_ids: [1] }");
    }
}
