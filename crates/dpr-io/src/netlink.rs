//! Netlink: the one module of the workspace that speaks it. Route netlink
//! for what host setup and the AF_XDP path need (addresses, routes, policy
//! rules, the route and address dumps, the neighbour table) and the socket
//! side of `NETLINK_SOCK_DIAG` ([`crate::sockdiag`] builds its messages,
//! [`Netlink`] carries them).
//!
//! Message building and parsing are pure (unit tested on bytes). Every
//! message goes through one chokepoint, the [`NetlinkSys`] trait (send one
//! datagram, receive one): [`crate::sys::NetlinkSocket`] in production, and
//! [`crate::fake::FakeKernel`] in tests, which answers like the kernel and
//! records every request, so the order of set-up and undo is tested
//! without root.
//!
//! ```text
//!  host.rs (HostGuard) ─┐                         ┌─ sys::NetlinkSocket (socket(2), send, recv)
//!  neigh.rs ────────────┼─► Netlink<S> ─► S: NetlinkSys
//!  sockdiag.rs ─────────┘   exec (ack), dump       └─ fake::FakeKernel (in memory, recorded)
//! ```
//!
//! A request is kept as its payload (the `ifaddrmsg` / `rtmsg` /
//! `fib_rule_hdr` and its attributes) plus its [`Object`]: the same payload
//! sent with the matching `DEL` type undoes an `ADD`, which is how the host
//! guard records its undo list.

use crate::sys::NetlinkSocket;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

const NLMSG_HDRLEN: usize = 16;
/// An acknowledgement or an error.
pub const NLMSG_ERROR: u16 = 2;
/// The end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// Request flag.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Ask for an acknowledgement.
pub const NLM_F_ACK: u16 = 0x4;
/// Replace an existing object.
pub const NLM_F_REPLACE: u16 = 0x100;
/// Fail if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// Create the object.
pub const NLM_F_CREATE: u16 = 0x400;
/// Dump every object (root and match).
pub const NLM_F_DUMP: u16 = 0x300;

/// Deletes a link (an interface).
pub const RTM_DELLINK: u16 = 17;
/// Changes a link's settings (its XDP program among them).
pub const RTM_SETLINK: u16 = 19;
/// Adds an address.
pub const RTM_NEWADDR: u16 = 20;
/// Deletes an address.
pub const RTM_DELADDR: u16 = 21;
/// Lists addresses.
pub const RTM_GETADDR: u16 = 22;
/// Adds a route.
pub const RTM_NEWROUTE: u16 = 24;
/// Deletes a route.
pub const RTM_DELROUTE: u16 = 25;
/// Lists routes.
pub const RTM_GETROUTE: u16 = 26;
/// A neighbour entry (what a neighbour dump returns).
pub const RTM_NEWNEIGH: u16 = 28;
/// Lists neighbours.
pub const RTM_GETNEIGH: u16 = 30;
/// Adds a policy rule.
pub const RTM_NEWRULE: u16 = 32;
/// Deletes a policy rule.
pub const RTM_DELRULE: u16 = 33;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_SECONDARY: u8 = 0x01;
const IFA_FLAGS: u16 = 8;
/// No duplicate address detection (an IPv6 address usable at once, and
/// never probed for on a link: what a shared VIP needs).
const IFA_F_NODAD: u8 = 0x02;
const IFADDRMSG_LEN: usize = 8;

/// `struct ndmsg`.
const NDMSG_LEN: usize = 12;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTA_TABLE: u16 = 15;
const RTAX_ADVMSS: u16 = 8;

const FRA_DST: u16 = 1;
const FRA_SRC: u16 = 2;
const FRA_IIFNAME: u16 = 3;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const FRA_IP_PROTO: u16 = 22;
const FRA_DPORT_RANGE: u16 = 24;
const FR_ACT_TO_TBL: u8 = 1;

/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;
/// The local routing table.
pub const RT_TABLE_LOCAL: u32 = 255;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_HOST: u8 = 254;
const RTN_UNICAST: u8 = 1;

/// What kind of object a request adds or deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// An interface address.
    Addr,
    /// A route.
    Route,
    /// A policy-routing rule.
    Rule,
}

impl Object {
    /// The object a `RTM_NEW*` / `RTM_DEL*` message type adds or deletes,
    /// and whether it adds.
    pub fn of_type(ty: u16) -> Option<(Self, bool)> {
        match ty {
            RTM_NEWADDR => Some((Self::Addr, true)),
            RTM_DELADDR => Some((Self::Addr, false)),
            RTM_NEWROUTE => Some((Self::Route, true)),
            RTM_DELROUTE => Some((Self::Route, false)),
            RTM_NEWRULE => Some((Self::Rule, true)),
            RTM_DELRULE => Some((Self::Rule, false)),
            _ => None,
        }
    }
    /// The message type that adds it.
    pub fn new_type(self) -> u16 {
        match self {
            Self::Addr => RTM_NEWADDR,
            Self::Route => RTM_NEWROUTE,
            Self::Rule => RTM_NEWRULE,
        }
    }
    /// The message type that deletes it.
    pub fn del_type(self) -> u16 {
        match self {
            Self::Addr => RTM_DELADDR,
            Self::Route => RTM_DELROUTE,
            Self::Rule => RTM_DELRULE,
        }
    }
}

