//! The cluster protocol: load reports, membership, draining and restart
//! recovery, authenticated. Sans-io, beside the [`Engine`](crate::Engine).
//!
//! A [`Node`] is one host's protocol state machine. It never touches a
//! socket or a clock: the caller feeds it datagrams ([`Node::handle_datagram`])
//! and timer ticks ([`Node::handle_timeout`]) with the time, and sends what
//! [`Node::poll_transmit`] returns over UDP between tunnel addresses. What
//! it learns it writes into the engine's load table and routing table.
//!
//! ```text
//!             ┌─────────── Node (this module) ───────────┐
//!  datagram ─►│ parse ─► sender? ─► HMAC ─► time window  │
//!             │   ─► replay window ─► report / recovery  │──► Engine: apply_report, add/remove
//!  timer ────►│ report due? drain done? recovery retry?  │    peer, set_draining, restore_route
//!             │ paced recovery replies? probe a silent   │
//!             │ peer?                                    │
//!             └──────────────┬───────────────────────────┘
//!                            └─► poll_transmit: Transmit { to, payload }
//! ```
//!
//! The message format lives in [`dpr_packet::control`]; the design, the
//! timers and the security model in `docs/cluster-protocol.md`.

mod keys;

pub use keys::{KeyRing, MIN_KEY_LEN};

use crate::engine::EngineError;
use crate::ops::ClusterEngine;
use dpr_packet::FlowKey;
use dpr_packet::control::{
    self, Body, Header, HostState, LoadEntry, MAX_ENTRIES, MAX_MESSAGE_LEN, MAX_REQUEST_RANGES,
    MessageKind, MissingRanges, REPLY_PREFIX_LEN, ReplyView, ReportView, TAG_LEN,
};
use dpr_policy::{RandomSource, SplitMix64};
use dpr_table::{Capacity, LoadFigures, LoadReport, PeerId, PeerState, ReportOutcome, Timestamp};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// A reading of both clocks: the monotonic one every timer uses, and Unix
/// time for the freshness window of signed messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Monotonic time (the engine's clock).
    pub mono: Timestamp,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub unix_ns: u64,
}

/// An error configuring the protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterError {
    /// A configuration field is invalid.
    Config {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The engine refused a change (duplicate tunnel address, ...).
    Engine(EngineError),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config { field, reason } => write!(f, "{field}: {reason}"),
            Self::Engine(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ClusterError {}

impl From<EngineError> for ClusterError {
    fn from(e: EngineError) -> Self {
        Self::Engine(e)
    }
}

/// How load reports reach the peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportMode {
    /// Every interval, one report to every peer (N−1 messages per host).
    FullMesh,
    /// Every interval, one report to a multicast group all hosts joined.
    Multicast(IpAddr),
    /// Bounded fan-out: every interval, one report to `k` random peers,
    /// carrying this host's entry and up to `relay` entries it holds for
    /// other hosts (each only as new as it has it).
    FanOut {
        /// Peers per interval.
        k: u16,
        /// Entries relayed per report (at most `MAX_ENTRIES - 1`).
        relay: u8,
    },
}

impl ReportMode {
    /// The multicast group, in multicast mode.
    pub fn multicast_group(&self) -> Option<IpAddr> {
        match self {
            Self::Multicast(g) => Some(*g),
            _ => None,
        }
    }
}

/// A peer as the configuration names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its id.
    pub id: PeerId,
    /// Its tunnel address (outer address of IP-in-IP, source of its reports).
    pub tunnel_addr: IpAddr,
    /// The service addresses it serves.
    pub service_addrs: Vec<IpAddr>,
}

/// The protocol's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// This host's id.
    pub local_id: PeerId,
    /// This host's service addresses (announced in reports).
    pub service_addrs: Vec<IpAddr>,
    /// This host's capacity (announced in reports).
    pub capacity: Capacity,
    /// Interval between reports. Liveness counts in these intervals (the
    /// load table's `report_interval` must be the same).
    pub report_interval: Duration,
    /// Each interval is shortened by a random fraction up to this (0 ..
    /// 0.5), so hosts do not report in lock-step and a healthy peer is never
    /// later than one interval.
    pub jitter: f64,
    /// How reports travel.
    pub mode: ReportMode,
    /// Messages whose send time differs from ours by more are refused.
    pub max_clock_skew: Duration,
    /// Longest wait for peers' recovery answers after a start, and
    /// longest wait without a new chunk once they are arriving (a large
    /// table takes longer than this, as long as it keeps coming).
    pub recovery_timeout: Duration,
    /// The paced sender of recovery replies sends at most
    /// `recovery_burst` chunks every `recovery_pace` (all askers
    /// together), so that a large table does not overrun the asker's
    /// socket buffer or the network.
    pub recovery_pace: Duration,
    /// Recovery reply chunks per `recovery_pace` (at least 1).
    pub recovery_burst: u32,
    /// A peer silent for 1.5 report intervals is probed directly every
    /// `probe_interval` until it answers (with a report) or is dead, so
    /// that lost reports alone do not make a live peer dead. Zero: no
    /// probes. Not used in fan-out mode (silence is normal there).
    pub probe_interval: Duration,
    /// Ask peers for recovery on start (off for the very first host of a
    /// new cluster; harmless either way).
    pub recover_on_start: bool,
    /// Drain deadline when [`Node::start_drain`] is given none.
    pub drain_deadline: Duration,
    /// Reports announcing `Leaving` before the node says it has left.
    pub leave_announcements: u32,
    /// Peers told when this host becomes idle (its load falls to zero),
    /// for the join-idle policy; 0: none.
    pub idle_advert_fanout: usize,
    /// Seed for jitter and fan-out choices.
    pub seed: u64,
}

impl NodeConfig {
    /// Defaults for everything but the identity.
    pub fn new(local_id: PeerId, service_addrs: Vec<IpAddr>) -> Self {
        Self {
            local_id,
            service_addrs,
            capacity: Capacity::default(),
            report_interval: Duration::from_millis(250),
            jitter: 0.2,
            mode: ReportMode::FullMesh,
            max_clock_skew: Duration::from_secs(30),
            recovery_timeout: Duration::from_secs(2),
            recovery_pace: Duration::from_millis(5),
            recovery_burst: 32,
            probe_interval: Duration::from_millis(25),
            recover_on_start: true,
            drain_deadline: Duration::from_secs(300),
            leave_announcements: 3,
            idle_advert_fanout: 0,
            seed: 0x0063_6c75_7374_6572,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |field, reason| Err(ClusterError::Config { field, reason });
        if self.report_interval < Duration::from_millis(1) {
            return bad("report_interval", "must be at least 1 ms");
        }
        if !(0.0..0.5).contains(&self.jitter) {
            return bad("report_jitter", "must be in 0 .. 0.5");
        }
        if self.service_addrs.len() > 255 {
            return bad("service_addrs", "at most 255");
        }
        if self.max_clock_skew.is_zero() {
            return bad("max_clock_skew", "must be greater than zero");
        }
        if self.recovery_pace < Duration::from_millis(1) {
            return bad("recovery_pace", "must be at least 1 ms");
        }
        if self.recovery_burst == 0 {
            return bad("recovery_burst", "must be at least 1");
        }
        if self.probe_interval > self.report_interval {
            return bad("probe_interval", "at most one report interval");
        }
        match self.mode {
            ReportMode::FanOut { k, relay } => {
                if k == 0 {
                    return bad("report_mode.k", "must be at least 1");
                }
                if usize::from(relay) >= MAX_ENTRIES {
                    return bad("report_mode.relay", "at most 26 entries fit one report");
                }
            }
            ReportMode::Multicast(g) if !g.is_multicast() => {
                return bad("report_mode.group", "must be a multicast address");
            }
            _ => {}
        }
        let addrs: usize = self.service_addrs.iter().map(control::addr_wire_len).sum();
        let relay = match self.mode {
            ReportMode::FanOut { relay, .. } => usize::from(relay),
            _ => 0,
        };
        if report_len(1 + relay, addrs) > MAX_MESSAGE_LEN {
            return bad(
                "service_addrs",
                "too many for one report with the relayed entries",
            );
        }
        Ok(())
    }
}

fn report_len(entries: usize, addr_bytes: usize) -> usize {
    control::HEADER_LEN
        + control::REPORT_PREFIX_LEN
        + entries * control::ENTRY_LEN
        + addr_bytes
        + TAG_LEN
}

/// A datagram to send: UDP from this host's tunnel address to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// A peer's tunnel address, or the multicast group.
    pub to: IpAddr,
    /// The message.
    pub payload: Vec<u8>,
}

