//! Frame builders for the XDP tests: Ethernet, IPv4, TCP and UDP headers
//! with their checksums, byte by byte (the same as `dpr-xdp`'s own
//! `BPF_PROG_TEST_RUN` tests build).

use dpr_packet::checksum;
use std::net::Ipv4Addr;

/// An Ethernet frame: `dst`, `src`, `ethertype`, then `payload`.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// IPv4 header (20 bytes + `options`, which must be a multiple of 4) and payload.
pub fn ipv4_with(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    frag: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let hl = 20 + options.len();
    let total = (hl + payload.len()) as u16;
    let mut h = vec![0x40 | (hl / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(options);
    let c = checksum::checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv4 header (DF set, no options) and payload.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(src, dst, proto, 0x4000, &[], payload)
}

/// A TCP SYN (20-byte header, no payload) with its checksum over IPv4.
pub fn tcp_syn_v4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut t = tcp_header(sport, dport, 0x02);
    let sum = checksum::combine(
        checksum::pseudo_header_v4(src, dst, 6, 20),
        checksum::sum(&t),
    );
    t[16..18].copy_from_slice(&checksum::fold(sum).to_be_bytes());
    t
}

/// A 20-byte TCP header with `flags`, checksum 0.
pub fn tcp_header(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    t
}

/// A UDP datagram with payload, checksum 0 (allowed over IPv4).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_valid_checksums() {
        let (a, b) = (Ipv4Addr::new(198, 18, 9, 1), Ipv4Addr::new(198, 18, 9, 2));
        let syn = tcp_syn_v4(a, b, 40000, 80);
        let p = ipv4(a, b, 6, &syn);
        // An IPv4 header with a right checksum sums to zero.
        assert_eq!(checksum::checksum(&p[..20]), 0);
        // So does the TCP segment with its pseudo-header.
        let sum = checksum::combine(
            checksum::pseudo_header_v4(a, b, 6, syn.len() as u16),
            checksum::sum(&syn),
        );
        assert_eq!(checksum::fold(sum), 0);
        let f = eth([2; 6], [4; 6], 0x0800, &p);
        assert_eq!(f.len(), 14 + 40);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(udp(1, 2, b"xy")[4..6], [0, 10]);
    }
}
