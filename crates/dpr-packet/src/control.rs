//! The cluster control protocol's wire format, version 1.
//!
//! Hosts exchange these kinds of message over UDP between tunnel
//! addresses: load reports, the request and reply of restart recovery, cut
//! notices, idle advertisements, liveness probes, and the flow queries and
//! claims of VIP mode's ask-on-miss.
//! Every message is a fixed header, a body, and a 32-byte HMAC-SHA-256 tag
//! over header and body. This module lays the bytes out and checks them;
//! computing and verifying the tag (and every other judgement: who may
//! send, replay, freshness) belongs to the cluster state machine above.
//!
//! ```text
//!  0       2   3    4        6        8        10       12
//!  +-------+---+----+--------+--------+--------+--------+
//!  | "DR"  |ver|kind| key id |body len| sender |reserved|
//!  +-------+---+----+--------+--------+--------+--------+
//!  12 incarnation (u64) | 20 sequence (u64) | 28 sent at, Unix ns (u64)
//!  36 body (body len bytes) ... then the tag (32 bytes)
//! ```
//!
//! All integers are big-endian; figures are IEEE 754 `f32` bit patterns.
//! [`parse`] validates every length, count, reserved field and value once:
//! afterwards no accessor or iterator can fail or panic. A length field that
//! disagrees with the datagram's length is an error, never truncated or
//! padded, so one datagram is exactly one message.

use crate::error::{Error, Layer, Malformed, Result};
use crate::flow::FlowKey;
use crate::ip::IpProtocol;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The first two bytes of every message.
pub const MAGIC: [u8; 2] = *b"DR";
/// The version this module reads and writes.
pub const VERSION: u8 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 36;
/// Bytes of the HMAC-SHA-256 tag at the end of every message.
pub const TAG_LEN: usize = 32;
/// Bytes of one [`LoadEntry`] on the wire.
pub const ENTRY_LEN: usize = 48;
/// Bytes of a report body before its entries.
pub const REPORT_PREFIX_LEN: usize = 4;
/// Bytes of a recovery reply body before its flows.
pub const REPLY_PREFIX_LEN: usize = 12;
/// Bytes of a recovery request body without missing-chunk ranges (the
/// whole body of a first request).
pub const REQUEST_LEN: usize = 8;
/// Bytes of one missing-chunk range in a recovery request.
pub const RANGE_LEN: usize = 4;
/// The most missing-chunk ranges one recovery request carries.
pub const MAX_REQUEST_RANGES: usize =
    (MAX_MESSAGE_LEN - HEADER_LEN - TAG_LEN - REQUEST_LEN) / RANGE_LEN;
/// Bytes of a probe's body (one reserved word).
pub const PROBE_LEN: usize = 4;
/// Bytes of an idle advertisement's body (one reserved word).
pub const IDLE_LEN: usize = 4;
/// The largest message this version sends: with IPv6 and UDP headers (48
/// bytes) it fits a 1,500-byte path with room for a tunnel.
pub const MAX_MESSAGE_LEN: usize = 1400;
/// The most entries one report carries (a report is at most
/// [`MAX_MESSAGE_LEN`] bytes).
pub const MAX_ENTRIES: usize =
    (MAX_MESSAGE_LEN - HEADER_LEN - TAG_LEN - REPORT_PREFIX_LEN) / ENTRY_LEN;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A load report (the sender's own entry, then relayed ones).
    Report,
    /// A restarted host asks a peer for the flows it serves on its behalf.
    RecoveryRequest,
    /// One chunk of the answer to a recovery request.
    RecoveryReply,
    /// One chunk of a list of flows the sender had routed to the receiver
    /// and cut (answered RST to their clients) while the receiver was dead
    /// or gone: the receiver's own sockets of those flows are stale.
    CutNotice,
    /// The sender has just become idle (no open connection): a host over
    /// its threshold may send it the next new connection (join-idle).
    IdleAdvert,
    /// The sender has not heard from the receiver for a while: the
    /// receiver answers at once with a report to the sender.
    Probe,
    /// VIP mode: the sender received packets of established connections it
    /// does not know (ECMP moved them, or it restarted) and asks which host
    /// serves them. Older hosts count it as an unknown kind and ignore it.
    FlowQuery,
    /// VIP mode: the answer to a flow query: the sender serves these flows.
    FlowClaim,
    /// A kind this version does not know: data, not an error.
    Unknown(u8),
}

