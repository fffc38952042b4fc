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

A static file cannot move a slider: a figure with a checkpoint slider (the t-SNE maps, the key-frequency
circles) is drawn at one checkpoint, the last unless ``step`` (``save_figure``) or ``steps``
(``save_figures``, ``export_report_figures``: one file per step, ``<name>_step<N>.<format>``) choose,
without the slider, the step named in its subtitle (``static_figure``).

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


SLIDER_HEIGHT = 90  # what a slider takes below the plots (``tsne._slider``): given back in a static figure


def slider_steps(fig: go.Figure) -> list[str]:
    """The checkpoints of a figure's slider (its frames' names, in order); [] without one."""
    return [f.name for f in fig.frames] if fig.layout.sliders else []


def static_figure(fig: go.Figure, step: int | str | None = None) -> go.Figure:
    """A figure with a checkpoint slider as a still at ``step`` (default: the last), without the slider
    and its frames, the step in its subtitle; any other figure as it is."""
    steps = slider_steps(fig)
    if not steps:
        return fig
    name = steps[-1] if step is None else str(step)
    if name not in steps:
        raise GrokscopeError(f"the figure has no checkpoint {step}: its steps are {', '.join(steps)}")
    frame = next(f for f in fig.frames if f.name == name)
    out = go.Figure(fig)
    for i, trace in zip(frame.traces or range(len(frame.data)), frame.data):
        out.data[i].update(x=trace.x, y=trace.y)
    if frame.layout is not None:
        out.update_layout(frame.layout.to_plotly_json())
    subtitle = out.layout.title.subtitle.text if out.layout.title.subtitle.text else ""
    out.layout.sliders = ()
    out.update_layout(title_subtitle_text=(f"{subtitle}; " if subtitle else "") + f"checkpoint: step {name}",
                      height=max(200, (out.layout.height or 450) - SLIDER_HEIGHT), margin_t=120)
    out.frames = []
    return out


def _stills(name: str, fig: go.Figure, steps) -> list[tuple[str, go.Figure]]:
    """(file stem, figure) for each chosen step of a slider figure (the last when ``steps`` is None;
    the steps it has of those asked); an ordinary figure once."""
    have = slider_steps(fig)
    if not have:
        return [(name, fig)]
    if steps is None:
        return [(name, static_figure(fig))]
    chosen = [str(s) for s in steps if str(s) in have]
    if not chosen:
        raise GrokscopeError(f"{name}: none of the steps {', '.join(map(str, steps))} is a checkpoint of its "
                             f"slider ({', '.join(have)})")
    return [(f"{name}_step{s}", static_figure(fig, s)) for s in chosen]


def save_figure(fig: go.Figure, path: str | Path, *, width: int | None = None, height: int | None = None,
                scale: float = 2.0, step: int | None = None) -> Path:
    """Write ``fig`` to ``path``; the suffix picks the format: .html (self-contained, plotly.js inlined,
    interactive), or .png/.svg/.pdf/.jpeg/.webp (static, through kaleido; ``scale`` multiplies the
    pixels of raster formats; a slider figure is drawn at ``step``, default the last: ``static_figure``).
    The folder is created. Returns the path."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("html", *STATIC):
        raise GrokscopeError(f"cannot save a figure as {path.name!r}: use .html, " + ", ".join(f".{f}" for f in STATIC))
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "html":
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        return path
    _kaleido_ready()
    still = static_figure(fig, step)
    _kaleido(lambda: still.write_image(path, format=fmt, width=width or _width(still),
                                       height=height or still.layout.height, scale=scale))
    return path


def _width(fig: go.Figure) -> int:
    """Pixels across for a static file: plotly's 700, or 260 per column of a grid of panels."""
    axes = [v for k, v in fig.layout.to_plotly_json().items() if k.startswith("xaxis")]
    cols = len({round(a["domain"][0], 3) for a in axes if a.get("domain") and a.get("visible", True)})
    return max(700, 260 * cols + 160)


def export_report_figures(source, folder: str | Path, formats: Iterable[str] = ("png",), results=None,
                          log_x: bool = True, steps: Iterable[int] | None = None) -> list[Path]:
    """Every figure of a run's report (``report_figures``), saved as ``folder/<name>.<format>`` for each
    format. ``source``: a Run, a run directory or a results folder (as ``grokscope report``); ``steps``:
    the checkpoints at which static files draw the slider figures (see the module docstring)."""
    formats = _formats(formats)  # before anything is read or written
    return save_figures(report_figures(source, results, log_x=log_x), folder, formats, steps=steps)


def _formats(formats: Iterable[str]) -> list[str]:
    """The formats, checked (and kaleido ready when one is static)."""
    formats = [f.lower().lstrip(".") for f in formats]
    for fmt in formats:
        if fmt not in ("html", *STATIC):
            raise GrokscopeError(f"unknown figure format {fmt!r}: html, " + ", ".join(STATIC))
    if any(f != "html" for f in formats):
        _kaleido_ready()
    return formats


def save_figures(figures: dict[str, go.Figure], folder: str | Path, formats: Iterable[str] = ("png",),
                 steps: Iterable[int] | None = None) -> list[Path]:
    """Each figure saved as ``folder/<name>.<format>`` for each format (static ones through one browser;
    a slider figure as one still per chosen step, ``<name>_step<N>``, or at its last step)."""
    formats = _formats(formats)
    steps = list(steps) if steps is not None else None
    stills = {name: _stills(name, fig, steps) for name, fig in figures.items()} if any(
        f != "html" for f in formats) else {}  # checked before anything is written
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, static = [], []
    for name, fig in figures.items():
        for fmt in formats:
            if fmt == "html":
                paths.append(save_figure(fig, folder / f"{name}.{fmt}"))
                continue
            for stem, still in stills[name]:
                paths.append(folder / f"{stem}.{fmt}")
                static.append((still, paths[-1], fmt))
    if static:  # one browser for all of them (kaleido starts one per write_image call)
        import plotly.io as pio

        _kaleido(lambda: pio.write_images([f for f, _, _ in static], [p for _, p, _ in static],
                                          format=[f for _, _, f in static], width=[_width(f) for f, _, _ in static],
                                          height=[f.layout.height for f, _, _ in static], scale=2.0))
    return paths


__all__ = ["notebook_mode", "save_figure", "save_figures", "export_report_figures", "find_browser", "static_figure"]