/// Why a datagram was refused. Each has a counter; none changes any table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Not a well-formed control message.
    Malformed,
    /// The sender id is not a configured peer, or the datagram did not
    /// come from that peer's tunnel address.
    UnknownSender,
    /// Signed with a key id this host does not hold.
    UnknownKey,
    /// The tag does not verify.
    BadTag,
    /// Sent too far from our clock (`max_clock_skew`).
    OutsideWindow,
    /// Seen before, or older than the sender's current incarnation.
    Replayed,
    /// Authentic but inconsistent: a report whose own entry names another
    /// host or incarnation. (A recovery reply to a request we are not
    /// waiting for is accepted and ignored: late duplicates are normal.)
    Inconsistent,
    /// A message kind this version does not know.
    UnknownKind,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 8] = [
        Self::Malformed,
        Self::UnknownSender,
        Self::UnknownKey,
        Self::BadTag,
        Self::OutsideWindow,
        Self::Replayed,
        Self::Inconsistent,
        Self::UnknownKind,
    ];

    /// A stable snake-case name for metrics and status output.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownSender => "unknown_sender",
            Self::UnknownKey => "unknown_key",
            Self::BadTag => "bad_tag",
            Self::OutsideWindow => "outside_window",
            Self::Replayed => "replayed",
            Self::Inconsistent => "inconsistent",
            Self::UnknownKind => "unknown_kind",
        }
    }
}

/// The protocol's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterCounters {
    /// Messages sent.
    pub sent_messages: u64,
    /// Bytes sent (UDP payload).
    pub sent_bytes: u64,
    /// Messages accepted.
    pub accepted: u64,
    /// Messages refused, by [`Reject`] in [`Reject::ALL`] order.
    pub rejected: [u64; Reject::ALL.len()],
    /// Reports (own entries) applied to the load table.
    pub reports_applied: u64,
    /// Relayed entries applied (fan-out mode).
    pub relayed_applied: u64,
    /// Entries not newer than what we had.
    pub entries_stale: u64,
    /// Reports whose service addresses differ from the configuration.
    pub service_addr_mismatch: u64,
    /// Peers that announced they were leaving.
    pub peers_left: u64,
    /// Peers seen with a new incarnation (restarted).
    pub peer_restarts: u64,
    /// Recovery requests this host answered (each took a snapshot of the
    /// flows it serves for the asker; re-asks are not counted).
    pub recovery_requests_answered: u64,
    /// Recovery requests received (first asks and re-asks).
    pub recovery_requests_received: u64,
    /// Recovery requests sent (first asks and re-asks naming missing chunks).
    pub recovery_requests_sent: u64,
    /// Flows sent in recovery replies.
    pub recovery_flows_sent: u64,
    /// Recovery reply chunks sent (resent ones counted again).
    pub recovery_chunks_sent: u64,
    /// Flows received in recovery replies (routes restored or already known).
    pub recovery_flows_received: u64,
    /// Distinct recovery reply chunks received.
    pub recovery_chunks_received: u64,
    /// Recovery reply chunks received that this host already had.
    pub recovery_chunks_duplicate: u64,
    /// Recoveries that ended at their deadline with chunks still missing.
    pub recovery_incomplete: u64,
    /// How long the last recovery took, start to end, in milliseconds.
    pub recovery_ms: u64,
    /// Liveness probes sent to peers silent for 1.5 report intervals.
    pub probes_sent: u64,
    /// Probes received and answered with a report.
    pub probes_answered: u64,
    /// Flows named in cut notices sent: connections routed to a peer that
    /// this host cut while the peer was dead or gone, told to it once back.
    pub cut_flows_sent: u64,
    /// Flows named in cut notices received and handed to the host to
    /// abort (its sockets of them serve nobody).
    pub cut_flows_received: u64,
    /// Idle advertisements sent (one per peer told).
    pub idle_adverts_sent: u64,
    /// Idle advertisements received and handed to the policy.
    pub idle_adverts_received: u64,
    /// VIP mode: flows asked about in flow queries (one count per flow and
    /// peer asked).
    pub flow_queries_sent: u64,
    /// VIP mode: flow query datagrams sent.
    pub flow_query_messages: u64,
    /// VIP mode: flows peers asked about.
    pub flow_queries_received: u64,
    /// VIP mode: flows this host claimed in answers.
    pub flow_claims_sent: u64,
    /// VIP mode: flows peers claimed (handed to the engine).
    pub flow_claims_received: u64,
}

impl ClusterCounters {
    /// The counter of `r`.
    pub fn rejected_of(&self, r: Reject) -> u64 {
        self.rejected[r as usize]
    }
}

/// Where the node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePhase {
    /// Asking peers which connections they serve for us.
    Recovering,
    /// Serving.
    Active,
    /// Draining: new connections go to peers; waiting for ours to end.
    Draining,
    /// Drained: announcing `Leaving`.
    Leaving,
    /// Announced; the caller may stop the host.
    Left,
}

/// One peer as the protocol sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its id.
    pub id: PeerId,
    /// Its tunnel address.
    pub tunnel_addr: IpAddr,
    /// Its incarnation as last heard (directly).
    pub incarnation: Option<u64>,
    /// When we last heard from it directly.
    pub last_heard: Option<Timestamp>,
    /// Age of the freshest load figures we hold for it (direct or relayed).
    pub figures_at: Option<Timestamp>,
}

/// A snapshot for status output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// This host's incarnation.
    pub incarnation: u64,
    /// Phase.
    pub phase: NodePhase,
    /// Peers from the configuration.
    pub peers: Vec<PeerStatus>,
    /// Counters.
    pub counters: ClusterCounters,
    /// Peers whose recovery answer is still incomplete.
    pub recovery_pending: Vec<PeerId>,
}

/// Replay protection for one sender: its incarnation and a 64-message
/// window below the highest sequence number seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReplayWindow {
    incarnation: u64,
    top: u64,
    seen: u64,
}

