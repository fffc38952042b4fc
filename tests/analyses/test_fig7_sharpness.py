"""Figure 7 as Power et al. measured it: the released code's computation (a minimum, its gradient kept and
divided twice) beside the maximum in the 10-d subspace and in the full space, on planted losses whose
box extremes are known in closed form, and the correlation interval across seeds."""
import numpy as np
import pytest
import torch

from grokscope.analyses import flatness as fl
from grokscope.config import ModelConfig
from grokscope.errors import GrokscopeError
from grokscope.figures.sweep import correlation_interval
from grokscope.model import build_model
from grokscope.tasks import make_dataset
from grokscope.loss import evaluate

torch.set_num_threads(1)
N, M, EPS = 40, 10, 1e-3


def planted(A_plus, x0, a, h, c):
    """f(theta) = c + a.z + 1/2 sum h_i z_i^2 with z = A+ (theta - x0): on the subspace x0 + A z (A+ A = I)
    it is separable in z, so its box extremes are known per coordinate."""
    def f(theta):
        z = A_plus @ (theta - x0)
        return float(c + a @ z + 0.5 * h @ (z * z)), A_plus.T @ (a + h * z)
    return f


def box_extremes(a, h, r):
    """Closed-form max and min over |z_i| <= r_i of a.z + 1/2 sum h z^2 (h >= 0: the max at the corner
    r sign(a), the min at -a/h clipped to the box)."""
    zmin = np.clip(-a / np.where(h > 0, h, np.inf), -r, r)
    zmin = np.where(h > 0, zmin, -r * np.sign(a))
    return float(np.sum(np.abs(a) * r + 0.5 * h * r * r)), float(np.sum(a * zmin + 0.5 * h * zmin * zmin))


def setup(subspace_of, seed=3, h_scale=0.0):
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=N)
    A, A_plus = subspace_of(N, M, 0)
    r = EPS * (np.abs(A_plus @ x0) + 1)
    a, h = rng.normal(size=M), h_scale * rng.uniform(0.5, 2, M)
    return x0, A_plus, r, a, h


def test_released_subspace_rows_are_unit_and_A_is_its_inverse():
    A, A_plus = fl.released_subspace(N, M, 0)
    assert np.allclose(np.linalg.norm(A_plus, axis=1), 1) and np.allclose(A_plus @ A, np.eye(M))
    assert A_plus.min() < 0 < A_plus.max() and np.abs(A_plus).max() <= 1
    with pytest.raises(GrokscopeError):
        fl.released_subspace(5, 6)


def test_released_batches_are_min_512_half_the_set():
    assert fl.released_batches(403) == [202, 201]
    assert fl.released_batches(1100) == [512, 512, 76]
    assert fl.released_batches(4656) == [512] * 9 + [48]


def test_released_gradient_is_kept_between_calls_and_divided_by_the_batch_size():
    g = {0: np.array([2.0, -4.0]), 1: np.array([6.0, 3.0])}
    loss = fl.ReleasedLoss(lambda th, j: (float(j + 1), g[j]), [2, 3])
    value, grad = loss(np.zeros(2))
    G0 = g[0] / 2
    G1 = (G0 + g[1]) / 3
    assert value == 1.5 and np.allclose(grad, (G0 + G1) / 2)
    _, grad2 = loss(np.zeros(2))  # the second call starts from what the first left in p.grad
    H0 = (G1 + g[0]) / 2
    H1 = (H0 + g[1]) / 3
    assert np.allclose(grad2, (H0 + H1) / 2) and not np.allclose(grad2, grad)
    honest = fl.ReleasedLoss(lambda th, j: (float(j + 1), g[j]), [2, 3], literal=False)
    assert np.allclose(honest(np.zeros(2))[1], (g[0] + g[1]) / 2)


@pytest.mark.parametrize("h_scale", [0.0, 3e3])  # linear: the min at the corner; convex: inside the box
def test_released_code_minimises_over_the_subspace_box(h_scale):
    x0, A_plus, r, a, h = setup(fl.released_subspace, h_scale=h_scale)
    c = 0.25
    f = planted(A_plus, x0, a, h, c)
    fmax, fmin = box_extremes(a, h, r)
    if h_scale:
        assert np.any(np.abs(a / h) < r)  # some minima lie inside the box
    one_batch = fl.ReleasedLoss(lambda th, j: f(th), [1], literal=False)  # exact gradient: scipy's L-BFGS-B finds the min
    res = fl.released_code_sharpness(one_batch, x0, EPS, M, maxiter=10)
    assert res["f0"] == c
    assert res["fmin"] == pytest.approx(c + fmin, rel=1e-6)
    assert res["sharpness"] == pytest.approx(100 * (c - (c + fmin)) / (1 - c), rel=1e-4)
    assert res["sharpness"] > 0 and fmin < 0 < fmax  # the min side: not the maximum's rise
    # literally (a gradient divided by 512 twice and kept between calls): still the min side, no lower than the min
    literal = fl.released_code_sharpness(fl.ReleasedLoss(lambda th, j: f(th), [512]), x0, EPS, M, maxiter=10)
    assert c + fmin - 1e-12 <= literal["fmin"] <= c and 0 <= literal["sharpness"] <= -100 * fmin / (1 - c) + 1e-9


