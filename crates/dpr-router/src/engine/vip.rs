//! VIP mode's ask-on-miss (`docs/decisions.md`, "Connection consistency
//! behind ECMP").
//!
//! Every host holds the same service addresses and the upstream routers
//! spread flows over them with ECMP. When the set of next hops changes, or
//! a host restarts, a packet of an established connection reaches a host
//! that has never seen it. The engine then holds the packet (a bounded
//! queue), and the cluster protocol asks the live peers "who serves these
//! flows?" ([`Engine::take_flow_queries`]). The host whose served table or
//! locally served routes hold the flow answers "I serve it"
//! ([`Engine::serves_flows`]); the asker installs the route and releases
//! the held packets to it ([`Engine::claim_flow`], [`Engine::take_released`]).
//! When nobody claims before the deadline the packets go to the local
//! stack, which answers RST if it lacks the connection: its owner is gone.
//!
//! ```text
//!  ECMP ─► B: ACK of F, unknown ─► held ─► query(F) ─► every live peer
//!                                        ◄─ claim(F) ◄─ C (serves F)
//!          B: route F → C, release held ─► C          (timeout: local stack)
//! ```
//!
//! Pure like the rest of the engine: time comes in as `now`, packets and
//! messages go out through buffers the caller drains.

use super::Engine;
use crate::buffer::PacketBuf;
use crate::verdict::{DropReason, Verdict};
use dpr_packet::tcp::TcpFlags;
use dpr_packet::{FlowKey, IpProtocol, PacketMeta, parse_ip};
use dpr_table::{ConnEntry, ConnState, Direction, InsertOutcome, PeerId, Route, Timestamp};
use std::collections::HashMap;
use std::ops::Range;

/// Room in front of a released packet for the tunnel's outer header
/// (IPv6 40 bytes and GRE 8, rounded up).
pub const RELEASE_HEADROOM: usize = 64;

/// A held packet of one flow and when its flow was last asked about.
#[derive(Debug)]
struct HeldFlow {
    packets: Vec<Vec<u8>>,
    since: Timestamp,
    asked_at: Timestamp,
}

/// The held flows, the queries not yet taken and the packets released.
#[derive(Debug, Default)]
pub(super) struct MissState {
    flows: HashMap<FlowKey, HeldFlow>,
    packets: usize,
    queries: Vec<FlowKey>,
    released: Vec<ReleasedPacket>,
    /// Flows nobody claimed, and when: their later packets go to the local
    /// stack without asking again (at most `max_held_flows`, each kept
    /// [`GAVE_UP_KEEP`]). Not a route: the routing table is not filled
    /// by stray ACKs, and this host never claims them.
    gave_up: HashMap<FlowKey, Timestamp>,
}

/// How far past a served connection's SYN plus the bytes seen a packet's
/// sequence number may lie and still be that connection's. Linux clients
/// draw the ISN of a 4-tuple from a clock (RFC 6528, 64-ns ticks): a
/// later connection on it starts ~16 MB per second of reuse further on,
/// so reuse after ~4 s is told apart; a random ISN lands within the
/// slack 1.6 % of the time. Bytes the engine did not see (the XDP
/// program's paths, a flow that moved away and back) can make a
/// connection look later than it is: it is then asked about, and when
/// nobody claims it the local stack gets it at the deadline, as before.
const SEQ_SLACK: u64 = 1 << 26;

/// Whether `seq` (a client's packet's sequence number) can belong to the
/// connection `e` records: no SYN recorded, or within its span.
fn in_sequence(e: &ConnEntry, seq: Option<u32>) -> bool {
    match (e.isn, seq) {
        (Some(isn), Some(s)) => u64::from(s.wrapping_sub(isn)) <= e.bytes.saturating_add(SEQ_SLACK),
        _ => true,
    }
}

/// How long a flow nobody claimed goes straight to the local stack.
const GAVE_UP_KEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// A held packet the engine has routed, to send as its verdict says:
/// `Forward` to the claiming peer (encapsulated), or `Deliver` to the
/// local stack (nobody claimed it). The bytes to act on are
/// `buf[range]`, with headroom in front of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleasedPacket {
    /// The buffer.
    pub buf: Vec<u8>,
    /// The packet's bytes in `buf`.
    pub range: Range<usize>,
    /// What to do with them (never `Held`).
    pub verdict: Verdict,
}

