"""Key-frequency circles: the embedding and unembedding rows in each key frequency's own plane.

Why. A grokked modular-addition model spreads its embedding and unembedding over a few key
frequencies (Nanda et al. 2023: five). In each frequency's plane the rows sit on a circle, element
x at angle 2*pi*k*x/p; a 2-D map of all of d_model mixes the circles and shows none (Power et al.'s
Figure 3 circle appears only when one frequency dominates). So we look at each plane.

The plane of frequency k. Rows W (n, d) in cyclic order (``fourier.cyclic_tokens``: residues
0..p-1; for x*y and x/y the discrete-log order g^0, g^1, ..., g^(p-2), n = p-1), centred (the
constant frequency removed). Their Fourier coefficients on frequency k are two d_model vectors,
c_cos = sum_j cos(2 pi k j/n) W_j and c_sin = sum_j sin(2 pi k j/n) W_j (orthonormal basis rows of
``fourier.fourier_basis``). The plane is their span, with the orthonormal axes u = c_cos/|c_cos| and
v = the part of c_sin orthogonal to u, normalised (Gram-Schmidt). Element j's point is
(W_j . u, W_j . v): a row made of cos(2 pi k j/n) u + sin(2 pi k j/n) v lands exactly at angle
2 pi k j/n; the other frequencies' parts of the rows add their projections on the plane as scatter.

Numbers per matrix, key frequency and checkpoint (table ``circles``):
- ``share``: frequency k's part of the rows' (centred) squared norm, |c_cos|^2 + |c_sin|^2 over the
  sum over all non-constant frequencies (as ``fourier_spectrum``, without the constant).
- ``r2``: how much of the points' scatter in the plane the circle explains: 1 - SS_res / SS_tot of
  the least-squares fit of the points by a + A (cos theta_j, sin theta_j), theta_j = 2 pi k j/n, A any
  2x2 matrix (an ellipse is allowed; ``aspect`` says how round it is). 1: the points follow
  theta_j exactly; the rest is the other frequencies leaking into this plane. Random rows are not
  at 0: the plane is fitted to frequency k, so random rows already have a fair r2 (the first
  checkpoint of a run shows its level); the change over training is the signal.
- ``angle_err``: the mean absolute angle (degrees) between each point (about the points' centre)
  and theta_j + phi, phi the circular mean offset: 0 on a circle traced in order, 90 for points at
  uniformly random angles (random rows score lower, as the plane is fitted to the frequency).
- ``aspect``: the smaller over the larger singular value of A (1: a circle, 0: a line).
- ``radius``: the rms distance of the points from their centre.
NaN where frequency k holds no norm at all (no plane).

Points (table ``circle_points``, at the slider's checkpoints only): ``matrix, freq, j, token,
element, x, y, colour, next``: the centred rows' coordinates (u, v) in the plane, colour = j mod 8 and next = the token at j + 8 (the "+8" chords of
Figure 3; j the cyclic index, so for x*y and x/y the chords join g^j to g^(j+8)).

Key frequencies: as ``fourier`` (``key_freqs="final"``: over a run, the last checkpoint's key
frequencies from the unembedding, the same for every checkpoint; see ``fourier.resolve_key_freqs``);
a list ("14,35,41") fixes them; "own" (and "final" on one model) takes the model's own.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..errors import GrokscopeError
from .base import register
from .fourier import (_parse_keys, cyclic_tokens, element_matrices, fourier_basis, frequency_norms, key_frequencies,
                      not_cyclic, resolve_key_freqs)

STEP = 8  # Figure 3: colours mod 8, chords to element + 8
TINY = 1e-6  # a frequency whose coefficient norm is below this fraction of the rows' norm has no plane (float32 rounding)
COLUMNS = ["matrix", "freq", "rank", "share", "r2", "angle_err", "aspect", "radius"]
POINT_COLUMNS = ["matrix", "freq", "j", "token", "element", "x", "y", "colour", "next"]


def plane(W: torch.Tensor, k: int, n: int) -> tuple[np.ndarray | None, float]:
    """(d, 2) orthonormal axes (u, v) of frequency k's plane for rows W (n, d) in cyclic order, centred,
    and the frequency's squared norm |c_cos|^2 + |c_sin|^2; axes None when the frequency holds nothing."""
    Wc = W.double() - W.double().mean(0)
    j = torch.arange(n, dtype=torch.float64)
    cos, sin = torch.cos(2 * math.pi * k * j / n), torch.sin(2 * math.pi * k * j / n)
    c_cos = (cos / cos.norm()) @ Wc  # (d,)
    c_sin = (sin / sin.norm()) @ Wc if sin.norm() > 1e-9 else torch.zeros_like(c_cos)  # k = n/2 has no sine
    energy = float(c_cos.pow(2).sum() + c_sin.pow(2).sum())
    scale = float(Wc.norm()) or 1.0
    if math.sqrt(energy) <= TINY * scale:
        return None, energy
    if c_cos.norm() > TINY * scale:
        u = c_cos / c_cos.norm()
        w = c_sin - (c_sin @ u) * u
    else:  # only a sine: it sets the first axis
        u, w = c_sin / c_sin.norm(), torch.zeros_like(c_sin)
    v = w / w.norm() if w.norm() > TINY * scale else torch.zeros_like(u)
    return torch.stack([u, v], 1).numpy(), energy


