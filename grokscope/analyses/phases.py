"""Phases of grokking from the progress measures (Nanda et al. 2023), and when each measure moves.

The measures (``MEASURES``): the metrics (train and validation loss and accuracy, the total weight
norm, the softmax-collapse fraction), the ``fourier`` table (restricted and excluded loss, where they
are faithful, see ``fourier.losses_unfaithful``; the Fourier Gini of the embedding and unembedding;
FSD, the Frequency Synchronization Degree),
and the ``sparsity`` table (Gini and effective number of the MLP neuron norms). Operations without a
Fourier basis (S5, the polynomials) have only the metrics and the neuron measures; the phases say so.

Smoothing. Every series is a running median over the evaluated steps within a factor ``SMOOTH``
(1.05) of each step, and at least two neighbours on each side: windows are log-spaced, as the
evaluations are dense late and sparse early, and a loss spike a few evaluations long cannot move a
boundary. Losses and the weight norm are compared in log space.

Boundaries (``acc`` = 0.99, chance = ln of the number of possible answers):
- memorisation: from the first step to ``T_mem``, the first step where train accuracy >= acc.
- circuit formation: from ``T_mem`` to ``T_clean``, the step from which the smoothed validation loss
  stays below chance for good (the last step where it is at or above chance, plus one evaluation).
  Before it, validation is poor while the generalising mechanism grows: restricted loss falls,
  excluded loss rises away from the train loss, the Fourier Gini rises, the weight norm declines.
  When validation loss is already below chance at ``T_mem`` there is no delay: no circuit formation.
- clean-up: from ``T_clean`` to ``T_stable``, the step by which every clean-up marker that moved
  has done ``done`` (90 %) of its change from ``T_clean`` to its extreme after it: the weight norm's
  fall and the Gini's rise (Fourier Gini of the embedding, else the neuron-norm Gini), and validation
  accuracy has reached acc. Not simply when validation accuracy reaches acc.
- grokked: from ``T_stable`` on.
What did not happen is marked absent with the reason; a phase going on at the last step has no
``end_step``.

Markers. In each phase's text a measure is named only when it moved in that phase's expected
direction by a meaningful amount (``Measure.min_change``: a factor 2 for losses, 5 % for the weight
norm, 0.1 for a Gini, ...), with its smoothed values at the phase's start and end.

Lead and lag (``phases_leadlag``). For each measure, its main change: from its start value to its
extreme (the largest fall or rise in the measure's expected direction, after ``T_mem``; from the
first step for the train loss). It happens at the first step where the smoothed series crosses
1 nat for the cross-entropies whose change passes through it (train, validation, restricted,
excluded loss: one level, so their steps compare directly), half-way through the change for the
others (in log space for log measures). Its lead is the validation loss's step minus its own: positive when it moves first.

Columns of ``phases``: ``step`` (= ``start_step``), ``phase``, ``present``, ``start_step``,
``end_step``, ``marker`` and ``threshold`` (the quantity and level that set the start), ``end_marker``
and ``end_threshold`` (those that set the end), ``value_before``/``value_after`` (the start marker at
the start and end), ``evidence`` ("measure: a → b; ..." of the markers that moved), ``description``.
Steps are integers (pandas ``Int64``; missing: <NA>).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..tasks import chance_loss
from .base import register

PHASES = ("memorisation", "circuit_formation", "clean_up", "grokked")
COLUMNS = ["step", "phase", "present", "start_step", "end_step", "marker", "threshold", "end_marker",
           "end_threshold", "value_before", "value_after", "evidence", "description"]
LEADLAG_COLUMNS = ["step", "measure", "label", "direction", "moved", "value_from", "value_to", "level", "lead",
                   "reference_step", "description"]
NAN = float("nan")
SMOOTH = 1.05  # running-median window: steps within this factor of each step


@dataclass(frozen=True)
class Measure:
    key: str  # name in the tables of this module
    table: str  # "metrics", "fourier", "sparsity", "circles"
    column: str
    label: str
    direction: int  # -1: falls, +1: rises in the phases it marks
    log: bool  # compare in log space (losses, norms)
    min_change: float  # meaningful change: |delta| >= this (in ln units when log)
    phases: tuple[str, ...]  # the phases whose text may name it
    where: tuple[str, object] | None = None


LN2 = math.log(2.0)
MEASURES = [
    Measure("train_loss", "metrics", "train_loss", "train loss", -1, True, LN2, ("memorisation",)),
    Measure("val_loss", "metrics", "val_loss", "validation loss", -1, True, LN2, ("clean_up",)),
    Measure("val_acc", "metrics", "val_acc", "validation accuracy", +1, False, 0.2, ()),
    Measure("restricted_loss", "fourier", "restricted_loss", "restricted loss", -1, True, LN2,
            ("circuit_formation", "clean_up")),
    Measure("excluded_loss", "fourier", "excluded_loss", "excluded loss", +1, True, LN2,
            ("circuit_formation", "clean_up")),
    Measure("embed_gini", "fourier", "embed_gini", "Fourier Gini of the embedding", +1, False, 0.1,
            ("circuit_formation", "clean_up")),
    Measure("unembed_gini", "fourier", "unembed_gini", "Fourier Gini of the unembedding", +1, False, 0.1,
            ("circuit_formation", "clean_up")),
    Measure("fsd", "fourier", "fsd", "Frequency Synchronization Degree (FSD)", +1, False, 0.1,
            ("circuit_formation", "clean_up")),
    Measure("weight_norm", "metrics", "weight_norm", "total weight norm", -1, True, -math.log(0.95),
            ("circuit_formation", "clean_up")),
    Measure("neuron_gini", "sparsity", "gini", "Gini of the MLP neuron norms", +1, False, 0.05,
            ("circuit_formation", "clean_up"), ("scope", "all")),
    Measure("effective_neurons", "sparsity", "effective_n", "effective number of MLP neurons", -1, True,
            math.log(1.25), ("circuit_formation", "clean_up"), ("scope", "all")),
    Measure("embed_circle_r2", "circles", "r2", "circularity (R²) of the embedding's key-frequency planes", +1, False,
            0.1, ("circuit_formation", "clean_up"), ("matrix", "embed")),
    Measure("unembed_circle_r2", "circles", "r2", "circularity (R²) of the unembedding's key-frequency planes", +1,
            False, 0.1, ("circuit_formation", "clean_up"), ("matrix", "unembed")),
    Measure("collapse", "metrics", "collapse", "softmax-collapse fraction (float32)", +1, False, 0.05, ()),
    Measure("llc", "llc", "llc", "local learning coefficient (LLC)", -1, False, 1.0, ("clean_up",), ("kind", "estimate")),
]
BY_KEY = {m.key: m for m in MEASURES}


# --- series ------------------------------------------------------------------------------------------
def series(table: pd.DataFrame | None, column: str, where: tuple[str, object] | None = None) -> pd.Series:
    """``column`` by step (mean over rows of a step), sorted, NaN dropped; empty if missing."""
    if table is None or column not in table.columns or "step" not in table.columns:
        return pd.Series(dtype=float)
    if where is not None:
        if where[0] not in table.columns:
            return pd.Series(dtype=float)
        table = table[table[where[0]] == where[1]]
    s = pd.to_numeric(table[column], errors="coerce")
    s = s.groupby(pd.to_numeric(table["step"], errors="coerce")).mean().dropna().sort_index()
    s.index = s.index.astype(int)
    return s


def smooth(s: pd.Series, factor: float = SMOOTH, min_side: int = 2) -> pd.Series:
    """Running median over the steps within ``factor`` of each step, with at least ``min_side``
    neighbours on each side: log-spaced windows, robust to spikes. Windows are symmetric in the
    number of points (a monotone series is kept), shrinking towards the ends; the first and last
    points take the median of their nearest three, so a spike there is removed too."""
    if len(s) < 3:
        return s.copy()
    steps = s.index.to_numpy(dtype=np.float64)
    v = s.to_numpy(dtype=np.float64)
    n, idx = len(v), np.arange(len(v))
    lo = np.searchsorted(steps, steps / factor, side="left")
    hi = np.searchsorted(steps, steps * factor, side="right") - 1
    half = np.maximum(np.maximum(idx - lo, hi - idx), min_side)
    half = np.minimum(half, np.minimum(idx, n - 1 - idx))
    out = [float(np.median(v[i - h:i + h + 1])) for i, h in zip(idx, half)]
    out[0], out[-1] = float(np.median(v[:3])), float(np.median(v[-3:]))
    return pd.Series(out, index=s.index)


def at(s: pd.Series, step) -> float:
    """The value at the last step <= ``step`` (the first value if none); NaN for an empty series."""
    if s.empty or step is None or (isinstance(step, float) and math.isnan(step)):
        return NAN
    before = s[s.index <= step]
    return float(before.iloc[-1] if len(before) else s.iloc[0])


def first_step(s: pd.Series, test, after=None) -> int | None:
    hits = s[test(s)]
    if after is not None:
        hits = hits[hits.index > after]
    return int(hits.index[0]) if len(hits) else None


def _t(m: Measure, v):
    """The measure's value in the space its changes are compared in."""
    v = np.asarray(v, dtype=np.float64)
    return np.log(np.maximum(v, 1e-300)) if m.log else v


