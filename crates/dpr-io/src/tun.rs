//! The TUN backend: a multi-queue TUN device, one queue per worker thread.
//!
//! ```text
//!  recv_batch: poll once, then read every frame that is ready, up to the batch
//!    offload off: one packet per read, into the frame
//!    offload on (IFF_VNET_HDR; TUN_F_CSUM | TSO4 | TSO6):
//!      readv [virtio_net_hdr | frame | 64 KiB overflow]
//!        gso NONE  ─► partial checksum completed ─► the frame
//!        gso TCPv4/6 (a super-packet) ─► TcpSegmenter: one segment per frame
//!                                        (left-over segments open the next batch)
//!        anything else ─► dropped, counted (tun_offload_errors)
//!  send_batch:
//!    Egress::Peer, IPv4, raw socket open ─► sendmmsg, up to 64 packets a call
//!                                           (a refused one goes into the TUN)
//!    everything else ─► one write into the TUN each (header "no offload" in front)
//! ```
//!
//! Receive waits once (`poll`) and then reads without waiting again, so
//! the engine runs once per burst rather than once per packet. A TUN read
//! returns one frame; with offloads a bulk TCP flow arrives as 64 KiB
//! super-packets, which the router cuts into segments in userspace before
//! the engine sees them (an encapsulated super-packet could not leave: the
//! virtio-net header has no GSO type for TCP inside GRE or IP-in-IP, see
//! decisions.md). Forwards leave through a raw socket, several per system
//! call, without the input routing and forwarding a write into the TUN
//! costs; a frame the kernel refuses is counted and skipped.

use crate::backend::{Batch, BatchIo, TxOutcome};
use crate::sys::{self, RealTun, TunSys};
use dpr_packet::virtio::{self, TcpCoalescer, TcpSegmenter, VirtioNetHdr};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The largest frame a TUN read returns with offloads on: a 64 KiB
/// super-packet.
const MAX_SUPER: usize = 65_536;

/// Packets the kernel holds for each queue's reader (the device's
/// `txqueuelen`; the kernel's default is 500).
pub const TX_QUEUE_LEN: u32 = 4096;

/// How to create the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// Device MTU. Packets written back may be up to this size; reads are
    /// bounded by it too.
    pub mtu: u16,
    /// Number of queues (one worker thread each), at least 1.
    pub queues: usize,
    /// Make the device persistent (`TUNSETPERSIST`): it, its addresses and
    /// the routes through it outlive the process, so that a crash or a
    /// restart leaves the diversion in place (packets routed into a device
    /// with no queue attached are dropped, not delivered to the local
    /// stack). An existing persistent device of that name is attached to.
    /// The owner deletes it at a full stop (`Netlink::del_link`).
    pub persist: bool,
    /// Ask for TCP segmentation and checksum offloads (`IFF_VNET_HDR`,
    /// `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`). Where the kernel refuses,
    /// the device is made without them ([`TunDevice::offload`] says).
    pub offload: bool,
}

/// An open TUN device: its queues and its interface index. Dropping every
/// queue removes the (non-persistent) device and all its addresses and routes.
#[derive(Debug)]
pub struct TunDevice {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// MTU.
    pub mtu: u16,
    /// The offloads are on.
    pub offload: bool,
    /// Forwards leave through raw sockets (else through the TUN).
    pub raw_egress: bool,
    queues: Vec<TunQueue<RealTun>>,
}

