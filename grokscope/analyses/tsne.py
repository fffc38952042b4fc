"""t-SNE maps of the embedding and unembedding rows, coloured as in Power et al. (2022), Figure 3.

Rows: the embedding rows of the element tokens (W_E[e]) and the unembedding rows (W_U[:, e], the
output-layer row vectors Figure 3 shows), one t-SNE each (scikit-learn, Euclidean, PCA start,
``random_state=seed``: the same weights always give the same map). The perplexity is clipped to
(rows - 1) / 3 so that tiny tasks work (scikit-learn needs 3 * perplexity + 1 neighbours).

Colours (column ``colour``; ``next`` is the token the plot joins each element to, -1 for none):
- modular tasks: colour = residue mod 8, next = element + 8 mod p (the paper's "number line": lines
  join each element to element + 8). With ``by="log"`` on x*y and x/y, the same over the discrete
  logarithm (colour = log_g(e) mod 8, next = e * g^8, the cyclic order the model sees; residue 0
  gets colour -1), g the smallest primitive root mod p.
- permutation groups (s5, s5conj, s5aba): colour = index of the coset of ``subgroup`` that holds the
  element, cosets numbered in token order. ``subgroup``: "paper" (default: Figure 3's
  <(0 3)(1 4), (1 2)(3 4)>, a dihedral group of order 10, 12 cosets), "S4" (the stabiliser of 4,
  5 cosets), "A5" (even permutations, 2 cosets), or generators in cycle notation, e.g.
  "(0 1 2 3 4); (1 4)(2 3)". ``coset``: "left" (default), gH = {g*h}, or "right", Hg = {h*g}, with the
  tasks.py product (g*h)(i) = g(h(i)). A left coset gH is also the right coset (gHg^-1)g of a
  conjugate, so the paper's "cosets of the subgroup or one of its conjugates" fits either side.
- any other task: colour = -1.

Key-frequency subspace (``subspace``; the report's default "keys"). A grokked modular model spreads
its rows over several key frequencies, each a circle in its own plane, and no 2-D map of the full
rows shows one circle (see ``circles.py``). With ``subspace="keys"`` two more maps, matrices
``embed_keys`` and ``unembed_keys``: t-SNE of the rows filtered to the key frequencies (the rows in
cyclic order, as functions of the element, projected on the cos/sin basis rows of those
frequencies; residue 0 is left out for x*y and x/y). ``key_freqs`` as in ``fourier`` ("final": over
a run, the last checkpoint's; "own"; or a list, e.g. "14" for one frequency, whose map is then one
circle). ``subspace="none"`` (the function's default): the full-space maps only. Operations without
a Fourier basis (S5, the polynomials' other groups) get the full-space maps only.
"""
from __future__ import annotations

import ast
import itertools
import re

import numpy as np
import pandas as pd
import torch

from ..errors import GrokscopeError
from ..tasks import compose
from .base import register
from .fourier import (_parse_keys, cyclic_tokens, fourier_basis, frequency_norms, key_frequencies, not_cyclic,
                      op_kind, primitive_root, resolve_key_freqs)

PAPER_SUBGROUP = "(0 3)(1 4); (1 2)(3 4)"  # Figure 3, left
STEP = 8  # Figure 3, right: element -> element + 8, colours mod 8


# --- permutation groups ---------------------------------------------------------------------------------
def parse_cycles(text: str, degree: int) -> tuple[int, ...]:
    """A permutation from cycle notation, "(0 3)(1 4)" or "(0,3)(1,4)": s[i] is the image of i."""
    s = list(range(degree))
    for cycle in re.findall(r"\(([^)]*)\)", text):
        points = [int(v) for v in re.split(r"[\s,]+", cycle.strip()) if v]
        if any(not 0 <= v < degree for v in points):
            raise GrokscopeError(f"{text!r}: points must be in 0..{degree - 1}")
        for i, v in enumerate(points):
            s[v] = points[(i + 1) % len(points)]
    if sorted(s) != list(range(degree)):
        raise GrokscopeError(f"{text!r} is not a permutation of 0..{degree - 1}")
    return tuple(s)


def generated_subgroup(generators: list[tuple[int, ...]], degree: int) -> set[tuple[int, ...]]:
    """The closure of the generators under the product (the identity included)."""
    group = {tuple(range(degree))}
    frontier = list(group)
    while frontier:
        new = {compose(g, h) for g in frontier for h in generators} - group
        group |= new
        frontier = list(new)
    return group


def named_subgroup(name: str, degree: int) -> set[tuple[int, ...]]:
    """A subgroup of S_degree: "paper", "S4" (stabiliser of the last point), "A5"/"An", or generators."""
    everything = itertools.permutations(range(degree))
    if name == "paper":
        name = PAPER_SUBGROUP
    if name in ("S4", f"S{degree - 1}"):
        return {s for s in everything if s[-1] == degree - 1}
    if name in ("A5", f"A{degree}"):
        return {s for s in everything if parity(s) == 0}
    gens = [parse_cycles(part, degree) for part in re.split(r"[;\n]", name) if part.strip()]
    if not gens:
        raise GrokscopeError(f"unknown subgroup {name!r}: use 'paper', 'S4', 'A5' or generators like '(0 1)(2 3); (0 2 4)'")
    return generated_subgroup(gens, degree)


def parity(s: tuple[int, ...]) -> int:
    return sum(1 for i in range(len(s)) for j in range(i + 1, len(s)) if s[i] > s[j]) % 2


