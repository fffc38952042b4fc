"""Flatness: eps-sharpness (a box maximum) and the top Hessian eigenvalue, on functions whose answers are known
exactly (quadratics, a flat region with tiny gradients, a convex slice of a tiny model checked by brute force
over the box's corners) and on a tiny model."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, minimize

from grokscope.analyses import flatness as fl
from grokscope.config import ModelConfig
from grokscope.errors import GrokscopeError
from grokscope.forward import answer_logits
from grokscope.model import build_model
from grokscope.tasks import make_dataset
from grokscope.loss import evaluate

torch.set_num_threads(1)


def quadratic(A, b, c=0.0):
    """f(t) = 1/2 t^T A t + b^T t + c with its gradient, float64."""
    return lambda t: (float(0.5 * t @ A @ t + b @ t + c), A @ t + b)


def box_max_diagonal(a, b, x, r):
    """Exact max over |y_i| <= r_i of the separable f(x + y): per coordinate, the ends or the interior vertex."""
    best = 0.0
    for ai, bi, xi, ri in zip(a, b, x, r):
        cands = [xi - ri, xi + ri]
        if ai < 0 and abs(-bi / ai - xi) <= ri:
            cands.append(-bi / ai)
        best += max(0.5 * ai * t * t + bi * t for t in cands)
    return best


def mixed_quadratic():
    """12 separable coordinates: 8 convex (maximum at an end) and 4 concave with their maximum inside the box."""
    rng = np.random.default_rng(0)
    n, eps = 12, 0.05
    a = np.concatenate([rng.uniform(0.5, 3, 8), rng.uniform(-3, -0.5, 4)])
    b, x = rng.normal(size=n), rng.normal(size=n)
    r = eps * (np.abs(x) + 1)
    x[8:] = -b[8:] / a[8:] + 0.3 * r[8:]
    r = eps * (np.abs(x) + 1)
    return quadratic(np.diag(a), b), x, eps, box_max_diagonal(a, b, x, r), r


@pytest.mark.parametrize("direction", ["sign", "scaled"])
def test_box_maximum_of_a_diagonal_quadratic_with_interior_maxima(direction):
    f, x, eps, fmax, r = mixed_quadratic()
    f0 = f(x)[0]
    res = fl.eps_sharpness(f, x, eps, budget=60, direction=direction, polish=20)
    assert res["fmax"] == pytest.approx(fmax, rel=1e-9, abs=1e-9)
    assert res["sharpness"] == pytest.approx(100 * (fmax - f0) / (1 + f0), rel=1e-7)
    assert np.all(np.abs(res["y"]) <= r * (1 + 1e-12))
    assert res["nfev"] <= 80
    # sign steps end (alpha below min_step); scaled steps still creep towards the interior maxima when the
    # budget runs out (polish then finishes the job): the row says so
    assert res["climbing"] == (direction == "scaled")
    plain = fl.eps_sharpness(f, x, eps, budget=60, direction=direction)  # no polish: close, never above
    assert fmax - 1e-3 * (fmax - f0) <= plain["fmax"] <= fmax + 1e-12


def test_sign_corner_is_exact_for_a_convex_diagonal_quadratic():
    a = np.array([1.0, 2.0, 0.5, 4.0])
    b = np.array([0.3, -1.0, 0.0, 2.0])
    x = np.array([0.2, 0.1, -0.7, -0.4])
    f = quadratic(np.diag(a), b)
    r = 1e-3 * (np.abs(x) + 1)
    res = fl.eps_sharpness(f, x, 1e-3, budget=1, starts=["sign"])
    assert res["nfev"] == 1 and res["best_start"] == "sign"
    assert res["fmax"] == pytest.approx(box_max_diagonal(a, b, x, r), rel=1e-12)
    assert np.allclose(np.abs(res["y"]), r)  # a corner


def flat_rank_one(n=40, seed=3):
    """A flat minimum like a grokked network's: f(x) = 1e-7, gradient ~1e-7, curvature along one direction w.

    f(x + y) = f0 + b.y + s/2 ((w.y)^2 + sum_i d_i y_i^2), convex, so the box maximum is at a corner; the
    quadratic part is largest at y = +-r sign(w), and the tiny b cannot move it elsewhere, so
    max = f0 + s/2 (W^2 + sum d r^2) + |b.(r sign w)| with W = sum |w_i| r_i. b's signs are random: the
    gradient-sign corner is a poor one.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    w = rng.choice([-1.0, 1.0], size=n) * rng.uniform(0.5, 1.0, size=n)
    d = rng.uniform(0.0, 0.1, size=n)
    b = 1e-7 * rng.normal(size=n) / np.sqrt(n)
    s, f0, eps = 2e-5, 1e-7, 1e-3
    r = eps * (np.abs(x) + 1)

    def f(t):
        y = t - x
        return f0 + b @ y + 0.5 * s * ((w @ y) ** 2 + d @ (y * y)), b + s * ((w @ y) * w + d * y)

    W = np.abs(w) @ r
    fmax = f0 + 0.5 * s * (W ** 2 + d @ (r * r)) + abs(b @ (r * np.sign(w)))
    assert fmax == pytest.approx(max(f(x + r * np.sign(w))[0], f(x - r * np.sign(w))[0]), rel=1e-12)
    return f, x, eps, r, fmax


