//! The queue trait every backend implements, and the batch it fills.

use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;

/// Headroom reserved before every received packet: room for the outer
/// header of IP-in-IP or GRE (`dpr_packet::ipip::MAX_OVERHEAD` is 52) and more.
pub const DEFAULT_HEADROOM: usize = 64;

/// One packet buffer: the packet is `data[start..end]`, `data[..start]`
/// is headroom. After the engine ran, `start..end` is what to transmit.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The buffer (headroom, packet, tailroom).
    pub data: Box<[u8]>,
    /// First byte of the packet.
    pub start: usize,
    /// One past its last byte.
    pub end: usize,
    /// Transmit this frame on the next [`BatchIo::send_batch`].
    pub transmit: bool,
    /// Where a frame to transmit goes: `Some(peer)` out of the uplink
    /// towards that neighbour ([`Egress::Peer`]), `None` to the kernel.
    pub next_hop: Option<IpAddr>,
}

impl Frame {
    fn new(size: usize) -> Self {
        Self {
            data: vec![0u8; size].into_boxed_slice(),
            start: 0,
            end: 0,
            transmit: false,
            next_hop: None,
        }
    }

    /// The packet's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.data.get(self.start..self.end).unwrap_or(&[])
    }
}

/// A batch of frames, allocated once and reused for every receive.
#[derive(Debug)]
pub struct Batch {
    frames: Vec<Frame>,
    len: usize,
    headroom: usize,
}

impl Batch {
    /// `capacity` frames of `headroom + mtu` bytes each.
    pub fn new(capacity: usize, headroom: usize, mtu: usize) -> Self {
        Self {
            frames: (0..capacity.max(1))
                .map(|_| Frame::new(headroom + mtu))
                .collect(),
            len: 0,
            headroom,
        }
    }

    /// Frames this batch can hold.
    pub fn capacity(&self) -> usize {
        self.frames.len()
    }

    /// Frames received into it.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No frames.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Headroom of every frame.
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// Forgets the frames (keeps the buffers).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The received frames.
    pub fn frames(&self) -> &[Frame] {
        &self.frames[..self.len]
    }

    /// The received frames, mutable (the engine rewrites them in place).
    pub fn frames_mut(&mut self) -> &mut [Frame] {
        &mut self.frames[..self.len]
    }

    /// The receive area of the next free frame (after its headroom), or
    /// `None` when the batch is full. Call [`Self::commit`] with the number
    /// of bytes written to keep it.
    pub fn next_free(&mut self) -> Option<&mut [u8]> {
        let h = self.headroom;
        self.frames.get_mut(self.len).map(|f| &mut f.data[h..])
    }

    /// Keeps the frame [`Self::next_free`] returned, holding `n` bytes.
    pub fn commit(&mut self, n: usize) {
        let h = self.headroom;
        if let Some(f) = self.frames.get_mut(self.len) {
            f.start = h;
            f.end = (h + n).min(f.data.len());
            f.transmit = false;
            f.next_hop = None;
            self.len += 1;
        }
    }

    /// Copies `packet` into the next free frame (tests and the in-memory
    /// backend). Returns false when the batch is full or the packet too big.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        match self.next_free() {
            Some(area) if area.len() >= packet.len() => {
                area[..packet.len()].copy_from_slice(packet);
                self.commit(packet.len());
                true
            }
            _ => false,
        }
    }
}

/// What a [`BatchIo::send_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOutcome {
    /// Frames handed to the device.
    pub sent: usize,
    /// Frames the device refused (counted, not retried).
    pub failed: usize,
}

/// Where a packet lent by [`Backend::rx_tx`] goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Egress {
    /// Out of the uplink towards `next_hop` (a peer's tunnel address); the
    /// packet (IP-in-IP) is `range` of the buffer. A backend without its
    /// own link (TUN) hands it to the kernel, which routes it there.
    Peer {
        /// Neighbour to send to.
        next_hop: IpAddr,
        /// The IP packet within the buffer.
        range: Range<usize>,
    },
    /// To the kernel (local delivery, replies, anything not the router's).
    Kernel(Range<usize>),
    /// Nowhere.
    Drop,
}

