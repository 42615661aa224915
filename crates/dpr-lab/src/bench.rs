//! `dpr-lab bench`: the data-path benchmarks of `docs/benchmarks.md`, on a
//! topology it builds itself (a [`Lab`] of two hosts and a client on one
//! bridge, 198.18.0.0/15 only, removed on exit, also on SIGINT, SIGTERM and
//! SIGHUP: [`crate::stop`]) and `dpr-lab bench-gen`, a
//! bounded small-packet generator that runs in the client's namespace
//! (live-frame `BPF_PROG_TEST_RUN`, or an AF_XDP socket in copy mode,
//! transmit only, that can be paced).
//!
//! ```text
//!  client (gen / wrk) ──┐
//!  h0 = A (redirects)   ├── bridge       A: dprd (tun | af-xdp native | af-xdp generic),
//!  h1 = B (sink/server) ┘                   or plain kernel forwarding, or HAProxy
//! ```
//! 1. Small-packet forwarding, client → A → B, counted and dropped by an
//!    XDP sink on B's interface ([`crate::sink`]), for each of: kernel IP
//!    forwarding on A, DPR/TUN, DPR/AF_XDP native and generic. DPR's A is
//!    drained, so every flow is redirected to B; the flows' SYNs go first,
//!    then ACK-only segments (60-byte frames) of established flows, paced
//!    down a ladder of offered rates (A's capacity, not its overload). Two
//!    calibration rows first: each generator straight to the sink, no A.
//! 2. HTTP requests per second and latency (`wrk`, one connection per
//!    request, and keep-alive `wrk -t2 -c50`): direct to B; through A
//!    redirecting (each backend); through HAProxy (TCP mode) on A; through
//!    A as a plain IP router. A 20 MB transfer each way (curl), direct and
//!    through a redirect (TUN, AF_XDP native).
//! 3. CPU per forwarded packet (A's dprd process, and the whole machine),
//!    and the resident memory of A's dprd with 1 million tracked flows.
//! 4. The router engine's cost per packet, in this process
//!    (`bench/engine.rs`); no namespaces needed.
//!
//! Every figure is the median of `--runs` runs with its range. The run
//! ends with issue 17's goals table (`bench/goals.rs`), each ratio
//! taken within the run, also written as JSON with `--json FILE`.

use crate::bulk::{self, BulkPath};
use crate::lab::{CLIENT_ADDR, Lab, LabSpec, Programs, service_addr, tunnel_addr};
use crate::netns::sh;
use crate::stop;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod engine;
mod goals;
mod wrk;

/// The options of `dpr-lab bench-gen`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// The interface to send from.
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    /// Source MAC of the frames (aa:bb:cc:dd:ee:ff).
    #[arg(long, value_parser = parse_mac)]
    pub src_mac: Mac,
    /// Destination MAC of the frames: the next hop's.
    #[arg(long, value_parser = parse_mac)]
    pub dst_mac: Mac,
    /// Destination address.
    #[arg(long, default_value = "198.18.0.1")]
    pub dst: Ipv4Addr,
    /// Destination port.
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// Flows (source address and port pairs), 1..=2^20.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub flows: u32,
    /// The first flow's index (to continue where a previous run stopped).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1 << 20))]
    pub first: u32,
    /// Send SYNs (new connections) instead of ACK-only segments.
    #[arg(long)]
    pub syn: bool,
    /// Frames to send at most (up to 100,000,000).
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub count: u64,
    /// Seconds to send at most (0.1..=30).
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// How to send: `live` (the kernel's live-frame `BPF_PROG_TEST_RUN`
    /// of an `XDP_TX` program: no skb, no socket; the next hop's veth end
    /// needs an XDP program, the lab's NIC emulation) or `xsk` (an AF_XDP
    /// socket in copy mode: one skb per frame).
    #[arg(long, value_enum, default_value_t = GenMethod::Live)]
    pub method: GenMethod,
    /// Offered rate, packets per second (0: as fast as it can). `xsk`
    /// paces every batch of 64; `live` sleeps between system calls (its
    /// bursts still leave at full speed).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// `live`: copies of one flow's frame per system call (1..=65536).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub per_call: u32,
}

/// How `dpr-lab bench-gen` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenMethod {
    /// Live-frame `BPF_PROG_TEST_RUN` (`ndo_xdp_xmit`).
    Live,
    /// An AF_XDP socket in copy mode.
    Xsk,
}

impl GenMethod {
    fn arg(self) -> &'static str {
        match self {
            GenMethod::Live => "live",
            GenMethod::Xsk => "xsk",
        }
    }
}

/// A MAC address.
pub type Mac = [u8; 6];

/// The rule that makes B drop the IP-in-IP A sends it, early and the same
/// way in every configuration (`ip` arguments).
const B_DROPS_TUNNEL: &[&str] = &[
    "rule",
    "add",
    "pref",
    "5",
    "iif",
    "eth0",
    "ipproto",
    "4",
    "blackhole",
];

/// The same for the keyed tunnel's GRE.
const B_DROPS_GRE: &[&str] = &[
    "rule",
    "add",
    "pref",
    "5",
    "iif",
    "eth0",
    "ipproto",
    "47",
    "blackhole",
];

fn parse_mac(s: &str) -> Result<Mac, String> {
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("bad MAC {s}"));
    }
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s}"))?;
    }
    Ok(m)
}

/// Flow `i`'s source: 198.18.0.200 for the first 50,000 flows (ports
/// 10000..), then addresses of 198.18.128.0/17, 32 ports each.
fn flow_source(i: u32) -> (Ipv4Addr, u16) {
    if i < 50_000 {
        (CLIENT_ADDR, 10_000 + i as u16)
    } else {
        let j = i - 50_000;
        let host = j / 32;
        let a = u32::from(Ipv4Addr::new(198, 18, 128, 0)) + (host % 32_768);
        (Ipv4Addr::from(a), 20_000 + (j % 32) as u16)
    }
}

/// One 60-byte Ethernet frame: IPv4 + TCP (20 bytes) + 6 bytes of payload.
fn frame(g: &GenArgs, i: u32) -> [u8; 60] {
    let (src, sport) = flow_source(i);
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&g.dst_mac);
    f[6..12].copy_from_slice(&g.src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&g.dst.octets());
    let c = dpr_packet::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut f[34..60];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&g.port.to_be_bytes());
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&(if g.syn { 0u32 } else { 1 }).to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = if g.syn { 0x02 } else { 0x10 };
    tcp[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
    let ph = dpr_packet::checksum::pseudo_header_v4(src, g.dst, 6, 26);
    let c = dpr_packet::checksum::fold(dpr_packet::checksum::combine(
        ph,
        dpr_packet::checksum::sum(tcp),
    ));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f
}

/// Waits until `sent` packets are due at `rate` per second since `start`
/// (0: no pacing). Sleeps while more than 100 µs ahead, then returns: the
/// average holds the rate, a batch leaves at once.
fn pace(start: Instant, sent: u64, rate: u64) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
    loop {
        let now = start.elapsed();
        if now + Duration::from_micros(100) >= due {
            return;
        }
        std::thread::sleep(due - now - Duration::from_micros(50));
    }
}

