//! Starting the AF_XDP backend from a plain plan: load the XDP program,
//! fill its maps, bind one AF_XDP socket per queue, attach the program to
//! the uplink; and keep the maps in step with the peers on a reload.
//!
//! ```text
//!  XdpPlan ─► XdpBackend::start ─► uplink index and MAC (sys)
//!                                ─► XdpProgram::load: RouterProgram (maps, program; dpr-xdp)
//!                                     services ─► peers ─► decapsulation pairs
//!                                ─► one XskSocket per queue ─► its slot in the socket map
//!                                ─► attach (native, generic or auto) ─► XdpBackend
//!  reload ─► XdpProgram::set_peers(&[XdpPeer]): removes what left, adds what came
//! ```
//!
//! [`XdpBackend::start`] returns everything the data path needs or an
//! [`XdpError`] naming the step (interface, map entry, queue, mode) that
//! failed; a daemon logs it and falls back to the TUN backend. The
//! program is attached over netlink (`IFLA_XDP`), replacing a previous
//! instance's in place, and stays attached when the process ends (a
//! restart or a crash): with no socket it drops the router's traffic, so
//! the local stack never answers the packets of connections routed
//! elsewhere. [`XdpBackend::detach`] removes it at a full stop. [`XdpProgram`] is generic over the `bpf(2)` layer, so its map
//! maintenance is tested with [`dpr_xdp::FakeBpf`] below, without root.

use crate::sys;
use dpr_packet::IpProtocol;
use dpr_router::KeyedFlowEvent;
use dpr_xdp::xsk::{XskConfig, XskSocket};
use dpr_xdp::{
    BpfSys, Counters, KeyedFlow, KeyedFlowMap, MissingSocket, ProgramConfig, RealBpf,
    RouterProgram, XdpMode,
};
use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// A peer as the XDP program sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpPeer {
    /// Its tunnel address: IP-in-IP from it goes to the router.
    pub tunnel_addr: IpAddr,
    /// Its service addresses (on this host's service ports): with
    /// decapsulation on, what it sends there in IPv4-in-IPv4 is
    /// decapsulated by the program itself.
    pub service_addrs: Vec<IpAddr>,
}

/// What the AF_XDP backend needs to start: plain data, no configuration
/// file.
#[derive(Debug, Clone)]
pub struct XdpPlan {
    /// The uplink interface (in the calling thread's namespace).
    pub uplink: String,
    /// AF_XDP sockets to bind, on queues `0..queues`.
    pub queues: u32,
    /// This host's service addresses.
    pub service_addrs: Vec<IpAddr>,
    /// TCP service ports (of this host and of its peers).
    pub service_ports: Vec<u16>,
    /// The peers.
    pub peers: Vec<XdpPeer>,
    /// How to attach the program.
    pub mode: XdpMode,
    /// The program decapsulates the plain IPv4-in-IPv4 packets of
    /// connections in progress itself and passes them to the kernel.
    pub decap: bool,
    /// Sizes of each socket's UMEM and rings.
    pub xsk: XskConfig,
}