/// What one [`Backend::rx_tx`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxTx {
    /// Packets received (and lent to the handler).
    pub received: usize,
    /// Packets transmitted (to the kernel or the link).
    pub sent: usize,
    /// Packets the device refused (counted, not retried).
    pub failed: usize,
}

/// One packet of a batch lent by [`Backend::rx_tx_batch`]: the whole
/// buffer (headroom before the packet, room after it), the packet's range
/// in it, and where it goes (the handler sets it; [`Egress::Drop`] until then).
#[derive(Debug)]
pub struct Lent<'a> {
    /// The buffer.
    pub buf: &'a mut [u8],
    /// The packet within it.
    pub range: Range<usize>,
    /// Where the packet goes.
    pub egress: Egress,
}

/// One queue of a packet backend: it lends the packets it receives, in
/// buffers with headroom, to a handler that rewrites them in place and says
/// where each goes; it transmits them from the same buffers (the rx / tx
/// split of s2n-quic's `io` layer, with the engine between). One worker
/// thread owns one queue; queues of one device share nothing.
pub trait Backend: Send {
    /// A short name for logs ("tun", "mem", "af-xdp").
    fn kind(&self) -> &'static str;

    /// Waits up to `timeout` for received packets. True when some are
    /// ready for [`Self::rx_tx`].
    fn wait(&mut self, timeout: Duration) -> io::Result<bool>;

    /// Lends up to `max` received packets, one at a time, to `handler`:
    /// the whole buffer (headroom before the packet, room after it) and the
    /// packet's range in it. The handler may rewrite the buffer and
    /// returns the packet's [`Egress`]; the backend transmits it from
    /// there. Never waits.
    fn rx_tx<F>(&mut self, max: usize, handler: F) -> io::Result<RxTx>
    where
        F: FnMut(&mut [u8], Range<usize>) -> Egress;