/// CPU time of this process so far, nanoseconds (`/proc/self/schedstat`).
/// Without IRQ time accounting (this kernel) the softirq work that runs
/// on the way out of its system calls (the veth peer's NAPI, the bridge, a
/// router's XDP or IP forwarding on the same CPU) is charged to it too.
fn own_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// `dpr-lab bench-gen`: sends the frames; prints
/// `{"sent": N, "secs": S, "cpu_ns": C}` (C: its own CPU time, the softirq
/// work its system calls drive included on this kernel).
pub fn gen_main(g: &GenArgs) -> Result<(), String> {
    if !(0.1..=30.0).contains(&g.secs) {
        return Err(format!("--secs {}: must be in 0.1..=30", g.secs));
    }
    let ifindex = dpr_xdp::ifindex(&g.ifname).map_err(|e| e.to_string())?;
    let frames: Vec<[u8; 60]> = (0..g.flows).map(|i| frame(g, g.first + i)).collect();
    let limit = Duration::from_secs_f64(g.secs);
    let (sent, secs, cpu_ns) = match g.method {
        GenMethod::Live => {
            let live = dpr_xdp::tools::LiveFrameGenerator::new().map_err(|e| e.to_string())?;
            let start = Instant::now();
            let cpu0 = own_cpu_ns();
            let mut sent = 0u64;
            let mut next = 0usize;
            while sent < g.count && start.elapsed() < limit {
                let n = (g.count - sent).min(u64::from(g.per_call)) as u32;
                live.send(ifindex, &frames[next], n)
                    .map_err(|e| format!("live-frame send: {e}"))?;
                next = (next + 1) % frames.len();
                sent += u64::from(n);
                pace(start, sent, g.rate);
            }
            (sent, start.elapsed().as_secs_f64(), own_cpu_ns() - cpu0)
        }
        GenMethod::Xsk => {
            let cfg = dpr_xdp::xsk::XskConfig {
                rx_frames: 64,
                tx_frames: 4096,
                rx_ring: 64,
                fill_ring: 128,
                ..dpr_xdp::xsk::XskConfig::default()
            };
            let mut xsk =
                dpr_xdp::xsk::XskSocket::bind(ifindex, 0, &cfg).map_err(|e| e.to_string())?;
            let start = Instant::now();
            let cpu0 = own_cpu_ns();
            let mut sent = 0u64;
            let mut next = 0usize;
            while sent < g.count && start.elapsed() < limit {
                let n = (g.count - sent).min(64) as usize;
                let batch = (0..n).map(|k| &frames[(next + k) % frames.len()][..]);
                let q = xsk.tx_copy_many(batch).map_err(|e| e.to_string())?;
                next = (next + q) % frames.len();
                sent += q as u64;
                if q < n {
                    xsk.complete();
                }
                pace(start, sent, g.rate);
            }
            let _ = xsk.drain_tx(Duration::from_millis(200));
            (sent, start.elapsed().as_secs_f64(), own_cpu_ns() - cpu0)
        }
    };
    println!("{{\"sent\": {sent}, \"secs\": {secs}, \"cpu_ns\": {cpu_ns}}}");
    Ok(())
}

/// Median and range of samples.
#[derive(Debug, Clone, Copy, Default)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(v: &[f64]) -> Stat {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Stat::default();
    }
    v.sort_by(f64::total_cmp);
    Stat {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn fmt_stat(s: Stat, scale: f64, digits: usize) -> String {
    format!(
        "{:.d$} ({:.d$}–{:.d$})",
        s.median / scale,
        s.min / scale,
        s.max / scale,
        d = digits
    )
}

/// [`fmt_stat`] of the samples, or "—" when there are none (a path with
/// no dprd).
fn fmt_samples(v: &[f64], scale: f64, digits: usize) -> String {
    if v.is_empty() {
        "—".to_string()
    } else {
        fmt_stat(stat(v), scale, digits)
    }
}

struct Bench {
    lab: Lab,
    runs: usize,
    secs: f64,
    /// `[tunnel] auth` of both daemons in the DPR rows being measured.
    auth: String,
    /// Every `auth` the DPR rows are measured with, in this order per backend.
    auths: Vec<String>,
    /// What the goals table is computed from.
    figures: goals::Figures,
    /// The sink on B's interface while the forwarding rows run.
    sink: Option<crate::sink::Sink>,
}

fn mac_of(lab: &Lab, ns: &str) -> Result<String, String> {
    let out = lab.exec(ns, "cat", &["/sys/class/net/eth0/address"])?;
    Ok(out.trim().to_string())
}

/// utime + stime of `pid`, seconds.
fn proc_cpu(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; `after` starts at field 3.
    (t(11) + t(12)) / 100.0
}

/// Busy CPU seconds of the whole machine (all but idle and iowait).
fn machine_busy() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(l) = s.lines().next() else {
        return 0.0;
    };
    let v: Vec<f64> = l
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One HTTP path's figures, one entry per run.
#[derive(Debug, Default)]
struct HttpSamples {
    rps: Vec<f64>,
    /// Latency percentiles, ms.
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// Busy CPU time of the whole machine per request, µs.
    machine_us: Vec<f64>,
    /// CPU time of the dprd processes (A and B) per request, µs.
    dprd_us: Vec<f64>,
    /// TCP retransmissions (client, A and B) per 1,000 requests.
    retrans_per_k: Vec<f64>,
    /// Socket errors and non-2xx answers wrk counted.
    errors: Vec<f64>,
}

/// The 20 MB transfers of one path, MB/s, one entry per run.
#[derive(Debug, Default)]
struct BulkSamples {
    down: Vec<f64>,
    up: Vec<f64>,
    /// TCP retransmissions (client, A and B) per transfer, each way.
    down_retrans: Vec<f64>,
    up_retrans: Vec<f64>,
}

/// The DPR backends of the HTTP benchmarks, in their order.
const DPR_BACKENDS: [&str; 3] = ["tun", "af-xdp-generic", "af-xdp-native"];

/// The connection-per-request rows: the DPR backends and, beside them,
/// AF_XDP native without the XDP send fast path (issue 17).
const HTTP_BACKENDS: [&str; 4] = ["tun", "af-xdp-generic", FP_OFF, "af-xdp-native"];

/// What a path of an HTTP benchmark is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathKind {
    Direct,
    Haproxy,
    Kernel,
    /// A redirecting on `backend`; `first_auth`: with the first
    /// `--tunnel-auth` (the one the goals are judged on).
    Dpr {
        backend: String,
        first_auth: bool,
    },
}

/// One path's figures.
#[derive(Debug)]
struct PathResult<T> {
    name: String,
    kind: PathKind,
    samples: T,
}

/// The samples `f` picks on the path of `kind` (empty when not measured).
fn path_samples<T>(r: &[PathResult<T>], kind: &PathKind, f: impl Fn(&T) -> &Vec<f64>) -> Vec<f64> {
    r.iter()
        .find(|p| &p.kind == kind)
        .map(|p| f(&p.samples).clone())
        .unwrap_or_default()
}

/// The samples `f` picks on each DPR path of the first tunnel auth.
fn dpr_samples<T>(r: &[PathResult<T>], f: impl Fn(&T) -> &Vec<f64>) -> goals::PerBackend {
    r.iter()
        .filter_map(|p| match &p.kind {
            PathKind::Dpr {
                backend,
                first_auth: true,
            } => Some((backend.clone(), f(&p.samples).clone())),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Default)]
struct FwdResult {
    pps: Vec<f64>,
    sent_pps: Vec<f64>,
    /// The generator's own CPU time per packet the sink counted (the
    /// softirq work on its CPU included: see [`own_cpu_ns`]).
    sender_ns: Vec<f64>,
    /// The ladder's first offered rate that lost at most [`LOSS_OK`]
    /// (0: none did), as the sink counted it.
    lossless_pps: Vec<f64>,
    proc_ns: Vec<f64>,
    machine_ns: Vec<f64>,
}

/// What one `bench-gen` run reports.
#[derive(Debug, Clone, Copy)]
struct GenOut {
    sent: u64,
    secs: f64,
    cpu_ns: u64,
}

/// The offered rates of the forwarding ladder, as fractions of the paced
/// generator's calibration rate.
const LADDER: [f64; 10] = [1.0, 0.8, 0.64, 0.5, 0.4, 0.32, 0.25, 0.2, 0.15, 0.1];
/// The loss at which the ladder stops.
const LOSS_OK: f64 = 0.01;

/// A ladder step that lost at most [`LOSS_OK`] of what was sent (and sent
/// something).
fn loss_ok(sent: u64, got: u64) -> bool {
    sent > 0 && got as f64 >= (1.0 - LOSS_OK) * sent as f64
}

/// The forwarding rows' destination beyond A (B drops it: route and sink).
const SINK_NET: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 0);
const SINK_DST: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);

