//! A seeded, deterministic in-memory DPR cluster.
//!
//! N hosts, each an [`Engine`] plus a simulated local TCP stack
//! ([`tcp::Server`]), and clients ([`tcp::Client`]) that connect to any
//! host's service address, joined by a simulated network with a simulated
//! clock. Packets travel as bytes: what the engines see and emit is what a
//! real router would. Replies leave the serving host straight for the
//! client (direct server return); load reports flow between hosts every
//! interval with network delay, so decisions use stale figures as they
//! would in a real cluster. A whole scenario runs in milliseconds without
//! root.
//!
//! ```text
//!  client ──SYN──► host A engine ──Forward (IP-in-IP)──► host B engine ──Deliver──► B's stack
//!     ▲                                                                              │
//!     └──────────────── reply, source = A's service address (DSR) ───────────────────┘
//! ```

pub mod tcp;

use crate::cluster::{Clock, KeyRing, Node, NodeConfig, PeerConfig, ReportMode, Transmit};
use crate::{
    ConfigError, DropReason, Engine, EngineConfig, EngineError, PacketBuf, Verdict, VipConfig,
};
use dpr_packet::icmp::{self, IcmpErrorKind};
use dpr_packet::{IpProtocol, IpVersion, ip, parse_ip};
use dpr_policy::{Policy, SplitMix64};
use dpr_table::{Capacity, LoadFigures, LoadTableConfig, PeerId, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tcp::{Client, Server};

/// Headroom the harness gives every packet it hands an engine.
pub const HEADROOM: usize = 64;
/// The service port of the harness's servers.
pub const SERVICE_PORT: u16 = 80;
/// The cluster key every harness host holds (id 1).
pub const CLUSTER_KEY: [u8; 32] = *b"dpr harness cluster key, 32 byte";
/// Unix time (ns) at simulated time zero: control messages carry Unix time.
pub const UNIX_EPOCH_OFFSET: u64 = 1_800_000_000_000_000_000;

/// The address the on-path router sends ICMP errors from.
pub const ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);

/// How to build the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of hosts (1 ..= 200).
    pub hosts: usize,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Interval of load reports (also the load table's report interval).
    pub report_interval: Duration,
    /// Peers are dead after this many missed intervals.
    pub dead_after_missed: u32,
    /// Serve IPv6 service addresses (tunnels stay IPv4).
    pub ipv6_service: bool,
    /// MTU of the clients' access links: larger DF packets towards a client
    /// are answered by an on-path router with ICMP "fragmentation needed" /
    /// "packet too big" to their source. `None`: unlimited.
    pub client_mtu: Option<u16>,
    /// Bytes in each response body.
    pub response_len: usize,
    /// Work per request: a host answers after `service_time` times the
    /// number of connections it has open (processor sharing, roughly), so
    /// a loaded host is a slow host.
    pub service_time: Duration,
    /// Seed for everything random (policies' random sources).
    pub seed: u64,
    /// How load reports travel.
    pub report_mode: ReportMode,
    /// Missed intervals before a peer is suspect.
    pub suspect_after_missed: u32,
    /// Adjusts each host's engine configuration (index, config).
    pub tweak: fn(usize, &mut EngineConfig),
    /// Peers each host tells when it becomes idle (join-idle); 0: none.
    pub idle_advert_fanout: usize,
    /// VIP mode: every host holds both VIPs ([`vip_addr`], IPv4 and IPv6)
    /// instead of its own service address, its engine runs ask-on-miss
    /// ([`VipConfig::new`] unless `tweak` sets another), and
    /// clients reach the VIPs through an upstream router's ECMP over the
    /// hosts that announce them ([`Cluster::announce`]). `None`: RR-DNS,
    /// one service address per host.
    pub vip: Option<EcmpMode>,
}

