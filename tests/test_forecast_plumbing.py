"""The forecast's plumbing (issue 28), apart from the forecaster itself: the live forecast in training (metrics
columns, the bar's line, --no-forecast, training unchanged bit for bit, batched runs), the hopeless stop,
and `grokscope forecast`. A fake forecaster with fixed numbers stands in wherever a value is checked, so
nothing here depends on what grokscope.forecast's method gives."""
from __future__ import annotations

import importlib
import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import grokscope
from grokscope.batched import train_many
from grokscope.cli import main
from grokscope.forecast import Forecast
from grokscope.model import weight_norm
from grokscope.run import (FORECAST_COLUMNS, HOPELESS_MIN_FRACTION, HOPELESS_PATIENCE, METRICS_FILE, Run,
                           hopeless_step)
from grokscope.sweep.folder import HOPELESS, run_status

from conftest import QUIET, tiny_config


class FakeForecaster:
    """The contract's LiveForecaster with fixed answers: p_grok ``P`` (grok step 7,000, 6,200–8,100 when
    ``P`` >= 0.5), every 10 steps. It draws from torch's and numpy's global generators and reads the
    weights, as a real one may; ``calls`` records (step, val_loss, weight norm of the model it got),
    ``rows`` the step of every metrics row it got (``observe``, and ``update``'s)."""

    P = 0.9
    instances: list["FakeForecaster"] = []

    def __init__(self, config, budget):
        self.budget, self.every, self.calls, self.rows = budget, 10, [], []
        FakeForecaster.instances.append(self)

    def observe(self, step, metrics):
        self.rows.append(step)

    def update(self, step, metrics, model):
        self.rows.append(step)
        torch.rand(5), torch.randn(3), np.random.rand(2)  # a permutation test would draw like this
        self.calls.append((step, metrics["val_loss"], weight_norm(model.parameters())))
        sure = self.P >= 0.5
        return Forecast(step, self.budget, self.P, 7000.0 if sure else None, 6200.0 if sure else None,
                        8100.0 if sure else None, ("fake",))


@pytest.fixture
def fake(monkeypatch):
    FakeForecaster.instances = []
    FakeForecaster.P = 0.9
    monkeypatch.setattr(importlib.import_module("grokscope.train"), "_live_forecaster", lambda cfg: FakeForecaster(cfg, cfg.train.steps))
    return FakeForecaster


def noisy(**train):
    """The tiny run with every source of training randomness on: minibatches, update noise, dropout."""
    return tiny_config(train={"batch_size": 8, "update_noise": 0.01, "resid_dropout": 0.1, **train})


def weights(run: Run) -> dict[int, dict[str, torch.Tensor]]:
    return {s: run.state_dict_at(s) for s in run.steps}


