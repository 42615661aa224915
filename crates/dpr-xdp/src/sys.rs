//! Every system call of the crate, and nothing else.
//!
//! The rest of the crate is safe code over these functions (the AF_XDP ring
//! code in [`crate::xsk`] is the one other module with `unsafe`, for the
//! shared frame memory). Each function takes Rust slices and owned or
//! borrowed descriptors, builds the kernel structure itself, and returns
//! `io::Result`; pointers handed to the kernel always come from slices whose
//! lengths were checked here.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::time::Duration;

// bpf(2) commands (include/uapi/linux/bpf.h, `enum bpf_cmd`).
const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_LINK_CREATE: libc::c_int = 28;

/// `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` attach type (`enum bpf_attach_type`).
const BPF_XDP: u32 = 37;

/// `union bpf_attr` for `BPF_MAP_CREATE`, up to `map_name`. No implicit
/// padding: every field is 4-byte, the name 16 bytes.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for the `BPF_MAP_*_ELEM` commands.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with an XDP target.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// The attribute structures above: `repr(C)`, plain integers, no implicit
/// padding, so the kernel reads exactly the fields we set.
trait BpfAttr {}
impl BpfAttr for MapCreateAttr {}
impl BpfAttr for MapElemAttr {}
impl BpfAttr for ProgLoadAttr {}
impl BpfAttr for TestRunAttr {}
impl BpfAttr for LinkCreateAttr {}

fn bpf<T: BpfAttr>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed attribute structure of
    // exactly `size_of::<T>()` bytes (the `BpfAttr` types: repr(C), no
    // padding). Any pointer inside it was set by a function of this module
    // from a slice that outlives this call, with the length the kernel reads.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from_ret(r: libc::c_long) -> io::Result<OwnedFd> {
    let fd = libc::c_int::try_from(r).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this new descriptor to us; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    // The kernel accepts [A-Za-z0-9_.] and needs a NUL: at most 15 bytes.
    for (o, b) in out.iter_mut().take(15).zip(name.bytes()) {
        *o = if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' {
            b
        } else {
            b'_'
        };
    }
    out
}

/// A BPF map descriptor with the sizes the kernel reads and writes through
/// it. Only `RealBpf::map_create` (`BPF_MAP_CREATE`) makes one, so the
/// sizes are the map's own.
#[derive(Debug)]
pub struct MapFd {
    fd: OwnedFd,
    key_size: usize,
    /// Bytes a lookup writes: `value_size`, or for per-CPU maps the value
    /// rounded up to 8 times the number of possible CPUs.
    lookup_size: usize,
    value_size: usize,
}

impl MapFd {
    pub(crate) fn raw(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// A second descriptor of the same map (`dup`), with the same sizes.
    pub(crate) fn try_clone(&self) -> io::Result<MapFd> {
        Ok(MapFd {
            fd: self.fd.try_clone()?,
            key_size: self.key_size,
            lookup_size: self.lookup_size,
            value_size: self.value_size,
        })
    }
}

/// `BPF_F_MMAPABLE`: an array map userspace can `mmap`.
pub(crate) const BPF_F_MMAPABLE: u32 = 1 << 10;

/// [`map_create`] with `map_flags`; a lookup returns `value_size` bytes.
pub(crate) fn map_create_flags(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> io::Result<MapFd> {
    let sizes = (key_size, value_size, value_size as usize);
    create_map(map_type, sizes, max_entries, map_flags, name)
}

/// `BPF_MAP_CREATE`. `lookup_size` is what a lookup returns (see [`MapFd`]).
pub(crate) fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    lookup_size: usize,
    name: &str,
) -> io::Result<MapFd> {
    let sizes = (key_size, value_size, lookup_size);
    create_map(map_type, sizes, max_entries, 0, name)
}

/// `sizes`: key, value, and what a lookup returns.
fn create_map(
    map_type: u32,
    (key_size, value_size, lookup_size): (u32, u32, usize),
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> io::Result<MapFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        map_name: name16(name),
        ..Default::default()
    };
    let fd = fd_from_ret(bpf(BPF_MAP_CREATE, &mut attr)?)?;
    Ok(MapFd {
        fd,
        key_size: key_size as usize,
        lookup_size,
        value_size: value_size as usize,
    })
}

