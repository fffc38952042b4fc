"""The sweep report: figure functions on planted results tables, and pages from a stand-in sweep object."""
from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from grokscope.errors import GrokscopeError
from grokscope.figures import fig_best_val_vs_frac, fig_sharpness_vs_val, fig_steps_vs_frac, fig_sweep_heatmap, spearman
from grokscope.figures.sweep import median_steps
from grokscope.sweep.report import sweep_figures, sweep_report

EVIL = "<script>alert(1)</script>"
NA = pd.NA


def run(op="x+y", frac=0.3, seed=0, val=NA, train=10, best=1.0, status="done", steps=10_000, **extra) -> dict:
    pending = status == "pending"
    return {"op": op, "frac": frac, "seed": seed, **extra, "cell": f"{op}_f{frac}_s{seed}", "status": status,
            "steps": steps, "last_step": NA if pending else steps, "steps_to_train_99": NA if pending else train,
            "steps_to_val_99": val, "best_val_acc": np.nan if pending else best,
            "final_train_acc": np.nan if pending else 1.0, "final_val_acc": np.nan if pending else best,
            "final_train_loss": np.nan if pending else 0.01, "final_val_loss": np.nan if pending else 1.0,
            "run_dir": f"sweeps/s/{op}_f{frac}_s{seed}"}


def table(rows: list[dict]) -> pd.DataFrame:
    t = pd.DataFrame(rows)
    for c in ("last_step", "steps_to_train_99", "steps_to_val_99"):
        t[c] = t[c].astype("Int64")
    return t


def trace(fig, name):
    return next(d for d in fig.data if d.name == name)


# --- Figure 1 (center) ---------------------------------------------------------------------------------
def planted_steps() -> pd.DataFrame:
    return table([
        run(frac=0.3, seed=0, val=100, train=10), run(frac=0.3, seed=1, val=300, train=20),
        run(frac=0.3, seed=2, val=10_000, train=30),
        run(frac=0.5, seed=0, val=50, train=5), run(frac=0.5, seed=1, best=0.4), run(frac=0.5, seed=2, best=0.3),
        run(frac=0.5, seed=3, status="partial", best=0.2),  # undecided: does not count
        run(frac=0.7, seed=0, val=40), run(frac=0.7, seed=1, val=60), run(frac=0.7, seed=2, best=0.5),
        run(frac=0.7, seed=3, val=NA, status="pending"),  # no results: does not count
    ])


def test_median_steps_counts_only_reached_runs_and_needs_half():
    t = planted_steps()
    assert median_steps(t[t.frac == 0.3]) == (300.0, 3, 3)
    m, k, n = median_steps(t[t.frac == 0.5])
    assert np.isnan(m) and (k, n) == (1, 3)  # 2 of 3 never reached it: undefined
    assert median_steps(t[t.frac == 0.7]) == (50.0, 2, 3)  # the median of 40 and 60; the failed seed left out
    half = table([run(seed=0, val=100), run(seed=1, val=200), run(seed=2), run(seed=3)])
    assert median_steps(half) == (150.0, 2, 4)  # exactly half reached: defined


def test_steps_vs_frac_plots_the_median_marks_undefined_points_and_draws_seeds():
    fig = fig_steps_vs_frac(planted_steps())
    val, train = trace(fig, "validation ≥ 99 % (median)"), trace(fig, "train ≥ 99 % (median)")
    assert list(val.x) == [0.3, 0.5, 0.7]
    assert val.y[0] == 300 and np.isnan(val.y[1]) and val.y[2] == 50  # a gap where the median is undefined
    assert [list(c) for c in val.customdata] == [[3, 3], [1, 3], [2, 3]]
    assert train.line.dash == "dash" and list(train.y) == [20, 10, 10]  # frac 0.5: 5, 10, 10 and the partial run's 10
    seeds = trace(fig, "single seeds (validation)")
    assert sorted(seeds.y) == [40, 50, 60, 100, 300, 10_000] and seeds.marker.opacity < 1
    undefined = next(d for d in fig.data if d.name.startswith("median undefined"))
    assert list(undefined.x) == [0.5] and list(undefined.y) == [10_000]  # at the step budget
    assert "only 1 of 3 seeds reached 99 %" in undefined.text[0]
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.title.text == "training fraction"
    assert fig.layout.title.text


def test_steps_vs_frac_one_line_per_series_value_escaped():
    t = table([run(op=op, frac=f, seed=s, val=100 * (i + 1)) for i, op in enumerate(["x+y", EVIL])
               for f in (0.3, 0.5) for s in (0, 1)])
    fig = fig_steps_vs_frac(t, series="op")
    names = [d.name for d in fig.data if d.mode == "lines+markers"]
    assert names == ["x+y", "x+y (train)", "&lt;script&gt;alert(1)&lt;/script&gt;",
                     "&lt;script&gt;alert(1)&lt;/script&gt; (train)"]
    assert list(trace(fig, "x+y").y) == [100, 100]
    assert EVIL not in fig.to_json()
    with pytest.raises(GrokscopeError, match="no column 'variant'"):
        fig_steps_vs_frac(t, series="variant")


