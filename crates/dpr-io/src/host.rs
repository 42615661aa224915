//! Host network setup for the TUN path, and its undoing.
//!
//! [`HostGuard::setup`] applies a [`HostPlan`] step by step over netlink and
//! `/proc/sys`, recording the inverse of every step it completed. Dropping
//! the guard (normal exit, a signal handled by the daemon, an error half-way
//! through setup, or a panic that unwinds) runs the inverses in reverse
//! order, so the host is left as it was. What it does (see RECIPES):
//!
//! - sysctls, old values restored on exit: `ip_forward=1`,
//!   `tcp_early_demux=0`, `arp_ignore=1` / `arp_announce=2` on `all` and the
//!   uplink, `rp_filter` 1 → 2 on `all` and the uplink, `rp_filter=0` and
//!   `accept_local=1` on the TUN;
//! - with an IPv6 service address or VIP: `disable_ipv6=0` on the uplink
//!   and the TUN, IPv6 `forwarding=1` on `all` (old values restored);
//! - the peers' service addresses on the TUN (it answers no ARP), and the
//!   shared VIPs (IPv4 `/32`, IPv6 `/128 nodad`: no host answers ARP or
//!   neighbour discovery for them, the upstream router routes them to the
//!   hosts' unicast addresses);
//! - with `divert` (the TUN backend; the AF_XDP backend's XDP program
//!   takes the traffic instead): `default dev TUN table T` and the diversion rules
//!   `iif UPLINK to SERVICE ipproto tcp dport P lookup T` and
//!   `iif UPLINK to TUNNEL ipproto ipip lookup T` (and `ipproto gre` with
//!   the keyed tunnel); for IPv6 addresses the same in the IPv6 family
//!   (`default dev TUN table T`, one rule per address and port);
//! - the `local` rule moved below them (pref 0 → `local_rule_priority`),
//!   the IPv6 one too when IPv6 addresses are diverted;
//! - with an MSS clamp: copies of the main table's uplink routes in table
//!   `mss_table` with `advmss`, and `from PEER_SERVICE lookup mss_table`,
//!   so the SYN-ACKs of redirected connections announce a segment size
//!   that fits the tunnel; the same for the IPv6 routes (20 bytes less:
//!   the inner IPv6 header) and `from VIP` for every VIP;
//! - with an `announce_table`, last (so first undone): `ADDR dev lo table
//!   N` per own address, which a BGP speaker exports while the host is
//!   healthy ([`HostGuard::withdraw`] on drain).
//!
//! Every request goes through one [`HostSys`]: [`RealHost`] (a route
//! netlink socket, `/proc/sys`, `if_nametoindex`) in production, and
//! [`crate::fake::FakeKernel`] in the tests below, which check the exact
//! order of the set-up and of its undoing, also when a step fails.

use crate::netlink::{self, Netlink, NetlinkSys, RT_TABLE_LOCAL, RT_TABLE_MAIN, Request, Rule};
use crate::state::{HostState, StateFile, UndoStep as Undo};
use crate::sys::{self, NetlinkSocket};
use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// What host setup needs from the kernel: a route netlink socket (the
/// [`NetlinkSys`] supertrait), `/proc/sys`, interface names and the
/// privilege check. Implemented by [`RealHost`] and by
/// [`crate::fake::FakeKernel`].
pub trait HostSys: NetlinkSys {
    /// Whether this process may set the host up (root or `CAP_NET_ADMIN`).
    fn can_set_up(&self) -> bool;
    /// The index of interface `name`.
    fn if_index(&self, name: &str) -> io::Result<u32>;
    /// A sysctl's value, trimmed.
    fn sysctl_read(&mut self, path: &Path) -> io::Result<String>;
    /// Writes a sysctl.
    fn sysctl_write(&mut self, path: &Path, value: &str) -> io::Result<()>;
    /// Whether a sysctl file exists (a device's vanish with it).
    fn sysctl_exists(&self, path: &Path) -> bool;
}

/// The host's own kernel.
#[derive(Debug)]
pub struct RealHost {
    nl: NetlinkSocket,
}

impl RealHost {
    /// Opens the route netlink socket.
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            nl: NetlinkSocket::open()?,
        })
    }
}

impl NetlinkSys for RealHost {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.nl.send(msg)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.nl.recv(buf)
    }
}

impl HostSys for RealHost {
    fn can_set_up(&self) -> bool {
        can_set_up()
    }
    fn if_index(&self, name: &str) -> io::Result<u32> {
        sys::if_index(name)
    }
    fn sysctl_read(&mut self, path: &Path) -> io::Result<String> {
        Ok(std::fs::read_to_string(path)?.trim().to_string())
    }
    fn sysctl_write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        std::fs::write(path, format!("{value}\n"))
    }
    fn sysctl_exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// What to set up. Plain data: fill it by hand, or start from
/// [`HostPlan::new`] and its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// The uplink interface (where clients and peers are).
    pub uplink: String,
    /// The TUN device's name and index.
    pub tun_name: String,
    /// TUN interface index.
    pub tun_ifindex: u32,
    /// This host's tunnel address (already configured on the uplink).
    pub tunnel_addr: Ipv4Addr,
    /// This host's own service addresses (already on the uplink, or on
    /// `lo`), IPv4 or IPv6.
    pub service_addrs: Vec<IpAddr>,
    /// Shared virtual service addresses (VIPs), IPv4 and IPv6: every host
    /// of the cluster holds them, the upstream router spreads them over the
    /// hosts' unicast addresses (ECMP). Placed on the TUN device (IPv6:
    /// `nodad`), which answers no ARP or neighbour solicitation, so no host
    /// claims them on the shared segment; diverted like the service
    /// addresses; their connections announce the tunnel's MSS (a flow ECMP
    /// brings here may be redirected, and one redirected here uses the VIP).
    pub vips: Vec<IpAddr>,
    /// Where the announcement routes live while the host is healthy: one
    /// `ADDR dev lo table N` (`/32`, `/128`) per address it serves as its
    /// own (service addresses and VIPs). A BGP speaker exports that table
    /// ([`HostGuard::withdraw`] on drain; removed first at exit; kept across
    /// a held restart). `None`: no announcement routes.
    pub announce_table: Option<u32>,
    /// The peers' service addresses, to be held on the TUN.
    pub peer_service_addrs: Vec<Ipv4Addr>,
    /// TCP service ports.
    pub service_ports: Vec<u16>,
    /// Table of the diversion into the TUN.
    pub divert_table: u32,
    /// Table of the advmss route copies.
    pub mss_table: u32,
    /// MSS announced on connections redirected to this host (`None`: leave).
    pub advmss: Option<u16>,
    /// Preference of the first diversion rule; the others follow it.
    pub rule_priority: u32,
    /// Where the `local` rule moves to (must be above every rule of ours).
    pub local_rule_priority: u32,
    /// Divert service traffic and IP-in-IP into the TUN with policy
    /// routing (the TUN backend). The AF_XDP backend sets this to false:
    /// its XDP program takes that traffic before the kernel sees it, so no
    /// diversion route, rules or `local` rule move are made.
    pub divert: bool,
    /// IP protocols of the tunnel traffic from peers that is diverted: 4
    /// (IP-in-IP); with the keyed tunnel 47 (GRE) and 4 (refused and
    /// counted by the engine rather than dropped unseen by the kernel).
    pub tunnel_protocols: Vec<u8>,
}

impl HostPlan {
    /// A plan for the TUN backend with the defaults of `dprd`'s
    /// `[backend]` section: diversion table 100, MSS table 101, rules from
    /// preference 10, the `local` rule moved to 100, no MSS clamp, and no
    /// service addresses, ports or peers yet (fill those in).
    pub fn new(uplink: &str, tun_name: &str, tun_ifindex: u32, tunnel_addr: Ipv4Addr) -> Self {
        Self {
            uplink: uplink.into(),
            tun_name: tun_name.into(),
            tun_ifindex,
            tunnel_addr,
            service_addrs: Vec::new(),
            vips: Vec::new(),
            announce_table: None,
            peer_service_addrs: Vec::new(),
            service_ports: Vec::new(),
            divert_table: 100,
            mss_table: 101,
            advmss: None,
            rule_priority: 10,
            local_rule_priority: 100,
            divert: true,
            tunnel_protocols: vec![libc::IPPROTO_IPIP as u8],
        }
    }
}