impl ReplayWindow {
    /// True (and recorded) when `(inc, seq)` is new.
    fn check(w: &mut Option<Self>, inc: u64, seq: u64) -> bool {
        let Some(cur) = w else {
            *w = Some(Self {
                incarnation: inc,
                top: seq,
                seen: 1,
            });
            return true;
        };
        if inc < cur.incarnation {
            return false;
        }
        if inc > cur.incarnation {
            *cur = Self {
                incarnation: inc,
                top: seq,
                seen: 1,
            };
            return true;
        }
        if seq > cur.top {
            let shift = seq - cur.top;
            cur.seen = if shift >= 64 { 0 } else { cur.seen << shift };
            cur.seen |= 1;
            cur.top = seq;
            return true;
        }
        let back = cur.top - seq;
        if back >= 64 || cur.seen & (1 << back) != 0 {
            return false;
        }
        cur.seen |= 1 << back;
        true
    }
}

#[derive(Clone, Debug)]
struct Known {
    entry: LoadEntry,
    /// When the figures were current, by our clock (arrival minus age).
    at: Timestamp,
}

#[derive(Clone, Debug)]
struct Peer {
    cfg: PeerConfig,
    replay: Option<ReplayWindow>,
    last_heard: Option<Timestamp>,
    known: Option<Known>,
    /// Sequence fed to the load table: ours, always increasing, so that a
    /// restarted peer (whose own numbers start again) is never "stale".
    table_seq: u64,
    /// When the freshest figures we applied for it were current, or when
    /// it was added (what the load table's liveness counts from).
    fresh_at: Timestamp,
    /// Earliest time of the next probe to it.
    next_probe: Timestamp,
}

#[derive(Clone, Debug)]
struct Recovery {
    request_id: u32,
    started: Timestamp,
    /// Moves on with every new chunk: `recovery_timeout` after the last.
    deadline: Timestamp,
    next_ask: Timestamp,
    /// Per peer: what arrived so far.
    pending: BTreeMap<PeerId, Pending>,
}

/// One peer's answer to our recovery request, as far as it arrived.
#[derive(Clone, Debug)]
struct Pending {
    got: BTreeSet<u16>,
    total: Option<u16>,
    /// When the last new chunk arrived (or the request started).
    progress_at: Timestamp,
}

impl Pending {
    fn new(now: Timestamp) -> Self {
        Self {
            got: BTreeSet::new(),
            total: None,
            progress_at: now,
        }
    }

    fn complete(&self) -> bool {
        self.total.is_some_and(|n| self.got.len() >= usize::from(n))
    }

    /// The chunks still missing, as inclusive ranges (the first that fit
    /// one request).
    fn missing(&self) -> Vec<(u16, u16)> {
        let Some(total) = self.total else {
            return Vec::new();
        };
        let mut out: Vec<(u16, u16)> = Vec::new();
        for c in 0..total {
            if self.got.contains(&c) {
                continue;
            }
            let full = out.len() == MAX_REQUEST_RANGES;
            match out.last_mut() {
                Some((_, last)) if *last + 1 == c => *last = c,
                _ if full => break,
                _ => out.push((c, c)),
            }
        }
        out
    }
}

/// A recovery request to send: to whom, the chunk count known, the
/// missing ranges.
type ReAsk = (IpAddr, u16, Vec<(u16, u16)>);

/// The answer to one peer's recovery request: a snapshot of the flows this
/// host serves for it, in chunks, sent at the paced rate; a re-ask queues
/// again only the chunks it names.
#[derive(Clone, Debug)]
struct ReplyStream {
    to: IpAddr,
    request_id: u32,
    chunks: Vec<Vec<FlowKey>>,
    /// Chunks still to send, in order.
    queue: BTreeSet<u16>,
    /// The last request or send: an idle stream is dropped
    /// `stream_keep` after it.
    active_at: Timestamp,
}

/// One host's cluster protocol state machine. See the module docs.
pub struct Node {
    cfg: NodeConfig,
    keys: KeyRing,
    rng: SplitMix64,
    incarnation: u64,
    next_seq: u64,
    report_seq: u64,
    peers: BTreeMap<PeerId, Peer>,
    phase: NodePhase,
    drain_deadline: Option<Timestamp>,
    /// Since when a draining host has seen no connection of its own.
    drain_quiet_since: Option<Timestamp>,
    leave_sent: u32,
    next_report: Timestamp,
    recovery: Option<Recovery>,
    /// Recovery answers being sent, one per asking peer (a new request id
    /// replaces the old snapshot).
    streams: BTreeMap<PeerId, ReplyStream>,
    /// When the paced sender may send its next burst.
    next_pace: Timestamp,
    /// A peer silent this long is dead (from the load table's
    /// configuration): probes stop before it.
    dead_after: Duration,
    outbox: VecDeque<Transmit>,
    /// Flows peers cut: the host's sockets of them are to be aborted.
    aborts: VecDeque<FlowKey>,
    /// This host had connections at the last [`Node::check_idle`].
    was_busy: bool,
    relay_cursor: usize,
    counters: ClusterCounters,
}

/// The most flows waiting in [`Node::poll_abort`]'s queue; a peer that
/// names more has them dropped (and they end by their own timeouts).
const MAX_ABORTS: usize = 65_536;

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("local_id", &self.cfg.local_id)
            .field("incarnation", &self.incarnation)
            .field("phase", &self.phase)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp(t.0.saturating_add(ns(d)))
}

impl Node {
    /// Starts the protocol for this host: adds the configured peers to the
    /// engine and, with `recover_on_start` and peers to ask, puts the
    /// engine into recovery until they have answered. The incarnation is
    /// the start time in Unix nanoseconds, so it grows across restarts.
    pub fn new(
        cfg: NodeConfig,
        keys: KeyRing,
        peers: Vec<PeerConfig>,
        now: Clock,
        engine: &mut dyn ClusterEngine,
    ) -> Result<Self, ClusterError> {
        cfg.validate()?;
        let mut node = Self {
            rng: SplitMix64::new(cfg.seed ^ now.unix_ns),
            incarnation: now.unix_ns.max(1),
            next_seq: 1,
            report_seq: 0,
            peers: BTreeMap::new(),
            phase: NodePhase::Active,
            drain_deadline: None,
            drain_quiet_since: None,
            leave_sent: 0,
            next_report: now.mono,
            recovery: None,
            streams: BTreeMap::new(),
            next_pace: now.mono,
            dead_after: Duration::ZERO,
            outbox: VecDeque::new(),
            aborts: VecDeque::new(),
            was_busy: false,
            relay_cursor: 0,
            counters: ClusterCounters::default(),
            keys,
            cfg,
        };
        node.reload(peers, now, engine)?;
        if node.cfg.recover_on_start && !node.peers.is_empty() {
            node.phase = NodePhase::Recovering;
            engine.set_recovering(true);
            node.recovery = Some(Recovery {
                request_id: node.rng.next_u64() as u32,
                started: now.mono,
                deadline: after(now.mono, node.cfg.recovery_timeout),
                next_ask: now.mono,
                pending: node
                    .peers
                    .keys()
                    .map(|&p| (p, Pending::new(now.mono)))
                    .collect(),
            });
        }
        Ok(node)
    }

