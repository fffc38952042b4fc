"""What every figure shares: the step axis, the phase bands, colours, and the figure registry.

Step axis. Every time axis is logarithmic by default (``log_x=False`` gives a linear one). Step 0
cannot sit on a log axis, so it is drawn at ``STEP0`` = 0.5 (half of step 1); the hover label of a
curve still says "step 0". Heatmap cells (neurons, Fourier spectrum) span the same shifted steps.

Phase bands. The phases table (``grokscope.analyses.phases``: ``phase, present, start_step, end_step``)
becomes one translucent band per phase that happened, in the same colour on every time plot
(``PHASE_COLOURS``); a phase still running at the end (no ``end_step``) reaches the last step. On a
heatmap a full-height band would tint the colours, so there the bands are a strip above the plot
area with dashed boundary lines across it.

Registry. ``@figure(name, page=..., ...)`` above a public ``fig_*`` function records the page it is
drawn on (``PAGES``: "run", a run's report; "compare", several runs overlaid; "sweep", a sweep's page),
its title, its one-sentence caption, when it applies and how to call it from the page's source: a
``RunTables`` (run), a ``{run name: RunTables}`` dict (compare) or a ``SweepTable`` (sweep). The pages
draw every figure registered for them, in registration order, so adding a figure of any kind is one
decorated function. The decorated function still takes plain DataFrames, so a notebook calls it
directly and gets the picture the page shows; a function without a ``title`` parameter gets the
registered title (one with it titles itself, e.g. from its data).
"""
from __future__ import annotations

import functools
import html
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..errors import GrokscopeError

STEP0 = 0.5  # where step 0 is drawn on a log step axis
PHASE_COLOURS = {"memorisation": "#e8872e", "circuit_formation": "#8e5cc9", "clean_up": "#2e9e6f",
                 "grokked": "#3f7fe0"}
PHASE_LABELS = {"memorisation": "memorisation", "circuit_formation": "circuit formation", "clean_up": "clean-up",
                "grokked": "grokked"}
BAND_OPACITY = 0.14
TRAIN, VAL = "#1f5fa8", "#e4572e"  # train and validation curves, everywhere
PALETTE = ["#1f5fa8", "#e4572e", "#2e9e6f", "#8e5cc9", "#c9a227", "#17a2b8", "#d6488f", "#6c757d",
           "#8c564b", "#9ab03c", "#4b3fa0", "#e07b91"]
HEIGHT_PER_ROW = 260

TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif", size=12, color="#222"),
    paper_bgcolor="white", plot_bgcolor="white", colorway=PALETTE, hovermode="closest",
    margin=dict(l=70, r=30, t=60, b=50),
    legend=dict(bgcolor="rgba(255,255,255,0.8)"),
    xaxis=dict(showline=True, linecolor="#888", gridcolor="#eee", ticks="outside", zeroline=False),
    yaxis=dict(showline=True, linecolor="#888", gridcolor="#eee", ticks="outside", zeroline=False,
               exponentformat="power"),
))


def esc(text: Any) -> str:
    """Text from a run (operation or run names, element labels) made literal for plotly's HTML-like labels."""
    return html.escape(str(text), quote=True)


# --- the step axis -----------------------------------------------------------------------------------
def step_x(steps, log_x: bool = True) -> np.ndarray:
    """Steps as x values: float, with step 0 moved to ``STEP0`` on a log axis."""
    x = np.asarray(steps, dtype=np.float64)
    return np.where(x <= 0, STEP0, x) if log_x else x