def pct(v: float) -> str:
    """0.03 -> "3 %"; one decimal where rounding would reach 0 or 100 (0.995 -> "99.5 %")."""
    if v != v:
        return "n/a"
    text = f"{100 * v:.0f}"
    if (text == "100" and v < 1) or (text == "0" and v > 0):
        text = f"{100 * v:.1f}"
    return f"{text} %"


def fmt(m: Measure | None, v: float) -> str:
    if v != v:
        return "n/a"
    if m is not None and m.key in ("val_acc", "collapse"):
        return pct(v)
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 0.01 or v == 0:
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return f"{v:.1e}"


class Measures:
    """The smoothed series of every measure a run has (``series`` by key), and why others are missing."""

    def __init__(self, metrics: pd.DataFrame, results: dict[str, pd.DataFrame] | None = None):
        results = dict(results or {})
        results["metrics"] = metrics
        self.raw: dict[str, pd.Series] = {}
        self.series: dict[str, pd.Series] = {}
        self.missing: dict[str, str] = {}
        fourier = results.get("fourier")
        unfaithful = (fourier is not None and "losses_faithful" in fourier.columns
                      and not fourier["losses_faithful"].astype(str).str.lower().isin(["true", "1", "1.0"]).all())
        for m in MEASURES:
            s = series(results.get(m.table), m.column, m.where)
            if m.key == "weight_norm" and s.empty:
                s = series(results.get("weight_norms"), "norm", ("group", "total"))
            if m.key in ("restricted_loss", "excluded_loss") and unfaithful:
                self.missing[m.key] = "not faithful for this model (see the fourier analysis)"
                continue
            if len(s) < 2:
                self.missing[m.key] = f"no {m.table} table" if results.get(m.table) is None else "not measured"
                continue
            self.raw[m.key], self.series[m.key] = s, smooth(s)

    def has(self, key: str) -> bool:
        return key in self.series

    def __getitem__(self, key: str) -> pd.Series:
        return self.series.get(key, pd.Series(dtype=float))

    def change(self, key: str, start, end) -> tuple[float, float, bool]:
        """(value at start, value at end, moved): moved in its expected direction by a meaningful amount."""
        m, s = BY_KEY[key], self[key]
        a, b = at(s, start), at(s, end)
        if a != a or b != b:
            return a, b, False
        delta = float(_t(m, b) - _t(m, a))
        return a, b, m.direction * delta >= m.min_change

    def evidence(self, phase: str, start, end) -> list[tuple[Measure, float, float]]:
        out = []
        for m in MEASURES:
            if phase in m.phases and self.has(m.key):
                a, b, moved = self.change(m.key, start, end)
                if moved:
                    out.append((m, a, b))
        return out


