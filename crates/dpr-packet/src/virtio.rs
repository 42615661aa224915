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

/// Merges consecutive TCP segments of one flow into a super-packet for
/// one write into a TUN with offloads (the reverse of [`TcpSegmenter`],
/// what GRO does in the kernel): the local stack then takes one packet
/// instead of tens. A segment joins when it has the same IP and TCP
/// headers as the first but for the lengths, IPv4 id and checksums,
/// sequence number and PSH; it starts where the previous one ended; the
/// previous one was full-sized; and neither carries SYN, FIN, RST or URG.
/// Only segments whose checksums verify are merged (the super-packet's
/// checksum is left partial, which the stack takes as verified), so a
/// corrupt one is written alone and dropped by the stack as before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpCoalescer {
    v6: bool,
    ip_len: usize,
    hdr_len: usize,
    /// Bytes of the super-packet so far (headers and payload).
    len: usize,
    gso_size: usize,
    /// Segments merged.
    count: usize,
    /// The sequence number the next segment must carry.
    next_seq: u32,
    /// The last segment was shorter than `gso_size`: nothing may follow.
    closed: bool,
}

/// Largest super-packet (its IPv4 total length, or IPv6 payload, fits 16 bits).
pub const MAX_COALESCED: usize = 65_535;

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_URG: u8 = 0x20;

/// (v6, IP header length, IP + TCP header length, payload length) of a TCP
/// segment that may be merged (unfragmented, no extension headers, no
/// SYN/FIN/RST/URG, checksums verified), or `None`.
fn mergeable(pkt: &[u8]) -> Option<(bool, usize, usize, usize)> {
    let b0 = *pkt.first()?;
    let (v6, ip_len, end) = match b0 >> 4 {
        4 => {
            let ihl = usize::from(b0 & 0x0f) * 4;
            if ihl < 20 || pkt.len() < ihl || pkt[9] != 6 {
                return None;
            }
            if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
                return None;
            }
            if checksum::checksum(&pkt[..ihl]) != 0 {
                return None;
            }
            (
                false,
                ihl,
                usize::from(u16::from_be_bytes([pkt[2], pkt[3]])),
            )
        }
        6 => {
            if pkt.len() < 40 || pkt[6] != 6 {
                return None;
            }
            (
                true,
                40,
                40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]])),
            )
        }
        _ => return None,
    };
    if end != pkt.len() || end < ip_len + 20 {
        return None;
    }
    let tcp_len = usize::from(pkt[ip_len + 12] >> 4) * 4;
    if tcp_len < 20 || ip_len + tcp_len > end {
        return None;
    }
    if pkt[ip_len + 13] & (TCP_FIN | TCP_SYN | TCP_RST | TCP_URG) != 0 {
        return None;
    }
    // Nothing to merge without payload (and no checksum to pay for).
    if end == ip_len + tcp_len {
        return None;
    }
    let seg_len = end - ip_len;
    let pseudo = if v6 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&pkt[8..24]);
        d.copy_from_slice(&pkt[24..40]);
        checksum::pseudo_header_v6(s.into(), d.into(), 6, seg_len as u32)
    } else {
        let a = |k: usize| [pkt[k], pkt[k + 1], pkt[k + 2], pkt[k + 3]];
        checksum::pseudo_header_v4(a(12).into(), a(16).into(), 6, seg_len as u16)
    };
    if checksum::fold(checksum::combine(pseudo, checksum::sum(&pkt[ip_len..end]))) != 0 {
        return None;
    }
    Some((v6, ip_len, ip_len + tcp_len, end - ip_len - tcp_len))
}

impl TcpCoalescer {
    /// Starts a super-packet in `out` with segment `pkt` (copied), or
    /// `None` when `pkt` cannot be merged with anything (not TCP, a
    /// control segment, no payload, a checksum that does not verify).
    pub fn start(pkt: &[u8], out: &mut [u8]) -> Option<Self> {
        let (v6, ip_len, hdr_len, payload) = mergeable(pkt)?;
        if payload == 0 || out.len() < pkt.len() {
            return None;
        }
        out[..pkt.len()].copy_from_slice(pkt);
        let seq = u32::from_be_bytes([
            pkt[ip_len + 4],
            pkt[ip_len + 5],
            pkt[ip_len + 6],
            pkt[ip_len + 7],
        ]);
        Some(Self {
            v6,
            ip_len,
            hdr_len,
            len: pkt.len(),
            gso_size: payload,
            count: 1,
            next_seq: seq.wrapping_add(payload as u32),
            closed: false,
        })
    }

