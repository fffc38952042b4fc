"""The command's thread default, measured: two ``grokscope train`` commands at once.

    python benchmarks/bench_threads.py [--steps 300] [--threads 1,2] [--alone]

Runs ``grokscope train --op x/y --p 97 --frac 0.5 --steps N`` (the default model) as real commands,
two at the same time, first at the command's default settings (no ``--threads``), then with each
``--threads T`` given, and prints per setting the wall time and CPU time (user + system, from the
children's resource usage) of each command, and their ratios against ``--threads 1``. The children get
no OMP_NUM_THREADS / MKL_NUM_THREADS from this process, so the default they show is the command's own.
``--alone`` also runs each setting as a single command (nothing of ours beside it).

The check that the default cannot quietly come back to torch's (one thread per core): the default's
ratios against one thread stay near 1.0. With two processes of two threads on two cores, the wall
and CPU ratios go well above 1 (docs/speed.md).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["train", "--op", "x/y", "--p", "97", "--frac", "0.5", "--no-progress"]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else str(ROOT)
    return env


def run_together(n: int, steps: int, threads: int | None, scratch: Path) -> list[tuple[float, float]]:
    """``n`` commands started at once; (wall s, CPU s) of each, CPU from wait4's resource usage."""
    extra = [] if threads is None else ["--threads", str(threads)]
    procs = {}
    for i in range(n):
        out = scratch / f"t{threads}_{n}_{i}_{time.monotonic_ns()}"
        cmd = [sys.executable, "-m", "grokscope.cli", *COMMAND, "--steps", str(steps), "--out", str(out), *extra]
        p = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs[p.pid] = (p, time.perf_counter())
    results = {}
    while len(results) < n:
        pid, status, usage = os.wait4(-1, 0)
        if pid not in procs:
            continue
        p, t0 = procs[pid]
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"command failed ({p.returncode}): {p.stderr.read().decode()[-2000:]}")
        results[pid] = (time.perf_counter() - t0, usage.ru_utime + usage.ru_stime)
    return [results[pid] for pid in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", default="1", help="--threads values to compare with the default (comma list; 1 is always run)")
    ap.add_argument("--alone", action="store_true", help="also run each setting as one command alone")
    args = ap.parse_args()
    settings: list[int | None] = [None] + sorted({1, *(int(t) for t in args.threads.split(","))})
    print(f"grokscope {' '.join(COMMAND[:-1])} --steps {args.steps}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    shapes = ([1] if args.alone else []) + [2]
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as d:
        for n in shapes:
            print(f"\n{'one command alone' if n == 1 else f'{n} commands at once'}:")
            rows = {1: run_together(n, args.steps, 1, Path(d))}  # the baseline first, then each as it ends
            base_wall, base_cpu = max(w for w, _ in rows[1]), sum(c for _, c in rows[1])
            for s in settings:
                r = rows[s] if s in rows else run_together(n, args.steps, s, Path(d))
                label = "default" if s is None else f"--threads {s}"
                wall, cpu = max(w for w, _ in r), sum(c for _, c in r)
                each = ", ".join(f"{w:.1f} s wall / {c:.1f} s CPU" for w, c in r)
                print(f"  {label:<12} {each}; wall {wall / base_wall:.2f}x, CPU {cpu / base_cpu:.2f}x one thread's",
                      flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
