//! `dprd run`: set the host up, start the data path, run the control loop,
//! undo everything on the way out.
//!
//! ```text
//!  main thread: config ─► TUN ─► HostGuard::setup ─► engine ─► bind sockets ─► drop root
//!                 └─► tokio (current thread): control loop
//!                        UDP control port ◄─► ControlPlane ─┐
//!                        admin unix socket (status, drain)   ├─ EngineSet (commands to shards)
//!                        metrics HTTP, signals, timers ──────┘
//!  worker threads (one per queue, each owning its engine shard, no lock):
//!     dpr_io::run_worker: commands ─► wait ─► rx_tx (engine per packet) ─► rings ─► maintain
//! ```
//! The control loop holds the [`EngineSet`]: the shared state (peers, the
//! load table) and a command channel to every shard; the shards report
//! their counters and table sizes at each tick, which status reads.
//! On SIGTERM / SIGINT, or an error anywhere after setup began, the guard is
//! dropped (rules, routes, addresses, sysctls undone), the workers stop and
//! close their queues (the TUN device disappears), and the admin socket is
//! removed.

use crate::config::{Config, TunnelAuthKind, clamped_mss};
use crate::control::{Clock, ControlPlane};
use crate::error::{DaemonError, Error};
use crate::status::{PeerRow, Status};
use crate::{load, metrics};
use dpr_io::host::{HostGuard, HostPlan};
use dpr_io::shard::{EngineSet, split_capacity};
use dpr_io::state::{HostState, InstanceLock, StateFile};
use dpr_io::tun::{TunConfig, TunDevice};
use dpr_io::worker::{WorkerStats, Workers, now_since};
use dpr_io::xdp::XdpBackend;
use dpr_io::{BatchBackend, IoStats};
use dpr_packet::{FlowKey, IpProtocol};
use dpr_policy::{Policy, SplitMix64};
use dpr_router::{DropReason, Engine};
use dpr_table::LoadFigures;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

fn clock(origin: Instant) -> Clock {
    Clock {
        mono: now_since(origin),
        unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0),
    }
}

/// Makes a policy instance: one per engine shard, and again on reload.
pub type PolicyFactory = Box<dyn FnMut() -> Box<dyn Policy + Send>>;

/// The factory of the policy `cfg` names (checked: a bad `[policy]` is an
/// error here, naming the field).
fn config_policy(cfg: &Config) -> Result<PolicyFactory, DaemonError> {
    let mut first = Some(cfg.make_policy().map_err(DaemonError::Policy)?);
    let c = cfg.clone();
    Ok(Box::new(move || {
        if let Some(p) = first.take() {
            return p;
        }
        // The same section built a policy a moment ago: it builds again.
        c.make_policy()
            .unwrap_or_else(|_| Box::new(dpr_policy::LeastLoad))
    }))
}

/// Builds the engines a configuration describes: the control engine
/// (shared state, tiny tables) and one shard per queue, each with its part
/// of the table capacity, its own policy instance and random source
/// (peers are added by the control plane).
pub fn build_engines(
    cfg: &Config,
    queues: usize,
    policy: &mut dyn FnMut() -> Box<dyn Policy + Send>,
) -> Result<(EngineSet, Vec<dpr_io::Shard>), DaemonError> {
    let seed = if cfg.policy.seed == 0 {
        0x5eed ^ u64::from(cfg.host.id)
    } else {
        cfg.policy.seed
    };
    let make = |i: usize, ec: dpr_router::EngineConfig, policy: Box<dyn Policy + Send>| {
        Engine::new(
            ec,
            cfg.local_id(),
            cfg.capacity(),
            cfg.load_table_config(),
            policy,
            Box::new(SplitMix64::new(
                seed.wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            )),
        )
        .map_err(DaemonError::Engine)
    };
    let mut small = cfg.engine_config();
    for t in [&mut small.routes, &mut small.served] {
        t.capacity = 1;
        t.half_open_reserve = 0;
    }
    let control = make(queues, small, policy())?;
    let mut shards = Vec::with_capacity(queues);
    for i in 0..queues {
        let mut ec = cfg.engine_config();
        for t in [&mut ec.routes, &mut ec.served] {
            t.capacity = split_capacity(t.capacity, queues);
            if t.half_open_reserve != 0 {
                // Split like the capacity (0 stays a quarter of the shard).
                t.half_open_reserve = split_capacity(t.half_open_reserve, queues).min(t.capacity);
            }
        }
        shards.push(make(i, ec, policy())?);
    }
    Ok(EngineSet::new(control, shards))
}

fn v4(addrs: &[IpAddr]) -> Vec<Ipv4Addr> {
    addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v) => Some(*v),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// IP-in-IP's protocol number.
const IPPROTO_IPIP: u8 = 4;
/// GRE's, the keyed tunnel's.
const IPPROTO_GRE: u8 = 47;

/// The host setup a configuration asks for, around TUN device `tun`;
/// `divert`: policy routing into the TUN (the TUN backend).
pub fn host_plan(cfg: &Config, tun: &TunDevice, divert: bool) -> HostPlan {
    let tunnel_addr = match cfg.host.tunnel_addr {
        IpAddr::V4(v) => v,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED, // refused by Config::validate
    };
    HostPlan {
        uplink: cfg.host.uplink.clone(),
        tun_name: tun.name.clone(),
        tun_ifindex: tun.ifindex,
        tunnel_addr,
        service_addrs: cfg.host.service_addrs.clone(),
        vips: cfg.vip.addrs.clone(),
        announce_table: cfg.bgp.announce_table,
        peer_service_addrs: cfg.peer_service_v4(),
        service_ports: cfg.host.service_ports.clone(),
        divert_table: cfg.backend.divert_table,
        mss_table: cfg.backend.mss_table,
        advmss: cfg
            .tunnel
            .mss_clamp
            .then(|| clamped_mss(cfg.tunnel.mtu, cfg.tunnel.overhead())),
        rule_priority: cfg.backend.rule_priority,
        local_rule_priority: cfg.backend.local_rule_priority,
        divert,
        tunnel_protocols: match cfg.tunnel.auth {
            TunnelAuthKind::Key => vec![IPPROTO_GRE, IPPROTO_IPIP],
            TunnelAuthKind::None => vec![IPPROTO_IPIP],
        },
    }
}

