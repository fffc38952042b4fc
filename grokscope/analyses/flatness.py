"""Flatness of the training loss at a checkpoint: Keskar et al. (2017) eps-sharpness, top Hessian eigenvalue.

f is the training loss: the mean cross-entropy of the answer token over the WHOLE training set (its
training labels, outliers included) as a function of the trainable parameters x (those with
``requires_grad``; frozen positions and zero biases stay fixed): ``loss.answer_loss``, the loss the run
trained on, with its softmax (``softmax``: a StableMax run's flatness is that of its StableMax loss;
over a run ``analyze`` takes the run's own). The forward pass runs in the model's dtype; the logits
are cast to float64 before the loss, so a loss of 1e-7 and its changes are not rounded away (a float32
log-softmax rounds the answer's log-probability to 0 below about 6e-8).
The model's weights are restored afterwards. ``eps_sharpness``, ``box_maximise`` and ``top_eigenvalue``
are generic over a loss closure; the tests check them on functions whose answers are known exactly.

eps-sharpness (Keskar et al. 2017, eq. 3-4), as used in Power et al. (2022), appendix A.5:
    full space:  C_eps = {y : |y_i| <= eps (|x_i| + 1)},        phi = 100 (max_{y in C_eps} f(x + y) - f(x)) / (1 + f(x));
    subspace:    C_eps = {z : |z_i| <= eps (|(A+ x)_i| + 1)},   phi = 100 (max_{z in C_eps} f(x + A z) - f(x)) / (1 + f(x)),
with A (n x m) a seeded random matrix of unit-norm Gaussian columns and A+ its pseudo-inverse: Keskar's
definition of the box in a subspace (the box bounds z, its half-widths come from the coordinates of x
in the subspace). Power et al.'s code used m = 10; ``subspace=0`` (default) is the full space (A = I).

The maximum is searched by projected gradient ascent in the box (``box_maximise``), in units of the box:
a step moves coordinate i by ``alpha * r_i * d_i`` and clips to the box, where r is the half-widths and
d = sign(gradient) (``direction="sign"``) or the gradient scaled by r and divided by its largest entry
(``"scaled"``). alpha starts at ``step`` (1: half the box's width), doubles after a step that raised f
(up to 2: the opposite corner) and halves after one that did not (the step is then not taken). A climb
ends when its step is null after clipping (a corner where every gradient sign points out of the box: a
KKT point) or alpha falls below ``min_step``. Restarts (``starts``): "sign", the corner
r * sign(grad f(x)) (the exact maximiser of the linearised loss; zero gradients get a seeded random
sign); "random", a seeded random corner; "zero", the centre with a quarter-size first step (along sign0 when the gradient is exactly 0);
"antisign", the corner opposite "sign". Each start gets ``probe`` evaluations in turn, then the climb
holding the highest f continues (the next one when it ends) until ``budget`` loss+gradient evaluations
are spent. The evaluation sequence does not depend on the budget, so the value never decreases when
the budget grows. ``polish`` > 0: that many more evaluations of scipy's L-BFGS-B, started at the best
point, on the loss rescaled to the unit box and to the rise found (its absolute tolerances then mean
something). Every point evaluated lies in the box: the largest f seen is a lower bound of the maximum
and phi reports it. ``climbing``: the budget ran out while the climb holding the best value had not
ended (it was neither at a KKT corner nor out of step sizes), so a larger budget may give a larger phi.
A climb can creep along a plateau for many evaluations and then rise again, so the last gains do not
tell whether it has finished; only an ended climb has.

We MAXIMISE. The public code of Power et al. (openai/grok, ``grok/measure.py``, ``get_sharpness``)
passes f itself to ``fmin_l_bfgs_b`` and negates f(x) and the result afterwards, so it MINIMISES f over
the box (its denominator becomes 1 - f(x)). scipy's L-BFGS-B alone does not reach the maximum either:
near a well-fitted minimum (loss ~1e-7, gradient ~1e-6) its absolute tolerances stop it after one
evaluation, and on a non-concave objective its curvature pairs are skipped and its steps stay far
smaller than the box.

Top Hessian eigenvalue: power iteration with Hessian-vector products (double backward through the
training loss), from a seeded Gaussian vector, until the Rayleigh quotient changes by less than
``tol`` (relative) between two iterations or after ``iters`` products. Power iteration finds the
eigenvalue of largest magnitude; when that one is negative, a second power iteration on H - lambda I
gives the largest algebraic eigenvalue, which is what ``hessian_top`` reports.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
from scipy.optimize import Bounds, minimize

from ..errors import GrokscopeError
from ..forward import answer_logits
from ..loss import answer_loss
from ._common import resolve_softmax
from .base import register

CHUNK = 8192
STARTS = ("sign", "random", "zero", "antisign")

Loss = Callable[[np.ndarray], "tuple[float, np.ndarray]"]


# --- generic: maximise a loss closure over a box ---------------------------------------------------------------
class _Climb:
    """One projected ascent: its point z, f and gradient there, step size (in box units) and state."""

    def __init__(self, name: str, z: np.ndarray, f: float, g: np.ndarray, alpha: float):
        self.name, self.z, self.f, self.g, self.alpha = name, z, f, g, alpha
        self.ended = ""  # "", "corner" (a KKT corner) or "step" (no rise at any step size)


class _Budget(Exception):
    pass


def _check_box_args(starts, direction: str, budget: int, polish: int, probe: int, step: float, min_step: float,
                    r: np.ndarray) -> None:
    bad = [s for s in starts if s not in STARTS]
    if bad or not starts:
        raise GrokscopeError(f"starts must be a non-empty list of {', '.join(STARTS)}; got {list(starts)!r}")
    if direction not in ("sign", "scaled"):
        raise GrokscopeError(f"direction must be 'sign' or 'scaled', got {direction!r}")
    if budget < 0 or polish < 0 or probe < 1 or not step > 0 or not 0 < min_step <= step:
        raise GrokscopeError("budget and polish must be >= 0, probe >= 1 and 0 < min_step <= step")
    if np.any(r < 0):
        raise GrokscopeError("the box's half-widths must be >= 0")


class _Ascent:
    """One ``box_maximise`` call: ``f`` on the box around ``x0``, its evaluations counted against a limit
    (``_Budget`` is raised past it), and the best point seen so far."""

    def __init__(self, f: Loss, x0: np.ndarray, r: np.ndarray, basis: np.ndarray | None, limit: int,
                 direction: str, min_step: float, f0: float):
        self.f, self.x0, self.r, self.basis = f, x0, r, basis
        self.direction, self.min_step = direction, min_step
        self.n, self.limit = 0, limit  # evaluations used, and allowed
        self.best = {"f": f0, "z": np.zeros_like(r), "start": ""}
        self.history: list[float] = []  # the best f after each evaluation

    def to_y(self, z: np.ndarray) -> np.ndarray:  # (m,) -> (n,)
        return z if self.basis is None else self.basis @ z

    def to_z(self, g: np.ndarray) -> np.ndarray:  # a gradient in parameter space -> in z
        return g if self.basis is None else self.basis.T @ g

    def evaluate(self, z: np.ndarray, who: str) -> tuple[float, np.ndarray]:
        if self.n >= self.limit:
            raise _Budget
        value, grad = self.f(self.x0 + self.to_y(z))
        value = float(value)
        self.n += 1
        if value > self.best["f"]:
            self.best.update(f=value, z=z.copy(), start=who)
        self.history.append(self.best["f"])
        return value, self.to_z(np.asarray(grad, dtype=np.float64))

    def direction_of(self, g: np.ndarray) -> np.ndarray:
        if self.direction == "sign":
            return np.sign(g)
        s = self.r * g
        top = np.abs(s).max()
        return s / top if top > 0 else s

    def advance(self, c: _Climb) -> None:
        """One evaluation of climb ``c`` (none when its step is null: it ends at a corner)."""
        r = self.r
        z = np.clip(c.z + c.alpha * r * self.direction_of(c.g), -r, r)
        if np.array_equal(z, c.z):
            c.ended = "corner"
            return
        value, grad = self.evaluate(z, c.name)
        if value > c.f:
            c.z, c.f, c.g = z, value, grad
            c.alpha = min(2.0 * c.alpha, 2.0)
        else:
            c.alpha /= 2
            if c.alpha < self.min_step:
                c.ended = "step"

    def climb(self, starts, probe: int, step: float, f0: float, g0z: np.ndarray,
              signs: dict[str, np.ndarray]) -> tuple[list[_Climb], bool]:
        """Phase 1: each start in turn for ``probe`` evaluations; phase 2: the climb with the highest f goes
        on, until every climb has ended or the budget is spent. Returns the climbs, and whether the budget
        ran out."""
        climbs: list[_Climb] = []
        try:
            for name in starts:
                n_before = self.n
                if name == "zero":  # from x0 itself, along its gradient (at an exact minimum: the sign start's)
                    c = _Climb(name, np.zeros_like(self.r), f0, g0z if np.any(g0z) else signs["sign"], step / 4)
                else:  # from a corner of the box
                    z = self.r * signs[name]
                    value, grad = self.evaluate(z, name)
                    c = _Climb(name, z, value, grad, step)
                climbs.append(c)
                while not c.ended and self.n - n_before < probe:
                    self.advance(c)
            while True:
                live = [c for c in climbs if not c.ended]
                if not live:
                    return climbs, False
                self.advance(max(live, key=lambda c: c.f))
        except _Budget:
            return climbs, True

    def polish(self, n: int, f0: float) -> None:
        """``n`` more evaluations for L-BFGS-B from the best point, in u = z / r (box and loss of order 1)."""
        self.limit = self.n + n
        rise = self.best["f"] - f0
        scale = rise if rise > 0 else max(abs(f0), 1e-30)
        r = self.r
        safe = np.where(r > 0, r, 1.0)

        def neg(u):
            value, grad = self.evaluate(u * r, "polish")
            return -(value - f0) / scale, -(grad * r) / scale

        try:
            minimize(neg, self.best["z"] / safe, jac=True, method="L-BFGS-B", bounds=Bounds(-1.0, 1.0),
                     options={"maxiter": n, "maxfun": n, "ftol": 0.0, "gtol": 0.0})
        except _Budget:
            pass


def box_maximise(f: Loss, x0: np.ndarray, r: np.ndarray, basis: np.ndarray | None = None, budget: int = 20,
                 starts=("sign", "random", "zero"), probe: int = 3, direction: str = "sign", step: float = 1.0,
                 min_step: float = 1 / 64, polish: int = 0, seed: int = 0,
                 f0g0: tuple[float, np.ndarray] | None = None) -> dict:
    """Maximise ``f(x0 + basis @ z)`` (``basis`` None: ``f(x0 + z)``) over the box |z_i| <= r_i.

    ``f``: theta -> (value, gradient), float64 numpy. ``budget``: loss+gradient evaluations of the
    ascent; ``polish``: more of them for L-BFGS-B; ``f0g0``: f(x0) and its gradient when known (not
    counted). Returns ``f0``, ``fmax`` (the largest f seen), ``z`` and ``y`` (the perturbation in
    parameter space) where it was seen, ``nfev`` (evaluations used), ``climbing``, ``best_start``,
    ``history`` (the best f after each evaluation) and ``ended`` (start -> how its climb ended).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    _check_box_args(starts, direction, budget, polish, probe, step, min_step, r)
    rng = np.random.default_rng(seed)
    f0, g0 = f0g0 if f0g0 is not None else f(x0)
    f0 = float(f0)
    a = _Ascent(f, x0, r, basis, budget, direction, min_step, f0)
    g0z = a.to_z(np.asarray(g0, dtype=np.float64))
    sign0 = np.where(g0z != 0, np.sign(g0z), rng.choice([-1.0, 1.0], size=r.shape))
    signs = {"sign": sign0, "antisign": -sign0, "random": rng.choice([-1.0, 1.0], size=r.shape)}
    climbs, out_of_budget = a.climb(starts, probe, step, f0, g0z, signs)
    top = max(climbs, key=lambda c: c.f) if climbs else None
    climbing = bool(out_of_budget and top is not None and not top.ended)
    if polish:
        a.polish(polish, f0)
    best = a.best
    return {"f0": f0, "fmax": best["f"], "z": best["z"], "y": a.to_y(best["z"]), "nfev": a.n,
            "climbing": climbing, "best_start": best["start"], "history": a.history,
            "ended": {c.name: c.ended or ("budget" if out_of_budget else "") for c in climbs}}


