//! This host's load: open TCP connections on the service ports.
//!
//! The daemon counts them over `NETLINK_SOCK_DIAG` (`dpr_io::sockdiag`);
//! this module is the fallback where that is unavailable, reading
//! `/proc/net/tcp`, which formats every socket (TIME_WAIT included) and
//! costs far more on a busy server. Both take the kernel's count rather
//! than one derived from the engine's
//! tables: the kernel's socket table counts exactly the connections this
//! host serves (its own and those redirected in from peers, which arrive on
//! the peers' service addresses), ends them when they really close, and
//! needs no guess about timeouts (with direct server return the router
//! sees only the client's half of a connection, so its table entries
//! outlive the connections). Counted: every state but LISTEN, TIME_WAIT
//! and CLOSE, with a local address among the service addresses (this
//! host's and its peers') and a local port among the service ports.

use crate::error::Error;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// The longest wait between two measurements: they also keep alive the
/// served-table entries of connections whose packets the XDP program
/// decapsulates, and bound how long any error of the engine's estimate
/// between measurements (a connection that ended unseen) can last.
pub const MAX_MEASUREMENT_INTERVAL: Duration = Duration::from_secs(2);

/// When to measure next, given `[load] refresh_ms` and the CPU time the
/// last measurement cost. The socket table is walked whole (TIME_WAIT
/// included): at thousands of connections a second a dump costs
/// milliseconds, so measuring is kept under 1 % of the control thread's
/// CPU. CPU time, not wall-clock time: a daemon descheduled on a busy host
/// takes longer by the clock for the same work, and must not measure less
/// often for it. Between measurements the engine's estimate follows the
/// connections it sees open and end (`LoadTable::record_local`,
/// `LoadTable::record_local_end`), so a longer interval costs accuracy
/// only for connections that end unseen.
pub fn measurement_interval(refresh: Duration, cpu_cost: Duration) -> Duration {
    refresh
        .max(cpu_cost.saturating_mul(100))
        .min(refresh.max(MAX_MEASUREMENT_INTERVAL))
}

const LISTEN: u8 = 0x0a;
const TIME_WAIT: u8 = 0x06;
const CLOSE: u8 = 0x07;

/// Counts open service connections in `/proc/net/tcp` text.
pub fn count_open(proc_net_tcp: &str, addrs: &[IpAddr], ports: &[u16]) -> u32 {
    count_where(proc_net_tcp, addrs, ports, |st| {
        !matches!(st, LISTEN | TIME_WAIT | CLOSE)
    })
}

/// Counts the service connections in `/proc/net/tcp` text that the
/// application still holds (`dpr_xdp::closes::HELD_STATES`).
pub fn count_held(proc_net_tcp: &str, addrs: &[IpAddr], ports: &[u16]) -> u32 {
    count_where(proc_net_tcp, addrs, ports, |st| {
        st < 32 && dpr_xdp::closes::HELD_STATES & (1u32 << st) != 0
    })
}

/// [`count_held`] of this namespace's `/proc/net/tcp`.
pub fn read_held(addrs: &[IpAddr], ports: &[u16]) -> Result<u32, Error> {
    read_with(count_held, addrs, ports)
}

fn read_with(
    count: fn(&str, &[IpAddr], &[u16]) -> u32,
    addrs: &[IpAddr],
    ports: &[u16],
) -> Result<u32, Error> {
    std::fs::read_to_string(PROC_NET_TCP)
        .map(|t| count(&t, addrs, ports))
        .map_err(|source| Error::Io {
            syscall: "read",
            path: PROC_NET_TCP.into(),
            source,
        })
}

fn count_where(
    proc_net_tcp: &str,
    addrs: &[IpAddr],
    ports: &[u16],
    counted: impl Fn(u8) -> bool,
) -> u32 {
    let mut n = 0u32;
    for line in proc_net_tcp.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (Some(_sl), Some(local), Some(_remote), Some(st)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Ok(st) = u8::from_str_radix(st, 16) else {
            continue;
        };
        if !counted(st) {
            continue;
        }
        let Some((a, p)) = local.split_once(':') else {
            continue;
        };
        let (Ok(a), Ok(p)) = (u32::from_str_radix(a, 16), u16::from_str_radix(p, 16)) else {
            continue;
        };
        // The kernel prints the address's in-memory (network order) bytes as a native u32.
        let addr = IpAddr::V4(Ipv4Addr::from(a.to_ne_bytes()));
        if ports.contains(&p) && addrs.contains(&addr) {
            n = n.saturating_add(1);
        }
    }
    n
}