/// One object: what it is and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Kind.
    pub object: Object,
    /// Header and attributes, without the netlink header.
    pub payload: Vec<u8>,
    /// For logs: `ip`-like text.
    pub describe: String,
}

const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

/// An `ifinfomsg` for link `ifindex` (family unspecified, no flag change).
fn ifinfo(ifindex: u32) -> Vec<u8> {
    let mut p = vec![0u8; 16];
    p[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    p
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

fn family(a: IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

fn full_prefix(a: IpAddr) -> u8 {
    if a.is_ipv4() { 32 } else { 128 }
}

/// `ip addr add ADDR/PREFIX dev IFINDEX` (host scope when `host_scope`).
pub fn addr(ifindex: u32, a: IpAddr, prefix: u8, host_scope: bool) -> Request {
    let mut p = vec![
        family(a),
        prefix,
        0,
        if host_scope {
            RT_SCOPE_HOST
        } else {
            RT_SCOPE_UNIVERSE
        },
    ];
    p.extend_from_slice(&ifindex.to_ne_bytes());
    push_attr(&mut p, IFA_LOCAL, &addr_bytes(a));
    push_attr(&mut p, IFA_ADDRESS, &addr_bytes(a));
    Request {
        object: Object::Addr,
        payload: p,
        describe: format!("address {a}/{prefix} on ifindex {ifindex}"),
    }
}

/// [`addr`] with `nodad` (IPv6: no duplicate address detection, so the
/// address is usable at once and no neighbour solicitation for it is ever
/// sent; every host of a shared VIP holds the same address).
pub fn addr_nodad(ifindex: u32, a: IpAddr, prefix: u8) -> Request {
    let mut r = addr(ifindex, a, prefix, false);
    r.payload[2] |= IFA_F_NODAD;
    push_attr(
        &mut r.payload,
        IFA_FLAGS,
        &u32::from(IFA_F_NODAD).to_ne_bytes(),
    );
    r.describe += " nodad";
    r
}

/// `ip route add ADDR/32 dev IFINDEX table TABLE` (`/128` for IPv6): a
/// host route, for example a VIP's announcement route on `lo` that a BGP
/// speaker exports.
pub fn host_route(dst: IpAddr, ifindex: u32, table: u32) -> Request {
    let mut p = rtmsg(family(dst), full_prefix(dst), table, RT_SCOPE_UNIVERSE);
    push_attr(&mut p, RTA_DST, &addr_bytes(dst));
    push_attr(&mut p, RTA_OIF, &ifindex.to_ne_bytes());
    Request {
        object: Object::Route,
        payload: p,
        describe: format!(
            "route {dst}/{} dev ifindex {ifindex} table {table}",
            full_prefix(dst)
        ),
    }
}

fn rtmsg(fam: u8, dst_len: u8, table: u32, scope: u8) -> Vec<u8> {
    let mut p = vec![
        fam,
        dst_len,
        0,
        0,
        u8::try_from(table).unwrap_or(0), // RT_TABLE_UNSPEC when it does not fit: RTA_TABLE says
        RTPROT_STATIC,
        scope,
        RTN_UNICAST,
    ];
    p.extend_from_slice(&0u32.to_ne_bytes());
    push_attr(&mut p, RTA_TABLE, &table.to_ne_bytes());
    p
}

/// `ip route add default dev IFINDEX table TABLE` (IPv4 when `v4`).
pub fn default_route(ifindex: u32, table: u32, v4: bool) -> Request {
    let fam = if v4 { libc::AF_INET } else { libc::AF_INET6 } as u8;
    let mut p = rtmsg(fam, 0, table, RT_SCOPE_UNIVERSE);
    push_attr(&mut p, RTA_OIF, &ifindex.to_ne_bytes());
    Request {
        object: Object::Route,
        payload: p,
        describe: format!("route default dev ifindex {ifindex} table {table}"),
    }
}

/// A policy rule: `ip rule add pref PRIORITY [iif IIF] [from SRC] [to DST]
/// [ipproto PROTO] [dport PORT] lookup TABLE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Preference.
    pub priority: u32,
    /// Table to look up.
    pub table: u32,
    /// Input interface name.
    pub iif: Option<String>,
    /// Source address (full-length prefix).
    pub from: Option<IpAddr>,
    /// Destination address (full-length prefix).
    pub to: Option<IpAddr>,
    /// IP protocol.
    pub ipproto: Option<u8>,
    /// Destination port.
    pub dport: Option<u16>,
    /// IPv6 rule (else IPv4).
    pub v6: bool,
}

impl Rule {
    /// The request for this rule.
    pub fn request(&self) -> Request {
        let fam = if self.v6 {
            libc::AF_INET6
        } else {
            libc::AF_INET
        } as u8;
        let dst_len = self.to.map_or(0, full_prefix);
        let src_len = self.from.map_or(0, full_prefix);
        let table_byte = u8::try_from(self.table).unwrap_or(0);
        let mut p = vec![fam, dst_len, src_len, 0, table_byte, 0, 0, FR_ACT_TO_TBL];
        p.extend_from_slice(&0u32.to_ne_bytes());
        push_attr(&mut p, FRA_PRIORITY, &self.priority.to_ne_bytes());
        push_attr(&mut p, FRA_TABLE, &self.table.to_ne_bytes());
        if let Some(i) = &self.iif {
            let mut n = i.as_bytes().to_vec();
            n.push(0);
            push_attr(&mut p, FRA_IIFNAME, &n);
        }
        if let Some(a) = self.from {
            push_attr(&mut p, FRA_SRC, &addr_bytes(a));
        }
        if let Some(a) = self.to {
            push_attr(&mut p, FRA_DST, &addr_bytes(a));
        }
        if let Some(proto) = self.ipproto {
            push_attr(&mut p, FRA_IP_PROTO, &[proto]);
        }
        if let Some(port) = self.dport {
            let mut r = port.to_ne_bytes().to_vec();
            r.extend_from_slice(&port.to_ne_bytes());
            push_attr(&mut p, FRA_DPORT_RANGE, &r);
        }
        let mut d = format!("rule pref {}", self.priority);
        if let Some(i) = &self.iif {
            d += &format!(" iif {i}");
        }
        if let Some(a) = self.from {
            d += &format!(" from {a}");
        }
        if let Some(a) = self.to {
            d += &format!(" to {a}");
        }
        if let Some(x) = self.ipproto {
            d += &format!(" ipproto {x}");
        }
        if let Some(x) = self.dport {
            d += &format!(" dport {x}");
        }
        d += &format!(" lookup {}", self.table);
        Request {
            object: Object::Rule,
            payload: p,
            describe: d,
        }
    }
}

impl Rule {
    /// The rule a request payload describes (`None` if it is too short);
    /// `Rule::parse(&r.request().payload) == Some(r)`.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        if payload.len() < 12 {
            return None;
        }
        let v6 = i32::from(payload[0]) == libc::AF_INET6;
        let ip = |d: &[u8]| match d.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3]))),
            16 => <[u8; 16]>::try_from(d)
                .ok()
                .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
            _ => None,
        };
        let u32_of = |d: &[u8]| <[u8; 4]>::try_from(d).ok().map(u32::from_ne_bytes);
        let mut r = Rule {
            table: u32::from(payload[4]),
            v6,
            ..Rule::default()
        };
        for (ty, d) in attrs(payload, 12) {
            match ty {
                FRA_PRIORITY => r.priority = u32_of(d)?,
                FRA_TABLE => r.table = u32_of(d)?,
                FRA_IIFNAME => {
                    let name = d.split(|b| *b == 0).next().unwrap_or_default();
                    r.iif = Some(String::from_utf8_lossy(name).into_owned());
                }
                FRA_SRC => r.from = ip(d),
                FRA_DST => r.to = ip(d),
                FRA_IP_PROTO => r.ipproto = d.first().copied(),
                FRA_DPORT_RANGE if d.len() >= 2 => r.dport = Some(u16::from_ne_bytes([d[0], d[1]])),
                _ => {}
            }
        }
        Some(r)
    }
}

