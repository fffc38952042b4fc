"""Figure 3 maps with a slider across the analysed checkpoints: the t-SNE maps (full space and
key-frequency subspace) and the key-frequency circles (``circles.py`` draws those with the same helper).

Size. The report embeds every slider step: the points' colours and hover labels are written once (the
tokens are the same rows at every checkpoint) and each step carries only the coordinates, as float32
arrays (plotly writes them base64-encoded), the "+8" chords as polylines (``chord_order``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import PALETTE, empty, esc, figure, finish

NO_COLOUR = "#b0b0b0"
MATRICES = {"embed": "embedding rows W_E", "unembed": "unembedding rows W_U",
            "embed_keys": "embedding, key-frequency subspace", "unembed_keys": "unembedding, key-frequency subspace"}
CHORDS = dict(color="rgba(90,90,90,0.35)", width=1)


def colour_label(op_kind: str) -> str:
    return {"group": "coset of the chosen subgroup"}.get(op_kind, "residue mod 8" if op_kind.startswith("modular")
                                                       or op_kind == "multiplicative" else "colour")


def coset_text(subgroup: str = "paper", coset: str = "left", degree: int = 5) -> str:
    """Plain text naming the subgroup and cosets the colours show, e.g. "left cosets gH of H = <(0 3)(1 4),
    (1 2)(3 4)> (order 10, 12 cosets)"."""
    from ..analyses.tsne import PAPER_SUBGROUP, named_subgroup

    try:
        order = len(named_subgroup(subgroup, degree))
    except Exception:  # noqa: BLE001 - a label only: never fail a figure on it
        order = None
    gens = {"paper": PAPER_SUBGROUP, "S4": "the stabiliser of 4 (S4)", "A5": "the even permutations (A5)"}
    name = gens.get(subgroup, subgroup)
    if subgroup not in ("S4", "A5"):  # generators in cycle notation: the group they generate
        name = f"<{name.replace(';', ',')}>"
    side = "left cosets gH" if coset == "left" else "right cosets Hg"
    size = ""
    if order:
        total = 1
        for i in range(2, degree + 1):
            total *= i
        size = f" (order {order}, {total // order} cosets)"
    return f"{side} of H = {name}{size}"


def chord_order(nxt: np.ndarray) -> np.ndarray:
    """Point indices (-1: a break) of polylines that draw every chord i -> nxt[i] (nxt[i] < 0: none) once.

    The "+8" map is a permutation, so its chords form cycles (one through all p residues when 8 and p are
    coprime): drawn as polylines they need about one point per element instead of three per chord."""
    n = len(nxt)
    has_pred = np.zeros(n, dtype=bool)
    has_pred[nxt[nxt >= 0]] = True
    used = np.zeros(n, dtype=bool)  # the chord leaving i is drawn
    order: list[int] = []
    for start in [*np.flatnonzero(~has_pred), *range(n)]:  # paths first (from heads), then cycles
        if used[start] or nxt[start] < 0:
            continue
        i = int(start)
        order.append(i)
        while nxt[i] >= 0 and not used[i]:
            used[i] = True
            i = int(nxt[i])
            order.append(i)
        order.append(-1)
    return np.asarray(order, dtype=np.int64)