/// How the simulated upstream router spreads flows to the VIP over the
/// hosts that announce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcmpMode {
    /// Linux multipath with an L4 hash: hash of the 5-tuple modulo the
    /// number of next hops (a change of the set moves most flows).
    Modulo,
    /// A resilient next-hop group of this many buckets: a next hop that
    /// leaves gives its buckets to the others, one that joins takes a fair
    /// share from them; other buckets stay.
    Resilient {
        /// Buckets in the group.
        buckets: usize,
    },
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            hosts: 3,
            latency: Duration::from_micros(100),
            report_interval: Duration::from_millis(100),
            dead_after_missed: 3,
            ipv6_service: false,
            client_mtu: None,
            response_len: 2000,
            service_time: Duration::ZERO,
            seed: 1,
            report_mode: ReportMode::FullMesh,
            suspect_after_missed: 1,
            tweak: |_, _| {},
            idle_advert_fanout: 0,
            vip: None,
        }
    }
}

/// One host: its engine, its stack, and whether it is up.
pub struct Host {
    /// Its id in every load table.
    pub id: PeerId,
    /// Its service address (what its RR-DNS name resolves to).
    pub service: IpAddr,
    /// Its tunnel address.
    pub tunnel: IpAddr,
    /// The router engine.
    pub engine: Engine,
    /// The cluster protocol.
    pub node: Node,
    /// The local TCP stack.
    pub server: Server,
    /// False once killed: it neither receives, sends nor reports.
    pub alive: bool,
    /// Packets the engine passed to the kernel.
    pub passed: Vec<Vec<u8>>,
    /// Packets the engine dropped, with the reason.
    pub dropped: Vec<DropReason>,
    /// Load figures forced by a test instead of the stack's real count.
    pub forced_load: Option<u32>,
    next_tick: u64,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("id", &self.id)
            .field("service", &self.service)
            .field("alive", &self.alive)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
enum Event {
    Packet(Vec<u8>),
    Control {
        to: usize,
        from: IpAddr,
        bytes: Vec<u8>,
    },
}

/// The whole simulated cluster.
pub struct Cluster {
    /// The hosts, index = `PeerId`.
    pub hosts: Vec<Host>,
    /// The clients, by address.
    pub clients: BTreeMap<IpAddr, Client>,
    cfg: ClusterConfig,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    addr_owner: HashMap<IpAddr, usize>,
    policy: Box<dyn Fn(usize) -> Box<dyn Policy + Send>>,
    /// Packets that reached an address nobody owns.
    pub unroutable: u32,
    /// ICMP errors the on-path router generated.
    pub router_icmp: u32,
    /// Every packet put on the network, with its time (for tests that look
    /// at what crossed the wire).
    pub wire: Vec<(Timestamp, Vec<u8>)>,
    /// Record `wire` (off by default: it grows with traffic).
    pub record_wire: bool,
    /// Every control datagram sent: (from host, to address, bytes).
    pub control_wire: Vec<(usize, IpAddr, Vec<u8>)>,
    /// Record `control_wire` (off by default).
    pub record_control: bool,
    /// Control datagrams dropped on the way (`control_loss` said so).
    pub control_lost: u64,
    /// Drop control datagrams from host `i` to address `a` while this says so.
    pub control_loss: fn(usize, IpAddr) -> bool,
    /// VIP mode: the hosts announcing the VIP, and the router's buckets.
    ecmp: Ecmp,
    /// VIP mode: packets to the VIP while no host announced it.
    pub vip_unroutable: u32,
}

/// The upstream router's next hops for the VIP.
#[derive(Clone, Debug, Default)]
struct Ecmp {
    hops: Vec<usize>,
    /// Resilient mode: the next hop of each bucket.
    buckets: Vec<usize>,
}

/// The front door's flow hash (the router's, not the engines'): FNV-1a
/// over the 5-tuple's bytes, as deterministic as the rest of the harness.
fn l4_hash(f: &dpr_packet::FlowKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= u64::from(*x);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for a in [f.src, f.dst] {
        match a {
            IpAddr::V4(a) => eat(&a.octets()),
            IpAddr::V6(a) => eat(&a.octets()),
        }
    }
    eat(&f.src_port.to_be_bytes());
    eat(&f.dst_port.to_be_bytes());
    h ^ (h >> 29)
}

/// The VIP of the harness's VIP mode (IPv4 or IPv6).
pub fn vip_addr(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0x10, 0, 0, 0, 0x100))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10))
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("hosts", &self.hosts)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// Service address of host `i`.
pub fn service_addr(i: usize, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0x10, 0, 0, 0, i as u16 + 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 1, i as u8 + 1))
    }
}

