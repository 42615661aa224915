//! The TUN backend: a multi-queue TUN device, one queue per worker thread.
//!
//! Receive waits once (`poll`) and then reads every packet that is ready,
//! up to the batch size, without waiting again, so the engine is locked
//! once per burst rather than once per packet. TUN has no batched write
//! without the virtio-net offload header, so transmit writes frame by
//! frame; a frame the kernel refuses (`EINVAL` for a packet it cannot
//! parse, for instance) is counted and skipped.

use crate::backend::{Batch, BatchIo};
use crate::sys::{self, RealTun, TunSys};
use std::io;
use std::time::Duration;

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
        let first = tun_rs::DeviceBuilder::new()
            .name(&cfg.name)
            .mtu(cfg.mtu)
            .multi_queue(true)
            .packet_information(false)
            .enable(true)
            .build_sync()
            .map_err(|e| {
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
        let mut queues = Vec::with_capacity(devs.len());
        for d in devs {
            d.set_nonblocking(true)?;
            queues.push(TunQueue::new(RealTun(d)));
        }
        let ifindex = sys::if_index(&cfg.name)?;
        Ok(Self {
            name: cfg.name.clone(),
            ifindex,
            mtu: cfg.mtu,
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
}

impl<S: TunSys> TunQueue<S> {
    /// A queue over `sys`.
    pub fn new(sys: S) -> Self {
        Self { sys }
    }

    /// The syscall layer underneath (the AF_XDP backend writes single
    /// packets into the device through it).
    pub fn into_inner(self) -> S {
        self.sys
    }
}

impl<S: TunSys> BatchIo for TunQueue<S> {
    fn recv_batch(&mut self, batch: &mut Batch, timeout: Duration) -> io::Result<usize> {
        batch.clear();
        if !self.sys.wait_readable(timeout)? {
            return Ok(0);
        }
        while let Some(area) = batch.next_free() {
            match self.sys.try_recv(area) {
                Ok(0) => break,
                Ok(n) => batch.commit(n),
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

    fn kind(&self) -> &'static str {
        "tun"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TxOutcome;
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
}
