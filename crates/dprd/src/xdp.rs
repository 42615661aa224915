//! Starting the AF_XDP backend: load the XDP program, fill its maps, bind
//! one AF_XDP socket per queue, attach the program to the uplink.
//!
//! [`start`] either returns everything the data path needs or an error the
//! daemon logs before falling back to the TUN backend. The returned
//! [`XdpBackend`] keeps the program and its attachment: dropping it detaches
//! the program (a BPF link), also when the process dies.

use crate::config::{BackendKind, Config, XdpModeSetting};
use dpr_xdp::xsk::{XskConfig, XskSocket};
use dpr_xdp::{ProgramConfig, RouterProgram, XdpLink, XdpMode};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// The attached program and the sockets for the workers.
#[derive(Debug)]
pub struct XdpBackend {
    /// The program and its maps (peers are updated on reload).
    pub program: RouterProgram,
    /// The attachment; dropping it detaches the program.
    pub link: XdpLink,
    /// One bound socket per queue, in queue order (taken by the workers).
    pub sockets: Vec<XskSocket>,
    /// Uplink interface index.
    pub ifindex: u32,
    /// Uplink MAC.
    pub mac: [u8; 6],
    peers: BTreeSet<IpAddr>,
    /// (peer, service) pairs the program decapsulates itself.
    tunnel_services: BTreeSet<(IpAddr, SocketAddr)>,
    decap: bool,
}

impl XdpBackend {
    /// "af-xdp (native)" or "af-xdp (generic)".
    pub fn name(&self) -> String {
        match self.link.mode() {
            XdpMode::Generic => "af-xdp (generic)".into(),
            _ => "af-xdp (native)".into(),
        }
    }

    /// Makes the program take IP-in-IP from exactly the peers of `cfg`
    /// (reload), and decapsulate itself what they send to their services.
    pub fn set_peers(&mut self, cfg: &Config) -> Result<(), String> {
        self.set_tunnel_peers(&cfg.peer_tunnel_addrs())?;
        let new = decap_pairs(cfg, self.decap);
        for (p, s) in self.tunnel_services.difference(&new) {
            self.program
                .remove_tunnel_service(*p, *s)
                .map_err(|e| format!("XDP tunnel service map: {e}"))?;
        }
        for (p, s) in new.difference(&self.tunnel_services) {
            self.program
                .add_tunnel_service(*p, *s)
                .map_err(|e| format!("XDP tunnel service map: {e}"))?;
        }
        self.tunnel_services = new;
        Ok(())
    }

    fn set_tunnel_peers(&mut self, peers: &[IpAddr]) -> Result<(), String> {
        let new: BTreeSet<IpAddr> = peers.iter().copied().collect();
        for p in self.peers.difference(&new) {
            self.program
                .remove_peer(*p)
                .map_err(|e| format!("XDP peer map: {e}"))?;
        }
        for p in new.difference(&self.peers) {
            self.program
                .add_peer(*p)
                .map_err(|e| format!("XDP peer map: {e}"))?;
        }
        self.peers = new;
        Ok(())
    }
}

impl Config {
    /// The configured backend's name (before any fallback).
    pub fn backend_name(&self) -> &'static str {
        match (self.backend.kind, self.backend.xdp_mode) {
            (BackendKind::Tun, _) => "tun",
            (BackendKind::AfXdp, XdpModeSetting::Auto) => "af-xdp (auto)",
            (BackendKind::AfXdp, XdpModeSetting::Native) => "af-xdp (native)",
            (BackendKind::AfXdp, XdpModeSetting::Generic) => "af-xdp (generic)",
        }
    }

    /// The peers' tunnel addresses.
    pub fn peer_tunnel_addrs(&self) -> Vec<IpAddr> {
        self.cluster.peers.iter().map(|p| p.tunnel_addr).collect()
    }
}

/// The (peer, service) pairs to decapsulate in the program: IPv4 ones, when
/// enabled.
fn decap_pairs(cfg: &Config, enabled: bool) -> BTreeSet<(IpAddr, SocketAddr)> {
    if !enabled {
        return BTreeSet::new();
    }
    cfg.peer_tunnel_services()
        .into_iter()
        .filter(|(p, s)| p.is_ipv4() && s.is_ipv4())
        .collect()
}

/// Loads and attaches the program and binds `cfg.backend.queues` sockets
/// on the uplink (in the calling thread's namespace).
pub fn start(cfg: &Config) -> Result<XdpBackend, String> {
    let uplink = &cfg.host.uplink;
    let ifindex = dpr_xdp::ifindex(uplink).map_err(|e| format!("uplink {uplink}: {e}"))?;
    let mac = dpr_io::sys::if_hwaddr(uplink).map_err(|e| format!("uplink {uplink} MAC: {e}"))?;
    let queues = u32::try_from(cfg.backend.queues).map_err(|_| "too many queues".to_string())?;
    if let Some(n) = rx_queues(uplink) {
        if n > queues {
            tracing::warn!(
                uplink = %uplink, rx_queues = n, sockets = queues,
                "the uplink has more receive queues than backend.queues: \
                 router traffic on the others goes to the kernel unrouted"
            );
        }
    }
    let mut program = RouterProgram::load(&ProgramConfig {
        max_queues: queues.max(64),
        ..ProgramConfig::default()
    })
    .map_err(|e| format!("loading the XDP program: {e}"))?;
    for a in &cfg.host.service_addrs {
        for p in &cfg.host.service_ports {
            program
                .add_service(SocketAddr::new(*a, *p))
                .map_err(|e| format!("XDP service map: {e}"))?;
        }
    }
    let peers: BTreeSet<IpAddr> = cfg.peer_tunnel_addrs().into_iter().collect();
    for p in &peers {
        program
            .add_peer(*p)
            .map_err(|e| format!("XDP peer map: {e}"))?;
    }
    let tunnel_services = decap_pairs(cfg, cfg.backend.xdp_decap);
    for (p, s) in &tunnel_services {
        program
            .add_tunnel_service(*p, *s)
            .map_err(|e| format!("XDP tunnel service map: {e}"))?;
    }
    let xsk_cfg = XskConfig::default();
    let mut sockets = Vec::new();
    for q in 0..queues {
        let s = XskSocket::bind(ifindex, q, &xsk_cfg)
            .map_err(|e| format!("AF_XDP socket on {uplink} queue {q}: {e}"))?;
        program
            .set_socket(q, s.as_fd())
            .map_err(|e| format!("XDP socket map: {e}"))?;
        sockets.push(s);
    }
    let mode = match cfg.backend.xdp_mode {
        XdpModeSetting::Auto => XdpMode::Auto,
        XdpModeSetting::Native => XdpMode::Native,
        XdpModeSetting::Generic => XdpMode::Generic,
    };
    Ok(XdpBackend {
        link: program
            .attach(ifindex, mode)
            .map_err(|e| format!("attaching the XDP program to {uplink} ({mode:?}): {e}"))?,
        program,
        sockets,
        ifindex,
        mac,
        peers,
        tunnel_services,
        decap: cfg.backend.xdp_decap,
    })
}

/// Receive queues of `dev` (from sysfs), if readable.
fn rx_queues(dev: &str) -> Option<u32> {
    let d = std::fs::read_dir(format!("/sys/class/net/{dev}/queues")).ok()?;
    let n = d
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok().filter(|n| *n > 0)
}
