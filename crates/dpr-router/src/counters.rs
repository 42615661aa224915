//! Counters for every verdict, every drop reason and every peer.

use crate::verdict::{DropReason, Verdict};
use dpr_packet::Layer;
use dpr_table::PeerId;
use std::collections::BTreeMap;

/// Per-peer counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// New connections this host redirected to the peer.
    pub redirected_connections: u64,
    /// Packets forwarded to the peer (IP-in-IP).
    pub forwarded_packets: u64,
    /// Bytes forwarded to the peer (outer packets).
    pub forwarded_bytes: u64,
    /// IP-in-IP packets received from the peer and delivered.
    pub received_packets: u64,
    /// Bytes of those packets (inner).
    pub received_bytes: u64,
    /// New connections the peer redirected to this host.
    pub served_connections: u64,
    /// ICMP errors forwarded to the peer.
    pub icmp_forwarded: u64,
    /// Packets of connections routed to the peer after it died.
    pub dead_peer_packets: u64,
}

/// A snapshot of the engine's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Verdicts: passed to the kernel.
    pub passed: u64,
    /// Verdicts: delivered to the local stack.
    pub delivered: u64,
    /// Verdicts: forwarded to a peer.
    pub forwarded: u64,
    /// Verdicts: a generated reply (RST) sent.
    pub replied: u64,
    /// Verdicts: dropped (the sum of `drops`).
    pub dropped: u64,
    /// Drops by reason, indexed by [`DropReason::index`].
    pub drops: [u64; DropReason::ALL.len()],
    /// Parse failures by the layer that failed: packets dropped as
    /// `Malformed`, and the outer or inner packets of `BadTunnel` drops.
    pub malformed_by_layer: BTreeMap<&'static str, u64>,
    /// New connections served locally.
    pub new_local: u64,
    /// New connections served locally because no peer was eligible (every
    /// peer suspect, dead, draining or left): a sign of late load reports
    /// when it grows on a loaded host.
    pub new_local_no_peer: u64,
    /// New connections redirected to a peer.
    pub new_redirected: u64,
    /// New connections that arrived from a peer.
    pub new_from_peer: u64,
    /// SYNs of connections already in the table with the same initial
    /// sequence number (retransmissions): they follow the recorded route.
    pub syn_retransmits: u64,
    /// SYNs that reuse the 4-tuple of a recorded connection that had
    /// ended (FIN or RST seen) or that carry another initial sequence
    /// number: new connections, decided afresh (and counted in
    /// `new_local` / `new_redirected` too).
    pub syn_new_incarnations: u64,
    /// Connections this host routes or serves whose end it saw (the
    /// client's first FIN or RST): each stops counting against the load of
    /// the host that serves it at once, not at the next measurement.
    pub connections_ended: u64,
    /// Non-SYN packets of unknown connections, delivered locally (the local
    /// stack answers RST for a connection it does not know).
    pub unknown_flow_delivered: u64,
    /// MSS options clamped.
    pub mss_clamped: u64,
    /// ICMP errors about the tunnel path itself (passed to the kernel).
    pub icmp_about_tunnel: u64,
    /// "Fragmentation needed" / "packet too big" replies sent to clients
    /// whose packets would not fit the tunnel MTU once encapsulated.
    pub too_big_replies: u64,
    /// RSTs sent for connections routed to a dead peer.
    pub dead_peer_resets: u64,
    /// Routes moved off a dead peer when a retransmitted SYN arrived.
    pub dead_peer_reroutes: u64,
    /// Table inserts that failed (the flow was still routed).
    pub table_insert_failures: u64,
    /// New connections sent away because this host is draining.
    pub drain_redirects: u64,
    /// Routes restored from peers' answers after a restart.
    pub routes_restored: u64,
    /// VIP mode's ask-on-miss.
    pub vip: VipCounters,
    /// Per peer.
    pub peers: BTreeMap<PeerId, PeerCounters>,
}