def _coords(t: pd.DataFrame, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(chord x, chord y, point x, point y) float32 of one panel at one step, points in ``tokens`` order;
    the chords element -> ``next`` as polylines separated by NaN (``chord_order``)."""
    rows = t.drop_duplicates("token").set_index("token").reindex(tokens)
    xy = rows[["x", "y"]].to_numpy(np.float64)
    where = {int(tok): i for i, tok in enumerate(tokens)}
    nxt = np.array([where.get(int(n), -1) if n == n else -1 for n in rows["next"]], dtype=np.int64)
    order = chord_order(nxt)
    seg = np.where(order[:, None] >= 0, xy[np.maximum(order, 0)], np.nan)
    return (seg[:, 0].astype(np.float32), seg[:, 1].astype(np.float32), xy[:, 0].astype(np.float32),
            xy[:, 1].astype(np.float32))


def _axes(row: int, col: int, cols: int) -> tuple[str, str]:
    i = (row - 1) * cols + col
    return ("x" if i == 1 else f"x{i}"), ("y" if i == 1 else f"y{i}")


def _panel_rows(t: pd.DataFrame, where: dict) -> pd.DataFrame:
    """The rows of ``t`` with each column of ``where`` equal to its value (one panel's points)."""
    return t[np.logical_and.reduce([t[c] == v for c, v in where.items()])]


def _panel_ranges(px: np.ndarray, py: np.ndarray, xa: str, ya: str, square: bool) -> dict:
    """The layout ranges of one panel's axes at one step: symmetric and equal about 0 (``square``), or
    the points' own extent plus 6 %."""
    finite = np.isfinite(px) & np.isfinite(py)
    xs, ys = px[finite], py[finite]
    ax, ay = xa.replace("x", "xaxis"), ya.replace("y", "yaxis")
    if square:
        r = float(np.sqrt(xs ** 2 + ys ** 2).max()) * 1.12 if len(xs) else 1.0
        r = r or 1.0
        return {ax: dict(range=[-r, r]), ay: dict(range=[-r, r])}
    out = {}
    for name, v in ((ax, xs), (ay, ys)):
        lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
        pad = 0.06 * (hi - lo or 1.0)
        out[name] = dict(range=[lo - pad, hi + pad])
    return out


def _add_panel(fig: go.Figure, base: pd.DataFrame, tokens: np.ndarray, xa: str, ya: str, big: bool, label: str,
               hover_extra: str) -> None:
    """One panel's two traces at the last step: the chords, then the points with their colours and hover
    text (written once; the slider frames carry only coordinates)."""
    colours = [PALETTE[int(c) % len(PALETTE)] if c >= 0 else NO_COLOUR for c in base["colour"]]
    text = [f"{esc(e)}<br>{esc(label)} {int(c)}{hover_extra}" if c >= 0 else esc(e)
            for e, c in zip(base["element"], base["colour"])]
    cx, cy, px, py = _coords(base, tokens)
    fig.add_trace(go.Scatter(x=cx, y=cy, mode="lines", line=CHORDS, hoverinfo="skip", showlegend=False,
                             xaxis=xa, yaxis=ya))
    fig.add_trace(go.Scatter(x=px, y=py, mode="markers", marker=dict(color=colours, size=8 if big else 7,
                             line=dict(color="white", width=0.6)), text=text,
                             hovertemplate="%{text}<extra></extra>", showlegend=False, xaxis=xa, yaxis=ya))


def _style_axes(fig: go.Figure, panels: list, rows: int, cols: int, square: bool,
                axis_titles: tuple[str, str]) -> None:
    """No ticks or grid; titles on the bottom row and left column; equal scales when ``square``."""
    for p, panel in enumerate(panels):
        if panel is None:
            continue
        row, col = p // cols + 1, p % cols + 1
        fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=square, zerolinecolor="#ddd",
                         title_text=axis_titles[0] if row == rows else None, row=row, col=col)
        fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=square, zerolinecolor="#ddd",
                         title_text=axis_titles[1] if col == 1 else None, row=row, col=col)
        if square:
            xa, _ = _axes(row, col, cols)
            fig.update_yaxes(scaleanchor=xa, scaleratio=1, constrain="domain", row=row, col=col)
            fig.update_xaxes(constrain="domain", row=row, col=col)


def _slider(steps: list[int]) -> dict:
    """A slider over the checkpoints, one animation frame each, at the last one."""
    return dict(active=len(steps) - 1, currentvalue=dict(prefix="checkpoint: step ", font=dict(size=13)),
                pad=dict(t=40, b=10), len=0.96, x=0.02,
                steps=[dict(label=str(s), method="animate",
                            args=[[str(s)], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                 transition=dict(duration=0))]) for s in steps])