impl TunDevice {
    /// Creates the device, up, with `cfg.queues` queues. Fails with a message
    /// naming what is missing when `/dev/net/tun` is absent or the caller
    /// lacks `CAP_NET_ADMIN`.
    pub fn create(cfg: &TunConfig) -> io::Result<Self> {
        if cfg.name.is_empty() || cfg.name.len() > 15 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TUN device name must be 1 to 15 bytes",
            ));
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "/dev/net/tun is missing: load the tun module or run where TUN devices exist",
            ));
        }
        let build = |offload: bool| {
            tun_rs::DeviceBuilder::new()
                .name(&cfg.name)
                .mtu(cfg.mtu)
                .multi_queue(true)
                .packet_information(false)
                .offload(offload)
                .enable(true)
                .build_sync()
        };
        let mut offload = cfg.offload;
        let built = match build(offload) {
            Err(e) if offload && e.kind() != io::ErrorKind::PermissionDenied => {
                tracing::warn!(error = %e, dev = %cfg.name, "TUN offloads refused; running without them");
                offload = false;
                build(false)
            }
            r => r,
        };
        let first = built.map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                io::Error::new(
                    e.kind(),
                    format!(
                        "creating TUN device {:?} needs CAP_NET_ADMIN (run as root): {e}",
                        cfg.name
                    ),
                )
            } else {
                io::Error::new(e.kind(), format!("creating TUN device {:?}: {e}", cfg.name))
            }
        })?;
        if cfg.persist {
            first.persist().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("making TUN device {:?} persistent: {e}", cfg.name),
                )
            })?;
        }
        let mut devs = Vec::with_capacity(cfg.queues.max(1));
        for _ in 1..cfg.queues.max(1) {
            devs.push(first.try_clone()?);
        }
        devs.insert(0, first);
        if offload {
            // TCP and checksums only: tun-rs also asks for UDP segmentation
            // (USO), whose super-packets the router does not cut. The mask
            // is the device's, so once, after the last queue is attached.
            sys::tun_set_offload(
                &devs[0],
                libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
            )
            .map_err(|e| {
                io::Error::new(e.kind(), format!("TUNSETOFFLOAD on {:?}: {e}", cfg.name))
            })?;
        }
        let mut queues = Vec::with_capacity(devs.len());
        let mut raw_egress = true;
        for d in devs {
            d.set_nonblocking(true)?;
            let raw = match sys::RawEgress::open() {
                Ok(r) => Some(r),
                Err(e) => {
                    if raw_egress {
                        tracing::warn!(error = %e, "no raw egress socket; forwards go through the TUN");
                    }
                    raw_egress = false;
                    None
                }
            };
            queues.push(TunQueue::new(RealTun {
                dev: d,
                vnet: offload,
                raw,
            }));
        }
        // The kernel holds at most `txqueuelen` packets per queue for its
        // reader and drops the rest (the device's `tx_dropped`): 500 by
        // default, less than one window of a bulk upload that a peer's
        // burst of cut segments brings in (docs/decisions.md).
        if let Err(e) = sys::if_set_txqlen(&cfg.name, TX_QUEUE_LEN) {
            tracing::warn!(error = %e, dev = %cfg.name, "could not lengthen the TUN queue");
        }
        let ifindex = sys::if_index(&cfg.name)?;
        Ok(Self {
            name: cfg.name.clone(),
            ifindex,
            mtu: cfg.mtu,
            offload,
            raw_egress,
            queues,
        })
    }

    /// Takes the queues out, one per worker. The device lives while any does.
    pub fn take_queues(&mut self) -> Vec<TunQueue<RealTun>> {
        std::mem::take(&mut self.queues)
    }
}

/// One TUN queue, generic over the syscall layer: a [`BatchIo`] device
/// (a [`crate::Backend`] through [`crate::backend::BatchBackend`]).
#[derive(Debug)]
pub struct TunQueue<S: TunSys> {
    sys: S,
    vnet: bool,
    /// With offloads: where a super-packet lands (its first part is copied
    /// in from the frame it started in).
    scratch: Vec<u8>,
    /// A super-packet in `scratch` (its length) still being cut.
    pending: Option<(TcpSegmenter, usize)>,
    counts: Counts,
    /// Forwards waiting for one `sendmmsg` (frame indices).
    routed: Vec<usize>,
    /// With offloads: where consecutive segments of a flow for the local
    /// stack are merged into one super-packet.
    gro: Vec<u8>,
}