def test_the_maximum_in_the_subspace_is_the_closed_form_corner():
    x0, A_plus, r, a, h = setup(fl.random_subspace, h_scale=3e3)
    c = 0.25
    f = planted(A_plus, x0, a, h, c)
    fmax, _ = box_extremes(a, h, r)
    res = fl.eps_sharpness(f, x0, EPS, subspace=M, budget=20, polish=10)
    assert res["fmax"] == pytest.approx(c + fmax, rel=1e-9)
    assert res["sharpness"] == pytest.approx(100 * fmax / (1 + c), rel=1e-6)


def test_released_full_space_box_is_around_x0():
    rng = np.random.default_rng(1)
    x0, a = rng.normal(size=6), rng.normal(size=6)
    drop = float(np.sum(np.abs(a) * 0.01 * (np.abs(x0) + 1)))  # the linear function's min: f0 - that
    for f0 in (0.5, 1.5):
        f = lambda th: (float(f0 + a @ (th - x0)), a.copy())  # noqa: E731
        res = fl.released_code_sharpness(fl.ReleasedLoss(lambda th, j: f(th), [1], literal=False), x0, 0.01, 0)
        assert res["fmin"] == pytest.approx(f0 - drop, rel=1e-9)
        # their denominator is 1 + f_x0 with f_x0 = -f(x0): above a loss of 1 the sign flips
        assert res["sharpness"] == pytest.approx(100 * drop / (1 - f0), rel=1e-9)
    with pytest.raises(GrokscopeError):
        fl.released_code_sharpness(f, x0, 0.0)


def test_fig7_measures_on_a_tiny_model_bracket_the_training_loss_and_leave_it_alone():
    data = make_dataset("x+y", 7, 0.6)
    model = build_model(ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8), data.d_vocab, data.n_elements, seed=0)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    row = fl.sharpness_fig7(model, data, budget=6, polish=3, full_budget=6, maxiter=3)
    f0 = row["train_loss"]
    assert f0 == pytest.approx(evaluate(model, data.train_x, data.train_y)[0], rel=1e-5)
    assert row["loss_max_subspace"] > f0 and row["loss_max_full"] > f0
    # theirs: the mean of the two batch means (7 and 6 equations here), not the whole set's mean
    g0 = row["loss_released"]
    assert row["loss_min_released"] < g0 and g0 == pytest.approx(f0, rel=0.2) and g0 != pytest.approx(f0, rel=1e-9)
    assert row["sharpness_subspace"] == pytest.approx(100 * (row["loss_max_subspace"] - f0) / (1 + f0))
    assert row["sharpness_released"] == pytest.approx(100 * (g0 - row["loss_min_released"]) / (1 - g0))
    # the full-space box holds far more directions than 10: a larger rise
    assert row["sharpness_full"] > row["sharpness_subspace"] > 0
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_correlation_interval_known_answers():
    x = np.arange(20.0)
    rho, lo, hi = correlation_interval(x, -x, "spearman")
    assert rho == -1 and lo == pytest.approx(-1) and hi == pytest.approx(-1)  # every resample is monotone too
    rng = np.random.default_rng(0)
    y = -x + rng.normal(scale=6, size=20)
    rho, lo, hi = correlation_interval(x, y, "pearson", n_boot=999)
    assert lo < rho < hi < 0 and rho == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert np.isnan(correlation_interval(x[:2], y[:2])[0])


def test_fig7_columns_of_the_results_table_on_a_planted_table(tmp_path):
    """The sweep's table takes the three measures at the last step analysed; ``sharpness`` is the default
    (the maximum in the subspace), which the Figure 7 scatter plots."""
    import pandas as pd

    from grokscope.sweep import folder
    from grokscope.sweep.spec import SweepSpec

    cell = SweepSpec.make(fixed={"p": 11}, grid={"seed": "0,1"}).cells()[0]
    adir = tmp_path / "analyses" / cell.name
    adir.mkdir(parents=True)
    pd.DataFrame({"step": [500, 100], "sharpness_subspace": [0.5, 9.0], "sharpness_full": [3.0, 9.0],
                  "sharpness_released": [0.01, 9.0]}).to_csv(adir / "sharpness_fig7.csv", index=False)
    row = folder.result_row(cell, tmp_path / "runs" / cell.name, "pending", adir)
    assert (row["sharpness"], row["sharpness_full"], row["sharpness_released"]) == (0.5, 3.0, 0.01)
