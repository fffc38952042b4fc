"""The local learning coefficient (devinterp's SGLD): known answers on planted regression models, the
diagnostics, and the analysis on a transformer checkpoint. Skipped where devinterp is not installed."""
import math

import numpy as np
import pytest
import torch

from grokscope.analyses.llc import devinterp_missing, drift, split_rhat

needs_devinterp = pytest.mark.skipif(devinterp_missing() is not None, reason="devinterp is not installed")
N = 1000


def regression(d: int, seed: int = 0):
    """y = x . w + noise, x ~ N(0, I_d); the least-squares solution (the exact minimum of the loss)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, d, generator=g)
    Y = X @ torch.randn(d, generator=g) + 0.5 * torch.randn(N, generator=g)
    return X, Y, torch.linalg.lstsq(X, Y[:, None]).solution[:, 0]


class Linear(torch.nn.Module):
    """A regular model: d parameters, learning coefficient d/2."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())

    def forward(self, x):
        return x @ self.w


class Product(torch.nn.Module):
    """y = x . (u * v): 2d parameters but only d directions change the function where every u_i v_i != 0,
    so its learning coefficient is d/2, half that of a regular model with as many parameters."""

    def __init__(self, w):
        super().__init__()
        self.u = torch.nn.Parameter(w.abs().sqrt() * w.sign())
        self.v = torch.nn.Parameter(w.abs().sqrt())

    def forward(self, x):
        return x @ (self.u * self.v)


def estimate(model, X, Y, **kw):
    from grokscope.analyses.llc import estimate_llc
    settings = dict(lr=1e-3, localization=10.0, chains=4, draws=300, burnin=100)
    settings.update(kw)
    df = estimate_llc(model, lambda m, rows: 0.5 * (m(X[rows]) - Y[rows]) ** 2, N, **settings)
    return df, df[df.kind == "estimate"].iloc[0]


@needs_devinterp
@pytest.mark.parametrize("kind,d,n_params", [("regular", 20, 20), ("redundant", 10, 20)])
@pytest.mark.slow
def test_llc_of_planted_models_is_known(kind, d, n_params):
    X, Y, w = regression(d)
    model = Linear(w) if kind == "regular" else Product(w)
    df, e = estimate(model, X, Y)
    assert e.n_params == n_params and e.n == N
    assert e.nbeta == pytest.approx(N / math.log(N)) and e.beta == pytest.approx(1 / math.log(N))
    # within the stated error (3 standard errors of the chains' mean) plus SGLD's discretisation bias
    # (about eps * n beta * h / 4 = 3.6 % here, h = E[x^2] = 1)
    lam = d / 2
    assert abs(e.llc - lam) <= 3 * e.llc_se + 0.05 * lam, (e.llc, e.llc_se)
    assert e.llc_se < 0.1 * lam  # the stated error is small enough to tell d/2 from n_params/2
    assert e.settled and e.warning == ""
    # the diagnostics: one row per chain, the loss trace of every step (burn-in included), the settings
    assert (df.kind == "chain").sum() == 4
    tr = df[df.kind == "trace"]
    assert len(tr) == 4 * (100 + 300) and tr.draw.min() == -100 and tr.draw.max() == 299
    assert (e.sgld_lr, e.localization, e.chains, e.draws, e.burnin, e.batch_size) == (1e-3, 10.0, 4, 300, 100, N)
    assert torch.equal(model.state_dict()[next(iter(model.state_dict()))],
                       (w if kind == "regular" else w.abs().sqrt() * w.sign()))  # the model is left as it was


@needs_devinterp
@pytest.mark.slow
def test_llc_off_a_minimum_warns():
    """Started away from the minimum the chains descend: the estimate is negative and the chains drift."""
    X, Y, w = regression(6)
    _, e = estimate(Linear(w + 0.3), X, Y, lr=1e-4, burnin=0, draws=200, chains=3)  # relaxes over ~140 steps
    assert e.llc < 0
    assert "negative estimate" in e.warning and "not settled" in e.warning
    assert not e.settled and e.rhat > 1.1