/// The socket table of this process's network namespace.
const PROC_NET_TCP: &str = "/proc/net/tcp";

/// Counts open service connections in `/proc/net/tcp` of this process's
/// network namespace.
pub fn read_open(addrs: &[IpAddr], ports: &[u16]) -> Result<u32, Error> {
    read_with(count_open, addrs, ports)
}

/// [`read_open`], or 0 where `/proc/net/tcp` cannot be read (logged at
/// debug level: the daemon calls it every `refresh_ms`). `held_only`: only
/// the connections the application still holds
/// (`dpr_xdp::closes::HELD_STATES`), for the close counter.
pub fn measure(addrs: &[IpAddr], ports: &[u16], held_only: bool) -> u32 {
    let read = if held_only {
        read_held(addrs, ports)
    } else {
        read_open(addrs, ports)
    };
    read.unwrap_or_else(|e| {
        tracing::debug!(error = %crate::error::Report(&e), "local load");
        0
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn measurement_interval_follows_cpu_cost_not_wall_clock() {
        let r = Duration::from_millis(10);
        // Cheap: at the configured refresh.
        assert_eq!(super::measurement_interval(r, Duration::from_micros(20)), r);
        // 1 ms of CPU: 100 ms, so measuring stays under 1 % of the thread.
        assert_eq!(
            super::measurement_interval(r, Duration::from_millis(1)),
            Duration::from_millis(100)
        );
        // Never past the bound, however dear.
        assert_eq!(
            super::measurement_interval(r, Duration::from_secs(1)),
            super::MAX_MEASUREMENT_INTERVAL
        );
        // A refresh longer than the bound is kept.
        let slow = Duration::from_secs(5);
        assert_eq!(super::measurement_interval(slow, Duration::ZERO), slow);
    }
    use super::*;

    #[test]
    fn counts_service_connections_only() {
        let a = u32::from_ne_bytes([198, 18, 0, 1]);
        let other = u32::from_ne_bytes([198, 18, 0, 9]);
        let t = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n\
   1: {a:08X}:0050 C6126401:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2\n\
   2: {a:08X}:0050 C6126401:9C41 06 00000000:00000000 00:00000000 00000000     0        0 3\n\
   3: {a:08X}:0051 C6126401:9C42 01 00000000:00000000 00:00000000 00000000     0        0 4\n\
   4: {other:08X}:0050 C6126401:9C43 01 00000000:00000000 00:00000000 00000000     0        0 5\n\
   5: {a:08X}:0050 C6126401:9C44 03 00000000:00000000 00:00000000 00000000     0        0 6\n\
   6: {a:08X}:0050 C6126401:9C45 04 00000000:00000000 00:00000000 00000000     0        0 7\n\
   7: {a:08X}:0050 C6126401:9C46 08 00000000:00000000 00:00000000 00000000     0        0 8\n\
   garbage\n"
        );
        let addrs = [IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))];
        assert_eq!(count_open(&t, &addrs, &[80]), 4);
        // Without FIN_WAIT1 (the application closed it): ESTABLISHED,
        // SYN_RECV, CLOSE_WAIT.
        assert_eq!(count_held(&t, &addrs, &[80]), 3);
    }

    #[test]
    fn reads_this_namespaces_socket_table() {
        // One listener and one connection of this process to it: the
        // listener is not counted, the served side of the connection is,
        // the client side (another local port) is not.
        let here = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else {
            return eprintln!("no loopback TCP here: skipped");
        };
        let port = l.local_addr().map_or(0, |a| a.port());
        let client = std::net::TcpStream::connect(("127.0.0.1", port));
        let served = l.accept();
        assert!(client.is_ok() && served.is_ok());
        match read_open(&here, &[port]) {
            Ok(n) => assert_eq!(n, 1),
            // No procfs here: the error names the file.
            Err(e) => assert!(e.to_string().contains(PROC_NET_TCP), "{e}"),
        }
    }
}
