"""Figures of a sweep (a grid of runs), each drawn from the sweep's results table, one row per run::

    fig_steps_vs_frac(table)                    # Figure 1 (center) of Power et al. 2022
    fig_best_val_vs_frac(table, series="op")    # Figure 2 (right); series="variant": left; "outliers": Figure 6
    fig_sweep_heatmap(table, rows="op")         # every cell of the grid at a glance
    fig_sharpness_vs_val(table)                 # Figure 7, Spearman's rho in the title

The table (``grokscope.sweep``): the grid coordinates (``op``, ``frac``, ``seed``, one column per other
swept axis), ``cell``, ``status`` (done, partial, pending), ``steps`` (the budget), ``steps_to_train_99``
and ``steps_to_val_99`` (NA: not reached), ``best_val_acc``, the final accuracies and losses, and
optionally ``sharpness``. Pending runs have no results and are left out of every figure.

Medians of the steps to 99 %. At each point (series value, training fraction) the runs that count are the
done ones plus any partial run that already reached 99 % (a partial run that has not reached it yet is
undecided). The median is over the runs that reached 99 %: the others do not enter it. When fewer than
half of the runs that count reached it, the median is undefined: the line has a gap there and an open
triangle at the step budget marks the point, its hover text saying how many seeds reached 99 %.

The sweep's page draws the figures registered with ``page="sweep"`` from a ``SweepTable`` (the table,
the swept axes, the series axis): each applies by the axes that vary, never by the preset's name.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy.stats import bootstrap, pearsonr, spearmanr

from ..errors import GrokscopeError
from ..sweep.folder import FINISHED
from .common import PALETTE, empty, esc, figure, finish
from .summary import pct, steps_text

VAL99, TRAIN99 = "steps_to_val_99", "steps_to_train_99"
FRAC_FORMAT = ".1~%"  # 0.3 -> 30%, 0.325 -> 32.5%
VALUE_TITLES = {"best_val_acc": "best validation accuracy", "final_val_acc": "final validation accuracy",
                "final_train_acc": "final train accuracy", "final_val_loss": "final validation loss",
                "final_train_loss": "final train loss", VAL99: "steps to 99 % validation accuracy",
                TRAIN99: "steps to 99 % train accuracy", "sharpness": "ε-sharpness"}

SERIES_FIGURE = {"op": "Figure 2 (right)", "variant": "Figure 2 (left)", "outliers": "Figure 6"}


@dataclass
class SweepTable:
    """What the sweep's page draws from: its results table and swept axes."""

    table: pd.DataFrame
    axes: list[str] = field(default_factory=list)

    @property
    def series(self) -> str | None:
        """The first swept axis other than frac and seed: one line per value on the frac figures."""
        return next((a for a in self.axes if a not in ("frac", "seed") and a in self.table.columns), None)

    @property
    def per(self) -> str:
        return f" per {self.series}" if self.series else ""

    def varies(self, column: str) -> bool:
        return column in self.table.columns and self.table[column].nunique(dropna=True) > 1


# --- the table ------------------------------------------------------------------------------------------
def _num(table: pd.DataFrame, column: str) -> pd.Series:
    """``column`` as floats (NA -> NaN); all NaN when the table lacks it."""
    if column not in table.columns:
        return pd.Series(np.nan, index=table.index, dtype=float)
    return pd.to_numeric(table[column], errors="coerce").astype(float)


