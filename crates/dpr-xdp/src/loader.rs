//! Loading the router's XDP program with its maps, filling the maps, running
//! the program on test frames and attaching it to an interface.
//!
//! Every `bpf(2)` request goes through a [`BpfSys`]: [`RealBpf`] in the
//! daemon, [`crate::bpf::FakeBpf`] in tests that check which entries are
//! written and removed, and in what order.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::Error;
use crate::bpf::{
    BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,
    BPF_MAP_TYPE_XSKMAP, BpfSys, MapSpec, RealBpf,
};
use crate::program::{self, Counter, MapFds, MissingSocket};
use crate::sys;
use std::net::Ipv4Addr;

/// The verifier log size when a load fails (the kernel's limit is larger).
const VERIFIER_LOG_BYTES: usize = 4 << 20;

/// Sizes and behaviour of the program and its maps.
#[derive(Debug, Clone)]
pub struct ProgramConfig {
    /// Receive queues that may get a socket (`xsks` size).
    pub max_queues: u32,
    /// Service (address, port) entries per family (plus one address marker
    /// per distinct address).
    pub max_services: u32,
    /// Peer tunnel addresses per family.
    pub max_peers: u32,
    /// (peer, service address, port) entries of the decapsulation fast path.
    pub max_tunnel_services: u32,
    /// Flows of the keyed tunnel's fast path (an LRU map: the least
    /// recently used entry makes room).
    pub max_keyed_flows: u32,
    /// What router traffic does on a queue without a socket.
    pub missing_socket: MissingSocket,
    /// The send side's fast path: `Some(tunnel MTU)` builds it into the
    /// program (outer packets up to that size); its maps exist either way.
    pub fast_path_mtu: Option<u16>,
    /// Flows of the send side's fast path (an LRU map).
    pub max_fast_path_flows: u32,
    /// The interface's MAC: frames addressed to any other are passed to
    /// the kernel before any other test (`None`: every destination is
    /// taken, as for frames built by hand in a test run).
    pub own_mac: Option<[u8; 6]>,
}

impl Default for ProgramConfig {
    fn default() -> Self {
        Self {
            max_queues: 64,
            max_services: 1024,
            max_peers: 1024,
            max_tunnel_services: 16_384,
            max_keyed_flows: 65_536,
            missing_socket: MissingSocket::Pass,
            fast_path_mtu: None,
            max_fast_path_flows: 65_536,
            own_mac: None,
        }
    }
}

/// How to attach the program (`XDP_FLAGS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode, `XDP_FLAGS_DRV_MODE`; fails where the driver has none.
    Native,
    /// Generic (skb) mode, `XDP_FLAGS_SKB_MODE`: every driver, slower.
    Generic,
    /// Native if the driver supports it, else generic.
    Auto,
}

const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;

/// An attached program. Dropping it (or the process exiting) detaches it:
/// the attachment is a BPF link that lives as long as its descriptor.
#[derive(Debug)]
pub struct XdpLink<B: BpfSys = RealBpf> {
    _link: B::Link,
    ifindex: u32,
    mode: XdpMode,
}

impl<B: BpfSys> XdpLink<B> {
    /// The interface it is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
    /// The mode that was used ([`XdpMode::Native`] or [`XdpMode::Generic`]).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }
}

/// Counter values summed over CPUs, indexed like [`Counter::ALL`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; Counter::COUNT as usize]);

impl Counters {
    /// One counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }
}

/// The loaded program and its maps, over the `bpf(2)` of `B`.
#[derive(Debug)]
pub struct RouterProgram<B: BpfSys = RealBpf> {
    bpf: B,
    prog: B::Prog,
    services_v4: B::Map,
    services_v6: B::Map,
    peers_v4: B::Map,
    peers_v6: B::Map,
    tunnel_services_v4: B::Map,
    keyed_flows_v4: B::Map,
    fwd_flows_v4: B::Map,
    fwd_peers: B::Map,
    max_peers: u32,
    xsks: B::Map,
    counters: B::Map,
    /// Services per address, for the (address, 0) fragment marker.
    per_address: HashMap<IpAddr, u32>,
    ncpus: usize,
}