/// A route: `ip route add DST/PREFIX dev OIF table TABLE` (IPv4, scope
/// link, protocol kernel: the shape of a connected route), for tests and
/// fakes that need a main table to copy.
pub fn connected_route(dst: Ipv4Addr, prefix: u8, oif: u32, table: u32) -> Request {
    const RTPROT_KERNEL: u8 = 2;
    const RT_SCOPE_LINK: u8 = 253;
    let mut p = rtmsg(libc::AF_INET as u8, prefix, table, RT_SCOPE_LINK);
    p[5] = RTPROT_KERNEL;
    push_attr(&mut p, RTA_DST, &dst.octets());
    push_attr(&mut p, RTA_OIF, &oif.to_ne_bytes());
    Request {
        object: Object::Route,
        payload: p,
        describe: format!("route {dst}/{prefix} dev ifindex {oif} table {table}"),
    }
}

/// `ip`-like text for a request payload of `object` (for logs and test
/// failures).
pub fn describe(object: Object, payload: &[u8]) -> String {
    match object {
        Object::Addr => match parse_addr(payload) {
            Some(a) => format!("address {}/{} on ifindex {}", a.addr, a.prefix, a.ifindex),
            None => match addr6_text(payload) {
                Some(t) => t,
                None => format!("address ({} bytes)", payload.len()),
            },
        },
        Object::Route => match parse_route(payload) {
            Some(r) => {
                let dst = route_dst_text(payload);
                let advmss = attrs(payload, RTMSG_LEN)
                    .into_iter()
                    .find(|(t, _)| *t == RTA_METRICS)
                    .and_then(|(_, m)| {
                        attrs(m, 0)
                            .into_iter()
                            .find(|(t, d)| *t == RTAX_ADVMSS && d.len() == 4)
                            .map(|(_, d)| u32::from_ne_bytes([d[0], d[1], d[2], d[3]]))
                    })
                    .map(|m| format!(" advmss {m}"))
                    .unwrap_or_default();
                let dev = r
                    .oif
                    .map(|o| format!(" dev ifindex {o}"))
                    .unwrap_or_default();
                format!("route {dst}{dev}{advmss} table {}", r.table)
            }
            None => format!("route ({} bytes)", payload.len()),
        },
        Object::Rule => match Rule::parse(payload) {
            Some(r) => r.request().describe,
            None => format!("rule ({} bytes)", payload.len()),
        },
    }
}

