#!/usr/bin/env python3
"""Seed corpus for the `control` fuzz target: well-formed control messages
(docs/cluster-protocol.md), each behind the target's flag byte. Flag bit 0
makes the target sign the message, so seeds reach the protocol logic."""
import os, struct

OUT = os.path.join(os.path.dirname(__file__), "corpus", "control")
TAG = b"\0" * 32

def header(kind, body, sender=1, key=1, inc=1_800_000_000_000_000_000, seq=1, sent=1_800_000_000_000_000_000):
    return b"DR" + bytes([1, kind]) + struct.pack(">HHHHQQQ", key, len(body), sender, 0, inc, seq, sent) + body

def entry(origin, state=0, inc=1_800_000_000_000_000_000, seq=1, age=0, conns=3):
    return struct.pack(">HBBQQIIfIIff", origin, state, 0, inc, seq, age, conns, 0.25, 1, 4, 1.0, 1.0)

def addr4(a):
    return bytes([4]) + bytes(a)

def addr6(a):
    return bytes([6]) + bytes(a)

def report(entries, addrs):
    return header(1, bytes([len(entries), len(addrs), 0, 0]) + b"".join(entries) + b"".join(addrs)) + TAG

def flow4(c, cp, s, sp):
    return bytes([4, 6]) + struct.pack(">HH", cp, sp) + bytes(c) + bytes(s)

def flow6(c, cp, s, sp):
    return bytes([6, 6]) + struct.pack(">HH", cp, sp) + bytes(c) + bytes(s)

def reply(req, chunk, chunks, flows):
    return header(3, struct.pack(">IHHHH", req, chunk, chunks, len(flows), 0) + b"".join(flows)) + TAG

seeds = {
    "report_own": report([entry(1)], [addr4([198, 18, 1, 2])]),
    "report_draining": report([entry(1, state=1)], [addr4([198, 18, 1, 2])]),
    "report_leaving": report([entry(1, state=2)], []),
    "report_relay": report([entry(1), entry(2, seq=5, age=120), entry(9, age=40)], [addr4([198, 18, 1, 2]), addr6([0x20, 1, 0, 2] + [0] * 11 + [1])]),
    "request": header(2, struct.pack(">II", 77, 0)) + TAG,
    "reply_v4": reply(77, 0, 1, [flow4([198, 18, 100, 1], 40000, [198, 18, 1, 1], 80)]),
    "reply_mixed": reply(77, 1, 3, [flow4([198, 18, 100, 2], 40001, [198, 18, 1, 1], 443), flow6([0x20, 1, 0, 2] + [0] * 11 + [9], 40002, [0x20, 1, 0, 2] + [0] * 11 + [1], 80)]),
    "flow_query": header(7, struct.pack(">IHHHH", 5, 0, 1, 2, 0) + flow4([198, 18, 100, 1], 40000, [198, 18, 0, 10], 80) + flow6([0x20, 1, 0x0d, 0xb8] + [0] * 11 + [9], 40002, [0x20, 1, 0x0d, 0xb8] + [0] * 11 + [0x10], 80)) + TAG,
    "flow_claim": header(8, struct.pack(">IHHHH", 5, 0, 1, 1, 0) + flow4([198, 18, 100, 1], 40000, [198, 18, 0, 10], 80)) + TAG,
    "unknown_kind": header(9, b"\1\2\3") + TAG,
}
os.makedirs(OUT, exist_ok=True)
for name, msg in seeds.items():
    for flags, suffix in [(1, "signed"), (3, "signed_peer2"), (0, "raw")]:
        with open(os.path.join(OUT, f"{name}_{suffix}"), "wb") as f:
            f.write(bytes([flags]) + msg)
print(f"{len(seeds) * 3} seeds in {OUT}")
