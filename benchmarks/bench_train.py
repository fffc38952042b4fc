"""Training speed, measured side by side (the machines are shared and noisy).

    python benchmarks/bench_train.py [--steps 3000] [--threads 1] [--compile]

Each comparison runs its two contenders at the same time, one process each (one thread each by
default: this machine has two cores, and for this small model one thread per process does more work
per core than two), so both see the same load. Prints:
1. the grokscope process's dense fp32 matmul peak (2048x2048 @ 2048x2048);
2. whole runs of division mod 97 at 50 % (the default model and recipe): a plain loop a user would
   write from the TransformerLens grokking demo (HookedTransformer forward, AdamW, full-set evaluation
   every 100 steps, nothing else) in one process, while the other does ``grokscope.train`` runs
   (metrics every 100 steps plus log-spaced early ones, a checkpoint every 1000 steps) one after
   another; the runs that finished while the plain loop ran count (each had the plain loop beside it
   all along), and the ratio is the plain loop's time over their median;
3. ``grokscope.train`` with a checkpoint every 10 steps against one with checkpoints only at the ends;
4. achieved matmul FLOP/s during training as a fraction of the peak: the whole run (its evaluations
   and checkpoints included, their FLOPs counted) and the update loop alone.
With ``--compile``, only 2., with ``grokscope.train`` runs of ``compile=True``, each in a fresh process
(as ``grokscope train --compile`` runs) that compiles from inductor's disk cache, which starts empty:
the first run pays the cold compile, the later ones a warm one.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

import grokscope
from grokscope.forward import answer_flops
from grokscope.cpu import configure_cpu
from grokscope.model import build_model
from grokscope.run import schedule
from grokscope.tasks import N_CTX, make_dataset
from grokscope.train import Trainer

warnings.filterwarnings("ignore")


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best


def plain_loop(steps: int) -> float:
    """What a user writes from the TransformerLens grokking demo; returns wall seconds. On TransformerLens 4
    (no HookedTransformer) the model is the TransformerBridge grokscope builds, through its own forward."""
    from grokscope.model import TL_MAJOR

    cfg = grokscope.preset("paper")
    data = make_dataset("x/y", 97, 0.5, seed=0)
    if TL_MAJOR < 4:
        from transformer_lens import HookedTransformer

        model = HookedTransformer(build_model(cfg.model, data.d_vocab, data.n_elements).cfg)
    else:
        model = build_model(cfg.model, data.d_vocab, data.n_elements)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    tx, ty, vx, vy = data.train_x, data.train_y, data.val_x, data.val_y
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(ty), (512,))
        loss = F.cross_entropy(model(tx[idx])[:, -1], ty[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            with torch.no_grad():
                (model(tx)[:, -1].argmax(-1) == ty).float().mean().item()
                (model(vx)[:, -1].argmax(-1) == vy).float().mean().item()
                F.cross_entropy(model(vx)[:, -1], vy).item()
    return time.perf_counter() - t0


def grokscope_run(steps: int, ckpt_every: int, ckpt_log_points: int = 30, compile: bool = False) -> tuple[float, int]:
    cfg = grokscope.preset("paper")
    cfg.train.steps = steps
    cfg.train.compile = compile
    cfg.schedule.ckpt_every = ckpt_every
    cfg.schedule.ckpt_log_points = ckpt_log_points
    cfg.schedule.state_every = max(ckpt_every, 1000)
    out = Path(tempfile.mkdtemp(prefix="grokscope-bench-", dir=os.environ.get("GROKSCOPE_BENCH_TMP")))
    try:
        t0 = time.perf_counter()
        run = grokscope.train(cfg, out=out / "run", progress=False, log=lambda *a: None)
        wall = time.perf_counter() - t0
        return wall, len(run.steps)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def update_loop_flops(reps: int = 200) -> float:
    cfg = grokscope.preset("paper")
    data = make_dataset("x/y", 97, 0.5, seed=0)
    tr = Trainer(cfg, data, torch.device("cpu"))
    for _ in range(20):
        tr.step()
    t0 = time.perf_counter()
    for _ in range(reps):
        tr.step()
    return answer_flops(tr.model.cfg, tr.batch) * reps / (time.perf_counter() - t0)


def _job(kind: str, steps: int, threads: int, queue) -> None:
    """One measurement in its own process, one thread: (kind, wall seconds, peak, extra)."""
    torch.set_num_threads(threads)
    if kind == "plain":  # a plain loop has no such care: no flushing of subnormals, the default heap
        queue.put((kind, plain_loop(steps), None, None))
        return
    configure_cpu()
    peak = matmul_peak()
    if kind == "grokscope":  # whole runs one after another, until the parent stops this process
        queue.put(("flops", None, peak, update_loop_flops()))
        while True:
            queue.put((kind, grokscope_run(steps, ckpt_every=1000)[0], peak, None))
    elif kind == "grokscope-compile":  # the same, each run in a fresh process of its own
        queue.put(("flops", None, peak, None))
        code = ("import sys, torch; from grokscope.cpu import configure_cpu; configure_cpu(int(sys.argv[2])); "
                "sys.path.insert(0, sys.argv[3]); import bench_train; "
                "print(bench_train.grokscope_run(int(sys.argv[1]), 1000, compile=True)[0])")
        child = None

        def stop(signum, frame):  # the parent's terminate(): take the run under way down too
            if child is not None:
                child.kill()
            os._exit(0)

        signal.signal(signal.SIGTERM, stop)
        while True:
            child = subprocess.Popen([sys.executable, "-c", code, str(steps), str(threads), str(Path(__file__).parent)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            out = child.communicate()[0]
            if child.returncode != 0:
                raise SystemExit(f"a compiled grokscope run failed (exit {child.returncode})")
            queue.put(("grokscope", float(out.strip().splitlines()[-1]), peak, None))
    elif kind == "ckpt10":
        queue.put((kind, grokscope_run(steps, ckpt_every=10, ckpt_log_points=0)[0], peak, None))
    elif kind == "ckpt_ends":
        queue.put((kind, grokscope_run(steps, ckpt_every=steps, ckpt_log_points=0)[0], peak, None))


def side_by_side(a: str, b: str, steps: int, threads: int) -> dict:
    """Run two measurements at the same time, one process (and core) each, so both see the same load."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_job, args=(k, steps, threads, q)) for k in (a, b)]
    for p in procs:
        p.start()
    out = {}
    for _ in procs:
        kind, wall, peak, extra = q.get()
        out[kind] = (wall, peak, extra)
    for p in procs:
        p.join()
    return out


