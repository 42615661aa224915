//! An in-memory kernel for tests: route netlink and `/proc/sys`.
//!
//! [`FakeKernel`] implements [`NetlinkSys`] and [`HostSys`] the way the
//! kernel answers them: it holds addresses, routes and policy rules (an
//! add of an existing object is `EEXIST`, a delete of a missing one
//! `ENOENT`), answers dumps from them, holds sysctl values and interface
//! names, and records every request in order in its journal
//! ([`KernelOp`]). A test can make the n-th change fail with an errno of
//! its choice, and compare the kernel's state after the fact with its
//! state before (a teardown must leave it as it was).
//!
//! It is the test double of [`crate::host::HostGuard`] (set-up, undo order,
//! peer updates) and of the neighbour look-up; like `sys::FakeTun`, it is
//! public so that tests of other crates can use it.

use crate::host::HostSys;
use crate::netlink::{
    self, NLM_F_ACK, NLM_F_DUMP, NLMSG_DONE, NLMSG_ERROR, NetlinkSys, Object, RTM_GETADDR,
    RTM_GETNEIGH, RTM_GETROUTE, RTM_NEWADDR, RTM_NEWNEIGH, RTM_NEWROUTE, Request,
};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// One request the fake kernel received.
#[derive(Clone, PartialEq, Eq)]
pub enum KernelOp {
    /// A netlink request adding an object (its payload).
    Add(Object, Vec<u8>),
    /// A netlink request deleting an object (its payload).
    Del(Object, Vec<u8>),
    /// A netlink dump of message type `ty` for address family `family`.
    Dump {
        /// `RTM_GET*`.
        ty: u16,
        /// The family byte of the request.
        family: u8,
    },
    /// Another netlink request (type and payload).
    Other(u16, Vec<u8>),
    /// A write of `value` to a sysctl file.
    Sysctl(PathBuf, String),
}

impl KernelOp {
    /// The add of `req`'s object.
    pub fn add(req: &Request) -> Self {
        Self::Add(req.object, req.payload.clone())
    }
    /// The delete of `req`'s object.
    pub fn del(req: &Request) -> Self {
        Self::Del(req.object, req.payload.clone())
    }
    /// A sysctl write.
    pub fn sysctl(path: impl Into<PathBuf>, value: &str) -> Self {
        Self::Sysctl(path.into(), value.into())
    }
    /// Whether the request changes the kernel's state (not a dump).
    pub fn is_change(&self) -> bool {
        !matches!(self, Self::Dump { .. })
    }
}

impl fmt::Debug for KernelOp {
    /// `ip`-like text, so a failed comparison reads as a list of commands.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Add(o, p) => write!(f, "add {}", netlink::describe(*o, p)),
            Self::Del(o, p) => write!(f, "del {}", netlink::describe(*o, p)),
            Self::Dump { ty, family } => write!(f, "dump type {ty} family {family}"),
            Self::Other(ty, p) => write!(f, "request type {ty} ({} bytes)", p.len()),
            Self::Sysctl(path, v) => write!(f, "sysctl {} = {v}", path.display()),
        }
    }
}

/// What the fake kernel holds.
#[derive(Debug, Default)]
pub struct FakeKernelState {
    /// Interface names and indexes.
    pub interfaces: BTreeMap<String, u32>,
    /// Sysctl files and their values.
    pub sysctls: BTreeMap<PathBuf, String>,
    /// Addresses, routes and rules, as the payloads that added them.
    pub objects: Vec<(Object, Vec<u8>)>,
    /// Neighbour-table entries (`netlink::neigh_payload`).
    pub neighbours: Vec<Vec<u8>>,
    /// Every request, in order (a failed one included).
    pub journal: Vec<KernelOp>,
    /// The change number `n` (0-based, counting the journal's changes)
    /// fails with errno `e`: `Some((n, e))`.
    pub fail: Option<(usize, i32)>,
    /// The journal index of the request that failed by `fail`.
    pub failed: Option<usize>,
    /// Every dump fails with this errno.
    pub dump_error: Option<i32>,
    /// Whether the process may set the host up (`CAP_NET_ADMIN`).
    pub privileged: bool,
    changes: usize,
    replies: VecDeque<Vec<u8>>,
}

/// The observable state: what a teardown must restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Sysctl values.
    pub sysctls: BTreeMap<PathBuf, String>,
    /// Objects, sorted (their order of creation does not matter).
    pub objects: Vec<(u8, Vec<u8>)>,
}

