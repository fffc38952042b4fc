"""Held-out evaluation of the grokking forecaster (grokscope/forecast.py), as a benchmark.

    python benchmarks/bench_forecast.py data      # train the fit and test sweeps under /tmp/forecast_data
    python benchmarks/bench_forecast.py fit       # fit the forecaster on the fit sweep -> grokscope/forecast_model.json
    python benchmarks/bench_forecast.py evaluate  # AUROC and step error on the test sweep, beside the baselines

The two sweeps differ in operation, training fraction, weight decay and seed (``SWEEPS``); the
forecaster never sees a test run while fitting. See docs/forecast.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(os.environ.get("FORECAST_DATA", "/tmp/forecast_data"))
# One layer without LayerNorm (restricted loss is faithful), d_model 32, full batch: a few ms per step.
BASE = {"task": {"p": 23},
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 4, "d_mlp": 128, "norm": "none"},
        "train": {"steps": 1500, "lr": 7e-3, "full_batch": True, "stop_val_acc": 0.0},
        "schedule": {"eval_every": 25, "eval_log_points": 10, "ckpt_every": 50, "ckpt_log_points": 10,
                     "state_every": 1500}}
SWEEPS = {
    # fit: x+y, fractions 0.3..0.7, weight decay 0.3 / 1 / 3, seeds 0-2, 1,500 steps (45 runs)
    "fit": {"grid": {"op": ["x+y"], "frac": [0.3, 0.4, 0.5, 0.6, 0.7], "weight-decay": [0.3, 1.0, 3.0],
                     "seed": [0, 1, 2]}},
    # fit-short: x+y and x*y at the same fractions and weight decays, seeds 3-4, 800 steps (60 runs)
    "fit-short": {"fixed": {"steps": 800},
                  "grid": {"op": ["x+y", "x*y"], "frac": [0.3, 0.4, 0.5, 0.6, 0.7], "weight-decay": [0.3, 1.0, 3.0],
                           "seed": [3, 4]}},
    # fit-more: more grokking runs for choosing the regularisation by cross-validation; x+y and x*y at
    # fractions 0.5..0.8 and weight decay 1 / 3 (where runs grok), seeds 5-7, 800 steps (48 runs)
    "fit-more": {"fixed": {"steps": 800},
                 "grid": {"op": ["x+y", "x*y"], "frac": [0.5, 0.6, 0.7, 0.8], "weight-decay": [1.0, 3.0],
                          "seed": [5, 6, 7]}},
    # fit-large: runs nearer the Nanda setting (x+y mod 47, one layer of d_model 64, lr 1e-3, full batch,
    # 4,000 steps), where validation loss climbs to 6-47 nats during memorisation, far above anything at
    # p = 23; fractions 0.3-0.5, weight decay 0.3 / 1 / 3, seed 20 (9 runs, 2 grok; ~45 min on a loaded CPU)
    "fit-large": {"base": {"task": {"p": 47},
                           "model": {"n_layers": 1, "d_model": 64, "n_heads": 4, "d_mlp": 256, "norm": "none"},
                           "train": {"steps": 4000, "lr": 1e-3, "full_batch": True, "stop_val_acc": 0.0},
                           "schedule": {"eval_every": 25, "eval_log_points": 10, "ckpt_every": 50,
                                        "ckpt_log_points": 10, "state_every": 4000}},
                  "grid": {"op": ["x+y"], "p": [47], "frac": [0.3, 0.4, 0.5], "weight-decay": [0.3, 1.0, 3.0],
                           "seed": [20]}},
    # test: x-y, x*y and x/y (operations never fitted), other fractions, weight decays and seeds, and a
    # shorter budget, 800 steps (150 runs)
    "test": {"fixed": {"steps": 800},
             "grid": {"op": ["x-y", "x*y", "x/y"], "frac": [0.35, 0.45, 0.55, 0.65, 0.75],
                      "weight-decay": [0.5, 2.0], "seed": [10, 11, 12, 13, 14]}},
}


def make_data(args) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for name in args.sweeps:
        grid = DATA / f"{name}.json"
        grid.write_text(json.dumps({"base": BASE, **SWEEPS[name]}, indent=1))
        t = time.time()
        subprocess.run([sys.executable, "-m", "grokscope.cli", "sweep", "--grid", str(grid), "--out",
                        str(DATA / name), "--workers", "1", "--batch", str(args.batch), "--no-progress"], check=True)
        print(f"{name}: {time.time() - t:.0f} s", flush=True)


# --- samples: the features of every run at every checkpoint ----------------------------------------------
FRACTIONS = (0.25, 0.5, 0.75)  # of the way to the grok step (of the budget, for runs that never grok)
FEATURE_SETS = {  # name -> features; "full" and "basic" ship in grokscope/forecast_model.json, the others are baselines
    "full": ["log_budget_left", "val", "val_min", "val_slope", "train", "memorised", "since_mem", "wn_drop",
             "wn_slope", "rl", "rl_drop", "rl_slope", "el", "fsd", "fsd_slope", "egini", "ugini", "r2", "ngini",
             "ngini_slope"],
    "basic": ["log_budget_left", "val", "val_min", "val_slope", "train", "memorised", "since_mem", "wn_drop",
              "wn_slope", "ngini", "ngini_slope"],
    "weight_norm": ["log_budget_left", "wn_drop", "wn_slope"],
    "val_loss": ["log_budget_left", "val", "val_min", "val_slope"],
    "steps_only": ["log_budget_left"],
}
SHIPPED = ("full", "basic")
FIT_SWEEPS = ("fit", "fit-short", "fit-more", "fit-large")
NEAR = 0.15  # the step regression is fitted from this fraction of the way to the grok step on (the range it is evaluated on)


def run_table(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """(facts, measures) of a finished run: the measures at its checkpoints cached beside the data."""
    from grokscope.forecast import below_chance_since, measure_run
    from grokscope.tasks import chance_loss
    from grokscope.run import Run

    run = Run(run_dir)
    cache = DATA / "measures" / run_dir.parent.parent.name / f"{run_dir.name}.csv"
    if cache.exists():
        measures = pd.read_csv(cache)
    else:
        measures = measure_run(run, run.steps)
        cache.parent.mkdir(parents=True, exist_ok=True)
        measures.to_csv(cache, index=False)
    cfg, data = run.config, run.data
    chance, budget = chance_loss(data.n_elements), int(cfg.train.steps)
    grok = below_chance_since(run.metrics, chance)
    facts = {"run": run_dir.name, "op": cfg.task.op, "frac": cfg.task.frac, "wd": cfg.train.weight_decay,
             "seed": cfg.train.seed, "budget": budget, "chance": chance, "grok_step": grok, "groks": grok is not None}
    return facts, measures


def finished_runs(sweep: str) -> list[Path]:
    from grokscope.run import read_metrics

    out = []
    for d in sorted((DATA / sweep / "runs").iterdir()):
        m = d / "metrics.csv"
        if m.exists():
            cfg = json.loads((d / "config.json").read_text())
            if int(read_metrics(m)["step"].max()) >= int(cfg["train"]["steps"]):
                out.append(d)
    return out


def samples(*sweeps: str) -> pd.DataFrame:
    """One row per (run, checkpoint step > 0): the run's facts and the features from the data up to that step."""
    from grokscope.forecast import features
    from grokscope.run import Run

    rows = []
    for d in [d for sweep in sweeps if (DATA / sweep).exists() for d in finished_runs(sweep)]:
        facts, measures = run_table(d)
        metrics = Run(d).metrics
        for t in measures["step"]:
            if 0 < t <= facts["budget"]:
                rows.append({**facts, "t": int(t), **features(metrics, measures, int(t), facts["budget"], facts["chance"])})
    return pd.DataFrame(rows)