def coset_labels(elements: list[tuple[int, ...]], subgroup: set[tuple[int, ...]], side: str = "left") -> np.ndarray:
    """For each element, the index of its coset (gH for "left", Hg for "right"), numbered in element order."""
    if side not in ("left", "right"):
        raise GrokscopeError(f"coset must be 'left' or 'right', got {side!r}")
    label: dict[tuple, int] = {}
    for g in elements:
        if g not in label:
            coset = {compose(g, h) if side == "left" else compose(h, g) for h in subgroup}
            k = len(set(label.values()))
            label.update({c: k for c in coset})
    return np.array([label[g] for g in elements])


# --- colours -----------------------------------------------------------------------------------------------
def colours(data, subgroup: str = "paper", coset: str = "left", by: str = "residue") -> tuple[np.ndarray, np.ndarray]:
    """(n,) colour and (n,) next token of each element token (see the module docstring)."""
    n, kind = data.n_elements, op_kind(data)
    none = np.full(n, -1)
    if kind.startswith("modular") or kind == "multiplicative":
        p = data.p
        r = np.arange(n)
        if by == "residue":
            return r % STEP, (r + STEP) % p
        if by != "log" or kind != "multiplicative":
            raise GrokscopeError(f"by must be 'residue' (or 'log' for x*y and x/y), got {by!r} for {data.op!r}")
        g = primitive_root(p)
        log = {pow(g, j, p): j for j in range(p - 1)}
        colour = np.array([log[e] % STEP if e in log else -1 for e in r])
        nxt = np.array([e * pow(g, STEP, p) % p if e in log else -1 for e in r])
        return colour, nxt
    if kind == "group":
        try:
            perms = [tuple(ast.literal_eval(e)) for e in data.elements]
        except (ValueError, SyntaxError, TypeError):
            return none, none  # a group whose elements are not permutation tuples
        return coset_labels(perms, named_subgroup(subgroup, len(perms[0])), coset), none
    return none, none


# --- the analysis ----------------------------------------------------------------------------------------
def tsne_map(rows: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """(n, 2) t-SNE map of (n, d) rows; perplexity clipped to (n - 1) / 3. float64 (scikit-learn returns
    float32): the results CSV keeps a float64 exactly, so that rows read back from a partial cache equal
    rows computed afresh (float32 values went through their shortest text and came back ~1e-7 off)."""
    from sklearn.manifold import TSNE

    n = len(rows)
    perp = float(min(perplexity, max(1.0, (n - 1) / 3)))
    return TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto", random_state=seed,
                n_jobs=1).fit_transform(rows.astype(np.float64)).astype(np.float64)


def key_rows(model, data, key_freqs="own", key_from: str = "unembed") -> tuple[torch.Tensor, dict[str, torch.Tensor], list[int]]:
    """(tokens in cyclic order, {"embed_keys", "unembed_keys"}: rows (n, d) filtered to the key
    frequencies, key frequencies)."""
    tokens = cyclic_tokens(data)
    n = len(tokens)
    basis, freqs = fourier_basis(n)
    with torch.no_grad():
        mats = {"embed": model.W_E[tokens].double().cpu(), "unembed": model.W_U[:, tokens].T.double().cpu()}
    if key_freqs is None or key_freqs in ("own", "final"):
        if key_from not in mats:
            raise GrokscopeError(f"key_from must be 'embed' or 'unembed', got {key_from!r}")
        keys = key_frequencies(frequency_norms(mats[key_from], basis, freqs))
    else:
        keys = _parse_keys(key_freqs, n // 2)
    B = basis[torch.isin(freqs, torch.tensor(keys, dtype=freqs.dtype))]  # (2 * len(keys), n)
    return tokens, {f"{m}_keys": B.T @ (B @ W) for m, W in mats.items()}, keys


def _resolve(run, params: dict) -> dict:
    """The run's final key frequencies for the key-subspace maps (cyclic tasks only)."""
    if params.get("subspace", "none") == "none" or not_cyclic(run.data) is not None:
        return params
    return resolve_key_freqs(run, params)


@register("tsne", summary="t-SNE of the embedding and unembedding rows (full and key-frequency space), Figure 3",
          version=3, default_steps="slider", resolve=_resolve)
def tsne(model, data, perplexity: float = 30.0, subgroup: str = "paper", coset: str = "left",
         by: str = "residue", seed: int = 0, subspace: str = "keys", key_freqs="final", key_step=None,
         key_from: str = "unembed") -> pd.DataFrame:
    """Long table ``matrix, element, token, x, y, colour, next`` (matrix: "embed", "unembed", and with
    ``subspace="keys"`` on a cyclic task "embed_keys", "unembed_keys"; see the module docstring)."""
    if subspace not in ("none", "keys"):
        raise GrokscopeError(f"subspace must be 'none' or 'keys', got {subspace!r}")
    n = data.n_elements
    colour, nxt = colours(data, subgroup, coset, by)
    with torch.no_grad():
        mats = {"embed": model.W_E[:n], "unembed": model.W_U.T[:n]}  # each (n, d_model)
    frames = []
    for name, W in mats.items():
        xy = tsne_map(W.detach().double().cpu().numpy(), perplexity, seed)  # (n, 2)
        frames.append(pd.DataFrame({"matrix": name, "element": data.elements, "token": np.arange(n),
                                    "x": xy[:, 0], "y": xy[:, 1], "colour": colour, "next": nxt}))
    if subspace == "keys" and not_cyclic(data) is None:
        tokens, filtered, _ = key_rows(model, data, key_freqs, key_from)
        tok = tokens.numpy()
        inside = np.isin(nxt, tok)
        for name, W in filtered.items():
            xy = tsne_map(W.numpy(), perplexity, seed)
            frames.append(pd.DataFrame({"matrix": name, "element": [data.elements[t] for t in tok], "token": tok,
                                        "x": xy[:, 0], "y": xy[:, 1], "colour": colour[tok],
                                        "next": np.where(inside[tok], nxt[tok], -1)}))
    return pd.concat(frames, ignore_index=True)