/// The AF_XDP native rows without the XDP send fast path (issue 17).
const FP_OFF: &str = "af-xdp-native, fast path off";

impl Bench {
    fn a(&self) -> String {
        self.lab.host_ns(0)
    }
    fn b(&self) -> String {
        self.lab.host_ns(1)
    }

    fn backend_section(backend: &str) -> &'static str {
        match backend {
            "af-xdp-native" => "[backend]\nkind = \"af-xdp\"\nxdp_mode = \"native\"\n",
            "af-xdp-generic" => "[backend]\nkind = \"af-xdp\"\nxdp_mode = \"generic\"\n",
            FP_OFF => {
                "[backend]\nkind = \"af-xdp\"\nxdp_mode = \"native\"\nxdp_fast_path = false\n"
            }
            _ => "[backend]\nkind = \"tun\"\n",
        }
    }

    /// Host `i`'s configuration with `backend` and `extra` appended (and
    /// the tunnel's `auth` in force).
    fn config(&self, i: usize, backend: &str, extra: &str) -> String {
        let mut t = self
            .lab
            .config_text(i)
            .replace("auth = \"key\"", &format!("auth = \"{}\"", self.auth));
        for b in ["af-xdp-native", "af-xdp-generic", "tun"] {
            t = t.replace(Self::backend_section(b), "");
        }
        format!("{t}\n{}{extra}", Self::backend_section(backend))
    }

    /// A runs dprd on `backend`, drained (every new connection goes to B).
    fn start_a(&mut self, backend: &str, extra: &str) -> Result<(), String> {
        // A fresh B too: it forgets the A that drained and left before.
        let _ = self.lab.signal_dprd(1, "TERM");
        let b = self.config(1, "tun", "");
        self.lab.start_dprd_with(1, &b)?;
        let c = self.config(0, backend, extra);
        self.lab.start_dprd_with(0, &c)?;
        if let Err(e) = self.lab.wait_alive(Duration::from_secs(10)) {
            let peers = |i: usize| {
                self.lab.status(i).map(|s| {
                    let p: Vec<String> = s.peers.iter().map(|p| p.peer.state.clone()).collect();
                    format!("{p:?} io {:?}", s.io)
                })
            };
            return Err(format!(
                "{e} ({backend}): A sees {:?}, B sees {:?}\nA: {}\nB: {}",
                peers(0),
                peers(1),
                self.lab.log_tail(0),
                self.lab.log_tail(1)
            ));
        }
        let s = self.lab.status(0)?;
        let want = match backend {
            "af-xdp-native" | FP_OFF => "af-xdp (native)",
            "af-xdp-generic" => "af-xdp (generic)",
            _ => "tun",
        };
        if s.backend != want {
            return Err(format!("A runs {} instead of {want}", s.backend));
        }
        let r = self.lab.admin(0, "drain")?;
        if !r.contains("\"ok\":true") {
            return Err(format!("drain: {r}"));
        }
        stop::sleep(Duration::from_millis(300))?;
        Ok(())
    }

    /// A runs dprd on `backend` and redirects every new connection to B
    /// without draining (a drained host leaves the cluster once it has no
    /// connections, and B then drops its IP-in-IP): A's capacity is tiny and
    /// it holds one idle local connection, so its load is far above B's.
    /// B runs the same backend as A, as a cluster would.
    fn start_a_loaded(&mut self, backend: &str) -> Result<(), String> {
        let _ = self.lab.signal_dprd(1, "TERM");
        let b = self.config(1, backend, "");
        self.lab.start_dprd_with(1, &b)?;
        let c = self
            .config(0, backend, "")
            .replace("[load]\n", "[load]\ncapacity = 0.0001\n");
        self.lab.start_dprd_with(0, &c)?;
        self.lab.wait_alive(Duration::from_secs(10))?;
        let ns = self.lab.client_ns();
        let script = format!("exec 3<>/dev/tcp/{}/80; sleep 100", service_addr(0));
        self.lab.spawn_in(&ns, "bash", &["-c", &script])?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.lab.status(0)?.open_connections < 1 {
            if Instant::now() > deadline {
                return Err("A never saw its idle connection".into());
            }
            stop::sleep(Duration::from_millis(20))?;
        }
        stop::sleep(Duration::from_millis(300))?;
        Ok(())
    }

    /// Makes A a plain IP router (forwarding on, no ICMP redirects: the
    /// next hop is on the same link), or stops its forwarding.
    fn a_routes(&self, on: bool) -> Result<(), String> {
        let a = self.a();
        let settings: &[&str] = if on {
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.eth0.send_redirects=0",
            ]
        } else {
            &["net.ipv4.ip_forward=0"]
        };
        for k in settings {
            self.lab.exec(&a, "sysctl", &["-qw", k])?;
        }
        Ok(())
    }

    fn stop_a(&mut self) {
        let _ = self.lab.signal_dprd(0, "TERM");
    }

    /// One `bench-gen` run in the client's namespace towards `dst`, in
    /// frames addressed to `dst_mac` (A's, or B's for the calibration).
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        dst: Ipv4Addr,
        dst_mac: &str,
        flows: u32,
        first: u32,
        syn: bool,
        count: u64,
        secs: f64,
        method: GenMethod,
        rate: u64,
    ) -> Result<GenOut, String> {
        let src_mac = mac_of(&self.lab, &self.lab.client_ns())?;
        let exe = self.lab.programs.lab.to_string_lossy().into_owned();
        let mut args: Vec<String> = [
            "bench-gen",
            "--ifname",
            "eth0",
            "--src-mac",
            &src_mac,
            "--dst-mac",
            dst_mac,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            "--dst".into(),
            dst.to_string(),
            "--flows".into(),
            flows.to_string(),
            "--first".into(),
            first.to_string(),
            "--count".into(),
            count.to_string(),
            "--secs".into(),
            secs.to_string(),
            "--method".into(),
            method.arg().into(),
            "--rate".into(),
            rate.to_string(),
            // One SYN per flow; the ACK stream in kernel-sized batches.
            "--per-call".into(),
            if syn { "1" } else { "65536" }.into(), // live only
        ]);
        if syn {
            args.push("--syn".into());
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.lab.exec(&self.lab.client_ns(), &exe, &a)?;
        let v: serde_json::Value = serde_json::from_str(out.trim()).map_err(|e| e.to_string())?;
        Ok(GenOut {
            sent: v["sent"].as_u64().unwrap_or(0),
            secs: v["secs"].as_f64().unwrap_or(secs),
            cpu_ns: v["cpu_ns"].as_u64().unwrap_or(0),
        })
    }

    /// Packets the sink on B dropped so far.
    fn sunk(&self) -> Result<u64, String> {
        match &self.sink {
            Some(s) => Ok(s.counts()?.dropped()),
            None => Err("the sink is not attached".into()),
        }
    }

    /// Runs the ACK stream `runs` times; the sink's count per second.
    ///
    /// Without `top`: once per run at the generator's full speed (the
    /// calibration). With `top`: each run walks the ladder of offered
    /// rates (`top` × [`LADDER`], paced AF_XDP generator, steps of a third
    /// of `--secs`, at least 0.5 s) down to the first rate that loses at
    /// most [`LOSS_OK`]; the run's figure is the highest rate the sink
    /// counted on the way (A's capacity: an open-loop generator faster than
    /// A measures A's overload instead, see docs/benchmarks.md).
    fn measure_fwd(
        &self,
        dst: Ipv4Addr,
        dst_mac: &str,
        flows: u32,
        pid: Option<u32>,
        method: GenMethod,
        top: Option<f64>,
    ) -> Result<FwdResult, String> {
        let mut r = FwdResult::default();
        let steps: Vec<Option<f64>> = match top {
            None => vec![None],
            Some(t) => LADDER.iter().map(|f| Some(t * f)).collect(),
        };
        let step_secs = if top.is_some() {
            (self.secs / 3.0).max(0.5)
        } else {
            self.secs
        };
        for _ in 0..self.runs {
            // (forwarded, offered, sender ns, dprd ns, machine ns) of the best step.
            let mut best: Option<(f64, f64, f64, Option<f64>, f64)> = None;
            let mut lossless = 0.0;
            for rate in &steps {
                let before = self.sunk()?;
                let cpu0 = pid.map(proc_cpu);
                let m0 = machine_busy();
                let g = self.generate(
                    dst,
                    dst_mac,
                    flows,
                    0,
                    false,
                    50_000_000,
                    step_secs,
                    method,
                    rate.map_or(0, |x| x as u64),
                )?;
                stop::sleep(Duration::from_millis(100))?;
                let got = self.sunk()?.saturating_sub(before) as f64;
                let m1 = machine_busy();
                let pps = got / g.secs;
                let step = (
                    pps,
                    g.sent as f64 / g.secs,
                    g.cpu_ns as f64 / got.max(1.0),
                    match (cpu0, pid) {
                        (Some(c0), Some(p)) => Some((proc_cpu(p) - c0) * 1e9 / got.max(1.0)),
                        _ => None,
                    },
                    (m1 - m0) * 1e9 / got.max(1.0),
                );
                if best.is_none_or(|b| step.0 > b.0) {
                    best = Some(step);
                }
                if loss_ok(g.sent, got as u64) {
                    lossless = pps;
                    break;
                }
            }
            if let Some((pps, sent, sender, proc, machine)) = best {
                r.pps.push(pps);
                r.sent_pps.push(sent);
                r.sender_ns.push(sender);
                if let Some(p) = proc {
                    r.proc_ns.push(p);
                }
                r.machine_ns.push(machine);
                r.lossless_pps.push(lossless);
            }
        }
        Ok(r)
    }

    /// The forwarding rows: first the calibration (the generator straight
    /// to B's sink, no A), then kernel forwarding and each DPR backend
    /// through A, all counted by the sink on B.
    fn forwarding(&mut self, flows: u32) -> Result<Vec<(String, FwdResult)>, String> {
        let (a, b) = (self.a(), self.b());
        // B drops what reaches its IP layer anyway, the same way in every
        // case (the sink should leave nothing of the benchmark's).
        self.lab.exec(&b, "ip", B_DROPS_TUNNEL)?;
        self.lab.exec(&b, "ip", B_DROPS_GRE)?;
        self.lab
            .exec(&b, "ip", &["route", "add", "blackhole", "198.19.1.0/24"])?;
        self.sink = Some(crate::sink::Sink::attach(
            &b,
            "eth0",
            &dpr_xdp::SinkConfig {
                plain_prefix: SINK_NET,
                plain_prefix_len: 24,
                tunnel_dst: tunnel_addr(1),
                inner_dst: service_addr(0),
                port: 80,
            },
        )?);
        // The wire costs every row alike, but it runs on the sending CPU
        // too: the bridge need not hand each frame to netfilter
        // (br_netfilter is loaded on this host; per namespace).
        let br = self.lab.bridge_ns();
        let nf = "/proc/sys/net/bridge/bridge-nf-call-iptables";
        let nf_was = self.lab.exec(&br, "cat", &[nf]).ok();
        if nf_was.is_some() {
            self.lab
                .exec(&br, "sh", &["-c", &format!("echo 0 > {nf}")])?;
        }
        let r = self.forwarding_rows(&a, flows);
        if let Some(v) = nf_was {
            let _ = self
                .lab
                .exec(&br, "sh", &["-c", &format!("echo {} > {nf}", v.trim())]);
        }
        if let Some(s) = &self.sink {
            if let Ok(c) = s.counts() {
                eprintln!("bench: sink counters {c:?}");
            }
        }
        self.sink = None;
        r
    }

    fn forwarding_rows(&mut self, a: &str, flows: u32) -> Result<Vec<(String, FwdResult)>, String> {
        let a_mac = mac_of(&self.lab, a)?;
        let b_mac = mac_of(&self.lab, &self.b())?;
        let mut out = Vec::new();
        // Calibration: what the generators and the sink reach without A.
        let mut top = 0.0;
        for method in [GenMethod::Live, GenMethod::Xsk] {
            eprintln!("bench: forwarding, calibration ({})", method.arg());
            let r = self.measure_fwd(SINK_DST, &b_mac, flows, None, method, None)?;
            top = stat(&r.sent_pps).median;
            let name = match method {
                GenMethod::Live => "generator + sink alone (client → B, no A)",
                GenMethod::Xsk => {
                    "generator + sink alone, the AF_XDP copy-mode generator of before (client → B)"
                }
            };
            out.push((name.to_string(), r));
        }
        // Kernel forwarding on A: client → 198.19.1.1 via A → via B.
        {
            let c = self.lab.client_ns();
            let a_addr = service_addr(0).to_string();
            let b_addr = tunnel_addr(1).to_string();
            self.lab
                .exec(&c, "ip", &["route", "add", "198.19.1.0/24", "via", &a_addr])?;
            self.a_routes(true)?;
            self.lab
                .exec(a, "ip", &["route", "add", "198.19.1.0/24", "via", &b_addr])?;
            // Resolve the neighbours first.
            let _ = self.generate(
                SINK_DST,
                &a_mac,
                flows,
                0,
                true,
                u64::from(flows),
                2.0,
                GenMethod::Live,
                0,
            );
            stop::sleep(Duration::from_millis(300))?;
            eprintln!("bench: forwarding, kernel");
            let r = self.measure_fwd(SINK_DST, &a_mac, flows, None, GenMethod::Xsk, Some(top))?;
            self.figures.fwd_kernel = r.pps.clone();
            out.push(("kernel forwarding".to_string(), r));
            self.lab
                .exec(a, "ip", &["route", "del", "198.19.1.0/24", "via", &b_addr])?;
            self.a_routes(false)?;
        }
        for backend in ["tun", "af-xdp-generic", FP_OFF, "af-xdp-native"] {
            for auth in self.auths.clone() {
                self.auth = auth;
                let name = self.row_name(backend);
                eprintln!("bench: forwarding, {name}");
                self.start_a(backend, "")?;
                // The flows' SYNs: A records each as redirected to B.
                self.generate(
                    service_addr(0),
                    &a_mac,
                    flows,
                    0,
                    true,
                    u64::from(flows),
                    5.0,
                    GenMethod::Live,
                    0,
                )?;
                stop::sleep(Duration::from_millis(300))?;
                let pid = self.lab.dprd_pid(0);
                let r = self.measure_fwd(
                    service_addr(0),
                    &a_mac,
                    flows,
                    pid,
                    GenMethod::Xsk,
                    Some(top),
                )?;
                self.stop_a();
                if self.auths.first() == Some(&self.auth) {
                    self.figures
                        .fwd_dpr
                        .push((backend.to_string(), r.pps.clone()));
                }
                out.push((name, r));
            }
        }
        Ok(out)
    }

    /// A DPR row's name: the backend, and the tunnel when more than one is
    /// measured.
    fn row_name(&self, backend: &str) -> String {
        if self.auths.len() > 1 {
            format!("DPR {backend}, tunnel auth {}", self.auth)
        } else {
            format!("DPR {backend}")
        }
    }

    /// One wrk run on `url`: one connection per request (`-t1 -c16`,
    /// `Connection: close`), or keep-alive (`-t2 -c50`, issue 17's).
    fn wrk(&self, url: &str, keep_alive: bool) -> Result<wrk::WrkReport, String> {
        let c = self.lab.client_ns();
        let secs = format!("{}s", self.secs.round().max(1.0));
        let (threads, conns, header) = if keep_alive {
            ("-t2", "-c50", "Connection: keep-alive")
        } else {
            ("-t1", "-c16", "Connection: close")
        };
        let out = self.lab.exec(
            &c,
            "wrk",
            &[threads, conns, "-d", &secs, "--latency", "-H", header, url],
        )?;
        wrk::parse(&out, true)
    }

    /// `--runs` runs of wrk on `url`, with the machine's CPU time, the
    /// CPU time of the dprd processes running (A's and B's), and the TCP
    /// retransmissions of the client, A and B (a sign of loss on the path).
    fn http_runs(
        &self,
        url: &str,
        with_dprd: bool,
        keep_alive: bool,
    ) -> Result<HttpSamples, String> {
        let mut r = HttpSamples::default();
        let nss = [self.lab.client_ns(), self.a(), self.b()];
        let retrans = || -> u64 {
            nss.iter()
                .map(|ns| self.lab.snmp(ns, "Tcp", "RetransSegs").unwrap_or(0))
                .sum()
        };
        let pids: Vec<u32> = if with_dprd {
            (0..2).filter_map(|i| self.lab.dprd_pid(i)).collect()
        } else {
            Vec::new()
        };
        let dprd_cpu = || pids.iter().map(|p| proc_cpu(*p)).sum::<f64>();
        for _ in 0..self.runs {
            let (rt0, m0, d0) = (retrans(), machine_busy(), dprd_cpu());
            let w = self.wrk(url, keep_alive)?;
            let (rt1, m1, d1) = (retrans(), machine_busy(), dprd_cpu());
            let reqs = (w.rps * self.secs.round().max(1.0)).max(1.0);
            r.rps.push(w.rps);
            r.p50.push(w.p50_ms);
            r.p99.push(w.p99_ms);
            r.errors.push(w.errors as f64);
            r.machine_us.push((m1 - m0) * 1e6 / reqs);
            if !pids.is_empty() {
                r.dprd_us.push((d1 - d0) * 1e6 / reqs);
            }
            r.retrans_per_k
                .push(rt1.saturating_sub(rt0) as f64 * 1000.0 / reqs);
        }
        Ok(r)
    }

    /// `--runs` 20 MB transfers with curl ([`crate::bulk`]), download and
    /// upload, MB/s (10^6 bytes) over each transfer's whole time,
    /// connection set-up included: direct to B, or (`redirected`) to A's
    /// service address, checked to have been served by B. Also the TCP
    /// retransmissions of the client, A and B per transfer.
    fn bulk_runs(&self, redirected: bool) -> Result<BulkSamples, String> {
        let path = if redirected {
            BulkPath::Redirect { via: 0 }
        } else {
            BulkPath::Direct { server: 1 }
        };
        let mut r = BulkSamples::default();
        let nss = [self.lab.client_ns(), self.a(), self.b()];
        let retrans = || -> u64 {
            nss.iter()
                .map(|ns| self.lab.snmp(ns, "Tcp", "RetransSegs").unwrap_or(0))
                .sum()
        };
        for _ in 0..self.runs {
            for upload in [false, true] {
                let rt0 = retrans();
                let mbps = if upload {
                    bulk::upload_mb_s(&self.lab, path)?
                } else {
                    bulk::download_mb_s(&self.lab, path)?
                };
                let rt = retrans().saturating_sub(rt0) as f64;
                if upload {
                    r.up.push(mbps);
                    r.up_retrans.push(rt);
                } else {
                    r.down.push(mbps);
                    r.down_retrans.push(rt);
                }
            }
        }
        Ok(r)
    }

    /// Prints what A's dprd did with the new connections of a DPR path.
    fn report_redirects(&self) {
        if let Ok(s) = self.lab.status(0) {
            let ev = |k: &str| s.events.get(k).copied().unwrap_or(0);
            let io = |k: &str| s.io.get(k).copied().unwrap_or(0);
            let nonzero = |m: &std::collections::BTreeMap<String, u64>| {
                m.iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            eprintln!(
                "bench: A redirected {} new connections and served {} ({} with no peer eligible); \
                 AF_XDP tx ring full {}, forwards through the kernel {}; A's drops: [{}]; A's io: [{}]",
                ev("new_redirected"),
                ev("new_local"),
                ev("new_local_no_peer"),
                io("xsk_tx_full"),
                io("xdp_unresolved"),
                nonzero(&s.drops),
                nonzero(&s.io)
            );
        }
        if let Ok(s) = self.lab.status(1) {
            eprintln!(
                "bench: B's drops: [{}]",
                s.drops
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    /// Measures `measure(bench, url, with_dprd)` on each path of an HTTP
    /// benchmark, in this order: direct to B; with `baselines`, HAProxy in
    /// TCP mode on A (leastconn) and kernel forwarding through A; then A
    /// running dprd on each of `backends` (and each tunnel auth),
    /// redirecting every new connection to B. `path` is the URL's path and
    /// query (`/?size=100`, or `/` for the bulk transfer).
    fn each_path<T>(
        &mut self,
        part: &str,
        path: &str,
        baselines: bool,
        backends: &[&str],
        measure: &dyn Fn(&Self, &str, bool) -> Result<T, String>,
    ) -> Result<Vec<PathResult<T>>, String> {
        let (a, b) = (self.a(), self.b());
        // The sink rule of the forwarding test comes off: B serves now.
        while self
            .lab
            .exec(&b, "ip", &["rule", "del", "pref", "5"])
            .is_ok()
        {}
        // No dprd for the baselines: B's kernel alone serves, as without DPR.
        let _ = self.lab.signal_dprd(0, "TERM");
        let _ = self.lab.signal_dprd(1, "TERM");
        let mut out = Vec::new();
        eprintln!("bench: {part}, direct");
        let direct = format!("http://{}{path}", service_addr(1));
        out.push(PathResult {
            name: "direct to B".to_string(),
            kind: PathKind::Direct,
            samples: measure(self, &direct, false)?,
        });
        if baselines {
            eprintln!("bench: {part}, haproxy");
            let cfg = self.lab.dir.join("haproxy.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
                     frontend f\n  bind {}:8080\n  default_backend b\nbackend b\n  balance leastconn\n  server s1 {}:80 source {}\n",
                    service_addr(0),
                    service_addr(1),
                    tunnel_addr(0)
                ),
            )
            .map_err(|e| e.to_string())?;
            let cfg_s = cfg.to_string_lossy().into_owned();
            self.lab.spawn_in(&a, "haproxy", &["-db", "-f", &cfg_s])?;
            stop::sleep(Duration::from_millis(500))?;
            // B holds A's service address (as every peer's): HAProxy connects
            // from A's tunnel address, or B would answer itself.
            let hp = format!("http://{}:8080{path}", service_addr(0));
            let r = measure(self, &hp, false);
            self.lab.kill_extras();
            out.push(PathResult {
                name: "HAProxy TCP mode on A".to_string(),
                kind: PathKind::Haproxy,
                samples: r?,
            });
            // The path's floor: the same hops as a DPR redirect (client → A →
            // B, B answers the client directly), with A a plain IP router.
            eprintln!("bench: {part}, kernel forwarding through A");
            let c = self.lab.client_ns();
            let b_svc = format!("{}/32", service_addr(1));
            let a_addr = tunnel_addr(0).to_string();
            self.a_routes(true)?;
            self.lab
                .exec(&c, "ip", &["route", "add", &b_svc, "via", &a_addr])?;
            let r = measure(self, &direct, false);
            let _ = self.lab.exec(&c, "ip", &["route", "del", &b_svc]);
            let _ = self.a_routes(false);
            out.push(PathResult {
                name: "kernel IP forwarding through A (no balancing)".to_string(),
                kind: PathKind::Kernel,
                samples: r?,
            });
        }
        let via_a = format!("http://{}{path}", service_addr(0));
        let auths = self.auths.clone();
        for backend in backends {
            for (k, auth) in auths.iter().enumerate() {
                self.auth = auth.clone();
                let name = self.row_name(backend);
                eprintln!("bench: {part}, {name}");
                self.start_a_loaded(backend)?;
                let r = measure(self, &via_a, true).map_err(|e| {
                    let st = |i: usize| {
                        self.lab.status(i).map(|s| {
                            format!(
                                "{} {:?} {:?} {:?}",
                                s.backend, s.verdicts, s.events, s.drops
                            )
                        })
                    };
                    format!("{e}\nA: {:?}\nB: {:?}", st(0), st(1))
                });
                if r.is_ok() {
                    self.report_redirects();
                }
                self.lab.kill_extras();
                self.stop_a();
                out.push(PathResult {
                    name: format!("{name} (A → B)"),
                    kind: PathKind::Dpr {
                        backend: backend.to_string(),
                        first_auth: k == 0,
                    },
                    samples: r?,
                });
            }
        }
        Ok(out)
    }

    fn http(&mut self) -> Result<Vec<PathResult<HttpSamples>>, String> {
        self.each_path(
            "http",
            "/?size=100",
            true,
            &HTTP_BACKENDS,
            &|b, url, dprd| b.http_runs(url, dprd, false),
        )
    }

    /// Issue 17's keep-alive row: `wrk -t2 -c50 --latency` with
    /// `Connection: keep-alive`, 1 KiB answers.
    fn keepalive(&mut self) -> Result<Vec<PathResult<HttpSamples>>, String> {
        self.each_path(
            "keep-alive",
            "/?size=1024",
            true,
            &DPR_BACKENDS,
            &|b, url, dprd| b.http_runs(url, dprd, true),
        )
    }

    /// The 20 MB transfers: direct, and through a redirect on TUN and
    /// AF_XDP native.
    fn bulk(&mut self) -> Result<Vec<PathResult<BulkSamples>>, String> {
        self.each_path(
            "bulk",
            "/",
            false,
            &["tun", "af-xdp-native"],
            &|b, _, dprd| b.bulk_runs(dprd),
        )
    }

    fn memory(&mut self, flows: u32) -> Result<(u64, u64, usize), String> {
        eprintln!("bench: memory with {flows} flows");
        // Already there when the forwarding phase ran first.
        let _ = self.lab.exec(&self.b(), "ip", B_DROPS_TUNNEL);
        let _ = self.lab.exec(&self.b(), "ip", B_DROPS_GRE);
        self.auth = self.auths.first().cloned().unwrap_or_else(|| "key".into());
        self.start_a(
            "af-xdp-native",
            "\n[table]\ncapacity = 1100000\nhalf_open_timeout_s = 600\n",
        )?;
        let pid = self.lab.dprd_pid(0).ok_or("no pid")?;
        let idle = rss_kib(pid);
        let a_mac = mac_of(&self.lab, &self.a())?;
        // Bounded: at most 8 rounds of at most 30 s, each continuing
        // where the previous one stopped.
        let mut sent = 0u64;
        for _ in 0..8 {
            if sent >= u64::from(flows) {
                break;
            }
            let first = u32::try_from(sent).unwrap_or(u32::MAX);
            let left = flows.saturating_sub(first);
            sent += self
                .generate(
                    service_addr(0),
                    &a_mac,
                    left,
                    first,
                    true,
                    u64::from(left),
                    30.0,
                    GenMethod::Xsk,
                    0,
                )?
                .sent;
        }
        stop::sleep(Duration::from_millis(500))?;
        // SYNs lost at A's receive queue under the flood left their flows
        // untracked: send every flow's SYN again (a tracked flow's adds
        // nothing) until 98 % are tracked, at most 4 more rounds.
        let mut routes = self.lab.status(0)?.routes;
        for _ in 0..4 {
            if routes as f64 >= 0.98 * f64::from(flows) {
                break;
            }
            self.generate(
                service_addr(0),
                &a_mac,
                flows,
                0,
                true,
                u64::from(flows),
                30.0,
                GenMethod::Xsk,
                0,
            )?;
            stop::sleep(Duration::from_millis(500))?;
            routes = self.lab.status(0)?.routes;
        }
        let full = rss_kib(pid);
        self.stop_a();
        Ok((idle, full, routes))
    }
}

/// The options of `dpr-lab bench` (`dpr-lab bench --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Runs per figure, 1..=20.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub runs: u64,
    /// Seconds per run, 0.5..=20.
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Flows of the forwarding benchmark, 1..=65536.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub flows: u32,
    /// Flows of the memory benchmark, 1..=2^20.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub mem_flows: u32,
    /// Which benchmarks (comma-separated): fwd, http, keepalive, bulk,
    /// engine, mem.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fwd,http,keepalive,bulk,engine,mem"
    )]
    pub only: Vec<Part>,
    /// The tunnel (`[tunnel] auth`) of the DPR rows: key, none, or both
    /// (`key,none`: each DPR row measured with each, back to back, in the
    /// same run; the goals are judged on the first).
    #[arg(long, value_delimiter = ',', default_value = "key")]
    pub tunnel_auth: Vec<TunnelAuthArg>,
    /// Also write issue 17's goals table as JSON to FILE:
    /// `{"rows": [{"figure", "unit", "median", "min", "max", "ratio",
    /// "goal", "met"}, ...]}`, one row per line.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// `--tunnel-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TunnelAuthArg {
    /// GRE with the keyed tag (dprd's default).
    Key,
    /// Plain IP-in-IP.
    None,
}