# --- fitting -----------------------------------------------------------------------------------------------
# Each run weighs the same in the fits (its rows' sample weights sum to 1), so alpha and 1 / C compare with
# the number of runs (~150; ~60 of them in the ridge): alpha 1 (the old default) already shrinks a lot.
C_GRID = (1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)  # logistic regression's inverse regularisation
ALPHA_GRID = (1e-4, 1e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0, 100.0)  # ridge penalty
FOLDS = 5  # cross-validation folds, grouped by run (no run in two folds)


def _standardise(X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, scale = X[rows].mean(0), X[rows].std(0)
    scale[scale == 0] = 1.0
    return mean, scale


def _fit_clf(Z, y, w, C):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=5000).fit(Z, y, sample_weight=w)


def _fit_reg(Z, y, w, alpha):
    from sklearn.linear_model import Ridge

    return Ridge(alpha=alpha).fit(Z, y, sample_weight=w)


def _one_se(scores: dict[float, list[float]], simpler) -> float:
    """The one-standard-error rule: of the values whose mean held-out score (lower is better) is within one
    standard error (over the folds) of the best mean, the simplest (``simpler``: the most regularised first)."""
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    best = min(mean, key=mean.get)
    se = float(np.std(scores[best], ddof=1) / np.sqrt(len(scores[best])))
    return next(k for k in sorted(scores, key=simpler) if mean[k] <= mean[best] + se)


