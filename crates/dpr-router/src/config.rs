//! Engine configuration, validated field by field.

use dpr_packet::siphash::SipKey;
use dpr_table::ConnTableConfig;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// What happens to a packet of a connection whose peer is dead (or gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeadPeerAction {
    /// Answer the client with a TCP RST so it fails fast and retries.
    #[default]
    Reset,
    /// Drop the packet silently (the client times out).
    Drop,
}

/// How a host proves to its peers that a tunnelled packet comes from a
/// member of the cluster (see `docs/cluster-protocol.md`, "The keyed
/// tunnel").
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TunnelAuth {
    /// Plain IP-in-IP (protocol 4 / 41), accepted from any peer's tunnel
    /// address: anyone who can spoof that address can open connections
    /// here. For interoperation only.
    #[default]
    None,
    /// GRE (protocol 47) whose key field carries a tag keyed with the
    /// cluster's tunnel key: a new flow from a peer is accepted only with
    /// a valid tag; plain IP-in-IP is refused.
    Key(TunnelKeys),
}

impl TunnelAuth {
    /// The bytes the tunnel adds in front of the inner packet besides the
    /// outer IP header (the GRE header, or nothing).
    pub const fn shim_len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Key(_) => dpr_packet::gre::HEADER_LEN,
        }
    }
}

/// The tunnel tag keys, by key id: the first makes the tags this host
/// sends, every one (at most two: the current and the previous or next
/// key of a roll) is accepted. Derived from the cluster key ring
/// (`cluster::KeyRing::tunnel_keys`).
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelKeys {
    keys: Vec<(u16, SipKey)>,
}

impl fmt::Debug for TunnelKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        let ids: Vec<u16> = self.keys.iter().map(|(i, _)| *i).collect();
        f.debug_struct("TunnelKeys").field("key_ids", &ids).finish()
    }
}

impl TunnelKeys {
    /// Keys by id, the signing one first: one or two, with distinct ids.
    pub fn new(keys: Vec<(u16, SipKey)>) -> Result<Self, ConfigError> {
        let bad = |reason| {
            Err(ConfigError {
                field: "tunnel_auth",
                reason,
            })
        };
        match keys.as_slice() {
            [] => bad("at least one tunnel key is needed"),
            [(a, _), (b, _)] if a == b => bad("tunnel key ids must differ"),
            [_] | [_, _] => Ok(Self { keys }),
            _ => bad("at most two tunnel keys (current and previous)"),
        }
    }

    /// From a key ring's keys (one or two, distinct ids: already checked).
    pub(crate) fn from_ring(keys: Vec<(u16, SipKey)>) -> Self {
        Self { keys }
    }

    /// The key that makes the tags this host sends, with its id.
    pub fn signing(&self) -> (u16, &SipKey) {
        let (id, k) = &self.keys[0];
        (*id, k)
    }

    /// The key with id `id`, if held.
    pub fn get(&self, id: u16) -> Option<&SipKey> {
        self.keys.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }

    /// The ids, signing key first.
    pub fn ids(&self) -> Vec<u16> {
        self.keys.iter().map(|(i, _)| *i).collect()
    }
}

/// VIP mode: every host holds the same service addresses behind the
/// upstream routers' ECMP, so a packet of an established connection may
/// reach a host that has never seen it (ECMP moved the flow, or the host
/// restarted). Such a miss is held while the peers are asked who serves
/// the flow ("ask on miss", `docs/decisions.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipConfig {
    /// The shared service addresses (each also in
    /// [`EngineConfig::service_addrs`]). Misses of flows to other service
    /// addresses (a host's own) go to the local stack as without VIP mode.
    pub addrs: Vec<IpAddr>,
    /// How long a missed flow's packets wait for a peer's claim; then they
    /// go to the local stack (which answers RST when it does not have the
    /// connection: its owner is gone). A few round trips between hosts.
    pub claim_deadline: Duration,
    /// Ask again (a lost query) when no claim came after this long.
    pub reask_after: Duration,
    /// The most packets held at once, all flows together; more are
    /// dropped and counted (TCP retransmits them).
    pub max_held_packets: usize,
    /// The most packets held per flow.
    pub max_held_per_flow: usize,
    /// The most flows waiting for a claim at once: this bounds the queries
    /// (a flood of unknown ACKs asks about at most this many flows per
    /// claim deadline).
    pub max_held_flows: usize,
}

