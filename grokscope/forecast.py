"""Will it grok, and when: a forecast from the progress measures of a run up to step t.

What is forecast. ``p_grok``: the probability that validation loss falls below chance (ln of the
number of possible answers) for good within the run's budget, after memorisation (the step
``phases`` calls the end of circuit formation); ``grok_step``: the step it will, with an 80 %
interval (``lo``, ``hi``). See docs/forecast.md for the method and its held-out evaluation
(benchmarks/bench_forecast.py).

Measures (``progress_measures``, from the weights at a checkpoint or the live model): restricted and
excluded loss on the model's own key frequencies (data up to t only: not the final checkpoint's
keys that ``analyze`` fixes), the Fourier Gini of the embedding and unembedding, FSD
(``analyses.fourier.fsd``), the circles' R² of the unembedding's key-frequency planes (mean over
the keys) and the Gini of the MLP neuron norms; from the metrics: validation and train loss, train
accuracy (the memorisation step) and the weight norm. Operations without a Fourier basis (and models
where restricted loss is not faithful) use the measures they have: the ``basic`` model (metrics and
neuron Gini); ``Forecast.measures`` says which were used.

Features (``features``), comparable across p, operations and budgets: losses relative to chance
(ln n), steps relative to the budget (ln(budget / t)) and to the memorisation step (ln(t / T_mem)),
trends as slopes in log space (d ln v / d ln t over the last half of the steps so far, [t/2, t]).
Series are smoothed as ``phases`` smooths them (running median, log-spaced windows), on the data up
to t only.

Model (fitted by ``benchmarks/bench_forecast.py fit``, shipped as ``forecast_model.json``:
coefficients, never a pickle): standardised features; a logistic regression for ``p_grok``; a ridge
regression of ln(T_grok / t) on the runs that grok, fitted on their steps from 15 % of the way to the
grok step to it; C and alpha by cross-validation grouped by run on the fit sweeps, and the 10 % and
90 % quantiles of the held-out residuals give the 80 % interval. Once validation loss is below chance
after memorisation, ``grok_step`` is the step it went below (``lo`` = ``hi`` = it).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .analyses.circles import circle_fit, plane
from .analyses.fourier import (cyclic_tokens, element_matrices, fourier_basis, frequency_norms, fsd, key_frequencies,
                               key_losses, losses_unfaithful, not_cyclic)
from .analyses._common import gini
from .analyses.neurons import neuron_norm_matrix
from .analyses.phases import below_for_good, smooth
from .errors import GrokscopeError
from .tasks import chance_loss

MODEL_FILE = Path(__file__).with_name("forecast_model.json")
ACC = 0.99  # train accuracy that marks memorisation (as ``phases``)
FOURIER_MEASURES = ("restricted_loss", "excluded_loss", "embed_gini", "unembed_gini", "fsd", "circle_r2")
MEASURES = FOURIER_MEASURES + ("neuron_gini",)
METRIC_MEASURES = ("val_loss", "train_loss", "train_acc", "weight_norm")
COLUMNS = ["step", "p_grok", "grok_step", "lo", "hi", "measures", "actual_grok_step"]


# --- the forecast --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Forecast:
    step: int  # the step the forecast was made at (uses data up to and including it)
    budget: int  # the run's last step (config.train.steps)
    p_grok: float  # P(val loss falls below chance for good within the budget)
    grok_step: float | None  # predicted step (None when p_grok < 0.5); the step it happened once it has
    lo: float | None  # 80 % interval of grok_step
    hi: float | None
    measures: tuple[str, ...]  # the measures the forecast used

    @property
    def grokked(self) -> bool:
        return self.grok_step is not None and self.grok_step <= self.step

    def line(self) -> str:
        if self.grokked:
            return f"grokked at {self.grok_step:,.0f} (p {self.p_grok:.2f})"
        if self.grok_step is None:
            return f"grok unlikely within {self.budget:,} steps (p {self.p_grok:.2f})"
        return (f"grok expected near step {_round(self.grok_step):,}, 80 % interval {_round(self.lo):,}–"
                f"{_round(self.hi):,} (p {self.p_grok:.2f})")


def _round(v: float) -> int:
    """A step to two significant figures (100 at least): a forecast is not precise to the step."""
    if v < 1000:
        return int(round(v, -1))
    return int(round(v, -int(math.floor(math.log10(v))) + 1))


# --- measures from the weights ----------------------------------------------------------------------------
def fourier_applies(data, model_cfg) -> bool:
    """Whether the Fourier measures (restricted loss and the rest) apply to this task and model."""
    return not_cyclic(data) is None and losses_unfaithful(model_cfg.n_layers, model_cfg.normalization_type,
                                                          data.op) is None


@torch.no_grad()
def progress_measures(model, data) -> dict[str, float]:
    """The weights' progress measures (``MEASURES``; NaN where they do not apply): one grid forward
    and a few small Fourier transforms."""
    out = dict.fromkeys(MEASURES, float("nan"))
    out["neuron_gini"] = gini(neuron_norm_matrix(model).flatten())
    if not_cyclic(data) is not None:
        return out
    tokens = cyclic_tokens(data)
    n = len(tokens)
    basis, freqs = fourier_basis(n)
    mats = {k: W.detach().double().cpu() for k, W in element_matrices(model, tokens).items()}
    norms = {k: frequency_norms(W, basis, freqs) for k, W in mats.items()}
    keys = key_frequencies(norms["unembed"])
    out["embed_gini"], out["unembed_gini"] = gini(norms["embed"][1:]), gini(norms["unembed"][1:])
    out["fsd"] = fsd(model, data)[0]
    r2 = []
    for k in keys:
        axes, _ = plane(mats["unembed"], k, n)
        if axes is not None:
            r2.append(circle_fit(mats["unembed"].numpy() @ axes, k, n)["r2"])
    out["circle_r2"] = float(np.mean(r2)) if r2 else float("nan")
    if losses_unfaithful(model.cfg.n_layers, model.cfg.normalization_type, data.op) is None:
        out["restricted_loss"], out["excluded_loss"] = key_losses(model, data, keys)
    return out


def measure_run(run, steps) -> pd.DataFrame:
    """``step`` and ``MEASURES`` at the given checkpoint steps of a run (one model, reloaded per step)."""
    from .model import build_model
    from .weights import load_weights

    data = run.data
    model = build_model(run.config.model, data.d_vocab, data.n_elements, device="cpu").eval()
    rows = []
    for step in steps:
        load_weights(model, run.state_dict_at(step), f"checkpoint {run.checkpoint_path(step)}")
        rows.append({"step": int(step), **progress_measures(model, data)})
    return pd.DataFrame(rows, columns=["step", *MEASURES])


MEASURES_TABLE = "forecast_measures"  # the cache of ``measure_run`` in the run's results folder
MEASURES_VERSION = 1  # bump when ``progress_measures`` changes: a cache of another version is measured again


def results_store(run):
    """The run's own results folder (``analyses/<run>``) as a ``ResultStore``; a GrokscopeError when the
    folder is not a results folder or holds another run's results."""
    from .results import ResultStore, default_out_dir
    from .sweep.folder import check_results_folder

    store = ResultStore(default_out_dir(run.path))
    check_results_folder(store.folder)
    store.check_owner(run)
    return store


