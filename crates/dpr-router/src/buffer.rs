//! The packet buffer the engine works in: the caller's bytes with headroom.

use std::ops::Range;

/// A packet in a caller-owned buffer: the IP packet is `buf[start..end]`
/// and `buf[..start]` is headroom the engine may write an outer header
/// into. After [`crate::Engine::process`] the range holds the bytes the
/// verdict is about (the outer packet, the inner packet, or a reply).
#[derive(Debug)]
pub struct PacketBuf<'a> {
    buf: &'a mut [u8],
    start: usize,
    end: usize,
}

impl<'a> PacketBuf<'a> {
    /// The packet `buf[start..end]`; `None` when the range is not inside `buf`.
    pub fn new(buf: &'a mut [u8], start: usize, end: usize) -> Option<Self> {
        (start <= end && end <= buf.len()).then_some(Self { buf, start, end })
    }

    /// The packet's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The packet's bytes, mutable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// The packet's position in the buffer.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }

    /// Bytes free before the packet.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Bytes free after the packet.
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.end
    }

    pub(crate) fn whole_mut(&mut self) -> &mut [u8] {
        self.buf
    }

    pub(crate) fn set_range(&mut self, r: Range<usize>) {
        debug_assert!(r.start <= r.end && r.end <= self.buf.len());
        self.start = r.start;
        self.end = r.end;
    }
}
