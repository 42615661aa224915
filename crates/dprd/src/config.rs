//! The daemon's TOML configuration: parsed with serde (unknown fields are
//! errors), then checked field by field. Every field is documented in
//! `docs/configuration.md`.

pub use crate::error::ConfigError;
use crate::error::Error;
use dpr_policy::{
    LeastLoad, Policy, StatelessHash, StatelessHashConfig, Threshold, ThresholdConfig,
    ThresholdTwoChoices, TwoChoices,
};
use dpr_router::cluster::{KeyRing, NodeConfig, PeerConfig, ReportMode};
use dpr_router::{DeadPeerAction, EngineConfig, TunnelAuth, TunnelKeys, VipConfig};
use dpr_table::{Capacity, ConnTableConfig, LoadMetric, LoadTableConfig, PeerId};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This host.
    pub host: HostSection,
    /// The packet backend.
    #[serde(default)]
    pub backend: BackendSection,
    /// The redirect policy.
    #[serde(default)]
    pub policy: PolicySection,
    /// How load is measured.
    #[serde(default)]
    pub load: LoadSection,
    /// The cluster: peers and load reports.
    #[serde(default)]
    pub cluster: ClusterSection,
    /// The connection routing table.
    #[serde(default)]
    pub table: TableSection,
    /// The tunnel between hosts.
    #[serde(default)]
    pub tunnel: TunnelSection,
    /// Admin socket, metrics, logs.
    #[serde(default)]
    pub admin: AdminSection,
    /// VIP mode: service addresses shared by every host behind ECMP.
    #[serde(default)]
    pub vip: VipSection,
    /// Health coupling to a BGP speaker (the announcement routes).
    #[serde(default)]
    pub bgp: crate::bgp::BgpSection,
    /// Seeds derived from the cluster key ([`Config::derive_seeds`]);
    /// never in the file.
    #[serde(skip)]
    pub derived: DerivedSeeds,
}

/// The secrets a running daemon derives from the cluster key: what a
/// client must not know (it could pick source ports that all land on one
/// host under the stateless hash, or in one bucket of the flow tables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DerivedSeeds {
    /// The flow tables' and the queue steering's hash seed (per host; it
    /// need not agree across hosts, only stay fixed while the tables live).
    pub flow_hash: Option<u64>,
    /// The stateless-hash policy's seed (the same on every host).
    pub policy_hash: Option<u64>,
    /// The keyed tunnel's tag keys (one per cluster key, the signing
    /// key's first).
    pub tunnel_keys: Option<TunnelKeys>,
}

/// `[host]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// Name for status output and logs.
    pub name: String,
    /// Cluster-wide unique id (0..=65535).
    pub id: u16,
    /// Unique tunnel address (outer IP-in-IP, load reports), on the uplink.
    pub tunnel_addr: IpAddr,
    /// This host's service addresses (on the uplink).
    pub service_addrs: Vec<IpAddr>,
    /// TCP service ports.
    pub service_ports: Vec<u16>,
    /// The uplink interface.
    pub uplink: String,
    /// Drop root to this user after setup (name or uid).
    #[serde(default)]
    pub user: Option<String>,
}

/// Backend kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// TUN device with policy routing.
    #[default]
    Tun,
    /// AF_XDP: an XDP program steers the router's traffic into AF_XDP
    /// sockets; forwarding leaves from the same memory. Falls back to
    /// `Tun` with a warning where it cannot start.
    AfXdp,
}

/// How the XDP program is attached (`backend.xdp_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum XdpModeSetting {
    /// Native where the driver supports it, else generic.
    #[default]
    Auto,
    /// Native (driver) mode only; falls back to TUN where unsupported.
    Native,
    /// Generic (skb) mode: every driver, slower.
    Generic,
}

/// `[backend]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendSection {
    /// `tun` or `af-xdp`.
    pub kind: BackendKind,
    /// TUN device name.
    pub tun_name: String,
    /// Queues (one worker thread each).
    pub queues: usize,
    /// Largest batch a worker processes under one engine lock.
    pub batch: usize,
    /// Routing table of the diversion into the TUN.
    pub divert_table: u32,
    /// Routing table of the advmss route copies.
    pub mss_table: u32,
    /// Preference of the first diversion rule.
    pub rule_priority: u32,
    /// New preference of the `local` rule (above ours).
    pub local_rule_priority: u32,
    /// AF_XDP: how the XDP program is attached.
    pub xdp_mode: XdpModeSetting,
    /// AF_XDP: the XDP program decapsulates plain IPv4-in-IPv4 packets of
    /// connections in progress itself and passes them to the kernel.
    pub xdp_decap: bool,
    /// AF_XDP: the XDP program forwards the packets of established
    /// redirected connections itself (the send side's fast path).
    pub xdp_fast_path: bool,
    /// At a stop (SIGTERM, SIGINT) while connections are routed to peers,
    /// leave the diversion in place (persistent TUN device, rules, XDP
    /// program) for the next `dprd run` to take over, so that in the gap
    /// their packets are held back instead of answered with resets by the
    /// local stack. `false`: always undo everything at a stop.
    pub hold_on_exit: bool,
    /// tun: TCP segmentation and checksum offloads on the TUN device
    /// (`IFF_VNET_HDR`): bulk TCP arrives in 64 KiB super-packets, cut
    /// into segments in userspace. Off where the kernel refuses.
    pub tun_offload: bool,
}

impl Default for BackendSection {
    fn default() -> Self {
        Self {
            kind: BackendKind::Tun,
            tun_name: "dpr0".into(),
            queues: 1,
            batch: 32,
            divert_table: 100,
            mss_table: 101,
            rule_priority: 10,
            local_rule_priority: 100,
            xdp_mode: XdpModeSetting::Auto,
            xdp_decap: true,
            xdp_fast_path: true,
            hold_on_exit: true,
            tun_offload: true,
        }
    }
}

/// Policy kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Serve below the threshold, else the least-loaded peer (the seed).
    #[default]
    Threshold,
    /// Always the least-loaded host.
    LeastLoad,
    /// Stateless: hash of the client's address and port.
    Hash,
    /// Power of two choices.
    P2c,
    /// Serve below the threshold, else the less loaded of two sampled
    /// peers (what `docs/simulation.md` recommends over reports alone).
    ThrP2c,
    /// Serve below the threshold, else the freshest peer that advertised
    /// it was idle, else as thr-p2c; this host advertises when it becomes
    /// idle (`docs/simulation.md`, section 6).
    JoinIdle,
}