def with_results(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs that have results (status not pending)."""
    return table[table["status"] != "pending"] if "status" in table.columns else table


def series_label(series: str | None, value: Any) -> str:
    """"x+y" for a text value, "outliers = 1000" for a number; plain text (escape it for plotly)."""
    if series is None:
        return ""
    if isinstance(value, str):
        return value
    return f"{series} = {value:g}" if isinstance(value, float) else f"{series} = {value}"


def _groups(table: pd.DataFrame, series: str | None) -> list[tuple[str, pd.DataFrame]]:
    """(escaped label, rows) per value of ``series`` in order of first appearance; one group for None."""
    if series is None:
        return [("", table)]
    if series not in table.columns:
        raise GrokscopeError(f"the sweep table has no column {series!r} (it has {', '.join(map(str, table.columns))})")
    return [(esc(series_label(series, v)), table[table[series] == v]) for v in pd.unique(table[series])]


def _fracs(rows: pd.DataFrame) -> list[float]:
    return sorted(float(f) for f in pd.unique(rows["frac"]))


def _frac_axis(fig: go.Figure) -> go.Figure:
    return fig.update_xaxes(title_text="training fraction", tickformat=FRAC_FORMAT)


def median_steps(rows: pd.DataFrame, column: str = VAL99) -> tuple[float, int, int]:
    """(median steps to 99 % over the runs that reached it, NaN when fewer than half of the runs that count
    did; how many reached it; how many count: the done runs and the partial ones that reached it)."""
    steps = _num(rows, column)
    reached = steps.notna()
    counted = reached | rows["status"].isin(FINISHED) if "status" in rows.columns else pd.Series(True, index=rows.index)
    k, n = int(reached.sum()), int(counted.sum())
    return (float(steps[reached].median()) if k and 2 * k >= n else float("nan")), k, n


# --- Figure 1 (center) -------------------------------------------------------------------------------------
@figure("steps_vs_frac", page="sweep", title="Steps until 99 % accuracy vs training fraction", time_axis=False,
        caption=lambda s: f"Median over seeds{s.per} of the first step where validation (solid) and train (dashed) "
                          f"accuracy reached 99 %, single seeds faint and an open triangle where fewer than half the "
                          f"seeds got there: the wait for generalisation grows steeply as the training fraction "
                          f"shrinks.",
        reproduces="Figure 1 (center)", applies=lambda s: s.varies("frac"),
        inputs=lambda s: dict(table=s.table, series=s.series))
def fig_steps_vs_frac(table: pd.DataFrame, series: str | None = None, title: str | None = None) -> go.Figure:
    """Median over seeds of the steps until validation accuracy first reaches 99 % (solid) and train accuracy
    (dashed) vs training fraction, log y; one colour per value of ``series``; faint markers: single seeds."""
    table = with_results(table)
    if not len(table):
        return empty("no run of the sweep has results yet")
    fig = go.Figure()
    shown = {"seeds": False, "undefined": False}
    for i, (label, rows) in enumerate(_groups(table, series)):
        colour = PALETTE[i % len(PALETTE)]
        fracs = _fracs(rows)
        at = [rows[rows["frac"] == f] for f in fracs]
        val = [median_steps(r, VAL99) for r in at]  # [(median, reached, counted)] per frac
        train = [median_steps(r, TRAIN99) for r in at]
        seeds = rows[_num(rows, VAL99).notna()]
        if len(seeds):
            text = [f"{esc(c)}<br>training fraction {pct(f)}: {steps_text(s)} steps" for c, f, s in
                    zip(seeds.get("cell", seeds.index.astype(str)), seeds["frac"], _num(seeds, VAL99))]
            fig.add_trace(go.Scatter(x=seeds["frac"].astype(float), y=_num(seeds, VAL99), mode="markers",
                                     name="single seeds (validation)", legendgroup="seeds",
                                     showlegend=not shown["seeds"], text=text, hovertemplate="%{text}<extra></extra>",
                                     marker=dict(color=colour, size=6, opacity=0.35)))
            shown["seeds"] = True
        for stats, split, dash in ((val, "validation", None), (train, "train", "dash")):
            name = (f"{label} ({split})" if split == "train" else label) if series else f"{split} ≥ 99 % (median)"
            fig.add_trace(go.Scatter(
                x=fracs, y=[m for m, _, _ in stats], mode="lines+markers", name=name, legendgroup=label or split,
                customdata=[[k, n] for _, k, n in stats], line=dict(color=colour, dash=dash, width=1.8),
                marker=dict(color=colour, size=7 if dash is None else 5),
                hovertemplate=f"{name}<br>training fraction %{{x:{FRAC_FORMAT}}}: median %{{y:,.0f}} steps<br>"
                              f"%{{customdata[0]}} of %{{customdata[1]}} seeds reached 99 %<extra></extra>"))
        undefined = [(f, k, n, r) for f, (m, k, n), r in zip(fracs, val, at) if np.isnan(m) and n > 0]
        if undefined:
            budgets = [_num(r, "steps").max() for _, _, _, r in undefined]
            top = np.nanmax([*_num(table, "steps"), *_num(table, VAL99), *_num(table, TRAIN99), 1.0])
            budgets = [float(b) if np.isfinite(b) else float(top) for b in budgets]
            text = [f"{label + ': ' if label else ''}median undefined at training fraction {pct(f)}: only {k} of "
                    f"{n} seeds reached 99 % validation accuracy within {steps_text(b)} steps"
                    for (f, k, n, _), b in zip(undefined, budgets)]
            fig.add_trace(go.Scatter(x=[u[0] for u in undefined], y=budgets, mode="markers", text=text,
                                     name="median undefined (fewer than half the seeds reached 99 %)",
                                     legendgroup="undefined", showlegend=not shown["undefined"],
                                     hovertemplate="%{text}<extra></extra>",
                                     marker=dict(color=colour, size=11, symbol="triangle-up-open")))
            shown["undefined"] = True
    _frac_axis(fig)
    fig.update_yaxes(title_text="steps to 99 % accuracy (log scale)", type="log")
    fig.update_layout(title=dict(text=title or "Steps until 99 % accuracy vs training fraction", x=0.01))
    return finish(fig, height=440)


# --- Nanda et al.'s training-fraction sweep -----------------------------------------------------------------------
VAL_LOSS_STEPS = {"steps_to_val_loss_lnN": "below ln N (chance)", "steps_to_val_loss_1": "below 1",
                  "steps_to_val_loss_0.1": "below 0.1"}


def _has_loss_steps(s: SweepTable) -> bool:
    return s.varies("frac") and any(_num(s.table, c).notna().any() for c in VAL_LOSS_STEPS)


@figure("val_loss_steps_vs_frac", page="sweep", title="Steps until validation loss falls vs training fraction",
        time_axis=False,
        caption="Median over seeds of the first step at which validation loss falls below ln N (chance level), "
                "below 1 and below 0.1: Nanda et al.'s training-fraction sweep. A fraction where no seed got there "
                "within the budget has no point.",
        reproduces="Nanda et al. 2023 (training-fraction sweep)", applies=_has_loss_steps,
        inputs=lambda s: dict(table=s.table))
def fig_val_loss_steps_vs_frac(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Median over seeds of ``steps_to_val_loss_lnN``, ``_1`` and ``_0.1`` vs training fraction, log y, one line
    per threshold; faint markers: single runs."""
    table = with_results(table)
    if not len(table):
        return empty("no run of the sweep has results yet")
    fig = go.Figure()
    fracs = _fracs(table)
    for i, (column, label) in enumerate(VAL_LOSS_STEPS.items()):
        colour = PALETTE[i % len(PALETTE)]
        steps = _num(table, column)
        med = [float(steps[table["frac"] == f].median()) for f in fracs]
        fig.add_trace(go.Scatter(x=table["frac"].astype(float), y=steps, mode="markers", showlegend=False,
                                 marker=dict(color=colour, size=6, opacity=0.35), hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=fracs, y=med, mode="lines+markers", name=f"validation loss {label}",
                                 line=dict(color=colour, width=1.8), marker=dict(color=colour, size=7),
                                 hovertemplate=f"validation loss {label}<br>training fraction %{{x:{FRAC_FORMAT}}}: "
                                               f"step %{{y:,.0f}}<extra></extra>"))
    _frac_axis(fig)
    fig.update_yaxes(title_text="first step (log scale)", type="log")
    fig.update_layout(title=dict(text=title or "Steps until validation loss falls vs training fraction", x=0.01))
    return finish(fig, height=440)


# --- Figure 2 (left and right), Figure 6 ---------------------------------------------------------------------
@figure("best_val_vs_frac", page="sweep", title="Best validation accuracy vs training fraction", time_axis=False,
        caption=lambda s: f"Mean over seeds{s.per} of the best validation accuracy, the bars spanning the worst and "
                          f"best seed: below a threshold fraction the training set is memorised but never generalised.",
        reproduces=lambda s: SERIES_FIGURE.get(s.series, "Figures 2 and 6 (their layout)"),
        applies=lambda s: s.varies("frac"), inputs=lambda s: dict(table=s.table, series=s.series))
def fig_best_val_vs_frac(table: pd.DataFrame, series: str | None = None, title: str | None = None) -> go.Figure:
    """Mean over seeds of the best validation accuracy vs training fraction, one line per value of
    ``series``; error bars: min and max over the seeds (where a point has more than one)."""
    table = with_results(table)
    if not len(table):
        return empty("no run of the sweep has results yet")
    fig = go.Figure()
    for i, (label, rows) in enumerate(_groups(table, series)):
        colour = PALETTE[i % len(PALETTE)]
        fracs = _fracs(rows)
        values = [_num(rows[rows["frac"] == f], "best_val_acc").dropna() for f in fracs]
        mean = np.array([v.mean() if len(v) else np.nan for v in values])
        lo = np.array([v.min() if len(v) else np.nan for v in values])
        hi = np.array([v.max() if len(v) else np.nan for v in values])
        n = [len(v) for v in values]
        name = label or "best validation accuracy"
        fig.add_trace(go.Scatter(
            x=fracs, y=mean, mode="lines+markers", name=name, legendgroup=name,
            line=dict(color=colour, width=1.8), marker=dict(color=colour, size=7),
            error_y=dict(type="data", symmetric=False, array=hi - mean, arrayminus=mean - lo, visible=max(n) > 1,
                         thickness=1.2, width=4, color=colour),
            customdata=np.column_stack([n, lo, hi]),
            hovertemplate=f"{name}<br>training fraction %{{x:{FRAC_FORMAT}}}: mean %{{y:.1%}} over "
                          f"%{{customdata[0]}} seeds<br>min %{{customdata[1]:.1%}}, max %{{customdata[2]:.1%}}"
                          f"<extra></extra>"))
    _frac_axis(fig)
    fig.update_yaxes(title_text="best validation accuracy", tickformat=".0%", range=[-0.02, 1.04])
    fig.update_layout(title=dict(text=title or "Best validation accuracy vs training fraction", x=0.01))
    return finish(fig, height=440)


# --- the grid at a glance --------------------------------------------------------------------------------------
def _tick(column: str, value: Any) -> str:
    if column == "frac":
        return pct(float(value))
    return esc(f"{value:g}" if isinstance(value, float) else value)


def _cell_text(value: str, v: float) -> str:
    if not np.isfinite(v):
        return ""
    if value.endswith("_acc"):
        return pct(v)
    return steps_text(round(v)) if value.startswith("steps") else f"{v:.3g}"


@figure("heatmap", page="sweep", title="Mean best validation accuracy over seeds", time_axis=False,
        caption=lambda s: f"Best validation accuracy of every cell of the grid (mean over seeds), one row per "
                          f"{s.series}: the edge between the dark and the bright cells is each row's threshold fraction.",
        reproduces="every cell of the grid at a glance", applies=lambda s: s.varies("frac") and s.series is not None,
        inputs=lambda s: dict(table=s.table, rows=s.series))
def fig_sweep_heatmap(table: pd.DataFrame, rows: str, cols: str = "frac", value: str = "best_val_acc",
                      title: str | None = None) -> go.Figure:
    """Mean over seeds (and any other axis) of ``value`` per (``rows``, ``cols``) cell, with the value as text;
    NA values (e.g. never reached 99 %) are left out of the mean, an empty cell has none."""
    table = with_results(table)
    for column in (rows, cols, value):
        if column not in table.columns:
            raise GrokscopeError(f"the sweep table has no column {column!r}")
    if not len(table):
        return empty("no run of the sweep has results yet")
    row_keys = list(pd.unique(table[rows]))
    col_keys = list(pd.unique(table[cols]))
    if pd.api.types.is_numeric_dtype(table[cols]):
        col_keys = sorted(col_keys)
    means = table.assign(_v=_num(table, value)).groupby([rows, cols], sort=False)["_v"].mean()
    z = np.array([[means.get((r, c), np.nan) for c in col_keys] for r in row_keys], dtype=np.float64)
    text = [[_cell_text(value, v) for v in line] for line in z]
    what = VALUE_TITLES.get(value, value)
    acc = value.endswith("_acc")
    fig = go.Figure(go.Heatmap(
        z=z, x=[_tick(cols, c) for c in col_keys], y=[_tick(rows, r) for r in row_keys], text=text,
        texttemplate="%{text}", colorscale="Viridis", zmin=0.0 if acc else None, zmax=1.0 if acc else None,
        colorbar=dict(title=dict(text=esc(what)), tickformat=".0%" if acc else None),
        hovertemplate=f"{esc(rows)} %{{y}}, {esc(cols)} %{{x}}: %{{text}} (mean over seeds)<extra></extra>"))
    fig.update_xaxes(title_text="training fraction" if cols == "frac" else esc(cols), type="category", showgrid=False)
    fig.update_yaxes(title_text=esc(rows), type="category", autorange="reversed", showgrid=False)
    longest = max((len(str(_tick(rows, r))) for r in row_keys), default=4)
    fig.update_layout(title=dict(text=title or f"Mean {what} over seeds", x=0.01),
                      margin=dict(l=min(320, 40 + 7 * longest)))  # room for long row labels (operation names)
    return finish(fig, height=max(320, 34 * len(row_keys) + 170))


# --- Figure 7 ------------------------------------------------------------------------------------------------------
def _both(table: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    x, y = _num(table, "sharpness"), _num(table, "final_val_acc")
    return x, y, np.isfinite(x) & np.isfinite(y)


def spearman(table: pd.DataFrame) -> tuple[float, float, int]:
    """Spearman's rho between ``sharpness`` and ``final_val_acc`` and its p-value, over the n rows with both
    values finite: (rho, p, n); rho and p are NaN when n < 3 or a column is constant there."""
    x, y, ok = _both(table)
    n = int(ok.sum())
    if n < 3:
        return float("nan"), float("nan"), n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns NaN
        rho, p = spearmanr(x[ok], y[ok])
    return float(rho), float(p), n


def spearman_text(table: pd.DataFrame) -> str:
    """'Spearman ρ = -0.80 (p = 1.4e-05, n = 20 runs)', or why it is undefined."""
    rho, p, n = spearman(table)
    if n < 3:
        return f"Spearman ρ undefined ({n} run{'s' if n != 1 else ''} with both values; it needs 3)"
    if not np.isfinite(rho):
        return f"Spearman ρ undefined (a constant column over the {n} runs)"
    return f"Spearman ρ = {rho:.3f} (p = {p:.2g}, n = {n} runs)"


def correlation_interval(x, y, method: str = "spearman", n_boot: int = 2000, level: float = 0.95,
                         seed: int = 0) -> tuple[float, float, float]:
    """(rho, lo, hi): Spearman's (``method="spearman"``) or Pearson's correlation of the pairs (x, y) with
    finite values, and its percentile bootstrap interval at ``level`` over ``n_boot`` resamples of the
    pairs (``scipy.stats.bootstrap``, paired, seeded). NaN when fewer than 3 pairs or a constant column."""
    if method not in ("spearman", "pearson"):
        raise GrokscopeError(f"method must be spearman or pearson, got {method!r}")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan")
    stat = spearmanr if method == "spearman" else pearsonr

    def rho(a, b):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a resample with a constant column: NaN, left out below
            return stat(a, b)[0]

    res = bootstrap((x, y), rho, paired=True, vectorized=False, n_resamples=n_boot, confidence_level=level,
                    method="percentile", random_state=np.random.default_rng(seed))
    return float(rho(x, y)), float(res.confidence_interval.low), float(res.confidence_interval.high)


@figure("sharpness", page="sweep", title="Sharpness vs validation accuracy", time_axis=False,
        caption="One point per run with a sharpness: in the paper the runs that generalise sit at flatter minima, a "
                "negative rank correlation between sharpness and validation accuracy.",
        reproduces="Figure 7", applies=lambda s: bool(np.isfinite(_num(s.table, "sharpness")).any()),
        inputs=lambda s: dict(table=s.table))
def fig_sharpness_vs_val(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Sharpness of the last checkpoint (x) vs final validation accuracy (y), one point per run that has both;
    the title gives Spearman's rho and its p-value. The x axis is logarithmic when the sharpness is positive
    and spans two decades or more."""
    x, y, ok = _both(table)
    heading = f"{title or 'Sharpness vs validation accuracy'}: {spearman_text(table)}"
    if not ok.any():
        fig = empty("no run has both a sharpness and a final validation accuracy")
        return fig.update_layout(title=dict(text=heading, x=0.01))
    rows = table[ok]
    names = rows["cell"] if "cell" in rows.columns else rows.index.astype(str)
    fig = go.Figure(go.Scatter(
        x=x[ok], y=y[ok], mode="markers", name="runs", marker=dict(color=PALETTE[0], size=8, opacity=0.75),
        text=[esc(c) for c in names],
        hovertemplate="%{text}<br>sharpness %{x:.4g}, validation accuracy %{y:.1%}<extra></extra>"))
    xs = x[ok]
    log_x = bool((xs > 0).all() and xs.max() >= 100 * xs.min())
    fig.update_xaxes(title_text="ε-sharpness of the final weights" + (" (log scale)" if log_x else ""),
                     type="log" if log_x else "linear")
    fig.update_yaxes(title_text="final validation accuracy", tickformat=".0%", range=[-0.02, 1.04])
    fig.update_layout(title=dict(text=heading, x=0.01), showlegend=False)
    return finish(fig, height=420)


__all__ = ["SweepTable", "SERIES_FIGURE",
           "fig_steps_vs_frac", "fig_best_val_vs_frac", "fig_sweep_heatmap", "fig_sharpness_vs_val", "fig_val_loss_steps_vs_frac", "spearman", "correlation_interval",
           "spearman_text", "median_steps", "series_label", "with_results"]
