"""Figure 7 by the authors' design: one checkpoint per seed at a fixed step, three sharpness measures,
their correlation with validation accuracy across the seeds, each with a bootstrap 95 % interval.

    python benchmarks/fig7_three_measures.py SWEEP [--step N] [--out rows.csv]

SWEEP is a finished (or partly finished) ``grokscope sweep --preset fig7`` folder, or any sweep of one
configuration over seeds. ``--step``: the fixed step (default: each run's last checkpoint, the budget).
Per run: validation accuracy at that step and ``sharpness_fig7`` (analyses.flatness): the maximum in a
random 10-d subspace (the default), the full-space maximum, and the released code's computation (a
minimum), and beside them the released computation with its gradient repaired (the sign bug alone:
still a minimum). Prints Spearman's and Pearson's rho of each against the validation accuracy with a percentile
bootstrap 95 % interval (2000 resamples of the seeds), and the seconds each run took.
"""
import argparse
import time

import pandas as pd
import torch

from grokscope.analyses.flatness import TrainLoss, released_code_sharpness, released_loss, sharpness_fig7
from grokscope.figures.sweep import correlation_interval
from grokscope.run import load_run

MEASURES = ("sharpness_subspace", "sharpness_full", "sharpness_released", "sharpness_released_repaired")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep")
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    table = pd.read_csv(f"{args.sweep}/results.csv")
    table = table[table.status != "pending"]
    rows, t0 = [], time.perf_counter()
    for _, tr in table.iterrows():
        run = load_run(tr.run_dir)
        m = run.metrics.set_index("step")
        step = args.step if args.step is not None else max(s for s in run.steps if s in m.index)
        if step not in run.steps or step not in m.index:
            print(f"{tr.cell}: no checkpoint with metrics at step {step}; left out")
            continue
        t = time.perf_counter()
        model = run.model_at(step)
        row = sharpness_fig7(model, run.data)
        with TrainLoss(model, run.data.train_x, run.data.train_y).restoring() as loss:  # the sign bug alone
            repaired = released_code_sharpness(released_loss(model, run.data, literal=False),
                                               loss.x0.double().cpu().numpy())
        row["sharpness_released_repaired"] = repaired["sharpness"]
        rows.append({"cell": tr.cell, "seed": tr.seed, "step": step, "val_acc": float(m.loc[step, "val_acc"]),
                     "train_acc": float(m.loc[step, "train_acc"]), **row, "seconds": time.perf_counter() - t})
        print(f"{tr.cell}: step {step}, val_acc {rows[-1]['val_acc']:.3f}, "
              + ", ".join(f"{k[10:]} {row[k]:.4g}" for k in MEASURES) + f" ({rows[-1]['seconds']:.1f} s)", flush=True)
    df = pd.DataFrame(rows)
    if args.out:
        df.to_csv(args.out, index=False)
    print(f"\n{len(df)} seeds; validation accuracy {df.val_acc.min():.3f} to {df.val_acc.max():.3f} "
          f"(median {df.val_acc.median():.3f}); {time.perf_counter() - t0:.0f} s in all")
    print(f"{'measure':<28}{'Spearman rho [95 % CI]':>30}{'Pearson r [95 % CI]':>30}")
    for k in MEASURES:
        cells = []
        for method in ("spearman", "pearson"):
            rho, lo, hi = correlation_interval(df[k], df.val_acc, method)
            cells.append(f"{rho:+.2f} [{lo:+.2f}, {hi:+.2f}]")
        print(f"{k:<28}{cells[0]:>30}{cells[1]:>30}")
    print("paper (Power et al. 2022, Figure 7): Spearman rho -0.80")


if __name__ == "__main__":
    main()
