//! The data path's one worker loop: a [`Backend`] queue, the [`Shard`]
//! that owns its flows, and the rings to the other workers.
//!
//! ```text
//!  loop until stopped:
//!    shard.poll()                      commands from the control thread (no lock)
//!    backend.wait(≤ 10 ms)
//!    backend.rx_tx_batch(batch, |packets|
//!        each: (owner, hash) = shard.owner_and_hash(packet)
//!              other ─► copy into ring[owner], Egress::Drop here
//!        ours together ─► shard.process_batch(hashes) ─► Egress (Drop / Kernel / Peer)
//!                         ─► the backend sends them)
//!    ring from the others ─► shard.process ─► backend.transmit
//!    backend.maintain(stats)           neighbour look-ups, kernel counters
//! ```
//!
//! No lock is taken on the way and none is held across a system call: a
//! worker owns its queue and its shard; it shares only its counters
//! (atomics) and the rings (bounded channels of packets).

use crate::backend::{Backend, DEFAULT_HEADROOM, Egress, Lent};
use crate::shard::Shard;
use dpr_router::{PacketBuf, Verdict};
use dpr_table::Timestamp;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

/// How long a worker waits for packets before it looks at its commands
/// and rings again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Packets a ring between two workers holds; more are dropped (counted),
/// as a full device queue drops them.
pub const RING_DEPTH: usize = 1024;