/// Peers a join-idle host tells when it becomes idle (the simulator's
/// model, `docs/simulation.md` section 6).
pub const IDLE_ADVERT_FANOUT: usize = 3;

/// `[policy]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// Strategy.
    pub kind: PolicyKind,
    /// Threshold in load units per unit of capacity (threshold policy).
    pub threshold: f64,
    /// Cluster-wide seed of the hash policy; `None` (the default): derived
    /// from the cluster key, so it is secret and the same on every host.
    pub hash_seed: Option<u64>,
    /// Buckets of the hash policy.
    pub hash_buckets: u32,
    /// Seed of the random source (p2c); 0 = from the host id.
    pub seed: u64,
}

impl Default for PolicySection {
    fn default() -> Self {
        Self {
            kind: PolicyKind::JoinIdle,
            threshold: 100.0,
            hash_seed: None,
            hash_buckets: 65_536,
            seed: 0,
        }
    }
}

/// Load metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MetricKind {
    /// Open TCP connections on the service ports (from the kernel's socket table).
    #[default]
    OpenConnections,
}

/// `[load]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSection {
    /// The metric.
    pub metric: MetricKind,
    /// This host's CPU capacity relative to a reference host.
    pub capacity: f32,
    /// How often the local load is measured, in milliseconds.
    pub refresh_ms: u64,
    /// Count a connection's end when this host's application closes it
    /// (a `sock_ops` program on the cgroup v2 hierarchy counts the
    /// kernel's state changes as they happen) rather than at the client's
    /// FIN a round trip later. Falls back to the FINs, with a warning,
    /// where the kernel refuses the program.
    pub app_closes: bool,
}

impl Default for LoadSection {
    fn default() -> Self {
        Self {
            metric: MetricKind::OpenConnections,
            capacity: 1.0,
            refresh_ms: 100,
            app_closes: true,
        }
    }
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// Its id.
    pub id: u16,
    /// Name for status output (optional).
    #[serde(default)]
    pub name: Option<String>,
    /// Its tunnel address.
    pub tunnel_addr: IpAddr,
    /// Its service addresses.
    pub service_addrs: Vec<IpAddr>,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// UDP port of the control protocol (on the tunnel address).
    pub port: u16,
    /// Report interval in milliseconds.
    pub report_interval_ms: u64,
    /// A peer silent this long is dead (milliseconds); suspect after one
    /// interval.
    pub dead_after_ms: u64,
    /// File with the cluster key(s): `ID HEX` per line, the first signs.
    /// Relative paths are relative to the configuration file.
    pub key_file: Option<PathBuf>,
    /// How reports travel: `full-mesh`, `fan-out` or `multicast`.
    pub report_mode: ReportModeKind,
    /// Fan-out: peers each report goes to.
    pub fanout_peers: u16,
    /// Fan-out: other hosts' entries each report relays (at most 26).
    pub fanout_relay: u8,
    /// Multicast: the group every host joined.
    pub multicast_group: Option<IpAddr>,
    /// Each interval is shortened by a random fraction up to this.
    pub report_jitter: f64,
    /// Messages sent further than this from our clock are refused (ms).
    pub max_clock_skew_ms: u64,
    /// Ask the peers for our redirected connections after a start.
    pub recover_on_start: bool,
    /// Longest wait for their answers (ms), and longest wait without a new
    /// chunk once they arrive.
    pub recovery_timeout_ms: u64,
    /// Recovery answers this host sends are paced: at most
    /// `recovery_burst` chunks (about 94 IPv4 flows each) every
    /// `recovery_pace_ms`, all askers together.
    pub recovery_pace_ms: u64,
    /// Recovery answer chunks per `recovery_pace_ms`.
    pub recovery_burst: u32,
    /// A peer silent for 1.5 report intervals is probed every this many
    /// ms until it answers or is dead; 0: no probes (not used in fan-out
    /// mode).
    pub probe_interval_ms: u64,
    /// A drain ends at the latest after this many seconds.
    pub drain_deadline_s: u64,
    /// The peers.
    pub peers: Vec<PeerSection>,
}

/// `cluster.report_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportModeKind {
    /// One report to every peer each interval.
    FullMesh,
    /// One report to `fanout_peers` random peers, with relayed entries.
    FanOut,
    /// One report to `multicast_group`.
    Multicast,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            port: 6870,
            report_interval_ms: 200,
            dead_after_ms: 1000,
            key_file: None,
            report_mode: ReportModeKind::FullMesh,
            fanout_peers: 3,
            fanout_relay: 26,
            multicast_group: None,
            report_jitter: 0.2,
            max_clock_skew_ms: 30_000,
            recover_on_start: true,
            recovery_timeout_ms: 2000,
            recovery_pace_ms: 5,
            recovery_burst: 32,
            probe_interval_ms: 25,
            drain_deadline_s: 300,
            peers: Vec::new(),
        }
    }
}

/// `[vip]`: VIP mode (`docs/configuration.md`, `docs/deployment.md`).
/// Off while `addrs` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VipSection {
    /// The shared service addresses (IPv4 and IPv6), the same on every
    /// host; not in `host.service_addrs` nor in any peer's.
    pub addrs: Vec<IpAddr>,
    /// How long a missed flow's packets wait for a peer's claim before
    /// they go to the local stack (ms).
    pub claim_deadline_ms: u64,
    /// Ask again after this long without a claim (ms).
    pub reask_ms: u64,
    /// Packets held at once, all flows together.
    pub max_held_packets: usize,
    /// Packets held per flow.
    pub max_held_per_flow: usize,
    /// Flows waiting for a claim at once.
    pub max_held_flows: usize,
}

