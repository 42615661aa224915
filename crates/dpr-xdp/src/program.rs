//! The router's XDP program: its readable source, as eBPF assembled in Rust.
//!
//! It redirects into the AF_XDP socket of the receive queue (`xsks`, keyed by
//! `rx_queue_index`) only what the router owns, and passes everything else to
//! the kernel untouched:
//!
//! | frame | verdict |
//! |---|---|
//! | with the fast path built in (`fast_path_mtu`): IPv4 TCP to a service (address, port), untagged, DF set and not a fragment, not SYN, FIN or RST, of a flow in `fwd_flows_v4` whose peer entry in `fwd_peers` has the flow's generation (not 0), the outer packet within the MTU | **encapsulated here** (outer IPv4, then GRE with the flow's tag or nothing for IP-in-IP) and sent back out, `XDP_TX` (see below) |
//! | IPv4/IPv6 TCP to a (service address, port) in `services_v4`/`services_v6` | redirect |
//! | IPv4 fragment (MF set or offset > 0) of TCP to a service *address* | redirect (the engine counts and drops it) |
//! | IPv6 with a Fragment header directly before TCP, to a service address | redirect (likewise) |
//! | IPv4-in-IPv4 from a peer, untagged, both headers without options, neither a fragment, same ECN bits outside and inside, TCP to one of *that peer's* service (address, port) in `tunnel_services_v4`, not SYN, FIN or RST | **decapsulated here** and passed to the kernel (see below) |
//! | the keyed tunnel's GRE over IPv4 from a peer, untagged, the same plain case, of a flow in `keyed_flows_v4` for that peer with the same tag | **decapsulated here** and passed to the kernel |
//! | IP protocol 4, 41 or 47 (IP-in-IP, IPv6-in-IP, the keyed tunnel's GRE) from an address in `peers_v4`/`peers_v6` (anything else) | redirect |
//! | Ethernet with one 802.1Q / 802.1ad tag | as above, after the tag |
//! | with the interface's MAC given (`own_mac`): a frame addressed to another MAC | pass (before anything else; see below), counted `OtherHost` if that MAC is unicast |
//! | anything else: ARP, other ports, UDP, ICMP, non-peer IP-in-IP, two VLAN tags, other IPv6 extension headers, IPv4 with a bad version or IHL, truncated headers | pass |
//!
//! **Decapsulation in the program.** Most packets a peer tunnels to this host
//! are the middle of connections it serves: the engine only strips the
//! outer header and hands the inner packet to the local stack. For those
//! the program does it itself (`bpf_xdp_adjust_head` by the 20 outer bytes,
//! the same MAC addresses written in front, `XDP_PASS`), which saves the
//! copy into the socket, a wake-up of the worker and a TUN write per packet.
//! The kernel then receives the client's packet as if the client had sent
//! it here (the peers' service addresses are local addresses of this host).
//! What the engine must see still goes to it: SYN, FIN and RST (the
//! served-for-peers table records and ends connections from them; the daemon
//! keeps the entries of live connections fresh from the kernel's socket
//! table), and every packet outside the plain case above — options,
//! fragments, ECN to combine, VLAN tags, IPv6, an inner packet that is not
//! service TCP of that peer (the engine counts and drops it), and all of the
//! keyed tunnel's GRE, whose tags only the engine checks. The outer
//! header's checksum is not verified on this path; the kernel verifies the
//! inner IP and TCP checksums as for any packet. Enabled when the loader is
//! given `tunnel_services_v4` entries (`RouterProgram::add_tunnel_service`).
//!
//! **The send side's fast path** (issue 17). A host that redirected a
//! connection forwards every later packet of its client to the peer; the
//! engine only looks the flow up and adds the same outer header. For a
//! flow the engine redirected, the worker writes `fwd_flows_v4` (flow →
//! peer index, the peer entry's generation, the tunnel: GRE with the
//! flow's tag and key id, or IP-in-IP) and the peer's entry in `fwd_peers`
//! (next-hop and own MAC, TTL, outer source and destination, generation),
//! both taken from the frame the engine forwarded. The program then writes
//! the outer headers into the headroom (`bpf_xdp_adjust_head` by 20 or 32
//! bytes): the Ethernet header of the peer entry, an outer IPv4 header as
//! `dpr_packet::ipip` writes it (TOS and ECN copied, DF set, identification
//! 0, the engine's TTL, checksum computed here), the GRE header; it counts
//! the packet in the flow's entry (the worker refreshes the engine's idle
//! timer from that count) and returns `XDP_TX`. The engine still sees SYN,
//! FIN and RST (its table and counters follow the connection); the program
//! deletes their flow's entry as it passes them on (a SYN that reuses a
//! 4-tuple may be sent to another peer: its handshake's ACK must not follow
//! the old entry before the worker writes the new one), and every packet the
//! program does not take: unknown flows, fragments, VLAN tags, DF clear
//! (the engine numbers the outer identification), packets whose outer
//! packet would exceed the MTU (the engine answers "too big"), and the
//! flows of a peer whose generation moved: the control thread bumps it
//! when the engine holds the peer dead or it left, and on every reload.
//!
//! **Frames for another host.** XDP runs before the kernel's own
//! destination-MAC filter: a switch flooding unknown unicast (a bridge
//! whose port went down forgets the MAC behind it, and floods the frames
//! the upstream router still sends there until it notices), or an
//! interface in promiscuous mode, hands the program frames addressed to
//! other hosts. Taking them would make this host answer connections that
//! are not its own (a second SYN-ACK, resets for the real owner's
//! packets), so with `own_mac` the program passes them to the kernel
//! untouched — which drops them, as it does without XDP — before any
//! other test. Three 16-bit compares against the MAC built into the
//! program at load (a MAC change needs a reload of the program).
//!
//! When the queue has no socket in `xsks`, `bpf_redirect_map` returns the
//! configured fallback ([`MissingSocket`], pass by default): before the
//! daemon binds its sockets, the kernel keeps serving.
//!
//! Why fragments go to the router: a later fragment has no ports, so only the
//! address can be matched; the engine already drops (and counts) TCP
//! fragments to service addresses, so sending them there keeps one place that
//! decides and one counter that shows it. The "any service on this address"
//! test uses the key (address, port 0), which [`crate::RouterProgram`]
//! maintains beside every (address, port).
//!
//! Map layouts (all keys in network byte order, as on the wire):
//!
//! | map | type | key | value |
//! |---|---|---|---|
//! | `services_v4` | hash | IPv4 address (4) + port (2) + zero (2) | `u32` (unused, 1) |
//! | `services_v6` | hash | IPv6 address (16) + port (2) + zero (2) | `u32` |
//! | `peers_v4` | hash | IPv4 tunnel address (4) | `u32` |
//! | `peers_v6` | hash | IPv6 tunnel address (16) | `u32` |
//! | `tunnel_services_v4` | hash | peer's IPv4 tunnel address (4) + its service address (4) + port (2) + zero (2) | `u32` |
//! | `keyed_flows_v4` | LRU hash | peer's IPv4 tunnel address (4) + client address (4) + service address (4) + client port (2) + service port (2) | the tag accepted (4, as on the wire) |
//! | `fwd_flows_v4` | LRU hash | client address (4) + service address (4) + client port (2) + service port (2) | peer index `u32`, generation `u32`, GRE key (4, wire), GRE sequence word (4, wire: 0, key id), outer protocol `u32` (4 or 47), pad (4), packets forwarded `u64` (32 bytes) |
//! | `fwd_peers` | array | peer index `u32` | Ethernet header (14: next hop's MAC, own MAC, 0x0800), TTL (1), pad (1), outer source (4), outer destination (4), generation `u32` (0: none), pad (4) (32 bytes) |
//! | `xsks` | xskmap | receive queue index `u32` | AF_XDP socket fd |
//! | `counters` | per-CPU array | [`Counter`] index `u32` | `u64` packets |
//!
//! Registers: r6 = context, r7 = packet start (later the counter index of
//! the verdict), r8 = packet end, r9 = network header. Every packet read is
//! preceded by a bounds check against r8, which the verifier proves. The
//! fast path keeps its two map value pointers on the stack across helper
//! calls (the verifier tracks spilled pointers).

