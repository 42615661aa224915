//! Starting the AF_XDP backend from a plain plan: load the XDP program,
//! fill its maps, bind one AF_XDP socket per queue, attach the program to
//! the uplink; and keep the maps in step with the peers on a reload.
//!
//! ```text
//!  XdpPlan ─► XdpBackend::start ─► uplink index and MAC (sys)
//!                                ─► XdpProgram::load: RouterProgram (maps, program; dpr-xdp)
//!                                     services ─► peers ─► decapsulation pairs
//!                                ─► one XskSocket per queue ─► its slot in the socket map
//!                                ─► attach (native, generic or auto) ─► XdpBackend
//!  reload ─► XdpProgram::set_peers(&[XdpPeer]): removes what left, adds what came
//! ```
//!
//! [`XdpBackend::start`] returns everything the data path needs or an
//! [`XdpError`] naming the step (interface, map entry, queue, mode) that
//! failed; a daemon logs it and falls back to the TUN backend. The
//! program is attached over netlink (`IFLA_XDP`), replacing a previous
//! instance's in place, and stays attached when the process ends (a
//! restart or a crash): with no socket it drops the router's traffic, so
//! the local stack never answers the packets of connections routed
//! elsewhere. [`XdpBackend::detach`] removes it at a full stop. [`XdpProgram`] is generic over the `bpf(2)` layer, so its map
//! maintenance is tested with [`dpr_xdp::FakeBpf`] below, without root.