def slider_maps(table: pd.DataFrame, panels: list[tuple[str, dict]], titles: list[str], cols: int, label: str,
                square: bool = False, axis_titles: tuple[str, str] = ("t-SNE 1", "t-SNE 2"),
                hover_extra: str = "", height_per_row: int = 330) -> go.Figure:
    """A grid of point maps (``panels``: (key, {column: value}) selecting each panel's rows of
    ``table``: ``step, token, element, x, y, colour, next``; None: an empty cell of the grid), one
    slider step per checkpoint, starting at the last one. ``square``: equal, symmetric axes about 0
    (the circles); else each panel's own range."""
    steps = sorted(int(s) for s in table["step"].unique())
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.05 if cols > 2 else 0.07,
                        vertical_spacing=0.1 if rows > 1 else 0.0, subplot_titles=titles)
    by_step = {s: g for s, g in table.groupby("step")}
    frames = {s: [] for s in steps}  # step -> the coordinates of every trace
    ranges = {s: {} for s in steps}  # step -> the axis ranges of every panel
    for p, panel in enumerate(panels):
        xa, ya = _axes(p // cols + 1, p % cols + 1, cols)
        if panel is None:
            fig.update_xaxes(visible=False, row=p // cols + 1, col=p % cols + 1)
            fig.update_yaxes(visible=False, row=p // cols + 1, col=p % cols + 1)
            continue
        key, where = panel
        base = _panel_rows(by_step[steps[-1]], where).drop_duplicates("token").sort_values("token")
        tokens = base["token"].to_numpy(np.int64)  # every step's points in this order
        _add_panel(fig, base, tokens, xa, ya, cols <= 2, label, hover_extra)
        for s in steps:
            cx, cy, px, py = _coords(_panel_rows(by_step[s], where), tokens)
            frames[s] += [go.Scatter(x=cx, y=cy), go.Scatter(x=px, y=py)]
            ranges[s].update(_panel_ranges(px, py, xa, ya, square))
    traces = list(range(2 * sum(p is not None for p in panels)))
    fig.frames = [go.Frame(name=str(s), data=frames[s], traces=traces, layout=ranges[s]) for s in steps]
    fig.update_layout(ranges[steps[-1]])
    _style_axes(fig, panels, rows, cols, square, axis_titles)
    fig.update_layout(sliders=[_slider(steps)])
    return finish(fig, height=height_per_row * rows + 170, margin=dict(t=90))


def _tsne_inputs(t) -> dict:
    table = t.results["tsne"]
    params = table.attrs.get("params", {}) if hasattr(table, "attrs") else {}
    return dict(tsne=table, colour_by=colour_label(t.op_kind),
                subgroup=params.get("subgroup", "paper") if t.op_kind == "group" else None,
                coset=params.get("coset", "left"),
                key_freqs=params.get("key_freqs") if params.get("subspace", "none") != "none" else None)


@figure("tsne", section="tsne", title="t-SNE of the embedding and unembedding",
        caption="Drag the slider across the analysed checkpoints. Top: t-SNE of the full rows (all of d_model); it "
                "keeps which rows are neighbours, so it shows Figure 3's circle only when one frequency dominates: "
                "a grokked model that spreads its rows over several key frequencies gives a cloud, with x and x + 8 "
                "no closer than any two elements. Bottom (modular tasks): the same rows filtered to the key "
                "frequencies; the structure is there, but several circles still share one 2-D map. t-SNE keeps "
                "neighbourhoods only: distances between clusters, angles and the map's orientation mean nothing; the "
                "circles below show each frequency's plane exactly. For S5 the colours are cosets: the subtitle names "
                "the subgroup and the side; same-coloured points gather into clusters when the model groups them.",
        needs=("tsne",), time_axis=False, inputs=_tsne_inputs)
def fig_tsne(tsne: pd.DataFrame, colour_by: str = "colour", subgroup: str | None = None, coset: str = "left",
             key_freqs: str | None = None) -> go.Figure:
    """t-SNE maps (table ``tsne``: ``matrix, element, token, x, y, colour, next``), the full-space maps
    on top and the key-subspace maps (``embed_keys``, ``unembed_keys``) below when the table has them,
    one slider step per analysed checkpoint, starting at the last one. ``colour_by`` names the colours;
    ``subgroup``/``coset``: for S5, named in the subtitle; ``key_freqs``: named in the titles."""
    if tsne is None or not len(tsne):
        return empty("no t-SNE maps in this table")
    present = list(dict.fromkeys(tsne["matrix"]))
    matrices = [m for m in MATRICES if m in present] or present[:2]
    keys = f" (k = {esc(str(key_freqs).replace(',', ', '))})" if key_freqs else ""
    titles = [MATRICES.get(m, esc(m)) + (keys if m.endswith("_keys") else "") for m in matrices]
    label = esc(colour_by)
    if subgroup is not None:
        label = esc(f"{coset_text(subgroup, coset)}; colour = coset")
    fig = slider_maps(tsne, [(m, {"matrix": m}) for m in matrices], titles, cols=2, label=esc(colour_by), square=False)
    lines = "; lines join each element to element + 8" if (tsne["next"] >= 0).any() else ""
    fig.update_layout(title=dict(subtitle=dict(text=f"colour: {label}{lines}")))
    return fig