@needs_devinterp
@pytest.mark.slow
def test_llc_with_a_step_far_too_large_says_it_diverged():
    X, Y, w = regression(4)
    _, e = estimate(Linear(w), X, Y, lr=10.0, burnin=0, draws=20, chains=2)
    assert math.isnan(e.llc) and not e.settled and "diverged" in e.warning and e.sgld_lr == 10.0


def test_split_rhat_and_drift_on_planted_draws():
    rng = np.random.default_rng(0)
    flat = rng.normal(1.0, 0.3, size=(4, 400))
    assert split_rhat(flat) == pytest.approx(1.0, abs=0.02)
    climbing = flat + np.linspace(0, 2, 400)[None]
    assert split_rhat(climbing) > 1.5
    assert drift(np.array([1.0, 1.0, 3.0, 3.0])) == pytest.approx(1.0)  # (3 - 1) / 2
    assert abs(drift(flat[0])) < 0.1


@needs_devinterp
@pytest.mark.slow
def test_llc_analysis_on_a_transformer_checkpoint(tmp_path):
    import grokscope
    from grokscope.analyses import compute, get_analysis

    from conftest import QUIET, tiny_config

    run = grokscope.train(tiny_config(train={"steps": 40}), out=tmp_path / "r", **QUIET)
    model = run.model_at(40)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    df = compute("llc", model, run.data, chains=2, draws=20, burnin=5, lr=1e-5)
    e = df[df.kind == "estimate"].iloc[0]
    n = len(run.data.train_y)
    assert e.n == n and e.batch_size == n and e.nbeta == pytest.approx(n / math.log(n))
    assert e.n_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert np.isfinite(e.llc) and isinstance(e.warning, str)
    assert len(df[df.kind == "trace"]) == 2 * 25
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    a = get_analysis("llc")
    assert a.expensive and a.default_steps == "few"


