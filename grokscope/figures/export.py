"""Figures outside the report: in notebooks that get exported, and as files (HTML, PNG, SVG, PDF).

    import grokscope.figures as gf
    gf.notebook_mode()                          # once, at the top of a notebook
    gf.save_figure(fig, "figs/accuracy.svg")    # .html: self-contained; .png/.svg/.pdf: through kaleido
    gf.export_report_figures("checkpoints/div97", "figs", formats=("png", "svg"))
    gf.save_figures({"accuracy": fig}, "figs", formats=("html",))   # any figures by name

``notebook_mode`` sets plotly's renderers to JupyterLab's own (live) plus the classic notebook one,
which embeds plotly.js once into the notebook (in the output of the first figure) and each figure as
HTML that uses it: a notebook exported with nbconvert, or opened offline, shows every figure.
``static=True`` adds a PNG of each figure, for viewers that run no JavaScript (GitHub's).

Static files go through kaleido (``pip install 'grokscope[export]'``), which drives a Chrome or
Chromium already on the machine (Debian: ``apt-get install chromium``); kaleido's own download of
Chrome is never used. Without them, one clear error names what is missing.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

import plotly.graph_objects as go

from ..errors import GrokscopeError
from .inputs import report_figures

STATIC = ("png", "svg", "pdf", "jpeg", "webp")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def notebook_mode(static: bool = False) -> str:
    """Render figures so that they survive a notebook's export (see the module docstring); returns the
    renderer string set as plotly's default."""
    import plotly.io as pio

    renderer = "plotly_mimetype+notebook" + ("+png" if static else "")
    pio.renderers.default = renderer
    return renderer


def find_browser() -> str | None:
    """A Chrome/Chromium for kaleido: $BROWSER_PATH, else the first of ``BROWSERS`` on the PATH."""
    given = os.environ.get("BROWSER_PATH")
    if given and Path(given).exists():
        return given
    return next((p for p in (shutil.which(b) for b in BROWSERS) if p), None)


def _kaleido_ready() -> None:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise GrokscopeError("static figures (PNG, SVG, PDF) need kaleido: pip install 'grokscope[export]' "
                             "(or save as .html)") from None
    browser = find_browser()
    if browser is None:
        raise GrokscopeError("static figures need Chrome or Chromium on the machine (Debian: apt-get install "
                             "chromium; or set BROWSER_PATH); or save as .html")
    os.environ.setdefault("BROWSER_PATH", browser)  # where kaleido's choreographer looks first


KALEIDO_TRIES = 3


def _kaleido(write) -> None:
    """Run a kaleido write, again when the browser tab was not ready: on a loaded machine kaleido can
    run its script before its page has defined it ("kaleido_scopes is not defined", a JavascriptError).
    A failure that lasts is one error line."""
    for attempt in range(KALEIDO_TRIES):
        try:
            write()
            return
        except Exception as e:  # kaleido's own error classes live in private modules
            transient = "kaleido_scopes is not defined" in str(e) or type(e).__name__ == "JavascriptError"
            if transient and attempt + 1 < KALEIDO_TRIES:
                continue
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise GrokscopeError(f"static figure export failed ({type(e).__name__}: {first})") from None


def save_figure(fig: go.Figure, path: str | Path, *, width: int | None = None, height: int | None = None,
                scale: float = 2.0) -> Path:
    """Write ``fig`` to ``path``; the suffix picks the format: .html (self-contained, plotly.js inlined,
    interactive), or .png/.svg/.pdf/.jpeg/.webp (static, through kaleido; ``scale`` multiplies the
    pixels of raster formats). The folder is created. Returns the path."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("html", *STATIC):
        raise GrokscopeError(f"cannot save a figure as {path.name!r}: use .html, " + ", ".join(f".{f}" for f in STATIC))
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "html":
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        return path
    _kaleido_ready()
    _kaleido(lambda: fig.write_image(path, format=fmt, width=width, height=height, scale=scale))
    return path


def export_report_figures(source, folder: str | Path, formats: Iterable[str] = ("png",), results=None,
                          log_x: bool = True) -> list[Path]:
    """Every figure of a run's report (``report_figures``), saved as ``folder/<name>.<format>`` for each
    format. ``source``: a Run, a run directory or a results folder (as ``grokscope report``)."""
    formats = _formats(formats)  # before anything is read or written
    return save_figures(report_figures(source, results, log_x=log_x), folder, formats)


def _formats(formats: Iterable[str]) -> list[str]:
    """The formats, checked (and kaleido ready when one is static)."""
    formats = [f.lower().lstrip(".") for f in formats]
    for fmt in formats:
        if fmt not in ("html", *STATIC):
            raise GrokscopeError(f"unknown figure format {fmt!r}: html, " + ", ".join(STATIC))
    if any(f != "html" for f in formats):
        _kaleido_ready()
    return formats


def save_figures(figures: dict[str, go.Figure], folder: str | Path, formats: Iterable[str] = ("png",)) -> list[Path]:
    """Each figure saved as ``folder/<name>.<format>`` for each format (static ones through one browser)."""
    formats = _formats(formats)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, static = [], []
    for name, fig in figures.items():
        for fmt in formats:
            path = folder / f"{name}.{fmt}"
            paths.append(path)
            if fmt == "html":
                save_figure(fig, path)
            else:
                static.append((fig, path, fmt))
    if static:  # one browser for all of them (kaleido starts one per write_image call)
        import plotly.io as pio

        _kaleido(lambda: pio.write_images([f for f, _, _ in static], [p for _, p, _ in static],
                                          format=[f for _, _, f in static], scale=2.0))
    return paths


__all__ = ["notebook_mode", "save_figure", "save_figures", "export_report_figures", "find_browser"]