    /// This host's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The phase.
    pub fn phase(&self) -> NodePhase {
        self.phase
    }

    /// The counters.
    pub fn counters(&self) -> &ClusterCounters {
        &self.counters
    }

    /// The configuration in force.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// Replaces the key ring (a key roll; the daemon maps SIGHUP to it).
    pub fn set_keys(&mut self, keys: KeyRing) {
        self.keys = keys;
    }

    /// A snapshot for status output.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            incarnation: self.incarnation,
            phase: self.phase,
            peers: self
                .peers
                .values()
                .map(|p| PeerStatus {
                    id: p.cfg.id,
                    tunnel_addr: p.cfg.tunnel_addr,
                    incarnation: p.replay.map(|r| r.incarnation),
                    last_heard: p.last_heard,
                    figures_at: p.known.as_ref().map(|k| k.at),
                })
                .collect(),
            counters: self.counters.clone(),
            recovery_pending: self
                .recovery
                .as_ref()
                .map(|r| {
                    r.pending
                        .iter()
                        .filter(|(_, p)| !p.complete())
                        .map(|(p, _)| *p)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Makes the peer set the configuration's: new peers are added to the
    /// engine (suspect until they report), removed ones are removed (their
    /// connections are then handled as for a dead peer), and a peer whose
    /// addresses changed is replaced. Established connections to peers that
    /// stay are untouched.
    pub fn reload(
        &mut self,
        peers: Vec<PeerConfig>,
        now: Clock,
        engine: &mut dyn ClusterEngine,
    ) -> Result<(), ClusterError> {
        let mut seen = BTreeSet::new();
        for p in &peers {
            if p.id == self.cfg.local_id {
                return Err(ClusterError::Config {
                    field: "peers.id",
                    reason: "a peer cannot have this host's id",
                });
            }
            if !seen.insert(p.id) {
                return Err(ClusterError::Config {
                    field: "peers.id",
                    reason: "duplicate peer id",
                });
            }
        }
        let wanted: BTreeMap<PeerId, PeerConfig> = peers.into_iter().map(|p| (p.id, p)).collect();
        // Removals (and changed peers) first, so a tunnel address can move.
        let gone: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, p)| wanted.get(id) != Some(&p.cfg))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            engine.remove_peer(id)?;
            self.peers.remove(&id);
            self.streams.remove(&id);
            if let Some(r) = &mut self.recovery {
                r.pending.remove(&id);
            }
        }
        let lc = engine.loads().config();
        self.dead_after = lc
            .report_interval
            .saturating_mul(lc.dead_after_missed.max(1));
        for (id, p) in wanted {
            if self.peers.contains_key(&id) {
                continue;
            }
            engine.add_peer(id, p.tunnel_addr, p.service_addrs.clone(), now.mono)?;
            self.peers.insert(
                id,
                Peer {
                    cfg: p,
                    replay: None,
                    last_heard: None,
                    known: None,
                    table_seq: 0,
                    // As the load table counts: from when it was added.
                    fresh_at: now.mono,
                    next_probe: now.mono,
                },
            );
        }
        self.maybe_finish_recovery(now, engine);
        Ok(())
    }

    /// Starts draining: announced at once; new connections go to peers;
    /// established ones are served until they end or `deadline` (default
    /// `drain_deadline`) passes; then the node announces `Leaving`.
    pub fn start_drain(
        &mut self,
        now: Clock,
        deadline: Option<Duration>,
        engine: &mut dyn ClusterEngine,
    ) {
        if matches!(self.phase, NodePhase::Leaving | NodePhase::Left) {
            return;
        }
        self.phase = NodePhase::Draining;
        engine.set_draining(true);
        engine.set_recovering(false);
        self.recovery = None;
        self.drain_deadline = Some(after(now.mono, deadline.unwrap_or(self.cfg.drain_deadline)));
        self.drain_quiet_since = None;
        self.next_report = now.mono;
    }

    /// Stops a drain that has not finished: back to active.
    pub fn cancel_drain(&mut self, now: Clock, engine: &mut dyn ClusterEngine) {
        if self.phase == NodePhase::Draining {
            self.phase = NodePhase::Active;
            engine.set_draining(false);
            self.drain_deadline = None;
            self.next_report = now.mono;
        }
    }

    /// When [`Node::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Timestamp {
        let mut t = self.next_report;
        if let Some(r) = &self.recovery {
            t = t.min(r.next_ask).min(r.deadline);
        }
        if self.streams.values().any(|s| !s.queue.is_empty()) {
            t = t.min(self.next_pace);
        }
        if let Some(p) = self.peers.values().filter_map(|p| self.probe_due(p)).min() {
            t = t.min(p);
        }
        t
    }

    /// When `p` is next to be probed, if it is: silent for 1.5 report
    /// intervals, not yet dead, not leaving, and probes on.
    fn probe_due(&self, p: &Peer) -> Option<Timestamp> {
        let step = self.cfg.probe_interval;
        if step.is_zero() || matches!(self.cfg.mode, ReportMode::FanOut { .. }) {
            return None;
        }
        if p.known
            .as_ref()
            .is_some_and(|k| k.entry.state == HostState::Leaving)
        {
            return None;
        }
        let fresh = p.fresh_at;
        let start = after(fresh, self.cfg.report_interval.mul_f64(1.5));
        let end = after(fresh, self.dead_after.saturating_sub(step));
        let due = start.max(p.next_probe);
        (due < end).then_some(due)
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.outbox.pop_front()?;
        self.counters.sent_messages += 1;
        self.counters.sent_bytes += t.payload.len() as u64;
        Some(t)
    }

    /// Timer work due at `now`: reports, drain progress, recovery requests.
    pub fn handle_timeout(&mut self, now: Clock, engine: &mut dyn ClusterEngine) {
        if let Some(r) = &mut self.recovery {
            if now.mono >= r.deadline {
                self.counters.recovery_incomplete += 1;
                self.counters.recovery_ms = now.mono.0.saturating_sub(r.started.0) / 1_000_000;
                self.recovery = None;
            } else if now.mono >= r.next_ask {
                // Every quarter interval: ask peers we have nothing from;
                // re-ask those whose answer stalled for as long, naming
                // what is missing. A peer still sending (a chunk every
                // pace interval) is left alone.
                let retry = self.cfg.report_interval / 4;
                let interval = ns(retry);
                r.next_ask = after(now.mono, retry);
                let id = r.request_id;
                let ask: Vec<ReAsk> = r
                    .pending
                    .iter()
                    .filter(|(_, p)| !p.complete())
                    .filter(|(_, p)| {
                        p.total.is_none() || now.mono.0.saturating_sub(p.progress_at.0) >= interval
                    })
                    .filter_map(|(id, p)| {
                        let to = self.peers.get(id)?.cfg.tunnel_addr;
                        Some((to, p.total.unwrap_or(0), p.missing()))
                    })
                    .collect();
                for (to, known, missing) in ask {
                    self.send_request(now, id, to, known, &missing);
                }
            }
            self.maybe_finish_recovery(now, engine);
        }
        self.send_paced(now);
        self.send_probes(now, engine);
        if self.phase == NodePhase::Draining && self.drain_done(now, engine) {
            self.drain_quiet_since = None;
            self.phase = NodePhase::Leaving;
            self.next_report = now.mono;
        }
        if now.mono >= self.next_report {
            if self.phase != NodePhase::Left {
                self.report(now, engine);
            }
            if self.phase == NodePhase::Leaving {
                self.leave_sent += 1;
                if self.leave_sent >= self.cfg.leave_announcements {
                    self.phase = NodePhase::Left;
                }
            }
            let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let d = self.cfg.report_interval.mul_f64(1.0 - self.cfg.jitter * u);
            self.next_report = after(now.mono, d);
        }
    }

    /// True once the deadline has passed, or once neither the local stack
    /// nor the routing table has had a connection for a whole interval (so
    /// a load figure a little out of date cannot end the drain early).
    fn drain_done(&mut self, now: Clock, engine: &dyn ClusterEngine) -> bool {
        if self.drain_deadline.is_some_and(|d| now.mono >= d) {
            return true;
        }
        let quiet = engine.loads().local_figures().open_connections == 0
            && engine.forwarding_connections(now.mono) == 0;
        if !quiet {
            self.drain_quiet_since = None;
            return false;
        }
        let since = *self.drain_quiet_since.get_or_insert(now.mono);
        now.mono.0.saturating_sub(since.0) >= ns(self.cfg.report_interval)
    }

    fn maybe_finish_recovery(&mut self, now: Clock, engine: &mut dyn ClusterEngine) {
        let done = match &self.recovery {
            Some(r) => {
                let done = r.pending.values().all(Pending::complete);
                if done {
                    self.counters.recovery_ms = now.mono.0.saturating_sub(r.started.0) / 1_000_000;
                }
                done
            }
            None => true,
        };
        if done {
            self.recovery = None;
            if self.phase == NodePhase::Recovering {
                self.phase = NodePhase::Active;
            }
            engine.set_recovering(false);
        }
    }

    fn header(&mut self, kind: MessageKind, now: Clock) -> Header {
        let seq = self.next_seq;
        self.next_seq += 1;
        Header {
            kind,
            key_id: self.keys.signing_id(),
            sender: self.cfg.local_id.0,
            incarnation: self.incarnation,
            seq,
            sent_at_ns: now.unix_ns,
        }
    }

    fn seal(&self, mut buf: Vec<u8>, signed: usize) -> Vec<u8> {
        let tag = self.keys.sign(&buf[..signed]);
        buf.truncate(signed + TAG_LEN);
        buf[signed..].copy_from_slice(&tag);
        buf
    }

    fn own_entry(&self, engine: &dyn ClusterEngine) -> LoadEntry {
        let f = engine.loads().local_figures();
        LoadEntry {
            origin: self.cfg.local_id.0,
            state: match self.phase {
                NodePhase::Recovering | NodePhase::Active => HostState::Active,
                NodePhase::Draining => HostState::Draining,
                NodePhase::Leaving | NodePhase::Left => HostState::Leaving,
            },
            incarnation: self.incarnation,
            seq: self.report_seq,
            age_ms: 0,
            open_connections: f.open_connections,
            cpu_utilisation: finite(f.cpu_utilisation),
            redirected_connections: f.redirected_connections,
            active_sockets: f.active_sockets,
            capacity_cpu: finite(self.cfg.capacity.cpu),
            capacity_memory: finite(self.cfg.capacity.memory),
        }
    }

    fn report(&mut self, now: Clock, engine: &dyn ClusterEngine) {
        self.report_seq += 1;
        let mut entries = vec![self.own_entry(engine)];
        let targets: Vec<IpAddr> = match self.cfg.mode {
            ReportMode::FullMesh => self.peers.values().map(|p| p.cfg.tunnel_addr).collect(),
            ReportMode::Multicast(g) => vec![g],
            ReportMode::FanOut { k, relay } => {
                entries.extend(self.relay_entries(now, usize::from(relay)));
                self.pick(usize::from(k))
            }
        };
        if targets.is_empty() {
            return;
        }
        let h = self.header(MessageKind::Report, now);
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        // The configuration was validated to fit; a failure here would be a bug.
        let Ok(n) = control::emit_report(&mut buf, &h, &entries, &self.cfg.service_addrs) else {
            return;
        };
        let msg = self.seal(buf, n);
        // One message for every receiver: replay state is per receiver.
        for to in targets {
            self.outbox.push_back(Transmit {
                to,
                payload: msg.clone(),
            });
        }
    }

    /// `k` distinct peers chosen at random (all when there are no more).
    fn pick(&mut self, k: usize) -> Vec<IpAddr> {
        let mut all: Vec<IpAddr> = self.peers.values().map(|p| p.cfg.tunnel_addr).collect();
        let k = k.min(all.len());
        for i in 0..k {
            let j = i + (self.rng.next_u64() % (all.len() - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }

    /// Up to `n` entries for other hosts, each as new as we hold it, none
    /// older than 16 intervals: half the freshest (new figures spread like
    /// an epidemic), half taken in turn from the rest (every host's figures
    /// keep travelling, so none is left to age out).
    fn relay_entries(&mut self, now: Clock, n: usize) -> Vec<LoadEntry> {
        let max_age = ns(self.cfg.report_interval.saturating_mul(16));
        let known: Vec<(u64, LoadEntry)> = self
            .peers
            .values()
            .filter_map(|p| p.known.as_ref())
            .map(|k| (now.mono.0.saturating_sub(k.at.0), k.entry))
            .filter(|(age, e)| *age <= max_age && e.state != HostState::Leaving)
            .collect();
        if known.is_empty() || n == 0 {
            return Vec::new();
        }
        let fresh = n.div_ceil(2).min(known.len());
        let mut order: Vec<usize> = (0..known.len()).collect();
        order.sort_by_key(|&i| known[i].0);
        let mut chosen: Vec<usize> = order[..fresh].to_vec();
        let rest: Vec<usize> = (0..known.len()).filter(|i| !chosen.contains(i)).collect();
        if !rest.is_empty() {
            let start = self.relay_cursor % rest.len();
            let take = (n - fresh).min(rest.len());
            chosen.extend((0..take).map(|i| rest[(start + i) % rest.len()]));
            self.relay_cursor = (start + take) % rest.len();
        }
        chosen
            .into_iter()
            .map(|i| {
                let (age, mut e) = known[i];
                e.age_ms = u32::try_from(age / 1_000_000).unwrap_or(u32::MAX);
                e
            })
            .collect()
    }

    fn send_request(
        &mut self,
        now: Clock,
        request_id: u32,
        to: IpAddr,
        known: u16,
        missing: &[(u16, u16)],
    ) {
        let h = self.header(MessageKind::RecoveryRequest, now);
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        let n = control::emit_recovery_request_missing(&mut buf, &h, request_id, known, missing);
        if let Ok(n) = n {
            self.counters.recovery_requests_sent += 1;
            let payload = self.seal(buf, n);
            self.outbox.push_back(Transmit { to, payload });
        }
    }

    /// The paced sender: at most `recovery_burst` recovery chunks every
    /// `recovery_pace`, taken in turn from each asker's queue; drops
    /// streams idle for long (their askers are done or gone).
    fn send_paced(&mut self, now: Clock) {
        let keep = ns(self
            .cfg
            .recovery_timeout
            .max(self.cfg.report_interval.saturating_mul(10)));
        self.streams
            .retain(|_, s| !s.queue.is_empty() || now.mono.0.saturating_sub(s.active_at.0) < keep);
        if now.mono < self.next_pace || self.streams.values().all(|s| s.queue.is_empty()) {
            return;
        }
        self.next_pace = after(now.mono, self.cfg.recovery_pace);
        let mut budget = self.cfg.recovery_burst;
        let ids: Vec<PeerId> = self.streams.keys().copied().collect();
        while budget > 0 {
            let mut sent_any = false;
            for id in &ids {
                if budget == 0 {
                    break;
                }
                let Some(s) = self.streams.get_mut(id) else {
                    continue;
                };
                let Some(c) = s.queue.pop_first() else {
                    continue;
                };
                s.active_at = now.mono;
                let (to, rid, count) = (s.to, s.request_id, s.chunks.len() as u16);
                let flows = s.chunks.get(usize::from(c)).cloned().unwrap_or_default();
                let h = self.header(MessageKind::RecoveryReply, now);
                let mut buf = vec![0u8; MAX_MESSAGE_LEN];
                if let Ok(n) = control::emit_recovery_reply(&mut buf, &h, rid, c, count, &flows) {
                    self.counters.recovery_chunks_sent += 1;
                    self.counters.recovery_flows_sent += flows.len() as u64;
                    let payload = self.seal(buf, n);
                    self.outbox.push_back(Transmit { to, payload });
                }
                budget -= 1;
                sent_any = true;
            }
            if !sent_any {
                break;
            }
        }
    }

    /// Probes each peer silent for 1.5 report intervals and not yet dead,
    /// every `probe_interval`: a live peer answers with a report, so it
    /// takes every one of its reports and every probe or answer in the
    /// remaining time lost to make it dead.
    fn send_probes(&mut self, now: Clock, engine: &dyn ClusterEngine) {
        // The load table may count a peer's silence from later than we
        // do (the daemon restarts it when it starts listening): follow it.
        for (id, p) in &mut self.peers {
            if let Some(r) = engine.loads().peer(*id) {
                p.fresh_at = p.fresh_at.max(r.received_at);
            }
        }
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| self.probe_due(p).is_some_and(|t| t <= now.mono))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            p.next_probe = after(now.mono, self.cfg.probe_interval);
            let to = p.cfg.tunnel_addr;
            let h = self.header(MessageKind::Probe, now);
            let mut buf = vec![0u8; MAX_MESSAGE_LEN];
            if let Ok(n) = control::emit_probe(&mut buf, &h) {
                self.counters.probes_sent += 1;
                let payload = self.seal(buf, n);
                self.outbox.push_back(Transmit { to, payload });
            }
        }
    }

    /// Answers a probe: a report of this host's own entry to `to` alone.
    fn answer_probe(&mut self, now: Clock, to: IpAddr, engine: &dyn ClusterEngine) {
        if self.phase == NodePhase::Left {
            return;
        }
        self.report_seq += 1;
        let entries = [self.own_entry(engine)];
        let h = self.header(MessageKind::Report, now);
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        if let Ok(n) = control::emit_report(&mut buf, &h, &entries, &self.cfg.service_addrs) {
            self.counters.probes_answered += 1;
            let payload = self.seal(buf, n);
            self.outbox.push_back(Transmit { to, payload });
        }
    }

    /// Handles one datagram from `from` (its source address). Every refusal
    /// is counted and leaves every table as it was.
    pub fn handle_datagram(
        &mut self,
        now: Clock,
        from: IpAddr,
        bytes: &[u8],
        engine: &mut dyn ClusterEngine,
    ) -> Result<MessageKind, Reject> {
        let r = self.accept(now, from, bytes, engine);
        match r {
            Ok(_) => self.counters.accepted += 1,
            Err(e) => self.counters.rejected[e as usize] += 1,
        }
        r
    }

    fn accept(
        &mut self,
        now: Clock,
        from: IpAddr,
        bytes: &[u8],
        engine: &mut dyn ClusterEngine,
    ) -> Result<MessageKind, Reject> {
        let msg = control::parse(bytes).map_err(|_| Reject::Malformed)?;
        let h = msg.header;
        let sender = PeerId(h.sender);
        match self.peers.get(&sender) {
            Some(p) if p.cfg.tunnel_addr == from => {}
            _ => return Err(Reject::UnknownSender),
        }
        match self.keys.verify(h.key_id, msg.signed, msg.tag) {
            None => return Err(Reject::UnknownKey),
            Some(false) => return Err(Reject::BadTag),
            Some(true) => {}
        }
        if now.unix_ns.abs_diff(h.sent_at_ns) > ns(self.cfg.max_clock_skew) {
            return Err(Reject::OutsideWindow);
        }
        // Checked before the replay window so an inconsistent message does
        // not use up a sequence number.
        if let Body::Report(r) = &msg.body {
            match r.own() {
                Some(e) if e.origin == h.sender && e.incarnation == h.incarnation => {}
                _ => return Err(Reject::Inconsistent),
            }
        }
        if let MessageKind::Unknown(_) = h.kind {
            return Err(Reject::UnknownKind);
        }
        let peer = self.peers.get_mut(&sender).ok_or(Reject::UnknownSender)?;
        let restarted = peer.replay.is_some_and(|w| h.incarnation > w.incarnation);
        if !ReplayWindow::check(&mut peer.replay, h.incarnation, h.seq) {
            return Err(Reject::Replayed);
        }
        peer.last_heard = Some(now.mono);
        if restarted {
            self.counters.peer_restarts += 1;
        }
        match msg.body {
            Body::Report(r) => self.on_report(now, sender, &r, engine),
            Body::RecoveryRequest {
                request_id,
                known_chunks,
                missing,
            } => self.on_request(now, sender, request_id, known_chunks, missing, engine),
            Body::RecoveryReply(r) => self.on_reply(now, sender, &r, engine),
            Body::CutNotice(r) => self.on_cut(sender, &r, engine),
            Body::IdleAdvert => {
                self.counters.idle_adverts_received += 1;
                engine.peer_idle(sender);
            }
            Body::Probe => {
                if let Some(to) = self.peers.get(&sender).map(|p| p.cfg.tunnel_addr) {
                    self.answer_probe(now, to, engine);
                }
            }
            Body::FlowQuery(r) => self.on_flow_query(now, sender, &r, engine),
            Body::FlowClaim(r) => self.on_flow_claim(now, sender, &r, engine),
            Body::Unknown(_) => return Err(Reject::UnknownKind),
        }
        Ok(h.kind)
    }

    fn on_report(
        &mut self,
        now: Clock,
        sender: PeerId,
        r: &ReportView<'_>,
        engine: &mut dyn ClusterEngine,
    ) {
        let mismatch = self.peers.get(&sender).is_some_and(|p| {
            r.service_addr_count() != p.cfg.service_addrs.len()
                || r.service_addrs()
                    .zip(&p.cfg.service_addrs)
                    .any(|(a, b)| a != *b)
        });
        if mismatch {
            // The configuration is authoritative: count it for the operator.
            self.counters.service_addr_mismatch += 1;
        }
        for (i, e) in r.entries().enumerate() {
            let origin = PeerId(e.origin);
            if origin == self.cfg.local_id || (i > 0 && origin == sender) {
                continue;
            }
            if self.apply_entry(now, origin, &e, engine) {
                if i == 0 {
                    self.counters.reports_applied += 1;
                } else {
                    self.counters.relayed_applied += 1;
                }
            }
        }
    }

    /// Applies one entry if it is newer than what we hold for `origin`.
    fn apply_entry(
        &mut self,
        now: Clock,
        origin: PeerId,
        e: &LoadEntry,
        engine: &mut dyn ClusterEngine,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(&origin) else {
            return false;
        };
        if let Some(k) = &peer.known {
            if (e.incarnation, e.seq) <= (k.entry.incarnation, k.entry.seq) {
                self.counters.entries_stale += 1;
                return false;
            }
        }
        let at = Timestamp(now.mono.0.saturating_sub(u64::from(e.age_ms) * 1_000_000));
        peer.known = Some(Known { entry: *e, at });
        if e.state == HostState::Leaving {
            if engine
                .loads()
                .peer(origin)
                .is_some_and(|p| p.state != PeerState::Left)
            {
                let _ = engine.mark_peer_left(origin);
                self.counters.peers_left += 1;
            }
            return true;
        }
        peer.table_seq += 1;
        let report = LoadReport {
            seq: peer.table_seq,
            figures: LoadFigures {
                open_connections: e.open_connections,
                cpu_utilisation: e.cpu_utilisation,
                redirected_connections: e.redirected_connections,
                active_sockets: e.active_sockets,
            },
            capacity: Capacity {
                cpu: e.capacity_cpu,
                memory: e.capacity_memory,
            },
            draining: e.state == HostState::Draining,
        };
        let (tunnel, services) = (peer.cfg.tunnel_addr, peer.cfg.service_addrs.clone());
        let applied = match engine.apply_report(origin, &report, at) {
            Ok(ReportOutcome::PeerLeft) => {
                // It left, and is back (a new incarnation, or it changed its
                // mind): re-admit it.
                if engine.add_peer(origin, tunnel, services, at).is_ok() {
                    let _ = engine.apply_report(origin, &report, at);
                }
                true
            }
            Ok(_) => true,
            Err(_) => false,
        };
        if applied {
            if let Some(p) = self.peers.get_mut(&origin) {
                p.fresh_at = p.fresh_at.max(at);
            }
        }
        let back = engine
            .loads()
            .peer(origin)
            .is_some_and(|p| matches!(p.state, PeerState::Alive | PeerState::Draining));
        if applied && back && engine.has_cut(origin) {
            self.send_cut(now, origin, engine);
        }
        applied
    }

    /// Tells `peer`, back after being dead or gone, which of the
    /// connections routed to it this host cut meanwhile: its sockets of
    /// them hold no client any more, yet count as its load and would keep
    /// new connections from it until they time out. Sent once (a lost
    /// notice leaves them to those timeouts).
    fn send_cut(&mut self, now: Clock, peer: PeerId, engine: &mut dyn ClusterEngine) {
        let Some(to) = self.peers.get(&peer).map(|p| p.cfg.tunnel_addr) else {
            return;
        };
        let flows = engine.take_cut(peer);
        if flows.is_empty() {
            return;
        }
        self.counters.cut_flows_sent += self.send_flows(now, to, MessageKind::CutNotice, 0, &flows);
    }

    /// Sends `flows` to `to` as messages of `kind` (a cut notice; recovery
    /// replies go through the paced sender), chunked to fit one message
    /// each; returns how many flows went out.
    fn send_flows(
        &mut self,
        now: Clock,
        to: IpAddr,
        kind: MessageKind,
        request_id: u32,
        flows: &[FlowKey],
    ) -> u64 {
        let chunks = flow_chunks(flows);
        let Ok(count) = u16::try_from(chunks.len()) else {
            return 0;
        };
        let mut sent = 0;
        for (i, c) in chunks.iter().enumerate() {
            let h = self.header(kind, now);
            let mut buf = vec![0u8; MAX_MESSAGE_LEN];
            let n = match kind {
                MessageKind::CutNotice => {
                    control::emit_cut_notice(&mut buf, &h, i as u16, count, c)
                }
                _ => control::emit_recovery_reply(&mut buf, &h, request_id, i as u16, count, c),
            };
            if let Ok(n) = n {
                sent += c.len() as u64;
                let payload = self.seal(buf, n);
                self.outbox.push_back(Transmit { to, payload });
            }
        }
        sent
    }

    /// A peer cut connections it had routed here: forget them, and queue
    /// them for the host to abort (only flows to that peer's own service
    /// addresses: a peer routes nothing else here).
    fn on_cut(&mut self, sender: PeerId, r: &ReplyView<'_>, engine: &mut dyn ClusterEngine) {
        let Some(services) = self.peers.get(&sender).map(|p| &p.cfg.service_addrs) else {
            return;
        };
        for f in r.flows().filter(|f| services.contains(&f.dst)) {
            engine.forget_served(&f);
            if self.aborts.len() < MAX_ABORTS {
                self.aborts.push_back(f);
                self.counters.cut_flows_received += 1;
            }
        }
    }

    /// Call often (every few milliseconds): when this host's load has just
    /// fallen to zero, tells `idle_advert_fanout` peers it is idle, the
    /// first the peer that last redirected a connection here (it is the
    /// likeliest to have more), the others at random. Join-idle hosts over
    /// their threshold send their next new connection to the freshest
    /// idle peer they heard of, each once: news a report interval old is
    /// stale by tens of service times, an advertisement is not.
    pub fn check_idle(&mut self, now: Clock, engine: &dyn ClusterEngine) {
        let busy = engine.loads().local_load() > 0.0;
        let became_idle = self.was_busy && !busy;
        self.was_busy = busy;
        let k = self.cfg.idle_advert_fanout;
        if !became_idle || k == 0 || self.phase != NodePhase::Active {
            return;
        }
        let first = engine
            .last_redirector()
            .and_then(|p| self.peers.get(&p))
            .map(|p| p.cfg.tunnel_addr);
        let mut to: Vec<IpAddr> = first.into_iter().collect();
        for a in self.pick(k + 1) {
            if to.len() < k && !to.contains(&a) {
                to.push(a);
            }
        }
        for t in to {
            let h = self.header(MessageKind::IdleAdvert, now);
            let mut buf = vec![0u8; MAX_MESSAGE_LEN];
            if let Ok(n) = control::emit_idle_advert(&mut buf, &h) {
                self.counters.idle_adverts_sent += 1;
                let payload = self.seal(buf, n);
                self.outbox.push_back(Transmit { to: t, payload });
            }
        }
    }

    /// The next connection a peer cut while this host was away: the host
    /// aborts its socket of it, if it still has one (client to service).
    pub fn poll_abort(&mut self) -> Option<FlowKey> {
        self.aborts.pop_front()
    }

    /// A recovery request: a new request id takes a snapshot of the flows
    /// served for the asker and queues all its chunks for the paced
    /// sender (replacing any older snapshot); a re-ask of the same id
    /// queues again the chunks it names as missing, or, when it names
    /// none because it has received nothing, all of them once the queue
    /// has run dry.
    fn on_request(
        &mut self,
        now: Clock,
        sender: PeerId,
        request_id: u32,
        known: u16,
        missing: MissingRanges<'_>,
        engine: &mut dyn ClusterEngine,
    ) {
        let Some(to) = self.peers.get(&sender).map(|p| p.cfg.tunnel_addr) else {
            return;
        };
        self.counters.recovery_requests_received += 1;
        if let Some(s) = self
            .streams
            .get_mut(&sender)
            .filter(|s| s.request_id == request_id)
        {
            s.active_at = now.mono;
            let count = s.chunks.len() as u16;
            if known == 0 {
                if s.queue.is_empty() {
                    s.queue.extend(0..count);
                }
            } else if known == count {
                for (first, last) in missing.iter() {
                    s.queue.extend(first..=last.min(count - 1));
                }
            } else {
                // Counted from another snapshot: send this one whole (the
                // asker starts counting again on the new count).
                s.queue.extend(0..count);
            }
            return;
        }
        self.counters.recovery_requests_answered += 1;
        let flows = engine.served_for(sender, now.mono);
        let mut chunks = flow_chunks(&flows);
        chunks.truncate(usize::from(u16::MAX));
        let count = chunks.len() as u16;
        self.streams.insert(
            sender,
            ReplyStream {
                to,
                request_id,
                chunks,
                queue: (0..count).collect(),
                active_at: now.mono,
            },
        );
    }

    fn on_reply(
        &mut self,
        now: Clock,
        sender: PeerId,
        r: &ReplyView<'_>,
        engine: &mut dyn ClusterEngine,
    ) {
        let Some(rec) = &mut self.recovery else {
            return;
        };
        if r.request_id != rec.request_id {
            return;
        }
        let Some(p) = rec.pending.get_mut(&sender) else {
            return;
        };
        if p.total.is_some_and(|n| n != r.chunks) {
            // The peer took a new snapshot (it had dropped the old one):
            // count again; routes restored so far stay.
            p.got.clear();
        }
        p.total = Some(r.chunks);
        if !p.got.insert(r.chunk) {
            self.counters.recovery_chunks_duplicate += 1;
            return;
        }
        p.progress_at = now.mono;
        rec.deadline = rec.deadline.max(after(now.mono, self.cfg.recovery_timeout));
        self.counters.recovery_chunks_received += 1;
        for f in r.flows() {
            self.counters.recovery_flows_received += 1;
            let _ = engine.restore_route(&f, sender, now.mono);
        }
        self.maybe_finish_recovery(now, engine);
    }
}