use crate::asm::{Alu, Asm, AsmError, Cond, Insn, Label, Reg, Size};
use Reg::*;

/// `XDP_ABORTED`.
pub const XDP_ABORTED: u32 = 0;
/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;
/// `XDP_REDIRECT`.
pub const XDP_REDIRECT: u32 = 4;

const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_MAP_DELETE_ELEM: i32 = 3;
const HELPER_REDIRECT_MAP: i32 = 51;
const HELPER_XDP_ADJUST_HEAD: i32 = 44;

/// What the program does with router traffic arriving on a queue that has no
/// AF_XDP socket in `xsks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingSocket {
    /// Give it to the kernel (the default: nothing breaks before the daemon
    /// binds its sockets, or on a queue it did not bind).
    #[default]
    Pass,
    /// Drop it.
    Drop,
}

impl MissingSocket {
    const fn action(self) -> u32 {
        match self {
            MissingSocket::Pass => XDP_PASS,
            MissingSocket::Drop => XDP_DROP,
        }
    }
}

/// The program's counters, indices into the per-CPU `counters` array.
/// Every packet increments exactly one of `Pass` … `PeerV6`, `DecapV4`,
/// `DecapGreV4`, `ForwardV4` or `OtherHost`;
/// `NoSocket` additionally counts redirects that found no socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// Passed to the kernel.
    Pass = 0,
    /// IPv4 TCP to a service (address, port).
    ServiceV4 = 1,
    /// IPv4 fragment of TCP to a service address.
    FragmentV4 = 2,
    /// IP-in-IP or GRE over IPv4 from a peer.
    PeerV4 = 3,
    /// IPv6 TCP to a service (address, port).
    ServiceV6 = 4,
    /// IPv6 fragment of TCP to a service address.
    FragmentV6 = 5,
    /// IP-in-IP or GRE over IPv6 from a peer.
    PeerV6 = 6,
    /// A redirect that found no socket for its queue (fallback applied).
    NoSocket = 7,
    /// IPv4-in-IPv4 from a peer decapsulated here and passed to the kernel.
    DecapV4 = 8,
    /// The keyed tunnel's GRE from a peer, of a flow the engine accepted
    /// (in `keyed_flows_v4`, same tag), decapsulated here and passed.
    DecapGreV4 = 9,
    /// The send side's fast path: IPv4 TCP of an established redirected
    /// flow (in `fwd_flows_v4`, its peer's generation current),
    /// encapsulated here and sent back out of the interface (`XDP_TX`).
    ForwardV4 = 10,
    /// A frame addressed to another host's MAC (unknown unicast flooded by
    /// a switch, a promiscuous interface): passed to the kernel, which
    /// drops it. Only with the interface's MAC built in (`own_mac`).
    OtherHost = 11,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 12] = [
        Counter::Pass,
        Counter::ServiceV4,
        Counter::FragmentV4,
        Counter::PeerV4,
        Counter::ServiceV6,
        Counter::FragmentV6,
        Counter::PeerV6,
        Counter::NoSocket,
        Counter::DecapV4,
        Counter::DecapGreV4,
        Counter::ForwardV4,
        Counter::OtherHost,
    ];
    /// Number of counters (the array's size).
    pub const COUNT: u32 = 12;
}

/// The map file descriptors the program refers to.
#[derive(Debug, Clone, Copy)]
pub struct MapFds {
    /// `services_v4`.
    pub services_v4: i32,
    /// `services_v6`.
    pub services_v6: i32,
    /// `peers_v4`.
    pub peers_v4: i32,
    /// `peers_v6`.
    pub peers_v6: i32,
    /// `tunnel_services_v4`.
    pub tunnel_services_v4: i32,
    /// `keyed_flows_v4`.
    pub keyed_flows_v4: i32,
    /// `fwd_flows_v4`.
    pub fwd_flows_v4: i32,
    /// `fwd_peers`.
    pub fwd_peers: i32,
    /// `xsks`.
    pub xsks: i32,
    /// `counters`.
    pub counters: i32,
}