/// The MSS that fits a tunnel of `mtu` bytes: an outer IPv4 header, the
/// inner IPv4 header and a TCP header without options (60 bytes) less.
pub fn advmss_for_mtu(mtu: u16) -> u16 {
    mtu.saturating_sub(60)
}

/// The MSS an IPv6 client's connection announces when its IPv4 clamp is
/// `advmss_v4`: the inner IPv6 header is 20 bytes longer than IPv4's, the
/// outer header (IPv4, GRE or IP-in-IP) is the same. (An IPv6 outer
/// header, 4-in-6 or 6-in-6, would take 20 more from both.)
pub fn advmss_v6(advmss_v4: u16) -> u16 {
    advmss_v4.saturating_sub(20)
}

impl HostPlan {
    /// Every address this host serves as its own: its service addresses,
    /// then the VIPs.
    pub fn own_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.service_addrs.iter().chain(&self.vips).copied()
    }

    /// Whether any of them is IPv6 (the IPv6 sysctls, table and rules are
    /// made only then).
    pub fn has_v6(&self) -> bool {
        self.own_addrs().any(|a| a.is_ipv6())
    }
}

/// A setup step that failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("host setup failed at {step}: {source}{}", needs_root_hint(.source))]
pub struct SetupError {
    /// The step (the request, sysctl or check).
    pub step: String,
    /// The cause.
    pub source: io::Error,
}

fn needs_root_hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EPERM) {
        " (needs CAP_NET_ADMIN: run dprd as root)"
    } else {
        ""
    }
}

/// The set-up host; dropping it undoes everything (unless it was
/// [held](HostGuard::hold) for the next instance).
#[derive(Debug)]
pub struct HostGuard<S: HostSys = RealHost> {
    nl: Netlink<S>,
    plan: HostPlan,
    undo: Vec<Undo>,
    /// Where every change is recorded before it is made, with the devices.
    journal: Option<(StateFile, HostState)>,
    /// What a previous instance recorded and this one has not yet taken
    /// over (see [`HostGuard::setup_takeover`]).
    prev: Vec<Undo>,
    /// Steps of the previous instance this one found made and kept.
    taken_over: usize,
    /// The previous instance's devices (TUN name, XDP attachment).
    prev_devices: (Option<String>, Option<(u32, u32)>),
    /// False once held: dropping then leaves everything in place.
    armed: bool,
}

/// What a take-over found (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TakeoverReport {
    /// Steps the previous instance had made that this one kept as they were.
    pub taken_over: usize,
    /// Steps of the previous instance this plan does not make, undone.
    pub stale_undone: Vec<String>,
}

fn conf(dev: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv4/conf/{dev}/{key}"))
}

fn conf6(dev: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv6/conf/{dev}/{key}"))
}

/// A VIP on the TUN device: `/32`, or `/128 nodad` for IPv6.
fn vip_addr(tun_ifindex: u32, a: IpAddr) -> Request {
    match a {
        IpAddr::V4(_) => netlink::addr(tun_ifindex, a, 32, false),
        IpAddr::V6(_) => netlink::addr_nodad(tun_ifindex, a, 128),
    }
}

/// Addresses on the uplink that would make peers ignore this host's ARP
/// requests. With `arp_announce=2` the kernel sends an ARP request for a
/// peer's tunnel address from the primary address of the uplink subnet
/// that holds it; if that address is one of this host's service
/// addresses, every peer holds it too (on its TUN) and drops the request,
/// so the peer stays unresolved and redirected packets go nowhere. One
/// message per affected peer, naming the fix; empty when the layout is
/// right (tunnel address primary, service addresses /32).
pub fn arp_source_problems(
    addrs: &[netlink::AddrInfo],
    uplink: u32,
    service_addrs: &[Ipv4Addr],
    peer_tunnels: &[Ipv4Addr],
) -> Vec<String> {
    let contains = |a: &netlink::AddrInfo, t: Ipv4Addr| {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(a.prefix.min(32)))
            .unwrap_or(0);
        u32::from(a.addr) & mask == u32::from(t) & mask
    };
    let mut out = Vec::new();
    for &t in peer_tunnels {
        let sender = addrs
            .iter()
            .find(|a| a.ifindex == uplink && !a.secondary && contains(a, t));
        if let Some(a) = sender.filter(|a| service_addrs.contains(&a.addr)) {
            out.push(format!(
                "ARP requests for peer {t} would be sent from service address {}/{}, which every \
                 peer holds and so ignores: make the tunnel address the subnet's primary \
                 address and add service addresses as /32 (docs/configuration.md)",
                a.addr, a.prefix
            ));
        }
    }
    out
}

/// Reads the uplink's addresses and returns [`arp_source_problems`].
pub fn check_uplink_addresses(
    uplink: &str,
    service_addrs: &[Ipv4Addr],
    peer_tunnels: &[Ipv4Addr],
) -> io::Result<Vec<String>> {
    let ifindex = sys::if_index(uplink)?;
    let addrs = Netlink::open()?.dump_addrs_v4()?;
    Ok(arp_source_problems(
        &addrs,
        ifindex,
        service_addrs,
        peer_tunnels,
    ))
}

/// Whether this process can set up the host (root or `CAP_NET_ADMIN`).
pub fn can_set_up() -> bool {
    sys::geteuid() == 0 || sys::effective_caps().is_ok_and(|c| c & (1 << sys::CAP_NET_ADMIN) != 0)
}

fn step(s: &str) -> impl FnOnce(io::Error) -> SetupError {
    let s = s.to_string();
    move |e: io::Error| SetupError { step: s, source: e }
}

fn privilege_error() -> SetupError {
    SetupError {
        step: "privilege check".into(),
        source: io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not root and no CAP_NET_ADMIN",
        ),
    }
}

impl HostGuard {
    /// Applies `plan` to this host. On error, what was done is undone
    /// before returning.
    pub fn setup(plan: &HostPlan) -> Result<Self, SetupError> {
        Self::setup_takeover(plan, None, None)
    }

    /// [`setup`](Self::setup) with a journal (`journal`: the state file and
    /// what goes in it besides the steps), taking over what a previous
    /// instance left (`prev`, read from the same file): see
    /// [`HostGuard::setup_with_takeover`].
    pub fn setup_takeover(
        plan: &HostPlan,
        journal: Option<(StateFile, HostState)>,
        prev: Option<&HostState>,
    ) -> Result<Self, SetupError> {
        if !can_set_up() {
            return Err(privilege_error());
        }
        let sys = RealHost::open().map_err(step("opening a netlink socket"))?;
        Self::setup_with_takeover(sys, plan, journal, prev)
    }

    /// A guard over what a journal records, to undo it
    /// ([`teardown`](Self::teardown) and [`remove_devices`](Self::remove_devices)):
    /// `dprd cleanup`, after a process that left a hold or died.
    pub fn from_journal(file: StateFile, st: HostState) -> Result<Self, SetupError> {
        let sys = RealHost::open().map_err(step("opening a netlink socket"))?;
        Ok(Self::from_journal_with(sys, file, st))
    }
}

impl<S: HostSys> HostGuard<S> {
    /// [`HostGuard::setup`] through `sys`.
    pub fn setup_with(sys: S, plan: &HostPlan) -> Result<Self, SetupError> {
        Self::setup_with_takeover(sys, plan, None, None)
    }

    /// [`HostGuard::from_journal`] through `sys`.
    pub fn from_journal_with(sys: S, file: StateFile, st: HostState) -> Self {
        let undo = st.undo.clone();
        Self {
            nl: Netlink::new(sys),
            plan: HostPlan::new("", "", 0, Ipv4Addr::UNSPECIFIED),
            undo,
            journal: Some((
                file,
                HostState {
                    undo: Vec::new(),
                    ..st
                },
            )),
            prev: Vec::new(),
            taken_over: 0,
            prev_devices: (None, None),
            armed: true,
        }
    }

