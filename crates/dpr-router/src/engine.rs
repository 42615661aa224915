//! The per-packet algorithm.

mod vip;

pub use vip::{RELEASE_HEADROOM, ReleasedPacket};

use crate::buffer::PacketBuf;
use crate::config::{ConfigError, DeadPeerAction, EngineConfig, TunnelAuth, TunnelKeys};
use crate::counters::{Counters, LiveCounters};
use crate::fast::{is_tunnel_proto, v4_tcp_meta};
use crate::outer::OuterV4;
use crate::reply;
use crate::verdict::{DropReason, Verdict};
use dpr_packet::gre::{self, GreFields};
use dpr_packet::icmp;
use dpr_packet::ipip::{self, ChecksumCheck, EncapParams};
use dpr_packet::rewrite::{self, mss_for_mtu};
use dpr_packet::tcp::{MssClamp, TcpFlags};
use dpr_packet::{
    ErrorKind, FlowHasher, FlowKey, Fragment, IpProtocol, IpVersion, Malformed, PacketMeta,
    parse_ip,
};
use dpr_policy::{NewConnection, Policy, RandomSource, RedirectDecision, decide_and_account};
use dpr_table::{
    BATCH, Capacity, ConnState, ConnTable, Direction, InsertOutcome, LoadFigures, LoadReport,
    LoadTable, LoadTableConfig, PacketOutcome, PeerId, PeerState, ReportOutcome, Route, TableError,
    Timestamp, WideKey,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// One new connection's routing decision, as the engine took it: what
/// `dprd lab` compares with the true load of the host at that instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecisionRecord {
    /// When the SYN was processed.
    pub at: Timestamp,
    /// The connection, client to service.
    pub flow: FlowKey,
    /// This host's normalised load as the policy saw it (before the
    /// decision counted the new connection).
    pub local_load: f64,
    /// Where it went.
    pub route: Route,
    /// Whether the SYN reused the 4-tuple of an ended connection (or
    /// carried another initial sequence number).
    pub new_incarnation: bool,
}

/// A flow of the keyed tunnel that a peer's packets may now bypass the
/// engine for, or no longer ([`EngineConfig::keyed_flow_events`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyedFlowEvent {
    /// The peer's tunnel address (the outer source it sends from).
    pub peer: IpAddr,
    /// The connection, client to service.
    pub flow: FlowKey,
    /// `Some(tag)`: accepted with this tag (a new entry, or a new tag after
    /// a key roll); `None`: ended (FIN or RST).
    pub tag: Option<u32>,
}

/// The most keyed-flow events kept between two
/// [`Engine::take_keyed_flow_events`]; later ones are not kept (their
/// flows take the engine's path, which is correct, only slower).
pub const MAX_KEYED_FLOW_EVENTS: usize = 65_536;

