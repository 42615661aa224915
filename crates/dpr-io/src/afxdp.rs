//! The AF_XDP backend: one [`XdpQueue`] per receive queue of the uplink.
//!
//! The XDP program (`dpr-xdp`) redirects the router's traffic (TCP to a
//! service address and port, IP-in-IP from a known peer) into the queue's
//! AF_XDP socket; everything else goes to the kernel untouched. A worker
//! calls [`XdpQueue::wait`], then [`XdpQueue::run_batch_lent`] (or
//! [`XdpQueue::run_batch`], one frame at a time) with a handler that runs
//! the engine on the IP packets of the frames (the Ethernet header
//! is skipped; the frame's 256 bytes of headroom leave room for an outer
//! header and a new Ethernet header) and says where it goes:
//!
//! ```text
//!  uplink queue q ─► XDP program ─► XSK rx ─► handler(frame, IP range) ─┬ Egress::Peer, next hop resolved:
//!                                                                       │   Ethernet header written in front,
//!                                                                       │   same frame out of the XSK tx ring (no copy)
//!                                                                       ├ Egress::Peer, next hop unresolved:
//!                                                                       │   IP-in-IP packet written into the TUN; the
//!                                                                       │   kernel routes it (and resolves the neighbour)
//!                                                                       ├ Egress::Kernel: IP packet written into the TUN:
//!                                                                       │   the local stack receives it (iif TUN)
//!                                                                       └ Egress::Drop
//! ```
//!
//! Local delivery goes through the TUN device, as on the TUN path: a
//! locally served connection's first SYN is written into the TUN by the
//! same worker that decided it, so it is never lost, and the local stack
//! answers the client directly. The TUN is write-only here (no diversion
//! rules point into it).
//!
//! The send fast path ([`crate::xdp::FastPathWriter`], optional): every
//! frame that leaves for a peer from the received frame is noted; after
//! the batch the flows that enter it are written into the XDP program's
//! map (their later packets are then forwarded by the program, `XDP_TX`,
//! and never reach this queue), those that ended (FIN, RST) removed, and
//! the program's per-flow packet counts keep the engine's entries alive
//! ([`Backend::fast_path`]).
//!
//! Next hops' MACs come from the kernel's neighbour table, cached per
//! queue ([`NeighCache`]): looked up after the batch (outside the engine
//! lock), refreshed every second, and solicited while unresolved.

use crate::backend::{Backend, Lent, RxTx};
use crate::neigh::{self, Neighbour};
use crate::sys::TunSys;
use crate::worker::WorkerStats;
use crate::xdp::{FastPathPeers, FastPathStats, FastPathWriter, KeyedFlowStats, KeyedFlowWriter};
use dpr_xdp::xsk::{RxAction, XskSocket};
use dpr_xdp::{FastPathMaps, KeyedFlowMap};
use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

pub use crate::backend::Egress;

/// Per-queue counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpQueueCounters {
    /// Frames received from the socket.
    pub rx: u64,
    /// Frames forwarded in place out of the uplink.
    pub tx_fast: u64,
    /// Packets written into the TUN (local delivery, replies).
    pub to_kernel: u64,
    /// Forwards sent through the kernel because the next hop was unresolved.
    pub unresolved: u64,
    /// TUN writes the kernel refused.
    pub kernel_failed: u64,
    /// Frames the handler dropped.
    pub dropped: u64,
    /// Frames that were not Ethernet + IPv4/IPv6 (dropped).
    pub not_ip: u64,
}

/// Cached neighbour entries of one queue.
///
/// A short list searched linearly: a host has a handful of peers, and the
/// profile showed a `HashMap` (SipHash per packet) and `Instant`
/// arithmetic as half of the AF_XDP worker's user time. Each entry keeps the
/// instant its next lookup is due, so the per-packet test is one compare.
#[derive(Debug, Default)]
pub struct NeighCache {
    entries: Vec<(IpAddr, CacheEntry)>,
    pending: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy)]
struct CacheEntry {
    mac: Option<[u8; 6]>,
    due: Instant,
    queued: bool,
}

impl NeighCache {
    /// How long a resolved entry is used before it is looked up again (it
    /// stays in use meanwhile).
    pub const REFRESH: Duration = Duration::from_secs(1);
    /// How often an unresolved address is looked up (and solicited).
    pub const RETRY: Duration = Duration::from_millis(20);