impl FakeKernelState {
    /// Records `op`; an error if it is the change asked to fail.
    fn record(&mut self, op: KernelOp) -> Result<(), i32> {
        let change = op.is_change();
        self.journal.push(op);
        if change {
            let n = self.changes;
            self.changes += 1;
            if let Some((at, errno)) = self.fail {
                if at == n {
                    self.failed = Some(self.journal.len() - 1);
                    return Err(errno);
                }
            }
        }
        Ok(())
    }

    /// What a teardown must leave as it was.
    pub fn snapshot(&self) -> Snapshot {
        let mut objects: Vec<(u8, Vec<u8>)> = self
            .objects
            .iter()
            .map(|(o, p)| (*o as u8, p.clone()))
            .collect();
        objects.sort();
        Snapshot {
            sysctls: self.sysctls.clone(),
            objects,
        }
    }

    /// The requests that changed something, in order.
    pub fn changes(&self) -> Vec<KernelOp> {
        self.journal
            .iter()
            .filter(|o| o.is_change())
            .cloned()
            .collect()
    }

    fn apply(&mut self, ty: u16, payload: &[u8]) -> i32 {
        let Some((object, adds)) = Object::of_type(ty) else {
            return match self.record(KernelOp::Other(ty, payload.to_vec())) {
                Ok(()) => 0,
                Err(e) => -e,
            };
        };
        let op = if adds {
            KernelOp::Add(object, payload.to_vec())
        } else {
            KernelOp::Del(object, payload.to_vec())
        };
        if let Err(e) = self.record(op) {
            return -e;
        }
        let at = self
            .objects
            .iter()
            .position(|(o, p)| *o == object && p == payload);
        // As the kernel: a route that differs from one it holds only in its
        // metrics is the same route.
        let as_req = |p: &[u8]| netlink::Request {
            object,
            payload: p.to_vec(),
            describe: String::new(),
        };
        let clash = adds
            && self.objects.iter().any(|(o, p)| {
                *o == object && netlink::same_route_but_metrics(&as_req(p), &as_req(payload))
            });
        if clash {
            return -libc::EEXIST;
        }
        match (adds, at) {
            (true, Some(_)) => -libc::EEXIST,
            (true, None) => {
                self.objects.push((object, payload.to_vec()));
                0
            }
            (false, Some(i)) => {
                self.objects.remove(i);
                0
            }
            (false, None) => -libc::ENOENT,
        }
    }

    fn dump(&mut self, ty: u16, seq: u32, payload: &[u8]) {
        let family = payload.first().copied().unwrap_or(0);
        let _ = self.record(KernelOp::Dump { ty, family });
        if let Some(e) = self.dump_error {
            self.replies
                .push_back(netlink::message(NLMSG_ERROR, 0, seq, &(-e).to_ne_bytes()));
            return;
        }
        let of_family = |p: &Vec<u8>| p.first() == Some(&family);
        let (reply_ty, entries): (u16, Vec<Vec<u8>>) = match ty {
            RTM_GETADDR | RTM_GETROUTE => {
                let want = if ty == RTM_GETADDR {
                    Object::Addr
                } else {
                    Object::Route
                };
                let reply = if ty == RTM_GETADDR {
                    RTM_NEWADDR
                } else {
                    RTM_NEWROUTE
                };
                let e = self
                    .objects
                    .iter()
                    .filter(|(o, p)| *o == want && of_family(p))
                    .map(|(_, p)| p.clone())
                    .collect();
                (reply, e)
            }
            RTM_GETNEIGH => (
                RTM_NEWNEIGH,
                self.neighbours
                    .iter()
                    .filter(|p| of_family(p))
                    .cloned()
                    .collect(),
            ),
            _ => (0, Vec::new()),
        };
        // Two entries per datagram, so callers must loop as they do on
        // the kernel's.
        for chunk in entries.chunks(2) {
            let mut d = Vec::new();
            for e in chunk {
                d.extend(netlink::message(reply_ty, 0, seq, e));
            }
            self.replies.push_back(d);
        }
        self.replies
            .push_back(netlink::message(NLMSG_DONE, 0, seq, &0i32.to_ne_bytes()));
    }
}

/// The fake kernel; clones share one state.
#[derive(Debug, Clone, Default)]
pub struct FakeKernel(pub Arc<Mutex<FakeKernelState>>);