def curve(steps, values, name: str, colour: str | None = None, dash: str | None = None, mode: str = "lines",
          log_x: bool = True, **kwargs) -> go.Scatter:
    """A line over steps whose hover label shows the true step (step 0 included)."""
    steps = np.asarray(steps)
    marker = {"color": colour, "size": 6, **kwargs.pop("marker", {})}
    return go.Scatter(x=step_x(steps, log_x), y=np.asarray(values, dtype=np.float64), name=name, mode=mode,
                      line=dict(color=colour, dash=dash, width=1.8), marker=marker,
                      customdata=steps.astype(np.int64),
                      hovertemplate=f"{name}<br>step %{{customdata}}: %{{y:.4g}}<extra></extra>", **kwargs)


def by_step(table: pd.DataFrame, column: str, where: dict[str, Any] | None = None) -> pd.Series:
    """``column`` as a Series indexed by step (mean over rows of a step), NaN dropped."""
    if table is None or column not in table.columns:
        return pd.Series(dtype=float)
    for key, value in (where or {}).items():
        table = table[table[key] == value]
    s = pd.to_numeric(table[column], errors="coerce").groupby(table["step"].astype(np.int64)).mean()
    return s.dropna().sort_index()


def first_at(s: pd.Series, level: float) -> int | None:
    """The first step (index) of a by-step series whose value is at least ``level``, or None."""
    hits = s[s >= level]
    return int(hits.index[0]) if len(hits) else None


# --- phases -----------------------------------------------------------------------------------------
def phase_spans(phases: pd.DataFrame | None, last_step: float | None) -> list[tuple[str, float, float]]:
    """(phase, start, end) of each phase that happened; an open phase ends at ``last_step``."""
    if phases is None or not len(phases) or "phase" not in phases.columns:
        return []
    spans = []
    for _, row in phases.iterrows():
        present = row.get("present", True)
        if isinstance(present, str):
            present = present.strip().lower() == "true"
        start = pd.to_numeric(row.get("start_step"), errors="coerce")
        end = pd.to_numeric(row.get("end_step"), errors="coerce")
        if not bool(present) or pd.isna(start):
            continue
        if pd.isna(end):
            end = last_step if last_step is not None else start
        if end > start:
            spans.append((str(row["phase"]), float(start), float(end)))
    return spans


def add_phase_bands(fig: go.Figure, phases: pd.DataFrame | None, last_step: float | None, log_x: bool = True,
                    n_rows: int = 1, strip: bool = False, labels: bool = False) -> go.Figure:
    """Draw the phase bands on subplots 1..n_rows (full height, or a strip on top for heatmaps);
    ``labels``: name the phases in the legend."""
    for phase, start, end in phase_spans(phases, last_step):
        colour = PHASE_COLOURS.get(phase, "#999999")
        x0, x1 = step_x([start, end], log_x)
        for row in range(1, n_rows + 1):
            xref = "x" if row == 1 else f"x{row}"
            yref = ("y" if row == 1 else f"y{row}") + " domain"
            if strip:
                fig.add_shape(type="rect", xref=xref, yref=yref, x0=x0, x1=x1, y0=1.0, y1=1.035, fillcolor=colour,
                              opacity=0.85, line_width=0, layer="above")
                for x in (x0, x1):
                    fig.add_shape(type="line", xref=xref, yref=yref, x0=x, x1=x, y0=0, y1=1, layer="above",
                                  line=dict(color="white", width=1, dash="dot"))
            else:
                legend = dict(showlegend=True, name=PHASE_LABELS.get(phase, phase), legendgroup="phases",
                              legendgrouptitle_text="phases") if labels and row == 1 else {}
                fig.add_shape(type="rect", xref=xref, yref=yref, x0=x0, x1=x1, y0=0, y1=1, fillcolor=colour,
                              opacity=BAND_OPACITY, line_width=0, layer="below", **legend)
    return fig


def memorisation_end(phases: pd.DataFrame | None) -> int | None:
    """The step where memorisation ended (train accuracy reached 99 %), or None."""
    for phase, start, end in phase_spans(phases, None):
        if phase == "memorisation":
            return int(end)
    return None


