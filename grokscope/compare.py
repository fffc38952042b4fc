"""``compare_checkpoints``: what changed in a run between two checkpoints.

    tables = grokscope.compare_checkpoints(run, 100, 3000)
    tables["summary"]     # quantity, a, b, change: losses and accuracies, total weight norm, neuron
                          # Gini, Fourier Gini / restricted and excluded loss (cyclic tasks), ...
    tables["weights"]     # one row per parameter: norms at a and b, the norm of the difference, cosine
    tables["key_freqs"]   # step, rank, freq: the key Fourier frequencies at each (cyclic tasks)

Every number is computed from the two checkpoints (the registered analyses and the full-set
evaluation the training loop uses), so any two checkpoints compare, evaluated or not.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch

from .run import Run


def _weights(sd_a: dict[str, torch.Tensor], sd_b: dict[str, torch.Tensor]) -> pd.DataFrame:
    rows = []
    for name, wa in sd_a.items():
        wa, wb = wa.detach().double().flatten(), sd_b[name].detach().double().flatten()
        na, nb, diff = float(wa.norm()), float(wb.norm()), float((wb - wa).norm())
        rows.append({"name": name, "shape": "x".join(map(str, sd_a[name].shape)), "norm_a": na, "norm_b": nb,
                     "norm_change": nb - na, "diff_norm": diff, "rel_diff": diff / na if na > 0 else math.nan,
                     "cosine": float(wa @ wb) / (na * nb) if na > 0 and nb > 0 else math.nan})
    return pd.DataFrame(rows)


def compare_checkpoints(run: Run | str | Path, a: int, b: int, fourier_params: dict | None = None) -> dict[str, pd.DataFrame]:
    """What changed between checkpoints ``a`` and ``b`` of ``run`` (a Run or its folder).

    Returns {"summary": quantity, a, b, change; "weights": name, shape, norm_a, norm_b, norm_change,
    diff_norm (the norm of W_b - W_a), rel_diff (over norm_a), cosine; "key_freqs": step, rank, freq
    (empty for tasks without a Fourier analysis)}. ``fourier_params``: keyword arguments of the
    ``fourier`` analysis (e.g. {"key_freqs": "3,7"})."""
    from .analyses.base import REGISTRY
    from .analyses.fourier_keys import key_freq_list
    from .cpu import cpu_settings
    from .loss import evaluate

    run = run if isinstance(run, Run) else Run(run)
    a, b = int(a), int(b)
    data = run.data
    with cpu_settings():
        models = {a: run.model_at(a), b: run.model_at(b)}  # a GrokscopeError names the steps the run has
        rows: dict[str, dict[int, float]] = {}

        def put(quantity: str, step: int, value) -> None:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.setdefault(quantity, {})[step] = float(value)

        key_rows = []
        for step, model in models.items():
            for split, x, y in (("train", data.train_x, data.train_y), ("val", data.val_x, data.val_y)):
                loss, acc = evaluate(model, x, y)
                put(f"{split}_loss", step, loss)
                put(f"{split}_acc", step, acc)
            norms = REGISTRY["weight_norms"].fn(model, data)
            put("weight_norm", step, norms.loc[norms["group"] == "total", "norm"].iloc[0])
            sparsity = REGISTRY["sparsity"].fn(model, data)
            every = sparsity[sparsity["scope"] == "all"].iloc[0]
            put("neuron_gini", step, every["gini"])
            put("neuron_effective_frac", step, every["effective_frac"])
            fourier = REGISTRY.get("fourier")
            if fourier is not None and fourier.applies(data) is None:
                row = fourier.fn(model, data, **{**fourier.params, **(fourier_params or {})})
                row = row.iloc[0].to_dict() if isinstance(row, pd.DataFrame) else dict(row)
                for key, value in row.items():
                    if key != "key_freqs":
                        put(key, step, value)
                key_rows += [{"step": step, "rank": r, "freq": k} for r, k in enumerate(key_freq_list(row.get("key_freqs")))]
            model.reset_hooks()
        weights = _weights(dict(models[a].named_parameters()), dict(models[b].named_parameters()))  # not buffers
    summary = pd.DataFrame([{"quantity": q, "a": v.get(a, math.nan), "b": v.get(b, math.nan)} for q, v in rows.items()])
    summary["change"] = summary["b"] - summary["a"]
    summary.attrs.update(a=a, b=b)
    key_freqs = pd.DataFrame(key_rows, columns=["step", "rank", "freq"]).astype("int64")
    return {"summary": summary, "weights": weights, "key_freqs": key_freqs}


__all__ = ["compare_checkpoints"]