def cross_validate(df: pd.DataFrame, feats: list[str]) -> dict:
    """The logistic regression's C and the ridge's alpha chosen by ``FOLDS``-fold cross-validation grouped
    by run, on the fit sweeps only: C by the held-out log loss (each run weighing the same), alpha by the
    held-out median relative error of the grok step |T_hat / T - 1|, each by the one-standard-error rule
    (``_one_se``); and the chosen ridge's held-out residuals (their 10 % and 90 % quantiles give the interval)."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GroupKFold

    X, groups = df[feats].to_numpy(dtype=float), df["run"].to_numpy()
    groks = df["groks"].to_numpy(dtype=bool)
    w = 1.0 / df.groupby("run")["t"].transform("count").to_numpy()
    pre = _step_rows(df)
    y = np.log(df["grok_step"].to_numpy(dtype=float) / df["t"].to_numpy(dtype=float))
    folds = list(GroupKFold(n_splits=FOLDS).split(X, groks, groups))
    clf_loss: dict[float, list[float]] = {C: [] for C in C_GRID}
    reg_err: dict[float, list[float]] = {a: [] for a in ALPHA_GRID}
    reg_pred = {a: np.full(len(df), np.nan) for a in ALPHA_GRID}
    for train, test in folds:
        mean, scale = _standardise(X, train)
        Z = (X - mean) / scale
        if len(set(groks[train])) == 2:
            for C in C_GRID:
                p = _fit_clf(Z[train], groks[train], w[train], C).predict_proba(Z[test])[:, 1]
                clf_loss[C].append(log_loss(groks[test], p, sample_weight=w[test], labels=[False, True]))
        tr, te = train[pre[train]], test[pre[test]]
        if len(tr) and len(te):
            for a in ALPHA_GRID:
                reg_pred[a][te] = _fit_reg(Z[tr], y[tr], w[tr], a).predict(Z[te])
                reg_err[a].append(float(np.median(np.abs(np.exp(reg_pred[a][te] - y[te]) - 1))))
    C, alpha = _one_se(clf_loss, lambda c: c), _one_se(reg_err, lambda a: -a)
    resid = y[pre] - reg_pred[alpha][pre]
    return {"C": C, "alpha": alpha, "clf_loss": {str(k): float(np.mean(v)) for k, v in clf_loss.items()},
            "step_error": {str(k): float(np.mean(v)) for k, v in reg_err.items()}, "resid": resid[np.isfinite(resid)]}


def _step_rows(df: pd.DataFrame) -> np.ndarray:
    """The rows the step regression is fitted on: runs that grok, from ``NEAR`` of the way to their grok step to it."""
    return (df["groks"] & (df["t"] < df["grok_step"]) & (df["t"] >= NEAR * df["grok_step"])).to_numpy()


def fit_set(df: pd.DataFrame, feats: list[str]) -> dict:
    """Standardiser, logistic regression (groks within the budget) and ridge regression (ln(T/t), runs
    that grok, from ``NEAR`` of the way to their grok step to it) on the features ``feats``; each run
    weighs the same. C and alpha by grouped cross-validation (``cross_validate``); the interval from
    the held-out residuals."""
    cv = cross_validate(df, feats)
    X = df[feats].to_numpy(dtype=float)
    mean, scale = _standardise(X, np.arange(len(X)))
    Z = (X - mean) / scale
    w = 1.0 / df.groupby("run")["t"].transform("count").to_numpy()
    clf = _fit_clf(Z, df["groks"].to_numpy(), w, cv["C"])
    pre = _step_rows(df)
    y = np.log(df.loc[pre, "grok_step"].to_numpy(dtype=float) / df.loc[pre, "t"].to_numpy(dtype=float))
    reg = _fit_reg(Z[pre], y, w[pre], cv["alpha"])
    print(f"{feats[0] if len(feats) == 1 else len(feats)} features: C {cv['C']:g} (held-out log loss, mean over "
          f"the folds, {cv['clf_loss'][str(cv['C'])]:.3f}), alpha {cv['alpha']:g} (held-out median step error "
          f"{100 * cv['step_error'][str(cv['alpha'])]:.0f} %)", flush=True)
    return {"features": feats, "mean": mean.tolist(), "scale": scale.tolist(),
            "clf": {"coef": clf.coef_[0].tolist(), "intercept": float(clf.intercept_[0]), "C": cv["C"]},
            "reg": {"coef": reg.coef_.tolist(), "intercept": float(reg.intercept_), "alpha": cv["alpha"],
                    "q10": float(np.quantile(cv["resid"], 0.1)), "q90": float(np.quantile(cv["resid"], 0.9))},
            "cv": {"folds": FOLDS, "clf_log_loss": cv["clf_loss"], "reg_median_step_error": cv["step_error"]}}


def fit(args) -> None:
    from grokscope.forecast import MODEL_FILE

    df = samples(*FIT_SWEEPS)
    df.to_csv(DATA / "fit_samples.csv", index=False)
    n_runs = df["run"].nunique()
    n_grok = df.groupby("run")["groks"].first().sum()
    print(f"fit samples: {n_runs} runs ({n_grok} grok), {len(df)} checkpoints; C and alpha by {FOLDS}-fold "
          "cross-validation grouped by run", flush=True)
    models = {name: fit_set(df, feats) for name, feats in FEATURE_SETS.items()}
    used = [s for s in FIT_SWEEPS if (DATA / s).exists()]
    note = (f"fitted by benchmarks/bench_forecast.py fit on the sweeps {', '.join(used)} ({n_runs} runs, {n_grok} grok "
            f"within their budget, {len(df)} checkpoints): " + "; ".join(json.dumps(SWEEPS[s]) for s in used))
    MODEL_FILE.write_text(json.dumps({"version": 1, "note": note, "models": {k: models[k] for k in SHIPPED}}, indent=1) + "\n")
    (DATA / "baselines.json").write_text(json.dumps({"version": 1, "note": note, "models": models}, indent=1))
    print(note)
    print(f"wrote {MODEL_FILE} ({MODEL_FILE.stat().st_size} bytes) and {DATA / 'baselines.json'}")


# --- evaluation --------------------------------------------------------------------------------------------
def points(df: pd.DataFrame) -> pd.DataFrame:
    """Per test run and fraction: the row of the last checkpoint at or before that fraction of the way to the
    grok step (of the budget for a run that never groks)."""
    rows = []
    for run, g in df.groupby("run"):
        g = g.sort_values("t")
        end = g["grok_step"].iloc[0] if g["groks"].iloc[0] else g["budget"].iloc[0]
        for frac in FRACTIONS:
            before = g[g["t"] <= frac * end]
            rows.append({**(before.iloc[-1] if len(before) else g.iloc[0]).to_dict(), "at": frac})
    return pd.DataFrame(rows)


def evaluate(args) -> None:
    from sklearn.metrics import roc_auc_score
    from grokscope.forecast import Forecaster

    df = samples("test")
    df.to_csv(DATA / "test_samples.csv", index=False)
    pts = points(df)
    baselines = Forecaster(json.loads(Path(args.baselines or DATA / "baselines.json").read_text()))
    shipped = Forecaster.load(args.model) if args.model else Forecaster.load()
    runs = df.groupby("run").first()
    print(f"test sweep: {len(runs)} runs, {int(runs['groks'].sum())} grok within their budget "
          f"(grok step median {runs['grok_step'].median():.0f}, budget {int(runs['budget'].iloc[0])})")
    print("| predictor | AUROC at 25 % | 50 % | 75 % | median step error at 25 % | 50 % | 75 % |")
    print("|---|---|---|---|---|---|---|")
    for name in FEATURE_SETS:
        fc = shipped if name in SHIPPED else baselines
        auc, err = [], []
        for frac in FRACTIONS:
            at = pts[pts["at"] == frac]
            pred = [fc.predict(r.to_dict(), name) for _, r in at.iterrows()]
            p = np.array([q[0] for q in pred])
            auc.append(roc_auc_score(at["groks"].astype(bool), p))
            g = at["groks"].astype(bool).to_numpy()
            T_hat = np.array([q[1] for q in pred]) * at["t"].to_numpy(dtype=float)
            T = at["grok_step"].to_numpy(dtype=float)
            err.append(float(np.median(np.abs(T_hat[g] - T[g]) / T[g])))
        print(f"| {name} | " + " | ".join(f"{a:.3f}" for a in auc) + " | "
              + " | ".join(f"{100 * e:.0f} %" for e in err) + " |")
    # The protocol above evaluates a grokking run at a fraction of its grok step and a run that never groks
    # at that fraction of the budget: the step itself then tells them apart (steps_only). Held at one step
    # for every run instead: at each fraction of the budget, the runs that have not grokked yet.
    print("\nat a fraction of the budget, over the runs not grokked by then (AUROC; runs that grok later / all; "
          "median step error over the runs that grok later):")
    print("| predictor | AUROC at 25 % of the budget | 50 % | 75 % | median step error at 25 % | 50 % | 75 % |")
    print("|---|---|---|---|---|---|---|")
    same = []
    for frac in FRACTIONS:
        for run, g in df.groupby("run"):
            g = g[g["t"] <= frac * g["budget"]].sort_values("t")
            if len(g) and not (g["groks"].iloc[-1] and g["grok_step"].iloc[-1] <= g["t"].iloc[-1]):
                same.append({**g.iloc[-1].to_dict(), "at": frac})
    same = pd.DataFrame(same)
    for name in FEATURE_SETS:
        fc = shipped if name in SHIPPED else baselines
        cells, errs = [], []
        for frac in FRACTIONS:
            at = same[same["at"] == frac]
            y = at["groks"].astype(bool)
            pred = [fc.predict(r.to_dict(), name) for _, r in at.iterrows()]
            p = [q[0] for q in pred]
            cells.append(f"{roc_auc_score(y, p):.3f} ({int(y.sum())}/{len(at)})" if 0 < y.sum() < len(y) else "n/a")
            g = y.to_numpy()
            T_hat = np.array([q[1] for q in pred]) * at["t"].to_numpy(dtype=float)
            T = at["grok_step"].to_numpy(dtype=float)
            errs.append(f"{100 * np.median(np.abs(T_hat[g] - T[g]) / T[g]):.0f} %" if g.any() else "n/a")
        print(f"| {name} | " + " | ".join(cells + errs) + " |")
    inside = []
    for _, r in pts[pts["groks"].astype(bool)].iterrows():
        _, mid, lo, hi = shipped.predict(r.to_dict(), "full")
        inside.append(lo * r["t"] <= r["grok_step"] <= hi * r["t"])
    print(f"80 % interval of the full forecaster holds the grok step in {100 * np.mean(inside):.0f} % of the "
          f"{len(inside)} (run, point) pairs of grokking runs")
    leads(args)


def leads(args) -> None:
    """FSD's lead beside restricted loss's and the circles' R² (``phases.find_leadlag``) on the grokking runs."""
    from grokscope.analyses.phases import find_leadlag
    from grokscope.run import Run

    rows = []
    for sweep in (*FIT_SWEEPS, "test"):
        for d in finished_runs(sweep) if (DATA / sweep).exists() else []:
            facts, measures = run_table(d)
            if not facts["groks"]:
                continue
            results = {"fourier": measures.assign(losses_faithful=True),
                       "circles": measures[["step", "circle_r2"]].rename(columns={"circle_r2": "r2"}).assign(matrix="unembed")}
            ll = find_leadlag(Run(d).metrics, results, n_answers=round(np.exp(facts["chance"]))).set_index("measure")
            rows.append({k: ll.loc[k, "lead"] if k in ll.index else np.nan
                         for k in ("fsd", "restricted_loss", "unembed_circle_r2")} | {"sweep": sweep})
    t = pd.DataFrame(rows)
    keys = ("fsd", "restricted_loss", "unembed_circle_r2")
    for k in keys:
        t[k] = pd.to_numeric(t[k], errors="coerce")
    print(f"lead on validation loss (steps; phases_leadlag's rule) over the {len(t)} grokking runs, where the measure "
          "moved: " + "; ".join(f"{k} mean {t[k].mean():.0f}, median {t[k].median():.0f} ({t[k].notna().sum()} runs)"
                                for k in keys))
    both = t.dropna(subset=["fsd", "restricted_loss"])
    print(f"FSD ahead of restricted loss in {int((both['fsd'] > both['restricted_loss']).sum())} of the {len(both)} "
          f"runs where both moved (level with it in {int((both['fsd'] == both['restricted_loss']).sum())})")


