"""The run directory has one owner (grokscope.run): names, the schedule, the resume step, "first reached"."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from grokscope.errors import GrokscopeError
from grokscope.figures.summary import key_steps
from grokscope.files import atomic_save
from grokscope.run import (CONFIG_FILE, FORECAST_COLUMNS, METRIC_COLUMNS, METRICS_FILE, STATE_FILE, checkpoint_path, ckpt_name, first_reached,
                           resume_step, schedule, schedule_size, slug)


def metrics(val, train):
    return pd.DataFrame({"step": [0, 10, 20, 30], "val_acc": val, "train_acc": train})


def test_first_reached_counts_step0_only_when_asked():
    m = metrics([1.0, 0.5, 0.995, 0.2], [0.1, 0.99, 1.0, 1.0])
    assert first_reached(m, 0.99) == 20  # early stopping: the initial weights never count
    assert first_reached(m, 0.99, count_step0=True) == 0
    assert first_reached(m, 0.99, "train_acc") == 10
    assert first_reached(m, 1.01, count_step0=True) is None
    assert first_reached(m.iloc[0:0], 0.99) is None


def test_a_sweep_rows_steps_to_99_agree_with_the_run_report(tmp_path):
    """The sweep's table and a run's report must name the same step (step 0 included)."""
    from grokscope.sweep import SweepSpec
    from grokscope.sweep.folder import result_row

    cell = SweepSpec.make(fixed={"p": 11}, grid={"seed": "0,1"}).cells()[0]
    for i, (val, train) in enumerate([([1.0, 0.5, 0.995, 0.2], [0.1, 0.99, 1.0, 1.0]),
                                      ([0.0, 0.3, 0.6, 0.991], [0.0, 0.0, 0.2, 0.5])]):
        m = metrics(val, train)
        full = m.assign(train_loss=1.0, val_loss=1.0, lr=1e-3, weight_norm=1.0, elapsed_s=0.0, collapse=0.0,
                        **{c: float("nan") for c in FORECAST_COLUMNS})  # no live forecast made
        d = tmp_path / f"run{i}"
        d.mkdir()
        full[METRIC_COLUMNS].to_csv(d / METRICS_FILE, index=False)
        row, k = result_row(cell, d, "partial"), key_steps(m)
        assert (row["steps_to_val_99"], row["steps_to_train_99"]) == (k.val, k.train) == (
            first_reached(m, 0.99, "val_acc", count_step0=True), first_reached(m, 0.99, "train_acc", count_step0=True))
    assert (row["steps_to_val_99"], row["steps_to_train_99"]) == (30, None) and row["last_step"] == 30


def test_schedule_and_names():
    assert schedule(100, 40, 3) == [0, 1, 6, 40, 80, 100]
    assert schedule(10, 40, 0) == [0, 10]
    assert ckpt_name(1200) == "step_00001200.safetensors"
    assert checkpoint_path("runs/a", 5).as_posix() == "runs/a/ckpt/step_00000005.safetensors"
    assert [slug(v) for v in ("x/y", "x*y", 0.5, "a b", "x^2+y^2")] == ["xdivy", "xmuly", "0.5", "ab", "x^2+y^2"]


def test_schedule_size_counts_the_schedule_without_listing_it():
    for total in (1, 2, 7, 40, 99, 100, 101):
        for every in (1, 3, 10, 40, 150):
            for log_points in (0, 1, 2, 5):
                steps = schedule(total, every, log_points)
                for start in (0, 1, 5, 40, total):
                    assert schedule_size(total, every, log_points, start) == sum(1 for c in steps if c >= start), \
                        (total, every, log_points, start)
    assert schedule_size(10**12, 1000, 10) == 10**9 + 10  # a budget no list could hold, counted at once


def test_resume_step_reads_the_states_own_step(tmp_path):
    d = tmp_path / "run"
    assert resume_step(d) == 0  # no run
    d.mkdir()
    (d / CONFIG_FILE).write_text("{}")
    assert resume_step(d) == 0  # a run, no resume state yet
    atomic_save({"x": torch.zeros(2)}, d / STATE_FILE, {"step": "40"})
    assert resume_step(d) == 40
    atomic_save({"x": torch.zeros(2)}, d / STATE_FILE, {"step": "forty"})
    with pytest.raises(GrokscopeError, match="no valid step"):
        resume_step(d)
