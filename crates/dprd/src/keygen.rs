//! `dprd keygen`: a new cluster key file.

use crate::error::Error;
use std::io::Read;

/// The kernel's random source.
const RANDOM: &str = "/dev/urandom";

/// A key file with one new random 32-byte key (id 1), from the kernel's
/// random source, in the format `dpr_router::cluster::KeyRing::parse` reads.
pub fn new_key_file() -> Result<String, Error> {
    let mut key = [0u8; 32];
    std::fs::File::open(RANDOM)
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|source| Error::Io {
            syscall: "read",
            path: RANDOM.into(),
            source,
        })?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "# dpr cluster key: the same file on every host; keep it secret (mode 0600).\n\
         # Format: ID HEX per line; the first key signs, a second is also accepted\n\
         # (key rolls: docs/cluster-protocol.md).\n1 {hex}\n"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_keys_parse_and_differ() {
        let a = super::new_key_file().unwrap_or_default();
        let b = super::new_key_file().unwrap_or_default();
        assert_ne!(a, b);
        let ring = dpr_router::cluster::KeyRing::parse(&a);
        assert!(ring.is_ok_and(|r| r.key_ids() == vec![1]));
    }
}