macro_rules! stats {
    ($($(#[$m:meta])* $name:ident,)*) => {
        /// One worker's counters, written by it alone (relaxed atomics),
        /// read by the control thread.
        #[derive(Debug, Default)]
        pub struct WorkerStats {
            $($(#[$m])* pub $name: AtomicU64,)*
        }

        /// A snapshot of [`WorkerStats`], summable over workers.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct IoStats {
            $($(#[$m])* pub $name: u64,)*
        }

        impl WorkerStats {
            /// The counters now.
            pub fn snapshot(&self) -> IoStats {
                IoStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl IoStats {
            /// Adds `o`.
            pub fn merge(&mut self, o: &IoStats) {
                $(self.$name += o.$name;)*
            }

            /// Every counter, by name (for status and metrics).
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

stats! {
    /// Packets received from the queue.
    rx_packets,
    /// Packets transmitted (to the kernel or the link).
    tx_packets,
    /// Transmits the device refused.
    tx_failed,
    /// Receive errors of the queue.
    rx_errors,
    /// Packets of another worker's flows handed to it through its ring.
    handed_over,
    /// Packets handed over by other workers and processed here.
    taken_over,
    /// Packets dropped because the owner's ring was full.
    ring_full,
    /// AF_XDP: forwards that left from the received frame.
    xdp_fast_forwarded,
    /// AF_XDP: forwards sent through the kernel (next hop unresolved).
    xdp_unresolved,
    /// AF_XDP: forwards dropped because the socket's tx ring was full.
    xsk_tx_full,
    /// AF_XDP, keyed tunnel: accepted flows written into the XDP program's
    /// map (its fast path), ended ones removed, writes refused.
    xdp_keyed_flows_added,
    /// ... ended flows removed from it.
    xdp_keyed_flows_removed,
    /// ... writes the kernel refused.
    xdp_keyed_flows_failed,
    /// AF_XDP, the send fast path: redirected flows written into the XDP
    /// program's map (it forwards their packets itself).
    xdp_fast_path_flows_added,
    /// ... flows removed from it (FIN or RST, or the engine forgot them).
    xdp_fast_path_flows_removed,
    /// ... writes refused, or flows left out (the worker's table full).
    xdp_fast_path_flows_failed,
    /// ... times a flow active only in the fast path refreshed the engine.
    xdp_fast_path_flows_refreshed,
    /// AF_XDP, the kernel's counters: frames dropped, rx ring full.
    xsk_rx_ring_full,
    /// ... frames dropped for other reasons (no fill-ring frame).
    xsk_rx_dropped,
    /// ... times the fill ring was empty when a frame arrived.
    xsk_fill_ring_empty,
    /// ... invalid tx descriptors.
    xsk_tx_invalid,
    /// TUN with offloads: super-packets read (TCP segmentation offload).
    tun_gso_packets,
    /// ... the segments they were cut into.
    tun_gso_segments,
    /// ... frames dropped for a virtio-net header or super-packet the
    /// backend could not use (counted, never processed).
    tun_offload_errors,
    /// TUN: forwards sent through the raw egress socket (`sendmmsg`).
    tun_routed_tx,
    /// ... `sendmmsg` calls that sent them.
    tun_routed_calls,
    /// TUN with offloads: super-packets written to the local stack
    /// (consecutive segments of a flow merged).
    tun_gro_packets,
    /// ... the segments merged into them.
    tun_gro_segments,
}

/// A worker's ends of the rings: where other workers hand it packets of
/// its flows, and where it hands them theirs.
#[derive(Debug)]
pub struct Rings {
    inbox: Receiver<Vec<u8>>,
    to: Vec<SyncSender<Vec<u8>>>,
}

/// The rings of `n` workers, in worker order: every pair is connected.
pub fn rings(n: usize) -> Vec<Rings> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::sync_channel(RING_DEPTH)).unzip();
    rxs.into_iter()
        .map(|inbox| Rings {
            inbox,
            to: txs.clone(),
        })
        .collect()
}

/// What a worker needs besides its queue and shard.
#[derive(Debug, Clone)]
pub struct WorkerCtx {
    /// Set to stop the worker.
    pub stop: Arc<AtomicBool>,
    /// Its counters.
    pub stats: Arc<WorkerStats>,
    /// The monotonic origin of engine timestamps (the same for every
    /// worker and the control thread).
    pub origin: Instant,
    /// Packets per batch.
    pub batch: usize,
}

impl WorkerCtx {
    /// Monotonic now, as the engines count time.
    pub fn now(&self) -> Timestamp {
        now_since(self.origin)
    }
}

/// Nanoseconds since `origin`, as a [`Timestamp`].
pub fn now_since(origin: Instant) -> Timestamp {
    Timestamp::from_nanos(u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// The data path's threads, one per queue, each running [`run_worker`]
/// with its backend and shard; stopped and joined when dropped.
#[derive(Debug)]
pub struct Workers {
    stop: Arc<AtomicBool>,
    origin: Instant,
    batch: usize,
    rings: Vec<Option<Rings>>,
    stats: Vec<Arc<WorkerStats>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Room for `queues` workers (the rings between them are made here),
    /// engine time counted from `origin`, `batch` packets per batch.
    pub fn new(queues: usize, origin: Instant, batch: usize) -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            origin,
            batch,
            rings: rings(queues).into_iter().map(Some).collect(),
            stats: Vec::new(),
            threads: Vec::new(),
        }
    }

    /// Starts the worker of `shard` (thread `dpr-q<index>`) on `backend`.
    pub fn spawn<B: Backend + 'static>(&mut self, backend: B, shard: Shard) -> std::io::Result<()> {
        let i = shard.index();
        let rings = self
            .rings
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| std::io::Error::other(format!("no ring for shard {i}")))?;
        let ctx = WorkerCtx {
            stop: self.stop.clone(),
            stats: Arc::new(WorkerStats::default()),
            origin: self.origin,
            batch: self.batch,
        };
        let stats = ctx.stats.clone();
        let t = std::thread::Builder::new()
            .name(format!("dpr-q{i}"))
            .spawn(move || run_worker(backend, shard, rings, ctx))?;
        self.stats.push(stats);
        self.threads.push(t);
        Ok(())
    }

    /// Each worker's counters (shared: read them after the workers moved).
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        self.stats.clone()
    }

    /// Stops the workers and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

impl IoStats {
    /// The sum of the workers' counters now.
    pub fn sum(stats: &[Arc<WorkerStats>]) -> Self {
        let mut t = Self::default();
        for s in stats {
            t.merge(&s.snapshot());
        }
        t
    }
}

/// The egress of a verdict: everything but `Drop` goes out of the queue
/// it is handled on (the kernel delivers `Deliver`, `Pass` and `Reply`,
/// and routes `Forward`, IP-in-IP, out of the uplink); a backend with its
/// own link sends `Forward` there.
pub fn egress_of(v: &Verdict, pkt: &PacketBuf<'_>) -> Egress {
    match v {
        // Held: the engine kept a copy; it comes back from `take_released`.
        Verdict::Drop(_) | Verdict::Held => Egress::Drop,
        Verdict::Forward { to, .. } => Egress::Peer {
            next_hop: *to,
            range: pkt.range(),
        },
        _ => Egress::Kernel(pkt.range()),
    }
}

/// Runs one worker until `ctx.stop` is set (or the control thread has
/// gone): see the module's picture.
pub fn run_worker<B: Backend>(mut backend: B, mut shard: Shard, rings: Rings, ctx: WorkerCtx) {
    let stats = ctx.stats.clone();
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut scratch = Scratch::default();
    while !ctx.stop.load(Ordering::Relaxed) {
        if !shard.poll().1 {
            break;
        }
        match backend.wait(POLL_INTERVAL) {
            Ok(true) => {
                let now = ctx.now();
                let Rings { to, .. } = &rings;
                let r = backend.rx_tx_batch(ctx.batch, |lent| {
                    process_lent(&mut shard, now, lent, &mut scratch, |owner, p| {
                        hand_over(to, owner, p, &mut spare, &stats)
                    })
                });
                match r {
                    Ok(o) => {
                        stats
                            .rx_packets
                            .fetch_add(o.received as u64, Ordering::Relaxed);
                        stats.tx_packets.fetch_add(o.sent as u64, Ordering::Relaxed);
                        stats
                            .tx_failed
                            .fetch_add(o.failed as u64, Ordering::Relaxed);
                    }
                    Err(e) => receive_failed(&stats, backend.kind(), &e),
                }
            }
            Ok(false) => {}
            Err(e) => receive_failed(&stats, backend.kind(), &e),
        }
        take_over(&mut backend, &mut shard, &rings, &ctx, &mut spare);
        release(&mut backend, &mut shard, &stats);
        // The keyed flows the batch accepted or ended, for the backend's
        // in-kernel fast path (AF_XDP), before their next packets arrive.
        let keyed = shard.engine().take_keyed_flow_events();
        if !keyed.is_empty() {
            backend.keyed_flows(&keyed);
        }
        // The AF_XDP send fast path: the flows it forwards stay alive in
        // the engine; the ones the engine forgot leave it.
        let now = ctx.now();
        backend.fast_path(&mut |flow, active| shard.engine().fast_path_seen(flow, active, now));
        backend.maintain(&stats);
    }
    backend.close();
}

/// What [`process_lent`] keeps between batches (no allocation per batch
/// once warm).
#[derive(Default)]
struct Scratch {
    /// Per packet this shard owns: its position in the batch and its hash.
    mine: Vec<(usize, Option<u64>)>,
    hashes: Vec<Option<u64>>,
    verdicts: Vec<Verdict>,
    egress: Vec<Egress>,
}

/// One received batch: each packet goes to the shard that owns its flow
/// (`hand_over` for another's), and this shard's packets go through the
/// engine together ([`Shard::process_batch`], with the hashes that steered
/// them); sets each packet's egress.
fn process_lent(
    shard: &mut Shard,
    now: Timestamp,
    lent: &mut [Lent<'_>],
    s: &mut Scratch,
    mut hand_over: impl FnMut(usize, &[u8]),
) {
    let me = shard.index();
    s.mine.clear();
    for (i, l) in lent.iter_mut().enumerate() {
        l.egress = Egress::Drop;
        let Some(p) = l.buf.get(l.range.clone()) else {
            continue;
        };
        let (owner, hash) = shard.owner_and_hash(p);
        if owner != me {
            hand_over(owner, p);
            continue;
        }
        if l.range.start <= l.range.end && l.range.end <= l.buf.len() {
            s.mine.push((i, hash));
        }
    }
    if s.mine.is_empty() {
        return;
    }
    s.hashes.clear();
    s.hashes.extend(s.mine.iter().map(|m| m.1));
    s.verdicts.clear();
    s.egress.clear();
    {
        // The packets this shard owns, borrowed from the batch in order.
        let mut wanted = s.mine.iter().map(|m| m.0).peekable();
        let mut pkts: Vec<PacketBuf<'_>> = Vec::with_capacity(s.mine.len());
        for (i, l) in lent.iter_mut().enumerate() {
            if wanted.peek() != Some(&i) {
                continue;
            }
            wanted.next();
            if let Some(p) = PacketBuf::new(l.buf, l.range.start, l.range.end) {
                pkts.push(p);
            }
        }
        shard.process_batch(now, &mut pkts, &s.hashes, &mut s.verdicts);
        s.egress
            .extend(pkts.iter().zip(&s.verdicts).map(|(p, v)| egress_of(v, p)));
    }
    for (&(i, _), e) in s.mine.iter().zip(s.egress.drain(..)) {
        lent[i].egress = e;
    }
}

fn receive_failed(stats: &WorkerStats, kind: &str, e: &std::io::Error) {
    stats.rx_errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(backend = kind, error = %e, "receive failed");
    std::thread::sleep(Duration::from_millis(10));
}

/// Copies a packet of `owner`'s flow into its ring, with headroom.
fn hand_over(
    to: &[SyncSender<Vec<u8>>],
    owner: usize,
    packet: &[u8],
    spare: &mut Vec<Vec<u8>>,
    stats: &WorkerStats,
) {
    let Some(ring) = to.get(owner) else {
        return;
    };
    let mut buf = spare.pop().unwrap_or_default();
    buf.clear();
    buf.resize(DEFAULT_HEADROOM, 0);
    buf.extend_from_slice(packet);
    match ring.try_send(buf) {
        Ok(()) => {
            stats.handed_over.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => {
            stats.ring_full.fetch_add(1, Ordering::Relaxed);
            spare.push(b);
        }
    }
}

/// VIP mode: sends the packets the engine held while it asked its peers
/// who serves their flow, now routed (to the claiming peer, or to the
/// local stack when nobody claimed them).
fn release<B: Backend>(backend: &mut B, shard: &mut Shard, stats: &WorkerStats) {
    if !shard.engine().has_released() {
        return;
    }
    for mut r in shard.engine().take_released() {
        let egress = match r.verdict {
            Verdict::Forward { to, .. } => Egress::Peer {
                next_hop: to,
                range: r.range.clone(),
            },
            Verdict::Drop(_) | Verdict::Held => continue,
            _ => Egress::Kernel(r.range.clone()),
        };
        match backend.transmit(&mut r.buf, egress) {
            Ok(true) => {
                stats.tx_packets.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                stats.tx_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Processes the packets other workers handed over and transmits them on
/// this worker's queue.
fn take_over<B: Backend>(
    backend: &mut B,
    shard: &mut Shard,
    rings: &Rings,
    ctx: &WorkerCtx,
    spare: &mut Vec<Vec<u8>>,
) {
    let stats = &ctx.stats;
    let mut now = None;
    loop {
        let mut buf = match rings.inbox.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
        };
        let now = *now.get_or_insert_with(|| ctx.now());
        stats.taken_over.fetch_add(1, Ordering::Relaxed);
        let end = buf.len();
        // Room to grow, as a received frame has: the engine may add an
        // outer header in front (the headroom) or write a reply quoting
        // the packet (an MTU's worth).
        buf.resize(end.max(DEFAULT_HEADROOM + 1500) + 64, 0);
        let egress = match PacketBuf::new(&mut buf, DEFAULT_HEADROOM, end) {
            Some(mut pkt) => {
                let v = shard.process(now, &mut pkt);
                egress_of(&v, &pkt)
            }
            None => Egress::Drop,
        };
        if egress != Egress::Drop {
            match backend.transmit(&mut buf, egress) {
                Ok(true) => {
                    stats.tx_packets.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    stats.tx_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if spare.len() < 64 {
            spare.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BatchBackend;
    use crate::shard::EngineSet;
    use crate::shard::tests::{engine, syn};

    fn ctx(stop: &Arc<AtomicBool>) -> WorkerCtx {
        WorkerCtx {
            stop: stop.clone(),
            stats: Arc::new(WorkerStats::default()),
            origin: Instant::now(),
            batch: 8,
        }
    }

    fn wait_for(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn one_worker_over_the_memory_backend() {
        let (mut set, shards) = EngineSet::new(engine(1, 100.0), vec![engine(64, 100.0)]);
        let (be, h) = crate::mem::pair();
        let ip = |p: Vec<u8>| p[DEFAULT_HEADROOM..].to_vec();
        let mut other = ip(syn(40000));
        other[19] = 9; // not ours: passed
        h.inject(ip(syn(40000))); // service: delivered
        h.inject(vec![0x45, 0, 0, 99]); // malformed: dropped
        h.inject(other.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let c = ctx(&stop);
        let stats = c.stats.clone();
        let mut r = rings(1);
        let shard = shards.into_iter().next().unwrap_or_else(|| unreachable!());
        let t = std::thread::spawn(move || {
            run_worker(BatchBackend::new(be, 8, 1500), shard, r.remove(0), c)
        });
        wait_for(|| stats.snapshot().tx_packets >= 2);
        wait_for(|| {
            set.tick(Timestamp::ZERO, 0);
            set.counters().dropped == 1
        });
        stop.store(true, Ordering::Relaxed);
        let _ = t.join();
        assert_eq!(h.take_sent(), vec![ip(syn(40000)), other]);
        let c = set.counters();
        assert_eq!(
            (c.delivered, c.passed, c.dropped, c.new_local),
            (1, 1, 1, 1)
        );
        let s = stats.snapshot();
        assert_eq!((s.rx_packets, s.tx_packets, s.handed_over), (3, 2, 0));
    }

    /// VIP mode through a worker: a packet of an unknown flow is held (not
    /// sent), its flow reaches the control side with the shard's report,
    /// and once a peer claims it the worker sends the held packet to that
    /// peer, encapsulated.
    #[test]
    fn a_held_packet_leaves_for_the_peer_that_claims_its_flow() {
        use dpr_router::{ClusterEngine, VipConfig};
        use dpr_table::{LoadFigures, LoadReport, PeerId};
        let vip_engine = || {
            let mut e = engine(64, 100.0);
            let mut cfg = e.config().clone();
            cfg.vip = Some(VipConfig::new(cfg.service_addrs.clone()));
            e = dpr_router::Engine::new(
                cfg,
                PeerId(0),
                dpr_table::Capacity::default(),
                dpr_table::LoadTableConfig::default(),
                Box::new(dpr_policy::LeastLoad),
                Box::new(dpr_policy::SplitMix64::new(1)),
            )
            .unwrap_or_else(|_| unreachable!());
            let peer_tunnel: std::net::IpAddr = std::net::Ipv4Addr::new(198, 19, 0, 2).into();
            let vip = e.config().service_addrs.clone();
            e.add_peer(PeerId(1), peer_tunnel, vip, Timestamp::ZERO)
                .unwrap_or_else(|_| unreachable!());
            let r = LoadReport {
                seq: 1,
                figures: LoadFigures::default(),
                capacity: dpr_table::Capacity::default(),
                draining: false,
            };
            e.apply_report(PeerId(1), &r, Timestamp::ZERO)
                .unwrap_or_else(|_| unreachable!());
            e
        };
        let (mut set, shards) = EngineSet::new(vip_engine(), vec![vip_engine()]);
        let (be, h) = crate::mem::pair();
        // An ACK (no SYN) of a flow nobody here knows.
        let mut ack = syn(41000)[DEFAULT_HEADROOM..].to_vec();
        ack[33] = 0x10;
        h.inject(ack.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let c = ctx(&stop);
        let stats = c.stats.clone();
        let mut r = rings(1);
        let shard = shards.into_iter().next().unwrap_or_else(|| unreachable!());
        let t = std::thread::spawn(move || {
            run_worker(BatchBackend::new(be, 8, 1500), shard, r.remove(0), c)
        });
        wait_for(|| stats.snapshot().rx_packets >= 1);
        let mut asked = Vec::new();
        wait_for(|| {
            set.tick(Timestamp::ZERO, 0);
            asked.extend(set.take_flow_queries());
            !asked.is_empty()
        });
        assert_eq!(asked.len(), 1);
        assert!(h.take_sent().is_empty(), "held, not sent");
        assert!(set.claim_flow(&asked[0], PeerId(1), Timestamp::ZERO));
        let mut sent = Vec::new();
        wait_for(|| {
            sent.extend(h.take_sent());
            !sent.is_empty()
        });
        wait_for(|| {
            set.tick(Timestamp::ZERO, 0);
            set.counters().vip.packets_released == 1
        });
        stop.store(true, Ordering::Relaxed);
        let _ = t.join();
        assert_eq!(sent.len(), 1);
        // IPv4-in-IPv4 to the peer's tunnel address, the ACK inside.
        let out = &sent[0];
        assert_eq!((out[9], &out[16..20]), (4, &[198u8, 19, 0, 2][..]));
        assert_eq!(&out[20..], &ack[..]);
        let v = set.counters().vip;
        assert_eq!((v.packets_held, v.flows_claimed), (1, 1));
    }

    /// Two queues, every packet received on the first: each flow is
    /// handled by the engine that owns it, the others' through the ring.
    #[test]
    fn packets_reach_the_engine_that_owns_their_flow() {
        let (mut set, shards) = EngineSet::new(
            engine(1, 100.0),
            vec![engine(1024, 100.0), engine(1024, 100.0)],
        );
        let hasher = *set.control().flow_hasher();
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        let mut stats = Vec::new();
        let mut threads = Vec::new();
        for (shard, r) in shards.into_iter().zip(rings(2)) {
            let (be, h) = crate::mem::pair();
            handles.push(h);
            let c = ctx(&stop);
            stats.push(c.stats.clone());
            threads.push(std::thread::spawn(move || {
                run_worker(BatchBackend::new(be, 8, 1500), shard, r, c)
            }));
        }
        let n = 200u16;
        for p in 0..n {
            handles[0].inject(syn(30000 + p)[DEFAULT_HEADROOM..].to_vec());
        }
        let sent = || handles.iter().map(|h| h.pending()).sum::<usize>() == 0;
        wait_for(sent);
        wait_for(|| stats.iter().map(|s| s.snapshot().tx_packets).sum::<u64>() >= u64::from(n));
        let owned = set.ask(|e| e.routes().iter().map(|r| r.key).collect::<Vec<_>>());
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        assert_eq!(owned.len(), 2);
        for (i, flows) in owned.iter().enumerate() {
            assert!(!flows.is_empty(), "shard {i} owns some of {n} flows");
            for f in flows {
                assert_eq!(
                    dpr_table::worker_for(&hasher, f, 2),
                    i,
                    "{f:?} on shard {i}"
                );
            }
        }
        assert_eq!(owned.iter().map(Vec::len).sum::<usize>(), usize::from(n));
        let (s0, s1) = (stats[0].snapshot(), stats[1].snapshot());
        assert_eq!(s0.handed_over, s1.taken_over);
        assert_eq!(s0.handed_over as usize, owned[1].len());
        assert_eq!(s0.rx_packets, u64::from(n));
        assert_eq!(
            s0.tx_packets + s1.tx_packets,
            u64::from(n),
            "every SYN delivered once"
        );
        let sent: usize = handles.iter().map(|h| h.take_sent().len()).sum();
        assert_eq!(sent, usize::from(n));
    }
}