pub(crate) fn syscall(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Syscall { op, source }
}

fn service_key(addr: SocketAddr) -> Vec<u8> {
    let mut k = match addr.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    k.extend_from_slice(&addr.port().to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// A writer of the program's `keyed_flows_v4` map that a worker thread owns
/// (its own descriptor of the map): the engine that accepts a keyed flow
/// writes it at once, so that the connection's next packets already take
/// the fast path.
#[derive(Debug)]
pub struct KeyedFlowMap {
    map: crate::sys::MapFd,
}

impl KeyedFlowMap {
    /// See [`RouterProgram::add_keyed_flow`].
    pub fn add(&self, tunnel_addr: IpAddr, flow: &KeyedFlow, tag: u32) -> Result<(), Error> {
        let key = keyed_flow_key(tunnel_addr, flow)?;
        crate::sys::map_update(&self.map, &key, &tag.to_be_bytes(), 0)
            .map_err(syscall("BPF_MAP_UPDATE_ELEM"))
    }

    /// See [`RouterProgram::remove_keyed_flow`].
    pub fn remove(&self, tunnel_addr: IpAddr, flow: &KeyedFlow) -> Result<bool, Error> {
        let key = keyed_flow_key(tunnel_addr, flow)?;
        crate::sys::map_delete(&self.map, &key).map_err(syscall("BPF_MAP_DELETE_ELEM"))
    }
}

/// How the fast path encapsulates a flow: as the engine does for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FastPathEncap {
    /// Plain IP-in-IP (`[tunnel] auth = "none"`).
    IpIp,
    /// The keyed tunnel's GRE with the flow's tag and the key id that made it.
    Gre {
        /// The GRE key field.
        tag: u32,
        /// The low half of the GRE sequence field.
        key_id: u16,
    },
}

/// A redirected flow's entry in `fwd_flows_v4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FastPathRoute {
    /// Its peer's index in `fwd_peers`.
    pub peer: u32,
    /// The peer entry's generation when the flow was written: the program
    /// forwards only while they are equal.
    pub generation: u32,
    /// The outer header.
    pub encap: FastPathEncap,
}

/// A peer's entry in `fwd_peers`: everything of the outer headers that
/// does not depend on the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FastPathPeer {
    /// The next hop's MAC (destination of the frame).
    pub dst_mac: [u8; 6],
    /// This interface's MAC.
    pub src_mac: [u8; 6],
    /// The outer TTL.
    pub ttl: u8,
    /// This host's tunnel address (outer source).
    pub src: Ipv4Addr,
    /// The peer's tunnel address (outer destination).
    pub dst: Ipv4Addr,
    /// The current generation (0: none; its flows go to the engine).
    pub generation: u32,
}

fn fast_flow_key(flow: &KeyedFlow) -> Result<[u8; 12], Error> {
    let (IpAddr::V4(c), IpAddr::V4(s)) = (flow.client.ip(), flow.service.ip()) else {
        return Err(Error::Parse("fast path flow: IPv4 only"));
    };
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&c.octets());
    k[4..8].copy_from_slice(&s.octets());
    k[8..10].copy_from_slice(&flow.client.port().to_be_bytes());
    k[10..12].copy_from_slice(&flow.service.port().to_be_bytes());
    Ok(k)
}

/// `fwd_flows_v4`'s value: peer index, generation (native order), GRE key
/// and sequence words (wire order), outer protocol (native), pad, and the
/// program's packet count (native `u64`, starts at 0).
fn fast_flow_value(r: &FastPathRoute) -> [u8; 32] {
    let mut v = [0u8; 32];
    v[..4].copy_from_slice(&r.peer.to_ne_bytes());
    v[4..8].copy_from_slice(&r.generation.to_ne_bytes());
    let proto: u32 = match r.encap {
        FastPathEncap::IpIp => 4,
        FastPathEncap::Gre { tag, key_id } => {
            v[8..12].copy_from_slice(&tag.to_be_bytes());
            v[14..16].copy_from_slice(&key_id.to_be_bytes());
            47
        }
    };
    v[16..20].copy_from_slice(&proto.to_ne_bytes());
    v
}

