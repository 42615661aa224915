//! The `bpf(2)` chokepoint: every request the loader makes to the kernel's
//! BPF subsystem (create a map, read, write or delete an entry, load the
//! program, attach it) goes through [`BpfSys`].
//!
//! Two implementations: [`RealBpf`], the system call (in `sys`), and
//! [`FakeBpf`], an in-memory stand-in that keeps each map's entries,
//! records every request in order ([`BpfCall`]) and fails the request you
//! ask it to. With the fake, loading the program and maintaining its maps
//! (services, peers, the decapsulation pairs, socket slots) are tested
//! without root, on the exact sequence of requests. The same pattern as
//! `dpr_io::sys::TunSys` for the TUN device.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use crate::sys;

pub use crate::sys::MapFd;

/// `BPF_MAP_TYPE_HASH`.
pub const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_LRU_HASH`: a hash whose least recently used entry makes
/// room when it is full.
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// `BPF_MAP_TYPE_XSKMAP`.
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;

/// A map to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Key bytes.
    pub key_size: u32,
    /// Value bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// Bytes a lookup writes: `value_size`, or for per-CPU maps the value
    /// rounded up to 8 times the number of possible CPUs.
    pub lookup_size: usize,
    /// The map's name (at most 15 bytes reach the kernel).
    pub name: &'static str,
}

/// What the loader needs from the kernel's BPF subsystem.
///
/// Maps, programs and links are owned handles of the implementation's
/// types: dropping one releases it (for [`RealBpf`], closes the descriptor;
/// a link's close detaches the program).
pub trait BpfSys: fmt::Debug + Send {
    /// A map handle.
    type Map: fmt::Debug + Send;
    /// A loaded program.
    type Prog: fmt::Debug + Send;
    /// An attachment of a program to an interface.
    type Link: fmt::Debug + Send;

    /// Number of possible CPUs (per-CPU map values hold one slot each).
    fn possible_cpus(&self) -> io::Result<usize>;
    /// `BPF_MAP_CREATE`.
    fn map_create(&self, spec: &MapSpec) -> io::Result<Self::Map>;
    /// The number the program's instructions use to refer to `map`.
    fn map_fd(&self, map: &Self::Map) -> i32;
    /// `BPF_MAP_UPDATE_ELEM` with `flags` (`BPF_ANY` 0, `BPF_NOEXIST` 1, `BPF_EXIST` 2).
    fn map_update(&self, map: &Self::Map, key: &[u8], value: &[u8], flags: u64) -> io::Result<()>;
    /// `BPF_MAP_LOOKUP_ELEM` into `value` (`lookup_size` bytes); `Ok(false)`
    /// when the key is absent.
    fn map_lookup(&self, map: &Self::Map, key: &[u8], value: &mut [u8]) -> io::Result<bool>;
    /// `BPF_MAP_DELETE_ELEM`; `Ok(false)` when the key was absent.
    fn map_delete(&self, map: &Self::Map, key: &[u8]) -> io::Result<bool>;
    /// `BPF_PROG_LOAD` of an XDP program; with a non-empty `log`, the
    /// verifier writes its log there (NUL-terminated).
    fn prog_load_xdp(
        &self,
        insns: &[u64],
        license: &str,
        name: &str,
        log: &mut [u8],
    ) -> io::Result<Self::Prog>;
    /// `BPF_LINK_CREATE` attaching `prog` to `ifindex` with XDP `flags`;
    /// the attachment lasts as long as the returned link.
    fn link_create_xdp(
        &self,
        prog: &Self::Prog,
        ifindex: u32,
        flags: u32,
    ) -> io::Result<Self::Link>;
}

/// The real `bpf(2)` system call.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealBpf;

impl BpfSys for RealBpf {
    type Map = MapFd;
    type Prog = OwnedFd;
    type Link = OwnedFd;

    fn possible_cpus(&self) -> io::Result<usize> {
        let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
        parse_cpu_list(s.trim()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/sys/devices/system/cpu/possible: cannot parse {s:?}"),
            )
        })
    }
    fn map_create(&self, spec: &MapSpec) -> io::Result<MapFd> {
        sys::map_create(
            spec.map_type,
            spec.key_size,
            spec.value_size,
            spec.max_entries,
            spec.lookup_size,
            spec.name,
        )
    }
    fn map_fd(&self, map: &MapFd) -> i32 {
        map.raw()
    }
    fn map_update(&self, map: &MapFd, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
        sys::map_update(map, key, value, flags)
    }
    fn map_lookup(&self, map: &MapFd, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        sys::map_lookup(map, key, value)
    }
    fn map_delete(&self, map: &MapFd, key: &[u8]) -> io::Result<bool> {
        sys::map_delete(map, key)
    }
    fn prog_load_xdp(
        &self,
        insns: &[u64],
        license: &str,
        name: &str,
        log: &mut [u8],
    ) -> io::Result<OwnedFd> {
        sys::prog_load_xdp(insns, license, name, log)
    }
    fn link_create_xdp(&self, prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
        sys::link_create_xdp(prog.as_fd(), ifindex, flags)
    }
}

/// "0-3,5" -> highest index + 1 (the kernel sizes per-CPU values that way).
pub(crate) fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut max = None;
    for part in s.split(',') {
        let last = part.rsplit('-').next()?;
        let n: usize = last.trim().parse().ok()?;
        max = Some(max.map_or(n, |m: usize| m.max(n)));
    }
    max.map(|m| m + 1)
}

/// One request a [`FakeBpf`] received, in the order it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BpfCall {
    /// `BPF_MAP_CREATE` of the named map.
    MapCreate(String),
    /// `BPF_MAP_UPDATE_ELEM` of `key` to `value` in `map`.
    Update {
        /// Map name.
        map: String,
        /// Key bytes.
        key: Vec<u8>,
        /// Value bytes.
        value: Vec<u8>,
    },
    /// `BPF_MAP_LOOKUP_ELEM` of `key` in `map`.
    Lookup {
        /// Map name.
        map: String,
        /// Key bytes.
        key: Vec<u8>,
    },
    /// `BPF_MAP_DELETE_ELEM` of `key` in `map`.
    Delete {
        /// Map name.
        map: String,
        /// Key bytes.
        key: Vec<u8>,
    },
    /// `BPF_PROG_LOAD` of the named program, with or without a verifier log.
    ProgLoad {
        /// Program name.
        name: String,
        /// Instruction words.
        words: usize,
        /// A verifier log was asked for.
        log: bool,
    },
    /// `BPF_LINK_CREATE` on an interface with XDP flags.
    LinkCreate {
        /// Interface index.
        ifindex: u32,
        /// `XDP_FLAGS_*`.
        flags: u32,
    },
    /// A link was dropped (the program detached from `ifindex`).
    Detach {
        /// Interface index.
        ifindex: u32,
    },
}

impl BpfCall {
    /// Whether this request changes the kernel's state (not a lookup).
    pub fn is_change(&self) -> bool {
        !matches!(self, Self::Lookup { .. })
    }
}

/// The state behind a [`FakeBpf`], shared with the test that drives it.
#[derive(Debug, Default)]
pub struct FakeBpfState {
    /// Every request, in order (the failed one included).
    pub calls: Vec<BpfCall>,
    /// Each map's entries, by map name.
    pub maps: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Request number `n` (0-based, counted over `calls`) fails with
    /// errno `e`: `Some((n, e))`.
    pub fail_at: Option<(usize, i32)>,
    /// Requests of these kinds fail (errno `EPERM`), e.g. to refuse native
    /// mode: checked with [`FakeBpfState::refuse`].
    pub refuse: Vec<fn(&BpfCall) -> bool>,
    /// What [`BpfSys::possible_cpus`] answers.
    pub cpus: usize,
    specs: Vec<MapSpec>,
}

impl FakeBpfState {
    /// Records `call` and says whether it fails.
    fn record(&mut self, call: BpfCall) -> io::Result<()> {
        let n = self.calls.len();
        let refused = self.refuse.iter().any(|f| f(&call));
        self.calls.push(call);
        match self.fail_at {
            Some((at, errno)) if at == n => Err(io::Error::from_raw_os_error(errno)),
            _ if refused => Err(io::Error::from_raw_os_error(libc::EPERM)),
            _ => Ok(()),
        }
    }

    /// The requests that changed something (no lookups), in order.
    pub fn changes(&self) -> Vec<BpfCall> {
        self.calls
            .iter()
            .filter(|c| c.is_change())
            .cloned()
            .collect()
    }
}

/// An in-memory `bpf(2)`: maps are ordered key/value stores checked
/// against their key and value sizes, programs and links are numbers.
#[derive(Debug, Clone, Default)]
pub struct FakeBpf(pub Arc<Mutex<FakeBpfState>>);

/// A map of a [`FakeBpf`]: its index and name.
#[derive(Debug)]
pub struct FakeMap {
    index: usize,
    name: String,
}

/// A program loaded by a [`FakeBpf`].
#[derive(Debug)]
pub struct FakeProg;

/// A link made by a [`FakeBpf`]; dropping it records [`BpfCall::Detach`].
#[derive(Debug)]
pub struct FakeLink {
    ifindex: u32,
    state: Arc<Mutex<FakeBpfState>>,
}

impl Drop for FakeLink {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.calls.push(BpfCall::Detach {
            ifindex: self.ifindex,
        });
    }
}

impl FakeBpf {
    /// A fake with 2 CPUs and no failures.
    pub fn new() -> Self {
        let f = Self::default();
        f.with(|s| s.cpus = 2);
        f
    }

    /// Runs `f` on the shared state.
    pub fn with<R>(&self, f: impl FnOnce(&mut FakeBpfState) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<BpfCall> {
        self.with(|s| s.calls.clone())
    }

    /// The entries of map `name` (empty if there is no such map).
    pub fn entries(&self, name: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.with(|s| s.maps.get(name).cloned().unwrap_or_default())
    }

    fn check(spec: &MapSpec, what: &str, got: usize, want: usize) -> io::Result<()> {
        if got == want {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {what} is {got} bytes, the map needs {want}", spec.name),
            ))
        }
    }
}

impl BpfSys for FakeBpf {
    type Map = FakeMap;
    type Prog = FakeProg;
    type Link = FakeLink;

    fn possible_cpus(&self) -> io::Result<usize> {
        Ok(self.with(|s| s.cpus.max(1)))
    }
    fn map_create(&self, spec: &MapSpec) -> io::Result<FakeMap> {
        self.with(|s| {
            s.record(BpfCall::MapCreate(spec.name.into()))?;
            s.maps.insert(spec.name.into(), BTreeMap::new());
            s.specs.push(spec.clone());
            Ok(FakeMap {
                index: s.specs.len() - 1,
                name: spec.name.into(),
            })
        })
    }
    fn map_fd(&self, map: &FakeMap) -> i32 {
        // Small distinct numbers, as descriptors would be.
        i32::try_from(map.index).unwrap_or(i32::MAX - 100) + 100
    }
    fn map_update(&self, map: &FakeMap, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
        self.with(|s| {
            let spec = s.specs[map.index].clone();
            Self::check(&spec, "key", key.len(), spec.key_size as usize)?;
            Self::check(&spec, "value", value.len(), spec.value_size as usize)?;
            s.record(BpfCall::Update {
                map: map.name.clone(),
                key: key.to_vec(),
                value: value.to_vec(),
            })?;
            let m = s.maps.entry(map.name.clone()).or_default();
            let exists = m.contains_key(key);
            match flags {
                1 if exists => return Err(io::Error::from_raw_os_error(libc::EEXIST)),
                2 if !exists => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
                _ => {}
            }
            if !exists && m.len() >= spec.max_entries as usize {
                return Err(io::Error::from_raw_os_error(libc::E2BIG));
            }
            m.insert(key.to_vec(), value.to_vec());
            Ok(())
        })
    }
    fn map_lookup(&self, map: &FakeMap, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.with(|s| {
            let spec = s.specs[map.index].clone();
            Self::check(&spec, "key", key.len(), spec.key_size as usize)?;
            Self::check(&spec, "value buffer", value.len(), spec.lookup_size)?;
            s.record(BpfCall::Lookup {
                map: map.name.clone(),
                key: key.to_vec(),
            })?;
            match s.maps.get(&map.name).and_then(|m| m.get(key)) {
                Some(v) => {
                    let n = v.len().min(value.len());
                    value[..n].copy_from_slice(&v[..n]);
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }
    fn map_delete(&self, map: &FakeMap, key: &[u8]) -> io::Result<bool> {
        self.with(|s| {
            let spec = s.specs[map.index].clone();
            Self::check(&spec, "key", key.len(), spec.key_size as usize)?;
            s.record(BpfCall::Delete {
                map: map.name.clone(),
                key: key.to_vec(),
            })?;
            Ok(s.maps
                .get_mut(&map.name)
                .and_then(|m| m.remove(key))
                .is_some())
        })
    }
    fn prog_load_xdp(
        &self,
        insns: &[u64],
        _license: &str,
        name: &str,
        log: &mut [u8],
    ) -> io::Result<FakeProg> {
        self.with(|s| {
            s.record(BpfCall::ProgLoad {
                name: name.into(),
                words: insns.len(),
                log: !log.is_empty(),
            })
        })?;
        Ok(FakeProg)
    }
    fn link_create_xdp(&self, _prog: &FakeProg, ifindex: u32, flags: u32) -> io::Result<FakeLink> {
        self.with(|s| s.record(BpfCall::LinkCreate { ifindex, flags }))?;
        Ok(FakeLink {
            ifindex,
            state: self.0.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MapSpec {
        MapSpec {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: 4,
            value_size: 4,
            max_entries: 2,
            lookup_size: 4,
            name: "m",
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,6"), Some(7));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn fake_maps_behave_like_hash_maps() {
        let f = FakeBpf::new();
        let m = f.map_create(&spec()).unwrap_or_else(|e| panic!("{e}"));
        let mut v = [0u8; 4];
        assert!(!f.map_lookup(&m, &[1; 4], &mut v).unwrap_or(true));
        assert!(f.map_update(&m, &[1; 4], &[7; 4], 0).is_ok());
        assert!(f.map_lookup(&m, &[1; 4], &mut v).unwrap_or(false));
        assert_eq!(v, [7; 4]);
        // BPF_NOEXIST on a present key, BPF_EXIST on an absent one.
        assert!(f.map_update(&m, &[1; 4], &[8; 4], 1).is_err());
        assert!(f.map_update(&m, &[2; 4], &[8; 4], 2).is_err());
        // Wrong sizes are refused before anything is recorded.
        let n = f.calls().len();
        assert!(f.map_update(&m, &[1; 3], &[8; 4], 0).is_err());
        assert_eq!(f.calls().len(), n);
        // Full map.
        assert!(f.map_update(&m, &[2; 4], &[8; 4], 0).is_ok());
        assert!(f.map_update(&m, &[3; 4], &[8; 4], 0).is_err());
        assert!(f.map_delete(&m, &[1; 4]).unwrap_or(false));
        assert!(!f.map_delete(&m, &[1; 4]).unwrap_or(true));
        assert_eq!(f.entries("m").len(), 1);
    }

    #[test]
    fn fake_fails_the_request_asked_for_and_records_detach() {
        let f = FakeBpf::new();
        f.with(|s| s.fail_at = Some((1, libc::ENOMEM)));
        let m = f.map_create(&spec()).unwrap_or_else(|e| panic!("{e}"));
        let e = f.map_update(&m, &[1; 4], &[1; 4], 0).err();
        assert_eq!(e.and_then(|e| e.raw_os_error()), Some(libc::ENOMEM));
        assert!(f.entries("m").is_empty(), "a failed update writes nothing");
        let p = f
            .prog_load_xdp(&[0], "x", "p", &mut [])
            .unwrap_or_else(|e| panic!("{e}"));
        let l = f
            .link_create_xdp(&p, 3, 2)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(l);
        assert_eq!(
            f.calls()[2..],
            [
                BpfCall::ProgLoad {
                    name: "p".into(),
                    words: 1,
                    log: false
                },
                BpfCall::LinkCreate {
                    ifindex: 3,
                    flags: 2
                },
                BpfCall::Detach { ifindex: 3 },
            ]
        );
    }
}
