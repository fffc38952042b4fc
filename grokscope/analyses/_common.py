"""Helpers shared by the analyses (a module whose name starts with ``_``: not an analysis, so the
package does not import it as one)."""
from __future__ import annotations

import torch


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