/// Tunnel address of host `i`.
pub fn tunnel_addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 19, 0, i as u8 + 1))
}

/// Address of client `j`.
pub fn client_addr(j: usize, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0x64, 0, 0, 0, j as u16 + 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 100, j as u8 + 1))
    }
}

impl Cluster {
    /// Builds a cluster; `policy(i)` makes host `i`'s policy.
    pub fn new(
        cfg: ClusterConfig,
        policy: impl Fn(usize) -> Box<dyn Policy + Send> + 'static,
    ) -> Result<Self, EngineError> {
        if !(1..=200).contains(&cfg.hosts) {
            return Err(ConfigError {
                field: "hosts",
                reason: "must be in 1 ..= 200",
            }
            .into());
        }
        let mut c = Self {
            hosts: Vec::new(),
            clients: BTreeMap::new(),
            cfg,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            addr_owner: HashMap::new(),
            policy: Box::new(policy),
            unroutable: 0,
            router_icmp: 0,
            wire: Vec::new(),
            record_wire: false,
            control_wire: Vec::new(),
            record_control: false,
            control_lost: 0,
            control_loss: |_, _| false,
            ecmp: Ecmp::default(),
            vip_unroutable: 0,
        };
        for i in 0..c.cfg.hosts {
            let (engine, node) = c.build_host(i, false)?;
            let service = if c.cfg.vip.is_some() {
                vip_addr(false)
            } else {
                service_addr(i, c.cfg.ipv6_service)
            };
            let tunnel = tunnel_addr(i);
            if c.cfg.vip.is_none() {
                c.addr_owner.insert(service, i);
            }
            c.addr_owner.insert(tunnel, i);
            c.hosts.push(Host {
                id: PeerId(i as u16),
                service,
                tunnel,
                engine,
                node,
                server: Server::new(
                    format!("host{i}"),
                    if c.cfg.vip.is_some() {
                        vec![vip_addr(false), vip_addr(true)]
                    } else {
                        (0..c.cfg.hosts)
                            .map(|j| service_addr(j, c.cfg.ipv6_service))
                            .collect()
                    },
                ),
                alive: true,
                passed: Vec::new(),
                dropped: Vec::new(),
                forced_load: None,
                next_tick: 0,
            });
        }
        // Every host reports at once: run until those reports have landed.
        let d = c.cfg.latency * 2;
        c.run_for(d);
        Ok(c)
    }

    /// The peers of host `i` as its configuration would list them (every
    /// other host).
    pub fn peer_configs(&self, i: usize) -> Vec<PeerConfig> {
        (0..self.cfg.hosts)
            .filter(|&j| j != i)
            .map(|j| PeerConfig {
                id: PeerId(j as u16),
                tunnel_addr: tunnel_addr(j),
                service_addrs: self.service_addrs_of(j),
            })
            .collect()
    }

    /// The service addresses host `i` holds: its own, or both VIPs.
    pub fn service_addrs_of(&self, i: usize) -> Vec<IpAddr> {
        if self.cfg.vip.is_some() {
            vec![vip_addr(false), vip_addr(true)]
        } else {
            vec![service_addr(i, self.cfg.ipv6_service)]
        }
    }

    /// The protocol configuration of host `i`.
    pub fn node_config(&self, i: usize) -> NodeConfig {
        let mut nc = NodeConfig::new(PeerId(i as u16), self.service_addrs_of(i));
        nc.report_interval = self.cfg.report_interval;
        nc.mode = self.cfg.report_mode;
        nc.recovery_timeout = self.cfg.report_interval * 10;
        nc.seed = self.cfg.seed ^ (i as u64) << 40;
        nc.idle_advert_fanout = self.cfg.idle_advert_fanout;
        nc
    }

    /// The harness's key ring.
    pub fn key_ring() -> KeyRing {
        match KeyRing::new(&[(1, &CLUSTER_KEY)]) {
            Ok(k) => k,
            Err(e) => unreachable!("the harness key is valid: {e}"),
        }
    }

