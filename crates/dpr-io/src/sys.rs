//! Every system call of `dpr-io`, in one small module: the only one where
//! `unsafe` is allowed. Each block says why it is sound.
//!
//! The TUN backend reaches its device through [`TunSys`], implemented by
//! [`RealTun`] (a `tun-rs` queue plus `poll(2)`) and by [`FakeTun`]
//! (in-memory, for tests: scripted packets in, written packets out, and
//! injected write failures).
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What the TUN backend needs from one device queue.
pub trait TunSys: Send {
    /// Waits up to `timeout` for the queue to become readable.
    fn wait_readable(&self, timeout: Duration) -> io::Result<bool>;
    /// Reads one frame without blocking (`WouldBlock` when none): with the
    /// virtio-net header on ([`Self::vnet_hdr`]), the header and the packet.
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Reads one frame into `bufs`, in order (`readv(2)`), without blocking.
    fn try_recv_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize>;
    /// Writes one IP packet (with the virtio-net header on, a header saying
    /// "no offload" goes in front of it).
    fn send(&self, buf: &[u8]) -> io::Result<usize>;
    /// Whether every frame read or written carries a virtio-net header
    /// (`IFF_VNET_HDR`, with TCP segmentation and checksum offloads).
    fn vnet_hdr(&self) -> bool {
        false
    }
    /// Sends IPv4 packets (with their own headers) out through the host's
    /// routing, `packets[i]` towards `next_hops[i]`, in as few system calls
    /// as the kernel allows (`sendmmsg(2)` on a raw socket). Returns how
    /// many were taken, from the first; an error only when none was.
    /// `Unsupported` where the queue has no such socket.
    fn send_routed_v4(&self, _packets: &[&[u8]], _next_hops: &[Ipv4Addr]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Whether [`Self::send_routed_v4`] can send at all.
    fn has_routed_v4(&self) -> bool {
        false
    }
    /// Writes one packet with its own virtio-net header `hdr` (a
    /// super-packet for the local stack). `Unsupported` without the header.
    fn send_gso(&self, _hdr: &[u8], _packet: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Waits up to `timeout` for a descriptor to become readable: the
/// workspace's one poll helper, which lives in `dpr-xdp` (the lower crate;
/// its AF_XDP sockets use it too).
pub use dpr_xdp::poll_readable;

/// One queue of a real TUN device, with the raw socket its forwards may
/// leave through.
pub struct RealTun {
    /// The queue.
    pub dev: tun_rs::SyncDevice,
    /// Frames carry a virtio-net header.
    pub vnet: bool,
    /// A raw IPv4 socket (`IPPROTO_RAW`) for forwards, if it could be made.
    pub raw: Option<RawEgress>,
}

impl std::fmt::Debug for RealTun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RealTun(fd {}, vnet {}, raw {:?})",
            self.dev.as_raw_fd(),
            self.vnet,
            self.raw
        )
    }
}

/// The header of a packet written with no offload asked (all zero).
const VNET_NONE: [u8; dpr_packet::virtio::HDR_LEN] = [0; dpr_packet::virtio::HDR_LEN];

impl TunSys for RealTun {
    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        poll_readable(self.dev.as_raw_fd(), timeout)
    }
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.dev.recv(buf)
    }
    fn try_recv_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        self.dev.recv_vectored(bufs)
    }
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        if self.vnet {
            let n = self
                .dev
                .send_vectored(&[io::IoSlice::new(&VNET_NONE), io::IoSlice::new(buf)])?;
            Ok(n.saturating_sub(VNET_NONE.len()))
        } else {
            self.dev.send(buf)
        }
    }
    fn vnet_hdr(&self) -> bool {
        self.vnet
    }
    fn has_routed_v4(&self) -> bool {
        self.raw.is_some()
    }
    fn send_gso(&self, hdr: &[u8], packet: &[u8]) -> io::Result<usize> {
        if !self.vnet {
            return Err(io::ErrorKind::Unsupported.into());
        }
        let n = self
            .dev
            .send_vectored(&[io::IoSlice::new(hdr), io::IoSlice::new(packet)])?;
        Ok(n.saturating_sub(hdr.len()))
    }
    fn send_routed_v4(&self, packets: &[&[u8]], next_hops: &[Ipv4Addr]) -> io::Result<usize> {
        match &self.raw {
            Some(r) => r.send_many(packets, next_hops),
            None => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

/// Sets a TUN device's offloads (`TUNSETOFFLOAD`, `TUN_F_*` flags); the
/// mask is the device's, whichever queue sets it.
pub fn tun_set_offload(fd: &impl AsRawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long
    // of flags), reads no memory of ours; `fd` is an open TUN descriptor
    // the caller owns for the call.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(flags),
        )
    };
    check(r)
}