use crate::sys;
use dpr_packet::{FlowKey, IpProtocol};
use dpr_router::KeyedFlowEvent;
use dpr_xdp::xsk::{XskConfig, XskSocket};
use dpr_xdp::{
    BpfSys, Counters, FastPathEncap, FastPathMaps, FastPathPeer, FastPathRoute, KeyedFlow,
    KeyedFlowMap, MissingSocket, ProgramConfig, RealBpf, RouterProgram, XdpMode,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A peer as the XDP program sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpPeer {
    /// Its tunnel address: IP-in-IP from it goes to the router.
    pub tunnel_addr: IpAddr,
    /// Its service addresses (on this host's service ports): with
    /// decapsulation on, what it sends there in IPv4-in-IPv4 is
    /// decapsulated by the program itself.
    pub service_addrs: Vec<IpAddr>,
}

/// What the AF_XDP backend needs to start: plain data, no configuration
/// file.
#[derive(Debug, Clone)]
pub struct XdpPlan {
    /// The uplink interface (in the calling thread's namespace).
    pub uplink: String,
    /// AF_XDP sockets to bind, on queues `0..queues`.
    pub queues: u32,
    /// This host's service addresses.
    pub service_addrs: Vec<IpAddr>,
    /// TCP service ports (of this host and of its peers).
    pub service_ports: Vec<u16>,
    /// The peers.
    pub peers: Vec<XdpPeer>,
    /// How to attach the program.
    pub mode: XdpMode,
    /// The program decapsulates the plain IPv4-in-IPv4 packets of
    /// connections in progress itself and passes them to the kernel.
    pub decap: bool,
    /// Sizes of each socket's UMEM and rings.
    pub xsk: XskConfig,
    /// The send side's fast path: the program forwards the established
    /// redirected flows itself ([`FastPathWriter`], [`FastPathPeers`]).
    pub fast_path: bool,
    /// The tunnel's MTU: the fast path leaves bigger outer packets to the
    /// engine.
    pub tunnel_mtu: u16,
}

/// A failed start-up or map update, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The uplink has no index or MAC (missing, or not Ethernet).
    #[error("uplink {uplink}: {what}: {source}")]
    Uplink {
        /// The interface.
        uplink: String,
        /// What was asked (`interface index`, `MAC address`).
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the maps or loading the program failed (the verifier's
    /// log, if it refused the program, is in the source).
    #[error("loading the XDP program: {0}")]
    Load(#[source] dpr_xdp::Error),
    /// Writing or removing one map entry failed.
    #[error("XDP {map} map, {entry}: {source}")]
    Map {
        /// The map (`service`, `peer`, `tunnel service`, `socket`).
        map: &'static str,
        /// The entry.
        entry: String,
        /// The cause (the `bpf(2)` command is named in it).
        #[source]
        source: dpr_xdp::Error,
    },
    /// Binding the AF_XDP socket of a queue failed.
    #[error("AF_XDP socket on {uplink} queue {queue}: {source}")]
    Socket {
        /// The interface.
        uplink: String,
        /// The queue.
        queue: u32,
        /// The cause.
        #[source]
        source: dpr_xdp::Error,
    },
    /// Attaching the program failed.
    #[error("attaching the XDP program to {uplink} ({mode:?}): {source}")]
    Attach {
        /// The interface.
        uplink: String,
        /// The mode asked for.
        mode: XdpMode,
        /// The cause.
        #[source]
        source: dpr_xdp::Error,
    },
}

fn map_err(map: &'static str, entry: impl ToString) -> impl FnOnce(dpr_xdp::Error) -> XdpError {
    let entry = entry.to_string();
    move |source| XdpError::Map { map, entry, source }
}

/// The loaded program and the entries of its maps that follow the plan
/// (services, peers, decapsulation pairs), over the `bpf(2)` of `B`.
#[derive(Debug)]
pub struct XdpProgram<B: BpfSys = RealBpf> {
    program: RouterProgram<B>,
    service_ports: Vec<u16>,
    decap: bool,
    peers: BTreeSet<IpAddr>,
    /// (peer, service) pairs the program decapsulates itself.
    tunnel_services: BTreeSet<(IpAddr, SocketAddr)>,
}

/// Where [`KeyedFlowWriter`] writes: the program's `keyed_flows_v4` map,
/// through a worker's own descriptor ([`KeyedFlowMap`]) or the loader's.
pub trait KeyedFlowSink {
    /// Writes (or replaces) an entry.
    fn add(&mut self, peer: IpAddr, flow: &KeyedFlow, tag: u32) -> Result<(), dpr_xdp::Error>;
    /// Removes an entry; `Ok(false)` if it was not there.
    fn remove(&mut self, peer: IpAddr, flow: &KeyedFlow) -> Result<bool, dpr_xdp::Error>;
}

impl KeyedFlowSink for KeyedFlowMap {
    fn add(&mut self, peer: IpAddr, flow: &KeyedFlow, tag: u32) -> Result<(), dpr_xdp::Error> {
        KeyedFlowMap::add(self, peer, flow, tag)
    }
    fn remove(&mut self, peer: IpAddr, flow: &KeyedFlow) -> Result<bool, dpr_xdp::Error> {
        KeyedFlowMap::remove(self, peer, flow)
    }
}

impl<B: BpfSys> KeyedFlowSink for RouterProgram<B> {
    fn add(&mut self, peer: IpAddr, flow: &KeyedFlow, tag: u32) -> Result<(), dpr_xdp::Error> {
        self.add_keyed_flow(peer, flow, tag)
    }
    fn remove(&mut self, peer: IpAddr, flow: &KeyedFlow) -> Result<bool, dpr_xdp::Error> {
        self.remove_keyed_flow(peer, flow)
    }
}

/// Applies the engine's keyed-flow notes ([`KeyedFlowEvent`]) to the XDP
/// program's map, so that the program decapsulates the packets of accepted
/// connections itself (IPv4 TCP only; others stay on the engine's path).
/// A worker owns one and applies its engine's notes after each batch.
#[derive(Debug)]
pub struct KeyedFlowWriter<S: KeyedFlowSink> {
    sink: S,
    /// The entries this writer wrote recently, with their tag, so that
    /// repeats are not written again: a fixed, direct-mapped cache of
    /// (fingerprint, tag) slots, allocated once (a flood of accepted SYNs
    /// must not grow the daemon's memory); a slot taken by another flow
    /// only costs a repeated write.
    recent: Box<[(u64, u32)]>,
    hasher: std::collections::hash_map::RandomState,
    /// What it did.
    pub stats: KeyedFlowStats,
}

/// What a [`KeyedFlowWriter`] did, since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyedFlowStats {
    /// Entries written (new flows, new tags).
    pub added: u64,
    /// Entries removed (connections that ended).
    pub removed: u64,
    /// Map writes refused by the kernel.
    pub failed: u64,
}

/// Slots of a [`KeyedFlowWriter`]'s cache of recent writes (16 bytes each).
const RECENT_SLOTS: usize = 4096;

impl<S: KeyedFlowSink> KeyedFlowWriter<S> {
    /// A writer into `sink`.
    pub fn new(sink: S) -> Self {
        Self {
            sink,
            recent: vec![(0, 0); RECENT_SLOTS].into_boxed_slice(),
            hasher: std::collections::hash_map::RandomState::new(),
            stats: KeyedFlowStats::default(),
        }
    }

    /// Writes the accepted flows of `events` and removes the ended ones.
    pub fn apply(&mut self, events: &[KeyedFlowEvent]) {
        for ev in events {
            let (IpAddr::V4(_), IpAddr::V4(_), IpAddr::V4(_)) = (ev.peer, ev.flow.src, ev.flow.dst)
            else {
                continue;
            };
            if ev.flow.protocol != IpProtocol::Tcp {
                continue;
            }
            let flow = KeyedFlow {
                client: SocketAddr::new(ev.flow.src, ev.flow.src_port),
                service: SocketAddr::new(ev.flow.dst, ev.flow.dst_port),
            };
            // A fingerprint that is never 0 (0 marks an empty slot).
            let fp = std::hash::BuildHasher::hash_one(&self.hasher, (ev.peer, flow)) | 1;
            let slot = (fp % RECENT_SLOTS as u64) as usize;
            match ev.tag {
                Some(tag) if self.recent[slot] != (fp, tag) => {
                    match self.sink.add(ev.peer, &flow, tag) {
                        Ok(()) => {
                            self.recent[slot] = (fp, tag);
                            self.stats.added += 1;
                        }
                        Err(_) => self.stats.failed += 1,
                    }
                }
                Some(_) => {}
                None => {
                    if self.recent[slot].0 == fp {
                        self.recent[slot] = (0, 0);
                    }
                    if let Ok(true) = self.sink.remove(ev.peer, &flow) {
                        self.stats.removed += 1;
                    }
                }
            }
        }
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }
}

/// Where the send side's fast path writes its peer entries (`fwd_peers`).
pub trait FastPathPeerSink: Send {
    /// Writes entry `index`.
    fn set_peer(&mut self, index: u32, peer: &FastPathPeer) -> Result<(), dpr_xdp::Error>;
}

impl FastPathPeerSink for FastPathMaps {
    fn set_peer(&mut self, index: u32, peer: &FastPathPeer) -> Result<(), dpr_xdp::Error> {
        FastPathMaps::set_peer(self, index, peer)
    }
}

impl<B: BpfSys> FastPathPeerSink for RouterProgram<B> {
    fn set_peer(&mut self, index: u32, peer: &FastPathPeer) -> Result<(), dpr_xdp::Error> {
        self.set_fast_path_peer(index, peer)
    }
}

/// Where a worker writes the flows of the send side's fast path
/// (`fwd_flows_v4`) and reads their packet counts.
pub trait FastPathFlowSink {
    /// Writes (or replaces) an entry; its packet count starts at 0.
    fn add(&mut self, flow: &KeyedFlow, route: &FastPathRoute) -> Result<(), dpr_xdp::Error>;
    /// Removes an entry; `Ok(false)` if it was not there.
    fn remove(&mut self, flow: &KeyedFlow) -> Result<bool, dpr_xdp::Error>;
    /// The entry's packet count; `None` without an entry.
    fn packets(&mut self, flow: &KeyedFlow) -> Result<Option<u64>, dpr_xdp::Error>;
}

impl FastPathFlowSink for FastPathMaps {
    fn add(&mut self, flow: &KeyedFlow, route: &FastPathRoute) -> Result<(), dpr_xdp::Error> {
        self.add_flow(flow, route)
    }
    fn remove(&mut self, flow: &KeyedFlow) -> Result<bool, dpr_xdp::Error> {
        self.remove_flow(flow)
    }
    fn packets(&mut self, flow: &KeyedFlow) -> Result<Option<u64>, dpr_xdp::Error> {
        self.flow_packets(flow)
    }
}

impl<B: BpfSys> FastPathFlowSink for RouterProgram<B> {
    fn add(&mut self, flow: &KeyedFlow, route: &FastPathRoute) -> Result<(), dpr_xdp::Error> {
        self.add_fast_path_flow(flow, route)
    }
    fn remove(&mut self, flow: &KeyedFlow) -> Result<bool, dpr_xdp::Error> {
        self.remove_fast_path_flow(flow)
    }
    fn packets(&mut self, flow: &KeyedFlow) -> Result<Option<u64>, dpr_xdp::Error> {
        self.fast_path_flow_packets(flow)
    }
}

/// What a frame the engine forwarded to a peer tells the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardNote {
    /// The client's flow (client to service).
    pub flow: KeyedFlow,
    /// The outer headers, as the peer entry holds them (generation 0).
    pub peer: FastPathPeer,
    /// The tunnel: GRE with the flow's tag, or IP-in-IP.
    pub encap: FastPathEncap,
    /// FIN or RST: the flow leaves the fast path. Otherwise it enters it
    /// (a SYN the engine routed, or a packet of a flow the fast path gave
    /// back: a bumped generation, an LRU eviction).
    pub ends: bool,
    /// A SYN: it does not enter (the program deleted its flow's entry as
    /// it passed it to the engine); the flow enters with its next
    /// forwarded packet, the handshake's ACK. A SYN flood therefore never
    /// reaches the fast path's tables.
    pub syn: bool,
}

/// Reads a frame the engine forwarded (Ethernet, outer IPv4 without
/// options, not a fragment, GRE in the keyed tunnel's one form or plain
/// IP-in-IP, inner IPv4 TCP not a fragment). `None` for anything else
/// (IPv6, ICMP errors, truncated): those stay with the engine.
pub fn forward_note(frame: &[u8]) -> Option<ForwardNote> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    parse_forwarded(frame)
}