/// One part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Small-packet forwarding.
    Fwd,
    /// HTTP requests, one connection per request.
    Http,
    /// HTTP requests on keep-alive connections (wrk -t2 -c50).
    Keepalive,
    /// A 20 MB transfer each way, direct and through a redirect.
    Bulk,
    /// The router engine in this process (no namespaces).
    Engine,
    /// Memory with many flows.
    Mem,
}

/// Flows of the engine rows (as `cargo bench -p dpr-router --bench engine`).
const ENGINE_FLOWS: u32 = 1_000_000;

fn print_http(title: &str, r: &[PathResult<HttpSamples>]) {
    let base = r
        .first()
        .map_or(1.0, |p| stat(&p.samples.rps).median.max(1.0));
    println!("\n{title}");
    println!(
        "| path | requests/s | ratio to direct | p50 ms | p99 ms | machine CPU µs/req | dprd CPU µs/req | TCP retransmits / 1k req | wrk errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for p in r {
        let v = &p.samples;
        let s = stat(&v.rps);
        println!(
            "| {} | {} | {:.2} | {} | {} | {} | {} | {} | {} |",
            p.name,
            fmt_stat(s, 1.0, 0),
            s.median / base,
            fmt_stat(stat(&v.p50), 1.0, 2),
            fmt_stat(stat(&v.p99), 1.0, 2),
            fmt_stat(stat(&v.machine_us), 1.0, 0),
            fmt_samples(&v.dprd_us, 1.0, 0),
            fmt_stat(stat(&v.retrans_per_k), 1.0, 1),
            fmt_stat(stat(&v.errors), 1.0, 0)
        );
    }
}

