"""The float64 loss, the softmax-collapse fraction, stop_margin, and one loss for training, flatness and LLC."""
import json
import math
import sys

import pytest
import torch

import grokscope
from grokscope.config import RunConfig
from grokscope.errors import GrokscopeError
from grokscope.loss import answer_loss, collapsed, evaluate
from grokscope.run import first_reached, load_run, stop_step

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
    monkeypatch.setattr(sys.modules["grokscope.loss"], "answer_logits", lambda model, x: logits[: len(x)])
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


# --- one loss: the flatness and LLC of a StableMax run measure its StableMax loss -----------------------------
class PlantedLogits(torch.nn.Module):
    """A "model" whose answer logits for equation i are the trainable row ``w[x_i]``."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[0.0, 1.0], [2.0, -1.0]]))

    def forward(self, x):
        return self.w[x[:, 0]]


# row 0: logits (0, 1), answer 1; row 1: logits (2, -1), answer 0. StableMax's s: s(0) = 1, s(1) = 2, s(2) = 3,
# s(-1) = 1/2, so p = 2/3 and 3/3.5: the mean loss is (log 3/2 + log 7/6) / 2 = log(7/4) / 2. Softmax's differs.
STABLEMAX_LOSS = math.log(1.75) / 2
SOFTMAX_LOSS = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3))) / 2


def planted(monkeypatch):
    import types

    from grokscope.analyses import flatness, llc

    for module in (flatness, llc):
        monkeypatch.setattr(module, "answer_logits", lambda model, x, rows=None: model(x))
    monkeypatch.setattr(llc, "answer_rows", lambda model, x: None)  # the LLC's full-batch bookkeeping (unused here)
    data = types.SimpleNamespace(train_x=torch.tensor([[0], [1]]), train_y=torch.tensor([1, 0]))
    return PlantedLogits(), data


def test_sharpness_hessian_and_llc_measure_the_stablemax_loss_of_a_stablemax_run(monkeypatch):
    from grokscope.analyses.flatness import TrainLoss, hessian, sharpness
    from grokscope.analyses.llc import transformer_row_loss

    model, data = planted(monkeypatch)
    assert float(answer_loss(model(data.train_x).detach(), data.train_y, softmax="stablemax")) == pytest.approx(STABLEMAX_LOSS, rel=1e-12)
    for softmax, expected in (("stablemax", STABLEMAX_LOSS), ("softmax", SOFTMAX_LOSS)):
        assert TrainLoss(model, data.train_x, data.train_y, softmax).value() == pytest.approx(expected, rel=1e-12)
        assert sharpness(model, data, eps=[1e-3], budget=1, starts=["sign"], softmax=softmax)["train_loss"] == \
            pytest.approx(expected, rel=1e-12)
        assert hessian(model, data, iters=2, softmax=softmax)["train_loss"] == pytest.approx(expected, rel=1e-12)
        rows = transformer_row_loss(data, softmax)(model, torch.arange(2))
        assert float(rows.detach().double().mean()) == pytest.approx(expected, rel=1e-6)  # the LLC's row losses (float32)
    assert abs(STABLEMAX_LOSS - SOFTMAX_LOSS) > 0.05  # the two losses are told apart
    assert hessian(model, data, iters=2)["train_loss"] == pytest.approx(SOFTMAX_LOSS, rel=1e-12)  # one model: softmax


def test_over_a_run_the_loss_analyses_take_the_runs_own_softmax():
    import types

    from grokscope.analyses.base import REGISTRY

    for softmax in ("softmax", "stablemax"):
        cfg = RunConfig()
        cfg.train.softmax = softmax
        run = types.SimpleNamespace(config=cfg)
        for name in ("sharpness", "hessian", "llc"):
            a = REGISTRY[name]
            assert a.params["softmax"] is None
            assert a.resolve(run, dict(a.params))["softmax"] == softmax
            assert a.resolve(run, {**a.params, "softmax": "softmax"})["softmax"] == "softmax"  # asked for: kept


def test_a_stablemax_runs_hessian_loss_is_the_loss_it_trained_on(tmp_path):
    """End to end: ``analyze`` of a StableMax run's checkpoint gives the training loss its metrics recorded
    (evaluated in float64 with StableMax while it trained), not softmax cross-entropy."""
    from grokscope.analyze import analyze

    cfg = tiny(train={"steps": 20, "softmax": "stablemax"}, schedule={"eval_every": 20, "ckpt_every": 20})
    run = grokscope.train(cfg, out=tmp_path / "r", **QUIET)
    table = analyze(run, only="hessian", steps=[20], out=tmp_path / "a", progress=False,
                    params={"hessian": {"iters": 2}})["hessian"]
    recorded = float(run.metrics.set_index("step").loc[20, "train_loss"])
    assert float(table["train_loss"].iloc[0]) == pytest.approx(recorded, rel=1e-9)
    model, data = run.model_at(20), run.data
    from grokscope.forward import answer_logits

    with torch.no_grad():
        ce = float(answer_loss(answer_logits(model, data.train_x), data.train_y))
    assert abs(ce - recorded) > 1e-4 * recorded  # softmax's loss is 10^5 times the match's tolerance away
