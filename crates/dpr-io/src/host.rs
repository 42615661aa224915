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
//! - the peers' service addresses on the TUN (it answers no ARP);
//! - with `divert` (the TUN backend; the AF_XDP backend's XDP program
//!   takes the traffic instead): `default dev TUN table T` and the diversion rules
//!   `iif UPLINK to SERVICE ipproto tcp dport P lookup T` and
//!   `iif UPLINK to TUNNEL ipproto ipip lookup T`;
//! - the `local` rule moved below them (pref 0 → `local_rule_priority`);
//! - with an MSS clamp: copies of the main table's uplink routes in table
//!   `mss_table` with `advmss`, and `from PEER_SERVICE lookup mss_table`,
//!   so the SYN-ACKs of redirected connections announce a segment size
//!   that fits the tunnel.

use crate::netlink::{self, Netlink, RT_TABLE_LOCAL, RT_TABLE_MAIN, Request, Rule};
use crate::sys;
use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// What to set up.
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
    /// This host's own service addresses (already on the uplink).
    pub service_addrs: Vec<Ipv4Addr>,
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
}

/// A setup step that failed, with what it was doing.
#[derive(Debug)]
pub struct SetupError {
    /// The step.
    pub step: String,
    /// The cause.
    pub source: io::Error,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host setup failed at {}: {}", self.step, self.source)?;
        if self.source.kind() == io::ErrorKind::PermissionDenied
            || self.source.raw_os_error() == Some(libc::EPERM)
        {
            write!(f, " (needs CAP_NET_ADMIN: run dprd as root)")?;
        }
        Ok(())
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[derive(Debug)]
enum Undo {
    Del(Request),
    Add(Request),
    Sysctl { path: PathBuf, old: String },
}

/// The set-up host; dropping it undoes everything.
#[derive(Debug)]
pub struct HostGuard {
    nl: Netlink,
    plan: HostPlan,
    undo: Vec<Undo>,
}

fn sysctl_read(path: &PathBuf) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

fn sysctl_write(path: &PathBuf, v: &str) -> io::Result<()> {
    std::fs::write(path, format!("{v}\n"))
}

fn conf(dev: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv4/conf/{dev}/{key}"))
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

impl HostGuard {
    /// Applies `plan`. On error, what was done is undone before returning.
    pub fn setup(plan: &HostPlan) -> Result<Self, SetupError> {
        let step = |s: &str| {
            let s = s.to_string();
            move |e: io::Error| SetupError { step: s, source: e }
        };
        if !can_set_up() {
            return Err(SetupError {
                step: "privilege check".into(),
                source: io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "not root and no CAP_NET_ADMIN",
                ),
            });
        }
        sys::if_index(&plan.uplink).map_err(step("finding the uplink interface"))?;
        let nl = Netlink::open().map_err(step("opening a netlink socket"))?;
        let mut g = Self {
            nl,
            plan: plan.clone(),
            undo: Vec::new(),
        };
        // Every early return below drops `g`, which undoes what was done.
        let up = plan.uplink.as_str();
        let tun = plan.tun_name.as_str();
        let sysctls: Vec<(PathBuf, &str, bool)> = vec![
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
        for (path, want, only_if_strict) in sysctls {
            let what = format!("sysctl {}", path.display());
            let old = sysctl_read(&path).map_err(step(&what))?;
            if old == want || (only_if_strict && old != "1") {
                continue;
            }
            sysctl_write(&path, want).map_err(step(&what))?;
            tracing::debug!(path = %path.display(), %old, new = want, "sysctl");
            g.undo.push(Undo::Sysctl { path, old });
        }
        for a in &plan.peer_service_addrs {
            g.add(netlink::addr(plan.tun_ifindex, IpAddr::V4(*a), 32, false))?;
        }
        if plan.divert {
            g.add_diversion()?;
        }
        if let Some(mss) = plan.advmss {
            let uplink_index =
                sys::if_index(&plan.uplink).map_err(step("finding the uplink interface"))?;
            let routes =
                g.nl.dump_routes_v4()
                    .map_err(step("dumping the main routing table"))?;
            for r in routes.iter().filter(|r| {
                r.table == RT_TABLE_MAIN && r.route_type == 1 && r.oif == Some(uplink_index)
            }) {
                g.add(netlink::copy_route_with_advmss(
                    r,
                    plan.mss_table,
                    u32::from(mss),
                ))?;
            }
            g.add_mss_rules(&plan.peer_service_addrs)?;
        }
        if plan.divert {
            g.move_local_rule()?;
        }
        Ok(g)
    }

    /// `default dev TUN` in the divert table and the diversion rules.
    fn add_diversion(&mut self) -> Result<(), SetupError> {
        let plan = self.plan.clone();
        self.add(netlink::default_route(
            plan.tun_ifindex,
            plan.divert_table,
            true,
        ))?;
        let mut prio = plan.rule_priority;
        for a in &plan.service_addrs {
            for p in &plan.service_ports {
                self.add(
                    Rule {
                        priority: prio,
                        table: plan.divert_table,
                        iif: Some(plan.uplink.clone()),
                        to: Some(IpAddr::V4(*a)),
                        ipproto: Some(libc::IPPROTO_TCP as u8),
                        dport: Some(*p),
                        ..Rule::default()
                    }
                    .request(),
                )?;
            }
        }
        prio += 1;
        self.add(
            Rule {
                priority: prio,
                table: plan.divert_table,
                iif: Some(plan.uplink.clone()),
                to: Some(IpAddr::V4(plan.tunnel_addr)),
                ipproto: Some(libc::IPPROTO_IPIP as u8),
                ..Rule::default()
            }
            .request(),
        )?;
        Ok(())
    }

    /// Moves the local rule below ours: adds it at its new place first, so
    /// local delivery never stops, then deletes the one at 0.
    fn move_local_rule(&mut self) -> Result<(), SetupError> {
        let plan = self.plan.clone();
        let local_new = Rule {
            priority: plan.local_rule_priority,
            table: RT_TABLE_LOCAL,
            ..Rule::default()
        }
        .request();
        let local_old = Rule {
            priority: 0,
            table: RT_TABLE_LOCAL,
            ..Rule::default()
        }
        .request();
        self.add(local_new)?;
        self.nl.del(&local_old).map_err(|e| SetupError {
            step: format!("deleting {}", local_old.describe),
            source: e,
        })?;
        self.undo.push(Undo::Add(local_old));
        Ok(())
    }

    fn mss_rule(&self, a: Ipv4Addr) -> Request {
        Rule {
            priority: self.plan.rule_priority + 5,
            table: self.plan.mss_table,
            from: Some(IpAddr::V4(a)),
            ..Rule::default()
        }
        .request()
    }

    fn add_mss_rules(&mut self, addrs: &[Ipv4Addr]) -> Result<(), SetupError> {
        for a in addrs {
            self.add(self.mss_rule(*a))?;
        }
        Ok(())
    }

    fn add(&mut self, req: Request) -> Result<(), SetupError> {
        self.nl.add(&req).map_err(|e| SetupError {
            step: format!("adding {}", req.describe),
            source: e,
        })?;
        tracing::debug!(what = %req.describe, "added");
        self.undo.push(Undo::Del(req));
        Ok(())
    }

    fn remove_recorded(&mut self, req: &Request) -> io::Result<()> {
        self.nl.del(req)?;
        self.undo
            .retain(|u| !matches!(u, Undo::Del(r) if r.payload == req.payload));
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
        self.undo
            .iter()
            .rev()
            .map(|u| match u {
                Undo::Del(r) => format!("delete {}", r.describe),
                Undo::Add(r) => format!("re-add {}", r.describe),
                Undo::Sysctl { path, old } => format!("restore {} = {old}", path.display()),
            })
            .collect()
    }

    /// Undoes everything now; returns the steps that failed. Idempotent.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some(u) = self.undo.pop() {
            let r = match &u {
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
                    if path.exists() {
                        sysctl_write(path, old)
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = r {
                let what = match &u {
                    Undo::Del(r) => format!("delete {}", r.describe),
                    Undo::Add(r) => format!("re-add {}", r.describe),
                    Undo::Sysctl { path, .. } => format!("restore {}", path.display()),
                };
                tracing::warn!(%what, error = %e, "teardown step failed");
                failed.push(format!("{what}: {e}"));
            }
        }
        failed
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        let _ = self.teardown();
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
}
