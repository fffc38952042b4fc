"""Figure 7 diagnostics: variants of the sharpness measure on a finished fig7 sweep, with Spearman's rho.

    python benchmarks/fig7_sharpness_variants.py /tmp/fig7 [--out variants.csv]

For each run of the sweep, at its last checkpoint and at the saved checkpoint of highest validation
accuracy: the training loss f(x), the total norm of the trainable weights, eps-sharpness in the full
space at eps = 1e-3 (budget 20, the preset's measure, and budget 80), 1e-4 and 1e-5, in a random
10-dimensional subspace at 1e-3 (Keskar's box on z), the undivided rise 100 (max f - f(x)), the top
Hessian eigenvalue, and what Power et al.'s public code computes (f(x) - min f over the subspace box,
divided by 1 - f(x); min by the same ascent on -f). Then Spearman's rho (p) of each against the
validation accuracy: all runs, without collapsed runs (final train accuracy < 99 %), and at the
best-validation checkpoints. Takes about 2 minutes for the small preset on one core.
"""
import argparse
import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from grokscope.analyses import flatness as fl
from grokscope.run import load_run

VARIANTS = {  # name -> eps_sharpness keywords
    "phi_1e-3": dict(eps=1e-3, budget=20),
    "phi_1e-3_b80": dict(eps=1e-3, budget=80),
    "phi_1e-4": dict(eps=1e-4, budget=40),
    "phi_1e-5": dict(eps=1e-5, budget=40),
    "phi_sub10_1e-3": dict(eps=1e-3, subspace=10, budget=40),
}


def measure(model, data) -> dict:
    L = fl.TrainLoss(model, data.train_x, data.train_y)
    x0 = L.x0.double().cpu().numpy()
    with L.restoring():
        f0, g0 = L.value_and_grad(x0)
        row = {"f0": f0, "grad_norm": float(np.linalg.norm(g0)), "weight_norm": float(np.linalg.norm(x0))}
        for name, kw in VARIANTS.items():
            res = fl.eps_sharpness(L.value_and_grad, x0, f0g0=(f0, g0), **kw)
            row[name], row[f"climbing_{name}"] = res["sharpness"], res["climbing"]
            row[f"rise_{name}"] = 100 * (res["fmax"] - f0)
        neg = lambda th: tuple(-v for v in L.value_and_grad(th))  # noqa: E731
        res = fl.eps_sharpness(neg, x0, 1e-3, subspace=10, budget=40, f0g0=(-f0, -g0))
        row["paper_code"] = 100 * (f0 + res["fmax"]) / (1 - f0)  # f0 - min f = f0 + max(-f)
        L.set(L.x0)
        v0 = torch.randn(len(L.x0), generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(L.x0)
        row["hessian_top"] = fl.top_eigenvalue(L.hvp, v0, 30, 1e-3)["value"]
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    table = pd.read_csv(f"{args.sweep}/results.csv")
    rows, t0 = [], time.perf_counter()
    for _, tr in table.iterrows():
        run = load_run(tr.run_dir)
        m = run.metrics.set_index("step")
        steps = [s for s in run.steps if s in m.index]
        best = max(steps, key=lambda s: (float(m.loc[s, "val_acc"]), -s))
        final = None
        for which, step in (("final", steps[-1]), ("best", best)):
            base = {"seed": tr.seed, "which": which, "step": step, "val_acc": float(m.loc[step, "val_acc"]),
                    "collapsed": float(tr.final_train_acc) < 0.99}
            final = measure(run.model_at(step), run.data) if which == "final" or step != steps[-1] else final
            rows.append({**base, **final})
        print(f"{tr.cell}: {time.perf_counter() - t0:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    if args.out:
        df.to_csv(args.out, index=False)
    cols = ["phi_1e-3", "phi_1e-3_b80", "rise_phi_1e-3", "phi_1e-4", "phi_1e-5", "phi_sub10_1e-3", "paper_code",
            "hessian_top", "f0", "grad_norm", "weight_norm"]
    fin, bst = df[df.which == "final"], df[df.which == "best"]
    groups = {f"final ckpt (n={len(fin)})": fin, f"final, not collapsed (n={int((~fin.collapsed).sum())})":
              fin[~fin.collapsed], f"best-val ckpt (n={len(bst)})": bst}
    out = {}
    for g, sub in groups.items():
        out[g] = {c: "{:+.2f} ({:.2g})".format(*spearmanr(sub[c], sub.val_acc)) for c in cols}
    print("Spearman rho (p) against the validation accuracy at that checkpoint:")
    print(pd.DataFrame(out).to_string())
    print(f"rho(phi_1e-3, f0) over the final checkpoints: {spearmanr(fin['phi_1e-3'], fin.f0)[0]:+.2f}; "
          f"max f at eps 1e-3: {(fin['rise_phi_1e-3'] / 100 + fin.f0).min():.3g} to "
          f"{(fin['rise_phi_1e-3'] / 100 + fin.f0).max():.3g}; still climbing at budget 20: "
          f"{int(fin['climbing_phi_1e-3'].sum())} of {len(fin)}, at 80: {int(fin['climbing_phi_1e-3_b80'].sum())}; "
          f"rho(phi_sub10, phi_1e-5) = {spearmanr(fin['phi_sub10_1e-3'], fin['phi_1e-5'])[0]:+.2f}")


if __name__ == "__main__":
    main()
