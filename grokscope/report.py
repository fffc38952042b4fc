"""``build_report``: a run's stored results -> one self-contained HTML page (``analyses/<run>/report.html``).

    checkpoints/<run> (config, metrics) + analyses/<run>/*.csv  ->  build_report()  ->  report.html

Nothing is recomputed: the page is drawn from the metrics and the analysis tables (the phases too,
when the ``phases`` table is missing they are derived from the metrics and tables at hand, which is
cheap). At the top a summary (task, model, recipe, the steps where train and validation accuracy
reached 99 %, each phase with the internal change that marks it); then one section per analysis, with
the figures of ``grokscope.figures``; an analysis that was not run is a line saying how to run it.
``compare_report`` overlays several runs (a sweep's page is ``grokscope.sweep.report``). Also the
``grokscope report`` sub-command.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import GrokscopeError
from .figures import SECTIONS
from .figures.common import PHASE_COLOURS, PHASE_LABELS, figures_on
from .figures.common import esc as _e
from .figures.inputs import ReportRun, load_report_run
from .figures.page import Page
from .figures.summary import key_steps, model_text, reached_text, recipe_text, steps_text, task_text, verdict
from .results import default_out_dir
from .run import Run

REPORT_FILE = "report.html"


# --- the page ------------------------------------------------------------------------------------------
def _phase_items(phases: pd.DataFrame | None) -> str:
    if phases is None or not len(phases):
        return '<p class="absent">No phases: the run has no metrics.</p>'
    items = []
    for _, row in phases.iterrows():
        phase, present = str(row["phase"]), str(row.get("present", True)).strip().lower() == "true"
        chip = f'<span class="chip" style="background:{PHASE_COLOURS.get(phase, "#999")}"></span>'
        cls = "" if present else ' class="absent"'
        items.append(f"<li{cls}>{chip}{_e(row.get('description', PHASE_LABELS.get(phase, phase)))}</li>")
    return '<ul class="phases">' + "".join(items) + "</ul>"


def _leadlag_items(r: ReportRun) -> str:
    """The lead/lag sentences of the measures that moved, in the order they moved."""
    ll = r.tables.results.get("phases_leadlag")
    if ll is None or not len(ll) or "moved" not in ll.columns:
        return ""
    moved = ll[ll["moved"].astype(str).str.lower() == "true"].copy()
    moved["_at"] = pd.to_numeric(moved["step"], errors="coerce")
    items = "".join(f"<li>{_e(t)}</li>" for t in moved.sort_values("_at")["description"])
    return f'<h3>Lead and lag: when each measure moved</h3><ul class="leadlag">{items}</ul>' if items else ""


def _published(r: ReportRun) -> str:
    """Beside the published numbers, for a run in Nanda et al.'s setting."""
    from .analyses.phases import is_nanda_setting, published_comparison

    if r.config is None or not is_nanda_setting(r.config):
        return ""
    rows = published_comparison(r.tables.phases, r.tables.results.get("fourier"))
    body = "".join(f"<tr><td>{_e(a)}</td><td>{_e(b)}</td><td>{_e(c)}</td></tr>" for a, b, c in rows)
    return ('<h3>Beside Nanda et al. 2023 (same setting)</h3><table class="runs published"><tr><th></th><th>this run</th>'
            f'<th>published</th></tr>{body}</table><p class="note">Their phases are read off their curves (epochs '
            "= full-batch steps); their sequence is x y = (no operation token) and their seed differs, so the key "
            "frequencies differ: the count is what carries over.</p>")


def _summary(r: ReportRun) -> str:
    k = key_steps(r.tables.metrics)
    facts = []
    if r.config is not None:
        facts += [("task", task_text(r.config)), ("model", model_text(r.config)), ("recipe", recipe_text(r.config))]
    facts += [("train accuracy ≥ 99 %", reached_text(k.train, k.best_train)),
              ("validation accuracy ≥ 99 %", reached_text(k.val, k.best_val, k.best_val_step))]
    if r.run_path is not None:
        from .provenance import describe_run

        if (trained_with := describe_run(r.run_path)) is not None:
            facts.append(("trained with", trained_with))
        facts.append(("run directory", str(r.run_path)))
    facts.append(("results folder", str(r.results_path)))
    legend = "".join(f'<span><span class="chip" style="background:{c}"></span>{PHASE_LABELS[p]}</span>'
                     for p, c in PHASE_COLOURS.items())
    toc = " ".join(f'<a href="#{s.id}">{_e(s.title)}</a>' for s in SECTIONS)
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in r.notes)
    return (f'<header class="summary"><h1>grokscope report: {_e(r.tables.name)}</h1>'
            f'<p class="verdict">{_e(verdict(k))}</p><dl class="facts">'
            + "".join(f"<dt>{_e(a)}</dt><dd>{_e(b)}</dd>" for a, b in facts) + "</dl>"
            + f"<h2>Phases</h2>{_phase_items(r.tables.phases)}{_leadlag_items(r)}{_published(r)}{notes}"
            + f'<div class="controls legend">{legend}<button id="xscale" data-scale="log">step axes: log '
              f"(click for linear)</button></div><nav class=\"toc\">{toc}</nav></header>")


