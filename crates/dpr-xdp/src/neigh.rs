//! The next hop's link-layer address, from the kernel's neighbour table.
//!
//! AF_XDP transmit writes whole Ethernet frames, so the router needs the
//! MAC of the next hop (a peer, or the gateway towards it). It reads the
//! kernel's table (`RTM_GETNEIGH`) rather than running ARP itself: while an
//! entry is missing or unresolved, the caller sends that packet through the
//! kernel path (which resolves the address as a side effect) or calls
//! [`solicit`], and looks again later.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use crate::Error;
use crate::netlink::{self, NeighEntry};

// NUD_* states (include/uapi/linux/neighbour.h).
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_REACHABLE: u16 = 0x02;
const NUD_STALE: u16 = 0x04;
const NUD_DELAY: u16 = 0x08;
const NUD_PROBE: u16 = 0x10;
const NUD_FAILED: u16 = 0x20;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;
/// States in which the kernel itself would send to the cached address.
const NUD_USABLE: u16 =
    NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;

/// What the table says about an address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbour {
    /// Usable: send to this MAC (the entry may be stale; the kernel
    /// re-confirms it on its own traffic).
    Resolved([u8; 6]),
    /// No usable entry yet.
    Unresolved(Unresolved),
}

/// Why an address is not resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// No entry on that interface.
    Absent,
    /// Resolution in progress (`NUD_INCOMPLETE`).
    Incomplete,
    /// Resolution failed (`NUD_FAILED`): the host did not answer.
    Failed,
    /// Another state without an address (`NUD_NONE`).
    Other(u16),
}

/// Looks up `addr` on interface `ifindex` (in the calling thread's
/// namespace).
pub fn lookup(ifindex: u32, addr: IpAddr) -> Result<Neighbour, Error> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    } as u8;
    Ok(classify(&netlink::dump_neighbours(family)?, ifindex, addr))
}

/// The verdict for `addr` on `ifindex` among `entries`.
fn classify(entries: &[NeighEntry], ifindex: u32, addr: IpAddr) -> Neighbour {
    let Some(e) = entries
        .iter()
        .find(|e| e.ifindex == ifindex && e.dst == Some(addr))
    else {
        return Neighbour::Unresolved(Unresolved::Absent);
    };
    match e.lladdr {
        Some(mac) if e.state & NUD_USABLE != 0 => Neighbour::Resolved(mac),
        _ if e.state & NUD_INCOMPLETE != 0 => Neighbour::Unresolved(Unresolved::Incomplete),
        _ if e.state & NUD_FAILED != 0 => Neighbour::Unresolved(Unresolved::Failed),
        _ => Neighbour::Unresolved(Unresolved::Other(e.state)),
    }
}

/// Makes the kernel resolve `addr`: sends one empty UDP datagram to its
/// discard port (9), which the kernel can only send after resolving the
/// next hop. The datagram itself is harmless (discarded or answered with
/// ICMP port unreachable).
pub fn solicit(addr: Ipv4Addr) -> Result<(), Error> {
    let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).map_err(|source| {
        Error::Syscall {
            op: "socket(UDP)",
            source,
        }
    })?;
    sock.send_to(&[], SocketAddr::from((addr, 9)))
        .map_err(|source| Error::Syscall {
            op: "sendto(UDP)",
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(ifindex: u32, state: u16, dst: &str, mac: Option<[u8; 6]>) -> NeighEntry {
        NeighEntry {
            ifindex,
            state,
            dst: Some(dst.parse().unwrap()),
            lladdr: mac,
        }
    }

    #[test]
    fn states() {
        let m = [2, 0, 0, 0, 0, 1];
        let t = [
            e(3, NUD_REACHABLE, "198.18.0.1", Some(m)),
            e(3, NUD_STALE, "198.18.0.2", Some(m)),
            e(3, NUD_INCOMPLETE, "198.18.0.3", None),
            e(3, NUD_FAILED, "198.18.0.4", None),
            e(4, NUD_REACHABLE, "198.18.0.5", Some(m)),
            e(3, 0, "198.18.0.6", None),
        ];
        let at = |a: &str, i| classify(&t, i, a.parse().unwrap());
        assert_eq!(at("198.18.0.1", 3), Neighbour::Resolved(m));
        assert_eq!(at("198.18.0.2", 3), Neighbour::Resolved(m));
        assert_eq!(
            at("198.18.0.3", 3),
            Neighbour::Unresolved(Unresolved::Incomplete)
        );
        assert_eq!(
            at("198.18.0.4", 3),
            Neighbour::Unresolved(Unresolved::Failed)
        );
        assert_eq!(
            at("198.18.0.5", 3),
            Neighbour::Unresolved(Unresolved::Absent)
        );
        assert_eq!(
            at("198.18.0.6", 3),
            Neighbour::Unresolved(Unresolved::Other(0))
        );
        assert_eq!(
            at("198.18.0.9", 3),
            Neighbour::Unresolved(Unresolved::Absent)
        );
    }
}