    /// The MAC of `addr` if known; queues a lookup when there is none or
    /// it is due for a refresh.
    pub fn get(&mut self, addr: IpAddr, now: Instant) -> Option<[u8; 6]> {
        match self.entries.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, e)) => {
                if !e.queued && now >= e.due {
                    e.queued = true;
                    self.pending.push(addr);
                }
                e.mac
            }
            None => {
                self.entries.push((
                    addr,
                    CacheEntry {
                        mac: None,
                        due: now,
                        queued: true,
                    },
                ));
                self.pending.push(addr);
                None
            }
        }
    }

    /// Addresses to look up now (emptied).
    pub fn take_pending(&mut self) -> Vec<IpAddr> {
        std::mem::take(&mut self.pending)
    }

    /// Records a lookup's result.
    pub fn update(&mut self, addr: IpAddr, mac: Option<[u8; 6]>, now: Instant) {
        let e = CacheEntry {
            mac,
            due: now
                + if mac.is_some() {
                    Self::REFRESH
                } else {
                    Self::RETRY
                },
            queued: false,
        };
        match self.entries.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, old)) => *old = e,
            None => self.entries.push((addr, e)),
        }
    }
}

/// One receive queue of the uplink: its AF_XDP socket, a TUN queue towards
/// the local stack, and a neighbour cache.
#[derive(Debug)]
pub struct XdpQueue<S: TunSys> {
    xsk: XskSocket,
    kernel: S,
    ifindex: u32,
    src_mac: [u8; 6],
    neigh: NeighCache,
    counters: XdpQueueCounters,
    /// What [`Backend::maintain`] last added to the worker's stats.
    reported: XdpQueueCounters,
    reported_xsk: dpr_xdp::xsk::XskCounters,
    reported_kernel: dpr_xdp::xsk::KernelStats,
    kernel_stats_due: Instant,
    /// The keyed tunnel's fast path: this queue's writer of the program's
    /// accepted-flows map, and what it last added to the worker's stats.
    keyed: Option<KeyedFlowWriter<KeyedFlowMap>>,
    reported_keyed: KeyedFlowStats,
    /// The send fast path: this queue's writer of the program's forwarded
    /// flows, and what it last added to the worker's stats.
    fast: Option<FastPathWriter<FastPathMaps>>,
    reported_fast: FastPathStats,
    /// [`XdpQueue::run_batch_lent`]'s per-batch lists, kept (no allocation
    /// per batch once warm): the lent frames' positions, their egresses.
    lent_at: Vec<usize>,
    lent_egress: Vec<Egress>,
}

fn xdp_err(e: dpr_xdp::Error) -> io::Error {
    match e {
        dpr_xdp::Error::Syscall { op, source } => {
            io::Error::new(source.kind(), format!("{op}: {source}"))
        }
        other => io::Error::other(other.to_string()),
    }
}

impl<S: TunSys> XdpQueue<S> {
    /// A queue over a bound socket; `kernel` is a TUN queue of the local
    /// device; `ifindex` and `src_mac` are the uplink's.
    pub fn new(xsk: XskSocket, kernel: S, ifindex: u32, src_mac: [u8; 6]) -> Self {
        Self {
            xsk,
            kernel,
            ifindex,
            src_mac,
            neigh: NeighCache::default(),
            counters: XdpQueueCounters::default(),
            reported: XdpQueueCounters::default(),
            reported_xsk: dpr_xdp::xsk::XskCounters::default(),
            reported_kernel: dpr_xdp::xsk::KernelStats::default(),
            kernel_stats_due: Instant::now(),
            keyed: None,
            reported_keyed: KeyedFlowStats::default(),
            fast: None,
            reported_fast: FastPathStats::default(),
            lent_at: Vec::new(),
            lent_egress: Vec::new(),
        }
    }

    /// Writes the established flows its engine redirects into the XDP
    /// program's send fast path through `maps` (its own descriptors), at
    /// most `max_flows` at a time; `peers` is shared with the control
    /// thread (see [`FastPathPeers`]).
    pub fn with_fast_path(
        mut self,
        maps: FastPathMaps,
        peers: Arc<FastPathPeers>,
        max_flows: usize,
    ) -> Self {
        self.fast = Some(FastPathWriter::new(maps, peers, max_flows));
        self
    }

    /// Writes the keyed flows its engine accepts into the XDP program's
    /// map through `map` (see [`Backend::keyed_flows`]).
    pub fn with_keyed_flows(mut self, map: KeyedFlowMap) -> Self {
        self.keyed = Some(KeyedFlowWriter::new(map));
        self
    }