    /// The clock reading at simulated time `now`.
    pub fn clock(&self) -> Clock {
        Clock {
            mono: Timestamp(self.now),
            unix_ns: UNIX_EPOCH_OFFSET + self.now,
        }
    }

    fn build_host(&self, i: usize, recover: bool) -> Result<(Engine, Node), EngineError> {
        let loads = LoadTableConfig {
            report_interval: self.cfg.report_interval,
            suspect_after_missed: self.cfg.suspect_after_missed,
            dead_after_missed: self.cfg.dead_after_missed,
            ..LoadTableConfig::default()
        };
        let mut ec =
            EngineConfig::new(tunnel_addr(i), self.service_addrs_of(i), vec![SERVICE_PORT]);
        if self.cfg.vip.is_some() {
            ec.vip = Some(VipConfig::new(vec![vip_addr(false), vip_addr(true)]));
        }
        (self.cfg.tweak)(i, &mut ec);
        let rng = Box::new(SplitMix64::new(self.cfg.seed ^ (i as u64) << 32 ^ self.now));
        let mut engine = Engine::new(
            ec,
            PeerId(i as u16),
            Capacity::default(),
            loads,
            (self.policy)(i),
            rng,
        )?;
        let mut nc = self.node_config(i);
        nc.recover_on_start = recover;
        let node = Node::new(
            nc,
            Self::key_ring(),
            self.peer_configs(i),
            self.clock(),
            &mut engine,
        )
        .map_err(|e| match e {
            crate::cluster::ClusterError::Engine(e) => e,
            crate::cluster::ClusterError::Config { field, reason } => {
                ConfigError { field, reason }.into()
            }
        })?;
        Ok((engine, node))
    }

    /// Restarts host `i`'s router (the daemon, not the machine: its TCP
    /// stack and connections survive): a fresh engine and protocol node,
    /// with a new incarnation, recovering its routes from the peers.
    ///
    /// In VIP mode it does not recover (ask-on-miss makes recovery
    /// unnecessary): it adopts the connections its stack holds, as `dprd`
    /// does from a dump of the kernel's sockets at start.
    pub fn restart(&mut self, i: usize) -> Result<(), EngineError> {
        let vip = self.cfg.vip.is_some();
        let (mut engine, node) = self.build_host(i, !vip)?;
        if vip {
            let flows = self.hosts[i].server.flows();
            engine.adopt_local(&flows, Timestamp(self.now));
        }
        let h = &mut self.hosts[i];
        h.engine = engine;
        h.node = node;
        h.alive = true;
        h.next_tick = self.now;
        Ok(())
    }

    /// Host `i` starts draining (`deadline`: the node's default when `None`).
    pub fn drain(&mut self, i: usize, deadline: Option<Duration>) {
        let now = self.clock();
        let h = &mut self.hosts[i];
        h.node.start_drain(now, deadline, &mut h.engine);
    }

    /// Host `i` reloads its configuration with `peers`.
    pub fn reload(
        &mut self,
        i: usize,
        peers: Vec<PeerConfig>,
    ) -> Result<(), crate::cluster::ClusterError> {
        let now = self.clock();
        let h = &mut self.hosts[i];
        h.node.reload(peers, now, &mut h.engine)
    }

    /// Puts a control datagram from `from` on the network to host `to`.
    pub fn inject_control(&mut self, to: usize, from: IpAddr, bytes: Vec<u8>) {
        let at = self.now + self.cfg.latency.as_nanos() as u64;
        self.push(at, Event::Control { to, from, bytes });
    }

    /// Brings a killed host back (same router state, as after a network
    /// partition heals).
    pub fn revive(&mut self, i: usize) {
        self.hosts[i].alive = true;
    }

