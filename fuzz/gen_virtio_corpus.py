#!/usr/bin/env python3
"""Seed corpus of the `virtio` fuzz target: TUN frames with offloads, each a
10-byte virtio-net header (little-endian) and an IP packet.

Run from anywhere:   python3 fuzz/gen_virtio_corpus.py
Writes fuzz/corpus/virtio/*.bin (stale *.bin files there are removed).
Addresses: 198.18.0.0/15 and 2001:2::/48 only.
"""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "virtio")


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def hdr(flags, gso, hdr_len, gso_size, cstart, coff):
    return struct.pack("<BBHHHH", flags, gso, hdr_len, gso_size, cstart, coff)


def tcp(payload, flags=0x18, options=b""):
    off = (20 + len(options)) // 4
    t = struct.pack("!HHIIBBHHH", 40000, 80, 1000, 7, off << 4, flags, 512, 0, 0) + options
    return t + bytes(i & 0xFF for i in range(payload))


def v4(payload, flags=0x18, options=b"", partial=True):
    t = tcp(payload, flags, options)
    src, dst = bytes([198, 18, 0, 200]), bytes([198, 18, 0, 1])
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(t), 0xFFFE, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", 0xFFFF ^ csum(ip)) + ip[12:]
    ph = csum(src + dst + struct.pack("!BBH", 0, 6, len(t)))
    c = ph if partial else 0xFFFF ^ csum(src + dst + struct.pack("!BBH", 0, 6, len(t)) + t)
    t = t[:16] + struct.pack("!H", c) + t[18:]
    return ip + t


def v6(payload):
    t = tcp(payload)
    src = bytes.fromhex("20010002000000000000000000000001")
    dst = bytes.fromhex("20010002000000000000000000000002")
    ph = csum(src + dst + struct.pack("!IxxxB", len(t), 6))
    t = t[:16] + struct.pack("!H", ph) + t[18:]
    return struct.pack("!IHBB", 6 << 28, len(t), 6, 64) + src + dst + t


TS = bytes([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2])
seeds = {
    "tso4-3-segments": hdr(1, 1, 52, 1448, 20, 16) + v4(3000, 0x19, TS),
    "tso4-ecn": hdr(1, 0x81, 40, 500, 20, 16) + v4(1200, 0x98),
    "tso4-one-segment": hdr(1, 1, 40, 1448, 20, 16) + v4(100),
    "tso4-headers-only": hdr(1, 1, 40, 1448, 20, 16) + v4(0, 0x10),
    "tso6-2-segments": hdr(1, 4, 60, 1000, 40, 16) + v6(1800),
    "none-needs-csum": hdr(1, 0, 0, 0, 20, 16) + v4(10),
    "none-plain": hdr(0, 0, 0, 0, 0, 0) + v4(10, partial=False),
    "broken-uso": hdr(1, 5, 28, 100, 20, 6) + v4(300),
    "broken-gso-size-0": hdr(1, 1, 40, 0, 20, 16) + v4(300),
    "broken-total-length": hdr(1, 1, 40, 100, 20, 16) + v4(300)[:200],
    "broken-csum-offset": hdr(1, 0, 0, 0, 2000, 16) + v4(10),
    "broken-short": bytes([1, 1, 40, 0]),
}

os.makedirs(OUT, exist_ok=True)
for f in os.listdir(OUT):
    if f.endswith(".bin"):
        os.remove(os.path.join(OUT, f))
for name, data in seeds.items():
    with open(os.path.join(OUT, name + ".bin"), "wb") as fh:
        fh.write(data)
print("wrote %d seeds to %s" % (len(seeds), OUT))