impl From<u8> for MessageKind {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::Report,
            2 => Self::RecoveryRequest,
            3 => Self::RecoveryReply,
            4 => Self::CutNotice,
            5 => Self::IdleAdvert,
            6 => Self::Probe,
            7 => Self::FlowQuery,
            8 => Self::FlowClaim,
            v => Self::Unknown(v),
        }
    }
}

impl From<MessageKind> for u8 {
    fn from(k: MessageKind) -> u8 {
        match k {
            MessageKind::Report => 1,
            MessageKind::RecoveryRequest => 2,
            MessageKind::RecoveryReply => 3,
            MessageKind::CutNotice => 4,
            MessageKind::IdleAdvert => 5,
            MessageKind::Probe => 6,
            MessageKind::FlowQuery => 7,
            MessageKind::FlowClaim => 8,
            MessageKind::Unknown(v) => v,
        }
    }
}

/// The fixed header's fields (all but magic, version and body length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// What the message is.
    pub kind: MessageKind,
    /// Which cluster key signed it.
    pub key_id: u16,
    /// The sending host's id.
    pub sender: u16,
    /// The sender's incarnation: a number it picks at start, larger than
    /// any before (its start time in Unix nanoseconds).
    pub incarnation: u64,
    /// Per-incarnation message sequence number, starting at 1.
    pub seq: u64,
    /// When it was sent, in Unix nanoseconds by the sender's clock.
    pub sent_at_ns: u64,
}

/// A host's state as it announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostState {
    /// Serving and taking new connections.
    Active,
    /// Finishing its connections; takes no new ones.
    Draining,
    /// Done: leaving the cluster.
    Leaving,
}

impl HostState {
    fn from_wire(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Active),
            1 => Some(Self::Draining),
            2 => Some(Self::Leaving),
            _ => None,
        }
    }

    fn to_wire(self) -> u8 {
        match self {
            Self::Active => 0,
            Self::Draining => 1,
            Self::Leaving => 2,
        }
    }
}

/// One host's load as a report carries it: the sender's own, or one it
/// relays for another host (bounded fan-out mode).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadEntry {
    /// The host the figures are about.
    pub origin: u16,
    /// Its announced state.
    pub state: HostState,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its report sequence number (newer reports have larger ones).
    pub seq: u64,
    /// How old the figures were when this message was sent, in ms (0 for
    /// the sender's own entry).
    pub age_ms: u32,
    /// Open connections served.
    pub open_connections: u32,
    /// CPU utilisation (0.0 ..= 1.0 per unit of capacity), finite and >= 0.
    pub cpu_utilisation: f32,
    /// Connections it redirected.
    pub redirected_connections: u32,
    /// Active sockets.
    pub active_sockets: u32,
    /// CPU capacity relative to a reference host, finite and >= 0.
    pub capacity_cpu: f32,
    /// Memory capacity relative to a reference host, finite and >= 0.
    pub capacity_memory: f32,
}

const UNREACHABLE_ENTRY: LoadEntry = LoadEntry {
    origin: 0,
    state: HostState::Leaving,
    incarnation: 0,
    seq: 0,
    age_ms: 0,
    open_connections: 0,
    cpu_utilisation: 0.0,
    redirected_connections: 0,
    active_sockets: 0,
    capacity_cpu: 0.0,
    capacity_memory: 0.0,
};

/// A flow a recovery reply names, client to service.
pub type RecoveredFlow = FlowKey;

/// A parsed, validated message.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// The header.
    pub header: Header,
    /// The body, by kind.
    pub body: Body<'a>,
    /// Header and body: the bytes the tag covers.
    pub signed: &'a [u8],
    /// The tag.
    pub tag: &'a [u8; TAG_LEN],
}

