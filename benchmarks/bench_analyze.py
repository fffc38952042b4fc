"""Analysis throughput: a cold ``analyze`` of every default analysis over a run of the default model
with many checkpoints, its time per checkpoint and its peak memory.

    python benchmarks/bench_analyze.py [--checkpoints 200] [--states 100] [--workers N] [--run DIR]
                                       [--keep] [--before OLD_CHECKOUT] [--split]

The run: the default model and recipe (x/y mod 97, 50 %) trained ``--states`` steps with a checkpoint
at every step (``--states`` + 1 distinct trained states), then, for ``--checkpoints`` more than that,
checkpoint files at the later steps written from those states in turn (state ``s mod (states + 1)``
under step ``s``: each file its own, with its step, the run's id and a fresh checksum in its metadata,
as training writes them, so analyze reads, checks and analyses every one; nothing in analyze keys on
a file's content, and ``sharing()`` lives for one checkpoint). A checkpoint of the default model is
1.7 MB, so the run takes 1.7 MB per checkpoint (17 GB for 10,000: no hard links, which would need one
step for all their names), and the results about 0.15 MB per checkpoint (1.5 GB for 10,000, twice
that with ``--before``). Before writing the run it checks that the disk holding it has room for both
with 10 % to spare, and stops with one line if not (``--checkpoints 10000`` needs about 20 GB; this
machine's disk had about 68 GB free). It is deleted at the end unless ``--run`` or ``--keep``.

It prints:
1. the cold ``analyze`` (every default analysis, as ``grokscope analyze`` runs them, t-SNE included;
   goal: 10,000 checkpoints in 10 minutes on 2 cores, about 60 ms a checkpoint): wall time, per
   checkpoint, CPU seconds (this process and its workers) and the peak resident memory of this
   process and of each worker (sampled from /proc every 0.2 s, and the kernel's high-water mark),
   and each one's peak over the first and the second half of the run (flat memory: about equal);
2. a second ``analyze`` with no new checkpoints (goal: seconds): everything comes from the cache;
3. one more after 10 new checkpoints appear: only those are computed (and, where the last
   checkpoint's key frequencies changed, the tables keyed on them: see ``fourier.resolve_key_freqs``).
``--passes N``: passes 1 to N only.
``--split`` (with ``--workers 1``): pass 1 split into each analysis and the rest.
``--before OLD_CHECKOUT``: the same cold analyze by the grokscope in OLD_CHECKOUT (a git worktree of an
earlier commit), in a subprocess, right after pass 1 on the same run, then every table of the two
compared (largest relative difference per float column; rows whose value differs in other columns).
``--side OLD_CHECKOUT [--side-checkpoints 40]``: instead of the passes, the CPU per checkpoint of the
old and this checkout measured at the same time (two processes started together, one thread each),
each analysing the run's first checkpoints with the seven per-checkpoint default analyses in one
process (``analyze``'s own loader and per-checkpoint step, no workers, no tables written; two
checkpoints first, not counted, for start-up); prints both and their ratio.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import grokscope
from grokscope.analyses import REGISTRY
from grokscope.analyze import analyze
from grokscope.cpu import configure_cpu
from grokscope.run import Run


def make_run(path: Path, n_ckpts: int, n_states: int) -> Run:
    """``n_ckpts`` checkpoints at steps 0..n_ckpts-1: a trained run of the default model, extended as the
    module docstring says."""
    from grokscope import files
    from grokscope.files import atomic_save, read_safetensors_meta

    need = n_ckpts * (1.75e6 + 0.3e6) * 1.1  # the checkpoints, the results (twice, for --before), 10 % spare
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < need:
        sys.exit(f"bench_analyze: {n_ckpts} checkpoints need about {need / 1e9:.1f} GB on {path.parent}, "
                 f"which has {free / 1e9:.1f} GB free")
    trained = min(n_ckpts, n_states + 1)
    cfg = grokscope.RunConfig()  # the default model and recipe: x/y mod 97, 50 %
    cfg.train.steps = trained - 1
    cfg.schedule.ckpt_every, cfg.schedule.ckpt_log_points = 1, 0
    cfg.schedule.eval_every, cfg.schedule.eval_log_points = 10, 0
    cfg.train.device = "cpu"
    t = time.perf_counter()
    run = grokscope.train(cfg, out=path, progress=False, log=lambda *a: None)
    print(f"trained {path}: {len(run.steps)} checkpoints in {time.perf_counter() - t:.1f} s")
    if n_ckpts > trained:
        t = time.perf_counter()
        states = [read_safetensors_meta(run.checkpoint_path(s), "checkpoint") for s in run.steps]
        fsync, files.FSYNC = files.FSYNC, False  # a scratch run: no fsync per file
        try:
            for step in range(trained, n_ckpts):
                tensors, meta = states[step % trained]
                atomic_save(tensors, run.checkpoint_path(step), {**meta, "step": str(step)})
        finally:
            files.FSYNC = fsync
        print(f"wrote {n_ckpts - trained} more checkpoints from those states in {time.perf_counter() - t:.1f} s")
    return run.refresh()


class Memory:
    """Peak resident memory of this process and of its child processes (the workers), sampled from /proc,
    and the kernel's high-water mark (VmHWM) of each, the last seen before it exited."""

    def __init__(self, every: float = 0.2):
        self.peak: dict[int, int] = defaultdict(int)  # pid -> bytes
        self.samples: dict[int, list[int]] = defaultdict(list)  # pid -> resident bytes, every ``every`` s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, args=(every,), daemon=True)

    @staticmethod
    def _status(pid: int) -> dict[str, int]:
        out = {}
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "PPid"):
                    out[key] = int(value.split()[0]) * (1024 if key != "PPid" else 1)
        except (OSError, ValueError, IndexError):
            pass
        return out

    def _watch(self, every: float) -> None:
        me = os.getpid()
        while not self.stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    st = self._status(int(entry.name))
                    if int(entry.name) == me or st.get("PPid") == me:
                        self.samples[int(entry.name)].append(st.get("VmRSS", 0))
                        self.peak[int(entry.name)] = max(self.peak[int(entry.name)], st.get("VmHWM", 0),
                                                         st.get("VmRSS", 0))
            self.stop.wait(every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak[os.getpid()] = max(self.peak[os.getpid()], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    def text(self) -> str:
        me = os.getpid()
        workers = sorted(v for pid, v in self.peak.items() if pid != me)
        mib = 1024 ** 2

        def halves(pid: int) -> str:  # peak resident memory in the first and the second half of its samples
            s = self.samples.get(pid, [])
            return f"{max(s[:len(s) // 2]) / mib:.0f} then {max(s[len(s) // 2:]) / mib:.0f}" if len(s) >= 2 else "-"

        others = sorted((pid for pid in self.peak if pid != me), key=lambda pid: self.peak[pid])
        return (f"peak RSS: this process {self.peak[me] / mib:.0f} MiB"
                + (f", child processes (workers) {', '.join(f'{v / mib:.0f}' for v in workers)} MiB" if workers else "")
                + f"; peak in the first / second half of the run: this process {halves(me)} MiB"
                + "".join(f", child {halves(pid)} MiB" for pid in others))


def cpu_seconds() -> float:
    self_, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + children.ru_utime + children.ru_stime


def timed_registry(timings: dict[str, float]):
    """Wrap every analysis function so its time is added to ``timings[name]``; returns the originals."""
    originals = dict(REGISTRY)
    for name, a in originals.items():
        def fn(*args, _fn=a.fn, _name=name, **kwargs):
            t = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                timings[_name] += time.perf_counter() - t
        REGISTRY[name] = dataclasses.replace(a, fn=fn)
    return originals


def one_pass(run: Run, out: Path, label: str, workers: int | None, split: bool = False) -> float:
    timings: dict[str, float] = defaultdict(float)
    originals = timed_registry(timings) if split else None
    n = len(run.refresh().steps)
    try:
        c, t = cpu_seconds(), time.perf_counter()
        with Memory() as mem:
            tables = analyze(run, out=out, progress=False, workers=workers)
        total, cpu = time.perf_counter() - t, cpu_seconds() - c
    finally:
        if originals is not None:
            REGISTRY.update(originals)
    print(f"\n{label}: {total:.1f} s wall ({1000 * total / n:.0f} ms per checkpoint of the run), "
          f"{cpu:.1f} s CPU ({1000 * cpu / n:.0f} ms per checkpoint); {mem.text()}")
    for name, seconds in sorted(timings.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<22} {seconds:7.2f} s")
    if timings:
        print(f"  {'(load, tables, other)':<22} {total - sum(timings.values()):7.2f} s")
    print(f"  {len(tables)} tables, {sum(len(t) for t in tables.values())} rows")
    return total


OLD = """
import sys, time, resource
from grokscope.cpu import configure_cpu
configure_cpu(1)
from grokscope.analyze import analyze
t = time.perf_counter()
analyze(sys.argv[1], out=sys.argv[2], progress=False)
r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{time.perf_counter() - t} {r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime} {r.ru_maxrss * 1024} {c.ru_maxrss * 1024}")
"""


SIDE = """
import sys, time
from grokscope.cpu import configure_cpu
configure_cpu(1)
from grokscope.analyze import _Loader, _analyse_step, resolve_params
from grokscope.analyses import REGISTRY
from grokscope.run import Run
run, n = Run(sys.argv[1]), int(sys.argv[2])
chosen = [REGISTRY[x] for x in ("circles", "fourier_spectrum", "fourier_neurons", "fourier", "neuron_norms",
                                "sparsity", "weight_norms")]
params = resolve_params(chosen, None)
for a in chosen:
    if a.resolve is not None:
        params[a.name] = a.resolve(run, params[a.name])
jobs = [(a.name, a.fn, params[a.name]) for a in chosen]
loader, data, steps = _Loader(run), run.data, run.steps[:n + 2]
for s in steps[:2]:
    _analyse_step(loader, data, s, jobs)
t = time.process_time()
for s in steps[2:]:
    _analyse_step(loader, data, s, jobs)
print(1000 * (time.process_time() - t) / len(steps[2:]))
"""


def side_by_side(old: Path, run: Run, n: int) -> None:
    """CPU ms per checkpoint of the old checkout and this one, measured at the same time (``SIDE``)."""
    here = Path(__file__).resolve().parents[1]
    procs = {}
    for label, root in (("before", old.resolve()), ("after", here)):
        env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
        procs[label] = subprocess.Popen([sys.executable, "-c", SIDE, str(run.path), str(n)], env=env, cwd=root,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ms = {}
    for label, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"the {label} process failed: {err.strip().splitlines()[-1:]}")
        ms[label] = float(out.split()[-1])
    print(f"\nside by side, {min(n, len(run.steps) - 2)} checkpoints each, the seven per-checkpoint analyses, "
          f"one process each: before {ms['before']:.0f} ms of CPU per checkpoint, after {ms['after']:.0f} ms "
          f"({ms['before'] / ms['after']:.2f}x)")


def before(old: Path, run: Run, out: Path, new_out: Path, cold: float) -> None:
    """The old checkout's cold analyze of the same run, timed, and every table compared with ours."""
    import numpy as np
    import pandas as pd

    env = {**os.environ, "PYTHONPATH": str(old.resolve()), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", OLD, str(run.path), str(out)], env=env, capture_output=True,
                          text=True, cwd=old)
    if done.returncode:
        sys.exit(f"the old checkout's analyze failed: {done.stderr.strip().splitlines()[-1:]}")
    wall, cpu, rss, child_rss = map(float, done.stdout.split()[-4:])
    n = len(run.steps)
    print(f"\nbefore ({old}): {wall:.1f} s wall ({1000 * wall / n:.0f} ms per checkpoint), {cpu:.1f} s CPU "
          f"({1000 * cpu / n:.0f} ms per checkpoint, workers included), peak RSS {rss / 1024 ** 2:.0f} MiB "
          f"(the largest worker's {child_rss / 1024 ** 2:.0f} MiB); old / new wall = {wall / cold:.2f}")
    for path in sorted(out.glob("*.csv")):
        a, b = pd.read_csv(path), pd.read_csv(new_out / path.name)
        if list(a.columns) != list(b.columns) or len(a) != len(b):
            print(f"  {path.stem}: columns or rows differ ({len(a)} vs {len(b)} rows)")
            continue
        parts, rels, differ = [], [], np.zeros(len(a), dtype=bool)
        for c in a.columns:
            x, y = a[c], b[c]
            if pd.api.types.is_float_dtype(x) and pd.api.types.is_float_dtype(y):
                xv, yv = x.to_numpy(), y.to_numpy()
                rel = np.nan_to_num(np.abs(xv - yv) / np.maximum(np.abs(xv), 1e-300), nan=0.0)
                rels.append(rel)
                nan = "" if np.array_equal(np.isnan(xv), np.isnan(yv)) else " (NaN where the other is not)"
                if rel.max() > 0 or nan:
                    parts.append(f"{c} {rel.max():.1e}{nan}")
            else:
                same = ((x.astype(str) == y.astype(str)) | (x.isna() & y.isna())).to_numpy()
                differ |= ~same
                if not same.all():
                    parts.append(f"{c}: {int((~same).sum())} rows differ")
        if differ.any() and rels:  # how far apart the numbers of those rows are (a tie decides an argmax)
            parts.append(f"their floats within {max(r[differ].max() for r in rels):.1e}")
        print(f"  {path.stem:<16} {len(a):>9} rows: " + (", ".join(parts) if parts else "equal"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", "--ckpts", type=int, default=200, help="checkpoints of the cold pass")
    ap.add_argument("--states", type=int, default=100, help="training steps (distinct states: one more)")
    ap.add_argument("--workers", type=int, help="analyze's workers (default: its own default)")
    ap.add_argument("--run", type=Path, help="the benchmark run directory (made if missing, kept)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--before", type=Path, metavar="OLD_CHECKOUT", help="also time and compare an older checkout")
    ap.add_argument("--split", action="store_true", help="time each analysis (with --workers 1)")
    ap.add_argument("--passes", type=int, choices=(1, 2, 3), default=3, help="run passes 1 to N only")
    ap.add_argument("--side", type=Path, metavar="OLD_CHECKOUT",
                    help="instead of the passes: CPU per checkpoint of OLD_CHECKOUT and this one, at the same time")
    ap.add_argument("--side-checkpoints", type=int, default=40, help="checkpoints each for --side")
    args = ap.parse_args()
    if args.split and args.workers != 1:
        ap.error("--split needs --workers 1 (the analyses run in this process)")
    configure_cpu(1)  # as the grokscope command: one thread per process
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    tmp = Path(tempfile.mkdtemp(prefix="bench_analyze_"))
    run_dir = args.run or tmp / "run"
    try:
        run = Run(run_dir) if (run_dir / "config.json").exists() else make_run(run_dir, args.checkpoints + 10,
                                                                                args.states)
        if args.side:
            side_by_side(args.side, run, args.side_checkpoints)
            return
        held = run.steps[-10:]  # hidden for the first passes, then they "arrive"
        hidden = tmp / "held"
        hidden.mkdir()
        for s in held:
            shutil.move(run.checkpoint_path(s), hidden / run.checkpoint_path(s).name)
        run.refresh()
        print(f"{len(run.steps)} checkpoints ({sum(run.checkpoint_path(s).stat().st_size for s in run.steps) / 1e9:.2f} GB)")
        out = tmp / "analyses"
        cold = one_pass(run, out, f"1. cold analyze of {len(run.steps)} checkpoints", args.workers, args.split)
        if args.before:
            before(args.before, run, tmp / "before", out, cold)
        n = len(run.steps)
        warm = one_pass(run, out, "2. again, no new checkpoint (goal: seconds)", args.workers) if args.passes > 1 else None
        for s in held:
            shutil.move(hidden / run.checkpoint_path(s).name, run.checkpoint_path(s))
        grown = one_pass(run, out, f"3. after {len(held)} new checkpoints", args.workers) if args.passes > 2 else None
        print(f"\nsummary: cold {cold:.1f} s ({1000 * cold / n:.0f} ms per checkpoint)"
              + (f", cached {warm:.2f} s" if warm is not None else "")
              + (f", +{len(held)} checkpoints {grown:.1f} s" if grown is not None else ""))
        print(json.dumps({"checkpoints": n, "cold_s": round(cold, 2), "ms_per_checkpoint": round(1000 * cold / n, 1)}))
    finally:
        for f in (tmp / "held").glob("*") if (tmp / "held").is_dir() else []:
            shutil.move(f, run_dir / "ckpt" / f.name)  # never leave a kept run without its checkpoints
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