/// `fwd_peers`' value: the Ethernet header (14), TTL, pad, outer source
/// and destination (wire order), generation (native), pad.
fn fast_peer_value(p: &FastPathPeer) -> [u8; 32] {
    let mut v = [0u8; 32];
    v[..6].copy_from_slice(&p.dst_mac);
    v[6..12].copy_from_slice(&p.src_mac);
    v[12..14].copy_from_slice(&[0x08, 0x00]);
    v[14] = p.ttl;
    v[16..20].copy_from_slice(&p.src.octets());
    v[20..24].copy_from_slice(&p.dst.octets());
    v[24..28].copy_from_slice(&p.generation.to_ne_bytes());
    v
}

/// A worker's (or the control thread's) own descriptors of the send
/// side's fast-path maps (`fwd_flows_v4`, `fwd_peers`).
#[derive(Debug)]
pub struct FastPathMaps {
    flows: crate::sys::MapFd,
    peers: crate::sys::MapFd,
    max_peers: u32,
}

impl FastPathMaps {
    /// See [`RouterProgram::add_fast_path_flow`].
    pub fn add_flow(&self, flow: &KeyedFlow, route: &FastPathRoute) -> Result<(), Error> {
        crate::sys::map_update(
            &self.flows,
            &fast_flow_key(flow)?,
            &fast_flow_value(route),
            0,
        )
        .map_err(syscall("BPF_MAP_UPDATE_ELEM"))
    }

    /// See [`RouterProgram::remove_fast_path_flow`].
    pub fn remove_flow(&self, flow: &KeyedFlow) -> Result<bool, Error> {
        crate::sys::map_delete(&self.flows, &fast_flow_key(flow)?)
            .map_err(syscall("BPF_MAP_DELETE_ELEM"))
    }

    /// See [`RouterProgram::fast_path_flow_packets`].
    pub fn flow_packets(&self, flow: &KeyedFlow) -> Result<Option<u64>, Error> {
        let mut v = [0u8; 32];
        let found = crate::sys::map_lookup(&self.flows, &fast_flow_key(flow)?, &mut v)
            .map_err(syscall("BPF_MAP_LOOKUP_ELEM"))?;
        Ok(found.then(|| packets_of(&v)))
    }

    /// See [`RouterProgram::set_fast_path_peer`].
    pub fn set_peer(&self, index: u32, peer: &FastPathPeer) -> Result<(), Error> {
        if index >= self.max_peers {
            return Err(Error::Parse("fast path peer index out of range"));
        }
        crate::sys::map_update(&self.peers, &index.to_ne_bytes(), &fast_peer_value(peer), 0)
            .map_err(syscall("BPF_MAP_UPDATE_ELEM"))
    }

    /// Peer entries the array holds (indices `0..max_peers`).
    pub fn max_peers(&self) -> u32 {
        self.max_peers
    }
}

fn packets_of(v: &[u8]) -> u64 {
    v.get(24..32)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

impl RouterProgram<RealBpf> {
    /// [`FastPathMaps`] for a worker thread or the control thread.
    pub fn fast_path_maps(&self) -> Result<FastPathMaps, Error> {
        let dup = |m: &crate::sys::MapFd| m.try_clone().map_err(syscall("dup of a fast path map"));
        Ok(FastPathMaps {
            flows: dup(&self.fwd_flows_v4)?,
            peers: dup(&self.fwd_peers)?,
            max_peers: self.max_peers,
        })
    }

    /// A [`KeyedFlowMap`] for a worker thread.
    pub fn keyed_flow_map(&self) -> Result<KeyedFlowMap, Error> {
        Ok(KeyedFlowMap {
            map: self
                .keyed_flows_v4
                .try_clone()
                .map_err(syscall("dup of the keyed flows map"))?,
        })
    }
}

/// A TCP connection of the keyed tunnel's fast path, client to service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyedFlow {
    /// The client's address and port.
    pub client: SocketAddr,
    /// The service address and port.
    pub service: SocketAddr,
}