def _evidence_text(ev) -> str:
    parts = []
    for m, a, b in ev:
        verb = "falls" if m.direction < 0 else "rises"
        parts.append(f"{m.label} {verb} {fmt(m, a)} → {fmt(m, b)}")
    return ", ".join(parts)


def _evidence_col(ev) -> str:
    return "; ".join(f"{m.key}: {fmt(m, a)} → {fmt(m, b)}" for m, a, b in ev)


# --- boundaries --------------------------------------------------------------------------------------
def below_for_good(s: pd.Series, level: float, after: int) -> int | None:
    """The first step > ``after`` from which ``s`` stays below ``level`` to the end (None: it does not
    end below it); ``after`` itself when it is below from there on."""
    window = s[s.index >= after]
    if not len(window) or window.iloc[-1] >= level:
        return None
    above = window[window >= level]
    if not len(above):
        return int(window.index[0])
    later = window[window.index > above.index[-1]]
    return int(later.index[0])


def done_step(s: pd.Series, m: Measure, start: int, done: float, tail: float = 0.2) -> tuple[int | None, float, bool]:
    """(step, level, settled): the first step >= ``start`` by which ``s`` has done ``done`` of its change
    in its direction from ``start`` to its extreme after it (step None: it did not move meaningfully).
    ``settled``: over the last ``tail`` of the steps since ``start`` it changed by less than the
    remaining ``1 - done`` of that change (a measure still moving at the end has not done its change)."""
    window = s[s.index >= start]
    if len(window) < 2:
        return None, NAN, False
    tw = pd.Series(_t(m, window.to_numpy()), index=window.index)
    t0 = float(tw.iloc[0])
    t1 = float(tw.min() if m.direction < 0 else tw.max())
    if m.direction * (t1 - t0) < m.min_change:
        return None, NAN, True
    level_t = t0 + done * (t1 - t0)
    hit = tw[(tw <= level_t) if m.direction < 0 else (tw >= level_t)]
    first, last = int(tw.index[0]), int(tw.index[-1])
    recent = float(tw.iloc[-1]) - at(tw, last - tail * (last - first))
    settled = abs(recent) < (1 - done) * abs(t1 - t0)
    return int(hit.index[0]), float(np.exp(level_t)) if m.log else float(level_t), settled