/// Logs to stderr at `level`.
pub fn init_logs(level: &str) {
    let level = level.parse().unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Removes the admin socket file on drop.
struct SocketFile(PathBuf);
impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `dprd run --config FILE`.
pub fn run(config_path: &Path) -> Result<(), DaemonError> {
    run_with_policy(config_path, None)
}

/// `dprd cleanup --config FILE`: undoes what the journal in the state
/// directory records (a held set-up, or a dead instance's), under the
/// instance lock, so never behind a live daemon's back.
pub fn cleanup(config_path: &Path) -> Result<(), DaemonError> {
    let cfg = Config::load(config_path)?;
    init_logs(&cfg.admin.log_level);
    if !dpr_io::host::can_set_up() {
        return Err(DaemonError::NotRoot);
    }
    let _lock = InstanceLock::acquire(&cfg.admin.state_dir)?;
    let file = StateFile::in_dir(&cfg.admin.state_dir);
    let Some(st) = file.load().map_err(DaemonError::State)? else {
        println!(
            "nothing to clean up: no journal in {}",
            cfg.admin.state_dir.display()
        );
        return Ok(());
    };
    let steps = st.undo.len();
    let mut g = HostGuard::from_journal(file, st)?;
    let mut failed = g.teardown();
    failed.extend(g.remove_devices());
    if failed.is_empty() {
        println!("undone: {steps} steps, and the devices the journal named");
        Ok(())
    } else {
        Err(DaemonError::Teardown(failed))
    }
}

/// Runs the daemon with a policy of the caller's instead of the one the
/// configuration names (`[policy]` is then ignored, also on reload): the
/// way to embed a user-written [`Policy`] in a complete router. `custom`
/// makes one instance per engine (one per queue).
pub fn run_with_policy(
    config_path: &Path,
    custom: Option<PolicyFactory>,
) -> Result<(), DaemonError> {
    let mut cfg = Config::load(config_path)?;
    init_logs(&cfg.admin.log_level);
    if !dpr_io::host::can_set_up() {
        return Err(DaemonError::NotRoot);
    }
    let keys = cfg.load_keys().map_err(|source| Error::Config {
        path: config_path.to_path_buf(),
        source,
    })?;
    // The flow-hash seeds are secrets derived from the cluster key.
    cfg.derive_seeds(&keys);
    if cfg.tunnel.auth == TunnelAuthKind::None {
        tracing::warn!(
            "tunnel.auth = \"none\": redirected connections travel in plain IP-in-IP and are \
             accepted from anyone who can spoof a peer's tunnel address (set \"key\" on every \
             host to refuse them)"
        );
    }
    // One instance per state directory; the lock dies with the process.
    let _lock = InstanceLock::acquire(&cfg.admin.state_dir)?;
    let journal = StateFile::in_dir(&cfg.admin.state_dir);
    let prev = journal.load().map_err(DaemonError::State)?;
    if let Some(p) = &prev {
        tracing::info!(
            pid = p.pid,
            steps = p.undo.len(),
            tun = ?p.tun,
            xdp = ?p.xdp,
            "taking over the host set-up {}",
            if p.held {
                "the previous dprd held for this start"
            } else {
                "left by a dprd that died"
            }
        );
    }
    let mut tun = TunDevice::create(&TunConfig {
        name: cfg.backend.tun_name.clone(),
        mtu: cfg.tunnel.mtu,
        queues: cfg.backend.queues,
        persist: true,
        // AF_XDP writes single packets into the TUN: no offloads there.
        offload: cfg.backend.tun_offload && cfg.backend.kind == crate::config::BackendKind::Tun,
    })
    .map_err(|source| DaemonError::Tun {
        name: cfg.backend.tun_name.clone(),
        source,
    })?;
    let queues = tun.take_queues();
    tracing::info!(
        dev = %tun.name,
        queues = queues.len(),
        offload = tun.offload,
        raw_egress = tun.raw_egress,
        "TUN device up"
    );
    let mut xdp = match cfg.backend.kind {
        crate::config::BackendKind::AfXdp => match XdpBackend::start(&cfg.xdp_plan()) {
            Ok(x) => {
                tracing::info!(backend = %x.name(), uplink = %cfg.host.uplink, "XDP program attached");
                Some(x)
            }
            Err(e) => {
                tracing::warn!(error = %e, "AF_XDP cannot start; falling back to the TUN backend");
                None
            }
        },
        crate::config::BackendKind::Tun => None,
    };
    let backend_name = xdp
        .as_ref()
        .map_or_else(|| "tun".to_string(), XdpBackend::name);
    // From here on, every exit path drops the guard and undoes the setup
    // (unless it is held at a stop).
    let meta = HostState {
        tun: Some(tun.name.clone()),
        xdp: xdp.as_ref().map(|x| (x.attached.ifindex, x.attached.flags)),
        ..HostState::default()
    };
    let mut guard = match HostGuard::setup_takeover(
        &host_plan(&cfg, &tun, xdp.is_none()),
        Some((journal, meta.clone())),
        prev.as_ref(),
    ) {
        Ok(g) => g,
        Err(e) => {
            // Set-up never began (no guard): the devices are ours to remove.
            let mut g = HostGuard::from_journal(StateFile::in_dir(&cfg.admin.state_dir), meta)?;
            let _ = g.remove_devices();
            return Err(e.into());
        }
    };
    let took = guard.finish_takeover();
    if prev.is_some() {
        tracing::info!(
            kept = took.taken_over,
            undone = ?took.stale_undone,
            "took over the previous instance's set-up"
        );
    }
    tracing::info!(undo_steps = guard.pending_undo().len(), "host set up");
    // A layout that makes peers ignore our ARP requests fails silently
    // (redirected packets go nowhere): say so at start.
    let peer_tunnels: Vec<Ipv4Addr> = v4(&cfg
        .cluster
        .peers
        .iter()
        .map(|p| p.tunnel_addr)
        .collect::<Vec<_>>());
    match dpr_io::host::check_uplink_addresses(
        &cfg.host.uplink,
        &v4(&cfg.host.service_addrs),
        &peer_tunnels,
    ) {
        Ok(problems) => {
            for p in problems {
                tracing::warn!(uplink = %cfg.host.uplink, "{p}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the uplink's addresses"),
    }
    let fixed_policy = custom.is_some();
    let mut make_policy: PolicyFactory = match custom {
        Some(f) => f,
        None => config_policy(&cfg)?,
    };
    let (mut engines, shards) = build_engines(&cfg, queues.len(), &mut make_policy)?;
    let origin = Instant::now();
    let control = ControlPlane::new(&cfg, keys, clock(origin), &mut engines)?;
    // Sockets, bound while privileged.
    if let Some(dir) = cfg.admin.socket.parent() {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Bind {
            what: "admin socket directory (`admin.socket`)",
            addr: dir.display().to_string(),
            source,
        })?;
    }
    let _ = std::fs::remove_file(&cfg.admin.socket);
    let admin = std::os::unix::net::UnixListener::bind(&cfg.admin.socket).map_err(|source| {
        DaemonError::Bind {
            what: "admin socket (`admin.socket`)",
            addr: cfg.admin.socket.display().to_string(),
            source,
        }
    })?;
    let admin_file = SocketFile(cfg.admin.socket.clone());
    let udp = std::net::UdpSocket::bind(SocketAddr::new(cfg.host.tunnel_addr, cfg.cluster.port))
        .map_err(|source| DaemonError::Bind {
            what: "control socket (`host.tunnel_addr`, `cluster.port`)",
            addr: SocketAddr::new(cfg.host.tunnel_addr, cfg.cluster.port).to_string(),
            source,
        })?;
    if let Some(IpAddr::V4(g)) = cfg.node_config().mode.multicast_group() {
        let IpAddr::V4(me) = cfg.host.tunnel_addr else {
            return Err(DaemonError::MulticastNeedsV4);
        };
        udp.join_multicast_v4(&g, &me)
            .map_err(DaemonError::start(format!("joining multicast group {g}")))?;
        udp.set_multicast_loop_v4(false)
            .map_err(DaemonError::start("setsockopt(IP_MULTICAST_LOOP)"))?;
    }
    let metrics_l = match cfg.admin.metrics {
        Some(a) => Some(
            std::net::TcpListener::bind(a).map_err(|source| DaemonError::Bind {
                what: "metrics address (`admin.metrics`)",
                addr: a.to_string(),
                source,
            })?,
        ),
        None => None,
    };
    // The control thread (this one: reports, liveness, admin) runs in the
    // real-time class at the lowest priority, so a flood that keeps the
    // workers, the kernel and the host's other jobs busy does not delay the
    // reports that tell peers from dead ones (issue 15). It sleeps between
    // events and paces its heaviest work (the load measurement) by its own
    // CPU time; the kernel keeps 5% of each CPU from real-time threads. The
    // workers it starts are back in the normal class (reset on fork).
    // Before the privileges are dropped: it needs CAP_SYS_NICE.
    // The application's closes, counted by the kernel as they happen
    // (attached while privileged: it needs CAP_BPF).
    let closes = if cfg.load.app_closes {
        attach_close_watch(&cfg)
    } else {
        None
    };
    if let Some(w) = &closes {
        let w = w.clone();
        engines.set_closes(Some(Arc::new(move || w.closes())));
    }
    if let Err(e) = dpr_io::sys::set_current_thread_realtime(1) {
        tracing::warn!(error = %e, "raising the control thread's priority");
    }
    if let Some(user) = &cfg.host.user {
        let privs = |source| DaemonError::Privileges {
            user: user.clone(),
            source,
        };
        let who = dpr_io::privs::lookup(user).map_err(privs)?;
        // The journal is rewritten at every change and removed at a full
        // stop: the state directory and its files become the user's.
        let dir = &cfg.admin.state_dir;
        for p in [dir.clone(), dir.join("dprd.state"), dir.join("dprd.lock")] {
            if p.exists() {
                std::os::unix::fs::chown(&p, Some(who.uid), Some(who.gid))
                    .map_err(DaemonError::start(format!("chown {}", p.display())))?;
            }
        }
        dpr_io::privs::drop_to(who).map_err(privs)?;
        tracing::info!(%user, uid = who.uid, "privileges dropped; keeping CAP_NET_ADMIN");
    }
    let mut workers = Workers::new(engines.shards(), origin, cfg.backend.batch);
    let mtu = usize::from(cfg.tunnel.mtu).max(1500);
    let sockets = xdp.as_mut().map(|x| std::mem::take(&mut x.sockets));
    let mut sockets = sockets.map(Vec::into_iter);
    for (q, shard) in queues.into_iter().zip(shards) {
        let i = shard.index();
        match (sockets.as_mut().and_then(Iterator::next), &xdp) {
            (Some(xsk), Some(x)) => {
                let mut q = dpr_io::afxdp::XdpQueue::new(xsk, q.into_inner(), x.ifindex, x.mac);
                // The keyed tunnel's fast path: the worker writes the flows
                // its engine accepts into the program's map itself.
                if cfg.engine_config().keyed_flow_events {
                    match x.program.router_program().keyed_flow_map() {
                        Ok(m) => q = q.with_keyed_flows(m),
                        Err(e) => tracing::warn!(error = %e, "no keyed-flow fast path"),
                    }
                }
                // The send fast path: the worker writes the established
                // flows its engine redirects into the program's map.
                if let Some(peers) = &x.fast_path {
                    match x.program.router_program().fast_path_maps() {
                        Ok(m) => {
                            let max = 65_536 / cfg.backend.queues.max(1);
                            q = q.with_fast_path(m, peers.clone(), max);
                        }
                        Err(e) => tracing::warn!(error = %e, "no send fast path"),
                    }
                }
                workers.spawn(q, shard)
            }
            _ => workers.spawn(BatchBackend::new(q, cfg.backend.batch, mtu), shard),
        }
        .map_err(DaemonError::start(format!("starting worker {i}")))?;
    }
    tracing::info!(host = %cfg.host.name, policy = %cfg.policy.kind_name(), "dprd running");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::start("tokio runtime"))?;
    let ctx = LoopCtx {
        cfg,
        config_path: config_path.to_path_buf(),
        origin,
        engines,
        worker_stats: workers.stats(),
        control,
        guard,
        make_policy,
        fixed_policy,
        started: Instant::now(),
        draining_since: None,
        tcp: dpr_io::sockdiag::TcpCounter::open()
            .map_err(|e| tracing::warn!(error = %e, "sock_diag unavailable: counting connections from /proc/net/tcp"))
            .ok(),
        open_connections: 0,
        load_measure_us: 0,
        cut_aborted: 0,
        backend_name,
        xdp,
        closes,
    };
    let result = rt.block_on(control_loop(ctx, admin, udp, metrics_l));
    // At a full stop the rules were undone at the end of control_loop (so
    // no traffic is diverted into a device that is about to go) and the
    // XDP program detached; the workers stop and close their queues, then
    // the guard's drop deletes the persistent TUN device and the journal.
    // A held guard leaves all of it to the next instance.
    drop(workers);
    drop(admin_file);
    match result {
        Ok(mut guard) => {
            if guard.is_held() {
                tracing::info!("dprd stopped; host set-up held for the next start");
                Ok(())
            } else {
                let failed = guard.remove_devices();
                tracing::info!("dprd stopped; host setup undone");
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(DaemonError::Teardown(failed))
                }
            }
        }
        Err(e) => Err(e),
    }
}

