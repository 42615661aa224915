//! What a running daemon has changed on the host, written down as it
//! goes, so that the next instance can take it over after a crash or a
//! restart; and the lock that keeps two instances off one host.
//!
//! The state directory (`dprd`'s `[admin] state_dir`, `/run/dpr` by
//! default) holds two files:
//!
//! - `dprd.lock`: an exclusive `flock(2)`, taken at start and held for the
//!   life of the process. The kernel releases it when the process ends, by
//!   any means, so a live holder is a fact, not a guess from a pid file. It
//!   also holds the holder's pid, for the error message.
//! - `dprd.state`: the host set-up journal. Every change is recorded
//!   *before* it is made (write-ahead, a write to a temporary file and a
//!   rename), with the step that undoes it: a route or rule to delete, the
//!   `local` rule to re-add, a sysctl's original value. Also the persistent
//!   TUN device and the XDP attachment. A process killed at any point
//!   leaves a journal that covers everything it changed (at worst one step
//!   that it recorded but did not make, whose undoing then finds nothing).
//!
//! Format (text, one item per line, so an operator can read it):
//!
//! ```text
//! dprd-state 1
//! pid 4242
//! held 1                        # 1: left in place on purpose at exit
//! tun dpr0                      # the persistent TUN device
//! xdp 2 4                       # XDP attached to ifindex 2 with flags 4
//! sysctl /proc/sys/net/ipv4/ip_forward 0
//! del rule 0200000000000000…   # netlink payload (hex) of what was added
//! add rule 0200000000000000…   # …and of what was deleted (to re-add)
//! ```
//!
//! Undo steps appear in the order they were done; undoing runs them last
//! first.

use crate::netlink::{self, Object, Request};
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// One recorded change, as the step that undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndoStep {
    /// Something was added: delete it.
    Del(Request),
    /// Something was deleted: add it back.
    Add(Request),
    /// A sysctl was changed from `old`.
    Sysctl {
        /// The `/proc/sys` path.
        path: PathBuf,
        /// Its value before the first instance changed it.
        old: String,
    },
}

impl UndoStep {
    /// `ip`-like text (logs, tests).
    pub fn describe(&self) -> String {
        match self {
            UndoStep::Del(r) => format!("delete {}", r.describe),
            UndoStep::Add(r) => format!("re-add {}", r.describe),
            UndoStep::Sysctl { path, old } => format!("restore {} = {old}", path.display()),
        }
    }
}

/// What the journal holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// The process that wrote it.
    pub pid: u32,
    /// Left in place on purpose when that process stopped (a hold for the
    /// next instance); false while it runs, so a journal found with
    /// `held` false means the process died.
    pub held: bool,
    /// The persistent TUN device the process created or took over.
    pub tun: Option<String>,
    /// The XDP attachment: interface index and `XDP_FLAGS_*` mode.
    pub xdp: Option<(u32, u32)>,
    /// The changes, in the order they were made.
    pub undo: Vec<UndoStep>,
}

/// A journal that cannot be read, naming the file and line.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A line is not what the format allows.
    #[error("{path}, line {line}: {reason} (remove the file after undoing its changes by hand)")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

const MAGIC: &str = "dprd-state 1";

fn object_name(o: Object) -> &'static str {
    match o {
        Object::Addr => "addr",
        Object::Route => "route",
        Object::Rule => "rule",
    }
}

fn object_of(name: &str) -> Option<Object> {
    match name {
        "addr" => Some(Object::Addr),
        "route" => Some(Object::Route),
        "rule" => Some(Object::Rule),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 8192 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl HostState {
    /// The journal's text.
    pub fn to_text(&self) -> String {
        let mut s = format!("{MAGIC}\npid {}\nheld {}\n", self.pid, u8::from(self.held));
        if let Some(t) = &self.tun {
            let _ = writeln!(s, "tun {t}");
        }
        if let Some((i, f)) = self.xdp {
            let _ = writeln!(s, "xdp {i} {f}");
        }
        for u in &self.undo {
            let _ = match u {
                UndoStep::Del(r) => {
                    writeln!(s, "del {} {}", object_name(r.object), hex(&r.payload))
                }
                UndoStep::Add(r) => {
                    writeln!(s, "add {} {}", object_name(r.object), hex(&r.payload))
                }
                UndoStep::Sysctl { path, old } => {
                    writeln!(s, "sysctl {} {old}", path.display())
                }
            };
        }
        s
    }

    /// Parses a journal's text; `path` only names the file in errors.
    /// Never panics, whatever the bytes.
    pub fn parse(text: &str, path: &Path) -> Result<Self, StateError> {
        let bad = |line: usize, reason: &str| StateError::Format {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        };
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, l)) if l.trim_end() == MAGIC => {}
            _ => return Err(bad(1, "not a dprd state journal (version 1)")),
        }
        let mut st = HostState::default();
        for (i, l) in lines {
            let n = i + 1;
            let l = l.trim_end();
            if l.is_empty() {
                continue;
            }
            let (key, rest) = l.split_once(' ').unwrap_or((l, ""));
            match key {
                "pid" => st.pid = rest.parse().map_err(|_| bad(n, "bad pid"))?,
                "held" => st.held = rest == "1",
                "tun" => {
                    if rest.is_empty() || rest.len() > 15 || rest.contains(['/', ' ']) {
                        return Err(bad(n, "bad TUN device name"));
                    }
                    st.tun = Some(rest.to_string());
                }
                "xdp" => {
                    let mut it = rest.split(' ').map(str::parse::<u32>);
                    match (it.next(), it.next(), it.next()) {
                        (Some(Ok(i)), Some(Ok(f)), None) => st.xdp = Some((i, f)),
                        _ => return Err(bad(n, "bad xdp line")),
                    }
                }
                "del" | "add" => {
                    let (obj, h) = rest
                        .split_once(' ')
                        .ok_or_else(|| bad(n, "missing payload"))?;
                    let object = object_of(obj).ok_or_else(|| bad(n, "unknown object"))?;
                    let payload = unhex(h).ok_or_else(|| bad(n, "bad hex payload"))?;
                    let req = Request {
                        object,
                        describe: netlink::describe(object, &payload),
                        payload,
                    };
                    st.undo.push(if key == "del" {
                        UndoStep::Del(req)
                    } else {
                        UndoStep::Add(req)
                    });
                }
                "sysctl" => {
                    let (p, old) = rest.split_once(' ').unwrap_or((rest, ""));
                    if !p.starts_with("/proc/sys/net/") || p.contains("..") {
                        return Err(bad(n, "sysctl outside /proc/sys/net"));
                    }
                    st.undo.push(UndoStep::Sysctl {
                        path: PathBuf::from(p),
                        old: old.to_string(),
                    });
                }
                _ => return Err(bad(n, "unknown line")),
            }
        }
        Ok(st)
    }
}

