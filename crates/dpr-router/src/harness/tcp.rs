//! Simple simulated TCP endpoints: enough of TCP (handshake, in-order data
//! with real sequence numbers, FIN close, RST) to drive engines with the
//! packets real clients and servers send, and to notice when a packet
//! arrives wrong (bad checksum, wrong source address, lost bytes).

use dpr_packet::tcp::{TcpFlags, TcpOption, TcpOptionsBuf, TcpRepr, TcpSegment};
use dpr_packet::{FlowKey, IpProtocol, icmp, ip, parse_ip};
use dpr_table::Timestamp;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Builds an IP packet carrying one TCP segment (DF set, TTL 64).
pub fn tcp_packet(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    mss: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let options = match mss {
        Some(m) => TcpOptionsBuf::from_options(&[TcpOption::Mss(m)]).unwrap_or_default(),
        None => TcpOptionsBuf::default(),
    };
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq,
        ack,
        flags,
        window: 65535,
        urgent: 0,
        options,
    };
    let tcp_len = tcp.buffer_len() + payload.len();
    let mut out = vec![0u8; if src.is_ipv6() { 40 } else { 20 } + tcp_len];
    let Ok(ip_len) = ip::emit_header(
        &mut out,
        src.ip(),
        dst.ip(),
        IpProtocol::Tcp,
        tcp_len,
        64,
        true,
    ) else {
        return Vec::new();
    };
    if tcp
        .emit(&mut out[ip_len..], src.ip(), dst.ip(), payload)
        .is_err()
    {
        return Vec::new();
    }
    out
}

/// A received segment, checked: the checksum verified and the header parsed.
struct Segment<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    mss: Option<u16>,
    payload: &'a [u8],
}

fn segment(pkt: &[u8]) -> Option<Segment<'_>> {
    let m = parse_ip(pkt).ok()?;
    if m.flow.protocol != IpProtocol::Tcp {
        return None;
    }
    let l4 = &pkt[usize::from(m.l4_offset)..m.l3_range().end];
    let t = TcpSegment::new_checked(l4).ok()?;
    if !t.verify_checksum(m.flow.src, m.flow.dst) {
        return None;
    }
    Some(Segment {
        src: SocketAddr::new(m.flow.src, m.flow.src_port),
        dst: SocketAddr::new(m.flow.dst, m.flow.dst_port),
        seq: t.seq(),
        ack: t.ack(),
        flags: t.flags(),
        mss: t.mss().ok().flatten(),
        payload: &l4[t.header_len()..],
    })
}

/// The state of one client connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// SYN sent.
    SynSent,
    /// Handshake done; request sent, response arriving.
    Established,
    /// Our FIN sent after the whole response.
    FinSent,
    /// Closed cleanly (both FINs acknowledged).
    Done,
    /// Reset by the other side.
    Reset,
}

/// One client connection and what it observed.
#[derive(Clone, Debug)]
pub struct ClientConn {
    /// Client address and port.
    pub local: SocketAddr,
    /// The service address and port it connected to.
    pub remote: SocketAddr,
    /// State.
    pub state: ClientState,
    snd_nxt: u32,
    rcv_nxt: u32,
    /// Bytes of response received, in order.
    pub received: Vec<u8>,
    /// The MSS the server announced in its SYN-ACK.
    pub server_mss: Option<u16>,
    /// Every source address that sent this connection a packet. Direct
    /// server return is transparent when this is only `remote`'s address.
    pub sources_seen: Vec<SocketAddr>,
    /// Segments whose sequence number was not the next expected.
    pub out_of_order: u32,
    /// Keep the connection open after the response (no FIN).
    pub hold_open: bool,
    /// RSTs ignored because their sequence number was not the expected one.
    pub ignored_rst: u32,
    /// When the SYN was sent.
    pub opened_at: Timestamp,
    /// When the whole response had arrived (or the connection was reset).
    pub finished_at: Option<Timestamp>,
    /// The last request sent (for a retransmission).
    last_request: Option<Vec<u8>>,
}

impl ClientConn {
    /// The next request, `GET <len>`, acknowledging what was received.
    fn request(&mut self, response_len: usize) -> Vec<u8> {
        let req = format!("GET {response_len}\n");
        let p = tcp_packet(
            self.local,
            self.remote,
            self.snd_nxt,
            self.rcv_nxt,
            TcpFlags::ACK | TcpFlags::PSH,
            None,
            req.as_bytes(),
        );
        self.snd_nxt = self.snd_nxt.wrapping_add(req.len() as u32);
        self.last_request = Some(p.clone());
        p
    }

