//! The two rtnetlink messages we need, by hand: an `RTM_GETNEIGH` dump
//! request and the `RTM_NEWNEIGH` replies. Building and parsing are pure
//! (tested on byte vectors); [`dump_neighbours`] does the socket I/O.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::time::Duration;

use crate::{Error, sys};

const NLMSG_HDR: usize = 16;
const NDMSG: usize = 12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

/// One entry of the kernel's neighbour table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NeighEntry {
    pub(crate) ifindex: u32,
    /// `NUD_*` bits.
    pub(crate) state: u16,
    pub(crate) dst: Option<IpAddr>,
    pub(crate) lladdr: Option<[u8; 6]>,
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// An `RTM_GETNEIGH` dump request for one address family.
pub(crate) fn neigh_dump_request(seq: u32, family: u8) -> Vec<u8> {
    let len = NLMSG_HDR + NDMSG;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills ours
    m.push(family);
    m.extend_from_slice(&[0; NDMSG - 1]);
    m
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses one datagram of netlink messages answering request `seq`: its
/// entries, and whether `NLMSG_DONE` ended the dump.
pub(crate) fn parse_batch(buf: &[u8], seq: u32) -> Result<(Vec<NeighEntry>, bool), Error> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDR <= buf.len() {
        let len = u32_at(buf, at).ok_or(Error::Parse("netlink header"))? as usize;
        let ty = u16_at(buf, at + 4).ok_or(Error::Parse("netlink header"))?;
        let mseq = u32_at(buf, at + 8).ok_or(Error::Parse("netlink header"))?;
        if len < NLMSG_HDR || at + len > buf.len() {
            return Err(Error::Parse("netlink message length"));
        }
        let body = &buf[at + NLMSG_HDR..at + len];
        at += align4(len);
        if mseq != seq {
            continue; // not ours (a stale reply)
        }
        match ty {
            NLMSG_DONE => return Ok((out, true)),
            NLMSG_ERROR => {
                let code = u32_at(body, 0).ok_or(Error::Parse("netlink error"))? as i32;
                if code != 0 {
                    return Err(Error::Syscall {
                        op: "RTM_GETNEIGH",
                        source: io::Error::from_raw_os_error(-code),
                    });
                }
            }
            RTM_NEWNEIGH => out.push(parse_neigh(body)?),
            _ => {}
        }
    }
    Ok((out, false))
}

/// Parses an `ndmsg` and its attributes.
fn parse_neigh(body: &[u8]) -> Result<NeighEntry, Error> {
    if body.len() < NDMSG {
        return Err(Error::Parse("ndmsg"));
    }
    let family = body[0];
    let ifindex = u32_at(body, 4).ok_or(Error::Parse("ndmsg"))?;
    let state = u16_at(body, 8).ok_or(Error::Parse("ndmsg"))?;
    let mut e = NeighEntry {
        ifindex,
        state,
        dst: None,
        lladdr: None,
    };
    let mut at = NDMSG;
    while at + 4 <= body.len() {
        let len = usize::from(u16_at(body, at).ok_or(Error::Parse("rtattr"))?);
        let ty = u16_at(body, at + 2).ok_or(Error::Parse("rtattr"))? & 0x3fff;
        if len < 4 || at + len > body.len() {
            return Err(Error::Parse("rtattr length"));
        }
        let data = &body[at + 4..at + len];
        match (ty, family as i32, data.len()) {
            (NDA_DST, libc::AF_INET, 4) => {
                e.dst = Some(IpAddr::V4(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                )));
            }
            (NDA_DST, libc::AF_INET6, 16) => {
                let o: [u8; 16] = data.try_into().map_err(|_| Error::Parse("NDA_DST"))?;
                e.dst = Some(IpAddr::V6(Ipv6Addr::from(o)));
            }
            (NDA_LLADDR, _, 6) => {
                e.lladdr = Some(data.try_into().map_err(|_| Error::Parse("NDA_LLADDR"))?);
            }
            _ => {}
        }
        at += align4(len);
    }
    Ok(e)
}