/// Key sizes, shared with the loader.
pub(crate) const SERVICE_V4_KEY: u32 = 8;
pub(crate) const SERVICE_V6_KEY: u32 = 20;
pub(crate) const PEER_V4_KEY: u32 = 4;
pub(crate) const PEER_V6_KEY: u32 = 16;
pub(crate) const TUNNEL_SERVICE_V4_KEY: u32 = 12;
pub(crate) const KEYED_FLOW_V4_KEY: u32 = 16;
pub(crate) const FWD_FLOW_V4_KEY: u32 = 12;
pub(crate) const FWD_FLOW_VALUE: u32 = 32;
pub(crate) const FWD_PEER_VALUE: u32 = 32;

// Ethernet types and IP protocols, as the program's 16-bit loads see them
// (network byte order read by a native-order load).
const fn wire16(v: u16) -> i32 {
    u16::from_ne_bytes(v.to_be_bytes()) as i32
}
const ETH_P_IPV4: i32 = wire16(0x0800);
const ETH_P_IPV6: i32 = wire16(0x86dd);
const ETH_P_8021Q: i32 = wire16(0x8100);
const ETH_P_8021AD: i32 = wire16(0x88a8);
/// IPv4 flags/fragment-offset field: MF bit and the 13-bit offset.
const IPV4_FRAG_MASK: i32 = wire16(0x3fff);
const PROTO_TCP: i32 = 6;
const PROTO_IPIP: i32 = 4;
const PROTO_IPV6: i32 = 41;
const PROTO_GRE: i32 = 47;
const PROTO_FRAGMENT: i32 = 44;

// Stack layout (offsets from r10).
const KEY: i16 = -40; // up to 20 bytes: -40..-20
const COUNTER_INDEX: i16 = -4;
const MACS: i16 = -56; // the 12 MAC bytes while the head moves: -56..-44
const FLOW_PTR: i16 = -64; // the fast path's flow entry (a spilled map value pointer)
const PEER_PTR: i16 = -72; // ... and its peer entry
const PEER_KEY: i16 = -76; // the peer index, as the array's key
/// TCP flags that must reach the engine: FIN, SYN, RST.
const TCP_FIN_SYN_RST: i32 = 0x07;

