//! One AF_XDP socket on one (interface, queue), over `xdpilone`.
//!
//! The UMEM is one anonymous mapping of `frame_count` frames of
//! `frame_size` bytes (2048 or 4096). The first `rx_frames` frames belong to
//! receive: they cycle fill ring → kernel → rx ring → caller → fill ring (or
//! tx ring → completion ring → fill ring when the caller forwards the frame
//! in place). The rest are transmit frames for [`XskSocket::tx_copy`]: free
//! list → tx ring → completion ring → free list. Which pool a completed frame
//! returns to follows from its address.
//!
//! The fill ring is larger than `rx_frames`, and frames that do not fit it
//! at once wait in a refill list (never dropped, never overflowing the ring:
//! the "fill ring overflow" pitfall of native mode).
//!
//! Every received frame starts `data_offset` bytes into its chunk: the
//! kernel's `XDP_PACKET_HEADROOM` (256) plus the configured extra headroom.
//! A caller may write in front of the packet (an outer IP header, a new
//! Ethernet header) and transmit the same frame from a smaller offset:
//! [`RxAction::Transmit`]. Nothing is copied.
#![allow(unsafe_code)]

use std::io;
use std::num::NonZeroU32;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use xdpilone::xdp::XdpDesc;
use xdpilone::{
    BufIdx, DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User,
};

use crate::{Error, sys};

/// The kernel's headroom in front of every received packet.
pub const XDP_PACKET_HEADROOM: usize = 256;

/// How the socket binds to its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Copy mode (`XDP_COPY`): every driver; the only mode veth has.
    Copy,
    /// Zero-copy (`XDP_ZEROCOPY`): fails where the driver has none.
    ZeroCopy,
    /// Whatever the kernel picks (zero-copy if supported).
    Auto,
}

/// Sizes of the UMEM and rings. Ring sizes must be powers of two.
#[derive(Debug, Clone)]
pub struct XskConfig {
    /// Bytes per frame: 2048 or 4096.
    pub frame_size: u32,
    /// Frames for receive (they circulate through the fill ring).
    pub rx_frames: u32,
    /// Frames for [`XskSocket::tx_copy`].
    pub tx_frames: u32,
    /// Receive ring entries.
    pub rx_ring: u32,
    /// Transmit ring entries.
    pub tx_ring: u32,
    /// Fill ring entries; must exceed `rx_frames`.
    pub fill_ring: u32,
    /// Completion ring entries.
    pub completion_ring: u32,
    /// Extra headroom after the kernel's 256 bytes (UMEM headroom).
    pub extra_headroom: u32,
    /// Copy, zero-copy or either.
    pub bind: BindMode,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self {
            frame_size: 2048,
            rx_frames: 2048,
            tx_frames: 1024,
            rx_ring: 2048,
            tx_ring: 2048,
            fill_ring: 4096,
            completion_ring: 4096,
            extra_headroom: 0,
            bind: BindMode::Copy,
        }
    }
}

/// What the receive callback does with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxAction {
    /// Send the frame's bytes `offset..offset + len` (within the frame, as
    /// rewritten by the callback) out of this socket's queue, in place.
    Transmit {
        /// Start of the outgoing frame within the chunk.
        offset: usize,
        /// Its length.
        len: usize,
    },
    /// Discard it.
    Drop,
    /// The caller copied what it needed; recycle the frame.
    Copied,
}

/// Socket-side counters (ours, not the kernel's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskCounters {
    /// Frames read from the rx ring.
    pub rx: u64,
    /// Frames the callback forwarded in place and that were queued for tx.
    pub tx_forwarded: u64,
    /// Frames queued by `tx_copy`.
    pub tx_copied: u64,
    /// Transmit completions reaped.
    pub completed: u64,
    /// Forwards or copies that found the tx ring or the free list full.
    pub tx_full: u64,
    /// `Transmit` actions whose range was outside the frame (dropped).
    pub tx_bad_range: u64,
    /// Descriptors from the kernel outside the UMEM (ignored; never seen).
    pub bad_desc: u64,
    /// Frames the callback dropped.
    pub dropped: u64,
    /// Frames the callback copied.
    pub copied: u64,
    /// `sendto` transmit kicks.
    pub kicks: u64,
}

/// The kernel's counters for the socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Dropped for reasons other than invalid descriptors.
    pub rx_dropped: u64,
    /// Invalid rx descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid tx descriptors.
    pub tx_invalid_descs: u64,
    /// Dropped because the rx ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the tx ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