/// An IPv6 address payload as [`addr`] / [`addr_nodad`] describe it.
fn addr6_text(payload: &[u8]) -> Option<String> {
    if payload.len() < IFADDRMSG_LEN || i32::from(payload[0]) != libc::AF_INET6 {
        return None;
    }
    let (_, d) = attrs(payload, IFADDRMSG_LEN)
        .into_iter()
        .find(|(ty, d)| *ty == IFA_LOCAL && d.len() == 16)?;
    let a = Ipv6Addr::from(<[u8; 16]>::try_from(d).ok()?);
    let ifindex = u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let nodad = if payload[2] & IFA_F_NODAD != 0 {
        " nodad"
    } else {
        ""
    };
    Some(format!(
        "address {a}/{} on ifindex {ifindex}{nodad}",
        payload[1]
    ))
}

/// A route payload's destination as `ip` writes it: `A.B.C.D/N`, `X::Y/N`,
/// `default` (IPv4) or `::/0` (IPv6, so that logs tell the families apart).
fn route_dst_text(payload: &[u8]) -> String {
    let v6 = payload
        .first()
        .is_some_and(|f| i32::from(*f) == libc::AF_INET6);
    let len = payload.get(1).copied().unwrap_or(0);
    let dst = attrs(payload, RTMSG_LEN)
        .into_iter()
        .find(|(t, _)| *t == RTA_DST)
        .and_then(|(_, d)| match d.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3]))),
            16 => <[u8; 16]>::try_from(d)
                .ok()
                .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
            _ => None,
        });
    match dst {
        Some(a) => format!("{a}/{len}"),
        None if v6 => "::/0".into(),
        None => "default".into(),
    }
}

/// Walks `(type, data)` attributes of a payload after `skip` header bytes.
pub fn attrs(payload: &[u8], skip: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut i = skip;
    while i + 4 <= payload.len() {
        let len = usize::from(u16::from_ne_bytes([payload[i], payload[i + 1]]));
        let ty = u16::from_ne_bytes([payload[i + 2], payload[i + 3]]) & 0x3fff;
        if len < 4 || i + len > payload.len() {
            break;
        }
        out.push((ty, &payload[i + 4..i + len]));
        i += (len + 3) & !3;
    }
    out
}

const RTMSG_LEN: usize = 12;

/// A route from a dump, as far as setup needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The table.
    pub table: u32,
    /// Output interface.
    pub oif: Option<u32>,
    /// Route type (1 = unicast).
    pub route_type: u8,
    /// The payload as dumped.
    pub payload: Vec<u8>,
}

/// One IPv4 address of an interface, as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrInfo {
    /// The interface.
    pub ifindex: u32,
    /// The address.
    pub addr: std::net::Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// A secondary address of its subnet (the first one added is primary).
    pub secondary: bool,
}

/// Parses an address payload from a dump (IPv4 only; `None` otherwise).
pub fn parse_addr(payload: &[u8]) -> Option<AddrInfo> {
    if payload.len() < IFADDRMSG_LEN || i32::from(payload[0]) != libc::AF_INET {
        return None;
    }
    let local = attrs(payload, IFADDRMSG_LEN)
        .into_iter()
        .filter(|(ty, d)| matches!(*ty, IFA_LOCAL | IFA_ADDRESS) && d.len() == 4)
        .min_by_key(|(ty, _)| if *ty == IFA_LOCAL { 0 } else { 1 })?;
    let d = local.1;
    Some(AddrInfo {
        ifindex: u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]),
        addr: std::net::Ipv4Addr::new(d[0], d[1], d[2], d[3]),
        prefix: payload[1],
        secondary: payload[2] & IFA_F_SECONDARY != 0,
    })
}

/// Parses a route payload from a dump.
pub fn parse_route(payload: &[u8]) -> Option<RouteInfo> {
    if payload.len() < RTMSG_LEN {
        return None;
    }
    let mut table = u32::from(payload[4]);
    let mut oif = None;
    for (ty, d) in attrs(payload, RTMSG_LEN) {
        match ty {
            RTA_TABLE if d.len() == 4 => table = u32::from_ne_bytes([d[0], d[1], d[2], d[3]]),
            RTA_OIF if d.len() == 4 => oif = Some(u32::from_ne_bytes([d[0], d[1], d[2], d[3]])),
            _ => {}
        }
    }
    Some(RouteInfo {
        table,
        oif,
        route_type: payload[7],
        payload: payload.to_vec(),
    })
}

/// One entry of the kernel's neighbour table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighEntry {
    /// The interface.
    pub ifindex: u32,
    /// `NUD_*` bits.
    pub state: u16,
    /// The neighbour's address.
    pub dst: Option<IpAddr>,
    /// Its link-layer address, when known.
    pub lladdr: Option<[u8; 6]>,
}

/// Parses an `ndmsg` and its attributes (`None` when short).
pub fn parse_neigh(payload: &[u8]) -> Option<NeighEntry> {
    if payload.len() < NDMSG_LEN {
        return None;
    }
    let family = i32::from(payload[0]);
    let mut e = NeighEntry {
        ifindex: u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]),
        state: u16::from_ne_bytes([payload[8], payload[9]]),
        dst: None,
        lladdr: None,
    };
    for (ty, d) in attrs(payload, NDMSG_LEN) {
        match (ty, family, d.len()) {
            (NDA_DST, libc::AF_INET, 4) => {
                e.dst = Some(IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])));
            }
            (NDA_DST, libc::AF_INET6, 16) => {
                e.dst = <[u8; 16]>::try_from(d)
                    .ok()
                    .map(|o| IpAddr::V6(Ipv6Addr::from(o)));
            }
            (NDA_LLADDR, _, 6) => e.lladdr = <[u8; 6]>::try_from(d).ok(),
            _ => {}
        }
    }
    Some(e)
}