/// Builds the program for the given maps and missing-socket action; with
/// `fast_path_mtu`, the send side's fast path (see the module
/// documentation) for outer packets of at most that many bytes; with
/// `own_mac`, frames addressed to any other MAC are passed first.
pub fn router_program(
    maps: &MapFds,
    missing: MissingSocket,
    fast_path_mtu: Option<u16>,
    own_mac: Option<[u8; 6]>,
) -> Result<Vec<Insn>, AsmError> {
    let mut a = Asm::new();
    let pass = a.label();
    let other_host = a.label();
    let redirect = a.label();
    let vlan = a.label();
    let l3 = a.label();
    let ipv4 = a.label();
    let ipv6 = a.label();
    let v4_tcp = a.label();
    let v4_frag = a.label();
    let v4_tunnel = a.label();
    let v6_tcp = a.label();
    let v6_frag = a.label();
    let v6_tunnel = a.label();

    // ---- Ethernet: r7 = data, r8 = data_end, r9 = network header, r2 = type.
    a.mov_reg(R6, R1);
    a.load(Size::W, R7, R6, 0); // xdp_md.data
    a.load(Size::W, R8, R6, 4); // xdp_md.data_end
    a.mov_reg(R9, R7).alu_imm(Alu::Add, R9, 14);
    a.jmp_reg(Cond::Gt, R9, R8, pass); // shorter than an Ethernet header
    if let Some(mac) = own_mac {
        // 16-bit loads are zero-extended and compared with a positive
        // immediate: no sign extension to get wrong.
        for k in [0usize, 2, 4] {
            let want = u16::from_ne_bytes([mac[k], mac[k + 1]]);
            a.load(Size::H, R2, R7, k as i16);
            a.jmp_imm(Cond::Ne, R2, i32::from(want), other_host);
        }
    }
    a.load(Size::H, R2, R7, 12);
    a.jmp_imm(Cond::Eq, R2, ETH_P_8021Q, vlan);
    a.jmp_imm(Cond::Eq, R2, ETH_P_8021AD, vlan);
    a.ja(l3);

    // ---- One VLAN tag: the real type follows it. A second tag is passed
    // (its type is neither IPv4 nor IPv6).
    a.bind(vlan);
    a.mov_reg(R9, R7).alu_imm(Alu::Add, R9, 18);
    a.jmp_reg(Cond::Gt, R9, R8, pass);
    a.load(Size::H, R2, R7, 16);

    a.bind(l3);
    a.jmp_imm(Cond::Eq, R2, ETH_P_IPV4, ipv4);
    a.jmp_imm(Cond::Eq, R2, ETH_P_IPV6, ipv6);
    a.ja(pass);

    // ---- IPv4: version 4, IHL >= 5, then by protocol. r2 = header length.
    a.bind(ipv4);
    a.mov_reg(R3, R9).alu_imm(Alu::Add, R3, 20);
    a.jmp_reg(Cond::Gt, R3, R8, pass);
    a.load(Size::B, R2, R9, 0);
    a.mov_reg(R3, R2).alu_imm(Alu::Rsh, R3, 4);
    a.jmp_imm(Cond::Ne, R3, 4, pass);
    a.alu_imm(Alu::And, R2, 0x0f);
    a.jmp_imm(Cond::Lt, R2, 5, pass);
    a.alu_imm(Alu::Lsh, R2, 2); // 20..=60 bytes
    a.load(Size::B, R4, R9, 9); // protocol
    a.jmp_imm(Cond::Eq, R4, PROTO_TCP, v4_tcp);
    a.jmp_imm(Cond::Eq, R4, PROTO_IPIP, v4_tunnel);
    a.jmp_imm(Cond::Eq, R4, PROTO_IPV6, v4_tunnel);
    a.jmp_imm(Cond::Eq, R4, PROTO_GRE, v4_tunnel);
    a.ja(pass);

    // IPv4 TCP, not a fragment: key (destination, destination port).
    a.bind(v4_tcp);
    a.load(Size::H, R3, R9, 6);
    a.alu_imm(Alu::And, R3, IPV4_FRAG_MASK);
    a.jmp_imm(Cond::Ne, R3, 0, v4_frag);
    a.mov_reg(R3, R9).alu_reg(Alu::Add, R3, R2); // TCP header (after options)
    a.mov_reg(R4, R3).alu_imm(Alu::Add, R4, 4);
    a.jmp_reg(Cond::Gt, R4, R8, pass); // ports truncated
    a.load(Size::H, R4, R3, 2); // destination port
    a.load(Size::W, R5, R9, 16); // destination address
    a.store(Size::W, R10, KEY, R5);
    a.store(Size::H, R10, KEY + 4, R4);
    a.store_imm(Size::H, R10, KEY + 6, 0);
    lookup_or_pass(&mut a, maps.services_v4, pass);
    if let Some(mtu) = fast_path_mtu {
        let to_router = a.label();
        forward_v4(&mut a, maps, mtu, to_router);
        a.bind(to_router);
    }
    a.mov_imm(R7, Counter::ServiceV4 as i32).ja(redirect);

    // IPv4 fragment of TCP: key (destination, port 0) = "has a service".
    a.bind(v4_frag);
    a.load(Size::W, R5, R9, 16);
    a.store(Size::W, R10, KEY, R5);
    a.store_imm(Size::W, R10, KEY + 4, 0);
    lookup_or_pass(&mut a, maps.services_v4, pass);
    a.mov_imm(R7, Counter::FragmentV4 as i32).ja(redirect);

    // IP-in-IP over IPv4: key = outer source.
    a.bind(v4_tunnel);
    a.load(Size::W, R5, R9, 12);
    a.store(Size::W, R10, KEY, R5);
    lookup_or_pass(&mut a, maps.peers_v4, pass);
    let to_engine = a.label();
    let ipip = a.label();
    decap_gre_v4(&mut a, maps, ipip, to_engine);
    a.bind(ipip);
    decap_v4(&mut a, maps, to_engine);
    a.bind(to_engine);
    a.mov_imm(R7, Counter::PeerV4 as i32).ja(redirect);

    // ---- IPv6: fixed header, then by next header (no extension walk).
    a.bind(ipv6);
    a.mov_reg(R3, R9).alu_imm(Alu::Add, R3, 40);
    a.jmp_reg(Cond::Gt, R3, R8, pass);
    a.load(Size::B, R2, R9, 0);
    a.alu_imm(Alu::Rsh, R2, 4);
    a.jmp_imm(Cond::Ne, R2, 6, pass);
    a.load(Size::B, R4, R9, 6); // next header
    a.jmp_imm(Cond::Eq, R4, PROTO_TCP, v6_tcp);
    a.jmp_imm(Cond::Eq, R4, PROTO_FRAGMENT, v6_frag);
    a.jmp_imm(Cond::Eq, R4, PROTO_IPIP, v6_tunnel);
    a.jmp_imm(Cond::Eq, R4, PROTO_IPV6, v6_tunnel);
    a.jmp_imm(Cond::Eq, R4, PROTO_GRE, v6_tunnel);
    a.ja(pass);

    // IPv6 TCP: key (destination, destination port).
    a.bind(v6_tcp);
    a.mov_reg(R3, R9).alu_imm(Alu::Add, R3, 44);
    a.jmp_reg(Cond::Gt, R3, R8, pass);
    a.load(Size::H, R4, R9, 42); // destination port
    copy_v6_addr(&mut a, 24); // destination address
    a.store(Size::H, R10, KEY + 16, R4);
    a.store_imm(Size::H, R10, KEY + 18, 0);
    lookup_or_pass(&mut a, maps.services_v6, pass);
    a.mov_imm(R7, Counter::ServiceV6 as i32).ja(redirect);

    // IPv6 Fragment header carrying TCP: key (destination, port 0).
    a.bind(v6_frag);
    a.mov_reg(R3, R9).alu_imm(Alu::Add, R3, 48);
    a.jmp_reg(Cond::Gt, R3, R8, pass);
    a.load(Size::B, R4, R9, 40); // the fragment header's next header
    a.jmp_imm(Cond::Ne, R4, PROTO_TCP, pass);
    copy_v6_addr(&mut a, 24);
    a.store_imm(Size::W, R10, KEY + 16, 0);
    lookup_or_pass(&mut a, maps.services_v6, pass);
    a.mov_imm(R7, Counter::FragmentV6 as i32).ja(redirect);

    // IP-in-IP over IPv6: key = outer source.
    a.bind(v6_tunnel);
    copy_v6_addr(&mut a, 8);
    lookup_or_pass(&mut a, maps.peers_v6, pass);
    a.mov_imm(R7, Counter::PeerV6 as i32).ja(redirect);

    // ---- Redirect into the socket of this receive queue; r7 = counter.
    a.bind(redirect);
    count(&mut a, maps.counters, None);
    a.load(Size::W, R2, R6, 16); // xdp_md.rx_queue_index
    a.load_map_fd(R1, maps.xsks);
    a.mov_imm(R3, missing.action() as i32); // returned when the slot is empty
    a.call(HELPER_REDIRECT_MAP);
    a.mov_reg(R7, R0);
    let done = a.label();
    a.jmp_imm(Cond::Eq, R7, XDP_REDIRECT as i32, done);
    count(&mut a, maps.counters, Some(Counter::NoSocket));
    a.bind(done);
    a.mov_reg(R0, R7);
    a.exit();

    // ---- Everything else: to the kernel.
    a.bind(pass);
    count(&mut a, maps.counters, Some(Counter::Pass));
    a.mov_imm(R0, XDP_PASS as i32);
    a.exit();

    // ---- Another host's frame: to the kernel, which drops it. (Only
    // with the MAC: the verifier refuses unreachable instructions.)
    // A group address (broadcast, multicast: the I/G bit) is no other
    // host's: passed as any non-router frame is.
    if own_mac.is_some() {
        a.bind(other_host);
        a.load(Size::B, R2, R7, 0);
        a.alu_imm(Alu::And, R2, 1);
        a.jmp_imm(Cond::Ne, R2, 0, pass);
        count(&mut a, maps.counters, Some(Counter::OtherHost));
        a.mov_imm(R0, XDP_PASS as i32);
        a.exit();
    }

    a.finish()
}