fn size_check(what: &str, got: usize, want: usize) -> io::Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} is {got} bytes, the map needs {want}"),
        ))
    }
}

/// `BPF_MAP_UPDATE_ELEM` with `flags` (`BPF_ANY` 0, `BPF_NOEXIST` 1, `BPF_EXIST` 2).
pub(crate) fn map_update(map: &MapFd, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    size_check("key", key.len(), map.key_size)?;
    size_check("value", value.len(), map.value_size)?;
    let mut attr = MapElemAttr {
        map_fd: map.raw() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_LOOKUP_ELEM` into `value` (`lookup_size` bytes). `Ok(false)` when
/// the key is absent.
pub(crate) fn map_lookup(map: &MapFd, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    size_check("key", key.len(), map.key_size)?;
    size_check("value buffer", value.len(), map.lookup_size)?;
    let mut attr = MapElemAttr {
        map_fd: map.raw() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `BPF_MAP_DELETE_ELEM`. `Ok(false)` when the key was absent.
pub(crate) fn map_delete(map: &MapFd, key: &[u8]) -> io::Result<bool> {
    size_check("key", key.len(), map.key_size)?;
    let mut attr = MapElemAttr {
        map_fd: map.raw() as u32,
        key: key.as_ptr() as u64,
        ..Default::default()
    };
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `BPF_PROG_LOAD` of an XDP program. With a non-empty `log`, the verifier
/// writes its log there (level 1); the log is NUL-terminated by the kernel.
pub(crate) fn prog_load_xdp(
    insns: &[u64],
    license: &str,
    name: &str,
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    prog_load(BPF_PROG_TYPE_XDP, BPF_XDP, insns, license, name, log)
}

/// `BPF_PROG_TYPE_SOCK_OPS`.
pub(crate) const BPF_PROG_TYPE_SOCK_OPS: u32 = 13;
/// `BPF_CGROUP_SOCK_OPS` attach type.
pub(crate) const BPF_CGROUP_SOCK_OPS: u32 = 3;

/// `BPF_PROG_LOAD` of a program of `prog_type` for `attach_type` (see
/// [`prog_load_xdp`] for `log`).
pub(crate) fn prog_load(
    prog_type: u32,
    attach_type: u32,
    insns: &[u64],
    license: &str,
    name: &str,
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    let license = CString::new(license).map_err(|_| io::Error::other("NUL in license"))?;
    let insn_cnt = u32::try_from(insns.len()).map_err(|_| io::Error::other("too many insns"))?;
    let log_size = u32::try_from(log.len()).map_err(|_| io::Error::other("log too large"))?;
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        prog_name: name16(name),
        expected_attach_type: attach_type,
        ..Default::default()
    };
    fd_from_ret(bpf(BPF_PROG_LOAD, &mut attr)?)
}

/// What `BPF_PROG_TEST_RUN` reports.
#[derive(Debug, Clone)]
pub(crate) struct TestRunOutput {
    pub(crate) retval: u32,
    pub(crate) duration_ns: u32,
    /// The frame as the program left it.
    pub(crate) data: Vec<u8>,
}

/// `BPF_PROG_TEST_RUN` of `prog` on `data` (an Ethernet frame), `repeat` times.
pub(crate) fn prog_test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    repeat: u32,
) -> io::Result<TestRunOutput> {
    let data_size_in = u32::try_from(data.len()).map_err(|_| io::Error::other("frame too big"))?;
    // Room for the frame the program leaves (it may grow by the headroom).
    let mut out = vec![0u8; data.len() + 512];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        data_size_out: u32::try_from(out.len()).unwrap_or(u32::MAX),
        repeat,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate((attr.data_size_out as usize).min(out.len()));
    Ok(TestRunOutput {
        retval: attr.retval,
        duration_ns: attr.duration,
        data: out,
    })
}

/// `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`: the kernel runs
/// the XDP program `repeat` times on fresh copies of `frame` as if received
/// on `ifindex` queue 0, and really performs `XDP_TX` / `XDP_REDIRECT`.
pub(crate) fn prog_test_run_live(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    batch_size: u32,
) -> io::Result<()> {
    const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex. The kernel wants data_end = the frame
    // length (data 0, no metadata) and the ingress interface.
    let data_size_in = u32::try_from(frame.len()).map_err(|_| io::Error::other("frame too big"))?;
    let mut ctx = [0u32; 6];
    ctx[1] = data_size_in;
    ctx[3] = ifindex;
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of_val(&ctx) as u32,
        ctx_in: ctx.as_ptr() as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).map(drop)
}

/// `BPF_LINK_CREATE` attaching an XDP program to `ifindex` with XDP `flags`.
/// The link (and the attachment) lives as long as the returned descriptor.
pub(crate) fn link_create_xdp(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    fd_from_ret(bpf(BPF_LINK_CREATE, &mut attr)?)
}

/// `BPF_LINK_CREATE` attaching a cgroup program (`attach_type`) to the
/// cgroup directory `cgroup`. The attachment lives as long as the returned
/// descriptor (a link: it goes when the process does, however it ends).
pub(crate) fn link_create_cgroup(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        // The union's `target_fd`.
        target_ifindex: cgroup.as_raw_fd() as u32,
        attach_type,
        flags: 0,
    };
    fd_from_ret(bpf(BPF_LINK_CREATE, &mut attr)?)
}

/// Opens a directory (a cgroup) for [`link_create_cgroup`].
pub(crate) fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in a path"))?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new descriptor returned by open(2), owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Mounts a cgroup v2 hierarchy on the directory `dir`, opens it, and
/// detaches the mount again: the descriptor keeps the hierarchy's root
/// (for [`link_create_cgroup`]) and no mount is left behind. For a mount
/// namespace without one (`ip netns exec` remounts `/sys`).
pub(crate) fn open_cgroup2_unmounted(dir: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c =
        CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in a path"))?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call; the data argument is NULL.
    cvt(unsafe {
        libc::mount(
            c"none".as_ptr(),
            c.as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            std::ptr::null(),
        )
    })?;
    let fd = open_dir(dir);
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let detached = cvt(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) });
    let fd = fd?;
    detached?;
    Ok(fd)
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`
/// of a fresh socket), as `bpf_get_netns_cookie` reports it to programs.
pub(crate) fn netns_cookie() -> io::Result<u64> {
    let s = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `v` is a live u64 and `len` its size; the kernel writes at
    // most `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            &mut v as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok(v)
}

/// A read-only shared mapping of the first page of an mmapable array map
/// (`BPF_F_MMAPABLE`) whose first value is a `u64` counter the program
/// adds to atomically.
#[derive(Debug)]
pub(crate) struct MapCounter {
    ptr: NonNull<u64>,
    len: usize,
}

// SAFETY: the mapping is shared memory the kernel writes; this value only
// reads it atomically, from any thread.
unsafe impl Send for MapCounter {}
// SAFETY: as above: reads are atomic loads, no `&mut` access exists.
unsafe impl Sync for MapCounter {}

impl MapCounter {
    /// Maps the first page of `map` (an mmapable array map).
    pub(crate) fn map(map: &MapFd) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let len = usize::try_from(page).unwrap_or(4096).max(8);
        // SAFETY: a fresh shared mapping of the map's data; no existing
        // memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.raw(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p as *mut u64).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Self { ptr, len })
    }

    /// The counter's value now.
    pub(crate) fn read(&self) -> u64 {
        // SAFETY: `ptr` is page-aligned (so 8-aligned), mapped for the
        // lifetime of `self`, and only ever accessed atomically here; the
        // program updates it with atomic adds.
        let a = unsafe { std::sync::atomic::AtomicU64::from_ptr(self.ptr.as_ptr()) };
        a.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for MapCounter {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; no reference
        // into the mapping outlives `read`.
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len) };
    }
}