    /// A bare ACK of what was received.
    fn ack(&self) -> Vec<u8> {
        tcp_packet(
            self.local,
            self.remote,
            self.snd_nxt,
            self.rcv_nxt,
            TcpFlags::ACK,
            None,
            &[],
        )
    }

    /// Our FIN (with the ACK of what was received); the state moves to
    /// `FinSent`.
    fn fin(&mut self) -> Vec<u8> {
        let p = tcp_packet(
            self.local,
            self.remote,
            self.snd_nxt,
            self.rcv_nxt,
            TcpFlags::FIN | TcpFlags::ACK,
            None,
            &[],
        );
        self.snd_nxt = self.snd_nxt.wrapping_add(1);
        self.state = ClientState::FinSent;
        p
    }

    /// The response's header line: `DPR <host> <len>`.
    pub fn served_by(&self) -> Option<&str> {
        let end = self.received.iter().position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(&self.received[..end]).ok()?;
        line.split(' ').nth(1)
    }

    fn response_complete(&self) -> bool {
        let Some(end) = self.received.iter().position(|&b| b == b'\n') else {
            return false;
        };
        let len = std::str::from_utf8(&self.received[..end])
            .ok()
            .and_then(|l| l.split(' ').nth(2))
            .and_then(|n| n.parse::<usize>().ok());
        len.is_some_and(|n| self.received.len() >= end + 1 + n)
    }
}

/// A client host: opens connections, sends one request each, reads the
/// response, closes.
#[derive(Debug)]
pub struct Client {
    /// The client's address.
    pub addr: IpAddr,
    /// Its connections, by local port.
    pub conns: BTreeMap<u16, ClientConn>,
    next_port: u16,
    /// Packets that failed the checksum or did not parse.
    pub bad_packets: u32,
    /// Packets for no known connection.
    pub strays: u32,
    /// ICMP messages received.
    pub icmp_received: u32,
}

/// The MSS a simulated endpoint announces (1500-byte links).
pub const LINK_MSS: u16 = 1460;

impl Client {
    /// A client at `addr`.
    pub fn new(addr: IpAddr) -> Self {
        Self {
            addr,
            conns: BTreeMap::new(),
            next_port: 40000,
            bad_packets: 0,
            strays: 0,
            icmp_received: 0,
        }
    }

    /// Opens a connection to `server`; returns its local port and the SYN.
    pub fn connect(
        &mut self,
        now: Timestamp,
        server: SocketAddr,
        hold_open: bool,
    ) -> (u16, Vec<u8>) {
        let port = self.next_port;
        self.next_port = self.next_port.wrapping_add(1).max(1024);
        let local = SocketAddr::new(self.addr, port);
        let iss = u32::from(port).wrapping_mul(0x9e37_79b9);
        self.conns.insert(
            port,
            ClientConn {
                local,
                remote: server,
                state: ClientState::SynSent,
                snd_nxt: iss.wrapping_add(1),
                rcv_nxt: 0,
                received: Vec::new(),
                server_mss: None,
                sources_seen: Vec::new(),
                out_of_order: 0,
                hold_open,
                ignored_rst: 0,
                opened_at: now,
                finished_at: None,
                last_request: None,
            },
        );
        (
            port,
            tcp_packet(local, server, iss, 0, TcpFlags::SYN, Some(LINK_MSS), &[]),
        )
    }

    /// A further request on an open connection (after a held-open response).
    pub fn send_request(&mut self, port: u16, response_len: usize) -> Option<Vec<u8>> {
        let c = self.conns.get_mut(&port)?;
        if c.state != ClientState::Established {
            return None;
        }
        c.received.clear();
        c.finished_at = None;
        Some(c.request(response_len))
    }

    /// The last request again, as TCP would retransmit it when no answer
    /// came (only while the response has not arrived).
    pub fn retransmit(&mut self, port: u16) -> Option<Vec<u8>> {
        let c = self.conns.get(&port)?;
        if c.state != ClientState::Established || c.finished_at.is_some() {
            return None;
        }
        c.last_request.clone()
    }

    /// Closes a held-open connection: our FIN.
    pub fn close(&mut self, port: u16) -> Option<Vec<u8>> {
        let c = self.conns.get_mut(&port)?;
        if c.state != ClientState::Established {
            return None;
        }
        Some(c.fin())
    }