def cached_measures(run, steps) -> pd.DataFrame:
    """``measure_run`` through a cache: the table ``MEASURES_TABLE`` in the run's results folder
    (``analyses/<run>``, as the analyses' tables: versioned by ``MEASURES_VERSION``, kept per checkpoint
    file, for this run only). Only the steps it lacks are measured, then stored with the others. A
    folder that cannot hold it (another run's results, not writable) is left alone: the measures are
    then computed every time."""
    from .locks import FolderLock

    steps = sorted(int(s) for s in steps)
    if not steps:
        return measure_run(run, [])
    params = {"measures": list(MEASURES)}
    try:
        store = results_store(run)
    except GrokscopeError:
        store = None
    prints = run.fingerprints(run.steps)
    cached, done = (store.cached(MEASURES_TABLE, MEASURES_VERSION, params, run.run_id, prints) if store is not None
                    else (None, set()))
    todo = [s for s in steps if s not in done]
    if not todo:
        return cached[cached["step"].isin(steps)].sort_values("step").reset_index(drop=True)
    new = measure_run(run, todo)
    table = new if cached is None or not len(cached) else pd.concat([cached, new], ignore_index=True)
    table = table.sort_values("step").reset_index(drop=True)
    if store is not None:
        kept = sorted(done | set(todo))
        try:
            with FolderLock(store.folder, "forecast"):  # not while ``analyze`` writes there
                store.write(MEASURES_TABLE, table, {"analysis": MEASURES_TABLE, "kind": "checkpoint",
                                                    "version": MEASURES_VERSION, "params": params, "steps": kept,
                                                    "run": str(run.path.resolve()), "run_id": run.run_id,
                                                    "checkpoints": {str(s): prints.get(s) for s in kept}})
        except GrokscopeError:  # not writable, or locked by another process: measured, not stored
            pass
    return table[table["step"].isin(steps)].reset_index(drop=True)