/// Reads a forwarded frame from its Ethernet header on (the MACs of a
/// packet that has none, see [`FastPathWriter::note_other_path`], are
/// zeros).
fn parse_forwarded(frame: &[u8]) -> Option<ForwardNote> {
    let b = |i: usize| frame.get(i).copied();
    let w = |i: usize| -> Option<[u8; 4]> { frame.get(i..i + 4)?.try_into().ok() };
    let mac = |i: usize| -> Option<[u8; 6]> { frame.get(i..i + 6)?.try_into().ok() };
    if b(14)? != 0x45 {
        return None;
    }
    let frag = |i: usize| Some(u16::from_be_bytes([b(i)?, b(i + 1)?]) & 0x3fff);
    if frag(14 + 6)? != 0 {
        return None;
    }
    let (encap, inner) = match b(14 + 9)? {
        4 => (FastPathEncap::IpIp, 34),
        47 => {
            let g = frame.get(34..46)?;
            if g[..4] != [0x30, 0, 0x08, 0] || g[8..10] != [0, 0] {
                return None;
            }
            let tag = u32::from_be_bytes(w(38)?);
            let key_id = u16::from_be_bytes([g[10], g[11]]);
            (FastPathEncap::Gre { tag, key_id }, 46)
        }
        _ => return None,
    };
    let vihl = b(inner)?;
    if vihl >> 4 != 4 || vihl & 0x0f < 5 || b(inner + 9)? != 6 || frag(inner + 6)? != 0 {
        return None;
    }
    let tcp = inner + usize::from(vihl & 0x0f) * 4;
    let flags = b(tcp + 13)?;
    let port = |i: usize| Some(u16::from_be_bytes([b(i)?, b(i + 1)?]));
    let flow = KeyedFlow {
        client: SocketAddr::new(Ipv4Addr::from(w(inner + 12)?).into(), port(tcp)?),
        service: SocketAddr::new(Ipv4Addr::from(w(inner + 16)?).into(), port(tcp + 2)?),
    };
    Some(ForwardNote {
        flow,
        peer: FastPathPeer {
            dst_mac: mac(0)?,
            src_mac: mac(6)?,
            ttl: b(14 + 8)?,
            src: Ipv4Addr::from(w(14 + 12)?),
            dst: Ipv4Addr::from(w(14 + 16)?),
            generation: 0,
        },
        encap,
        ends: flags & 0x05 != 0,
        syn: flags & 0x02 != 0,
    })
}

/// The send side's fast path's peers: which index of `fwd_peers` each has,
/// its generation, whether it takes flows, and the entry written for it.
///
/// The control thread owns liveness ([`Self::sync`]: a peer the engine
/// holds dead, or that left the configuration, gets a new generation at
/// once, so the program stops forwarding its flows and gives their packets
/// to the engine; [`Self::bump_all`] on a reload, whose tunnel keys may
/// have changed). The workers ask for a peer's index and generation when
/// they write a flow ([`Self::route_for`]), with the outer headers of the
/// frame the engine forwarded; the entry is (re)written when those differ
/// from what it holds (the first flow, a new next-hop MAC). One mutex,
/// taken after a batch and once per control tick, never per packet.
#[derive(Debug)]
pub struct FastPathPeers<P: FastPathPeerSink = FastPathMaps> {
    state: Mutex<PeersState<P>>,
}

#[derive(Debug)]
struct PeersState<P> {
    sink: P,
    slots: BTreeMap<Ipv4Addr, PeerSlot>,
    max: u32,
    /// Generations bumped (peers dead or gone, reloads).
    bumps: u64,
}

#[derive(Debug, Clone, Copy)]
struct PeerSlot {
    index: u32,
    generation: u32,
    alive: bool,
    written: Option<FastPathPeer>,
}

impl<P: FastPathPeerSink> PeersState<P> {
    fn bump(&mut self, addr: Ipv4Addr) {
        let Some(slot) = self.slots.get_mut(&addr) else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1).max(1);
        self.bumps += 1;
        if let Some(mut p) = slot.written {
            p.generation = slot.generation;
            match self.sink.set_peer(slot.index, &p) {
                Ok(()) => slot.written = Some(p),
                Err(e) => {
                    // The old entry stays with the old generation: clear
                    // what we believe written, so the next flow rewrites it;
                    // meanwhile its flows would still be forwarded: say so.
                    tracing::warn!(peer = %addr, error = %e, "fast path: bumping a peer's generation failed");
                    slot.written = None;
                }
            }
        }
    }
}

