"""The float64 loss, the softmax-collapse fraction, and stop_margin."""
import json
import math
import sys

import pytest
import torch

import grokscope
from grokscope.config import RunConfig
from grokscope.errors import GrokscopeError
from grokscope.run import first_reached, load_run, stop_step
from grokscope.train import answer_loss, collapsed, evaluate

from test_train import tiny

from conftest import QUIET


def planted_logits():
    """Three rows whose answer (token 0) leads the others by 30, 20 and 2: float32's log-softmax of
    the first two rounds to exactly 0 (e^-20 < float32's half ulp of 1), float64's does not."""
    logits = torch.zeros(3, 5)
    logits[0, 0], logits[1, 0], logits[2, 0] = 30.0, 20.0, 2.0
    return logits, torch.zeros(3, dtype=torch.long)


def test_collapse_fraction_on_planted_logits():
    logits, y = planted_logits()
    assert collapsed(logits, y).tolist() == [True, True, False]
    lp64 = torch.log_softmax(logits.double(), -1)[:, 0]
    assert (lp64 != 0).all()  # in float64 nothing has collapsed
    assert lp64[0] == pytest.approx(-4 * math.exp(-30), rel=1e-3)


def test_float64_loss_keeps_the_gradient_float32_loses():
    logits, y = planted_logits()
    grads = {}
    for dtype in (torch.float32, torch.float64):
        x = logits.clone().requires_grad_(True)
        answer_loss(x, y, dtype).backward()
        grads[dtype] = x.grad
    # float32: a collapsed row's loss is exactly 0 and so is its answer logit's gradient (p - 1 rounds
    # to 0), the pull that would keep separating the answer; float64 keeps both
    assert answer_loss(logits[:1], y[:1], torch.float32) == 0 and grads[torch.float32][0, 0] == 0
    assert answer_loss(logits[:1], y[:1], torch.float64) > 0
    assert grads[torch.float64][0, 0] == pytest.approx(-4 * math.exp(-30) / 3, rel=1e-3)
    assert (grads[torch.float64][0, 1:] > 0).all()
    assert grads[torch.float64].dtype == torch.float32  # the model's dtype: only the loss ran in float64
    assert answer_loss(logits, y, torch.float64).dtype == torch.float64


def test_evaluate_reports_the_collapse_fraction(monkeypatch):
    logits, y = planted_logits()
    monkeypatch.setattr(sys.modules["grokscope.train"], "answer_logits", lambda model, x: logits[: len(x)])
    x = torch.zeros(3, 4, dtype=torch.long)
    loss, acc, frac = evaluate(None, x, y, with_collapse=True)
    loss32, acc32 = evaluate(None, x, y, dtype=torch.float32)
    assert frac == pytest.approx(2 / 3) and acc == acc32 == 1.0
    assert loss > 0 and loss == pytest.approx(float(answer_loss(logits, y, torch.float64)), rel=1e-12)
    assert loss32 == pytest.approx(loss, rel=1e-4)


def test_loss_dtype_is_stored_validated_and_old_configs_read_as_float32(tmp_path):
    run = grokscope.train(tiny(), out=tmp_path / "r", **QUIET)
    assert run.config.train.loss_dtype == "float64"
    assert "collapse" in run.metrics.columns and run.metrics.collapse.between(0, 1).all()
    with pytest.raises(GrokscopeError, match="loss_dtype must be one of"):
        tiny(train={"loss_dtype": "float16"}).validate()
    # a config.json written before the option existed: what that run trained with, float32
    path = tmp_path / "r" / "config.json"
    d = json.loads(path.read_text())
    del d["train"]["loss_dtype"]
    path.write_text(json.dumps(d))
    assert load_run(tmp_path / "r").config.train.loss_dtype == "float32"
    assert RunConfig.from_dict(d).train.loss_dtype == "float64"  # a hand-written partial config: today's default


def test_float32_and_float64_training_differ_and_each_repeats(tmp_path):
    quiet = dict(**QUIET)
    runs = {d: grokscope.train(tiny(train={"loss_dtype": d}), out=tmp_path / d, **quiet) for d in ("float32", "float64")}
    again = grokscope.train(tiny(train={"loss_dtype": "float64"}), out=tmp_path / "again", **quiet)
    w32, w64, w64b = (r.model_at(r.steps[-1]).state_dict() for r in (runs["float32"], runs["float64"], again))
    assert any(not torch.equal(w32[k], w64[k]) for k in w64)
    assert all(torch.equal(w64[k], w64b[k]) for k in w64)


def test_stop_step_and_first_reached():
    import pandas as pd
    m = pd.DataFrame({"step": [0, 25, 50, 75, 100], "val_acc": [1.0, 0.2, 0.995, 0.5, 1.0]})
    assert first_reached(m, 0.99) == 50  # step 0 never counts
    assert first_reached(m, 1.01) is None
    assert (stop_step(50, 0.0), stop_step(50, 1.0), stop_step(75, 0.5)) == (50, 100, 113)


@pytest.mark.slow
def test_the_quick_run_stops_at_twice_its_grokking_step(grokked_run):
    m = grokked_run.metrics
    t = first_reached(m, 0.99)
    assert t is not None and int(m.step.iloc[-1]) == stop_step(t, 1.0) == 2 * t
    assert grokked_run.steps[-1] == 2 * t