# --- features ------------------------------------------------------------------------------------------
def _series(table: pd.DataFrame, column: str, t: int) -> pd.Series:
    if column not in table.columns:
        return pd.Series(dtype=float)
    s = pd.to_numeric(table[column], errors="coerce")
    s.index = table["step"].astype(int)
    s = s[(s.index <= t)].dropna()
    return smooth(s[~s.index.duplicated(keep="last")].sort_index())


def _slope(s: pd.Series, t: int, log: bool) -> float:
    """d v / d ln(step) (d ln v / d ln step when ``log``) over the points in [t/2, t] (the last 3 at least)."""
    s = s[s.index > 0]
    window = s[s.index >= t / 2]
    if len(window) < 3:
        window = s.iloc[-3:]
    if len(window) < 2:
        return 0.0
    x = np.log(window.index.to_numpy(dtype=float))
    y = window.to_numpy(dtype=float)
    y = np.log(np.maximum(y, 1e-12)) if log else y
    if np.ptp(x) == 0:
        return 0.0
    return float(np.polyfit(x, y, 1)[0])


def memorisation_step(metrics: pd.DataFrame, t: int | None = None) -> int | None:
    """The first step (<= t) where train accuracy reaches ``ACC``."""
    m = metrics if t is None else metrics[metrics["step"] <= t]
    hit = m[pd.to_numeric(m["train_acc"], errors="coerce") >= ACC]
    return int(hit["step"].iloc[0]) if len(hit) else None


def below_chance_since(metrics: pd.DataFrame, chance: float, t: int | None = None) -> int | None:
    """The step from which the smoothed validation loss (data up to t) has stayed below chance, after
    memorisation; None when it is not below chance at t. Over a finished run: the grok step."""
    t = int(metrics["step"].max()) if t is None else t
    t_mem = memorisation_step(metrics, t)
    if t_mem is None:
        return None
    return below_for_good(_series(metrics, "val_loss", t), chance, t_mem)


def features(metrics: pd.DataFrame, measures: pd.DataFrame | None, t: int, budget: int,
             chance: float) -> dict[str, float]:
    """The forecaster's features at step t, from the metrics and measures at steps <= t only (NaN where a
    measure is missing); see the module docstring."""
    t = int(t)
    f: dict[str, float] = {}
    vl, tl, wn = (_series(metrics, c, t) for c in ("val_loss", "train_loss", "weight_norm"))
    if vl.empty or tl.empty:
        raise GrokscopeError(f"no metrics up to step {t} to forecast from")
    f["log_budget_left"] = math.log(budget / max(t, 1))
    f["val"] = float(vl.iloc[-1]) / chance
    f["val_min"] = float(vl.min()) / chance
    f["val_slope"] = _slope(vl, t, True)
    f["train"] = math.log10(max(float(tl.iloc[-1]), 1e-8) / chance)
    t_mem = memorisation_step(metrics, t)
    f["memorised"] = float(t_mem is not None)
    f["since_mem"] = math.log(max(t, 1) / max(t_mem, 1)) if t_mem is not None else 0.0
    f["wn_drop"] = math.log(float(wn.iloc[-1]) / float(wn.max())) if len(wn) else float("nan")
    f["wn_slope"] = _slope(wn, t, True) if len(wn) else float("nan")
    ms = measures if measures is not None else pd.DataFrame(columns=["step", *MEASURES])
    rl, el = _series(ms, "restricted_loss", t), _series(ms, "excluded_loss", t)
    f["rl"] = math.log(float(rl.iloc[-1]) / chance) if len(rl) else float("nan")
    f["rl_drop"] = math.log(float(rl.iloc[-1]) / float(rl.max())) if len(rl) else float("nan")
    f["rl_slope"] = _slope(rl, t, True) if len(rl) else float("nan")
    f["el"] = math.log(float(el.iloc[-1]) / chance) if len(el) else float("nan")
    for key, col in (("fsd", "fsd"), ("egini", "embed_gini"), ("ugini", "unembed_gini"), ("r2", "circle_r2"),
                     ("ngini", "neuron_gini")):
        s = _series(ms, col, t)
        f[key] = float(s.iloc[-1]) if len(s) else float("nan")
        if key in ("fsd", "ngini"):
            f[key + "_slope"] = _slope(s, t, False) if len(s) else float("nan")
    return f