/// A raw IPv4 socket that sends packets carrying their own IP header
/// (`IPPROTO_RAW` implies `IP_HDRINCL`): the kernel routes each by its
/// destination and sends it, with no input routing or forwarding on the
/// way (a packet written into the TUN takes both). It receives nothing.
#[derive(Debug)]
pub struct RawEgress {
    fd: OwnedFd,
}

/// Packets per `sendmmsg(2)` call.
const MMSG_CHUNK: usize = 64;

impl RawEgress {
    /// Opens the socket (needs `CAP_NET_RAW`; keeps working after the
    /// capability is dropped).
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and nobody else owns it.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends `packets[i]` to `next_hops[i]` with `sendmmsg(2)`, 64 a call.
    /// Returns how many the kernel took (it stops at the first it refuses:
    /// the caller sends that one another way); an error only when it took
    /// none.
    pub fn send_many(&self, packets: &[&[u8]], next_hops: &[Ipv4Addr]) -> io::Result<usize> {
        let total = packets.len().min(next_hops.len());
        let mut done = 0;
        while done < total {
            let n = (total - done).min(MMSG_CHUNK);
            // SAFETY: these C structs are plain old data; all-zero is valid.
            let mut addrs: [libc::sockaddr_in; MMSG_CHUNK] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut iovs: [libc::iovec; MMSG_CHUNK] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut msgs: [libc::mmsghdr; MMSG_CHUNK] = unsafe { std::mem::zeroed() };
            for k in 0..n {
                let p = packets[done + k];
                addrs[k].sin_family = libc::AF_INET as libc::sa_family_t;
                addrs[k].sin_addr.s_addr = u32::from(next_hops[done + k]).to_be();
                iovs[k].iov_base = p.as_ptr() as *mut libc::c_void;
                iovs[k].iov_len = p.len();
            }
            for k in 0..n {
                msgs[k].msg_hdr.msg_name = (&mut addrs[k] as *mut libc::sockaddr_in).cast();
                msgs[k].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                msgs[k].msg_hdr.msg_iov = &mut iovs[k];
                msgs[k].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `msgs[..n]` are initialised message headers whose name
            // and iovec pointers point into `addrs` and `iovs` (alive for the
            // call) and whose buffers are the caller's packets (borrowed for
            // the call, read only by the kernel); `n` ≤ the array length.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return if done == 0 { Err(e) } else { Ok(done) };
            }
            let sent = usize::try_from(r).unwrap_or(0);
            done += sent;
            if sent < n {
                return if done == 0 {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(done)
                };
            }
        }
        Ok(done)
    }
}

