//! Fuzz target `sockdiag`: sock_diag replies as `dpr-io` reads them (the
//! load measurement's source). One payload parsed as a socket, and the
//! dump and destroy loops of `TcpCounter` over a socket whose datagrams are
//! the fuzzer's bytes (a 2-byte length before each). Every socket it
//! returns must match the addresses and ports asked for.
#![no_main]
use dpr_io::netlink::NetlinkSys;
use dpr_io::sockdiag::{self, TcpCounter};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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
    let _ = sockdiag::parse(data);
    let addrs = [
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    ];
    let ports = [80, 443];
    let mut t = TcpCounter::with(Script { rest: data, sent: 0 });
    let mut out = Vec::new();
    if t.open_sockets(&addrs, &ports, &mut out).is_ok() {
        for s in &out {
            assert!(addrs.contains(&s.local.ip()), "{s:?}");
            assert!(ports.contains(&s.local.port()), "{s:?}");
        }
    }
    let _ = t.destroy(
        SocketAddr::new(addrs[0], 80),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1)), 40_000),
    );
});
