"""The report's forecast figure on planted forecast rows: what it draws is the rows, the actual grok step is
where validation loss fell below chance for good, and the caption says how early the forecast saw it."""
from __future__ import annotations

import math
import re

import pandas as pd

from grokscope.figures import RunTables, fig_forecast
from grokscope.figures.common import STEP0, figures_on
from grokscope.figures.forecast import actual_grok_step, forecast_caption, forecast_rows
from grokscope.figures.inputs import ReportRun
from grokscope.report import build_report
from grokscope.run import FORECAST_COLUMNS

CHANCE = math.log(7)
NAN = math.nan


def planted(grokked: bool = True) -> pd.DataFrame:
    """Metrics whose validation loss is above chance until step 400 (below from 500 on when ``grokked``),
    with live forecasts at steps 0, 100, 300, 400, 600 (none at 200 and 500)."""
    steps = [0, 100, 200, 300, 400, 500, 600]
    val = [2.0, 4.0, 6.0, 5.0, 3.0, 0.5, 0.1] if grokked else [2.0, 4.0, 6.0, 5.0, 4.0, 3.5, 3.0]
    return pd.DataFrame({"step": steps, "train_loss": 0.1, "train_acc": 1.0, "val_loss": val, "val_acc": 0.5,
                         "forecast_p": [0.1, 0.3, NAN, 0.7, 0.9, NAN, 1.0],
                         "forecast_step": [NAN, NAN, NAN, 900.0, 520.0, NAN, 500.0],
                         "forecast_lo": [NAN, NAN, NAN, 700.0, 450.0, NAN, 500.0],
                         "forecast_hi": [NAN, NAN, NAN, 1200.0, 650.0, NAN, 500.0]})


def tables(metrics, results=None) -> RunTables:
    return RunTables("planted", metrics, results or {}, None, "modular", chance=CHANCE)


def test_the_figure_draws_the_planted_forecasts_and_the_actual_grok_step():
    t = tables(planted())
    rows = forecast_rows(t)
    assert list(rows.step) == [0, 100, 300, 400, 600] and list(rows.p_grok) == [0.1, 0.3, 0.7, 0.9, 1.0]
    assert actual_grok_step(t) == 500  # the first step of the stretch below ln 7 that lasts
    fig = figures_on("run", "forecast")[0].build(t)
    by_name = {tr.name: tr for tr in fig.data}
    p = by_name["p_grok"]
    assert list(p.y) == [0.1, 0.3, 0.7, 0.9, 1.0] and list(p.x) == [STEP0, 100, 300, 400, 600]
    predicted = by_name["predicted grok step"]
    assert list(predicted.customdata) == [300, 400, 600] and list(predicted.y) == [900.0, 520.0, 500.0]
    assert list(by_name["80 % interval"].y) == [700.0, 450.0, 500.0]
    assert list(by_name["80 % interval (high)"].y) == [1200.0, 650.0, 500.0]
    assert list(by_name["actual grok step (500)"].y) == [500, 500]
    vlines = [s for s in fig.layout.shapes if s.type == "line" and s.x0 == s.x1]
    assert len(vlines) == 2 and {s.x0 for s in vlines} == {500}  # in both panels
    assert fig.layout.xaxis.type == "log" and fig_forecast(rows, 500, log_x=False).layout.xaxis.type == "linear"
    caption = forecast_caption(t)
    assert "for good at step 500" in caption and "p_grok ≥ 0.5 at step 300, 200 steps ahead" in caption
    assert "interval first held the actual step at step 400" in caption


def test_a_run_that_never_grokked_and_a_stored_forecast_table():
    t = tables(planted(grokked=False))
    assert actual_grok_step(t) is None
    fig = fig_forecast(forecast_rows(t), None)
    assert not any(tr.name.startswith("actual") for tr in fig.data)
    assert forecast_caption(t) == ("Validation loss never fell below chance for good in these steps; the last "
                                   "forecast (step 600) gave p_grok 1.00.")
    # no forecast columns in the metrics (a run trained without the live forecast): a stored forecast table
    bare = planted().drop(columns=FORECAST_COLUMNS)
    assert forecast_rows(tables(bare)) is None and not figures_on("run", "forecast")[0].drawable(tables(bare))
    stored = pd.DataFrame({"step": [300, 100], "p_grok": [0.8, 0.2], "grok_step": [550.0, NAN], "lo": [500.0, NAN],
                           "hi": [600.0, NAN], "measures": "x", "actual_grok_step": 500.0})
    t = RunTables("stored", bare, {"forecast": stored}, None, "modular")  # chance unknown: the table's own step
    assert list(forecast_rows(t).step) == [100, 300] and actual_grok_step(t) == 500
    assert list(figures_on("run", "forecast")[0].build(t).data[0].y) == [0.2, 0.8]


def test_the_report_page_has_the_forecast_section(tmp_path, monkeypatch):
    import grokscope.report as report

    for metrics, expect in ((planted(), "for good at step 500"), (planted().drop(columns=FORECAST_COLUMNS), "No forecast in this run")):
        r = ReportRun(tables(metrics), None, None, tmp_path)
        monkeypatch.setattr(report, "load_report_run", lambda source, results=None, r=r: r)
        text = build_report("x", tmp_path / "r.html").read_text()
        section = re.search(r'<section id="forecast">.*?</section>', text, flags=re.S).group(0)
        assert expect in section
        assert ('<div class="figure' in section) == (expect != "No forecast in this run")