impl<P: FastPathPeerSink> FastPathPeers<P> {
    /// Peer entries written through `sink`, at most `max` peers (the
    /// array's size).
    pub fn with_sink(sink: P, max: u32) -> Self {
        Self {
            state: Mutex::new(PeersState {
                sink,
                slots: BTreeMap::new(),
                max,
                bumps: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PeersState<P>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The peers and whether each takes flows (`false`: the engine holds
    /// it dead, or it left): a peer that stops taking them, or that is no
    /// longer listed, gets a new generation. IPv6 peers are ignored (the
    /// fast path is IPv4). Call it every control tick; cheap when nothing
    /// changed.
    pub fn sync(&self, peers: &[(IpAddr, bool)]) {
        let mut s = self.lock();
        let listed: BTreeSet<Ipv4Addr> = peers
            .iter()
            .filter_map(|(a, _)| match a {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            })
            .collect();
        let gone: Vec<Ipv4Addr> = s
            .slots
            .iter()
            .filter(|(a, slot)| slot.alive && !listed.contains(a))
            .map(|(a, _)| *a)
            .collect();
        for a in gone {
            s.bump(a);
            if let Some(slot) = s.slots.get_mut(&a) {
                slot.alive = false;
            }
        }
        for (addr, alive) in peers {
            let IpAddr::V4(a) = *addr else { continue };
            let n = u32::try_from(s.slots.len()).unwrap_or(u32::MAX);
            if !s.slots.contains_key(&a) {
                if n >= s.max {
                    continue;
                }
                s.slots.insert(
                    a,
                    PeerSlot {
                        index: n,
                        generation: 1,
                        alive: *alive,
                        written: None,
                    },
                );
                continue;
            }
            let was = s.slots.get(&a).is_some_and(|slot| slot.alive);
            if was && !alive {
                s.bump(a);
            }
            if let Some(slot) = s.slots.get_mut(&a) {
                slot.alive = *alive;
            }
        }
    }

    /// Every peer gets a new generation: all flows go back to the engine,
    /// which forwards them with its current tunnel key and so writes them
    /// again (a reload).
    pub fn bump_all(&self) {
        let mut s = self.lock();
        let all: Vec<Ipv4Addr> = s.slots.keys().copied().collect();
        for a in all {
            s.bump(a);
        }
    }

    /// The index and generation to write a flow to `peer.dst` with, the
    /// peer entry holding `peer`'s outer headers (written if it did not).
    /// `None` when the peer is unknown, does not take flows, or the entry
    /// cannot be written.
    pub fn route_for(&self, peer: &FastPathPeer) -> Option<(u32, u32)> {
        let mut s = self.lock();
        let s = &mut *s;
        let slot = s.slots.get_mut(&peer.dst)?;
        if !slot.alive {
            return None;
        }
        let want = FastPathPeer {
            generation: slot.generation,
            ..*peer
        };
        if slot.written != Some(want) {
            s.sink.set_peer(slot.index, &want).ok()?;
            slot.written = Some(want);
        }
        Some((slot.index, slot.generation))
    }

    /// Generations bumped since the start.
    pub fn bumps(&self) -> u64 {
        self.lock().bumps
    }
}

impl FastPathPeers {
    /// Over the program's maps.
    pub fn new(maps: FastPathMaps) -> Self {
        let max = maps.max_peers();
        Self::with_sink(maps, max)
    }
}

/// What a [`FastPathWriter`] did, since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastPathStats {
    /// Flows written into the program's map.
    pub added: u64,
    /// Flows removed (FIN or RST forwarded, or the engine forgot them).
    pub removed: u64,
    /// Writes the kernel refused, or flows left out (the writer's table full).
    pub failed: u64,
    /// Times a flow active in the fast path refreshed the engine's entry.
    pub refreshed: u64,
}

/// How often every flow of a [`FastPathWriter`] is looked at (its packet
/// count read, the engine told); well under the engine's shortest idle
/// timeout (a half-open entry's, 10 s by default).
pub const FAST_PATH_SWEEP: Duration = Duration::from_secs(1);
/// Flows looked at per call of [`FastPathWriter::after_batch`] at most
/// (one map look-up each).
pub const FAST_PATH_SWEEP_BATCH: usize = 256;
/// Frames noted per batch at most (the rest wait for their next packet).
const MAX_NOTES: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Tracked {
    route: FastPathRoute,
    packets: u64,
}

/// A worker's writer of the send side's fast path: it notes the frames its
/// engine forwarded to peers ([`Self::note`], per frame), then after the
/// batch writes the flows that enter the fast path and removes those that
/// end ([`Self::after_batch`]); and it reads, a bounded number per batch,
/// the packet counts the program keeps per flow, so that the engine's entry
/// of a flow active only in the fast path stays alive, and a flow the
/// engine forgot leaves the map.
#[derive(Debug)]
pub struct FastPathWriter<S: FastPathFlowSink, P: FastPathPeerSink = FastPathMaps> {
    sink: S,
    peers: Arc<FastPathPeers<P>>,
    notes: Vec<ForwardNote>,
    flows: HashMap<KeyedFlow, Tracked>,
    max_flows: usize,
    sweep: Vec<KeyedFlow>,
    sweep_due: Option<Instant>,
    /// What it did.
    pub stats: FastPathStats,
}

impl<S: FastPathFlowSink, P: FastPathPeerSink> FastPathWriter<S, P> {
    /// A writer into `sink`, tracking at most `max_flows` flows.
    pub fn new(sink: S, peers: Arc<FastPathPeers<P>>, max_flows: usize) -> Self {
        Self {
            sink,
            peers,
            notes: Vec::new(),
            flows: HashMap::new(),
            max_flows,
            sweep: Vec::new(),
            sweep_due: None,
            stats: FastPathStats::default(),
        }
    }

    /// A frame the engine forwarded, as it leaves (Ethernet header written).
    pub fn note(&mut self, frame: &[u8]) {
        if self.notes.len() < MAX_NOTES {
            if let Some(n) = forward_note(frame) {
                self.notes.push(n);
            }
        }
    }

    /// A packet the engine forwarded that left another way (through the
    /// kernel: the next hop unresolved, or handed over by another queue):
    /// `packet` is the outer IP packet. Its flow leaves the fast path: an
    /// entry written for an earlier connection with the same 4-tuple (to
    /// another peer, or with another tag) must not take this one's packets.
    pub fn note_other_path(&mut self, packet: &[u8]) {
        if self.notes.len() >= MAX_NOTES || self.flows.is_empty() {
            return;
        }
        let mut frame = [0u8; 14 + 80];
        let n = packet.len().min(80);
        frame[14..14 + n].copy_from_slice(&packet[..n]);
        if let Some(mut note) = parse_forwarded(&frame[..14 + n]) {
            if self.flows.contains_key(&note.flow) {
                note.ends = true;
                self.notes.push(note);
            }
        }
    }

    /// Flows it has in the map now.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    fn forget(&mut self, flow: &KeyedFlow) {
        if self.flows.remove(flow).is_some() {
            if let Ok(true) = self.sink.remove(flow) {
                self.stats.removed += 1;
            }
        }
    }

    /// After a batch: applies the notes, then looks at up to
    /// [`FAST_PATH_SWEEP_BATCH`] flows (every flow once per
    /// [`FAST_PATH_SWEEP`]): `seen(flow, active)` refreshes the engine's
    /// entry of an active flow (packets forwarded since the last look) and
    /// says whether the engine still routes it.
    pub fn after_batch(&mut self, now: Instant, seen: &mut dyn FnMut(&FlowKey, bool) -> bool) {
        let notes = std::mem::take(&mut self.notes);
        for n in &notes {
            if n.ends {
                self.forget(&n.flow);
                continue;
            }
            if n.syn {
                self.flows.remove(&n.flow);
                continue;
            }
            let Some((peer, generation)) = self.peers.route_for(&n.peer) else {
                continue;
            };
            let route = FastPathRoute {
                peer,
                generation,
                encap: n.encap,
            };
            match self.flows.get(&n.flow) {
                Some(t) if t.route == route => continue,
                None if self.flows.len() >= self.max_flows => {
                    self.stats.failed += 1;
                    continue;
                }
                _ => {}
            }
            match self.sink.add(&n.flow, &route) {
                Ok(()) => {
                    self.flows.insert(n.flow, Tracked { route, packets: 0 });
                    self.stats.added += 1;
                }
                Err(_) => self.stats.failed += 1,
            }
        }
        self.notes = notes;
        self.notes.clear();
        if self.sweep.is_empty() {
            if self.sweep_due.is_some_and(|t| now < t) || self.flows.is_empty() {
                return;
            }
            self.sweep.extend(self.flows.keys().copied());
            self.sweep_due = Some(now + FAST_PATH_SWEEP);
        }
        for _ in 0..FAST_PATH_SWEEP_BATCH {
            let Some(flow) = self.sweep.pop() else { break };
            let Some(t) = self.flows.get_mut(&flow) else {
                continue;
            };
            let packets = match self.sink.packets(&flow) {
                Ok(Some(p)) => p,
                // Pushed out of the LRU map: its packets reach the engine,
                // which forwards them, and the flow is written again.
                Ok(None) => {
                    self.flows.remove(&flow);
                    continue;
                }
                Err(_) => continue,
            };
            let active = packets != t.packets;
            t.packets = packets;
            let key = FlowKey::new(
                IpProtocol::Tcp,
                flow.client.ip(),
                flow.client.port(),
                flow.service.ip(),
                flow.service.port(),
            );
            if active {
                self.stats.refreshed += 1;
            }
            if !seen(&key, active) {
                self.forget(&flow);
            }
        }
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }
}

impl<B: BpfSys> XdpProgram<B> {
    /// Creates the maps, loads the program, then writes the services, the
    /// peers and (with `plan.decap`) the decapsulation pairs, in that
    /// order. Sockets and attachment are [`XdpBackend::start`]'s.
    ///
    /// With `own_mac` (the uplink's), the program passes frames addressed
    /// to other hosts to the kernel (see `dpr_xdp::program`).
    pub fn load(bpf: B, plan: &XdpPlan, own_mac: Option<[u8; 6]>) -> Result<Self, XdpError> {
        let program = RouterProgram::load_with(
            bpf,
            &ProgramConfig {
                max_queues: plan.queues.max(64),
                // Between two instances (a restart, a crash) the program
                // stays attached with no socket: the packets of the
                // connections this host routes are held back (dropped; the
                // client retransmits), never answered by the local stack.
                missing_socket: MissingSocket::Drop,
                fast_path_mtu: plan.fast_path.then_some(plan.tunnel_mtu),
                own_mac,
                ..ProgramConfig::default()
            },
        )
        .map_err(XdpError::Load)?;
        let mut p = Self {
            program,
            service_ports: plan.service_ports.clone(),
            decap: plan.decap,
            peers: BTreeSet::new(),
            tunnel_services: BTreeSet::new(),
        };
        for a in &plan.service_addrs {
            for port in &plan.service_ports {
                let s = SocketAddr::new(*a, *port);
                p.program.add_service(s).map_err(map_err("service", s))?;
            }
        }
        p.set_peers(&plan.peers)?;
        Ok(p)
    }

    /// The (peer, service) pairs to decapsulate in the program: IPv4 ones,
    /// when enabled.
    fn decap_pairs(&self, peers: &[XdpPeer]) -> BTreeSet<(IpAddr, SocketAddr)> {
        if !self.decap {
            return BTreeSet::new();
        }
        let mut out = BTreeSet::new();
        for p in peers {
            for a in &p.service_addrs {
                for port in &self.service_ports {
                    if p.tunnel_addr.is_ipv4() && a.is_ipv4() {
                        out.insert((p.tunnel_addr, SocketAddr::new(*a, *port)));
                    }
                }
            }
        }
        out
    }

    /// Makes the program take IP-in-IP from exactly `peers` (a reload),
    /// and decapsulate itself what they send to their services: first the
    /// peer map (removals, then additions), then the decapsulation pairs
    /// (removals, then additions). On an error, what was written stays
    /// written and the next call completes the change (entries are
    /// idempotent).
    pub fn set_peers(&mut self, peers: &[XdpPeer]) -> Result<(), XdpError> {
        let new: BTreeSet<IpAddr> = peers.iter().map(|p| p.tunnel_addr).collect();
        for p in self.peers.difference(&new) {
            self.program.remove_peer(*p).map_err(map_err("peer", p))?;
        }
        for p in new.difference(&self.peers) {
            self.program.add_peer(*p).map_err(map_err("peer", p))?;
        }
        self.peers = new;
        let new = self.decap_pairs(peers);
        for (p, s) in self.tunnel_services.difference(&new) {
            self.program
                .remove_tunnel_service(*p, *s)
                .map_err(map_err("tunnel service", format!("{p} -> {s}")))?;
        }
        for (p, s) in new.difference(&self.tunnel_services) {
            self.program
                .add_tunnel_service(*p, *s)
                .map_err(map_err("tunnel service", format!("{p} -> {s}")))?;
        }
        self.tunnel_services = new;
        Ok(())
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, dpr_xdp::Error> {
        self.program.counters()
    }

    /// The program and its maps.
    pub fn router_program(&self) -> &RouterProgram<B> {
        &self.program
    }

    /// The program and its maps, mutably (socket slots).
    pub fn router_program_mut(&mut self) -> &mut RouterProgram<B> {
        &mut self.program
    }
}

/// The attached program and the sockets for the workers.
#[derive(Debug)]
pub struct XdpBackend {
    /// The program and its maps (peers are updated on reload).
    pub program: XdpProgram,
    /// How the program is attached: over netlink, so it outlives the
    /// process (a restart or a crash holds the traffic; see
    /// [`XdpBackend::detach`]).
    pub attached: XdpAttachment,
    /// One bound socket per queue, in queue order (taken by the workers).
    pub sockets: Vec<XskSocket>,
    /// Uplink interface index.
    pub ifindex: u32,
    /// Uplink MAC.
    pub mac: [u8; 6],
    /// The send side's fast path's peer entries (shared by the workers,
    /// which write the flows, and the control thread, which bumps a dead or
    /// departed peer's generation); `None` when it is off.
    pub fast_path: Option<Arc<FastPathPeers>>,
}

impl XdpBackend {
    /// Loads and attaches the program and binds `plan.queues` sockets on
    /// the uplink (in the calling thread's namespace; needs root).
    pub fn start(plan: &XdpPlan) -> Result<Self, XdpError> {
        let uplink = &plan.uplink;
        let uplink_err = |what| {
            move |source| XdpError::Uplink {
                uplink: uplink.clone(),
                what,
                source,
            }
        };
        let ifindex = sys::if_index(uplink).map_err(uplink_err("interface index"))?;
        let mac = sys::if_hwaddr(uplink).map_err(uplink_err("MAC address"))?;
        if let Some(n) = rx_queues(uplink) {
            if n > plan.queues {
                tracing::warn!(
                    uplink = %uplink, rx_queues = n, sockets = plan.queues,
                    "the uplink has more receive queues than sockets: \
                     router traffic on the others is dropped"
                );
            }
        }
        let mut program = XdpProgram::load(RealBpf, plan, Some(mac))?;
        let mut sockets = Vec::new();
        for q in 0..plan.queues {
            let s = XskSocket::bind(ifindex, q, &plan.xsk).map_err(|source| XdpError::Socket {
                uplink: uplink.clone(),
                queue: q,
                source,
            })?;
            program
                .program
                .set_socket(q, s.as_fd())
                .map_err(map_err("socket", format!("queue {q}")))?;
            sockets.push(s);
        }
        let attached = attach(ifindex, program.program.prog_fd().as_raw_fd(), plan.mode).map_err(
            |source| XdpError::Attach {
                uplink: uplink.clone(),
                mode: plan.mode,
                source: dpr_xdp::Error::Syscall {
                    op: "RTM_SETLINK IFLA_XDP",
                    source,
                },
            },
        )?;
        let fast_path = if plan.fast_path {
            let maps = program
                .program
                .fast_path_maps()
                .map_err(map_err("fast path", "descriptors"))?;
            Some(Arc::new(FastPathPeers::new(maps)))
        } else {
            None
        };
        Ok(Self {
            program,
            attached,
            sockets,
            ifindex,
            mac,
            fast_path,
        })
    }

    /// The backend's name for status and logs.
    pub fn name(&self) -> String {
        match self.attached.mode {
            XdpMode::Generic => "af-xdp (generic)".into(),
            _ => "af-xdp (native)".into(),
        }
    }

    /// Detaches the program (a full stop; a held stop leaves it).
    pub fn detach(&self) -> io::Result<()> {
        crate::netlink::Netlink::open()?.set_xdp(self.attached.ifindex, -1, self.attached.flags)
    }

    /// Updates the peers in the program's maps (config reload).
    pub fn set_peers(&mut self, peers: &[XdpPeer]) -> Result<(), XdpError> {
        self.program.set_peers(peers)
    }
}

/// Receive queues of `dev` (from sysfs), if readable.
/// An XDP program attached over netlink (`IFLA_XDP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpAttachment {
    /// The interface.
    pub ifindex: u32,
    /// `XDP_FLAGS_DRV_MODE` or `XDP_FLAGS_SKB_MODE`.
    pub flags: u32,
    /// The mode those flags mean.
    pub mode: XdpMode,
}

const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;

/// Attaches `prog_fd` to `ifindex` over netlink, replacing the program
/// attached in the same mode (a previous instance's: no moment without
/// one). `Auto` tries native, then generic. A program of a previous
/// instance in the other mode blocks the attachment (`EEXIST`: the kernel
/// allows one mode at a time); it is detached, and the attachment retried.
fn attach(ifindex: u32, prog_fd: i32, mode: XdpMode) -> io::Result<XdpAttachment> {
    let mut nl = crate::netlink::Netlink::open()?;
    let modes: &[XdpMode] = match mode {
        XdpMode::Auto => &[XdpMode::Native, XdpMode::Generic],
        XdpMode::Native => &[XdpMode::Native],
        XdpMode::Generic => &[XdpMode::Generic],
    };
    let mut last = io::Error::other("no mode to try");
    for &m in modes {
        let (flags, other) = if m == XdpMode::Native {
            (XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE)
        } else {
            (XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE)
        };
        let ok = XdpAttachment {
            ifindex,
            flags,
            mode: m,
        };
        match nl.set_xdp(ifindex, prog_fd, flags) {
            Ok(()) => return Ok(ok),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                tracing::info!(
                    ifindex,
                    "an XDP program is attached in the other mode: replacing it"
                );
                if nl.set_xdp(ifindex, -1, other).is_ok()
                    && nl.set_xdp(ifindex, prog_fd, flags).is_ok()
                {
                    return Ok(ok);
                }
                last = e;
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn rx_queues(dev: &str) -> Option<u32> {
    let d = std::fs::read_dir(format!("/sys/class/net/{dev}/queues")).ok()?;
    let n = d
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpr_xdp::FakeBpf;
    use dpr_xdp::bpf::BpfCall;

    const PRESENT: [u8; 4] = 1u32.to_ne_bytes();

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peer(tunnel: &str, services: &[&str]) -> XdpPeer {
        XdpPeer {
            tunnel_addr: ip(tunnel),
            service_addrs: services.iter().map(|s| ip(s)).collect(),
        }
    }

    fn plan(peers: Vec<XdpPeer>) -> XdpPlan {
        XdpPlan {
            uplink: "eth0".into(),
            queues: 1,
            service_addrs: vec![ip("198.18.0.1")],
            service_ports: vec![80],
            peers,
            mode: XdpMode::Auto,
            decap: true,
            xsk: XskConfig::default(),
            fast_path: true,
            tunnel_mtu: 1500,
        }
    }

    fn upd(map: &str, key: Vec<u8>) -> BpfCall {
        BpfCall::Update {
            map: map.into(),
            key,
            value: PRESENT.to_vec(),
        }
    }
    fn del(map: &str, key: Vec<u8>) -> BpfCall {
        BpfCall::Delete {
            map: map.into(),
            key,
        }
    }
    fn ip_key(s: &str) -> Vec<u8> {
        match ip(s) {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }
    fn svc_key(a: &str, port: u16) -> Vec<u8> {
        let mut k = ip_key(a);
        k.extend_from_slice(&port.to_be_bytes());
        k.extend_from_slice(&[0, 0]);
        k
    }
    fn tsvc_key(t: &str, a: &str, port: u16) -> Vec<u8> {
        let mut k = ip_key(t);
        k.extend(svc_key(a, port));
        k
    }

    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x12];
    const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x11];

    /// The frame the engine and the worker send for a client packet with
    /// `flags` towards peer 198.18.0.12: GRE with `tag`, or IP-in-IP.
    fn forwarded(port: u16, flags: dpr_packet::tcp::TcpFlags, tag: Option<u32>) -> Vec<u8> {
        use dpr_packet::ipip::{self, EncapParams};
        // IPv4 (DF) + a 20-byte TCP header; checksums play no part here.
        let mut inner = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        inner.extend_from_slice(&[198, 18, 100, 1, 198, 18, 0, 2]);
        inner.extend_from_slice(&port.to_be_bytes());
        inner.extend_from_slice(&80u16.to_be_bytes());
        inner.extend_from_slice(&[
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0x50,
            flags.0 as u8,
            0xff,
            0xff,
            0,
            0,
            0,
            0,
        ]);
        let mut buf = vec![0u8; 64 + inner.len()];
        buf[64..].copy_from_slice(&inner);
        let mut params = EncapParams::new(ip("198.18.0.11"), ip("198.18.0.12"));
        params.ttl = 63;
        let start = match tag {
            Some(tag) => ipip::encapsulate_gre(
                &mut buf,
                64,
                &params,
                dpr_packet::gre::GreFields { tag, key_id: 3 },
            )
            .unwrap(),
            None => ipip::encapsulate(&mut buf, 64, &params).unwrap(),
        };
        let mut f = PEER_MAC.to_vec();
        f.extend_from_slice(&OUR_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&buf[start..]);
        f
    }

    fn kflow(port: u16) -> KeyedFlow {
        KeyedFlow {
            client: SocketAddr::new(ip("198.18.100.1"), port),
            service: SocketAddr::new(ip("198.18.0.2"), 80),
        }
    }

    #[test]
    fn forward_notes_read_the_frames_the_engine_sends() {
        use dpr_packet::tcp::TcpFlags;
        let n = forward_note(&forwarded(40000, TcpFlags::SYN, Some(0xabcd))).unwrap();
        assert_eq!(n.flow, kflow(40000));
        assert_eq!(
            n.encap,
            FastPathEncap::Gre {
                tag: 0xabcd,
                key_id: 3
            }
        );
        assert_eq!(
            n.peer,
            FastPathPeer {
                dst_mac: PEER_MAC,
                src_mac: OUR_MAC,
                ttl: 63,
                src: "198.18.0.11".parse().unwrap(),
                dst: "198.18.0.12".parse().unwrap(),
                generation: 0,
            }
        );
        assert!(!n.ends);
        let n = forward_note(&forwarded(40000, TcpFlags::ACK, None)).unwrap();
        assert_eq!((n.encap, n.ends), (FastPathEncap::IpIp, false));
        for f in [TcpFlags::FIN | TcpFlags::ACK, TcpFlags::RST] {
            assert!(
                forward_note(&forwarded(1, f, Some(1))).unwrap().ends,
                "{f:?}"
            );
        }
        // Truncated anywhere, or not the one form: no note.
        let full = forwarded(40000, TcpFlags::ACK, Some(1));
        for n in 0..full.len() - 20 {
            assert_eq!(forward_note(&full[..n]), None, "cut at {n}");
        }
        let mut other = full.clone();
        other[34] = 0xb0; // GRE with a checksum bit
        assert_eq!(forward_note(&other), None);
        let mut v6 = full;
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(forward_note(&v6), None);
    }

    type FakeProgram = RouterProgram<FakeBpf>;

    /// Two programs over one fake `bpf(2)`: the peers' and a worker's
    /// views of the same maps.
    fn fast_path_pair(
        bpf: &FakeBpf,
    ) -> (
        Arc<FastPathPeers<FakeProgram>>,
        FastPathWriter<FakeProgram, FakeProgram>,
    ) {
        let a = XdpProgram::load(bpf.clone(), &plan(vec![]), None).unwrap();
        let b = XdpProgram::load(bpf.clone(), &plan(vec![]), None).unwrap();
        let peers = Arc::new(FastPathPeers::with_sink(a.program, 4));
        let w = FastPathWriter::new(b.program, peers.clone(), 2);
        (peers, w)
    }

    fn fflow_key(port: u16) -> Vec<u8> {
        let mut k = ip_key("198.18.100.1");
        k.extend(ip_key("198.18.0.2"));
        k.extend_from_slice(&port.to_be_bytes());
        k.extend_from_slice(&80u16.to_be_bytes());
        k
    }

    fn generation_of(bpf: &FakeBpf, index: u32) -> Option<u32> {
        let v = bpf
            .entries("dpr_fpeer")
            .get(index.to_ne_bytes().as_slice())?
            .clone();
        Some(u32::from_ne_bytes(v[24..28].try_into().unwrap()))
    }

    #[test]
    fn flows_enter_on_a_forward_leave_on_fin_and_keep_the_engine_entry_alive() {
        use dpr_packet::tcp::TcpFlags;
        let bpf = FakeBpf::new();
        let (peers, mut w) = fast_path_pair(&bpf);
        let t0 = Instant::now();
        let mut never = |_: &FlowKey, _: bool| -> bool { panic!("no sweep expected") };
        // Unknown peer (not synced yet): nothing is written.
        w.note(&forwarded(1, TcpFlags::ACK, Some(9)));
        w.after_batch(t0, &mut |_, _| true);
        assert!(bpf.entries("dpr_fflow4").is_empty());
        peers.sync(&[(ip("198.18.0.12"), true), (ip("2001:db8::12"), true)]);
        // A SYN alone is not written (a SYN flood stays out); the
        // handshake's ACK is, once.
        w.note(&forwarded(1, TcpFlags::SYN, Some(9)));
        w.note(&forwarded(1, TcpFlags::ACK, Some(9)));
        w.note(&forwarded(1, TcpFlags::ACK, Some(9))); // the same route: once
        w.note(&forwarded(7, TcpFlags::SYN, Some(9)));
        w.note(&forwarded(2, TcpFlags::ACK, None));
        let mut seen = Vec::new();
        w.after_batch(t0, &mut |f, active| {
            seen.push((f.src_port, active));
            true
        });
        let e = bpf.entries("dpr_fflow4");
        assert_eq!(e.len(), 2);
        let v = &e[&fflow_key(1)];
        assert_eq!(u32::from_ne_bytes(v[0..4].try_into().unwrap()), 0, "peer 0");
        assert_eq!(
            u32::from_ne_bytes(v[4..8].try_into().unwrap()),
            1,
            "generation 1"
        );
        assert_eq!(v[8..12], 9u32.to_be_bytes());
        assert_eq!(v[16], 47);
        assert_eq!(e[&fflow_key(2)][16], 4, "IP-in-IP");
        assert_eq!(generation_of(&bpf, 0), Some(1));
        let p = &bpf.entries("dpr_fpeer")[&0u32.to_ne_bytes().to_vec()];
        assert_eq!(
            (&p[..6], &p[6..12], p[14]),
            (&PEER_MAC[..], &OUR_MAC[..], 63)
        );
        assert_eq!(w.stats.added, 2);
        // The first sweep: nothing forwarded yet, both looked up, not active.
        seen.sort_unstable();
        assert_eq!(seen, vec![(1, false), (2, false)]);
        // Within the sweep period: no look-ups.
        w.after_batch(t0 + Duration::from_millis(10), &mut never);
        // The program forwarded 5 packets of flow 1: the next sweep
        // refreshes its engine entry; flow 2 is quiet and the engine has
        // forgotten it: it leaves the map.
        bpf.with(|s| {
            let m = s.maps.get_mut("dpr_fflow4").unwrap();
            m.get_mut(&fflow_key(1)).unwrap()[24..32].copy_from_slice(&5u64.to_ne_bytes());
        });
        let mut seen = Vec::new();
        w.after_batch(t0 + FAST_PATH_SWEEP, &mut |f, active| {
            seen.push((f.src_port, active));
            f.src_port == 1
        });
        seen.sort_unstable();
        assert_eq!(seen, vec![(1, true), (2, false)]);
        assert_eq!(w.stats.refreshed, 1);
        assert_eq!(
            bpf.entries("dpr_fflow4")
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
            vec![fflow_key(1)]
        );
        // A FIN forwarded: the flow leaves the map.
        w.note(&forwarded(1, TcpFlags::FIN | TcpFlags::ACK, Some(9)));
        w.after_batch(t0 + FAST_PATH_SWEEP, &mut never);
        assert!(bpf.entries("dpr_fflow4").is_empty());
        assert_eq!((w.stats.removed, w.flows()), (2, 0));
        // A new connection with the same 4-tuple whose SYN left through the
        // kernel (next hop unresolved): the old entry goes at once.
        w.note(&forwarded(6, TcpFlags::ACK, Some(1)));
        w.after_batch(t0 + FAST_PATH_SWEEP, &mut |_, _| true);
        assert!(bpf.entries("dpr_fflow4").contains_key(&fflow_key(6)));
        w.note_other_path(&forwarded(6, TcpFlags::SYN, Some(2))[14..]);
        w.after_batch(t0 + FAST_PATH_SWEEP, &mut never);
        assert!(bpf.entries("dpr_fflow4").is_empty());
        assert_eq!((w.stats.removed, w.flows()), (3, 0));
        // The writer's table holds 2 flows: a third is left out, counted.
        for port in [3, 4, 5] {
            w.note(&forwarded(port, TcpFlags::ACK, Some(1)));
        }
        w.after_batch(t0 + FAST_PATH_SWEEP * 3, &mut |_, _| true);
        assert_eq!((w.flows(), w.stats.failed), (2, 1));
    }

    #[test]
    fn a_dead_or_departed_peer_gets_a_new_generation_and_its_flows_are_rewritten_when_back() {
        use dpr_packet::tcp::TcpFlags;
        let bpf = FakeBpf::new();
        let (peers, mut w) = fast_path_pair(&bpf);
        let b = ip("198.18.0.12");
        let c = ip("198.18.0.13");
        peers.sync(&[(b, true), (c, true)]);
        w.note(&forwarded(1, TcpFlags::ACK, Some(9)));
        w.after_batch(Instant::now(), &mut |_, _| true);
        assert_eq!(generation_of(&bpf, 0), Some(1));
        // Unchanged: nothing written.
        let n = bpf.calls().len();
        peers.sync(&[(b, true), (c, true)]);
        assert_eq!(bpf.calls().len(), n);
        // B dead: generation 2 at once; while dead no flow is written.
        peers.sync(&[(b, false), (c, true)]);
        assert_eq!(generation_of(&bpf, 0), Some(2));
        assert_eq!(peers.bumps(), 1);
        w.note(&forwarded(2, TcpFlags::ACK, Some(9)));
        w.after_batch(Instant::now(), &mut |_, _| true);
        assert!(!bpf.entries("dpr_fflow4").contains_key(&fflow_key(2)));
        // Alive again: the flow the engine forwards again is rewritten
        // with the new generation.
        peers.sync(&[(b, true), (c, true)]);
        assert_eq!(
            generation_of(&bpf, 0),
            Some(2),
            "no bump when it comes back"
        );
        w.note(&forwarded(1, TcpFlags::ACK, Some(9)));
        w.after_batch(Instant::now(), &mut |_, _| true);
        let v = &bpf.entries("dpr_fflow4")[&fflow_key(1)];
        assert_eq!(u32::from_ne_bytes(v[4..8].try_into().unwrap()), 2);
        // B leaves the configuration: bumped; a reload bumps everyone
        // written (C has no entry yet: only its generation moves).
        peers.sync(&[(c, true)]);
        assert_eq!(generation_of(&bpf, 0), Some(3));
        peers.bump_all();
        assert_eq!(generation_of(&bpf, 0), Some(4));
        assert_eq!(generation_of(&bpf, 1), None);
        assert_eq!(peers.bumps(), 4);
    }

    #[test]
    fn keyed_flows_are_written_once_per_tag_and_removed_when_they_end() {
        let bpf = FakeBpf::new();
        let prog = XdpProgram::load(bpf.clone(), &plan(vec![]), None).unwrap();
        let mut prog = KeyedFlowWriter::new(prog.program);
        let flow = dpr_packet::FlowKey::new(
            IpProtocol::Tcp,
            ip("198.18.100.1"),
            40000,
            ip("198.18.0.2"),
            80,
        );
        let ev = |tag| KeyedFlowEvent {
            peer: ip("198.18.0.12"),
            flow,
            tag,
        };
        let mut key = ip_key("198.18.0.12");
        key.extend(ip_key("198.18.100.1"));
        key.extend(ip_key("198.18.0.2"));
        key.extend_from_slice(&40000u16.to_be_bytes());
        key.extend_from_slice(&80u16.to_be_bytes());
        prog.apply(&[ev(Some(7)), ev(Some(7))]);
        let entries = bpf.entries("dpr_kflow4");
        assert_eq!(entries.get(&key), Some(&7u32.to_be_bytes().to_vec()));
        // A new tag (a key roll) replaces it; repeats are not written.
        prog.apply(&[ev(Some(9)), ev(Some(9))]);
        assert_eq!(
            bpf.entries("dpr_kflow4").get(&key),
            Some(&9u32.to_be_bytes().to_vec())
        );
        prog.apply(&[ev(None)]);
        assert!(bpf.entries("dpr_kflow4").is_empty());
        // IPv6 flows stay on the engine's path.
        let v6 = KeyedFlowEvent {
            peer: ip("2001:db8::12"),
            flow: dpr_packet::FlowKey::new(
                IpProtocol::Tcp,
                ip("2001:db8::100"),
                1,
                ip("2001:db8::2"),
                80,
            ),
            tag: Some(1),
        };
        prog.apply(&[v6]);
        assert_eq!(
            prog.stats,
            KeyedFlowStats {
                added: 2,
                removed: 1,
                failed: 0
            }
        );
    }

    #[test]
    fn load_creates_the_maps_then_writes_services_peers_and_pairs_in_order() {
        let bpf = FakeBpf::new();
        let p = plan(vec![
            peer("198.18.0.12", &["198.18.0.2"]),
            peer("2001:db8::12", &["2001:db8::2"]),
        ]);
        let _prog = XdpProgram::load(bpf.clone(), &p, None).unwrap();
        let words = match &bpf.calls()[10] {
            BpfCall::ProgLoad { words, .. } => *words,
            other => panic!("{other:?}"),
        };
        let mut want: Vec<BpfCall> = [
            "dpr_svc4",
            "dpr_svc6",
            "dpr_peer4",
            "dpr_peer6",
            "dpr_tsvc4",
            "dpr_kflow4",
            "dpr_fflow4",
            "dpr_fpeer",
            "dpr_xsks",
            "dpr_counters",
        ]
        .iter()
        .map(|n| BpfCall::MapCreate((*n).into()))
        .collect();
        want.extend([
            BpfCall::ProgLoad {
                name: "dpr_router".into(),
                words,
                log: false,
            },
            // The service, after a look-up, and its address marker (port 0).
            BpfCall::Lookup {
                map: "dpr_svc4".into(),
                key: svc_key("198.18.0.1", 80),
            },
            upd("dpr_svc4", svc_key("198.18.0.1", 80)),
            upd("dpr_svc4", svc_key("198.18.0.1", 0)),
            // Peers in address order; then the IPv4 pair only.
            upd("dpr_peer4", ip_key("198.18.0.12")),
            upd("dpr_peer6", ip_key("2001:db8::12")),
            upd("dpr_tsvc4", tsvc_key("198.18.0.12", "198.18.0.2", 80)),
        ]);
        assert_eq!(bpf.calls(), want);
    }

    #[test]
    fn set_peers_removes_what_left_then_adds_what_came() {
        let bpf = FakeBpf::new();
        let mut prog = XdpProgram::load(
            bpf.clone(),
            &plan(vec![
                peer("198.18.0.12", &["198.18.0.2"]),
                peer("198.18.0.13", &["198.18.0.3"]),
            ]),
            None,
        )
        .unwrap();
        let before = bpf.calls().len();
        // .12 leaves, .14 comes, .13 gets a second service address.
        prog.set_peers(&[
            peer("198.18.0.13", &["198.18.0.3", "198.18.0.33"]),
            peer("198.18.0.14", &["198.18.0.4"]),
        ])
        .unwrap();
        assert_eq!(
            bpf.calls()[before..],
            [
                del("dpr_peer4", ip_key("198.18.0.12")),
                upd("dpr_peer4", ip_key("198.18.0.14")),
                del("dpr_tsvc4", tsvc_key("198.18.0.12", "198.18.0.2", 80)),
                upd("dpr_tsvc4", tsvc_key("198.18.0.13", "198.18.0.33", 80)),
                upd("dpr_tsvc4", tsvc_key("198.18.0.14", "198.18.0.4", 80)),
            ]
        );
        // The same peers again: nothing to do.
        let n = bpf.calls().len();
        prog.set_peers(&[
            peer("198.18.0.14", &["198.18.0.4"]),
            peer("198.18.0.13", &["198.18.0.3", "198.18.0.33"]),
        ])
        .unwrap();
        assert_eq!(bpf.calls().len(), n);
        // What the maps hold is what a fresh load with these peers writes.
        let fresh = FakeBpf::new();
        let _p = XdpProgram::load(
            fresh.clone(),
            &plan(vec![
                peer("198.18.0.13", &["198.18.0.3", "198.18.0.33"]),
                peer("198.18.0.14", &["198.18.0.4"]),
            ]),
            None,
        )
        .unwrap();
        for m in ["dpr_svc4", "dpr_peer4", "dpr_peer6", "dpr_tsvc4"] {
            assert_eq!(bpf.entries(m), fresh.entries(m), "{m}");
        }
    }

    #[test]
    fn without_decapsulation_no_pair_is_written() {
        let bpf = FakeBpf::new();
        let mut p = plan(vec![peer("198.18.0.12", &["198.18.0.2"])]);
        p.decap = false;
        let mut prog = XdpProgram::load(bpf.clone(), &p, None).unwrap();
        prog.set_peers(&[peer("198.18.0.13", &["198.18.0.3"])])
            .unwrap();
        assert!(bpf.entries("dpr_tsvc4").is_empty());
        assert_eq!(bpf.entries("dpr_peer4").len(), 1);
    }

    #[test]
    fn a_failed_update_names_the_entry_and_the_next_call_completes_it() {
        let bpf = FakeBpf::new();
        let mut prog = XdpProgram::load(
            bpf.clone(),
            &plan(vec![peer("198.18.0.12", &["198.18.0.2"])]),
            None,
        )
        .unwrap();
        // The update of the new peer (after the delete of the old) fails.
        let at = bpf.calls().len() + 1;
        bpf.with(|s| s.fail_at = Some((at, libc::ENOMEM)));
        let next = [peer("198.18.0.13", &["198.18.0.3"])];
        let e = prog.set_peers(&next).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("peer map, 198.18.0.13") && text.contains("BPF_MAP_UPDATE_ELEM"),
            "{text}"
        );
        prog.set_peers(&next).unwrap();
        assert_eq!(
            bpf.entries("dpr_peer4").keys().cloned().collect::<Vec<_>>(),
            vec![ip_key("198.18.0.13")]
        );
        assert_eq!(
            bpf.entries("dpr_tsvc4").keys().cloned().collect::<Vec<_>>(),
            vec![tsvc_key("198.18.0.13", "198.18.0.3", 80)]
        );
    }

    #[test]
    fn a_failed_load_is_a_load_error() {
        let bpf = FakeBpf::new();
        // Every program load is refused (the second carries the log).
        bpf.with(|s| s.refuse.push(|c| matches!(c, BpfCall::ProgLoad { .. })));
        let e = XdpProgram::load(bpf.clone(), &plan(vec![]), None).unwrap_err();
        assert!(
            matches!(e, XdpError::Load(dpr_xdp::Error::Verifier { .. })),
            "{e}"
        );
        let loads: Vec<bool> = bpf
            .calls()
            .iter()
            .filter_map(|c| match c {
                BpfCall::ProgLoad { log, .. } => Some(*log),
                _ => None,
            })
            .collect();
        assert_eq!(loads, vec![false, true], "retried with the verifier log");
    }

    #[test]
    fn auto_mode_falls_back_to_generic_and_dropping_the_link_detaches() {
        let bpf = FakeBpf::new();
        let prog = XdpProgram::load(bpf.clone(), &plan(vec![]), None).unwrap();
        // Native (XDP_FLAGS_DRV_MODE, 4) refused, generic (2) accepted.
        bpf.with(|s| {
            s.refuse
                .push(|c| matches!(c, BpfCall::LinkCreate { flags: 4, .. }))
        });
        let n = bpf.calls().len();
        let link = prog.router_program().attach(7, XdpMode::Auto).unwrap();
        assert_eq!(link.mode(), XdpMode::Generic);
        drop(link);
        assert_eq!(
            bpf.calls()[n..],
            [
                BpfCall::LinkCreate {
                    ifindex: 7,
                    flags: 4
                },
                BpfCall::LinkCreate {
                    ifindex: 7,
                    flags: 2
                },
                BpfCall::Detach { ifindex: 7 },
            ]
        );
    }
}