def plain_vs_grokscope(steps: int, threads: int, kind: str = "grokscope") -> tuple[float, list[float], float, float]:
    """The plain loop in one process while the other trains ``grokscope.train`` runs one after another;
    when the plain loop ends, the run then under way is stopped and dropped. Every counted run shared
    the machine with the plain loop for its whole length, as the plain loop did with them.
    Returns (plain seconds, the grokscope runs' seconds, grokscope's process peak, update-loop FLOP/s)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    a = ctx.Process(target=_job, args=("plain", steps, threads, q))
    b = ctx.Process(target=_job, args=(kind, steps, threads, q))
    root = tempfile.mkdtemp(prefix="grokscope-bench-")
    os.environ["GROKSCOPE_BENCH_TMP"] = root  # the stopped run's folder is removed with it
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(root, "inductor")  # --compile: starts empty
    a.start()
    b.start()
    runs, plain, peak, flops = [], None, None, None
    while plain is None:
        kind, wall, pk, extra = q.get()
        if kind == "plain":
            plain = wall
        elif kind == "flops":
            peak, flops = pk, extra
        else:
            runs.append(wall)
    b.terminate()
    a.join()
    b.join()
    del os.environ["GROKSCOPE_BENCH_TMP"], os.environ["TORCHINDUCTOR_CACHE_DIR"]
    shutil.rmtree(root, ignore_errors=True)
    return plain, runs, peak, flops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1, help="threads per process (two processes run at once)")
    ap.add_argument("--compile", action="store_true", help="grokscope runs with compile=True (see above)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}; two processes side by side, {args.threads} thread(s) each")
    if args.compile:
        plain, runs, _, _ = plain_vs_grokscope(args.steps, args.threads, "grokscope-compile")
        if not runs:
            raise SystemExit("no grokscope run finished while the plain loop ran")
        print(f"{args.steps} steps, x/y mod 97, 50 %: plain TransformerLens loop {plain:.1f} s; beside it, "
              f"{len(runs)} whole grokscope.train runs with compile=True, each in a fresh process: "
              f"{', '.join(f'{r:.1f}' for r in runs)} s (the first compiled with an empty inductor cache, the "
              f"others from its disk cache); speed-up per run: {', '.join(f'{plain / r:.2f}x' for r in runs)}; "
              f"median {plain / statistics.median(runs):.2f}x")
        return

    plain, runs, peak, loop = plain_vs_grokscope(args.steps, args.threads)
    if not runs:
        raise SystemExit("no grokscope run finished while the plain loop ran")
    ours = statistics.median(runs)
    print(f"{args.steps} steps, x/y mod 97, 50 %: plain TransformerLens loop {plain:.1f} s "
          f"({args.steps / plain:.1f} steps/s); beside it, {len(runs)} whole grokscope.train runs: "
          f"{', '.join(f'{r:.1f}' for r in runs)} s, median {ours:.1f} s ({args.steps / ours:.1f} steps/s); "
          f"speed-up {plain / ours:.2f}x (each run: {', '.join(f'{plain / r:.2f}x' for r in runs)})")

    cfg = grokscope.preset("paper")
    data = make_dataset("x/y", 97, 0.5, seed=0)
    mcfg = build_model(cfg.model, data.d_vocab, data.n_elements).cfg
    n_evals = len(schedule(args.steps, cfg.schedule.eval_every, cfg.schedule.eval_log_points))
    eval_flops = n_evals * answer_flops(mcfg, len(data.all_y)) / 3  # forward only
    run_flops = args.steps * answer_flops(mcfg, 512) + eval_flops
    print(f"matmul peak of one process ({args.threads} thread(s), 2048^3 fp32): {peak / 1e9:.1f} GFLOP/s")
    print(f"achieved FLOP/s, whole run: {run_flops / ours / 1e9:.1f} GFLOP/s = {100 * run_flops / ours / peak:.0f} % "
          f"of peak; update loop alone: {loop / 1e9:.1f} GFLOP/s = {100 * loop / peak:.0f} % of peak "
          f"(FLOPs of the answer-position forward+backward as answer_logits computes them, seq len {N_CTX})")

    r = side_by_side("ckpt10", "ckpt_ends", args.steps, args.threads)
    dense, sparse = r["ckpt10"][0], r["ckpt_ends"][0]
    print(f"checkpoint every 10 steps ({args.steps // 10 + 1} files) {dense:.1f} s vs at the two ends only "
          f"{sparse:.1f} s: overhead {100 * (dense / sparse - 1):+.1f} %")


if __name__ == "__main__":
    main()
