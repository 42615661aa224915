//! The data path: one worker thread per backend queue.
//!
//! Each worker receives a batch, locks the shared [`Engine`] once, runs
//! every packet through it, unlocks, and transmits the batch. The engine is
//! single-threaded (`&mut self`), so the workers share one behind a
//! `std::sync::Mutex`: on the two-core machines this targets, a lock per
//! batch (up to `backend.batch` packets) costs far less than the
//! per-packet work, and one engine keeps one routing table, one load table
//! and one set of counters (no cross-queue flow steering needed: a flow's
//! packets may arrive on any queue). With many cores, `ShardedConnTable`
//! and an engine per queue are the way on.
//!
//! Every verdict but `Drop` is written back into the same queue: the kernel
//! delivers `Deliver` and `Pass` packets (they arrive from the TUN, miss
//! the diversion rules and reach the local stack), and routes `Forward`
//! (IP-in-IP from our tunnel address, `accept_local=1` on the TUN) and
//! `Reply` packets out of the uplink.

use dpr_io::afxdp::{Egress, XdpQueue};
use dpr_io::sys::TunSys;
use dpr_io::{Backend, Batch};
use dpr_router::{Engine, PacketBuf, Verdict};
use dpr_table::Timestamp;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// State the workers share with the control loop.
#[derive(Debug)]
pub struct Shared {
    /// The engine.
    pub engine: Mutex<Engine>,
    /// Set to stop the workers.
    pub stop: AtomicBool,
    /// The monotonic origin of engine timestamps.
    pub origin: Instant,
    /// Packets received from the backend.
    pub rx_packets: AtomicU64,
    /// Packets written back.
    pub tx_packets: AtomicU64,
    /// Writes the device refused.
    pub tx_failed: AtomicU64,
    /// Backend receive errors.
    pub rx_errors: AtomicU64,
    /// AF_XDP: forwards that left from the received frame.
    pub xdp_fast_forwarded: AtomicU64,
    /// AF_XDP: forwards sent through the kernel (next hop unresolved).
    pub xdp_unresolved: AtomicU64,
    /// AF_XDP: forwards dropped because the socket's tx ring was full.
    pub xsk_tx_full: AtomicU64,
    /// AF_XDP, the kernel's socket counters (summed over queues):
    /// frames dropped because the rx ring was full.
    pub xsk_rx_ring_full: AtomicU64,
    /// ... frames dropped for other reasons (no fill-ring frame).
    pub xsk_rx_dropped: AtomicU64,
    /// ... times the fill ring was empty when a frame arrived.
    pub xsk_fill_ring_empty: AtomicU64,
    /// ... invalid tx descriptors.
    pub xsk_tx_invalid: AtomicU64,
}

impl Shared {
    /// Wraps an engine.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine: Mutex::new(engine),
            stop: AtomicBool::new(false),
            origin: Instant::now(),
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            tx_failed: AtomicU64::new(0),
            rx_errors: AtomicU64::new(0),
            xdp_fast_forwarded: AtomicU64::new(0),
            xdp_unresolved: AtomicU64::new(0),
            xsk_tx_full: AtomicU64::new(0),
            xsk_rx_ring_full: AtomicU64::new(0),
            xsk_rx_dropped: AtomicU64::new(0),
            xsk_fill_ring_empty: AtomicU64::new(0),
            xsk_tx_invalid: AtomicU64::new(0),
        }
    }

    /// Monotonic now, as the engine counts time.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Locks the engine (a poisoned lock is taken over: the engine has no
    /// invariant a panicking reader could break half-way).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the engine over one batch in place: sets each frame's range to the
/// bytes to send and its `transmit` flag (everything but `Drop`).
pub fn process_batch(engine: &mut Engine, now: Timestamp, batch: &mut Batch) {
    for f in batch.frames_mut() {
        let (start, end) = (f.start, f.end);
        let Some(mut pkt) = PacketBuf::new(&mut f.data, start, end) else {
            f.transmit = false;
            continue;
        };
        let v = engine.process(now, &mut pkt);
        let r = pkt.range();
        f.start = r.start;
        f.end = r.end;
        f.transmit = !matches!(v, Verdict::Drop(_));
    }
}