// ---------------------------------------------------------------------------
// Sockets: packet, generic send/recv/poll.

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: a new descriptor returned by socket(2), owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` points to a live `T` of the size we pass.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Sets `SO_RCVTIMEO`, so a blocking receive returns `WouldBlock` after `t`.
pub(crate) fn set_recv_timeout(fd: BorrowedFd<'_>, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(t.subsec_micros() as i32),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// Sets `SO_RCVBUF` (bytes).
pub(crate) fn set_recv_buffer(fd: BorrowedFd<'_>, bytes: i32) -> io::Result<()> {
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes)
}

/// `send(2)` of `buf` on a connected or bound socket.
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is a live slice of the length we pass.
    cvt_size(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            flags,
        )
    })
}

/// `recv(2)` into `buf`.
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is a live, exclusively borrowed slice of the length we pass.
    cvt_size(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            flags,
        )
    })
}

/// An IPv4 raw socket whose caller writes the whole IP header
/// (`IPPROTO_RAW` implies `IP_HDRINCL`); the kernel routes each packet by
/// its destination and sends it as it is.
pub(crate) fn raw_ipv4_socket() -> io::Result<OwnedFd> {
    socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)
}

/// `sendto(2)` of one whole IPv4 packet to `dst` on a raw IPv4 socket.
pub(crate) fn send_to_v4(
    fd: BorrowedFd<'_>,
    packet: &[u8],
    dst: std::net::Ipv4Addr,
) -> io::Result<usize> {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_addr.s_addr = u32::from(dst).to_be();
    // SAFETY: `packet` is a live slice of the length we pass; `sa` a live
    // sockaddr_in of the size we pass.
    cvt_size(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr() as *const libc::c_void,
            packet.len(),
            0,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })
}

/// An `AF_PACKET` raw socket (all protocols) bound to `ifindex`, ignoring
/// frames this host sends.
pub(crate) fn packet_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let all = i32::from((libc::ETH_P_ALL as u16).to_be());
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, all)?;
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sa.sll_ifindex = ifindex as i32;
    // SAFETY: `sa` is a live sockaddr_ll of the size we pass.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
    setsockopt(fd.as_fd(), libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &1i32)?;
    Ok(fd)
}

/// `poll(2)` one descriptor for `events`; returns its `revents` (0 on timeout).
pub(crate) fn poll_one(fd: i32, events: i16, timeout: Duration) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `p` is one live pollfd; nfds is 1.
    cvt(unsafe { libc::poll(&mut p, 1, ms) })?;
    Ok(p.revents)
}

/// `sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0)`: the AF_XDP transmit kick of
/// copy mode. `EAGAIN`/`EBUSY`/`ENOBUFS` mean "try again later" and are not errors.
pub(crate) fn xsk_kick(fd: i32) -> io::Result<()> {
    // SAFETY: a zero-length send with null buffer and address is valid.
    let r = unsafe {
        libc::sendto(
            fd,
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if r >= 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => Ok(()),
        _ => Err(e),
    }
}

/// `if_nametoindex(3)`; a missing interface is `NotFound`, naming it.
pub(crate) fn if_nametoindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NUL in interface name {name:?}"),
        )
    })?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface named {name:?} ({e})"),
        ))
    } else {
        Ok(i)
    }
}

/// `setns(fd, CLONE_NEWNET)`: moves the calling thread into a network namespace.
pub(crate) fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed descriptor.
    cvt(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// Pins the calling thread to one CPU (`sched_setaffinity`).
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cpu index too large",
        ));
    }
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE was checked; `set` is a live cpu_set_t.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size we pass; pid 0 = this thread.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(drop)
}

/// An anonymous, private, populated memory mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving the owner
// to another thread moves the only handle (accesses go through `&`/`&mut`).
unsafe impl Send for Mmap {}

impl Mmap {
    /// Maps `len` bytes (page-aligned by the kernel).
    pub(crate) fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p as *mut u8).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Self { ptr, len })
    }
    /// The mapping as a raw slice pointer (valid until drop).
    pub(crate) fn as_raw_slice(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing borrows
        // the memory any more (borrows are tied to `&self`).
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len) };
    }
}
