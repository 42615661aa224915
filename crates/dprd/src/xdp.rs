//! The AF_XDP backend's plan from the configuration. Starting it (program,
//! maps, sockets, attachment) and keeping its maps in step with the peers
//! is `dpr_io::xdp`'s; this is only the mapping of `[host]`, `[backend]`
//! and `[cluster]` to a [`XdpPlan`].

use crate::config::{BackendKind, Config, TunnelAuthKind, XdpModeSetting};
use dpr_io::xdp::{XdpPeer, XdpPlan};
use dpr_xdp::XdpMode;

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

    /// The peers as the XDP program sees them. Their VIPs are left out of
    /// the addresses the program decapsulates for (the plain tunnel's
    /// decapsulation is per peer and service, not per flow): behind ECMP a
    /// peer's route may be an older connection's on the same 4-tuple, and
    /// the engine must see such a packet to pass it on to the host that
    /// serves it (`dpr_router`'s strays) rather than the stack resetting it.
    pub fn xdp_peers(&self) -> Vec<XdpPeer> {
        self.cluster
            .peers
            .iter()
            .map(|p| XdpPeer {
                tunnel_addr: p.tunnel_addr,
                service_addrs: p.service_addrs.clone(),
            })
            .collect()
    }

    /// What `dpr_io::xdp::XdpBackend::start` needs.
    pub fn xdp_plan(&self) -> XdpPlan {
        XdpPlan {
            uplink: self.host.uplink.clone(),
            queues: u32::try_from(self.backend.queues).unwrap_or(u32::MAX),
            // The VIPs are this host's service addresses too.
            service_addrs: {
                let mut v = self.host.service_addrs.clone();
                v.extend(self.vip.addrs.iter().copied());
                v
            },
            service_ports: self.host.service_ports.clone(),
            peers: self.xdp_peers(),
            mode: match self.backend.xdp_mode {
                XdpModeSetting::Auto => XdpMode::Auto,
                XdpModeSetting::Native => XdpMode::Native,
                XdpModeSetting::Generic => XdpMode::Generic,
            },
            // The program's decapsulation does not check tags: with the
            // keyed tunnel every tunnelled packet goes to the engine.
            decap: self.backend.xdp_decap && self.tunnel.auth == TunnelAuthKind::None,
            xsk: Default::default(),
            fast_path: self.backend.xdp_fast_path,
            tunnel_mtu: self.tunnel.mtu,
        }
    }
}