/// The decapsulation fast path (see the module documentation) for an
/// IPv4-in-IPv4 frame from a known peer (r7 data, r8 end, r9 outer IPv4
/// header): returns `XDP_PASS` with the inner packet, or jumps to
/// `to_engine` with the frame untouched.
fn decap_v4(a: &mut Asm, maps: &MapFds, to_engine: Label) {
    a.mov_reg(R3, R7).alu_imm(Alu::Add, R3, 14);
    a.jmp_reg(Cond::Ne, R3, R9, to_engine); // a VLAN tag
    a.mov_reg(R3, R9).alu_imm(Alu::Add, R3, 20 + 20 + 14);
    a.jmp_reg(Cond::Gt, R3, R8, to_engine); // through the inner TCP flags
    // Outer: version 4, no options, IP-in-IP, not a fragment.
    a.load(Size::B, R2, R9, 0);
    a.jmp_imm(Cond::Ne, R2, 0x45, to_engine);
    a.load(Size::B, R2, R9, 9);
    a.jmp_imm(Cond::Ne, R2, PROTO_IPIP, to_engine);
    a.load(Size::H, R2, R9, 6);
    a.alu_imm(Alu::And, R2, IPV4_FRAG_MASK);
    a.jmp_imm(Cond::Ne, R2, 0, to_engine);
    // Inner: version 4, no options, TCP, not a fragment.
    a.load(Size::B, R2, R9, 20);
    a.jmp_imm(Cond::Ne, R2, 0x45, to_engine);
    a.load(Size::B, R2, R9, 20 + 9);
    a.jmp_imm(Cond::Ne, R2, PROTO_TCP, to_engine);
    a.load(Size::H, R2, R9, 20 + 6);
    a.alu_imm(Alu::And, R2, IPV4_FRAG_MASK);
    a.jmp_imm(Cond::Ne, R2, 0, to_engine);
    // The same ECN bits outside and inside: nothing to combine (RFC 6040).
    a.load(Size::B, R2, R9, 1);
    a.load(Size::B, R3, R9, 20 + 1);
    a.alu_reg(Alu::Xor, R2, R3).alu_imm(Alu::And, R2, 3);
    a.jmp_imm(Cond::Ne, R2, 0, to_engine);
    // Lengths agree: outer total = inner total + 20.
    for (reg, off) in [(R2, 2), (R3, 20 + 2)] {
        a.load(Size::B, reg, R9, off).alu_imm(Alu::Lsh, reg, 8);
        a.load(Size::B, R4, R9, off + 1);
        a.alu_reg(Alu::Or, reg, R4);
    }
    a.alu_imm(Alu::Add, R3, 20);
    a.jmp_reg(Cond::Ne, R2, R3, to_engine);
    // SYN, FIN and RST go to the engine.
    a.load(Size::B, R2, R9, 20 + 20 + 13);
    a.alu_imm(Alu::And, R2, TCP_FIN_SYN_RST);
    a.jmp_imm(Cond::Ne, R2, 0, to_engine);
    // (peer, inner destination, destination port): a service of that peer.
    a.load(Size::W, R5, R9, 12);
    a.store(Size::W, R10, KEY, R5);
    a.load(Size::W, R5, R9, 20 + 16);
    a.store(Size::W, R10, KEY + 4, R5);
    a.load(Size::H, R5, R9, 20 + 20 + 2);
    a.store(Size::H, R10, KEY + 8, R5);
    a.store_imm(Size::H, R10, KEY + 10, 0);
    lookup_or_pass(a, maps.tunnel_services_v4, to_engine);
    strip_and_pass(a, maps, 20, Counter::DecapV4, to_engine);
}

/// GRE's first word in the keyed tunnel (K and S set, version 0, IPv4
/// inside), as a native-order load of the wire bytes sees it.
const GRE_KS_IPV4: i32 = i32::from_ne_bytes([0x30, 0, 0x08, 0]);

