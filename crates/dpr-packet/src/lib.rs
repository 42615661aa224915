//! `dpr-packet`: the wire layer of dpr.
//!
//! Checked, zero-copy views over packet bytes and owned representations
//! beside them, for everything a DPR router reads or rewrites: Ethernet II
//! (up to two VLAN tags), IPv4 (options, fragments), IPv6 (extension-header
//! chain), TCP (options, MSS), UDP, ICMPv4/ICMPv6 errors with their quotes,
//! the [`FlowKey`] of a connection with a keyed hash, the Internet checksum
//! (full and incremental), and IP-in-IP encapsulation and decapsulation.
//!
//! What this layer may not do: allocate (it is `no_std` without `alloc`),
//! read a clock, a socket or a file, keep state between calls, or panic on
//! any input. It knows nothing of peers, tables or policies: it answers
//! "what is this packet" and "rewrite these bytes".
//!
//! ```text
//!  frame bytes ──► parse::parse_frame ──► PacketMeta { flow: FlowKey, offsets, fragment, tcp flags }
//!                                              │
//!          (the router engine decides, above this crate)
//!                                              │
//!   redirect ──► rewrite::clamp_mss ──► ipip::encapsulate (outer header into headroom)
//!   from peer ─► ipip::decapsulate_in_place ──► inner packet bounds + outer source
//!   ICMP error ► icmp::parse_icmpv4_error / parse_icmpv6_error ──► quoted FlowKey
//! ```
//!
//! # Example: what a redirecting host does to a frame
//!
//! ```
//! use dpr_packet::ipip::{self, ChecksumCheck, EncapParams};
//! use dpr_packet::{parse_frame, rewrite};
//! use std::net::Ipv4Addr;
//!
//! /// Turns a received frame into an IP-in-IP packet for `peer`, in place.
//! /// `buf` holds 20 bytes of headroom, then the frame; returns the outer packet.
//! fn redirect(buf: &mut [u8], me: Ipv4Addr, peer: Ipv4Addr) -> Result<&[u8], dpr_packet::Error> {
//!     let m = parse_frame(&buf[20..])?; // one pass: FlowKey, offsets, flags
//!     let ip = 20 + m.l3_range().start..20 + m.l3_range().end;
//!     rewrite::clamp_mss(&mut buf[ip.clone()], 1440)?; // SYNs fit the tunnel
//!     // Drop the Ethernet header: the outer header goes just before the IP packet.
//!     let p = EncapParams::new(me.into(), peer.into());
//!     let start = ipip::encapsulate(&mut buf[..ip.end], ip.start, &p)?;
//!     Ok(&buf[start..ip.end])
//! }
//!
//! // A SYN from 198.18.0.10:40000 to 198.18.1.1:80 with MSS 1460, after 20 bytes of headroom.
//! let mut buf = vec![0u8; 20];
//! buf.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
//! buf.extend_from_slice(&[0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 10, 198, 18, 1, 1]);
//! buf.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
//! buf.extend_from_slice(&[2, 4, 0x05, 0xb4]);
//! let outer = redirect(&mut buf, Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 19, 0, 2))?;
//! let d = ipip::decapsulate(outer, ChecksumCheck::Verify)?;
//! assert_eq!(d.outer_dst, Ipv4Addr::new(198, 19, 0, 2));
//! assert_eq!(dpr_packet::parse_ip(&outer[d.inner])?.flow.to_string(), "tcp 198.18.0.10:40000 -> 198.18.1.1:80");
//! # Ok::<(), dpr_packet::Error>(())
//! ```
//!
//! Views follow one pattern: `Xxx::new_checked(buffer)` validates every
//! length once, after which no accessor can panic; setters exist where the
//! buffer is mutable; `XxxRepr::{parse, emit, buffer_len}` is the owned form.
//! Parse errors are a four-byte [`Error`]: the layer, the offset, and whether
//! the buffer was too short or the content malformed. Checksums are never
//! verified implicitly, so a caller whose NIC verified them skips the cost.
#![cfg_attr(not(test), no_std)]

pub mod checksum;
pub mod control;
pub mod error;
pub mod ethernet;
pub mod flow;
pub mod gre;
pub mod icmp;
pub mod ip;
pub mod ipip;
pub mod ipv4;
pub mod ipv6;
pub mod parse;
pub mod rewrite;
pub mod siphash;
pub mod tcp;
pub mod udp;
pub mod virtio;

#[cfg(any(fuzzing, test))]
pub mod fuzz_checks;

pub use error::{Error, ErrorKind, Layer, Malformed, Result};
pub use flow::{FlowHasher, FlowKey};
pub use ip::{Ecn, IpProtocol, IpVersion};
pub use parse::{Fragment, PacketMeta, parse_frame, parse_ip};