/// The forwarding table: the calibration rows first (the second, the
/// paced generator's, is what the rows through A are compared with), then
/// the rows through A, each with its share of the calibration and A's CPU
/// per packet on the sending CPU (the sender's time minus the
/// calibration's).
fn print_forwarding(r: &[(String, FwdResult)], flows: u32) {
    let calib = r.get(1).map(|x| &x.1);
    let calib_pps = calib.map_or(1.0, |c| stat(&c.pps).median.max(1.0));
    let calib_ns = calib.map_or(0.0, |c| stat(&c.sender_ns).median);
    let base = r
        .iter()
        .find(|x| x.0 == "kernel forwarding")
        .map_or(1.0, |x| stat(&x.1.pps).median.max(1.0));
    println!(
        "\n1. Small-packet forwarding client → A → B (60-byte frames, {flows} established flows), counted and dropped by an XDP sink on B; through A: the highest rate the sink counted on a ladder of paced offered rates (AF_XDP generator), down to the first that lost ≤ 1 %"
    );
    println!(
        "| path | forwarded (kpps) | offered there (kpps) | loss-free ≤ 1 % (kpps) | ratio to kernel | share of the paced calibration | sender CPU ns/pkt | A's ns/pkt (sender − calibration) | A alone: 1 / (A's ns + dprd's ns) (kpps) | A's dprd CPU ns/pkt | machine CPU ns/pkt |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, f) in r {
        let s = stat(&f.pps);
        let sender = stat(&f.sender_ns).median;
        let through_a = name == "kernel forwarding" || name.starts_with("DPR");
        let (ratio, a_ns, a_alone, lossless) = if through_a {
            let a_ns = sender - calib_ns;
            // dprd's own thread (TUN, the AF_XDP worker) runs apart from
            // the sending CPU: its time adds to A's.
            let whole = a_ns
                + if f.proc_ns.is_empty() {
                    0.0
                } else {
                    stat(&f.proc_ns).median
                };
            (
                format!("{:.2}", s.median / base),
                format!("{a_ns:.0}"),
                if whole > 0.0 {
                    format!("{:.0}", 1e6 / whole)
                } else {
                    "—".into()
                },
                fmt_samples(&f.lossless_pps, 1e3, 0),
            )
        } else {
            ("—".into(), "—".into(), "—".into(), "—".into())
        };
        println!(
            "| {name} | {} | {} | {lossless} | {ratio} | {:.2} | {} | {a_ns} | {a_alone} | {} | {} |",
            fmt_stat(s, 1e3, 0),
            fmt_stat(stat(&f.sent_pps), 1e3, 0),
            s.median / calib_pps,
            fmt_stat(stat(&f.sender_ns), 1.0, 0),
            fmt_samples(&f.proc_ns, 1.0, 0),
            fmt_stat(stat(&f.machine_ns), 1.0, 0)
        );
    }
}

