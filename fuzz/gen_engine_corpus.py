#!/usr/bin/env python3
"""Seeds for the `engine` fuzz target, built from the other targets' seeds.

The engine target reads frames as [len_hi, len_lo, flags, packet bytes...]
repeated (see dpr_router::fuzz_checks). Each seed here packs two to four
real IP packets from corpus/decap, corpus/icmp_quote and corpus/mss_rewrite
(whose 2-byte MSS prefix is stripped), with varied time steps and headroom.
Deterministic: run it after gen_corpus.py.
"""
import pathlib
import random

root = pathlib.Path(__file__).resolve().parent / "corpus"
packets = []
for d, skip in (("decap", 0), ("icmp_quote", 0), ("mss_rewrite", 2)):
    for f in sorted((root / d).glob("*.bin")):
        b = f.read_bytes()[skip:]
        if b:
            packets.append((f.stem, b))

rng = random.Random(20261125)
out = root / "engine"
out.mkdir(exist_ok=True)
for old in out.glob("*.bin"):
    old.unlink()
for i in range(40):
    chosen = rng.sample(packets, rng.randint(2, 4))
    seed = bytearray()
    for _, pkt in chosen:
        flags = rng.choice([0x01, 0x05, 0x10, 0x21, 0x8f, 0x30])
        seed += len(pkt).to_bytes(2, "big") + bytes([flags]) + pkt
    (out / f"mix-{i:02d}.bin").write_bytes(seed)
print(f"wrote {len(list(out.glob('*.bin')))} engine seeds from {len(packets)} packets")