def test_flat_region_with_tiny_gradients_reaches_the_closed_form_maximum():
    f, x, eps, r, fmax = flat_rank_one()
    f0, g0 = f(x)
    assert np.abs(g0).max() < 1e-6 and np.abs(f(x + r)[1]).max() < 1e-5  # tiny gradients everywhere in the box
    # the failure this replaces: scipy's L-BFGS-B from the gradient-sign corner stops at once (PGTOL)
    seen = []

    def neg(y):
        v, g = f(x + y)
        seen.append(v)
        return -v, -g

    minimize(neg, r * np.sign(g0), jac=True, method="L-BFGS-B", bounds=Bounds(-r, r),
             options={"maxiter": 10, "maxfun": 25})
    assert len(seen) <= 2 and max(seen) - f0 < 0.5 * (fmax - f0)
    res = fl.eps_sharpness(f, x, eps, budget=20)
    assert res["fmax"] == pytest.approx(fmax, rel=1e-12)
    assert res["sharpness"] == pytest.approx(100 * (fmax - f0) / (1 + f0), rel=1e-9)
    assert not res["climbing"] and res["nfev"] <= 20


def test_value_never_decreases_as_the_budget_grows():
    f, x, eps, r, fmax = flat_rank_one(n=30, seed=5)
    q, xq, eq, fq, _ = mixed_quadratic()
    for func, x0, e in ((f, x, eps), (q, xq, eq)):
        full = fl.eps_sharpness(func, x0, e, budget=40, direction="scaled")
        values = [fl.eps_sharpness(func, x0, e, budget=k, direction="scaled")["fmax"] for k in range(0, 41)]
        assert all(b >= a for a, b in zip(values, values[1:]))
        assert values[-1] == full["fmax"] and values[0] == func(x0)[0]
        assert full["history"] == sorted(full["history"])  # the best value after each evaluation
        assert values == [func(x0)[0]] + full["history"] + [full["fmax"]] * (40 - len(full["history"]))


def test_still_climbing_is_reported_when_the_budget_runs_out():
    """A concave quadratic whose maximum is deep inside the box: small steps from the centre climb for long."""
    n = 6
    c = np.full(n, 0.9)  # the maximiser, 90 % of the way to the box's edge (r = 1)
    f = lambda t: (float(-np.sum((t - c) ** 2)), -2 * (t - c))
    x0, r = np.zeros(n), np.ones(n)
    short = fl.box_maximise(f, x0, r, budget=3, starts=["zero"], step=1 / 16, min_step=1 / 256)
    assert short["climbing"] and short["ended"]["zero"] == "budget"
    long = fl.box_maximise(f, x0, r, budget=200, starts=["zero"], step=1 / 16, min_step=1 / 256)
    assert not long["climbing"] and long["ended"]["zero"] == "step" and long["nfev"] < 200
    assert long["fmax"] > -n * (2 / 256) ** 2 and long["fmax"] > short["fmax"]


@pytest.mark.parametrize("start", ["sign", "random", "zero", "antisign"])
def test_maximises_not_minimises_at_a_minimum(start):
    """At the minimiser of a convex quadratic every perturbation raises f: phi > 0 (a minimiser gives 0)."""
    rng = np.random.default_rng(1)
    M = rng.normal(size=(6, 6))
    A = M @ M.T + np.eye(6)
    x = rng.normal(size=6)
    b = -A @ x  # x is the minimiser
    f = quadratic(A, b, 0.5 * x @ A @ x + 0.1)  # f(x) = 0.1, like a training loss
    r = 1e-2 * (np.abs(x) + 1)
    res = fl.eps_sharpness(f, x, 1e-2, budget=20, starts=[start])
    corners = max(f(x + r * np.array(s))[0] for s in itertools.product([-1, 1], repeat=6))  # convex: max at a vertex
    assert res["sharpness"] > 0
    assert f(x)[0] < res["fmax"] <= corners + 1e-12
    # the global maximum of a convex function over a box is NP-hard; the climb ends at a KKT corner: every
    # gradient sign points out of the box
    y = res["y"]
    assert np.allclose(np.abs(y), r)
    assert np.all(np.sign(f(x + y)[1]) == np.sign(y))


