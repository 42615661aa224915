//! Counting this host's open TCP connections over `NETLINK_SOCK_DIAG`.
//!
//! The daemon's load metric is the number of open connections on the
//! service addresses and ports, taken from the kernel's socket table. Read
//! from `/proc/net/tcp` it costs one formatted line per socket, TIME_WAIT
//! included: a web server that closes first keeps tens of thousands of
//! them, and reading them every few milliseconds on the control thread took
//! whole report intervals (late reports made peers look suspect to each
//! other). A sock-diag dump asks the kernel for the open states only and
//! skips TIME_WAIT, LISTEN and CLOSE sockets before anything is formatted;
//! the addresses and ports are then matched here. IPv4 and IPv6.
//!
//! This module builds and parses the sock-diag messages; the socket side
//! (sequence numbers, acknowledgements, dumps) is [`crate::netlink`]'s.

use crate::netlink::{Netlink, NetlinkSys};
use crate::sys::NetlinkSocket;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg` without its attributes.
const MSG_LEN: usize = 72;

/// TCP states counted as open: every state but TIME_WAIT (6), CLOSE (7)
/// and LISTEN (10). SYN_RECV includes the kernel's request sockets.
pub const OPEN_STATES: u32 = (1 << 1) // ESTABLISHED
    | (1 << 2) // SYN_SENT
    | (1 << 3) // SYN_RECV
    | (1 << 4) // FIN_WAIT1
    | (1 << 5) // FIN_WAIT2
    | (1 << 8) // CLOSE_WAIT
    | (1 << 9) // LAST_ACK
    | (1 << 11); // CLOSING

/// A TCP socket as a dump describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// TCP state (1 = ESTABLISHED ... 11 = CLOSING).
    pub state: u8,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
}

/// The payload of a dump request for TCP sockets of `family` in `states`.
pub fn request(family: u8, states: u32) -> [u8; REQ_LEN] {
    let mut r = [0u8; REQ_LEN];
    r[0] = family;
    r[1] = libc::IPPROTO_TCP as u8;
    r[4..8].copy_from_slice(&states.to_ne_bytes());
    r
}

/// The payload of a `SOCK_DESTROY` request for the TCP socket `local` ↔
/// `remote` (any state; no cookie: the 4-tuple names it).
pub fn destroy_request(local: SocketAddr, remote: SocketAddr) -> [u8; REQ_LEN] {
    let v6 = local.is_ipv6() || remote.is_ipv6();
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let mut r = request(family as u8, u32::MAX);
    r[8..10].copy_from_slice(&local.port().to_be_bytes());
    r[10..12].copy_from_slice(&remote.port().to_be_bytes());
    let put = |r: &mut [u8; REQ_LEN], at: usize, a: IpAddr| match (a, v6) {
        (IpAddr::V4(a), false) => r[at..at + 4].copy_from_slice(&a.octets()),
        (IpAddr::V4(a), true) => r[at..at + 16].copy_from_slice(&a.to_ipv6_mapped().octets()),
        (IpAddr::V6(a), _) => r[at..at + 16].copy_from_slice(&a.octets()),
    };
    put(&mut r, 12, local.ip());
    put(&mut r, 28, remote.ip());
    // Interface any; cookie INET_DIAG_NOCOOKIE.
    r[48..56].fill(0xff);
    r
}

fn addr(family: u8, b: &[u8]) -> Option<IpAddr> {
    match i32::from(family) {
        libc::AF_INET => Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()),
        libc::AF_INET6 => {
            let a: [u8; 16] = b.try_into().ok()?;
            let v6 = Ipv6Addr::from(a);
            // A v4-mapped address is the IPv4 connection of a dual-stack socket.
            Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        _ => None,
    }
}

/// Parses one `inet_diag_msg` (`None` when short or of another family).
pub fn parse(payload: &[u8]) -> Option<TcpSocket> {
    if payload.len() < MSG_LEN {
        return None;
    }
    let family = payload[0];
    let sport = u16::from_be_bytes([payload[4], payload[5]]);
    let dport = u16::from_be_bytes([payload[6], payload[7]]);
    Some(TcpSocket {
        state: payload[1],
        local: SocketAddr::new(addr(family, &payload[8..24])?, sport),
        remote: SocketAddr::new(addr(family, &payload[24..40])?, dport),
    })
}

/// A sock-diag client that lists open service connections.
#[derive(Debug)]
pub struct TcpCounter<S: NetlinkSys = NetlinkSocket> {
    nl: Netlink<S>,
}

impl TcpCounter {
    /// Opens the socket (no privilege needed for TCP dumps).
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            nl: Netlink::open_protocol(libc::NETLINK_SOCK_DIAG)?,
        })
    }
}

impl<S: NetlinkSys> TcpCounter<S> {
    /// A client over a `NETLINK_SOCK_DIAG` transport of the caller's.
    pub fn with(sock: S) -> Self {
        Self {
            nl: Netlink::new(sock),
        }
    }

    /// Calls `f` on every TCP socket of `family` (`AF_INET` or `AF_INET6`)
    /// in one of `states`.
    pub fn for_each(
        &mut self,
        family: i32,
        states: u32,
        mut f: impl FnMut(&TcpSocket),
    ) -> io::Result<()> {
        let fam = u8::try_from(family).map_err(|_| io::Error::other("bad family"))?;
        self.nl
            .dump(SOCK_DIAG_BY_FAMILY, &request(fam, states), |p| {
                if let Some(s) = parse(p) {
                    f(&s);
                }
            })
    }

    /// Aborts the TCP socket `local` ↔ `remote` (`SOCK_DESTROY`: the
    /// kernel resets it as `ss -K` does; needs `CAP_NET_ADMIN`). `Ok(false)`
    /// when there is no such socket.
    pub fn destroy(&mut self, local: SocketAddr, remote: SocketAddr) -> io::Result<bool> {
        let req = destroy_request(local, remote);
        match self.nl.exec(SOCK_DESTROY, 0, &req) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Open connections (see [`OPEN_STATES`]) whose local address is one
    /// of `addrs` and local port one of `ports`, appended to `out`.
    pub fn open_sockets(
        &mut self,
        addrs: &[IpAddr],
        ports: &[u16],
        out: &mut Vec<TcpSocket>,
    ) -> io::Result<()> {
        let mut keep = |s: &TcpSocket| {
            if ports.contains(&s.local.port()) && addrs.contains(&s.local.ip()) {
                out.push(*s);
            }
        };
        self.for_each(libc::AF_INET, OPEN_STATES, &mut keep)?;
        // IPv6 sockets, and IPv4 connections of dual-stack sockets
        // (v4-mapped). Without IPv6 in the kernel this dump fails, which
        // matters only when a service address is IPv6.
        let v6 = self.for_each(libc::AF_INET6, OPEN_STATES, &mut keep);
        if addrs.iter().any(IpAddr::is_ipv6) {
            v6?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destroy_request_names_the_four_tuple() {
        let l: SocketAddr = "198.18.0.1:80".parse().unwrap_or_else(|_| unreachable!());
        let r: SocketAddr = "198.18.0.200:40000"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let q = destroy_request(l, r);
        assert_eq!(i32::from(q[0]), libc::AF_INET);
        assert_eq!(i32::from(q[1]), libc::IPPROTO_TCP);
        assert_eq!(&q[4..8], &u32::MAX.to_ne_bytes(), "any state");
        assert_eq!(&q[8..12], &[0, 80, 0x9c, 0x40]);
        assert_eq!(&q[12..16], &[198, 18, 0, 1]);
        assert_eq!(&q[28..32], &[198, 18, 0, 200]);
        assert_eq!(&q[48..56], &[0xff; 8]);
        let r6: SocketAddr = "[2001:2::1]:40000"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let q6 = destroy_request(l, r6);
        assert_eq!(i32::from(q6[0]), libc::AF_INET6);
        assert_eq!(
            &q6[12..28],
            &Ipv4Addr::new(198, 18, 0, 1).to_ipv6_mapped().octets()
        );
    }

    fn msg(family: u8, state: u8, local: &[u8], lport: u16, remote: &[u8], rport: u16) -> Vec<u8> {
        let mut m = vec![0u8; MSG_LEN];
        m[0] = family;
        m[1] = state;
        m[4..6].copy_from_slice(&lport.to_be_bytes());
        m[6..8].copy_from_slice(&rport.to_be_bytes());
        m[8..8 + local.len()].copy_from_slice(local);
        m[24..24 + remote.len()].copy_from_slice(remote);
        m
    }

    #[test]
    fn request_layout() {
        let r = request(libc::AF_INET as u8, OPEN_STATES);
        assert_eq!(r[0], 2);
        assert_eq!(r[1], 6);
        assert_eq!(u32::from_ne_bytes([r[4], r[5], r[6], r[7]]), OPEN_STATES);
        assert!(r[8..].iter().all(|b| *b == 0));
        for closed in [6, 7, 10] {
            assert_eq!(OPEN_STATES & (1 << closed), 0);
        }
    }

    #[test]
    fn messages_parse() {
        let m = msg(2, 1, &[198, 18, 0, 1], 80, &[198, 18, 0, 200], 40000);
        assert_eq!(
            parse(&m),
            Some(TcpSocket {
                state: 1,
                local: "198.18.0.1:80".parse().unwrap_or_else(|_| unreachable!()),
                remote: "198.18.0.200:40000"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
            })
        );
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[198, 18, 0, 1]);
        let m6 = msg(10, 8, &mapped, 80, &mapped, 1);
        assert_eq!(
            parse(&m6).map(|s| s.local.ip()),
            Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)))
        );
        let v6: [u8; 16] = "2001:2::1"
            .parse::<Ipv6Addr>()
            .unwrap_or_else(|_| unreachable!())
            .octets();
        assert_eq!(
            parse(&msg(10, 1, &v6, 443, &v6, 2)).map(|s| s.local.to_string()),
            Some("[2001:2::1]:443".into())
        );
        assert_eq!(parse(&m[..MSG_LEN - 1]), None);
        assert_eq!(parse(&msg(1, 1, &[], 0, &[], 0)), None);
    }

    #[test]
    fn counts_this_process_sockets() {
        // A listener and one connection to it on loopback: the listener is
        // not open load, both ends of the connection are.
        let Ok(mut c) = TcpCounter::open() else {
            eprintln!("sock_diag unavailable here: skipped");
            return;
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let open = |c: &mut TcpCounter| {
            let mut v = Vec::new();
            c.open_sockets(&lo, &[port], &mut v).map(|()| v)
        };
        assert_eq!(open(&mut c).ok(), Some(vec![]));
        let _s =
            std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
        let (_a, _) = l.accept().unwrap_or_else(|e| panic!("{e}"));
        let found = open(&mut c).unwrap_or_default();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].local.port(), port);
        assert_eq!(found[0].state, 1, "established");
    }
}