/// VIP mode's ask-on-miss, in flows and packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipCounters {
    /// Flows missed and asked about (each once; re-asks apart).
    pub misses_asked: u64,
    /// Queries repeated for a flow with no claim yet (a lost datagram).
    pub reasks: u64,
    /// Packets held (each also counted as a `Held` verdict).
    pub packets_held: u64,
    /// Held packets released to the claiming peer.
    pub packets_released: u64,
    /// Flows a peer claimed: their route is installed.
    pub flows_claimed: u64,
    /// Nanoseconds the claimed flows waited, miss to claim, summed (the
    /// miss path's latency is this over `flows_claimed`).
    pub claim_wait_ns: u64,
    /// Flows nobody claimed before the deadline: their packets went to the
    /// local stack (which answers RST unless it has the connection).
    pub flows_timed_out: u64,
    /// Packets of those flows, delivered locally.
    pub packets_timed_out: u64,
    /// Flows this host claimed, answering a peer's query.
    pub claims_answered: u64,
    /// Claims for a flow not (or no longer) held: ignored.
    pub claims_late: u64,
    /// Locally served connections adopted from the kernel's socket table
    /// (after a restart, or confirmed by a dump).
    pub adopted_local: u64,
    /// Packets of a VIP flow routed to a dead or departed peer, asked
    /// about instead of reset: behind ECMP a route may be an older
    /// connection's on the same 4-tuple (its end went through another
    /// host), and a live peer may serve this one. (Nobody claims a flow
    /// the dead peer served: it is reset at the deadline, as before.)
    pub dead_routes_asked: u64,
    /// Routes dropped because a peer sent this host the SYN of the same
    /// 4-tuple: an older connection's route (its end went through another
    /// host), which would send the packets of the one served here away.
    pub stale_routes_dropped: u64,
    /// Packets a peer tunnelled here of a VIP flow this host does not
    /// serve (the peer's route is an older connection's on the same
    /// 4-tuple): asked about like a miss and passed on to the claimer,
    /// instead of the local stack resetting them.
    pub strays_asked: u64,
    /// SYNs of a 4-tuple this host served for a peer, arriving from the
    /// client or from another peer: a new connection, and the older
    /// served entry is dropped (it would claim the new one's packets).
    pub stale_served_dropped: u64,
    /// Packets of a VIP flow this host holds as served whose sequence
    /// number lies far past that connection's (its SYN's plus the bytes
    /// seen plus 64 MiB): a later connection on the 4-tuple, whose older
    /// state here outlived its end. Asked about instead of delivered.
    pub out_of_sequence: u64,
}

impl VipCounters {
    fn merge(&mut self, o: &VipCounters) {
        let VipCounters {
            misses_asked,
            reasks,
            packets_held,
            packets_released,
            flows_claimed,
            claim_wait_ns,
            flows_timed_out,
            packets_timed_out,
            claims_answered,
            claims_late,
            adopted_local,
            dead_routes_asked,
            stale_routes_dropped,
            strays_asked,
            stale_served_dropped,
            out_of_sequence,
        } = o;
        self.misses_asked += misses_asked;
        self.reasks += reasks;
        self.packets_held += packets_held;
        self.packets_released += packets_released;
        self.flows_claimed += flows_claimed;
        self.claim_wait_ns += claim_wait_ns;
        self.flows_timed_out += flows_timed_out;
        self.packets_timed_out += packets_timed_out;
        self.claims_answered += claims_answered;
        self.claims_late += claims_late;
        self.adopted_local += adopted_local;
        self.dead_routes_asked += dead_routes_asked;
        self.stale_routes_dropped += stale_routes_dropped;
        self.strays_asked += strays_asked;
        self.stale_served_dropped += stale_served_dropped;
        self.out_of_sequence += out_of_sequence;
    }
}

/// The engine's live counters: per-peer counters in a vector indexed by
/// peer id (no map look-up per packet); [`Counters`] is the snapshot.
#[derive(Clone, Debug, Default)]
pub(crate) struct LiveCounters {
    pub(crate) c: Counters,
    pub(crate) peers: Vec<PeerCounters>,
}

impl LiveCounters {
    pub(crate) fn snapshot(&self) -> Counters {
        let mut s = self.c.clone();
        s.peers = self
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| **p != PeerCounters::default())
            .map(|(i, p)| (PeerId(i as u16), *p))
            .collect();
        s
    }

    pub(crate) fn peer(&mut self, id: PeerId) -> &mut PeerCounters {
        let i = usize::from(id.0);
        if i >= self.peers.len() {
            self.peers.resize(i + 1, PeerCounters::default());
        }
        &mut self.peers[i]
    }
}

