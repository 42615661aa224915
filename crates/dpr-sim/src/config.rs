//! What a run simulates: the cluster, its clients, its protocol, its
//! faults, and which policy routes new connections.

use crate::candidates::{CandidateSpec, IdleAds};
use crate::demand::Demand;
use dpr_packet::control;

/// Bytes on the wire of one full-mesh load report: the cluster protocol's
/// report with the sender's entry and one IPv4 service address
/// (`dpr_packet::control`), plus UDP and IPv4 headers.
pub const FULL_MESH_REPORT_BYTES: u64 = (control::HEADER_LEN
    + control::REPORT_PREFIX_LEN
    + control::ENTRY_LEN
    + 5
    + control::TAG_LEN
    + 28) as u64;
/// Bytes of a gossip (bounded fan-out) report before its relayed entries.
pub const GOSSIP_BASE_BYTES: u64 = FULL_MESH_REPORT_BYTES;
/// Bytes of each entry a gossip report relays.
pub const GOSSIP_ENTRY_BYTES: u64 = control::ENTRY_LEN as u64;
/// Bytes on the wire of one idle advertisement (control message kind 5):
/// header, payload and tag, plus UDP and IPv4 headers.
pub const IDLE_AD_BYTES: u64 =
    (control::HEADER_LEN + control::IDLE_LEN + control::TAG_LEN + 28) as u64;
/// Default gossip fan-out (peers per host per interval).
pub const GOSSIP_FANOUT: u32 = 3;
/// Default number of relayed entries per gossip message (the protocol's
/// default and maximum: 26 fit one report).
pub const GOSSIP_MAX_RELAYED: u32 = 26;

/// Who decides where a new connection is served.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PolicyKind {
    /// Round-robin DNS alone: the host the client reached serves it.
    RrDns,
    /// DPR's stateless policy: a hash of the client address and port.
    StatelessHash,
    /// DPR's threshold policy (the seed design) with this normalised
    /// threshold (open connections per unit of capacity).
    Threshold(f64),
    /// The least-loaded host, from the load table.
    LeastLoad,
    /// Power of two choices, from the load table.
    TwoChoices,
    /// Threshold decides whether, two choices decides where: below this
    /// threshold serve here; above it, redirect to the less loaded of two
    /// capacity-weighted samples if it is less loaded than this host
    /// (`dpr_policy::ThresholdTwoChoices`).
    ThresholdTwoChoices(f64),
    /// A central least-connections dispatcher with perfect, instant
    /// knowledge and no redirect cost: the bound, not a DPR policy.
    Ideal,
    /// A candidate of issue 13 (see [`crate::candidates`]).
    Candidate(CandidateSpec),
    /// `dpr_policy::JoinIdle` with this threshold, fed with idle
    /// advertisements as [`JOIN_IDLE_ADS`] says (the cluster protocol's
    /// idle advertisement, [`IDLE_AD_BYTES`] each).
    JoinIdle(f64),
}

/// How hosts advertise idleness to the join-idle strategy: on becoming
/// idle, to the peer that last redirected a connection to them and two
/// random peers, as `dprd` does.
pub const JOIN_IDLE_ADS: IdleAds = IdleAds {
    watermark: 0,
    fanout: 3,
    to_redirector: true,
    use_above: 0,
};

impl PolicyKind {
    /// The name used in tables and plots.
    pub fn label(&self) -> String {
        match self {
            PolicyKind::RrDns => "rr-dns".into(),
            PolicyKind::StatelessHash => "hash".into(),
            PolicyKind::Threshold(t) => format!("threshold-{t}"),
            PolicyKind::LeastLoad => "least-load".into(),
            PolicyKind::TwoChoices => "two-choices".into(),
            PolicyKind::ThresholdTwoChoices(t) => format!("thr-p2c-{t}"),
            PolicyKind::Ideal => "ideal".into(),
            PolicyKind::Candidate(c) => c.label(),
            PolicyKind::JoinIdle(t) => format!("join-idle-{t}"),
        }
    }

    /// How hosts advertise idleness, for the policies that listen.
    pub fn idle_ads(&self) -> Option<IdleAds> {
        match self {
            PolicyKind::Candidate(c) => c.idle,
            PolicyKind::JoinIdle(_) => Some(JOIN_IDLE_ADS),
            _ => None,
        }
    }

    /// True when hosts keep load tables fed by reports.
    pub fn uses_tables(&self) -> bool {
        !matches!(self, PolicyKind::RrDns | PolicyKind::Ideal)
    }