def _how_to_run(r: ReportRun, names: list[str]) -> str:
    """HTML: why these analyses are missing and the command that computes them."""
    parts = [f"{_e(n)} does not apply to this task: {_e(r.not_applicable[n])}." for n in names if n in r.not_applicable]
    todo = [n for n in names if n not in r.not_applicable]
    if todo:
        run = str(r.run_path) if r.run_path is not None else "checkpoints/<run>"
        default = r.run_path is not None and r.results_path == default_out_dir(r.run_path)
        out = "" if default else f" --out {r.results_path}"
        analyze_cmd = f"grokscope analyze --ckpt-dir {run} --only {','.join(todo)}{out}"
        report_cmd = f"grokscope report {run}" + ("" if default else f" --results {r.results_path}")
        parts.insert(0, f"Not computed: {_e(', '.join(todo))}. Run <code>{_e(analyze_cmd)}</code>, "
                        f"then <code>{_e(report_cmd)}</code>.")
    return " ".join(parts)


def _section(page: Page, r: ReportRun, section, log_x: bool) -> None:
    page.add(f'<section id="{section.id}"><h2>{_e(section.title)}</h2>')
    missing: list[str] = []
    for spec in figures_on("run", section.id):
        if spec.drawable(r.tables):
            page.figure(spec.build(r.tables, log_x), spec.name, spec.caption_for(r.tables), spec.time_axis)
        elif spec.needs == ("metrics",):
            page.add('<p class="missing">No metrics: the run directory was not found.</p>')
        missing += [n for n in (*spec.needs, *spec.optional)
                    if n != "metrics" and not r.tables.has(n) and n not in missing]
    if missing:
        page.add(f'<p class="missing">{_how_to_run(r, missing)}</p>')
    page.add("</section>")


def build_report(source: Run | str | Path, out: str | Path | None = None, results: str | Path | None = None,
                 log_x: bool = True) -> Path:
    """Write the HTML report of a run and return its path.

    ``source``: a run directory, a ``Run`` or a results folder (``analyses/<run>``); ``results``: the
    results folder when it is not the default ``analyses/<run dir name>``; ``out``: the file (default
    ``<results folder>/report.html``); ``log_x``: log step axes (a button on the page switches them).
    """
    r = load_report_run(source, results)
    page = Page(f"grokscope report: {r.tables.name}")
    page.add(_summary(r))
    for section in SECTIONS:
        _section(page, r, section, log_x)
    return page.write(Path(out) if out is not None else r.results_path / REPORT_FILE)


# --- several runs ----------------------------------------------------------------------------------------
def compare_report(sources: list[Run | str | Path], out: str | Path, log_x: bool = True) -> Path:
    """Write one page that overlays the curves of several runs (each a run directory or results folder)."""
    if len(sources) < 2:
        raise GrokscopeError("--compare needs at least two runs")
    runs: dict[str, ReportRun] = {}
    for source in sources:
        r = load_report_run(source)
        name, i = r.tables.name, 2
        if name in runs and r.run_path is not None and r.run_path.name != name:
            name = f"{name} ({r.run_path.name})"  # two runs with one config name: add the folder's
        while name in runs:
            name, i = f"{r.tables.name} ({i})", i + 1
        runs[name] = r
    page = Page("grokscope comparison: " + ", ".join(runs))
    rows = []
    for name, r in runs.items():
        k = key_steps(r.tables.metrics)
        cfg = r.config
        rows.append([name, task_text(cfg) if cfg else "?", recipe_text(cfg) if cfg else "?",
                     reached_text(k.train, k.best_train), reached_text(k.val, k.best_val, k.best_val_step),
                     steps_text(k.delay) if k.delay is not None else "–"])
    head = ["run", "task", "recipe", "train ≥ 99 %", "validation ≥ 99 %", "delay (steps)"]
    table = ('<table class="runs"><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>")
    page.add(f'<header class="summary"><h1>grokscope comparison of {len(runs)} runs</h1>{table}'
             f'<p>Dotted vertical lines: the step where each run\'s validation accuracy first reached 99 %.</p>'
             f'<div class="controls"><button id="xscale" data-scale="log">step axes: log (click for linear)'
             f"</button></div></header>")
    tables = {n: r.tables for n, r in runs.items()}
    for spec in figures_on("compare"):
        _compare_section(page, spec, tables, log_x)
    return page.write(out)


def _compare_section(page: Page, spec, tables: dict, log_x: bool) -> None:
    """One comparison figure in its own section, drawn from the runs that have what it needs; the others named."""
    have = {n: t for n, t in tables.items() if spec.has is None or spec.has(t)}
    page.add(f'<section id="{spec.section}"><h2>{_e(spec.title)}</h2>')
    if have:
        page.figure(spec.build(have, log_x), spec.name, spec.caption_for(have), spec.time_axis)
    lacking = [n for n in tables if n not in have]
    if lacking:
        page.add(f'<p class="missing">Not computed for {_e(", ".join(lacking))} '
                 f"(see each run's report for how to compute it).</p>")
    page.add("</section>")


__all__ = ["build_report", "compare_report", "REPORT_FILE"]