/// The payload of a neighbour-table entry (what the kernel's dump carries;
/// for tests and fakes).
pub fn neigh_payload(ifindex: u32, state: u16, dst: IpAddr, lladdr: Option<[u8; 6]>) -> Vec<u8> {
    let mut p = vec![family(dst), 0, 0, 0];
    p.extend_from_slice(&ifindex.to_ne_bytes());
    p.extend_from_slice(&state.to_ne_bytes());
    p.extend_from_slice(&[0, 1]); // flags, type (NDA_UNSPEC/unicast)
    push_attr(&mut p, NDA_DST, &addr_bytes(dst));
    if let Some(mac) = lladdr {
        push_attr(&mut p, NDA_LLADDR, &mac);
    }
    p
}

/// The same route in `table`, with `advmss` as its only metric: the copy
/// that makes the local stack announce a smaller MSS on it.
pub fn copy_route_with_advmss(route: &RouteInfo, table: u32, advmss: u32) -> Request {
    let src = &route.payload;
    let mut p = src[..RTMSG_LEN].to_vec();
    p[4] = u8::try_from(table).unwrap_or(0);
    p[5] = RTPROT_STATIC;
    push_attr(&mut p, RTA_TABLE, &table.to_ne_bytes());
    for (ty, d) in attrs(src, RTMSG_LEN) {
        if matches!(
            ty,
            RTA_DST | RTA_OIF | RTA_GATEWAY | RTA_PREFSRC | RTA_PRIORITY
        ) {
            push_attr(&mut p, ty, d);
        }
    }
    let mut metrics = Vec::new();
    push_attr(&mut metrics, RTAX_ADVMSS, &advmss.to_ne_bytes());
    push_attr(&mut p, RTA_METRICS, &metrics);
    let dst = route_dst_text(src);
    Request {
        object: Object::Route,
        payload: p,
        describe: format!("route {dst} advmss {advmss} table {table}"),
    }
}

/// Whether two route requests name the same kernel route (header, table,
/// destination, gateway, interface, priority) and differ at most in their
/// metrics (an `advmss` copy made for another tunnel MTU or header): the
/// kernel refuses the second with `EEXIST` while the first is there.
pub fn same_route_but_metrics(a: &Request, b: &Request) -> bool {
    type RouteKey = (Vec<u8>, Vec<(u16, Vec<u8>)>);
    let key = |r: &Request| -> Option<RouteKey> {
        if r.object != Object::Route || r.payload.len() < RTMSG_LEN {
            return None;
        }
        let attrs = attrs(&r.payload, RTMSG_LEN)
            .into_iter()
            .filter(|(t, _)| *t != RTA_METRICS)
            .map(|(t, d)| (t, d.to_vec()))
            .collect();
        Some((r.payload[..RTMSG_LEN].to_vec(), attrs))
    };
    a.payload != b.payload && key(a).is_some_and(|k| Some(k) == key(b))
}

/// Builds one netlink message.
pub fn message(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + payload.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

/// One message of a received datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// An acknowledgement (error 0) or an error (negative errno).
    Ack {
        /// Sequence number acknowledged.
        seq: u32,
        /// 0 or a negative errno.
        error: i32,
    },
    /// End of a dump.
    Done,
    /// A data message of a dump.
    Data {
        /// Message type.
        ty: u16,
        /// Sequence number of the request it answers.
        seq: u32,
        /// Payload.
        payload: &'a [u8],
    },
}

/// The header fields of one message: `(type, flags, seq, payload)`, or
/// `None` when `msg` is shorter than its header says.
pub fn parse_header(msg: &[u8]) -> Option<(u16, u16, u32, &[u8])> {
    if msg.len() < NLMSG_HDRLEN {
        return None;
    }
    let len = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
    if len < NLMSG_HDRLEN || len > msg.len() {
        return None;
    }
    Some((
        u16::from_ne_bytes([msg[4], msg[5]]),
        u16::from_ne_bytes([msg[6], msg[7]]),
        u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]),
        &msg[NLMSG_HDRLEN..len],
    ))
}

/// Splits a datagram into messages; stops at the first malformed one.
pub fn parse_replies(buf: &[u8]) -> Vec<Reply<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]) as usize;
        let ty = u16::from_ne_bytes([buf[i + 4], buf[i + 5]]);
        let seq = u32::from_ne_bytes([buf[i + 8], buf[i + 9], buf[i + 10], buf[i + 11]]);
        if len < NLMSG_HDRLEN || i + len > buf.len() {
            break;
        }
        let payload = &buf[i + NLMSG_HDRLEN..i + len];
        out.push(match ty {
            NLMSG_ERROR if payload.len() >= 4 => Reply::Ack {
                seq,
                error: i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]),
            },
            NLMSG_DONE => Reply::Done,
            _ => Reply::Data { ty, seq, payload },
        });
        i += (len + 3) & !3;
    }
    out
}

