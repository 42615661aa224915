//! The front door of a shared VIP (`dpr-lab lab --vip`): an upstream router
//! namespace between the client and the hosts, with an ECMP route to the
//! VIPs over the hosts' unicast addresses.
//!
//! ```text
//!  ns client  eth0 198.19.1.2/24, fd00:c::2/64 ── eth0 ns router eth1 198.18.0.254/24, fd00:18::fe/64 ── bridge
//!  ns h<i>    eth0 198.18.0.(11+i)/24, fd00:18::(11+i)/64 on the bridge; dprd's TUN: VIP 198.19.0.100/32, fd00:dead::100/128
//!  router:    198.19.0.100 and fd00:dead::100 ─► ECMP over the hosts that announce them
//!             (net.ipv4/ipv6.fib_multipath_hash_policy = 1: the 5-tuple)
//! ```
//!
//! Three ways to fill the router's route ([`FrontDoor`]):
//! - `bgp`: BIRD 2 in every namespace. Each host's bird learns dprd's
//!   announcement routes (kernel table [`ANNOUNCE_TABLE`], `[bgp]
//!   announce_table`: present while dprd is healthy, removed on `dprd drain`
//!   and at a full stop) and announces them over eBGP (AS 65001+i) to the
//!   router's bird (AS 65000), which installs one multipath route (`merge
//!   paths on`). BFD (200 ms × 5, BIRD at real-time priority) and the hold time detect a dead host.
//! - `static`: the lab writes the multipath route itself (`ip route replace
//!   VIP nexthop via … nexthop via …`): hash-threshold, as BIRD's route.
//! - `resilient`: nexthop objects in a resilient group (`ip nexthop add id
//!   N group … type resilient buckets 64`): a change of members moves only
//!   the buckets of the hosts that left or (after the idle timer) those
//!   given to a new one.
//!
//! Addresses: 198.18.0.0/15 and fd00::/8 inside the lab's namespaces only.

use crate::lab::{Lab, tunnel_addr};
use crate::netns::ip;
use crate::stop;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The shared IPv4 VIP (outside the hosts' segment: routed, never resolved).
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 100);
/// The shared IPv6 VIP.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xdead, 0, 0, 0, 0, 0, 0x100);
/// The router's address on the hosts' segment.
pub const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// The router's IPv6 address on the hosts' segment.
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0xfe);
/// The client's address (behind the router).
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);
/// The client's IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xc, 0, 0, 0, 0, 0, 2);
const ROUTER_CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
const ROUTER_CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xc, 0, 0, 0, 0, 0, 1);
/// The kernel table of dprd's announcement routes (`[bgp] announce_table`).
pub const ANNOUNCE_TABLE: u32 = 102;
/// How long a host holds a packet of a flow it does not know while it asks
/// its peers who serves it (`[vip] claim_deadline_ms`). The engine's 50 ms
/// default is a query's round trip many times over on an idle host; on
/// this shared 2-core machine under the steps' load a claim took up to
/// 50 ms and more (a flow given up too early goes to the local stack,
/// which resets it). Below `dead_after_ms` (500): a flow of a dead host
/// is reset before the router has even dropped it.
pub const CLAIM_DEADLINE_MS: u64 = 300;
/// The router's AS number.
pub const ROUTER_ASN: u32 = 65000;
/// BFD interval (ms) and multiplier: a dead host is noticed within about
/// 1 s. (100 ms × 3 flapped on this shared 2-core machine under load: a
/// late BFD packet takes the session down, and BIRD then waits its `error
/// wait time` before trying again; see docs/deployment.md.)
const BFD_MS: u32 = 200;
const BFD_MULT: u32 = 5;
/// BGP hold time (s), the fallback when BFD is silent.
const HOLD_S: u32 = 3;
/// Resilient group: buckets, and the group ids (IPv4, IPv6).
const BUCKETS: u32 = 64;
const GROUP4: u32 = 500;
const GROUP6: u32 = 600;