    /// Segments merged so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Appends `pkt`'s payload to the super-packet in `out` (the buffer
    /// given to [`Self::start`]) if it continues it; false (and `out`
    /// untouched) otherwise.
    pub fn push(&mut self, pkt: &[u8], out: &mut [u8]) -> bool {
        if self.closed {
            return false;
        }
        let Some((v6, ip_len, hdr_len, payload)) = mergeable(pkt) else {
            return false;
        };
        if v6 != self.v6 || ip_len != self.ip_len || hdr_len != self.hdr_len {
            return false;
        }
        if payload == 0 || payload > self.gso_size || self.len + payload > MAX_COALESCED {
            return false;
        }
        if self.len + payload > out.len() || out.len() < self.hdr_len {
            return false;
        }
        let first = &out[..self.hdr_len];
        let same_ip = if v6 {
            // Version, class, flow label; next header, hop limit, addresses.
            first[..4] == pkt[..4] && first[6..40] == pkt[6..40]
        } else {
            // All but total length, id and checksum.
            first[..2] == pkt[..2]
                && first[6..10] == pkt[6..10]
                && first[12..ip_len] == pkt[12..ip_len]
        };
        let (t0, t1) = (&first[ip_len..], &pkt[ip_len..hdr_len]);
        let seq = u32::from_be_bytes([t1[4], t1[5], t1[6], t1[7]]);
        // Ports; ack, offset; flags but PSH; window; options (not the
        // sequence number, checksum or urgent pointer).
        let same_tcp = t0[..4] == t1[..4]
            && t0[8..13] == t1[8..13]
            && (t0[13] & !TCP_PSH) == (t1[13] & !TCP_PSH)
            && t0[14..16] == t1[14..16]
            && t0[20..] == t1[20..];
        if !same_ip || !same_tcp || seq != self.next_seq {
            return false;
        }
        out[self.len..self.len + payload].copy_from_slice(&pkt[hdr_len..]);
        // PSH of any merged segment is kept.
        out[ip_len + 13] |= pkt[ip_len + 13] & TCP_PSH;
        self.len += payload;
        self.count += 1;
        self.next_seq = seq.wrapping_add(payload as u32);
        self.closed = payload < self.gso_size;
        true
    }

    /// Finishes the super-packet in `out`: lengths, the IPv4 header
    /// checksum, the TCP checksum left partial (the pseudo-header sum, as
    /// the stack expects with `F_NEEDS_CSUM`). Returns its header and
    /// length. With one segment, `out` holds it unchanged and the header is
    /// [`VirtioNetHdr::NONE`].
    pub fn finish(&self, out: &mut [u8]) -> (VirtioNetHdr, usize) {
        if self.count < 2 {
            return (VirtioNetHdr::NONE, self.len);
        }
        let Some(p) = out.get_mut(..self.len) else {
            return (VirtioNetHdr::NONE, 0);
        };
        let ip_len = self.ip_len;
        let tcp_total = self.len - ip_len;
        let pseudo = if self.v6 {
            p[4..6].copy_from_slice(&(tcp_total as u16).to_be_bytes());
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&p[8..24]);
            d.copy_from_slice(&p[24..40]);
            checksum::pseudo_header_v6(s.into(), d.into(), 6, tcp_total as u32)
        } else {
            p[2..4].copy_from_slice(&(self.len as u16).to_be_bytes());
            p[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&p[..ip_len]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            let a = |k: usize| [p[k], p[k + 1], p[k + 2], p[k + 3]];
            checksum::pseudo_header_v4(a(12).into(), a(16).into(), 6, tcp_total as u16)
        };
        // The partial checksum: the pseudo-header sum, not complemented.
        let partial = !checksum::fold(pseudo);
        p[ip_len + 16..ip_len + 18].copy_from_slice(&partial.to_be_bytes());
        let h = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if self.v6 {
                GsoType::TcpV6
            } else {
                GsoType::TcpV4
            },
            gso_ecn: false,
            hdr_len: self.hdr_len as u16,
            gso_size: self.gso_size as u16,
            csum_start: ip_len as u16,
            csum_offset: 16,
        };
        (h, self.len)
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

    /// Cuts `p` with the segmenter, then merges the segments back.
    fn round_trip(p: &[u8], size: u16) -> (VirtioNetHdr, std::vec::Vec<u8>) {
        let mut s = TcpSegmenter::new(p, &hdr(GsoType::TcpV4, size)).unwrap();
        let mut segs = std::vec::Vec::new();
        let mut buf = [0u8; 1600];
        while let Some(r) = s.next_into(p, &mut buf) {
            segs.push(buf[..r.unwrap()].to_vec());
        }
        let mut out = std::vec![0u8; MAX_COALESCED];
        let mut c = TcpCoalescer::start(&segs[0], &mut out).unwrap();
        for seg in &segs[1..] {
            assert!(c.push(seg, &mut out));
        }
        assert_eq!(c.count(), segs.len());
        let (h, n) = c.finish(&mut out);
        (h, out[..n].to_vec())
    }

