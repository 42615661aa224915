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

use crate::{ConfigError, DropReason, Engine, EngineConfig, EngineError, PacketBuf, Verdict};
use dpr_packet::icmp::{self, IcmpErrorKind};
use dpr_packet::{IpProtocol, IpVersion, ip, parse_ip};
use dpr_policy::{Policy, SplitMix64};
use dpr_table::{Capacity, LoadFigures, LoadReport, LoadTableConfig, PeerId, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tcp::{Client, Server};

/// Headroom the harness gives every packet it hands an engine.
pub const HEADROOM: usize = 64;
/// The service port of the harness's servers.
pub const SERVICE_PORT: u16 = 80;
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
    /// Adjusts each host's engine configuration (index, config).
    pub tweak: fn(usize, &mut EngineConfig),
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
            tweak: |_, _| {},
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
    report_seq: u64,
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
    Report {
        to: usize,
        from: usize,
        report: LoadReport,
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
    next_report: u64,
    /// Packets that reached an address nobody owns.
    pub unroutable: u32,
    /// ICMP errors the on-path router generated.
    pub router_icmp: u32,
    /// Every packet put on the network, with its time (for tests that look
    /// at what crossed the wire).
    pub wire: Vec<(Timestamp, Vec<u8>)>,
    /// Record `wire` (off by default: it grows with traffic).
    pub record_wire: bool,
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
        policy: impl Fn(usize) -> Box<dyn Policy + Send>,
    ) -> Result<Self, EngineError> {
        if !(1..=200).contains(&cfg.hosts) {
            return Err(ConfigError {
                field: "hosts",
                reason: "must be in 1 ..= 200",
            }
            .into());
        }
        let loads = LoadTableConfig {
            report_interval: cfg.report_interval,
            suspect_after_missed: 1,
            dead_after_missed: cfg.dead_after_missed,
            ..LoadTableConfig::default()
        };
        let mut hosts = Vec::new();
        let mut addr_owner = HashMap::new();
        for i in 0..cfg.hosts {
            let service = service_addr(i, cfg.ipv6_service);
            let tunnel = tunnel_addr(i);
            let mut ec = EngineConfig::new(tunnel, vec![service], vec![SERVICE_PORT]);
            (cfg.tweak)(i, &mut ec);
            let rng = Box::new(SplitMix64::new(cfg.seed ^ (i as u64) << 32));
            let engine = Engine::new(
                ec,
                PeerId(i as u16),
                Capacity::default(),
                loads,
                policy(i),
                rng,
            )?;
            addr_owner.insert(service, i);
            addr_owner.insert(tunnel, i);
            hosts.push(Host {
                id: PeerId(i as u16),
                service,
                tunnel,
                engine,
                server: Server::new(
                    format!("host{i}"),
                    (0..cfg.hosts)
                        .map(|j| service_addr(j, cfg.ipv6_service))
                        .collect(),
                ),
                alive: true,
                passed: Vec::new(),
                dropped: Vec::new(),
                forced_load: None,
                report_seq: 0,
            });
        }
        for i in 0..hosts.len() {
            for j in 0..hosts.len() {
                if i != j {
                    let (t, s) = (hosts[j].tunnel, hosts[j].service);
                    hosts[i]
                        .engine
                        .add_peer(PeerId(j as u16), t, vec![s], Timestamp::ZERO)?;
                }
            }
        }
        let mut c = Self {
            hosts,
            clients: BTreeMap::new(),
            cfg,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            addr_owner,
            next_report: 0,
            unroutable: 0,
            router_icmp: 0,
            wire: Vec::new(),
            record_wire: false,
        };
        // One round of reports so every peer starts alive.
        c.report_round();
        c.run_for(c.cfg.latency * 2);
        Ok(c)
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
            let next = match next_event {
                Some(t) if t <= self.next_report => t,
                _ => self.next_report,
            };
            if next > end {
                break;
            }
            self.now = next;
            if next == self.next_report && next_event.is_none_or(|t| t > next) {
                self.report_round();
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

    fn report_round(&mut self) {
        let now = Timestamp(self.now);
        let n = self.hosts.len();
        for i in 0..n {
            if !self.hosts[i].alive {
                continue;
            }
            let h = &mut self.hosts[i];
            let open = h.forced_load.unwrap_or_else(|| h.server.open_connections());
            let figures = LoadFigures {
                open_connections: open,
                ..LoadFigures::default()
            };
            let _ = h.engine.set_local_load(figures, Capacity::default());
            h.engine.tick(now, 256);
            h.report_seq += 1;
            let report = LoadReport {
                seq: h.report_seq,
                figures,
                capacity: Capacity::default(),
                draining: false,
            };
            for j in 0..n {
                if j != i {
                    let at = self.now + self.cfg.latency.as_nanos() as u64;
                    self.push(
                        at,
                        Event::Report {
                            to: j,
                            from: i,
                            report,
                        },
                    );
                }
            }
        }
        self.next_report = self.now + self.cfg.report_interval.as_nanos() as u64;
    }

    fn handle(&mut self, e: Event) {
        let now = Timestamp(self.now);
        match e {
            Event::Report { to, from, report } => {
                if self.hosts[to].alive {
                    let _ = self.hosts[to]
                        .engine
                        .apply_report(PeerId(from as u16), &report, now);
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
        }
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