def test_bad_arguments_are_one_clear_error():
    f = quadratic(np.eye(2), np.zeros(2))
    for kw in ({"starts": ["up"]}, {"starts": []}, {"direction": "newton"}, {"budget": -1}, {"probe": 0},
               {"subspace": 3}):
        with pytest.raises(GrokscopeError):
            fl.eps_sharpness(f, np.ones(2), 1e-3, **kw)
    with pytest.raises(GrokscopeError):
        fl.eps_sharpness(f, np.ones(2), 0.0)


@pytest.mark.parametrize("eigs,top", [([5.0, 2.0, 1.0, -0.5, 0.1], 5.0), ([-6.0, 4.0, 1.0, 0.5], 4.0)])
def test_power_iteration_top_eigenvalue(eigs, top):
    n = len(eigs)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    A = Q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ Q.T
    res = fl.top_eigenvalue(lambda v: A @ v, torch.ones(n, dtype=torch.float64), iters=500, tol=1e-12)
    assert res["value"] == pytest.approx(top, rel=1e-6) and res["converged"]


def tiny_model_and_data(seed=0, p=5, frac=0.6):
    data = make_dataset("x+y", p, frac)
    model = build_model(ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, act_fn="gelu"),
                        data.d_vocab, data.n_elements, seed=seed)
    return model, data


