//! The lab's web server (`dpr-lab httpd`): one thread per connection, a fixed
//! number of "CPU" slots each request holds for its service time (so a host
//! has a capacity, and queueing shows in latency once it is overloaded),
//! and a body that names the serving host.
//!
//! `GET /?size=N` answers N bytes (default `--size`), starting with
//! `served-by NAME`; a request with a body (`POST`/`PUT`, `Content-Length`,
//! `Expect: 100-continue` honoured) is read to its end and answered with
//! `served-by NAME received BYTES`. Every answer carries `X-Served-By`. A
//! connection serves one request, or as many as the client sends when it
//! asks for `Connection: keep-alive` (the keep-alive benchmark's wrk).
//!
//! With `--trace FILE`, every change of the count of open connections
//! (accepted, not yet closed) appends `<CLOCK_MONOTONIC ns> <count>` to FILE
//! in one write, so a killed server loses nothing: the ground truth `dpr-lab
//! lab` compares the daemon's load figures with.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Server settings.
#[derive(Debug, Clone)]
pub struct HttpdOptions {
    /// Listen address.
    pub listen: String,
    /// Name in every answer.
    pub name: String,
    /// Service time per request.
    pub service: Duration,
    /// Requests served at once (the rest wait).
    pub workers: usize,
    /// Default response size.
    pub size: usize,
    /// Where to append the open-connection trace.
    pub trace: Option<PathBuf>,
}

/// The count of open connections, and the trace of its changes.
#[derive(Debug)]
struct OpenCount {
    state: Mutex<(usize, Option<File>)>,
}

impl OpenCount {
    fn new(trace: Option<File>) -> Self {
        Self {
            state: Mutex::new((0, trace)),
        }
    }

    /// One more open connection; it counts until the guard is dropped.
    fn open(self: &Arc<Self>) -> OpenGuard {
        self.change(true);
        OpenGuard(self.clone())
    }