    /// [`Self::rx_tx`], lending the received packets together, so that the
    /// handler can process them as a batch (the engine overlaps their
    /// table look-ups): it sets each one's [`Lent::egress`]. A backend
    /// that receives one packet at a time lends batches of one (the
    /// default).
    fn rx_tx_batch<F>(&mut self, max: usize, mut handler: F) -> io::Result<RxTx>
    where
        F: FnMut(&mut [Lent<'_>]),
    {
        self.rx_tx(max, |buf, range| {
            let mut one = [Lent {
                buf,
                range,
                egress: Egress::Drop,
            }];
            handler(&mut one);
            let [l] = one;
            l.egress
        })
    }

    /// Transmits a packet this queue did not receive (another worker
    /// received it and handed it over): `packet[range]` where `egress`
    /// says. Returns false when the device refused it.
    fn transmit(&mut self, packet: &mut [u8], egress: Egress) -> io::Result<bool>;

    /// Housekeeping between batches, off the per-packet path (neighbour
    /// look-ups, the kernel's socket counters); adds what the backend
    /// counts itself to `stats`.
    fn maintain(&mut self, _stats: &crate::worker::WorkerStats) {}

    /// The keyed tunnel's flows the engine accepted from peers or saw end
    /// ([`dpr_router::Engine::take_keyed_flow_events`]), after each batch:
    /// a backend with an in-kernel fast path (AF_XDP) lets it pass them.
    fn keyed_flows(&mut self, _events: &[dpr_router::KeyedFlowEvent]) {}

    /// After each batch, for a backend with an in-kernel send fast path
    /// (AF_XDP): `seen(flow, active)` tells the engine that the fast path
    /// forwarded packets of a redirected `flow` (with `active`), or only
    /// asks whether it still routes it; false: the fast path forgets it.
    fn fast_path(&mut self, _seen: &mut dyn FnMut(&dpr_packet::FlowKey, bool) -> bool) {}

    /// The worker is stopping: finish what is in flight.
    fn close(&mut self) {}
}

/// A device read into and written from a [`Batch`] of owned buffers (a
/// TUN queue, the in-memory queue); [`BatchBackend`] makes it a
/// [`Backend`].
pub trait BatchIo: Send {
    /// A short name for logs.
    fn kind(&self) -> &'static str;

    /// Waits up to `timeout` for packets, then receives as many as are
    /// ready and fit, without waiting again. `batch` is cleared first.
    /// Returns the number received (0 on timeout).
    fn recv_batch(&mut self, batch: &mut Batch, timeout: Duration) -> io::Result<usize>;

    /// Writes one packet. An error is a refusal (a full device queue).
    fn send(&mut self, packet: &[u8]) -> io::Result<()>;

    /// Housekeeping between batches: adds what the device counts itself
    /// to `stats`.
    fn maintain(&mut self, _stats: &crate::worker::WorkerStats) {}

    /// Transmits every frame of `batch` whose `transmit` flag is set (to
    /// its `next_hop`, or the kernel); a frame the device refuses is
    /// counted in `failed`.
    fn send_batch(&mut self, batch: &Batch) -> io::Result<TxOutcome> {
        let mut out = TxOutcome::default();
        for f in batch.frames().iter().filter(|f| f.transmit) {
            match self.send(f.bytes()) {
                Ok(()) => out.sent += 1,
                Err(_) => out.failed += 1,
            }
        }
        Ok(out)
    }
}

/// A [`BatchIo`] device as a [`Backend`]: it owns the batch it lends.
#[derive(Debug)]
pub struct BatchBackend<D: BatchIo> {
    dev: D,
    batch: Batch,
}

impl<D: BatchIo> BatchBackend<D> {
    /// `dev` with a batch of `batch` buffers of [`DEFAULT_HEADROOM`] +
    /// `mtu` bytes.
    pub fn new(dev: D, batch: usize, mtu: usize) -> Self {
        Self {
            dev,
            batch: Batch::new(batch, DEFAULT_HEADROOM, mtu),
        }
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }
}

impl<D: BatchIo> Backend for BatchBackend<D> {
    fn kind(&self) -> &'static str {
        self.dev.kind()
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.batch.is_empty() {
            self.dev.recv_batch(&mut self.batch, timeout)?;
        }
        Ok(!self.batch.is_empty())
    }

    /// Lends the whole batch (its capacity bounds it, not `_max`), then
    /// transmits what the handler said to in one [`BatchIo::send_batch`].
    fn rx_tx<F>(&mut self, _max: usize, mut handler: F) -> io::Result<RxTx>
    where
        F: FnMut(&mut [u8], Range<usize>) -> Egress,
    {
        if self.batch.is_empty() {
            self.dev.recv_batch(&mut self.batch, Duration::ZERO)?;
        }
        let mut out = RxTx::default();
        let Self { dev, batch } = self;
        for f in batch.frames_mut() {
            out.received += 1;
            f.transmit = false;
            let range = f.start..f.end;
            let (r, hop) = match handler(&mut f.data, range) {
                Egress::Drop => continue,
                Egress::Kernel(r) => (r, None),
                Egress::Peer { range: r, next_hop } => (r, Some(next_hop)),
            };
            if r.start <= r.end && r.end <= f.data.len() {
                (f.start, f.end, f.transmit, f.next_hop) = (r.start, r.end, true, hop);
            } else {
                out.failed += 1;
            }
        }
        let tx = dev.send_batch(batch)?;
        out.sent += tx.sent;
        out.failed += tx.failed;
        batch.clear();
        Ok(out)
    }

    /// Lends the whole batch at once (its capacity bounds it, not `_max`),
    /// then transmits what the handler said to in one
    /// [`BatchIo::send_batch`].
    fn rx_tx_batch<F>(&mut self, _max: usize, mut handler: F) -> io::Result<RxTx>
    where
        F: FnMut(&mut [Lent<'_>]),
    {
        if self.batch.is_empty() {
            self.dev.recv_batch(&mut self.batch, Duration::ZERO)?;
        }
        let Self { dev, batch } = self;
        let mut out = RxTx::default();
        let egress: Vec<Egress> = {
            let mut lent: Vec<Lent<'_>> = batch
                .frames_mut()
                .iter_mut()
                .map(|f| Lent {
                    range: f.start..f.end,
                    buf: &mut f.data,
                    egress: Egress::Drop,
                })
                .collect();
            handler(&mut lent);
            lent.into_iter().map(|l| l.egress).collect()
        };
        for (f, e) in batch.frames_mut().iter_mut().zip(egress) {
            out.received += 1;
            f.transmit = false;
            let (r, hop) = match e {
                Egress::Drop => continue,
                Egress::Kernel(r) => (r, None),
                Egress::Peer { range: r, next_hop } => (r, Some(next_hop)),
            };
            if r.start <= r.end && r.end <= f.data.len() {
                (f.start, f.end, f.transmit, f.next_hop) = (r.start, r.end, true, hop);
            } else {
                out.failed += 1;
            }
        }
        let tx = dev.send_batch(batch)?;
        out.sent += tx.sent;
        out.failed += tx.failed;
        batch.clear();
        Ok(out)
    }

    fn maintain(&mut self, stats: &crate::worker::WorkerStats) {
        self.dev.maintain(stats);
    }

    fn transmit(&mut self, packet: &mut [u8], egress: Egress) -> io::Result<bool> {
        let r = match egress {
            Egress::Drop => return Ok(true),
            Egress::Kernel(r) | Egress::Peer { range: r, .. } => r,
        };
        Ok(packet.get(r).is_some_and(|b| self.dev.send(b).is_ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that can only lend one packet at a time (as AF_XDP does).
    struct OneByOne {
        packets: Vec<Vec<u8>>,
        egress: Vec<Egress>,
    }

    impl Backend for OneByOne {
        fn kind(&self) -> &'static str {
            "one-by-one"
        }
        fn wait(&mut self, _: Duration) -> io::Result<bool> {
            Ok(!self.packets.is_empty())
        }
        fn rx_tx<F>(&mut self, max: usize, mut handler: F) -> io::Result<RxTx>
        where
            F: FnMut(&mut [u8], Range<usize>) -> Egress,
        {
            let mut out = RxTx::default();
            for mut p in self.packets.drain(..).take(max) {
                out.received += 1;
                let r = 4..p.len();
                self.egress.push(handler(&mut p, r));
            }
            Ok(out)
        }
        fn transmit(&mut self, _: &mut [u8], _: Egress) -> io::Result<bool> {
            Ok(true)
        }
    }

    /// The default `rx_tx_batch` lends batches of one and returns the
    /// egress each handler call set (`Drop` when it set none).
    #[test]
    fn the_default_batch_is_one_packet_at_a_time() {
        let mut b = OneByOne {
            packets: vec![vec![0; 10], vec![1; 12], vec![2; 14]],
            egress: Vec::new(),
        };
        let mut sizes = Vec::new();
        let out = b
            .rx_tx_batch(8, |lent| {
                sizes.push(lent.len());
                for l in lent.iter_mut() {
                    if l.buf[0] != 1 {
                        l.egress = Egress::Kernel(l.range.clone());
                    }
                }
            })
            .unwrap();
        assert_eq!(out.received, 3);
        assert_eq!(sizes, [1, 1, 1]);
        assert_eq!(
            b.egress,
            [Egress::Kernel(4..10), Egress::Drop, Egress::Kernel(4..14)]
        );
    }

    #[test]
    fn push_commit_and_clear() {
        let mut b = Batch::new(2, 8, 16);
        assert!(b.push(&[1, 2, 3]));
        assert!(b.push(&[4; 16]));
        assert!(!b.push(&[5]), "full");
        assert_eq!(b.len(), 2);
        assert_eq!(b.frames()[0].bytes(), &[1, 2, 3]);
        assert_eq!(b.frames()[0].start, 8);
        b.clear();
        assert!(b.is_empty());
        assert!(!b.push(&[0; 17]), "too big for the frame");
    }
}