impl crate::config::PolicySection {
    /// The policy's name as configured.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            crate::config::PolicyKind::Threshold => "threshold",
            crate::config::PolicyKind::LeastLoad => "least-load",
            crate::config::PolicyKind::Hash => "hash",
            crate::config::PolicyKind::P2c => "p2c",
            crate::config::PolicyKind::ThrP2c => "thr-p2c",
            crate::config::PolicyKind::JoinIdle => "join-idle",
        }
    }
}

struct LoopCtx {
    cfg: Config,
    config_path: PathBuf,
    /// The monotonic origin of engine timestamps.
    origin: Instant,
    /// The engines: shared state here, a shard per worker.
    engines: EngineSet,
    /// Each worker's counters.
    worker_stats: Vec<Arc<WorkerStats>>,
    control: ControlPlane,
    guard: HostGuard,
    make_policy: PolicyFactory,
    fixed_policy: bool,
    started: Instant,
    draining_since: Option<Instant>,
    /// Counts open service connections (the load metric) over sock_diag.
    tcp: Option<dpr_io::sockdiag::TcpCounter>,
    /// The last count.
    open_connections: u32,
    /// What the last count cost, µs.
    load_measure_us: u64,
    /// Sockets aborted because a peer cut their connections.
    cut_aborted: u64,
    /// The backend in use ("tun", "af-xdp (native)", …).
    backend_name: String,
    /// The AF_XDP program and attachment (detached when this is dropped,
    /// at the end of the control loop).
    xdp: Option<XdpBackend>,
    /// Counts the application's closes (`[load] app_closes`); `None`: the
    /// engines count the clients' FINs.
    closes: Option<Arc<dpr_xdp::CloseWatch>>,
}

