#!/usr/bin/env python3
"""Seed corpus for the `recovery` fuzz target: sequences of recovery reply
bodies (docs/cluster-protocol.md), each behind the target's flag byte and a
2-byte length. The target writes the header, the node's request id and the
tag, so only the body is the fuzzer's."""
import os, struct

OUT = os.path.join(os.path.dirname(__file__), "corpus", "recovery")
SVC = [198, 18, 1, 1]

def flow4(c, cp, s, sp):
    return bytes([4, 6]) + struct.pack(">HH", cp, sp) + bytes(c) + bytes(s)

def flow6(c, cp, s, sp):
    return bytes([6, 6]) + struct.pack(">HH", cp, sp) + bytes(c) + bytes(s)

def body(chunk, chunks, flows, req=0):
    return struct.pack(">IHHHH", req, chunk, chunks, len(flows), 0) + b"".join(flows)

def rec(flags, b):
    return bytes([flags]) + struct.pack(">H", len(b)) + b

def clients(n, base=0):
    return [flow4([198, 18, 100, (base + i) % 250 + 1], 40000 + base + i, SVC, 80) for i in range(n)]

seeds = {
    "one_chunk_peer1": rec(0x10, body(0, 1, clients(3))),
    "two_chunks_peer2": rec(0x11, body(0, 2, clients(2))) + rec(0x11, body(1, 2, clients(2, 10))),
    "both_peers_same_flow": rec(0x10, body(0, 1, clients(1))) + rec(0x11, body(0, 1, clients(1))),
    "duplicate_chunk": rec(0x10, body(0, 2, clients(2))) + rec(0x10, body(0, 2, clients(2))) + rec(0x10, body(1, 2, [])),
    "new_snapshot": rec(0x10, body(0, 3, clients(2))) + rec(0x10, body(0, 2, clients(2, 20))) + rec(0x10, body(1, 2, clients(1, 30))),
    "mixed_families": rec(0x10, body(0, 1, clients(1) + [flow6([0x20, 1, 0, 2] + [0] * 11 + [9], 40002, [0x20, 1, 0, 2] + [0] * 11 + [1], 80)])),
    "foreign_service": rec(0x10, body(0, 1, [flow4([198, 18, 100, 1], 40000, [198, 18, 1, 2], 80), flow4([198, 18, 100, 1], 40000, SVC, 22)])),
    "stale_request": rec(0x12, body(0, 1, clients(2), req=77)),
    "overflowing_table": b"".join(rec(0x11, body(i, 4, clients(20, 20 * i))) for i in range(4)),
}
os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {OUT}")