impl Default for VipSection {
    fn default() -> Self {
        let d = VipConfig::new(Vec::new());
        Self {
            addrs: Vec::new(),
            claim_deadline_ms: millis(d.claim_deadline),
            reask_ms: millis(d.reask_after),
            max_held_packets: d.max_held_packets,
            max_held_per_flow: d.max_held_per_flow,
            max_held_flows: d.max_held_flows,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `[table]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableSection {
    /// Connections the routing table holds (and the served table).
    pub capacity: u32,
    /// Idle timeout before the handshake completes (seconds).
    pub half_open_timeout_s: u64,
    /// Idle timeout of an established connection (seconds).
    pub established_timeout_s: u64,
    /// Idle timeout after a FIN (seconds).
    pub closing_timeout_s: u64,
    /// Entries of each table that half-open connections may take from
    /// established ones when the table is full; beyond it a SYN evicts only
    /// half-open entries (a SYN flood cannot empty the table). 0: a quarter
    /// of `capacity`.
    pub half_open_reserve: u32,
}

impl Default for TableSection {
    fn default() -> Self {
        let d = ConnTableConfig::default();
        Self {
            capacity: 1 << 16,
            half_open_timeout_s: d.half_open_timeout.as_secs(),
            established_timeout_s: d.established_timeout.as_secs(),
            closing_timeout_s: d.closing_timeout.as_secs(),
            half_open_reserve: 0,
        }
    }
}

/// What to do with a dead peer's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeadPeerKind {
    /// RST to the client.
    #[default]
    Reset,
    /// Drop.
    Drop,
}

/// `[tunnel] auth`: how redirected packets prove they come from a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TunnelAuthKind {
    /// GRE with a tag keyed from the cluster key (the default).
    #[default]
    Key,
    /// Plain IP-in-IP, accepted from any peer's tunnel address
    /// (interoperation only: anyone who can spoof a peer's address can
    /// open connections).
    None,
}

/// `[tunnel]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelSection {
    /// Path MTU between hosts.
    pub mtu: u16,
    /// Clamp the MSS of connections that cross the tunnel.
    pub mss_clamp: bool,
    /// Outer TTL.
    pub ttl: u8,
    /// `reset` or `drop`.
    pub dead_peer: DeadPeerKind,
    /// `key` (GRE with a keyed tag) or `none` (plain IP-in-IP).
    pub auth: TunnelAuthKind,
}

impl TunnelSection {
    /// Bytes the tunnel adds in front of a redirected packet: the outer
    /// IPv4 header, and the GRE header when keyed.
    pub fn overhead(&self) -> u16 {
        match self.auth {
            TunnelAuthKind::Key => 20 + dpr_packet::gre::HEADER_LEN as u16,
            TunnelAuthKind::None => 20,
        }
    }
}

impl Default for TunnelSection {
    fn default() -> Self {
        Self {
            mtu: 1500,
            mss_clamp: true,
            ttl: 64,
            dead_peer: DeadPeerKind::Reset,
            auth: TunnelAuthKind::Key,
        }
    }
}

/// The hash policy's seed in a configuration whose key was not read
/// (`dprd check-config`); a running daemon always derives its own.
const UNDERIVED_SEED: u64 = 0x0064_7072;

/// The admin socket's default path (`[admin] socket`).
pub const DEFAULT_SOCKET: &str = "/run/dprd/dprd.sock";

/// The state directory's default (`[admin] state_dir`).
pub const DEFAULT_STATE_DIR: &str = "/run/dprd";

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// The admin unix socket.
    pub socket: PathBuf,
    /// Prometheus metrics listen address (`None`: off).
    pub metrics: Option<SocketAddr>,
    /// Log level: error, warn, info, debug, trace.
    pub log_level: String,
    /// How many of the latest new-connection decisions to keep for the
    /// admin request `decisions` (0: none kept). `dprd lab` uses it to
    /// compare the load the engine decided on with the true load.
    pub decision_log: usize,
    /// Where the instance lock (`dprd.lock`) and the host set-up journal
    /// (`dprd.state`) live: one daemon per directory.
    pub state_dir: PathBuf,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            metrics: None,
            log_level: "info".into(),
            decision_log: 0,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The MSS the serving host must announce on redirected connections:
/// the tunnel MTU less the tunnel's `overhead` (20 for IP-in-IP, 32 with
/// the keyed tunnel's GRE header) and the inner IPv4 + TCP headers (40).
pub fn clamped_mss(mtu: u16, overhead: u16) -> u16 {
    mtu.saturating_sub(overhead + 40)
}

impl Config {
    /// Parses TOML text (syntax and unknown fields) and validates it.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and parses a file, resolves a relative `cluster.key_file`
    /// against the file's directory, and checks the key file too. The
    /// error names the file and, beneath it, the field.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let in_file = |source| Error::Config {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(|e| in_file(ConfigError::Read(e)))?;
        let mut c = Self::parse(&text).map_err(in_file)?;
        if let Some(k) = &c.cluster.key_file {
            if k.is_relative() {
                let dir = path.parent().unwrap_or(Path::new("."));
                c.cluster.key_file = Some(dir.join(k));
            }
        }
        c.load_keys().map_err(in_file)?;
        Ok(c)
    }

    /// Reads the cluster key file.
    pub fn load_keys(&self) -> Result<KeyRing, ConfigError> {
        let Some(path) = &self.cluster.key_file else {
            return Err(bad(
                "cluster.key_file",
                "required: every control message is signed",
            ));
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFileRead {
            path: path.clone(),
            source,
        })?;
        KeyRing::parse(&text).map_err(|source| ConfigError::KeyFile {
            path: path.clone(),
            source,
        })
    }

    /// The cluster protocol's configuration.
    pub fn node_config(&self) -> NodeConfig {
        let c = &self.cluster;
        let mut own = self.host.service_addrs.clone();
        own.extend(self.vip.addrs.iter().copied());
        let mut n = NodeConfig::new(self.local_id(), own);
        n.capacity = self.capacity();
        n.report_interval = Duration::from_millis(c.report_interval_ms);
        n.jitter = c.report_jitter;
        n.mode = match c.report_mode {
            ReportModeKind::FullMesh => ReportMode::FullMesh,
            ReportModeKind::FanOut => ReportMode::FanOut {
                k: c.fanout_peers,
                relay: c.fanout_relay,
            },
            ReportModeKind::Multicast => match c.multicast_group {
                Some(g) => ReportMode::Multicast(g),
                None => ReportMode::FullMesh,
            },
        };
        n.max_clock_skew = Duration::from_millis(c.max_clock_skew_ms);
        n.recover_on_start = c.recover_on_start;
        n.recovery_timeout = Duration::from_millis(c.recovery_timeout_ms);
        n.recovery_pace = Duration::from_millis(c.recovery_pace_ms);
        n.recovery_burst = c.recovery_burst;
        n.probe_interval = Duration::from_millis(c.probe_interval_ms);
        n.drain_deadline = Duration::from_secs(c.drain_deadline_s);
        n.seed = self.policy.seed ^ u64::from(self.host.id) << 48;
        if self.policy.kind == PolicyKind::JoinIdle {
            n.idle_advert_fanout = IDLE_ADVERT_FANOUT;
        }
        n
    }

    /// The peers as the cluster protocol takes them.
    pub fn peer_configs(&self) -> Vec<PeerConfig> {
        self.cluster
            .peers
            .iter()
            .map(|p| PeerConfig {
                id: PeerId(p.id),
                tunnel_addr: p.tunnel_addr,
                service_addrs: self.peer_service_addrs(p),
            })
            .collect()
    }

    /// A peer's service addresses: its own, and the VIPs (every host
    /// holds them; a peer redirects connections to them).
    pub fn peer_service_addrs(&self, p: &PeerSection) -> Vec<IpAddr> {
        let mut v = p.service_addrs.clone();
        v.extend(self.vip.addrs.iter().copied());
        v
    }

    /// VIP mode's engine configuration, `None` while `vip.addrs` is empty.
    pub fn vip_config(&self) -> Option<VipConfig> {
        if self.vip.addrs.is_empty() {
            return None;
        }
        let v = &self.vip;
        Some(VipConfig {
            claim_deadline: Duration::from_millis(v.claim_deadline_ms),
            reask_after: Duration::from_millis(v.reask_ms),
            max_held_packets: v.max_held_packets,
            max_held_per_flow: v.max_held_per_flow,
            max_held_flows: v.max_held_flows,
            ..VipConfig::new(v.addrs.clone())
        })
    }

    /// Checks every field beyond what the types say; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let h = &self.host;
        if h.name.is_empty() {
            return Err(bad("host.name", "must not be empty"));
        }
        if h.uplink.is_empty() || h.uplink.len() > 15 {
            return Err(bad(
                "host.uplink",
                "must be an interface name of 1 to 15 bytes",
            ));
        }
        if !h.tunnel_addr.is_ipv4() {
            return Err(bad(
                "host.tunnel_addr",
                "the TUN backend's host setup is IPv4-only for now",
            ));
        }
        // With VIPs a host needs no address of its own (every host serves
        // the shared ones); without, it needs one.
        if h.service_addrs.is_empty() && self.vip.addrs.is_empty() {
            return Err(bad(
                "host.service_addrs",
                "at least one service address (or a [vip] addrs) is needed",
            ));
        }
        for (i, a) in h.service_addrs.iter().enumerate() {
            if a.is_unspecified() || a.is_multicast() {
                return Err(bad(
                    format!("host.service_addrs[{i}]"),
                    "must be a unicast address (IPv4 or IPv6)",
                ));
            }
        }
        if self.backend.tun_name.is_empty() || self.backend.tun_name.len() > 15 {
            return Err(bad("backend.tun_name", "must be 1 to 15 bytes"));
        }
        if self.backend.queues == 0 || self.backend.queues > 64 {
            return Err(bad("backend.queues", "must be 1 ..= 64"));
        }
        if self.backend.batch == 0 || self.backend.batch > 1024 {
            return Err(bad("backend.batch", "must be 1 ..= 1024"));
        }
        let tables = [self.backend.divert_table, self.backend.mss_table];
        if tables.iter().any(|t| *t == 0 || (253..=255).contains(t)) || tables[0] == tables[1] {
            return Err(bad(
                "backend.divert_table",
                "divert_table and mss_table must differ and not be 0, 253 (default), 254 (main) or 255 (local)",
            ));
        }
        self.bgp
            .validate(self.backend.divert_table, self.backend.mss_table)?;
        if self.backend.local_rule_priority <= self.backend.rule_priority + 5 {
            return Err(bad(
                "backend.local_rule_priority",
                "must be above rule_priority + 5 (the local rule moves below ours)",
            ));
        }
        if !(self.load.capacity.is_finite() && self.load.capacity > 0.0) {
            return Err(bad("load.capacity", "must be a positive number"));
        }
        if self.load.refresh_ms == 0 {
            return Err(bad("load.refresh_ms", "must be at least 1"));
        }
        let c = &self.cluster;
        if c.port == 0 {
            return Err(bad("cluster.port", "must not be 0"));
        }
        if c.report_interval_ms == 0 {
            return Err(bad("cluster.report_interval_ms", "must be at least 1"));
        }
        if c.dead_after_ms < 2 * c.report_interval_ms {
            return Err(bad(
                "cluster.dead_after_ms",
                "must be at least two report intervals",
            ));
        }
        if let Some(k) = &c.key_file {
            if k.as_os_str().is_empty() {
                return Err(bad("cluster.key_file", "must not be empty"));
            }
        }
        if !(0.0..0.5).contains(&c.report_jitter) {
            return Err(bad("cluster.report_jitter", "must be in 0 .. 0.5"));
        }
        if c.max_clock_skew_ms == 0 {
            return Err(bad("cluster.max_clock_skew_ms", "must be at least 1"));
        }
        if c.recovery_pace_ms == 0 {
            return Err(bad("cluster.recovery_pace_ms", "must be at least 1"));
        }
        if c.recovery_burst == 0 {
            return Err(bad("cluster.recovery_burst", "must be at least 1"));
        }
        if c.probe_interval_ms > c.report_interval_ms {
            return Err(bad(
                "cluster.probe_interval_ms",
                "at most one report interval",
            ));
        }
        match c.report_mode {
            ReportModeKind::FanOut if c.fanout_peers == 0 => {
                return Err(bad("cluster.fanout_peers", "must be at least 1"));
            }
            ReportModeKind::FanOut if c.fanout_relay > 26 => {
                return Err(bad(
                    "cluster.fanout_relay",
                    "at most 26 entries fit one report",
                ));
            }
            ReportModeKind::Multicast if !c.multicast_group.is_some_and(|g| g.is_multicast()) => {
                return Err(bad(
                    "cluster.multicast_group",
                    "report_mode = \"multicast\" needs a multicast group address",
                ));
            }
            _ => {}
        }
        let mut ids = vec![h.id];
        let mut tunnels = vec![h.tunnel_addr];
        let mut services: Vec<IpAddr> = h.service_addrs.clone();
        for (i, p) in c.peers.iter().enumerate() {
            let f = |x: &str| format!("cluster.peers[{i}].{x}");
            if ids.contains(&p.id) {
                return Err(bad(
                    f("id"),
                    format!("id {} is used twice (or is this host's)", p.id),
                ));
            }
            ids.push(p.id);
            if !p.tunnel_addr.is_ipv4() {
                return Err(bad(f("tunnel_addr"), "must be IPv4 like host.tunnel_addr"));
            }
            if tunnels.contains(&p.tunnel_addr) {
                return Err(bad(f("tunnel_addr"), "already used by another host"));
            }
            tunnels.push(p.tunnel_addr);
            if p.service_addrs.is_empty() && self.vip.addrs.is_empty() {
                return Err(bad(
                    f("service_addrs"),
                    "at least one service address (or a [vip] addrs) is needed",
                ));
            }
            for a in &p.service_addrs {
                if !a.is_ipv4() {
                    return Err(bad(f("service_addrs"), "IPv4 only for now"));
                }
                if services.contains(a) {
                    return Err(bad(
                        f("service_addrs"),
                        format!("{a} is already another host's"),
                    ));
                }
                services.push(*a);
            }
        }
        for (i, a) in self.vip.addrs.iter().enumerate() {
            let f = format!("vip.addrs[{i}]");
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                return Err(bad(f, "must be a unicast address"));
            }
            if services.contains(a) || tunnels.contains(a) {
                return Err(bad(
                    f,
                    format!(
                        "{a} is also a host's own service or tunnel address: a VIP is shared, \
                         list it only here"
                    ),
                ));
            }
            if self.vip.addrs[..i].contains(a) {
                return Err(bad(f, format!("{a} is listed twice")));
            }
        }
        if tunnels.iter().any(|t| services.contains(t)) {
            return Err(bad(
                "host.tunnel_addr",
                "tunnel addresses must differ from every service address",
            ));
        }
        if self.table.capacity == 0 || self.table.capacity > dpr_table::conn::MAX_CAPACITY {
            return Err(bad("table.capacity", "must be 1 ..= 2^30"));
        }
        if self.table.half_open_reserve > self.table.capacity {
            return Err(bad(
                "table.half_open_reserve",
                "must be at most table.capacity (0: a quarter of it)",
            ));
        }
        for (name, v) in [
            ("table.half_open_timeout_s", self.table.half_open_timeout_s),
            (
                "table.established_timeout_s",
                self.table.established_timeout_s,
            ),
            ("table.closing_timeout_s", self.table.closing_timeout_s),
        ] {
            if v == 0 {
                return Err(bad(name, "must be at least 1 second"));
            }
        }
        if self.tunnel.mtu < 576 {
            return Err(bad("tunnel.mtu", "must be at least 576"));
        }
        if self.tunnel.ttl == 0 {
            return Err(bad("tunnel.ttl", "must be at least 1"));
        }
        if self.admin.decision_log > dpr_router::config::MAX_DECISION_LOG {
            return Err(bad("admin.decision_log", "must be at most 1048576"));
        }
        if !matches!(
            self.admin.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(bad(
                "admin.log_level",
                "must be error, warn, info, debug or trace",
            ));
        }
        // What the lower layers check, reported with our field names.
        if let Some(v) = self.vip_config() {
            v.validate().map_err(|e| {
                let field = match e.field {
                    "vip.reask_after" => "vip.reask_ms",
                    "vip.claim_deadline" => "vip.claim_deadline_ms",
                    f => f,
                };
                bad(field, e.reason)
            })?;
        }
        self.engine_config()
            .validate()
            .map_err(|e| bad(format!("(engine) {}", e.field), e.reason))?;
        self.load_table_config()
            .validate()
            .map_err(|e| bad("cluster", e.to_string()))?;
        self.make_policy().map_err(|e| {
            let dpr_policy::PolicyError::InvalidConfig { field, reason } = e;
            let field = if field == "buckets" {
                "hash_buckets"
            } else {
                field
            };
            bad(format!("policy.{field}"), reason)
        })?;
        Ok(())
    }