    /// True when the decision reads peers' load figures (not only their
    /// health), so report staleness matters.
    pub fn uses_loads(&self) -> bool {
        matches!(
            self,
            PolicyKind::Threshold(_)
                | PolicyKind::LeastLoad
                | PolicyKind::TwoChoices
                | PolicyKind::ThresholdTwoChoices(_)
                | PolicyKind::Candidate(_)
                | PolicyKind::JoinIdle(_)
        )
    }
}

/// How load reports travel (the cluster protocol's two modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportMode {
    /// Every host unicasts its report to every other host every interval.
    FullMesh,
    /// Every host sends one message to `fanout` random peers every
    /// interval, carrying its own entry and up to `max_relayed` of the
    /// freshest entries it knows about `Alive` peers.
    Gossip {
        /// Peers per host per interval.
        fanout: u32,
        /// Relayed entries per message.
        max_relayed: u32,
    },
}

impl ReportMode {
    /// Gossip with the default fan-out and relay count.
    pub const GOSSIP: ReportMode = ReportMode::Gossip {
        fanout: GOSSIP_FANOUT,
        max_relayed: GOSSIP_MAX_RELAYED,
    };

    /// The name used in tables and plots.
    pub fn label(&self) -> &'static str {
        match self {
            ReportMode::FullMesh => "mesh",
            ReportMode::Gossip { .. } => "gossip",
        }
    }
}

/// Which host a client's connection reaches first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClientModel {
    /// Each connection reaches a host chosen uniformly (RR-DNS with no
    /// caching, or many small resolvers).
    Uniform,
    /// A fraction `fraction` of connections reaches host 0 ("most clients
    /// on one host", as when a big resolver caches one answer); the rest
    /// are uniform over all hosts.
    Hot {
        /// Share of all connections sent to host 0 on top of its uniform
        /// share (0..=1).
        fraction: f64,
    },
    /// `count` resolvers with Zipf(`zipf_s`) shares of the clients, each
    /// caching one round-robin answer for `ttl` seconds.
    Resolvers {
        /// Number of resolvers.
        count: u32,
        /// Zipf exponent of their client populations.
        zipf_s: f64,
        /// Cache lifetime of an answer, seconds.
        ttl: f64,
    },
}

/// What a client does when the host it was given is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressMode {
    /// Each host owns its address in round-robin DNS: connections to a
    /// down host fail until DNS caches expire (not modelled: clients keep
    /// the address). Peers cannot take a failed host's address.
    RoundRobinDns,
    /// One shared virtual address behind ECMP: the router spreads a down
    /// host's arrivals over the hosts that are up.
    SharedVip,
}

/// A host failure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Failure {
    /// The host.
    pub host: usize,
    /// When it fails, seconds.
    pub at: f64,
    /// When it returns (restarted, empty), seconds; `None`: never.
    pub back_at: Option<f64>,
}

/// A flash crowd: an extra Poisson stream aimed at one host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flash {
    /// Start, seconds.
    pub start: f64,
    /// Length, seconds.
    pub duration: f64,
    /// Extra load, in units of one reference host's capacity (2.0: twice
    /// what one host can serve).
    pub extra_load: f64,
    /// The host the crowd's resolver points at.
    pub target: usize,
}

/// One simulated cluster and workload.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// Number of hosts (1 ..= 65,535).
    pub hosts: usize,
    /// Capacities, cycled over the hosts (empty: all 1.0).
    pub capacities: Vec<f64>,
    /// Offered load: arrival rate x mean demand / total capacity.
    pub load: f64,
    /// Service demand.
    pub demand: Demand,
    /// Where clients' connections arrive.
    pub clients: ClientModel,
    /// What happens to arrivals for a down host.
    pub address_mode: AddressMode,
    /// How load reports travel.
    pub report_mode: ReportMode,
    /// Report interval, seconds.
    pub report_interval: f64,
    /// One-way network delay between hosts, seconds.
    pub net_delay: f64,
    /// Extra latency of a redirected connection (one tunnel hop), seconds.
    pub redirect_latency: f64,
    /// Missed intervals before a peer is suspect and dead (`None`: 2 and 4
    /// for full mesh; for gossip, scaled with the time an entry takes to
    /// reach every host, see [`ClusterConfig::health_thresholds`]).
    pub health: Option<(u32, u32)>,
    /// Simulated time, seconds; statistics cover arrivals in
    /// `warmup .. duration`.
    pub duration: f64,
    /// Arrivals before this are not measured, seconds.
    pub warmup: f64,
    /// After `duration`, how long the run goes on (arrivals included,
    /// unmeasured) for measured connections to finish, at most, seconds;
    /// those still running are reported as unfinished.
    pub drain: f64,
    /// Interval of the load-imbalance samples, seconds.
    pub sample_interval: f64,
    /// Width of a time-series bucket, seconds.
    pub series_bucket: f64,
    /// Host failures.
    pub failures: Vec<Failure>,
    /// An optional flash crowd.
    pub flash: Option<Flash>,
}

