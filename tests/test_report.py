"""The report: figure functions on small synthetic tables, and pages built from tiny runs."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from grokscope.analyses.phases import find_phases
from grokscope.analyze import analyze
from grokscope.cli import main
from grokscope.errors import GrokscopeError
from grokscope.figures import (FIGURES, PHASE_COLOURS, SECTIONS, STEP0, RunTables, fig_accuracy, fig_compare_series,
                               fig_neuron_heatmap, fig_tsne)
from grokscope.figures.neurons import thin_steps
from grokscope.figures.summary import key_steps, verdict
from grokscope.figures.inputs import report_figures
from grokscope.report import build_report, compare_report
from grokscope.run import Run

EVIL = "<script>alert(1)</script>"


STEPS = np.array([0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 1500, 2000])


# --- synthetic tables ------------------------------------------------------------------------------
def metrics(grok: bool = True) -> pd.DataFrame:
    s = STEPS.astype(float)
    train = np.clip(s / 200, 0.02, 1.0)
    val = np.where(s >= 1500, 1.0, 0.03 + 0.2 * (s >= 1000)) if grok else np.full(len(s), 0.03)
    return pd.DataFrame({"step": STEPS, "train_loss": 3 * (1.01 - train), "train_acc": train,
                         "val_loss": 3 * (1.01 - val), "val_acc": val, "lr": 1e-3,
                         "weight_norm": 30 - 10 * (s >= 1000)})


def tables(grok: bool = True, element: str = "e") -> RunTables:
    rng = np.random.default_rng(0)
    n_layers, d_mlp, p = 2, 8, 7
    rows = []
    for step in STEPS:
        for layer in range(n_layers):
            for neuron in range(d_mlp):
                rows.append((step, layer, neuron, rng.random(), 1.0, 1.0))
    neuron_norms = pd.DataFrame(rows, columns=["step", "layer", "neuron", "norm", "in_norm", "out_norm"])
    spectrum = pd.DataFrame([(s, m, k, rng.random(), rng.random() / 4) for s in STEPS for m in ("embed", "unembed")
                             for k in range(p // 2 + 1)], columns=["step", "matrix", "freq", "norm", "frac"])
    fourier = pd.DataFrame({"step": STEPS, "key_freqs": "3,1,2", "embed_gini": np.linspace(0.1, 0.8, len(STEPS)),
                            "unembed_gini": 0.3, "embed_key_frac": 0.5, "neuron_frac_explained": 0.5,
                            "neuron_key_frac": 0.5, "restricted_loss": np.linspace(3, 0.01, len(STEPS)),
                            "excluded_loss": np.linspace(0.1, 4, len(STEPS))})
    fneurons = pd.DataFrame([(s, 1, i, 1 + i % 3, 0.9, 1.0) for s in STEPS for i in range(d_mlp)],
                            columns=["step", "layer", "neuron", "freq", "frac", "std"])
    sparsity = pd.DataFrame([(s, scope, 16, 0.3, 10.0, 0.6, 5.0) for s in STEPS
                             for scope in ("blocks.0", "blocks.1", "all")],
                            columns=["step", "scope", "n_neurons", "gini", "effective_n", "effective_frac", "norm_sum"])
    weight_norms = pd.DataFrame([(s, "block", b, 5.0 + i) for s in STEPS for i, b in enumerate(("embed", "blocks.0"))]
                                + [(s, "total", "total", 30.0) for s in STEPS],
                                columns=["step", "group", "name", "norm"])
    tsne = pd.DataFrame([(s, m, element if t == 0 else str(t), t, rng.normal(), rng.normal(), t % 8, (t + 8) % p)
                         for s in (0, 1000, 2000) for m in ("embed", "unembed") for t in range(p)],
                        columns=["step", "matrix", "element", "token", "x", "y", "colour", "next"])
    circle_points = pd.DataFrame([(s, m, k, t, t, str(t), np.cos(2 * np.pi * k * t / p), np.sin(2 * np.pi * k * t / p),
                                   t % 8, (t + 8) % p) for s in (0, 1000, 2000) for m in ("embed", "unembed")
                                  for k in (3, 1) for t in range(p)],
                                 columns=["step", "matrix", "freq", "j", "token", "element", "x", "y", "colour", "next"])
    circles = pd.DataFrame([(s, m, k, r, 0.4, np.tanh(s / 1000), 5.0, 0.9, 1.0) for s in STEPS for m in ("embed", "unembed")
                            for r, k in enumerate((3, 1))],
                           columns=["step", "matrix", "freq", "rank", "share", "r2", "angle_err", "aspect", "radius"])
    llc = pd.DataFrame({"step": [0, 1000, 2000], "kind": "estimate", "llc": [2.0, 90.0, 15.0],
                        "llc_se": [0.5, 3.0, 1.0], "warning": ["", "chains not settled", ""]})
    flat = pd.DataFrame({"step": [0, 1000, 2000], "train_loss": 1.0, "sharpness_0.001": [1.0, 5.0, 0.5],
                         "hessian_top": [2.0, 40.0, 3.0]})
    results = {"neuron_norms": neuron_norms, "fourier_spectrum": spectrum, "fourier": fourier,
               "fourier_neurons": fneurons, "sparsity": sparsity, "weight_norms": weight_norms, "tsne": tsne,
               "sharpness": flat, "hessian": flat, "circle_points": circle_points, "circles": circles, "llc": llc}
    m = metrics(grok)
    live = m["step"] >= 100  # the live forecast's columns (run.FORECAST_COLUMNS), from step 100 on
    m["forecast_p"] = np.where(live, np.clip(m["step"] / 1500, 0, 1), np.nan)
    m["forecast_step"] = np.where(live & (m["forecast_p"] >= 0.5), 1500.0, np.nan)
    m["forecast_lo"], m["forecast_hi"] = m["forecast_step"] - 300, m["forecast_step"] + 300
    return RunTables("synthetic", m, results, find_phases(m, results), "modular", chance=np.log(p))


def band_colours(fig: go.Figure) -> set[str]:
    return {s.fillcolor for s in fig.layout.shapes if s.type == "rect"}


# --- figures ---------------------------------------------------------------------------------------
def test_every_registered_figure_builds_with_title_axes_caption_and_phase_bands():
    t = tables()
    assert set(t.phases.loc[t.phases.present.astype(bool), "phase"]) == set(PHASE_COLOURS)
    for name, spec in FIGURES.items():
        fig = spec.build(t)
        assert isinstance(fig, go.Figure) and fig.layout.title.text, name
        caption = spec.caption_for(t)  # a caption may be computed from the run's tables
        assert caption.endswith(".") and len(caption) > 40, name
        assert len(fig.data) > 0, name
        assert spec.section in {s.id for s in SECTIONS}, name
        layout = fig.layout.to_plotly_json()
        xaxes = [v for k, v in layout.items() if k.startswith("xaxis")]
        yaxes = [v for k, v in layout.items() if k.startswith("yaxis")]
        assert any(a.get("title", {}).get("text") for a in xaxes), name  # labelled axes
        assert any(a.get("title", {}).get("text") for a in yaxes), name
        if spec.time_axis:
            assert all(a["type"] == "log" for a in xaxes), name
            assert band_colours(fig) == set(PHASE_COLOURS.values()), name  # the same bands everywhere
            assert spec.build(t, log_x=False).layout.xaxis.type == "linear", name


def test_accuracy_figure_log_axis_step_zero_and_bands():
    t = tables()
    fig = fig_accuracy(t.metrics, t.phases)
    train = fig.data[0]
    assert train.name == "train" and fig.data[1].name == "validation" and len(fig.data) == 4
    assert train.x[0] == STEP0 and list(train.customdata[:2]) == [0, 1]  # step 0 drawn at 0.5, hover says 0
    assert fig.layout.xaxis.type == fig.layout.xaxis2.type == "log" and fig.layout.yaxis2.type == "log"
    named = [s.name for s in fig.layout.shapes if s.showlegend]
    assert named == ["memorisation", "circuit formation", "clean-up", "grokked"]
    grokked = [s for s in fig.layout.shapes if s.fillcolor == PHASE_COLOURS["grokked"]]
    assert grokked[0].x1 == 2000  # the open last phase reaches the last step
    linear = fig_accuracy(t.metrics, t.phases, log_x=False)
    assert linear.layout.xaxis.type == "linear" and linear.data[0].x[0] == 0
    assert fig_accuracy(t.metrics).layout.shapes == ()  # no phases, no bands


def test_heatmaps_thin_long_runs_and_use_a_strip_for_the_phases():
    steps = np.arange(0, 1000)
    picked = thin_steps(steps, 300)
    assert len(picked) <= 300 and picked[0] == 0 and picked[-1] == 999
    t = tables()
    fig = fig_neuron_heatmap(t.results["neuron_norms"], t.phases)
    assert [d.type for d in fig.data] == ["heatmap", "heatmap"]  # one per layer
    assert np.asarray(fig.data[0].z).shape == (8, len(STEPS)) and np.asarray(fig.data[0].z).dtype == np.float32
    strips = [s for s in fig.layout.shapes if s.type == "rect"]
    assert strips and all(s.y0 >= 1.0 for s in strips)  # above the plot area, not over the colours


def test_tsne_slider_frames_and_plus_eight_lines():
    t = tables()
    fig = fig_tsne(t.results["tsne"], colour_by="residue mod 8")
    assert [f.name for f in fig.frames] == ["0", "1000", "2000"]
    slider = fig.layout.sliders[0]
    assert [s.label for s in slider.steps] == ["0", "1000", "2000"] and slider.active == 2
    lines, points = fig.data[0], fig.data[1]
    assert lines.mode == "lines"  # polylines, NaN between them: each element joined to element + 8, once
    xy = t.results["tsne"].query("step == 2000 and matrix == 'embed'").sort_values("token")[["x", "y"]].to_numpy()
    pts = np.column_stack([lines.x, lines.y]).astype(np.float64)
    drawn = sorted((int(np.abs(xy - a).sum(1).argmin()), int(np.abs(xy - b).sum(1).argmin()))
                   for a, b in zip(pts[:-1], pts[1:]) if np.isfinite(a).all() and np.isfinite(b).all())
    assert drawn == [(i, (i + 8) % 7) for i in range(7)]
    no_next = t.results["tsne"].assign(next=-1)
    assert len([v for v in fig_tsne(no_next).data[0].x if v is not None]) == 0
    assert points.mode == "markers" and len(points.x) == 7


def test_figure_text_from_a_run_is_escaped():
    t = tables(element=EVIL)
    fig = fig_tsne(t.results["tsne"])
    assert EVIL not in json.dumps(fig.to_plotly_json(), default=str)
    assert any("&lt;script&gt;" in s for s in fig.data[1].text)
    cmp = fig_compare_series({EVIL: pd.Series([1.0, 2.0], index=[0, 10])}, "t", "y")
    assert cmp.data[0].name == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_verdicts():
    assert verdict(key_steps(metrics(grok=True))).startswith("Grokked: train accuracy reached 99 % at step 200")
    assert verdict(key_steps(metrics(grok=False))).startswith("No grokking within 2\u202f000 steps")
    assert verdict(key_steps(metrics().assign(train_acc=0.5))).startswith("Not memorised")
    no_metrics = pd.DataFrame(columns=["step", "train_acc", "val_acc"])
    assert verdict(key_steps(no_metrics)) == "No training metrics to judge the run by."


# --- pages from tiny runs ------------------------------------------------------------------------------
@pytest.fixture
def run(tiny_run, tmp_path):
    shutil.copytree(tiny_run.path, tmp_path / "run")
    return Run(tmp_path / "run")


def figure_count(text: str) -> int:
    return len(re.findall(r'<div class="figure', text))


def test_run_without_analyses_gives_a_page_with_the_curves_and_how_to_run_the_rest(run, tmp_path):
    path = build_report(run, results=tmp_path / "none", out=tmp_path / "r.html")
    text = path.read_text()
    forecast = bool(run.metrics["forecast_p"].notna().any())  # the live forecast gave one (from the metrics)
    assert figure_count(text) == 1 + forecast  # accuracy and loss only, and the live forecast
    assert text.count(get_plotlyjs()) == 1  # plotly.js inlined once, not per figure
    rest = text.replace(get_plotlyjs(), "")
    assert "<script src" not in rest and "http" not in rest  # nothing to fetch: readable offline
    assert "Not memorised" in text
    for section in [s for s in SECTIONS[1:] if s.analyses]:
        block = text[text.index(f'<section id="{section.id}"'):]
        block = block[:block.index("</section>")]
        assert "Not computed" in block and f"grokscope analyze --ckpt-dir {run.path} --only" in block


def test_results_folder_as_source_few_checkpoints_and_cli(run, tmp_path, capsys):
    out = tmp_path / "res"
    analyze(run, only="weight_norms,sparsity", steps=[0, 20], out=out, progress=False)
    path = build_report(out)  # finds the run through the sidecars
    assert path == out / "report.html"
    text = path.read_text()
    forecast = bool(run.metrics["forecast_p"].notna().any())  # the live forecast's figure, from the metrics
    assert figure_count(text) == 3 + forecast and "only 2 checkpoints analysed" in text
    assert "neuron_ablation" in text  # optional table of the sparsity figure: how to compute it
    assert main(["report", str(out), "--out", str(tmp_path / "cli.html")]) == 0
    assert f"grokscope: report -> {tmp_path / 'cli.html'}" in capsys.readouterr().out


def test_run_derived_text_is_escaped_in_the_page(run, tmp_path):
    cfg = json.loads((run.path / "config.json").read_text())
    cfg["name"] = EVIL
    (run.path / "config.json").write_text(json.dumps(cfg))
    text = build_report(run, results=tmp_path / "none", out=tmp_path / "r.html").read_text()
    assert EVIL not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    page = compare_report([run.path, run.path], tmp_path / "c.html").read_text()
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt; (run)" in page


def test_compare_page(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run.path, other)
    path = compare_report([run.path, other], tmp_path / "cmp.html")
    text = path.read_text()
    assert figure_count(text) == 2 and "Not computed for tiny, tiny (other)" in text  # accuracy, weight norm (metrics)
    assert main(["report", "--compare", str(run.path), str(other), "--out", str(tmp_path / "c2.html")]) == 0


def test_report_figures_for_notebooks(run, tmp_path):
    out = tmp_path / "res"
    analyze(run, only="weight_norms", out=out, progress=False)
    figs = report_figures(run, results=out)
    live = {"forecast"} if run.metrics["forecast_p"].notna().any() else set()  # the live forecast's, when it gave one
    assert set(figs) == {"accuracy", "weight_norms"} | live and all(isinstance(f, go.Figure) for f in figs.values())


def test_bad_input(tmp_path, run, capsys):
    with pytest.raises(GrokscopeError, match="does not exist"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GrokscopeError, match="neither a run directory"):
        build_report(tmp_path / "empty")
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert main(["report", str(run.path), "--compare", str(run.path), str(run.path)]) == 2
    assert main(["report", "--compare", str(run.path)]) == 2
    assert main(["report"]) == 2
    err = capsys.readouterr().err
    assert err.count("grokscope: error:") == 4 and all(len(line) < 300 for line in err.splitlines())


def test_custom_operation_name_is_escaped_and_fourier_says_it_does_not_apply(tmp_path, monkeypatch):
    from conftest import QUIET, tiny_config

    import grokscope
    from grokscope.tasks import OPERATIONS

    grokscope.register_operation(EVIL, lambda a, b: max(a, b), elements=range(5))
    cfg = tiny_config(task={"op": EVIL, "p": 5}, model={"n_layers": 1, "d_mlp": 16}, train={"steps": 4},
                      schedule={"eval_every": 2, "ckpt_every": 2})
    run = grokscope.train(cfg, out=tmp_path / "max", **QUIET)
    monkeypatch.delitem(OPERATIONS, EVIL)  # the run keeps its dataset: the report needs no operation code
    out = tmp_path / "res"
    analyze(run, only="weight_norms", out=out, progress=False)
    text = build_report(run, results=out).read_text()
    assert EVIL not in text and "&lt;script&gt;alert(1)&lt;/script&gt; with p = 5" in text
    assert "does not apply to this task: Fourier analysis needs a cyclic group" in text


def test_llc_figure_marks_warned_estimates_and_their_errors():
    from grokscope.figures import fig_llc

    t = tables()
    fig = fig_llc(t.results["llc"], t.phases)
    points = [tr for tr in fig.data if tr.mode == "markers"]
    assert [list(tr.y) for tr in points] == [[2.0, 15.0], [90.0]]  # clean, then the warned one
    assert points[1].marker.symbol == "circle-open" and list(points[0].error_y.array) == [0.5, 1.0]
    assert "no LLC estimates" in fig_llc(t.results["llc"].iloc[0:0]).layout.annotations[0].text
