#!/usr/bin/env python3
"""Prints the plugin throughput table for BENCHMARKS.md from criterion's saved estimates.

Usage: python3 tests/bench_report.py [CRITERION_DIR]
CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion, else target/criterion.
"""
import json
import os
import sys
from pathlib import Path

GROUPS = [("noop", ["wasm"]), ("noop_unkeyed", ["wasm"]), ("route", ["wasm", "native"]), ("validate", ["wasm", "native"])]
SIZES = [1, 16, 256]


def estimate(root: Path, group: str, function: str, size: int):
    path = root / group / function / str(size) / "new" / "estimates.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    # Mean time of one iteration (one batch), in nanoseconds, and its 95% interval.
    mean = data["mean"]
    return mean["point_estimate"] / size, mean["confidence_interval"]["lower_bound"] / size, \
        mean["confidence_interval"]["upper_bound"] / size


def main() -> int:
    if len(sys.argv) > 1:
        root = Path(sys.argv[1])
    else:
        root = Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "criterion"
    if not root.exists():
        print(f"no criterion results in {root}; run the benchmark first", file=sys.stderr)
        return 1
    print("| plugin | batch | WASM ns/record | WASM records/s | native ns/record | WASM / native |")
    print("|---|---:|---:|---:|---:|---:|")
    for group, functions in GROUPS:
        for size in SIZES:
            wasm = estimate(root, group, "wasm", size)
            native = estimate(root, group, "native", size) if "native" in functions else None
            if wasm is None:
                continue
            ns = wasm[0]
            row = [group, str(size), f"{ns:,.0f}", f"{1e9 / ns:,.0f}"]
            if native is not None:
                row += [f"{native[0]:,.0f}", f"{ns / native[0]:.1f}x"]
            else:
                row += ["-", "-"]
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
