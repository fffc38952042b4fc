"""What the float64 loss costs per training step, against float32, side by side in one process.

    python benchmarks/bench_loss_dtype.py [--rounds 8] [--block 40] [--threads 1]

Two Trainers of the default model and recipe (x/y mod 97 at 50 %, minibatch 512) that differ only in
``loss_dtype`` step in alternating blocks of ``--block`` updates; each block is timed (process time),
and the ratio of each round's float64 block to its float32 block is printed with the median. Both see
the same machine load, so the ratio holds on a shared machine where absolute times do not. Only the
log-softmax of the (batch, p) answer logits and its backward change precision; the model stays float32.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from grokscope.config import RunConfig
from grokscope.tasks import make_dataset
from grokscope.cpu import configure_cpu
from grokscope.train import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--block", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    configure_cpu(args.threads)
    cfg = RunConfig()
    data = make_dataset(cfg.task.op, cfg.task.p, cfg.task.frac, cfg.task.seed)
    trainers = {}
    for dtype in ("float32", "float64"):
        c = cfg.copy()
        c.train.loss_dtype = dtype
        trainers[dtype] = Trainer(c, data, torch.device("cpu"))
        for _ in range(5):  # warm-up: allocations, AdamW state
            trainers[dtype].step()
    ratios = []
    for r in range(args.rounds):
        times = {}
        for dtype in (("float32", "float64") if r % 2 == 0 else ("float64", "float32")):
            t0 = time.process_time()
            for _ in range(args.block):
                trainers[dtype].step()
            times[dtype] = (time.process_time() - t0) / args.block
        ratios.append(times["float64"] / times["float32"])
        print(f"round {r}: float32 {1e3 * times['float32']:.1f} ms/step, float64 {1e3 * times['float64']:.1f} ms/step, "
              f"ratio {ratios[-1]:.3f}", flush=True)
    print(f"float64 / float32 step time: median {statistics.median(ratios):.3f} over {len(ratios)} rounds "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