def train_loss_floor(train_loss: pd.Series, t_mem: int, val_loss: pd.Series, chance: float) -> int | None:
    """The step where the (smoothed) train loss comes within a factor 2 of its lowest value before
    clean-up (before validation loss falls below chance for good): the end of memorisation read off
    the train loss, as Nanda et al. read their curves; reported beside ``T_mem``."""
    if train_loss.empty:
        return None
    t_clean = below_for_good(val_loss, chance, t_mem) if len(val_loss) else None
    window = train_loss if t_clean is None else train_loss[train_loss.index <= t_clean]
    return first_step(window, lambda s: s <= 2 * window.min())


def _row(phase, start, end, marker, threshold, before, after, description, *, end_marker="", end_threshold=NAN,
         evidence="", present=True):
    return {"step": start, "phase": phase, "present": present, "start_step": start, "end_step": end,
            "marker": marker, "threshold": threshold, "end_marker": end_marker, "end_threshold": end_threshold,
            "value_before": before, "value_after": after, "evidence": evidence, "description": description}


def _absent(phase: str, why: str):
    return _row(phase, None, None, "", NAN, NAN, NAN, f"{phase.replace('_', ' ')}: absent, {why}", present=False)


def _table(rows, columns) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    for c in ("step", "start_step", "end_step", "reference_step"):
        if c in df.columns:
            df[c] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
                              for v in df[c]], dtype="Int64")
    return df


def _chance(metrics: pd.DataFrame, n_answers: int | None) -> float:
    """``tasks.chance_loss`` of the number of possible answers; without it, the validation loss at the
    first step (≈ ln n at initialisation)."""
    if n_answers:
        return chance_loss(n_answers)
    v = series(metrics, "val_loss")
    return float(v.iloc[0]) if len(v) else NAN


@dataclass
class _Curves:
    """What ``find_phases`` reads: the curves, the levels it reads them at and the two accuracy steps."""
    ms: Measures
    train: pd.Series  # train accuracy by step
    val: pd.Series  # validation accuracy by step
    vloss: pd.Series  # validation loss by step
    chance: float  # the validation loss of a uniform guess
    acc: float  # "reached": accuracy at or above this
    done: float  # clean-up is over when the markers have done this share of their change
    first: int
    last: int
    t_mem: int | None  # first step with train accuracy >= acc
    t_grok: int | None  # first step with validation accuracy >= acc
    fourier_note: str  # said when the task has no Fourier measures

    def grok_text(self) -> str:
        return (f"validation accuracy reaches {pct(self.acc)} at step {self.t_grok}" if self.t_grok is not None
                else f"validation accuracy has not reached {pct(self.acc)} (best {pct(self.val.max())})")


