//! Clients the cluster tests share: idle connections that set a host's
//! load, and requests held half-sent across an event (a restart, a flood,
//! a key roll). Every wait is bounded; every client ends by itself.

use crate::ok;
use dpr_lab::lab::{Lab, service_addr};
use dprd::status::Status;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Host `i`'s status, failing the test when it does not answer.
pub fn status(lab: &Lab, i: usize) -> Status {
    ok(lab.status(i))
}

/// Holds `n` idle connections to host 0's own service address from inside
/// host 0 (over loopback, past no router) for `hold_secs`, so that its load
/// is `n` (connections from the client could be redirected as the load
/// rises, and the load would depend on timing); waits until dprd has
/// measured them, then one more load refresh and report interval.
pub fn load_host0(lab: &mut Lab, n: usize, hold_secs: u32) {
    let mut script = String::new();
    for k in 0..n {
        script += &format!("exec {}<>/dev/tcp/{}/80; ", 3 + k, service_addr(0));
    }
    script += &format!("sleep {hold_secs}");
    let ns = lab.host_ns(0);
    ok(lab.spawn_in(&ns, "bash", &["-c", &script]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(lab, 0).open_connections < n as u32 {
        assert!(
            Instant::now() < deadline,
            "host 0 never saw its idle connections"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(250));
}

/// A client script: opens `n` connections to `addr`:80, sends each a POST
/// with half its body, writes the local port of each (one a line) to
/// `out.ports`, then `out.ready`; waits (at most 120 s) for `go` to exist,
/// sends every other half, then reads every answer (a connection that
/// hangs holds back no other), and writes one line per connection to `out`:
/// `ok <served-by>` or `error ...`.
pub const HALF_POSTS: &str = r#"
import os, socket, sys, time
addr, n, go, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
body = b"x" * 2000
conns = []
for _ in range(n):
    s = socket.create_connection((addr, 80), timeout=30)
    s.sendall(b"POST / HTTP/1.1\r\nHost: lab\r\nContent-Length: 2000\r\n\r\n" + body[:1000])
    conns.append(s)
with open(out + ".ports", "w") as f:
    f.write("\n".join(str(s.getsockname()[1]) for s in conns) + "\n")
open(out + ".ready", "w").close()
deadline = time.time() + 120
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.05)
# Every body first, then every answer: a connection that hangs (its host
# died) must not hold back the others' bodies past the server's timeout.
sent = []
for s in conns:
    try:
        s.sendall(body[1000:])
        sent.append(None)
    except Exception as e:
        sent.append(e)
# With a fifth argument, one deadline (seconds) for every answer instead
# of 30 s per connection in turn: a few hung connections are reported as
# broken, with the caller's diagnostics, instead of holding the client
# past its caller's patience.
lines = []
answers_by = time.time() + (float(sys.argv[5]) if len(sys.argv) > 5 else 1e9)
for s, err in zip(conns, sent):
    if err is not None:
        lines.append("error " + repr(err))
        continue
    try:
        data = b""
        while True:
            s.settimeout(min(30, max(0.5, answers_by - time.time())))
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        text = data.decode("latin-1")
        head, _, rest = text.partition("\r\n\r\n")
        lines.append("ok " + rest.split()[1] if rest.startswith("served-by") else "error " + repr(text[:80]))
    except Exception as e:
        lines.append("error " + repr(e))
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
"#;

/// Starts `n` half-sent POSTs from the client to host 0's service address;
/// returns once all are connected: the `go` file to create and the `out`
/// file [`finish_half_posts`] reads.
pub fn start_half_posts(lab: &mut Lab, n: usize) -> (PathBuf, PathBuf) {
    let script = lab.dir.join("half_posts.py");
    std::fs::write(&script, HALF_POSTS)
        .unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
    let (go, out) = (lab.dir.join("go"), lab.dir.join("out"));
    let ns = lab.client_ns();
    let args = [
        script.to_string_lossy().into_owned(),
        service_addr(0).to_string(),
        n.to_string(),
        go.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(lab.spawn_in(&ns, "python3", &args));
    let ready = lab.dir.join("out.ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "client never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    (go, out)
}

/// Lets the half-sent POSTs finish; one line per connection.
pub fn finish_half_posts(go: &Path, out: &Path) -> Vec<String> {
    std::fs::write(go, "").unwrap_or_else(|e| panic!("writing {}: {e}", go.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.exists() {
        assert!(Instant::now() < deadline, "client never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(50));
    std::fs::read_to_string(out)
        .unwrap_or_else(|e| panic!("reading {}: {e}", out.display()))
        .lines()
        .map(str::to_string)
        .collect()
}