/// Attaches the close counter for `cfg`'s services, or says why not (the
/// engines then count the clients' FINs, as without it).
fn attach_close_watch(cfg: &Config) -> Option<Arc<dpr_xdp::CloseWatch>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let attached =
        dpr_xdp::CloseWatch::attach_here(&mountinfo, &std::env::temp_dir(), &cfg.service_pairs());
    match attached {
        Ok((w, on)) => {
            tracing::info!(cgroup = %on, "connections end when the application closes them");
            Some(Arc::new(w))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no close counter: connections end at the client's FIN (`load.app_closes`)");
            None
        }
    }
}

/// What a load measurement found: the open service sockets themselves
/// (sock_diag), or only their number (`/proc/net/tcp`).
enum Listed {
    Sockets(Vec<dpr_io::sockdiag::TcpSocket>),
    Count(u32),
}

struct AdminRequest {
    line: String,
    reply: oneshot::Sender<String>,
}

impl LoopCtx {
    /// The send fast path follows the engine's view of the peers: a peer
    /// it holds dead, or that left, takes its flows out of the fast path at
    /// once (a new generation in the program's peer entry), so their
    /// packets reach the engine again. Every control tick.
    fn sync_fast_path(&self) {
        use dpr_table::PeerState;
        let Some(f) = self.xdp.as_ref().and_then(|x| x.fast_path.as_ref()) else {
            return;
        };
        let peers: Vec<(IpAddr, bool)> = self
            .engines
            .control()
            .loads()
            .peers()
            .iter()
            .map(|p| {
                let takes = !matches!(p.state, PeerState::Dead | PeerState::Left);
                (p.tunnel_addr, takes)
            })
            .collect();
        f.sync(&peers);
    }

