"""Helpers shared by the analyses (a module whose name starts with ``_``: not an analysis, so the
package does not import it as one)."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator

import torch

# Work that several analyses of one model state need (the grid forward of ``fourier`` and
# ``fourier_neurons``), shared inside a ``sharing()`` block that the caller opens and closes.
_SHARED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("grokscope_shared_work", default=None)


@contextlib.contextmanager
def sharing() -> Iterator[None]:
    """Inside the block, analyses called on one model share the work they both need (``shared``).
    The caller owns the scope and must not change the model's weights inside it: ``analyze`` opens
    one block per checkpoint. Outside any block every call computes afresh; nothing outlives it."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def shared(key: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()``, once per ``key`` inside a ``sharing()`` block (every time outside one)."""
    cache = _SHARED.get()
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def gini(values) -> float:
    """Gini coefficient, Hurley & Rickard (2009): with c sorted ascending (k = 1..N),
    G = 1 - 2 Σ_k (c_k / ‖c‖₁) (N - k + ½) / N. 0 when all are equal, 1 - 1/N for one non-zero.
    NaN when every value is zero (or there are none). Values are taken in absolute value."""
    c = torch.as_tensor(values, dtype=torch.float64).abs().flatten().sort().values
    n, total = c.numel(), float(c.sum()) if c.numel() else 0.0
    if n == 0 or total == 0.0:
        return float("nan")
    k = torch.arange(1, n + 1, dtype=torch.float64)
    return float(1.0 - 2.0 * ((c / total) * (n - k + 0.5) / n).sum())


def resolve_softmax(run, params: dict[str, Any]) -> dict[str, Any]:
    """An analysis's ``resolve`` for a loss it measures: ``softmax=None`` (the default) becomes the run's
    own (``train.softmax``: "softmax" or "stablemax"), so a StableMax run is measured on its own loss."""
    if params.get("softmax") is None:
        return {**params, "softmax": run.config.train.softmax}
    return params
