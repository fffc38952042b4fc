"""MLP neuron norms and how sparse they are (Merrill et al. 2023, "A tale of two circuits").

Neuron norm. Neuron ``i`` of layer ``l`` reads the residual stream through ``W_in[l][:, i]`` and
writes back through ``W_out[l][i, :]``; its norm here is ``‖W_in[:, i]‖₂ · ‖W_out[i, :]‖₂``, which is
also the Frobenius norm of the rank-one map ``W_in[:, i] W_out[i, :]`` the neuron adds. It ignores
``b_in`` and the activation function, and is data-free, so it costs nothing per checkpoint and is
invariant to rescaling ``W_in`` by c and ``W_out`` by 1/c (exact for ReLU). Alternatives (not computed):
``‖W_in[:, i]‖`` or ``‖W_out[i, :]‖`` alone, ``‖[W_in[:, i]; b_in[i]]‖`` with the bias, or a data-dependent
norm such as mean |activation| · ‖W_out[i, :]‖.

Three analyses:

- ``neuron_norms``: ``layer, neuron, norm, in_norm, out_norm`` for every MLP neuron (the traces).
- ``sparsity``: per ``scope`` (``blocks.0``, ``blocks.1``, ... and ``all`` layers together):
  ``n_neurons``, ``gini`` (Hurley–Rickard, below), ``effective_n`` = (Σn)²/Σn² (N when all norms are
  equal, 1 when one neuron carries everything), ``effective_frac`` = effective_n / n_neurons and
  ``norm_sum`` = Σn.
- ``neuron_ablation`` (a handful of checkpoints by default: it runs the model about log2(N) times):
  the smallest ``k`` such that keeping only the ``k`` largest-norm neurons and zero-ablating every
  other one (a hook on ``blocks.{l}.mlp.hook_post``) keeps the training accuracy within
  ``tolerance`` (default 0.01, one point) of the unablated accuracy. ``scope == "all"``: k counts
  neurons over all layers jointly (one ranking of every neuron of every layer, the rest ablated in
  every layer); with ``per_layer=True`` also one row per layer, that layer ranked and ablated alone.
  Binary search over k: it assumes that keeping more neurons never lowers the accuracy below the
  tolerance once it is met. Columns: ``scope, n_neurons, k, k_frac, train_acc, kept_acc``.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from ._common import gini
from .base import register

CHUNK = 1024  # examples per forward; small enough that a failing k stops early


# --- sparsity measures ------------------------------------------------------------------------
def effective_number(values) -> float:
    """(Σn)² / Σn²: how many equal entries would give the same spread. NaN when all are zero."""
    c = torch.as_tensor(values, dtype=torch.float64).abs().flatten()
    sq = float(c.pow(2).sum())
    return float(c.sum()) ** 2 / sq if sq > 0 else float("nan")


# --- neuron norms ------------------------------------------------------------------------------
@torch.no_grad()
def neuron_norm_parts(model) -> tuple[torch.Tensor, torch.Tensor]:
    """(in_norm, out_norm), each (n_layers, d_mlp): ‖W_in[:, i]‖ and ‖W_out[i, :]‖ per layer."""
    w_in = torch.stack([b.mlp.W_in.detach() for b in model.blocks]).double()  # (layer, d_model, d_mlp)
    w_out = torch.stack([b.mlp.W_out.detach() for b in model.blocks]).double()  # (layer, d_mlp, d_model)
    return w_in.norm(dim=1), w_out.norm(dim=2)


def neuron_norm_matrix(model) -> torch.Tensor:
    """(n_layers, d_mlp) neuron norms ‖W_in[:, i]‖ · ‖W_out[i, :]‖."""
    a, b = neuron_norm_parts(model)
    return a * b


@register("neuron_norms", summary="norm ‖W_in[:, i]‖·‖W_out[i, :]‖ of every MLP neuron", version=1)
def neuron_norms(model, data) -> pd.DataFrame:
    a, b = neuron_norm_parts(model)
    n_layers, d_mlp = a.shape
    return pd.DataFrame({
        "layer": torch.arange(n_layers).repeat_interleave(d_mlp).numpy(),
        "neuron": torch.arange(d_mlp).repeat(n_layers).numpy(),
        "norm": (a * b).flatten().numpy(),
        "in_norm": a.flatten().numpy(),
        "out_norm": b.flatten().numpy(),
    })


def _scopes(norms: torch.Tensor):
    for layer in range(norms.shape[0]):
        yield f"blocks.{layer}", norms[layer]
    yield "all", norms.flatten()


@register("sparsity", summary="Gini coefficient and effective number of the MLP neuron norms", version=1)
def sparsity(model, data) -> pd.DataFrame:
    rows = []
    for scope, n in _scopes(neuron_norm_matrix(model)):
        eff = effective_number(n)
        rows.append({"scope": scope, "n_neurons": n.numel(), "gini": gini(n), "effective_n": eff,
                     "effective_frac": eff / n.numel(), "norm_sum": float(n.sum())})
    return pd.DataFrame(rows)


# --- ablation: how many neurons carry the training accuracy --------------------------------------
@torch.inference_mode()
def count_correct(model, x, y, keep: torch.Tensor | None = None, max_errors: int | None = None) -> int:
    """Correct answers with only the neurons in ``keep`` (bool, (n_layers, d_mlp)) left on; the others
    are zero-ablated at ``blocks.{l}.mlp.hook_post``. Stops early (returning a lower bound that fails
    the caller's test) once more than ``max_errors`` answers are wrong."""
    hooks = []
    if keep is not None:
        for layer in range(keep.shape[0]):
            mask = keep[layer].to(dtype=torch.float32)

            def ablate(act, hook, mask=mask):  # act: (batch, pos, d_mlp)
                return act * mask.to(act.dtype)

            hooks.append((f"blocks.{layer}.mlp.hook_post", ablate))
    correct = errors = 0
    with model.hooks(fwd_hooks=hooks):
        for i in range(0, len(y), CHUNK):
            pred = model(x[i:i + CHUNK])[:, -1].argmax(-1)  # (batch,)
            ok = int((pred == y[i:i + CHUNK]).sum())
            correct += ok
            errors += len(pred) - ok
            if max_errors is not None and errors > max_errors:
                break
    return correct


def smallest_k(model, x, y, order: torch.Tensor, shape: tuple[int, int], tolerance: float,
               base_keep: torch.Tensor | None = None) -> tuple[int, int, int]:
    """Binary search for the smallest k: keeping the first k flat indices of ``order`` (into a
    ``shape`` mask; positions outside ``order`` stay as in ``base_keep``) keeps the accuracy within
    ``tolerance``. Returns (k, correct with all neurons, correct at k)."""
    n = len(y)
    base = count_correct(model, x, y)
    allowed = math.floor(tolerance * n + 1e-9)
    budget = (n - base) + allowed  # at most this many errors

    def kept(k: int) -> torch.Tensor:
        keep = (base_keep.clone() if base_keep is not None else torch.zeros(shape, dtype=torch.bool)).flatten()
        keep[order] = False
        keep[order[:k]] = True
        return keep.view(shape)

    lo, hi, at_hi = 0, len(order), base
    while lo < hi:
        mid = (lo + hi) // 2
        c = count_correct(model, x, y, kept(mid), max_errors=budget)
        if n - c <= budget:
            hi, at_hi = mid, c
        else:
            lo = mid + 1
    return hi, base, at_hi


@register("neuron_ablation", version=1, default_steps="few",
          summary="fewest top-norm MLP neurons that keep the train accuracy (zero-ablating the rest)")
def neuron_ablation(model, data, tolerance: float = 0.01, per_layer: bool = False,
                    max_examples: int = 0) -> pd.DataFrame:
    """``max_examples`` > 0: judge the accuracy on the first that many training equations only."""
    x, y = data.train_x, data.train_y
    if max_examples and max_examples < len(y):
        x, y = x[:max_examples], y[:max_examples]
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    norms = neuron_norm_matrix(model)  # (n_layers, d_mlp)
    shape = tuple(norms.shape)
    searches = [("all", norms.flatten().argsort(descending=True, stable=True), None)]
    if per_layer:
        for layer in range(shape[0]):
            idx = torch.arange(shape[1]) + layer * shape[1]
            others = torch.ones(shape, dtype=torch.bool)
            searches.append((f"blocks.{layer}", idx[norms[layer].argsort(descending=True, stable=True)], others))
    rows = []
    for scope, order, base_keep in searches:
        k, base, kept = smallest_k(model, x, y, order, shape, tolerance, base_keep)
        rows.append({"scope": scope, "n_neurons": len(order), "k": k, "k_frac": k / len(order),
                     "train_acc": base / len(y), "kept_acc": kept / len(y)})
    return pd.DataFrame(rows)
