//! The next hop's link-layer address, from the kernel's neighbour table.
//!
//! AF_XDP transmit writes whole Ethernet frames, so the router needs the
//! MAC of the next hop (a peer, or the gateway towards it). It reads the
//! kernel's table (`RTM_GETNEIGH`) rather than running ARP itself: while an
//! entry is missing or unresolved, the caller sends that packet through the
//! kernel path (which resolves the address as a side effect) or calls
//! [`solicit`], and looks again later. The dump goes through
//! [`crate::netlink`], like every other netlink request of the workspace.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::netlink::{NeighEntry, Netlink, NetlinkSys};

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
/// namespace): one neighbour-table dump on a fresh route netlink socket,
/// bounded by a 1 s receive timeout.
pub fn lookup(ifindex: u32, addr: IpAddr) -> io::Result<Neighbour> {
    let mut nl = Netlink::open()?;
    nl.set_recv_timeout(Duration::from_secs(1))?;
    lookup_with(&mut nl, ifindex, addr)
}

/// [`lookup`] over an open netlink client.
pub fn lookup_with<S: NetlinkSys>(
    nl: &mut Netlink<S>,
    ifindex: u32,
    addr: IpAddr,
) -> io::Result<Neighbour> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let entries = nl
        .dump_neighbours(family)
        .map_err(|e| io::Error::new(e.kind(), format!("RTM_GETNEIGH dump: {e}")))?;
    Ok(classify(&entries, ifindex, addr))
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
pub fn solicit(addr: Ipv4Addr) -> io::Result<()> {
    let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .map_err(|e| io::Error::new(e.kind(), format!("socket(UDP): {e}")))?;
    sock.send_to(&[], SocketAddr::from((addr, 9)))
        .map_err(|e| io::Error::new(e.kind(), format!("sendto(UDP) {addr}:9: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeKernel, KernelOp};
    use crate::netlink::{RTM_GETNEIGH, neigh_payload};

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

    #[test]
    fn lookup_dumps_the_family_of_the_address() {
        let k = FakeKernel::new();
        let mac = [2, 0, 0, 0, 7, 0xb];
        let v4: IpAddr = "198.18.7.2".parse().unwrap();
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        k.with(|s| {
            s.neighbours
                .push(neigh_payload(5, NUD_REACHABLE, v4, Some(mac)));
            s.neighbours
                .push(neigh_payload(5, NUD_INCOMPLETE, v6, None));
        });
        let mut nl = Netlink::new(k.clone());
        assert_eq!(
            lookup_with(&mut nl, 5, v4).unwrap(),
            Neighbour::Resolved(mac)
        );
        assert_eq!(
            lookup_with(&mut nl, 5, v6).unwrap(),
            Neighbour::Unresolved(Unresolved::Incomplete)
        );
        assert_eq!(
            lookup_with(&mut nl, 6, v4).unwrap(),
            Neighbour::Unresolved(Unresolved::Absent)
        );
        let dump = |family: i32| KernelOp::Dump {
            ty: RTM_GETNEIGH,
            family: family as u8,
        };
        assert_eq!(
            k.journal(),
            vec![
                dump(libc::AF_INET),
                dump(libc::AF_INET6),
                dump(libc::AF_INET)
            ]
        );
    }

    #[test]
    fn a_refused_dump_is_an_error_naming_it() {
        let k = FakeKernel::new();
        k.with(|s| s.dump_error = Some(libc::EPERM));
        let e = lookup_with(&mut Netlink::new(k), 5, "198.18.7.2".parse().unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("RTM_GETNEIGH"), "{e}");
    }
}