impl PeerCounters {
    /// Adds `other` (another engine's counters of the same peer).
    pub fn merge(&mut self, other: &PeerCounters) {
        let PeerCounters {
            redirected_connections,
            forwarded_packets,
            forwarded_bytes,
            received_packets,
            received_bytes,
            served_connections,
            icmp_forwarded,
            dead_peer_packets,
        } = *other;
        self.redirected_connections += redirected_connections;
        self.forwarded_packets += forwarded_packets;
        self.forwarded_bytes += forwarded_bytes;
        self.received_packets += received_packets;
        self.received_bytes += received_bytes;
        self.served_connections += served_connections;
        self.icmp_forwarded += icmp_forwarded;
        self.dead_peer_packets += dead_peer_packets;
    }
}

impl Counters {
    /// Adds `other`: the counters of a host with an engine per queue are
    /// the sum of its engines'.
    pub fn merge(&mut self, other: &Counters) {
        let Counters {
            passed,
            delivered,
            forwarded,
            replied,
            dropped,
            new_local,
            new_local_no_peer,
            new_redirected,
            new_from_peer,
            syn_retransmits,
            syn_new_incarnations,
            connections_ended,
            unknown_flow_delivered,
            mss_clamped,
            icmp_about_tunnel,
            too_big_replies,
            dead_peer_resets,
            dead_peer_reroutes,
            table_insert_failures,
            drain_redirects,
            routes_restored,
            vip,
            drops,
            malformed_by_layer,
            peers,
        } = other;
        self.passed += passed;
        self.delivered += delivered;
        self.forwarded += forwarded;
        self.replied += replied;
        self.dropped += dropped;
        self.new_local += new_local;
        self.new_local_no_peer += new_local_no_peer;
        self.new_redirected += new_redirected;
        self.new_from_peer += new_from_peer;
        self.syn_retransmits += syn_retransmits;
        self.syn_new_incarnations += syn_new_incarnations;
        self.connections_ended += connections_ended;
        self.unknown_flow_delivered += unknown_flow_delivered;
        self.mss_clamped += mss_clamped;
        self.icmp_about_tunnel += icmp_about_tunnel;
        self.too_big_replies += too_big_replies;
        self.dead_peer_resets += dead_peer_resets;
        self.dead_peer_reroutes += dead_peer_reroutes;
        self.table_insert_failures += table_insert_failures;
        self.drain_redirects += drain_redirects;
        self.routes_restored += routes_restored;
        self.vip.merge(vip);
        for (a, b) in self.drops.iter_mut().zip(drops) {
            *a += b;
        }
        for (k, v) in malformed_by_layer {
            *self.malformed_by_layer.entry(k).or_default() += v;
        }
        for (k, v) in peers {
            self.peers.entry(*k).or_default().merge(v);
        }
    }
}

impl Counters {
    /// The drop counter of `reason`.
    pub fn drops_of(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    pub(crate) fn count(&mut self, v: Verdict) -> Verdict {
        match v {
            Verdict::Pass => self.passed += 1,
            Verdict::Deliver => self.delivered += 1,
            Verdict::Forward { .. } => self.forwarded += 1,
            Verdict::Reply => self.replied += 1,
            Verdict::Held => self.vip.packets_held += 1,
            Verdict::Drop(r) => {
                self.dropped += 1;
                self.drops[r.index()] += 1;
            }
        }
        v
    }

    pub(crate) fn malformed(&mut self, layer: Layer) {
        *self
            .malformed_by_layer
            .entry(layer_name(layer))
            .or_default() += 1;
    }
}

fn layer_name(l: Layer) -> &'static str {
    match l {
        Layer::Ethernet => "ethernet",
        Layer::Vlan => "vlan",
        Layer::Ipv4 => "ipv4",
        Layer::Ipv6 => "ipv6",
        Layer::Ipv6Ext => "ipv6_ext",
        Layer::Tcp => "tcp",
        Layer::TcpOption => "tcp_option",
        Layer::Udp => "udp",
        Layer::Icmpv4 => "icmpv4",
        Layer::Icmpv6 => "icmpv6",
        Layer::IcmpQuote => "icmp_quote",
        Layer::Tunnel => "tunnel",
        Layer::Gre => "gre",
        _ => "other",
    }
}