    /// What the workers counted, summed.
    fn io_stats(&self) -> IoStats {
        IoStats::sum(&self.worker_stats)
    }

    /// The status, from the shards' last reports (one tick old at most)
    /// and the workers' counters: the data path is not stopped for it.
    fn status(&self) -> Status {
        let now = clock(self.origin);
        let e = &self.engines;
        let c = e.counters();
        let mut verdicts = BTreeMap::new();
        for (k, v) in [
            ("delivered", c.delivered),
            ("forwarded", c.forwarded),
            ("passed", c.passed),
            ("replied", c.replied),
            ("dropped", c.dropped),
        ] {
            verdicts.insert(k.to_string(), v);
        }
        let mut events = BTreeMap::new();
        for (k, v) in [
            ("new_local", c.new_local),
            ("new_redirected", c.new_redirected),
            ("new_from_peer", c.new_from_peer),
            ("syn_retransmits", c.syn_retransmits),
            ("syn_new_incarnations", c.syn_new_incarnations),
            ("connections_ended", c.connections_ended),
            ("new_local_no_peer", c.new_local_no_peer),
            ("unknown_flow_delivered", c.unknown_flow_delivered),
            ("mss_clamped", c.mss_clamped),
            ("too_big_replies", c.too_big_replies),
            ("dead_peer_resets", c.dead_peer_resets),
            ("dead_peer_reroutes", c.dead_peer_reroutes),
        ] {
            events.insert(k.to_string(), v);
        }
        let drops = DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), c.drops_of(*r)))
            .collect();
        let malformed = c
            .malformed_by_layer
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect();
        let mut io: BTreeMap<String, u64> = self
            .io_stats()
            .pairs()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        for (k, v) in [
            ("control_sent", self.control.sent()),
            ("control_accepted", self.control.counters().accepted),
            ("control_rejected", self.control.rejected()),
            ("routes_restored", c.routes_restored),
            ("drain_redirects", c.drain_redirects),
            ("load_measure_us", self.load_measure_us),
            ("cut_flows_sent", self.control.counters().cut_flows_sent),
            (
                "cut_flows_received",
                self.control.counters().cut_flows_received,
            ),
            ("cut_sockets_aborted", self.cut_aborted),
            (
                "idle_adverts_sent",
                self.control.counters().idle_adverts_sent,
            ),
            (
                "idle_adverts_received",
                self.control.counters().idle_adverts_received,
            ),
        ] {
            io.insert(k.to_string(), v);
        }
        // The application's closes the kernel counted (`[load]
        // app_closes`; absent: connections end at the client's FIN).
        if let Some(w) = &self.closes {
            io.insert("app_closes".into(), w.closes());
        }
        // VIP mode's ask-on-miss: the engines' side, then the protocol's.
        let (vc, cc) = (&c.vip, self.control.counters());
        for (k, v) in [
            ("vip_misses_asked", vc.misses_asked),
            ("vip_reasks", vc.reasks),
            ("vip_packets_held", vc.packets_held),
            ("vip_packets_released", vc.packets_released),
            ("vip_flows_claimed", vc.flows_claimed),
            ("vip_claim_wait_ns", vc.claim_wait_ns),
            ("vip_flows_timed_out", vc.flows_timed_out),
            ("vip_packets_timed_out", vc.packets_timed_out),
            ("vip_claims_answered", vc.claims_answered),
            ("vip_claims_late", vc.claims_late),
            ("vip_adopted_local", vc.adopted_local),
            ("vip_dead_routes_asked", vc.dead_routes_asked),
            ("vip_stale_routes_dropped", vc.stale_routes_dropped),
            ("vip_strays_asked", vc.strays_asked),
            ("vip_stale_served_dropped", vc.stale_served_dropped),
            ("vip_out_of_sequence", vc.out_of_sequence),
            ("vip_flow_queries_sent", cc.flow_queries_sent),
            ("vip_flow_query_messages", cc.flow_query_messages),
            ("vip_flow_queries_received", cc.flow_queries_received),
            ("vip_flow_claims_sent", cc.flow_claims_sent),
            ("vip_flow_claims_received", cc.flow_claims_received),
        ] {
            io.insert(k.to_string(), v);
        }
        for (k, v) in self.control.loss_counters() {
            io.insert(k.to_string(), v);
        }
        for (reason, v) in self.control.rejected_by_reason() {
            io.insert(format!("control_rejected_{reason}"), v);
        }
        if let Some(c) = self.xdp.as_ref().and_then(|x| x.program.counters().ok()) {
            for k in dpr_xdp::Counter::ALL {
                io.insert(format!("xdp_prog_{k:?}").to_lowercase(), c.get(k));
            }
        }
        if let Some(f) = self.xdp.as_ref().and_then(|x| x.fast_path.as_ref()) {
            io.insert("xdp_fast_path_generation_bumps".into(), f.bumps());
        }

        let peers = self
            .control
            .peers(now, e)
            .into_iter()
            .map(|p| {
                let pc = c
                    .peers
                    .get(&dpr_table::PeerId(p.id))
                    .copied()
                    .unwrap_or_default();
                PeerRow {
                    peer: p,
                    redirected_connections: pc.redirected_connections,
                    forwarded_packets: pc.forwarded_packets,
                    forwarded_bytes: pc.forwarded_bytes,
                    received_packets: pc.received_packets,
                    served_connections: pc.served_connections,
                }
            })
            .collect();
        let (rs, ss) = (e.routes(), e.served());
        Status {
            host: self.cfg.host.name.clone(),
            id: self.cfg.host.id,
            policy: e.control().policy_name().to_string(),
            backend: self.backend_name.clone(),
            draining: self.control.is_draining(),
            phase: crate::control::phase_name(self.control.phase()).into(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            open_connections: self.open_connections,
            load: e.control().loads().local_load(),
            routes: rs.len,
            served: ss.len,
            table_capacity: rs.capacity,
            evicted: rs.stats.evicted + ss.stats.evicted,
            evicted_half_open: rs.stats.evicted_half_open + ss.stats.evicted_half_open,
            evicted_established: rs.stats.evicted_established + ss.stats.evicted_established,
            expired: rs.stats.expired + ss.stats.expired,
            peers,
            verdicts,
            events,
            drops,
            malformed,
            io,
        }
    }

    /// Open service connections: a sock_diag dump of the open states,
    /// `/proc/net/tcp` where that is unavailable (see `dpr_io::sockdiag`).
    /// The connections to peers' service addresses confirm their entries
    /// in the engine's served table (see `Engine::confirm_served`).
    fn open_connections_measured(&mut self) -> Listed {
        let addrs = self.cfg.all_service_addrs();
        let ports = &self.cfg.host.service_ports;
        if let Some(t) = &mut self.tcp {
            let mut socks = Vec::new();
            match t.open_sockets(&addrs, ports, &mut socks) {
                Ok(()) => {
                    // With VIP mode the VIPs are among them: the engine
                    // adopts those connections as its own (a restart
                    // rebuilds its locally served set from this dump).
                    let peers_addrs: Vec<IpAddr> = self
                        .cfg
                        .cluster
                        .peers
                        .iter()
                        .flat_map(|p| self.cfg.peer_service_addrs(p))
                        .chain(self.cfg.vip.addrs.iter().copied())
                        .collect();
                    let flows = socks
                        .iter()
                        .filter(|s| peers_addrs.contains(&s.local.ip()))
                        .map(|s| {
                            FlowKey::new(
                                IpProtocol::Tcp,
                                s.remote.ip(),
                                s.remote.port(),
                                s.local.ip(),
                                s.local.port(),
                            )
                        })
                        .collect();
                    self.engines.confirm_served(flows, now_since(self.origin));
                    // With the close counter, the load is what the
                    // application still holds: a socket it closed is
                    // already counted as ended.
                    if self.closes.is_some() {
                        socks.retain(|s| {
                            dpr_xdp::closes::HELD_STATES & (1u32 << u32::from(s.state).min(31)) != 0
                        });
                    }
                    return Listed::Sockets(socks);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sock_diag dump failed: counting from /proc/net/tcp");
                    self.tcp = None;
                }
            }
        }
        Listed::Count(load::measure(&addrs, ports, self.closes.is_some()))
    }

    /// The decisions the engine kept since the last request (see
    /// `[admin] decision_log`), with times on `CLOCK_MONOTONIC` so they can
    /// be matched with events of other processes on this host.
    fn decisions_json(&mut self) -> String {
        let (list, arrivals, engine_now) = (
            self.engines.take_decisions(),
            self.engines.take_peer_arrivals(),
            now_since(self.origin),
        );
        let offset = dpr_io::sys::monotonic_ns().saturating_sub(engine_now.0);
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|d| {
                let (local, peer) = match d.route {
                    dpr_table::Route::Local => (true, None),
                    dpr_table::Route::Peer(p) => (false, Some(p.0)),
                };
                serde_json::json!({
                    "t_ns": d.at.0 + offset,
                    "client": SocketAddr::new(d.flow.src, d.flow.src_port).to_string(),
                    "load": d.local_load,
                    "local": local,
                    "peer": peer,
                    "new_incarnation": d.new_incarnation,
                })
            })
            .collect();
        let from_peers: Vec<serde_json::Value> = arrivals
            .iter()
            .map(|(at, peer, load)| {
                serde_json::json!({ "t_ns": at.0 + offset, "peer": peer.0, "load": load })
            })
            .collect();
        serde_json::json!({ "ok": true, "decisions": rows, "from_peers": from_peers }).to_string()
    }

    /// The routing table's entries (at most 10,000 per shard): client,
    /// service, route, TCP state and idle time, as `ipvsadm -Lnc` lists a
    /// balancer's connections.
    fn connections_json(&mut self) -> String {
        let now = now_since(self.origin);
        let rows: Vec<serde_json::Value> = self
            .engines
            .ask(move |e| {
                let row = |table: &str, c: dpr_table::ConnEntry| {
                    serde_json::json!({
                        "table": table,
                        "client": SocketAddr::new(c.key.src, c.key.src_port).to_string(),
                        "service": SocketAddr::new(c.key.dst, c.key.dst_port).to_string(),
                        "peer": match c.route {
                            dpr_table::Route::Local => None,
                            dpr_table::Route::Peer(p) => Some(p.0),
                        },
                        "state": format!("{:?}", c.state),
                        "idle_ms": now.0.saturating_sub(c.last_seen.0) / 1_000_000,
                    })
                };
                // The routing table, then the served-for-peers table
                // (`peer`: the host that redirected the connection here).
                e.routes()
                    .iter()
                    .take(10_000)
                    .map(|c| row("routes", c))
                    .chain(e.served().iter().take(10_000).map(|c| row("served", c)))
                    .collect::<Vec<_>>()
            })
            .concat();
        serde_json::json!({ "ok": true, "connections": rows }).to_string()
    }

    /// Aborts this host's sockets of the connections peers cut while it
    /// was away (their clients were reset): they serve nobody, and counted
    /// as load they would keep new connections away until they time out.
    fn abort_cut_connections(&mut self) {
        while let Some(f) = self.control.poll_abort() {
            let local = SocketAddr::new(f.dst, f.dst_port);
            let remote = SocketAddr::new(f.src, f.src_port);
            let done = match &mut self.tcp {
                Some(t) => t.destroy(local, remote),
                None => Err(std::io::Error::other("sock_diag unavailable")),
            };
            match done {
                Ok(true) => self.cut_aborted += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, %local, %remote, "aborting a connection a peer cut");
                }
            }
        }
    }

    /// Measures the load, once every shard has begun noting the
    /// connections that open and end meanwhile
    /// ([`EngineSet::begin_load_measurement`]).
    fn refresh_load(&mut self) {
        self.engines.dump_begins();
        let listed = self.open_connections_measured();
        self.open_connections = match &listed {
            Listed::Sockets(s) => u32::try_from(s.len()).unwrap_or(u32::MAX),
            Listed::Count(n) => *n,
        };
        let figures = LoadFigures {
            open_connections: self.open_connections,
            ..LoadFigures::default()
        };
        let cap = self.cfg.capacity();
        let result = match &listed {
            Listed::Sockets(socks) => {
                let set: std::collections::HashSet<(SocketAddr, SocketAddr)> =
                    socks.iter().map(|s| (s.remote, s.local)).collect();
                let seen = move |f: &FlowKey| {
                    set.contains(&(
                        SocketAddr::new(f.src, f.src_port),
                        SocketAddr::new(f.dst, f.dst_port),
                    ))
                };
                self.engines
                    .finish_load_measurement(figures, cap, Some(Arc::new(seen)))
            }
            Listed::Count(_) => self.engines.finish_load_measurement(figures, cap, None),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "setting the local load");
        }
    }

    fn reload(&mut self) -> Result<(), DaemonError> {
        let mut new = Config::load(&self.config_path)?;
        // `[vip]` too: the engines' VIP mode and the host's diversion of
        // the VIPs are set up at start.
        if new.host != self.cfg.host
            || new.backend != self.cfg.backend
            || new.tunnel != self.cfg.tunnel
            || new.vip != self.cfg.vip
        {
            return Err(DaemonError::NeedsRestart);
        }
        let keys = new.load_keys().map_err(|source| Error::Config {
            path: self.config_path.clone(),
            source,
        })?;
        new.derive_seeds(&keys);
        // The tables keep the seed they were built with.
        new.derived.flow_hash = self.cfg.derived.flow_hash;
        // A key roll: the tunnel's tags follow the new ring at once (tags
        // under every key of the ring are accepted, see decisions.md).
        if let Some(k) = new.derived.tunnel_keys.clone() {
            self.engines
                .broadcast(move |e| e.set_tunnel_keys(k.clone()));
        }
        let policy = config_policy(&new)?;
        self.guard.set_peer_service_addrs(&new.peer_service_v4())?;
        if let Some(x) = self.xdp.as_mut() {
            x.set_peers(&new.xdp_peers())?;
            // Tunnel keys may have rolled: every flow goes back through
            // the engine once, which writes it again with its tag now.
            if let Some(f) = &x.fast_path {
                f.bump_all();
            }
        }
        // Peers' service addresses may have changed: the connections the
        // close counter counts follow them.
        if let Some(w) = &self.closes
            && let Err(e) = w.set_services(&new.service_pairs())
        {
            tracing::warn!(error = %e, "the close counter keeps the previous services");
        }
        let now = clock(self.origin);
        self.control.reload(&new, keys, now, &mut self.engines)?;
        if !self.fixed_policy {
            self.make_policy = policy;
            self.engines.set_policy(&mut self.make_policy);
        }
        self.cfg = new;
        Ok(())
    }

    fn admin(&mut self, line: &str) -> String {
        match line.trim() {
            "status" => serde_json::to_string(&self.status()).unwrap_or_default(),
            "drain" => {
                let now = clock(self.origin);
                self.control.start_drain(now, None, &mut self.engines);
                self.draining_since.get_or_insert_with(Instant::now);
                crate::bgp::withdraw_on_drain(&mut self.guard);
                tracing::info!(
                    deadline_s = self.cfg.cluster.drain_deadline_s,
                    "draining: new connections go to peers"
                );
                r#"{"ok":true,"message":"draining: new connections go to peers, established ones stay"}"#.into()
            }
            "decisions" => self.decisions_json(),
            "connections" => self.connections_json(),
            "reload" => match self.reload() {
                Ok(()) => r#"{"ok":true,"message":"reloaded"}"#.into(),
                Err(e) => serde_json::json!({"ok": false, "message": crate::error::report(&e)})
                    .to_string(),
            },
            other => {
                serde_json::json!({"ok": false, "message": format!("unknown request {other:?}")})
                    .to_string()
            }
        }
    }
}

