//! What `dprd status` shows: a snapshot built by the control loop, sent as
//! JSON over the admin socket, rendered as a table read at a glance (in the
//! manner of `ipvsadm -Ln --stats`); and the admin socket's client side
//! (`dprd status`, `drain`, `reload`): one request line, one answer line.

use crate::control::PeerView;
use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

/// How long the client waits for the daemon's answer.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one request line to the dprd listening on `socket` and returns
/// its answer line.
pub fn admin_request(socket: &Path, request: &str) -> Result<String, Error> {
    use std::io::{BufRead, Write};
    let io = |syscall| {
        move |source| Error::AdminIo {
            path: socket.to_path_buf(),
            syscall,
            source,
        }
    };
    let mut s =
        std::os::unix::net::UnixStream::connect(socket).map_err(|source| Error::AdminConnect {
            path: socket.to_path_buf(),
            source,
        })?;
    s.set_read_timeout(Some(ADMIN_TIMEOUT))
        .map_err(io("setsockopt(SO_RCVTIMEO)"))?;
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(io("write"))?;
    let mut answer = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut answer)
        .map_err(io("read"))?;
    Ok(answer.trim_end().to_string())
}

/// The `status` snapshot of the dprd listening on `socket`.
pub fn request_status(socket: &Path) -> Result<Status, Error> {
    let answer = admin_request(socket, "status")?;
    serde_json::from_str(&answer).map_err(|source| Error::AdminAnswer {
        path: socket.to_path_buf(),
        request: "status".into(),
        source,
    })
}

/// The daemon's answer to a command (`drain`, `reload`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAnswer {
    /// Whether it was done.
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
}

/// Sends a command (`drain`, `reload`) to the dprd listening on `socket`:
/// its message when done, [`Error::AdminRefused`] with its reason when not.
pub fn admin_command(socket: &Path, command: &str) -> Result<String, Error> {
    let answer = admin_request(socket, command)?;
    let a: CommandAnswer = serde_json::from_str(&answer).map_err(|source| Error::AdminAnswer {
        path: socket.to_path_buf(),
        request: command.into(),
        source,
    })?;
    if a.ok {
        Ok(a.message)
    } else {
        Err(Error::AdminRefused {
            path: socket.to_path_buf(),
            request: command.into(),
            message: a.message,
        })
    }
}

/// One peer with its counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    /// Identity, state, load.
    pub peer: PeerView,
    /// Connections redirected to it.
    pub redirected_connections: u64,
    /// Packets forwarded to it.
    pub forwarded_packets: u64,
    /// Bytes forwarded to it.
    pub forwarded_bytes: u64,
    /// IP-in-IP packets received from it.
    pub received_packets: u64,
    /// Connections it redirected here.
    pub served_connections: u64,
}

/// The daemon's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Status {
    /// Host name.
    pub host: String,
    /// Host id.
    pub id: u16,
    /// Policy name.
    pub policy: String,
    /// Backend.
    pub backend: String,
    /// Draining.
    pub draining: bool,
    /// Cluster protocol phase: recovering, active, draining, leaving, left.
    #[serde(default)]
    pub phase: String,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Open service connections on this host (the load metric).
    pub open_connections: u32,
    /// This host's normalised load.
    pub load: f64,
    /// Routing table entries.
    pub routes: usize,
    /// Served-for-peers table entries.
    pub served: usize,
    /// Capacity of each table.
    pub table_capacity: usize,
    /// Table entries evicted at capacity (both tables).
    pub evicted: u64,
    /// Of `evicted`: half-open entries (handshake not seen to complete).
    #[serde(default)]
    pub evicted_half_open: u64,
    /// Of `evicted`: entries past their handshake (a genuine overload: a
    /// flood of SYNs takes at most the half-open reserve from these).
    #[serde(default)]
    pub evicted_established: u64,
    /// Table entries expired (both tables).
    pub expired: u64,
    /// Peers.
    pub peers: Vec<PeerRow>,
    /// Packets per verdict.
    pub verdicts: BTreeMap<String, u64>,
    /// New connections and other events.
    pub events: BTreeMap<String, u64>,
    /// Drops per reason.
    pub drops: BTreeMap<String, u64>,
    /// Malformed packets per layer.
    pub malformed: BTreeMap<String, u64>,
    /// Backend and control-plane counters.
    pub io: BTreeMap<String, u64>,
}

fn kv(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join("  ")
}