/// The keyed tunnel's fast path for a GRE frame from a known peer (r7 data,
/// r8 end, r9 outer IPv4 header): a plain packet of a connection in progress
/// (the same conditions as [`decap_v4`]'s), of a flow the engine accepted
/// from that peer and with the tag it accepted (`keyed_flows_v4`: key peer,
/// client address, service address, client port, service port; value the
/// tag as on the wire), is decapsulated and passed; any other GRE goes to
/// `to_engine` untouched, and what is not GRE to `not_gre`.
fn decap_gre_v4(a: &mut Asm, maps: &MapFds, not_gre: Label, to_engine: Label) {
    a.load(Size::B, R2, R9, 9);
    a.jmp_imm(Cond::Ne, R2, PROTO_GRE, not_gre);
    a.mov_reg(R3, R7).alu_imm(Alu::Add, R3, 14);
    a.jmp_reg(Cond::Ne, R3, R9, to_engine); // a VLAN tag
    a.mov_reg(R3, R9).alu_imm(Alu::Add, R3, 20 + 12 + 20 + 14);
    a.jmp_reg(Cond::Gt, R3, R8, to_engine); // through the inner TCP flags
    // Outer: version 4, no options, not a fragment; GRE in the one form.
    a.load(Size::B, R2, R9, 0);
    a.jmp_imm(Cond::Ne, R2, 0x45, to_engine);
    a.load(Size::H, R2, R9, 6);
    a.alu_imm(Alu::And, R2, IPV4_FRAG_MASK);
    a.jmp_imm(Cond::Ne, R2, 0, to_engine);
    a.load(Size::W, R2, R9, 20);
    a.jmp_imm(Cond::Ne, R2, GRE_KS_IPV4, to_engine);
    // Inner (at 32): version 4, no options, TCP, not a fragment.
    a.load(Size::B, R2, R9, 32);
    a.jmp_imm(Cond::Ne, R2, 0x45, to_engine);
    a.load(Size::B, R2, R9, 32 + 9);
    a.jmp_imm(Cond::Ne, R2, PROTO_TCP, to_engine);
    a.load(Size::H, R2, R9, 32 + 6);
    a.alu_imm(Alu::And, R2, IPV4_FRAG_MASK);
    a.jmp_imm(Cond::Ne, R2, 0, to_engine);
    // The same ECN bits outside and inside.
    a.load(Size::B, R2, R9, 1);
    a.load(Size::B, R3, R9, 32 + 1);
    a.alu_reg(Alu::Xor, R2, R3).alu_imm(Alu::And, R2, 3);
    a.jmp_imm(Cond::Ne, R2, 0, to_engine);
    // Lengths agree: outer total = inner total + 32.
    for (reg, off) in [(R2, 2), (R3, 32 + 2)] {
        a.load(Size::B, reg, R9, off).alu_imm(Alu::Lsh, reg, 8);
        a.load(Size::B, R4, R9, off + 1);
        a.alu_reg(Alu::Or, reg, R4);
    }
    a.alu_imm(Alu::Add, R3, 32);
    a.jmp_reg(Cond::Ne, R2, R3, to_engine);
    // SYN, FIN and RST go to the engine.
    a.load(Size::B, R2, R9, 32 + 20 + 13);
    a.alu_imm(Alu::And, R2, TCP_FIN_SYN_RST);
    a.jmp_imm(Cond::Ne, R2, 0, to_engine);
    // (peer, client, service, client port, service port): accepted?
    a.load(Size::W, R5, R9, 12);
    a.store(Size::W, R10, KEY, R5);
    a.load(Size::W, R5, R9, 32 + 12);
    a.store(Size::W, R10, KEY + 4, R5);
    a.load(Size::W, R5, R9, 32 + 16);
    a.store(Size::W, R10, KEY + 8, R5);
    a.load(Size::W, R5, R9, 32 + 20); // both ports
    a.store(Size::W, R10, KEY + 12, R5);
    lookup_or_pass(a, maps.keyed_flows_v4, to_engine);
    // With the tag it was accepted with (another tag: a key roll, or a
    // forgery; the engine tells them apart).
    a.load(Size::W, R2, R0, 0);
    a.load(Size::W, R3, R9, 24);
    a.jmp_reg(Cond::Ne, R2, R3, to_engine);
    strip_and_pass(a, maps, 32, Counter::DecapGreV4, to_engine);
}

/// Drops the first `outer` bytes after the Ethernet header (r7 data, r8
/// end), keeping the MAC addresses, counts `counter` and passes the frame;
/// jumps to `to_engine` with the frame unchanged if the head cannot move.
fn strip_and_pass(a: &mut Asm, maps: &MapFds, outer: i32, counter: Counter, to_engine: Label) {
    // Keep the MAC addresses, drop the outer header, write them back.
    a.load(Size::W, R2, R7, 0).store(Size::W, R10, MACS, R2);
    a.load(Size::H, R2, R7, 4).store(Size::H, R10, MACS + 4, R2);
    a.load(Size::H, R2, R7, 6).store(Size::H, R10, MACS + 6, R2);
    a.load(Size::W, R2, R7, 8).store(Size::W, R10, MACS + 8, R2);
    a.mov_reg(R1, R6).mov_imm(R2, outer);
    a.call(HELPER_XDP_ADJUST_HEAD);
    a.jmp_imm(Cond::Ne, R0, 0, to_engine); // refused: the frame is unchanged
    a.load(Size::W, R7, R6, 0);
    a.load(Size::W, R8, R6, 4);
    a.mov_reg(R3, R7).alu_imm(Alu::Add, R3, 14);
    let aborted = a.label();
    a.jmp_reg(Cond::Gt, R3, R8, aborted);
    a.load(Size::W, R2, R10, MACS).store(Size::W, R7, 0, R2);
    a.load(Size::H, R2, R10, MACS + 4).store(Size::H, R7, 4, R2);
    a.load(Size::H, R2, R10, MACS + 6).store(Size::H, R7, 6, R2);
    a.load(Size::W, R2, R10, MACS + 8).store(Size::W, R7, 8, R2);
    a.store_imm(Size::H, R7, 12, ETH_P_IPV4);
    count(a, maps.counters, Some(counter));
    a.mov_imm(R0, XDP_PASS as i32);
    a.exit();
    // Cannot happen (the frame only shrank); never pass a half-written one.
    a.bind(aborted);
    a.mov_imm(R0, XDP_ABORTED as i32);
    a.exit();
}

/// The IPv4 flags and fragment field with DF alone set, as loaded.
const DF_ONLY: i32 = wire16(0x4000);

