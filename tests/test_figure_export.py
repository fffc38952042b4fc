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