/// An error building or reconfiguring the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// The engine configuration is invalid.
    Config(ConfigError),
    /// A table refused (bad table configuration, duplicate or unknown peer).
    Table(TableError),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Table(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<ConfigError> for EngineError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<TableError> for EngineError {
    fn from(e: TableError) -> Self {
        Self::Table(e)
    }
}

/// One host's router: the seed's per-packet algorithm over the routing
/// table, the load table and a policy. Owns no I/O and reads no clock.
pub struct Engine {
    cfg: EngineConfig,
    /// Connections this host routes: `Local`, or `Peer(target)`.
    routes: ConnTable<WideKey>,
    /// Connections this host serves for peers: `Peer(origin)` is the peer
    /// that redirected them here (kept for restart recovery).
    served: ConnTable<WideKey>,
    loads: LoadTable,
    policy: Box<dyn Policy + Send>,
    rng: Box<dyn RandomSource + Send>,
    peer_by_tunnel: HashMap<IpAddr, PeerId>,
    hasher: FlowHasher,
    next_ident: u16,
    counters: LiveCounters,
    draining: bool,
    recovering: bool,
    decisions: VecDeque<DecisionRecord>,
    /// New connections peers redirected here (when, from whom, this
    /// host's load then), kept like `decisions`.
    arrivals: VecDeque<(Timestamp, PeerId, f64)>,
    /// The peer that last redirected a new connection here.
    last_redirector: Option<PeerId>,
    /// While a load measurement runs: connections opened (true) and ended
    /// (false) here since it began.
    measuring: Option<Vec<(FlowKey, bool)>>,
    /// The host counts its connections' ends itself
    /// ([`Engine::set_ends_from_host`]): the engine counts none.
    ends_from_host: bool,
    /// Per peer id: flows routed to that peer that this host cut (answered
    /// RST, or dropped) while the peer was dead or gone, for a cut notice
    /// when it is back (see [`Engine::take_cut`]).
    cut: Vec<Vec<FlowKey>>,
    /// The IPv4 tunnel address's bytes (all ones when it is IPv6: no IPv4
    /// packet's destination), for [`Engine::steer_key`]'s fast path.
    tunnel_v4: [u8; 4],
    /// Keyed flows accepted or ended since the last take.
    keyed_events: Vec<KeyedFlowEvent>,
    /// Per peer id: the outer IPv4 header towards it, built on first use
    /// (checked against the peer's tunnel address at each use).
    outer: Vec<Option<OuterV4>>,
    /// VIP mode: flows missed and held while the peers are asked.
    miss: vip::MissState,
}

/// The most connection events noted while one load measurement runs (a
/// dump takes milliseconds; more than this means something is stuck).
const MAX_MEASURING: usize = 65_536;

/// The most cut flows kept per peer (40 B each); later ones are not kept,
/// and their stale sockets on the peer end by its own timeouts.
pub const MAX_CUT_PER_PEER: usize = 16_384;

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("tunnel_addr", &self.cfg.tunnel_addr)
            .field("policy", &self.policy.name())
            .field("routes", &self.routes.len())
            .field("served", &self.served.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for this host. `local_id` names it in the load table.
    pub fn new(
        cfg: EngineConfig,
        local_id: PeerId,
        local_capacity: Capacity,
        loads: LoadTableConfig,
        policy: Box<dyn Policy + Send>,
        rng: Box<dyn RandomSource + Send>,
    ) -> Result<Self, EngineError> {
        cfg.validate()?;
        let hasher = FlowHasher::new(cfg.flow_hash_seed);
        Ok(Self {
            routes: ConnTable::new(cfg.routes, hasher)?,
            served: ConnTable::new(cfg.served, hasher)?,
            loads: LoadTable::new(loads, local_id, local_capacity)?,
            policy,
            rng,
            peer_by_tunnel: HashMap::new(),
            hasher,
            next_ident: 0,
            counters: LiveCounters::default(),
            draining: false,
            recovering: false,
            decisions: VecDeque::new(),
            arrivals: VecDeque::new(),
            measuring: None,
            ends_from_host: false,
            last_redirector: None,
            cut: Vec::new(),
            keyed_events: Vec::new(),
            outer: Vec::new(),
            miss: vip::MissState::default(),
            tunnel_v4: match cfg.tunnel_addr {
                IpAddr::V4(a) => a.octets(),
                IpAddr::V6(_) => [255; 4],
            },
            cfg,
        })
    }

    /// Adds a peer. Its tunnel address must be of this host's tunnel family.
    pub fn add_peer(
        &mut self,
        id: PeerId,
        tunnel_addr: IpAddr,
        service_addrs: Vec<IpAddr>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        if tunnel_addr.is_ipv4() != self.cfg.tunnel_addr.is_ipv4() {
            return Err(ConfigError {
                field: "peers.tunnel_addr",
                reason: "must be of the same IP version as this host's tunnel address",
            }
            .into());
        }
        let taken = self
            .peer_by_tunnel
            .get(&tunnel_addr)
            .is_some_and(|p| *p != id);
        if tunnel_addr == self.cfg.tunnel_addr || taken {
            return Err(ConfigError {
                field: "peers.tunnel_addr",
                reason: "already in use",
            }
            .into());
        }
        let moved = self
            .loads
            .peer(id)
            .is_some_and(|old| old.tunnel_addr != tunnel_addr);
        self.loads.add_peer(id, tunnel_addr, service_addrs, now)?;
        if moved {
            // The id comes back as a different host: connections routed to
            // (or received from) the old one must not follow it there.
            for t in [&mut self.routes, &mut self.served] {
                let stale: Vec<FlowKey> = t
                    .iter()
                    .filter(|e| e.route == Route::Peer(id))
                    .map(|e| e.key)
                    .collect();
                for k in &stale {
                    t.remove(k);
                }
            }
        }
        self.peer_by_tunnel.insert(tunnel_addr, id);
        Ok(())
    }

    /// Removes a peer: it takes no new connections, IP-in-IP from it is no
    /// longer accepted, and packets of connections routed to it are handled
    /// as for a dead peer.
    pub fn remove_peer(&mut self, id: PeerId) -> Result<(), EngineError> {
        self.loads.mark_left(id)?;
        self.peer_by_tunnel.retain(|_, p| *p != id);
        Ok(())
    }

    /// Marks a peer as having left the cluster (it announced it): it takes
    /// no new connections, and packets of connections routed to it are
    /// handled as for a dead peer; but IP-in-IP from it is still accepted,
    /// since a host that has left keeps redirecting the clients that still
    /// reach its address until it is stopped. [`Engine::add_peer`] brings it
    /// back.
    pub fn mark_peer_left(&mut self, id: PeerId) -> Result<(), EngineError> {
        Ok(self.loads.mark_left(id)?)
    }

    /// Applies a peer's load report.
    pub fn apply_report(
        &mut self,
        id: PeerId,
        report: &LoadReport,
        now: Timestamp,
    ) -> Result<ReportOutcome, EngineError> {
        Ok(self.loads.apply_report(id, report, now)?)
    }

    /// A measurement of this host's load begins (a socket-table dump that
    /// takes milliseconds): from now on the engine notes which connections
    /// it sees open and end here, to reconcile them with what the dump
    /// listed in [`Engine::finish_load_measurement`].
    pub fn begin_load_measurement(&mut self) {
        self.measuring = Some(Vec::new());
    }

    /// The measurement begun by [`Engine::begin_load_measurement`] is in:
    /// `figures`, and `listed` says whether the dump listed a connection
    /// (client to service); `None` when it cannot say (no list). A
    /// connection that opened meanwhile counts on top of the figures only
    /// if the dump missed it, one that ended only if the dump still listed
    /// it (or it was counted on top): whichever way each raced the dump,
    /// the estimate starts right.
    pub fn finish_load_measurement(
        &mut self,
        figures: LoadFigures,
        capacity: Capacity,
        listed: Option<&dyn Fn(&FlowKey) -> bool>,
    ) -> Result<(), EngineError> {
        let events = self.measuring.take().unwrap_or_default();
        let (mut opened, mut ended) = (0u32, 0u32);
        let mut added: HashSet<FlowKey> = HashSet::new();
        for (flow, open) in events {
            let seen = listed.is_none_or(|l| l(&flow));
            if open {
                if listed.is_none() || !seen {
                    opened += 1;
                    added.insert(flow);
                }
            } else if seen || added.contains(&flow) {
                ended += 1;
            }
        }
        Ok(self
            .loads
            .set_local_corrected(figures, capacity, opened, ended)?)
    }

    fn local_opened(&mut self, flow: FlowKey) {
        self.loads.record_local();
        if let Some(m) = self.measuring.as_mut().filter(|m| m.len() < MAX_MEASURING) {
            m.push((flow, true));
        }
    }

    /// The host sees its connections end itself, as its application
    /// closes them (the kernel's own state changes, before the client's
    /// FIN reaches this router a round trip later): from now on the
    /// engine counts no ends, and [`Engine::set_local_closed`] gives
    /// them; the measurements must then count only the connections the
    /// application still holds.
    pub fn set_ends_from_host(&mut self, on: bool) {
        self.ends_from_host = on;
    }

    /// With [`Engine::set_ends_from_host`]: connections that ended here
    /// since the last measurement (see [`LoadTable::set_local_closed`]).
    pub fn set_local_closed(&mut self, closed: u32) {
        self.loads.set_local_closed(closed);
    }

    fn local_ended(&mut self, flow: FlowKey) {
        if self.ends_from_host {
            return;
        }
        self.loads.record_local_end();
        if let Some(m) = self.measuring.as_mut().filter(|m| m.len() < MAX_MEASURING) {
            m.push((flow, false));
        }
    }

    /// Updates this host's own load figures.
    pub fn set_local_load(
        &mut self,
        figures: LoadFigures,
        capacity: Capacity,
    ) -> Result<(), EngineError> {
        Ok(self.loads.set_local(figures, capacity)?)
    }

    /// Timer work, bounded: re-derives peer health and sweeps up to
    /// `budget` entries of each table. Call it every few milliseconds.
    pub fn tick(&mut self, now: Timestamp, budget: usize) {
        self.loads.refresh(now);
        self.routes.sweep(now, budget);
        self.served.sweep(now, budget);
        self.handle_miss_timeout(now);
    }

    /// Draining: every new connection goes to the least-loaded eligible
    /// peer whatever the policy says (served here only when there is none);
    /// established connections are unaffected.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// True while draining.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Recovering after a restart: non-SYN packets of connections the
    /// routing table does not know are dropped as
    /// [`DropReason::Recovering`] instead of delivered, because they may
    /// belong to a connection a peer serves and will tell us about. TCP
    /// retransmits them once the route is back. New connections are
    /// routed as usual.
    pub fn set_recovering(&mut self, recovering: bool) {
        self.recovering = recovering;
    }

    /// True while recovering.
    pub fn is_recovering(&self) -> bool {
        self.recovering
    }

    /// Restores the route of an established connection that `peer` says it
    /// serves for this host (restart recovery). Returns true when a route
    /// was added; a connection already routed is left as it is.
    pub fn restore_route(
        &mut self,
        flow: &FlowKey,
        peer: PeerId,
        now: Timestamp,
    ) -> Result<bool, EngineError> {
        if !self.is_service(flow) || flow.protocol != IpProtocol::Tcp {
            return Ok(false);
        }
        match self
            .routes
            .insert_established(flow, Route::Peer(peer), now)?
        {
            InsertOutcome::Inserted { .. } => {
                self.counters.c.routes_restored += 1;
                Ok(true)
            }
            InsertOutcome::Existing(_) => Ok(false),
        }
    }

    /// The connections this host serves that `origin` redirected here,
    /// client to service (what `origin` needs to rebuild its routes): open
    /// ones, and closing ones with a packet within the FIN grace time, as
    /// [`forwarding_connections`](Self::forwarding_connections) counts them.
    /// A connection that ended is left out: `origin` would restore its
    /// route as established, keep it for the established timeout, and
    /// count it as a connection that a stop must not break.
    pub fn served_for(&self, origin: PeerId, now: Timestamp) -> Vec<FlowKey> {
        let grace = u64::try_from(self.cfg.served.fin_grace.as_nanos()).unwrap_or(u64::MAX);
        self.served
            .iter()
            .filter(|e| e.route == Route::Peer(origin))
            .filter(|e| match e.state {
                ConnState::SynSeen | ConnState::Established => true,
                ConnState::Closing => now.0.saturating_sub(e.last_seen.0) < grace,
                ConnState::Closed => false,
            })
            .map(|e| e.key)
            .collect()
    }

    /// Connections this host still forwards to peers: redirected ones not
    /// yet closing, or closing with a packet within the FIN grace time (a
    /// router on the client's side sees only the client's FIN). A draining
    /// host waits for these, and for its own stack's connections, before
    /// it leaves. A walk over the routing table: call it per report
    /// interval, not per packet.
    pub fn forwarding_connections(&self, now: Timestamp) -> usize {
        let grace = u64::try_from(self.cfg.routes.fin_grace.as_nanos()).unwrap_or(u64::MAX);
        self.routes
            .iter()
            .filter(|e| matches!(e.route, Route::Peer(_)))
            .filter(|e| match e.state {
                ConnState::SynSeen | ConnState::Established => true,
                ConnState::Closing => now.0.saturating_sub(e.last_seen.0) < grace,
                ConnState::Closed => false,
            })
            .count()
    }

    /// The load table (peers and this host).
    pub fn loads(&self) -> &LoadTable {
        &self.loads
    }

    /// Connections this host routes.
    pub fn routes(&self) -> &ConnTable<WideKey> {
        &self.routes
    }

    /// The local stack reports `flow` (client to a peer's service) open:
    /// its entry in the served table becomes established and active now.
    /// For packets the engine does not see (decapsulated by the XDP
    /// program): without this, such an entry would expire while its
    /// connection lives, and a restarted peer could not recover it.
    ///
    /// A connection with no entry (this host restarted; the XDP program
    /// keeps its packets from the engine, which would otherwise learn it
    /// mid-stream) is learned when its service address belongs to exactly
    /// one peer: only that peer redirects connections to it. With an
    /// address shared by several peers (one VIP) the origin is unknown; in
    /// VIP mode the flow is adopted as served here instead (a `Local`
    /// route, see [`Engine::adopt_local`]): ask-on-miss needs no origin,
    /// only that this host claims the flow when a peer asks. Returns
    /// whether the flow has an entry now.
    pub fn confirm_served(&mut self, flow: &FlowKey, now: Timestamp) -> bool {
        if self.served.confirm_open(flow, now) {
            return true;
        }
        if self.is_vip_flow(flow) {
            return self.routes.confirm_open(flow, now)
                || self.adopt_local(std::slice::from_ref(flow), now) == 1;
        }
        let mut owners = self
            .loads
            .peers()
            .iter()
            .filter(|p| p.service_addrs.contains(&flow.dst));
        let (Some(origin), None) = (owners.next(), owners.next()) else {
            return false;
        };
        let origin = origin.id;
        match self
            .served
            .insert_established(flow, Route::Peer(origin), now)
        {
            Ok(_) => true,
            Err(_) => {
                self.counters.c.table_insert_failures += 1;
                false
            }
        }
    }

    /// The in-kernel fast path (AF_XDP) forwarded packets of `flow` (client
    /// to service) that this engine redirected, without showing them to
    /// it: with `active`, its entry becomes established and active now
    /// (its idle time restarts), as the packets would have made it; without,
    /// it is only looked up (an entry idle past its timeout is removed).
    /// Returns whether the flow still has a live entry: when it has none,
    /// the fast path must forget it.
    pub fn fast_path_seen(&mut self, flow: &FlowKey, active: bool, now: Timestamp) -> bool {
        if active {
            self.routes.confirm_open(flow, now)
        } else {
            self.routes.lookup(flow, now).is_some()
        }
    }

    /// Connections this host serves for peers (`Route::Peer(origin)`).
    pub fn served(&self) -> &ConnTable<WideKey> {
        &self.served
    }

    /// `peer` advertised that it has just become idle: the policy hears
    /// it (join-idle sends it the next connection it redirects).
    pub fn peer_idle(&mut self, peer: PeerId) {
        self.policy.peer_idle(peer);
    }

    /// The peer that last redirected a new connection here, if any.
    pub fn last_redirector(&self) -> Option<PeerId> {
        self.last_redirector
    }

    fn remember_cut(&mut self, p: PeerId, flow: FlowKey) {
        let i = usize::from(p.0);
        if self.cut.len() <= i {
            self.cut.resize_with(i + 1, Vec::new);
        }
        if self.cut[i].len() < MAX_CUT_PER_PEER {
            self.cut[i].push(flow);
        }
    }

    /// True when this host cut connections routed to `peer` while it was
    /// dead or gone, and has not yet told it.
    pub fn has_cut(&self, peer: PeerId) -> bool {
        self.cut
            .get(usize::from(peer.0))
            .is_some_and(|c| !c.is_empty())
    }

    /// The connections routed to `peer` that this host cut while the peer
    /// was dead or gone (their clients got an RST, or nothing): the
    /// sockets `peer` still holds for them serve nobody, yet count as its
    /// load. For a cut notice once `peer` is back; taken once. A flow whose
    /// 4-tuple has a route again (a new connection) is left out.
    pub fn take_cut(&mut self, peer: PeerId) -> Vec<FlowKey> {
        let Some(c) = self.cut.get_mut(usize::from(peer.0)) else {
            return Vec::new();
        };
        let mut flows = std::mem::take(c);
        flows.retain(|f| self.routes.get(f).is_none());
        flows
    }

    /// A peer cut `flow` (a connection it had redirected here): forget
    /// its served-table entry. Returns whether there was one.
    pub fn forget_served(&mut self, flow: &FlowKey) -> bool {
        self.served.remove(flow).is_some()
    }

    /// The SYN decisions taken since the last call, oldest first (at
    /// most [`EngineConfig::decision_log`] of the latest).
    pub fn take_decisions(&mut self) -> Vec<DecisionRecord> {
        self.decisions.drain(..).collect()
    }

    /// The new connections peers redirected here since the last call: when,
    /// from which peer, and this host's normalised load then (before it
    /// counted them). Kept like the decisions (`decision_log`): a peer's
    /// redirect is served here whatever the load, so these show whether
    /// peers send connections to a host that is in fact full.
    pub fn take_peer_arrivals(&mut self) -> Vec<(Timestamp, PeerId, f64)> {
        self.arrivals.drain(..).collect()
    }

    /// The keyed tunnel's flows accepted (with their tag) or ended since
    /// the last call, oldest first (with
    /// [`EngineConfig::keyed_flow_events`]; at most
    /// [`MAX_KEYED_FLOW_EVENTS`]). An accepted flow is noted again for
    /// each of its packets the engine sees (the fast path has not taken it
    /// yet, or its tag changed), consecutive repeats left out.
    pub fn take_keyed_flow_events(&mut self) -> Vec<KeyedFlowEvent> {
        std::mem::take(&mut self.keyed_events)
    }

    fn note_keyed_flow(&mut self, ev: KeyedFlowEvent) {
        if self.keyed_events.last() != Some(&ev) && self.keyed_events.len() < MAX_KEYED_FLOW_EVENTS
        {
            self.keyed_events.push(ev);
        }
    }

    /// A served connection's entry ended or was dropped other than at a
    /// FIN or RST its origin tunnelled here (which note it themselves):
    /// the XDP program stops decapsulating the origin's packets of the
    /// flow, so that any later one reaches the engine (VIP mode: a stale
    /// route's packets are strays to ask about, not the stack's to reset).
    pub(super) fn served_entry_gone(&mut self, flow: FlowKey, route: Route) {
        if !self.cfg.keyed_flow_events {
            return;
        }
        let Route::Peer(p) = route else {
            return;
        };
        if let Some(peer) = self.loads.peer(p).map(|r| r.tunnel_addr) {
            self.note_keyed_flow(KeyedFlowEvent {
                peer,
                flow,
                tag: None,
            });
        }
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The policy's name.
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Replaces the policy (a configuration reload); the tables, the load
    /// table and the counters stay.
    pub fn set_policy(&mut self, policy: Box<dyn Policy + Send>) {
        self.policy = policy;
    }

    /// New tunnel tag keys (a key roll: the cluster key file was
    /// reloaded). Ignored when the tunnel is not keyed: switching between
    /// plain and keyed tunnels needs a restart.
    pub fn set_tunnel_keys(&mut self, keys: TunnelKeys) {
        if let TunnelAuth::Key(k) = &mut self.cfg.tunnel_auth {
            *k = keys;
        }
    }

    /// Where this engine is one of several sharing a host (an engine per
    /// queue): what the others counted on top of the last load
    /// measurement (see [`LoadTable::set_local_others`]).
    pub fn set_local_others(&mut self, others: i64) {
        self.loads.set_local_others(others);
    }

    /// See [`LoadTable::restart_silence`]: call when the host starts
    /// listening for reports.
    pub fn restart_silence(&mut self, now: Timestamp) {
        self.loads.restart_silence(now);
    }

    /// The hasher of the flow tables (seeded by
    /// [`EngineConfig::flow_hash_seed`]): engines built from one
    /// configuration share it, so `dpr_table::worker_for` over it names the
    /// same engine for a flow wherever it is computed.
    pub fn flow_hasher(&self) -> &FlowHasher {
        &self.hasher
    }

    /// Passes both flow tables' large allocations to `hook` (see
    /// [`dpr_table::ConnTable::advise_memory`]; the I/O layer's asks for
    /// huge pages). Best called before the tables fill.
    pub fn advise_memory(&self, hook: dpr_table::MemoryHook) {
        self.routes.advise_memory(hook);
        self.served.advise_memory(hook);
    }

    /// Gives both flow tables a prefetch hint (see
    /// [`dpr_table::PrefetchHook`]; the I/O layer has one): their sweeps
    /// then load the entries they will examine a few packets ahead.
    pub fn set_prefetch(&mut self, hook: Option<dpr_table::PrefetchHook>) {
        self.routes.set_prefetch(hook);
        self.served.set_prefetch(hook);
    }

    /// The flow whose table entry `packet` (an IP packet) would touch,
    /// client to service, where it matters which engine handles it: TCP
    /// to or from anywhere (its own 4-tuple), IP-in-IP to this host's
    /// tunnel address (the inner TCP's), an ICMP error (the quoted
    /// packet's, reversed). `None` when any engine will do (what does not
    /// parse, other protocols). A cheap parse, for steering packets to the
    /// engine that owns their flow before [`Engine::process`].
    pub fn steer_key(&self, packet: &[u8]) -> Option<FlowKey> {
        // The common cases read straight from the bytes: IPv4 TCP without
        // options, and IPv4-in-IPv4 of it to the tunnel address. Anything
        // else takes the full parse; both give a flow the same key.
        if let Some(f) = v4_tcp_flow(packet) {
            return Some(f);
        }
        if let Some(inner) = packet.get(20..).filter(|_| {
            packet.first() == Some(&0x45)
                && packet.get(9) == Some(&4)
                && packet.get(16..20) == Some(&self.tunnel_v4[..])
        }) {
            if let Some(f) = v4_tcp_flow(inner) {
                return Some(f);
            }
        }
        if let Some(inner) = packet.get(32..).filter(|_| {
            packet.first() == Some(&0x45)
                && packet.get(9) == Some(&47)
                && packet.get(16..20) == Some(&self.tunnel_v4[..])
                && packet.get(20..24) == Some(&[0x30, 0, 0x08, 0][..])
        }) {
            if let Some(f) = v4_tcp_flow(inner) {
                return Some(f);
            }
        }
        let meta = parse_ip(packet).ok()?;
        match meta.flow.protocol {
            IpProtocol::Tcp if meta.fragment != Fragment::Later => Some(meta.flow),
            IpProtocol::IpIp | IpProtocol::Ipv6 | IpProtocol::Gre
                if meta.flow.dst == self.cfg.tunnel_addr =>
            {
                let shim = if meta.flow.protocol == IpProtocol::Gre {
                    gre::HEADER_LEN
                } else {
                    0
                };
                let inner = packet.get(usize::from(meta.l4_offset) + shim..meta.l3_range().end)?;
                let m = parse_ip(inner).ok()?;
                (m.flow.protocol == IpProtocol::Tcp && m.fragment == Fragment::Whole)
                    .then_some(m.flow)
            }
            IpProtocol::Icmp | IpProtocol::Icmpv6 if meta.fragment == Fragment::Whole => {
                let l4 = packet.get(usize::from(meta.l4_offset)..meta.l3_range().end)?;
                let err = match meta.flow.protocol {
                    IpProtocol::Icmp => icmp::parse_icmpv4_error(l4),
                    _ => icmp::parse_icmpv6_error(l4),
                }
                .ok()?;
                err.quote.inner.is_none().then(|| err.quote.flow.reversed())
            }
            _ => None,
        }
    }

    /// Decides what to do with the IP packet in `pkt`, rewriting it in place.
    pub fn process(&mut self, now: Timestamp, pkt: &mut PacketBuf<'_>) -> Verdict {
        let v = self.decide(now, pkt, None);
        self.counters.c.count(v)
    }

    /// The hash of the flow whose table entry `packet` would touch (of
    /// [`Engine::steer_key`], under [`Engine::flow_hasher`]): what steers a
    /// packet to its engine (`dpr_table::shard_of_hash`), and what
    /// [`Engine::process_batch_hashed`] takes so that a packet is hashed
    /// once.
    #[inline]
    pub fn flow_hash(&self, packet: &[u8]) -> Option<u64> {
        self.steer_key(packet).map(|f| self.hasher.hash(&f))
    }

    /// [`Engine::process`] on each packet of `pkts` in order, appending the
    /// verdicts to `out`: the same verdicts, packets, tables and counters
    /// as one call per packet. Each group of [`BATCH`] packets is hashed
    /// first and the table lines its packets will read are loaded together,
    /// so that their cache misses overlap instead of queueing (on a table
    /// far larger than the cache, that is where a packet's time goes).
    pub fn process_batch(
        &mut self,
        now: Timestamp,
        pkts: &mut [PacketBuf<'_>],
        out: &mut Vec<Verdict>,
    ) {
        let mut hashes = [None; BATCH];
        for group in pkts.chunks_mut(BATCH) {
            for (h, p) in hashes.iter_mut().zip(group.iter()) {
                *h = self.flow_hash(p.bytes());
            }
            self.process_group(now, group, &hashes[..group.len()], out);
        }
    }

    /// [`Engine::process_batch`] where the caller has hashed the packets
    /// already (to steer them): `hashes[i]` must be
    /// [`Engine::flow_hash`] of `pkts[i]` (or `None`: computed here when
    /// needed). A packet without its hash (`hashes` shorter than `pkts`)
    /// is hashed here.
    pub fn process_batch_hashed(
        &mut self,
        now: Timestamp,
        pkts: &mut [PacketBuf<'_>],
        hashes: &[Option<u64>],
        out: &mut Vec<Verdict>,
    ) {
        let mut own = [None; BATCH];
        for (g, group) in pkts.chunks_mut(BATCH).enumerate() {
            let given = hashes.get(g * BATCH..).unwrap_or_default();
            for (i, p) in group.iter().enumerate() {
                own[i] = match given.get(i) {
                    Some(h) => *h,
                    None => self.flow_hash(p.bytes()),
                };
            }
            self.process_group(now, group, &own[..group.len()], out);
        }
    }

    /// Up to [`BATCH`] packets with their flow hashes: warm, then process.
    fn process_group(
        &mut self,
        now: Timestamp,
        group: &mut [PacketBuf<'_>],
        hashes: &[Option<u64>],
        out: &mut Vec<Verdict>,
    ) {
        // Tunnel packets' flows are in the served table, the others' in
        // the routing table: warm only the table each will read.
        let (mut routes, mut served) = ([0u64; BATCH], [0u64; BATCH]);
        let (mut nr, mut ns) = (0, 0);
        for (p, h) in group.iter().zip(hashes) {
            let Some(h) = *h else { continue };
            if is_tunnel_proto(p.bytes()) {
                served[ns] = h;
                ns += 1;
            } else {
                routes[nr] = h;
                nr += 1;
            }
        }
        self.routes.warm_hashes(&routes[..nr]);
        if ns > 0 {
            self.served.warm_hashes(&served[..ns]);
        }
        for (p, h) in group.iter_mut().zip(hashes) {
            let v = self.decide(now, p, *h);
            out.push(self.counters.c.count(v));
        }
    }

    /// `hash`: [`Engine::flow_hash`] of the packet, when the caller has it.
    fn decide(&mut self, now: Timestamp, pkt: &mut PacketBuf<'_>, hash: Option<u64>) -> Verdict {
        // The common packet's parse is built in place and used from there:
        // moved into a common variable with the general parse's result, it
        // was copied whole right after being written field by field, and
        // the copy waited on store forwarding (half the function's time).
        if let Some(meta) = v4_tcp_meta(pkt.bytes()) {
            return self.decide_parsed(now, pkt, &meta, hash);
        }
        let meta = match parse_ip(pkt.bytes()) {
            Ok(m) => m,
            Err(e) => {
                // Only traffic diverted to the router reaches it; what does
                // not parse is counted and dropped.
                self.counters.c.malformed(e.layer);
                return Verdict::Drop(DropReason::Malformed);
            }
        };
        self.decide_parsed(now, pkt, &meta, hash)
    }

    /// [`Engine::decide`] once the packet parsed.
    #[inline(always)]
    fn decide_parsed(
        &mut self,
        now: Timestamp,
        pkt: &mut PacketBuf<'_>,
        meta: &PacketMeta,
        hash: Option<u64>,
    ) -> Verdict {
        match meta.flow.protocol {
            IpProtocol::IpIp | IpProtocol::Ipv6 if meta.flow.dst == self.cfg.tunnel_addr => {
                self.tunnel_input(now, pkt, meta, hash)
            }
            // GRE is the keyed tunnel's; without it, not the router's.
            IpProtocol::Gre
                if meta.flow.dst == self.cfg.tunnel_addr
                    && matches!(self.cfg.tunnel_auth, TunnelAuth::Key(_)) =>
            {
                self.tunnel_input(now, pkt, meta, hash)
            }
            IpProtocol::Tcp if self.is_service(&meta.flow) => self.service(now, pkt, meta, hash),
            // A later fragment carries no ports: any TCP fragment to a
            // service address may be service traffic, and cannot be routed
            // without reassembly.
            IpProtocol::Tcp
                if meta.fragment == Fragment::Later
                    && self.cfg.service_addrs.contains(&meta.flow.dst) =>
            {
                Verdict::Drop(DropReason::Fragment)
            }
            IpProtocol::Icmp | IpProtocol::Icmpv6 if meta.fragment == Fragment::Whole => {
                self.icmp(pkt, meta)
            }
            _ => Verdict::Pass,
        }
    }

    fn is_service(&self, f: &FlowKey) -> bool {
        self.cfg.service_ports.contains(&f.dst_port) && self.cfg.service_addrs.contains(&f.dst)
    }

    /// TCP to a service address and port, straight from a client.
    fn service(
        &mut self,
        now: Timestamp,
        pkt: &mut PacketBuf<'_>,
        meta: &PacketMeta,
        hash: Option<u64>,
    ) -> Verdict {
        if meta.fragment != Fragment::Whole {
            return Verdict::Drop(DropReason::Fragment);
        }
        // By reference: a copy of the key read back whole from where the
        // parse wrote it field by field stalls on store forwarding.
        let flow = &meta.flow;
        let flags = meta.tcp_flags;
        let len = meta.l3_len;
        let mut new_incarnation = false;
        let isn = if flags.is_syn() {
            tcp_seq(pkt.bytes(), meta)
        } else {
            None
        };
        // Whether the table may hold the flow: a SYN of a flow it does not
        // hold (the common case) costs one look-up, not two.
        let mut recorded = true;
        if flags.is_syn() {
            // A SYN for a recorded 4-tuple is a retransmission only while
            // that connection lives and the sequence number is the same;
            // clients reuse ports within seconds of a close.
            match self.routes.get(flow) {
                None => recorded = false,
                Some(e) => {
                    let ended = matches!(e.state, ConnState::Closing | ConnState::Closed);
                    if ended || e.isn.zip(isn).is_some_and(|(a, b)| a != b) {
                        if !ended {
                            self.connection_ended(e.route, *flow);
                        }
                        self.routes.remove(flow);
                        self.counters.c.syn_new_incarnations += 1;
                        new_incarnation = true;
                        recorded = false;
                    }
                }
            }
            if !recorded && self.is_vip_flow(flow) {
                if let Some(v) = self.vip_syn_served(flow, isn) {
                    return v;
                }
            }
        } else if flags.intersects(TcpFlags::FIN | TcpFlags::RST) {
            if let Some(e) = self.routes.get(flow) {
                if matches!(e.state, ConnState::SynSeen | ConnState::Established) {
                    self.connection_ended(e.route, *flow);
                }
            }
        }
        let known = if recorded {
            // The steering hash is this flow's (`flow_hash`: the same key).
            let h = hash.unwrap_or_else(|| self.hasher.hash(flow));
            debug_assert_eq!(h, self.hasher.hash(flow));
            self.routes
                .on_packet_hashed(flow, h, Direction::Original, flags, len, now)
        } else {
            PacketOutcome::Unknown
        };
        if flags.is_syn() {
            match known {
                PacketOutcome::Forward(Route::Peer(p)) | PacketOutcome::Reset(Route::Peer(p))
                    if !self.peer_usable(p) =>
                {
                    // Not yet established: route the retransmitted SYN afresh.
                    self.routes.remove(flow);
                    self.counters.c.dead_peer_reroutes += 1;
                }
                PacketOutcome::Forward(route) | PacketOutcome::Reset(route) => {
                    self.counters.c.syn_retransmits += 1;
                    return self.follow(route, pkt, meta);
                }
                PacketOutcome::Unknown => {}
            }
            let local_load = self.loads.local_load();
            let decision = if self.draining {
                self.drain_decision()
            } else {
                let conn = NewConnection::from_client(*flow);
                decide_and_account(
                    self.policy.as_mut(),
                    &conn,
                    &mut self.loads,
                    self.rng.as_mut(),
                )
            };
            let route = match decision {
                RedirectDecision::ServeLocally => Route::Local,
                RedirectDecision::Redirect(p) => Route::Peer(p),
            };
            let inserted = match isn {
                Some(isn) => self.routes.insert_syn(flow, route, isn, now),
                None => self.routes.insert(flow, route, now),
            };
            if inserted.is_err() {
                self.counters.c.table_insert_failures += 1;
            }
            let v = self.follow(route, pkt, meta);
            match (route, v) {
                (Route::Local, _) => {
                    self.counters.c.new_local += 1;
                    self.local_opened(*flow);
                    if self.loads.least_loaded_peer().is_none() && self.loads.host_count() > 1 {
                        self.counters.c.new_local_no_peer += 1;
                    }
                }
                (Route::Peer(p), Verdict::Forward { .. }) => {
                    self.counters.c.new_redirected += 1;
                    self.counters.peer(p).redirected_connections += 1;
                }
                // Could not be sent: do not keep a route nothing followed.
                (Route::Peer(p), _) => {
                    self.routes.remove(flow);
                    let _ = self.loads.record_redirect_end(p);
                }
            }
            if self.cfg.decision_log > 0 {
                if self.decisions.len() >= self.cfg.decision_log {
                    self.decisions.pop_front();
                }
                self.decisions.push_back(DecisionRecord {
                    at: now,
                    flow: *flow,
                    local_load,
                    route,
                    new_incarnation,
                });
            }
            return v;
        }
        match known {
            PacketOutcome::Unknown if self.is_vip_flow(flow) => self.miss(now, pkt, meta),
            PacketOutcome::Forward(Route::Peer(p)) | PacketOutcome::Reset(Route::Peer(p))
                if !self.peer_usable(p) && self.is_vip_flow(flow) =>
            {
                self.dead_route_miss(now, p, pkt, meta)
            }
            PacketOutcome::Unknown if self.recovering => Verdict::Drop(DropReason::Recovering),
            PacketOutcome::Unknown => {
                self.counters.c.unknown_flow_delivered += 1;
                Verdict::Deliver
            }
            PacketOutcome::Forward(route) | PacketOutcome::Reset(route) => {
                self.follow(route, pkt, meta)
            }
        }
    }

    /// A connection routed along `route` ended (its client's first FIN or
    /// RST): it stops counting against the serving host's load estimate.
    fn connection_ended(&mut self, route: Route, flow: FlowKey) {
        self.counters.c.connections_ended += 1;
        match route {
            Route::Local => self.local_ended(flow),
            Route::Peer(p) => {
                let _ = self.loads.record_redirect_end(p);
            }
        }
    }

    /// Where a draining host sends a new connection: the least-loaded
    /// eligible peer, accounted as a redirect; itself when there is none.
    fn drain_decision(&mut self) -> RedirectDecision {
        match self.loads.least_loaded_peer() {
            Some((p, _)) => {
                let _ = self.loads.record_redirect(p);
                self.counters.c.drain_redirects += 1;
                RedirectDecision::Redirect(p)
            }
            None => RedirectDecision::ServeLocally,
        }
    }

    /// True when connections routed to `p` may still be sent there.
    fn peer_usable(&self, p: PeerId) -> bool {
        self.usable_tunnel(p).is_some()
    }

    /// The tunnel address of `p` while connections routed to it may still
    /// be sent there (not dead, not gone): one load-table look-up.
    fn usable_tunnel(&self, p: PeerId) -> Option<IpAddr> {
        let r = self.loads.peer(p)?;
        (!matches!(r.state, PeerState::Dead | PeerState::Left)).then_some(r.tunnel_addr)
    }

    fn follow(&mut self, route: Route, pkt: &mut PacketBuf<'_>, meta: &PacketMeta) -> Verdict {
        let Route::Peer(p) = route else {
            return Verdict::Deliver;
        };
        if let Some(to) = self.usable_tunnel(p) {
            return self.forward(p, to, pkt, meta, true);
        }
        self.counters.peer(p).dead_peer_packets += 1;
        if self.routes.remove(&meta.flow).is_some() && meta.flow.protocol == IpProtocol::Tcp {
            self.remember_cut(p, meta.flow);
        }
        match self.cfg.dead_peer {
            DeadPeerAction::Drop => Verdict::Drop(DropReason::DeadPeer),
            DeadPeerAction::Reset => {
                let r = pkt.range();
                match reply::write_rst(&mut pkt.whole_mut()[r.start..r.end], meta) {
                    Some(n) => {
                        pkt.set_range(r.start..r.start + n);
                        self.counters.c.dead_peer_resets += 1;
                        Verdict::Reply
                    }
                    // An RST from the client (or no room): nothing to answer.
                    None => Verdict::Drop(DropReason::DeadPeer),
                }
            }
        }
    }

    /// Encapsulates the packet towards peer `p` at tunnel address `to`.
    fn forward(
        &mut self,
        p: PeerId,
        to: IpAddr,
        pkt: &mut PacketBuf<'_>,
        meta: &PacketMeta,
        clamp: bool,
    ) -> Verdict {
        let outer_len = if self.cfg.tunnel_addr.is_ipv4() {
            ipip::OUTER_V4_LEN
        } else {
            ipip::OUTER_V6_LEN
        };
        let overhead = outer_len + self.cfg.tunnel_auth.shim_len();
        if pkt.headroom() < overhead {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
        let syn = meta.tcp_flags.is_syn() || meta.tcp_flags.is_syn_ack();
        if clamp && syn && self.cfg.clamp_mss && meta.flow.protocol == IpProtocol::Tcp {
            let mss = mss_for_mtu(
                self.cfg.tunnel_mtu,
                overhead as u16,
                meta.version == IpVersion::V6,
            );
            if let Ok(MssClamp::Clamped { .. }) = rewrite::clamp_mss(pkt.bytes_mut(), mss) {
                self.counters.c.mss_clamped += 1;
            }
        }
        let r = pkt.range();
        let inner_len = meta.l3_len as usize;
        if overhead + inner_len > usize::from(self.cfg.tunnel_mtu) && meta.dont_frag {
            return self.too_big(pkt, meta, overhead);
        }
        // Too big with DF clear: the outer header copies it, so routers may fragment.
        let ident = self.next_ident;
        self.next_ident = self.next_ident.wrapping_add(1);
        let end = r.start + inner_len;
        if let (IpAddr::V4(from), IpAddr::V4(to4)) = (self.cfg.tunnel_addr, to) {
            // The common case: the outer header from the peer's template.
            let gre = match &self.cfg.tunnel_auth {
                TunnelAuth::None => None,
                TunnelAuth::Key(keys) => {
                    let (key_id, key) = keys.signing();
                    let tag = gre::tunnel_tag(key, key_id, self.cfg.tunnel_addr, to, &meta.flow);
                    Some(GreFields { tag, key_id })
                }
            };
            let total = inner_len + overhead;
            let Ok(total) = u16::try_from(total) else {
                return Verdict::Drop(DropReason::Oversize);
            };
            let outer = self.outer_v4(p, from, to4, gre.is_some());
            let start = r.start - overhead;
            let buf = pkt.whole_mut();
            let (tos, df, v6) = match meta.version {
                IpVersion::V4 => (buf[r.start + 1], buf[r.start + 6] & 0x40 != 0, false),
                IpVersion::V6 => (buf[r.start] << 4 | buf[r.start + 1] >> 4, true, true),
            };
            buf[start..start + 20].copy_from_slice(&outer.header(tos, total, ident, df, v6));
            if let Some(g) = gre {
                let [p0, p1] = if v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
                let [t0, t1, t2, t3] = g.tag.to_be_bytes();
                let [k0, k1] = g.key_id.to_be_bytes();
                buf[start + 20..start + 32]
                    .copy_from_slice(&[0x30, 0, p0, p1, t0, t1, t2, t3, 0, 0, k0, k1]);
            }
            pkt.set_range(start..end);
            let c = self.counters.peer(p);
            c.forwarded_packets += 1;
            c.forwarded_bytes += u64::from(total);
            return Verdict::Forward { peer: p, to };
        }
        let mut params = EncapParams::new(self.cfg.tunnel_addr, to);
        params.ttl = self.cfg.outer_ttl;
        params.ident = ident;
        if to.is_ipv6() {
            // RFC 6438: spread tunnel traffic over ECMP paths by inner flow.
            params.flow_label = ipip::flow_label_from_hash(self.hasher.hash(&meta.flow));
        }
        let buf = &mut pkt.whole_mut()[..end];
        let encapsulated = match &self.cfg.tunnel_auth {
            TunnelAuth::None => ipip::encapsulate(buf, r.start, &params),
            TunnelAuth::Key(keys) => {
                let (key_id, key) = keys.signing();
                let tag = gre::tunnel_tag(key, key_id, self.cfg.tunnel_addr, to, &meta.flow);
                ipip::encapsulate_gre(buf, r.start, &params, GreFields { tag, key_id })
            }
        };
        match encapsulated {
            Ok(start) => {
                pkt.set_range(start..end);
                let c = self.counters.peer(p);
                c.forwarded_packets += 1;
                c.forwarded_bytes += (end - start) as u64;
                Verdict::Forward { peer: p, to }
            }
            Err(e) if e.kind == ErrorKind::Malformed(Malformed::Oversize) => {
                Verdict::Drop(DropReason::Oversize)
            }
            Err(_) => Verdict::Drop(DropReason::NoHeadroom),
        }
    }

    /// The outer IPv4 header towards peer `p` at `to` (built once per peer
    /// and tunnel address).
    #[inline]
    fn outer_v4(&mut self, p: PeerId, from: Ipv4Addr, to: Ipv4Addr, gre: bool) -> OuterV4 {
        let i = usize::from(p.0);
        if let Some(Some(o)) = self.outer.get(i) {
            if o.to == to {
                return *o;
            }
        }
        let o = OuterV4::new(from, to, self.cfg.outer_ttl, gre);
        if self.outer.len() <= i {
            self.outer.resize(i + 1, None);
        }
        self.outer[i] = Some(o);
        o
    }

    /// The client's packet does not fit the tunnel: tell it the MTU that
    /// does (as a Linux tunnel device would), so it sends smaller segments.
    fn too_big(&mut self, pkt: &mut PacketBuf<'_>, meta: &PacketMeta, outer_len: usize) -> Verdict {
        if meta.flow.protocol != IpProtocol::Tcp {
            return Verdict::Drop(DropReason::TooBig);
        }
        let mtu = self.cfg.tunnel_mtu.saturating_sub(outer_len as u16);
        let r = pkt.range();
        match reply::write_too_big(pkt.whole_mut(), r, meta, mtu) {
            Some(range) => {
                pkt.set_range(range);
                self.counters.c.too_big_replies += 1;
                Verdict::Reply
            }
            None => Verdict::Drop(DropReason::TooBig),
        }
    }

    /// IP-in-IP addressed to this host's tunnel address.
    fn tunnel_input(
        &mut self,
        now: Timestamp,
        pkt: &mut PacketBuf<'_>,
        meta: &PacketMeta,
        hash: Option<u64>,
    ) -> Verdict {
        let Some(&origin) = self.peer_by_tunnel.get(&meta.flow.src) else {
            return Verdict::Drop(DropReason::UnknownTunnelSource);
        };
        if meta.flow.protocol != IpProtocol::Gre
            && matches!(self.cfg.tunnel_auth, TunnelAuth::Key(_))
        {
            // Plain IP-in-IP carries no tag: with a keyed tunnel it proves nothing.
            return Verdict::Drop(DropReason::TunnelBadTag);
        }
        let check = if self.cfg.verify_tunnel_checksum {
            ChecksumCheck::Verify
        } else {
            ChecksumCheck::Skip
        };
        let r = pkt.range();
        let d = match ipip::decapsulate_in_place(&mut pkt.whole_mut()[r.start..r.end], check) {
            Ok(d) => d,
            Err(e) if e.kind == ErrorKind::Malformed(Malformed::CeOnNotEct) => {
                return Verdict::Drop(DropReason::EcnCeOnNotEct);
            }
            Err(e) => {
                self.counters.c.malformed(e.layer);
                return Verdict::Drop(DropReason::BadTunnel);
            }
        };
        if d.inner_is_tunnel {
            return Verdict::Drop(DropReason::NestedTunnel);
        }
        pkt.set_range(r.start + d.inner.start..r.start + d.inner.end);
        let inner = match parse_ip(pkt.bytes()) {
            Ok(m) => m,
            Err(e) => {
                self.counters.c.malformed(e.layer);
                return Verdict::Drop(DropReason::BadTunnel);
            }
        };
        // Only what a peer legitimately sends: service TCP, or an ICMP error,
        // addressed to one of that peer's service addresses.
        let expected = inner.fragment == Fragment::Whole
            && self
                .loads
                .peer(origin)
                .is_some_and(|p| p.service_addrs.contains(&inner.flow.dst))
            && match inner.flow.protocol {
                IpProtocol::Tcp => self.cfg.service_ports.contains(&inner.flow.dst_port),
                IpProtocol::Icmp | IpProtocol::Icmpv6 => true,
                _ => false,
            };
        if !expected {
            return Verdict::Drop(DropReason::UnexpectedInner);
        }
        // Keyed tunnel: every packet's tag must verify under the key it
        // names (one SipHash; a genuine peer tags every packet).
        let tag_ok = match (&self.cfg.tunnel_auth, d.gre) {
            (TunnelAuth::None, _) => true,
            (TunnelAuth::Key(keys), Some(g)) => keys.get(g.key_id).is_some_and(|k| {
                gre::tunnel_tag(k, g.key_id, d.outer_src, d.outer_dst, &inner.flow) == g.tag
            }),
            (TunnelAuth::Key(_), None) => false,
        };
        if !tag_ok {
            // A new flow or an ICMP error: a forged tag. Mid-connection:
            // told apart by whether this host serves the flow for that
            // peer (a spoofed outer source's junk, or an injection).
            let unknown = inner.flow.protocol == IpProtocol::Tcp
                && !inner.tcp_flags.is_syn()
                && self
                    .served
                    .get(&inner.flow)
                    .is_none_or(|e| e.route != Route::Peer(origin));
            return Verdict::Drop(if unknown {
                DropReason::TunnelUnknownFlow
            } else {
                DropReason::TunnelBadTag
            });
        }
        if inner.flow.protocol == IpProtocol::Tcp {
            let flags = inner.tcp_flags;
            if let Some(v) = self.stray_from_peer(now, origin, pkt, &inner) {
                return v;
            }
            if let (true, Some(g)) = (self.cfg.keyed_flow_events, d.gre) {
                // Accepted while open (new, learned, or a new tag); ended at
                // the client's FIN or RST; the packets after a FIN (its last
                // ACKs) re-open nothing.
                let ended = flags.intersects(TcpFlags::FIN | TcpFlags::RST);
                let open = !ended
                    && self.served.get(&inner.flow).is_none_or(|e| {
                        flags.is_syn()
                            || matches!(e.state, ConnState::SynSeen | ConnState::Established)
                    });
                if ended || open {
                    self.note_keyed_flow(KeyedFlowEvent {
                        peer: d.outer_src,
                        flow: inner.flow,
                        tag: open.then_some(g.tag),
                    });
                }
            }
            if flags.intersects(TcpFlags::FIN | TcpFlags::RST)
                && self
                    .served
                    .get(&inner.flow)
                    .is_some_and(|e| matches!(e.state, ConnState::SynSeen | ConnState::Established))
            {
                // Served here for a peer: it leaves this host's load now.
                self.counters.c.connections_ended += 1;
                self.local_ended(inner.flow);
            }
            // A SYN for a 4-tuple whose served connection has ended is a new
            // connection (clients reuse ports within seconds of a close; the
            // new one may come from another peer): its entry starts afresh,
            // or it would stay `Closing` with the old origin, and this host
            // would neither claim it when a peer asks (VIP mode) nor name
            // it to its origin after a restart. So is a SYN with another
            // sequence number than the entry's, or one after an entry
            // learnt mid-connection: behind ECMP an older connection's end
            // may have gone through another host and never reached this
            // entry. The same number is the SYN again (its SYN-ACK lost).
            let isn = if flags.is_syn() {
                tcp_seq(pkt.bytes(), &inner)
            } else {
                None
            };
            if let (true, Some(e)) = (flags.is_syn(), self.served.get(&inner.flow)) {
                let live = matches!(e.state, ConnState::SynSeen | ConnState::Established);
                let same = e.isn.is_some() && e.isn == isn;
                if !live || !same {
                    self.served.remove(&inner.flow);
                    self.counters.c.syn_new_incarnations += 1;
                    self.served_entry_gone(inner.flow, e.route);
                    if live {
                        self.counters.c.vip.stale_served_dropped += 1;
                        self.counters.c.connections_ended += 1;
                        self.local_ended(inner.flow);
                    }
                }
            }
            // The steering hash is the inner flow's (`flow_hash`).
            let h = hash.unwrap_or_else(|| self.hasher.hash(&inner.flow));
            debug_assert_eq!(h, self.hasher.hash(&inner.flow));
            let outcome = self.served.on_packet_hashed(
                &inner.flow,
                h,
                Direction::Original,
                flags,
                inner.l3_len,
                now,
            );
            if flags.is_syn() && outcome == PacketOutcome::Unknown {
                // One hop only: a connection that arrived from a peer is
                // served here and never redirected again.
                let inserted = match isn {
                    Some(isn) => self
                        .served
                        .insert_syn(&inner.flow, Route::Peer(origin), isn, now),
                    None => self.served.insert(&inner.flow, Route::Peer(origin), now),
                };
                match inserted {
                    Ok(_) => {}
                    Err(_) => self.counters.c.table_insert_failures += 1,
                }
                // A route this host holds for the 4-tuple is an older
                // connection's (behind ECMP its end may have gone through
                // another host): this one is served here, and the route
                // would send its packets away when ECMP brings them here.
                if let Some(old) = self.routes.remove(&inner.flow) {
                    if matches!(old.state, ConnState::SynSeen | ConnState::Established) {
                        self.connection_ended(old.route, inner.flow);
                    }
                    self.counters.c.vip.stale_routes_dropped += 1;
                }
                self.counters.c.new_from_peer += 1;
                self.counters.peer(origin).served_connections += 1;
                self.last_redirector = Some(origin);
                if self.cfg.decision_log > 0 {
                    if self.arrivals.len() >= self.cfg.decision_log {
                        self.arrivals.pop_front();
                    }
                    self.arrivals
                        .push_back((now, origin, self.loads.local_load()));
                }
                self.local_opened(inner.flow);
            } else if outcome == PacketOutcome::Unknown && !flags.contains(TcpFlags::RST) {
                // Mid-connection and not in the table (this host restarted,
                // or the entry was evicted): learn it again, so the origin
                // can still recover it from us.
                if self
                    .served
                    .insert_established(&inner.flow, Route::Peer(origin), now)
                    .is_err()
                {
                    self.counters.c.table_insert_failures += 1;
                }
            }
        }
        let c = self.counters.peer(origin);
        c.received_packets += 1;
        c.received_bytes += u64::from(inner.l3_len);
        Verdict::Deliver
    }

    /// ICMP errors: forward those about redirected connections to the peer
    /// that serves them, so path-MTU discovery works through DPR.
    fn icmp(&mut self, pkt: &mut PacketBuf<'_>, meta: &PacketMeta) -> Verdict {
        let l4 = &pkt.bytes()[usize::from(meta.l4_offset)..meta.l3_range().end];
        let parsed = match meta.flow.protocol {
            IpProtocol::Icmp => icmp::parse_icmpv4_error(l4),
            _ => icmp::parse_icmpv6_error(l4),
        };
        let Ok(err) = parsed else {
            return Verdict::Pass;
        };
        if err.quote.inner.is_some() {
            // About an IP-in-IP packet this host sent: the tunnel path's MTU
            // is configuration (`tunnel_mtu`); tell the operator, not a peer.
            self.counters.c.icmp_about_tunnel += 1;
            return Verdict::Pass;
        }
        if !self.cfg.service_addrs.contains(&meta.flow.dst) {
            return Verdict::Pass;
        }
        // The quoted packet was sent by the serving host as the service
        // address, to the client: the table holds it client -> service.
        let key = err.quote.flow.reversed();
        let target = match self.routes.get(&key).map(|e| e.route) {
            Some(Route::Peer(p)) => self.usable_tunnel(p).map(|to| (p, to)),
            _ => None,
        };
        match target {
            Some((p, to)) => {
                let v = self.forward(p, to, pkt, meta, false);
                if matches!(v, Verdict::Forward { .. }) {
                    self.counters.peer(p).icmp_forwarded += 1;
                }
                v
            }
            _ => Verdict::Pass,
        }
    }
}

/// The flow of an IPv4 TCP packet with no IP options and not a fragment,
/// read straight from its header (for steering only: nothing is checked
/// that steering does not need).
fn v4_tcp_flow(p: &[u8]) -> Option<FlowKey> {
    let h = p.get(..24)?;
    if h[0] != 0x45 || h[9] != 6 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return None;
    }
    Some(FlowKey::new(
        IpProtocol::Tcp,
        IpAddr::from([h[12], h[13], h[14], h[15]]),
        u16::from_be_bytes([h[20], h[21]]),
        IpAddr::from([h[16], h[17], h[18], h[19]]),
        u16::from_be_bytes([h[22], h[23]]),
    ))
}

/// The sequence number of the TCP segment `meta` describes, if its header
/// is in `bytes`.
fn tcp_seq(bytes: &[u8], meta: &PacketMeta) -> Option<u32> {
    let at = usize::from(meta.l4_offset) + 4;
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