/// What the queue counts between two [`BatchIo::maintain`] calls.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Super-packets read.
    pub gso_packets: u64,
    /// Segments cut from them.
    pub gso_segments: u64,
    /// Frames dropped for a header or super-packet that could not be used.
    pub offload_errors: u64,
    /// Forwards sent through the raw socket.
    pub routed_tx: u64,
    /// `sendmmsg` calls.
    pub routed_calls: u64,
    /// Super-packets written to the local stack.
    pub gro_packets: u64,
    /// Segments merged into them.
    pub gro_segments: u64,
}

/// What one read with offloads gave.
enum Read {
    /// A packet of `n` bytes in the frame.
    One(usize),
    /// A super-packet now in `scratch`, to cut.
    Super,
    /// A frame that could not be used (counted).
    Skip,
}

impl<S: TunSys> TunQueue<S> {
    /// A queue over `sys` (with offloads if `sys` frames packets with a
    /// virtio-net header).
    pub fn new(sys: S) -> Self {
        let vnet = sys.vnet_hdr();
        Self {
            sys,
            vnet,
            scratch: Vec::new(),
            pending: None,
            counts: Counts::default(),
            routed: Vec::new(),
            gro: Vec::new(),
        }
    }

    /// The syscall layer underneath (the AF_XDP backend writes single
    /// packets into the device through it).
    pub fn into_inner(self) -> S {
        self.sys
    }

    /// What was counted since the last [`BatchIo::maintain`].
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Cuts what is left of the pending super-packet into free frames.
    fn drain_pending(&mut self, batch: &mut Batch) {
        while let Some((seg, len)) = &mut self.pending {
            let Some(area) = batch.next_free() else {
                return;
            };
            let pkt = self.scratch.get(..*len).unwrap_or(&[]);
            match seg.next_into(pkt, area) {
                None => self.pending = None,
                Some(Ok(n)) => {
                    batch.commit(n);
                    self.counts.gso_segments += 1;
                }
                Some(Err(_)) => self.counts.offload_errors += 1,
            }
        }
    }

    /// One read with offloads on, into `area` (and `scratch` past it).
    fn read_vnet(&mut self, area: &mut [u8]) -> io::Result<Option<Read>> {
        let a = area.len();
        if self.scratch.len() < a + MAX_SUPER {
            self.scratch.resize(a + MAX_SUPER, 0);
        }
        let mut hdr = [0u8; virtio::HDR_LEN];
        let n = {
            let over = &mut self.scratch[a..];
            self.sys.try_recv_vectored(&mut [
                io::IoSliceMut::new(&mut hdr),
                io::IoSliceMut::new(area),
                io::IoSliceMut::new(over),
            ])?
        };
        if n == 0 {
            return Ok(None);
        }
        let (Some(len), Ok(h)) = (n.checked_sub(virtio::HDR_LEN), VirtioNetHdr::parse(&hdr)) else {
            self.counts.offload_errors += 1;
            return Ok(Some(Read::Skip));
        };
        if h.gso_type == virtio::GsoType::None {
            let ok = len <= a
                && (!h.needs_csum()
                    || virtio::complete_checksum(&mut area[..len], h.csum_start, h.csum_offset)
                        .is_ok());
            if !ok {
                self.counts.offload_errors += 1;
                return Ok(Some(Read::Skip));
            }
            return Ok(Some(Read::One(len)));
        }
        let head = len.min(a);
        self.scratch[..head].copy_from_slice(&area[..head]);
        match TcpSegmenter::new(&self.scratch[..len], &h) {
            Ok(seg) => {
                self.counts.gso_packets += 1;
                self.pending = Some((seg, len));
                Ok(Some(Read::Super))
            }
            Err(_) => {
                self.counts.offload_errors += 1;
                Ok(Some(Read::Skip))
            }
        }
    }

    /// Writes what `open` merged (frames from `first` on): one
    /// super-packet, or the one frame as it was.
    fn flush_merged(&mut self, open: TcpCoalescer, first: &[u8], out: &mut TxOutcome) {
        let n = open.count();
        let (h, len) = open.finish(&mut self.gro);
        let r = if n < 2 {
            self.send(first)
        } else {
            let mut hdr = [0u8; virtio::HDR_LEN];
            let _ = h.emit(&mut hdr);
            self.counts.gro_packets += 1;
            self.counts.gro_segments += n as u64;
            let pkt = self.gro.get(..len).unwrap_or(&[]);
            self.sys.send_gso(&hdr, pkt).map(|_| ())
        };
        match r {
            Ok(()) => out.sent += n,
            Err(_) => out.failed += n,
        }
    }