fn keyed_flow_key(tunnel_addr: IpAddr, flow: &KeyedFlow) -> Result<Vec<u8>, Error> {
    let (IpAddr::V4(t), IpAddr::V4(c), IpAddr::V4(s)) =
        (tunnel_addr, flow.client.ip(), flow.service.ip())
    else {
        return Err(Error::Parse("keyed flow: IPv4 only"));
    };
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&t.octets());
    k.extend_from_slice(&c.octets());
    k.extend_from_slice(&s.octets());
    k.extend_from_slice(&flow.client.port().to_be_bytes());
    k.extend_from_slice(&flow.service.port().to_be_bytes());
    Ok(k)
}

fn tunnel_service_key(tunnel_addr: IpAddr, service: SocketAddr) -> Result<Vec<u8>, Error> {
    let (IpAddr::V4(t), IpAddr::V4(s)) = (tunnel_addr, service.ip()) else {
        return Err(Error::Parse("tunnel service: IPv4 only"));
    };
    if service.port() == 0 {
        return Err(Error::Parse("service port 0"));
    }
    let mut k = t.octets().to_vec();
    k.extend_from_slice(&s.octets());
    k.extend_from_slice(&service.port().to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    Ok(k)
}

fn ip_key(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

const PRESENT: [u8; 4] = 1u32.to_ne_bytes();

/// Loads the smallest XDP program, `return XDP_PASS`: attached in native
/// mode to the far end of a veth, it makes that end receive XDP frames the
/// way a NIC's driver does (`XDP_TX` and redirects towards a veth need an
/// XDP program on its peer). The lab's NIC emulation; needs root.
pub fn load_pass_program() -> Result<OwnedFd, Error> {
    let mut a = crate::asm::Asm::new();
    a.mov_imm(crate::asm::Reg::R0, program::XDP_PASS as i32);
    a.exit();
    load_xdp(&crate::asm::encode(&a.finish()?), "dpr_nic_pass")
}

/// Loads an XDP program with the real `bpf(2)` (see [`load_xdp_with`]).
pub(crate) fn load_xdp(words: &[u64], name: &str) -> Result<OwnedFd, Error> {
    load_xdp_with(&RealBpf, words, name)
}

/// Loads an XDP program; on refusal, loads it again with the verifier log
/// and returns that log in the error.
pub(crate) fn load_xdp_with<B: BpfSys>(
    bpf: &B,
    words: &[u64],
    name: &str,
) -> Result<B::Prog, Error> {
    // Our program uses no GPL-only helper (map lookup, redirect_map).
    const LICENSE: &str = "MIT OR Apache-2.0";
    match bpf.prog_load_xdp(words, LICENSE, name, &mut []) {
        Ok(p) => Ok(p),
        Err(first) => {
            let mut log = vec![0u8; VERIFIER_LOG_BYTES];
            let again = bpf.prog_load_xdp(words, LICENSE, name, &mut log);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]).into_owned();
            Err(Error::Verifier {
                source: again.err().unwrap_or(first),
                log,
            })
        }
    }
}

impl RouterProgram {
    /// Creates the maps and loads the program (needs `CAP_BPF` + `CAP_NET_ADMIN`,
    /// in practice root). A verifier rejection returns [`Error::Verifier`]
    /// with the verifier's log.
    pub fn load(cfg: &ProgramConfig) -> Result<Self, Error> {
        Self::load_with(RealBpf, cfg)
    }

