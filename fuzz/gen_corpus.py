#!/usr/bin/env python3
"""Deterministic seed-corpus generator for the dpr fuzz targets.

Run from anywhere:   python3 fuzz/gen_corpus.py

Writes (relative to the workspace root):
  fuzz/corpus/frame/*.bin            raw Ethernet II frames
  fuzz/corpus/decap/*.bin            IP packets (tunnel decapsulation input)
  fuzz/corpus/icmp_quote/*.bin       IP packets carrying ICMP / ICMPv6
  fuzz/corpus/encap_roundtrip/*.bin  [flags u8][outer ttl u8][inner IP packet]
  fuzz/corpus/mss_rewrite/*.bin      [max mss u16 BE][IP packet with TCP]
  crates/dpr-packet/tests/data/scapy_frames.pcap   every generated frame/*.bin
                                                   (valid and broken), pcap/EN10MB

If crates/dpr-packet/tests/data/capture.pcap exists (made by fuzz/capture.sh),
about 20 selected frames of it are also copied to fuzz/corpus/frame/capture-*.bin.

Stale *.bin files in the corpus directories are removed; files without the
.bin suffix (e.g. inputs added by the fuzzer itself) are left alone.

Only 198.18.0.0/15 and 2001:2::/48 addresses are used.  Every "valid" packet
has correct IP/TCP/UDP/ICMP checksums (computed by scapy); "broken-*" inputs
are malformed on purpose.
"""

import os
import random
import struct
import sys

import logging

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.all import (  # noqa: E402
    ARP,
    HBHOptUnknown,
    Dot1AD,
    Dot1Q,
    Ether,
    ICMP,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IP,
    IPOption_RR,
    IPOption_Router_Alert,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
    PadN,
    Raw,
    RouterAlert,
    TCP,
    UDP,
    fragment,
    fragment6,
    raw,
)

SEED = 0xD9F0_2024
RNG = random.Random(SEED)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
DATA = os.path.join(ROOT, "crates", "dpr-packet", "tests", "data")
CAPTURE_PCAP = os.path.join(DATA, "capture.pcap")
SCAPY_PCAP = os.path.join(DATA, "scapy_frames.pcap")

MAX_FILE = 2048

# ---------------------------------------------------------------- addresses
MAC_C = "02:00:00:00:00:01"
MAC_S = "02:00:00:00:00:02"
C4, S4 = "198.18.0.10", "198.18.1.20"          # end hosts
R4 = "198.18.2.1"                              # a router (ICMP error source)
T4A, T4B = "198.19.0.1", "198.19.0.2"          # tunnel endpoints
C6, S6 = "2001:2::10", "2001:2::20"
R6 = "2001:2:0:2::1"
T6A, T6B = "2001:2:0:1::1", "2001:2:0:1::2"

# ECN codepoints (low two bits of TOS / traffic class)
NOT_ECT, ECT1, ECT0, CE = 0, 1, 2, 3
ECN_NAME = {NOT_ECT: "notect", ECT1: "ect1", ECT0: "ect0", CE: "ce"}

FULL_SYN_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 0)),
                 ("NOP", None), ("WScale", 7)]
SYNACK_OPTS = [("MSS", 1440), ("SAckOK", b""), ("Timestamp", (987654, 123456)),
               ("NOP", None), ("WScale", 9)]
TS_OPTS = [("NOP", None), ("NOP", None), ("Timestamp", (123457, 987654))]


def rbytes(n):
    return bytes(RNG.getrandbits(8) for _ in range(n))


def http_req(host="198.18.1.20"):
    return (f"GET /index.html HTTP/1.1\r\nHost: {host}\r\n"
            "User-Agent: dpr-corpus\r\nAccept: */*\r\n\r\n").encode()


# ---------------------------------------------------------------- TCP/UDP builders
def tcp_syn(sport=40001, dport=80, seq=1000, opts=None):
    return TCP(sport=sport, dport=dport, seq=seq, flags="S", window=64240,
               options=FULL_SYN_OPTS if opts is None else opts)


def tcp_synack(sport=80, dport=40001, seq=5000, ack=1001):
    return TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags="SA",
               window=65160, options=SYNACK_OPTS)


def tcp_ack(sport=40001, dport=80, seq=1001, ack=5001, payload=b""):
    t = TCP(sport=sport, dport=dport, seq=seq, ack=ack,
            flags="PA" if payload else "A", window=502, options=TS_OPTS)
    return t / Raw(payload) if payload else t


