//! The lab's web server (`dprd httpd`): one thread per connection, a fixed
//! number of "CPU" slots each request holds for its service time (so a host
//! has a capacity, and queueing shows in latency once it is overloaded),
//! and a body that names the serving host.
//!
//! `GET /?size=N` answers N bytes (default `--size`), starting with
//! `served-by NAME`; a request with a body (`POST`/`PUT`, `Content-Length`,
//! `Expect: 100-continue` honoured) is read to its end and answered with
//! `served-by NAME received BYTES`. Every answer carries `X-Served-By`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
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
}

#[derive(Debug, Default)]
struct Slots {
    busy: Mutex<usize>,
    free: Condvar,
}

fn serve_one(mut s: TcpStream, o: &HttpdOptions, slots: &Slots) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(());
    }
    let mut len = 0usize;
    let mut expect = false;
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
        "HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nX-Served-By: {}\r\nConnection: close\r\n\r\n{head_line}",
        o.name
    )?;
    let mut left = total - head_line.len();
    let pad = vec![b'.'; 64 * 1024];
    while left > 0 {
        let n = left.min(pad.len());
        s.write_all(&pad[..n])?;
        left -= n;
    }
    s.flush()?;
    Ok(())
}

/// Runs the server until killed.
pub fn serve(o: HttpdOptions) -> Result<(), String> {
    let l = TcpListener::bind(&o.listen).map_err(|e| format!("httpd: bind {}: {e}", o.listen))?;
    let o = Arc::new(o);
    let slots = Arc::new(Slots::default());
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        let (o, slots) = (o.clone(), slots.clone());
        let _ = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = serve_one(s, &o, &slots);
            });
    }
    Ok(())
}

/// `--name VALUE` from `args`, parsed, or `default`.
pub fn parse_opt<T: std::str::FromStr>(
    args: &[String],
    name: &str,
    default: T,
) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a valid value")),
    }
}

/// What `dprd httpd --help` prints.
pub const USAGE: &str = "\
USAGE: dprd httpd [--listen 0.0.0.0:80] [--name host] [--service-ms 20] [--workers 2]
                  [--size 2000]

The lab's web server: every request holds one of --workers slots for --service-ms,
then gets --size bytes (GET /?size=N for another size) starting with `served-by NAME`.
";

/// `dprd httpd --listen ADDR --name NAME --service-ms MS --workers N --size BYTES`.
pub fn main(args: &[String]) -> Result<(), String> {
    serve(HttpdOptions {
        listen: parse_opt(args, "--listen", "0.0.0.0:80".to_string())?,
        name: parse_opt(args, "--name", "host".to_string())?,
        service: Duration::from_millis(parse_opt(args, "--service-ms", 20u64)?),
        workers: parse_opt(args, "--workers", 2usize)?.max(1),
        size: parse_opt(args, "--size", 2000usize)?,
    })
}