    /// Applies `plan` through `sys`, recording every step in the journal
    /// before making it. `prev` is what a previous instance on this host
    /// recorded and left (it died, or held its set-up for us): a step it
    /// made that this plan makes too is found in place (`EEXIST`, or the
    /// `local` rule already moved) and kept, without a moment where it is
    /// missing, so the diversion of the connections it routes never lapses;
    /// a sysctl keeps the *original* value it recorded, not the one it set;
    /// what it made that this plan does not is undone at the end (see
    /// [`finish_takeover`](Self::finish_takeover)). Without `prev`, an
    /// object that already exists is an error, as before.
    pub fn setup_with_takeover(
        sys: S,
        plan: &HostPlan,
        journal: Option<(StateFile, HostState)>,
        prev: Option<&HostState>,
    ) -> Result<Self, SetupError> {
        if !sys.can_set_up() {
            return Err(privilege_error());
        }
        sys.if_index(&plan.uplink)
            .map_err(step("finding the uplink interface"))?;
        let mut g = Self {
            nl: Netlink::new(sys),
            plan: plan.clone(),
            undo: Vec::new(),
            journal,
            prev: prev.map(|p| p.undo.clone()).unwrap_or_default(),
            taken_over: 0,
            prev_devices: prev.map(|p| (p.tun.clone(), p.xdp)).unwrap_or_default(),
            armed: true,
        };
        g.record()?;
        // Every early return below drops `g`, which undoes what was done.
        let up = plan.uplink.as_str();
        let tun = plan.tun_name.as_str();
        let mut sysctls: Vec<(PathBuf, &str, bool)> = vec![
            ("/proc/sys/net/ipv4/ip_forward".into(), "1", false),
            ("/proc/sys/net/ipv4/tcp_early_demux".into(), "0", false),
            (conf("all", "arp_ignore"), "1", false),
            (conf(up, "arp_ignore"), "1", false),
            (conf("all", "arp_announce"), "2", false),
            (conf(up, "arp_announce"), "2", false),
            (conf("all", "rp_filter"), "2", true),
            (conf(up, "rp_filter"), "2", true),
            (conf(tun, "rp_filter"), "0", false),
            (conf(tun, "accept_local"), "1", false),
        ];
        if plan.has_v6() {
            // IPv6 on the uplink and the TUN (the VIPs live there); IPv6
            // forwarding for what the engine writes into the TUN that is
            // not for this host (a reset or ICMPv6 error to a client).
            // There is no IPv6 rp_filter; neighbour discovery answers only
            // for addresses of the receiving interface, so VIPs on the TUN
            // are never claimed on the uplink.
            sysctls.extend([
                (conf6(up, "disable_ipv6"), "0", false),
                (conf6(tun, "disable_ipv6"), "0", false),
                (conf6("all", "forwarding"), "1", false),
            ]);
        }
        for (path, want, only_if_strict) in sysctls {
            let what = format!("sysctl {}", path.display());
            let current = g.nl.sys_mut().sysctl_read(&path).map_err(step(&what))?;
            // The value before any instance changed it.
            let recorded = g.take_prev(|u| matches!(u, Undo::Sysctl { path: p, .. } if *p == path));
            let old = match recorded {
                Some(Undo::Sysctl { old, .. }) => old,
                _ => current.clone(),
            };
            if only_if_strict && old != "1" {
                if current != old {
                    // A previous instance changed what we would leave.
                    g.nl.sys_mut()
                        .sysctl_write(&path, &old)
                        .map_err(step(&what))?;
                }
                continue;
            }
            if old == want && current == want {
                continue;
            }
            g.push(Undo::Sysctl {
                path: path.clone(),
                old: old.clone(),
            })?;
            if current != want {
                if let Err(e) = g.nl.sys_mut().sysctl_write(&path, want) {
                    g.unpush();
                    return Err(step(&what)(e));
                }
            }
            tracing::debug!(path = %path.display(), %old, new = want, "sysctl");
        }
        for a in &plan.peer_service_addrs {
            g.add(netlink::addr(plan.tun_ifindex, IpAddr::V4(*a), 32, false))?;
        }
        for a in &plan.vips {
            g.add(vip_addr(plan.tun_ifindex, *a))?;
        }
        if plan.divert {
            g.add_diversion()?;
        }
        if let Some(mss) = plan.advmss {
            let uplink_index =
                g.nl.sys()
                    .if_index(&plan.uplink)
                    .map_err(step("finding the uplink interface"))?;
            let routes =
                g.nl.dump_routes_v4()
                    .map_err(step("dumping the main routing table"))?;
            let uplink_routes = |r: &&netlink::RouteInfo| {
                r.table == RT_TABLE_MAIN && r.route_type == 1 && r.oif == Some(uplink_index)
            };
            for r in routes.iter().filter(uplink_routes) {
                g.add(netlink::copy_route_with_advmss(
                    r,
                    plan.mss_table,
                    u32::from(mss),
                ))?;
            }
            if plan.has_v6() {
                let routes6 =
                    g.nl.dump_routes_v6()
                        .map_err(step("dumping the main IPv6 routing table"))?;
                for r in routes6.iter().filter(uplink_routes) {
                    g.add(netlink::copy_route_with_advmss(
                        r,
                        plan.mss_table,
                        u32::from(advmss_v6(mss)),
                    ))?;
                }
            }
            let clamped: Vec<IpAddr> = plan
                .peer_service_addrs
                .iter()
                .map(|a| IpAddr::V4(*a))
                .chain(plan.vips.iter().copied())
                .collect();
            g.add_mss_rules(&clamped)?;
        }
        if plan.divert {
            g.move_local_rule(false)?;
            if plan.has_v6() {
                g.move_local_rule(true)?;
            }
        }
        // Last, so that they go first at exit: the VIPs are withdrawn
        // before anything that serves them is undone.
        g.announce()?;
        Ok(g)
    }

    /// Removes and returns the first step of the previous instance that
    /// matches.
    fn take_prev(&mut self, pred: impl Fn(&Undo) -> bool) -> Option<Undo> {
        let i = self.prev.iter().position(pred)?;
        Some(self.prev.remove(i))
    }

    /// Writes the journal (if there is one) as it stands.
    fn record(&mut self) -> Result<(), SetupError> {
        if let Some((file, st)) = &mut self.journal {
            st.undo.clone_from(&self.undo);
            st.undo.extend(self.prev.iter().cloned());
            st.held = !self.armed;
            st.pid = std::process::id();
            file.write(st).map_err(|e| SetupError {
                step: "writing the state journal".into(),
                source: io::Error::other(e.to_string()),
            })?;
        }
        Ok(())
    }

    /// Records `u` (journal first), before the step it undoes is made.
    fn push(&mut self, u: Undo) -> Result<(), SetupError> {
        self.undo.push(u);
        self.record()
    }

    /// The step just pushed was not made after all.
    fn unpush(&mut self) {
        self.undo.pop();
        let _ = self.record();
    }

    /// What the previous instance made that this plan does not, undone
    /// (last made first); call once the new set-up is complete. The
    /// journal then records only this instance's steps.
    pub fn finish_takeover(&mut self) -> TakeoverReport {
        let stale = std::mem::take(&mut self.prev);
        let mut report = TakeoverReport {
            taken_over: self.taken_over,
            stale_undone: Vec::new(),
        };
        for u in stale.into_iter().rev() {
            let what = u.describe();
            if let Err(e) = self.undo_one(&u) {
                tracing::warn!(%what, error = %e, "undoing a previous instance's step failed");
            }
            report.stale_undone.push(what);
        }
        let (tun, xdp) = self.devices();
        let (prev_tun, prev_xdp) = std::mem::take(&mut self.prev_devices);
        if let Some((ifindex, flags)) = prev_xdp.filter(|x| Some(*x) != xdp) {
            let _ = self.nl.set_xdp(ifindex, -1, flags);
            report
                .stale_undone
                .push(format!("detach XDP from ifindex {ifindex}"));
        }
        if let Some(name) = prev_tun.filter(|t| Some(t) != tun.as_ref()) {
            if let Ok(i) = self.nl.sys().if_index(&name) {
                let _ = self.nl.del_link(i);
            }
            report
                .stale_undone
                .push(format!("delete TUN device {name}"));
        }
        let _ = self.record();
        report
    }

    /// Records the devices the daemon made persistent (the TUN device) or
    /// attached (the XDP program: interface index and mode flags), so that
    /// the next instance or `dprd cleanup` can find them.
    pub fn set_devices(
        &mut self,
        tun: Option<String>,
        xdp: Option<(u32, u32)>,
    ) -> Result<(), SetupError> {
        if let Some((_, st)) = &mut self.journal {
            st.tun = tun;
            st.xdp = xdp;
        }
        self.record()
    }