impl FakeKernel {
    /// An empty, privileged kernel with `lo` (index 1).
    pub fn new() -> Self {
        let k = Self::default();
        k.with(|s| {
            s.privileged = true;
            s.interfaces.insert("lo".into(), 1);
        });
        k
    }

    /// Runs `f` on the state.
    pub fn with<R>(&self, f: impl FnOnce(&mut FakeKernelState) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }

    /// The journal so far.
    pub fn journal(&self) -> Vec<KernelOp> {
        self.with(|s| s.journal.clone())
    }

    /// Adds an object as if it had been there before (not journalled).
    pub fn preload(&self, req: &Request) {
        self.with(|s| s.objects.push((req.object, req.payload.clone())));
    }
}

impl NetlinkSys for FakeKernel {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let Some((ty, flags, seq, payload)) = netlink::parse_header(msg) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        self.with(|s| {
            if flags & NLM_F_DUMP == NLM_F_DUMP {
                s.dump(ty, seq, payload);
            } else {
                let error = s.apply(ty, payload);
                if flags & NLM_F_ACK != 0 || error != 0 {
                    s.replies.push_back(netlink::message(
                        NLMSG_ERROR,
                        0,
                        seq,
                        &error.to_ne_bytes(),
                    ));
                }
            }
        });
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Nothing to answer: a real socket would block; a test must not.
        let d = self
            .with(|s| s.replies.pop_front())
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl HostSys for FakeKernel {
    fn can_set_up(&self) -> bool {
        self.with(|s| s.privileged)
    }
    fn if_index(&self, name: &str) -> io::Result<u32> {
        self.with(|s| s.interfaces.get(name).copied())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no network interface named {name:?}"),
                )
            })
    }
    fn sysctl_read(&mut self, path: &Path) -> io::Result<String> {
        self.with(|s| s.sysctls.get(path).cloned())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn sysctl_write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        self.with(|s| {
            if !s.sysctls.contains_key(path) {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            s.record(KernelOp::Sysctl(path.to_path_buf(), value.into()))
                .map_err(io::Error::from_raw_os_error)?;
            s.sysctls.insert(path.to_path_buf(), value.into());
            Ok(())
        })
    }
    fn sysctl_exists(&self, path: &Path) -> bool {
        self.with(|s| s.sysctls.contains_key(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Netlink;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn answers_like_the_kernel() {
        let k = FakeKernel::new();
        let mut nl = Netlink::new(k.clone());
        let a = netlink::addr(3, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 32, false);
        assert!(nl.add(&a).is_ok());
        let again = nl.add(&a).unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(nl.dump_addrs_v4().unwrap().len(), 1);
        assert!(nl.del(&a).is_ok());
        let gone = nl.del(&a).unwrap_err();
        assert_eq!(gone.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(
            k.journal(),
            vec![
                KernelOp::add(&a),
                KernelOp::add(&a),
                KernelOp::Dump {
                    ty: RTM_GETADDR,
                    family: 2
                },
                KernelOp::del(&a),
                KernelOp::del(&a),
            ]
        );
    }

    #[test]
    fn fails_the_change_asked_for_only() {
        let k = FakeKernel::new();
        k.with(|s| s.fail = Some((1, libc::EPERM)));
        let mut nl = Netlink::new(k.clone());
        let a = |n| netlink::addr(3, IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)), 32, false);
        assert!(nl.add(&a(1)).is_ok());
        let _ = nl.dump_routes_v4(); // not a change: not counted
        let e = nl.add(&a(2)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(nl.add(&a(3)).is_ok());
        assert_eq!(k.with(|s| s.failed), Some(2));
        assert_eq!(
            k.with(|s| s.objects.len()),
            2,
            "the failed add added nothing"
        );
    }

    #[test]
    fn dumps_span_datagrams_and_skip_stale_replies() {
        let k = FakeKernel::new();
        for n in 1..=5 {
            k.preload(&netlink::addr(
                3,
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)),
                32,
                false,
            ));
        }
        // A stale acknowledgement of an earlier request is waiting.
        k.with(|s| {
            s.replies.push_back(netlink::message(
                NLMSG_ERROR,
                0,
                999,
                &(-1i32).to_ne_bytes(),
            ))
        });
        let mut nl = Netlink::new(k);
        let addrs = nl.dump_addrs_v4().unwrap();
        assert_eq!(addrs.len(), 5);
        assert_eq!(addrs[4].addr, Ipv4Addr::new(198, 18, 0, 5));
    }
}