    /// Derives the flow-hash seeds from the cluster key (`dprd run` does,
    /// at start and on reload: the policy takes the new one, the tables
    /// keep theirs until a restart).
    pub fn derive_seeds(&mut self, keys: &dpr_router::cluster::KeyRing) {
        self.derived = DerivedSeeds {
            flow_hash: Some(keys.derive_seed(b"dpr flow table seed v1")),
            policy_hash: Some(keys.derive_seed(b"dpr stateless hash seed v1")),
            tunnel_keys: Some(keys.tunnel_keys()),
        };
    }

    /// The engine's configuration (the flow-hash seed derived from the
    /// cluster key once [`derive_seeds`](Self::derive_seeds) ran).
    pub fn engine_config(&self) -> EngineConfig {
        let mut services = self.host.service_addrs.clone();
        services.extend(self.vip.addrs.iter().copied());
        let mut e = EngineConfig::new(
            self.host.tunnel_addr,
            services,
            self.host.service_ports.clone(),
        );
        e.vip = self.vip_config();
        e.tunnel_mtu = self.tunnel.mtu;
        e.clamp_mss = self.tunnel.mss_clamp;
        e.outer_ttl = self.tunnel.ttl;
        e.dead_peer = match self.tunnel.dead_peer {
            DeadPeerKind::Reset => DeadPeerAction::Reset,
            DeadPeerKind::Drop => DeadPeerAction::Drop,
        };
        let t = ConnTableConfig {
            capacity: self.table.capacity,
            half_open_timeout: Duration::from_secs(self.table.half_open_timeout_s),
            established_timeout: Duration::from_secs(self.table.established_timeout_s),
            closing_timeout: Duration::from_secs(self.table.closing_timeout_s),
            half_open_reserve: self.table.half_open_reserve,
            ..ConnTableConfig::default()
        };
        e.routes = t;
        e.served = t;
        if let Some(seed) = self.derived.flow_hash {
            e.flow_hash_seed = seed;
        }
        e.decision_log = self.admin.decision_log;
        // Keyed once the key file was read (`dprd run`); `check-config`
        // builds no engine that sends anything.
        e.tunnel_auth = match (self.tunnel.auth, &self.derived.tunnel_keys) {
            (TunnelAuthKind::Key, Some(k)) => TunnelAuth::Key(k.clone()),
            _ => TunnelAuth::None,
        };
        // AF_XDP: the program passes the keyed flows the engines accepted.
        e.keyed_flow_events = self.backend.kind == BackendKind::AfXdp
            && self.backend.xdp_decap
            && matches!(e.tunnel_auth, TunnelAuth::Key(_));
        e
    }