/// One worker: runs until `shared.stop` is set.
pub fn run_worker<B: Backend>(mut backend: B, shared: Arc<Shared>, batch_size: usize, mtu: usize) {
    let mut batch = Batch::new(batch_size, dpr_io::backend::DEFAULT_HEADROOM, mtu);
    while !shared.stop.load(Ordering::Relaxed) {
        match backend.recv_batch(&mut batch, Duration::from_millis(50)) {
            Ok(0) => continue,
            Ok(n) => {
                shared.rx_packets.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                shared.rx_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(backend = backend.kind(), error = %e, "receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        {
            let now = shared.now();
            let mut engine = shared.lock();
            process_batch(&mut engine, now, &mut batch);
        }
        match backend.send_batch(&batch) {
            Ok(o) => {
                shared
                    .tx_packets
                    .fetch_add(o.sent as u64, Ordering::Relaxed);
                shared
                    .tx_failed
                    .fetch_add(o.failed as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(backend = backend.kind(), error = %e, "transmit failed"),
        }
    }
}

/// One AF_XDP worker: runs until `shared.stop` is set. The engine works
/// on the IP packet of each frame in place (the frame's headroom takes the
/// outer header); `Forward` leaves from the same frame, everything else
/// but `Drop` is written into the TUN queue for the kernel.
pub fn run_xdp_worker<S: TunSys>(mut q: XdpQueue<S>, shared: Arc<Shared>, batch_size: usize) {
    let max = u32::try_from(batch_size).unwrap_or(u32::MAX);
    let mut reported = q.counters();
    let mut reported_xsk = q.xsk_counters();
    let mut reported_kernel = dpr_xdp::xsk::KernelStats::default();
    let mut stats_due = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        if Instant::now() >= stats_due {
            // The kernel's counters cost a system call: four times a second.
            stats_due = Instant::now() + Duration::from_millis(250);
            if let Ok(k) = q.kernel_stats() {
                let add = |a: &AtomicU64, new: u64, old: u64| {
                    a.fetch_add(new.saturating_sub(old), Ordering::Relaxed);
                };
                add(
                    &shared.xsk_rx_ring_full,
                    k.rx_ring_full,
                    reported_kernel.rx_ring_full,
                );
                add(
                    &shared.xsk_rx_dropped,
                    k.rx_dropped,
                    reported_kernel.rx_dropped,
                );
                add(
                    &shared.xsk_fill_ring_empty,
                    k.rx_fill_ring_empty_descs,
                    reported_kernel.rx_fill_ring_empty_descs,
                );
                add(
                    &shared.xsk_tx_invalid,
                    k.tx_invalid_descs,
                    reported_kernel.tx_invalid_descs,
                );
                reported_kernel = k;
            }
        }
        match q.wait(Duration::from_millis(50)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                shared.rx_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(backend = "af-xdp", error = %e, "receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let r = {
            let now = shared.now();
            let mut engine = shared.lock();
            q.run_batch(max, |frame, range| {
                let Some(mut pkt) = PacketBuf::new(frame, range.start, range.end) else {
                    return Egress::Drop;
                };
                match engine.process(now, &mut pkt) {
                    Verdict::Forward { to, .. } => Egress::Peer {
                        next_hop: to,
                        range: pkt.range(),
                    },
                    Verdict::Drop(_) => Egress::Drop,
                    _ => Egress::Kernel(pkt.range()),
                }
            })
        };
        if let Err(e) = r {
            shared.rx_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(backend = "af-xdp", error = %e, "batch failed");
        }
        q.after_batch();
        let c = q.counters();
        shared
            .rx_packets
            .fetch_add(c.rx - reported.rx, Ordering::Relaxed);
        let sent = (c.tx_fast + c.to_kernel + c.unresolved)
            - (reported.tx_fast + reported.to_kernel + reported.unresolved);
        shared.tx_packets.fetch_add(sent, Ordering::Relaxed);
        shared
            .tx_failed
            .fetch_add(c.kernel_failed - reported.kernel_failed, Ordering::Relaxed);
        shared
            .xdp_fast_forwarded
            .fetch_add(c.tx_fast - reported.tx_fast, Ordering::Relaxed);
        shared
            .xdp_unresolved
            .fetch_add(c.unresolved - reported.unresolved, Ordering::Relaxed);
        reported = c;
        let x = q.xsk_counters();
        shared
            .xsk_tx_full
            .fetch_add(x.tx_full - reported_xsk.tx_full, Ordering::Relaxed);
        reported_xsk = x;
    }
    q.drain(Duration::from_millis(100));
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpr_policy::{SplitMix64, Threshold, ThresholdConfig};
    use dpr_router::EngineConfig;
    use dpr_table::{Capacity, LoadTableConfig, PeerId};
    use std::net::Ipv4Addr;

    fn syn(dst_last: u8) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 100, 1, 198, 18, 0, dst_last,
        ];
        p.extend_from_slice(&[
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        p
    }

    #[test]
    fn worker_over_the_memory_backend() {
        let cfg = EngineConfig::new(
            Ipv4Addr::new(198, 19, 0, 1).into(),
            vec![Ipv4Addr::new(198, 18, 0, 1).into()],
            vec![80],
        );
        let policy =
            Threshold::new(ThresholdConfig { threshold: 100.0 }).unwrap_or_else(|_| unreachable!());
        let engine = Engine::new(
            cfg,
            PeerId(0),
            Capacity::default(),
            LoadTableConfig::default(),
            Box::new(policy),
            Box::new(SplitMix64::new(1)),
        )
        .unwrap_or_else(|_| unreachable!());
        let shared = Arc::new(Shared::new(engine));
        let (be, h) = dpr_io::mem::pair();
        h.inject(syn(1)); // service: delivered
        h.inject(vec![0x45, 0, 0, 99]); // malformed: dropped
        h.inject(syn(9)); // not ours: passed
        let s2 = shared.clone();
        let t = std::thread::spawn(move || run_worker(be, s2, 8, 1500));
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.tx_packets.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        shared.stop.store(true, Ordering::Relaxed);
        let _ = t.join();
        let sent = h.take_sent();
        assert_eq!(sent, vec![syn(1), syn(9)]);
        let c = shared.lock().counters();
        assert_eq!(
            (c.delivered, c.passed, c.dropped, c.new_local),
            (1, 1, 1, 1)
        );
    }
}