# which measures each feature reads (for ``Forecast.measures``)
FEATURE_MEASURES = {"val": ("val_loss",), "val_min": ("val_loss",), "val_slope": ("val_loss",), "train": ("train_loss",),
                    "memorised": ("train_acc",), "since_mem": ("train_acc",), "wn_drop": ("weight_norm",),
                    "wn_slope": ("weight_norm",), "rl": ("restricted_loss",), "rl_drop": ("restricted_loss",),
                    "rl_slope": ("restricted_loss",), "el": ("excluded_loss",), "fsd": ("fsd",), "fsd_slope": ("fsd",),
                    "egini": ("embed_gini",), "ugini": ("unembed_gini",), "r2": ("circle_r2",),
                    "ngini": ("neuron_gini",), "ngini_slope": ("neuron_gini",), "log_budget_left": ()}


# --- the fitted model ------------------------------------------------------------------------------------
class Forecaster:
    """A fitted forecaster (``forecast_model.json``): per feature set, a standardiser, a logistic
    regression for ``p_grok`` and a ridge regression of ln(T_grok / t) with its residual quantiles."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.sets: dict[str, dict] = spec["models"]

    @classmethod
    def load(cls, path: str | Path = MODEL_FILE) -> "Forecaster":
        return _load(str(path))

    def pick(self, f: dict[str, float]) -> str:
        """The first feature set (in the file's order: the richest first) whose features are all present."""
        for name, m in self.sets.items():
            if all(np.isfinite(f.get(k, float("nan"))) for k in m["features"]):
                return name
        raise GrokscopeError("no fitted feature set matches the measures this run has")

    def predict(self, f: dict[str, float], name: str | None = None) -> tuple[float, float, float, float]:
        """(p_grok, predicted grok step / t, its 10 % and 90 % quantiles / t) from features ``f``."""
        m = self.sets[name or self.pick(f)]
        x = (np.array([f[k] for k in m["features"]]) - np.array(m["mean"])) / np.array(m["scale"])
        z = float(x @ np.array(m["clf"]["coef"]) + m["clf"]["intercept"])
        p = 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
        y = float(x @ np.array(m["reg"]["coef"]) + m["reg"]["intercept"])
        ratio = lambda v: math.exp(max(v, 0.0))  # the grok step is not before t
        return p, ratio(y), ratio(y + m["reg"]["q10"]), ratio(y + m["reg"]["q90"])

    def forecast(self, metrics: pd.DataFrame, measures: pd.DataFrame | None, t: int, budget: int,
                 chance: float) -> Forecast:
        f = features(metrics, measures, t, budget, chance)
        name = self.pick(f)
        p, mid, lo, hi = self.predict(f, name)
        used = tuple(dict.fromkeys(m for k in self.sets[name]["features"] for m in FEATURE_MEASURES[k]))
        since = below_chance_since(metrics, chance, t)
        if since is not None:  # below chance after memorisation: it happened at ``since``
            return Forecast(int(t), int(budget), p, float(since), float(since), float(since), used)
        if p < 0.5:
            return Forecast(int(t), int(budget), p, None, None, None, used)
        return Forecast(int(t), int(budget), p, t * mid, t * lo, t * hi, used)


@lru_cache(maxsize=4)
def _load(path: str) -> Forecaster:
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise GrokscopeError(f"cannot read the forecaster's coefficients {path}: {e}") from None
    return Forecaster(spec)


# --- a run, after the fact or as it goes -------------------------------------------------------------
def forecast_run(run, steps=None, forecaster: Forecaster | None = None, cache: bool = True) -> pd.DataFrame:
    """For a finished or running run (a grokscope Run or its folder): what the forecast was at each
    checkpoint step after 0 (or the given steps; step 0 has nothing to forecast from), from the data up
    to that step only. Columns ``COLUMNS``:
    step, p_grok, grok_step, lo, hi, measures (';'-joined) and actual_grok_step (the step validation
    loss fell below chance for good, after memorisation, over the whole run; NaN if never). The
    measures at each checkpoint are cached in the run's results folder (``cached_measures``; not with
    ``cache=False``)."""
    from .run import Run

    run = run if isinstance(run, Run) else Run(run)
    fc = forecaster or Forecaster.load()
    metrics = run.metrics
    if metrics is None or not len(metrics):
        raise GrokscopeError(f"{run.path}: no metrics to forecast from")
    ckpts = run.steps
    want = sorted(int(s) for s in (ckpts if steps is None else steps))
    data = run.data
    measured = [s for s in ckpts if want and s <= want[-1]]
    measures = cached_measures(run, measured) if cache else measure_run(run, measured)
    chance, budget = chance_loss(data.n_elements), int(run.config.train.steps)
    actual = below_chance_since(metrics, chance)
    rows = []
    for t in want:
        if t <= 0 or not (metrics["step"] <= t).any():
            continue
        f = fc.forecast(metrics, measures, t, budget, chance)
        rows.append({"step": t, "p_grok": f.p_grok, "grok_step": f.grok_step, "lo": f.lo, "hi": f.hi,
                     "measures": ";".join(f.measures), "actual_grok_step": float("nan") if actual is None else actual})
    return pd.DataFrame(rows, columns=COLUMNS).astype({"grok_step": float, "lo": float, "hi": float})


class LiveForecaster:
    """Fed during training (``update`` at the trainer's evaluations); costs <= 5 % of training time in
    total. It measures the weights at most every ``every`` steps: a ``MEASUREMENTS``-th of the budget
    (at least the evaluation interval), fixed by the budget alone, so that a run and its resumed copy
    make the same forecasts at the same steps (no wall-clock cadence). ``spent``: its own time so far,
    in seconds."""

    MEASUREMENTS = 32  # measurements over a whole budget

    def __init__(self, config, budget: int, forecaster: Forecaster | None = None):
        from .tasks import make_dataset

        t = config.task
        self.data = make_dataset(t.op, t.p, t.frac, t.seed, t.outliers)
        self.budget, self.chance = int(budget), chance_loss(self.data.n_elements)
        self.fc = forecaster or Forecaster.load()
        self.min_every = max(int(config.schedule.eval_every), 1)
        self.every = max(self.min_every, math.ceil(self.budget / self.MEASUREMENTS))
        self.rows: list[dict] = []
        self.measured: list[dict] = []
        self.last: tuple[int, float] | None = None  # (step, wall time at the end) of the last measurement
        self.spent = 0.0

    def observe(self, step: int, metrics: dict) -> None:
        """Every evaluation's metrics row (train_loss, val_loss, train_acc, weight_norm, ...), also where no
        forecast is due: the grok step is read off the validation loss at the evaluations' resolution, as
        ``forecast_run`` and ``phases`` read it, not only at the steps a forecast was made."""
        if self.rows and self.rows[-1]["step"] >= step:
            return
        self.rows.append({"step": int(step), **{k: float(metrics.get(k, float("nan"))) for k in METRIC_MEASURES}})

    def update(self, step: int, metrics: dict, model) -> Forecast | None:
        """metrics: the row the trainer just measured (``observe``); model: the live model (read only,
        under no_grad). Returns a new Forecast when it has one."""
        self.observe(step, metrics)
        if step <= 0 or (self.last is not None and step - self.last[0] < self.every):
            return None
        begin = time.perf_counter()
        was = model.training
        model.eval()
        try:
            self.measured.append({"step": int(step), **progress_measures(model, self.data)})
        finally:
            model.train(was)
        out = self.fc.forecast(pd.DataFrame(self.rows), pd.DataFrame(self.measured), int(step), self.budget,
                               self.chance)
        end = time.perf_counter()
        self.spent += end - begin
        self.last = (int(step), end)
        return out


__all__ = ["Forecast", "Forecaster", "LiveForecaster", "cached_measures", "results_store", "features", "forecast_run", "measure_run",
           "progress_measures"]