fn xerr(op: &'static str) -> impl FnOnce(xdpilone::Errno) -> Error {
    move |e| Error::Syscall {
        op,
        source: io::Error::from_raw_os_error(e.get_raw()),
    }
}

fn ring(n: u32, what: &str) -> Result<NonZeroU32, Error> {
    NonZeroU32::new(n)
        .filter(|n| n.is_power_of_two())
        .ok_or_else(|| Error::Xsk(format!("{what} size {n} is not a power of two")))
}

/// One AF_XDP socket bound to (ifindex, queue), with its own UMEM.
pub struct XskSocket {
    // Drop order is field order: rings first, then the device queue and the
    // socket registration, then the UMEM, and the memory last.
    rx: RingRx,
    tx: RingTx,
    device: DeviceQueue,
    user: User,
    umem: Umem,
    _mem: sys::Mmap,
    frame_size: u64,
    rx_frames: u64,
    frame_count: u64,
    data_offset: usize,
    /// Receive frames waiting for room in the fill ring.
    refill: Vec<u64>,
    /// Free transmit frames (chunk base addresses).
    tx_free: Vec<u64>,
    /// Descriptors in the tx ring not yet completed.
    tx_outstanding: u32,
    /// Forwards of the current batch, queued on the tx ring after it.
    tx_batch: Vec<XdpDesc>,
    /// Chunk bases of the frames [`XskSocket::rx_lend`] lends (reused).
    lent: Vec<u64>,
    /// One bit per chunk: lent in the current batch (distinct chunks are
    /// what makes lending them together sound; all clear between batches).
    lent_bits: Vec<u64>,
    counters: XskCounters,
}

/// One received frame lent by [`XskSocket::rx_lend`] with the others of
/// its batch: the whole chunk (headroom included), the packet at
/// `frame[offset..offset + len]`, and what to do with it (the callback
/// sets it; [`RxAction::Drop`] until then).
#[derive(Debug)]
pub struct RxFrame<'a> {
    /// The whole chunk.
    pub frame: &'a mut [u8],
    /// Start of the packet in it.
    pub offset: usize,
    /// The packet's length.
    pub len: usize,
    /// What to do with the frame after the callback.
    pub action: RxAction,
}

// SAFETY: the only non-`Send` part is xdpilone's `Umem`, for its raw
// pointer to the UMEM area. That area is our `_mem` mapping, owned by this
// struct and plain process memory (no thread affinity); every other handle
// to the UMEM, the socket and the rings (xdpilone's `Arc` clones) is a field
// of this same struct, so moving the struct moves all of them together and
// no other thread keeps access. Not `Sync`: the rings are single-producer /
// single-consumer and need `&mut self`.
unsafe impl Send for XskSocket {}