    /// The program's descriptor (for inspection; it stays owned here).
    pub fn prog_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` and returns
    /// its action (`XDP_PASS`, `XDP_REDIRECT`, …). The frame must be at least
    /// 14 bytes (the kernel refuses shorter input with `EINVAL`).
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, Error> {
        let out = sys::prog_test_run(self.prog.as_fd(), frame, 1)
            .map_err(syscall("BPF_PROG_TEST_RUN"))?;
        Ok(out.retval)
    }

    /// Runs the program once on `frame`; its verdict and the frame as the
    /// program left it.
    pub fn test_run_output(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), Error> {
        let out = sys::prog_test_run(self.prog.as_fd(), frame, 1)
            .map_err(syscall("BPF_PROG_TEST_RUN"))?;
        Ok((out.retval, out.data))
    }

    /// Runs the program `repeat` times on `frame`; the kernel's average
    /// nanoseconds per run.
    pub fn test_run_timed(&self, frame: &[u8], repeat: u32) -> Result<(u32, u32), Error> {
        let out = sys::prog_test_run(self.prog.as_fd(), frame, repeat)
            .map_err(syscall("BPF_PROG_TEST_RUN"))?;
        Ok((out.retval, out.duration_ns))
    }
}

impl<B: BpfSys> RouterProgram<B> {
    /// [`RouterProgram::load`] over `bpf`: creates the seven maps, then
    /// loads the program that refers to them.
    pub fn load_with(bpf: B, cfg: &ProgramConfig) -> Result<Self, Error> {
        let ncpus = bpf
            .possible_cpus()
            .map_err(syscall("read /sys/devices/system/cpu/possible"))?;
        let create = |map_type, key_size, value_size, max_entries, lookup_size, name| {
            bpf.map_create(&MapSpec {
                map_type,
                key_size,
                value_size,
                max_entries,
                lookup_size,
                name,
            })
            .map_err(syscall("BPF_MAP_CREATE"))
        };
        let hash = |key: u32, n: u32, name| create(BPF_MAP_TYPE_HASH, key, 4, n, 4, name);
        let services_v4 = hash(program::SERVICE_V4_KEY, cfg.max_services * 2, "dpr_svc4")?;
        let services_v6 = hash(program::SERVICE_V6_KEY, cfg.max_services * 2, "dpr_svc6")?;
        let peers_v4 = hash(program::PEER_V4_KEY, cfg.max_peers, "dpr_peer4")?;
        let peers_v6 = hash(program::PEER_V6_KEY, cfg.max_peers, "dpr_peer6")?;
        let tunnel_services_v4 = hash(
            program::TUNNEL_SERVICE_V4_KEY,
            cfg.max_tunnel_services,
            "dpr_tsvc4",
        )?;
        let keyed_flows_v4 = create(
            BPF_MAP_TYPE_LRU_HASH,
            program::KEYED_FLOW_V4_KEY,
            4,
            cfg.max_keyed_flows,
            4,
            "dpr_kflow4",
        )?;
        let fwd_flows_v4 = create(
            BPF_MAP_TYPE_LRU_HASH,
            program::FWD_FLOW_V4_KEY,
            program::FWD_FLOW_VALUE,
            cfg.max_fast_path_flows,
            program::FWD_FLOW_VALUE as usize,
            "dpr_fflow4",
        )?;
        let fwd_peers = create(
            BPF_MAP_TYPE_ARRAY,
            4,
            program::FWD_PEER_VALUE,
            cfg.max_peers,
            program::FWD_PEER_VALUE as usize,
            "dpr_fpeer",
        )?;
        let xsks = create(BPF_MAP_TYPE_XSKMAP, 4, 4, cfg.max_queues, 4, "dpr_xsks")?;
        let counters = create(
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            8,
            Counter::COUNT,
            8 * ncpus,
            "dpr_counters",
        )?;
        let fds = MapFds {
            services_v4: bpf.map_fd(&services_v4),
            services_v6: bpf.map_fd(&services_v6),
            peers_v4: bpf.map_fd(&peers_v4),
            peers_v6: bpf.map_fd(&peers_v6),
            tunnel_services_v4: bpf.map_fd(&tunnel_services_v4),
            keyed_flows_v4: bpf.map_fd(&keyed_flows_v4),
            fwd_flows_v4: bpf.map_fd(&fwd_flows_v4),
            fwd_peers: bpf.map_fd(&fwd_peers),
            xsks: bpf.map_fd(&xsks),
            counters: bpf.map_fd(&counters),
        };
        let insns =
            program::router_program(&fds, cfg.missing_socket, cfg.fast_path_mtu, cfg.own_mac)?;
        let prog = load_xdp_with(&bpf, &crate::asm::encode(&insns), "dpr_router")?;
        Ok(Self {
            bpf,
            prog,
            services_v4,
            services_v6,
            peers_v4,
            peers_v6,
            tunnel_services_v4,
            keyed_flows_v4,
            fwd_flows_v4,
            fwd_peers,
            max_peers: cfg.max_peers,
            xsks,
            counters,
            per_address: HashMap::new(),
            ncpus,
        })
    }

    /// The `bpf(2)` this program goes through.
    pub fn bpf(&self) -> &B {
        &self.bpf
    }

    fn services(&self, ip: IpAddr) -> &B::Map {
        if ip.is_ipv4() {
            &self.services_v4
        } else {
            &self.services_v6
        }
    }

    /// Routes TCP to `service` (address and port) to the router.
    pub fn add_service(&mut self, service: SocketAddr) -> Result<(), Error> {
        if service.port() == 0 {
            return Err(Error::Parse("service port 0"));
        }
        let map = self.services(service.ip());
        let key = service_key(service);
        let mut old = [0u8; 4];
        if self
            .bpf
            .map_lookup(map, &key, &mut old)
            .map_err(syscall("BPF_MAP_LOOKUP_ELEM"))?
        {
            return Ok(());
        }
        self.bpf
            .map_update(map, &key, &PRESENT, 0)
            .map_err(syscall("BPF_MAP_UPDATE_ELEM"))?;
        let n = self.per_address.entry(service.ip()).or_insert(0);
        *n += 1;
        if *n == 1 {
            let marker = service_key(SocketAddr::new(service.ip(), 0));
            self.bpf
                .map_update(self.services(service.ip()), &marker, &PRESENT, 0)
                .map_err(syscall("BPF_MAP_UPDATE_ELEM"))?;
        }
        Ok(())
    }

    /// Stops routing `service` to the router. `Ok(false)` if it was not there.
    pub fn remove_service(&mut self, service: SocketAddr) -> Result<bool, Error> {
        if service.port() == 0 {
            return Ok(false);
        }
        let map = self.services(service.ip());
        if !self
            .bpf
            .map_delete(map, &service_key(service))
            .map_err(syscall("BPF_MAP_DELETE_ELEM"))?
        {
            return Ok(false);
        }
        if let Some(n) = self.per_address.get_mut(&service.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&service.ip());
                let marker = service_key(SocketAddr::new(service.ip(), 0));
                self.bpf
                    .map_delete(self.services(service.ip()), &marker)
                    .map_err(syscall("BPF_MAP_DELETE_ELEM"))?;
            }
        }
        Ok(true)
    }

    fn peers(&self, ip: IpAddr) -> &B::Map {
        if ip.is_ipv4() {
            &self.peers_v4
        } else {
            &self.peers_v6
        }
    }

    /// Routes IP-in-IP (protocol 4 and 41) from `tunnel_addr` to the router.
    pub fn add_peer(&mut self, tunnel_addr: IpAddr) -> Result<(), Error> {
        self.bpf
            .map_update(self.peers(tunnel_addr), &ip_key(tunnel_addr), &PRESENT, 0)
            .map_err(syscall("BPF_MAP_UPDATE_ELEM"))
    }

    /// Forgets a peer. `Ok(false)` if it was not there.
    pub fn remove_peer(&mut self, tunnel_addr: IpAddr) -> Result<bool, Error> {
        self.bpf
            .map_delete(self.peers(tunnel_addr), &ip_key(tunnel_addr))
            .map_err(syscall("BPF_MAP_DELETE_ELEM"))
    }

    /// Lets the program decapsulate itself the IPv4-in-IPv4 packets that
    /// peer `tunnel_addr` sends to `service` (one of that peer's service
    /// addresses and ports), and pass them to the kernel (see the
    /// program's documentation; SYN, FIN, RST and anything unusual still go
    /// to the router). IPv4 only: other pairs are refused with
    /// [`Error::Parse`].
    pub fn add_tunnel_service(
        &mut self,
        tunnel_addr: IpAddr,
        service: SocketAddr,
    ) -> Result<(), Error> {
        let key = tunnel_service_key(tunnel_addr, service)?;
        self.bpf
            .map_update(&self.tunnel_services_v4, &key, &PRESENT, 0)
            .map_err(syscall("BPF_MAP_UPDATE_ELEM"))
    }

    /// Undoes [`Self::add_tunnel_service`]. `Ok(false)` if it was not there.
    pub fn remove_tunnel_service(
        &mut self,
        tunnel_addr: IpAddr,
        service: SocketAddr,
    ) -> Result<bool, Error> {
        let key = tunnel_service_key(tunnel_addr, service)?;
        self.bpf
            .map_delete(&self.tunnel_services_v4, &key)
            .map_err(syscall("BPF_MAP_DELETE_ELEM"))
    }

    /// Lets the program decapsulate itself the keyed tunnel's packets of
    /// `flow` (client to service) from peer `tunnel_addr` that carry `tag`
    /// (a connection the engine accepted; SYN, FIN, RST, another tag and
    /// anything unusual still go to the router). IPv4 only: other flows are
    /// refused with [`Error::Parse`]. Replaces the entry's tag if present.
    pub fn add_keyed_flow(
        &mut self,
        tunnel_addr: IpAddr,
        flow: &KeyedFlow,
        tag: u32,
    ) -> Result<(), Error> {
        let key = keyed_flow_key(tunnel_addr, flow)?;
        self.bpf
            .map_update(&self.keyed_flows_v4, &key, &tag.to_be_bytes(), 0)
            .map_err(syscall("BPF_MAP_UPDATE_ELEM"))
    }

    /// Undoes [`Self::add_keyed_flow`]. `Ok(false)` if it was not there
    /// (never added, or pushed out of the LRU map).
    pub fn remove_keyed_flow(
        &mut self,
        tunnel_addr: IpAddr,
        flow: &KeyedFlow,
    ) -> Result<bool, Error> {
        let key = keyed_flow_key(tunnel_addr, flow)?;
        self.bpf
            .map_delete(&self.keyed_flows_v4, &key)
            .map_err(syscall("BPF_MAP_DELETE_ELEM"))
    }

    /// Lets the program forward `flow` (client to service, IPv4 TCP) itself
    /// to its peer (see the program's documentation): its packets that are
    /// not SYN, FIN or RST are encapsulated as `route` says while the peer
    /// entry's generation is `route.generation`. Replaces the entry (its
    /// packet count restarts at 0).
    pub fn add_fast_path_flow(
        &mut self,
        flow: &KeyedFlow,
        route: &FastPathRoute,
    ) -> Result<(), Error> {
        self.bpf
            .map_update(
                &self.fwd_flows_v4,
                &fast_flow_key(flow)?,
                &fast_flow_value(route),
                0,
            )
            .map_err(syscall("BPF_MAP_UPDATE_ELEM"))
    }

    /// Undoes [`Self::add_fast_path_flow`]. `Ok(false)` if it was not there.
    pub fn remove_fast_path_flow(&mut self, flow: &KeyedFlow) -> Result<bool, Error> {
        self.bpf
            .map_delete(&self.fwd_flows_v4, &fast_flow_key(flow)?)
            .map_err(syscall("BPF_MAP_DELETE_ELEM"))
    }

    /// The packets the program forwarded of `flow` since it was written;
    /// `None` when it has no entry (never written, removed, or pushed out
    /// of the LRU map).
    pub fn fast_path_flow_packets(&self, flow: &KeyedFlow) -> Result<Option<u64>, Error> {
        let mut v = [0u8; 32];
        let found = self
            .bpf
            .map_lookup(&self.fwd_flows_v4, &fast_flow_key(flow)?, &mut v)
            .map_err(syscall("BPF_MAP_LOOKUP_ELEM"))?;
        Ok(found.then(|| packets_of(&v)))
    }

    /// Writes peer entry `index` of the fast path.
    pub fn set_fast_path_peer(&mut self, index: u32, peer: &FastPathPeer) -> Result<(), Error> {
        if index >= self.max_peers {
            return Err(Error::Parse("fast path peer index out of range"));
        }
        self.bpf
            .map_update(
                &self.fwd_peers,
                &index.to_ne_bytes(),
                &fast_peer_value(peer),
                0,
            )
            .map_err(syscall("BPF_MAP_UPDATE_ELEM"))
    }

    /// Puts an AF_XDP socket in the slot of receive queue `queue`.
    pub fn set_socket(&mut self, queue: u32, xsk: BorrowedFd<'_>) -> Result<(), Error> {
        let fd = xsk.as_raw_fd() as u32;
        self.bpf
            .map_update(&self.xsks, &queue.to_ne_bytes(), &fd.to_ne_bytes(), 0)
            .map_err(syscall("BPF_MAP_UPDATE_ELEM"))
    }

    /// Empties the slot of `queue`. `Ok(false)` if it was empty.
    pub fn clear_socket(&mut self, queue: u32) -> Result<bool, Error> {
        self.bpf
            .map_delete(&self.xsks, &queue.to_ne_bytes())
            .map_err(syscall("BPF_MAP_DELETE_ELEM"))
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        let mut out = Counters::default();
        let mut buf = vec![0u8; 8 * self.ncpus];
        for c in Counter::ALL {
            let key = (c as u32).to_ne_bytes();
            if self
                .bpf
                .map_lookup(&self.counters, &key, &mut buf)
                .map_err(syscall("BPF_MAP_LOOKUP_ELEM"))?
            {
                out.0[c as usize] = buf
                    .chunks_exact(8)
                    .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
                    .sum();
            }
        }
        Ok(out)
    }

    /// Attaches the program to `ifindex` in `mode`. Detached when the
    /// returned link is dropped.
    pub fn attach(&self, ifindex: u32, mode: XdpMode) -> Result<XdpLink<B>, Error> {
        attach_xdp(&self.bpf, &self.prog, ifindex, mode)
    }
}

/// Attaches `prog` to `ifindex` in `mode` ([`XdpMode::Auto`]: native,
/// else generic). Detached when the returned link is dropped.
pub(crate) fn attach_xdp<B: BpfSys>(
    bpf: &B,
    prog: &B::Prog,
    ifindex: u32,
    mode: XdpMode,
) -> Result<XdpLink<B>, Error> {
    let try_mode = |m: XdpMode| {
        let flags = if m == XdpMode::Native {
            XDP_FLAGS_DRV_MODE
        } else {
            XDP_FLAGS_SKB_MODE
        };
        bpf.link_create_xdp(prog, ifindex, flags)
            .map(|link| XdpLink {
                _link: link,
                ifindex,
                mode: m,
            })
            .map_err(syscall("BPF_LINK_CREATE"))
    };
    match mode {
        XdpMode::Auto => try_mode(XdpMode::Native).or_else(|_| try_mode(XdpMode::Generic)),
        m => try_mode(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program that reads the packet without a bounds check is refused,
    /// and the error carries the verifier's reason (root only).
    #[test]
    fn verifier_log_is_reported() {
        let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        });
        if !root {
            eprintln!("SKIPPED: needs root (verifier_log_is_reported)");
            return;
        }
        use crate::asm::{Asm, Reg, Size};
        let mut a = Asm::new();
        a.load(Size::W, Reg::R2, Reg::R1, 0); // data
        a.load(Size::B, Reg::R0, Reg::R2, 0); // unchecked packet read
        a.exit();
        let words = crate::asm::encode(&a.finish().unwrap());
        match load_xdp(&words, "dpr_bad") {
            Err(Error::Verifier { log, .. }) => {
                assert!(log.contains("invalid access to packet"), "{log}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_are_network_order() {
        let k = service_key("198.18.7.1:80".parse().unwrap());
        assert_eq!(k, [198, 18, 7, 1, 0, 80, 0, 0]);
        let k = service_key("[2001:db8::1]:443".parse().unwrap());
        assert_eq!(k.len(), program::SERVICE_V6_KEY as usize);
        assert_eq!(k[16..], [1, 187, 0, 0]);
    }
}