def random_subspace(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keskar's A (n x m): seeded Gaussian columns of unit norm, and its pseudo-inverse A+ (m x n)."""
    if not 1 <= m <= n:
        raise GrokscopeError(f"the subspace dimension must be between 1 and the number of parameters ({n}), got {m}")
    A = np.random.default_rng([seed, 1]).standard_normal((n, m))
    A /= np.linalg.norm(A, axis=0)
    return A, np.linalg.solve(A.T @ A, A.T)


def eps_sharpness(f: Loss, x0: np.ndarray, eps: float = 1e-3, subspace: int = 0, seed: int = 0,
                  f0g0: tuple[float, np.ndarray] | None = None, **search) -> dict:
    """Keskar eps-sharpness of ``f`` (theta -> (value, gradient), float64) at ``x0``.

    ``subspace``: 0 for the full space, m for a seeded random m-dimensional subspace (Keskar's A).
    ``search``: the keyword arguments of ``box_maximise`` (budget, starts, probe, direction, step,
    min_step, polish). Returns ``box_maximise``'s dict plus ``sharpness`` (phi) and ``r`` (the box).
    """
    if not eps > 0:
        raise GrokscopeError(f"eps must be > 0, got {eps!r}")
    x0 = np.asarray(x0, dtype=np.float64)
    if subspace:
        A, A_plus = random_subspace(len(x0), int(subspace), seed)
        r = eps * (np.abs(A_plus @ x0) + 1)  # (m,)
    else:
        A, r = None, eps * (np.abs(x0) + 1)  # (n,)
    res = box_maximise(f, x0, r, A, seed=seed, f0g0=f0g0, **search)
    res["sharpness"] = 100.0 * (res["fmax"] - res["f0"]) / (1.0 + res["f0"])
    res["r"] = r
    return res


def _power(op: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, iters: int, tol: float):
    v = v / v.norm()
    lam = float("nan")
    for i in range(1, max(1, iters) + 1):
        w = op(v)
        new = float(torch.dot(v.double(), w.double()))  # Rayleigh quotient (v has norm 1)
        norm = w.norm()
        if norm == 0:
            return 0.0, i, True
        v = w / norm
        if abs(new - lam) <= tol * abs(new):
            return new, i, True
        lam = new
    return lam, max(1, iters), False


def top_eigenvalue(hvp: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, iters: int = 30,
                   tol: float = 1e-3) -> dict:
    """Largest algebraic eigenvalue of the symmetric operator ``hvp`` by power iteration from ``v0``.

    Returns ``value``, ``iters`` (products used) and ``converged`` (the tolerance was met).
    """
    lam, n, ok = _power(hvp, v0, iters, tol)
    if lam < 0:  # the dominant eigenvalue is the most negative one: shift it to zero
        mu, n2, ok = _power(lambda v: hvp(v) - lam * v, v0, iters, tol)
        lam, n = lam + mu, n + n2
    return {"value": lam, "iters": n, "converged": ok}


# --- the model's training loss as a closure -------------------------------------------------------------
class TrainLoss:
    """Mean training loss of ``model`` (``answer_loss`` under ``softmax``, float64 from the logits on) as a
    function of its flat trainable parameters."""

    def __init__(self, model, x: torch.Tensor, y: torch.Tensor, softmax: str = "softmax"):
        self.model = model
        self.softmax = softmax
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise GrokscopeError("the model has no trainable parameters")
        dev = self.params[0].device
        self.x, self.y = x.to(dev), y.to(dev)
        self.x0 = torch.cat([p.detach().flatten() for p in self.params]).clone()  # (n,)
        self.evals = 0

    def set(self, theta: torch.Tensor) -> None:
        with torch.no_grad():
            i = 0
            for p in self.params:
                p.copy_(theta[i:i + p.numel()].view_as(p))
                i += p.numel()

    @contextmanager
    def restoring(self):
        try:
            yield self
        finally:
            self.set(self.x0)

    def _chunks(self):
        N = len(self.y)
        for i in range(0, N, CHUNK):
            logits = answer_logits(self.model, self.x[i:i + CHUNK])  # (chunk, d_vocab_out)
            yield answer_loss(logits, self.y[i:i + CHUNK], torch.float64, "sum", self.softmax) / N

    def value(self) -> float:
        """f at the current parameters."""
        with torch.no_grad():
            return sum(t.item() for t in self._chunks())

    def value_and_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """f and its gradient at ``theta`` (float64 numpy in and out)."""
        self.set(torch.as_tensor(theta, dtype=self.x0.dtype, device=self.x0.device))
        self.evals += 1
        total, grad = 0.0, None
        with torch.enable_grad():
            for loss in self._chunks():
                g = torch.cat([t.flatten() for t in torch.autograd.grad(loss, self.params)])
                grad = g if grad is None else grad + g
                total += loss.item()
        return total, grad.double().cpu().numpy()

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """Hessian of f at the current parameters times ``v`` (n,), by double backward."""
        out = torch.zeros_like(self.x0)
        sizes = [p.numel() for p in self.params]
        vs = [t.view_as(p) for t, p in zip(torch.split(v.to(self.x0.dtype), sizes), self.params)]
        with torch.enable_grad():
            for loss in self._chunks():
                grads = torch.autograd.grad(loss, self.params, create_graph=True)
                dot = sum((g * u).sum() for g, u in zip(grads, vs))
                out += torch.cat([t.flatten() for t in torch.autograd.grad(dot, self.params)])
        return out


# --- the registered analyses ------------------------------------------------------------------------------
@register("sharpness", summary="Keskar et al. eps-sharpness of the training loss (a maximum: projected ascent in the box)",
          version=2, default_steps="few", expensive=True, resolve=resolve_softmax)
def sharpness(model, data, eps=(1e-3, 5e-4), subspace: int = 0, budget: int = 20, starts=("sign", "random", "zero"),
              probe: int = 3, direction: str = "sign", step: float = 1.0, polish: int = 0, seed: int = 0,
              softmax: str | None = None) -> dict:
    """One row: ``train_loss`` (f at x) and, per eps (e.g. ``0.001``): ``sharpness_0.001`` (phi),
    ``loss_max_0.001`` (the largest f found in the box), ``evals_0.001`` (loss+gradient evaluations,
    the shared one at x not counted) and ``climbing_0.001`` (the ascent was still rising when its budget
    ran out: phi is then clearly below the maximum). ``softmax``: the loss's ("softmax" or "stablemax";
    None: over a run, the run's own; on one model, "softmax")."""
    loss = TrainLoss(model, data.train_x, data.train_y, softmax or "softmax")
    out = {}
    with loss.restoring():
        x0 = loss.x0.double().cpu().numpy()
        f0g0 = loss.value_and_grad(x0)
        out["train_loss"] = f0g0[0]
        for e in ([eps] if np.isscalar(eps) else eps):
            res = eps_sharpness(loss.value_and_grad, x0, float(e), subspace, seed, f0g0, budget=budget,
                                starts=tuple(starts), probe=probe, direction=direction, step=step, polish=polish)
            key = f"{float(e):g}"
            out[f"sharpness_{key}"] = res["sharpness"]
            out[f"loss_max_{key}"] = res["fmax"]
            out[f"evals_{key}"] = res["nfev"]
            out[f"climbing_{key}"] = res["climbing"]
    return out


@register("hessian", summary="top eigenvalue of the training-loss Hessian (power iteration on HVPs)",
          version=2, default_steps="few", expensive=True, resolve=resolve_softmax)
def hessian(model, data, iters: int = 30, tol: float = 1e-3, seed: int = 0, softmax: str | None = None) -> dict:
    """One row: ``train_loss``, ``hessian_top``, ``hessian_iters``, ``hessian_converged`` (``softmax`` as
    in ``sharpness``)."""
    loss = TrainLoss(model, data.train_x, data.train_y, softmax or "softmax")
    g = torch.Generator().manual_seed(seed)
    v0 = torch.randn(len(loss.x0), generator=g, dtype=torch.float64).to(loss.x0)
    with loss.restoring():
        res = top_eigenvalue(loss.hvp, v0, iters, tol)
        f0 = loss.value()
    return {"train_loss": f0, "hessian_top": res["value"], "hessian_iters": res["iters"],
            "hessian_converged": bool(res["converged"])}


# --- Figure 7 as Power et al. measured it -------------------------------------------------------------------
# Their released code (openai/grok, grok/measure.py get_sharpness, scripts/compute_sharpness.py): 20 seeds of
# one configuration, one checkpoint per seed; Keskar's box in a random 10-dimensional subspace, eps 1e-3,
# scipy's fmin_l_bfgs_b with maxiter 10 from the centre, the loss over the training set (batches of
# min(512, ceil(N / 2)), the mean of the batch means) in eval mode. As released it hands +loss to the
# minimiser, so it finds the SMALLEST loss in the box; it never zeroes the gradient between evaluations
# (backward adds into p.grad); and it divides p.grad by the batch size after a mean-reduced loss (twice).
# ``released_code_sharpness`` reproduces that computation step for step (``literal=False`` repairs the
# gradient, not the sign); ``fig7_sharpness`` gives it beside the maximum in the subspace and in the full
# space.
FIG7_BATCH = 512  # the released code's batch: min(512, ceil(N / 2)) training equations


def released_subspace(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The released code's subspace: A+ (m x n) with rows uniform on [-1, 1] scaled to unit norm, and
    A = pinv(A+) (n x m). Their draw used numpy's unseeded global generator; ours is seeded."""
    if not 1 <= m <= n:
        raise GrokscopeError(f"the subspace dimension must be between 1 and the number of parameters ({n}), got {m}")
    A_plus = np.random.default_rng([seed, 2]).random((m, n)) * 2.0 - 1.0
    A_plus /= np.linalg.norm(A_plus, axis=1, keepdims=True)
    return np.linalg.pinv(A_plus), A_plus


def released_batches(n: int) -> list[int]:
    """The sizes of the released code's training batches for n equations: min(512, ceil(n / 2)) each, the
    last one what is left."""
    size = min(FIG7_BATCH, -(-n // 2))
    return [min(size, n - i) for i in range(0, n, size)]


class ReleasedLoss:
    """The released code's ``get_loss_and_grads`` over per-batch closures ``batch_fg(theta, j)`` -> (mean
    loss over batch j, its gradient). Returns the mean of the batch losses and, with ``literal``, the mean
    of the vectors it read from p.grad: per batch, p.grad <- (p.grad + gradient of the batch mean) / B_j,
    p.grad carried over from batch to batch and from call to call (``self.grad``, zero before the first
    call: a freshly loaded checkpoint has no gradient). ``literal=False``: the mean of the batch gradients."""

    def __init__(self, batch_fg: Callable[[np.ndarray, int], "tuple[float, np.ndarray]"], sizes: list[int],
                 literal: bool = True):
        self.batch_fg, self.sizes, self.literal = batch_fg, list(sizes), literal
        self.grad: np.ndarray | None = None
        self.calls = 0

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        self.calls += 1
        losses, grads = [], []
        for j, size in enumerate(self.sizes):
            value, g = self.batch_fg(theta, j)
            g = np.asarray(g, dtype=np.float64)
            if self.literal:
                self.grad = (g if self.grad is None else self.grad + g) / size
                g = self.grad.copy()
            losses.append(float(value))
            grads.append(g)
        return float(np.mean(losses)), np.mean(grads, axis=0)


def released_code_sharpness(f: Loss, x0: np.ndarray, eps: float = 1e-3, subspace: int = 10, maxiter: int = 10,
                            seed: int = 0) -> dict:
    """What get_sharpness computes, with ``f`` its loss closure (a ``ReleasedLoss``, or any theta ->
    (value, gradient)): f0 = f(x0); fmin, the value at the point scipy's ``fmin_l_bfgs_b`` returns when
    handed +f over the box (defaults, ``maxiter``) from the centre; phi = 100 (f0 - fmin) / (1 - f0),
    which is their (f_x - f_x0) / (1 + f_x0) with both values negated (a pole at f0 = 1, beyond it the
    sign flips; at the pole inf, as their tensors give). ``subspace`` 0: the box
    |y_i| <= eps (|x0_i| + 1) around x0 itself; m: the box |z_i| <= eps (|(A+ x0)_i| + 1) in
    ``released_subspace``. Returns ``f0``, ``fmin``, ``sharpness`` (phi), ``nfev``, ``nit``, ``warnflag``."""
    from scipy.optimize import fmin_l_bfgs_b

    if not eps > 0:
        raise GrokscopeError(f"eps must be > 0, got {eps!r}")
    x0 = np.asarray(x0, dtype=np.float64)
    f0 = float(f(x0)[0])
    if subspace:
        A, A_plus = released_subspace(len(x0), int(subspace), seed)
        r = eps * (np.abs(A_plus @ x0) + 1)

        def func(z):
            value, g = f(x0 + A @ z)
            return value, A.T @ g

        init, bounds = np.zeros(len(r)), np.stack([-r, r], 1)
    else:
        r = eps * (np.abs(x0) + 1)
        func, init, bounds = f, x0.copy(), np.stack([x0 - r, x0 + r], 1)
    _, fmin, info = fmin_l_bfgs_b(func, init, maxiter=maxiter, bounds=bounds)
    fmin = float(fmin)
    return {"f0": f0, "fmin": fmin, "sharpness": float(np.float64(100.0 * (f0 - fmin)) / np.float64(1.0 - f0)), "nfev": int(info["funcalls"]),
            "nit": int(info["nit"]), "warnflag": int(info["warnflag"])}


def released_loss(model, data, literal: bool = True, softmax: str = "softmax") -> ReleasedLoss:
    """The released code's loss closure on ``model``'s training set: its batches (``released_batches``,
    in the training set's order), each a ``TrainLoss``; ``literal=False`` repairs the gradient. It sets
    the model's weights: call it inside ``TrainLoss.restoring``."""
    sizes = released_batches(len(data.train_y))
    starts = np.cumsum([0, *sizes])
    batches = [TrainLoss(model, data.train_x[a:b], data.train_y[a:b], softmax)
               for a, b in zip(starts[:-1], starts[1:])]
    return ReleasedLoss(lambda theta, j: batches[j].value_and_grad(theta), sizes, literal)


@register("sharpness_fig7", summary="Figure 7's three sharpness measures: the maximum in a random 10-d subspace "
          "(default), in the full space, and the released code's computation (a minimum)",
          version=1, default_steps="few", expensive=True, resolve=resolve_softmax)
def sharpness_fig7(model, data, eps: float = 1e-3, subspace: int = 10, budget: int = 20, polish: int = 10,
                   full_budget: int = 20, maxiter: int = 10, seed: int = 0, softmax: str | None = None) -> dict:
    """One row, the model in eval mode, f the training loss (float64 from the logits on):
    ``sharpness_subspace``: Keskar's phi, the maximum over the box in a seeded random ``subspace``-d
    subspace (projected ascent, ``budget`` evaluations, then ``polish`` of L-BFGS-B); ``sharpness_full``:
    phi over the full-space box (``full_budget``); ``sharpness_released``: ``released_code_sharpness``
    on the released code's batches and gradient (``maxiter``); ``softmax`` as in ``sharpness``;
    ``train_loss``, ``loss_max_subspace``, ``loss_max_full``, ``loss_released`` (their f0: the mean of the batch means), ``loss_min_released``
    and the ``climbing_*`` flags of the two maxima."""
    was_training = model.training
    model.eval()
    loss = TrainLoss(model, data.train_x, data.train_y, softmax or "softmax")
    try:
        with loss.restoring():
            x0 = loss.x0.double().cpu().numpy()
            f0g0 = loss.value_and_grad(x0)
            sub = eps_sharpness(loss.value_and_grad, x0, eps, subspace, seed, f0g0, budget=budget, polish=polish)
            full = eps_sharpness(loss.value_and_grad, x0, eps, 0, seed, f0g0, budget=full_budget)
            released = released_code_sharpness(released_loss(model, data, softmax=softmax or "softmax"), x0, eps, subspace,
                                               maxiter, seed)
    finally:
        model.train(was_training)
    return {"train_loss": f0g0[0], "sharpness_subspace": sub["sharpness"], "loss_max_subspace": sub["fmax"],
            "climbing_subspace": sub["climbing"], "sharpness_full": full["sharpness"], "loss_max_full": full["fmax"],
            "climbing_full": full["climbing"], "sharpness_released": released["sharpness"],
            "loss_released": released["f0"], "loss_min_released": released["fmin"]}
