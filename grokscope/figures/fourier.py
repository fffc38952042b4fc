"""Fourier structure over training: the frequency x step spectrum, key frequencies and Gini, neuron frequencies."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import add_phase_bands, by_step, curve, empty, figure, finish, step_x, time_axes
from .neurons import thin_steps

RANK_COLOURS = ["#08306b", "#2171b5", "#4292c6", "#6baed6", "#9ecae1", "#c6dbef"]


def _heatmap_rows(fig: go.Figure, mats: list[tuple[str, pd.DataFrame]], log_x: bool, hover: str) -> None:
    """One heatmap per row, frequency on y; the row's name goes in its y title (a strip of phase bands
    sits where a subplot title would)."""
    for row, (name, m) in enumerate(mats, start=1):
        fig.add_trace(go.Heatmap(z=m.to_numpy(dtype=np.float32), x=step_x(m.columns, log_x), y=m.index.to_numpy(),
                                 coloraxis="coloraxis", hovertemplate=hover), row=row, col=1)
        fig.update_yaxes(title_text=f"{name}<br>frequency k" if name else "frequency k", showgrid=False,
                         row=row, col=1)
    fig.update_xaxes(showgrid=False)


@figure("fourier_spectrum", section="fourier", title="Fourier spectrum of the embedding and unembedding",
        caption="Share of each matrix's squared norm on each frequency k (the constant is left out): look for the "
                "spread-out spectrum collapsing onto a few bright rows, the key frequencies.",
        needs=("fourier_spectrum",),
        inputs=lambda t: dict(spectrum=t.results["fourier_spectrum"], phases=t.phases))
def fig_fourier_spectrum(spectrum: pd.DataFrame, phases: pd.DataFrame | None = None, log_x: bool = True,
                         value: str = "frac", max_steps: int = 300) -> go.Figure:
    """Frequency x step heatmap of ``value`` ("frac" or "norm") of the ``fourier_spectrum`` table, one row
    per matrix (embed, unembed); frequency 0 (the constant) is left out."""
    if spectrum is None or not len(spectrum):
        return empty("no Fourier spectrum in this table")
    t = spectrum[(spectrum["freq"] > 0) & spectrum["step"].isin(thin_steps(spectrum["step"], max_steps))]
    names = {"embed": "embedding W_E", "unembed": "unembedding W_U"}
    mats = [(names.get(name, str(name)),
             t[t["matrix"] == name].pivot_table(index="freq", columns="step", values=value, aggfunc="mean"))
            for name in dict.fromkeys(t["matrix"])]
    fig = make_subplots(rows=len(mats), cols=1, shared_xaxes=True, vertical_spacing=0.08)
    label = "share of ‖W‖²" if value == "frac" else "norm"
    _heatmap_rows(fig, mats, log_x, f"k = %{{y}}<br>step %{{x}}: {label} %{{z:.3g}}<extra></extra>")
    fig.update_layout(coloraxis=dict(colorscale="Magma",
                                     colorbar=dict(title=dict(text=label, side="right"), thickness=14)))
    add_phase_bands(fig, phases, float(t["step"].max()), log_x, n_rows=len(mats), strip=True)
    n = len(mats)
    return finish(time_axes(fig, log_x, n), n, height=max(360, 280 * n + 90))


def key_frequency_points(fourier: pd.DataFrame) -> pd.DataFrame:
    """Long table ``step, rank, freq`` from the ``key_freqs`` strings ("5,7,1", largest first)."""
    rows = []
    for step, text in zip(fourier["step"], fourier["key_freqs"].astype(str)):
        for rank, k in enumerate(v for v in text.split(",") if v.strip().lstrip("-").isdigit()):
            rows.append((int(step), rank + 1, int(k)))
    return pd.DataFrame(rows, columns=["step", "rank", "freq"])


def key_frequency_title(fourier: pd.DataFrame | None) -> str:
    """The figure's title, naming the key frequencies when every checkpoint shares them."""
    keys = set(fourier["key_freqs"].astype(str)) if fourier is not None and "key_freqs" in fourier.columns else set()
    if len(keys) == 1:
        return f"Fourier sparsity and the share of the norm on the key frequencies k = {', '.join(keys.pop().split(','))}"
    return "Fourier sparsity and the share of the norm on each checkpoint's key frequencies"


