"""Local learning coefficient (LLC; Lau et al. 2023) at a checkpoint, by SGLD with Timaeus' ``devinterp``.

The estimate (spec section 4), with L_n the training loss (mean answer-token cross-entropy over the n
training equations), w* the checkpoint's weights and nβ = n / log n (β = 1 / log n) by default:

    λ̂ = nβ · (E_w[L_n(w)] − L_n(w*)),   w ~ exp(−nβ L_n(w) − γ/2 ‖w − w*‖²)   (localised, tempered posterior)

sampled by SGLD (``devinterp.slt.sampling.sample``): per step
Δw = ε/2 · (−nβ ∇L_m(w) − γ (w − w*)) + N(0, ε), L_m the minibatch loss. E_w is the mean minibatch loss
over the draws after ``burnin`` steps, every chain; L_n(w*) is devinterp's ``init_loss`` (the mean over
``init_batches`` minibatches at w*). devinterp's own ``compute_llc`` averages over the burn-in as well;
its figure is kept as ``llc_all_steps``. devinterp runs the chains side by side, as one chain of their
stacked weights (``_Chains``; the same chains in law, about 1.7x faster on the quick model).

The estimate depends on the step size ε (``lr``), the localisation γ, nβ and the number of draws, and
means something only when the chains have settled. The table therefore holds, besides the estimate:
- every setting (``sgld_lr``, ``localization``, ``nbeta``, ``beta``, ``n``, ``chains``, ``draws``,
  ``burnin``, ``batch_size``, ``n_params``),
- one row per chain (``kind == "chain"``: its estimate, its mean loss, its drift: the change of its
  excess loss from the first to the second half of the draws, relative to the mean excess),
- the loss trace of every chain (``kind == "trace"``: ``chain``, ``draw``, ``loss``),
- ``warning`` on the estimate row: empty when fine; otherwise why not to trust it (a negative estimate:
  the chain found lower loss than w*, so w* is not a local minimum at this temperature or ε is too
  large; chains that have not settled: the split R-hat (``rhat``) of the drawn losses above
  ``rhat_max``, 1.1 by default; a non-finite loss: ε too large). ``llc_se`` = ``llc_std`` / √chains
  is the stated error of the estimate (the chains' spread; it does not cover ε's discretisation bias,
  about +ε·nβ·h/4 relatively for a direction of curvature h, nor γ's pull).
Calibration guidance is in the README ("Local learning coefficient").

``devinterp`` is an optional extra (``pip install grokscope[llc]``); without it the analysis does not
apply and says how to install it. The model's weights are never changed (devinterp samples a copy).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import gc
import math
import shutil
import tempfile
import warnings
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..errors import GrokscopeError
from ..forward import answer_logits, answer_rows
from ._common import resolve_softmax
from .base import extra_missing, register


def devinterp_missing() -> str | None:
    """Why the LLC cannot run here (None: devinterp, from the `llc` extra, is importable)."""
    return extra_missing("llc", "llc", "devinterp")


def estimate_llc(model: torch.nn.Module, row_loss: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor], n: int, *,
                 lr: float, localization: float, nbeta: float | None = None, chains: int = 4, draws: int = 200,
                 burnin: int = 0, batch_size: int | None = None, init_batches: int = 1, seed: int = 0,
                 rhat_max: float = 1.1) -> pd.DataFrame:
    """The LLC of ``model`` at its current weights, for a loss over ``n`` rows.

    ``row_loss(model, rows)`` -> (len(rows),) the loss of each training row (indices ``rows`` into the
    training set). Generic: the tests use it on planted regression models whose learning coefficient is
    known. Returns the long table described in the module docstring.
    """
    _check_llc_args(n, lr, chains, draws, localization, burnin)
    batch = n if not batch_size else min(int(batch_size), n)
    nbeta = float(n / math.log(n)) if nbeta is None else float(nbeta)
    try:
        init_loss, trace, devinterp_llc = _sample_chains(model, row_loss, n, lr=lr, nbeta=nbeta, chains=chains,
                                                         draws=draws, burnin=burnin, batch=batch,
                                                         init_batches=init_batches, seed=seed,
                                                         localization=localization)
    except Exception as e:  # devinterp stops a chain whose loss is NaN or infinite
        if "NaN or Inf" in str(e):
            return _diverged(model, n, nbeta, lr, localization, chains, draws, burnin, batch, str(e))
        raise
    settings = _settings(model, n, nbeta, lr, localization, chains, draws, burnin, batch)
    return _llc_table(trace, init_loss, devinterp_llc, nbeta, burnin, rhat_max, settings)


def _check_llc_args(n: int, lr: float, chains: int, draws: int, localization: float, burnin: int) -> None:
    why = devinterp_missing()
    if why is not None:
        raise GrokscopeError(why)
    if n < 2:
        raise GrokscopeError(f"the LLC needs at least 2 training rows, got {n}")
    for key, value in (("lr", lr), ("chains", chains), ("draws", draws)):
        if not value > 0:
            raise GrokscopeError(f"llc: {key} must be positive, got {value}")
    if localization < 0 or burnin < 0:
        raise GrokscopeError("llc: localization and burnin must not be negative")


def _sample_chains(model, row_loss, n: int, *, lr: float, nbeta: float, chains: int, draws: int, burnin: int,
                   batch: int, init_batches: int, seed: int, localization: float) -> tuple[float, np.ndarray, float]:
    """SGLD chains through devinterp. Returns the loss at the checkpoint, the (chain, step) trace of the
    mean sampled loss (burn-in included) and devinterp's own LLC estimate (over every step).

    What devinterp is given is shaped for speed (``_Chains``, ``_batches``): the chains are the ones it
    would draw from the model itself, chain by chain, in law (their random numbers are drawn in another
    order)."""
    from devinterp.slt.llc import compute_llc
    from devinterp.slt.sampling import sample

    stacked = _Chains(model, chains)
    batches = _batches(n, batch, seed, next(model.parameters()).device)

    def loss_fn(m, input_ids):  # input_ids (1, chains + 1): (batch index, 0, ...) -> (1, chains): each chain's mean batch loss
        rows = batches[int(input_ids[0, 0])]
        return torch.stack([row_loss(m.bound(c), rows).mean() for c in range(chains)])[None]

    # an item per minibatch, as a "sequence" of chains + 1 tokens (its index, then zeros): devinterp takes
    # the loss at each of its chains next-token positions, here the chains' losses
    items = [{"input_ids": torch.tensor([b] + [0] * chains)} for b in range(len(batches))]
    out_dir = tempfile.mkdtemp(prefix="grokscope-llc-")
    device = str(next(model.parameters()).device)
    try:
        with warnings.catch_warnings(), _quiet_chains(), _gc_frozen():
            warnings.simplefilter("ignore")
            # devinterp backpropagates the mean over the chains' losses: nbeta * chains gives each chain nbeta
            samples = sample(stacked, items, {}, lr=lr, n_beta=nbeta * chains, param_masks={"w": None}, num_chains=1,
                             num_draws=draws, batch_size=1, num_burnin_steps=burnin, num_init_loss_batches=init_batches,
                             init_seed=seed, localization=localization, device=device, shuffle=False,
                             output_path=f"{out_dir}/samples.zarr", loss_fn=loss_fn)
            ds = samples.dataset
            init_loss = float(ds.init_loss.values.mean())
            trace = ds.sampling_loss_micro.values[0, :, 0, :].T.astype(np.float64)  # (chain, step)
            devinterp_llc = float(compute_llc(samples)["llc_mean"]) / chains
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return init_loss, trace, devinterp_llc


def _batches(n: int, batch: int, seed: int, device) -> torch.Tensor:
    """(n // batch, batch) row indices: the minibatches of one pass over the training set, in the order the
    sampler takes them (and then again from the first, as devinterp cycles through a loader's first pass).
    A full batch is every row in order; smaller ones are cut from a permutation drawn from ``seed`` (the
    rows that do not fill a last batch are left out, as devinterp's loader drops them). Every chain takes
    the same minibatches, as devinterp's chains do by default.

    devinterp is given one item per minibatch (its batch size 1) and the loss returns the minibatch's
    mean: the same gradient and the same mean sampled loss as it computes from ``batch`` rows of one row
    each, without collating the rows of every step and storing every row's loss (a full batch of the quick
    model: 384 losses and 768 token ids a step and chain, about 10 MB a call written to its zarr store)."""
    if batch >= n:
        return torch.arange(n, device=device)[None]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n // batch * batch].view(-1, batch).to(device)


class _Chains(torch.nn.Module):
    """What devinterp samples: ``chains`` copies of ``model``'s trainable tensors as one parameter ``w``
    (chains, n_params), each row a chain, sampled as one chain by devinterp.

    SGLD's update is elementwise and the chains are independent, so one chain of the stacked weights,
    whose loss is the mean of the copies' losses (devinterp's step multiplies that gradient by nbeta *
    chains, so each copy's is its own loss's times nbeta), is the ``chains`` chains side by side: each
    row gets its own gradient, its own pull to w* and its own noise, as devinterp would give it one chain
    after another, in a dozen operations a step for all of them instead of a dozen per tensor per chain
    (devinterp's step is a Python loop over its parameters; with its loss bookkeeping, that was a third
    of each step of the quick model, 16 tensors). The loss has one column per chain, which devinterp
    records as it records a sequence's positions: each chain's trace.

    ``bound(c)`` gives a private copy of the model whose parameters are views of row c of ``w``, so the
    gradient flows into it; the caller's model is never touched. The views are made once: they hold no
    tensor for the backward (only sizes), so every step's backward goes through them again, and devinterp
    updates ``w`` in place through ``.data``, which they see."""

    def __init__(self, model: torch.nn.Module, chains: int):
        super().__init__()
        self.inner = [copy.deepcopy(model)]  # a list: not a submodule, so ``w`` is all devinterp sees
        self.inner[0].train()  # as devinterp sets the model it samples
        named = [(name, p) for name, p in self.inner[0].named_parameters() if p.requires_grad]
        self.slots = [(self.inner[0].get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2]) for name, _ in named]
        self.shapes, self.sizes = [p.shape for _, p in named], [p.numel() for _, p in named]
        self.w = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for _, p in named]).repeat(chains, 1))
        self.views = None

    def bound(self, chain: int) -> torch.nn.Module:
        if self.views is None or self.views[0] != self.w.data_ptr():
            with torch.enable_grad():  # (devinterp's first forward, the loss at w*, runs under no_grad)
                self.views = (self.w.data_ptr(), [[part.view(shape) for part, shape in zip(row.split(self.sizes), self.shapes)]
                                                  for row in self.w.unbind(0)])
        for (module, key), view in zip(self.slots, self.views[1][chain]):
            module._parameters[key] = view
        return self.inner[0]

    def __deepcopy__(self, memo):
        """devinterp samples a copy: its own ``w`` (and views), the private model shared."""
        other = copy.copy(self)
        other._parameters = {"w": torch.nn.Parameter(self.w.detach().clone())}
        other.views = None
        return other


def _llc_table(trace: np.ndarray, init_loss: float, devinterp_llc: float, nbeta: float, burnin: int,
               rhat_max: float, settings: dict) -> pd.DataFrame:
    """The long table from the chains' trace: the estimate with its checks, a row per chain, the trace."""
    drawn = trace[:, burnin:]  # (chain, draws): the loss at each draw after burn-in
    per_chain = nbeta * (drawn.mean(1) - init_loss)
    drifts = [drift(drawn[c] - init_loss) for c in range(drawn.shape[0])]
    rhat = split_rhat(drawn)
    settled = bool(np.isfinite(rhat) and rhat <= rhat_max)
    llc = float(per_chain.mean())
    problems = []
    finite = bool(np.isfinite(trace).all())
    if not finite:
        problems.append("diverged: a chain's loss is not finite (lower lr)")
    if llc < 0:
        problems.append("negative estimate: the chains found lower loss than the checkpoint "
                        "(not a local minimum at this temperature, or lr too large)")
    if not settled and finite:
        problems.append(f"chains not settled (split R-hat {rhat:.3g} > {rhat_max:g}: the halves of the chains sample "
                        f"different losses; more draws or burn-in, or another lr; see the traces)")
    head = {"kind": "estimate", "chain": -1, "draw": -1, "llc": llc,
            "llc_std": float(per_chain.std(ddof=1)) if len(per_chain) > 1 else float("nan"),
            "llc_se": float(per_chain.std(ddof=1) / math.sqrt(len(per_chain))) if len(per_chain) > 1 else float("nan"),
            "llc_all_steps": devinterp_llc, "init_loss": init_loss, "loss": float(drawn.mean()),
            "settled": settled, "rhat": rhat, "drift": max(drifts, key=abs), "warning": "; ".join(problems), **settings}
    out = [head]
    for c in range(drawn.shape[0]):
        out.append({"kind": "chain", "chain": c, "draw": -1, "llc": float(per_chain[c]), "init_loss": init_loss,
                    "loss": float(drawn[c].mean()), "drift": drifts[c]})
    for c in range(trace.shape[0]):  # every step, burn-in included (draw < 0)
        for s, v in enumerate(trace[c]):
            out.append({"kind": "trace", "chain": c, "draw": s - burnin, "loss": float(v)})
    return pd.DataFrame(out)


@contextlib.contextmanager
def _gc_frozen():
    """Every object alive now out of the garbage collector's reach for the duration (``gc.freeze``):
    devinterp calls ``gc.collect()`` before and after each chain, and with torch, pandas and xarray
    loaded each full collection walks every object of the process (about a third of a second on this
    machine, eight times a call: more than the SGLD steps of a small model). Only garbage made during
    sampling is collected then. A caller's own frozen objects are left as they are."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _quiet_chains():
    """devinterp draws a progress bar per chain (``trange`` in its sampler module); silence them for
    the duration (``grokscope analyze`` has its own progress)."""
    import devinterp.slt.sampler as sampler

    original = getattr(sampler, "trange", None)
    if original is None:
        yield
        return
    sampler.trange = functools.partial(original, disable=True)
    try:
        yield
    finally:
        sampler.trange = original


def split_rhat(x: np.ndarray) -> float:
    """Split R-hat (Gelman et al., Bayesian Data Analysis, 3rd ed., 11.4) of draws ``x`` (chains, draws):
    each chain cut in two halves, then sqrt of (pooled variance estimate / mean within-half variance).
    About 1 when every half samples the same distribution; above 1 when chains disagree or drift."""
    half = x.shape[1] // 2
    if half < 2:
        return float("nan")
    seqs = np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], 0)  # (2 chains, half)
    w = seqs.var(1, ddof=1).mean()
    b = half * seqs.mean(1).var(ddof=1)
    var = (half - 1) / half * w + b / half
    return float(math.sqrt(var / w)) if w > 0 else float("nan")


def drift(excess: np.ndarray) -> float:
    """One chain's drift: the change of its mean excess loss from the first to the second half of the
    draws, relative to the overall mean excess (0: flat)."""
    h = len(excess) // 2
    if h < 1:
        return float("nan")
    return float((excess[h:].mean() - excess[:h].mean()) / max(abs(float(excess.mean())), 1e-300))


def _settings(model, n, nbeta, lr, localization, chains, draws, burnin, batch) -> dict:
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"sgld_lr": float(lr), "localization": float(localization), "nbeta": float(nbeta),
            "beta": float(nbeta / n), "n": int(n), "chains": int(chains), "draws": int(draws), "burnin": int(burnin),
            "batch_size": int(batch), "n_params": int(n_params)}


def _diverged(model, n, nbeta, lr, localization, chains, draws, burnin, batch, why: str) -> pd.DataFrame:
    return pd.DataFrame([{"kind": "estimate", "chain": -1, "draw": -1, "llc": float("nan"), "settled": False,
                          "warning": f"diverged ({why.strip()}); lower lr",
                          **_settings(model, n, nbeta, lr, localization, chains, draws, burnin, batch)}])


def transformer_row_loss(data, softmax: str = "softmax") -> Callable:
    """Row losses of the run's training set: the answer-token cross-entropy (float64 log-softmax, as
    training's default loss), of the training labels (outliers included)."""
    from ..loss import answer_loss

    x, y = data.train_x, data.train_y
    whole = {}  # answer_rows of the whole training set, made on the first full batch

    def row_loss(model, rows):
        rows = rows.to(x.device)
        if len(rows) < len(y):
            return answer_loss(answer_logits(model, x[rows]), y[rows], torch.float64, "none", softmax).float()
        # a full batch (the default: every row, in order): the forward of the training set in its own
        # order, its token bookkeeping made once, then each row's loss taken (in the order asked for)
        if "rows" not in whole:
            whole["rows"], whole["order"] = answer_rows(model, x), torch.arange(len(y), device=x.device)
        losses = answer_loss(answer_logits(model, x, rows=whole["rows"]), y, torch.float64, "none", softmax).float()
        return losses if torch.equal(rows, whole["order"]) else losses[rows]

    return row_loss


@register("llc", summary="local learning coefficient (Lau et al. 2023) by SGLD with devinterp; expensive, opt-in",
          version=2, default_steps="few", expensive=True, applies=lambda data: devinterp_missing(),
          resolve=resolve_softmax)
def llc(model, data, lr: float = 3e-4, localization: float = 100.0, nbeta: float | None = None, chains: int = 4,
        draws: int = 200, burnin: int = 100, batch_size: int = 0, seed: int = 0, rhat_max: float = 1.1,
        softmax: str | None = None) -> pd.DataFrame:
    """The LLC of the checkpoint's training loss (see the module docstring); ``batch_size`` 0: full batch;
    ``nbeta`` None: n / log n; ``softmax``: the loss's, "softmax" or "stablemax" (None: over a run, the run's
    own; on one model, "softmax")."""
    n = len(data.train_y)
    return estimate_llc(model, transformer_row_loss(data, softmax or "softmax"), n, lr=lr, localization=localization, nbeta=nbeta,
                        chains=chains, draws=draws, burnin=burnin, batch_size=batch_size or None, seed=seed,
                        rhat_max=rhat_max)