/// The error an acknowledgement carries: the kernel writes a negative
/// errno; anything else (a positive value, `i32::MIN`) is a malformed
/// reply, reported as such rather than negated into nonsense.
pub fn ack_error(error: i32) -> io::Error {
    match error.checked_neg() {
        Some(errno) if errno > 0 => io::Error::from_raw_os_error(errno),
        _ => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("netlink acknowledgement with an invalid error code {error}"),
        ),
    }
}

/// The chokepoint: one netlink socket, as a datagram in and a datagram out.
///
/// Implemented by [`NetlinkSocket`] (the kernel) and by
/// [`crate::fake::FakeKernel`] (tests).
pub trait NetlinkSys: Send {
    /// Sends one datagram (one or more messages) to the kernel.
    fn send(&mut self, msg: &[u8]) -> io::Result<()>;
    /// Receives one datagram into `buf`; its length.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

impl NetlinkSys for NetlinkSocket {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        NetlinkSocket::send(self, msg)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        NetlinkSocket::recv(self, buf)
    }
}

/// A netlink client: numbered requests, acknowledgements and dumps over
/// one [`NetlinkSys`].
#[derive(Debug)]
pub struct Netlink<S: NetlinkSys = NetlinkSocket> {
    sock: S,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a route netlink socket.
    pub fn open() -> io::Result<Self> {
        Ok(Self::new(NetlinkSocket::open()?))
    }

    /// Opens a netlink socket of `protocol` (`NETLINK_SOCK_DIAG`...).
    pub fn open_protocol(protocol: libc::c_int) -> io::Result<Self> {
        Ok(Self::new(NetlinkSocket::open_protocol(protocol)?))
    }

    /// Makes a receive that waits longer than `t` fail (`WouldBlock`), so a
    /// kernel that never answers cannot hang the caller.
    pub fn set_recv_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.sock.set_recv_timeout(t)
    }
}

impl<S: NetlinkSys> Netlink<S> {
    /// A client over `sock`.
    pub fn new(sock: S) -> Self {
        Self {
            sock,
            seq: 1,
            buf: vec![0u8; 64 * 1024],
        }
    }

    /// The transport underneath.
    pub fn sys(&self) -> &S {
        &self.sock
    }

