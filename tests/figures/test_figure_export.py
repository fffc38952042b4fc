"""Figures as files: self-contained HTML anywhere; PNG/SVG/PDF through kaleido and the machine's Chromium."""
from __future__ import annotations

import os
import struct

import plotly.graph_objects as go
import pytest

from grokscope import GrokscopeError
from grokscope.figures import export_report_figures, notebook_mode, save_figure
from grokscope.figures import export as export_module


def can_export_static() -> bool:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return export_module.find_browser() is not None


static = pytest.mark.skipif(not can_export_static() and os.environ.get("CI") != "true",
                            reason="needs kaleido and Chromium (CI installs both)")


def test_html_is_self_contained(tmp_path):
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], name="planted-trace"))
    path = save_figure(fig, tmp_path / "sub" / "f.html")
    text = path.read_text()
    assert "planted-trace" in text and len(text) > 1_000_000  # plotly.js inlined: opens offline
    assert "<script src=\"http" not in text  # no script fetched from the network


def test_bad_format_and_missing_browser_are_one_clear_error(tmp_path, monkeypatch):
    fig = go.Figure()
    with pytest.raises(GrokscopeError, match="use .html"):
        save_figure(fig, tmp_path / "f.gif")
    monkeypatch.setattr(export_module, "find_browser", lambda: None)
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    with pytest.raises(GrokscopeError, match="Chromium"):
        save_figure(fig, tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()


def test_notebook_mode_sets_renderers():
    import plotly.io as pio

    before = pio.renderers.default
    try:
        assert notebook_mode() == "plotly_mimetype+notebook" == pio.renderers.default
        assert notebook_mode(static=True).endswith("+png")
    finally:
        pio.renderers.default = before


@static
@pytest.mark.slow
def test_static_files_of_a_figure(tmp_path):
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]))
    png = save_figure(fig, tmp_path / "f.png", width=400, height=300, scale=2)
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (800, 600)
    svg = save_figure(fig, tmp_path / "f.svg").read_text()
    assert svg.startswith("<svg") and "scatterlayer" in svg  # the trace is drawn
    assert save_figure(fig, tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"


@static
@pytest.mark.slow
def test_report_figures_as_files_and_the_cli(tiny_run, tmp_path):
    from grokscope.analyze import analyze
    from grokscope.cli import main

    analyze(tiny_run, only="weight_norms", out=tmp_path / "res", progress=False)
    paths = export_report_figures(tiny_run, tmp_path / "figs", formats=("png", "svg"), results=tmp_path / "res")
    names = {p.name for p in paths}
    assert {"accuracy.png", "accuracy.svg", "weight_norms.png"} <= names
    assert all(p.stat().st_size > 1000 for p in paths)
    assert main(["figures", str(tmp_path / "res"), "--out", str(tmp_path / "cli"), "--format", "html"]) == 0
    assert (tmp_path / "cli" / "accuracy.html").is_file()


# --- many key frequencies, and slider figures as stills ------------------------------------------------------
KEYS = (14, 35, 41, 42, 52, 7)
P = 113


def six_key_circles():
    """Planted circle points: six key frequencies; each checkpoint's points scaled by (1 + step / 1000)."""
    import numpy as np
    import pandas as pd

    t = np.arange(P)
    rows = [(s, m, k, j, j, str(j), (1 + s / 1000) * np.cos(2 * np.pi * k * j / P),
             (1 + s / 1000) * np.sin(2 * np.pi * k * j / P), j % 8, (j + 8) % P)
            for s in (0, 1000, 2000) for m in ("embed", "unembed") for k in KEYS for j in t]
    return pd.DataFrame(rows, columns=["step", "matrix", "freq", "j", "token", "element", "x", "y", "colour", "next"])


def title_boxes(fig: go.Figure, width: int, font: float = 16.0, char: float = 0.6):
    """(left, right, y) in pixels of each subplot title, its width estimated at ``char`` em per character."""
    m = fig.layout.margin
    inner = width - (m.l or 0) - (m.r or 0)
    out = []
    for a in fig.layout.annotations:
        if a.xref == "paper" and a.text and "k = " in a.text:
            half = len(a.text) * char * font / 2
            x = (m.l or 0) + a.x * inner
            out.append((x - half, x + half, round(a.y, 3)))
    return out


def test_six_key_frequencies_are_a_grid_whose_titles_fit_and_the_static_still_has_no_slider():
    from grokscope.figures import fig_circles
    from grokscope.figures.circles import grid_cols
    from grokscope.figures.export import _width, static_figure

    assert [grid_cols(n) for n in range(1, 10)] == [1, 2, 3, 4, 3, 3, 4, 4, 3]
    points = six_key_circles()
    fig = fig_circles(points)
    assert len(fig.layout.sliders) == 1 and len(fig.frames) == 3
    still = static_figure(fig)
    assert not still.layout.sliders and not still.frames and "checkpoint: step 2000" in still.layout.title.subtitle.text
    assert still.layout.height == fig.layout.height - 90
    width = _width(still)
    boxes = title_boxes(still, width)
    assert len(boxes) == 12 and len({y for *_, y in boxes}) == 4  # 2 matrices x 6 keys: 4 rows of 3
    for row in {y for *_, y in boxes}:
        line = sorted(b for b in boxes if b[2] == row)
        assert line[0][0] >= 0 and line[-1][1] <= width  # none cut off
        assert all(a[1] < b[0] for a, b in zip(line, line[1:])), line  # none overlap
    # the still is the chosen checkpoint's picture: step 0's points on the unit circle, step 2000's at radius 3
    first = static_figure(fig, 0)
    radius = lambda f: max((x * x + y * y) ** 0.5 for x, y in zip(f.data[1].x, f.data[1].y))  # noqa: E731
    assert abs(radius(first) - 1.0) < 1e-5 and abs(radius(still) - 3.0) < 1e-5  # float32 coordinates
    assert fig.layout.sliders  # the interactive figure is not changed
    with pytest.raises(GrokscopeError, match="no checkpoint 5"):
        static_figure(fig, 5)


@static
@pytest.mark.slow
def test_six_key_frequencies_as_png_stills(tmp_path):
    from grokscope.figures import fig_circles
    from grokscope.figures.export import save_figures

    fig = fig_circles(six_key_circles())
    paths = save_figures({"circles": fig}, tmp_path, formats=("png",), steps=[0, 2000, 999])
    assert [p.name for p in paths] == ["circles_step0.png", "circles_step2000.png"]
    for p in paths:
        head = p.read_bytes()[:24]
        w, h = struct.unpack(">II", head[16:24])
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and w == 2 * (260 * 3 + 160) and h == 2 * (fig.layout.height - 90)
    last = save_figure(fig, tmp_path / "last.png")
    assert last.stat().st_size > 10_000
    import shutil
    shutil.copy(last, tmp_path.parent / "six-key-circles.png")