/// The journal file in a state directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// `dir/dprd.state`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join("dprd.state"),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self) -> impl FnOnce(io::Error) -> StateError + '_ {
        move |source| StateError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The journal a previous instance left, if any.
    pub fn load(&self) -> Result<Option<HostState>, StateError> {
        match std::fs::read(&self.path) {
            Ok(b) => HostState::parse(&String::from_utf8_lossy(&b), &self.path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io()(e)),
        }
    }

    /// Replaces the journal with `st`, atomically (a reader, or the next
    /// instance after a crash, sees the old one or the new one).
    pub fn write(&self, st: &HostState) -> Result<(), StateError> {
        let tmp = self.path.with_extension("state.tmp");
        std::fs::write(&tmp, st.to_text()).map_err(self.io())?;
        std::fs::rename(&tmp, &self.path).map_err(self.io())
    }

    /// Removes the journal (everything in it was undone).
    pub fn remove(&self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io()(e)),
        }
    }
}

/// Another instance runs, or the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// A live process holds the lock.
    #[error(
        "another dprd{} is running on this host: it holds {path} (stop it first, or give this one another `[admin] state_dir`)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as it wrote it.
        pid: Option<u32>,
    },
    /// The directory or file could not be made or locked.
    #[error("taking the instance lock {path}: {source}")]
    Io {
        /// The lock file (or directory).
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The instance lock: one live daemon per state directory. Released when
/// dropped, or when the process ends in any way.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock in `dir` (created if missing), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join("dprd.lock");
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        if !crate::sys::try_lock_exclusive(&file).map_err(io_err)? {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(LockError::Held { path, pid });
        }
        use std::io::{Seek, Write};
        file.set_len(0).map_err(io_err)?;
        file.seek(io::SeekFrom::Start(0)).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Rule;
    use std::net::{IpAddr, Ipv4Addr};

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dpr-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_second_instance_is_refused_while_the_first_holds_the_lock() {
        let d = tmpdir("lock");
        let first = InstanceLock::acquire(&d).unwrap();
        let e = InstanceLock::acquire(&d).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains("dprd.lock"),
            "{text}"
        );
        drop(first);
        let again = InstanceLock::acquire(&d).unwrap();
        drop(again);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_journal_reads_back_what_was_written() {
        let d = tmpdir("journal");
        std::fs::create_dir_all(&d).unwrap();
        let f = StateFile::in_dir(&d);
        assert_eq!(f.load().unwrap(), None);
        let rule = Rule {
            priority: 10,
            table: 100,
            iif: Some("eth0".into()),
            to: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))),
            ipproto: Some(6),
            dport: Some(80),
            ..Rule::default()
        }
        .request();
        let st = HostState {
            pid: 7,
            held: true,
            tun: Some("dpr0".into()),
            xdp: Some((2, 4)),
            undo: vec![
                UndoStep::Sysctl {
                    path: "/proc/sys/net/ipv4/ip_forward".into(),
                    old: "0".into(),
                },
                UndoStep::Del(rule.clone()),
                UndoStep::Add(rule),
            ],
        };
        f.write(&st).unwrap();
        assert_eq!(f.load().unwrap(), Some(st));
        f.remove().unwrap();
        assert_eq!(f.load().unwrap(), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_damaged_journal_is_an_error_naming_the_line_never_a_panic() {
        let p = Path::new("/run/dpr/dprd.state");
        for (text, line) in [
            ("", 1),
            ("dprd-state 2\n", 1),
            ("dprd-state 1\npid x\n", 2),
            ("dprd-state 1\npid 1\ndel rule 0g\n", 3),
            ("dprd-state 1\npid 1\nadd link 00\n", 3),
            ("dprd-state 1\nsysctl /etc/passwd x\n", 2),
            ("dprd-state 1\nxdp 1\n", 2),
            ("dprd-state 1\ntun a/b\n", 2),
            ("dprd-state 1\nwhat\n", 2),
        ] {
            match HostState::parse(text, p) {
                Err(StateError::Format { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        // Arbitrary bytes: an error or a state, never a panic.
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut b = b"dprd-state 1\n".to_vec();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b.push(b" adelrulsyctp0123456789abcdef\n/"[(x % 31) as usize]);
            }
            let _ = HostState::parse(&String::from_utf8_lossy(&b), p);
        }
    }
}