/// A message body.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// A load report.
    Report(ReportView<'a>),
    /// A recovery request.
    RecoveryRequest {
        /// Matches replies to this request.
        request_id: u32,
        /// How many chunks the asker knows the answer has; 0 when it has
        /// received none (then `missing` is empty): send them all.
        known_chunks: u16,
        /// The chunks the asker still lacks (when `known_chunks > 0`).
        missing: MissingRanges<'a>,
    },
    /// One chunk of a recovery reply.
    RecoveryReply(ReplyView<'a>),
    /// One chunk of a cut notice: the same layout as a recovery reply,
    /// its request id 0.
    CutNotice(ReplyView<'a>),
    /// An idle advertisement (its body is a reserved zero word).
    IdleAdvert,
    /// A liveness probe (its body is a reserved zero word).
    Probe,
    /// A flow query: the layout of a recovery reply whose request id is
    /// the query id and whose chunk fields are 0 of 1 (each query stands
    /// alone).
    FlowQuery(ReplyView<'a>),
    /// A flow claim: the same layout, the query id of the query it answers.
    FlowClaim(ReplyView<'a>),
    /// A kind this version does not know (body not interpreted).
    Unknown(&'a [u8]),
}

/// A validated report body.
#[derive(Clone, Copy, Debug)]
pub struct ReportView<'a> {
    entries: &'a [u8],
    addrs: &'a [u8],
    addr_count: u8,
}

impl<'a> ReportView<'a> {
    /// The entries; the first is the sender's own. Never empty.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = LoadEntry> + 'a {
        // Every entry was checked by `parse`: the fallback is unreachable.
        self.entries
            .chunks_exact(ENTRY_LEN)
            .map(|e| read_entry(e).unwrap_or(UNREACHABLE_ENTRY))
    }

    /// The sender's own entry.
    pub fn own(&self) -> Option<LoadEntry> {
        self.entries().next()
    }

    /// The service addresses the sender announces.
    pub fn service_addrs(&self) -> impl Iterator<Item = IpAddr> + 'a {
        AddrIter {
            rest: self.addrs,
            left: self.addr_count,
        }
    }

    /// Number of service addresses.
    pub fn service_addr_count(&self) -> usize {
        usize::from(self.addr_count)
    }
}

struct AddrIter<'a> {
    rest: &'a [u8],
    left: u8,
}

impl Iterator for AddrIter<'_> {
    type Item = IpAddr;
    fn next(&mut self) -> Option<IpAddr> {
        if self.left == 0 {
            return None;
        }
        let (a, n) = read_addr(self.rest)?;
        self.rest = self.rest.get(n..)?;
        self.left -= 1;
        Some(a)
    }
}

/// The missing-chunk ranges of a recovery request: inclusive `(first,
/// last)` pairs, ascending, disjoint, each below the request's known chunk
/// count (checked by [`parse`]).
#[derive(Clone, Copy, Debug)]
pub struct MissingRanges<'a> {
    bytes: &'a [u8],
}

impl<'a> MissingRanges<'a> {
    /// No ranges.
    pub const EMPTY: MissingRanges<'static> = MissingRanges { bytes: &[] };

    /// The ranges, inclusive.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u16, u16)> + 'a {
        self.bytes
            .chunks_exact(RANGE_LEN)
            .map(|r| (be16(r, 0), be16(r, 2)))
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.bytes.len() / RANGE_LEN
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A validated recovery reply body.
#[derive(Clone, Copy, Debug)]
pub struct ReplyView<'a> {
    /// The request this answers.
    pub request_id: u32,
    /// This chunk's index.
    pub chunk: u16,
    /// How many chunks the answer has (>= 1).
    pub chunks: u16,
    flow_count: u16,
    flows: &'a [u8],
}