impl std::fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskSocket")
            .field("fd", &self.user.as_raw_fd())
            .field("frame_size", &self.frame_size)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl XskSocket {
    /// Creates the UMEM, the socket and its rings, fills the fill ring and
    /// binds to `queue` of `ifindex` (in the calling thread's namespace).
    /// Put [`XskSocket::as_fd`] into the program's `xsks` slot of `queue`
    /// for traffic to arrive.
    pub fn bind(ifindex: u32, queue: u32, cfg: &XskConfig) -> Result<Self, Error> {
        if cfg.frame_size != 2048 && cfg.frame_size != 4096 {
            return Err(Error::Xsk(format!(
                "frame size {} (2048 or 4096)",
                cfg.frame_size
            )));
        }
        if cfg.fill_ring <= cfg.rx_frames {
            return Err(Error::Xsk(
                "the fill ring must be larger than rx_frames".into(),
            ));
        }
        if cfg.extra_headroom as usize + XDP_PACKET_HEADROOM + 128 > cfg.frame_size as usize {
            return Err(Error::Xsk("headroom leaves no room for a frame".into()));
        }
        let fill = ring(cfg.fill_ring, "fill ring")?;
        let comp = ring(cfg.completion_ring, "completion ring")?;
        let rx_size = ring(cfg.rx_ring, "rx ring")?;
        let tx_size = ring(cfg.tx_ring, "tx ring")?;
        let frame_count = u64::from(cfg.rx_frames) + u64::from(cfg.tx_frames);
        let len = usize::try_from(frame_count * u64::from(cfg.frame_size))
            .map_err(|_| Error::Xsk("UMEM too large".into()))?;
        let mem =
            sys::Mmap::anonymous(len).map_err(|source| Error::Syscall { op: "mmap", source })?;
        let ucfg = UmemConfig {
            fill_size: fill.get(),
            complete_size: comp.get(),
            frame_size: cfg.frame_size,
            headroom: cfg.extra_headroom,
            flags: 0,
        };
        // SAFETY: `mem` is a fresh page-aligned mapping of `len` bytes that
        // this struct owns and drops after `umem` and every ring (field
        // order), so the area stays valid for the UMEM's whole life.
        let umem = unsafe { Umem::new(ucfg, mem.as_raw_slice()) }.map_err(xerr("XDP_UMEM_REG"))?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(ifindex).map_err(xerr("if_indextoname"))?;
        info.set_queue(queue);
        let sock = Socket::with_shared(&info, &umem).map_err(xerr("socket(AF_XDP)"))?;
        let device = umem.fq_cq(&sock).map_err(xerr("XDP_UMEM_FILL_RING"))?;
        let mut bind_flags = SocketConfig::XDP_BIND_NEED_WAKEUP;
        bind_flags |= match cfg.bind {
            BindMode::Copy => SocketConfig::XDP_BIND_COPY,
            BindMode::ZeroCopy => SocketConfig::XDP_BIND_ZEROCOPY,
            BindMode::Auto => 0,
        };
        let scfg = SocketConfig {
            rx_size: Some(rx_size),
            tx_size: Some(tx_size),
            bind_flags,
        };
        let user = umem.rx_tx(&sock, &scfg).map_err(xerr("XDP_RX_RING"))?;
        let rx = user.map_rx().map_err(xerr("mmap rx ring"))?;
        let tx = user.map_tx().map_err(xerr("mmap tx ring"))?;
        let fs = u64::from(cfg.frame_size);
        let rx_frames = u64::from(cfg.rx_frames);
        let mut s = Self {
            rx,
            tx,
            device,
            user,
            umem,
            _mem: mem,
            frame_size: fs,
            rx_frames,
            frame_count,
            data_offset: XDP_PACKET_HEADROOM + cfg.extra_headroom as usize,
            refill: (0..rx_frames).map(|i| i * fs).collect(),
            tx_free: (rx_frames..frame_count).map(|i| i * fs).collect(),
            tx_outstanding: 0,
            tx_batch: Vec::new(),
            lent: Vec::new(),
            lent_bits: vec![0; (frame_count as usize).div_ceil(64)],
            counters: XskCounters::default(),
        };
        s.refill_fill_ring();
        s.umem.bind(&s.user).map_err(xerr("bind(AF_XDP)"))?;
        Ok(s)
    }

    /// The socket descriptor, for the program's `xsks` map.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is owned by xdpilone's socket, which `self`
        // holds; the borrow cannot outlive `self`.
        unsafe { BorrowedFd::borrow_raw(self.user.as_raw_fd()) }
    }

    /// Where packet data starts in a received frame.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// Bytes per frame.
    pub fn frame_size(&self) -> usize {
        self.frame_size as usize
    }

    /// Our counters.
    pub fn counters(&self) -> XskCounters {
        self.counters
    }

    /// Receive frames waiting for room in the fill ring (normally 0).
    pub fn refill_pending(&self) -> usize {
        self.refill.len()
    }

    /// The kernel's counters for this socket.
    pub fn kernel_stats(&self) -> Result<KernelStats, Error> {
        let s = self
            .device
            .statistics_v2()
            .map_err(xerr("XDP_STATISTICS"))?;
        Ok(KernelStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// Moves waiting receive frames into the fill ring, as many as fit.
    ///
    /// A reservation may be smaller than the room the ring has: xdpilone
    /// re-reads the kernel's consumer index only once its cached view shows
    /// no room at all. Reserving again until a reservation comes back empty
    /// sees the real room.
    fn refill_fill_ring(&mut self) {
        while !self.refill.is_empty() {
            let n = u32::try_from(self.refill.len()).unwrap_or(u32::MAX);
            let mut w = self.device.fill(n);
            let start = self.refill.len() - w.capacity() as usize;
            let put = w.insert(self.refill[start..].iter().copied()) as usize;
            w.commit();
            drop(w);
            if put == 0 {
                break;
            }
            self.refill.truncate(self.refill.len() - put);
        }
        if self.device.needs_wakeup() {
            self.device.wake();
        }
    }

    /// Returns the frame holding `addr` to its pool: receive frames to
    /// the fill ring's list, transmit frames to the free list.
    fn recycle(&mut self, addr: u64) {
        let base = addr - addr % self.frame_size;
        if base < self.rx_frames * self.frame_size {
            self.refill.push(base);
        } else if base < self.frame_count * self.frame_size {
            self.tx_free.push(base);
        }
    }

    /// Reaps transmit completions: receive frames go back to the fill
    /// ring, transmit frames to the free list. Returns how many.
    pub fn complete(&mut self) -> usize {
        let mut n = 0;
        let mut c = self.device.complete(self.tx_outstanding.max(1));
        while let Some(addr) = c.read() {
            let base = addr - addr % self.frame_size;
            if base < self.rx_frames * self.frame_size {
                self.refill.push(base);
            } else if base < self.frame_count * self.frame_size {
                self.tx_free.push(base);
            }
            n += 1;
        }
        c.release();
        self.tx_outstanding = self.tx_outstanding.saturating_sub(n as u32);
        self.counters.completed += n as u64;
        n
    }

    /// Most `sendto` kicks per call of [`Self::kick_tx`].
    const MAX_KICKS: u32 = 64;

    /// Kicks the kernel to transmit what the tx ring holds. Copy mode sends
    /// only from `sendto`, and at most 32 descriptors per call (the
    /// kernel's `TX_BATCH_SIZE`, then `EAGAIN`): kicking once per batch
    /// would leave the rest in the ring until the next batch, which may
    /// be much later, and fill the ring under load. So this kicks until the
    /// kernel has taken everything, a kick makes no progress (the device is
    /// busy), or `MAX_KICKS`.
    fn kick_tx(&mut self) -> Result<(), Error> {
        if self.tx_outstanding == 0 {
            return Ok(());
        }
        for _ in 0..Self::MAX_KICKS {
            let before = self.tx.pending();
            if before == 0 || !self.tx.needs_wakeup() {
                break;
            }
            sys::xsk_kick(self.user.as_raw_fd()).map_err(|source| Error::Syscall {
                op: "sendto(AF_XDP)",
                source,
            })?;
            self.counters.kicks += 1;
            if self.tx.pending() >= before {
                break;
            }
        }
        Ok(())
    }

    /// Queues `self.tx_batch` on the tx ring (reserving again when a
    /// reservation is short: see [`Self::refill_fill_ring`]); what finds no
    /// room is dropped, its frame recycled. Returns how many were queued.
    fn queue_tx_batch(&mut self) -> u32 {
        let mut done = 0usize;
        while done < self.tx_batch.len() {
            let want = u32::try_from(self.tx_batch.len() - done).unwrap_or(u32::MAX);
            let mut tx = self.tx.transmit(want);
            let cap = tx.capacity() as usize;
            if cap == 0 {
                break;
            }
            for d in &self.tx_batch[done..done + cap] {
                tx.insert_once(*d);
            }
            tx.commit();
            done += cap;
        }
        let batch = std::mem::take(&mut self.tx_batch);
        for d in &batch[done..] {
            self.counters.tx_full += 1;
            self.recycle(d.addr);
        }
        self.tx_batch = batch;
        self.tx_batch.clear();
        u32::try_from(done).unwrap_or(u32::MAX)
    }

    /// Waits until the rx ring has something or `timeout` passes.
    pub fn wait_rx(&mut self, timeout: Duration) -> Result<bool, Error> {
        if self.rx.available() > 0 {
            return Ok(true);
        }
        crate::poll_readable(self.user.as_raw_fd(), timeout).map_err(|source| Error::Syscall {
            op: "poll(AF_XDP)",
            source,
        })
    }

    /// Carries out what the caller decided for a received chunk at `base`:
    /// queue it for transmission (its range checked against the chunk), or
    /// give it back to the fill ring.
    fn carry_out(&mut self, base: u64, action: RxAction) {
        Self::carry_out_in(
            self.frame_size,
            &mut self.counters,
            &mut self.refill,
            &mut self.tx_batch,
            base,
            action,
        );
    }

    /// [`Self::carry_out`] on the socket's parts (for use while its rx ring
    /// is borrowed).
    fn carry_out_in(
        frame_size: u64,
        counters: &mut XskCounters,
        refill: &mut Vec<u64>,
        tx_batch: &mut Vec<XdpDesc>,
        base: u64,
        action: RxAction,
    ) {
        let fs = frame_size as usize;
        match action {
            RxAction::Transmit { offset, len } => {
                let fits = offset.checked_add(len).is_some_and(|e| e <= fs);
                if !fits || len == 0 {
                    counters.tx_bad_range += 1;
                    refill.push(base);
                } else {
                    tx_batch.push(XdpDesc {
                        addr: base + offset as u64,
                        len: len as u32,
                        options: 0,
                    });
                }
            }
            RxAction::Drop => {
                counters.dropped += 1;
                refill.push(base);
            }
            RxAction::Copied => {
                counters.copied += 1;
                refill.push(base);
            }
        }
    }

    /// Reads up to `max` received frames and calls `f(frame, offset, len)`
    /// for each: `frame` is the whole chunk (headroom included), the packet
    /// is `frame[offset..offset + len]`. Frames the callback transmits are
    /// queued on the tx ring; the others go back to the fill ring. Also
    /// reaps completions and kicks transmission. Returns frames read.
    pub fn rx_batch(
        &mut self,
        max: u32,
        mut f: impl FnMut(&mut [u8], usize, usize) -> RxAction,
    ) -> Result<usize, Error> {
        self.complete();
        let fs = self.frame_size;
        let umem_end = self.frame_count * fs;
        let mut read = 0;
        {
            let mut rx = self.rx.receive(max);
            while let Some(desc) = rx.read() {
                read += 1;
                let base = desc.addr - desc.addr % fs;
                let off = (desc.addr - base) as usize;
                let len = desc.len as usize;
                if base >= umem_end || off + len > fs as usize {
                    self.counters.bad_desc += 1;
                    continue;
                }
                let Some(chunk) = self.umem.frame(BufIdx((base / fs) as u32)) else {
                    self.counters.bad_desc += 1;
                    continue;
                };
                // SAFETY: the kernel handed this chunk to us through the rx
                // ring and touches it again only after we put it in the fill
                // or tx ring, below; `umem.frame` bounds-checked it against
                // the mapping, which outlives this borrow; no other slice of
                // this chunk exists (one callback at a time).
                let frame = unsafe { &mut *chunk.addr.as_ptr() };
                let action = f(frame, off, len);
                Self::carry_out_in(
                    fs,
                    &mut self.counters,
                    &mut self.refill,
                    &mut self.tx_batch,
                    base,
                    action,
                );
            }
            rx.release();
        }
        let queued = self.queue_tx_batch();
        self.counters.rx += read as u64;
        self.counters.tx_forwarded += u64::from(queued);
        self.tx_outstanding += queued;
        self.refill_fill_ring();
        self.kick_tx()?;
        Ok(read)
    }

    /// [`Self::rx_batch`], lending the frames together: reads up to `max`
    /// received frames and calls `f` once with all of them, so the caller
    /// can process them as a batch (the engine overlaps their table
    /// look-ups); then each frame's [`RxFrame::action`] is carried out as
    /// in `rx_batch`. A descriptor outside the UMEM, or naming a chunk
    /// already lent in this batch, is counted in `bad_desc` and its chunk
    /// not lent (twice). Returns frames read.
    pub fn rx_lend(
        &mut self,
        max: u32,
        f: impl FnOnce(&mut [RxFrame<'_>]),
    ) -> Result<usize, Error> {
        self.complete();
        let fs = self.frame_size;
        let umem_end = self.frame_count * fs;
        let mut read = 0;
        let mut lent = std::mem::take(&mut self.lent);
        lent.clear();
        let mut offs: [(u32, u32); 64] = [(0, 0); 64];
        {
            // At most 64 at a time: the offsets live on the stack.
            let mut rx = self.rx.receive(max.min(64));
            while let Some(desc) = rx.read() {
                read += 1;
                let base = desc.addr - desc.addr % fs;
                let off = desc.addr - base;
                let len = u64::from(desc.len);
                let idx = (base / fs) as usize;
                let (word, bit) = (idx / 64, 1u64 << (idx % 64));
                let taken = self.lent_bits.get(word).is_none_or(|w| w & bit != 0);
                let slot = offs.get_mut(lent.len());
                let (Some(o), Some(w)) = (slot, self.lent_bits.get_mut(word)) else {
                    self.counters.bad_desc += 1;
                    continue;
                };
                if base >= umem_end || off + len > fs || taken {
                    self.counters.bad_desc += 1;
                    continue;
                }
                *w |= bit;
                *o = (off as u32, len as u32);
                lent.push(base);
            }
            rx.release();
        }
        let mut frames: Vec<RxFrame<'_>> = Vec::with_capacity(lent.len());
        for (i, &base) in lent.iter().enumerate() {
            // `base` is inside the UMEM (checked above), so `umem.frame`
            // finds it; were it not to, the frame would be lent empty.
            let frame: &mut [u8] = match self.umem.frame(BufIdx((base / fs) as u32)) {
                // SAFETY: the kernel handed this chunk to us through the rx
                // ring and touches it again only after we put it in the
                // fill or tx ring, below, after the last use of these
                // slices; `umem.frame` bounds-checked it against the
                // mapping, which outlives this borrow; and the chunks lent
                // together are distinct (`lent_bits` above), so no two of
                // these slices overlap.
                Some(chunk) => unsafe { &mut *chunk.addr.as_ptr() },
                None => &mut [],
            };
            let (off, len) = offs[i];
            frames.push(RxFrame {
                frame,
                offset: off as usize,
                len: len as usize,
                action: RxAction::Drop,
            });
        }
        f(&mut frames);
        for (&base, r) in lent.iter().zip(frames) {
            self.carry_out(base, r.action);
        }
        for &base in &lent {
            let idx = (base / fs) as usize;
            if let Some(w) = self.lent_bits.get_mut(idx / 64) {
                *w &= !(1u64 << (idx % 64));
            }
        }
        self.lent = lent;
        let queued = self.queue_tx_batch();
        self.counters.rx += read as u64;
        self.counters.tx_forwarded += u64::from(queued);
        self.tx_outstanding += queued;
        self.refill_fill_ring();
        self.kick_tx()?;
        Ok(read)
    }

    /// Copies each frame into a transmit frame and queues it; one kick for
    /// all. Returns how many were queued (fewer when the free list or the
    /// tx ring ran out: the rest were not sent).
    pub fn tx_copy_many<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<usize, Error> {
        if self.tx_free.is_empty() {
            self.complete();
        }
        let max_len = self.frame_size as usize - self.data_offset;
        for bytes in frames {
            if bytes.len() > max_len || bytes.is_empty() {
                self.counters.tx_bad_range += 1;
                continue;
            }
            let Some(base) = self.tx_free.pop() else {
                self.counters.tx_full += 1;
                break;
            };
            let Some(chunk) = self.umem.frame(BufIdx((base / self.frame_size) as u32)) else {
                continue;
            };
            // SAFETY: `base` came from the free list, so the kernel does
            // not own this chunk (not in any ring); `umem.frame` checked
            // its bounds; the mapping outlives this borrow.
            let frame = unsafe { &mut *chunk.addr.as_ptr() };
            frame[self.data_offset..self.data_offset + bytes.len()].copy_from_slice(bytes);
            self.tx_batch.push(XdpDesc {
                addr: base + self.data_offset as u64,
                len: bytes.len() as u32,
                options: 0,
            });
        }
        let queued = self.queue_tx_batch() as usize;
        self.counters.tx_copied += queued as u64;
        self.tx_outstanding += queued as u32;
        self.kick_tx()?;
        Ok(queued)
    }

    /// Copies one frame out (see [`XskSocket::tx_copy_many`]); `Ok(false)`
    /// when there was no room.
    pub fn tx_copy(&mut self, frame: &[u8]) -> Result<bool, Error> {
        Ok(self.tx_copy_many(std::iter::once(frame))? == 1)
    }

    /// Frames queued for transmit and not yet completed.
    pub fn tx_outstanding(&self) -> u32 {
        self.tx_outstanding
    }

    /// Kicks and reaps until every queued transmit completed or `timeout`
    /// passed; returns whether all completed.
    pub fn drain_tx(&mut self, timeout: Duration) -> Result<bool, Error> {
        let end = std::time::Instant::now() + timeout;
        while self.tx_outstanding > 0 {
            self.kick_tx()?;
            if self.complete() == 0 {
                if std::time::Instant::now() >= end {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        self.refill_fill_ring();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_can_move_to_a_worker_thread() {
        fn send<T: Send>() {}
        send::<XskSocket>();
    }

    #[test]
    fn refuses_bad_sizes() {
        let bad = |c: XskConfig| matches!(XskSocket::bind(1, 0, &c), Err(Error::Xsk(_)));
        assert!(bad(XskConfig {
            frame_size: 1000,
            ..XskConfig::default()
        }));
        assert!(bad(XskConfig {
            fill_ring: 2048,
            rx_frames: 2048,
            ..XskConfig::default()
        }));
        assert!(bad(XskConfig {
            rx_ring: 1000,
            ..XskConfig::default()
        }));
        assert!(bad(XskConfig {
            extra_headroom: 1800,
            ..XskConfig::default()
        }));
    }
}
