"""The HTML report of a sweep (a grid of runs), drawn from its results table: ``sweep_report``.

    <sweep>/results table (``Sweep.table``)  ->  sweep_report()  ->  <sweep>/report.html

Nothing is recomputed. The figures are those registered for the sweep page (``@figure(..., page="sweep")``
in ``grokscope.figures.sweep``), each drawn when the swept axes call for it, never by the preset's name:
steps to 99 % and best validation accuracy against the training fraction when it varies (one line per
value of the first other axis), a heatmap of the grid, sharpness against validation accuracy when it
was computed; then a table of every run. ``sweep_figures`` gives the same figures to a notebook.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..figures.common import figures_on
from ..figures.common import esc as _e
from ..figures.page import Page
from ..figures.summary import pct, steps_text
from ..figures.sweep import SweepTable, with_results
from .folder import HOPELESS, REPORT_FILE, load_sweep, saved_text
from .presets import SWEEP_PRESET_TEXT

SCALE_TEXT = {"small": "small (a reduced grid and budget that runs on a CPU)", "paper": "paper (the paper's settings)"}
STATUSES = ("done", HOPELESS, "partial", "pending")


@dataclass
class SweepFigure:
    name: str
    figure: go.Figure
    caption: str  # plain text, one sentence
    reproduces: str  # plain text: the paper figure it redraws
    time_axis: bool = False  # a step axis (the page's figures are over the grid: none so far)


def _plan(sweep, table: pd.DataFrame) -> list[SweepFigure]:
    """The sweep page's registered figures that apply to the sweep's axes (none before any run has results)."""
    if not len(with_results(table)):
        return []
    source = SweepTable(table, list(sweep.axes))
    return [SweepFigure(spec.name, spec.build(source), spec.caption_for(source), spec.reproduces_for(source),
                        spec.time_axis)
            for spec in figures_on("sweep") if spec.drawable(source)]


def sweep_figures(source) -> dict[str, go.Figure]:
    """The sweep report's figures by name, for a notebook; ``source``: a sweep or its folder."""
    sweep = _load_sweep(source)
    return {f.name: f.figure for f in _plan(sweep, sweep.table)}


def _load_sweep(source):
    return load_sweep(source) if isinstance(source, (str, os.PathLike)) else source


def _value(v: Any) -> str:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return "–"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _reached(row: pd.Series, column: str) -> str:
    step = row.get(column)
    if step is not None and not pd.isna(step):
        return steps_text(step)
    return {"done": "never", HOPELESS: "never (stopped)", "partial": "not yet"}.get(row.get("status"), "–")


def _status(row: pd.Series) -> str:
    status, last, steps = row.get("status"), row.get("last_step"), row.get("steps")
    if status in ("partial", HOPELESS) and last is not None and not pd.isna(last) and steps is not None \
            and not pd.isna(steps):
        return f"{status} ({'at ' if status == HOPELESS else ''}{steps_text(last)} of {steps_text(steps)} steps)"
    return _value(status)


