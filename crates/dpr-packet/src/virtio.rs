//! The virtio-net header a TUN device with `IFF_VNET_HDR` puts in front of
//! every packet, and what the router does with what it says: complete a
//! partial checksum, and cut a TCP super-packet (GSO) into the segments it
//! stands for.
//!
//! ```text
//!  read ─► [ virtio_net_hdr (10) | IP packet (up to 64 KiB) ]
//!            │ VirtioNetHdr::parse
//!            ├ gso NONE, NEEDS_CSUM ─► complete_checksum (csum_start, csum_offset)
//!            └ gso TCPV4 / TCPV6   ─► TcpSegmenter::new ─► next_into(out) per segment:
//!                                      headers copied, lengths, IPv4 id + i, seq + i·gso_size,
//!                                      FIN/PSH only on the last, CWR only on the first,
//!                                      IPv4 and TCP checksums in full
//! ```
//!
//! The header is little-endian (the legacy virtio layout, which TUN uses on
//! little-endian hosts unless told otherwise). A super-packet's own TCP
//! checksum is partial (the pseudo-header only): the segmenter never reads
//! it and writes each segment's in full. Only TCP super-packets are
//! segmented: a device that did not enable UDP segmentation offload
//! (`TUN_F_USO4/6`) never receives UDP ones, and any other GSO type is
//! refused ([`Malformed::Protocol`]).

use crate::checksum;
use crate::error::{Error, Layer, Malformed, Result};

/// Bytes of the header (`struct virtio_net_hdr`, without `num_buffers`).
pub const HDR_LEN: usize = 10;

/// `flags`: the checksum from `csum_start` on is partial, to be completed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was verified.
pub const F_DATA_VALID: u8 = 2;

/// `gso_type` without its ECN bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoType {
    /// A single packet.
    None,
    /// TCP over IPv4 (TSO4).
    TcpV4,
    /// UDP fragmentation offload (obsolete).
    Udp,
    /// TCP over IPv6 (TSO6).
    TcpV6,
    /// UDP segmentation (USO).
    UdpL4,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for GsoType {
    fn from(v: u8) -> Self {
        match v {
            0 => Self::None,
            1 => Self::TcpV4,
            3 => Self::Udp,
            4 => Self::TcpV6,
            5 => Self::UdpL4,
            x => Self::Unknown(x),
        }
    }
}

impl From<GsoType> for u8 {
    fn from(g: GsoType) -> u8 {
        match g {
            GsoType::None => 0,
            GsoType::TcpV4 => 1,
            GsoType::Udp => 3,
            GsoType::TcpV6 => 4,
            GsoType::UdpL4 => 5,
            GsoType::Unknown(x) => x,
        }
    }
}

/// The ECN bit of `gso_type`: the super-packet carries CWR (set it on the
/// first segment only).
pub const GSO_ECN: u8 = 0x80;