/// The send side's fast path for IPv4 TCP to a service (r7 data, r8 end,
/// r9 IPv4 header, no fragment): a packet of an established flow the engine
/// redirected (`fwd_flows_v4`), whose peer entry (`fwd_peers`) has the
/// flow's generation, is encapsulated here as the engine would (outer IPv4,
/// GRE with the flow's tag or plain IP-in-IP) and sent back out
/// (`XDP_TX`). Anything else goes to `to_engine` untouched: SYN, FIN, RST,
/// a VLAN tag, DF clear (the engine picks outer identifications), an
/// outer packet over `mtu` (the engine answers "too big"), unknown flows,
/// stale generations.
fn forward_v4(a: &mut Asm, maps: &MapFds, mtu: u16, to_engine: Label) {
    a.mov_reg(R3, R7).alu_imm(Alu::Add, R3, 14);
    a.jmp_reg(Cond::Ne, R3, R9, to_engine); // a VLAN tag
    // The TCP header (after the options; r2 was clobbered by the look-up).
    a.load(Size::B, R2, R9, 0);
    a.alu_imm(Alu::And, R2, 0x0f).alu_imm(Alu::Lsh, R2, 2);
    a.mov_reg(R3, R9).alu_reg(Alu::Add, R3, R2);
    a.mov_reg(R4, R3).alu_imm(Alu::Add, R4, 14);
    a.jmp_reg(Cond::Gt, R4, R8, to_engine); // through the TCP flags
    // (client, service, client port, service port)
    a.load(Size::W, R5, R9, 12).store(Size::W, R10, KEY, R5);
    a.load(Size::W, R5, R9, 16).store(Size::W, R10, KEY + 4, R5);
    a.load(Size::W, R5, R3, 0).store(Size::W, R10, KEY + 8, R5);
    // SYN, FIN and RST go to the engine, and take their flow out of the
    // fast path here and now: a SYN reusing the 4-tuple starts a connection
    // the engine may send elsewhere, and its handshake's ACK must not
    // follow the old entry before the worker rewrites it.
    a.load(Size::B, R4, R3, 13);
    a.alu_imm(Alu::And, R4, TCP_FIN_SYN_RST);
    let forget = a.label();
    a.jmp_imm(Cond::Ne, R4, 0, forget);
    a.load(Size::H, R4, R9, 6);
    a.jmp_imm(Cond::Ne, R4, DF_ONLY, to_engine);
    // Redirected?
    lookup_or_pass(a, maps.fwd_flows_v4, to_engine);
    a.store(Size::DW, R10, FLOW_PTR, R0);
    a.load(Size::W, R2, R0, 0).store(Size::W, R10, PEER_KEY, R2);
    a.load_map_fd(R1, maps.fwd_peers);
    a.mov_reg(R2, R10)
        .alu_imm(Alu::Add, R2, i32::from(PEER_KEY));
    a.call(HELPER_MAP_LOOKUP_ELEM);
    a.jmp_imm(Cond::Eq, R0, 0, to_engine);
    a.store(Size::DW, R10, PEER_PTR, R0);
    // The peer's generation, never 0, is the one the flow was written with
    // (a dead or departed peer's was bumped: its flows go to the engine).
    a.load(Size::W, R2, R0, 24);
    a.jmp_imm(Cond::Eq, R2, 0, to_engine);
    a.load(Size::DW, R1, R10, FLOW_PTR);
    a.load(Size::W, R3, R1, 4);
    a.jmp_reg(Cond::Ne, R2, R3, to_engine);
    a.load(Size::W, R5, R1, 16); // the outer protocol
    let gre = a.label();
    a.jmp_imm(Cond::Eq, R5, PROTO_GRE, gre);
    a.jmp_imm(Cond::Ne, R5, PROTO_IPIP, to_engine);
    encapsulate_and_tx(a, maps, mtu, 20, to_engine);
    a.bind(gre);
    encapsulate_and_tx(a, maps, mtu, 32, to_engine);
    a.bind(forget);
    a.load_map_fd(R1, maps.fwd_flows_v4);
    a.mov_reg(R2, R10).alu_imm(Alu::Add, R2, i32::from(KEY));
    a.call(HELPER_MAP_DELETE_ELEM);
    a.ja(to_engine);
}