/// Host `i`'s AS number.
pub fn host_asn(i: usize) -> u32 {
    65001 + i as u32
}

/// Host `i`'s IPv6 unicast address on the segment (`fd00:18::11` for h0,
/// the twin of its IPv4 tunnel address).
pub fn host_addr6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x11 + i as u16)
}

/// The VIP of a family.
pub fn vip(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(VIP6)
    } else {
        IpAddr::V4(VIP4)
    }
}

/// How the router's route to the VIPs is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontDoor {
    /// BIRD 2 on every host and the router, eBGP, health-coupled to dprd.
    Bgp,
    /// A multipath route the lab writes.
    Static,
    /// A resilient nexthop group the lab writes.
    Resilient,
}

impl FrontDoor {
    /// From its name (`bgp`, `static`, `resilient`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "bgp" => Ok(Self::Bgp),
            "static" => Ok(Self::Static),
            "resilient" => Ok(Self::Resilient),
            other => Err(format!("front door {other:?}: bgp, static or resilient")),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bgp => "bgp",
            Self::Static => "static",
            Self::Resilient => "resilient",
        }
    }
}

/// Host `i`'s bird configuration: learn the announcement table, announce
/// exactly the VIPs found there to the router.
pub fn host_bird_config(i: usize) -> String {
    let me4 = tunnel_addr(i);
    let me6 = host_addr6(i);
    let asn = host_asn(i);
    format!(
        "# dpr-lab host {i} (generated): announce the VIPs while dprd keeps them in table {ANNOUNCE_TABLE}\n\
         router id {me4};\n\
         protocol device {{ scan time 10; }}\n\
         protocol kernel announce4 {{ kernel table {ANNOUNCE_TABLE}; learn; scan time 1; ipv4 {{ import all; export none; }}; }}\n\
         protocol kernel announce6 {{ kernel table {ANNOUNCE_TABLE}; learn; scan time 1; ipv6 {{ import all; export none; }}; }}\n\
         protocol bfd {{ interface \"eth0\" {{ min rx interval {BFD_MS} ms; min tx interval {BFD_MS} ms; multiplier {BFD_MULT}; }}; }}\n\
         protocol bgp up4 {{ local {me4} as {asn}; neighbor {ROUTER4} as {ROUTER_ASN}; hold time {HOLD_S}; keepalive time 1; connect retry time 1; error wait time 1, 5; bfd on;\n  \
           ipv4 {{ import none; export where net = {VIP4}/32; next hop self; }}; }}\n\
         protocol bgp up6 {{ local {me6} as {asn}; neighbor {ROUTER6} as {ROUTER_ASN}; hold time {HOLD_S}; keepalive time 1; connect retry time 1; error wait time 1, 5; bfd on;\n  \
           ipv6 {{ import none; export where net = {VIP6}/128; next hop self; }}; }}\n"
    )
}

/// The router's bird configuration: a session per host and family, the
/// VIP routes merged into one multipath route in the kernel.
pub fn router_bird_config(hosts: usize) -> String {
    let mut t = format!(
        "# dpr-lab router (generated): ECMP to the VIPs over the hosts that announce them\n\
         router id {ROUTER4};\n\
         protocol device {{ scan time 10; }}\n\
         protocol kernel k4 {{ merge paths on; ipv4 {{ import none; export all; }}; }}\n\
         protocol kernel k6 {{ merge paths on; ipv6 {{ import none; export all; }}; }}\n\
         protocol bfd {{ interface \"eth1\" {{ min rx interval {BFD_MS} ms; min tx interval {BFD_MS} ms; multiplier {BFD_MULT}; }}; }}\n\
         template bgp hosts4 {{ local {ROUTER4} as {ROUTER_ASN}; hold time {HOLD_S}; keepalive time 1; connect retry time 1; error wait time 1, 5; bfd on; ipv4 {{ import where net = {VIP4}/32; export none; }}; }}\n\
         template bgp hosts6 {{ local {ROUTER6} as {ROUTER_ASN}; hold time {HOLD_S}; keepalive time 1; connect retry time 1; error wait time 1, 5; bfd on; ipv6 {{ import where net = {VIP6}/128; export none; }}; }}\n"
    );
    for i in 0..hosts {
        t += &format!(
            "protocol bgp h{i}v4 from hosts4 {{ neighbor {} as {}; }}\nprotocol bgp h{i}v6 from hosts6 {{ neighbor {} as {}; }}\n",
            tunnel_addr(i),
            host_asn(i),
            host_addr6(i),
            host_asn(i)
        );
    }
    t
}

