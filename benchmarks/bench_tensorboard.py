"""What ``grokscope train --tensorboard`` costs: training with and without the live scalars, side by side.

    python benchmarks/bench_tensorboard.py [--steps 1000] [--rounds 2] [--every 1000]

The default model and recipe (x/y mod 97 at 50 %, its default evaluation schedule: every 100 steps and
20 log-spaced early ones) trains ``--steps`` steps into a scratch folder, once with live TensorBoard
scalars (the restricted loss every ``--every`` steps, the default) and once without, alternating which
goes first each round, in one process of one thread; each run is timed in process time (the whole
``grokscope.train`` call: the same set-up, the same checkpoints; TensorBoard's import, the command's
start-up, is made before). Prints each round's ratio and the median, then what the live view's two parts
cost on their own: one restricted loss, and one evaluation's scalars (the metrics' tags), per step of
the run at that schedule.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def silent(*args, **kwargs) -> None:
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--every", type=int, default=None, help="steps between two restricted losses (default: train's)")
    args = ap.parse_args()

    from grokscope.cpu import configure_cpu

    configure_cpu(1)
    import torch.utils.tensorboard  # noqa: F401  (the import is start-up: made before any timing)

    import grokscope
    from grokscope.analyses.fourier import restricted_loss_own_keys
    from grokscope.config import RunConfig
    from grokscope.tensorboard import METRIC_TAGS, RESTRICTED_EVERY, summary_writer

    every = args.every or RESTRICTED_EVERY
    cfg = RunConfig()
    cfg.train.steps = args.steps
    root = Path(tempfile.mkdtemp(prefix="grokscope-bench-tb-"))
    times: dict[str, list[float]] = {"with": [], "without": []}
    ratios = []
    run = None
    for r in range(args.rounds):
        for mode in (("without", "with") if r % 2 == 0 else ("with", "without")):
            out = root / f"{mode}{r}"
            t0 = time.process_time()
            run = grokscope.train(cfg, out=out, progress=False, log=silent,
                                  tensorboard=(root / f"tb{r}") if mode == "with" else False, tensorboard_every=every)
            times[mode].append(time.process_time() - t0)
        ratios.append(times["with"][-1] / times["without"][-1])
        print(f"round {r}: without {1e3 * times['without'][-1] / args.steps:.2f} ms/step, with "
              f"{1e3 * times['with'][-1] / args.steps:.2f} ms/step, with/without {ratios[-1]:.4f}", flush=True)
    print(f"with/without --tensorboard, whole run of {args.steps} steps: median {statistics.median(ratios):.4f} "
          f"over {len(ratios)} rounds (min {min(ratios):.4f}, max {max(ratios):.4f})")

    # the parts, on their own
    model, data = run.model_at(run.steps[-1]), run.data
    restricted_loss_own_keys(model, data)
    t0 = time.process_time()
    for _ in range(5):
        restricted_loss_own_keys(model, data)
    t_restricted = (time.process_time() - t0) / 5
    writer = summary_writer()(log_dir=str(root / "parts"), filename_suffix=".live")
    t0 = time.process_time()
    for i in range(200):
        for tag in METRIC_TAGS.values():
            writer.add_scalar(tag, 0.5, global_step=i)
    t_scalars = (time.process_time() - t0) / 200
    writer.close()
    evals = len(run.metrics)
    step = statistics.median(times["without"]) / args.steps
    print(f"one restricted loss: {1e3 * t_restricted:.1f} ms = {t_restricted / step:.1f} steps "
          f"({100 * t_restricted / (every * step):.2f} % of a step at one every {every} steps); "
          f"one evaluation's {len(METRIC_TAGS)} scalars: {1e3 * t_scalars:.2f} ms "
          f"({100 * t_scalars * evals / (args.steps * step):.3f} % of a step at {evals} evaluations in {args.steps} steps)")


if __name__ == "__main__":
    main()