    /// Our counters.
    pub fn counters(&self) -> XdpQueueCounters {
        self.counters
    }

    /// The socket's own counters.
    pub fn xsk_counters(&self) -> dpr_xdp::xsk::XskCounters {
        self.xsk.counters()
    }

    /// The kernel's counters for the socket (one system call).
    pub fn kernel_stats(&self) -> io::Result<dpr_xdp::xsk::KernelStats> {
        self.xsk.kernel_stats().map_err(xdp_err)
    }

    /// Waits up to `timeout` for frames.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        self.xsk.wait_rx(timeout).map_err(xdp_err)
    }

    /// Runs `handler` on up to `max` received frames: it gets the whole
    /// frame and the IP packet's range in it, may rewrite the frame, and
    /// returns the [`Egress`]. Returns the number of frames read.
    pub fn run_batch(
        &mut self,
        max: u32,
        mut handler: impl FnMut(&mut [u8], Range<usize>) -> Egress,
    ) -> io::Result<usize> {
        let Self {
            xsk,
            kernel,
            src_mac,
            neigh,
            counters,
            fast,
            ..
        } = self;
        let now = Instant::now();
        let n = xsk
            .rx_batch(max, |frame, off, len| {
                counters.rx += 1;
                let Some(eth) = frame.get(off..off + ETH_HLEN) else {
                    counters.not_ip += 1;
                    return RxAction::Drop;
                };
                let ethertype = u16::from_be_bytes([eth[12], eth[13]]);
                if len < ETH_HLEN || !matches!(ethertype, ETHERTYPE_IPV4 | ETHERTYPE_IPV6) {
                    counters.not_ip += 1;
                    return RxAction::Drop;
                }
                let egress = handler(frame, off + ETH_HLEN..off + len);
                dispose(frame, egress, kernel, src_mac, neigh, counters, fast, now)
            })
            .map_err(xdp_err)?;
        Ok(n)
    }

    /// [`Self::run_batch`], lending the frames together: `handler` gets all
    /// the Ethernet + IP frames of up to `max` received (the others are
    /// counted in `not_ip` and dropped, not lent) and sets each one's
    /// egress; each then goes where it says, exactly as in `run_batch`.
    /// Returns the number of frames read.
    pub fn run_batch_lent(
        &mut self,
        max: u32,
        handler: impl FnOnce(&mut [Lent<'_>]),
    ) -> io::Result<usize> {
        let Self {
            xsk,
            kernel,
            src_mac,
            neigh,
            counters,
            fast,
            lent_at: which,
            lent_egress: egress,
            ..
        } = self;
        let now = Instant::now();
        let n = xsk
            .rx_lend(max, |frames| {
                counters.rx += frames.len() as u64;
                let mut lent: Vec<Lent<'_>> = Vec::with_capacity(frames.len());
                which.clear();
                egress.clear();
                for (i, f) in frames.iter_mut().enumerate() {
                    let (off, len) = (f.offset, f.len);
                    let is_ip = len >= ETH_HLEN
                        && f.frame.get(off + 12..off + 14).is_some_and(|t| {
                            matches!(
                                u16::from_be_bytes([t[0], t[1]]),
                                ETHERTYPE_IPV4 | ETHERTYPE_IPV6
                            )
                        });
                    if !is_ip {
                        counters.not_ip += 1;
                        f.action = RxAction::Drop;
                        continue;
                    }
                    lent.push(Lent {
                        buf: &mut *f.frame,
                        range: off + ETH_HLEN..off + len,
                        egress: Egress::Drop,
                    });
                    which.push(i);
                }
                handler(&mut lent);
                egress.extend(lent.into_iter().map(|l| l.egress));
                for (&i, e) in which.iter().zip(egress.drain(..)) {
                    if let Some(f) = frames.get_mut(i) {
                        f.action = dispose(f.frame, e, kernel, src_mac, neigh, counters, fast, now);
                    }
                }
            })
            .map_err(xdp_err)?;
        Ok(n)
    }

    /// What a receive call did, from the counters before it.
    fn rx_tx_since(&self, before: &XdpQueueCounters, received: usize) -> RxTx {
        let c = self.counters;
        let out = |c: &XdpQueueCounters| c.tx_fast + c.to_kernel + c.unresolved;
        RxTx {
            received,
            sent: usize::try_from(out(&c) - out(before)).unwrap_or(usize::MAX),
            failed: usize::try_from(c.kernel_failed - before.kernel_failed).unwrap_or(usize::MAX),
        }
    }

    /// Work to do after a batch, outside the engine lock: neighbour
    /// lookups (one netlink dump each) and solicitations.
    pub fn after_batch(&mut self) {
        for addr in self.neigh.take_pending() {
            let mac = match neigh::lookup(self.ifindex, addr) {
                Ok(Neighbour::Resolved(mac)) => Some(mac),
                Ok(Neighbour::Unresolved(why)) => {
                    tracing::debug!(%addr, ?why, "next hop unresolved; kernel path meanwhile");
                    if let IpAddr::V4(a) = addr {
                        let _ = neigh::solicit(a);
                    }
                    None
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "neighbour lookup failed");
                    None
                }
            };
            self.neigh.update(addr, mac, Instant::now());
        }
    }

    /// Waits up to `timeout` for queued transmits to complete (shutdown).
    pub fn drain(&mut self, timeout: Duration) {
        let _ = self.xsk.drain_tx(timeout);
    }
}

