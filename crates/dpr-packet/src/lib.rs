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
//! Views follow one pattern: `Xxx::new_checked(buffer)` validates every
//! length once, after which no accessor can panic; setters exist where the
//! buffer is mutable; `XxxRepr::{parse, emit, buffer_len}` is the owned form.
//! Parse errors are a four-byte [`Error`]: the layer, the offset, and whether
//! the buffer was too short or the content malformed. Checksums are never
//! verified implicitly, so a caller whose NIC verified them skips the cost.
#![cfg_attr(not(test), no_std)]

pub mod checksum;
pub mod error;
pub mod ethernet;
pub mod flow;
pub mod icmp;
pub mod ip;
pub mod ipip;
pub mod ipv4;
pub mod ipv6;
pub mod parse;
pub mod rewrite;
pub mod tcp;
pub mod udp;

#[cfg(any(fuzzing, test))]
pub mod fuzz_checks;

pub use error::{Error, ErrorKind, Layer, Malformed, Result};
pub use flow::{FlowHasher, FlowKey};
pub use ip::{Ecn, IpProtocol, IpVersion};
pub use parse::{Fragment, PacketMeta, parse_frame, parse_ip};