impl ClusterConfig {
    /// A homogeneous cluster of `hosts` at load 0.7 with uniform clients,
    /// SPECweb-like bounded Pareto demand of mean 10 ms, full-mesh reports
    /// every 100 ms, 0.1 ms network delay, 0.2 ms redirect cost, 30 s
    /// simulated after 5 s of warm-up.
    pub fn new(hosts: usize) -> Self {
        Self {
            hosts,
            capacities: Vec::new(),
            load: 0.7,
            demand: Demand::BoundedPareto {
                alpha: 1.2,
                lo: 1e3,
                hi: 1e7,
                mean: 0.010,
            },
            clients: ClientModel::Uniform,
            address_mode: AddressMode::RoundRobinDns,
            report_mode: ReportMode::FullMesh,
            report_interval: 0.100,
            net_delay: 0.000_1,
            redirect_latency: 0.000_2,
            health: None,
            duration: 35.0,
            warmup: 5.0,
            drain: 30.0,
            sample_interval: 0.010,
            series_bucket: 1.0,
            failures: Vec::new(),
            flash: None,
        }
    }

    /// Capacity of host `i`.
    pub fn capacity(&self, i: usize) -> f64 {
        if self.capacities.is_empty() {
            1.0
        } else {
            self.capacities[i % self.capacities.len()]
        }
    }

    /// Sum of all capacities.
    pub fn total_capacity(&self) -> f64 {
        (0..self.hosts).map(|i| self.capacity(i)).sum()
    }

    /// Base arrival rate of the whole cluster, connections per second.
    pub fn arrival_rate(&self) -> f64 {
        self.load * self.total_capacity() / self.demand.mean()
    }

    /// (suspect, dead) after this many missed report intervals. For
    /// gossip the default scales with `P = hosts / (fanout x (relayed +
    /// 1))`, the intervals it takes on average before a host hears a new
    /// entry about a given peer: suspect after `max(2, 4P)`, dead after
    /// twice that.
    pub fn health_thresholds(&self) -> (u32, u32) {
        if let Some(h) = self.health {
            return h;
        }
        match self.report_mode {
            ReportMode::FullMesh => (2, 4),
            ReportMode::Gossip {
                fanout,
                max_relayed,
            } => {
                let per = f64::from(fanout.max(1)) * f64::from(max_relayed + 1);
                let p = (self.hosts as f64 - 1.0) / per;
                let suspect = (4.0 * p).ceil().max(2.0) as u32;
                (suspect, 2 * suspect)
            }
        }
    }

    /// Checks that the configuration is simulable.
    pub fn validate(&self) -> Result<(), String> {
        let pos = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be positive, is {v}"))
            }
        };
        if self.hosts == 0 || self.hosts > usize::from(u16::MAX) {
            return Err(format!("hosts must be in 1..=65535, is {}", self.hosts));
        }
        pos("load", self.load)?;
        pos("demand mean", self.demand.mean())?;
        pos("report_interval", self.report_interval)?;
        pos("duration", self.duration)?;
        pos("sample_interval", self.sample_interval)?;
        pos("series_bucket", self.series_bucket)?;
        for c in &self.capacities {
            pos("capacity", *c)?;
        }
        if !(self.warmup >= 0.0 && self.warmup < self.duration) {
            return Err("warmup must be in 0..duration".into());
        }
        if self.drain.is_nan() || self.drain < 0.0 {
            return Err("drain must be non-negative".into());
        }
        if !(self.net_delay >= 0.0 && self.redirect_latency >= 0.0) {
            return Err("delays must be non-negative".into());
        }
        for f in &self.failures {
            if f.host >= self.hosts {
                return Err(format!("failure of host {} out of range", f.host));
            }
        }
        if let Some(f) = self.flash {
            if f.target >= self.hosts {
                return Err("flash target out of range".into());
            }
        }
        Ok(())
    }
}
