"""Several runs on one set of axes (e.g. with and without weight decay): one colour per run.

Each run's grokking step (validation accuracy first at 99 %) is a dotted vertical line in its colour on
every comparison plot, in place of the phase bands, which would overlap from run to run.

The comparison page (``grokscope report --compare``) draws the figures registered with ``page="compare"``,
each in its own section: a ``@figure(..., page="compare")`` function takes the runs'
``{name: RunTables}``; ``@comparison(...)`` registers the common kind, one curve per run, from a
function that gives a run's series (empty when the run lacks its table: the page names those runs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import PALETTE, RunTables, by_step, curve, esc, figure, finish, first_at, step_x, time_axes


def first_step_at(metrics: pd.DataFrame | None, column: str, level: float = 0.99) -> int | None:
    """The first step where ``column`` of the metrics reaches ``level``, or None."""
    return first_at(by_step(metrics, column), level)


def _marks(fig: go.Figure, grok: dict[str, int | None], colours: dict[str, str], log_x: bool, n_rows: int) -> None:
    for name, step in grok.items():
        if step is None:
            continue
        x = float(step_x([step], log_x)[0])
        for row in range(1, n_rows + 1):
            fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, xref="x" if row == 1 else f"x{row}",
                          yref=("y" if row == 1 else f"y{row}") + " domain", layer="below",
                          line=dict(color=colours[name], width=1.5, dash="dot"))


def run_colours(names) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


@figure("accuracy", page="compare", title="Accuracy and loss",
        caption="Each colour is a run: compare where the solid (validation) curves rise, long after the dashed "
                "(train) ones, to see which recipe groks first.",
        inputs=lambda runs: dict(metrics_by_run={n: t.metrics for n, t in runs.items()}))
def fig_compare_accuracy(metrics_by_run: dict[str, pd.DataFrame], log_x: bool = True,
                         title: str = "Accuracy and loss of each run") -> go.Figure:
    """Validation (solid) and train (dashed) accuracy and loss of several runs; names are escaped."""
    colours = run_colours(metrics_by_run)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=["accuracy (solid: validation, dashed: train)", "loss"])
    for name, m in metrics_by_run.items():
        label = esc(name)
        for row, column in ((1, "acc"), (2, "loss")):
            for split, dash in (("val", None), ("train", "dash")):
                s = by_step(m, f"{split}_{column}")
                fig.add_trace(curve(s.index, s.values, f"{label} ({'validation' if split == 'val' else 'train'})",
                                    colours[name], dash=dash, log_x=log_x, legendgroup=label,
                                    showlegend=row == 1), row=row, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[-0.02, 1.04], row=1, col=1)
    fig.update_yaxes(title_text="loss (log scale)", type="log", row=2, col=1)
    _marks(fig, {n: first_step_at(m, "val_acc") for n, m in metrics_by_run.items()}, colours, log_x, 2)
    fig.update_layout(title=dict(text=title, x=0.01))
    return finish(time_axes(fig, log_x, 2), 2)


def fig_compare_series(series_by_run: dict[str, pd.Series], title: str, y_title: str, log_y: bool = False,
                       log_x: bool = True, grok_steps: dict[str, int | None] | None = None) -> go.Figure:
    """One curve per run (Series indexed by step), dotted lines at ``grok_steps``; names are escaped."""
    colours = run_colours(series_by_run)
    fig = go.Figure()
    for name, s in series_by_run.items():
        fig.add_trace(curve(s.index, s.values, esc(name), colours[name], log_x=log_x))
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear")
    _marks(fig, {n: (grok_steps or {}).get(n) for n in series_by_run}, colours, log_x, 1)
    fig.update_layout(title=dict(text=title, x=0.01))
    return finish(time_axes(fig, log_x), 1, height=380)


@dataclass(frozen=True)
class Comparison:
    """A one-curve-per-run comparison, as data (``COMPARISONS``); its figure is in the registry."""

    name: str
    title: str
    caption: str
    y_title: str
    series: Callable[[RunTables], pd.Series]  # empty when the run lacks the table
    log_y: bool = False


COMPARISONS: list[Comparison] = []


def comparison(name: str, *, title: str, caption: str, y_title: str, log_y: bool = False):
    """Register, on the comparison page, one curve per run of the series the decorated function gives
    (``RunTables -> Series`` indexed by step, empty when the run lacks it) with ``fig_compare_series``."""

    def deco(series: Callable[[RunTables], pd.Series]):
        def inputs(runs: dict[str, RunTables]) -> dict:
            return dict(series_by_run={n: series(t) for n, t in runs.items()}, title=title, y_title=y_title,
                        log_y=log_y, grok_steps={n: first_step_at(t.metrics, "val_acc") for n, t in runs.items()})

        figure(name, page="compare", title=title, caption=caption, inputs=inputs,
               has=lambda t: len(series(t)) > 0)(fig_compare_series)
        COMPARISONS.append(Comparison(name, title, caption, y_title, series, log_y))
        return series

    return deco


@comparison("weight_norm", title="Total weight norm", y_title="‖θ‖₂",
            caption="Weight decay makes the norm fall before grokking; without it the norm keeps growing and "
                    "grokking, if it comes, comes later.")
def total_norm(t: RunTables) -> pd.Series:
    s = by_step(t.metrics, "weight_norm")
    return s if len(s) else by_step(t.results.get("weight_norms"), "norm", {"group": "total"})


@comparison("embed_gini", title="Fourier Gini of the embedding", y_title="Gini",
            caption="The run whose embedding concentrates on a few frequencies first is the one that groks first.")
def embed_gini(t: RunTables) -> pd.Series:
    return by_step(t.results.get("fourier"), "embed_gini")


@comparison("restricted_loss", title="Restricted loss", y_title="loss (log scale)", log_y=True,
            caption="The restricted loss falls when the Fourier circuit alone explains the answers; compare when "
                    "it falls with each run's grokking step.")
def restricted_loss(t: RunTables) -> pd.Series:
    return by_step(t.results.get("fourier"), "restricted_loss")


@comparison("excluded_loss", title="Excluded loss", y_title="loss (log scale)", log_y=True,
            caption="The excluded loss rises when the memorised answers come to depend on the Fourier circuit.")
def excluded_loss(t: RunTables) -> pd.Series:
    return by_step(t.results.get("fourier"), "excluded_loss")


@comparison("neuron_gini", title="Gini of the MLP neuron norms (all layers)", y_title="Gini",
            caption="Sparser neuron norms (higher Gini) mark the small set of neurons that takes over at grokking.")
def neuron_gini(t: RunTables) -> pd.Series:
    return by_step(t.results.get("sparsity"), "gini", {"scope": "all"})