    /// Sends the forwards collected in `self.routed` with `sendmmsg`; what
    /// the raw socket refuses goes into the TUN.
    fn flush_routed(&mut self, batch: &Batch, out: &mut TxOutcome) {
        const CHUNK: usize = 64;
        let frames = batch.frames();
        let mut routed = std::mem::take(&mut self.routed);
        let mut i = 0;
        while i < routed.len() {
            let idx = &routed[i..(i + CHUNK).min(routed.len())];
            let mut pkts: [&[u8]; CHUNK] = [&[]; CHUNK];
            let mut hops = [Ipv4Addr::UNSPECIFIED; CHUNK];
            for (k, &f) in idx.iter().enumerate() {
                let fr = &frames[f];
                pkts[k] = fr.bytes();
                if let Some(IpAddr::V4(h)) = fr.next_hop {
                    hops[k] = h;
                }
            }
            match self
                .sys
                .send_routed_v4(&pkts[..idx.len()], &hops[..idx.len()])
            {
                Ok(n) if n > 0 => {
                    self.counts.routed_calls += 1;
                    self.counts.routed_tx += n as u64;
                    out.sent += n;
                    i += n;
                }
                _ => {
                    // The first one was refused (too big for the uplink,
                    // no route, a full socket buffer): the kernel's
                    // forwarding path takes it, and answers what it must.
                    match self.send(pkts[0]) {
                        Ok(()) => out.sent += 1,
                        Err(_) => out.failed += 1,
                    }
                    i += 1;
                }
            }
        }
        routed.clear();
        self.routed = routed;
    }
}