# --- Figure 2, Figure 6 ---------------------------------------------------------------------------------------
def test_best_val_vs_frac_means_and_min_max_error_bars():
    t = table([run(outliers=k, frac=f, seed=s, best=b) for k, f, s, b in [
        (0, 0.3, 0, 0.2), (0, 0.3, 1, 0.4), (0, 0.3, 2, 0.9), (0, 0.6, 0, 1.0), (0, 0.6, 1, 0.98),
        (1000, 0.3, 0, 0.1), (1000, 0.6, 0, 0.5)]] + [run(outliers=1000, frac=0.6, seed=1, status="pending")])
    fig = fig_best_val_vs_frac(t, series="outliers")
    clean, noisy = trace(fig, "outliers = 0"), trace(fig, "outliers = 1000")
    assert np.allclose(clean.y, [0.5, 0.99]) and list(clean.x) == [0.3, 0.6]
    assert np.allclose(clean.error_y.array, [0.4, 0.01]) and np.allclose(clean.error_y.arrayminus, [0.3, 0.01])
    assert clean.error_y.visible is True
    assert np.allclose(noisy.y, [0.1, 0.5]) and noisy.error_y.visible is False  # one seed: no bars
    assert fig.layout.yaxis.tickformat == ".0%"
    assert fig_best_val_vs_frac(t).data[0].name == "best validation accuracy"  # no series: one line


def test_heatmap_holds_the_planted_means():
    t = table([run(op=op, frac=f, seed=s, best=b) for op, f, s, b in [
        ("x+y", 0.3, 0, 0.5), ("x+y", 0.3, 1, 0.7), ("x+y", 0.5, 0, 1.0),
        ("s5", 0.5, 0, 0.2), ("s5", 0.5, 1, 0.4), ("s5", 0.3, 0, 0.1)]])
    fig = fig_sweep_heatmap(t, rows="op")
    h = fig.data[0]
    assert list(h.y) == ["x+y", "s5"] and list(h.x) == ["30 %", "50 %"]
    assert np.allclose(np.asarray(h.z, dtype=float), [[0.6, 1.0], [0.1, 0.3]])
    assert [list(r) for r in h.text] == [["60 %", "100 %"], ["10 %", "30 %"]]
    missing = fig_sweep_heatmap(t[(t.op != "s5") | (t.frac != 0.3)], rows="op")
    assert np.isnan(np.asarray(missing.data[0].z, dtype=float)[1, 0]) and missing.data[0].text[1][0] == ""


# --- Figure 7 ---------------------------------------------------------------------------------------------------
def test_spearman_of_a_monotone_relation_and_when_it_is_undefined():
    sharp = [0.5, 1.0, 2.0, 8.0, 30.0]
    t = table([run(seed=i, best=1 - 0.1 * i, sharpness=s) for i, s in enumerate(sharp)]
              + [run(seed=9, sharpness=np.nan), run(seed=10, status="pending", sharpness=np.nan)])
    rho, p, n = spearman(t)
    assert rho == pytest.approx(-1.0) and n == 5 and p < 0.05
    fig = fig_sharpness_vs_val(t)
    assert "ρ = -1.000" in fig.layout.title.text and "n = 5 runs" in fig.layout.title.text
    assert len(fig.data[0].x) == 5
    few = t.head(2)
    assert np.isnan(spearman(few)[0]) and spearman(few)[2] == 2
    assert "undefined (2 runs with both values; it needs 3)" in fig_sharpness_vs_val(few).layout.title.text
    flat = t.assign(sharpness=1.0)
    assert "undefined (a constant column" in fig_sharpness_vs_val(flat).layout.title.text
    assert "undefined (0 runs" in fig_sharpness_vs_val(t.drop(columns="sharpness")).layout.title.text


# --- the page -----------------------------------------------------------------------------------------------
def sweep(tmp_path: Path, rows: list[dict], axes: list[str], **kw) -> types.SimpleNamespace:
    return types.SimpleNamespace(path=tmp_path / "sw", name=kw.get("name", "demo"), axes=axes,
                                 fixed=kw.get("fixed", {"p": 97, "steps": 10_000}), preset=kw.get("preset"),
                                 scale=kw.get("scale"), table=table(rows))


def figure_count(text: str) -> int:
    return len(re.findall(r'<div class="figure', text))


def full_grid(ops=("x+y", "<b>")) -> list[dict]:
    return [run(op=op, frac=f, seed=s, val=100 * (s + 1), best=0.5 + 0.1 * s, sharpness=1.0 + s + f)
            for op in ops for f in (0.3, 0.5) for s in (0, 1)]


