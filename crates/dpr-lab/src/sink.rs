//! The forwarding benchmark's sink on B: [`dpr_xdp::SinkProgram`] attached
//! in native mode to an interface of a lab namespace, counting and dropping
//! the benchmark's packets in the driver (no skb, no routing) and passing
//! everything else. Detached when dropped (the namespace's removal would
//! detach it too).

use dpr_xdp::{SinkConfig, SinkCounts, SinkProgram, XdpLink, XdpMode};
use std::path::PathBuf;

/// An attached sink.
#[derive(Debug)]
pub struct Sink {
    // Field order: the link goes before the program.
    _link: XdpLink,
    prog: SinkProgram,
}

impl Sink {
    /// Loads the sink for `cfg` and attaches it (native mode) to `ifname`
    /// of namespace `ns`.
    pub fn attach(ns: &str, ifname: &str, cfg: &SinkConfig) -> Result<Self, String> {
        let prog = SinkProgram::load(cfg).map_err(|e| format!("sink: {e}"))?;
        let path = PathBuf::from("/var/run/netns").join(ns);
        let link = std::thread::scope(|s| {
            s.spawn(|| -> Result<XdpLink, String> {
                dpr_xdp::tools::enter_netns(&path).map_err(|e| format!("sink: setns {ns}: {e}"))?;
                let index =
                    dpr_xdp::ifindex(ifname).map_err(|e| format!("sink: {ns}/{ifname}: {e}"))?;
                prog.attach(index, XdpMode::Native)
                    .map_err(|e| format!("sink: attaching to {ns}/{ifname}: {e}"))
            })
            .join()
            .map_err(|_| "sink: the attaching thread panicked".to_string())?
        })?;
        Ok(Self { _link: link, prog })
    }

    /// Its counters.
    pub fn counts(&self) -> Result<SinkCounts, String> {
        self.prog.counts().map_err(|e| format!("sink: {e}"))
    }
}
