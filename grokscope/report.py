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
from .figures.summary import (TOP_MOVES, key_steps, loss_spikes, model_text, phase_rows, reached_text, recipe_text,
                              spike_text, steps_text, task_text, verdict)
from .results import default_out_dir
from .run import Run

REPORT_FILE = "report.html"


# --- the page ------------------------------------------------------------------------------------------
def _phase_table(r: ReportRun) -> str:
    """The opening table: one row per phase, its steps, what set its boundaries and the measures inside
    the network that moved most (the rest, and the phase's full sentence, behind a toggle)."""
    rows = phase_rows(r.tables.phases, r.tables.metrics, r.tables.results)
    if not rows:
        return '<p class="absent">No phases: the run has no metrics.</p>'
    body = []
    for row in rows:
        chip = f'<span class="chip" style="background:{PHASE_COLOURS.get(row.phase, "#999")}"></span>'
        name = f"<td>{chip}{_e(PHASE_LABELS.get(row.phase, row.phase))}</td>"
        if not row.present:
            body.append(f'<tr class="absent">{name}<td>absent</td><td colspan="2">{_e(row.bounds)}</td></tr>')
            continue
        top = "".join(f"<li>{_e(t)}</li>" for t in row.moves[:TOP_MOVES]) or "<li>no measure moved by a meaningful amount</li>"
        rest = "".join(f"<li>{_e(t)}</li>" for t in row.moves[TOP_MOVES:])
        n_more = len(row.moves) - TOP_MOVES
        more = f"{n_more} more measure{'s' if n_more > 1 else ''}, and " if rest else ""
        details = (f"<details><summary>{more}the phase in full</summary>{f'<ul>{rest}</ul>' if rest else ''}"
                   f"<p>{_e(row.description)}</p></details>")
        body.append(f"<tr>{name}<td>{_e(row.steps)}</td><td>{_e(row.bounds)}</td>"
                    f"<td><ul>{top}</ul>{details}</td></tr>")
    return ('<table class="phase-summary"><thead><tr><th>phase</th><th>steps</th><th>what set its boundaries</th>'
            "<th>what changed inside the network (largest change first)</th></tr></thead><tbody>"
            + "".join(body) + "</tbody></table>")


def _leadlag_table(r: ReportRun) -> str:
    """The lead/lag table (click a header to sort): when each measure made its main change, against
    the validation loss's."""
    from .analyses.phases import BY_KEY, fmt

    ll = r.tables.results.get("phases_leadlag")
    if ll is None or not len(ll) or "moved" not in ll.columns:
        return ""
    rows = []
    ll = ll.assign(_at=pd.to_numeric(ll["step"], errors="coerce").where(ll["moved"].astype(str).str.lower() == "true"))
    for _, x in ll.sort_values("_at", kind="stable").iterrows():  # in the order they moved; unmoved last
        m = BY_KEY.get(str(x["measure"]))
        moved = str(x["moved"]).strip().lower() == "true" and not pd.isna(x["step"])
        step = int(x["step"]) if moved else None
        lead = int(x["lead"]) if moved and not pd.isna(x["lead"]) else None
        vals = f"{fmt(m, float(x['value_from']))} → {fmt(m, float(x['value_to']))}"
        verb = ("fell" if int(x["direction"]) < 0 else "rose") if moved else "did not move"
        if str(x["measure"]) == "val_loss":
            when = "the reference" if moved else ""
        elif lead is None:
            when = ""
        else:
            when = f"{abs(lead)} steps {'before' if lead > 0 else 'after'}" if lead else "with it"
        cells = [(str(x["label"]), str(x["label"])), (verb, verb), (steps_text(step) if moved else "–", step),
                 (vals, ""), (fmt(m, float(x["level"])) if moved else "–", ""), (when, lead)]
        rows.append("<tr>" + "".join(f'<td data-sort="{"" if k is None else _e(k)}">{_e(v)}</td>' for v, k in cells)
                    + "</tr>")
    head = ["measure", "change", "step", "from → to", "timed at", "lead on validation loss"]
    return ('<h3>Lead and lag: when each measure made its main change</h3><p class="note-plain">Click a column to '
            "sort. A loss is timed where it crosses 1 nat, any other measure half-way through its change; the lead "
            "counts the steps before the validation loss's own change (negative: after).</p>"
            '<table class="runs sortable leadlag"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _published(r: ReportRun) -> str:
    """Beside the published numbers, for a run in Nanda et al.'s setting."""
    from .analyses.phases import is_nanda_setting, published_comparison

    if r.config is None or not is_nanda_setting(r.config):
        return ""
    rows = published_comparison(r.tables.phases, r.tables.results.get("fourier"))
    body = "".join(f"<tr><td>{_e(a)}</td><td>{_e(b)}</td><td>{_e(c)}</td></tr>" for a, b, c in rows)
    return ('<h3>Beside Nanda et al. 2023 (same setting)</h3><table class="runs published"><tr><th></th><th>this run</th>'
            f'<th>published</th></tr>{body}</table><p class="note">Their phases are those of the paper\'s text '
            "(memorisation 0-1.4k, circuit formation 1.4k-9.4k, clean-up 9.4k-14k epochs; epochs = full-batch "
            "steps); their sequence is x y = (no operation token) and their seed differs, so the key "
            "frequencies differ: the count is what carries over.</p>")


def _summary(r: ReportRun) -> str:
    k = key_steps(r.tables.metrics)
    facts = []
    if r.config is not None:
        facts += [("task", task_text(r.config)), ("model", model_text(r.config)), ("recipe", recipe_text(r.config))]
    facts += [("train accuracy ≥ 99 %", reached_text(k.train, k.best_train)),
              ("validation accuracy ≥ 99 %", reached_text(k.val, k.best_val, k.best_val_step))]
    facts += [("train-loss spike", spike_text(s)) for s in loss_spikes(r.tables.metrics, r.tables.phases)]
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
            + f"<h2>Phases: what changed inside the network</h2>{_phase_table(r)}{_leadlag_table(r)}{_published(r)}{notes}"
            + f'<div class="controls legend">{legend}<button id="xscale" data-scale="log">step axes: log '
              f"(click for linear)</button></div><nav class=\"toc\">{toc}</nav></header>")


def _how_to_run(r: ReportRun, names: list[str]) -> str:
    """HTML: why these analyses are missing and the command that computes them."""
    from .analyses.base import unavailable

    parts = [f"{_e(unavailable(n, r.not_applicable[n]))}." for n in names if n in r.not_applicable]
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
    drawn = 0
    for spec in figures_on("run", section.id):
        if spec.drawable(r.tables):
            page.figure(spec.build(r.tables, log_x), spec.name, spec.caption_for(r.tables), spec.time_axis)
            drawn += 1
        elif spec.needs == ("metrics",):
            page.add('<p class="missing">No metrics: the run directory was not found.</p>')
        missing += [n for n in (*spec.needs, *spec.optional)
                    if n != "metrics" and not r.tables.has(n) and n not in missing]
    if missing:
        page.add(f'<p class="missing">{_how_to_run(r, missing)}</p>')
    elif not drawn and section.absent:
        page.add(f'<p class="missing">{_e(section.absent)}</p>')
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