/// `dpr-lab bench`. The caller installs [`stop`]'s signal handling first
/// (the binary does), so that SIGINT, SIGTERM and SIGHUP end it cleanly.
pub fn main(args: &BenchArgs) -> Result<(), String> {
    let runs = usize::try_from(args.runs).unwrap_or(1);
    let secs = args.secs;
    if !(0.5..=20.0).contains(&secs) {
        return Err(format!("--secs {secs}: must be in 0.5..=20"));
    }
    let (flows, mem_flows) = (args.flows, args.mem_flows);
    let only = |p: Part| args.only.contains(&p);
    let needs_lab = args.only.iter().any(|p| *p != Part::Engine);
    let mut figures = goals::Figures::default();
    let started = Instant::now();
    println!(
        "dpr-lab bench: 2 hosts + client on one bridge (veth), {runs} runs x {secs} s each, median (min–max); {} CPUs; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    if only(Part::Engine) {
        // First, while no namespace traffic runs; at most 1 s per row and run.
        eprintln!("bench: engine, {ENGINE_FLOWS} flows");
        let e = engine::measure(ENGINE_FLOWS, runs, secs.min(1.0))?;
        println!(
            "\n0. The router engine in this process ({ENGINE_FLOWS} redirected flows, as `cargo bench -p dpr-router --bench engine`), ns per packet"
        );
        println!("| path | ns/packet |");
        println!("|---|---|");
        println!(
            "| established redirected packet, entry in cache | {} |",
            fmt_stat(stat(&e.cached_ns), 1.0, 1)
        );
        println!(
            "| established redirected packets, flows random among the million, batches of {} (`Engine::process_batch`) | {} |",
            engine::BATCH,
            fmt_stat(stat(&e.random_ns), 1.0, 1)
        );
        figures.engine_cached_ns = e.cached_ns;
        figures.engine_random_ns = e.random_ns;
    }
    if needs_lab {
        lab_parts(args, runs, secs, flows, mem_flows, &mut figures)?;
    }
    let rows = goals::rows(&figures);
    println!(
        "\nThe goals of issue 17 (ratios within this run; \"best backend\": the DPR backend with the best median); the run took {:.0} s, load average now {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    print!("{}", goals::table(&rows));
    if let Some(path) = &args.json {
        goals::write_json(path, &rows)?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// The parts that need the lab's namespaces (root).
fn lab_parts(
    args: &BenchArgs,
    runs: usize,
    secs: f64,
    flows: u32,
    mem_flows: u32,
    figures: &mut goals::Figures,
) -> Result<(), String> {
    let only = |p: Part| args.only.contains(&p);
    if !dpr_io::host::can_set_up() {
        return Err(crate::lab::not_root_message());
    }
    let mut tools = vec!["ethtool"];
    if only(Part::Http) || only(Part::Keepalive) {
        tools.extend(["wrk", "haproxy"]);
    }
    if only(Part::Bulk) {
        tools.push("curl");
    }
    for tool in tools {
        sh(std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]))
            .map_err(|_| format!("{tool} is missing (scripts/bench installs it)"))?;
    }
    let programs = Programs::beside_current_exe()?;
    let spec = LabSpec {
        hosts: 2,
        threshold: 1000.0,
        service_ms: 0,
        workers: 64,
        size: 100,
        // The flood shares A's receive queue with the load reports: a
        // generous dead time keeps B alive through dropped reports.
        report_interval_ms: 100,
        dead_after_ms: 5000,
        backend: "af-xdp-native".into(), // checksum offload off on every veth
        ..LabSpec::default()
    };
    let mut lab = Lab::create(spec, &programs)?;
    lab.start_httpd(0)?;
    lab.start_httpd(1)?;
    let auths: Vec<String> = args
        .tunnel_auth
        .iter()
        .map(|a| match a {
            TunnelAuthArg::Key => "key".to_string(),
            TunnelAuthArg::None => "none".to_string(),
        })
        .collect();
    let mut bench = Bench {
        lab,
        runs,
        secs,
        auth: "key".into(),
        auths,
        figures: std::mem::take(figures),
        sink: None,
    };
    let r = bench_lab_parts(&mut bench, args, flows, mem_flows);
    *figures = std::mem::take(&mut bench.figures);
    r
}

fn bench_lab_parts(
    bench: &mut Bench,
    args: &BenchArgs,
    flows: u32,
    mem_flows: u32,
) -> Result<(), String> {
    let only = |p: Part| args.only.contains(&p);
    if only(Part::Fwd) {
        let r = bench.forwarding(flows)?;
        print_forwarding(&r, flows);
    }
    if only(Part::Http) {
        let r = bench.http()?;
        print_http(
            "2. HTTP, one connection per request (wrk -t1 -c16, 100-byte answers)",
            &r,
        );
        bench.figures.http_kernel = path_samples(&r, &PathKind::Kernel, rps);
        bench.figures.http_haproxy = path_samples(&r, &PathKind::Haproxy, rps);
        bench.figures.http_dpr = dpr_samples(&r, rps);
    }
    if only(Part::Keepalive) {
        let r = bench.keepalive()?;
        print_http(
            "2b. HTTP on keep-alive connections (wrk -t2 -c50 --latency, Connection: keep-alive, 1 KiB answers)",
            &r,
        );
        bench.figures.ka_direct_rps = path_samples(&r, &PathKind::Direct, rps);
        bench.figures.ka_haproxy_p99 = path_samples(&r, &PathKind::Haproxy, p99);
        bench.figures.ka_dpr_rps = dpr_samples(&r, rps);
        bench.figures.ka_dpr_p99 = dpr_samples(&r, p99);
    }
    if only(Part::Bulk) {
        let r = bench.bulk()?;
        println!("\n2c. A 20 MB transfer (curl, one connection), MB/s over the whole transfer");
        println!(
            "| path | download MB/s | ratio to direct | upload MB/s | ratio to direct | TCP retransmits per download / upload |"
        );
        println!("|---|---|---|---|---|---|");
        let down0 = r.first().map_or(1.0, |p| stat(&p.samples.down).median);
        let up0 = r.first().map_or(1.0, |p| stat(&p.samples.up).median);
        for p in &r {
            let (d, u) = (stat(&p.samples.down), stat(&p.samples.up));
            println!(
                "| {} | {} | {:.2} | {} | {:.2} | {} / {} |",
                p.name,
                fmt_stat(d, 1.0, 0),
                d.median / down0,
                fmt_stat(u, 1.0, 0),
                u.median / up0,
                fmt_stat(stat(&p.samples.down_retrans), 1.0, 0),
                fmt_stat(stat(&p.samples.up_retrans), 1.0, 0)
            );
        }
        if let Some(d) = r.iter().find(|p| p.kind == PathKind::Direct) {
            bench.figures.bulk_direct = vec![
                ("download".into(), d.samples.down.clone()),
                ("upload".into(), d.samples.up.clone()),
            ];
        }
        fn down(s: &BulkSamples) -> &Vec<f64> {
            &s.down
        }
        fn up(s: &BulkSamples) -> &Vec<f64> {
            &s.up
        }
        for (dir, f) in [
            ("download", down as fn(&BulkSamples) -> &Vec<f64>),
            ("upload", up),
        ] {
            for (b, v) in dpr_samples(&r, f) {
                bench.figures.bulk_dpr.push((format!("{b} {dir}"), v));
            }
        }
    }
    if only(Part::Mem) {
        let (idle, full, routes) = bench.memory(mem_flows)?;
        println!("\n3. Memory of A's dprd (af-xdp native, table capacity 1,100,000)");
        println!("| state | RSS (MiB) | routes tracked | RSS per tracked flow (B) |");
        println!("|---|---|---|---|");
        println!(
            "| started, empty tables | {:.1} | 0 | — |",
            idle as f64 / 1024.0
        );
        let per_flow = rss_per_flow(idle, full, routes);
        println!(
            "| after {mem_flows} SYNs of distinct flows | {:.1} | {routes} | {} |",
            full as f64 / 1024.0,
            per_flow.map_or_else(|| "—".to_string(), |v| format!("{v:.1}"))
        );
        bench.figures.rss_per_flow = per_flow.into_iter().collect();
    }
    Ok(())
}

/// The machine's load averages (1, 5, 15 min), as /proc/loadavg says them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn rps(s: &HttpSamples) -> &Vec<f64> {
    &s.rps
}

