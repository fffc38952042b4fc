"""Sweep speed on the CPU: a grid of 8 small runs, `grokscope sweep` against `grokscope train` one by one.

    python benchmarks/bench_sweep.py [--steps 1500] [--rounds 2] [--workers 2]

The grid: x+y and x-y mod 31 x fractions 0.5, 0.7 x seeds 0, 1 (8 runs), the ``quick`` preset's
model and schedule (d_model 64, metrics every 25 steps, a checkpoint every 50). Both contenders are
whole commands, as a user runs them, process start-up included:
- one after the other: 8 x ``grokscope train ...`` (torch's default threads: both cores);
- ``grokscope sweep ... --workers 2``: 2 pool processes with one thread each, each training its
  share of the runs one at a time (the CPU default, ``--batch 1``).
The sweep uses both cores, so the two cannot run at the same time without slowing each other; they
alternate instead (sequential, sweep, sequential, sweep, ...) and each round's ratio compares
neighbours in time. Prints every round's times and ratio, and their median. Goal: ratio <= 0.6.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPS, FRACS, SEEDS = ["x+y", "x-y"], [0.5, 0.7], [0, 1]
COMMON = ["--p", "31", "--d-model", "64", "--d-mlp", "256", "--eval-every", "25", "--ckpt-every", "50",
          "--state-every", "500", "--no-progress"]


def grokscope(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "grokscope.cli", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"grokscope {' '.join(args)} failed:\n{r.stderr[-2000:]}")


def one_by_one(root: Path, steps: int) -> float:
    t = time.perf_counter()
    for op in OPS:
        for frac in FRACS:
            for seed in SEEDS:
                out = root / f"{op}_{frac}_{seed}"
                grokscope("train", "--op", op, "--frac", str(frac), "--seed", str(seed), "--steps", str(steps),
                          "--out", str(out), *COMMON)
    return time.perf_counter() - t


def sweep(root: Path, steps: int, workers: int) -> float:
    t = time.perf_counter()
    grokscope("sweep", "--ops", ",".join(OPS), "--fracs", ",".join(map(str, FRACS)), "--seeds",
              ",".join(map(str, SEEDS)), "--steps", str(steps), "--workers", str(workers), "--out", str(root / "sweep"),
              *COMMON)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    ratios = []
    for r in range(args.rounds):
        root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
        try:
            seq = one_by_one(root, args.steps)
            swp = sweep(root, args.steps, args.workers)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        ratios.append(swp / seq)
        print(f"round {r + 1}: 8 x grokscope train {seq:.1f} s; grokscope sweep --workers {args.workers} {swp:.1f} s; "
              f"ratio {swp / seq:.2f}", flush=True)
    print(f"median ratio sweep / one-by-one: {statistics.median(ratios):.2f} (goal <= 0.6), "
          f"{len(OPS) * len(FRACS) * len(SEEDS)} runs x {args.steps} steps")


if __name__ == "__main__":
    main()