def tcp_raw_opts(opts, payload=b"", **kw):
    """TCP header whose options area is exactly `opts` (may be malformed).

    The options are appended as a Raw payload with data offset set by hand,
    so scapy still computes the checksum over header+options+payload.
    """
    assert len(opts) % 4 == 0 and len(opts) <= 40
    kw.setdefault("window", 64240)
    return TCP(dataofs=5 + len(opts) // 4, **kw) / Raw(opts + payload)


def udp(sport=40053, dport=53, payload=b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        b"\x03dpr\x04test\x00\x00\x01\x00\x01"):
    return UDP(sport=sport, dport=dport) / Raw(payload)


def v4(src=C4, dst=S4, **kw):
    kw.setdefault("id", 0x1234)
    kw.setdefault("ttl", 64)
    return IP(src=src, dst=dst, **kw)


def v6(src=C6, dst=S6, **kw):
    kw.setdefault("hlim", 64)
    kw.setdefault("fl", 0x12345)
    return IPv6(src=src, dst=dst, **kw)


def eth(pkt, src=MAC_C, dst=MAC_S):
    return Ether(src=src, dst=dst) / pkt


# ---------------------------------------------------------------- output helpers
class Dir:
    def __init__(self, name):
        self.name = name
        self.path = os.path.join(CORPUS, name)
        self.files = {}  # name -> bytes (insertion ordered)

    def add(self, name, data):
        if not isinstance(data, (bytes, bytearray)):
            data = raw(data)
        data = bytes(data)
        assert name not in self.files, f"duplicate {self.name}/{name}"
        assert len(data) <= MAX_FILE, f"{self.name}/{name} is {len(data)} bytes"
        self.files[name] = data

    def write(self):
        os.makedirs(self.path, exist_ok=True)
        wanted = {n + ".bin" for n in self.files}
        for f in os.listdir(self.path):
            if f.endswith(".bin") and f not in wanted:
                os.remove(os.path.join(self.path, f))
        for n, d in self.files.items():
            with open(os.path.join(self.path, n + ".bin"), "wb") as fh:
                fh.write(d)


def write_pcap(path, frames, t0=1_700_000_000):
    """Classic little-endian pcap, microsecond timestamps, LINKTYPE_ETHERNET."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, f in enumerate(frames):
            fh.write(struct.pack("<IIII", t0 + i, 0, len(f), len(f)))
            fh.write(f)


def read_pcap(path):
    with open(path, "rb") as fh:
        data = fh.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        e = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    linktype = struct.unpack(e + "I", data[20:24])[0]
    if linktype != 1:
        raise ValueError(f"{path}: linktype {linktype}, expected 1 (Ethernet)")
    off, out = 24, []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out


# ================================================================= frame/
def gen_frame(d):
    # --- IPv4 TCP session pieces
    d.add("v4-tcp-syn-mss1460-sackperm-ts-ws", eth(v4(flags="DF") / tcp_syn()))
    d.add("v4-tcp-synack-mss1440-sackperm-ts-ws",
          eth(v4(S4, C4, flags="DF", id=0) / tcp_synack(), MAC_S, MAC_C))
    d.add("v4-tcp-ack-http-get-payload", eth(v4(flags="DF") / tcp_ack(payload=http_req())))
    d.add("v4-tcp-fin-ack", eth(v4(flags="DF") / TCP(sport=40001, dport=80, seq=1085,
                                                       ack=5300, flags="FA", window=502)))
    d.add("v4-tcp-rst", eth(v4(S4, C4, flags="DF", id=0) /
                            TCP(sport=80, dport=40002, seq=0, ack=2001, flags="RA", window=0),
                            MAC_S, MAC_C))
    # --- IPv4 options
    d.add("v4-ipopt-record-route-tcp-syn",
          eth(v4(options=[IPOption_RR(routers=["198.18.2.1", "0.0.0.0", "0.0.0.0"],
                                      pointer=8)]) / tcp_syn(sport=40003)))
    d.add("v4-ipopt-router-alert-udp",
          eth(v4(options=[IPOption_Router_Alert()], ttl=1) / udp()))
    d.add("v4-udp-dns-query", eth(v4() / udp()))
    # --- IPv4 fragments of one 1200-byte UDP datagram
    big = v4(id=0x4242) / UDP(sport=40054, dport=5001) / Raw(rbytes(1200))
    frags = fragment(big, fragsize=512)
    assert len(frags) == 3
    d.add("v4-frag-first-udp-mf", eth(frags[0]))
    d.add("v4-frag-nonfirst-udp-mf-off512", eth(frags[1]))
    # --- IPv6 basics
    d.add("v6-tcp-syn-mss1440-sackperm-ts-ws",
          eth(v6() / tcp_syn(opts=[("MSS", 1440)] + FULL_SYN_OPTS[1:])))
    d.add("v6-udp-dns-query", eth(v6() / udp()))
    # --- IPv6 extension headers
    d.add("v6-hbh-router-alert-tcp-ack",
          eth(v6() / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0), PadN(optdata=b"")])
              / tcp_ack()))
    d.add("v6-rh0-2seg-tcp-syn",
          eth(v6(dst="2001:2::30") /
              IPv6ExtHdrRouting(type=0, segleft=2, addresses=["2001:2::31", S6]) /
              tcp_syn(sport=40010)))
    d.add("v6-rh2-home-address-tcp-ack",
          eth(v6(S6, "2001:2:0:3::99") /
              IPv6ExtHdrRouting(type=2, segleft=1, addresses=[C6]) /
              tcp_ack(sport=80, dport=40011, payload=b"HTTP/1.1 200 OK\r\n\r\n"),
              MAC_S, MAC_C))
    d.add("v6-rh4-srh-3seg-tcp-syn",
          eth(v6(dst="2001:2:0:5::1") /
              IPv6ExtHdrSegmentRouting(addresses=[S6, "2001:2:0:5::2", "2001:2:0:5::1"],
                                       segleft=2, lastentry=2) /
              tcp_syn(sport=40012)))
    d.add("v6-dstopt-udp",
          eth(v6() / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00\x00\x00\x00")]) / udp()))
    big6 = v6() / IPv6ExtHdrFragment(id=0xABCD0001) / tcp_ack(payload=rbytes(1400))
    f6 = fragment6(big6, 1280)
    assert len(f6) == 2
    d.add("v6-frag-first-tcp-data", eth(f6[0]))
    d.add("v6-frag-nonfirst-tcp-data", eth(f6[1]))
    d.add("v6-chain-hbh-dstopt-rh0-dstopt-tcp-syn",
          eth(v6(dst="2001:2::30") / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0), PadN(optdata=b"")])
              / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00\x00\x00\x00")])
              / IPv6ExtHdrRouting(type=0, segleft=1, addresses=[S6])
              / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00\x00\x00\x00")])
              / tcp_syn(sport=40013)))
    # --- VLAN
    d.add("vlan100-v4-tcp-syn",
          Ether(src=MAC_C, dst=MAC_S) / Dot1Q(vlan=100, prio=3) / v4(flags="DF") /
          tcp_syn(sport=40020))
    d.add("qinq-88a8-vlan10-8100-vlan20-v6-udp",
          Ether(src=MAC_C, dst=MAC_S) / Dot1AD(vlan=10) / Dot1Q(vlan=20) / v6() / udp())
    # --- ARP / ICMP
    d.add("arp-request", Ether(src=MAC_C, dst="ff:ff:ff:ff:ff:ff") /
          ARP(op=1, hwsrc=MAC_C, psrc=C4, pdst=S4) / Raw(b"\x00" * 18))
    d.add("v4-icmp-echo-request",
          eth(v4() / ICMP(type=8, id=0x77, seq=1) / Raw(rbytes(56))))
    d.add("v6-icmpv6-echo-request",
          eth(v6() / ICMPv6EchoRequest(id=0x77, seq=1, data=rbytes(56))))
    d.add("v4-icmp-fragneeded-mtu1400-quote-tcp",
          eth(v4(R4, S4, id=0) / icmp4_quote(3, 4, quote_v4_tcp(8), mtu=1400), MAC_C, MAC_S))
    d.add("v6-icmpv6-ptb-mtu1280-quote-tcp",
          eth(v6(R6, S6) / ICMPv6PacketTooBig(mtu=1280) / Raw(quote_v6_tcp(8))))
    # --- IP-in-IP
    d.add("ipip-4in4-tcp-syn", eth(tun4(v4(flags="DF") / tcp_syn())))
    d.add("ipip-6in4-tcp-syn", eth(tun4(v6() / tcp_syn())))
    d.add("ipip-4in6-tcp-syn", eth(tun6(v4(flags="DF") / tcp_syn())))
    d.add("ipip-6in6-tcp-syn", eth(tun6(v6() / tcp_syn())))
    # --- Ethernet padding: 54-byte frame padded to the 60-byte minimum
    f = raw(eth(v4(flags="DF") / TCP(sport=40001, dport=80, seq=1001, ack=5001,
                                     flags="A", window=502)))
    assert len(f) == 54
    d.add("v4-tcp-ack-eth-padding-60", f + b"\x00" * 6)

    # --- deliberately broken frames
    syn = raw(eth(v4(flags="DF") / tcp_syn()))
    d.add("broken-truncated-mid-ipv4-header", syn[:14 + 11])
    d.add("broken-truncated-mid-tcp-header", syn[:14 + 20 + 9])
    d.add("broken-ipv4-ihl4", eth(v4(ihl=4) / TCP(sport=1, dport=2, flags="S")))
    d.add("broken-ipv4-totlen-1500-gt-buffer",
          eth(v4(len=1500, flags="DF") / tcp_ack(payload=b"hello")))
    d.add("broken-tcp-dataoff4", eth(v4() / TCP(sport=40001, dport=80, dataofs=4, flags="S")))
    d.add("broken-tcp-option-len0",
          eth(v4() / tcp_raw_opts(b"\x02\x04\x05\xb4\x08\x00\x00\x00",
                                  sport=40001, dport=80, seq=1000, flags="S")))
    d.add("broken-v6-payload-len-300-lies",
          eth(v6(plen=300) / TCP(sport=40001, dport=80, flags="S")))
    d.add("broken-v6-hbh-len-past-end",
          raw(eth(v6() / IPv6ExtHdrHopByHop(len=20, options=[PadN(optdata=b"\x00" * 4)])
                  / TCP(sport=40001, dport=80, flags="S"))))
    d.add("broken-ethertype-ipv4-but-version6",
          Ether(src=MAC_C, dst=MAC_S, type=0x0800) / v6() / TCP(sport=40001, dport=80, flags="S"))


# ---------------------------------------------------------------- tunnel helpers
def tun4(inner, ecn=NOT_ECT, df=False, src=T4A, dst=T4B, ttl=64, **kw):
    proto = 4 if isinstance(inner, IP) else 41
    return IP(src=src, dst=dst, proto=proto, tos=ecn, flags="DF" if df else 0,
              ttl=ttl, id=kw.pop("id", 0x7001), **kw) / inner


def tun6(inner, ecn=NOT_ECT, src=T6A, dst=T6B, ext=None):
    nh = 4 if isinstance(inner, IP) else 41
    outer = IPv6(src=src, dst=dst, tc=ecn, hlim=64, fl=0xBEEF)
    if ext is not None:
        return outer / ext / inner
    outer.nh = nh
    return outer / inner


# ---------------------------------------------------------------- ICMP quote helpers
def quote_v4_tcp(tcp_bytes=8, ip_opts=None, ecn=0):
    kw = {"options": ip_opts} if ip_opts else {}
    q = raw(v4(S4, C4, flags="DF", tos=ecn, **kw) /
            tcp_ack(sport=80, dport=40001, seq=5001, ack=1081,
                    payload=rbytes(1400)))
    ihl = (q[0] & 0xF) * 4
    return q[:ihl + tcp_bytes]


def quote_v4_udp(udp_bytes=8):
    q = raw(v4(S4, C4) / UDP(sport=53, dport=40053) / Raw(rbytes(200)))
    return q[:20 + udp_bytes]


def quote_v6_tcp(tcp_bytes=8, ext=None):
    p = v6(S6, C6)
    if ext is not None:
        p = p / ext
    q = raw(p / tcp_ack(sport=80, dport=40001, seq=5001, ack=1081, payload=rbytes(1400)))
    hdr = len(raw(p)) if ext is not None else 40
    return q[:hdr + tcp_bytes]


def icmp4_quote(typ, code, quote, mtu=None):
    if mtu is not None:
        return ICMP(type=typ, code=code, nexthopmtu=mtu) / Raw(quote)
    return ICMP(type=typ, code=code) / Raw(quote)


# ================================================================= decap/
def gen_decap(d):
    inner4_syn = lambda ecn=NOT_ECT, df=True: v4(tos=ecn, flags="DF" if df else 0) / tcp_syn()
    inner6_syn = lambda ecn=NOT_ECT: v6(tc=ecn) / tcp_syn()
    inner4_ack = v4(flags="DF") / TCP(sport=40001, dport=80, seq=1001, ack=5001, flags="A",
                                     window=502)
    inner4_data = v4(flags="DF") / tcp_ack(payload=http_req())
    inner6_data = v6() / tcp_ack(payload=http_req("[2001:2::20]"))

    d.add("4in4-tcp-syn", tun4(inner4_syn()))
    d.add("4in4-tcp-ack", tun4(inner4_ack))
    d.add("4in4-tcp-data", tun4(inner4_data))
    d.add("6in4-tcp-syn", tun4(inner6_syn()))
    d.add("6in4-tcp-data", tun4(inner6_data))
    d.add("4in6-tcp-syn", tun6(inner4_syn()))
    d.add("4in6-tcp-data", tun6(inner4_data))
    d.add("6in6-tcp-syn", tun6(inner6_syn()))
    d.add("6in6-tcp-data", tun6(inner6_data))
    d.add("6in6-tcp-synack", tun6(v6(S6, C6) / tcp_synack()))

    # ECN combinations (RFC 6040 decapsulation table)
    for o, i in [(CE, NOT_ECT), (CE, ECT0), (CE, ECT1), (CE, CE),
                 (ECT0, NOT_ECT), (ECT0, ECT1), (ECT1, ECT0), (ECT1, NOT_ECT),
                 (NOT_ECT, CE), (NOT_ECT, ECT0)]:
        d.add(f"4in4-ecn-outer-{ECN_NAME[o]}-inner-{ECN_NAME[i]}", tun4(inner4_syn(i), ecn=o))
    for o, i in [(CE, ECT0), (CE, NOT_ECT), (ECT1, ECT0)]:
        d.add(f"6in6-ecn-outer-{ECN_NAME[o]}-inner-{ECN_NAME[i]}", tun6(inner6_syn(i), ecn=o))
    d.add("6in4-ecn-outer-ce-inner-ect1", tun4(inner6_syn(ECT1), ecn=CE))
    d.add("4in6-ecn-outer-ce-inner-notect", tun6(inner4_syn(NOT_ECT), ecn=CE))
    d.add("4in4-outer-dscp-ef-ect0-inner-ect0", tun4(inner4_syn(ECT0), ecn=0xB8 | ECT0))

    # DF
    d.add("4in4-outer-df-set-inner-df", tun4(inner4_syn(df=True), df=True))
    d.add("4in4-outer-df-clear-inner-df", tun4(inner4_syn(df=True), df=False))
    d.add("4in4-outer-df-set-inner-nodf", tun4(inner4_syn(df=False), df=True))
    d.add("6in4-outer-df-set", tun4(inner6_syn(), df=True))

    # extension header / IPv4 options on the outer header
    d.add("4in6-outer-dstopt-tcp-syn",
          tun6(inner4_syn(), ext=IPv6ExtHdrDestOpt(nh=4, options=[PadN(optdata=b"\x00" * 4)])))
    d.add("6in6-outer-dstopt-tunnel-encap-limit-tcp-syn",
          tun6(inner6_syn(), ext=IPv6ExtHdrDestOpt(
              nh=41, options=[HBHOptUnknown(otype=4, optlen=1, optdata=b"\x04"),
                              PadN(optdata=b"\x00")])))
    d.add("4in4-outer-ipopt-router-alert", tun4(inner4_syn(), options=[IPOption_Router_Alert()]))
    d.add("4in4-outer-ttl1", tun4(inner4_syn(), ttl=1))

    # nesting
    d.add("4in4in4-tcp-syn",
          tun4(IP(src="198.19.1.1", dst="198.19.1.2", proto=4, id=0x7002) / inner4_syn()))
    d.add("6in4in6-tcp-syn",
          tun6(IP(src="198.19.1.1", dst="198.19.1.2", proto=41, id=0x7002) / inner6_syn()))

    # mismatched protocol numbers
    d.add("mismatch-proto4-inner-v6",
          IP(src=T4A, dst=T4B, proto=4, id=0x7003) / inner6_syn())
    d.add("mismatch-proto41-inner-v4",
          IP(src=T4A, dst=T4B, proto=41, id=0x7004) / inner4_syn())
    d.add("mismatch-v6-nh4-inner-v6",
          IPv6(src=T6A, dst=T6B, nh=4) / inner6_syn())

    # outer IPv4 fragments of a 4in4 packet
    big = IP(src=T4A, dst=T4B, proto=4, id=0x7005) / v4(flags="DF") / tcp_ack(payload=rbytes(900))
    fr = fragment(big, fragsize=512)
    assert len(fr) == 2
    d.add("4in4-outer-frag-first-mf", fr[0])
    d.add("4in4-outer-frag-last-off512", fr[1])

    # plain (not tunnelled) packets
    d.add("plain-v4-tcp-syn", inner4_syn())
    d.add("plain-v6-tcp-data", inner6_data)
    d.add("plain-v4-udp", v4() / udp())

    # truncated
    t = raw(tun4(inner4_data))
    d.add("4in4-truncated-inner-ip-header", t[:20 + 12])
    d.add("4in4-truncated-inner-tcp-header", t[:20 + 20 + 10])
    t = raw(tun6(inner6_data))
    d.add("6in6-truncated-inner-ip-header", t[:40 + 24])
    d.add("4in4-outer-totlen-short", raw(tun4(inner4_syn(), len=30)))


# ================================================================= icmp_quote/
def gen_icmp_quote(d):
    d.add("v4-icmp-3-4-fragneeded-mtu1400-quote-tcp8",
          v4(R4, S4, id=0) / icmp4_quote(3, 4, quote_v4_tcp(8), mtu=1400))
    d.add("v4-icmp-3-4-fragneeded-mtu1400-quote-tcp-full-hdr",
          v4(R4, S4, id=0) / icmp4_quote(3, 4, quote_v4_tcp(32), mtu=1400))
    d.add("v4-icmp-3-4-fragneeded-mtu0-rfc792-style",
          v4(R4, S4, id=0) / icmp4_quote(3, 4, quote_v4_tcp(8), mtu=0))
    d.add("v4-icmp-3-4-fragneeded-mtu576-quote-ecn-ce",
          v4(R4, S4, id=0, tos=0xC0) / icmp4_quote(3, 4, quote_v4_tcp(8, ecn=CE), mtu=576))
    d.add("v4-icmp-3-1-host-unreach-quote-tcp",
          v4(R4, S4, id=0) / icmp4_quote(3, 1, quote_v4_tcp(8)))
    d.add("v4-icmp-3-1-host-unreach-quote-udp",
          v4(R4, S4, id=0) / icmp4_quote(3, 1, quote_v4_udp(8)))
    d.add("v4-icmp-3-3-port-unreach-quote-tcp",
          v4(C4, S4, id=0) / icmp4_quote(3, 3, quote_v4_tcp(8)))
    d.add("v4-icmp-3-3-port-unreach-quote-udp-full",
          v4(C4, S4, id=0) / icmp4_quote(3, 3, quote_v4_udp(64)))
    d.add("v4-icmp-11-0-ttl-exceeded-quote-tcp",
          v4(R4, S4, id=0) / icmp4_quote(11, 0, quote_v4_tcp(8)))
    d.add("v4-icmp-11-1-reassembly-exceeded-quote-udp",
          v4(R4, S4, id=0) / icmp4_quote(11, 1, quote_v4_udp(8)))
    d.add("v4-icmp-3-4-quote-ipopts-rr-tcp",
          v4(R4, S4, id=0) / icmp4_quote(
              3, 4, quote_v4_tcp(8, ip_opts=[IPOption_RR(routers=["198.18.2.1", "0.0.0.0"],
                                                         pointer=8)]), mtu=1400))
    d.add("v4-icmp-3-4-quote-truncated-in-ip-header",
          v4(R4, S4, id=0) / icmp4_quote(3, 4, quote_v4_tcp(8)[:14], mtu=1400))
    d.add("v4-icmp-3-4-quote-only-4-bytes-tcp",
          v4(R4, S4, id=0) / icmp4_quote(3, 4, quote_v4_tcp(4), mtu=1400))
    d.add("v4-icmp-3-4-outer-ipopts-router-alert",
          v4(R4, S4, id=0, options=[IPOption_Router_Alert()]) /
          icmp4_quote(3, 4, quote_v4_tcp(8), mtu=1400))
    # quoted packet is itself IP-in-IP (a router on the tunnel path complains)
    q = raw(tun4(v4(flags="DF") / tcp_ack(payload=rbytes(1400)), df=True))
    d.add("v4-icmp-3-4-quote-ipip-4in4-min", v4(R4, T4A, id=0) /
          icmp4_quote(3, 4, q[:28], mtu=1400))
    d.add("v4-icmp-3-4-quote-ipip-4in4-inner-tcp", v4(R4, T4A, id=0) /
          icmp4_quote(3, 4, q[:20 + 20 + 20], mtu=1400))
    q = raw(tun6(v6() / tcp_ack(payload=rbytes(1300))))
    d.add("v6-icmpv6-ptb-quote-ipip-6in6-inner-tcp",
          v6(R6, T6A) / ICMPv6PacketTooBig(mtu=1280) / Raw(q[:40 + 40 + 20]))
    q = raw(v4(C4, S4) / ICMP(type=8, id=0x55, seq=3) / Raw(rbytes(1400)))
    d.add("v4-icmp-3-4-quote-icmp-echo", v4(R4, C4, id=0) / icmp4_quote(3, 4, q[:28], mtu=1400))

    # ICMPv6
    d.add("v6-icmpv6-2-ptb-mtu1280-quote-tcp8",
          v6(R6, S6) / ICMPv6PacketTooBig(mtu=1280) / Raw(quote_v6_tcp(8)))
    d.add("v6-icmpv6-2-ptb-mtu1280-quote-tcp-full-hdr",
          v6(R6, S6) / ICMPv6PacketTooBig(mtu=1280) / Raw(quote_v6_tcp(32)))
    d.add("v6-icmpv6-2-ptb-mtu1280-quote-1232-bytes",
          v6(R6, S6) / ICMPv6PacketTooBig(mtu=1280) / Raw(quote_v6_tcp(1232 - 40)))
    d.add("v6-icmpv6-1-4-port-unreach-quote-tcp",
          v6(C6, S6) / ICMPv6DestUnreach(code=4) / Raw(quote_v6_tcp(20)))
    d.add("v6-icmpv6-1-3-addr-unreach-quote-udp",
          v6(R6, S6) / ICMPv6DestUnreach(code=3) /
          Raw(raw(v6(S6, C6) / UDP(sport=53, dport=40053) / Raw(rbytes(32)))))
    d.add("v6-icmpv6-3-0-hop-limit-exceeded-quote-tcp",
          v6(R6, S6) / ICMPv6TimeExceeded(code=0) / Raw(quote_v6_tcp(20)))
    d.add("v6-icmpv6-2-ptb-quote-dstopt-tcp",
          v6(R6, S6) / ICMPv6PacketTooBig(mtu=1280) /
          Raw(quote_v6_tcp(20, ext=IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00" * 4)]))))
    d.add("v6-icmpv6-2-ptb-quote-hbh-rh0-tcp",
          v6(R6, S6) / ICMPv6PacketTooBig(mtu=1280) /
          Raw(quote_v6_tcp(8, ext=IPv6ExtHdrHopByHop(options=[RouterAlert(value=0), PadN(optdata=b"")])
                           / IPv6ExtHdrRouting(type=0, segleft=1, addresses=[C6]))))
    d.add("v6-icmpv6-2-ptb-quote-fragment-hdr-tcp",
          v6(R6, S6) / ICMPv6PacketTooBig(mtu=1280) /
          Raw(quote_v6_tcp(8, ext=IPv6ExtHdrFragment(id=0x99, m=1))))
    d.add("v6-icmpv6-2-ptb-quote-truncated-in-ip-header",
          v6(R6, S6) / ICMPv6PacketTooBig(mtu=1280) / Raw(quote_v6_tcp(8)[:30]))
    d.add("v6-icmpv6-2-ptb-mtu1000-below-minimum",
          v6(R6, S6) / ICMPv6PacketTooBig(mtu=1000) / Raw(quote_v6_tcp(8)))
    d.add("v6-icmpv6-2-ptb-quote-v4-mismatch",
          v6(R6, S6) / ICMPv6PacketTooBig(mtu=1280) / Raw(quote_v4_tcp(8)))

    # not errors
    d.add("v4-icmp-echo-request", v4() / ICMP(type=8, id=0x77, seq=1) / Raw(rbytes(56)))
    d.add("v4-icmp-echo-reply", v4(S4, C4) / ICMP(type=0, id=0x77, seq=1) / Raw(rbytes(56)))
    d.add("v6-icmpv6-echo-request", v6() / ICMPv6EchoRequest(id=0x77, seq=1, data=rbytes(56)))
    d.add("v6-icmpv6-echo-reply", v6(S6, C6) / ICMPv6EchoReply(id=0x77, seq=1, data=rbytes(56)))
    d.add("v4-tcp-not-icmp", v4() / tcp_syn())

    # broken
    d.add("broken-v4-icmp-header-truncated", raw(v4(R4, S4) / ICMP(type=3, code=4))[:20 + 5])
    d.add("broken-v4-icmp-bad-checksum",
          v4(R4, S4, id=0) / ICMP(type=3, code=4, nexthopmtu=1400, chksum=0xDEAD) /
          Raw(quote_v4_tcp(8)))


# ================================================================= encap_roundtrip/
def gen_encap(d):
    inners = [
        ("v4-tcp-syn-df-ect0", v4(flags="DF", tos=ECT0) / tcp_syn()),
        ("v4-udp-nodf-ce", v4(tos=0x28 | CE) / udp()),
        ("v6-tcp-data-ect1", v6(tc=ECT1) / tcp_ack(payload=http_req("[2001:2::20]"))),
        ("v6-icmpv6-echo-notect", v6() / ICMPv6EchoRequest(id=9, seq=1, data=rbytes(32))),
    ]
    # (name, packet, flags): a few more inner packets with one flag value each
    extra = [
        ("v4-icmp-echo-df-ce", v4(flags="DF", tos=CE) / ICMP(type=8, id=9, seq=1) /
         Raw(rbytes(32)), 0b0111),
        ("v6-udp-dscp-ef-ce", v6(tc=0xB8 | CE) / udp(), 0b1000),
        ("v4-tcp-ack-1400b", v4(flags="DF") / tcp_ack(payload=rbytes(1400)), 0b0011),
    ]
    dfname = {0: "dfcopy", 1: "dfset", 2: "dfclear", 3: "dfreserved3"}
    for outer6 in (0, 1):
        for ecnmode in (0, 1):
            for df in (0, 1, 2):
                flags = outer6 | (ecnmode << 1) | (df << 2)
                for name, pkt in inners:
                    d.add(f"o{6 if outer6 else 4}-ecnmode{ecnmode}-{dfname[df]}-ttl64-{name}",
                          bytes([flags, 64]) + raw(pkt))
    for name, pkt, flags in extra:
        d.add(f"o{6 if flags & 1 else 4}-ecnmode{(flags >> 1) & 1}-{dfname[(flags >> 2) & 3]}"
              f"-ttl255-{name}", bytes([flags, 255]) + raw(pkt))
    syn = raw(v4(flags="DF") / tcp_syn())
    d.add("o4-ecnmode0-dfcopy-ttl1-v4-tcp-syn", bytes([0, 1]) + syn)
    d.add("o6-ecnmode1-dfset-ttl0-v4-tcp-syn", bytes([0b0111, 0]) + syn)
    d.add("o4-ecnmode0-dfreserved3-ttl64-v4-tcp-syn", bytes([0b1100, 64]) + syn)
    d.add("o6-flags-high-bits-set-ttl64-v4-tcp-syn", bytes([0xF1, 64]) + syn)
    d.add("o4-ecnmode0-dfcopy-ttl64-empty-inner", bytes([0, 64]))
    d.add("o4-ecnmode0-dfcopy-ttl64-truncated-inner", bytes([0, 64]) + syn[:15])
    d.add("o6-ecnmode0-dfcopy-ttl64-inner-version5", bytes([1, 64]) + bytes([0x55]) + syn[1:])
    d.add("o4-ecnmode1-dfcopy-ttl64-inner-already-ipip",
          bytes([0b10, 64]) + raw(tun4(v4(flags="DF", tos=ECT0) / tcp_syn(), ecn=ECT0, df=True)))


# ================================================================= mss_rewrite/
def gen_mss(d):
    def mk(name, clamp, pkt):
        d.add(f"clamp{clamp}-{name}", struct.pack(">H", clamp) + raw(pkt))

    MSS = lambda v: struct.pack(">BBH", 2, 4, v)
    NOP, EOL = b"\x01", b"\x00"
    TS = b"\x08\x0a" + struct.pack(">II", 123456, 0)
    SACKOK = b"\x04\x02"
    WS = b"\x03\x03\x07"

    def syn4(opts, flags="S", **kw):
        return v4(flags="DF", **kw) / tcp_raw_opts(opts, sport=40001, dport=80, seq=1000,
                                                   flags=flags,
                                                   ack=5001 if "A" in flags else 0)

    def syn6(opts, flags="S", ext=None):
        p = v6()
        if ext is not None:
            p = p / ext
        return p / tcp_raw_opts(opts, sport=40001, dport=80, seq=1000, flags=flags,
                                ack=5001 if "A" in flags else 0)

    linux_syn = MSS(1460) + SACKOK + TS + NOP + WS            # Linux order
    mss_after_nops = NOP + NOP + NOP + NOP + MSS(1460) + NOP + WS + SACKOK + NOP + NOP
    mss_after_ts = NOP + NOP + TS + MSS(1460) + NOP + WS
    mss_odd = NOP + MSS(1460) + NOP + NOP + NOP                # MSS at odd offset
    assert len(mss_after_nops) % 4 == 0 and len(mss_after_ts) % 4 == 0

    for clamp in (1360, 1440, 536, 1220, 65535, 0):
        mk(f"v4-syn-mss1460-first", clamp, syn4(linux_syn))
    mk("v4-syn-mss1200-below-clamp", 1360, syn4(MSS(1200) + SACKOK + TS + NOP + WS))
    mk("v4-syn-mss1360-equal-clamp", 1360, syn4(MSS(1360) + NOP + NOP + SACKOK))
    mk("v4-syn-mss-after-nops", 1360, syn4(mss_after_nops))
    mk("v4-syn-mss-after-timestamps", 1440, syn4(mss_after_ts))
    mk("v4-syn-mss-odd-offset", 1220, syn4(mss_odd))
    mk("v4-synack-mss1460", 1440, syn4(linux_syn, flags="SA"))
    mk("v4-synack-mss536-below", 1360, syn4(MSS(536) + NOP + NOP + SACKOK, flags="SA"))
    mk("v4-syn-no-mss", 1360, syn4(SACKOK + TS + NOP + WS))
    mk("v4-syn-no-options", 1360, syn4(b""))
    mk("v4-syn-two-mss-options", 1360, syn4(MSS(1460) + MSS(9000)))
    mk("v4-syn-mss-after-eol", 1360, syn4(NOP + EOL + EOL + EOL + MSS(1460)))
    mk("v4-syn-ipopts-router-alert", 1360,
       v4(flags="DF", options=[IPOption_Router_Alert()]) /
       tcp_raw_opts(linux_syn, sport=40001, dport=80, seq=1000, flags="S"))
    mk("v4-ack-with-mss-option-not-syn", 1360, syn4(MSS(1460) + NOP + NOP + SACKOK, flags="A"))
    mk("v4-ack-data-no-syn", 1360, v4(flags="DF") / tcp_ack(payload=http_req()))
    mk("v4-syn-in-4in4-tunnel", 1360, tun4(syn4(linux_syn)))
    fr = fragment(v4(id=0x4343) / tcp_raw_opts(linux_syn, payload=rbytes(600), sport=40001,
                                                dport=80, seq=1000, flags="S"), fragsize=256)
    mk("v4-syn-frag-first", 1360, fr[0])
    mk("v4-syn-frag-nonfirst", 1360, fr[1])
    # malformed options areas
    mk("v4-syn-malformed-mss-len3", 1360, syn4(b"\x02\x03\x05\xb4" + NOP * 4))
    mk("v4-syn-malformed-mss-len5", 1360, syn4(b"\x02\x05\x05\xb4\x00" + NOP * 3))
    mk("v4-syn-malformed-optlen0", 1360, syn4(b"\x08\x00" + MSS(1460) + NOP * 2))
    mk("v4-syn-malformed-optlen-past-end", 1360, syn4(NOP * 2 + MSS(1460) + NOP * 2 + b"\x08\x0c\x00\x00"))
    mk("v4-syn-malformed-mss-truncated-at-end", 1360, syn4(NOP * 6 + b"\x02\x04"))
    mk("v4-syn-dataoff15-no-room", 1360, v4() / TCP(sport=40001, dport=80, flags="S",
                                                    dataofs=15) / Raw(MSS(1460)))
    # IPv6
    mk("v6-syn-mss1440-first", 1220, syn6(MSS(1440) + SACKOK + TS + NOP + WS))
    mk("v6-syn-mss1440-first", 65535, syn6(MSS(1440) + SACKOK + TS + NOP + WS))
    mk("v6-synack-mss-after-ts", 1220, syn6(mss_after_ts, flags="SA"))
    mk("v6-syn-mss1200-below", 1220, syn6(MSS(1200) + NOP + NOP + SACKOK))
    mk("v6-syn-no-mss", 1220, syn6(SACKOK + TS + NOP + WS))
    mk("v6-syn-hbh-ext-mss1440", 1220,
       syn6(linux_syn, ext=IPv6ExtHdrHopByHop(options=[RouterAlert(value=0), PadN(optdata=b"")])))
    mk("v6-syn-dstopt-rh0-mss1440", 1360,
       syn6(mss_odd, ext=IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00" * 4)]) /
            IPv6ExtHdrRouting(type=0, segleft=1, addresses=["2001:2::21"])))
    mk("v6-ack-data-no-syn", 1220, v6() / tcp_ack(payload=http_req("[2001:2::20]")))
    mk("v6-syn-malformed-optlen0", 1220, syn6(b"\x03\x00" + MSS(1440) + NOP * 2))
    d.add("short-only-1-byte", b"\x05")
    d.add("clamp1360-empty-packet", struct.pack(">H", 1360))


# ================================================================= capture frames
def pick_capture(d):
    """Copy a fixed selection of frames from capture.pcap into frame/capture-*.bin."""
    if not os.path.exists(CAPTURE_PCAP):
        print(f"note: {CAPTURE_PCAP} missing; run fuzz/capture.sh to add capture-*.bin",
              file=sys.stderr)
        return
    frames = read_pcap(CAPTURE_PCAP)
    pk = [(f, Ether(f)) for f in frames]

    def l4(p):
        if IP in p:
            return p[IP].payload
        if IPv6 in p:
            return p[IPv6].payload
        return None

    def tcpf(p, ver, flags, payload=None):
        lay = IP if ver == 4 else IPv6
        if lay not in p or TCP not in p:
            return False
        t = p[TCP]
        if str(t.flags) != flags:
            return False
        if payload is None:
            return True
        return payload(bytes(t.payload))

    rules = [
        ("arp-request", lambda p: ARP in p and p[ARP].op == 1),
        ("v4-tcp-syn", lambda p: tcpf(p, 4, "S")),
        ("v4-tcp-synack", lambda p: tcpf(p, 4, "SA")),
        ("v4-tcp-ack", lambda p: tcpf(p, 4, "A", lambda b: len(b) == 0)),
        ("v4-http-get", lambda p: tcpf(p, 4, "PA", lambda b: b.startswith(b"GET "))),
        ("v4-http-response", lambda p: tcpf(p, 4, "PA", lambda b: b.startswith(b"HTTP/"))),
        ("v4-http-post-full-mss", lambda p: tcpf(p, 4, "A", lambda b: len(b) >= 1400)),
        ("v4-tcp-fin", lambda p: IP in p and TCP in p and "F" in str(p[TCP].flags)),
        ("v6-tcp-syn", lambda p: tcpf(p, 6, "S")),
        ("v6-http-get", lambda p: tcpf(p, 6, "PA", lambda b: b.startswith(b"GET "))),
        ("v6-tcp-fin", lambda p: IPv6 in p and TCP in p and "F" in str(p[TCP].flags)),
        ("v4-icmp-echo-request", lambda p: ICMP in p and p[ICMP].type == 8),
        ("v4-icmp-echo-reply", lambda p: ICMP in p and p[ICMP].type == 0),
        ("v6-icmpv6-echo-request", lambda p: ICMPv6EchoRequest in p),
        ("v6-icmpv6-echo-reply", lambda p: ICMPv6EchoReply in p),
        ("v6-ndp-neighbor-solicit", lambda p: IPv6 in p and p[IPv6].nh == 58 and
         bytes(p[IPv6].payload)[:1] == b"\x87"),
        ("v6-mld-report-hbh", lambda p: IPv6 in p and p[IPv6].nh == 0),
        ("v4-udp", lambda p: IP in p and p[IP].proto == 17 and ICMP not in p),
        ("v4-icmp-port-unreach-quote-udp", lambda p: ICMP in p and p[ICMP].type == 3),
    ]
    used = set()
    missing = []
    for name, pred in rules:
        for i, (f, p) in enumerate(pk):
            if i in used:
                continue
            try:
                ok = pred(p)
            except Exception:
                ok = False
            if ok:
                used.add(i)
                d.add(f"capture-{name}", f)
                break
        else:
            missing.append(name)
    if missing:
        print(f"warning: capture.pcap has no frame for: {', '.join(missing)}", file=sys.stderr)


def main():
    frame, decap, icmpq, encap, mss = (Dir(n) for n in
                                       ("frame", "decap", "icmp_quote", "encap_roundtrip",
                                        "mss_rewrite"))
    gen_frame(frame)
    generated_frames = list(frame.files.values())
    gen_decap(decap)
    gen_icmp_quote(icmpq)
    gen_encap(encap)
    gen_mss(mss)
    pick_capture(frame)
    for d in (frame, decap, icmpq, encap, mss):
        d.write()
        print(f"{d.name:16} {len(d.files):3} files")
    write_pcap(SCAPY_PCAP, generated_frames)
    print(f"{os.path.relpath(SCAPY_PCAP, ROOT)}: {len(generated_frames)} frames")


if __name__ == "__main__":
    main()