@figure("key_frequencies", section="fourier", title="Fourier sparsity and the share on the key frequencies",
        caption="Look for the Gini coefficient of the frequency norms to rise as the embedding and unembedding "
                "concentrate on a few frequencies, and for the share of their norm on the key frequencies to grow. "
                "The key frequencies are the same for every checkpoint (by default the last checkpoint's, counted by "
                "the gap in its unembedding's spectrum, as Nanda et al. fixed the final model's); when the analysis "
                "chose them per checkpoint, a second panel shows them.",
        needs=("fourier",), inputs=lambda t: dict(fourier=t.results["fourier"], phases=t.phases))
def fig_key_frequencies(fourier: pd.DataFrame, phases: pd.DataFrame | None = None, log_x: bool = True,
                        title: str | None = None) -> go.Figure:
    """Gini of the embedding and unembedding spectra and the key-frequency share; below, the key
    frequencies by rank only when they differ between checkpoints. From the ``fourier`` table; the
    title names the key frequencies when they are fixed."""
    if fourier is None or not len(fourier):
        return empty("no Fourier table")
    varying = "key_freqs" in fourier.columns and fourier["key_freqs"].astype(str).nunique() > 1
    n = 2 if varying else 1
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=["Fourier sparsity", "key frequencies of each checkpoint"] if varying else None)
    for column, name, colour in (("embed_gini", "Gini, embedding", "#e4572e"),
                                 ("unembed_gini", "Gini, unembedding", "#8e5cc9"),
                                 ("embed_key_frac", "embedding norm² on key freqs", "#2e9e6f"),
                                 ("unembed_key_frac", "unembedding norm² on key freqs", "#17a2b8")):
        s = by_step(fourier, column)
        if len(s):
            fig.add_trace(curve(s.index, s.values, name, colour, log_x=log_x), row=1, col=1)
    if varying:
        pts = key_frequency_points(fourier)
        for rank, t in pts.groupby("rank"):
            fig.add_trace(curve(t["step"], t["freq"], f"key freq #{rank}", RANK_COLOURS[min(rank, 6) - 1],
                                mode="markers", log_x=log_x, marker=dict(size=max(3, 9 - rank))), row=2, col=1)
        fig.update_yaxes(title_text="frequency k", row=2, col=1)
    fig.update_yaxes(title_text="Gini / share", range=[-0.02, 1.06], row=1, col=1)  # a curve at 1 is not clipped
    add_phase_bands(fig, phases, float(fourier["step"].max()), log_x, n_rows=n)
    fig.update_layout(title=dict(text=title if title is not None else key_frequency_title(fourier), x=0.01))
    return finish(time_axes(fig, log_x, n), n)


@figure("fourier_neurons", section="fourier", title="MLP neurons by dominant frequency",
        caption="How many neurons of the MLP have most of their variance on one frequency: look for the neurons "
                "gathering on the key frequencies, a few bright rows.",
        needs=("fourier_neurons",),
        inputs=lambda t: dict(fourier_neurons=t.results["fourier_neurons"], phases=t.phases))
def fig_fourier_neurons(fourier_neurons: pd.DataFrame, phases: pd.DataFrame | None = None, log_x: bool = True,
                        min_frac: float = 0.5, max_steps: int = 300) -> go.Figure:
    """Frequency x step heatmap: number of neurons whose dominant frequency is k and explains at least
    ``min_frac`` of their variance over the input grid (table ``fourier_neurons``; dead neurons left out)."""
    if fourier_neurons is None or not len(fourier_neurons):
        return empty("no neuron frequencies in this table")
    steps = thin_steps(fourier_neurons["step"], max_steps)
    t = fourier_neurons[fourier_neurons["step"].isin(steps)]
    clean = t[(t["freq"] > 0) & (pd.to_numeric(t["frac"], errors="coerce") >= min_frac)]
    freqs = np.arange(1, int(t["freq"].max()) + 1) if t["freq"].max() > 0 else np.arange(1, 2)
    m = clean.groupby(["freq", "step"]).size().unstack("step").reindex(index=freqs, columns=steps).fillna(0)
    fig = make_subplots(rows=1, cols=1)
    _heatmap_rows(fig, [("", m)], log_x, "k = %{y}<br>step %{x}: %{z} neurons<extra></extra>")
    fig.update_layout(coloraxis=dict(colorscale="Blues", cmin=0, cmax=max(1.0, float(m.to_numpy().max())),
                                     colorbar=dict(title=dict(text="neurons", side="right"), thickness=14)))
    add_phase_bands(fig, phases, float(steps[-1]), log_x, strip=True)
    return finish(time_axes(fig, log_x), 1, height=380)