    /// Takes a packet from the network; returns packets to send.
    pub fn receive(&mut self, now: Timestamp, pkt: &[u8], response_len: usize) -> Vec<Vec<u8>> {
        if let Ok(m) = parse_ip(pkt) {
            if matches!(m.flow.protocol, IpProtocol::Icmp | IpProtocol::Icmpv6) {
                self.icmp_received += 1;
                return Vec::new();
            }
        }
        let Some(s) = segment(pkt) else {
            self.bad_packets += 1;
            return Vec::new();
        };
        let Some(c) = self.conns.get_mut(&s.dst.port()) else {
            self.strays += 1;
            return Vec::new();
        };
        if !c.sources_seen.contains(&s.src) {
            c.sources_seen.push(s.src);
        }
        let mut out = Vec::new();
        if s.flags.contains(TcpFlags::RST) {
            // Accept only an RST that proves it saw our packets (RFC 5961:
            // exact sequence number; in SYN-SENT, an ACK of our SYN).
            let valid = match c.state {
                ClientState::SynSent => s.flags.contains(TcpFlags::ACK) && s.ack == c.snd_nxt,
                _ => s.seq == c.rcv_nxt,
            };
            if valid {
                c.state = ClientState::Reset;
                c.finished_at.get_or_insert(now);
            } else {
                c.ignored_rst += 1;
            }
            return out;
        }
        match c.state {
            ClientState::SynSent if s.flags.is_syn_ack() && s.ack == c.snd_nxt => {
                c.rcv_nxt = s.seq.wrapping_add(1);
                c.server_mss = s.mss;
                c.state = ClientState::Established;
                out.push(c.request(response_len));
            }
            ClientState::Established | ClientState::FinSent => {
                if !s.payload.is_empty() {
                    if s.seq == c.rcv_nxt {
                        c.received.extend_from_slice(s.payload);
                        c.rcv_nxt = c.rcv_nxt.wrapping_add(s.payload.len() as u32);
                    } else {
                        c.out_of_order += 1;
                    }
                }
                if s.flags.contains(TcpFlags::FIN)
                    && s.seq.wrapping_add(s.payload.len() as u32) == c.rcv_nxt
                {
                    c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
                    out.push(c.ack());
                    if c.state == ClientState::FinSent {
                        c.state = ClientState::Done;
                    }
                    return out;
                }
                if c.response_complete() {
                    c.finished_at.get_or_insert(now);
                }
                if c.state == ClientState::Established && c.response_complete() && !c.hold_open {
                    out.push(c.fin());
                } else if !s.payload.is_empty() {
                    out.push(c.ack());
                }
            }
            _ => {}
        }
        out
    }
}

#[derive(Clone, Debug)]
struct ServerConn {
    snd_nxt: u32,
    rcv_nxt: u32,
    send_mss: u16,
    request: Vec<u8>,
    fin_sent: bool,
}

/// A host's local TCP stack with one service: answers `GET <n>\n` with
/// `DPR <host> <n>\n` and `n` bytes, segmented by the client's MSS.
#[derive(Debug)]
pub struct Server {
    /// The host's name, put in every response.
    pub name: String,
    /// The addresses this host's stack holds (its own service address and
    /// its peers' on a non-ARP interface): packets to others are not its.
    pub addrs: Vec<IpAddr>,
    /// Packets delivered to this stack for an address it does not hold.
    pub misdelivered: u32,
    /// RSTs ignored for a wrong sequence number (RFC 5961).
    pub ignored_rst: u32,
    conns: BTreeMap<(SocketAddr, SocketAddr), ServerConn>,
    /// The MSS option of every SYN that reached this stack.
    pub syn_mss_seen: Vec<Option<u16>>,
    /// Connections accepted.
    pub accepted: u32,
    /// Connections that closed cleanly.
    pub closed: u32,
    /// Segments that failed the checksum or did not parse.
    pub bad_packets: u32,
    /// Non-SYN segments for unknown connections (answered with RST).
    pub rst_sent: u32,
    /// Responses sent.
    pub responses: u32,
    /// Most connections open at once.
    pub peak_open: u32,
    /// ICMP errors received, with the MTU they carried (0 if none).
    pub icmp_errors: Vec<(icmp::IcmpErrorKind, SocketAddr)>,
}

impl Server {
    /// A stack named `name` that holds `addrs`.
    pub fn new(name: impl Into<String>, addrs: Vec<IpAddr>) -> Self {
        Self {
            name: name.into(),
            addrs,
            misdelivered: 0,
            ignored_rst: 0,
            conns: BTreeMap::new(),
            syn_mss_seen: Vec::new(),
            accepted: 0,
            closed: 0,
            bad_packets: 0,
            rst_sent: 0,
            responses: 0,
            peak_open: 0,
            icmp_errors: Vec::new(),
        }
    }

    /// Open connections (the load metric the hosts report).
    pub fn open_connections(&self) -> u32 {
        self.conns.len() as u32
    }

    /// The connections this stack holds, client to service (what a dump
    /// of the kernel's sockets lists).
    pub fn flows(&self) -> Vec<FlowKey> {
        self.conns
            .keys()
            .map(|(me, peer)| {
                FlowKey::new(IpProtocol::Tcp, peer.ip(), peer.port(), me.ip(), me.port())
            })
            .collect()
    }

