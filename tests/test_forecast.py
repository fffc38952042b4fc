"""The grokking forecaster (grokscope/forecast.py): known answers on synthetic curves, the contract's
columns, and no look-ahead (a run truncated after step t gives the same row for t)."""
import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import grokscope
from conftest import QUIET, tiny_config
from grokscope.forecast import (COLUMNS, Forecast, Forecaster, LiveForecaster, MEASURES, below_chance_since,
                                features, forecast_run)
from grokscope.run import CKPT_DIR, METRICS_FILE, read_metrics

P = 23
CHANCE = math.log(P)
BUDGET = 2000


def curves(grok_at: int | None, steps=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics and measures of a synthetic run: memorised by step 100; with ``grok_at`` validation loss falls
    below chance there and stays (restricted loss falls, FSD and the Gini rise, the weight norm declines before
    it, and validation loss falls from its peak as the circuit forms, as in real runs); without, nothing but the
    train loss moves."""
    steps = np.array(steps if steps is not None else [0, 1, 2, 5, 10, 20, 50] + list(range(100, BUDGET + 1, 25)))
    mem = np.clip(steps / 100, 0, 1)
    if grok_at is None:
        g = lead = np.zeros(len(steps))
    else:
        g = 1 / (1 + np.exp(-(steps - grok_at) / (grok_at / 20)))  # 0 -> 1 around grok_at
        lead = 1 / (1 + np.exp(-(steps - 0.6 * grok_at) / (grok_at / 10)))  # the circuit forms before
    base = lead
    metrics = pd.DataFrame({
        "step": steps,
        "train_loss": CHANCE * (1 - mem) + 1e-3,
        "train_acc": np.where(steps >= 100, 1.0, mem * 0.9),
        "val_loss": CHANCE * (1 + 1.5 * mem) * (1 - 0.5 * base) * (1 - g) + 0.01 * g,  # falls as the circuit forms
        "val_acc": 0.05 + 0.95 * g,
        "weight_norm": 20.0 * (1 + 0.3 * mem) * (1 - 0.4 * lead),
    })
    measures = pd.DataFrame({"step": steps,
                             "restricted_loss": CHANCE * (1 - base) + 0.02,
                             "excluded_loss": CHANCE * (1 + 2 * mem * (1 + base)),
                             "embed_gini": 0.05 + 0.5 * base, "unembed_gini": 0.05 + 0.5 * base,
                             "fsd": 0.02 + 0.8 * base, "circle_r2": 0.75 + 0.2 * base,
                             "neuron_gini": 0.1 + 0.2 * base})
    return metrics, measures


def test_grokked_run_gets_p_near_one_and_its_step():
    metrics, measures = curves(1000)
    fc = Forecaster.load().forecast(metrics, measures, 1600, BUDGET, CHANCE)
    truth = below_chance_since(metrics, CHANCE)
    assert 950 <= truth <= 1050
    assert fc.p_grok > 0.9
    assert fc.grok_step == truth and fc.grokked and fc.line().startswith("grokked at")
    assert "restricted_loss" in fc.measures and "fsd" in fc.measures


def test_flat_run_gets_p_near_zero():
    metrics, measures = curves(None)
    fc = Forecaster.load().forecast(metrics, measures, 1800, BUDGET, CHANCE)
    assert fc.p_grok < 0.1
    assert fc.grok_step is None and fc.line().startswith("grok unlikely within 2,000 steps")


def test_forming_circuit_is_forecast_to_grok():
    """Three quarters of the way to the grok step the circuit has visibly formed: the forecast says it will grok,
    later than now. (The step itself is not asserted: on this clean synthetic curve the shipped model says
    about twice the true step; its errors on real held-out runs are in docs/forecast.md.)"""
    metrics, measures = curves(1000)
    t = 750
    fc = Forecaster.load().forecast(metrics[metrics.step <= t], measures[measures.step <= t], t, BUDGET, CHANCE)
    assert fc.p_grok > 0.5 and not fc.grokked
    assert t < fc.lo <= fc.grok_step <= fc.hi


@pytest.mark.xfail(strict=True, reason="known shortfall (#28): on this clean synthetic curve the shipped model "
                   "forecasts about twice the true step; it must pass before the forecaster's step is called done")
def test_forming_circuit_forecasts_a_step_near_the_truth():
    """Three quarters of the way to the grok step: the forecast step is within 50 % of the truth."""
    metrics, measures = curves(1000)
    truth = below_chance_since(metrics, CHANCE)
    t = 750
    fc = Forecaster.load().forecast(metrics[metrics.step <= t], measures[measures.step <= t], t, BUDGET, CHANCE)
    assert abs(fc.grok_step - truth) / truth < 0.5


def test_one_grok_step_live_after_the_fact_and_in_the_phases(one_layer_run):
    """One "grokked at" step per run: the live forecaster is given every evaluation's row (``observe``) and
    forecasts every 200 steps, and says the step ``forecast_run`` says (``below_chance_since`` over the whole
    run) and the step ``phases`` ends circuit formation at. Given only the rows of the steps it forecast at,
    it would say a later step (the next forecast step after the fall)."""
    from grokscope.analyses.phases import find_phases

    metrics, _ = curves(1000)
    truth = below_chance_since(metrics, CHANCE)
    phases = find_phases(metrics, n_answers=P).set_index("phase")
    assert phases.loc["circuit_formation", "end_step"] == truth
    model = one_layer_run.model_at(one_layer_run.steps[-1])

    def live_says(observe: bool):
        live = LiveForecaster(one_layer_run.config, BUDGET)
        live.chance, live.every, out = CHANCE, 200, None
        for r in metrics.to_dict("records"):
            step = int(r["step"])
            if step % 200 == 0:
                out = live.update(step, r, model) or out
            elif observe:
                live.observe(step, r)
        return out

    assert live_says(True).grokked and live_says(True).grok_step == truth
    assert live_says(False).grok_step > truth


def test_operations_without_fourier_use_the_basic_measures():
    metrics, measures = curves(1000)
    measures[["restricted_loss", "excluded_loss", "embed_gini", "unembed_gini", "fsd", "circle_r2"]] = np.nan
    fc = Forecaster.load().forecast(metrics, measures, 700, BUDGET, CHANCE)
    assert "restricted_loss" not in fc.measures and "fsd" not in fc.measures
    assert {"val_loss", "weight_norm", "neuron_gini"} <= set(fc.measures)


def test_predict_is_the_documented_formula():
    spec = {"models": {"m": {"features": ["a", "b"], "mean": [1.0, 0.0], "scale": [2.0, 1.0],
                             "clf": {"coef": [1.0, -1.0], "intercept": 0.5},
                             "reg": {"coef": [0.5, 0.0], "intercept": 0.2, "q10": -0.1, "q90": 0.3}}}}
    p, mid, lo, hi = Forecaster(spec).predict({"a": 3.0, "b": 1.0})
    z = (3 - 1) / 2 * 1.0 - 1.0 + 0.5
    assert p == pytest.approx(1 / (1 + math.exp(-z)))
    assert mid == pytest.approx(math.exp(0.5 + 0.2)) and lo == pytest.approx(math.exp(0.6))
    assert hi == pytest.approx(math.exp(1.0))


def test_features_use_no_data_after_t():
    metrics, measures = curves(1000)
    t = 600
    whole = features(metrics, measures, t, BUDGET, CHANCE)
    cut = features(metrics[metrics.step <= t], measures[measures.step <= t], t, BUDGET, CHANCE)
    assert whole == cut


def test_forecast_line_formats():
    f = Forecast(3000, 15800, 0.93, 7012.0, 6230.0, 8120.0, ("val_loss",))
    assert f.line() == "grok expected near step 7,000, 80 % interval 6,200–8,100 (p 0.93)"
    assert Forecast(3000, 15800, 0.07, None, None, None, ()).line() == "grok unlikely within 15,800 steps (p 0.07)"
    assert Forecast(8000, 15800, 0.99, 6900.0, 6900.0, 6900.0, ()).line() == "grokked at 6,900 (p 0.99)"


def test_shipped_model_is_plain_json():
    from grokscope.forecast import MODEL_FILE

    spec = json.loads(MODEL_FILE.read_text())
    assert set(spec["models"]) == {"full", "basic"}
    for m in spec["models"].values():
        assert len(m["features"]) == len(m["mean"]) == len(m["clf"]["coef"]) == len(m["reg"]["coef"])
        assert m["reg"]["q10"] < 0 < m["reg"]["q90"]


# --- on a real (tiny) run ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_layer_run(tmp_path_factory):
    cfg = tiny_config(model={"n_layers": 1, "norm": "none"}, task={"p": 11}, train={"steps": 40})
    return grokscope.train(cfg, out=tmp_path_factory.mktemp("runs") / "one", **QUIET)


def truncated(run, t: int, where):
    """A copy of the run as it stood at step t: metrics and checkpoints after t removed."""
    shutil.copytree(run.path, where)
    m = read_metrics(where / METRICS_FILE)
    m[m["step"] <= t].to_csv(where / METRICS_FILE, index=False)
    for f in (where / CKPT_DIR).iterdir():
        if f.suffix == ".safetensors" and int("".join(c for c in f.stem if c.isdigit())) > t:
            f.unlink()
    return where


def test_forecast_run_has_the_contract_columns_and_no_look_ahead(one_layer_run, tmp_path):
    whole = forecast_run(one_layer_run)
    assert list(whole.columns) == COLUMNS
    assert whole["step"].tolist() == [s for s in one_layer_run.steps if s > 0]
    assert whole["p_grok"].between(0, 1).all()
    assert set(whole["measures"].iloc[-1].split(";")) >= {"val_loss", "restricted_loss", "fsd"}
    t = 20
    cut = forecast_run(truncated(one_layer_run, t, tmp_path / "cut"))
    row_whole = whole[whole.step == t].drop(columns="actual_grok_step").reset_index(drop=True)
    row_cut = cut[cut.step == t].drop(columns="actual_grok_step").reset_index(drop=True)
    pd.testing.assert_frame_equal(row_whole, row_cut)


def test_forecast_run_caches_the_measures_per_checkpoint(one_layer_run, tmp_path, monkeypatch):
    """The second ``forecast_run`` reads the measures from the results folder: no forward, an equal table;
    a new version of the measures, or a checkpoint file rewritten, is measured again."""
    import grokscope.forecast as fc_module
    from grokscope.results import ResultStore, default_out_dir
    from grokscope.run import Run

    run = Run(shutil.copytree(one_layer_run.path, tmp_path / "runs" / "copy"))
    calls = []
    real = fc_module.progress_measures
    monkeypatch.setattr(fc_module, "progress_measures", lambda model, data: calls.append(1) or real(model, data))
    first = forecast_run(run)
    n = len(run.steps)
    assert len(calls) == n and ResultStore(default_out_dir(run.path)).table(fc_module.MEASURES_TABLE) is not None
    again = forecast_run(run)
    assert len(calls) == n  # no forward the second time
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, forecast_run(run, cache=False))
    assert len(calls) == 2 * n
    some = forecast_run(run, steps=run.steps[1:4])
    assert len(calls) == 2 * n and some["step"].tolist() == run.steps[1:4]
    monkeypatch.setattr(fc_module, "MEASURES_VERSION", fc_module.MEASURES_VERSION + 1)
    forecast_run(run)
    assert len(calls) == 3 * n  # another version: measured again
    path = run.checkpoint_path(run.steps[-1])
    path.write_bytes(path.read_bytes())  # the same bytes, a new file: measured again
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    pd.testing.assert_frame_equal(forecast_run(run), first)
    assert len(calls) == 3 * n + 1


def test_live_forecaster_matches_the_offline_one(one_layer_run):
    run = one_layer_run
    live = LiveForecaster(run.config, run.config.train.steps)
    live.every = 1  # at every step it is called at
    metrics = run.metrics
    out = None
    assert set(metrics.step) == set(run.steps)  # an evaluation at every checkpoint: the live one sees what forecast_run sees
    for step in run.steps:
        row = metrics[metrics.step == step].iloc[0].to_dict()
        out = live.update(step, row, run.model_at(step)) or out
    assert out is not None and out.step == run.steps[-1]
    offline = forecast_run(run).iloc[-1]
    assert out.p_grok == pytest.approx(offline["p_grok"])
    assert set(live.measured[-1]) == {"step", *MEASURES}


def test_live_forecaster_cadence_is_fixed_by_the_budget(one_layer_run):
    """A 32nd of the budget (at least the evaluation interval), whatever the time it takes: a run and its
    resumed copy forecast at the same steps."""
    run = one_layer_run
    cfg = run.config
    for budget in (10, 3200, 100_000):
        assert LiveForecaster(cfg, budget).every == max(cfg.schedule.eval_every, math.ceil(budget / 32))
    live = LiveForecaster(cfg, cfg.train.steps)
    live.every = 2
    model = run.model_at(run.steps[-1])
    steps = [s for s in run.steps if s > 0]
    for step in steps:
        live.update(step, run.metrics[run.metrics.step == step].iloc[0].to_dict(), model)
    made = [m["step"] for m in live.measured]
    assert made[0] == steps[0] and all(b - a >= 2 for a, b in zip(made, made[1:]))
    assert all(s in made for s in steps if all(s - m >= 2 for m in made if m < s))