    /// The simulated time.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.now)
    }

    fn client(&mut self, addr: IpAddr) -> &mut Client {
        self.clients
            .entry(addr)
            .or_insert_with(|| Client::new(addr))
    }

    /// Client `client` opens a connection to host `host`'s service address.
    /// Returns the client's local port.
    pub fn connect(&mut self, client: usize, host: usize, hold_open: bool) -> u16 {
        let caddr = client_addr(client, self.cfg.ipv6_service);
        let server = SocketAddr::new(self.hosts[host].service, SERVICE_PORT);
        let now = Timestamp(self.now);
        let (port, syn) = self.client(caddr).connect(now, server, hold_open);
        self.send(syn);
        port
    }

    /// A further request on a held-open connection.
    pub fn request(&mut self, client: usize, port: u16) -> bool {
        let caddr = client_addr(client, self.cfg.ipv6_service);
        let len = self.cfg.response_len;
        match self.client(caddr).send_request(port, len) {
            Some(p) => {
                self.send(p);
                true
            }
            None => false,
        }
    }

    /// Client `client` retransmits its last request on connection `port`
    /// (false when there is nothing to retransmit).
    pub fn retransmit(&mut self, client: usize, port: u16) -> bool {
        let caddr = client_addr(client, self.cfg.ipv6_service);
        match self.client(caddr).retransmit(port) {
            Some(p) => {
                self.send(p);
                true
            }
            None => false,
        }
    }

    /// Client `client` closes its held-open connection `port`.
    pub fn close(&mut self, client: usize, port: u16) -> bool {
        let caddr = client_addr(client, self.cfg.ipv6_service);
        match self.client(caddr).close(port) {
            Some(p) => {
                self.send(p);
                true
            }
            None => false,
        }
    }

    /// Puts a raw packet on the network now (for hostile-input tests).
    pub fn inject(&mut self, pkt: Vec<u8>) {
        self.send(pkt);
    }

    /// Takes host `i` down: it stops receiving, sending and reporting.
    pub fn kill(&mut self, i: usize) {
        self.hosts[i].alive = false;
    }

    /// The connection `port` of client `client`.
    pub fn conn(&self, client: usize, port: u16) -> Option<&tcp::ClientConn> {
        self.clients
            .get(&client_addr(client, self.cfg.ipv6_service))?
            .conns
            .get(&port)
    }

    fn send(&mut self, pkt: Vec<u8>) {
        self.send_after(Duration::ZERO, pkt);
    }

    fn send_after(&mut self, delay: Duration, pkt: Vec<u8>) {
        if pkt.is_empty() {
            return;
        }
        if self.record_wire {
            self.wire.push((Timestamp(self.now), pkt.clone()));
        }
        let at = self.now + (self.cfg.latency + delay).as_nanos() as u64;
        self.push(at, Event::Packet(pkt));
    }

    fn push(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), e);
    }

    /// Runs the simulation until `d` of simulated time has passed.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d.as_nanos() as u64;
        loop {
            let next_event = self.queue.keys().next().map(|k| k.0);
            let next_timer = self
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| h.alive)
                .map(|(i, h)| {
                    let miss = h.engine.next_miss_timeout().map_or(u64::MAX, |t| t.0);
                    (h.node.poll_timeout().0.min(h.next_tick).min(miss), i)
                })
                .min();
            let timer_first = match (next_timer, next_event) {
                (Some((t, _)), Some(e)) => t < e,
                (Some(_), None) => true,
                _ => false,
            };
            let next = if timer_first {
                next_timer.map(|t| t.0)
            } else {
                next_event
            };
            let Some(next) = next.filter(|&t| t <= end) else {
                break;
            };
            self.now = self.now.max(next);
            if timer_first {
                if let Some((_, i)) = next_timer {
                    self.host_timer(i);
                }
                continue;
            }
            if let Some(((_, _), e)) = self.queue.pop_first() {
                self.handle(e);
            }
        }
        self.now = end;
    }

    /// Runs until no packet is in flight (bounded: at most `limit` of time).
    pub fn settle(&mut self, limit: Duration) {
        let end = self.now + limit.as_nanos() as u64;
        while self.queue.values().any(|e| matches!(e, Event::Packet(_))) && self.now < end {
            let step = self.cfg.latency.as_nanos() as u64;
            self.run_for(Duration::from_nanos(step));
        }
    }

    /// Host `i`'s timers: every tenth of an interval its load figures and
    /// table upkeep (as a daemon's few-millisecond tick), and the protocol.
    fn host_timer(&mut self, i: usize) {
        let now = self.clock();
        let tick = (self.cfg.report_interval.as_nanos() as u64 / 10).max(1);
        let h = &mut self.hosts[i];
        if now.mono.0 >= h.next_tick {
            let open = h.forced_load.unwrap_or_else(|| h.server.open_connections());
            let figures = LoadFigures {
                open_connections: open,
                ..LoadFigures::default()
            };
            let _ = h.engine.set_local_load(figures, Capacity::default());
            h.engine.tick(now.mono, 256);
            h.node.check_idle(now, &h.engine);
            h.next_tick = now.mono.0 + tick;
        }
        if h.engine.next_miss_timeout().is_some_and(|t| now.mono >= t) {
            h.engine.handle_miss_timeout(now.mono);
        }
        if now.mono >= h.node.poll_timeout() {
            h.node.handle_timeout(now, &mut h.engine);
        }
        self.pump_vip(i);
        self.flush_control(i);
    }

    /// VIP mode's plumbing, as a daemon's loop does it: the engine's flow
    /// queries to the protocol node, its released packets to the network
    /// or the local stack.
    fn pump_vip(&mut self, i: usize) {
        let now = self.clock();
        let h = &mut self.hosts[i];
        let q = h.engine.take_flow_queries();
        if !q.is_empty() {
            h.node.ask_flows(now, &q, &h.engine);
        }
        if !h.engine.has_released() {
            return;
        }
        for r in h.engine.take_released() {
            let out = r.bytes().to_vec();
            match r.verdict {
                Verdict::Deliver => {
                    let h = &mut self.hosts[i];
                    for p in h.server.receive(&out) {
                        self.send(p);
                    }
                }
                Verdict::Forward { .. } | Verdict::Reply => self.send(out),
                _ => {}
            }
        }
    }

    /// VIP mode: host `i` announces the VIP (the upstream router adds it
    /// to its next hops).
    pub fn announce(&mut self, i: usize) {
        if self.ecmp.hops.contains(&i) {
            return;
        }
        self.ecmp.hops.push(i);
        self.ecmp.hops.sort_unstable();
        self.rebalance(Some(i), None);
    }

    /// VIP mode: host `i` withdraws the VIP (drained, or the router's
    /// failure detection saw it die).
    pub fn withdraw(&mut self, i: usize) {
        if !self.ecmp.hops.contains(&i) {
            return;
        }
        self.ecmp.hops.retain(|&h| h != i);
        self.rebalance(None, Some(i));
    }

    /// The hosts announcing the VIP.
    pub fn next_hops(&self) -> &[usize] {
        &self.ecmp.hops
    }

    fn rebalance(&mut self, joined: Option<usize>, left: Option<usize>) {
        let Some(EcmpMode::Resilient { buckets }) = self.cfg.vip else {
            return;
        };
        let hops = self.ecmp.hops.clone();
        if hops.is_empty() {
            self.ecmp.buckets.clear();
            return;
        }
        if self.ecmp.buckets.len() != buckets.max(1) {
            self.ecmp.buckets = (0..buckets.max(1)).map(|b| hops[b % hops.len()]).collect();
            return;
        }
        let count = |bk: &Vec<usize>, h: usize| bk.iter().filter(|&&x| x == h).count();
        if let Some(gone) = left {
            // The leaver's buckets go to the least-filled remaining hops.
            for b in 0..self.ecmp.buckets.len() {
                if self.ecmp.buckets[b] == gone {
                    let to = hops
                        .iter()
                        .copied()
                        .min_by_key(|&h| (count(&self.ecmp.buckets, h), h))
                        .unwrap_or(hops[0]);
                    self.ecmp.buckets[b] = to;
                }
            }
        }
        if let Some(new) = joined {
            // The joiner takes buckets from the fullest hops until fair.
            let fair = self.ecmp.buckets.len() / hops.len();
            while count(&self.ecmp.buckets, new) < fair {
                let Some(from) = hops
                    .iter()
                    .copied()
                    .filter(|&h| h != new)
                    .max_by_key(|&h| (count(&self.ecmp.buckets, h), usize::MAX - h))
                else {
                    break;
                };
                let Some(b) = self.ecmp.buckets.iter().rposition(|&x| x == from) else {
                    break;
                };
                self.ecmp.buckets[b] = new;
            }
        }
    }

    /// The host the upstream router sends `flow` (to the VIP) to.
    pub fn ecmp_pick(&self, flow: &dpr_packet::FlowKey) -> Option<usize> {
        let h = l4_hash(flow);
        match self.cfg.vip? {
            EcmpMode::Modulo => {
                let n = self.ecmp.hops.len() as u64;
                (n > 0).then(|| self.ecmp.hops[(h % n.max(1)) as usize])
            }
            EcmpMode::Resilient { .. } => {
                let n = self.ecmp.buckets.len() as u64;
                (n > 0).then(|| self.ecmp.buckets[(h % n.max(1)) as usize])
            }
        }
    }

    /// VIP mode: client `client` (of the family `v6` says) opens a
    /// connection to the VIP. Returns the client's address and port.
    pub fn connect_vip(&mut self, client: usize, v6: bool, hold_open: bool) -> (IpAddr, u16) {
        let caddr = client_addr(client, v6);
        let server = SocketAddr::new(vip_addr(v6), SERVICE_PORT);
        let now = Timestamp(self.now);
        let (port, syn) = self.client(caddr).connect(now, server, hold_open);
        self.send(syn);
        (caddr, port)
    }

    /// A further request on the held-open connection `port` of the client
    /// at `caddr`.
    pub fn request_from(&mut self, caddr: IpAddr, port: u16) -> bool {
        let len = self.cfg.response_len;
        match self.client(caddr).send_request(port, len) {
            Some(p) => {
                self.send(p);
                true
            }
            None => false,
        }
    }

    /// The client at `caddr` closes its held-open connection `port`.
    pub fn close_from(&mut self, caddr: IpAddr, port: u16) -> bool {
        match self.client(caddr).close(port) {
            Some(p) => {
                self.send(p);
                true
            }
            None => false,
        }
    }

    /// The connection `port` of the client at `caddr`.
    pub fn conn_of(&self, caddr: IpAddr, port: u16) -> Option<&tcp::ClientConn> {
        self.clients.get(&caddr)?.conns.get(&port)
    }

    fn flush_control(&mut self, i: usize) {
        while let Some(Transmit { to, payload }) = self.hosts[i].node.poll_transmit() {
            if self.record_control {
                self.control_wire.push((i, to, payload.clone()));
            }
            if (self.control_loss)(i, to) {
                self.control_lost += 1;
                continue;
            }
            let from = self.hosts[i].tunnel;
            let at = self.now + self.cfg.latency.as_nanos() as u64;
            if to.is_multicast() {
                for j in 0..self.hosts.len() {
                    if j != i {
                        let bytes = payload.clone();
                        self.push(at, Event::Control { to: j, from, bytes });
                    }
                }
            } else if let Some(&j) = self.addr_owner.get(&to) {
                self.push(
                    at,
                    Event::Control {
                        to: j,
                        from,
                        bytes: payload,
                    },
                );
            }
        }
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Control { to, from, bytes } => {
                if self.hosts[to].alive {
                    let clock = self.clock();
                    let h = &mut self.hosts[to];
                    let _ = h.node.handle_datagram(clock, from, &bytes, &mut h.engine);
                    self.pump_vip(to);
                    self.flush_control(to);
                }
            }
            Event::Packet(pkt) => {
                let Some(dst) = parse_ip(&pkt)
                    .ok()
                    .map(|m| m.flow.dst)
                    .or_else(|| dst_of(&pkt))
                else {
                    self.unroutable += 1;
                    return;
                };
                if let Some(&i) = self.addr_owner.get(&dst) {
                    self.deliver_to_host(i, pkt);
                } else if self.cfg.vip.is_some()
                    && (dst == vip_addr(false) || dst == vip_addr(true))
                {
                    let pick = parse_ip(&pkt).ok().and_then(|m| self.ecmp_pick(&m.flow));
                    match pick {
                        Some(i) => self.deliver_to_host(i, pkt),
                        None => self.vip_unroutable += 1,
                    }
                } else if self.clients.contains_key(&dst) || is_client(dst) {
                    self.deliver_to_client(dst, pkt);
                } else {
                    self.unroutable += 1;
                }
            }
        }
    }

    fn deliver_to_host(&mut self, i: usize, pkt: Vec<u8>) {
        if !self.hosts[i].alive {
            return;
        }
        let now = Timestamp(self.now);
        let mut buf = vec![0u8; HEADROOM + pkt.len()];
        buf[HEADROOM..].copy_from_slice(&pkt);
        let end = buf.len();
        let Some(mut pb) = PacketBuf::new(&mut buf, HEADROOM, end) else {
            return;
        };
        let h = &mut self.hosts[i];
        let v = h.engine.process(now, &mut pb);
        let out = pb.bytes().to_vec();
        match v {
            Verdict::Pass => h.passed.push(out),
            Verdict::Deliver => {
                let before = h.server.responses;
                let out = h.server.receive(&out);
                // A response leaves after the service time, scaled by load.
                let delay = if h.server.responses > before {
                    self.cfg.service_time * h.server.open_connections().max(1)
                } else {
                    Duration::ZERO
                };
                for p in out {
                    self.send_after(delay, p);
                }
            }
            Verdict::Forward { .. } | Verdict::Reply => self.send(out),
            Verdict::Drop(r) => h.dropped.push(r),
            Verdict::Held => {}
        }
        self.pump_vip(i);
        self.flush_control(i);
    }

    fn deliver_to_client(&mut self, dst: IpAddr, pkt: Vec<u8>) {
        if let Some(mtu) = self.cfg.client_mtu {
            if pkt.len() > usize::from(mtu) && parse_ip(&pkt).is_ok_and(|m| m.dont_frag) {
                self.router_icmp += 1;
                let e = router_error(&pkt, mtu);
                self.send(e);
                return;
            }
        }
        let len = self.cfg.response_len;
        let now = Timestamp(self.now);
        let out = self.client(dst).receive(now, &pkt, len);
        for p in out {
            self.send(p);
        }
    }
}