/// A failed start-up or map update, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The uplink has no index or MAC (missing, or not Ethernet).
    #[error("uplink {uplink}: {what}: {source}")]
    Uplink {
        /// The interface.
        uplink: String,
        /// What was asked (`interface index`, `MAC address`).
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the maps or loading the program failed (the verifier's
    /// log, if it refused the program, is in the source).
    #[error("loading the XDP program: {0}")]
    Load(#[source] dpr_xdp::Error),
    /// Writing or removing one map entry failed.
    #[error("XDP {map} map, {entry}: {source}")]
    Map {
        /// The map (`service`, `peer`, `tunnel service`, `socket`).
        map: &'static str,
        /// The entry.
        entry: String,
        /// The cause (the `bpf(2)` command is named in it).
        #[source]
        source: dpr_xdp::Error,
    },
    /// Binding the AF_XDP socket of a queue failed.
    #[error("AF_XDP socket on {uplink} queue {queue}: {source}")]
    Socket {
        /// The interface.
        uplink: String,
        /// The queue.
        queue: u32,
        /// The cause.
        #[source]
        source: dpr_xdp::Error,
    },
    /// Attaching the program failed.
    #[error("attaching the XDP program to {uplink} ({mode:?}): {source}")]
    Attach {
        /// The interface.
        uplink: String,
        /// The mode asked for.
        mode: XdpMode,
        /// The cause.
        #[source]
        source: dpr_xdp::Error,
    },
}

fn map_err(map: &'static str, entry: impl ToString) -> impl FnOnce(dpr_xdp::Error) -> XdpError {
    let entry = entry.to_string();
    move |source| XdpError::Map { map, entry, source }
}

/// The loaded program and the entries of its maps that follow the plan
/// (services, peers, decapsulation pairs), over the `bpf(2)` of `B`.
#[derive(Debug)]
pub struct XdpProgram<B: BpfSys = RealBpf> {
    program: RouterProgram<B>,
    service_ports: Vec<u16>,
    decap: bool,
    peers: BTreeSet<IpAddr>,
    /// (peer, service) pairs the program decapsulates itself.
    tunnel_services: BTreeSet<(IpAddr, SocketAddr)>,
}

/// Where [`KeyedFlowWriter`] writes: the program's `keyed_flows_v4` map,
/// through a worker's own descriptor ([`KeyedFlowMap`]) or the loader's.
pub trait KeyedFlowSink {
    /// Writes (or replaces) an entry.
    fn add(&mut self, peer: IpAddr, flow: &KeyedFlow, tag: u32) -> Result<(), dpr_xdp::Error>;
    /// Removes an entry; `Ok(false)` if it was not there.
    fn remove(&mut self, peer: IpAddr, flow: &KeyedFlow) -> Result<bool, dpr_xdp::Error>;
}

impl KeyedFlowSink for KeyedFlowMap {
    fn add(&mut self, peer: IpAddr, flow: &KeyedFlow, tag: u32) -> Result<(), dpr_xdp::Error> {
        KeyedFlowMap::add(self, peer, flow, tag)
    }
    fn remove(&mut self, peer: IpAddr, flow: &KeyedFlow) -> Result<bool, dpr_xdp::Error> {
        KeyedFlowMap::remove(self, peer, flow)
    }
}

impl<B: BpfSys> KeyedFlowSink for RouterProgram<B> {
    fn add(&mut self, peer: IpAddr, flow: &KeyedFlow, tag: u32) -> Result<(), dpr_xdp::Error> {
        self.add_keyed_flow(peer, flow, tag)
    }
    fn remove(&mut self, peer: IpAddr, flow: &KeyedFlow) -> Result<bool, dpr_xdp::Error> {
        self.remove_keyed_flow(peer, flow)
    }
}

/// Applies the engine's keyed-flow notes ([`KeyedFlowEvent`]) to the XDP
/// program's map, so that the program decapsulates the packets of accepted
/// connections itself (IPv4 TCP only; others stay on the engine's path).
/// A worker owns one and applies its engine's notes after each batch.
#[derive(Debug)]
pub struct KeyedFlowWriter<S: KeyedFlowSink> {
    sink: S,
    /// The entries this writer wrote recently, with their tag, so that
    /// repeats are not written again: a fixed, direct-mapped cache of
    /// (fingerprint, tag) slots, allocated once (a flood of accepted SYNs
    /// must not grow the daemon's memory); a slot taken by another flow
    /// only costs a repeated write.
    recent: Box<[(u64, u32)]>,
    hasher: std::collections::hash_map::RandomState,
    /// What it did.
    pub stats: KeyedFlowStats,
}

/// What a [`KeyedFlowWriter`] did, since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyedFlowStats {
    /// Entries written (new flows, new tags).
    pub added: u64,
    /// Entries removed (connections that ended).
    pub removed: u64,
    /// Map writes refused by the kernel.
    pub failed: u64,
}

/// Slots of a [`KeyedFlowWriter`]'s cache of recent writes (16 bytes each).
const RECENT_SLOTS: usize = 4096;

impl<S: KeyedFlowSink> KeyedFlowWriter<S> {
    /// A writer into `sink`.
    pub fn new(sink: S) -> Self {
        Self {
            sink,
            recent: vec![(0, 0); RECENT_SLOTS].into_boxed_slice(),
            hasher: std::collections::hash_map::RandomState::new(),
            stats: KeyedFlowStats::default(),
        }
    }

    /// Writes the accepted flows of `events` and removes the ended ones.
    pub fn apply(&mut self, events: &[KeyedFlowEvent]) {
        for ev in events {
            let (IpAddr::V4(_), IpAddr::V4(_), IpAddr::V4(_)) = (ev.peer, ev.flow.src, ev.flow.dst)
            else {
                continue;
            };
            if ev.flow.protocol != IpProtocol::Tcp {
                continue;
            }
            let flow = KeyedFlow {
                client: SocketAddr::new(ev.flow.src, ev.flow.src_port),
                service: SocketAddr::new(ev.flow.dst, ev.flow.dst_port),
            };
            // A fingerprint that is never 0 (0 marks an empty slot).
            let fp = std::hash::BuildHasher::hash_one(&self.hasher, (ev.peer, flow)) | 1;
            let slot = (fp % RECENT_SLOTS as u64) as usize;
            match ev.tag {
                Some(tag) if self.recent[slot] != (fp, tag) => {
                    match self.sink.add(ev.peer, &flow, tag) {
                        Ok(()) => {
                            self.recent[slot] = (fp, tag);
                            self.stats.added += 1;
                        }
                        Err(_) => self.stats.failed += 1,
                    }
                }
                Some(_) => {}
                None => {
                    if self.recent[slot].0 == fp {
                        self.recent[slot] = (0, 0);
                    }
                    if let Ok(true) = self.sink.remove(ev.peer, &flow) {
                        self.stats.removed += 1;
                    }
                }
            }
        }
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }
}

impl<B: BpfSys> XdpProgram<B> {
    /// Creates the maps, loads the program, then writes the services, the
    /// peers and (with `plan.decap`) the decapsulation pairs, in that
    /// order. Sockets and attachment are [`XdpBackend::start`]'s.
    pub fn load(bpf: B, plan: &XdpPlan) -> Result<Self, XdpError> {
        let program = RouterProgram::load_with(
            bpf,
            &ProgramConfig {
                max_queues: plan.queues.max(64),
                // Between two instances (a restart, a crash) the program
                // stays attached with no socket: the packets of the
                // connections this host routes are held back (dropped; the
                // client retransmits), never answered by the local stack.
                missing_socket: MissingSocket::Drop,
                ..ProgramConfig::default()
            },
        )
        .map_err(XdpError::Load)?;
        let mut p = Self {
            program,
            service_ports: plan.service_ports.clone(),
            decap: plan.decap,
            peers: BTreeSet::new(),
            tunnel_services: BTreeSet::new(),
        };
        for a in &plan.service_addrs {
            for port in &plan.service_ports {
                let s = SocketAddr::new(*a, *port);
                p.program.add_service(s).map_err(map_err("service", s))?;
            }
        }
        p.set_peers(&plan.peers)?;
        Ok(p)
    }

    /// The (peer, service) pairs to decapsulate in the program: IPv4 ones,
    /// when enabled.
    fn decap_pairs(&self, peers: &[XdpPeer]) -> BTreeSet<(IpAddr, SocketAddr)> {
        if !self.decap {
            return BTreeSet::new();
        }
        let mut out = BTreeSet::new();
        for p in peers {
            for a in &p.service_addrs {
                for port in &self.service_ports {
                    if p.tunnel_addr.is_ipv4() && a.is_ipv4() {
                        out.insert((p.tunnel_addr, SocketAddr::new(*a, *port)));
                    }
                }
            }
        }
        out
    }

    /// Makes the program take IP-in-IP from exactly `peers` (a reload),
    /// and decapsulate itself what they send to their services: first the
    /// peer map (removals, then additions), then the decapsulation pairs
    /// (removals, then additions). On an error, what was written stays
    /// written and the next call completes the change (entries are
    /// idempotent).
    pub fn set_peers(&mut self, peers: &[XdpPeer]) -> Result<(), XdpError> {
        let new: BTreeSet<IpAddr> = peers.iter().map(|p| p.tunnel_addr).collect();
        for p in self.peers.difference(&new) {
            self.program.remove_peer(*p).map_err(map_err("peer", p))?;
        }
        for p in new.difference(&self.peers) {
            self.program.add_peer(*p).map_err(map_err("peer", p))?;
        }
        self.peers = new;
        let new = self.decap_pairs(peers);
        for (p, s) in self.tunnel_services.difference(&new) {
            self.program
                .remove_tunnel_service(*p, *s)
                .map_err(map_err("tunnel service", format!("{p} -> {s}")))?;
        }
        for (p, s) in new.difference(&self.tunnel_services) {
            self.program
                .add_tunnel_service(*p, *s)
                .map_err(map_err("tunnel service", format!("{p} -> {s}")))?;
        }
        self.tunnel_services = new;
        Ok(())
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, dpr_xdp::Error> {
        self.program.counters()
    }

    /// The program and its maps.
    pub fn router_program(&self) -> &RouterProgram<B> {
        &self.program
    }

    /// The program and its maps, mutably (socket slots).
    pub fn router_program_mut(&mut self) -> &mut RouterProgram<B> {
        &mut self.program
    }
}

/// The attached program and the sockets for the workers.
#[derive(Debug)]
pub struct XdpBackend {
    /// The program and its maps (peers are updated on reload).
    pub program: XdpProgram,
    /// How the program is attached: over netlink, so it outlives the
    /// process (a restart or a crash holds the traffic; see
    /// [`XdpBackend::detach`]).
    pub attached: XdpAttachment,
    /// One bound socket per queue, in queue order (taken by the workers).
    pub sockets: Vec<XskSocket>,
    /// Uplink interface index.
    pub ifindex: u32,
    /// Uplink MAC.
    pub mac: [u8; 6],
}

impl XdpBackend {
    /// Loads and attaches the program and binds `plan.queues` sockets on
    /// the uplink (in the calling thread's namespace; needs root).
    pub fn start(plan: &XdpPlan) -> Result<Self, XdpError> {
        let uplink = &plan.uplink;
        let uplink_err = |what| {
            move |source| XdpError::Uplink {
                uplink: uplink.clone(),
                what,
                source,
            }
        };
        let ifindex = sys::if_index(uplink).map_err(uplink_err("interface index"))?;
        let mac = sys::if_hwaddr(uplink).map_err(uplink_err("MAC address"))?;
        if let Some(n) = rx_queues(uplink) {
            if n > plan.queues {
                tracing::warn!(
                    uplink = %uplink, rx_queues = n, sockets = plan.queues,
                    "the uplink has more receive queues than sockets: \
                     router traffic on the others is dropped"
                );
            }
        }
        let mut program = XdpProgram::load(RealBpf, plan)?;
        let mut sockets = Vec::new();
        for q in 0..plan.queues {
            let s = XskSocket::bind(ifindex, q, &plan.xsk).map_err(|source| XdpError::Socket {
                uplink: uplink.clone(),
                queue: q,
                source,
            })?;
            program
                .program
                .set_socket(q, s.as_fd())
                .map_err(map_err("socket", format!("queue {q}")))?;
            sockets.push(s);
        }
        let attached = attach(ifindex, program.program.prog_fd().as_raw_fd(), plan.mode).map_err(
            |source| XdpError::Attach {
                uplink: uplink.clone(),
                mode: plan.mode,
                source: dpr_xdp::Error::Syscall {
                    op: "RTM_SETLINK IFLA_XDP",
                    source,
                },
            },
        )?;
        Ok(Self {
            program,
            attached,
            sockets,
            ifindex,
            mac,
        })
    }

    /// The backend's name for status and logs.
    pub fn name(&self) -> String {
        match self.attached.mode {
            XdpMode::Generic => "af-xdp (generic)".into(),
            _ => "af-xdp (native)".into(),
        }
    }

    /// Detaches the program (a full stop; a held stop leaves it).
    pub fn detach(&self) -> io::Result<()> {
        crate::netlink::Netlink::open()?.set_xdp(self.attached.ifindex, -1, self.attached.flags)
    }

    /// Updates the peers in the program's maps (config reload).
    pub fn set_peers(&mut self, peers: &[XdpPeer]) -> Result<(), XdpError> {
        self.program.set_peers(peers)
    }
}

/// Receive queues of `dev` (from sysfs), if readable.
/// An XDP program attached over netlink (`IFLA_XDP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpAttachment {
    /// The interface.
    pub ifindex: u32,
    /// `XDP_FLAGS_DRV_MODE` or `XDP_FLAGS_SKB_MODE`.
    pub flags: u32,
    /// The mode those flags mean.
    pub mode: XdpMode,
}

const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;

/// Attaches `prog_fd` to `ifindex` over netlink, replacing the program
/// attached in the same mode (a previous instance's: no moment without
/// one). `Auto` tries native, then generic. A program of a previous
/// instance in the other mode blocks the attachment (`EEXIST`: the kernel
/// allows one mode at a time); it is detached, and the attachment retried.
fn attach(ifindex: u32, prog_fd: i32, mode: XdpMode) -> io::Result<XdpAttachment> {
    let mut nl = crate::netlink::Netlink::open()?;
    let modes: &[XdpMode] = match mode {
        XdpMode::Auto => &[XdpMode::Native, XdpMode::Generic],
        XdpMode::Native => &[XdpMode::Native],
        XdpMode::Generic => &[XdpMode::Generic],
    };
    let mut last = io::Error::other("no mode to try");
    for &m in modes {
        let (flags, other) = if m == XdpMode::Native {
            (XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE)
        } else {
            (XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE)
        };
        let ok = XdpAttachment {
            ifindex,
            flags,
            mode: m,
        };
        match nl.set_xdp(ifindex, prog_fd, flags) {
            Ok(()) => return Ok(ok),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                tracing::info!(
                    ifindex,
                    "an XDP program is attached in the other mode: replacing it"
                );
                if nl.set_xdp(ifindex, -1, other).is_ok()
                    && nl.set_xdp(ifindex, prog_fd, flags).is_ok()
                {
                    return Ok(ok);
                }
                last = e;
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn rx_queues(dev: &str) -> Option<u32> {
    let d = std::fs::read_dir(format!("/sys/class/net/{dev}/queues")).ok()?;
    let n = d
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpr_xdp::FakeBpf;
    use dpr_xdp::bpf::BpfCall;

    const PRESENT: [u8; 4] = 1u32.to_ne_bytes();

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peer(tunnel: &str, services: &[&str]) -> XdpPeer {
        XdpPeer {
            tunnel_addr: ip(tunnel),
            service_addrs: services.iter().map(|s| ip(s)).collect(),
        }
    }

    fn plan(peers: Vec<XdpPeer>) -> XdpPlan {
        XdpPlan {
            uplink: "eth0".into(),
            queues: 1,
            service_addrs: vec![ip("198.18.0.1")],
            service_ports: vec![80],
            peers,
            mode: XdpMode::Auto,
            decap: true,
            xsk: XskConfig::default(),
        }
    }

    fn upd(map: &str, key: Vec<u8>) -> BpfCall {
        BpfCall::Update {
            map: map.into(),
            key,
            value: PRESENT.to_vec(),
        }
    }
    fn del(map: &str, key: Vec<u8>) -> BpfCall {
        BpfCall::Delete {
            map: map.into(),
            key,
        }
    }
    fn ip_key(s: &str) -> Vec<u8> {
        match ip(s) {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }
    fn svc_key(a: &str, port: u16) -> Vec<u8> {
        let mut k = ip_key(a);
        k.extend_from_slice(&port.to_be_bytes());
        k.extend_from_slice(&[0, 0]);
        k
    }
    fn tsvc_key(t: &str, a: &str, port: u16) -> Vec<u8> {
        let mut k = ip_key(t);
        k.extend(svc_key(a, port));
        k
    }

    #[test]
    fn keyed_flows_are_written_once_per_tag_and_removed_when_they_end() {
        let bpf = FakeBpf::new();
        let prog = XdpProgram::load(bpf.clone(), &plan(vec![])).unwrap();
        let mut prog = KeyedFlowWriter::new(prog.program);
        let flow = dpr_packet::FlowKey::new(
            IpProtocol::Tcp,
            ip("198.18.100.1"),
            40000,
            ip("198.18.0.2"),
            80,
        );
        let ev = |tag| KeyedFlowEvent {
            peer: ip("198.18.0.12"),
            flow,
            tag,
        };
        let mut key = ip_key("198.18.0.12");
        key.extend(ip_key("198.18.100.1"));
        key.extend(ip_key("198.18.0.2"));
        key.extend_from_slice(&40000u16.to_be_bytes());
        key.extend_from_slice(&80u16.to_be_bytes());
        prog.apply(&[ev(Some(7)), ev(Some(7))]);
        let entries = bpf.entries("dpr_kflow4");
        assert_eq!(entries.get(&key), Some(&7u32.to_be_bytes().to_vec()));
        // A new tag (a key roll) replaces it; repeats are not written.
        prog.apply(&[ev(Some(9)), ev(Some(9))]);
        assert_eq!(
            bpf.entries("dpr_kflow4").get(&key),
            Some(&9u32.to_be_bytes().to_vec())
        );
        prog.apply(&[ev(None)]);
        assert!(bpf.entries("dpr_kflow4").is_empty());
        // IPv6 flows stay on the engine's path.
        let v6 = KeyedFlowEvent {
            peer: ip("2001:db8::12"),
            flow: dpr_packet::FlowKey::new(
                IpProtocol::Tcp,
                ip("2001:db8::100"),
                1,
                ip("2001:db8::2"),
                80,
            ),
            tag: Some(1),
        };
        prog.apply(&[v6]);
        assert_eq!(
            prog.stats,
            KeyedFlowStats {
                added: 2,
                removed: 1,
                failed: 0
            }
        );
    }

    #[test]
    fn load_creates_the_maps_then_writes_services_peers_and_pairs_in_order() {
        let bpf = FakeBpf::new();
        let p = plan(vec![
            peer("198.18.0.12", &["198.18.0.2"]),
            peer("2001:db8::12", &["2001:db8::2"]),
        ]);
        let _prog = XdpProgram::load(bpf.clone(), &p).unwrap();
        let words = match &bpf.calls()[10] {
            BpfCall::ProgLoad { words, .. } => *words,
            other => panic!("{other:?}"),
        };
        let mut want: Vec<BpfCall> = [
            "dpr_svc4",
            "dpr_svc6",
            "dpr_peer4",
            "dpr_peer6",
            "dpr_tsvc4",
            "dpr_kflow4",
            "dpr_fflow4",
            "dpr_fpeer",
            "dpr_xsks",
            "dpr_counters",
        ]
        .iter()
        .map(|n| BpfCall::MapCreate((*n).into()))
        .collect();
        want.extend([
            BpfCall::ProgLoad {
                name: "dpr_router".into(),
                words,
                log: false,
            },
            // The service, after a look-up, and its address marker (port 0).
            BpfCall::Lookup {
                map: "dpr_svc4".into(),
                key: svc_key("198.18.0.1", 80),
            },
            upd("dpr_svc4", svc_key("198.18.0.1", 80)),
            upd("dpr_svc4", svc_key("198.18.0.1", 0)),
            // Peers in address order; then the IPv4 pair only.
            upd("dpr_peer4", ip_key("198.18.0.12")),
            upd("dpr_peer6", ip_key("2001:db8::12")),
            upd("dpr_tsvc4", tsvc_key("198.18.0.12", "198.18.0.2", 80)),
        ]);
        assert_eq!(bpf.calls(), want);
    }

    #[test]
    fn set_peers_removes_what_left_then_adds_what_came() {
        let bpf = FakeBpf::new();
        let mut prog = XdpProgram::load(
            bpf.clone(),
            &plan(vec![
                peer("198.18.0.12", &["198.18.0.2"]),
                peer("198.18.0.13", &["198.18.0.3"]),
            ]),
        )
        .unwrap();
        let before = bpf.calls().len();
        // .12 leaves, .14 comes, .13 gets a second service address.
        prog.set_peers(&[
            peer("198.18.0.13", &["198.18.0.3", "198.18.0.33"]),
            peer("198.18.0.14", &["198.18.0.4"]),
        ])
        .unwrap();
        assert_eq!(
            bpf.calls()[before..],
            [
                del("dpr_peer4", ip_key("198.18.0.12")),
                upd("dpr_peer4", ip_key("198.18.0.14")),
                del("dpr_tsvc4", tsvc_key("198.18.0.12", "198.18.0.2", 80)),
                upd("dpr_tsvc4", tsvc_key("198.18.0.13", "198.18.0.33", 80)),
                upd("dpr_tsvc4", tsvc_key("198.18.0.14", "198.18.0.4", 80)),
            ]
        );
        // The same peers again: nothing to do.
        let n = bpf.calls().len();
        prog.set_peers(&[
            peer("198.18.0.14", &["198.18.0.4"]),
            peer("198.18.0.13", &["198.18.0.3", "198.18.0.33"]),
        ])
        .unwrap();
        assert_eq!(bpf.calls().len(), n);
        // What the maps hold is what a fresh load with these peers writes.
        let fresh = FakeBpf::new();
        let _p = XdpProgram::load(
            fresh.clone(),
            &plan(vec![
                peer("198.18.0.13", &["198.18.0.3", "198.18.0.33"]),
                peer("198.18.0.14", &["198.18.0.4"]),
            ]),
        )
        .unwrap();
        for m in ["dpr_svc4", "dpr_peer4", "dpr_peer6", "dpr_tsvc4"] {
            assert_eq!(bpf.entries(m), fresh.entries(m), "{m}");
        }
    }

    #[test]
    fn without_decapsulation_no_pair_is_written() {
        let bpf = FakeBpf::new();
        let mut p = plan(vec![peer("198.18.0.12", &["198.18.0.2"])]);
        p.decap = false;
        let mut prog = XdpProgram::load(bpf.clone(), &p).unwrap();
        prog.set_peers(&[peer("198.18.0.13", &["198.18.0.3"])])
            .unwrap();
        assert!(bpf.entries("dpr_tsvc4").is_empty());
        assert_eq!(bpf.entries("dpr_peer4").len(), 1);
    }

    #[test]
    fn a_failed_update_names_the_entry_and_the_next_call_completes_it() {
        let bpf = FakeBpf::new();
        let mut prog = XdpProgram::load(
            bpf.clone(),
            &plan(vec![peer("198.18.0.12", &["198.18.0.2"])]),
        )
        .unwrap();
        // The update of the new peer (after the delete of the old) fails.
        let at = bpf.calls().len() + 1;
        bpf.with(|s| s.fail_at = Some((at, libc::ENOMEM)));
        let next = [peer("198.18.0.13", &["198.18.0.3"])];
        let e = prog.set_peers(&next).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("peer map, 198.18.0.13") && text.contains("BPF_MAP_UPDATE_ELEM"),
            "{text}"
        );
        prog.set_peers(&next).unwrap();
        assert_eq!(
            bpf.entries("dpr_peer4").keys().cloned().collect::<Vec<_>>(),
            vec![ip_key("198.18.0.13")]
        );
        assert_eq!(
            bpf.entries("dpr_tsvc4").keys().cloned().collect::<Vec<_>>(),
            vec![tsvc_key("198.18.0.13", "198.18.0.3", 80)]
        );
    }

    #[test]
    fn a_failed_load_is_a_load_error() {
        let bpf = FakeBpf::new();
        // Every program load is refused (the second carries the log).
        bpf.with(|s| s.refuse.push(|c| matches!(c, BpfCall::ProgLoad { .. })));
        let e = XdpProgram::load(bpf.clone(), &plan(vec![])).unwrap_err();
        assert!(
            matches!(e, XdpError::Load(dpr_xdp::Error::Verifier { .. })),
            "{e}"
        );
        let loads: Vec<bool> = bpf
            .calls()
            .iter()
            .filter_map(|c| match c {
                BpfCall::ProgLoad { log, .. } => Some(*log),
                _ => None,
            })
            .collect();
        assert_eq!(loads, vec![false, true], "retried with the verifier log");
    }

    #[test]
    fn auto_mode_falls_back_to_generic_and_dropping_the_link_detaches() {
        let bpf = FakeBpf::new();
        let prog = XdpProgram::load(bpf.clone(), &plan(vec![])).unwrap();
        // Native (XDP_FLAGS_DRV_MODE, 4) refused, generic (2) accepted.
        bpf.with(|s| {
            s.refuse
                .push(|c| matches!(c, BpfCall::LinkCreate { flags: 4, .. }))
        });
        let n = bpf.calls().len();
        let link = prog.router_program().attach(7, XdpMode::Auto).unwrap();
        assert_eq!(link.mode(), XdpMode::Generic);
        drop(link);
        assert_eq!(
            bpf.calls()[n..],
            [
                BpfCall::LinkCreate {
                    ifindex: 7,
                    flags: 4
                },
                BpfCall::LinkCreate {
                    ifindex: 7,
                    flags: 2
                },
                BpfCall::Detach { ifindex: 7 },
            ]
        );
    }
}
