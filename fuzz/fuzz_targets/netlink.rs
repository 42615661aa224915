//! Fuzz target `netlink`: the kernel's netlink replies as `dpr-io` reads
//! them. The parsers of one buffer (`parse_replies`, then every payload as
//! an address, a route, a neighbour and a rule), and the request loops
//! (`Netlink::dump_*`, `exec`) over a socket whose datagrams are the
//! fuzzer's bytes (a 2-byte length before each): they must end (the socket
//! runs dry) and never panic, whatever the kernel says.
#![no_main]
use dpr_io::netlink::{self, Netlink, NetlinkSys, Object, Reply, Rule};
use std::io;

/// Replies cut from the fuzzer's bytes; sends are accepted (a bounded
/// number: a loop that keeps asking is a bug too).
struct Script<'a> {
    rest: &'a [u8],
    sent: usize,
}

impl NetlinkSys for Script<'_> {
    fn send(&mut self, _msg: &[u8]) -> io::Result<()> {
        self.sent += 1;
        assert!(self.sent < 1000, "a request loop that never ends");
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let [a, b, body @ ..] = self.rest else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = usize::from(u16::from_le_bytes([*a, *b]))
            .min(body.len())
            .min(buf.len());
        buf[..n].copy_from_slice(&body[..n]);
        self.rest = &body[n..];
        Ok(n)
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for r in netlink::parse_replies(data) {
        if let Reply::Data { payload, .. } = r {
            let _ = netlink::parse_addr(payload);
            let _ = netlink::parse_route(payload);
            let _ = netlink::parse_neigh(payload);
            let _ = Rule::parse(payload);
            for o in [Object::Addr, Object::Route, Object::Rule] {
                let _ = netlink::describe(o, payload);
            }
        }
    }
    let mut nl = Netlink::new(Script { rest: data, sent: 0 });
    let _ = nl.dump_addrs_v4();
    let _ = nl.dump_routes_v4();
    let _ = nl.dump_neighbours(2);
    let _ = nl.dump_neighbours(10);
    let _ = nl.del_link(1);
});