    fn change(&self, up: bool) {
        let mut g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        g.0 = if up { g.0 + 1 } else { g.0.saturating_sub(1) };
        let count = g.0;
        if let Some(f) = g.1.as_mut() {
            // The time is read under the lock, so the lines are in order.
            let line = format!("{} {count}\n", dpr_io::sys::monotonic_ns());
            // A full disk must not stop the server; the trace just ends.
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// An open connection, counted until dropped (after its socket is closed).
#[derive(Debug)]
struct OpenGuard(Arc<OpenCount>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.change(false);
    }
}

#[derive(Debug, Default)]
struct Slots {
    busy: Mutex<usize>,
    free: Condvar,
}

fn serve_one(s: TcpStream, o: &HttpdOptions, slots: &Slots) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    // One request, or several when the client asks for keep-alive.
    while serve_request(&mut r, &mut w, o, slots)? {}
    Ok(())
}

/// Reads one request and answers it. True when the client asked for the
/// connection to stay open (`Connection: keep-alive`, opt-in: every other
/// request is answered with `Connection: close`, as the lab's clients that
/// read to the end of the stream expect).
fn serve_request(
    r: &mut impl BufRead,
    s: &mut impl Write,
    o: &HttpdOptions,
    slots: &Slots,
) -> std::io::Result<bool> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(false);
    }
    let mut len = 0usize;
    let mut expect = false;
    let mut keep_alive = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let l = h.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if l.starts_with("expect:") && l.contains("100-continue") {
            expect = true;
        }
        if l.starts_with("connection:") && l.contains("keep-alive") {
            keep_alive = true;
        }
    }
    let size = first
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.split("size=").nth(1))
        .and_then(|v| v.split('&').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(o.size);
    if expect {
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < len {
        let want = (len - got).min(buf.len());
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    // Hold a CPU slot for the service time.
    {
        let mut busy = slots.busy.lock().unwrap_or_else(PoisonError::into_inner);
        while *busy >= o.workers {
            busy = slots
                .free
                .wait(busy)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *busy += 1;
    }
    std::thread::sleep(o.service);
    {
        *slots.busy.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        slots.free.notify_one();
    }
    let head_line = if len > 0 {
        format!("served-by {} received {got}\n", o.name)
    } else {
        format!("served-by {}\n", o.name)
    };
    let total = if len > 0 {
        head_line.len()
    } else {
        size.max(head_line.len())
    };
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nX-Served-By: {}\r\nConnection: {}\r\n\r\n{head_line}",
        o.name,
        if keep_alive { "keep-alive" } else { "close" }
    )?;
    let mut left = total - head_line.len();
    let pad = vec![b'.'; 64 * 1024];
    while left > 0 {
        let n = left.min(pad.len());
        s.write_all(&pad[..n])?;
        left -= n;
    }
    s.flush()?;
    Ok(keep_alive)
}

/// Runs the server until killed.
pub fn serve(o: HttpdOptions) -> Result<(), String> {
    let l = TcpListener::bind(&o.listen).map_err(|e| format!("httpd: bind {}: {e}", o.listen))?;
    let trace = match &o.trace {
        Some(p) => Some(
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("httpd: trace {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let open = Arc::new(OpenCount::new(trace));
    let o = Arc::new(o);
    let slots = Arc::new(Slots::default());
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        let guard = open.open();
        let (o, slots) = (o.clone(), slots.clone());
        // If the thread cannot start, the closure is dropped: the socket
        // closes and the guard uncounts it.
        let _ = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = serve_one(s, &o, &slots);
                drop(guard);
            });
    }
    Ok(())
}

/// The options of `dpr-lab httpd`.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpdArgs {
    /// Listen address.
    #[arg(long, default_value = "0.0.0.0:80")]
    pub listen: String,
    /// The name in every answer (`served-by NAME`, `X-Served-By`).
    #[arg(long, default_value = "host")]
    pub name: String,
    /// Service time per request, milliseconds.
    #[arg(long, default_value_t = 20)]
    pub service_ms: u64,
    /// Requests served at once (the rest wait): the host's capacity.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub workers: u64,
    /// Default response size, bytes.
    #[arg(long, default_value_t = 2000)]
    pub size: usize,
    /// Append `<CLOCK_MONOTONIC ns> <open connections>` to FILE at every
    /// change of the count of accepted, not yet closed connections.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

impl From<HttpdArgs> for HttpdOptions {
    fn from(a: HttpdArgs) -> Self {
        Self {
            listen: a.listen,
            name: a.name,
            service: Duration::from_millis(a.service_ms),
            workers: usize::try_from(a.workers).unwrap_or(1),
            size: a.size,
            trace: a.trace,
        }
    }
}

/// `dpr-lab httpd`: serves until killed.
pub fn main(args: HttpdArgs) -> Result<(), String> {
    serve(args.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_records_every_change_in_order() {
        let path = std::env::temp_dir().join(format!("dprd-httpd-trace-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let file = File::options().create(true).append(true).open(&path);
        let open = Arc::new(OpenCount::new(file.ok()));
        let a = open.open();
        let b = open.open();
        drop(a);
        let c = open.open();
        drop(b);
        drop(c);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        let lines: Vec<(u64, usize)> = text
            .lines()
            .filter_map(|l| {
                let (t, n) = l.split_once(' ')?;
                Some((t.parse().ok()?, n.parse().ok()?))
            })
            .collect();
        let counts: Vec<usize> = lines.iter().map(|l| l.1).collect();
        assert_eq!(counts, vec![1, 2, 1, 2, 1, 0]);
        assert!(lines.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    fn options() -> HttpdOptions {
        HttpdOptions {
            listen: String::new(),
            name: "b".into(),
            service: Duration::ZERO,
            workers: 1,
            size: 100,
            trace: None,
        }
    }

    /// Serves the requests in `input` as one connection would; the answers.
    fn serve_all(input: &str) -> String {
        let (o, slots) = (options(), Slots::default());
        let mut r = std::io::Cursor::new(input.as_bytes().to_vec());
        let mut w = Vec::new();
        let mut n = 0;
        while serve_request(&mut r, &mut w, &o, &slots).unwrap() {
            n += 1;
            assert!(n < 10, "never ends");
        }
        String::from_utf8(w).unwrap()
    }

    #[test]
    fn keep_alive_is_opt_in() {
        let two = "GET /?size=20 HTTP/1.1\r\nConnection: keep-alive\r\n\r\n\
                   GET /?size=30 HTTP/1.1\r\nConnection: keep-alive\r\n\r\n";
        let out = serve_all(two);
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        assert_eq!(out.matches("Connection: keep-alive").count(), 2);
        assert!(out.contains("Content-Length: 20\r\n") && out.contains("Content-Length: 30\r\n"));
        // Without the header: one answer, the connection closes.
        let out = serve_all("GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 1, "{out}");
        assert!(out.contains("Connection: close\r\n"));
    }

    #[test]
    fn keep_alive_reads_each_body_to_its_end() {
        let out = serve_all(
            "POST / HTTP/1.1\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello\
             GET /?size=40 HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(out.contains("served-by b received 5\n"), "{out}");
        assert!(out.contains("Content-Length: 40\r\n"), "{out}");
        let tail = format!(
            "Connection: close\r\n\r\nserved-by b\n{}",
            ".".repeat(40 - 12)
        );
        assert!(out.ends_with(&tail), "{out}");
    }
}