fn is_client(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.octets()[..3] == [198, 18, 100],
        IpAddr::V6(a) => a.segments()[..4] == [0x2001, 2, 0, 0x64],
    }
}

/// The destination of a packet that does not fully parse (IPv4 or IPv6).
fn dst_of(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first()? >> 4 {
        4 => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(pkt.get(16..20)?).ok()?,
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(pkt.get(24..40)?).ok()?,
        ))),
        _ => None,
    }
}

/// The on-path router's error for a packet too big for the next link:
/// ICMPv4 fragmentation needed or ICMPv6 packet too big, to the source.
fn router_error(pkt: &[u8], mtu: u16) -> Vec<u8> {
    let Ok(m) = parse_ip(pkt) else {
        return Vec::new();
    };
    let v6 = m.version == IpVersion::V6;
    let quote = &pkt[..pkt.len().min(if v6 { 1232 } else { 548 })];
    let (kind, router): (IcmpErrorKind, IpAddr) = if v6 {
        (
            IcmpErrorKind::PacketTooBig {
                mtu: u32::from(mtu),
            },
            IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0xc8, 0, 0, 0, 1)),
        )
    } else {
        (
            IcmpErrorKind::FragmentationNeeded { mtu },
            IpAddr::V4(ROUTER_ADDR),
        )
    };
    let mut msg = vec![0u8; icmp::HEADER_LEN + quote.len()];
    if icmp::emit_error(&mut msg, kind, v6, router, m.flow.src, quote).is_err() {
        return Vec::new();
    }
    let proto = if v6 {
        IpProtocol::Icmpv6
    } else {
        IpProtocol::Icmp
    };
    let mut out = vec![0u8; if v6 { 40 } else { 20 }];
    if ip::emit_header(&mut out, router, m.flow.src, proto, msg.len(), 64, false).is_err() {
        return Vec::new();
    }
    out.extend_from_slice(&msg);
    out
}