def test_sweep_page_has_the_figures_for_its_axes_and_escapes_run_text(tmp_path):
    rows = full_grid()
    rows[0]["cell"] = EVIL
    rows.append(run(op="<b>", frac=0.5, seed=2, status="pending"))
    sw = sweep(tmp_path, rows, ["op", "frac", "seed"], preset="fig2-right", scale="small",
               fixed={"note": "<i>x</i>"})
    path = sweep_report(sw)
    assert path == tmp_path / "sw" / "report.html"
    text = path.read_text()
    assert figure_count(text) == 4  # steps, best val, heatmap, sharpness
    assert text.count(get_plotlyjs()) == 1
    rest = text.replace(get_plotlyjs(), "")
    assert EVIL not in rest and "&lt;script&gt;alert(1)&lt;/script&gt;" in rest
    assert "<b>" not in rest and "<td>&lt;b&gt;</td>" in rest and "&lt;i&gt;x&lt;/i&gt;" in rest
    assert "Figure 2 (right)" in rest and "8 done, 1 pending" in rest and "small" in rest
    assert rest.count('<p class="caption">') == 4
    assert "<td>never</td>" not in rest and "<td>–</td>" in rest  # the pending run: no steps yet
    assert set(sweep_figures(sw)) == {"steps_vs_frac", "best_val_vs_frac", "heatmap", "sharpness"}


def test_sweep_page_figures_follow_the_axes_not_the_preset(tmp_path):
    no_series = [run(frac=f, seed=s, val=100) for f in (0.3, 0.5) for s in (0, 1)]
    text = sweep_report(sweep(tmp_path, no_series, ["frac", "seed"], preset="fig7"), tmp_path / "a.html").read_text()
    assert figure_count(text) == 2  # no series axis: no heatmap; no sharpness column: no Figure 7
    one_frac = [run(op=op, seed=s, best=0.5, sharpness=float(s)) for op in ("x+y", "x-y") for s in (0, 1)]
    text = sweep_report(sweep(tmp_path, one_frac, ["op", "seed"]), tmp_path / "b.html").read_text()
    assert figure_count(text) == 1  # only the sharpness scatter
    never = [run(frac=f, seed=0, status="done", best=0.1) for f in (0.3, 0.5)]
    path = sweep_report(sweep(tmp_path, never, ["frac", "seed"]), tmp_path / "c.html")
    assert figure_count(path.read_text()) == 2 and "<td>never</td>" in path.read_text()


def test_sweep_page_before_any_run_is_done(tmp_path):
    rows = [run(frac=f, seed=s, status="pending") for f in (0.3, 0.5) for s in (0, 1)]
    text = sweep_report(sweep(tmp_path, rows, ["frac", "seed"]), tmp_path / "r.html").read_text()
    assert figure_count(text) == 0 and "No run of this sweep is done yet" in text and "4 pending" in text
    rows[0] = run(frac=0.3, seed=0, status="partial", val=NA, best=0.2)
    text = sweep_report(sweep(tmp_path, rows, ["frac", "seed"]), tmp_path / "r.html").read_text()
    assert figure_count(text) == 2 and "the figures show the partial runs so far" in text
    assert "partial (10\u202f000 of 10\u202f000 steps)" in text and "<td>not yet</td>" in text


def test_sweep_report_reads_the_table_once(tmp_path):
    class Counting:  # a sweep folder's table is recomputed from its runs on each access
        path, name, axes, fixed, preset, scale, reads = tmp_path / "sw", "n", ["op", "frac", "seed"], {}, None, None, 0

        @property
        def table(self):
            self.reads += 1
            return table(full_grid())

    sw = Counting()
    sweep_report(sw)
    assert sw.reads == 1


def test_sweep_report_cli(tmp_path, monkeypatch, capsys):
    from grokscope.cli import main

    sw = sweep(tmp_path, full_grid(), ["op", "frac", "seed"])

    def load_sweep(path):
        if Path(path) != sw.path:
            raise GrokscopeError(f"{path} is not a sweep folder (no sweep.json)")
        return sw

    monkeypatch.setattr("grokscope.sweep.report.load_sweep", load_sweep)
    assert main(["sweep-report", str(sw.path)]) == 0
    assert f"grokscope: report -> {sw.path / 'report.html'}" in capsys.readouterr().out
    assert main(["sweep-report", str(sw.path), "--out", str(tmp_path / "x.html")]) == 0
    assert (tmp_path / "x.html").exists()
    assert main(["sweep-report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"grokscope: error: {tmp_path} is not a sweep folder (no sweep.json)"]


def test_the_sweep_page_reads_a_sweep_without_the_trainer_or_the_run_report():
    """grokscope.sweep.report needs the sweep folder, not the runner (which trains and analyses) nor report.py
    (which would close the cycle analyze -> report -> sweep -> analyze)."""
    code = "import sys, grokscope.sweep.report; print(' '.join(m for m in sys.modules if m.startswith('grokscope')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "grokscope.sweep.folder" in loaded
    assert not {"grokscope.sweep.runner", "grokscope.report", "grokscope.analyze", "grokscope.train"} & set(loaded)