fn p99(s: &HttpSamples) -> &Vec<f64> {
    &s.p99
}

/// Bytes of RSS per tracked flow: the growth from the idle daemon's RSS
/// (KiB) over the routes it tracks; none without routes.
fn rss_per_flow(idle_kib: u64, full_kib: u64, routes: usize) -> Option<f64> {
    (routes > 0).then(|| full_kib.saturating_sub(idle_kib) as f64 * 1024.0 / routes as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_stops_at_one_percent_loss() {
        assert!(loss_ok(1000, 1000));
        assert!(loss_ok(1000, 990));
        assert!(!loss_ok(1000, 989));
        assert!(!loss_ok(0, 0), "nothing sent proves nothing");
        assert!(LADDER.windows(2).all(|w| w[0] > w[1]), "descending");
        assert_eq!(LADDER[0], 1.0, "starts at the calibration rate");
    }

    #[test]
    fn the_generator_options_parse_and_are_bounded() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            g: GenArgs,
        }
        let base = [
            "gen",
            "--src-mac",
            "02:00:00:00:00:01",
            "--dst-mac",
            "02:00:00:00:00:02",
        ];
        let c = Cli::try_parse_from(base).unwrap();
        assert_eq!(
            (c.g.method, c.g.per_call, c.g.rate),
            (GenMethod::Live, 64, 0)
        );
        let mut a = base.to_vec();
        a.extend(["--method", "xsk", "--rate", "500000"]);
        let c = Cli::try_parse_from(a).unwrap();
        assert_eq!((c.g.method, c.g.rate), (GenMethod::Xsk, 500_000));
        for bad in [
            ["--per-call", "0"],
            ["--per-call", "65537"],
            ["--method", "pcap"],
        ] {
            let mut a = base.to_vec();
            a.extend(bad);
            assert!(Cli::try_parse_from(a).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rss_per_flow_is_growth_over_routes() {
        assert_eq!(rss_per_flow(1000, 1000 + 55_000, 1_000_000), Some(56.32));
        assert_eq!(rss_per_flow(1000, 900, 10), Some(0.0));
        assert_eq!(rss_per_flow(1000, 2000, 0), None);
    }

    #[test]
    fn the_script_answers_help_with_every_option() {
        // scripts/bench prints its help without building: it must name
        // every option and part of `dpr-lab bench`.
        let script = include_str!("../../../scripts/bench");
        use clap::CommandFactory as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: BenchArgs,
        }
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(
                    script.contains(&format!("--{long}")),
                    "scripts/bench help lacks --{long}"
                );
            }
        }
        for part in ["fwd", "http", "keepalive", "bulk", "engine", "mem"] {
            assert!(script.contains(part), "scripts/bench help lacks {part}");
        }
    }
}