/// The next hops of `ip route show ADDR` (one `via` or several `nexthop
/// via` lines; a resilient group's members are listed the same way).
pub fn parse_nexthops(text: &str) -> Vec<IpAddr> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out: Vec<IpAddr> = words
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Which of the hosts an address of the segment is (IPv4 tunnel address or
/// IPv6 twin).
pub fn host_of(a: IpAddr, hosts: usize) -> Option<usize> {
    (0..hosts).find(|&i| a == IpAddr::V4(tunnel_addr(i)) || a == IpAddr::V6(host_addr6(i)))
}

impl Lab {
    /// The router's namespace.
    pub fn router_ns(&self) -> String {
        format!("{}-r", self.prefix)
    }

    fn bird_socket(&self, who: &str) -> PathBuf {
        self.dir.join(format!("bird-{who}.sock"))
    }

    /// Builds the front door (after the hosts are on the bridge): the
    /// hosts' IPv6 addresses and default routes (dprd holds the VIPs); the router
    /// and the client behind it.
    pub(crate) fn build_front_door(&mut self, br: &str) -> Result<(), String> {
        for i in 0..self.spec.hosts {
            let ns = self.host_ns(i);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/64", host_addr6(i)),
                "dev",
                "eth0",
                "nodad",
            ])?;
            // The VIPs are dprd's (`[vip] addrs`): it holds them on its
            // TUN device (no ARP, no neighbour discovery there) while it
            // runs or holds its set-up, and announces them.
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &ROUTER4.to_string(),
            ])?;
            ip(&[
                "-n",
                &ns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &ROUTER6.to_string(),
            ])?;
        }
        let r = self.router_ns();
        let c = self.client_ns();
        self.add_lab_ns(&r)?;
        self.add_lab_ns(&c)?;
        ip(&[
            "-n", br, "link", "add", "vr", "type", "veth", "peer", "name", "eth1", "netns", &r,
        ])?;
        ip(&["-n", br, "link", "set", "vr", "master", "br0", "up"])?;
        ip(&[
            "-n", &r, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &c,
        ])?;
        for (ns, dev, a4, a6) in [
            (&r, "eth1", format!("{ROUTER4}/24"), format!("{ROUTER6}/64")),
            (
                &r,
                "eth0",
                format!("{ROUTER_CLIENT4}/24"),
                format!("{ROUTER_CLIENT6}/64"),
            ),
            (&c, "eth0", format!("{CLIENT4}/24"), format!("{CLIENT6}/64")),
        ] {
            ip(&["-n", ns, "addr", "add", &a4, "dev", dev])?;
            ip(&["-n", ns, "addr", "add", &a6, "dev", dev, "nodad"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            if self.spec.is_xdp() {
                crate::netns::sh(self.in_ns(ns, "ethtool").args(["-K", dev, "tx", "off"]))?;
            }
        }
        ip(&[
            "-n",
            &c,
            "route",
            "add",
            "default",
            "via",
            &ROUTER_CLIENT4.to_string(),
        ])?;
        ip(&[
            "-n",
            &c,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &ROUTER_CLIENT6.to_string(),
        ])?;
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            // ECMP by the 5-tuple (the default hashes addresses only: one
            // client would always land on one host).
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv6.fib_multipath_hash_policy", "1"),
        ] {
            self.sysctl(&r, k, v)?;
        }
        if self.spec.front_door == Some(FrontDoor::Resilient) {
            for i in 0..self.spec.hosts {
                let (id4, id6) = (nh_id(i, false).to_string(), nh_id(i, true).to_string());
                ip(&[
                    "-n",
                    &r,
                    "nexthop",
                    "add",
                    "id",
                    &id4,
                    "via",
                    &tunnel_addr(i).to_string(),
                    "dev",
                    "eth1",
                ])?;
                ip(&[
                    "-n",
                    &r,
                    "nexthop",
                    "add",
                    "id",
                    &id6,
                    "via",
                    &host_addr6(i).to_string(),
                    "dev",
                    "eth1",
                ])?;
            }
        }
        Ok(())
    }

    fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<(), String> {
        crate::netns::sh(
            self.in_ns(ns, "sysctl")
                .args(["-qw", &format!("{key}={value}")]),
        )
        .map(|_| ())
    }

    /// Starts bird in host `i`'s namespace (`Some(i)`) or the router's
    /// (`None`), with its configuration and control socket in the lab's
    /// directory; it is stopped with the lab (or by [`Self::stop_bird`]).
    pub fn start_bird(&mut self, host: Option<usize>) -> Result<(), String> {
        if !crate::netns::have("bird") {
            return Err(
                "bird not found: install BIRD 2 (Debian package bird2; scripts/test installs it)"
                    .into(),
            );
        }
        let (who, ns, conf) = match host {
            Some(i) => (format!("h{i}"), self.host_ns(i), host_bird_config(i)),
            None => (
                "router".to_string(),
                self.router_ns(),
                router_bird_config(self.spec.hosts),
            ),
        };
        let path = self.dir.join(format!("bird-{who}.conf"));
        std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
        let sock = self.bird_socket(&who);
        let log = std::fs::File::create(self.dir.join(format!("bird-{who}.log")))
            .map_err(|e| e.to_string())?;
        let child = self
            .in_ns(&ns, "bird")
            .args([
                "-f",
                "-c",
                &path.to_string_lossy(),
                "-s",
                &sock.to_string_lossy(),
            ])
            .args([
                "-P",
                &self.dir.join(format!("bird-{who}.pid")).to_string_lossy(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("starting bird ({who}): {e}"))?;
        // BFD is a real router's control plane, often in hardware. Here it
        // shares the machine's cores with every host's router and the
        // test's load, and a starved BIRD misses its 1-s window: beside a
        // CPU hog every session once flapped at a host's death, the VIP's
        // route went away for 4 s. Real-time round robin keeps BIRD's BFD
        // on time (it uses little CPU); where that is refused, it runs as
        // it is.
        let rt = Command::new("chrt")
            .args(["-a", "-r", "-p", "10", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !rt.is_ok_and(|s| s.success()) {
            eprintln!("dpr-lab: bird ({who}) keeps the normal scheduling class (chrt failed)");
        }
        self.birds.push((who, child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.birdc(host, "show status").is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "bird ({}) did not come up",
                    host.map_or("router".into(), |i| format!("h{i}"))
                ));
            }
            stop::sleep(Duration::from_millis(50))?;
        }
        Ok(())
    }

    /// Stops host `i`'s bird (SIGTERM: its sessions close, the router
    /// withdraws its paths at once).
    pub fn stop_bird(&mut self, i: usize) {
        let who = format!("h{i}");
        if let Some(at) = self.birds.iter().position(|(w, _)| *w == who) {
            let (_, mut c) = self.birds.remove(at);
            stop_child(&mut c);
        }
    }

    /// `birdc -s SOCKET CMD` against host `i`'s bird or the router's.
    pub fn birdc(&self, host: Option<usize>, cmd: &str) -> Result<String, String> {
        let who = host.map_or("router".to_string(), |i| format!("h{i}"));
        let mut args = vec![
            "-s".to_string(),
            self.bird_socket(&who).to_string_lossy().into_owned(),
        ];
        args.extend(cmd.split_whitespace().map(str::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::netns::sh(std::process::Command::new("birdc").args(&args))
    }

    /// The router's next hops for the VIP of a family, as host indices.
    pub fn vip_paths(&self, v6: bool) -> Result<Vec<usize>, String> {
        let fam = if v6 { "-6" } else { "-4" };
        let text = ip(&[
            "-n",
            &self.router_ns(),
            fam,
            "route",
            "show",
            &vip(v6).to_string(),
        ])?;
        Ok(parse_nexthops(&text)
            .into_iter()
            .filter_map(|a| host_of(a, self.spec.hosts))
            .collect())
    }

    /// Waits (at most `limit`) until the router's route to both VIPs goes
    /// over exactly `hosts`; returns how long it took.
    pub fn wait_vip_paths(&self, hosts: &[usize], limit: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        let mut want = hosts.to_vec();
        want.sort_unstable();
        loop {
            let (p4, p6) = (self.vip_paths(false)?, self.vip_paths(true)?);
            if p4 == want && p6 == want {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > limit {
                return Err(format!(
                    "the router's VIP route did not reach hosts {want:?} in {limit:?}: IPv4 {p4:?}, IPv6 {p6:?}"
                ));
            }
            stop::sleep(Duration::from_millis(10))?;
        }
    }

    /// `static` and `resilient` front doors: points the router's VIP routes
    /// at `hosts` (the lab plays the health check).
    pub fn set_ecmp(&self, hosts: &[usize]) -> Result<(), String> {
        let r = self.router_ns();
        for v6 in [false, true] {
            let fam = if v6 { "-6" } else { "-4" };
            let dst = vip(v6).to_string();
            if hosts.is_empty() {
                let _ = ip(&["-n", &r, fam, "route", "del", &dst]);
                continue;
            }
            match self.spec.front_door {
                Some(FrontDoor::Resilient) => {
                    let group = if v6 { GROUP6 } else { GROUP4 }.to_string();
                    let members: Vec<String> =
                        hosts.iter().map(|i| nh_id(*i, v6).to_string()).collect();
                    let members = members.join("/");
                    let buckets = BUCKETS.to_string();
                    let args = [
                        "-n",
                        &r,
                        "nexthop",
                        "replace",
                        "id",
                        &group,
                        "group",
                        &members,
                        "type",
                        "resilient",
                        "buckets",
                        &buckets,
                    ];
                    ip(&args)?;
                    ip(&["-n", &r, fam, "route", "replace", &dst, "nhid", &group])?;
                }
                _ => {
                    let mut args: Vec<String> = ["-n", &r, fam, "route", "replace", &dst]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    for i in hosts {
                        let via = if v6 {
                            host_addr6(*i).to_string()
                        } else {
                            tunnel_addr(*i).to_string()
                        };
                        args.extend([
                            "nexthop".into(),
                            "via".into(),
                            via,
                            "dev".into(),
                            "eth1".into(),
                        ]);
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    ip(&args)?;
                }
            }
        }
        Ok(())
    }

    /// Starts the load generator in the client namespace against `targets`
    /// in the background (new connections during an event); collect it
    /// with [`finish_load`]. Bounded by `load.secs` and its timeouts.
    pub fn start_load(
        &self,
        targets: &[IpAddr],
        load: &crate::lab::LoadSpec,
    ) -> Result<std::process::Child, String> {
        let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let exe = self.programs.lab.to_string_lossy().into_owned();
        self.in_ns(&self.client_ns(), &exe)
            .args(["loadgen", "--targets", &targets.join(",")])
            .args(["--rate", &load.rate.to_string()])
            .args(["--duration", &load.secs.to_string()])
            .args(["--skew", &load.skew.to_string()])
            .args(["--seed", &load.seed.to_string()])
            .args(["--dispatch", load.dispatch.name(), "--label", "background"])
            .args(["--size", &self.spec.size.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting loadgen: {e}"))
    }

    /// Takes host `i`'s link to the segment down (a dead host, as the
    /// router sees it) or up again.
    pub fn set_host_link(&self, i: usize, up: bool) -> Result<(), String> {
        ip(&[
            "-n",
            &self.host_ns(i),
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ])
        .map(|_| ())
    }
}

/// `dpr-lab lab --vip`: the front door, shown and used.
pub fn vip_main(o: &crate::lab::LabOptions, programs: &crate::lab::Programs) -> Result<(), String> {
    let mut spec = o.spec.clone();
    let door = spec.front_door.unwrap_or(FrontDoor::Bgp);
    // With today's engine a connection to a VIP redirected to a peer is
    // refused there (the peer does not list the VIP as the sender's): every
    // host serves what ECMP gives it until connection consistency (issue
    // 18, branch vip) lands.
    spec.threshold = 1e6;
    let n = spec.hosts;
    println!(
        "dpr-lab lab --vip: {n} hosts ({} backend) behind a router, VIPs {VIP4} and {VIP6}, front door {}",
        spec.backend,
        door.name()
    );
    let started = Instant::now();
    let mut lab = Lab::create(spec, programs)?;
    for i in 0..n {
        lab.start_httpd(i)?;
        lab.start_dprd(i)?;
    }
    lab.wait_alive(Duration::from_secs(10))?;
    let all: Vec<usize> = (0..n).collect();
    match door {
        FrontDoor::Bgp => {
            lab.start_bird(None)?;
            for i in 0..n {
                lab.start_bird(Some(i))?;
            }
        }
        FrontDoor::Static | FrontDoor::Resilient => lab.set_ecmp(&all)?,
    }
    let took = lab.wait_vip_paths(&all, Duration::from_secs(30))?;
    println!(
        "the router's route reaches all {n} hosts after {:.1} s",
        took.as_secs_f64()
    );
    show_router(&lab, door)?;
    let load = o.load(crate::loadgen::Dispatch::Skewed);
    for v6 in [false, true] {
        let r = lab.run_load_addrs(&[vip(v6)], &load, if v6 { "IPv6" } else { "IPv4" })?;
        print_spread(&r, n, if v6 { "IPv6 client" } else { "IPv4 client" });
    }
    println!("dprd drain on h0:");
    lab.admin(0, "drain")?;
    if door != FrontDoor::Bgp {
        lab.set_ecmp(&all[1..])?;
    }
    let took = lab.wait_vip_paths(&all[1..], Duration::from_secs(30))?;
    println!(
        "  h0 left the router's route after {:.2} s",
        took.as_secs_f64()
    );
    show_router(&lab, door)?;
    let r = lab.run_load_addrs(&[vip(false)], &load, "IPv4, h0 drained")?;
    print_spread(&r, n, "IPv4 client, h0 drained");
    // Drained hosts stop without a hold: everything dprd made goes.
    let mut clean = true;
    for i in 0..n {
        lab.stop_dprd_drained(i, Duration::from_secs(10))?;
        let left = lab.leftovers(i)?;
        if !left.is_empty() {
            clean = false;
            println!("h{i}: left behind after drain and SIGTERM: {left:?}");
        }
    }
    if clean {
        println!(
            "drain, then SIGTERM: every dprd removed its rules and routes of both families, \
             its announcement routes, TUN device and sysctls."
        );
    }
    drop(lab);
    println!("lab removed ({:.0} s).", started.elapsed().as_secs_f64());
    Ok(())
}

fn show_router(lab: &Lab, door: FrontDoor) -> Result<(), String> {
    let r = lab.router_ns();
    if door == FrontDoor::Bgp {
        println!(
            "router$ birdc show route\n{}",
            lab.birdc(None, "show route")?
        );
    }
    if door == FrontDoor::Resilient {
        println!(
            "router$ ip nexthop show\n{}",
            ip(&["-n", &r, "nexthop", "show"])?
        );
    }
    println!(
        "router$ ip route show {VIP4}; ip -6 route show {VIP6}\n{}{}",
        ip(&["-n", &r, "route", "show", &VIP4.to_string()])?,
        ip(&["-n", &r, "-6", "route", "show", &VIP6.to_string()])?
    );
    Ok(())
}

fn print_spread(r: &crate::loadgen::LoadResult, n: usize, title: &str) {
    let mut served = vec![0usize; n];
    let (mut sent, mut errors) = (0, 0);
    for t in r.values() {
        sent += t.sent;
        errors += t.errors;
        for (i, s) in served.iter_mut().enumerate() {
            *s += t.served_by.get(&format!("h{i}")).copied().unwrap_or(0);
        }
    }
    let cells: Vec<String> = served
        .iter()
        .enumerate()
        .map(|(i, s)| format!("h{i} {s}"))
        .collect();
    println!(
        "{title}: {sent} connections to the VIP, {errors} failed; served by {}",
        cells.join(", ")
    );
}

/// Waits for a load generator of [`Lab::start_load`] and reads its result.
pub fn finish_load(c: std::process::Child) -> Result<crate::loadgen::LoadResult, String> {
    let out = c.wait_with_output().map_err(|e| format!("loadgen: {e}"))?;
    if !out.status.success() {
        return Err(format!("loadgen failed: {}", out.status));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("loadgen output: {e}"))
}

/// The nexthop object id of host `i` (resilient front door).
fn nh_id(i: usize, v6: bool) -> u32 {
    (if v6 { 200 } else { 100 }) + i as u32
}

/// SIGTERM, then SIGKILL after 5 s.
pub(crate) fn stop_child(c: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_are_read_from_one_path_several_or_none() {
        let multi = "198.19.0.100 proto bird metric 32 \n\tnexthop via 198.18.0.12 dev eth1 weight 1 \n\tnexthop via 198.18.0.11 dev eth1 weight 1 \n";
        assert_eq!(
            parse_nexthops(multi),
            vec![IpAddr::V4(tunnel_addr(0)), IpAddr::V4(tunnel_addr(1))]
        );
        let one = "fd00:dead::100 via fd00:18::13 dev eth1 proto bird metric 32 pref medium\n";
        let hops = parse_nexthops(one);
        assert_eq!(hops, vec![IpAddr::V6(host_addr6(2))]);
        assert_eq!(host_of(hops[0], 4), Some(2));
        assert_eq!(host_of(hops[0], 2), None);
        assert!(parse_nexthops("").is_empty());
    }

    #[test]
    fn bird_configurations_name_every_session_and_only_the_vips() {
        let h = host_bird_config(1);
        assert!(h.contains("kernel table 102; learn;"), "{h}");
        assert!(
            h.contains("local 198.18.0.12 as 65002; neighbor 198.18.0.254 as 65000"),
            "{h}"
        );
        assert!(
            h.contains("local fd00:18::12 as 65002; neighbor fd00:18::fe as 65000"),
            "{h}"
        );
        assert!(h.contains("export where net = 198.19.0.100/32"), "{h}");
        assert!(h.contains("export where net = fd00:dead::100/128"), "{h}");
        let r = router_bird_config(3);
        assert_eq!(r.matches("protocol bgp h").count(), 6, "{r}");
        assert!(r.contains("merge paths on"), "{r}");
        assert!(r.contains("neighbor fd00:18::13 as 65003"), "{r}");
        assert_eq!(FrontDoor::parse("resilient"), Ok(FrontDoor::Resilient));
        assert!(FrontDoor::parse("ospf").is_err());
    }
}