# --- the live forecast in training ------------------------------------------------------------------------------
def test_training_is_bit_identical_with_and_without_the_live_forecast(tmp_path, fake, monkeypatch):
    runs, rng_after = {}, {}
    for name, forecast in (("off", False), ("fake", True)):
        torch.manual_seed(123)
        np.random.seed(7)
        runs[name] = grokscope.train(noisy(), out=tmp_path / name, forecast=forecast, **QUIET)
        rng_after[name] = (torch.get_rng_state(), np.random.get_state()[1].copy())
    assert fake.instances and len(fake.instances[0].calls) == 3  # it ran (steps 0, 10, 20), drawing each time
    monkeypatch.undo()  # and the forecaster the package ships
    runs["real"] = grokscope.train(noisy(), out=tmp_path / "real", **QUIET)
    off = weights(runs["off"])
    for name in ("fake", "real"):
        other = weights(runs[name])
        assert other.keys() == off.keys()
        assert all(torch.equal(other[s][k], off[s][k]) for s in off for k in off[s]), name
        cols = ["step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "weight_norm", "collapse"]
        assert runs[name].metrics[cols].equals(runs["off"].metrics[cols]), name
    assert torch.equal(rng_after["off"][0], rng_after["fake"][0])  # the caller's generators untouched
    assert np.array_equal(rng_after["off"][1], rng_after["fake"][1])


def test_the_forecast_columns_hold_the_forecasts_where_made_and_the_model_is_the_live_one(tmp_path, fake):
    run = grokscope.train(tiny_config(), out=tmp_path / "r", **QUIET)
    m = run.metrics
    made = m[m["forecast_p"].notna()]
    assert list(made.step) == [0, 10, 20]  # every 10 steps (the fake's ``every``); the rows between are empty
    assert m.loc[m.step.isin([5, 15]), FORECAST_COLUMNS].isna().all().all()
    assert made[FORECAST_COLUMNS].values.tolist() == [[0.9, 7000.0, 6200.0, 8100.0]] * 3
    for step, val_loss, norm in fake.instances[0].calls:  # it got this step's row and this step's weights
        row = m[m.step == step].iloc[0]
        assert val_loss == row.val_loss and norm == pytest.approx(row.weight_norm, rel=1e-6)
    header = (run.path / METRICS_FILE).read_text().splitlines()[0].split(",")
    assert header[-4:] == FORECAST_COLUMNS
    off = grokscope.train(tiny_config(), out=tmp_path / "off", forecast=False, **QUIET)
    assert off.metrics[FORECAST_COLUMNS].isna().all().all()


def test_resume_keeps_the_forecasts_made_before_and_replays_them_to_the_forecaster(tmp_path, fake):
    run = grokscope.train(tiny_config(), out=tmp_path / "r", **QUIET)
    before = run.metrics
    grown = grokscope.train(resume=run.path, steps=30, **QUIET).metrics
    assert grown[grown.step <= 20].drop(columns="elapsed_s").equals(before.drop(columns="elapsed_s"))
    assert grown.loc[grown.step == 30, "forecast_p"].item() == 0.9  # the resumed session forecasts too
    # the resumed run's forecaster is first given what the first session's was (rows and weights of steps
    # 0, 10, 20, from their checkpoints), so it sees what an uninterrupted run's sees
    straight = grokscope.train(tiny_config(train={"steps": 30}), out=tmp_path / "s", **QUIET)
    first, resumed, whole = fake.instances
    assert [c[0] for c in first.calls] == [0, 10, 20] and [c[0] for c in resumed.calls] == [0, 10, 20, 30]
    assert resumed.calls[:3] == first.calls
    assert resumed.calls == whole.calls  # steps, rows and weights, exactly
    # and every evaluation's row, not only those of the steps it forecast at (the grok step's resolution)
    assert first.rows == before.step.tolist() and resumed.rows == whole.rows == straight.metrics.step.tolist()
    assert straight.metrics[FORECAST_COLUMNS].equals(grown[FORECAST_COLUMNS])


def test_the_bar_and_the_log_show_the_forecast_line(tmp_path, fake, capsys):
    lines = []
    grokscope.train(tiny_config(), out=tmp_path / "r", progress=True, log=lines.append)
    expected = Forecast(20, 20, 0.9, 7000.0, 6200.0, 8100.0, ("fake",)).line()
    assert expected in capsys.readouterr().err  # on the progress bar
    assert any(line.startswith("grokscope: forecast at step 20: " + expected) for line in lines)


def test_a_batched_run_forecasts_each_run_from_its_own_weights(tmp_path, fake):
    cfgs = [tiny_config(), tiny_config(train={"seed": 1, "lr": 3e-3})]
    runs = train_many(cfgs, [tmp_path / "a", tmp_path / "b"], **QUIET)
    assert len(fake.instances) == 2
    for f, run in zip(fake.instances, runs):
        m = run.metrics
        assert [c[0] for c in f.calls] == [0, 10, 20] and list(m.loc[m.forecast_p.notna(), "step"]) == [0, 10, 20]
        for step, val_loss, norm in f.calls:
            row = m[m.step == step].iloc[0]
            assert val_loss == row.val_loss and norm == pytest.approx(row.weight_norm, rel=1e-5)
    assert fake.instances[0].calls[-1][2] != pytest.approx(fake.instances[1].calls[-1][2])


@pytest.mark.slow
def test_cli_no_forecast_and_stop_hopeless_without_it(tmp_path):
    out = tmp_path / "r"
    args = ["--op", "x+y", "--p", "7", "--n-layers", "1", "--d-model", "16", "--n-heads", "2", "--d-mlp", "32",
            "--steps", "10", "--eval-every", "5", "--ckpt-every", "5", "--device", "cpu", "--no-progress"]
    r = subprocess.run([sys.executable, "-m", "grokscope.cli", "train", *args, "--out", str(out), "--no-forecast",
                        "--stop-hopeless", "0.2"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "needs the live forecast" in r.stderr
    assert not out.exists()  # nothing written
    r = subprocess.run([sys.executable, "-m", "grokscope.cli", "train", *args, "--out", str(out), "--no-forecast"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Run(out).metrics[FORECAST_COLUMNS].isna().all().all() and "forecast at step" not in r.stdout


# --- the hopeless stop ------------------------------------------------------------------------------------------
def test_hopeless_step_known_answers():
    nan = math.nan
    budget, level = 100, 0.1
    assert HOPELESS_PATIENCE == 3 and HOPELESS_MIN_FRACTION == 0.25
    steps = [0, 10, 20, 30, 40, 50, 60]
    assert hopeless_step(steps, [0.05] * 7, level, budget) == 30  # three in a row by 20, but not before 25 %
    assert hopeless_step(steps, [0.05, 0.05, 0.5, 0.05, 0.05, 0.05, 0.5], level, budget) == 50  # the run restarts
    assert hopeless_step(steps, [0.05, nan, 0.05, nan, 0.05, 0.2, 0.2], level, budget) == 40  # no forecast: skipped
    assert hopeless_step(steps, [0.1] * 7, level, budget) is None  # below, not at
    assert hopeless_step(steps, [0.0] * 7, 0.0, budget) is None  # off


def test_a_hopeless_run_stops_is_marked_and_stays_stopped(tmp_path, fake):
    fake.P = 0.05
    lines = []
    run = grokscope.train(tiny_config(train={"steps": 40, "stop_hopeless": 0.1}), out=tmp_path / "h", log=lines.append,
                          progress=False)
    # forecasts at 0, 10, 20: the third in a row below 0.1 comes at step 20, past 25 % of the 40-step budget
    assert run.steps[-1] == 20 and run.metrics.step.iloc[-1] == 20
    assert run_status(run.path, 40) == HOPELESS
    assert any("p_grok stayed below 0.1" in line and "step 20 of 40" in line for line in lines)
    again = grokscope.train(resume=run.path, **QUIET)  # an ended run has nothing left to do
    assert again.steps[-1] == 20
    fake.P = 0.9  # the same budget with a forecast that is not hopeless: the whole budget, status done
    full = grokscope.train(tiny_config(train={"steps": 40, "stop_hopeless": 0.1}), out=tmp_path / "f", **QUIET)
    assert full.steps[-1] == 40 and run_status(full.path, 40) == "done"


@pytest.mark.parametrize("batch", [1, 2])
def test_a_sweep_with_stop_hopeless_marks_the_runs_and_reports_the_compute_saved(tmp_path, fake, batch):
    from grokscope.sweep import SweepSpec, run_sweep, sweep_report

    fake.P = 0.05
    spec = SweepSpec.make(tiny_config().to_dict(), {"steps": 40, "stop-hopeless": 0.1}, {"seed": [0, 1]})
    sweep = run_sweep(spec, tmp_path / "sw", workers=1, batch=batch, progress=False, log=lambda *a: None)
    t = sweep.table
    assert list(t.status) == [HOPELESS, HOPELESS] and list(t.last_step) == [20, 20] and list(t.steps_saved) == [20, 20]
    page = sweep_report(sweep).read_text()
    assert "40 of 80 budgeted steps not trained (50 %)" in page and "stopped-hopeless (at 20 of 40 steps)" in page
    n = len(fake.instances)
    run_sweep(None, tmp_path / "sw", workers=1, batch=batch, progress=False, log=lambda *a: None)
    assert len(fake.instances) == n  # run again: the stopped runs are finished, nothing trains


# --- grokscope forecast -------------------------------------------------------------------------------------------
PLANTED = pd.DataFrame({"step": [0, 10, 20], "p_grok": [math.nan, 0.2, 0.93], "grok_step": [math.nan, math.nan, 7000.0],
                        "lo": [math.nan, math.nan, 6200.0], "hi": [math.nan, math.nan, 8100.0],
                        "measures": ["", "val_loss", "restricted_loss;weight_norm"], "actual_grok_step": 6900.0})


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    return Run(shutil.copytree(tiny_run.path, tmp_path / "run"))


def test_cli_forecast_prints_the_table(run_copy, monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(importlib.import_module("grokscope.forecast"), "forecast_run", lambda run, steps=None: asked.append(steps) or PLANTED)
    assert main(["forecast", str(run_copy.path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["step", "p_grok", "grok", "step", "80", "%", "interval", "measures"]
    assert out[1].split() == ["0", "–", "–", "–", "–"]
    assert out[2].split() == ["10", "0.20", "–", "–", "val_loss"]
    assert out[3].split() == ["20", "0.93", "7,000", "6,200–8,100", "restricted_loss;weight_norm"]
    assert out[4].endswith("6,900") and asked == [None]
    assert main(["forecast", str(run_copy.path), "--csv", "--steps", "10,20"]) == 0
    assert pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out)).equals(pd.read_csv(
        pd.io.common.StringIO(PLANTED.to_csv(index=False))))
    assert asked[-1] == [10, 20]


def test_cli_forecast_bad_input_is_one_line_exit_2(run_copy, tmp_path, capsys):
    for args, msg in ((["forecast", str(tmp_path / "nope")], "is not a run directory"),
                      (["forecast", str(run_copy.path), "--steps", "7"], "has no checkpoint at step 7"),
                      (["forecast", str(run_copy.path), "--steps", "x"], "--steps takes whole step numbers")):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and msg in err, err
    shutil.rmtree(run_copy.path / "ckpt")
    assert main(["forecast", str(run_copy.path)]) == 2
    assert "has no checkpoints yet" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_forecast_runs_the_shipped_forecaster(run_copy):
    """The shipped forecaster behind the command: one row per checkpoint after step 0 (at step 0 there is
    nothing to forecast from; its numbers are its own)."""
    r = subprocess.run([sys.executable, "-m", "grokscope.cli", "forecast", str(run_copy.path), "--csv"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(pd.io.common.StringIO(r.stdout))
    assert list(table.step) == [s for s in run_copy.steps if s > 0]
    assert {"step", "p_grok", "grok_step", "lo", "hi", "measures", "actual_grok_step"} <= set(table.columns)
    assert table.p_grok.dropna().between(0, 1).all()


def test_cli_forecast_save_stores_the_table_the_report_draws(run_copy, monkeypatch, capsys):
    from grokscope.figures.common import figures_on
    from grokscope.figures.inputs import load_report_run
    from grokscope.run import METRIC_COLUMNS, read_metrics

    metrics = run_copy.path / METRICS_FILE  # as a run written before the forecast columns existed
    old = read_metrics(metrics)[METRIC_COLUMNS[:-len(FORECAST_COLUMNS)]]
    metrics.write_text(old.to_csv(index=False))
    assert not figures_on("run", "forecast")[0].drawable(load_report_run(run_copy).tables)
    monkeypatch.setattr(importlib.import_module("grokscope.forecast"), "forecast_run", lambda run, steps=None: PLANTED)
    assert main(["forecast", str(run_copy.path), "--save"]) == 0
    assert "grokscope: forecast table -> " in capsys.readouterr().out
    tables = load_report_run(run_copy).tables
    assert tables.results["forecast"]["p_grok"].tolist()[1:] == [0.2, 0.93]
    fig = figures_on("run", "forecast")[0].build(tables)
    assert list(fig.data[0].y) == [0.2, 0.93] and list(fig.data[0].customdata) == [10, 20]
