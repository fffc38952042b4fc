"""Seconds per checkpoint of eps-sharpness on the default model (x/y mod 97, 50 %, 2 layers, d_model 128, d_mlp 512).

    python benchmarks/flatness_speed.py [--threads 1] [--train-steps 0] [--budget 20] [--old] [--hvp]
    python benchmarks/flatness_speed.py --run RUN_DIR --steps 1000,8000 [--budget 20]

The second form compares, at a run's checkpoints, phi from the previous measure and from the ascent
(budget and 4 x budget), for eps 1e-3 and 5e-4: where L-BFGS-B stopped at once, it says so.

Prints, measured side by side in one run: one loss+gradient over the training set (the unit of work),
then the ``sharpness`` analysis for ONE eps (1e-3) with the given budget: wall seconds, this process's CPU
seconds (what it costs on a core of its own, when the machine is shared), evaluations, phi and whether
it was still climbing. ``--old``: the previous measure beside it (scipy's L-BFGS-B from the gradient-sign
corner, 10 iterations) for phi and time. ``--hvp``: one Hessian-vector product. ``--train-steps`` first
trains briefly (AdamW, batch 512) so the point is not the initialisation.
"""
import argparse
import time

import numpy as np
import torch
from scipy.optimize import Bounds, minimize

from grokscope.analyses import flatness as fl
from grokscope.config import ModelConfig
from grokscope.forward import answer_logits
from grokscope.model import build_model
from grokscope.tasks import make_dataset


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def old_lbfgsb(loss, x0, eps=1e-3, f0g0=None, message=False):
    """The measure this replaces: L-BFGS-B on -f from the gradient-sign corner, 10 iterations; the largest f seen."""
    f0, g0 = f0g0 if f0g0 is not None else loss.value_and_grad(x0)
    r = eps * (np.abs(x0) + 1)
    seen = []

    def neg(y):
        v, g = loss.value_and_grad(x0 + y)
        seen.append(v)
        return -v, -g

    out = minimize(neg, r * np.sign(g0), jac=True, method="L-BFGS-B", bounds=Bounds(-r, r),
                   options={"maxiter": 10, "maxfun": 25})
    loss.set(loss.x0)
    phi = 100 * (max(seen) - f0) / (1 + f0)
    return (phi, len(seen), out.message) if message else (phi, len(seen) + 1)


def compare_on_run(path: str, steps: list[int], budget: int) -> None:
    from grokscope.run import load_run

    run = load_run(path)
    for step in steps:
        loss = fl.TrainLoss(run.model_at(step), run.data.train_x, run.data.train_y)
        x0 = loss.x0.double().cpu().numpy()
        f0, g0 = loss.value_and_grad(x0)
        print(f"step {step}: f(x) {f0:.3g}, largest |gradient| {np.abs(g0).max():.2g}")
        for eps in (1e-3, 5e-4):
            phi, n, why = old_lbfgsb(loss, x0, eps, (f0, g0), message=True)
            line = f"  eps {eps:g}: previous {phi:.4g} ({n} evaluations: {why})"
            for b in (budget, 4 * budget):
                res = fl.eps_sharpness(loss.value_and_grad, x0, eps, budget=b, f0g0=(f0, g0))
                line += f"; ascent, budget {b}: {res['sharpness']:.4g}{' (climbing)' if res['climbing'] else ''}"
            loss.set(loss.x0)
            print(line, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--old", action="store_true")
    ap.add_argument("--hvp", action="store_true")
    ap.add_argument("--run", help="compare the previous measure and the ascent at this run's checkpoints")
    ap.add_argument("--steps", default="", help="with --run: checkpoint steps, comma-separated (default: the last)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.run:
        from grokscope.run import load_run

        steps = [int(s) for s in args.steps.split(",") if s] or [load_run(args.run).steps[-1]]
        return compare_on_run(args.run, steps, args.budget)
    data = make_dataset("x/y", 97, 0.5)
    model = build_model(ModelConfig(), data.d_vocab, data.n_elements)
    if args.train_steps:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
        g = torch.Generator().manual_seed(0)
        for _ in range(args.train_steps):
            idx = torch.randperm(len(data.train_y), generator=g)[:512]
            loss = torch.nn.functional.cross_entropy(answer_logits(model, data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    loss = fl.TrainLoss(model, data.train_x, data.train_y)
    x0 = loss.x0.double().numpy()
    print(f"params {len(x0)}, training equations {len(data.train_y)}, threads {args.threads}")
    loss.value_and_grad(x0)  # warm-up
    (f0, _), unit, unit_cpu = timed(lambda: loss.value_and_grad(x0))
    loss.set(loss.x0)
    print(f"train loss {f0:.4g}; one loss+gradient: {unit:.2f} s wall, {unit_cpu:.2f} s CPU")
    row, wall, cpu = timed(lambda: fl.sharpness(model, data, eps=[1e-3], budget=args.budget))
    n = row["evals_0.001"] + 1
    print(f"sharpness, one eps (1e-3), budget {args.budget}: {wall:.1f} s wall, {cpu:.1f} s CPU per checkpoint "
          f"({n} loss+gradients with f(x); {wall / unit:.1f} units of work); phi {row['sharpness_0.001']:.4g}, "
          f"f(x) {row['train_loss']:.4g} -> {row['loss_max_0.001']:.4g}, still climbing: {row['climbing_0.001']}")
    if args.old:
        (phi, nold), wall_o, cpu_o = timed(lambda: old_lbfgsb(loss, x0))
        print(f"previous measure (L-BFGS-B, 10 iterations): {wall_o:.1f} s wall, {cpu_o:.1f} s CPU, {nold} "
              f"loss+gradients; phi {phi:.4g} (ratio new/old phi {row['sharpness_0.001'] / phi:.3g})")
    if args.hvp:
        v = torch.randn_like(loss.x0)
        loss.hvp(v)
        _, h, h_cpu = timed(lambda: loss.hvp(v))
        loss.set(loss.x0)
        print(f"one Hessian-vector product: {h:.2f} s wall, {h_cpu:.2f} s CPU = {h / unit:.1f} loss+gradients")


if __name__ == "__main__":
    main()
