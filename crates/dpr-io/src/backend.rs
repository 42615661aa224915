//! The queue trait every backend implements, and the batch it fills.

use std::io;
use std::time::Duration;

/// Headroom reserved before every received packet: room for the outer
/// header of IP-in-IP (`dpr_packet::ipip::MAX_OVERHEAD` is 40) and more.
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
    /// Transmit this frame on the next [`Backend::send_batch`].
    pub transmit: bool,
}

impl Frame {
    fn new(size: usize) -> Self {
        Self {
            data: vec![0u8; size].into_boxed_slice(),
            start: 0,
            end: 0,
            transmit: false,
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

/// What a [`Backend::send_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOutcome {
    /// Frames handed to the device.
    pub sent: usize,
    /// Frames the device refused (counted, not retried).
    pub failed: usize,
}

/// One queue of a packet backend: receive a batch, transmit a batch. One
/// worker thread owns one queue; queues of one device share nothing.
pub trait Backend: Send {
    /// Waits up to `timeout` for packets, then receives as many as are
    /// ready and fit, without waiting again. `batch` is cleared first.
    /// Returns the number received (0 on timeout).
    fn recv_batch(&mut self, batch: &mut Batch, timeout: Duration) -> io::Result<usize>;

    /// Transmits every frame of `batch` whose `transmit` flag is set. A
    /// frame the device refuses is counted in `failed`; an error is
    /// returned only when the queue itself is broken.
    fn send_batch(&mut self, batch: &Batch) -> io::Result<TxOutcome>;

    /// A short name for logs ("tun", "mem", "af-xdp").
    fn kind(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

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