impl<S: TunSys> Backend for XdpQueue<S> {
    fn kind(&self) -> &'static str {
        "af-xdp"
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        XdpQueue::wait(self, timeout)
    }

    fn rx_tx<F>(&mut self, max: usize, handler: F) -> io::Result<RxTx>
    where
        F: FnMut(&mut [u8], Range<usize>) -> Egress,
    {
        let before = self.counters;
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        let received = self.run_batch(max, handler)?;
        Ok(self.rx_tx_since(&before, received))
    }

    /// The received frames together (the engine's batch path), not one at
    /// a time.
    fn rx_tx_batch<F>(&mut self, max: usize, handler: F) -> io::Result<RxTx>
    where
        F: FnMut(&mut [Lent<'_>]),
    {
        let before = self.counters;
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        let received = self.run_batch_lent(max, handler)?;
        Ok(self.rx_tx_since(&before, received))
    }

    /// Through the TUN whatever the egress: the kernel delivers, or routes
    /// the IP-in-IP packet out (a handed-over packet has no frame here).
    fn transmit(&mut self, packet: &mut [u8], egress: Egress) -> io::Result<bool> {
        let r = match egress {
            Egress::Drop => return Ok(true),
            Egress::Kernel(r) => r,
            Egress::Peer { range: r, .. } => {
                if let (Some(f), Some(p)) = (self.fast.as_mut(), packet.get(r.clone())) {
                    f.note_other_path(p);
                }
                r
            }
        };
        let failed = self.counters.kernel_failed;
        to_kernel(&self.kernel, packet, r, &mut self.counters);
        if self.counters.kernel_failed == failed {
            self.counters.to_kernel += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn keyed_flows(&mut self, events: &[dpr_router::KeyedFlowEvent]) {
        if let Some(w) = self.keyed.as_mut() {
            w.apply(events);
        }
    }

    fn fast_path(&mut self, seen: &mut dyn FnMut(&dpr_packet::FlowKey, bool) -> bool) {
        if let Some(f) = self.fast.as_mut() {
            f.after_batch(Instant::now(), seen);
        }
    }

    fn maintain(&mut self, stats: &WorkerStats) {
        self.after_batch();
        let add = |a: &AtomicU64, new: u64, old: u64| {
            a.fetch_add(new.saturating_sub(old), Ordering::Relaxed);
        };
        let (c, r) = (self.counters, self.reported);
        add(&stats.xdp_fast_forwarded, c.tx_fast, r.tx_fast);
        add(&stats.xdp_unresolved, c.unresolved, r.unresolved);
        self.reported = c;
        if let Some(k) = self.keyed.as_ref().map(|w| w.stats) {
            let o = self.reported_keyed;
            add(&stats.xdp_keyed_flows_added, k.added, o.added);
            add(&stats.xdp_keyed_flows_removed, k.removed, o.removed);
            add(&stats.xdp_keyed_flows_failed, k.failed, o.failed);
            self.reported_keyed = k;
        }
        if let Some(f) = self.fast.as_ref().map(|w| w.stats) {
            let o = self.reported_fast;
            add(&stats.xdp_fast_path_flows_added, f.added, o.added);
            add(&stats.xdp_fast_path_flows_removed, f.removed, o.removed);
            add(&stats.xdp_fast_path_flows_failed, f.failed, o.failed);
            add(
                &stats.xdp_fast_path_flows_refreshed,
                f.refreshed,
                o.refreshed,
            );
            self.reported_fast = f;
        }
        let x = self.xsk.counters();
        add(&stats.xsk_tx_full, x.tx_full, self.reported_xsk.tx_full);
        self.reported_xsk = x;
        if Instant::now() >= self.kernel_stats_due {
            // The kernel's counters cost a system call: four times a second.
            self.kernel_stats_due = Instant::now() + Duration::from_millis(250);
            if let Ok(k) = self.kernel_stats() {
                let o = self.reported_kernel;
                add(&stats.xsk_rx_ring_full, k.rx_ring_full, o.rx_ring_full);
                add(&stats.xsk_rx_dropped, k.rx_dropped, o.rx_dropped);
                add(
                    &stats.xsk_fill_ring_empty,
                    k.rx_fill_ring_empty_descs,
                    o.rx_fill_ring_empty_descs,
                );
                add(
                    &stats.xsk_tx_invalid,
                    k.tx_invalid_descs,
                    o.tx_invalid_descs,
                );
                self.reported_kernel = k;
            }
        }
    }

    fn close(&mut self) {
        self.drain(Duration::from_millis(100));
    }
}

/// Carries out a received frame's `egress` (the engine rewrote the frame):
/// in place out of the uplink when the next hop is resolved (noting the
/// flow for the XDP fast path), else through the kernel.
#[allow(clippy::too_many_arguments)]
fn dispose<S: TunSys>(
    frame: &mut [u8],
    egress: Egress,
    kernel: &S,
    src_mac: &[u8; 6],
    neigh: &mut NeighCache,
    counters: &mut XdpQueueCounters,
    fast: &mut Option<FastPathWriter<FastPathMaps>>,
    now: Instant,
) -> RxAction {
    match egress {
        Egress::Drop => {
            counters.dropped += 1;
            RxAction::Drop
        }
        Egress::Kernel(r) => {
            to_kernel(kernel, frame, r, counters);
            counters.to_kernel += 1;
            RxAction::Copied
        }
        Egress::Peer { next_hop, range } => match neigh.get(next_hop, now) {
            Some(dst) if range.start >= ETH_HLEN && range.end <= frame.len() => {
                let version = frame.get(range.start).map_or(0, |b| b >> 4);
                let ty = if version == 6 {
                    ETHERTYPE_IPV6
                } else {
                    ETHERTYPE_IPV4
                };
                let e = range.start - ETH_HLEN;
                frame[e..e + 6].copy_from_slice(&dst);
                frame[e + 6..e + 12].copy_from_slice(src_mac);
                frame[e + 12..e + 14].copy_from_slice(&ty.to_be_bytes());
                if let Some(f) = fast.as_mut() {
                    f.note(&frame[e..range.end]);
                }
                counters.tx_fast += 1;
                RxAction::Transmit {
                    offset: e,
                    len: range.end - e,
                }
            }
            _ => {
                counters.unresolved += 1;
                if let (Some(f), Some(p)) = (fast.as_mut(), frame.get(range.clone())) {
                    f.note_other_path(p);
                }
                to_kernel(kernel, frame, range, counters);
                RxAction::Copied
            }
        },
    }
}

fn to_kernel<S: TunSys>(
    kernel: &S,
    frame: &[u8],
    r: Range<usize>,
    counters: &mut XdpQueueCounters,
) {
    let Some(bytes) = frame.get(r) else {
        counters.kernel_failed += 1;
        return;
    };
    loop {
        match kernel.send(bytes) {
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                counters.kernel_failed += 1;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_cache_queues_lookups_and_retries() {
        let mut c = NeighCache::default();
        let a: IpAddr = "198.18.0.12".parse().unwrap_or_else(|_| unreachable!());
        let t0 = Instant::now();
        assert_eq!(c.get(a, t0), None);
        assert_eq!(c.get(a, t0), None, "asked once");
        assert_eq!(c.take_pending(), vec![a]);
        c.update(a, None, t0);
        assert_eq!(c.get(a, t0), None);
        assert!(c.take_pending().is_empty(), "retry not due yet");
        assert_eq!(c.get(a, t0 + NeighCache::RETRY), None);
        assert_eq!(c.take_pending(), vec![a]);
        let mac = [2, 0, 0, 0, 0, 9];
        c.update(a, Some(mac), t0);
        assert_eq!(c.get(a, t0 + Duration::from_millis(500)), Some(mac));
        assert!(c.take_pending().is_empty());
        assert_eq!(
            c.get(a, t0 + NeighCache::REFRESH),
            Some(mac),
            "kept while refreshing"
        );
        assert_eq!(c.take_pending(), vec![a]);
    }
}