@pytest.mark.slow
def test_the_full_batch_row_loss_is_each_rows_own_loss(tmp_path):
    """The LLC's loss of a full batch (the whole training set's forward, rows taken from it) against
    the forward of the rows as given, for a shuffled full batch, one with repeats and a part; values and
    gradients."""
    import grokscope
    from grokscope.analyses.llc import transformer_row_loss
    from grokscope.forward import answer_logits
    from grokscope.loss import answer_loss

    from conftest import QUIET, tiny_config

    run = grokscope.train(tiny_config(train={"steps": 20}), out=tmp_path / "r", **QUIET)
    model, data = run.model_at(20), run.data
    n = len(data.train_y)
    g = torch.Generator().manual_seed(0)
    row_loss = transformer_row_loss(data)
    for rows in (torch.randperm(n, generator=g), torch.randint(0, n, (n,), generator=g), torch.arange(3, n // 2)):
        got = row_loss(model, rows)
        grads = torch.autograd.grad(got.mean(), list(model.parameters()), allow_unused=True)
        want = answer_loss(answer_logits(model, data.train_x[rows]), data.train_y[rows], torch.float64, "none").float()
        wgrads = torch.autograd.grad(want.mean(), list(model.parameters()), allow_unused=True)
        assert got.shape == (len(rows),)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
        for a, b in zip(grads, wgrads):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_stacked_chains_give_each_chain_its_own_loss_and_gradient():
    """What devinterp samples: the chains' weights as rows of one parameter; each row's loss and gradient
    are those of the model at that row's weights, across steps that update the rows in place through
    ``.data`` (as devinterp's SGLD does), the views first made under no_grad (devinterp's loss at w*)."""
    import copy

    from grokscope.analyses.llc import _Chains

    X, Y, w = regression(5)
    model = Product(w)
    row_loss = lambda m, rows: 0.5 * (m(X[rows]) - Y[rows]) ** 2  # noqa: E731
    stacked = _Chains(model, 3)
    rows = torch.arange(50)
    with torch.no_grad():
        stacked.bound(0)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        stacked.w.data.add_(0.1 * torch.randn(stacked.w.shape, generator=g))
        stacked.w.grad = None
        losses = torch.stack([row_loss(stacked.bound(c), rows).mean() for c in range(3)])
        losses.sum().backward()
        for c in range(3):
            alone = copy.deepcopy(model)
            alone.u.data.copy_(stacked.w.data[c, :5])
            alone.v.data.copy_(stacked.w.data[c, 5:])
            loss = row_loss(alone, rows).mean()
            loss.backward()
            torch.testing.assert_close(losses[c], loss)
            torch.testing.assert_close(stacked.w.grad[c], torch.cat([alone.u.grad, alone.v.grad]))
    assert torch.equal(model.u.data, (w.abs().sqrt() * w.sign()))  # the caller's model is untouched
    copied = copy.deepcopy(stacked)  # devinterp samples a copy: its own weights
    assert copied.w is not stacked.w and torch.equal(copied.w, stacked.w)
    copied.w.data.zero_()
    assert float(row_loss(copied.bound(1), rows).mean().detach()) == pytest.approx(float(0.5 * (Y[:50] ** 2).mean()))
    assert stacked.w.abs().sum() > 0


def test_gc_is_frozen_only_while_sampling():
    import gc

    from grokscope.analyses.llc import _gc_frozen

    assert gc.get_freeze_count() == 0
    with _gc_frozen():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_llc_without_devinterp_is_one_clear_error(monkeypatch):
    import importlib.util

    import grokscope.analyses.llc as llc
    from grokscope.errors import GrokscopeError
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    from grokscope.analyses import get_analysis
    assert "pip install 'grokscope[llc]'" in get_analysis("llc").applies(None)
    with pytest.raises(GrokscopeError, match="devinterp"):
        llc.estimate_llc(Linear(torch.zeros(2)), lambda m, r: m(torch.zeros(len(r), 2)), 10, lr=1e-3, localization=1.0)


def test_llc_joins_the_lead_lag_table():
    """A planted run: memorised by step 200, validation loss falls at ~1000; the LLC (estimated at a few
    checkpoints, as the analysis does) rises, then falls half-way between steps 800 and 1000."""
    import pandas as pd

    from grokscope.analyses.phases import find_leadlag
    steps = list(range(0, 2001, 50))
    metrics = pd.DataFrame({"step": steps,
                            "train_loss": [3.4 if s < 200 else 1e-4 for s in steps],
                            "train_acc": [0.1 if s < 200 else 1.0 for s in steps],
                            "val_loss": [10.0 if s < 1000 else 0.01 for s in steps],
                            "val_acc": [0.05 if s < 1000 else 1.0 for s in steps],
                            "weight_norm": [20.0] * len(steps), "collapse": [0.0] * len(steps)})
    llc_steps, values = [100, 300, 500, 700, 800, 1000, 1200, 1500, 1800, 2000], [30, 60, 61, 60, 59, 12, 10, 9, 9, 9]
    table = pd.DataFrame([{"step": s, "kind": "estimate", "llc": v} for s, v in zip(llc_steps, values)]
                         + [{"step": s, "kind": "trace", "llc": float("nan"), "loss": 1.0} for s in llc_steps])
    ll = find_leadlag(metrics, {"llc": table})
    row = ll[ll.measure == "llc"].iloc[0]
    assert 800 <= row.step <= 1000, row.to_dict()
    assert "local learning coefficient" in row.description and "fell" in row.description
    assert "llc" not in find_leadlag(metrics, {}).measure.tolist()


def test_a_missing_extra_names_the_extra_and_its_install_command(tmp_path, monkeypatch):
    """Without devinterp the LLC still applies to the task: the message names the extra to install."""
    import html
    import sys

    from conftest import QUIET, tiny_config

    import grokscope
    from grokscope.analyze import analyze
    from grokscope.errors import GrokscopeError
    from grokscope.report import build_report

    monkeypatch.setitem(sys.modules, "devinterp", None)  # as if the `llc` extra were not installed
    line = "the llc analysis needs the `llc` extra (devinterp): pip install 'grokscope[llc]'"
    assert devinterp_missing() == line
    run = grokscope.train(tiny_config(train={"steps": 4}, schedule={"eval_every": 2, "ckpt_every": 2}),
                          out=tmp_path / "run", **QUIET)
    with pytest.raises(GrokscopeError) as e:
        analyze(run, only="llc", out=tmp_path / "res", progress=False)
    assert str(e.value) == line
    analyze(run, only="weight_norms", out=tmp_path / "res", progress=False)
    text = build_report(run, results=tmp_path / "res").read_text()
    assert html.escape(line) in text and "does not apply" not in text