impl ReleasedPacket {
    /// The packet to act on.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Engine {
    /// True when `flow` goes to one of the VIPs (VIP mode).
    pub(super) fn is_vip_flow(&self, flow: &FlowKey) -> bool {
        self.cfg
            .vip
            .as_ref()
            .is_some_and(|v| v.addrs.contains(&flow.dst))
    }

    /// A non-SYN packet of a VIP flow routed to `p`, which is dead or
    /// gone: the route is dropped (and the flow remembered for the cut
    /// notice, as a reset would be) and the packet is a miss. Behind ECMP
    /// the route may be an older connection's on the same 4-tuple, whose
    /// end went through another host, while a live peer serves this one:
    /// it claims the flow. A flow the dead peer served is claimed by
    /// nobody and reaches the local stack at the deadline, which resets
    /// it: the client learns 50 ms later than from an immediate reset.
    pub(super) fn dead_route_miss(
        &mut self,
        now: Timestamp,
        p: PeerId,
        pkt: &PacketBuf<'_>,
        meta: &PacketMeta,
    ) -> Verdict {
        self.counters.peer(p).dead_peer_packets += 1;
        self.counters.c.vip.dead_routes_asked += 1;
        if self.routes.remove(&meta.flow).is_some() && meta.flow.protocol == IpProtocol::Tcp {
            self.remember_cut(p, meta.flow);
        }
        self.miss(now, pkt, meta)
    }

