//! NIC emulation for the lab: a minimal XDP program (`XDP_PASS`) on the
//! bridge-side end of every veth, as a NIC's driver would have.
//!
//! A frame an XDP program sends back out of a veth (`XDP_TX`, or a
//! redirect into a veth) is handed to the *peer* end's NAPI, which the
//! kernel only runs for XDP frames when that peer has an XDP program of its
//! own; without one, native-mode `XDP_TX` on a veth drops the frame. A real
//! NIC has no such condition: its driver transmits `XDP_TX` frames from its
//! own rings. So the lab attaches this program (native mode, over netlink)
//! to the bridge ports of its veths when the hosts run AF_XDP in native
//! mode ([`crate::lab::LabSpec::emulate_nic`]). It passes every frame, so
//! the bridge sees what it always saw; the cost is one program run per
//! frame on each bridge port, which the benchmark's kernel-forwarding
//! baseline pays too. The attachments go with the namespace.

use crate::netns::{self, Netns};
use std::os::fd::AsRawFd;

/// `XDP_FLAGS_DRV_MODE`.
const XDP_FLAGS_DRV_MODE: u32 = 4;

/// Attaches an `XDP_PASS` program in native mode to each of `ports`
/// (interfaces of namespace `ns`).
pub fn emulate_nic(ns: &Netns, ports: &[String]) -> Result<(), String> {
    let attach = || -> Result<(), String> {
        let prog = dpr_xdp::load_pass_program().map_err(|e| format!("NIC emulation: {e}"))?;
        let mut nl =
            dpr_io::netlink::Netlink::open().map_err(|e| format!("NIC emulation: netlink: {e}"))?;
        for p in ports {
            let index = dpr_xdp::ifindex(p).map_err(|e| format!("NIC emulation: {p}: {e}"))?;
            nl.set_xdp(index, prog.as_raw_fd(), XDP_FLAGS_DRV_MODE)
                .map_err(|e| format!("NIC emulation: attaching to {p}: {e}"))?;
        }
        Ok(())
    };
    netns::in_netns(ns, attach).map_err(|e| format!("NIC emulation: {}: {e}", ns.name()))?
}