def find_phases(metrics: pd.DataFrame, results: dict[str, pd.DataFrame] | None = None, acc: float = 0.99,
                done: float = 0.9, n_answers: int | None = None, no_fourier: str | None = None) -> pd.DataFrame:
    """The four phase rows (see the module docstring) from a metrics table and optional results.

    ``n_answers``: the number of possible answers (chance = its log; default: the validation loss at
    the first step); ``no_fourier``: why the task has no Fourier measures, said in the text."""
    ms = Measures(metrics, results)
    train, val = series(metrics, "train_acc"), series(metrics, "val_acc")
    if train.empty:
        return _table([_absent(p, "no metrics yet") for p in PHASES], COLUMNS)
    c = _Curves(ms, train, val, ms["val_loss"], _chance(metrics, n_answers), acc, done,
                int(train.index[0]), int(train.index[-1]), first_step(train, lambda s: s >= acc),
                first_step(val, lambda s: s >= acc),
                "" if ms.has("embed_gini") else (
                    f" ({no_fourier or 'no Fourier table'}: the markers here are the neuron-norm Gini and effective "
                    "number, the weight norm and validation loss)"))
    if c.t_mem is None:
        rows = [_memorising(c)] + [_absent(p, f"train accuracy never reached {pct(acc)}") for p in PHASES[1:]]
        return _table(rows, COLUMNS)
    t_clean = below_for_good(c.vloss, c.chance, c.t_mem) if len(c.vloss) else None
    rows = [_memorisation(c), _circuit_formation(c, t_clean)]
    if t_clean is None:
        rows += _never_cleaned_up(c)
        return _table(rows, COLUMNS)
    t_stable, end_marker, end_level, ends, moving = _clean_up_end(c, t_clean)
    rows.append(_clean_up(c, t_clean, t_stable, end_marker, end_level, ends))
    rows.append(_grokked(c, t_stable, end_marker, end_level, moving))
    return _table(rows, COLUMNS)


def _memorising(c: _Curves) -> dict:
    """The memorisation row of a run whose train accuracy never reached ``acc``."""
    first, last, train = c.first, c.last, c.train
    ev = c.ms.evidence("memorisation", first, last)
    return _row("memorisation", first, None, "train_acc", c.acc, at(train, first), at(train, last),
                f"memorisation from step {first}, not finished: train accuracy {pct(at(train, first))} → "
                f"{pct(at(train, last))} at step {last} (best {pct(train.max())})", evidence=_evidence_col(ev))


def _memorisation(c: _Curves) -> dict:
    """Memorisation: from the first step to ``T_mem`` (train accuracy reaches ``acc``)."""
    first, t_mem, train = c.first, c.t_mem, c.train
    ev = c.ms.evidence("memorisation", first, t_mem)
    floor = train_loss_floor(c.ms["train_loss"], t_mem, c.vloss, c.chance)
    return _row("memorisation", first, t_mem, "", NAN, at(train, first), at(train, t_mem),
                f"memorisation from step {first} to {t_mem}: train accuracy {pct(at(train, first))} → "
                f"{pct(at(train, t_mem))}" + (f", {_evidence_text(ev)}" if ev else "")
                + (f" (the train loss reaches its floor, within a factor 2 of its lowest value before "
                   f"clean-up, at step {floor})" if floor is not None and floor > t_mem else "")
                + f"; validation accuracy {pct(at(c.val, t_mem))}, validation loss {fmt(None, at(c.vloss, t_mem))} "
                  f"(chance {c.chance:.2f})",
                end_marker="train_acc", end_threshold=c.acc, evidence=_evidence_col(ev))


def _circuit_formation(c: _Curves, t_clean: int | None) -> dict:
    """Circuit formation: from ``T_mem`` until validation loss is below chance for good (``t_clean``)."""
    t_mem, val, vloss, chance = c.t_mem, c.val, c.vloss, c.chance
    if t_clean is not None and t_clean <= t_mem:
        return _absent("circuit_formation", f"validation loss was already below chance ({fmt(None, at(vloss, t_mem))}"
                                            f" < {chance:.2f}) when training reached {pct(c.acc)}: no delay")
    end = t_clean if t_clean is not None else c.last
    ev = c.ms.evidence("circuit_formation", t_mem, end)
    vmax = float(val[(val.index >= t_mem) & (val.index <= end)].max()) if len(val) else NAN
    vpeak = float(vloss[(vloss.index >= t_mem) & (vloss.index <= end)].max()) if len(vloss) else NAN
    until = f"to {t_clean}" if t_clean is not None else "on (not finished)"
    inside = _evidence_text(ev) if ev else "no internal marker moved by a meaningful amount"
    return _row("circuit_formation", t_mem, t_clean, "train_acc", c.acc, at(vloss, t_mem), at(vloss, end),
                f"circuit formation from step {t_mem} {until}: {inside}, while validation loss stays above "
                f"chance ({fmt(None, at(vloss, t_mem))} at step {t_mem}, peak {fmt(None, vpeak)}, chance "
                f"{chance:.2f}) and validation accuracy at or below {pct(vmax)}{c.fourier_note}",
                end_marker="val_loss" if t_clean is not None else "", end_threshold=chance if t_clean else NAN,
                evidence=_evidence_col(ev))