    /// Takes a packet delivered by the engine; returns packets to send.
    pub fn receive(&mut self, pkt: &[u8]) -> Vec<Vec<u8>> {
        if let Ok(m) = parse_ip(pkt) {
            let l4 = &pkt[usize::from(m.l4_offset)..m.l3_range().end];
            let err = match m.flow.protocol {
                IpProtocol::Icmp => Some(icmp::parse_icmpv4_error(l4)),
                IpProtocol::Icmpv6 => Some(icmp::parse_icmpv6_error(l4)),
                _ => None,
            };
            if let Some(e) = err {
                if let Ok(e) = e {
                    let about = SocketAddr::new(e.quote.flow.dst, e.quote.flow.dst_port);
                    self.icmp_errors.push((e.kind, about));
                }
                return Vec::new();
            }
        }
        let Some(s) = segment(pkt) else {
            self.bad_packets += 1;
            return Vec::new();
        };
        if !self.addrs.contains(&s.dst.ip()) {
            self.misdelivered += 1;
            return Vec::new();
        }
        // Replies leave with the address the client used: direct server return.
        let (me, peer) = (s.dst, s.src);
        let key = (me, peer);
        let mut out = Vec::new();
        if s.flags.is_syn() {
            self.syn_mss_seen.push(s.mss);
            if let std::collections::btree_map::Entry::Vacant(slot) = self.conns.entry(key) {
                let iss = (u32::from(peer.port()) << 16) ^ 0x5eed_0001;
                slot.insert(ServerConn {
                    snd_nxt: iss.wrapping_add(1),
                    rcv_nxt: s.seq.wrapping_add(1),
                    send_mss: s.mss.unwrap_or(536).min(LINK_MSS),
                    request: Vec::new(),
                    fin_sent: false,
                });
                self.accepted += 1;
                self.peak_open = self.peak_open.max(self.conns.len() as u32);
            }
            if let Some(c) = self.conns.get(&key) {
                let iss = c.snd_nxt.wrapping_sub(1);
                out.push(tcp_packet(
                    me,
                    peer,
                    iss,
                    c.rcv_nxt,
                    TcpFlags::SYN | TcpFlags::ACK,
                    Some(LINK_MSS),
                    &[],
                ));
            }
            return out;
        }
        let Some(c) = self.conns.get_mut(&key) else {
            if !s.flags.contains(TcpFlags::RST) {
                self.rst_sent += 1;
                out.push(tcp_packet(me, peer, s.ack, 0, TcpFlags::RST, None, &[]));
            }
            return out;
        };
        if s.flags.contains(TcpFlags::RST) {
            if s.seq == c.rcv_nxt {
                self.conns.remove(&key);
            } else {
                self.ignored_rst += 1;
            }
            return out;
        }
        if !s.payload.is_empty() && s.seq == c.rcv_nxt {
            c.request.extend_from_slice(s.payload);
            c.rcv_nxt = c.rcv_nxt.wrapping_add(s.payload.len() as u32);
            if let Some(end) = c.request.iter().position(|&b| b == b'\n') {
                let n = std::str::from_utf8(&c.request[..end])
                    .ok()
                    .and_then(|l| l.strip_prefix("GET "))
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0);
                c.request.drain(..=end);
                self.responses += 1;
                let mut body = format!("DPR {} {n}\n", self.name).into_bytes();
                body.extend((0..n).map(|i| b'a' + (i % 26) as u8));
                for chunk in body.chunks(usize::from(c.send_mss.max(1))) {
                    out.push(tcp_packet(
                        me,
                        peer,
                        c.snd_nxt,
                        c.rcv_nxt,
                        TcpFlags::ACK | TcpFlags::PSH,
                        None,
                        chunk,
                    ));
                    c.snd_nxt = c.snd_nxt.wrapping_add(chunk.len() as u32);
                }
            }
        }
        if s.flags.contains(TcpFlags::FIN)
            && s.seq.wrapping_add(s.payload.len() as u32) == c.rcv_nxt
        {
            c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
            // Answer the client's FIN with ours (and its ACK).
            out.push(tcp_packet(
                me,
                peer,
                c.snd_nxt,
                c.rcv_nxt,
                TcpFlags::FIN | TcpFlags::ACK,
                None,
                &[],
            ));
            c.snd_nxt = c.snd_nxt.wrapping_add(1);
            c.fin_sent = true;
            return out;
        }
        if c.fin_sent && s.ack == c.snd_nxt {
            self.conns.remove(&key);
            self.closed += 1;
        }
        out
    }
}
