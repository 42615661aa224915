//! What the example routers share: a static cluster on the library crates
//! alone (`dpr-io`'s TUN backend, host set-up and worker loop, an engine per
//! queue), with no control plane: every configured peer is taken as alive.
//!
//! It reads the fields it needs from a `dprd` configuration file (the
//! others are ignored), so the lab's files serve both.
#![allow(unreachable_pub)]

use dpr_io::host::{HostGuard, HostPlan};
use dpr_io::shard::{EngineSet, split_capacity};
use dpr_io::tun::{TunConfig, TunDevice};
use dpr_io::worker::{Workers, now_since};
use dpr_io::{BatchBackend, IoStats};
use dpr_packet::{FlowKey, IpProtocol};
use dpr_policy::{Policy, SplitMix64};
use dpr_router::{ClusterEngine, Counters, Engine, EngineConfig};
use dpr_table::{Capacity, LoadFigures, LoadReport, LoadTableConfig, PeerId};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The part of a `dprd` configuration file the examples use.
#[derive(Debug, Clone, Deserialize)]
pub struct StaticConfig {
    /// `[host]`.
    pub host: HostSection,
    /// `[backend]`.
    #[serde(default)]
    pub backend: BackendSection,
    /// `[tunnel]`.
    #[serde(default)]
    pub tunnel: TunnelSection,
    /// `[policy]`.
    #[serde(default)]
    pub policy: PolicySection,
    /// `[cluster]`.
    pub cluster: ClusterSection,
}

/// `[host]`.
#[derive(Debug, Clone, Deserialize)]
pub struct HostSection {
    /// This host's id.
    pub id: u16,
    /// Its tunnel address.
    pub tunnel_addr: Ipv4Addr,
    /// Its service addresses.
    pub service_addrs: Vec<Ipv4Addr>,
    /// The service ports.
    pub service_ports: Vec<u16>,
    /// The uplink interface.
    pub uplink: String,
}

/// `[backend]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BackendSection {
    /// TUN device name.
    pub tun_name: String,
    /// Queues (one worker and one engine each).
    pub queues: usize,
    /// Packets per batch.
    pub batch: usize,
}

impl Default for BackendSection {
    fn default() -> Self {
        Self {
            tun_name: "dpr0".into(),
            queues: 1,
            batch: 32,
        }
    }
}

/// `[tunnel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TunnelSection {
    /// Tunnel MTU.
    pub mtu: u16,
}

impl Default for TunnelSection {
    fn default() -> Self {
        Self { mtu: 1500 }
    }
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PolicySection {
    /// Redirect threshold.
    pub threshold: f64,
    /// Stateless hash seed.
    pub hash_seed: u64,
    /// Stateless hash buckets.
    pub hash_buckets: u32,
}

impl Default for PolicySection {
    fn default() -> Self {
        Self {
            threshold: 100.0,
            hash_seed: 0,
            hash_buckets: 4096,
        }
    }
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterSection {
    /// Report interval (the static reports come twice as often).
    #[serde(default = "default_interval")]
    pub report_interval_ms: u64,
    /// The peers.
    #[serde(default)]
    pub peers: Vec<PeerSection>,
}

fn default_interval() -> u64 {
    100
}

/// `[[cluster.peers]]`.
#[derive(Debug, Clone, Deserialize)]
pub struct PeerSection {
    /// Its id.
    pub id: u16,
    /// Its tunnel address.
    pub tunnel_addr: Ipv4Addr,
    /// Its service addresses.
    #[serde(default)]
    pub service_addrs: Vec<Ipv4Addr>,
}

impl StaticConfig {
    /// Reads `path`.
    pub fn load(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        toml::from_str(&text).map_err(|e| format!("{path}: {e}"))
    }

    fn engine_config(&self) -> EngineConfig {
        let v4 = |a: &[Ipv4Addr]| a.iter().map(|a| IpAddr::V4(*a)).collect();
        let mut e = EngineConfig::new(
            self.host.tunnel_addr.into(),
            v4(&self.host.service_addrs),
            self.host.service_ports.clone(),
        );
        e.tunnel_mtu = self.tunnel.mtu;
        e
    }