impl<'a> ReplyView<'a> {
    /// The flows in this chunk.
    pub fn flows(&self) -> impl Iterator<Item = RecoveredFlow> + 'a {
        let mut rest = self.flows;
        let mut left = self.flow_count;
        core::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let (f, n) = read_flow(rest)?;
            rest = rest.get(n..)?;
            left -= 1;
            Some(f)
        })
    }

    /// Number of flows in this chunk.
    pub fn flow_count(&self) -> usize {
        usize::from(self.flow_count)
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn bad(offset: usize, why: Malformed) -> Error {
    Error::malformed(Layer::Control, offset, why)
}

fn short(offset: usize) -> Error {
    Error::too_short(Layer::Control, offset)
}

/// Parses and validates one message (the whole datagram).
pub fn parse(msg: &[u8]) -> Result<Message<'_>> {
    if msg.len() < HEADER_LEN + TAG_LEN {
        return Err(short(msg.len()));
    }
    if msg[0..2] != MAGIC {
        return Err(bad(0, Malformed::Magic));
    }
    if msg[2] != VERSION {
        return Err(bad(2, Malformed::Version));
    }
    let body_len = usize::from(be16(msg, 6));
    if HEADER_LEN + body_len + TAG_LEN != msg.len() {
        return Err(bad(6, Malformed::TotalLength));
    }
    if be16(msg, 10) != 0 {
        return Err(bad(10, Malformed::FieldValue));
    }
    let header = Header {
        kind: MessageKind::from(msg[3]),
        key_id: be16(msg, 4),
        sender: be16(msg, 8),
        incarnation: be64(msg, 12),
        seq: be64(msg, 20),
        sent_at_ns: be64(msg, 28),
    };
    let signed = &msg[..HEADER_LEN + body_len];
    let body = &signed[HEADER_LEN..];
    let tag: &[u8; TAG_LEN] = msg[HEADER_LEN + body_len..]
        .try_into()
        .map_err(|_| short(msg.len()))?;
    let body = match header.kind {
        MessageKind::Report => Body::Report(parse_report(body)?),
        MessageKind::RecoveryRequest => parse_request(body)?,
        MessageKind::RecoveryReply => Body::RecoveryReply(parse_reply(body)?),
        MessageKind::IdleAdvert | MessageKind::Probe => {
            if body.len() != IDLE_LEN {
                return Err(bad(6, Malformed::TotalLength));
            }
            if be32(body, 0) != 0 {
                return Err(bad(HEADER_LEN, Malformed::FieldValue));
            }
            if header.kind == MessageKind::Probe {
                Body::Probe
            } else {
                Body::IdleAdvert
            }
        }
        MessageKind::CutNotice => {
            let r = parse_reply(body)?;
            // The request id field is reserved here.
            if r.request_id != 0 {
                return Err(bad(HEADER_LEN, Malformed::FieldValue));
            }
            Body::CutNotice(r)
        }
        MessageKind::FlowQuery | MessageKind::FlowClaim => {
            let r = parse_reply(body)?;
            // One datagram per query or claim: the chunk fields are 0 of 1.
            if r.chunk != 0 || r.chunks != 1 {
                return Err(bad(HEADER_LEN + 4, Malformed::FieldValue));
            }
            if header.kind == MessageKind::FlowQuery {
                Body::FlowQuery(r)
            } else {
                Body::FlowClaim(r)
            }
        }
        MessageKind::Unknown(_) => Body::Unknown(body),
    };
    Ok(Message {
        header,
        body,
        signed,
        tag,
    })
}

fn parse_report(body: &[u8]) -> Result<ReportView<'_>> {
    let base = HEADER_LEN;
    if body.len() < REPORT_PREFIX_LEN {
        return Err(short(base + body.len()));
    }
    let n = usize::from(body[0]);
    let addr_count = body[1];
    if n == 0 || n > MAX_ENTRIES {
        return Err(bad(base, Malformed::FieldValue));
    }
    if be16(body, 2) != 0 {
        return Err(bad(base + 2, Malformed::FieldValue));
    }
    let end = REPORT_PREFIX_LEN + n * ENTRY_LEN;
    // Counts that need more bytes than the body has: the lengths disagree.
    let entries = body
        .get(REPORT_PREFIX_LEN..end)
        .ok_or(bad(base, Malformed::TotalLength))?;
    for (i, e) in entries.chunks_exact(ENTRY_LEN).enumerate() {
        let at = base + REPORT_PREFIX_LEN + i * ENTRY_LEN;
        check_entry(e).map_err(|off| bad(at + off, Malformed::FieldValue))?;
    }
    let addrs = &body[end..];
    let mut rest = addrs;
    for _ in 0..addr_count {
        let off = base + body.len() - rest.len();
        let (_, used) = read_addr_checked(rest, off)?;
        rest = &rest[used..];
    }
    if !rest.is_empty() {
        // Trailing bytes the counts do not explain.
        return Err(bad(6, Malformed::TotalLength));
    }
    Ok(ReportView {
        entries,
        addrs,
        addr_count,
    })
}