impl Node {
    /// VIP mode: asks every live peer (not dead, not gone) which of them
    /// serves `flows` (what [`Engine::take_flow_queries`](crate::Engine::take_flow_queries)
    /// returned), as many flows per datagram as fit. Sent at once: the
    /// engine bounds how many flows it asks about (its held flows).
    pub fn ask_flows(&mut self, now: Clock, flows: &[FlowKey], engine: &dyn ClusterEngine) {
        if flows.is_empty() {
            return;
        }
        let loads = engine.loads();
        let to: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(id, _)| {
                loads
                    .peer(**id)
                    .is_some_and(|p| !matches!(p.state, PeerState::Dead | PeerState::Left))
            })
            .map(|(_, p)| p.cfg.tunnel_addr)
            .collect();
        let chunks = flow_chunks(flows);
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            let id = self.rng.next_u64() as u32;
            for &addr in &to {
                let h = self.header(MessageKind::FlowQuery, now);
                let mut buf = vec![0u8; MAX_MESSAGE_LEN];
                if let Ok(n) = control::emit_flow_query(&mut buf, &h, id, c) {
                    self.counters.flow_query_messages += 1;
                    self.counters.flow_queries_sent += c.len() as u64;
                    let payload = self.seal(buf, n);
                    self.outbox.push_back(Transmit { to: addr, payload });
                }
            }
        }
    }

    /// A peer asks who serves some flows: answer with those this host
    /// serves (nothing when it serves none: silence is "not me").
    fn on_flow_query(
        &mut self,
        now: Clock,
        sender: PeerId,
        r: &ReplyView<'_>,
        engine: &mut dyn ClusterEngine,
    ) {
        let Some(to) = self.peers.get(&sender).map(|p| p.cfg.tunnel_addr) else {
            return;
        };
        let asked: Vec<FlowKey> = r.flows().collect();
        self.counters.flow_queries_received += asked.len() as u64;
        let mine = engine.serves_flows(&asked, now.mono);
        if mine.is_empty() {
            return;
        }
        // Fits: a subset of a query that fitted one message.
        let h = self.header(MessageKind::FlowClaim, now);
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        if let Ok(n) = control::emit_flow_claim(&mut buf, &h, r.request_id, &mine) {
            self.counters.flow_claims_sent += mine.len() as u64;
            let payload = self.seal(buf, n);
            self.outbox.push_back(Transmit { to, payload });
        }
    }

    /// A peer claims flows: the engine routes those it holds to it.
    fn on_flow_claim(
        &mut self,
        now: Clock,
        sender: PeerId,
        r: &ReplyView<'_>,
        engine: &mut dyn ClusterEngine,
    ) {
        for f in r.flows() {
            self.counters.flow_claims_received += 1;
            engine.claim_flow(&f, sender, now.mono);
        }
    }
}

