"""One registry for the figures of every page: a figure registered for one page (run, compare or sweep)
is drawn on that page, in its place, with its caption, and on no other page."""
from __future__ import annotations

import re
import types

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import grokscope.report as report
from grokscope.figures import FIGURES, REGISTRY, SECTIONS, RunTables, figure, figures_on
from grokscope.figures.common import PAGES
from grokscope.figures.inputs import ReportRun, report_figures
from grokscope.report import build_report, compare_report
from grokscope.sweep.report import sweep_figures, sweep_report

STEPS = [0, 10, 100, 1000]
MARK = {page: f"planted-{page}-figure" for page in PAGES}  # trace name, title and caption word of each page's figure


@pytest.fixture
def registry():
    """The registry, restored in place afterwards (every alias, FIGURES included, sees the same dicts)."""
    saved = {page: dict(specs) for page, specs in REGISTRY.items()}
    yield REGISTRY
    for page, specs in REGISTRY.items():
        specs.clear()
        specs.update(saved[page])


def _fig(name: str, y) -> go.Figure:
    return go.Figure(go.Scatter(x=list(range(len(y))), y=list(y), name=name))


def plant(registry) -> None:
    """One figure per page, each written as a notebook would write it: one decorated function."""

    @figure("planted", section="weights", title=MARK["run"], caption=f"The {MARK['run']} caption.",
            needs=("planted_table",), inputs=lambda t: dict(table=t.results["planted_table"]))
    def fig_planted_run(table: pd.DataFrame, log_x: bool = True) -> go.Figure:
        return _fig(MARK["run"], table["value"])

    @figure("planted", page="compare", title=MARK["compare"], caption=f"The {MARK['compare']} caption.",
            inputs=lambda runs: dict(runs=runs), has=lambda t: t.has("planted_table"))
    def fig_planted_compare(runs: dict[str, RunTables], log_x: bool = True) -> go.Figure:
        return _fig(MARK["compare"], [len(t.metrics) for t in runs.values()])

    @figure("planted", page="sweep", title=MARK["sweep"], caption=lambda s: f"The {MARK['sweep']} caption{s.per}.",
            reproduces="no paper figure", time_axis=False, applies=lambda s: "planted" in s.table.columns,
            inputs=lambda s: dict(table=s.table))
    def fig_planted_sweep(table: pd.DataFrame) -> go.Figure:
        return _fig(MARK["sweep"], table["planted"])


def run_tables(name: str, planted: bool = True) -> RunTables:
    metrics = pd.DataFrame({"step": STEPS, "train_acc": [0.1, 0.5, 1.0, 1.0], "val_acc": [0.0, 0.1, 0.2, 1.0],
                            "train_loss": [3.0, 1.0, 0.1, 0.01], "val_loss": [3.0, 3.0, 2.0, 0.1]})
    results = {"planted_table": pd.DataFrame({"step": STEPS, "value": [1.0, 2.0, 3.0, 4.0]})} if planted else {}
    return RunTables(name, metrics, results)


def sweep(tmp_path, planted: bool = True):
    rows = [{"op": op, "frac": f, "seed": 0, "cell": f"{op}_{f}", "status": "done", "steps": 100,
             "steps_to_train_99": 10, "steps_to_val_99": 50, "best_val_acc": 1.0, "final_val_acc": 1.0}
            for op in ("x+y", "x-y") for f in (0.3, 0.5)]
    table = pd.DataFrame(rows)
    if planted:
        table["planted"] = np.arange(len(table), dtype=float)
    return types.SimpleNamespace(path=tmp_path / "sw", name="demo", axes=["op", "frac", "seed"], fixed={}, preset=None,
                                 scale=None, table=table)