impl<S: TunSys> BatchIo for TunQueue<S> {
    fn recv_batch(&mut self, batch: &mut Batch, timeout: Duration) -> io::Result<usize> {
        batch.clear();
        self.drain_pending(batch);
        if batch.is_empty() && !self.sys.wait_readable(timeout)? {
            return Ok(0);
        }
        while let Some(area) = batch.next_free() {
            let r = if self.vnet {
                self.read_vnet(area)
            } else {
                self.sys
                    .try_recv(area)
                    .map(|n| (n > 0).then_some(Read::One(n)))
            };
            match r {
                Ok(None) => break,
                Ok(Some(Read::One(n))) => batch.commit(n),
                Ok(Some(Read::Super)) => self.drain_pending(batch),
                Ok(Some(Read::Skip)) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if batch.is_empty() {
                        return Err(e);
                    }
                    break;
                }
            }
        }
        Ok(batch.len())
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        loop {
            match self.sys.send(packet) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The device queue is full: the packet is lost, as on a
                // congested link; TCP recovers.
                Err(e) => return Err(e),
            }
        }
    }

    /// Forwards to IPv4 peers go out together through the raw socket
    /// (where the queue has one); the rest into the TUN, in order, with
    /// offloads consecutive segments of a flow merged into one write.
    fn send_batch(&mut self, batch: &Batch) -> io::Result<TxOutcome> {
        let mut out = TxOutcome::default();
        let raw = self.sys.has_routed_v4();
        if self.vnet && self.gro.len() < virtio::MAX_COALESCED {
            self.gro.resize(virtio::MAX_COALESCED, 0);
        }
        // The merge under way and the frame it started with.
        let mut open: Option<(TcpCoalescer, usize)> = None;
        let frames = batch.frames();
        for (i, f) in frames.iter().enumerate().filter(|(_, f)| f.transmit) {
            if raw && matches!(f.next_hop, Some(IpAddr::V4(_))) {
                self.routed.push(i);
                continue;
            }
            if let Some((c, _)) = &mut open {
                if c.push(f.bytes(), &mut self.gro) {
                    continue;
                }
            }
            if let Some((c, first)) = open.take() {
                self.flush_merged(c, frames[first].bytes(), &mut out);
            }
            if self.vnet {
                if let Some(c) = TcpCoalescer::start(f.bytes(), &mut self.gro) {
                    open = Some((c, i));
                    continue;
                }
            }
            match self.send(f.bytes()) {
                Ok(()) => out.sent += 1,
                Err(_) => out.failed += 1,
            }
        }
        if let Some((c, first)) = open.take() {
            self.flush_merged(c, frames[first].bytes(), &mut out);
        }
        if !self.routed.is_empty() {
            self.flush_routed(batch, &mut out);
        }
        Ok(out)
    }

    fn maintain(&mut self, stats: &crate::worker::WorkerStats) {
        let c = std::mem::take(&mut self.counts);
        if c == Counts::default() {
            return;
        }
        let add = |a: &std::sync::atomic::AtomicU64, v: u64| {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&stats.tun_gso_packets, c.gso_packets);
        add(&stats.tun_gso_segments, c.gso_segments);
        add(&stats.tun_offload_errors, c.offload_errors);
        add(&stats.tun_routed_tx, c.routed_tx);
        add(&stats.tun_routed_calls, c.routed_calls);
        add(&stats.tun_gro_packets, c.gro_packets);
        add(&stats.tun_gro_segments, c.gro_segments);
    }

    fn kind(&self) -> &'static str {
        "tun"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::FakeTun;

    #[test]
    fn reads_a_burst_up_to_the_batch_size_then_stops() {
        let fake = FakeTun::default();
        {
            let mut s = fake.0.lock().unwrap_or_else(|e| e.into_inner());
            for i in 0..5u8 {
                s.rx.push_back(vec![0x45, i]);
            }
        }
        let mut q = TunQueue::new(fake.clone());
        let mut b = Batch::new(3, 16, 64);
        assert_eq!(q.recv_batch(&mut b, Duration::ZERO).ok(), Some(3));
        assert_eq!(b.frames()[2].bytes(), &[0x45, 2]);
        assert_eq!(b.frames()[0].start, 16, "headroom kept");
        assert_eq!(q.recv_batch(&mut b, Duration::ZERO).ok(), Some(2));
        assert_eq!(q.recv_batch(&mut b, Duration::from_millis(1)).ok(), Some(0));
    }

    #[test]
    fn sends_only_marked_frames_and_counts_refusals() {
        let fake = FakeTun::default();
        fake.0.lock().unwrap_or_else(|e| e.into_inner()).fail_sends = 1;
        let mut q = TunQueue::new(fake.clone());
        let mut b = Batch::new(4, 0, 8);
        for p in [[1u8], [2], [3]] {
            assert!(b.push(&p));
        }
        b.frames_mut()[0].transmit = true;
        b.frames_mut()[2].transmit = true;
        let out = q.send_batch(&b).ok();
        assert_eq!(out, Some(TxOutcome { sent: 1, failed: 1 }));
        let tx = fake.0.lock().unwrap_or_else(|e| e.into_inner()).tx.clone();
        assert_eq!(tx, vec![vec![3]]);
    }

    /// An IPv4 TCP packet of `payload` bytes (headers 40), 198.18.0.200:40000
    /// → 198.18.0.1:80, its TCP checksum left partial (the pseudo-header).
    fn tcp_v4(payload: usize) -> Vec<u8> {
        let total = 40 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 18, 0, 200]);
        p[16..20].copy_from_slice(&[198, 18, 0, 1]);
        let c = dpr_packet::checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..28].copy_from_slice(&1000u32.to_be_bytes());
        p[32] = 0x50;
        p[33] = 0x18;
        for (k, b) in p[40..].iter_mut().enumerate() {
            *b = k as u8;
        }
        let ph = dpr_packet::checksum::pseudo_header_v4(
            [198, 18, 0, 200].into(),
            [198, 18, 0, 1].into(),
            6,
            (total - 20) as u16,
        );
        let partial = !dpr_packet::checksum::fold(ph);
        p[36..38].copy_from_slice(&partial.to_be_bytes());
        p
    }

    fn framed(h: VirtioNetHdr, p: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; virtio::HDR_LEN];
        h.emit(&mut f).unwrap_or_else(|e| unreachable!("{e}"));
        f.extend_from_slice(p);
        f
    }

    fn gso(size: u16) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: virtio::F_NEEDS_CSUM,
            gso_type: virtio::GsoType::TcpV4,
            gso_ecn: false,
            hdr_len: 40,
            gso_size: size,
            csum_start: 20,
            csum_offset: 16,
        }
    }

    fn tcp_ok(p: &[u8]) -> bool {
        let ip =
            dpr_packet::ipv4::Ipv4Packet::new_checked(p).unwrap_or_else(|e| unreachable!("{e}"));
        let t = dpr_packet::tcp::TcpSegment::new_checked(&p[20..])
            .unwrap_or_else(|e| unreachable!("{e}"));
        ip.verify_checksum() && t.verify_checksum(ip.src().into(), ip.dst().into())
    }

    #[test]
    fn offload_cuts_super_packets_across_batches_and_completes_checksums() {
        let fake = FakeTun::default();
        let sup = tcp_v4(4000);
        let small = tcp_v4(10);
        {
            let mut s = fake.0.lock().unwrap_or_else(|e| e.into_inner());
            s.vnet = true;
            s.rx.push_back(framed(gso(1448), &sup));
            let mut h = gso(0);
            h.gso_type = virtio::GsoType::None;
            s.rx.push_back(framed(h, &small));
        }
        let mut q = TunQueue::new(fake.clone());
        let mut b = Batch::new(2, 16, 1500);
        assert_eq!(q.recv_batch(&mut b, Duration::ZERO).ok(), Some(2));
        let mut payload = Vec::new();
        for f in b.frames() {
            assert!(tcp_ok(f.bytes()));
            payload.extend_from_slice(&f.bytes()[40..]);
        }
        // The third segment opens the next batch, then the plain packet.
        assert_eq!(q.recv_batch(&mut b, Duration::ZERO).ok(), Some(2));
        payload.extend_from_slice(&b.frames()[0].bytes()[40..]);
        assert_eq!(payload, sup[40..].to_vec(), "every byte, in order");
        assert_eq!(b.frames()[1].bytes().len(), small.len());
        assert!(tcp_ok(b.frames()[1].bytes()), "partial checksum completed");
        let c = q.counts();
        assert_eq!((c.gso_packets, c.gso_segments, c.offload_errors), (1, 3, 0));
        let stats = crate::worker::WorkerStats::default();
        q.maintain(&stats);
        let s = stats.snapshot();
        assert_eq!((s.tun_gso_packets, s.tun_gso_segments), (1, 3));
        assert_eq!(q.counts(), Counts::default(), "handed over once");
    }

    #[test]
    fn offload_drops_and_counts_what_it_cannot_use() {
        let fake = FakeTun::default();
        {
            let mut s = fake.0.lock().unwrap_or_else(|e| e.into_inner());
            s.vnet = true;
            s.rx.push_back(vec![0; 5]); // shorter than the header
            let mut udp = gso(100);
            udp.gso_type = virtio::GsoType::UdpL4;
            s.rx.push_back(framed(udp, &tcp_v4(300)));
            s.rx.push_back(framed(gso(0), &tcp_v4(300))); // gso_size 0
            let mut lie = tcp_v4(300);
            lie[3] = 0xff; // total length past the end
            s.rx.push_back(framed(gso(100), &lie));
            let mut bad = gso(0);
            bad.gso_type = virtio::GsoType::None;
            bad.csum_start = 2000; // past the packet
            s.rx.push_back(framed(bad, &tcp_v4(10)));
            s.rx.push_back(framed(gso(100), &tcp_v4(150))); // good: 2 segments
        }
        let mut q = TunQueue::new(fake.clone());
        let mut b = Batch::new(8, 16, 1500);
        assert_eq!(q.recv_batch(&mut b, Duration::ZERO).ok(), Some(2));
        assert!(b.frames().iter().all(|f| tcp_ok(f.bytes())));
        assert_eq!(q.counts().offload_errors, 5);
    }

    #[test]
    fn forwards_leave_together_through_the_raw_socket() {
        let fake = FakeTun::default();
        {
            let mut s = fake.0.lock().unwrap_or_else(|e| e.into_inner());
            s.routed_ok = true;
            s.routed_mtu = Some(100);
        }
        let mut q = TunQueue::new(fake.clone());
        let mut b = Batch::new(8, 0, 200);
        let peer = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 12));
        let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        for (p, hop) in [
            (vec![1u8; 40], Some(peer)),
            (vec![2u8; 40], None),
            (vec![3u8; 150], Some(peer)), // too big for the raw socket
            (vec![4u8; 40], Some(peer)),
            (vec![5u8; 40], Some(v6)),
        ] {
            assert!(b.push(&p));
            let f = b.frames_mut().last_mut().unwrap_or_else(|| unreachable!());
            f.transmit = true;
            f.next_hop = hop;
        }
        assert_eq!(
            q.send_batch(&b).ok(),
            Some(TxOutcome { sent: 5, failed: 0 })
        );
        let s = fake.0.lock().unwrap_or_else(|e| e.into_inner());
        let routed: Vec<u8> = s.routed.iter().map(|(p, _)| p[0]).collect();
        assert_eq!(routed, vec![1, 4]);
        assert!(s.routed.iter().all(|(_, h)| IpAddr::V4(*h) == peer));
        let tun: Vec<u8> = s.tx.iter().map(|p| p[0]).collect();
        assert_eq!(
            tun,
            vec![2, 5, 3],
            "kernel, IPv6 peer, then the refused one"
        );
        assert_eq!(s.routed_calls, 3, "1; 3 refused; 4");
        let c = q.counts();
        assert_eq!((c.routed_tx, c.routed_calls), (2, 2));
    }

    #[test]
    fn without_a_raw_socket_forwards_go_into_the_tun() {
        let fake = FakeTun::default();
        let mut q = TunQueue::new(fake.clone());
        let mut b = Batch::new(2, 0, 64);
        assert!(b.push(&[7u8; 20]));
        b.frames_mut()[0].transmit = true;
        b.frames_mut()[0].next_hop = Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 12)));
        assert_eq!(
            q.send_batch(&b).ok(),
            Some(TxOutcome { sent: 1, failed: 0 })
        );
        assert_eq!(fake.0.lock().unwrap_or_else(|e| e.into_inner()).tx.len(), 1);
    }

    #[test]
    fn offload_merges_consecutive_segments_for_the_local_stack() {
        let fake = FakeTun::default();
        fake.0.lock().unwrap_or_else(|e| e.into_inner()).vnet = true;
        let sup = tcp_v4(3000);
        // Cut it as the reader would (complete checksums), plus a plain ACK.
        let mut seg = TcpSegmenter::new(&sup, &gso(1000)).unwrap_or_else(|e| unreachable!("{e}"));
        let mut b = Batch::new(8, 0, 1500);
        while let Some(area) = b.next_free() {
            match seg.next_into(&sup, area) {
                Some(Ok(n)) => b.commit(n),
                _ => break,
            }
        }
        let mut ack = tcp_v4(0);
        ack[33] = 0x10;
        assert!(b.push(&ack));
        for f in b.frames_mut() {
            f.transmit = true;
        }
        let mut q = TunQueue::new(fake.clone());
        assert_eq!(
            q.send_batch(&b).ok(),
            Some(TxOutcome { sent: 4, failed: 0 })
        );
        let s = fake.0.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(s.tx_gso.len(), 1, "three segments, one write");
        let (h, p) = &s.tx_gso[0];
        let h = VirtioNetHdr::parse(h).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((h.gso_type, h.gso_size), (virtio::GsoType::TcpV4, 1000));
        assert_eq!(&p[40..], &sup[40..], "the payload whole");
        assert_eq!(s.tx, vec![ack], "the ACK after it, alone");
        let c = q.counts();
        assert_eq!((c.gro_packets, c.gro_segments), (1, 3));
    }
}