def _never_cleaned_up(c: _Curves) -> list[dict]:
    """The clean-up and grokked rows of a run whose validation loss never fell below chance for good."""
    last, val, vloss = c.last, c.val, c.vloss
    best = val.idxmax() if len(val) else last
    return [_absent("clean_up", f"validation loss never fell below chance ({c.chance:.2f}) for good "
                                f"(last {fmt(None, at(vloss, last))} at step {last}; best validation accuracy "
                                f"{pct(val.max())} at step {best})"),
            _absent("grokked", f"validation accuracy never reached {pct(c.acc)}" if c.t_grok is None else
                    "validation loss is not below chance for good")]


def _clean_up_end(c: _Curves, t_clean: int):
    """When clean-up ends: the last of the steps where the weight norm and the Gini have done ``done`` of
    their change and validation accuracy reaches ``acc``; ``None`` while not finished. Returns
    (t_stable, end marker, end level, [(step, marker, level)], labels of the markers still moving)."""
    ends, moving = [], []
    ms = c.ms
    gini_key = "embed_gini" if ms.has("embed_gini") else "neuron_gini"
    for key in ("weight_norm", gini_key):
        if ms.has(key):
            step, level, settled = done_step(ms[key], BY_KEY[key], t_clean, c.done)
            if step is not None:
                ends.append((step, key, level))
            if not settled:
                moving.append(BY_KEY[key].label)
    if c.t_grok is not None:
        ends.append((max(c.t_grok, t_clean), "val_acc", c.acc))
    t_stable, end_marker, end_level = max(ends) if ends else (None, "", NAN)
    finished = c.t_grok is not None and t_stable is not None and t_stable < c.last and not moving
    return (t_stable if finished else None), end_marker, end_level, ends, moving


def _clean_up(c: _Curves, t_clean: int, t_stable: int | None, end_marker: str, end_level: float, ends) -> dict:
    """Clean-up: from ``t_clean`` until the markers have settled (``t_stable``)."""
    end = t_stable if t_stable is not None else c.last
    ev = c.ms.evidence("clean_up", t_clean, end)
    by = "; ".join(f"{BY_KEY[k].label if k in BY_KEY else k} by step {s}" for s, k, _ in sorted(ends))
    until = f"to {t_stable}" if t_stable is not None else "on (not finished)"
    return _row("clean_up", t_clean, t_stable, "val_loss", c.chance, at(c.vloss, t_clean), at(c.vloss, end),
                f"clean-up from step {t_clean} {until}: validation loss below chance ({c.chance:.2f}) for good"
                + (f", {_evidence_text(ev)}" if ev else "") + f"; {c.grok_text()}"
                + (f"; {pct(c.done)} of the change done: {by}" if by else ""),
                end_marker=end_marker if t_stable is not None else "",
                end_threshold=end_level if t_stable is not None else NAN, evidence=_evidence_col(ev))


def _grokked(c: _Curves, t_stable: int | None, end_marker: str, end_level: float, moving: list[str]) -> dict:
    """Grokked: from ``t_stable`` to the last step; absent while clean-up goes on."""
    last, val, vloss = c.last, c.val, c.vloss
    if t_stable is None:
        return _absent("grokked", c.grok_text() if c.t_grok is None else
                       f"clean-up still going on at the last step ({last})"
                       + (f": {' and '.join(moving)} still changing" if moving else ""))
    wn = c.ms["weight_norm"]
    return _row("grokked", t_stable, None, end_marker, end_level, at(val, t_stable), at(val, last),
                f"grokked and stable from step {t_stable}: validation accuracy {pct(at(val, last))} and "
                f"loss {fmt(None, at(vloss, last))} at step {last}"
                + (f", weight norm {fmt(None, at(wn, last))}" if len(wn) else "")
                + f"; {c.t_grok - c.t_mem} steps from memorisation to {pct(c.acc)} validation accuracy")