# --- layout ---------------------------------------------------------------------------------------------
def _x_extent(fig: go.Figure) -> tuple[float, float] | None:
    """The smallest and largest x of the figure's traces (None: no numeric x)."""
    lo, hi = np.inf, -np.inf
    for trace in fig.data:
        x = getattr(trace, "x", None)
        if x is None:
            continue
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        x = x[np.isfinite(x)]
        if len(x):
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    return (lo, hi) if lo < hi else None


def _fit_bands(fig: go.Figure, lo: float, hi: float) -> None:
    """The first phase band starts at the axis's left end and the last (a phase still going on at the
    end) reaches its right end; every band is clipped to the axis."""
    colours = set(PHASE_COLOURS.values())
    bands = [sh for sh in fig.layout.shapes if sh.type == "rect" and sh.fillcolor in colours]
    if not bands:
        return
    first, last = min(sh.x0 for sh in bands), max(sh.x1 for sh in bands)
    for sh in bands:
        x0 = lo if sh.x0 == first else min(max(sh.x0, lo), hi)
        x1 = hi if sh.x1 == last else min(max(sh.x1, lo), hi)
        sh.update(x0=x0, x1=x1)
    for sh in fig.layout.shapes:  # the dashed boundaries across a heatmap's strip
        if sh.type == "line" and sh.x0 == sh.x1 and not lo <= sh.x0 <= hi:
            sh.update(visible=False)


def time_axes(fig: go.Figure, log_x: bool = True, n_rows: int = 1, x_title: str = "training step") -> go.Figure:
    """Step axes (log or linear) that span exactly the drawn steps, so the phase bands reach both ends;
    the page's log/linear button converts the range (``page.SCRIPT``)."""
    fig.update_xaxes(type="log", dtick=1) if log_x else fig.update_xaxes(type="linear")
    extent = _x_extent(fig)
    if extent is not None:
        lo, hi = extent
        _fit_bands(fig, lo, hi)
        fig.update_xaxes(range=[np.log10(lo), np.log10(hi)] if log_x and lo > 0 else [lo, hi])
    where = dict(row=n_rows, col=1) if n_rows > 1 else {}
    fig.update_xaxes(title_text=x_title + (" (log scale)" if log_x else ""), **where)
    return fig


def finish(fig: go.Figure, n_rows: int = 1, height: int | None = None, **layout) -> go.Figure:
    fig.update_layout(template=TEMPLATE, height=height or max(320, HEIGHT_PER_ROW * n_rows + 90), **layout)
    return fig