    fn load_table_config(&self) -> LoadTableConfig {
        LoadTableConfig {
            report_interval: Duration::from_millis(self.cluster.report_interval_ms.max(1)),
            ..LoadTableConfig::default()
        }
    }
}

/// Runs a router on this host until Ctrl-C or SIGTERM: TUN device, host
/// set-up (undone on the way out), an engine per queue with policies from
/// `make_policy`, the configured peers alive. With `measure_load`, this
/// host's open service connections are counted (sock_diag) every 10 ms, so
/// load-based policies see the host's load. Returns the engines' counters.
pub fn run(
    cfg: &StaticConfig,
    make_policy: &mut dyn FnMut() -> Box<dyn Policy + Send>,
    measure_load: bool,
) -> Result<(Counters, IoStats), String> {
    let mut tun = TunDevice::create(&TunConfig {
        name: cfg.backend.tun_name.clone(),
        mtu: cfg.tunnel.mtu,
        queues: cfg.backend.queues,
        persist: false,
        // The examples keep the plain device (one packet per read).
        offload: false,
    })
    .map_err(|e| format!("TUN device: {e}"))?;
    let peer_services: Vec<Ipv4Addr> = cfg
        .cluster
        .peers
        .iter()
        .flat_map(|p| p.service_addrs.iter().copied())
        .collect();
    let _guard = HostGuard::setup(&HostPlan {
        service_addrs: cfg
            .host
            .service_addrs
            .iter()
            .map(|a| IpAddr::V4(*a))
            .collect(),
        peer_service_addrs: peer_services,
        service_ports: cfg.host.service_ports.clone(),
        advmss: Some(dpr_io::host::advmss_for_mtu(cfg.tunnel.mtu)),
        ..HostPlan::new(
            &cfg.host.uplink,
            &tun.name,
            tun.ifindex,
            cfg.host.tunnel_addr,
        )
    })
    .map_err(|e| e.to_string())?;
    let queues = tun.take_queues();
    let n = queues.len();
    let engine = |ec: EngineConfig, i: usize, p: Box<dyn Policy + Send>| {
        Engine::new(
            ec,
            PeerId(cfg.host.id),
            Capacity::default(),
            cfg.load_table_config(),
            p,
            Box::new(SplitMix64::new(1 + i as u64)),
        )
        .map_err(|e| e.to_string())
    };
    let control = engine(cfg.engine_config(), n, make_policy())?;
    let mut shards = Vec::new();
    for i in 0..n {
        let mut ec = cfg.engine_config();
        ec.routes.capacity = split_capacity(ec.routes.capacity, n);
        ec.served.capacity = split_capacity(ec.served.capacity, n);
        shards.push(engine(ec, i, make_policy())?);
    }
    let (mut engines, shards) = EngineSet::new(control, shards);
    for p in &cfg.cluster.peers {
        let services = p.service_addrs.iter().map(|a| IpAddr::V4(*a)).collect();
        engines
            .add_peer(
                PeerId(p.id),
                p.tunnel_addr.into(),
                services,
                dpr_table::Timestamp::ZERO,
            )
            .map_err(|e| e.to_string())?;
    }
    let origin = Instant::now();
    let mut workers = Workers::new(n, origin, cfg.backend.batch);
    for (q, shard) in queues.into_iter().zip(shards) {
        let q = BatchBackend::new(q, cfg.backend.batch, usize::from(cfg.tunnel.mtu).max(1500));
        workers
            .spawn(q, shard)
            .map_err(|e| format!("worker: {e}"))?;
    }
    let mut sockets = if measure_load {
        Some(dpr_io::sockdiag::TcpCounter::open().map_err(|e| format!("sock_diag: {e}"))?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut seq = 0u64;
        // Reports faster than the load table's interval: no peer ever
        // looks late (a late peer's connections would be reset).
        let every = Duration::from_millis((cfg.cluster.report_interval_ms / 2).max(1));
        let mut reports = tokio::time::interval(every);
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = reports.tick() => {
                    // Static membership: every configured peer is alive.
                    seq += 1;
                    let now = now_since(origin);
                    for p in &cfg.cluster.peers {
                        let r = LoadReport { seq, figures: LoadFigures::default(), capacity: Capacity::default(), draining: false };
                        let _ = engines.apply_report(PeerId(p.id), &r, now);
                    }
                }
                _ = tick.tick() => {
                    if let Some(s) = sockets.as_mut() {
                        measure(&mut engines, s, cfg);
                    }
                    engines.tick(now_since(origin), 1024);
                }
            }
        }
        Ok::<(), String>(())
    })?;
    let stats = workers.stats();
    drop(workers);
    engines.tick(now_since(origin), 0);
    Ok((engines.counters(), IoStats::sum(&stats)))
}

/// Counts this host's open service connections once every shard has begun
/// noting what opens and ends meanwhile.
fn measure(engines: &mut EngineSet, s: &mut dpr_io::sockdiag::TcpCounter, cfg: &StaticConfig) {
    if !engines.is_measuring() {
        engines.begin_load_measurement();
        return;
    }
    if !engines.measurement_ready() {
        return;
    }
    let addrs: Vec<IpAddr> = cfg
        .host
        .service_addrs
        .iter()
        .map(|a| IpAddr::V4(*a))
        .collect();
    let mut socks = Vec::new();
    if s.open_sockets(&addrs, &cfg.host.service_ports, &mut socks)
        .is_err()
    {
        return;
    }
    let set: HashSet<(SocketAddr, SocketAddr)> =
        socks.iter().map(|s| (s.remote, s.local)).collect();
    let listed = move |f: &FlowKey| {
        f.protocol == IpProtocol::Tcp
            && set.contains(&(
                SocketAddr::new(f.src, f.src_port),
                SocketAddr::new(f.dst, f.dst_port),
            ))
    };
    let figures = LoadFigures {
        open_connections: u32::try_from(socks.len()).unwrap_or(u32::MAX),
        ..LoadFigures::default()
    };
    let _ = engines.finish_load_measurement(figures, Capacity::default(), Some(Arc::new(listed)));
}