/// State shared between a [`FakeTun`] and the test that drives it.
#[derive(Debug, Default)]
pub struct FakeTunState {
    /// Frames the "kernel" will hand to the next reads (with the
    /// virtio-net header in front when `vnet` is set).
    pub rx: VecDeque<Vec<u8>>,
    /// Packets written to the device, in order (without a header).
    pub tx: Vec<Vec<u8>>,
    /// The next this many writes fail with `EINVAL`.
    pub fail_sends: usize,
    /// Reads performed (including the one that found nothing).
    pub reads: usize,
    /// Frames carry a virtio-net header.
    pub vnet: bool,
    /// The queue has a raw egress socket: routed packets and their next hops.
    pub routed_ok: bool,
    /// Packets sent through the raw egress socket, with their next hops.
    pub routed: Vec<(Vec<u8>, Ipv4Addr)>,
    /// The raw socket refuses packets longer than this (`EMSGSIZE`).
    pub routed_mtu: Option<usize>,
    /// Calls to [`TunSys::send_routed_v4`].
    pub routed_calls: usize,
    /// Packets written with a header of their own ([`TunSys::send_gso`]).
    pub tx_gso: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An in-memory stand-in for a TUN queue.
#[derive(Debug, Clone, Default)]
pub struct FakeTun(pub Arc<Mutex<FakeTunState>>);

impl FakeTun {
    fn with<R>(&self, f: impl FnOnce(&mut FakeTunState) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }
}

impl TunSys for FakeTun {
    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        if self.with(|s| !s.rx.is_empty()) {
            return Ok(true);
        }
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
        Ok(self.with(|s| !s.rx.is_empty()))
    }
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_recv_vectored(&mut [io::IoSliceMut::new(buf)])
    }
    fn try_recv_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        self.with(|s| {
            s.reads += 1;
            match s.rx.pop_front() {
                None => Err(io::ErrorKind::WouldBlock.into()),
                Some(p) => {
                    // A real TUN read truncates a frame longer than the buffers.
                    let mut rest = &p[..];
                    let mut n = 0;
                    for b in bufs.iter_mut() {
                        let k = rest.len().min(b.len());
                        b[..k].copy_from_slice(&rest[..k]);
                        rest = &rest[k..];
                        n += k;
                    }
                    Ok(n)
                }
            }
        })
    }
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.with(|s| {
            if s.fail_sends > 0 {
                s.fail_sends -= 1;
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            s.tx.push(buf.to_vec());
            Ok(buf.len())
        })
    }
    fn vnet_hdr(&self) -> bool {
        self.with(|s| s.vnet)
    }
    fn has_routed_v4(&self) -> bool {
        self.with(|s| s.routed_ok)
    }
    fn send_gso(&self, hdr: &[u8], packet: &[u8]) -> io::Result<usize> {
        self.with(|s| {
            if !s.vnet {
                return Err(io::ErrorKind::Unsupported.into());
            }
            s.tx_gso.push((hdr.to_vec(), packet.to_vec()));
            Ok(packet.len())
        })
    }
    fn send_routed_v4(&self, packets: &[&[u8]], next_hops: &[Ipv4Addr]) -> io::Result<usize> {
        self.with(|s| {
            if !s.routed_ok {
                return Err(io::ErrorKind::Unsupported.into());
            }
            s.routed_calls += 1;
            let mut n = 0;
            for (p, h) in packets.iter().zip(next_hops) {
                if s.routed_mtu.is_some_and(|m| p.len() > m) {
                    break;
                }
                s.routed.push((p.to_vec(), *h));
                n += 1;
            }
            if n == 0 && !packets.is_empty() {
                return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
            }
            Ok(n)
        })
    }
}

/// The index of interface `name` in this network namespace: the
/// workspace's one look-up, [`dpr_xdp::ifindex`] (a missing interface is
/// `NotFound`, naming it).
pub fn if_index(name: &str) -> io::Result<u32> {
    dpr_xdp::ifindex(name).map_err(io::Error::from)
}

/// Sets the transmit queue length of interface `name` (`SIOCSIFTXQLEN`):
/// for a TUN device, how many packets the kernel holds for a queue's
/// reader before it drops (counted as the device's `tx_dropped`).
pub fn if_set_txqlen(name: &str, qlen: u32) -> io::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let qlen =
        libc::c_int::try_from(qlen).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_metric = qlen;
    // SAFETY: `req` is a valid, exclusively borrowed ifreq with a
    // NUL-terminated name (checked length, zeroed tail) and the queue
    // length in its union's int (`ifr_qlen` shares `ifru_metric`'s place);
    // the kernel only reads it and keeps no pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFTXQLEN, &mut req) };
    check(r)
}

/// The link-layer (MAC) address of interface `name` (`SIOCGIFHWADDR`).
pub fn if_hwaddr(name: &str) -> io::Result<[u8; 6]> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a valid, exclusively borrowed ifreq with a
    // NUL-terminated name (checked length, zeroed tail); the kernel writes
    // only within it and keeps no pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFHWADDR the union holds `ifru_hwaddr`.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

/// A netlink socket (`NETLINK_ROUTE` unless opened with another protocol).
#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
}

impl NetlinkSocket {
    /// Opens and binds a route netlink socket (kernel-assigned port id).
    pub fn open() -> io::Result<Self> {
        Self::open_protocol(libc::NETLINK_ROUTE)
    }

    /// Opens and binds a netlink socket of `protocol` (`NETLINK_ROUTE`,
    /// `NETLINK_SOCK_DIAG`...).
    pub fn open_protocol(protocol: libc::c_int) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2), is valid and owned by
        // nobody else; OwnedFd takes sole ownership and closes it on drop.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is a plain C struct for which all-zero is a
        // valid value (family set below, pid 0 = let the kernel choose).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `sa` is a valid sockaddr_nl and we pass its exact size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Sends one request to the kernel.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: `msg` is a valid readable slice of `msg.len()` bytes for
        // the duration of the call; the fd is open (owned by self).
        let r = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sets `SO_RCVTIMEO`: a receive that waits longer than `t` fails with
    /// `WouldBlock`.
    pub fn set_recv_timeout(&self, t: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(t.subsec_micros() as i32),
        };
        // SAFETY: `tv` is a valid timeval that outlives the call, and we
        // pass its exact size; the fd is open (owned by self).
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        check(r)
    }

    /// Receives one datagram (one or more netlink messages) into `buf`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes;
            // the kernel writes at most that many.
            let r =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids passed are
    // constants every Linux kernel supports, and on failure `ts` stays zero.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `std::time::Instant` reads,
