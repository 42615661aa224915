//! The in-memory backend: two queues shared with a test (or a simulator)
//! through a [`MemHandle`]. Packets the handle injects are received; every
//! transmitted frame is recorded.

use crate::backend::{Batch, BatchIo};
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

#[derive(Debug, Default)]
struct Shared {
    rx: Mutex<VecDeque<Vec<u8>>>,
    ready: Condvar,
    tx: Mutex<Vec<Vec<u8>>>,
}

/// The backend side.
#[derive(Debug)]
pub struct MemBackend {
    shared: Arc<Shared>,
}

/// The test side: inject packets, collect what was transmitted.
#[derive(Debug, Clone)]
pub struct MemHandle {
    shared: Arc<Shared>,
}

/// A connected backend and handle.
pub fn pair() -> (MemBackend, MemHandle) {
    let shared = Arc::new(Shared::default());
    (
        MemBackend {
            shared: shared.clone(),
        },
        MemHandle { shared },
    )
}

impl MemHandle {
    /// Queues a packet for the backend to receive.
    pub fn inject(&self, packet: Vec<u8>) {
        self.shared
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(packet);
        self.shared.ready.notify_all();
    }

    /// Takes every packet transmitted so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(
            &mut *self
                .shared
                .tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Packets injected but not yet received.
    pub fn pending(&self) -> usize {
        self.shared
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl BatchIo for MemBackend {
    fn recv_batch(&mut self, batch: &mut Batch, timeout: Duration) -> io::Result<usize> {
        batch.clear();
        let rx = self
            .shared
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (mut rx, _) = self
            .shared
            .ready
            .wait_timeout_while(rx, timeout, |q| q.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        while let Some(p) = rx.front() {
            if !batch.push(p) {
                if batch.is_empty() {
                    // Larger than a frame: a real device would truncate it.
                    rx.pop_front();
                    continue;
                }
                break;
            }
            rx.pop_front();
        }
        Ok(batch.len())
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.shared
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(packet.to_vec());
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "mem"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (mut be, h) = pair();
        h.inject(vec![1, 2, 3]);
        h.inject(vec![4]);
        let mut b = Batch::new(8, 4, 16);
        assert_eq!(
            be.recv_batch(&mut b, Duration::from_millis(10)).ok(),
            Some(2)
        );
        b.frames_mut()[1].transmit = true;
        assert_eq!(be.send_batch(&b).ok().map(|o| o.sent), Some(1));
        assert_eq!(h.take_sent(), vec![vec![4]]);
        assert_eq!(
            be.recv_batch(&mut b, Duration::from_millis(1)).ok(),
            Some(0)
        );
    }
}