def pages(tmp_path, monkeypatch, planted: bool = True) -> dict[str, str]:
    """The text of the run, compare and sweep pages (without plotly.js)."""
    runs = {n: ReportRun(run_tables(n, planted), None, None, tmp_path / n) for n in ("a", "b")}
    monkeypatch.setattr(report, "load_report_run", lambda source, results=None: runs[str(source)])
    texts = {"run": build_report("a", tmp_path / "run.html"),
             "compare": compare_report(["a", "b"], tmp_path / "c.html"),
             "sweep": sweep_report(sweep(tmp_path, planted), tmp_path / "s.html")}
    return {page: re.sub(r'<script type="text/javascript">.*?</script>', "", path.read_text(), flags=re.S)
            for page, path in texts.items()}


def test_a_registered_figure_is_on_its_page_only(registry, tmp_path, monkeypatch):
    before = pages(tmp_path, monkeypatch)
    assert not any(m in text for m in MARK.values() for text in before.values())
    plant(registry)
    after = pages(tmp_path, monkeypatch)
    for page, text in after.items():
        for other, mark in MARK.items():
            if other == page:
                assert text.count(f"The {mark} caption") == 1, page  # the caption, once
                assert text.count(f'"name":"{mark}"') == 1, page  # the figure's trace, once
            else:
                assert mark not in text, (page, other)
    n_figs = {p: len(re.findall(r'<div class="figure', t)) for p, t in after.items()}
    assert n_figs == {p: len(re.findall(r'<div class="figure', t)) + 1 for p, t in before.items()}
    # the run figure sits in its section ("weights"), after the section's own figures; the others in theirs
    weights = re.search(r'<section id="weights">.*?</section>', after["run"], flags=re.S).group(0)
    assert f"The {MARK['run']} caption." in weights
    compare = re.search(r'<section id="planted">.*?</section>', after["compare"], flags=re.S).group(0)
    assert f"<h2>{MARK['compare']}</h2>" in compare
    assert f"The {MARK['sweep']} caption per op." in after["sweep"]
    assert f"{MARK['sweep']}: no paper figure" in after["sweep"]  # "what the figures reproduce"
    assert after["sweep"].index(MARK["sweep"]) > after["sweep"].index("Best validation accuracy vs training")


def test_a_registered_figure_reaches_the_notebook_functions_and_applies_only_when_it_should(registry, tmp_path,
                                                                                           monkeypatch):
    plant(registry)
    assert [s.name for s in figures_on("run", "weights")][-1] == "planted" and "planted" in FIGURES
    assert FIGURES is REGISTRY["run"] and {s.section for s in FIGURES.values()} <= {s.id for s in SECTIONS}
    r = ReportRun(run_tables("a"), None, None, tmp_path)
    figs = report_figures(r)
    assert "planted" in figs and list(figs) == [s.name for s in FIGURES.values() if s.drawable(r.tables)]
    assert list(figs["planted"].data[0].y) == [1.0, 2.0, 3.0, 4.0] and figs["planted"].layout.title.text == MARK["run"]
    assert "planted" in sweep_figures(sweep(tmp_path)) and "planted" not in sweep_figures(sweep(tmp_path, False))
    assert "planted" not in report_figures(ReportRun(run_tables("a", planted=False), None, None, tmp_path))
    text = pages(tmp_path, monkeypatch, planted=False)  # no run has the planted table, the sweep no column
    assert not any(f'"name":"{m}"' in t for m in MARK.values() for t in text.values())  # no figure drawn
    assert MARK["run"] not in text["run"] and MARK["sweep"] not in text["sweep"]
    assert "planted_table" in re.search(r'<section id="weights">.*?</section>', text["run"], flags=re.S).group(0)
    compare = re.search(r'<section id="planted">.*?</section>', text["compare"], flags=re.S).group(0)
    assert "Not computed for a, b" in compare and '<div class="figure' not in compare


def test_an_unknown_page_is_refused(registry):
    with pytest.raises(KeyError, match="unknown figure page 'sweeps'"):
        figure("x", page="sweeps", title="x", caption="x.", inputs=dict)
    with pytest.raises(KeyError):
        figures_on("runs")