impl Status {
    /// The table `dprd status` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let state = match self.phase.as_str() {
            "" if self.draining => "DRAINING".to_string(),
            "" | "active" => "serving".to_string(),
            p => p.to_uppercase(),
        };
        let _ = writeln!(
            s,
            "dprd {} (id {})  policy {}  backend {}  {}  up {:.0}s",
            self.host, self.id, self.policy, self.backend, state, self.uptime_s
        );
        let _ = writeln!(
            s,
            "local: open connections {}  load {:.2}  routes {}/{}  served-for-peers {}  evicted {} (half-open {}, established {})  expired {}",
            self.open_connections,
            self.load,
            self.routes,
            self.table_capacity,
            self.served,
            self.evicted,
            self.evicted_half_open,
            self.evicted_established,
            self.expired
        );
        let _ = writeln!(
            s,
            "{:<12} {:>4} {:<16} {:<9} {:>8} {:>6} {:>8} {:>10} {:>10} {:>12} {:>10} {:>10}",
            "Peer",
            "Id",
            "Tunnel",
            "State",
            "Load",
            "Conns",
            "Age(ms)",
            "RedirConn",
            "FwdPkts",
            "FwdBytes",
            "RecvPkts",
            "ServedConn"
        );
        for p in &self.peers {
            let age = p
                .peer
                .report_age_ms
                .map_or_else(|| "-".to_string(), |a| a.to_string());
            let _ = writeln!(
                s,
                "  -> {:<7} {:>4} {:<16} {:<9} {:>8.2} {:>6} {:>8} {:>10} {:>10} {:>12} {:>10} {:>10}",
                p.peer.name,
                p.peer.id,
                p.peer.tunnel_addr.to_string(),
                p.peer.state,
                if p.peer.load.is_finite() {
                    p.peer.load
                } else {
                    -1.0
                },
                p.peer.open_connections,
                age,
                p.redirected_connections,
                p.forwarded_packets,
                p.forwarded_bytes,
                p.received_packets,
                p.served_connections
            );
        }
        let _ = writeln!(s, "verdicts:    {}", kv(&self.verdicts));
        let _ = writeln!(s, "connections: {}", kv(&self.events));
        let _ = writeln!(s, "drops:       {}", kv(&self.drops));
        if !self.malformed.is_empty() {
            let _ = writeln!(s, "malformed:   {}", kv(&self.malformed));
        }
        let _ = writeln!(s, "io:          {}", kv(&self.io));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_section_and_round_trips_as_json() {
        let mut st = Status {
            host: "h0".into(),
            policy: "threshold".into(),
            ..Status::default()
        };
        st.drops.insert("malformed".into(), 3);
        st.peers.push(PeerRow {
            peer: PeerView {
                id: 1,
                name: "h1".into(),
                tunnel_addr: "198.19.0.2".parse().unwrap_or_else(|_| unreachable!()),
                state: "alive".into(),
                load: 2.0,
                open_connections: 2,
                report_age_ms: Some(40),
            },
            redirected_connections: 5,
            forwarded_packets: 50,
            forwarded_bytes: 5000,
            received_packets: 0,
            served_connections: 1,
        });
        st.evicted = 3;
        st.evicted_half_open = 2;
        st.evicted_established = 1;
        let r = st.render();
        assert!(r.contains("evicted 3 (half-open 2, established 1)"), "{r}");
        assert!(r.contains("  -> h1"), "{r}");
        assert!(r.contains("malformed 3"), "{r}");
        let j = serde_json::to_string(&st).unwrap_or_default();
        let back: Status = serde_json::from_str(&j).unwrap_or_default();
        assert_eq!(back, st);
    }

    /// A one-shot admin server on a fresh socket: answers `answer` to the
    /// first line and returns that line.
    fn serve_once(answer: &'static str) -> (std::path::PathBuf, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, Write};
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dprd-admin-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join("dprd.sock");
        let l = std::os::unix::net::UnixListener::bind(&path);
        let t = std::thread::spawn(move || {
            let mut line = String::new();
            if let Ok((s, _)) = l.and_then(|l| l.accept()) {
                let mut r = std::io::BufReader::new(s);
                let _ = r.read_line(&mut line);
                let _ = r.get_mut().write_all(format!("{answer}\n").as_bytes());
            }
            let _ = std::fs::remove_dir_all(&dir);
            line
        });
        (path, t)
    }

    #[test]
    fn the_admin_client_sends_one_line_and_types_the_answer() {
        let (p, t) = serve_once(r#"{"ok":true,"message":"reloaded"}"#);
        assert_eq!(
            admin_command(&p, "reload").ok().as_deref(),
            Some("reloaded")
        );
        assert_eq!(t.join().unwrap_or_default(), "reload\n");

        let (p, t) = serve_once(r#"{"ok":false,"message":"[host] changes need a restart"}"#);
        match admin_command(&p, "reload") {
            Err(Error::AdminRefused {
                request, message, ..
            }) => {
                assert_eq!(
                    (request.as_str(), message.as_str()),
                    ("reload", "[host] changes need a restart")
                );
            }
            other => unreachable!("{other:?}"),
        }
        let _ = t.join();

        let (p, t) = serve_once("not json");
        let e = request_status(&p).map(|_| ()).unwrap_err();
        assert!(
            matches!(&e, Error::AdminAnswer { request, .. } if request == "status"),
            "{e:?}"
        );
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        let _ = t.join();

        let p = std::env::temp_dir().join(format!("dprd-admin-{}-absent.sock", std::process::id()));
        let e = admin_request(&p, "status").unwrap_err();
        assert!(
            matches!(e, Error::AdminConnect { ref path, .. } if *path == p),
            "{e:?}"
        );
        assert!(e.to_string().contains("is it running?"), "{e}");
    }
}