    /// A non-SYN packet of a flow neither the routing table nor the served
    /// table holds, in VIP mode: hold it and ask the peers, unless there is
    /// no live peer to ask (then the local stack it is, at once).
    pub(super) fn miss(
        &mut self,
        now: Timestamp,
        pkt: &PacketBuf<'_>,
        meta: &PacketMeta,
    ) -> Verdict {
        let Some(cfg) = self.cfg.vip.as_ref() else {
            return Verdict::Deliver;
        };
        let (max_packets, max_per_flow, max_flows) = (
            cfg.max_held_packets,
            cfg.max_held_per_flow,
            cfg.max_held_flows,
        );
        let flow = meta.flow;
        let Some(bytes) = pkt.bytes().get(meta.l3_range()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if self.miss.gave_up.contains_key(&flow) {
            self.counters.c.unknown_flow_delivered += 1;
            return Verdict::Deliver;
        }
        if !self.miss.flows.contains_key(&flow) {
            // Served here for a peer, now reaching this host straight from
            // the client (ECMP moved it here): the stack has it. Its served
            // entry follows it (a FIN here ends it, so that this host does
            // not claim a later connection on the 4-tuple).
            // Unless the packet's sequence number says it is a later
            // connection on the 4-tuple (the entry outlived its end).
            let live =
                |e: &ConnEntry| matches!(e.state, ConnState::SynSeen | ConnState::Established);
            let seq = super::tcp_seq(pkt.bytes(), meta);
            let served = self.served.get(&flow).filter(live);
            if served.is_some_and(|e| !in_sequence(&e, seq)) {
                self.counters.c.vip.out_of_sequence += 1;
            }
            if let Some(e) = served.filter(|e| in_sequence(e, seq)) {
                let flags = meta.tcp_flags;
                if flags.intersects(TcpFlags::FIN | TcpFlags::RST) {
                    self.counters.c.connections_ended += 1;
                    self.local_ended(flow);
                    self.served_entry_gone(flow, e.route);
                }
                let _ = self
                    .served
                    .on_packet(&flow, Direction::Original, flags, meta.l3_len, now);
                return Verdict::Deliver;
            }
            let anyone = self
                .loads
                .peers()
                .iter()
                .any(|p| self.usable_tunnel(p.id).is_some());
            if !anyone {
                self.counters.c.unknown_flow_delivered += 1;
                return Verdict::Deliver;
            }
        }
        if self.miss.packets >= max_packets {
            return Verdict::Drop(DropReason::HeldQueueFull);
        }
        match self.miss.flows.get_mut(&flow) {
            Some(h) if h.packets.len() >= max_per_flow => {
                return Verdict::Drop(DropReason::HeldQueueFull);
            }
            Some(h) => h.packets.push(bytes.to_vec()),
            None => {
                if self.miss.flows.len() >= max_flows {
                    return Verdict::Drop(DropReason::HeldQueueFull);
                }
                self.miss.flows.insert(
                    flow,
                    HeldFlow {
                        packets: vec![bytes.to_vec()],
                        since: now,
                        asked_at: now,
                    },
                );
                self.miss.queries.push(flow);
                self.counters.c.vip.misses_asked += 1;
            }
        }
        self.miss.packets += 1;
        Verdict::Held
    }

    /// The flows to ask the peers about (VIP mode): new misses, and those
    /// asked `reask_after` ago with no claim yet. Taken once; the cluster
    /// protocol sends them, many per datagram, to every live peer.
    pub fn take_flow_queries(&mut self) -> Vec<FlowKey> {
        std::mem::take(&mut self.miss.queries)
    }

    /// True when [`Engine::take_released`] has packets.
    pub fn has_released(&self) -> bool {
        !self.miss.released.is_empty()
    }

    /// Held packets routed since the last call, in the order they arrived
    /// per flow: the caller sends each as its verdict says.
    pub fn take_released(&mut self) -> Vec<ReleasedPacket> {
        std::mem::take(&mut self.miss.released)
    }

    /// Flows held now, and their packets.
    pub fn held(&self) -> (usize, usize) {
        (self.miss.flows.len(), self.miss.packets)
    }

    /// When held flows next need timer work (a re-ask or a deadline), if
    /// any are held: call [`Engine::tick`] then.
    pub fn next_miss_timeout(&self) -> Option<Timestamp> {
        let cfg = self.cfg.vip.as_ref()?;
        self.miss
            .flows
            .values()
            .map(|h| {
                let ask = h.asked_at.0.saturating_add(ns(cfg.reask_after));
                let end = h.since.0.saturating_add(ns(cfg.claim_deadline));
                Timestamp(ask.min(end))
            })
            .min()
    }

    /// The entry by which this host serves `flow` (client to service), as
    /// [`Engine::serves_flows`] answers peers: a live served entry, else a
    /// live local route.
    fn serving_entry(&self, flow: &FlowKey, now: Timestamp) -> Option<ConnEntry> {
        let grace = ns(self.cfg.served.fin_grace);
        let live = |e: &ConnEntry| match e.state {
            ConnState::SynSeen | ConnState::Established => true,
            ConnState::Closing => now.0.saturating_sub(e.last_seen.0) < grace,
            ConnState::Closed => false,
        };
        self.served.get(flow).filter(live).or_else(|| {
            self.routes
                .get(flow)
                .filter(|e| e.route == Route::Local && live(e))
        })
    }

    /// Whether this host serves `flow` and, for a packet with sequence
    /// number `seq`, whether that entry can hold it (`in_sequence`).
    fn serves_packet(&mut self, flow: &FlowKey, seq: Option<u32>, now: Timestamp) -> bool {
        let Some(e) = self.serving_entry(flow, now) else {
            return false;
        };
        let ok = in_sequence(&e, seq);
        if !ok {
            self.counters.c.vip.out_of_sequence += 1;
        }
        ok
    }

    /// Of `flows` (client to service), those this host serves: its stack
    /// has them, decapsulated from a peer (the served table) or accepted
    /// here at the SYN or adopted from the kernel (routes to `Local`);
    /// open, or closing within the FIN grace time. The answer to a peer's
    /// flow query.
    pub fn serves_flows(&mut self, flows: &[FlowKey], now: Timestamp) -> Vec<FlowKey> {
        let mine: Vec<FlowKey> = flows
            .iter()
            .filter(|f| self.is_service(f) && f.protocol == IpProtocol::Tcp)
            .filter(|f| self.serving_entry(f, now).is_some())
            .copied()
            .collect();
        self.counters.c.vip.claims_answered += mine.len() as u64;
        mine
    }

    /// A packet of a VIP flow that peer `origin` tunnelled here (`pkt`
    /// holds it decapsulated), when this host does not serve the flow
    /// (`None` when it does: the caller delivers it). Behind ECMP the
    /// peer's route may be an older connection's on the same 4-tuple (its
    /// end went through another host, and this host has forgotten it):
    /// handed to the local stack, the packet would be reset. It is a miss
    /// instead: asked about, and passed on to the peer that claims it (and
    /// from then on along that route). SYNs and RSTs are not strays: a
    /// SYN is a new connection served here, an RST ends whatever it ends.
    pub(super) fn stray_from_peer(
        &mut self,
        now: Timestamp,
        origin: PeerId,
        pkt: &mut PacketBuf<'_>,
        inner: &PacketMeta,
    ) -> Option<Verdict> {
        let flags = inner.tcp_flags;
        if flags.is_syn()
            || flags.contains(TcpFlags::RST)
            || !self.is_vip_flow(&inner.flow)
            || self.serves_packet(&inner.flow, super::tcp_seq(pkt.bytes(), inner), now)
        {
            return None;
        }
        self.counters.c.vip.strays_asked += 1;
        // Claimed before: the route a claim installed (never back to the
        // peer that sent it, which does not serve it either).
        if let Some(Route::Peer(p)) = self.routes.get(&inner.flow).map(|e| e.route) {
            if p != origin && self.peer_usable(p) {
                let _ = self.routes.on_packet(
                    &inner.flow,
                    Direction::Original,
                    flags,
                    inner.l3_len,
                    now,
                );
                return Some(self.follow(Route::Peer(p), pkt, inner));
            }
        }
        Some(self.miss(now, pkt, inner))
    }

    /// A SYN straight from a client for a VIP flow this host holds no
    /// route for. A served entry of the 4-tuple (decapsulated from a peer)
    /// with the same sequence number is that connection's SYN again, ECMP
    /// now bringing it here: the stack has it (`Some(Deliver)`). Any other
    /// is an older connection's, whose end went through another host: it
    /// is dropped, or this host would claim the new connection's packets
    /// for its stack; the SYN is then decided as new (`None`).
    pub(super) fn vip_syn_served(&mut self, flow: &FlowKey, isn: Option<u32>) -> Option<Verdict> {
        let e = self.served.get(flow)?;
        let live = matches!(e.state, ConnState::SynSeen | ConnState::Established);
        if live && e.isn.is_some() && e.isn == isn {
            self.counters.c.syn_retransmits += 1;
            return Some(Verdict::Deliver);
        }
        self.served.remove(flow);
        self.counters.c.syn_new_incarnations += 1;
        self.served_entry_gone(*flow, e.route);
        if live {
            self.counters.c.vip.stale_served_dropped += 1;
            self.counters.c.connections_ended += 1;
            self.local_ended(*flow);
        }
        None
    }

    /// `peer` claims `flow`: when it is held here, route it to `peer` and
    /// release its packets there. Returns whether it was held. A claim
    /// from a peer that cannot be reached now (dead, gone) is ignored; the
    /// flow waits for another, or its deadline.
    pub fn claim_flow(&mut self, flow: &FlowKey, peer: PeerId, now: Timestamp) -> bool {
        if self.usable_tunnel(peer).is_none() {
            return false;
        }
        let Some(h) = self.miss.flows.remove(flow) else {
            self.counters.c.vip.claims_late += 1;
            return false;
        };
        self.miss.packets -= h.packets.len();
        // A route held for a flow that missed is an older connection's
        // (a stray's route back to its sender, a closed local one): the
        // claim replaces it.
        if let Some(old) = self.routes.remove(flow) {
            if matches!(old.state, ConnState::SynSeen | ConnState::Established) {
                self.connection_ended(old.route, *flow);
            }
        }
        match self.routes.insert_established(flow, Route::Peer(peer), now) {
            Ok(_) => {}
            Err(_) => self.counters.c.table_insert_failures += 1,
        }
        self.counters.c.vip.flows_claimed += 1;
        self.counters.c.vip.claim_wait_ns += now.0.saturating_sub(h.since.0);
        for p in h.packets {
            self.release(now, &p, Route::Peer(peer));
        }
        true
    }

    /// Timer work of the held flows ([`Engine::tick`] does it too): re-ask
    /// once `reask_after` passed, give up at the deadline (the local stack
    /// gets the packets, and for a while the flow's later packets too,
    /// without asking again).
    pub fn handle_miss_timeout(&mut self, now: Timestamp) {
        let Some(cfg) = self.cfg.vip.as_ref() else {
            return;
        };
        if self.miss.flows.is_empty() {
            if !self.miss.gave_up.is_empty() {
                let keep = ns(GAVE_UP_KEEP);
                self.miss
                    .gave_up
                    .retain(|_, t| now.0.saturating_sub(t.0) < keep);
            }
            return;
        }
        let (deadline, reask) = (ns(cfg.claim_deadline), ns(cfg.reask_after));
        let max_flows = cfg.max_held_flows;
        let mut expired = Vec::new();
        for (f, h) in self.miss.flows.iter_mut() {
            if now.0.saturating_sub(h.since.0) >= deadline {
                expired.push(*f);
            } else if now.0.saturating_sub(h.asked_at.0) >= reask {
                h.asked_at = now;
                self.miss.queries.push(*f);
                self.counters.c.vip.reasks += 1;
            }
        }
        expired.sort_unstable_by_key(|f| (f.src, f.src_port));
        for f in expired {
            let Some(h) = self.miss.flows.remove(&f) else {
                continue;
            };
            self.miss.packets -= h.packets.len();
            if self.miss.gave_up.len() >= max_flows {
                let keep = ns(GAVE_UP_KEEP);
                self.miss
                    .gave_up
                    .retain(|_, t| now.0.saturating_sub(t.0) < keep);
            }
            if self.miss.gave_up.len() < max_flows {
                self.miss.gave_up.insert(f, now);
            }
            self.counters.c.vip.flows_timed_out += 1;
            self.counters.c.vip.packets_timed_out += h.packets.len() as u64;
            self.counters.c.unknown_flow_delivered += h.packets.len() as u64;
            for p in h.packets {
                self.release(now, &p, Route::Local);
            }
        }
    }

    /// Routes one held packet along `route` into the released list.
    fn release(&mut self, now: Timestamp, packet: &[u8], route: Route) {
        let end = RELEASE_HEADROOM + packet.len();
        let mut buf = vec![0u8; end];
        buf[RELEASE_HEADROOM..].copy_from_slice(packet);
        let Some(mut pb) = PacketBuf::new(&mut buf, RELEASE_HEADROOM, end) else {
            return;
        };
        let Ok(meta) = parse_ip(pb.bytes()) else {
            return;
        };
        // A claimed flow's entry follows the connection's progress (a
        // FIN, an RST) as if the packet had been routed on arrival.
        if let Route::Peer(_) = route {
            let _ = self.routes.on_packet(
                &meta.flow,
                Direction::Original,
                meta.tcp_flags,
                meta.l3_len,
                now,
            );
        }
        let v = self.follow(route, &mut pb, &meta);
        let range = pb.range();
        let v = self.counters.c.count(v);
        if matches!(v, Verdict::Forward { .. }) {
            self.counters.c.vip.packets_released += 1;
        }
        if !matches!(v, Verdict::Drop(_)) {
            self.miss.released.push(ReleasedPacket {
                buf,
                range,
                verdict: v,
            });
        }
    }

    /// Adopts `flows` (client to service), whose sockets the local stack
    /// holds, as served here (VIP mode, after a restart: a dump of the
    /// kernel's sockets): a `Local` route each, so this host claims them
    /// when peers ask and delivers their packets without asking. A flow
    /// already routed is left as it is. Returns how many were adopted.
    pub fn adopt_local(&mut self, flows: &[FlowKey], now: Timestamp) -> usize {
        let mut n = 0;
        for f in flows {
            if !self.is_service(f) || !self.is_vip_flow(f) || f.protocol != IpProtocol::Tcp {
                continue;
            }
            match self.routes.insert_established(f, Route::Local, now) {
                Ok(InsertOutcome::Inserted { .. }) => n += 1,
                Ok(InsertOutcome::Existing(_)) => {}
                Err(_) => self.counters.c.table_insert_failures += 1,
            }
        }
        self.counters.c.vip.adopted_local += n as u64;
        n
    }
}
