#!/usr/bin/env python3
"""Turns the criterion results of `cargo bench -p fastquery-benches --bench cpu` into the
Markdown tables of docs/BENCHMARKS.md, with the ratios taken from that one run.

Usage: python3 scripts/bench_table.py [target/criterion]
"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
res = {}
for dirpath, _, files in os.walk(root):
    if os.path.basename(dirpath) == "new" and "benchmark.json" in files:
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bid = json.load(f)["full_id"]
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        res[bid] = est["median"]["point_estimate"]  # ns per iteration

if not res:
    sys.exit(f"no criterion results under {root}: run the benches first")

BATCH = 4  # polynomials per iteration in the ntt benches (benches/cpu.rs)
print("| N | limbs | fwd fastquery (us/limb) | fwd tfhe-ntt | ratio | inv fastquery | inv tfhe-ntt (+normalize) | ratio |")
print("|---|---|---|---|---|---|---|---|")
for n in (2048, 4096, 8192, 16384):
    for limbs in (1, 4):
        k = f"{n}/{limbs}"
        try:
            per = BATCH * limbs * 1e3
            of, tf = res[f"cpu/ntt_fwd/{k}"] / per, res[f"tfhe-ntt/ntt_fwd/{k}"] / per
            oi, ti = res[f"cpu/ntt_inv/{k}"] / per, res[f"tfhe-ntt/ntt_inv/{k}"] / per
        except KeyError:
            continue
        print(f"| {n} | {limbs} | {of:.2f} | {tf:.2f} | {of/tf:.2f} | {oi:.2f} | {ti:.2f} | {oi/ti:.2f} |")

print()
print("| operation | 1 thread | 2 threads | speed-up |")
print("|---|---|---|---|")
for op in ("ntt_roundtrip_batch/4096/2x64", "mac/4096/2x32x8/2"):
    a, b = res.get(f"cpu-1t/{op}"), res.get(f"cpu-2t/{op}")
    if a and b:
        print(f"| {op} | {a/1e3:.1f} us | {b/1e3:.1f} us | {a/b:.2f}x |")

print()
print("| multiply-accumulate (2 threads) | time | G coefficient-MACs/s | plaintext operand read |")
print("|---|---|---|---|")
for n in (2048, 4096, 8192, 16384):
    for rows in (2, 16):
        key = f"cpu/mac/{n}/{rows}x32x8/2"
        if key in res:
            t = res[key]
            macs = rows * 32 * 8 * 2 * n
            table_bytes = 32 * 8 * 2 * n * 4
            print(f"| N={n}, {rows}x32x8, 2 limbs | {t/1e3:.1f} us | {macs/t:.2f} | {table_bytes/t:.2f} GB/s |")