    /// The load table's configuration.
    pub fn load_table_config(&self) -> LoadTableConfig {
        let interval = self.cluster.report_interval_ms.max(1);
        let dead = self.cluster.dead_after_ms.div_ceil(interval).max(2);
        LoadTableConfig {
            report_interval: Duration::from_millis(interval),
            suspect_after_missed: 1,
            dead_after_missed: u32::try_from(dead).unwrap_or(u32::MAX),
            metric: match self.load.metric {
                MetricKind::OpenConnections => LoadMetric::OpenConnections,
            },
            ..LoadTableConfig::default()
        }
    }

    /// This host's capacity.
    pub fn capacity(&self) -> Capacity {
        Capacity {
            cpu: self.load.capacity,
            memory: 1.0,
        }
    }

    /// The policy.
    pub fn make_policy(&self) -> Result<Box<dyn Policy + Send>, dpr_policy::PolicyError> {
        Ok(match self.policy.kind {
            PolicyKind::Threshold => Box::new(Threshold::new(ThresholdConfig {
                threshold: self.policy.threshold,
            })?),
            PolicyKind::LeastLoad => Box::new(LeastLoad),
            PolicyKind::Hash => Box::new(StatelessHash::new(StatelessHashConfig {
                seed: self
                    .policy
                    .hash_seed
                    .or(self.derived.policy_hash)
                    .unwrap_or(UNDERIVED_SEED),
                buckets: self.policy.hash_buckets,
            })?),
            PolicyKind::P2c => Box::new(TwoChoices),
            PolicyKind::ThrP2c => Box::new(ThresholdTwoChoices::new(ThresholdConfig {
                threshold: self.policy.threshold,
            })?),
            PolicyKind::JoinIdle => {
                Box::new(dpr_policy::JoinIdle::new(dpr_policy::JoinIdleConfig {
                    threshold: self.policy.threshold,
                    ..dpr_policy::JoinIdleConfig::default()
                })?)
            }
        })
    }