async fn admin_conn(sock: tokio::net::UnixStream, tx: mpsc::Sender<AdminRequest>) {
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let (reply, rx) = oneshot::channel();
        if tx.send(AdminRequest { line, reply }).await.is_err() {
            return;
        }
        let Ok(mut answer) = rx.await else { return };
        answer.push('\n');
        if w.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Control datagrams read before each tick's liveness check, at most.
const MAX_CONTROL_BACKLOG: usize = 1024;

async fn control_loop(
    mut ctx: LoopCtx,
    admin: std::os::unix::net::UnixListener,
    udp: std::net::UdpSocket,
    metrics_l: Option<std::net::TcpListener>,
) -> Result<HostGuard, DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let io = || DaemonError::start("registering the sockets and signals with tokio");
    admin.set_nonblocking(true).map_err(io())?;
    udp.set_nonblocking(true).map_err(io())?;
    // The same socket, read directly before each liveness check: tokio's
    // readiness may not have caught up after the loop was held up.
    let backlog = udp.try_clone().map_err(io())?;
    let admin = tokio::net::UnixListener::from_std(admin).map_err(io())?;
    let udp = tokio::net::UdpSocket::from_std(udp).map_err(io())?;
    let status = Arc::new(Mutex::new(ctx.status()));
    if let Some(l) = metrics_l {
        l.set_nonblocking(true).map_err(io())?;
        let l = tokio::net::TcpListener::from_std(l).map_err(io())?;
        let reg = Arc::new(metrics::registry(status.clone()));
        tokio::spawn(metrics::serve(l, reg));
    }
    let (admin_tx, mut admin_rx) = mpsc::channel::<AdminRequest>(16);
    let mut term = signal(SignalKind::terminate()).map_err(io())?;
    let mut int = signal(SignalKind::interrupt()).map_err(io())?;
    let mut hup = signal(SignalKind::hangup()).map_err(io())?;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let refresh = Duration::from_millis(ctx.cfg.load.refresh_ms);
    let mut next_refresh = Instant::now();
    let mut last_status = Instant::now();
    let mut buf = vec![0u8; 2048];
    let port = ctx.cfg.cluster.port;
    // Peers were added when the control plane was built; the silence that
    // makes one dead counts from now, when their reports can be heard.
    ctx.engines.restart_silence(now_since(ctx.origin));
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => match ctx.reload() {
                Ok(()) => tracing::info!("SIGHUP: configuration reloaded"),
                Err(e) => tracing::error!(error = %crate::error::Report(&e), "SIGHUP: reload refused"),
            },
            r = udp.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    let now = clock(ctx.origin);
                    ctx.control.handle_datagram(now, from.ip(), &buf[..n], &mut ctx.engines);
                }
            }
            c = admin.accept() => {
                if let Ok((sock, _)) = c {
                    tokio::spawn(admin_conn(sock, admin_tx.clone()));
                }
            }
            Some(req) = admin_rx.recv() => {
                let answer = ctx.admin(&req.line);
                let _ = req.reply.send(answer);
            }
            _ = tick.tick() => {
                // Reports that arrived before this tick are applied before
                // the tick re-derives the peers' health from their age: a
                // report waiting in the socket while the tick ran first made
                // its peer `suspect` for one tick, and both peers at once
                // made SYNs be served here for want of a peer (issue 15).
                // Read on a second handle of the socket: after the loop was
                // held up (a stopped process), tokio's `try_recv_from` trusts
                // a readiness not yet updated and read nothing, and the peers
                // whose reports waited were held dead (issue 15, part 3).
                for _ in 0..MAX_CONTROL_BACKLOG {
                    let Ok((n, from)) = backlog.recv_from(&mut buf) else { break };
                    let now = clock(ctx.origin);
                    ctx.control.handle_datagram(now, from.ip(), &buf[..n], &mut ctx.engines);
                }
                let now = clock(ctx.origin);
                if !ctx.engines.is_measuring() && Instant::now() >= next_refresh {
                    // Every shard notes what opens and ends during the
                    // dump; the dump waits until all have begun.
                    ctx.engines.begin_load_measurement();
                }
                if ctx.engines.is_measuring() && ctx.engines.measurement_ready() {
                    let (t, cpu) = (Instant::now(), dpr_io::sys::thread_cpu_ns());
                    ctx.refresh_load();
                    ctx.load_measure_us = t.elapsed().as_micros().try_into().unwrap_or(u64::MAX);
                    let cpu = Duration::from_nanos(dpr_io::sys::thread_cpu_ns().saturating_sub(cpu));
                    next_refresh = Instant::now() + load::measurement_interval(refresh, cpu);
                }
                ctx.engines.tick(now.mono, 256);
                // VIP mode: the flows the shards missed, asked of the peers.
                let asked = ctx.engines.take_flow_queries();
                if !asked.is_empty() {
                    ctx.control.ask_flows(now, &asked, &ctx.engines);
                }
                ctx.control.check_idle(now, &ctx.engines);
                ctx.sync_fast_path();
                if now.mono >= ctx.control.poll_timeout() {
                    ctx.control.handle_timeout(now, &mut ctx.engines);
                }
            }
        }
        ctx.abort_cut_connections();
        // Flush what the control plane wants sent.
        let out: Vec<_> = std::iter::from_fn(|| ctx.control.poll_transmit()).collect();
        for t in out {
            let _ = udp.send_to(&t.payload, SocketAddr::new(t.to, port)).await;
        }
        if last_status.elapsed() >= Duration::from_millis(250) {
            last_status = Instant::now();
            let s = ctx.status();
            *status.lock().unwrap_or_else(PoisonError::into_inner) = s;
        }
    }
    // What every shard's table says now (a shard that does not answer
    // counts as routing something: holding is the safe side).
    let now = now_since(ctx.origin);
    let shards = ctx.engines.shards();
    let answers = ctx.engines.ask(move |e| e.forwarding_connections(now));
    let routed = if answers.len() < shards {
        usize::MAX
    } else {
        answers.iter().sum()
    };
    let announced = crate::bgp::hold_announcement(&ctx.guard, ctx.draining_since.is_some());
    if ctx.cfg.backend.hold_on_exit && (routed > 0 || announced) {
        // Undoing the diversion now would hand the packets of these
        // connections to the local stack, which resets them: hold them
        // (dropped until the next instance runs; the clients retransmit).
        ctx.guard.hold()?;
        tracing::warn!(
            connections = routed,
            announced,
            state = %ctx.cfg.admin.state_dir.display(),
            "stopping with connections routed to peers or addresses announced (not drained): the diversion stays in place for the \
             next `dprd run`, which takes it over (`dprd cleanup` removes it; drain first to \
             stop without a hold)"
        );
        return Ok(ctx.guard);
    }
    let mut failed = ctx.guard.teardown();
    if let Some(x) = &ctx.xdp {
        if let Err(e) = x.detach() {
            failed.push(format!("detaching the XDP program: {e}"));
        }
    }
    if !failed.is_empty() {
        return Err(DaemonError::Teardown(failed));
    }
    Ok(ctx.guard)
}
