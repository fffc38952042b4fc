"""Key-frequency circles (``analyses/circles.py``): the rows in each key frequency's plane with a
checkpoint slider, and how circular each plane is over training, over the phase bands."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import PALETTE, add_phase_bands, by_step, curve, empty, figure, finish, time_axes
from .tsne import slider_maps

MAX_FREQS = 8  # panels per matrix: the largest key frequencies
MAX_COLS = 4  # panels per row: more key frequencies wrap onto more rows (titles keep their width)


def grid_cols(n: int, max_cols: int = MAX_COLS) -> int:
    """Columns for ``n`` panels of one matrix: all in one row up to ``max_cols``, else as few rows as
    that needs, filled evenly (5 -> 3 + 2, 6 -> 3 + 3, 7 -> 4 + 3)."""
    if n <= max_cols:
        return max(1, n)
    rows = -(-n // max_cols)
    return -(-n // rows)
NAMES = {"embed": "embedding", "unembed": "unembedding"}


def _order(table: pd.DataFrame) -> list[int]:
    """Key frequencies, largest first (by ``rank`` when the table has it)."""
    if "rank" in table.columns:
        return [int(k) for k in table.sort_values(["rank", "freq"]).drop_duplicates("freq")["freq"]][:MAX_FREQS]
    return [int(k) for k in dict.fromkeys(table["freq"])][:MAX_FREQS]


def _cyclic_label(op_kind: str) -> str:
    return "g^j, j" if op_kind == "multiplicative" else "x"


@figure("circles", section="tsne", title="Key-frequency circles: the rows in each key frequency's plane",
        caption="Each panel is one key frequency k: the embedding (top) and unembedding (bottom) rows projected on "
                "the plane of that frequency's cos and sin coefficients, so that an element x sits at angle 2πkx/p "
                "when the rows follow the frequency (for x*y and x/y, g^j at 2πkj/(p−1): the discrete-log order). "
                "Colours: x mod 8 (j mod 8); lines join x to x + 8, equal chords on a circle. Drag the slider and "
                "look for where the circles form and sharpen (the R² below times it). These planes show one "
                "frequency each exactly; how they combine is not shown (see the t-SNE maps above).",
        needs=("circle_points",), time_axis=False,
        inputs=lambda t: dict(points=t.results["circle_points"], op_kind=t.op_kind))
def fig_circles(points: pd.DataFrame, op_kind: str = "modular") -> go.Figure:
    """One panel per matrix and key frequency (table ``circle_points``: ``matrix, freq, j, token, element,
    x, y, colour, next``), one slider step per analysed checkpoint, starting at the last one."""
    if points is None or not len(points):
        return empty("no key-frequency circles in this table")
    freqs = [int(k) for k in dict.fromkeys(points["freq"])][:MAX_FREQS]
    matrices = [m for m in NAMES if m in set(points["matrix"])]
    cols = grid_cols(len(freqs))
    per_matrix = -(-len(freqs) // cols) * cols  # each matrix starts a row; its last row may have gaps
    panels, titles = [], []
    for m in matrices:
        for i in range(per_matrix):
            k = freqs[i] if i < len(freqs) else None
            panels.append((f"{m}-{k}", {"matrix": m, "freq": k}) if k is not None else None)
            titles.append(f"{NAMES[m]}, k = {k}" if k is not None else "")
    label = "j mod 8" if op_kind == "multiplicative" else "residue mod 8"
    fig = slider_maps(points, panels, titles, cols=cols, label=label, square=True,
                      axis_titles=("cos axis", "sin axis"), height_per_row=min(330, max(200, 1000 // cols + 40)))
    lines = "g^j joined to g^(j+8)" if op_kind == "multiplicative" else "x joined to x + 8"
    fig.update_layout(title=dict(subtitle=dict(text=f"colour: {label}; {lines}; each panel its own scale")))
    return fig


@figure("circularity", section="tsne", title="How circular each key frequency's plane is",
        caption="Top: R² of the points in each key frequency's plane against the angles 2πkx/p (1: a perfect circle "
                "traced in order; a random matrix already scores above 0, as the plane is fitted to the frequency: "
                "the first checkpoint shows that level). Bottom: each key frequency's share of the rows' norm. "
                "Solid: unembedding, dashed: embedding; the mean R² of each joins the progress measures of the "
                "phases and the lead/lag table.",
        needs=("circles",), inputs=lambda t: dict(circles=t.results["circles"], phases=t.phases))
def fig_circularity(circles: pd.DataFrame, phases: pd.DataFrame | None = None, log_x: bool = True) -> go.Figure:
    """R² (top) and norm share (bottom) per matrix and key frequency over training (table ``circles``)."""
    if circles is None or not len(circles):
        return empty("no circularity table")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=["R² of the circle in each key frequency's plane",
                                        "share of the rows' norm on each key frequency"])
    for i, k in enumerate(_order(circles)):
        colour = PALETTE[i % len(PALETTE)]
        for m, dash in (("unembed", None), ("embed", "dot")):
            for row, column in ((1, "r2"), (2, "share")):
                s = by_step(circles, column, {"matrix": m, "freq": k})
                if len(s):
                    fig.add_trace(curve(s.index, s.values, f"k = {k}, {NAMES[m]}", colour, dash=dash, log_x=log_x,
                                        legendgroup=f"{k}-{m}", showlegend=row == 1), row=row, col=1)
    fig.update_yaxes(title_text="R²", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="share", tickformat=".0%", rangemode="tozero", row=2, col=1)
    last = float(circles["step"].max()) if "step" in circles.columns else None
    add_phase_bands(fig, phases, last, log_x, n_rows=2)
    return finish(time_axes(fig, log_x, 2), 2)