/// Request body: request id (u32), known chunk count (u16), range count
/// (u16), then that many `(first, last)` u16 pairs. A first request is
/// the 8 bytes with both counts 0 (what version 1 always sent: its second
/// word was reserved, zero).
fn parse_request(body: &[u8]) -> Result<Body<'_>> {
    let base = HEADER_LEN;
    if body.len() < REQUEST_LEN {
        return Err(bad(6, Malformed::TotalLength));
    }
    let known = be16(body, 4);
    let count = usize::from(be16(body, 6));
    if known == 0 && count != 0 {
        return Err(bad(base + 6, Malformed::FieldValue));
    }
    if count > MAX_REQUEST_RANGES || body.len() != REQUEST_LEN + count * RANGE_LEN {
        return Err(bad(6, Malformed::TotalLength));
    }
    let ranges = &body[REQUEST_LEN..];
    let mut next = 0u32;
    for (i, r) in ranges.chunks_exact(RANGE_LEN).enumerate() {
        let (first, last) = (be16(r, 0), be16(r, 2));
        if u32::from(first) < next || first > last || last >= known {
            return Err(bad(
                base + REQUEST_LEN + i * RANGE_LEN,
                Malformed::FieldValue,
            ));
        }
        next = u32::from(last) + 1;
    }
    Ok(Body::RecoveryRequest {
        request_id: be32(body, 0),
        known_chunks: known,
        missing: MissingRanges { bytes: ranges },
    })
}

fn parse_reply(body: &[u8]) -> Result<ReplyView<'_>> {
    let base = HEADER_LEN;
    if body.len() < REPLY_PREFIX_LEN {
        return Err(short(base + body.len()));
    }
    let chunk = be16(body, 4);
    let chunks = be16(body, 6);
    if chunks == 0 || chunk >= chunks {
        return Err(bad(base + 4, Malformed::FieldValue));
    }
    if be16(body, 10) != 0 {
        return Err(bad(base + 10, Malformed::FieldValue));
    }
    let flow_count = be16(body, 8);
    let flows = &body[REPLY_PREFIX_LEN..];
    let mut rest = flows;
    for _ in 0..flow_count {
        let off = base + body.len() - rest.len();
        let used = check_flow(rest, off)?;
        rest = &rest[used..];
    }
    if !rest.is_empty() {
        return Err(bad(6, Malformed::TotalLength));
    }
    Ok(ReplyView {
        request_id: be32(body, 0),
        chunk,
        chunks,
        flow_count,
        flows,
    })
}

fn finite_nonneg(bits: u32) -> bool {
    let v = f32::from_bits(bits);
    v.is_finite() && v >= 0.0
}

/// Checks one entry; on failure, the offset of the bad field in it.
fn check_entry(e: &[u8]) -> core::result::Result<(), usize> {
    if HostState::from_wire(e[2]).is_none() {
        return Err(2);
    }
    if e[3] != 0 {
        return Err(3);
    }
    for at in [28, 40, 44] {
        if !finite_nonneg(be32(e, at)) {
            return Err(at);
        }
    }
    Ok(())
}

fn read_entry(e: &[u8]) -> Option<LoadEntry> {
    Some(LoadEntry {
        origin: be16(e, 0),
        state: HostState::from_wire(e[2])?,
        incarnation: be64(e, 4),
        seq: be64(e, 12),
        age_ms: be32(e, 20),
        open_connections: be32(e, 24),
        cpu_utilisation: f32::from_bits(be32(e, 28)),
        redirected_connections: be32(e, 32),
        active_sockets: be32(e, 36),
        capacity_cpu: f32::from_bits(be32(e, 40)),
        capacity_memory: f32::from_bits(be32(e, 44)),
    })
}

fn addr_len(family: u8) -> Option<usize> {
    match family {
        4 => Some(4),
        6 => Some(16),
        _ => None,
    }
}

fn read_addr(b: &[u8]) -> Option<(IpAddr, usize)> {
    let n = addr_len(*b.first()?)?;
    let a = b.get(1..1 + n)?;
    let addr = match n {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a).ok()?)),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).ok()?)),
    };
    Some((addr, 1 + n))
}

fn read_addr_checked(b: &[u8], offset: usize) -> Result<(IpAddr, usize)> {
    let family = *b.first().ok_or(bad(offset, Malformed::TotalLength))?;
    let n = addr_len(family).ok_or(bad(offset, Malformed::AddressFamily))?;
    read_addr(b)
        .filter(|_| b.len() > n)
        .ok_or(bad(offset, Malformed::TotalLength))
}