# --- lead and lag --------------------------------------------------------------------------------------
LOSS_LEVEL = 1.0  # nat: the level every cross-entropy is timed at in the lead/lag table


def main_change(s: pd.Series, m: Measure, start: int) -> tuple[int | None, float, float, float, bool]:
    """(step, level, from, to, moved) of the main change of ``s`` (smoothed) after ``start``: from its
    start value (its extreme opposite to its direction, before its extreme) to its extreme in its
    direction. It happens where the series first crosses ``level``: ``LOSS_LEVEL`` (1 nat, the
    answer's mean probability e^-1) for the cross-entropies whose change passes through it, so that
    their steps compare directly, and half-way through the change (in log space for log measures)
    for the others."""
    window = s[s.index >= start]
    if len(window) < 2:
        return None, NAN, NAN, NAN, False
    tw = pd.Series(_t(m, window.to_numpy()), index=window.index)
    i1 = tw.idxmin() if m.direction < 0 else tw.idxmax()
    before = tw[tw.index <= i1]
    i0 = before.idxmax() if m.direction < 0 else before.idxmin()
    t0, t1 = float(tw[i0]), float(tw[i1])
    v0, v1 = float(window[i0]), float(window[i1])
    moved = m.direction * (t1 - t0) >= m.min_change
    at_level = m.key.endswith("_loss") and min(t0, t1) <= float(_t(m, LOSS_LEVEL)) <= max(t0, t1)
    if at_level:
        level = LOSS_LEVEL
        level_t = float(_t(m, level))
    else:
        level_t = (t0 + t1) / 2
        level = float(np.exp(level_t)) if m.log else level_t
    if i1 == i0:
        return None, level, v0, v1, False
    seg = tw[(tw.index > i0) & (tw.index <= i1)]
    hit = seg[(seg <= level_t) if m.direction < 0 else (seg >= level_t)]
    return (int(hit.index[0]) if len(hit) else None), level, v0, v1, moved


def find_leadlag(metrics: pd.DataFrame, results: dict[str, pd.DataFrame] | None = None, acc: float = 0.99,
                 n_answers: int | None = None) -> pd.DataFrame:
    """One row per measure the run has: the step of its main change and its lead on the validation
    loss's (see the module docstring)."""
    ms = Measures(metrics, results)
    train = series(metrics, "train_acc")
    if train.empty:
        return _table([], LEADLAG_COLUMNS)
    first = int(train.index[0])
    t_mem = first_step(train, lambda s: s >= acc)
    after = t_mem if t_mem is not None else first
    ref = main_change(ms["val_loss"], BY_KEY["val_loss"], after)[0] if ms.has("val_loss") else None
    rows = []
    for m in MEASURES:
        if not ms.has(m.key):
            continue
        step, level, v0, v1, moved = main_change(ms[m.key], m, first if m.key == "train_loss" else after)
        lead = ref - step if ref is not None and step is not None else None
        verb = "fell" if m.direction < 0 else "rose"
        if not moved or step is None:
            text = f"{m.label} did not move meaningfully ({fmt(m, v0)} → {fmt(m, v1)})"
        else:
            if level == LOSS_LEVEL and m.key.endswith("_loss"):
                text = f"{m.label} {verb} {'below' if m.direction < 0 else 'above'} {fmt(m, level)} at step {step} " \
                       f"({fmt(m, v0)} → {fmt(m, v1)})"
            else:
                text = f"{m.label} {verb} half-way ({fmt(m, v0)} → {fmt(m, v1)}, past {fmt(m, level)}) at step {step}"
            if m.key == "val_loss":
                text += " (the reference)"
            elif lead is not None:
                text += (f", {abs(lead)} steps {'before' if lead > 0 else 'after'} validation loss did"
                         if lead else ", with validation loss")
        rows.append({"step": step, "measure": m.key, "label": m.label, "direction": m.direction, "moved": bool(moved),
                     "value_from": v0, "value_to": v1, "level": level,
                     "lead": NAN if lead is None or not moved else float(lead), "reference_step": ref,
                     "description": text})
    out = _table(rows, LEADLAG_COLUMNS)
    out["lead"] = pd.array([None if v != v else int(v) for v in out["lead"]], dtype="Int64")
    return out