def empty(message: str) -> go.Figure:
    """A figure that says why it has nothing to show (a table without the rows it needs)."""
    fig = go.Figure()
    fig.add_annotation(text=esc(message), showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=14, color="#666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return finish(fig, height=220)


# --- the registry ------------------------------------------------------------------------------------------
@dataclass
class RunTables:
    """What the report draws from: the run's metrics, its analysis tables and its phases."""

    name: str
    metrics: pd.DataFrame
    results: dict[str, pd.DataFrame] = field(default_factory=dict)
    phases: pd.DataFrame | None = None
    op_kind: str = "custom"  # grokscope.analyses.fourier.op_kind of the task
    chance: float | None = None  # ln N, the validation loss of a uniform guess (tasks.chance_loss); None: unknown

    @property
    def last_step(self) -> int | None:
        steps = [int(t["step"].max()) for t in [self.metrics, *self.results.values()]
                 if t is not None and "step" in t.columns and t["step"].notna().any()]
        return max(steps) if steps else None

    def has(self, name: str) -> bool:
        if name == "metrics":
            return self.metrics is not None and len(self.metrics) > 0
        table = self.results.get(name)
        return table is not None and len(table) > 0


PAGES = ("run", "compare", "sweep")


@dataclass(frozen=True)
class FigureSpec:
    """One figure of one page. ``source``: what the page draws from (see the module docstring)."""

    name: str
    section: str  # run page: the ``SECTIONS`` id; compare page: the figure's own section
    title: str
    caption: str | Callable[[Any], str]  # plain text, one sentence; a function of the source where it varies
    needs: tuple[str, ...]  # run page: tables it draws ("metrics" or analysis names)
    fn: Callable[..., go.Figure]  # the public fig_* function
    inputs: Callable[[Any], dict[str, Any]]  # its keyword arguments from the page's source
    time_axis: bool = True  # a step axis (the page's log/linear button switches it)
    any_need: bool = False  # drawable when one of ``needs`` is there (default: all of them)
    optional: tuple[str, ...] = ()  # tables it also draws when they are there
    page: str = "run"
    applies: Callable[[Any], bool] | None = None  # when it is drawn (default: its ``needs`` are there)
    has: Callable[[RunTables], bool] | None = None  # compare page: which runs it can draw (others are named)
    reproduces: str | Callable[[Any], str] = ""  # sweep page: the paper figure it redraws

    def drawable(self, source) -> bool:
        if self.applies is not None:
            return bool(self.applies(source))
        return (any if self.any_need else all)(source.has(n) for n in self.needs)

    def caption_for(self, source) -> str:
        return self.caption(source) if callable(self.caption) else self.caption

    def reproduces_for(self, source) -> str:
        return self.reproduces(source) if callable(self.reproduces) else self.reproduces

    def build(self, source, log_x: bool = True) -> go.Figure:
        kwargs = self.inputs(source)
        if self.time_axis:
            kwargs["log_x"] = log_x
        return self.fn(**kwargs)


REGISTRY: dict[str, dict[str, FigureSpec]] = {page: {} for page in PAGES}  # page -> name -> spec
FIGURES = REGISTRY["run"]  # the run report's figures (the same dict)


def figures_on(page: str, section: str | None = None) -> list[FigureSpec]:
    """The figures of ``page`` (of one of its sections), in registration order."""
    if page not in REGISTRY:
        raise KeyError(f"unknown figure page {page!r}: {', '.join(PAGES)}")
    return [f for f in REGISTRY[page].values() if section is None or f.section == section]


def _titled(fn, page: str, name: str):
    """``fn`` whose figure gets the registered title unless the caller gives one."""

    @functools.wraps(fn)
    def wrapper(*args, title: str | None = None, **kwargs) -> go.Figure:
        fig = fn(*args, **kwargs)
        fig.update_layout(title=dict(text=title if title is not None else REGISTRY[page][name].title, x=0.01))
        return fig

    return wrapper


def figure(name: str, *, page: str = "run", section: str = "", title: str, caption: str | Callable[[Any], str],
           needs: tuple[str, ...] = (), inputs: Callable[[Any], dict[str, Any]], time_axis: bool = True,
           any_need: bool = False, optional: tuple[str, ...] = (), applies: Callable[[Any], bool] | None = None,
           has: Callable[[RunTables], bool] | None = None, reproduces: str | Callable[[Any], str] = ""):
    """Register a ``fig_*`` function on ``page``; the figure it returns gets ``title`` unless the caller
    gives one (or the function takes a ``title`` of its own). A name already on the page is refused."""
    if page not in REGISTRY:
        raise KeyError(f"unknown figure page {page!r}: {', '.join(PAGES)}")
    if name in REGISTRY[page]:
        raise GrokscopeError(f"figure {name!r} is already registered on the {page} page (by "
                             f"{REGISTRY[page][name].fn.__module__}.{REGISTRY[page][name].fn.__qualname__}); "
                             f"choose another name")

    def deco(fn):
        wrapper = fn if "title" in inspect.signature(fn).parameters else _titled(fn, page, name)
        REGISTRY[page][name] = FigureSpec(name, section or name, title, caption, tuple(needs), wrapper, inputs,
                                          time_axis, any_need, tuple(optional), page, applies, has, reproduces)
        return wrapper

    return deco