/// Flow layout: family (4 | 6), protocol (6), client port, service port,
/// client address, service address.
fn flow_len(family: u8) -> Option<usize> {
    addr_len(family).map(|n| 6 + 2 * n)
}

fn check_flow(b: &[u8], offset: usize) -> Result<usize> {
    let family = *b.first().ok_or(bad(offset, Malformed::TotalLength))?;
    let n = flow_len(family).ok_or(bad(offset, Malformed::AddressFamily))?;
    if b.len() < n {
        return Err(bad(offset, Malformed::TotalLength));
    }
    if b[1] != u8::from(IpProtocol::Tcp) {
        return Err(bad(offset + 1, Malformed::Protocol));
    }
    Ok(n)
}

fn read_flow(b: &[u8]) -> Option<(FlowKey, usize)> {
    let family = *b.first()?;
    let n = flow_len(family)?;
    let b = b.get(..n)?;
    let a = addr_len(family)?;
    let addr = |at: usize| -> Option<IpAddr> {
        let s = b.get(at..at + a)?;
        Some(match a {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(s).ok()?)),
            _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(s).ok()?)),
        })
    };
    let key = FlowKey::new(
        IpProtocol::Tcp,
        addr(6)?,
        be16(b, 2),
        addr(6 + a)?,
        be16(b, 4),
    );
    Some((key, n))
}

/// Bytes a flow takes in a recovery reply (`None`: not TCP, or mixed families).
pub fn flow_wire_len(f: &FlowKey) -> Option<usize> {
    if f.protocol != IpProtocol::Tcp || f.src.is_ipv4() != f.dst.is_ipv4() {
        return None;
    }
    flow_len(if f.src.is_ipv4() { 4 } else { 6 })
}

/// Bytes a service address takes in a report.
pub fn addr_wire_len(a: &IpAddr) -> usize {
    if a.is_ipv4() { 5 } else { 17 }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn put_addr(b: &mut [u8], a: &IpAddr) -> usize {
    match a {
        IpAddr::V4(v) => {
            b[0] = 4;
            b[1..5].copy_from_slice(&v.octets());
            5
        }
        IpAddr::V6(v) => {
            b[0] = 6;
            b[1..17].copy_from_slice(&v.octets());
            17
        }
    }
}

fn put_raw_addr(b: &mut [u8], a: &IpAddr) -> usize {
    match a {
        IpAddr::V4(v) => {
            b[..4].copy_from_slice(&v.octets());
            4
        }
        IpAddr::V6(v) => {
            b[..16].copy_from_slice(&v.octets());
            16
        }
    }
}

fn emit_header(buf: &mut [u8], h: &Header, body_len: usize) -> Result<()> {
    let body16 = u16::try_from(body_len).map_err(|_| bad(6, Malformed::Oversize))?;
    if HEADER_LEN + body_len + TAG_LEN > MAX_MESSAGE_LEN {
        return Err(bad(6, Malformed::Oversize));
    }
    if buf.len() < HEADER_LEN + body_len + TAG_LEN {
        return Err(short(buf.len()));
    }
    buf[0..2].copy_from_slice(&MAGIC);
    buf[2] = VERSION;
    buf[3] = u8::from(h.kind);
    put16(buf, 4, h.key_id);
    put16(buf, 6, body16);
    put16(buf, 8, h.sender);
    put16(buf, 10, 0);
    put64(buf, 12, h.incarnation);
    put64(buf, 20, h.seq);
    put64(buf, 28, h.sent_at_ns);
    Ok(())
}

fn check_value(v: f32) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(bad(0, Malformed::FieldValue))
    }
}