/// `flows` (those the wire can carry: TCP, one family per flow) in chunks
/// that fit one flow-list message each; at least one chunk, maybe empty.
fn flow_chunks(flows: &[FlowKey]) -> Vec<Vec<FlowKey>> {
    let room = MAX_MESSAGE_LEN - control::HEADER_LEN - REPLY_PREFIX_LEN - TAG_LEN;
    let mut chunks = vec![Vec::new()];
    let mut used = 0;
    for f in flows {
        let Some(n) = control::flow_wire_len(f) else {
            continue;
        };
        let last = chunks.len() - 1;
        if used + n > room || chunks[last].len() == usize::from(u16::MAX) {
            chunks.push(Vec::new());
            used = 0;
        }
        used += n;
        let last = chunks.len() - 1;
        chunks[last].push(*f);
    }
    chunks
}

fn finite(v: f32) -> f32 {
    if v.is_finite() && v >= 0.0 { v } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::ReplayWindow;

    #[test]
    fn replay_window_accepts_each_message_once() {
        let mut w = None;
        assert!(ReplayWindow::check(&mut w, 5, 10));
        assert!(!ReplayWindow::check(&mut w, 5, 10));
        // Reordered within the window: once.
        assert!(ReplayWindow::check(&mut w, 5, 8));
        assert!(!ReplayWindow::check(&mut w, 5, 8));
        assert!(ReplayWindow::check(&mut w, 5, 100));
        // Fell out of the window.
        assert!(!ReplayWindow::check(&mut w, 5, 30));
        assert!(ReplayWindow::check(&mut w, 5, 37));
        // An older incarnation never; a newer one resets.
        assert!(!ReplayWindow::check(&mut w, 4, 1000));
        assert!(ReplayWindow::check(&mut w, 6, 1));
        assert!(!ReplayWindow::check(&mut w, 5, 101));
        assert!(!ReplayWindow::check(&mut w, 6, 1));
    }
}