def overhead(args) -> None:
    """Train a preset's run for ``--steps`` steps twice, side by side in one process: evaluations only, then
    evaluations and ``LiveForecaster.update`` at each; print both times and the ratio."""
    import torch
    from grokscope.config import preset
    from grokscope.forecast import LiveForecaster
    from grokscope.run import schedule
    from grokscope.tasks import make_dataset
    from grokscope.train import Trainer

    torch.set_num_threads(1)
    cfg = preset(args.preset)
    t = cfg.task
    data = make_dataset(t.op, t.p, t.frac, t.seed, t.outliers)
    evals = set(schedule(cfg.train.steps, cfg.schedule.eval_every, cfg.schedule.eval_log_points))
    times = {}
    for live_on in (False, True, False, True):  # interleaved, so that a change in the machine's load hits both
        trainer = Trainer(cfg, data, torch.device("cpu"))
        live = LiveForecaster(cfg, cfg.train.steps) if live_on else None
        start = time.perf_counter()
        for step in range(1, args.steps + 1):
            trainer.step()
            if step in evals:
                tl, ta, vl, va, _ = trainer.evaluate()[0]
                if live is not None:
                    row = {"train_loss": tl, "train_acc": ta, "val_loss": vl, "val_acc": va,
                           "weight_norm": trainer.weight_norms()[0]}
                    live.update(step, row, trainer.model)
        times.setdefault(live_on, []).append(time.perf_counter() - start)
        if live is not None:
            spent, every = live.spent, live.every
    plain, with_live = min(times[False]), min(times[True])
    print(f"{args.preset}, {args.steps} steps on the CPU (one thread; best of 2): without the forecaster "
          f"{plain:.1f} s, with it {with_live:.1f} s: {100 * (with_live / plain - 1):+.1f} % "
          f"(its own time {spent:.2f} s; every {every} steps at the end)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="train the fit and test sweeps")
    d.add_argument("--sweeps", nargs="+", default=list(SWEEPS))
    d.add_argument("--batch", type=int, default=48)
    sub.add_parser("fit", help="fit the forecaster on the fit sweep -> grokscope/forecast_model.json")
    e = sub.add_parser("evaluate", help="AUROC and step error on the test sweep, beside the baselines")
    e.add_argument("--model", help="the forecaster's coefficients (default: the shipped grokscope/forecast_model.json)")
    e.add_argument("--baselines", help="the baselines' coefficients (default: baselines.json beside the data)")
    sub.add_parser("leads", help="FSD's lead on validation loss beside restricted loss's and the circles' R²")
    o = sub.add_parser("overhead", help="training time with and without the live forecaster, side by side")
    o.add_argument("--preset", default="quick")
    o.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args(argv)
    {"overhead": overhead, "data": make_data, "fit": fit, "evaluate": evaluate, "leads": leads}[args.cmd](args)


if __name__ == "__main__":
    main()