/// Writes a report (header and body, tag space left zero) into `buf`.
/// Returns the length of the signed part; the message is that plus
/// [`TAG_LEN`], the tag going at `buf[signed..signed + TAG_LEN]`.
pub fn emit_report(
    buf: &mut [u8],
    h: &Header,
    entries: &[LoadEntry],
    service_addrs: &[IpAddr],
) -> Result<usize> {
    if entries.is_empty() || entries.len() > MAX_ENTRIES || service_addrs.len() > 255 {
        return Err(bad(HEADER_LEN, Malformed::FieldValue));
    }
    for e in entries {
        check_value(e.cpu_utilisation)?;
        check_value(e.capacity_cpu)?;
        check_value(e.capacity_memory)?;
    }
    let body_len = REPORT_PREFIX_LEN
        + entries.len() * ENTRY_LEN
        + service_addrs.iter().map(addr_wire_len).sum::<usize>();
    emit_header(
        buf,
        &Header {
            kind: MessageKind::Report,
            ..*h
        },
        body_len,
    )?;
    let b = &mut buf[HEADER_LEN..HEADER_LEN + body_len];
    b[0] = entries.len() as u8;
    b[1] = service_addrs.len() as u8;
    put16(b, 2, 0);
    let mut at = REPORT_PREFIX_LEN;
    for e in entries {
        let w = &mut b[at..at + ENTRY_LEN];
        put16(w, 0, e.origin);
        w[2] = e.state.to_wire();
        w[3] = 0;
        put64(w, 4, e.incarnation);
        put64(w, 12, e.seq);
        put32(w, 20, e.age_ms);
        put32(w, 24, e.open_connections);
        put32(w, 28, e.cpu_utilisation.to_bits());
        put32(w, 32, e.redirected_connections);
        put32(w, 36, e.active_sockets);
        put32(w, 40, e.capacity_cpu.to_bits());
        put32(w, 44, e.capacity_memory.to_bits());
        at += ENTRY_LEN;
    }
    for a in service_addrs {
        at += put_addr(&mut b[at..], a);
    }
    Ok(HEADER_LEN + body_len)
}

/// Writes a first recovery request (the asker has no chunk yet: send
/// them all); returns the signed length (see [`emit_report`]).
pub fn emit_recovery_request(buf: &mut [u8], h: &Header, request_id: u32) -> Result<usize> {
    emit_recovery_request_missing(buf, h, request_id, 0, &[])
}

/// Writes a recovery request that names what the asker still lacks of an
/// answer of `known_chunks` chunks: `missing`, inclusive `(first, last)`
/// ranges, ascending and disjoint, at most [`MAX_REQUEST_RANGES`];
/// `known_chunks` 0 (with no ranges) asks for everything. Returns the
/// signed length (see [`emit_report`]).
pub fn emit_recovery_request_missing(
    buf: &mut [u8],
    h: &Header,
    request_id: u32,
    known_chunks: u16,
    missing: &[(u16, u16)],
) -> Result<usize> {
    if missing.len() > MAX_REQUEST_RANGES {
        return Err(bad(HEADER_LEN + 6, Malformed::Oversize));
    }
    if known_chunks == 0 && !missing.is_empty() {
        return Err(bad(HEADER_LEN + 6, Malformed::FieldValue));
    }
    let mut next = 0u32;
    for &(first, last) in missing {
        if u32::from(first) < next || first > last || last >= known_chunks {
            return Err(bad(HEADER_LEN + REQUEST_LEN, Malformed::FieldValue));
        }
        next = u32::from(last) + 1;
    }
    let body_len = REQUEST_LEN + missing.len() * RANGE_LEN;
    emit_header(
        buf,
        &Header {
            kind: MessageKind::RecoveryRequest,
            ..*h
        },
        body_len,
    )?;
    put32(buf, HEADER_LEN, request_id);
    put16(buf, HEADER_LEN + 4, known_chunks);
    put16(buf, HEADER_LEN + 6, missing.len() as u16);
    let mut at = HEADER_LEN + REQUEST_LEN;
    for &(first, last) in missing {
        put16(buf, at, first);
        put16(buf, at + 2, last);
        at += RANGE_LEN;
    }
    Ok(HEADER_LEN + body_len)
}

/// Writes a liveness probe; returns the signed length (see
/// [`emit_report`]).
pub fn emit_probe(buf: &mut [u8], h: &Header) -> Result<usize> {
    emit_header(
        buf,
        &Header {
            kind: MessageKind::Probe,
            ..*h
        },
        PROBE_LEN,
    )?;
    put32(buf, HEADER_LEN, 0);
    Ok(HEADER_LEN + PROBE_LEN)
}

/// Writes an idle advertisement; returns the signed length (see
/// [`emit_report`]).
pub fn emit_idle_advert(buf: &mut [u8], h: &Header) -> Result<usize> {
    emit_header(
        buf,
        &Header {
            kind: MessageKind::IdleAdvert,
            ..*h
        },
        IDLE_LEN,
    )?;
    put32(buf, HEADER_LEN, 0);
    Ok(HEADER_LEN + IDLE_LEN)
}