    /// The devices the journal records (TUN name, XDP attachment).
    pub fn devices(&self) -> (Option<String>, Option<(u32, u32)>) {
        self.journal
            .as_ref()
            .map(|(_, st)| (st.tun.clone(), st.xdp))
            .unwrap_or_default()
    }

    /// Leaves everything in place for the next instance: the journal says
    /// so (`held`), and dropping the guard undoes nothing.
    pub fn hold(&mut self) -> Result<(), SetupError> {
        self.armed = false;
        self.record()
    }

    /// Whether [`hold`](Self::hold) was called.
    pub fn is_held(&self) -> bool {
        !self.armed
    }

    /// Detaches the recorded XDP program and deletes the recorded
    /// (persistent) TUN device, then removes the journal: the last step of
    /// a full stop, after [`teardown`](Self::teardown) and after the
    /// workers have closed their queues. Returns the steps that failed.
    pub fn remove_devices(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        let (tun, xdp) = self.devices();
        let gone = |e: &io::Error| {
            matches!(
                e.raw_os_error(),
                Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::EINVAL)
            )
        };
        if let Some((ifindex, flags)) = xdp {
            if let Err(e) = self.nl.set_xdp(ifindex, -1, flags) {
                if !gone(&e) {
                    failed.push(format!("detach XDP from ifindex {ifindex}: {e}"));
                }
            }
        }
        if let Some(name) = &tun {
            // A device that is gone already has nothing to undo.
            if let Ok(i) = self.nl.sys().if_index(name) {
                if let Err(e) = self.nl.del_link(i) {
                    if !gone(&e) {
                        failed.push(format!("delete TUN device {name}: {e}"));
                    }
                }
            }
        }
        if failed.is_empty() {
            if let Some((file, _)) = self.journal.take() {
                if let Err(e) = file.remove() {
                    failed.push(e.to_string());
                }
            }
        } else {
            let _ = self.record();
        }
        failed
    }

    /// `default dev TUN` in the divert table and the diversion rules.
    fn add_diversion(&mut self) -> Result<(), SetupError> {
        let plan = self.plan.clone();
        self.add(netlink::default_route(
            plan.tun_ifindex,
            plan.divert_table,
            true,
        ))?;
        if plan.has_v6() {
            self.add(netlink::default_route(
                plan.tun_ifindex,
                plan.divert_table,
                false,
            ))?;
        }
        let mut prio = plan.rule_priority;
        for a in plan.own_addrs() {
            for p in &plan.service_ports {
                self.add(
                    Rule {
                        priority: prio,
                        table: plan.divert_table,
                        iif: Some(plan.uplink.clone()),
                        to: Some(a),
                        ipproto: Some(libc::IPPROTO_TCP as u8),
                        dport: Some(*p),
                        v6: a.is_ipv6(),
                        ..Rule::default()
                    }
                    .request(),
                )?;
            }
        }
        prio += 1;
        for proto in &plan.tunnel_protocols {
            self.add(
                Rule {
                    priority: prio,
                    table: plan.divert_table,
                    iif: Some(plan.uplink.clone()),
                    to: Some(IpAddr::V4(plan.tunnel_addr)),
                    ipproto: Some(*proto),
                    ..Rule::default()
                }
                .request(),
            )?;
        }
        Ok(())
    }

    /// Moves the local rule (of IPv6 when `v6`) below ours: adds it at its
    /// new place first, so local delivery never stops, then deletes the one
    /// at 0.
    fn move_local_rule(&mut self, v6: bool) -> Result<(), SetupError> {
        let plan = self.plan.clone();
        let local_new = Rule {
            priority: plan.local_rule_priority,
            table: RT_TABLE_LOCAL,
            v6,
            ..Rule::default()
        }
        .request();
        let local_old = Rule {
            priority: 0,
            table: RT_TABLE_LOCAL,
            v6,
            ..Rule::default()
        }
        .request();
        self.add(local_new)?;
        let recorded = self
            .take_prev(|u| matches!(u, Undo::Add(r) if r.payload == local_old.payload))
            .is_some();
        self.push(Undo::Add(local_old.clone()))?;
        match self.nl.del(&local_old) {
            Ok(()) => Ok(()),
            Err(e) if recorded && e.raw_os_error() == Some(libc::ENOENT) => {
                // The previous instance moved it already.
                self.taken_over += 1;
                Ok(())
            }
            Err(e) => {
                self.unpush();
                Err(SetupError {
                    step: format!("deleting {}", local_old.describe),
                    source: e,
                })
            }
        }
    }

    fn mss_rule(&self, a: impl Into<IpAddr>) -> Request {
        let a = a.into();
        Rule {
            priority: self.plan.rule_priority + 5,
            table: self.plan.mss_table,
            from: Some(a),
            v6: a.is_ipv6(),
            ..Rule::default()
        }
        .request()
    }

    /// The announcement routes (`ADDR dev lo table announce_table`), one per
    /// address this host serves as its own (service addresses and VIPs).
    fn announce_routes(&self) -> Result<Vec<Request>, SetupError> {
        let Some(table) = self.plan.announce_table else {
            return Ok(Vec::new());
        };
        if self.plan.own_addrs().next().is_none() {
            return Ok(Vec::new());
        }
        let lo = self
            .nl
            .sys()
            .if_index("lo")
            .map_err(step("finding the loopback interface"))?;
        Ok(self
            .plan
            .own_addrs()
            .map(|a| netlink::host_route(a, lo, table))
            .collect())
    }

    /// Adds the VIPs' announcement routes that are missing: the BGP speaker
    /// announces the VIPs again (start, or a drain called off). Journalled
    /// like every step. Returns how many were added.
    pub fn announce(&mut self) -> Result<usize, SetupError> {
        let mut n = 0;
        for r in self.announce_routes()? {
            let have = self
                .undo
                .iter()
                .any(|u| matches!(u, Undo::Del(x) if x.payload == r.payload));
            if !have {
                self.add(r)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes the VIPs' announcement routes: the BGP speaker withdraws the
    /// VIPs and the upstream router stops sending new flows here (`dprd
    /// drain`). Returns how many were removed; one already gone counts.
    pub fn withdraw(&mut self) -> Result<usize, SetupError> {
        let mut n = 0;
        for r in self.announce_routes()? {
            let have = self
                .undo
                .iter()
                .any(|u| matches!(u, Undo::Del(x) if x.payload == r.payload));
            if have {
                match self.remove_recorded(&r) {
                    Ok(()) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOENT)) => {
                        self.undo
                            .retain(|u| !matches!(u, Undo::Del(x) if x.payload == r.payload));
                        let _ = self.record();
                    }
                    Err(e) => {
                        return Err(SetupError {
                            step: format!("deleting {}", r.describe),
                            source: e,
                        });
                    }
                }
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether the VIPs' announcement routes are in place.
    pub fn is_announced(&self) -> bool {
        self.announce_routes().is_ok_and(|rs| {
            !rs.is_empty()
                && rs.iter().all(|r| {
                    self.undo
                        .iter()
                        .any(|u| matches!(u, Undo::Del(x) if x.payload == r.payload))
                })
        })
    }

    fn add_mss_rules(&mut self, addrs: &[IpAddr]) -> Result<(), SetupError> {
        for a in addrs {
            self.add(self.mss_rule(*a))?;
        }
        Ok(())
    }

    fn add(&mut self, req: Request) -> Result<(), SetupError> {
        let recorded = self
            .take_prev(|u| matches!(u, Undo::Del(r) if r.payload == req.payload))
            .is_some();
        self.push(Undo::Del(req.clone()))?;
        let mut added = self.nl.add(&req);
        if !recorded
            && added
                .as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::EEXIST))
        {
            // The previous instance made this route with other metrics (an
            // `advmss` for another tunnel MTU or header, changed across the
            // restart): its copy goes, this plan's takes its place.
            let stale = self.take_prev(
                |u| matches!(u, Undo::Del(r) if netlink::same_route_but_metrics(r, &req)),
            );
            if let Some(u) = stale {
                let what = u.describe();
                match self.undo_one(&u) {
                    Ok(()) => {
                        tracing::info!(%what, "replacing a previous instance's route");
                        added = self.nl.add(&req);
                    }
                    Err(e) => {
                        tracing::warn!(%what, error = %e, "undoing a previous instance's step failed")
                    }
                }
            }
        }
        match added {
            Ok(()) => {
                tracing::debug!(what = %req.describe, "added");
                Ok(())
            }
            Err(e) if recorded && e.raw_os_error() == Some(libc::EEXIST) => {
                tracing::debug!(what = %req.describe, "taken over");
                self.taken_over += 1;
                Ok(())
            }
            Err(e) => {
                self.unpush();
                let hint = if e.raw_os_error() == Some(libc::EEXIST) {
                    " (not made by a dprd whose journal is in the state directory: remove it by hand)"
                } else {
                    ""
                };
                Err(SetupError {
                    step: format!("adding {}{hint}", req.describe),
                    source: e,
                })
            }
        }
    }

    fn remove_recorded(&mut self, req: &Request) -> io::Result<()> {
        self.nl.del(req)?;
        self.undo
            .retain(|u| !matches!(u, Undo::Del(r) if r.payload == req.payload));
        let _ = self.record();
        Ok(())
    }

    /// Changes the set of peers' service addresses held on the TUN (config
    /// reload): adds the new ones, removes those no longer listed.
    pub fn set_peer_service_addrs(&mut self, addrs: &[Ipv4Addr]) -> Result<(), SetupError> {
        let old: BTreeSet<Ipv4Addr> = self.plan.peer_service_addrs.iter().copied().collect();
        let new: BTreeSet<Ipv4Addr> = addrs.iter().copied().collect();
        for a in old.difference(&new) {
            let req = netlink::addr(self.plan.tun_ifindex, IpAddr::V4(*a), 32, false);
            let _ = self.remove_recorded(&req);
            if self.plan.advmss.is_some() {
                let _ = self.remove_recorded(&self.mss_rule(*a));
            }
        }
        for a in new.difference(&old) {
            self.add(netlink::addr(
                self.plan.tun_ifindex,
                IpAddr::V4(*a),
                32,
                false,
            ))?;
            if self.plan.advmss.is_some() {
                self.add(self.mss_rule(*a))?;
            }
        }
        self.plan.peer_service_addrs = addrs.to_vec();
        Ok(())
    }

    /// What the guard will undo, in the order it will (for logs and tests).
    pub fn pending_undo(&self) -> Vec<String> {
        self.undo.iter().rev().map(Undo::describe).collect()
    }

    /// Undoes one step; what is gone already counts as undone.
    fn undo_one(&mut self, u: &Undo) -> io::Result<()> {
        match u {
            Undo::Del(req) => self.nl.del(req).or_else(|e| {
                // Gone already (the TUN device took its addresses and
                // routes with it): nothing to undo.
                if e.raw_os_error() == Some(libc::ENODEV)
                    || e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                    || e.raw_os_error() == Some(libc::ESRCH)
                    || e.raw_os_error() == Some(libc::ENOENT)
                {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
            Undo::Add(req) => self.nl.add(req).or_else(|e| {
                if e.raw_os_error() == Some(libc::EEXIST) {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
            Undo::Sysctl { path, old } => {
                if self.nl.sys().sysctl_exists(path) {
                    self.nl.sys_mut().sysctl_write(path, old)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Undoes everything now; returns the steps that failed. Idempotent.
    /// The journal follows each step (the devices stay in it until
    /// [`remove_devices`](Self::remove_devices)).
    pub fn teardown(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some(u) = self.undo.pop() {
            if let Err(e) = self.undo_one(&u) {
                let what = u.describe();
                tracing::warn!(%what, error = %e, "teardown step failed");
                failed.push(format!("{what}: {e}"));
            }
            let _ = self.record();
        }
        failed
    }
}

impl<S: HostSys> Drop for HostGuard<S> {
    /// Unless held: undoes every step, then removes the recorded devices
    /// and the journal.
    fn drop(&mut self) {
        if self.armed {
            let _ = self.teardown();
            let _ = self.remove_devices();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::AddrInfo;

    fn a(addr: [u8; 4], prefix: u8, secondary: bool) -> AddrInfo {
        AddrInfo {
            ifindex: 2,
            addr: Ipv4Addr::from(addr),
            prefix,
            secondary,
        }
    }

    #[test]
    fn a_service_address_as_the_subnet_primary_is_reported() {
        let svc = [Ipv4Addr::new(198, 18, 0, 1)];
        let peers = [Ipv4Addr::new(198, 18, 0, 12), Ipv4Addr::new(198, 19, 9, 9)];
        // Service first (/24, primary), tunnel second (secondary): wrong.
        let wrong = [a([198, 18, 0, 1], 24, false), a([198, 18, 0, 11], 24, true)];
        let p = arp_source_problems(&wrong, 2, &svc, &peers);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("198.18.0.12") && p[0].contains("198.18.0.1/24"));
        // Tunnel primary, service /32: right.
        let right = [
            a([198, 18, 0, 11], 24, false),
            a([198, 18, 0, 1], 32, false),
        ];
        assert!(arp_source_problems(&right, 2, &svc, &peers).is_empty());
        // Another interface does not count.
        assert!(arp_source_problems(&wrong, 3, &svc, &peers).is_empty());
    }

    // ---- Set-up and undo order, against the fake kernel. ----

    use crate::fake::{FakeKernel, KernelOp, Snapshot};
    use crate::netlink::{Object, connected_route, parse_route};

    const UPLINK: u32 = 2;
    const TUN: u32 = 5;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn sysctl_path(s: &str) -> PathBuf {
        PathBuf::from(format!("/proc/sys/net/ipv4/{s}"))
    }

    /// A host with an uplink (eth0, 2) holding 198.18.0.0/24, another
    /// interface, the TUN device (dpr0, 5), the `local` rule at 0 and the
    /// sysctls at values that all need changing.
    fn kernel() -> FakeKernel {
        let k = FakeKernel::new();
        k.with(|s| {
            s.interfaces.insert("eth0".into(), UPLINK);
            s.interfaces.insert("dpr0".into(), TUN);
            for (p, v) in [
                ("ip_forward", "0"),
                ("tcp_early_demux", "1"),
                ("conf/all/arp_ignore", "0"),
                ("conf/eth0/arp_ignore", "0"),
                ("conf/all/arp_announce", "0"),
                ("conf/eth0/arp_announce", "0"),
                ("conf/all/rp_filter", "1"),
                ("conf/eth0/rp_filter", "1"),
                ("conf/dpr0/rp_filter", "1"),
                ("conf/dpr0/accept_local", "0"),
            ] {
                s.sysctls.insert(sysctl_path(p), v.into());
            }
        });
        k.preload(&local_rule(0));
        k.preload(&connected_route(
            v4("198.18.0.0"),
            24,
            UPLINK,
            RT_TABLE_MAIN,
        ));
        k.preload(&connected_route(v4("198.19.0.0"), 24, 3, RT_TABLE_MAIN));
        k
    }

    fn plan() -> HostPlan {
        HostPlan {
            service_addrs: vec![IpAddr::V4(v4("198.18.0.1"))],
            peer_service_addrs: vec![v4("198.18.0.2")],
            service_ports: vec![80],
            advmss: Some(1440),
            ..HostPlan::new("eth0", "dpr0", TUN, v4("198.18.0.11"))
        }
    }

    fn local_rule(priority: u32) -> Request {
        Rule {
            priority,
            table: RT_TABLE_LOCAL,
            ..Rule::default()
        }
        .request()
    }

    fn peer_addr(a: &str) -> Request {
        netlink::addr(TUN, IpAddr::V4(v4(a)), 32, false)
    }

    fn mss_rule(a: &str) -> Request {
        Rule {
            priority: 15,
            table: 101,
            from: Some(IpAddr::V4(v4(a))),
            ..Rule::default()
        }
        .request()
    }

    fn sysctl_writes() -> Vec<KernelOp> {
        [
            ("ip_forward", "1"),
            ("tcp_early_demux", "0"),
            ("conf/all/arp_ignore", "1"),
            ("conf/eth0/arp_ignore", "1"),
            ("conf/all/arp_announce", "2"),
            ("conf/eth0/arp_announce", "2"),
            ("conf/all/rp_filter", "2"),
            ("conf/eth0/rp_filter", "2"),
            ("conf/dpr0/rp_filter", "0"),
            ("conf/dpr0/accept_local", "1"),
        ]
        .iter()
        .map(|(p, v)| KernelOp::sysctl(sysctl_path(p), v))
        .collect()
    }

    /// Every request of a full TUN-backend set-up of [`plan`], in order.
    fn full_setup() -> Vec<KernelOp> {
        let uplink_route =
            parse_route(&connected_route(v4("198.18.0.0"), 24, UPLINK, RT_TABLE_MAIN).payload)
                .unwrap();
        let mut want = sysctl_writes();
        want.extend([
            KernelOp::add(&peer_addr("198.18.0.2")),
            KernelOp::add(&netlink::default_route(TUN, 100, true)),
            KernelOp::add(
                &Rule {
                    priority: 10,
                    table: 100,
                    iif: Some("eth0".into()),
                    to: Some(IpAddr::V4(v4("198.18.0.1"))),
                    ipproto: Some(6),
                    dport: Some(80),
                    ..Rule::default()
                }
                .request(),
            ),
            KernelOp::add(
                &Rule {
                    priority: 11,
                    table: 100,
                    iif: Some("eth0".into()),
                    to: Some(IpAddr::V4(v4("198.18.0.11"))),
                    ipproto: Some(4),
                    ..Rule::default()
                }
                .request(),
            ),
            KernelOp::Dump {
                ty: netlink::RTM_GETROUTE,
                family: 2,
            },
            // Only the uplink's route of the main table is copied.
            KernelOp::add(&netlink::copy_route_with_advmss(&uplink_route, 101, 1440)),
            KernelOp::add(&mss_rule("198.18.0.2")),
            // The local rule: added at its new place before the old goes.
            KernelOp::add(&local_rule(100)),
            KernelOp::del(&local_rule(0)),
        ]);
        want
    }

    /// The request that undoes `op` (in a kernel that was at `before`).
    fn inverse(op: &KernelOp, before: &Snapshot) -> KernelOp {
        match op {
            KernelOp::Add(o, p) => KernelOp::Del(*o, p.clone()),
            KernelOp::Del(o, p) => KernelOp::Add(*o, p.clone()),
            KernelOp::Sysctl(path, _) => {
                KernelOp::Sysctl(path.clone(), before.sysctls[path].clone())
            }
            other => panic!("no inverse for {other:?}"),
        }
    }

    /// `done` undone, last first.
    fn undo_of(done: &[KernelOp], before: &Snapshot) -> Vec<KernelOp> {
        done.iter()
            .rev()
            .filter(|o| o.is_change())
            .map(|o| inverse(o, before))
            .collect()
    }

    #[test]
    fn setup_then_teardown_undoes_every_step_in_reverse() {
        let k = kernel();
        let before = k.with(|s| s.snapshot());
        let g = HostGuard::setup_with(k.clone(), &plan()).unwrap();
        let want = full_setup();
        assert_eq!(k.journal(), want);
        assert_eq!(
            g.pending_undo().first().map(String::as_str),
            Some("re-add rule pref 0 lookup 255")
        );
        assert_eq!(g.pending_undo().len(), 18);
        drop(g);
        let mut all = want.clone();
        all.extend(undo_of(&want, &before));
        assert_eq!(k.journal(), all);
        assert_eq!(k.with(|s| s.snapshot()), before, "the host is as it was");
    }

    #[test]
    fn a_step_failing_half_way_undoes_the_steps_before_it_in_reverse() {
        let want: Vec<KernelOp> = full_setup()
            .into_iter()
            .filter(KernelOp::is_change)
            .collect();
        for n in 0..want.len() {
            let k = kernel();
            let before = k.with(|s| s.snapshot());
            k.with(|s| s.fail = Some((n, libc::EPERM)));
            let e = match HostGuard::setup_with(k.clone(), &plan()) {
                Ok(_) => panic!("step {n} ({:?}) failed, yet setup succeeded", want[n]),
                Err(e) => e,
            };
            let text = e.to_string();
            assert!(text.contains("needs CAP_NET_ADMIN"), "{text}");
            let changes = k.with(|s| s.changes());
            let mut expected = want[..=n].to_vec();
            expected.extend(undo_of(&want[..n], &before));
            assert_eq!(changes, expected, "failure at step {n}: {text}");
            assert_eq!(k.with(|s| s.snapshot()), before, "failure at step {n}");
        }
    }

    #[test]
    fn peer_updates_remove_then_add_and_the_teardown_follows_them() {
        let k = kernel();
        let before = k.with(|s| s.snapshot());
        let mut g = HostGuard::setup_with(k.clone(), &plan()).unwrap();
        let n = k.journal().len();
        g.set_peer_service_addrs(&[v4("198.18.0.3")]).unwrap();
        let update = [
            KernelOp::del(&peer_addr("198.18.0.2")),
            KernelOp::del(&mss_rule("198.18.0.2")),
            KernelOp::add(&peer_addr("198.18.0.3")),
            KernelOp::add(&mss_rule("198.18.0.3")),
        ];
        assert_eq!(k.journal()[n..], update[..]);
        // The same set again: nothing to do.
        g.set_peer_service_addrs(&[v4("198.18.0.3")]).unwrap();
        assert_eq!(k.journal().len(), n + 4);
        drop(g);
        // The teardown undoes .3 (newest first) and not .2, already gone.
        let mut setup = full_setup();
        setup.retain(|o| {
            *o != KernelOp::add(&peer_addr("198.18.0.2"))
                && *o != KernelOp::add(&mss_rule("198.18.0.2"))
        });
        let mut teardown = vec![
            KernelOp::del(&mss_rule("198.18.0.3")),
            KernelOp::del(&peer_addr("198.18.0.3")),
        ];
        teardown.extend(undo_of(&setup, &before));
        assert_eq!(k.journal()[n + 4..], teardown[..]);
        assert_eq!(k.with(|s| s.snapshot()), before);
    }

    #[test]
    fn without_diversion_no_rule_moves_and_only_addresses_and_mss_are_made() {
        let k = kernel();
        let before = k.with(|s| s.snapshot());
        let p = HostPlan {
            divert: false,
            ..plan()
        };
        let g = HostGuard::setup_with(k.clone(), &p).unwrap();
        let made: Vec<String> = k
            .journal()
            .iter()
            .filter(|o| matches!(o, KernelOp::Add(..) | KernelOp::Del(..)))
            .map(|o| format!("{o:?}"))
            .collect();
        assert_eq!(
            made,
            vec![
                "add address 198.18.0.2/32 on ifindex 5",
                "add route 198.18.0.0/24 dev ifindex 2 advmss 1440 table 101",
                "add rule pref 15 from 198.18.0.2 lookup 101",
            ]
        );
        drop(g);
        assert_eq!(k.with(|s| s.snapshot()), before);
    }

    #[test]
    fn nothing_is_done_without_privilege_or_uplink() {
        let k = kernel();
        k.with(|s| s.privileged = false);
        let e = HostGuard::setup_with(k.clone(), &plan()).unwrap_err();
        assert_eq!(e.step, "privilege check");
        let k = kernel();
        let p = HostPlan {
            uplink: "eth9".into(),
            ..plan()
        };
        let e = HostGuard::setup_with(k.clone(), &p).unwrap_err();
        assert_eq!(e.step, "finding the uplink interface");
        assert!(e.to_string().contains("eth9"), "{e}");
        assert!(k.journal().is_empty());
    }

    #[test]
    fn teardown_skips_what_is_gone_and_reports_what_fails() {
        let k = kernel();
        let before = k.with(|s| s.snapshot());
        let mut g = HostGuard::setup_with(k.clone(), &plan()).unwrap();
        // The TUN device went first, taking its address and its sysctls.
        k.with(|s| {
            let a = peer_addr("198.18.0.2").payload;
            s.objects.retain(|(_, p)| *p != a);
            s.sysctls.remove(&sysctl_path("conf/dpr0/rp_filter"));
            s.sysctls.remove(&sysctl_path("conf/dpr0/accept_local"));
        });
        // And one delete is refused.
        let n = k.with(|s| s.changes().len());
        k.with(|s| s.fail = Some((n + 2, libc::EPERM))); // the MSS rule's delete
        let failed = g.teardown();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].starts_with("delete rule pref 15 from 198.18.0.2"),
            "{failed:?}"
        );
        assert!(g.teardown().is_empty(), "idempotent");
        // Everything else was undone.
        let after = k.with(|s| s.snapshot());
        let mss = mss_rule("198.18.0.2").payload;
        assert!(after.objects.iter().any(|(_, p)| *p == mss));
        let mut expected = before.clone();
        expected.sysctls.remove(&sysctl_path("conf/dpr0/rp_filter"));
        expected
            .sysctls
            .remove(&sysctl_path("conf/dpr0/accept_local"));
        expected.objects.push((Object::Rule as u8, mss));
        expected.objects.sort();
        assert_eq!(after, expected);
    }

    // ---- Take-over of what a previous instance left. ----

    fn journal_dir(name: &str) -> (StateFile, PathBuf) {
        let d = std::env::temp_dir().join(format!("dpr-host-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        (StateFile::in_dir(&d), d)
    }

    fn meta() -> HostState {
        HostState {
            tun: Some("dpr0".into()),
            ..HostState::default()
        }
    }

    #[test]
    fn a_dead_instance_is_taken_over_with_no_gap_and_its_originals_come_back() {
        let k = kernel();
        let before = k.with(|s| s.snapshot());
        let (file, dir) = journal_dir("crash");
        let g1 =
            HostGuard::setup_with_takeover(k.clone(), &plan(), Some((file.clone(), meta())), None)
                .unwrap();
        let set_up = k.with(|s| s.snapshot());
        // The process dies: nothing is undone.
        std::mem::forget(g1);
        let prev = file.load().unwrap().unwrap();
        assert!(!prev.held, "a running instance's journal is not a hold");
        assert_eq!(prev.tun.as_deref(), Some("dpr0"));
        assert_eq!(prev.undo.len(), 18, "{:?}", prev.undo);
        // Without the journal, the next start fails as the issue saw.
        let e = HostGuard::setup_with(k.clone(), &plan()).unwrap_err();
        assert!(e.to_string().contains("File exists"), "{e}");
        assert_eq!(
            k.with(|s| s.snapshot()),
            set_up,
            "a failed start undid nothing of the dead one's"
        );
        // With it, the next instance takes everything over.
        let n = k.journal().len();
        let mut g2 = HostGuard::setup_with_takeover(
            k.clone(),
            &plan(),
            Some((file.clone(), meta())),
            Some(&prev),
        )
        .unwrap();
        // Not one object was missing at any moment: nothing was deleted.
        let deleted: Vec<_> = k.journal()[n..]
            .iter()
            .filter(|o| matches!(o, KernelOp::Del(..)))
            .cloned()
            .collect();
        assert_eq!(
            deleted,
            vec![KernelOp::del(&local_rule(0))],
            "only the (absent) old local rule"
        );
        assert_eq!(k.with(|s| s.snapshot()), set_up);
        let r = g2.finish_takeover();
        assert_eq!(r.taken_over, 8, "{r:?}");
        assert!(r.stale_undone.is_empty(), "{r:?}");
        assert_eq!(file.load().unwrap().unwrap().undo.len(), 18);
        // Stopping restores the values before the *first* instance.
        drop(g2);
        assert_eq!(k.with(|s| s.snapshot()), before, "the host is as it was");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A held set-up taken over by a start whose tunnel changed (the keyed
    /// tunnel's GRE header: another `advmss`, and GRE diverted too): the
    /// advmss route copies are replaced, the GRE rule added, and the host
    /// ends as a fresh start of the new plan would leave it.
    #[test]
    fn a_take_over_with_another_tunnel_replaces_the_advmss_routes() {
        let k = kernel();
        let before = k.with(|s| s.snapshot());
        let (file, dir) = journal_dir("advmss");
        let mut g1 =
            HostGuard::setup_with_takeover(k.clone(), &plan(), Some((file.clone(), meta())), None)
                .unwrap();
        g1.hold().unwrap();
        drop(g1);
        let prev = file.load().unwrap().unwrap();
        let p2 = HostPlan {
            advmss: Some(1428),
            tunnel_protocols: vec![47, 4],
            ..plan()
        };
        let mut g2 = HostGuard::setup_with_takeover(
            k.clone(),
            &p2,
            Some((file.clone(), meta())),
            Some(&prev),
        )
        .unwrap();
        let r = g2.finish_takeover();
        eprintln!("{r:?}");
        let held = k.with(|s| s.snapshot());
        drop(g2);
        assert_eq!(k.with(|s| s.snapshot()), before, "the host is as it was");
        // The same plan from scratch makes the same objects.
        let fresh = HostGuard::setup_with(k.clone(), &p2).unwrap();
        assert_eq!(k.with(|s| s.snapshot()), held);
        drop(fresh);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn what_the_new_plan_does_not_make_is_undone_after_the_take_over() {
        let k = kernel();
        let before = k.with(|s| s.snapshot());
        let (file, dir) = journal_dir("stale");
        let mut g1 =
            HostGuard::setup_with_takeover(k.clone(), &plan(), Some((file.clone(), meta())), None)
                .unwrap();
        g1.hold().unwrap();
        drop(g1);
        let prev = file.load().unwrap().unwrap();
        assert!(prev.held);
        let p2 = HostPlan {
            peer_service_addrs: vec![v4("198.18.0.3")],
            ..plan()
        };
        let mut g2 = HostGuard::setup_with_takeover(
            k.clone(),
            &p2,
            Some((file.clone(), meta())),
            Some(&prev),
        )
        .unwrap();
        let r = g2.finish_takeover();
        assert_eq!(
            r.stale_undone,
            vec![
                "delete rule pref 15 from 198.18.0.2 lookup 101",
                "delete address 198.18.0.2/32 on ifindex 5"
            ]
        );
        let now = k.with(|s| s.snapshot());
        let old_addr = peer_addr("198.18.0.2").payload;
        assert!(!now.objects.iter().any(|(_, p)| *p == old_addr));
        drop(g2);
        assert_eq!(k.with(|s| s.snapshot()), before);
        assert_eq!(
            file.load().unwrap(),
            None,
            "a full stop removes the journal"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_step_recorded_but_never_made_is_made_and_kept() {
        let k = kernel();
        let before = k.with(|s| s.snapshot());
        let (file, dir) = journal_dir("wal");
        // The journal names a step its process died before making.
        let mut prev = HostState::default();
        prev.undo.push(Undo::Del(peer_addr("198.18.0.2")));
        let mut g = HostGuard::setup_with_takeover(
            k.clone(),
            &plan(),
            Some((file.clone(), meta())),
            Some(&prev),
        )
        .unwrap();
        let r = g.finish_takeover();
        assert!(r.stale_undone.is_empty(), "{r:?}");
        let a = peer_addr("198.18.0.2").payload;
        assert!(
            k.with(|s| s.snapshot())
                .objects
                .iter()
                .any(|(_, p)| *p == a)
        );
        drop(g);
        assert_eq!(k.with(|s| s.snapshot()), before);
        let _ = std::fs::remove_dir_all(dir);
    }

    // ---- IPv6 and shared VIPs. ----

    fn v6(s: &str) -> std::net::Ipv6Addr {
        s.parse().unwrap()
    }

    /// [`kernel`] with IPv6: its sysctls, and a route of the uplink's
    /// IPv6 prefix in the main table.
    fn kernel6() -> FakeKernel {
        let k = kernel();
        k.with(|s| {
            for (p, v) in [
                ("conf/eth0/disable_ipv6", "1"),
                ("conf/dpr0/disable_ipv6", "1"),
                ("conf/all/forwarding", "0"),
            ] {
                s.sysctls
                    .insert(PathBuf::from(format!("/proc/sys/net/ipv6/{p}")), v.into());
            }
        });
        k.preload(&netlink::host_route(
            IpAddr::V6(v6("fd00:18::")),
            UPLINK,
            RT_TABLE_MAIN,
        ));
        k.preload(
            &Rule {
                priority: 0,
                table: RT_TABLE_LOCAL,
                v6: true,
                ..Rule::default()
            }
            .request(),
        );
        k
    }

    const VIP4: &str = "198.18.0.100";
    const VIP6: &str = "fd00:dead::100";

    fn vip_plan() -> HostPlan {
        HostPlan {
            vips: vec![IpAddr::V4(v4(VIP4)), IpAddr::V6(v6(VIP6))],
            announce_table: Some(102),
            ..plan()
        }
    }

    fn made(k: &FakeKernel) -> Vec<String> {
        k.journal()
            .iter()
            .filter(|o| o.is_change())
            .map(|o| format!("{o:?}"))
            .collect()
    }

    #[test]
    fn vips_of_both_families_are_held_on_the_tun_diverted_clamped_and_announced() {
        let k = kernel6();
        let before = k.with(|s| s.snapshot());
        let g = HostGuard::setup_with(k.clone(), &vip_plan()).unwrap();
        let ops = made(&k);
        let want_in_order = [
            "sysctl /proc/sys/net/ipv6/conf/eth0/disable_ipv6 = 0",
            "sysctl /proc/sys/net/ipv6/conf/dpr0/disable_ipv6 = 0",
            "sysctl /proc/sys/net/ipv6/conf/all/forwarding = 1",
            "add address 198.18.0.2/32 on ifindex 5",
            "add address 198.18.0.100/32 on ifindex 5",
            "add address fd00:dead::100/128 on ifindex 5 nodad",
            "add route default dev ifindex 5 table 100",
            "add route ::/0 dev ifindex 5 table 100",
            "add rule pref 10 iif eth0 to 198.18.0.1 ipproto 6 dport 80 lookup 100",
            "add rule pref 10 iif eth0 to 198.18.0.100 ipproto 6 dport 80 lookup 100",
            "add rule pref 10 iif eth0 to fd00:dead::100 ipproto 6 dport 80 lookup 100",
            "add rule pref 11 iif eth0 to 198.18.0.11 ipproto 4 lookup 100",
            "add route 198.18.0.0/24 dev ifindex 2 advmss 1440 table 101",
            // The IPv6 client's segment is 20 bytes smaller.
            "add route fd00:18::/128 dev ifindex 2 advmss 1420 table 101",
            "add rule pref 15 from 198.18.0.2 lookup 101",
            "add rule pref 15 from 198.18.0.100 lookup 101",
            "add rule pref 15 from fd00:dead::100 lookup 101",
            "add rule pref 100 lookup 255",
            "del rule pref 0 lookup 255",
            "add rule pref 100 lookup 255",
            "del rule pref 0 lookup 255",
            "add route 198.18.0.1/32 dev ifindex 1 table 102",
            "add route 198.18.0.100/32 dev ifindex 1 table 102",
            "add route fd00:dead::100/128 dev ifindex 1 table 102",
        ];
        let mut at = 0;
        for w in want_in_order {
            match ops[at..].iter().position(|o| o == w) {
                Some(i) => at += i + 1,
                None => panic!("{w:?} missing (or out of order) in {ops:#?}"),
            }
        }
        // Both local rules moved: one of each family.
        let moved: Vec<_> = k
            .journal()
            .iter()
            .filter_map(|o| match o {
                KernelOp::Del(Object::Rule, p) => Rule::parse(p),
                _ => None,
            })
            .map(|r| r.v6)
            .collect();
        assert_eq!(moved, vec![false, true]);
        assert!(g.is_announced());
        drop(g);
        assert_eq!(k.with(|s| s.snapshot()), before, "the host is as it was");
        // The announcement routes went first.
        let undo = made(&k);
        let teardown = &undo[ops.len()..];
        assert!(
            teardown[..3]
                .iter()
                .all(|o| o.starts_with("del route") && o.contains("table 102")),
            "{teardown:#?}"
        );
    }

    #[test]
    fn a_vip_set_up_failing_at_any_step_leaves_the_host_as_it_was() {
        let k = kernel6();
        HostGuard::setup_with(k.clone(), &vip_plan()).unwrap();
        let steps = k.with(|s| s.changes().len()) / 2;
        assert!(steps > 30, "{steps}");
        for n in 0..steps {
            let k = kernel6();
            let before = k.with(|s| s.snapshot());
            k.with(|s| s.fail = Some((n, libc::EPERM)));
            assert!(
                HostGuard::setup_with(k.clone(), &vip_plan()).is_err(),
                "{n}"
            );
            assert_eq!(k.with(|s| s.snapshot()), before, "failure at step {n}");
        }
    }

    /// The AF_XDP backend: its program takes IPv6 service traffic too, so
    /// no diversion of either family; the VIPs, the clamp and the
    /// announcement are made all the same.
    #[test]
    fn without_diversion_vips_are_held_clamped_and_announced_but_not_diverted() {
        let k = kernel6();
        let before = k.with(|s| s.snapshot());
        let p = HostPlan {
            divert: false,
            ..vip_plan()
        };
        let g = HostGuard::setup_with(k.clone(), &p).unwrap();
        let ops = made(&k);
        assert!(!ops.iter().any(|o| o.contains("lookup 100")), "{ops:#?}");
        assert!(!ops.iter().any(|o| o.contains("lookup 255")), "{ops:#?}");
        for w in [
            "add address fd00:dead::100/128 on ifindex 5 nodad",
            "add route fd00:18::/128 dev ifindex 2 advmss 1420 table 101",
            "add rule pref 15 from fd00:dead::100 lookup 101",
            "add route fd00:dead::100/128 dev ifindex 1 table 102",
        ] {
            assert!(ops.iter().any(|o| o == w), "{w:?} missing in {ops:#?}");
        }
        drop(g);
        assert_eq!(k.with(|s| s.snapshot()), before);
    }

    #[test]
    fn without_ipv6_addresses_nothing_of_ipv6_is_touched() {
        let k = kernel6();
        let p = HostPlan {
            vips: vec![IpAddr::V4(v4(VIP4))],
            ..plan()
        };
        let g = HostGuard::setup_with(k.clone(), &p).unwrap();
        let ops = made(&k);
        assert!(
            !ops.iter().any(|o| o.contains("ipv6") || o.contains("::")),
            "{ops:#?}"
        );
        // No announce table: no announcement routes.
        assert!(!ops.iter().any(|o| o.contains("table 102")), "{ops:#?}");
        assert!(!g.is_announced());
    }

    #[test]
    fn withdraw_and_announce_follow_the_journal_and_a_held_restart_keeps_the_routes() {
        let k = kernel6();
        let before = k.with(|s| s.snapshot());
        let (file, dir) = journal_dir("announce");
        let mut g = HostGuard::setup_with_takeover(
            k.clone(),
            &vip_plan(),
            Some((file.clone(), meta())),
            None,
        )
        .unwrap();
        let routes = |k: &FakeKernel| {
            k.with(|s| {
                s.objects
                    .iter()
                    .filter(|(o, _)| *o == Object::Route)
                    .filter_map(|(_, p)| parse_route(p))
                    .filter(|r| r.table == 102)
                    .count()
            })
        };
        assert_eq!(routes(&k), 3);
        let journalled = file.load().unwrap().unwrap().undo.len();
        assert_eq!(g.withdraw().unwrap(), 3);
        assert_eq!(routes(&k), 0);
        assert!(!g.is_announced());
        assert_eq!(file.load().unwrap().unwrap().undo.len(), journalled - 3);
        assert_eq!(g.withdraw().unwrap(), 0, "idempotent");
        // A route removed behind our back counts as withdrawn.
        assert_eq!(g.announce().unwrap(), 3);
        let gone = netlink::host_route(IpAddr::V6(v6(VIP6)), 1, 102);
        k.with(|s| s.objects.retain(|(_, p)| *p != gone.payload));
        assert_eq!(g.withdraw().unwrap(), 3);
        assert_eq!(g.announce().unwrap(), 3);
        assert_eq!(g.announce().unwrap(), 0, "idempotent");
        // A held restart: the next instance takes the routes over, never
        // deleting them (no moment where the router loses this host).
        g.hold().unwrap();
        drop(g);
        let prev = file.load().unwrap().unwrap();
        let n = k.journal().len();
        let mut g2 = HostGuard::setup_with_takeover(
            k.clone(),
            &vip_plan(),
            Some((file.clone(), meta())),
            Some(&prev),
        )
        .unwrap();
        let r = g2.finish_takeover();
        assert!(r.stale_undone.is_empty(), "{r:?}");
        assert!(
            !k.journal()[n..]
                .iter()
                .any(|o| matches!(o, KernelOp::Del(Object::Route, _))),
            "{:#?}",
            &k.journal()[n..]
        );
        assert_eq!(routes(&k), 3);
        drop(g2);
        assert_eq!(k.with(|s| s.snapshot()), before);
        let _ = std::fs::remove_dir_all(dir);
    }
}