/// Dumps the kernel's neighbour table of one family (`AF_INET`/`AF_INET6`)
/// in the calling thread's namespace. Bounded: 1 s per receive, 10,000
/// datagrams.
pub(crate) fn dump_neighbours(family: u8) -> Result<Vec<NeighEntry>, Error> {
    let io_err = |op| move |source| Error::Syscall { op, source };
    let fd = sys::netlink_route_socket().map_err(io_err("socket(NETLINK_ROUTE)"))?;
    sys::set_recv_timeout(fd.as_fd(), Duration::from_secs(1)).map_err(io_err("SO_RCVTIMEO"))?;
    let seq = std::process::id() ^ 0x6470_7200;
    sys::send(fd.as_fd(), &neigh_dump_request(seq, family), 0).map_err(io_err("send(netlink)"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let n = sys::recv(fd.as_fd(), &mut buf, 0).map_err(io_err("recv(netlink)"))?;
        let (mut got, done) = parse_batch(&buf[..n], seq)?;
        all.append(&mut got);
        if done {
            return Ok(all);
        }
    }
    Err(Error::Parse("netlink dump did not end"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(data);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn ndmsg(family: u8, ifindex: u32, state: u16) -> Vec<u8> {
        let mut b = vec![family, 0, 0, 0];
        b.extend_from_slice(&ifindex.to_ne_bytes());
        b.extend_from_slice(&state.to_ne_bytes());
        b.extend_from_slice(&[0, 1]);
        b
    }

    #[test]
    fn request_layout() {
        let r = neigh_dump_request(7, libc::AF_INET as u8);
        assert_eq!(r.len(), 28);
        assert_eq!(u32_at(&r, 0), Some(28));
        assert_eq!(u16_at(&r, 4), Some(RTM_GETNEIGH));
        assert_eq!(u16_at(&r, 6), Some(0x301));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(r[16], libc::AF_INET as u8);
    }

    #[test]
    fn parses_entries_and_done() {
        let mut body = ndmsg(libc::AF_INET as u8, 5, 2);
        body.extend(attr(NDA_DST, &[198, 18, 7, 2]));
        body.extend(attr(NDA_LLADDR, &[2, 0, 0, 0, 7, 0xb]));
        body.extend(attr(9, &[0; 8])); // NDA_CACHEINFO-like: ignored
        let mut incomplete = ndmsg(libc::AF_INET as u8, 5, 1);
        incomplete.extend(attr(NDA_DST, &[198, 18, 7, 9]));
        let mut v6 = ndmsg(libc::AF_INET6 as u8, 6, 4);
        v6.extend(attr(
            NDA_DST,
            &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ));
        let mut buf = msg(RTM_NEWNEIGH, 9, &body);
        buf.extend(msg(RTM_NEWNEIGH, 9, &incomplete));
        buf.extend(msg(RTM_NEWNEIGH, 8, &body)); // other sequence: skipped
        buf.extend(msg(RTM_NEWNEIGH, 9, &v6));
        buf.extend(msg(NLMSG_DONE, 9, &[0; 4]));
        let (e, done) = parse_batch(&buf, 9).unwrap();
        assert!(done);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].ifindex, 5);
        assert_eq!(e[0].state, 2);
        assert_eq!(e[0].dst, Some("198.18.7.2".parse().unwrap()));
        assert_eq!(e[0].lladdr, Some([2, 0, 0, 0, 7, 0xb]));
        assert_eq!(e[1].lladdr, None);
        assert_eq!(e[2].dst, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn errors_and_lies_do_not_panic() {
        let mut err = (-libc::EPERM).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]);
        assert!(matches!(
            parse_batch(&msg(NLMSG_ERROR, 1, &err), 1),
            Err(Error::Syscall { .. })
        ));
        // An ACK (error 0) is not an error.
        let ack = msg(NLMSG_ERROR, 1, &[0; 20]);
        assert_eq!(parse_batch(&ack, 1).unwrap(), (vec![], false));
        // Message length beyond the buffer.
        let mut m = msg(RTM_NEWNEIGH, 1, &ndmsg(2, 1, 2));
        m[0] = 200;
        assert!(parse_batch(&m, 1).is_err());
        // Attribute length beyond the message.
        let mut body = ndmsg(2, 1, 2);
        body.extend(attr(NDA_DST, &[1, 2, 3, 4]));
        let at = NDMSG;
        body[at] = 60;
        assert!(parse_batch(&msg(RTM_NEWNEIGH, 1, &body), 1).is_err());
        // Every truncation of a good message.
        let mut body = ndmsg(2, 1, 2);
        body.extend(attr(NDA_LLADDR, &[1, 2, 3, 4, 5, 6]));
        let good = msg(RTM_NEWNEIGH, 1, &body);
        for n in 0..good.len() {
            let _ = parse_batch(&good[..n], 1);
        }
    }
}