def circle_fit(xy: np.ndarray, k: int, n: int) -> dict[str, float]:
    """r2, angle_err (degrees), aspect and radius of (n, 2) points in cyclic order against angles 2 pi k j/n."""
    theta = 2 * math.pi * k * np.arange(n) / n
    X = np.column_stack([np.ones(n), np.cos(theta), np.sin(theta)])  # (n, 3)
    coef, *_ = np.linalg.lstsq(X, xy, rcond=None)  # (3, 2)
    centred = xy - xy.mean(0)
    ss_tot = float((centred ** 2).sum())
    ss_res = float(((xy - X @ coef) ** 2).sum())
    if ss_tot <= 0:
        return {"r2": float("nan"), "angle_err": float("nan"), "aspect": float("nan"), "radius": 0.0}
    s = np.linalg.svd(coef[1:], compute_uv=False)
    angle = np.arctan2(centred[:, 1], centred[:, 0])
    diff = angle - theta
    phi = math.atan2(np.sin(diff).mean(), np.cos(diff).mean())
    err = np.abs(np.angle(np.exp(1j * (diff - phi))))
    return {"r2": 1 - ss_res / ss_tot, "angle_err": float(np.degrees(err.mean())),
            "aspect": float(s[1] / s[0]) if s[0] > 0 else float("nan"),
            "radius": float(np.sqrt((centred ** 2).sum(1).mean()))}


def _keys(model, data, key_freqs, n_key, key_from: str) -> list[int]:
    tokens = cyclic_tokens(data)
    n = len(tokens)
    if key_freqs is None or key_freqs in ("own", "final"):
        if key_from not in ("embed", "unembed"):
            raise GrokscopeError(f"key_from must be 'embed' or 'unembed', got {key_from!r}")
        basis, freqs = fourier_basis(n)
        return key_frequencies(frequency_norms(element_matrices(model, tokens)[key_from], basis, freqs), n_key)
    return _parse_keys(key_freqs, n // 2)


def _check(data) -> None:
    why = not_cyclic(data)
    if why:
        raise GrokscopeError(why)


@register("circles", summary="how circular each key frequency's plane is: share of the norm, R², angle error",
          version=1, applies=not_cyclic, resolve=resolve_key_freqs)
def circles(model, data, key_freqs="final", key_step=None, key_from: str = "unembed", n_key: int | None = None) -> pd.DataFrame:
    """Long table ``matrix, freq, rank, share, r2, angle_err, aspect, radius``: one row per matrix
    ("embed", "unembed") and key frequency (``rank`` 0 = the largest); see the module docstring."""
    _check(data)
    tokens = cyclic_tokens(data)
    n = len(tokens)
    keys = _keys(model, data, key_freqs, n_key, key_from)
    basis, freqs = fourier_basis(n)
    rows = []
    with torch.no_grad():
        for name, W in element_matrices(model, tokens).items():
            W = W.detach().double().cpu()
            total = float(frequency_norms(W, basis, freqs)[1:].pow(2).sum())
            for rank, k in enumerate(keys):
                axes, energy = plane(W, k, n)
                if axes is None:
                    fit = {"r2": float("nan"), "angle_err": float("nan"), "aspect": float("nan"), "radius": 0.0}
                else:
                    fit = circle_fit(W.numpy() @ axes, k, n)
                rows.append({"matrix": name, "freq": k, "rank": rank,
                             "share": energy / total if total > 0 else float("nan"), **fit})
    return pd.DataFrame(rows, columns=COLUMNS)


@register("circle_points", summary="the embedding and unembedding rows in each key frequency's plane (Figure 3 circles)",
          version=2, applies=not_cyclic, resolve=resolve_key_freqs, default_steps="slider")
def circle_points(model, data, key_freqs="final", key_step=None, key_from: str = "unembed",
                  n_key: int | None = None) -> pd.DataFrame:
    """Long table ``matrix, freq, j, token, element, x, y, colour, next``: each element's point in each
    key frequency's plane (x, y = 0 where the frequency holds nothing); see the module docstring."""
    _check(data)
    tokens = cyclic_tokens(data)
    n = len(tokens)
    keys = _keys(model, data, key_freqs, n_key, key_from)
    j = np.arange(n)
    tok = tokens.numpy()
    elements = [data.elements[t] for t in tok]
    frames = []
    with torch.no_grad():
        for name, W in element_matrices(model, tokens).items():
            W = W.detach().double().cpu()
            for k in keys:
                axes, _ = plane(W, k, n)
                xy = (W - W.mean(0)).numpy() @ axes if axes is not None else np.zeros((n, 2))  # centred on 0
                frames.append(pd.DataFrame({"matrix": name, "freq": k, "j": j, "token": tok, "element": elements,
                                            "x": xy[:, 0], "y": xy[:, 1], "colour": j % STEP,
                                            "next": tok[(j + STEP) % n]}))
    return pd.concat(frames, ignore_index=True)[POINT_COLUMNS] if frames else pd.DataFrame(columns=POINT_COLUMNS)
