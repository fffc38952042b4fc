"""Process time per update step: one run (Trainer), BatchedTrainer with K = 1 and K = 8, default model,
one thread (and the forward+backward alone, single-run forward against the batched one at K = 1); with ``--other TREE`` the same in another checkout of grokscope (e.g. main before a change),
the two in alternating processes so that both see the same machine.

    python benchmarks/bench_step.py                    # this tree, 3 rounds
    python benchmarks/bench_step.py --other /work/main --rounds 4
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def child(root: str, steps: int) -> None:
    """One process: build the three trainers from ``root``'s grokscope, warm up, time 3 blocks each."""
    sys.path.insert(0, root)
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    import grokscope
    from grokscope.batched import BatchedTrainer
    from grokscope.config import RunConfig
    from grokscope.tasks import make_dataset
    from grokscope.loss import answer_loss
    from grokscope.train import Trainer

    assert grokscope.__file__.startswith(root), grokscope.__file__
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    cfg = RunConfig()
    t = cfg.task
    data = make_dataset(t.op, t.p, t.frac, t.seed, t.outliers)
    cfgs = [cfg.copy() for _ in range(8)]
    for s, c in enumerate(cfgs):
        c.train.seed = s
    cpu = torch.device("cpu")
    trainers = {"single": Trainer(cfg, data, cpu), "batched_k1": BatchedTrainer([cfg], [data], cpu),
                "batched_k8": BatchedTrainer(cfgs, [data] * 8, cpu)}
    for tr in trainers.values():
        for _ in range(10):
            tr.step()
    # the forward and backward alone (loss on one minibatch), one run: the single-run forward against
    # the batched one with K = 1
    one, b1 = trainers["single"], trainers["batched_k1"]
    x, y = one.train_x[:512], one.train_y[:512]

    def fb_single():
        for p in one.params:
            p.grad = None
        answer_loss(one.forward(x), y, one.loss_dtype).backward()

    def fb_batched_k1():
        b1.flat.grad = None
        logits = b1.logits(x[None])
        answer_loss(logits.reshape(-1, logits.shape[-1]), y, b1.loss_dtype).backward()

    jobs = {name: tr.step for name, tr in trainers.items()}
    jobs.update(fwd_bwd_single=fb_single, fwd_bwd_batched_k1=fb_batched_k1)
    times = {k: [] for k in jobs}
    for _ in range(3):
        for name, job in jobs.items():
            n = steps if name != "batched_k8" else max(1, steps // 4)
            t0 = time.process_time()
            for _ in range(n):
                job()
            times[name].append((time.process_time() - t0) / n * 1e3)
    print(" ".join(f"{k}={statistics.median(v):.2f}" for k, v in times.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--other", help="another grokscope checkout to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="steps per timed block (K = 8: a quarter)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.steps)
    trees = {"this": str(HERE)}
    if args.other:
        trees["other"] = str(Path(args.other).resolve())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    rows = {k: [] for k in trees}
    for r in range(args.rounds):
        for name, root in trees.items():
            p = subprocess.run([sys.executable, __file__, "--child", root, "--steps", str(args.steps)],
                               capture_output=True, text=True, env=env, cwd="/")
            if p.returncode != 0:
                sys.exit(f"{name} ({root}) failed:\n{p.stderr[-2000:]}")
            line = p.stdout.strip().splitlines()[-1]
            print(f"round {r + 1} {name}: {line}", flush=True)
            rows[name].append(dict(kv.split("=") for kv in line.split()))
    med = {n: {k: statistics.median(float(r[k]) for r in rs) for k in rs[0]} for n, rs in rows.items()}
    for name, m in med.items():
        print(f"{name:5} ({trees[name]}): " + ", ".join(f"{k} {v:.2f} ms/step" for k, v in m.items()))
    if "other" in med:
        print("this / other: " + ", ".join(f"{k} {med['this'][k] / med['other'][k]:.3f}" for k in med["this"]))


if __name__ == "__main__":
    main()
