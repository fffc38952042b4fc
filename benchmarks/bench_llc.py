"""The ``llc`` analysis per checkpoint, this code against an older checkout, side by side.

    python benchmarks/bench_llc.py [--run DIR] [--steps S1,S2] [--before DIR]

``--run``: a run of the quick preset (made with ``grokscope train --preset quick --out DIR`` when DIR
holds none; default /tmp/grokscope-bench-llc/quick). For each checkpoint step (default: three spread
over the run) the analysis runs with its default settings (4 chains, 100 burn-in steps and 200 draws,
full batch) in a process of one thread, after one small warm-up call that loads devinterp and its
dependencies (the start-up, not counted). Prints wall and CPU seconds per checkpoint and the estimate
with its stated error (``llc_se``).

``--before DIR``: a checkout of grokscope from before a change (e.g. ``git worktree add DIR main``):
the same measurement runs with that code in a second process at the same time, so both see the same
load; the table puts the two side by side, with the time ratios and the difference of the estimates in
units of their joint stated error (sqrt(se_before² + se_this²)).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(run_dir: str, steps: list[int]) -> None:
    """In a process of the code on PYTHONPATH: one JSON line per checkpoint."""
    from grokscope.cpu import configure_cpu

    configure_cpu(1)
    import grokscope
    from grokscope.analyses.llc import llc

    run = grokscope.load_run(run_dir)
    data = run.data
    llc(run.model_at(steps[0]), data, chains=1, draws=2, burnin=0)  # start-up: devinterp, datasets, xarray, zarr
    for step in steps:
        model = run.model_at(step)
        t, c = time.perf_counter(), time.process_time()
        table = llc(model, data)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        est = table[table.kind == "estimate"].iloc[0]
        print(json.dumps({"step": step, "wall": wall, "cpu": cpu, "llc": float(est.llc), "se": float(est.llc_se),
                          "rhat": float(est.rhat), "warning": est.warning}), flush=True)


def spawn(code_root: Path, run_dir: Path, steps: list[int]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", "--run", str(run_dir),
                             "--steps", ",".join(map(str, steps))], cwd=code_root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(p: subprocess.Popen) -> dict[int, dict]:
    out, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"worker failed: {err[-3000:]}")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {r["step"]: r for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="/tmp/grokscope-bench-llc/quick")
    ap.add_argument("--steps", help="checkpoint steps (default: three spread over the run)")
    ap.add_argument("--before", help="a checkout of older grokscope code to compare with, at the same time")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.run, [int(s) for s in args.steps.split(",")])
        return
    sys.path.insert(0, str(ROOT))
    import grokscope

    run_dir = Path(args.run)
    if not (run_dir / "config.json").exists():
        subprocess.run([sys.executable, "-m", "grokscope.cli", "train", "--preset", "quick", "--out", str(run_dir),
                        "--no-progress"], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    all_steps = grokscope.load_run(run_dir).steps
    steps = ([int(s) for s in args.steps.split(",")] if args.steps
             else [all_steps[len(all_steps) // 4], all_steps[len(all_steps) // 2], all_steps[-1]])
    print(f"llc (default settings) on {run_dir} at steps {steps}; load average {os.getloadavg()[0]:.1f}")
    procs = {"this": spawn(ROOT, run_dir, steps)}
    if args.before:
        procs["before"] = spawn(Path(args.before).resolve(), run_dir, steps)
    results = {k: collect(p) for k, p in procs.items()}
    for step in steps:
        line = [f"step {step:>5}:"]
        for k, r in results.items():
            x = r[step]
            line.append(f"{k}: {x['wall']:6.1f} s wall {x['cpu']:5.1f} s CPU, llc {x['llc']:7.3f} ± {x['se']:.3f}"
                        + (f" ({x['warning'][:40]})" if x["warning"] else ""))
        if "before" in results:
            b, a = results["before"][step], results["this"][step]
            sigma = (b["se"] ** 2 + a["se"] ** 2) ** 0.5
            line.append(f"before/this: wall {b['wall'] / a['wall']:.1f}x, CPU {b['cpu'] / a['cpu']:.1f}x; "
                        f"estimates differ by {abs(b['llc'] - a['llc']) / sigma:.2f} of their joint stated error")
        print("  ".join(line))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