/// and the same in every network namespace of a host, so programs in
/// different namespaces (a daemon and the lab's web server) can put their
/// events on one time line.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// A hint that the memory at `p` will be read soon: one prefetch
/// instruction into all cache levels (x86-64; nothing elsewhere). It never
/// faults, whatever `p` is, and neither reads nor writes through it: the
/// tables' [`dpr_table::PrefetchHook`].
#[inline]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it does not access memory
    // architecturally and cannot fault, even for an invalid address, so no
    // pointer validity is required; SSE is part of the x86-64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// CPU time the calling thread has used, in nanoseconds. Unlike wall-clock
/// time it does not grow while the thread waits for a CPU, so work paced
/// by it (the load measurement) does not slow down on a busy host.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Puts the calling thread in the real-time round-robin class at
/// `priority` (1 ..= 99), with `SCHED_RESET_ON_FORK`: threads and processes
/// it starts afterwards are back in the normal class. Needs
/// `CAP_SYS_NICE`.
pub fn set_current_thread_realtime(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a live sched_param; pid 0 is the calling thread.
    let r =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The effective user id.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Linux capability numbers this crate refers to.
pub const CAP_NET_ADMIN: u32 = 12;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Switches to `uid`/`gid` (no supplementary groups) keeping only the
/// capabilities in `keep` (numbers below 32), and sets no_new_privs.
pub fn drop_to_user(uid: u32, gid: u32, keep: &[u32]) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; failure is reported by -1.
    check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) })?;
    // SAFETY: a zero-length group list with a null pointer is valid for setgroups.
    check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: integer arguments only. KEEPCAPS (set above) keeps the
    // permitted set across the uid change; the effective set is restored below.
    check(unsafe { libc::setresuid(uid, uid, uid) })?;
    let mask = keep
        .iter()
        .filter(|&&c| c < 32)
        .fold(0u32, |m, &c| m | (1 << c));
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: mask,
            permitted: mask,
            inheritable: 0,
        },
        CapData::default(),
    ];
    // SAFETY: capset takes a header and an array of two data structs for
    // version 3; both are valid, correctly laid out (#[repr(C)]) and live
    // for the duration of the call.
    check(unsafe {
        libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) as libc::c_int
    })?;
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    Ok(())
}

/// The effective capability mask of this thread (bits of capabilities < 32).
pub fn effective_caps() -> io::Result<u32> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData structs for version 3 into `data`,
    // which has room for exactly two; `hdr` is valid.
    check(unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        ) as libc::c_int
    })?;
    Ok(data[0].effective)
}

/// Takes an exclusive `flock(2)` on `file` without waiting: `Ok(false)` when
/// another open file description holds it. The kernel releases it when the
/// last descriptor of this one closes, also when the process dies.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor `file` owns and keeps open for the
    // call; no memory is shared with the kernel.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clocks_move_forward() {
        let (m, c) = (super::monotonic_ns(), super::thread_cpu_ns());
        let mut x = 0u64;
        for i in 0..200_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(super::monotonic_ns() > m);
        assert!(super::thread_cpu_ns() > c);
    }

    use super::*;

    #[test]
    fn fake_tun_reads_in_order_and_fails_on_demand() {
        let f = FakeTun::default();
        f.with(|s| {
            s.rx.push_back(vec![1, 2]);
            s.fail_sends = 1;
        });
        let mut b = [0u8; 4];
        assert!(f.wait_readable(Duration::ZERO).unwrap_or(false));
        assert_eq!(f.try_recv(&mut b).ok(), Some(2));
        assert_eq!(
            f.try_recv(&mut b).map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::WouldBlock)
        );
        assert!(f.send(&[9]).is_err());
        assert!(f.send(&[9]).is_ok());
        assert_eq!(f.with(|s| s.tx.clone()), vec![vec![9]]);
    }

    #[test]
    fn if_index_of_loopback() {
        assert!(if_index("lo").is_ok());
        assert!(if_index("no-such-if-dpr").is_err());
    }
}