/// Writes one chunk of a recovery reply; returns the signed length (see
/// [`emit_report`]). Every flow must be TCP with both addresses of one
/// family ([`flow_wire_len`] says how much room each takes).
pub fn emit_recovery_reply(
    buf: &mut [u8],
    h: &Header,
    request_id: u32,
    chunk: u16,
    chunks: u16,
    flows: &[FlowKey],
) -> Result<usize> {
    emit_flow_list(
        buf,
        &Header {
            kind: MessageKind::RecoveryReply,
            ..*h
        },
        request_id,
        chunk,
        chunks,
        flows,
    )
}

/// Writes one chunk of a cut notice (the layout of a recovery reply, with
/// request id 0); returns the signed length (see [`emit_report`]).
pub fn emit_cut_notice(
    buf: &mut [u8],
    h: &Header,
    chunk: u16,
    chunks: u16,
    flows: &[FlowKey],
) -> Result<usize> {
    emit_flow_list(
        buf,
        &Header {
            kind: MessageKind::CutNotice,
            ..*h
        },
        0,
        chunk,
        chunks,
        flows,
    )
}

/// Writes a flow query (VIP mode: "who serves these flows?"), one
/// datagram standing alone; returns the signed length (see
/// [`emit_report`]). [`MAX_FLOWS_PER_QUERY`] IPv4 flows fit one message.
pub fn emit_flow_query(
    buf: &mut [u8],
    h: &Header,
    query_id: u32,
    flows: &[FlowKey],
) -> Result<usize> {
    emit_flow_list(
        buf,
        &Header {
            kind: MessageKind::FlowQuery,
            ..*h
        },
        query_id,
        0,
        1,
        flows,
    )
}

/// Writes a flow claim (VIP mode: "I serve these flows"), the answer to
/// the query `query_id`; returns the signed length (see [`emit_report`]).
pub fn emit_flow_claim(
    buf: &mut [u8],
    h: &Header,
    query_id: u32,
    flows: &[FlowKey],
) -> Result<usize> {
    emit_flow_list(
        buf,
        &Header {
            kind: MessageKind::FlowClaim,
            ..*h
        },
        query_id,
        0,
        1,
        flows,
    )
}

/// The most IPv4 flows one flow query or claim carries (14 bytes each;
/// IPv6 flows take 38).
pub const MAX_FLOWS_PER_QUERY: usize =
    (MAX_MESSAGE_LEN - HEADER_LEN - REPLY_PREFIX_LEN - TAG_LEN) / 14;

/// A message of kind `h.kind` whose body is a chunk of a flow list.
fn emit_flow_list(
    buf: &mut [u8],
    h: &Header,
    request_id: u32,
    chunk: u16,
    chunks: u16,
    flows: &[FlowKey],
) -> Result<usize> {
    if chunks == 0 || chunk >= chunks {
        return Err(bad(HEADER_LEN + 4, Malformed::FieldValue));
    }
    let count = u16::try_from(flows.len()).map_err(|_| bad(HEADER_LEN + 8, Malformed::Oversize))?;
    let mut flows_len = 0;
    for f in flows {
        flows_len += flow_wire_len(f).ok_or(bad(HEADER_LEN, Malformed::Protocol))?;
    }
    let body_len = REPLY_PREFIX_LEN + flows_len;
    emit_header(buf, h, body_len)?;
    let b = &mut buf[HEADER_LEN..HEADER_LEN + body_len];
    put32(b, 0, request_id);
    put16(b, 4, chunk);
    put16(b, 6, chunks);
    put16(b, 8, count);
    put16(b, 10, 0);
    let mut at = REPLY_PREFIX_LEN;
    for f in flows {
        let w = &mut b[at..];
        w[0] = if f.src.is_ipv4() { 4 } else { 6 };
        w[1] = u8::from(IpProtocol::Tcp);
        put16(w, 2, f.src_port);
        put16(w, 4, f.dst_port);
        let n = put_raw_addr(&mut w[6..], &f.src);
        put_raw_addr(&mut w[6 + n..], &f.dst);
        at += 6 + 2 * n;
    }
    Ok(HEADER_LEN + body_len)
}

#[cfg(test)]
mod tests;