    /// The transport underneath, mutably (host setup reaches `/proc/sys`
    /// through the same object).
    pub fn sys_mut(&mut self) -> &mut S {
        &mut self.sock
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a request with an acknowledgement asked for, and waits for
    /// that acknowledgement: `Ok` or the error the kernel returned.
    pub fn exec(&mut self, ty: u16, flags: u16, payload: &[u8]) -> io::Result<()> {
        let seq = self.next_seq();
        self.sock.send(&message(
            ty,
            flags | NLM_F_REQUEST | NLM_F_ACK,
            seq,
            payload,
        ))?;
        loop {
            let n = self.sock.recv(&mut self.buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "netlink socket closed before the acknowledgement",
                ));
            }
            for r in parse_replies(&self.buf[..n]) {
                if let Reply::Ack { seq: s, error } = r {
                    if s == seq {
                        return if error == 0 {
                            Ok(())
                        } else {
                            Err(ack_error(error))
                        };
                    }
                }
            }
        }
    }

    /// Deletes the link `ifindex` (`ip link del`): how a persistent TUN
    /// device goes.
    pub fn del_link(&mut self, ifindex: u32) -> io::Result<()> {
        self.exec(RTM_DELLINK, 0, &ifinfo(ifindex))
    }

    /// Attaches XDP program `prog_fd` to link `ifindex` with `flags`
    /// (`XDP_FLAGS_SKB_MODE` or `XDP_FLAGS_DRV_MODE`), replacing the
    /// program attached there in the same mode, if any (`ip link set dev
    /// X xdp fd N`); `prog_fd` -1 detaches. Unlike a BPF link, this
    /// attachment outlives the process: it is the daemon's to remove.
    pub fn set_xdp(&mut self, ifindex: u32, prog_fd: i32, flags: u32) -> io::Result<()> {
        let mut p = ifinfo(ifindex);
        let mut nested = Vec::new();
        push_attr(&mut nested, IFLA_XDP_FD, &prog_fd.to_ne_bytes());
        push_attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
        push_attr(&mut p, IFLA_XDP | NLA_F_NESTED, &nested);
        self.exec(RTM_SETLINK, 0, &p)
    }

    /// Adds the object of `req` (fails if it exists).
    pub fn add(&mut self, req: &Request) -> io::Result<()> {
        self.exec(
            req.object.new_type(),
            NLM_F_CREATE | NLM_F_EXCL,
            &req.payload,
        )
    }

    /// Deletes the object of `req`.
    pub fn del(&mut self, req: &Request) -> io::Result<()> {
        self.exec(req.object.del_type(), 0, &req.payload)
    }

    /// Sends the dump request `ty` with `payload` and calls `each` on the
    /// payload of every entry until the kernel's `NLMSG_DONE`; an error
    /// acknowledgement is the error. Messages answering another request
    /// (a stale reply) are skipped.
    pub fn dump(&mut self, ty: u16, payload: &[u8], mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let seq = self.next_seq();
        self.sock
            .send(&message(ty, NLM_F_REQUEST | NLM_F_DUMP, seq, payload))?;
        loop {
            let n = self.sock.recv(&mut self.buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "netlink dump ended without NLMSG_DONE",
                ));
            }
            for r in parse_replies(&self.buf[..n]) {
                match r {
                    Reply::Done => return Ok(()),
                    Reply::Ack { seq: s, error } if s == seq && error != 0 => {
                        return Err(ack_error(error));
                    }
                    Reply::Data {
                        seq: s, payload, ..
                    } if s == seq => each(payload),
                    Reply::Ack { .. } | Reply::Data { .. } => {}
                }
            }
        }
    }

    /// Dumps the IPv4 addresses of every interface.
    pub fn dump_addrs_v4(&mut self) -> io::Result<Vec<AddrInfo>> {
        self.dump_family(RTM_GETADDR, IFADDRMSG_LEN, libc::AF_INET, parse_addr)
    }

    /// Dumps the IPv4 routes of every table.
    pub fn dump_routes_v4(&mut self) -> io::Result<Vec<RouteInfo>> {
        self.dump_family(RTM_GETROUTE, RTMSG_LEN, libc::AF_INET, parse_route)
    }

    /// Dumps the IPv6 routes of every table.
    pub fn dump_routes_v6(&mut self) -> io::Result<Vec<RouteInfo>> {
        self.dump_family(RTM_GETROUTE, RTMSG_LEN, libc::AF_INET6, parse_route)
    }

    /// Dumps the neighbour table of `family` (`AF_INET` or `AF_INET6`).
    pub fn dump_neighbours(&mut self, family: libc::c_int) -> io::Result<Vec<NeighEntry>> {
        self.dump_family(RTM_GETNEIGH, NDMSG_LEN, family, parse_neigh)
    }

    /// A dump request of type `ty` whose header (`header_len` bytes) names
    /// only the family; what `parse` makes of each entry.
    fn dump_family<T>(
        &mut self,
        ty: u16,
        header_len: usize,
        family: libc::c_int,
        parse: fn(&[u8]) -> Option<T>,
    ) -> io::Result<Vec<T>> {
        let fam = u8::try_from(family).map_err(|_| io::Error::other("bad address family"))?;
        let mut req = vec![fam];
        req.resize(header_len, 0);
        let mut out = Vec::new();
        self.dump(ty, &req, |p| out.extend(parse(p)))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_dump_entries_parse() {
        // What an address request carries is what a dump entry carries.
        let r = addr(7, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 24, false);
        let mut p = r.payload.clone();
        assert_eq!(
            parse_addr(&p),
            Some(AddrInfo {
                ifindex: 7,
                addr: Ipv4Addr::new(198, 18, 0, 2),
                prefix: 24,
                secondary: false
            })
        );
        p[2] |= IFA_F_SECONDARY;
        assert!(parse_addr(&p).is_some_and(|a| a.secondary));
        p[0] = 10; // AF_INET6
        assert_eq!(parse_addr(&p), None);
        assert_eq!(parse_addr(&r.payload[..7]), None);
        // No address attribute: nothing.
        assert_eq!(parse_addr(&r.payload[..IFADDRMSG_LEN]), None);
    }

    #[test]
    fn addr_request_bytes() {
        let r = addr(7, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 32, true);
        let mut want = vec![2u8, 32, 0, 254];
        want.extend_from_slice(&7u32.to_ne_bytes());
        for ty in [IFA_LOCAL, IFA_ADDRESS] {
            want.extend_from_slice(&8u16.to_ne_bytes());
            want.extend_from_slice(&ty.to_ne_bytes());
            want.extend_from_slice(&[198, 18, 0, 2]);
        }
        assert_eq!(r.payload, want);
        assert_eq!(r.object.del_type(), RTM_DELADDR);
    }

    #[test]
    fn rule_request_has_every_selector() {
        let r = Rule {
            priority: 10,
            table: 100,
            iif: Some("eth0".into()),
            to: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))),
            ipproto: Some(6),
            dport: Some(80),
            ..Rule::default()
        }
        .request();
        assert_eq!(&r.payload[..8], &[2, 32, 0, 0, 100, 0, 0, FR_ACT_TO_TBL]);
        let a = attrs(&r.payload, 12);
        let types: Vec<u16> = a.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            types,
            vec![
                FRA_PRIORITY,
                FRA_TABLE,
                FRA_IIFNAME,
                FRA_DST,
                FRA_IP_PROTO,
                FRA_DPORT_RANGE
            ]
        );
        assert_eq!(a[2].1, b"eth0\0");
        assert_eq!(a[4].1, &[6]);
        assert_eq!(
            r.describe,
            "rule pref 10 iif eth0 to 198.18.0.1 ipproto 6 dport 80 lookup 100"
        );
    }

    #[test]
    fn acknowledgement_errors_never_overflow() {
        assert_eq!(ack_error(-17).raw_os_error(), Some(17));
        for bad in [i32::MIN, 1, i32::MAX] {
            let e = ack_error(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{bad}");
            assert!(e.to_string().contains(&bad.to_string()));
        }
    }

    #[test]
    fn replies_parse_and_truncation_stops() {
        let mut d = message(NLMSG_ERROR, 0, 5, &(-17i32).to_ne_bytes());
        d.extend(message(NLMSG_DONE, 0, 6, &[0, 0, 0, 0]));
        assert_eq!(
            parse_replies(&d),
            vec![Reply::Ack { seq: 5, error: -17 }, Reply::Done]
        );
        assert_eq!(parse_replies(&d[..10]), vec![]);
        let mut lying = d.clone();
        lying[0] = 200;
        assert_eq!(parse_replies(&lying), vec![]);
    }

    #[test]
    fn route_copy_keeps_selectors_and_sets_advmss() {
        let mut p = vec![2u8, 24, 0, 0, 254, 2, 253, 1, 0, 0, 0, 0];
        push_attr(&mut p, RTA_TABLE, &254u32.to_ne_bytes());
        push_attr(&mut p, RTA_DST, &[198, 18, 0, 0]);
        push_attr(&mut p, RTA_OIF, &3u32.to_ne_bytes());
        push_attr(&mut p, 12, &[0; 16]); // RTA_CACHEINFO: dropped
        let info = parse_route(&p).unwrap_or_else(|| unreachable!());
        assert_eq!((info.table, info.oif, info.route_type), (254, Some(3), 1));
        let c = copy_route_with_advmss(&info, 101, 1400);
        let a = attrs(&c.payload, 12);
        assert_eq!(c.payload[4], 101);
        assert_eq!(a[0], (RTA_TABLE, &101u32.to_ne_bytes()[..]));
        assert!(
            a.iter()
                .any(|(t, d)| *t == RTA_DST && *d == [198, 18, 0, 0])
        );
        assert!(!a.iter().any(|(t, _)| *t == 12));
        let m = a.iter().find(|(t, _)| *t == RTA_METRICS).map(|(_, d)| *d);
        assert_eq!(
            m.map(|m| attrs(m, 0)),
            Some(vec![(RTAX_ADVMSS, &1400u32.to_ne_bytes()[..])])
        );
        assert_eq!(c.describe, "route 198.18.0.0/24 advmss 1400 table 101");
    }

    #[test]
    fn attrs_stop_on_lying_length() {
        let mut p = Vec::new();
        push_attr(&mut p, 1, &[1, 2, 3, 4]);
        p.extend_from_slice(&[50, 0, 2, 0, 9]);
        assert_eq!(attrs(&p, 0), vec![(1, &[1u8, 2, 3, 4][..])]);
    }

    #[test]
    fn neighbour_entries_parse() {
        let mac = [2, 0, 0, 0, 7, 0xb];
        let v4: IpAddr = "198.18.7.2".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let mut p = neigh_payload(5, 2, v4, Some(mac));
        push_attr(&mut p, 9, &[0; 8]); // NDA_CACHEINFO-like: ignored
        assert_eq!(
            parse_neigh(&p),
            Some(NeighEntry {
                ifindex: 5,
                state: 2,
                dst: Some(v4),
                lladdr: Some(mac)
            })
        );
        let e = parse_neigh(&neigh_payload(6, 1, v6, None)).unwrap();
        assert_eq!(
            (e.ifindex, e.state, e.dst, e.lladdr),
            (6, 1, Some(v6), None)
        );
        // A v6 family with a 4-byte destination: no address, no panic.
        let mut odd = neigh_payload(5, 2, v4, None);
        odd[0] = libc::AF_INET6 as u8;
        assert_eq!(parse_neigh(&odd).map(|e| e.dst), Some(None));
    }

    #[test]
    fn neighbour_dump_request_layout() {
        let mut req = vec![libc::AF_INET as u8];
        req.resize(NDMSG_LEN, 0);
        let m = message(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 7, &req);
        assert_eq!(m.len(), 28);
        assert_eq!(parse_header(&m), Some((RTM_GETNEIGH, 0x301, 7, &req[..])));
        assert_eq!(parse_header(&m[..27]), None);
    }

    #[test]
    fn truncated_and_lying_messages_do_not_panic() {
        let mut p = neigh_payload(5, 2, "198.18.7.2".parse().unwrap(), Some([1; 6]));
        let good = message(RTM_NEWNEIGH, 0, 1, &p);
        for n in 0..good.len() {
            for r in parse_replies(&good[..n]) {
                if let Reply::Data { payload, .. } = r {
                    let _ = parse_neigh(payload);
                }
            }
            let _ = parse_neigh(&p[..n.min(p.len())]);
            let _ = parse_route(&p[..n.min(p.len())]);
            let _ = parse_addr(&p[..n.min(p.len())]);
            let _ = Rule::parse(&p[..n.min(p.len())]);
        }
        // An attribute longer than the message: the entry keeps what came
        // before it.
        p[NDMSG_LEN] = 60;
        assert_eq!(parse_neigh(&p).map(|e| e.dst), Some(None));
    }

    #[test]
    fn rules_parse_back() {
        let r = Rule {
            priority: 10,
            table: 100,
            iif: Some("eth0".into()),
            from: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9))),
            to: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))),
            ipproto: Some(6),
            dport: Some(80),
            v6: false,
        };
        assert_eq!(Rule::parse(&r.request().payload), Some(r.clone()));
        assert_eq!(
            describe(Object::Rule, &r.request().payload),
            r.request().describe
        );
        let a = addr(3, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 32, false);
        assert_eq!(describe(Object::Addr, &a.payload), a.describe);
    }
}