# --- the published run ----------------------------------------------------------------------------------
# Nanda et al. 2023 ("Progress measures for grokking via mechanistic interpretability"), their main run:
# phase ends in epochs (= full-batch steps) as the paper's text gives them (memorisation 0-1.4k, circuit
# formation 1.4k-9.4k, clean-up 9.4k-14k; the ~13.3k once used here is a TransformerLens demo notebook's
# own run, not the paper), and their seed's five key frequencies.
NANDA_2023 = {"ends": {"memorisation": 1400, "circuit_formation": 9400, "clean_up": 14000},
              "key_freqs": [14, 35, 41, 42, 52]}


def is_nanda_setting(cfg) -> bool:
    """Whether a RunConfig is Nanda et al.'s setting (x+y mod 113 at 30 %, one layer without LayerNorm,
    d_model 128, 4 heads, d_mlp 512, full batch, AdamW lr 1e-3, weight decay 1, betas 0.9/0.98)."""
    t, m, tr = cfg.task, cfg.model, cfg.train
    return (t.op, t.p, t.frac, m.n_layers, m.norm, m.d_model, m.n_heads, m.d_mlp, tr.full_batch, tr.lr,
            tr.weight_decay, tr.beta1, tr.beta2, tr.wd_target, tr.wd_mode) == \
        ("x+y", 113, 0.3, 1, "none", 128, 4, 512, True, 1e-3, 1.0, 0.9, 0.98, "origin", "decoupled")


def published_comparison(phases: pd.DataFrame, fourier: pd.DataFrame | None) -> list[tuple[str, str, str]]:
    """(what, measured, published) rows beside Nanda et al.'s run: each phase's end and the key frequencies."""
    rows = []
    ph = phases.set_index("phase") if phases is not None and len(phases) else None
    for phase, end in NANDA_2023["ends"].items():
        got = ph.loc[phase, "end_step"] if ph is not None and phase in ph.index else None
        measured = "not reached" if got is None or pd.isna(got) else f"step {int(got)}"
        rows.append((f"{phase.replace('_', ' ').replace('clean up', 'clean-up')} ends", measured, f"~{end} epochs"))
    keys = "not analysed"
    if fourier is not None and "key_freqs" in fourier.columns and len(fourier):
        last = fourier.sort_values("step").iloc[-1]
        keys = f"{int(last['n_key'])}: {last['key_freqs']}" if "n_key" in fourier.columns else str(last["key_freqs"])
    rows.append(("key frequencies", keys, f"5: {', '.join(map(str, NANDA_2023['key_freqs']))} (their seed)"))
    return rows


def boundary_steps(phases: pd.DataFrame) -> list[int]:
    """The start and end steps of the phases that happened (for picking checkpoints to look at)."""
    present = phases[phases["present"].astype(str).str.lower() == "true"]
    steps = pd.concat([present["start_step"], present["end_step"]]).dropna()
    return sorted({int(s) for s in steps})


def run_facts(run) -> dict:
    """``n_answers`` and ``no_fourier`` of a run, for ``find_phases``."""
    from ..errors import GrokscopeError
    from .fourier import not_cyclic

    try:
        data = run.data
    except GrokscopeError:  # no data file: chance falls back to the validation loss at step 0
        return {}
    return {"n_answers": int(data.n_elements), "no_fourier": not_cyclic(data)}


@register("phases", kind="run", version=2, needs=("weight_norms", "sparsity", "fourier", "circles", "llc"),
          summary="memorisation, circuit formation, clean-up, grokked: boundaries from the progress measures")
def phases(run, results, acc: float = 0.99, done: float = 0.9) -> pd.DataFrame:
    return find_phases(run.metrics, results, acc=acc, done=done, **run_facts(run))


@register("phases_leadlag", kind="run", version=1, needs=("weight_norms", "sparsity", "fourier", "circles", "llc"),
          summary="when each progress measure makes its main change, and how far it leads validation loss")
def phases_leadlag(run, results, acc: float = 0.99) -> pd.DataFrame:
    return find_leadlag(run.metrics, results, acc=acc, n_answers=run_facts(run).get("n_answers"))