/// The second half of [`forward_v4`] for one outer header size (20:
/// IP-in-IP, 32: GRE), the flow and peer entries on the stack.
fn encapsulate_and_tx(a: &mut Asm, maps: &MapFds, mtu: u16, overhead: i16, to_engine: Label) {
    let gre = overhead == 32;
    // Inner total length; the outer packet must fit the tunnel's MTU.
    a.load(Size::B, R4, R9, 2).alu_imm(Alu::Lsh, R4, 8);
    a.load(Size::B, R5, R9, 3).alu_reg(Alu::Or, R4, R5);
    a.mov_reg(R5, R4).alu_imm(Alu::Add, R5, i32::from(overhead));
    a.jmp_imm(Cond::Gt, R5, i32::from(mtu), to_engine);
    // One more packet of the flow (the worker refreshes the engine's idle
    // timer from it; a lost increment between CPUs still shows activity).
    a.load(Size::DW, R1, R10, FLOW_PTR);
    a.load(Size::DW, R2, R1, 24).alu_imm(Alu::Add, R2, 1);
    a.store(Size::DW, R1, 24, R2);
    // Room for the outer header in front.
    a.mov_reg(R1, R6).mov_imm(R2, -i32::from(overhead));
    a.call(HELPER_XDP_ADJUST_HEAD);
    a.jmp_imm(Cond::Ne, R0, 0, to_engine); // refused: the frame is unchanged
    a.load(Size::W, R7, R6, 0);
    a.load(Size::W, R8, R6, 4);
    a.mov_reg(R3, R7)
        .alu_imm(Alu::Add, R3, 14 + i32::from(overhead) + 20);
    let aborted = a.label();
    a.jmp_reg(Cond::Gt, R3, R8, aborted);
    let inner = 14 + overhead;
    // Ethernet: the peer's next hop, from this interface.
    a.load(Size::DW, R1, R10, PEER_PTR);
    for off in [0, 4, 8] {
        a.load(Size::W, R2, R1, off).store(Size::W, R7, off, R2);
    }
    a.load(Size::H, R2, R1, 12).store(Size::H, R7, 12, R2);
    // Outer IPv4, as `dpr_packet::ipip` writes it: TOS and ECN copied
    // (RFC 6040 normal mode), DF copied (set), the engine's TTL.
    a.store_imm(Size::B, R7, 14, 0x45);
    a.load(Size::B, R2, R7, inner + 1)
        .store(Size::B, R7, 15, R2);
    a.load(Size::B, R2, R7, inner + 2).alu_imm(Alu::Lsh, R2, 8);
    a.load(Size::B, R3, R7, inner + 3).alu_reg(Alu::Or, R2, R3);
    a.alu_imm(Alu::Add, R2, i32::from(overhead));
    a.mov_reg(R3, R2).alu_imm(Alu::Rsh, R3, 8);
    a.store(Size::B, R7, 16, R3);
    a.store(Size::B, R7, 17, R2);
    a.store_imm(Size::H, R7, 18, 0); // identification (DF set)
    a.store_imm(Size::H, R7, 20, DF_ONLY);
    a.load(Size::B, R2, R1, 14).store(Size::B, R7, 22, R2); // TTL
    a.store_imm(Size::B, R7, 23, if gre { PROTO_GRE } else { PROTO_IPIP });
    a.store_imm(Size::H, R7, 24, 0);
    a.load(Size::W, R2, R1, 16).store(Size::W, R7, 26, R2);
    a.load(Size::W, R2, R1, 20).store(Size::W, R7, 30, R2);
    if gre {
        a.store_imm(Size::W, R7, 34, GRE_KS_IPV4);
        a.load(Size::DW, R1, R10, FLOW_PTR);
        a.load(Size::W, R2, R1, 8).store(Size::W, R7, 38, R2);
        a.load(Size::W, R2, R1, 12).store(Size::W, R7, 42, R2);
    }
    // The outer header's checksum (RFC 1071, over native-order halves:
    // the sum is byte-order independent).
    a.mov_imm(R2, 0);
    for i in 0..10 {
        a.load(Size::H, R3, R7, 14 + 2 * i)
            .alu_reg(Alu::Add, R2, R3);
    }
    for _ in 0..2 {
        a.mov_reg(R3, R2).alu_imm(Alu::Rsh, R3, 16);
        a.alu_imm(Alu::And, R2, 0xffff).alu_reg(Alu::Add, R2, R3);
    }
    a.alu_imm(Alu::Xor, R2, 0xffff);
    a.store(Size::H, R7, 24, R2);
    count(a, maps.counters, Some(Counter::ForwardV4));
    a.mov_imm(R0, XDP_TX as i32);
    a.exit();
    // Cannot happen (the frame only grew by what was asked).
    a.bind(aborted);
    a.mov_imm(R0, XDP_ABORTED as i32);
    a.exit();
}

/// `r0 = lookup(map, r10 + KEY)`; `goto pass` when absent.
fn lookup_or_pass(a: &mut Asm, map: i32, pass: Label) {
    a.load_map_fd(R1, map);
    a.mov_reg(R2, R10).alu_imm(Alu::Add, R2, i32::from(KEY));
    a.call(HELPER_MAP_LOOKUP_ELEM);
    a.jmp_imm(Cond::Eq, R0, 0, pass);
}

/// Copies 16 address bytes at `r9 + off` to the key; clobbers r5.
fn copy_v6_addr(a: &mut Asm, off: i16) {
    for i in 0..4 {
        a.load(Size::W, R5, R9, off + 4 * i);
        a.store(Size::W, R10, KEY + 4 * i, R5);
    }
}

/// Increments a counter: `which`, or the index in r7. Clobbers r0–r5.
fn count(a: &mut Asm, counters: i32, which: Option<Counter>) {
    match which {
        Some(c) => a.store_imm(Size::W, R10, COUNTER_INDEX, c as i32),
        None => a.store(Size::W, R10, COUNTER_INDEX, R7),
    };
    a.load_map_fd(R1, counters);
    a.mov_reg(R2, R10)
        .alu_imm(Alu::Add, R2, i32::from(COUNTER_INDEX));
    a.call(HELPER_MAP_LOOKUP_ELEM);
    let skip = a.label();
    a.jmp_imm(Cond::Eq, R0, 0, skip);
    // Per-CPU slot: no other writer, a plain add is enough.
    a.load(Size::DW, R1, R0, 0);
    a.alu_imm(Alu::Add, R1, 1);
    a.store(Size::DW, R0, 0, R1);
    a.bind(skip);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_and_ends_in_exit() {
        let fds = MapFds {
            services_v4: 3,
            services_v6: 4,
            peers_v4: 5,
            peers_v6: 6,
            tunnel_services_v4: 9,
            keyed_flows_v4: 10,
            fwd_flows_v4: 11,
            fwd_peers: 12,
            xsks: 7,
            counters: 8,
        };
        let p = router_program(&fds, MissingSocket::Pass, None, None).unwrap();
        eprintln!("router program: {} instructions", p.len());
        assert!(p.len() < 400, "{} insns", p.len());
        assert_eq!(p.last().map(|i| i.code), Some(0x95));
        // The fast path's two copies (IP-in-IP, GRE) of the encapsulation.
        let f = router_program(
            &fds,
            MissingSocket::Pass,
            Some(1500),
            Some([2, 0, 0, 0, 0, 1]),
        )
        .unwrap();
        eprintln!("with the fast path: {} instructions", f.len());
        assert!(f.len() < 400 + 250, "{} insns", f.len());
        assert_eq!(f.last().map(|i| i.code), Some(0x95));
    }

    #[test]
    fn wire_constants_are_network_order() {
        assert_eq!(ETH_P_IPV4.to_ne_bytes()[..2], [0x08, 0x00]);
        assert_eq!(ETH_P_IPV6.to_ne_bytes()[..2], [0x86, 0xdd]);
        assert_eq!(IPV4_FRAG_MASK.to_ne_bytes()[..2], [0x3f, 0xff]);
    }
}