    #[test]
    fn coalescing_undoes_segmentation() {
        let mut p = super_v4(4000);
        p[33] &= !(TCP_FIN | TCP_CWR); // FIN and CWR cannot be merged
        let (h, merged) = round_trip(&p, 1448);
        assert_eq!(
            (h.gso_type, h.gso_size, h.csum_start, h.csum_offset),
            (GsoType::TcpV4, 1448, 20, 16)
        );
        assert!(h.needs_csum());
        assert_eq!(merged.len(), p.len());
        let mut want = p.clone();
        // The merged IPv4 id is the first segment's; lengths and header
        // checksum whole again; the TCP checksum partial.
        want[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&want[..20]);
        want[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(&merged[..36], &want[..36]);
        assert_eq!(&merged[38..], &want[38..]);
        // Completing the partial checksum gives a valid segment.
        let mut done = merged.clone();
        complete_checksum(&mut done, h.csum_start, h.csum_offset).unwrap();
        let ip = crate::ipv4::Ipv4Packet::new_checked(&done[..]).unwrap();
        let t = TcpSegment::new_checked(&done[20..]).unwrap();
        assert!(ip.verify_checksum() && t.verify_checksum(ip.src().into(), ip.dst().into()));
    }

    #[test]
    fn coalescing_refuses_what_does_not_continue() {
        let mut p = super_v4(3000);
        p[33] = 0x10; // ACK only
        let mut s = TcpSegmenter::new(&p, &hdr(GsoType::TcpV4, 1000)).unwrap();
        let mut segs = std::vec::Vec::new();
        let mut buf = [0u8; 1600];
        while let Some(r) = s.next_into(&p, &mut buf) {
            segs.push(buf[..r.unwrap()].to_vec());
        }
        let mut out = std::vec![0u8; MAX_COALESCED];
        let start = |out: &mut [u8]| TcpCoalescer::start(&segs[0], out).unwrap();
        // Out of order.
        assert!(!start(&mut out).push(&segs[2], &mut out));
        // A corrupted segment.
        let mut bad = segs[1].clone();
        bad[60] ^= 1;
        assert!(!start(&mut out).push(&bad, &mut out));
        // Another flow (port).
        let mut other = segs[1].clone();
        other[21] ^= 1;
        assert!(!start(&mut out).push(&other, &mut out));
        // A different window.
        let mut win = segs[1].clone();
        win[34] ^= 1;
        assert!(!start(&mut out).push(&win, &mut out));
        // The same segment twice (its sequence number again).
        let mut c = start(&mut out);
        assert!(c.push(&segs[1], &mut out));
        assert!(!c.push(&segs[1], &mut out));
        // Nothing after a short segment: cut 2,500 bytes into 1,000, 1,000, 500.
        let mut q = p.clone();
        q.truncate(52 + 2500);
        q[2..4].copy_from_slice(&((52 + 2500) as u16).to_be_bytes());
        let mut s = TcpSegmenter::new(&q, &hdr(GsoType::TcpV4, 1000)).unwrap();
        let mut short = std::vec::Vec::new();
        while let Some(r) = s.next_into(&q, &mut buf) {
            short.push(buf[..r.unwrap()].to_vec());
        }
        let mut after = short[2].clone();
        let seq =
            u32::from_be_bytes([after[24], after[25], after[26], after[27]]).wrapping_add(500);
        after[24..28].copy_from_slice(&seq.to_be_bytes());
        after[4..6].copy_from_slice(&[0, 9]);
        after[10..12].copy_from_slice(&[0, 0]);
        let ipc = checksum::checksum(&after[..20]);
        after[10..12].copy_from_slice(&ipc.to_be_bytes());
        after[36..38].copy_from_slice(&[0, 0]);
        let ph = checksum::pseudo_header_v4(
            core::net::Ipv4Addr::new(198, 18, 0, 200),
            core::net::Ipv4Addr::new(198, 18, 0, 1),
            6,
            (after.len() - 20) as u16,
        );
        let tc = checksum::fold(checksum::combine(ph, checksum::sum(&after[20..])));
        after[36..38].copy_from_slice(&tc.to_be_bytes());
        let mut c = TcpCoalescer::start(&short[0], &mut out).unwrap();
        assert!(c.push(&short[1], &mut out) && c.push(&short[2], &mut out));
        assert!(!c.push(&after, &mut out), "closed by the short segment");
        let mut c2 = TcpCoalescer::start(&short[2], &mut out).unwrap();
        assert!(
            c2.push(&after, &mut out),
            "the same segment follows a fresh start"
        );
        // A SYN, or a headers-only ACK, starts nothing.
        let mut syn = segs[0].clone();
        syn[33] |= 0x02;
        assert!(TcpCoalescer::start(&syn, &mut out).is_none());
        let ack = &p[..52];
        let mut ack = ack.to_vec();
        ack[2..4].copy_from_slice(&52u16.to_be_bytes());
        assert!(TcpCoalescer::start(&ack, &mut out).is_none());
        // One segment alone: unchanged, no offload header.
        let c = TcpCoalescer::start(&segs[0], &mut out).unwrap();
        let (h, n) = c.finish(&mut out);
        assert_eq!(h, VirtioNetHdr::NONE);
        assert_eq!(&out[..n], &segs[0][..]);
        assert!(TcpCoalescer::start(&[], &mut out).is_none());
        assert!(TcpCoalescer::start(&segs[0], &mut out[..10]).is_none());
    }
}