def unembed_bias_only(p=11, seed=0):
    """A tiny float64 model whose only trainable parameter is the unembedding bias b_U (p values).

    The logits are b_U plus a function of the frozen rest, so the training cross-entropy is convex in b_U
    and its maximum over a box lies at one of the box's corners: brute force over them gives it exactly.
    """
    model, data = tiny_model_and_data(seed, p=p, frac=0.6)
    model = model.double()
    for name, q in model.named_parameters():
        q.requires_grad_(name == "unembed.b_U")
    with torch.no_grad():
        model.unembed.b_U.copy_(torch.randn(p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
        logits = answer_logits(model, data.train_x)  # (N, p), b_U included
    x0 = model.unembed.b_U.detach().clone().numpy()
    return model, data, logits, x0


def brute_force_corners(logits, targets, ys):
    """The training loss with the logits shifted by each row of ``ys`` (corners, (k, p)): (k,)."""
    shifted = logits[None] + torch.as_tensor(ys)[:, None, :]  # (k, N, p)
    lp = torch.log_softmax(shifted, dim=-1)
    return -lp.gather(2, targets[None, :, None].expand(len(ys), -1, 1)).squeeze(-1).mean(1).numpy()


def test_tiny_model_full_space_matches_brute_force_over_the_corners():
    model, data, logits, x0 = unembed_bias_only()
    eps = 0.05
    r = eps * (np.abs(x0) + 1)
    corners = np.array(list(itertools.product([-1.0, 1.0], repeat=len(x0)))) * r  # (2048, 11)
    values = brute_force_corners(logits, data.train_y, corners)
    row = fl.sharpness(model, data, eps=[eps], budget=30)
    f0 = float(F.cross_entropy(logits, data.train_y))
    assert row["train_loss"] == pytest.approx(f0, rel=1e-12)
    assert row["loss_max_0.05"] == pytest.approx(values.max(), rel=1e-10)
    assert row["sharpness_0.05"] == pytest.approx(100 * (values.max() - f0) / (1 + f0), rel=1e-8)
    assert row["evals_0.05"] <= 30 and row["climbing_0.05"] in (True, False)
    assert np.sort(values)[-2] < values.max()  # one corner is the maximum: the test can tell corners apart
    assert torch.equal(model.unembed.b_U.detach(), torch.as_tensor(x0))  # restored


def test_tiny_model_random_subspace_matches_brute_force_over_the_corners():
    """Keskar's subspace box: |z_i| <= eps (|(A+ x)_i| + 1), y = A z; still convex in z, so a corner of z."""
    model, data, logits, x0 = unembed_bias_only(seed=1)
    eps, m = 0.05, 6
    A, A_plus = fl.random_subspace(len(x0), m, seed=3)
    assert np.allclose(np.linalg.norm(A, axis=0), 1) and np.allclose(A_plus @ A, np.eye(m))
    r = eps * (np.abs(A_plus @ x0) + 1)
    zs = np.array(list(itertools.product([-1.0, 1.0], repeat=m))) * r  # (64, 6)
    values = brute_force_corners(logits, data.train_y, zs @ A.T)
    row = fl.sharpness(model, data, eps=[eps], subspace=m, seed=3, budget=20)
    assert row["loss_max_0.05"] == pytest.approx(values.max(), rel=1e-10)
    full = fl.sharpness(model, data, eps=[eps], budget=20)
    assert full["loss_max_0.05"] > row["loss_max_0.05"]  # 6 directions of 11 reach less high


def test_hessian_top_eigenvalue_matches_dense_hessian():
    model, data = tiny_model_and_data()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
    theta0 = torch.cat([p.detach().flatten() for p in params]).double()
    assert 300 < len(theta0) < 800
    model64 = model.double()

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model64

        def forward(self, x):
            return answer_logits(self.m, x)

    wrap = Wrap()

    def f(theta):
        ps = {f"m.{n}": t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        logits = torch.func.functional_call(wrap, ps, (data.train_x,))
        return F.cross_entropy(logits, data.train_y)

    H = torch.autograd.functional.hessian(f, theta0, vectorize=True)  # (n, n) dense
    top = torch.linalg.eigvalsh(H).max().item()
    loss = fl.TrainLoss(model64, data.train_x, data.train_y)
    v0 = torch.randn(len(theta0), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = fl.top_eigenvalue(loss.hvp, v0, iters=1000, tol=1e-10)
    assert res["value"] == pytest.approx(top, rel=1e-5)
    assert torch.allclose(loss.hvp(v0), H @ v0, rtol=1e-8, atol=1e-10)


def test_loss_is_float64_from_the_logits_on(monkeypatch):
    """A float32 model fitted so well that a float32 cross-entropy rounds to 0: f(x) and its gradient must not."""
    data = make_dataset("x+y", 5, 0.6)
    V = data.n_elements

    class Planted(torch.nn.Module):  # logits = s * onehot(answer): the answer's logit s above the others
        def __init__(self):
            super().__init__()
            self.s = torch.nn.Parameter(torch.tensor([20.0]))

        def forward(self, x):
            return self.s * F.one_hot((x[:, 0] + x[:, 2]) % V, V).float()

    monkeypatch.setattr(fl, "answer_logits", lambda model, x: model(x))
    model = Planted()
    assert F.cross_entropy(model(data.train_x), data.train_y).item() == 0.0  # float32 rounds it away
    loss = fl.TrainLoss(model, data.train_x, data.train_y)
    f, g = loss.value_and_grad(np.array([20.0]))
    exact = np.log1p((V - 1) * np.exp(-20.0))  # 8.2e-9
    assert f == pytest.approx(exact, rel=1e-6)
    assert g[0] == pytest.approx(-(V - 1) * np.exp(-20.0) / (1 + (V - 1) * np.exp(-20.0)), rel=1e-5)
    res = fl.eps_sharpness(loss.value_and_grad, np.array([20.0]), 1e-3, budget=5)
    assert res["fmax"] == pytest.approx(np.log1p((V - 1) * np.exp(-20.0 * (1 - 1e-3 * 21 / 20))), rel=1e-5)


def test_analyses_on_a_tiny_model_leave_the_weights_alone():
    model, data = tiny_model_and_data()
    before = [p.detach().clone() for p in model.parameters()]
    row = fl.sharpness(model, data, budget=6)
    assert set(row) == {"train_loss"} | {f"{k}_{e}" for k in ("sharpness", "loss_max", "evals", "climbing")
                                          for e in ("0.001", "0.0005")}
    assert row["train_loss"] == pytest.approx(evaluate(model, data.train_x, data.train_y)[0], rel=1e-5)
    assert 0 < row["sharpness_0.0005"] < row["sharpness_0.001"]
    assert row["loss_max_0.001"] > row["train_loss"] and row["evals_0.001"] <= 6
    h = fl.hessian(model, data, iters=5)
    assert h["hessian_iters"] <= 10 and np.isfinite(h["hessian_top"])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_registered():
    from grokscope.analyses import get_analysis

    for name in ("sharpness", "hessian"):
        a = get_analysis(name)
        assert a.expensive and a.default_steps == "few"
    p = get_analysis("sharpness").params
    assert p["eps"] == (1e-3, 5e-4) and p["subspace"] == 0 and p["budget"] == 20  # the signature's defaults


def test_the_report_says_when_the_ascent_was_still_climbing():
    import pandas as pd

    from grokscope.figures.curves import climbing_note, fig_flatness

    rows = pd.DataFrame({"step": [10, 20, 30], "train_loss": 0.1, "sharpness_0.001": [5.0, 3.0, 1.0],
                         "loss_max_0.001": 0.2, "evals_0.001": 20, "climbing_0.001": [True, False, True]})
    note = climbing_note(rows)
    assert "ε = 0.001 at 2 of 3 checkpoints" in note and "lower bound" in note
    assert any("still rising" in a.text for a in fig_flatness(rows).layout.annotations)
    rows["climbing_0.001"] = False
    assert climbing_note(rows) == "" and not any("still rising" in (a.text or "")
                                                  for a in fig_flatness(rows).layout.annotations)