    /// This host's id.
    pub fn local_id(&self) -> PeerId {
        PeerId(self.host.id)
    }

    /// The peers' service addresses (IPv4), to be held on the TUN.
    pub fn peer_service_v4(&self) -> Vec<Ipv4Addr> {
        self.cluster
            .peers
            .iter()
            .flat_map(|p| p.service_addrs.iter())
            .filter_map(|a| match a {
                IpAddr::V4(v) => Some(*v),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// (peer's tunnel address, one of its service addresses and ports): the
    /// pairs the XDP program may decapsulate itself.
    pub fn peer_tunnel_services(&self) -> Vec<(IpAddr, std::net::SocketAddr)> {
        let mut v = Vec::new();
        for p in &self.cluster.peers {
            for a in &self.peer_service_addrs(p) {
                for port in &self.host.service_ports {
                    v.push((p.tunnel_addr, std::net::SocketAddr::new(*a, *port)));
                }
            }
        }
        v
    }

    /// Every (service address, service port) pair this host serves:
    /// the connections its load counts.
    pub fn service_pairs(&self) -> Vec<(IpAddr, u16)> {
        self.all_service_addrs()
            .into_iter()
            .flat_map(|a| self.host.service_ports.iter().map(move |&p| (a, p)))
            .collect()
    }

    /// Every service address this host may be asked to serve (its own and
    /// its peers'): what the local load counts.
    pub fn all_service_addrs(&self) -> Vec<IpAddr> {
        let mut v = self.host.service_addrs.clone();
        for p in &self.cluster.peers {
            v.extend(p.service_addrs.iter().copied());
        }
        v.extend(self.vip.addrs.iter().copied());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[host]
name = "h0"
id = 0
tunnel_addr = "198.19.0.1"
service_addrs = ["198.18.0.1"]
service_ports = [80]
uplink = "eth0"

[[cluster.peers]]
id = 1
tunnel_addr = "198.19.0.2"
service_addrs = ["198.18.0.2"]
"#;

    #[test]
    fn flow_hash_seeds_are_secrets_of_the_cluster_key() {
        use dpr_packet::{FlowHasher, FlowKey, IpProtocol};
        use dpr_policy::stateless_hash::bucket_of;
        use dpr_router::cluster::KeyRing;
        let ring = |byte: u8| {
            let key = [byte; 32];
            KeyRing::new(&[(1, &key[..])]).unwrap_or_else(|e| unreachable!("{e}"))
        };
        let seeds = |r: &KeyRing| {
            let mut c = Config::parse(GOOD).unwrap_or_else(|e| unreachable!("{e}"));
            assert_eq!(c.policy.hash_seed, None, "no constant by default");
            c.derive_seeds(r);
            (
                c.engine_config().flow_hash_seed,
                c.derived.policy_hash.unwrap_or(0),
            )
        };
        let (a, b) = (seeds(&ring(1)), seeds(&ring(2)));
        // Two hosts of one cluster (one key file) agree.
        assert_eq!(seeds(&ring(1)), a);
        // Two clusters with different keys do not, and neither uses the
        // engine's public default.
        assert_ne!(a.0, b.0);
        assert_ne!(a.1, b.1);
        let default = dpr_router::EngineConfig::new(
            "198.18.0.11"
                .parse()
                .unwrap_or_else(|e| unreachable!("{e}")),
            vec![],
            vec![80],
        )
        .flow_hash_seed;
        assert!(a.0 != default && b.0 != default);
        // The same flows land in other buckets of the stateless hash.
        let (ha, hb) = (FlowHasher::new(a.1), FlowHasher::new(b.1));
        let moved = (0..1000u16)
            .filter(|p| {
                let f = FlowKey::new(
                    IpProtocol::Tcp,
                    "198.18.100.1"
                        .parse()
                        .unwrap_or_else(|e| unreachable!("{e}")),
                    40_000 + p,
                    "198.18.0.1".parse().unwrap_or_else(|e| unreachable!("{e}")),
                    80,
                );
                bucket_of(&ha, &f, 65_536) != bucket_of(&hb, &f, 65_536)
            })
            .count();
        assert!(moved > 990, "{moved} of 1000 flows hashed differently");
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::parse(GOOD).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.cluster.port, 6870);
        assert_eq!(c.backend.kind, BackendKind::Tun);
        assert_eq!(c.peer_service_v4(), vec![Ipv4Addr::new(198, 18, 0, 2)]);
        assert_eq!(c.load_table_config().dead_after_missed, 5);
        assert_eq!(c.load_table_config().suspect_after_missed, 1);
        assert_eq!(c.node_config().mode, ReportMode::FullMesh);
    }

    fn err_of(text: &str) -> ConfigError {
        match Config::parse(text) {
            Ok(_) => unreachable!("expected an error"),
            Err(e) => e,
        }
    }

    fn field_of(text: &str) -> String {
        let e = err_of(text);
        e.field()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string())
    }

    #[test]
    fn vip_mode_is_off_by_default_and_shares_its_addresses_with_every_peer() {
        let c = Config::parse(GOOD).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.vip_config(), None);
        assert_eq!(c.engine_config().vip, None);
        let text = format!(
            "{GOOD}\n[vip]\naddrs = [\"198.18.0.10\", \"2001:db8::10\"]\nclaim_deadline_ms = 40\n"
        );
        let c = Config::parse(&text).unwrap_or_else(|e| unreachable!("{e}"));
        let vips: Vec<IpAddr> = vec![
            "198.18.0.10"
                .parse()
                .unwrap_or_else(|e| unreachable!("{e}")),
            "2001:db8::10"
                .parse()
                .unwrap_or_else(|e| unreachable!("{e}")),
        ];
        let e = c.engine_config();
        let v = e.vip.clone().unwrap_or_else(|| unreachable!("VIP mode"));
        assert_eq!(v.addrs, vips);
        assert_eq!(v.claim_deadline, Duration::from_millis(40));
        // Served here, announced in reports, and accepted from every peer.
        assert!(vips.iter().all(|a| e.service_addrs.contains(a)));
        assert!(
            vips.iter()
                .all(|a| c.node_config().service_addrs.contains(a))
        );
        let peers = c.peer_configs();
        assert!(vips.iter().all(|a| peers[0].service_addrs.contains(a)));
        assert!(vips.iter().all(|a| c.all_service_addrs().contains(a)));
        assert!(
            c.xdp_plan()
                .service_addrs
                .iter()
                .filter(|a| vips.contains(a))
                .count()
                == 2
        );
        // The program decapsulates no peer's VIP flows itself: the engine
        // must see a stale route's packets (ECMP, a reused 4-tuple).
        let plan = c.xdp_plan();
        assert!(plan.peers.iter().all(|p| !p.service_addrs.is_empty()));
        assert!(
            plan.peers
                .iter()
                .all(|p| p.service_addrs.iter().all(|a| !vips.contains(a)))
        );
    }

    #[test]
    fn a_vip_only_host_needs_no_service_address_of_its_own() {
        let vip_only = GOOD
            .replace("service_addrs = [\"198.18.0.1\"]", "service_addrs = []")
            .replace("service_addrs = [\"198.18.0.2\"]", "service_addrs = []");
        // Without VIPs it serves nothing: refused, naming the field.
        match Config::parse(&vip_only) {
            Err(ConfigError::Field { field, .. }) => assert_eq!(field, "host.service_addrs"),
            other => unreachable!("{other:?}"),
        }
        let text = format!("{vip_only}\n[vip]\naddrs = [\"198.18.0.10\", \"2001:db8::10\"]\n");
        let c = Config::parse(&text).unwrap_or_else(|e| unreachable!("{e}"));
        let vips = c.vip.addrs.clone();
        assert_eq!(c.engine_config().service_addrs, vips);
        assert_eq!(c.peer_configs()[0].service_addrs, vips);
        assert_eq!(c.xdp_plan().service_addrs, vips);
    }

    #[test]
    fn bad_vip_settings_name_their_field() {
        let with = |extra: &str| format!("{GOOD}\n[vip]\n{extra}\n");
        for (extra, field) in [
            ("addrs = [\"198.18.0.1\"]", "vip.addrs[0]"),
            ("addrs = [\"198.18.0.2\"]", "vip.addrs[0]"),
            ("addrs = [\"198.19.0.1\"]", "vip.addrs[0]"),
            ("addrs = [\"0.0.0.0\"]", "vip.addrs[0]"),
            ("addrs = [\"198.18.0.10\", \"198.18.0.10\"]", "vip.addrs[1]"),
            (
                "addrs = [\"198.18.0.10\"]\nreask_ms = 50\nclaim_deadline_ms = 50",
                "vip.reask_ms",
            ),
            (
                "addrs = [\"198.18.0.10\"]\nclaim_deadline_ms = 0",
                "vip.claim_deadline_ms",
            ),
            (
                "addrs = [\"198.18.0.10\"]\nmax_held_packets = 0",
                "vip.max_held_packets",
            ),
            (
                "addrs = [\"198.18.0.10\"]\nmax_held_per_flow = 65",
                "vip.max_held_per_flow",
            ),
            (
                "addrs = [\"198.18.0.10\"]\nmax_held_flows = 0",
                "vip.max_held_flows",
            ),
        ] {
            assert_eq!(field_of(&with(extra)), field, "{extra}");
        }
        // An unknown key is a parse error, not ignored.
        assert!(Config::parse(&with("adresses = []")).is_err());
    }

    #[test]
    fn tunnel_auth_is_key_by_default_none_on_request_and_named_when_bad() {
        let c = Config::parse(GOOD).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.tunnel.auth, TunnelAuthKind::Key);
        assert_eq!(c.tunnel.overhead(), 32);
        assert_eq!(clamped_mss(c.tunnel.mtu, c.tunnel.overhead()), 1428);
        // Without the key file read, the engine cannot key anything yet.
        assert_eq!(c.engine_config().tunnel_auth, TunnelAuth::None);
        let mut keyed = c.clone();
        let ring = KeyRing::parse(&format!("3 {}\n", "ab".repeat(32)))
            .unwrap_or_else(|e| unreachable!("{e}"));
        keyed.derive_seeds(&ring);
        match keyed.engine_config().tunnel_auth {
            TunnelAuth::Key(k) => assert_eq!(k.ids(), vec![3]),
            other => unreachable!("{other:?}"),
        }
        let none = Config::parse(&format!("[tunnel]\nauth = \"none\"\n{GOOD}"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(none.tunnel.auth, TunnelAuthKind::None);
        assert_eq!(clamped_mss(none.tunnel.mtu, none.tunnel.overhead()), 1440);
        let mut derived = none.clone();
        derived.derive_seeds(&ring);
        assert_eq!(derived.engine_config().tunnel_auth, TunnelAuth::None);
        let e = err_of(&format!("[tunnel]\nauth = \"hmac\"\n{GOOD}"));
        assert!(matches!(e, ConfigError::Syntax(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("auth") && text.contains("`key`"), "{text}");
    }

    #[test]
    fn errors_name_the_field() {
        let f = field_of(&GOOD.replace("198.19.0.2", "198.19.0.1"));
        assert_eq!(f, "cluster.peers[0].tunnel_addr");
        assert_eq!(
            err_of(&GOOD.replace("198.19.0.2", "198.19.0.1")).to_string(),
            "`cluster.peers[0].tunnel_addr`: already used by another host"
        );
        assert_eq!(
            field_of(&GOOD.replace("id = 1", "id = 0")),
            "cluster.peers[0].id"
        );
        let f = field_of(&format!("{GOOD}\n[policy]\nthreshold = -1.0\n"));
        assert_eq!(f, "policy.threshold");
        let e = err_of(&format!(
            "{GOOD}\n[backend]\nkind = \"af-xdp\"\nxdp_mode = \"fast\"\n"
        ));
        assert!(matches!(e, ConfigError::Syntax(_)), "{e:?}");
        assert!(e.to_string().contains("fast"), "{e}");
        let c = Config::parse(&format!(
            "{GOOD}\n[backend]\nkind = \"af-xdp\"\nxdp_mode = \"generic\"\n"
        ))
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.backend.kind, BackendKind::AfXdp);
        assert_eq!(c.backend.xdp_mode, XdpModeSetting::Generic);
        assert!(c.backend.xdp_decap, "on by default");
        assert!(c.backend.xdp_fast_path, "on by default");
        assert!(c.xdp_plan().fast_path);
        let c = Config::parse(&format!(
            "{GOOD}\n[backend]\nkind = \"af-xdp\"\nxdp_fast_path = false\n"
        ))
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(!c.xdp_plan().fast_path);
        let e = err_of(&format!(
            "{GOOD}\n[backend]\nkind = \"af-xdp\"\nxdp_fast_path = 1\n"
        ));
        assert!(e.to_string().contains("xdp_fast_path"), "{e}");
        let e = err_of(&format!(
            "{GOOD}\n[backend]\nkind = \"af-xdp\"\nxdp_decap = \"yes\"\n"
        ));
        assert!(matches!(e, ConfigError::Syntax(_)), "{e:?}");
        assert!(e.to_string().contains("xdp_decap"), "{e}");
        assert!(c.backend.tun_offload, "TUN offloads on by default");
        let off = Config::parse(&format!("{GOOD}\n[backend]\ntun_offload = false\n"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(!off.backend.tun_offload);
        let e = err_of(&format!("{GOOD}\n[backend]\ntun_offload = \"on\"\n"));
        assert!(e.to_string().contains("tun_offload"), "{e}");
        let e = err_of(&GOOD.replace("uplink", "uplnk"));
        assert!(matches!(e, ConfigError::Syntax(_)), "{e:?}");
        assert!(e.to_string().contains("uplnk"), "{e}");
        let f = field_of(&GOOD.replace("\"198.18.0.2\"", "\"198.18.0.1\""));
        assert_eq!(f, "cluster.peers[0].service_addrs");
        let mc = "[cluster]\nreport_mode = \"multicast\"\n";
        assert_eq!(field_of(&format!("{mc}{GOOD}")), "cluster.multicast_group");
        let f = field_of(&format!("[cluster]\nreport_jitter = 0.7\n{GOOD}"));
        assert_eq!(f, "cluster.report_jitter");
        let f = field_of(&format!(
            "[cluster]\nreport_mode = \"fan-out\"\nfanout_relay = 27\n{GOOD}"
        ));
        assert_eq!(f, "cluster.fanout_relay");
        for (extra, field) in [
            ("recovery_pace_ms = 0", "cluster.recovery_pace_ms"),
            ("recovery_burst = 0", "cluster.recovery_burst"),
            ("probe_interval_ms = 201", "cluster.probe_interval_ms"),
        ] {
            assert_eq!(field_of(&format!("[cluster]\n{extra}\n{GOOD}")), field);
        }
        let c = Config::parse(GOOD).unwrap_or_else(|e| unreachable!("{e}"));
        let n = c.node_config();
        assert_eq!(n.recovery_pace, Duration::from_millis(5));
        assert_eq!(
            (n.recovery_burst, n.probe_interval),
            (32, Duration::from_millis(25))
        );
        let f = field_of(&format!(
            "{GOOD}\n[table]\ncapacity = 100\nhalf_open_reserve = 101\n"
        ));
        assert_eq!(f, "table.half_open_reserve");
        let c = Config::parse(&format!(
            "{GOOD}\n[table]\ncapacity = 100\nhalf_open_reserve = 10\n"
        ))
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.engine_config().served.half_open_reserve, 10);
    }

    /// The configuration error beneath a `Config::load` error, and the
    /// file it names.
    fn load_err(path: &Path) -> (PathBuf, ConfigError) {
        match Config::load(path) {
            Err(Error::Config { path, source }) => (path, source),
            Err(e) => unreachable!("not a configuration error: {e:?}"),
            Ok(_) => unreachable!("expected an error"),
        }
    }

    #[test]
    fn the_key_file_is_required_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("dprd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let cfg = dir.join("h0.toml");
        let write = |extra: &str| {
            std::fs::write(&cfg, format!("[cluster]\n{extra}\n{GOOD}")).unwrap_or_default();
        };
        let (path, e) = load_err(&dir.join("absent.toml"));
        assert_eq!(path, dir.join("absent.toml"));
        assert!(
            matches!(&e, ConfigError::Read(io) if io.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        write("");
        let (path, e) = load_err(&cfg);
        assert_eq!(path, cfg);
        assert_eq!(e.field(), Some("cluster.key_file"));
        write("key_file = \"missing.key\"");
        let (_, e) = load_err(&cfg);
        assert!(
            matches!(&e, ConfigError::KeyFileRead { path, .. } if path.ends_with("missing.key")),
            "{e:?}"
        );
        assert_eq!(e.field(), Some("cluster.key_file"));
        std::fs::write(dir.join("short.key"), "1 abcd\n").unwrap_or_default();
        write("key_file = \"short.key\"");
        let (_, e) = load_err(&cfg);
        assert!(matches!(e, ConfigError::KeyFile { .. }), "{e:?}");
        assert_eq!(e.field(), Some("cluster.key_file"));
        let key = crate::keygen::new_key_file().unwrap_or_default();
        std::fs::write(dir.join("good.key"), key).unwrap_or_default();
        write("key_file = \"good.key\"");
        // Relative to the configuration file, not to the working directory.
        let c = Config::load(&cfg).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.cluster.key_file, Some(dir.join("good.key")));
        assert_eq!(
            c.load_keys().map(|k| k.key_ids()).unwrap_or_default(),
            vec![1]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod example_files {
    use super::*;

    #[test]
    fn the_example_configurations_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                if let Err(err) = Config::load(&e.path()) {
                    unreachable!("{}", crate::error::report(&err));
                }
                n += 1;
            }
        }
        assert!(n >= 3, "example configs not found in {}", dir.display());
    }
}
