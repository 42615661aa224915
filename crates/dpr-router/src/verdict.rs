//! What the engine tells the I/O layer to do with a packet.

use dpr_table::PeerId;
use std::net::IpAddr;

/// The engine's decision for one packet. After [`crate::Engine::process`]
/// the packet buffer's range holds the bytes to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not the router's: give the bytes to the kernel untouched.
    Pass,
    /// Hand the IP packet in the range to the local stack (a locally served
    /// connection, or the inner packet of IP-in-IP from a peer).
    Deliver,
    /// Send the IP-in-IP packet in the range to the peer's tunnel address.
    Forward {
        /// The peer.
        peer: PeerId,
        /// Its tunnel address (the outer destination).
        to: IpAddr,
    },
    /// Send the generated packet in the range (a TCP RST to the client).
    Reply,
    /// VIP mode: the engine kept a copy of the packet while it asks the
    /// peers who serves its flow; send nothing now. It comes back, routed,
    /// from [`crate::Engine::take_released`].
    Held,
    /// Drop, for this reason.
    Drop(DropReason),
}

/// Why a packet was dropped. Each reason has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The packet did not parse (see the per-layer counters).
    Malformed,
    /// A fragment of service traffic: the router does not reassemble.
    Fragment,
    /// IP-in-IP to our tunnel address from a source that is not a peer.
    UnknownTunnelSource,
    /// IP-in-IP from a peer whose outer or inner header is invalid.
    BadTunnel,
    /// IP-in-IP inside IP-in-IP: only one level is accepted.
    NestedTunnel,
    /// RFC 6040: congestion mark on a packet that is not ECN-capable.
    EcnCeOnNotEct,
    /// A connection routed to a dead or removed peer (drop mode).
    DeadPeer,
    /// Not enough headroom in the buffer for the outer header.
    NoHeadroom,
    /// Encapsulation would exceed the largest IP packet.
    Oversize,
    /// Too big for the tunnel MTU and no "too big" reply could be sent (not
    /// TCP, or no room for the reply).
    TooBig,
    /// IP-in-IP from a peer whose inner packet is not service traffic for
    /// one of that peer's service addresses (or an ICMP error about it).
    UnexpectedInner,
    /// A non-SYN packet of an unknown connection while this host recovers
    /// its routes after a restart: held back (the client retransmits) until
    /// the peers have said which connections are theirs.
    Recovering,
    /// Keyed tunnel: a new flow (SYN) or an ICMP error from a peer's
    /// tunnel address whose tag does not verify under the key it names
    /// (or names a key not held), or plain IP-in-IP, which carries no tag.
    TunnelBadTag,
    /// Keyed tunnel: a mid-connection packet of a flow this host does not
    /// serve for that peer, with no valid tag either.
    TunnelUnknownFlow,
    /// VIP mode: a packet of an unknown flow found the held-packet queue
    /// full (all flows, or its own flow's share): TCP retransmits it.
    HeldQueueFull,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 15] = [
        Self::Malformed,
        Self::Fragment,
        Self::UnknownTunnelSource,
        Self::BadTunnel,
        Self::NestedTunnel,
        Self::EcnCeOnNotEct,
        Self::DeadPeer,
        Self::NoHeadroom,
        Self::Oversize,
        Self::TooBig,
        Self::UnexpectedInner,
        Self::Recovering,
        Self::TunnelBadTag,
        Self::TunnelUnknownFlow,
        Self::HeldQueueFull,
    ];

    /// Position in [`Self::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake-case name for metrics and status output.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Fragment => "fragment",
            Self::UnknownTunnelSource => "unknown_tunnel_source",
            Self::BadTunnel => "bad_tunnel",
            Self::NestedTunnel => "nested_tunnel",
            Self::EcnCeOnNotEct => "ecn_ce_on_not_ect",
            Self::DeadPeer => "dead_peer",
            Self::NoHeadroom => "no_headroom",
            Self::Oversize => "oversize",
            Self::TooBig => "too_big",
            Self::UnexpectedInner => "unexpected_inner",
            Self::Recovering => "recovering",
            Self::TunnelBadTag => "tunnel_bad_tag",
            Self::TunnelUnknownFlow => "tunnel_unknown_flow",
            Self::HeldQueueFull => "held_queue_full",
        }
    }
}