impl VipConfig {
    /// VIP mode for `addrs`, the other fields at their defaults.
    pub fn new(addrs: Vec<IpAddr>) -> Self {
        Self {
            addrs,
            claim_deadline: Duration::from_millis(50),
            reask_after: Duration::from_millis(15),
            max_held_packets: 4096,
            max_held_per_flow: 8,
            max_held_flows: 1024,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason| Err(ConfigError { field, reason });
        if self.addrs.is_empty() {
            return bad("vip.addrs", "at least one VIP is needed");
        }
        if self.claim_deadline.is_zero() || self.claim_deadline > Duration::from_secs(10) {
            return bad("vip.claim_deadline", "must be in (0, 10 s]");
        }
        if self.reask_after.is_zero() || self.reask_after >= self.claim_deadline {
            return bad(
                "vip.reask_after",
                "must be above 0 and below claim_deadline",
            );
        }
        if !(1..=1 << 20).contains(&self.max_held_packets) {
            return bad("vip.max_held_packets", "must be in 1 ..= 1,048,576");
        }
        if !(1..=64).contains(&self.max_held_per_flow) {
            return bad("vip.max_held_per_flow", "must be in 1 ..= 64");
        }
        if !(1..=1 << 20).contains(&self.max_held_flows) {
            return bad("vip.max_held_flows", "must be in 1 ..= 1,048,576");
        }
        Ok(())
    }
}

/// Largest [`EngineConfig::decision_log`].
pub const MAX_DECISION_LOG: usize = 1 << 20;

/// Everything the engine needs to know about this host.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// This host's tunnel address: outer source of IP-in-IP it sends, outer
    /// destination of IP-in-IP it accepts. Unique per host, not a service address.
    pub tunnel_addr: IpAddr,
    /// The service addresses this host routes for (its RR-DNS address, or a
    /// shared VIP). IPv4 and IPv6 may be mixed.
    pub service_addrs: Vec<IpAddr>,
    /// The TCP service ports.
    pub service_ports: Vec<u16>,
    /// Path MTU between hosts. With `clamp_mss`, SYN and SYN-ACK segments
    /// that cross the tunnel get an MSS that makes full segments fit it.
    pub tunnel_mtu: u16,
    /// Rewrite the MSS of SYN / SYN-ACK packets that cross the tunnel.
    pub clamp_mss: bool,
    /// Outer TTL / hop limit of IP-in-IP packets.
    pub outer_ttl: u8,
    /// What to do with packets of connections routed to a dead peer.
    pub dead_peer: DeadPeerAction,
    /// Verify the outer IPv4 header checksum of IP-in-IP packets (turn off
    /// when the NIC verified it).
    pub verify_tunnel_checksum: bool,
    /// The table of connections this host routes (local or redirected).
    pub routes: ConnTableConfig,
    /// The table of connections this host serves for peers (arrived in IP-in-IP).
    pub served: ConnTableConfig,
    /// Seed of the flow hash (table index, IPv6 outer flow label).
    pub flow_hash_seed: u64,
    /// How many of the latest SYN decisions the engine keeps for
    /// [`Engine::take_decisions`](crate::Engine::take_decisions) (0: none).
    /// For measuring the load figure against the truth (`dprd lab`).
    pub decision_log: usize,
    /// Plain IP-in-IP or the keyed GRE tunnel. The default is `None`
    /// because the keys come from the cluster key; `dprd` sets `Key`
    /// unless its configuration says `tunnel.auth = "none"`.
    pub tunnel_auth: TunnelAuth,
    /// Keyed tunnel: note the flows accepted from peers (with their tag) and
    /// those that ended, for an in-kernel fast path that passes only those
    /// ([`Engine::take_keyed_flow_events`](crate::Engine::take_keyed_flow_events);
    /// the AF_XDP backend's program).
    pub keyed_flow_events: bool,
    /// VIP mode (`Some`): the service addresses are shared by every host
    /// behind ECMP, and a non-SYN packet of a flow this host does not know
    /// is held while the peers are asked who serves it. `None`: such a
    /// packet goes to the local stack (each host its own address).
    pub vip: Option<VipConfig>,
}

impl EngineConfig {
    /// A configuration with defaults for everything but the addresses and ports.
    pub fn new(tunnel_addr: IpAddr, service_addrs: Vec<IpAddr>, service_ports: Vec<u16>) -> Self {
        Self {
            tunnel_addr,
            service_addrs,
            service_ports,
            tunnel_mtu: 1500,
            clamp_mss: true,
            outer_ttl: 64,
            dead_peer: DeadPeerAction::Reset,
            verify_tunnel_checksum: true,
            routes: ConnTableConfig::default(),
            served: ConnTableConfig::default(),
            flow_hash_seed: 0x6470_725f_6873_6864,
            decision_log: 0,
            tunnel_auth: TunnelAuth::None,
            keyed_flow_events: false,
            vip: None,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason| Err(ConfigError { field, reason });
        if self.tunnel_addr.is_unspecified() || self.tunnel_addr.is_multicast() {
            return bad("tunnel_addr", "must be a unicast address");
        }
        if self.service_addrs.is_empty() {
            return bad("service_addrs", "at least one service address is needed");
        }
        if self.service_addrs.contains(&self.tunnel_addr) {
            return bad("tunnel_addr", "must differ from every service address");
        }
        if self
            .service_addrs
            .iter()
            .any(|a| a.is_unspecified() || a.is_multicast())
        {
            return bad("service_addrs", "must be unicast addresses");
        }
        if self.service_ports.is_empty() {
            return bad("service_ports", "at least one port is needed");
        }
        if self.service_ports.contains(&0) {
            return bad("service_ports", "port 0 is not a service port");
        }
        let min_mtu = if self.tunnel_addr.is_ipv4() {
            576
        } else {
            1280
        };
        if self.tunnel_mtu < min_mtu {
            return bad(
                "tunnel_mtu",
                "below the minimum MTU of the tunnel's IP version",
            );
        }
        if self.outer_ttl == 0 {
            return bad("outer_ttl", "must be at least 1");
        }
        if self.decision_log > MAX_DECISION_LOG {
            return bad("decision_log", "must be at most 1,048,576");
        }
        if let Some(v) = &self.vip {
            v.validate()?;
            if v.addrs.iter().any(|a| !self.service_addrs.contains(a)) {
                return bad("vip.addrs", "every VIP must be a service address");
            }
        }
        self.routes.validate().map_err(|_| ConfigError {
            field: "routes",
            reason: "invalid table configuration",
        })?;
        self.served.validate().map_err(|_| ConfigError {
            field: "served",
            reason: "invalid table configuration",
        })?;
        Ok(())
    }
}

/// A configuration error naming the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}