def _runs_table(sweep, table: pd.DataFrame) -> str:
    coords = [c for c in dict.fromkeys([*sweep.axes, "op", "frac", "seed"]) if c in table.columns]
    head = [*coords, "run", "status", "train ≥ 99 %", "validation ≥ 99 %", "best validation accuracy",
            "run directory"]
    rows = []
    for _, row in table.iterrows():
        best = row.get("best_val_acc")
        rows.append([*(_value(row[c]) for c in coords), _value(row.get("cell")), _status(row),
                     _reached(row, "steps_to_train_99"), _reached(row, "steps_to_val_99"),
                     pct(best) if best is not None and not pd.isna(best) else "–", _value(row.get("run_dir"))])
    return ('<table class="runs"><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def _sweep_summary(sweep, table: pd.DataFrame, plan: list[SweepFigure]) -> str:
    counts = table["status"].value_counts() if "status" in table.columns else pd.Series(dtype=int)
    order = [*STATUSES, *(s for s in counts.index if s not in STATUSES)]
    runs = f"{len(table)} run{'s' if len(table) != 1 else ''}"
    if len(counts):
        runs += ": " + ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s, 0))
    facts = []
    if sweep.preset:
        facts.append(("preset", f"{sweep.preset}: {SWEEP_PRESET_TEXT.get(sweep.preset, 'a custom grid')}"))
    if sweep.scale:
        facts.append(("scale", SCALE_TEXT.get(sweep.scale, sweep.scale)))
    facts.append(("runs", runs))
    if counts.get(HOPELESS, 0):
        facts.append(("compute saved", f"the hopeless stop (--stop-hopeless) ended {counts[HOPELESS]} run"
                                       f"{'s' if counts[HOPELESS] != 1 else ''} early: {saved_text(table)}"))
    facts.append(("axes", " × ".join(f"{a} ({table[a].nunique()})" if a in table.columns else a for a in sweep.axes)
                  or "none"))
    facts.append(("fixed settings", ", ".join(f"{k} = {_value(v)}" for k, v in (sweep.fixed or {}).items()) or "none"))
    facts.append(("sweep folder", str(sweep.path)))
    notes = []
    done = int(counts.get("done", 0)) + int(counts.get(HOPELESS, 0))
    if not done:
        have = "the figures show the partial runs so far" if plan else "there is nothing to draw yet"
        notes.append(f"No run of this sweep is done yet: {have}; rebuild this page with "
                     f"`grokscope sweep-report {sweep.path}` when more have finished.")
    elif counts.get("partial", 0) or counts.get("pending", 0):
        notes.append(f"Only {done} of {len(table)} runs are done: partial runs count with their results so far, "
                     f"pending runs not at all.")
    source = SweepTable(table, list(sweep.axes))
    series = source.series
    pooled = [a for a in sweep.axes if a not in ("frac", "seed", series) and source.varies(a)]
    if pooled and plan:
        notes.append(f"The figures pool the runs over {', '.join(pooled)}: each point mixes its values "
                     f"(one line per {series} only).")
    items = "".join(f"<li>{_e(f.figure.layout.title.text or f.name)}: {_e(f.reproduces)}</li>" for f in plan)
    reproduces = f"<h2>What the figures reproduce</h2><ul>{items}</ul>" if plan else ""
    return (f'<header class="summary"><h1>grokscope sweep report: {_e(sweep.name)}</h1><dl class="facts">'
            + "".join(f"<dt>{_e(a)}</dt><dd>{_e(b)}</dd>" for a, b in facts) + "</dl>" + reproduces
            + "".join(f'<p class="note">{_e(n)}</p>' for n in notes) + "</header>")


def sweep_report(source, out: str | Path | None = None) -> Path:
    """Write the HTML report of a sweep and return its path.

    ``source``: a sweep (``grokscope.sweep.load_sweep``) or its folder; ``out``: the file (default
    ``<sweep folder>/report.html``). The figures follow the swept axes: steps to 99 % and best validation
    accuracy against the training fraction when it varies (one line per value of the first other axis),
    a heatmap of the grid, sharpness against validation accuracy when it was computed; then every run.
    """
    sweep = _load_sweep(source)
    table = sweep.table  # read once: a sweep folder's table is recomputed from its runs on each access
    plan = _plan(sweep, table)
    page = Page(f"grokscope sweep: {sweep.name}")
    page.add(_sweep_summary(sweep, table, plan))
    if plan:
        page.add('<section id="figures"><h2>Figures</h2>')
        for f in plan:
            page.figure(f.figure, f.name, f.caption, f.time_axis)
        page.add("</section>")
    page.add(f'<section id="runs"><h2>Runs</h2>{_runs_table(sweep, table)}</section>')
    return page.write(Path(out) if out is not None else Path(sweep.path) / REPORT_FILE)