/// A parsed virtio-net header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// The segmentation type.
    pub gso_type: GsoType,
    /// The ECN bit of `gso_type`.
    pub gso_ecn: bool,
    /// Length of the headers (a hint; not trusted).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the partial checksum's coverage starts.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// The header of a plain packet: no offload asked, nothing promised.
    pub const NONE: Self = Self {
        flags: 0,
        gso_type: GsoType::None,
        gso_ecn: false,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Parses the first [`HDR_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let Some(h) = b.get(..HDR_LEN) else {
            return Err(Error::too_short(Layer::Virtio, b.len()));
        };
        let le = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        Ok(Self {
            flags: h[0],
            gso_type: GsoType::from(h[1] & !GSO_ECN),
            gso_ecn: h[1] & GSO_ECN != 0,
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// Writes the header into the first [`HDR_LEN`] bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) -> Result<()> {
        let Some(h) = b.get_mut(..HDR_LEN) else {
            return Err(Error::too_short(Layer::Virtio, b.len()));
        };
        h[0] = self.flags;
        h[1] = u8::from(self.gso_type) | if self.gso_ecn { GSO_ECN } else { 0 };
        h[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        h[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        Ok(())
    }

    /// The checksum is partial (`F_NEEDS_CSUM`).
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }
}

/// Completes a partial checksum (`F_NEEDS_CSUM`, the kernel's
/// `CHECKSUM_PARTIAL`): the 16-bit field at `csum_start + csum_offset`
/// holds the pseudo-header sum; the checksum of everything from
/// `csum_start` on replaces it. Out-of-range offsets are refused.
pub fn complete_checksum(pkt: &mut [u8], csum_start: u16, csum_offset: u16) -> Result<()> {
    let start = usize::from(csum_start);
    let field = start + usize::from(csum_offset);
    if field + 2 > pkt.len() {
        return Err(Error::malformed(Layer::Virtio, 6, Malformed::HeaderLength));
    }
    let c = checksum::fold(checksum::sum(&pkt[start..]));
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Cuts a TCP super-packet into its segments, one at a time, into buffers
/// the caller owns ([`Self::next_into`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegmenter {
    v6: bool,
    /// IP header length (IPv4 with options; IPv6: 40, no extension headers).
    ip_len: usize,
    /// IP + TCP header length.
    hdr_len: usize,
    /// End of the IP packet (link padding trimmed).
    end: usize,
    gso_size: usize,
    /// Next payload offset to cut from.
    next: usize,
    /// Segments cut so far.
    index: u16,
}

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

impl TcpSegmenter {
    /// Validates super-packet `pkt` (the IP packet after the header) for
    /// `hdr`: a TCP GSO type matching the IP version, an unfragmented IPv4
    /// or an IPv6 packet without extension headers carrying TCP, lengths
    /// that agree, a non-zero `gso_size`.
    pub fn new(pkt: &[u8], hdr: &VirtioNetHdr) -> Result<Self> {
        let v6 = match hdr.gso_type {
            GsoType::TcpV4 => false,
            GsoType::TcpV6 => true,
            _ => return Err(Error::malformed(Layer::Virtio, 1, Malformed::Protocol)),
        };
        if hdr.gso_size == 0 {
            return Err(Error::malformed(Layer::Virtio, 4, Malformed::FieldValue));
        }
        let Some(&b0) = pkt.first() else {
            return Err(Error::too_short(Layer::Virtio, HDR_LEN));
        };
        let (ip_len, end, layer) = if v6 {
            if b0 >> 4 != 6 {
                return Err(Error::malformed(Layer::Ipv6, 0, Malformed::Version));
            }
            if pkt.len() < 40 {
                return Err(Error::too_short(Layer::Ipv6, pkt.len()));
            }
            if pkt[6] != 6 {
                return Err(Error::malformed(Layer::Ipv6, 6, Malformed::Protocol));
            }
            let plen = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            (40, 40 + plen, Layer::Ipv6)
        } else {
            if b0 >> 4 != 4 {
                return Err(Error::malformed(Layer::Ipv4, 0, Malformed::Version));
            }
            let ihl = usize::from(b0 & 0x0f) * 4;
            if ihl < 20 {
                return Err(Error::malformed(Layer::Ipv4, 0, Malformed::HeaderLength));
            }
            if pkt.len() < ihl {
                return Err(Error::too_short(Layer::Ipv4, pkt.len()));
            }
            if pkt[9] != 6 {
                return Err(Error::malformed(Layer::Ipv4, 9, Malformed::Protocol));
            }
            // More fragments, or an offset: a fragment.
            if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
                return Err(Error::malformed(Layer::Ipv4, 6, Malformed::Fragment));
            }
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            (ihl, total, Layer::Ipv4)
        };
        if end > pkt.len() || end < ip_len {
            return Err(Error::malformed(layer, 2, Malformed::TotalLength));
        }
        let Some(&off) = pkt.get(ip_len + 12) else {
            return Err(Error::too_short(Layer::Tcp, pkt.len()));
        };
        let tcp_len = usize::from(off >> 4) * 4;
        if tcp_len < 20 {
            return Err(Error::malformed(
                Layer::Tcp,
                ip_len + 12,
                Malformed::HeaderLength,
            ));
        }
        let hdr_len = ip_len + tcp_len;
        if hdr_len > end {
            return Err(Error::too_short(Layer::Tcp, end));
        }
        Ok(Self {
            v6,
            ip_len,
            hdr_len,
            end,
            gso_size: usize::from(hdr.gso_size),
            next: hdr_len,
            index: 0,
        })
    }

    /// Segments the super-packet stands for (at least one: a packet with
    /// no payload is one segment).
    pub fn count(&self) -> usize {
        let payload = self.end - self.hdr_len;
        payload.div_ceil(self.gso_size).max(1)
    }

    /// The largest segment: headers and `gso_size` bytes of payload.
    pub fn max_segment_len(&self) -> usize {
        self.hdr_len + self.gso_size.min(self.end - self.hdr_len)
    }

    /// Writes the next segment of `pkt` (the same bytes given to
    /// [`Self::new`]) into `out` and returns its length; `None` when every
    /// segment was written. `out` too short for the segment is an error and
    /// skips it.
    pub fn next_into(&mut self, pkt: &[u8], out: &mut [u8]) -> Option<Result<usize>> {
        let first = self.index == 0;
        if self.next >= self.end && !(first && self.next == self.hdr_len) {
            return None;
        }
        let Some(src) = pkt.get(..self.end) else {
            // Not the packet `new` validated: stop.
            self.next = self.end;
            return Some(Err(Error::too_short(Layer::Virtio, pkt.len())));
        };
        let seg_len = (self.end - self.next).min(self.gso_size);
        let from = self.next;
        let i = self.index;
        self.next += seg_len;
        self.index = self.index.wrapping_add(1);
        let last = self.next >= self.end;
        let n = self.hdr_len + seg_len;
        let Some(o) = out.get_mut(..n) else {
            return Some(Err(Error::too_short(Layer::Virtio, out.len())));
        };
        o[..self.hdr_len].copy_from_slice(&src[..self.hdr_len]);
        o[self.hdr_len..].copy_from_slice(&src[from..from + seg_len]);
        let (ip, tcp) = o.split_at_mut(self.ip_len);
        // `n` is at most the super-packet's length, which fit its length field.
        let n16 = u16::try_from(n).unwrap_or(u16::MAX);
        let tcp_total = n - self.ip_len;
        let pseudo = if self.v6 {
            ip[4..6].copy_from_slice(&u16::try_from(tcp_total).unwrap_or(u16::MAX).to_be_bytes());
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            d.copy_from_slice(&ip[24..40]);
            checksum::pseudo_header_v6(s.into(), d.into(), 6, tcp_total as u32)
        } else {
            ip[2..4].copy_from_slice(&n16.to_be_bytes());
            let id = u16::from_be_bytes([ip[4], ip[5]]).wrapping_add(i);
            ip[4..6].copy_from_slice(&id.to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let a = |k: usize| [ip[k], ip[k + 1], ip[k + 2], ip[k + 3]];
            checksum::pseudo_header_v4(
                a(12).into(),
                a(16).into(),
                6,
                u16::try_from(tcp_total).unwrap_or(u16::MAX),
            )
        };
        let seq0 = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let seq = seq0.wrapping_add((from - self.hdr_len) as u32);
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        if !last {
            tcp[13] &= !(TCP_FIN | TCP_PSH);
        }
        if !first {
            tcp[13] &= !TCP_CWR;
        }
        tcp[16..18].copy_from_slice(&[0, 0]);
        let c = checksum::fold(checksum::combine(pseudo, checksum::sum(tcp)));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        Some(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_ip;
    use crate::tcp::TcpSegment;

    /// An IPv4 TCP super-packet: 20 + 32 bytes of headers (a timestamp
    /// option), `payload` bytes counting up, flags PSH|FIN|CWR|ACK, and the
    /// partial checksum the kernel leaves.
    fn super_v4(payload: usize) -> std::vec::Vec<u8> {
        let total = 52 + payload;
        let mut p = std::vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 18, 0, 200]);
        p[16..20].copy_from_slice(&[198, 18, 0, 1]);
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[4..8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        t[8..12].copy_from_slice(&7u32.to_be_bytes());
        t[12] = 0x80;
        t[13] = TCP_FIN | TCP_PSH | TCP_CWR | 0x10;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        t[20..24].copy_from_slice(&[1, 1, 8, 10]);
        for (k, b) in p[52..].iter_mut().enumerate() {
            *b = k as u8;
        }
        p
    }

    fn hdr(gso: GsoType, size: u16) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: gso,
            gso_ecn: false,
            hdr_len: 52,
            gso_size: size,
            csum_start: 20,
            csum_offset: 16,
        }
    }

    #[test]
    fn header_round_trip_and_too_short() {
        let b = [1u8, 0x81, 52, 0, 0xa8, 5, 20, 0, 16, 0];
        let h = VirtioNetHdr::parse(&b).unwrap();
        assert_eq!(h.gso_type, GsoType::TcpV4);
        assert!(h.gso_ecn && h.needs_csum());
        assert_eq!(
            (h.hdr_len, h.gso_size, h.csum_start, h.csum_offset),
            (52, 1448, 20, 16)
        );
        let mut out = [0u8; 10];
        h.emit(&mut out).unwrap();
        assert_eq!(out, b);
        assert!(VirtioNetHdr::parse(&b[..9]).unwrap_err().is_too_short());
        assert!(VirtioNetHdr::NONE.emit(&mut out[..3]).is_err());
        assert_eq!(GsoType::from(9), GsoType::Unknown(9));
    }

    #[test]
    fn segments_carry_the_payload_in_order_with_valid_headers() {
        let p = super_v4(3000);
        let mut s = TcpSegmenter::new(&p, &hdr(GsoType::TcpV4, 1448)).unwrap();
        assert_eq!(s.count(), 3);
        assert_eq!(s.max_segment_len(), 52 + 1448);
        let mut out = [0u8; 1600];
        let mut payload = std::vec::Vec::new();
        let mut k = 0u16;
        while let Some(r) = s.next_into(&p, &mut out) {
            let n = r.unwrap();
            let seg = &out[..n];
            let m = parse_ip(seg).unwrap();
            let ip = crate::ipv4::Ipv4Packet::new_checked(seg).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(usize::from(ip.total_len()), n);
            assert_eq!(ip.ident(), 0xfffeu16.wrapping_add(k));
            let t = TcpSegment::new_checked(&seg[20..]).unwrap();
            assert!(
                t.verify_checksum(ip.src().into(), ip.dst().into()),
                "segment {k}"
            );
            assert_eq!(t.seq(), 0xffff_fff0u32.wrapping_add(u32::from(k) * 1448));
            let f = seg[33];
            assert_eq!(f & TCP_CWR != 0, k == 0, "CWR on the first only");
            assert_eq!(
                f & (TCP_FIN | TCP_PSH) != 0,
                k == 2,
                "FIN, PSH on the last only"
            );
            assert_eq!(
                m.flow.to_string(),
                "tcp 198.18.0.200:40000 -> 198.18.0.1:80"
            );
            payload.extend_from_slice(&seg[52..]);
            k += 1;
        }
        assert_eq!(k, 3);
        assert_eq!(payload, p[52..].to_vec());
    }

    #[test]
    fn ipv6_segments() {
        let v4 = super_v4(2000);
        let mut p = std::vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((v4.len() - 20) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8] = 0xfd;
        p[24] = 0xfd;
        p[39] = 1;
        p.extend_from_slice(&v4[20..]);
        let mut s = TcpSegmenter::new(&p, &hdr(GsoType::TcpV6, 1000)).unwrap();
        assert!(TcpSegmenter::new(&p, &hdr(GsoType::TcpV4, 1000)).is_err());
        let mut out = [0u8; 1200];
        let mut n_segs = 0;
        while let Some(r) = s.next_into(&p, &mut out) {
            let n = r.unwrap();
            let ip = crate::ipv6::Ipv6Packet::new_checked(&out[..n]).unwrap();
            assert_eq!(usize::from(ip.payload_len()) + 40, n);
            let t = TcpSegment::new_checked(&out[40..n]).unwrap();
            assert!(t.verify_checksum(ip.src().into(), ip.dst().into()));
            n_segs += 1;
        }
        assert_eq!(n_segs, 2);
    }

    #[test]
    fn refuses_what_it_cannot_cut() {
        let p = super_v4(100);
        let h = hdr(GsoType::TcpV4, 50);
        assert!(TcpSegmenter::new(&p, &hdr(GsoType::UdpL4, 50)).is_err());
        assert!(TcpSegmenter::new(&p, &hdr(GsoType::TcpV4, 0)).is_err());
        assert!(TcpSegmenter::new(&p[..60], &h).is_err(), "length lies");
        assert!(TcpSegmenter::new(&p[..30], &h).is_err());
        assert!(TcpSegmenter::new(&[], &h).is_err());
        let mut frag = p.clone();
        frag[7] = 1;
        assert!(TcpSegmenter::new(&frag, &h).is_err());
        let mut udp = p.clone();
        udp[9] = 17;
        assert!(TcpSegmenter::new(&udp, &h).is_err());
        // Too small an output buffer: that segment is an error, the rest go on.
        let mut s = TcpSegmenter::new(&p, &h).unwrap();
        let mut small = [0u8; 60];
        assert!(s.next_into(&p, &mut small).unwrap().is_err());
        let mut big = [0u8; 200];
        assert_eq!(s.next_into(&p, &mut big).unwrap().unwrap(), 52 + 50);
        assert!(s.next_into(&p, &mut big).is_none());
        // A segmenter given other bytes than it validated stops.
        let mut s = TcpSegmenter::new(&p, &h).unwrap();
        assert!(s.next_into(&p[..40], &mut big).unwrap().is_err());
        assert!(s.next_into(&p, &mut big).is_none());
    }

    #[test]
    fn a_headers_only_packet_is_one_segment() {
        let p = super_v4(0);
        let mut s = TcpSegmenter::new(&p, &hdr(GsoType::TcpV4, 1448)).unwrap();
        assert_eq!(s.count(), 1);
        let mut out = [0u8; 100];
        assert_eq!(s.next_into(&p, &mut out).unwrap().unwrap(), 52);
        assert!(s.next_into(&p, &mut out).is_none());
    }

    #[test]
    fn completes_a_partial_checksum() {
        let mut p = super_v4(10);
        // The pseudo-header sum in the field, as the kernel leaves it.
        let ph = checksum::pseudo_header_v4(
            [198, 18, 0, 200].into(),
            [198, 18, 0, 1].into(),
            6,
            (p.len() - 20) as u16,
        );
        let folded = checksum::fold(ph);
        p[36..38].copy_from_slice(&(!folded).to_be_bytes());
        complete_checksum(&mut p, 20, 16).unwrap();
        let t = TcpSegment::new_checked(&p[20..]).unwrap();
        assert!(t.verify_checksum(
            core::net::Ipv4Addr::new(198, 18, 0, 200).into(),
            core::net::Ipv4Addr::new(198, 18, 0, 1).into()
        ));
        assert!(complete_checksum(&mut p, 60, 16).is_err());
        assert!(complete_checksum(&mut p, u16::MAX, u16::MAX).is_err());
    }
}
