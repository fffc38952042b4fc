"""MLP neuron norms over training: a neurons x steps heatmap per layer, and the traces of chosen neurons."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import add_phase_bands, curve, empty, figure, finish, memorisation_end, step_x, time_axes

MAX_STEPS = 300  # heatmap columns; more checkpoints are thinned, evenly on the log step axis
FINAL_COLOURS = ["#08306b", "#1f5fa8", "#3f7fe0", "#6baed6", "#9ecae1", "#2b8cbe", "#045a8d", "#74a9cf"]
MEM_COLOURS = ["#7f2704", "#d94801", "#f16913", "#fd8d3c", "#fdae6b", "#a63603", "#e6550d", "#fdd0a2"]


def thin_steps(steps, max_steps: int = MAX_STEPS) -> np.ndarray:
    """At most ``max_steps`` of the sorted ``steps``, evenly spaced in log(step + 1), first and last kept."""
    steps = np.unique(np.asarray(steps, dtype=np.int64))
    if len(steps) <= max_steps:
        return steps
    targets = np.geomspace(steps[0] + 1, steps[-1] + 1, max_steps) - 1
    picked = steps[np.clip(np.searchsorted(steps, targets), 0, len(steps) - 1)]
    return np.unique(np.concatenate([picked, steps[[0, -1]]]))


def norm_matrix(neuron_norms: pd.DataFrame, layer: int, steps: np.ndarray) -> pd.DataFrame:
    """(neurons, steps) norms of one layer, neurons sorted by their norm at the last step, largest first."""
    t = neuron_norms[(neuron_norms["layer"] == layer) & neuron_norms["step"].isin(steps)]
    m = t.pivot_table(index="neuron", columns="step", values="norm", aggfunc="mean")
    return m.sort_values(m.columns[-1], ascending=False, kind="stable")


@figure("neuron_heatmap", section="neurons", title="Neuron norms over training",
        caption="Each row is one MLP neuron, sorted by its final norm (largest on top): look for early bright "
                "rows that fade and a set of rows that grow and take over around grokking.",
        needs=("neuron_norms",), inputs=lambda t: dict(neuron_norms=t.results["neuron_norms"], phases=t.phases))
def fig_neuron_heatmap(neuron_norms: pd.DataFrame, phases: pd.DataFrame | None = None, log_x: bool = True,
                       max_steps: int = MAX_STEPS) -> go.Figure:
    """Heatmap per layer of ``‖W_in[:, i]‖·‖W_out[i, :]‖`` (table ``neuron_norms``), neurons x steps."""
    if neuron_norms is None or not len(neuron_norms):
        return empty("no neuron norms in this table")
    steps = thin_steps(neuron_norms["step"], max_steps)
    layers = sorted(int(v) for v in neuron_norms["layer"].unique())
    fig = make_subplots(rows=len(layers), cols=1, shared_xaxes=True, vertical_spacing=0.1)
    mats = [norm_matrix(neuron_norms, layer, steps) for layer in layers]
    values = np.concatenate([m.to_numpy().ravel() for m in mats])
    zmax = float(np.nanpercentile(values, 99.5)) if np.isfinite(values).any() else 1.0
    for row, (layer, m) in enumerate(zip(layers, mats), start=1):
        fig.add_trace(go.Heatmap(
            z=m.to_numpy(dtype=np.float32), x=step_x(m.columns, log_x), y=[f"L{layer} n{i}" for i in m.index],
            coloraxis="coloraxis", hovertemplate="%{y}<br>step %{x}: norm %{z:.3g}<extra></extra>"), row=row, col=1)
        fig.update_yaxes(title_text=f"layer {layer}: {len(m)} neurons,<br>by final norm", showticklabels=False,
                         ticks="",
                         autorange="reversed", showgrid=False, row=row, col=1)
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=0, cmax=zmax,
                                     colorbar=dict(title=dict(text="norm", side="right"), thickness=14)))
    fig.update_xaxes(showgrid=False)
    add_phase_bands(fig, phases, float(steps[-1]), log_x, n_rows=len(layers), strip=True)
    n = len(layers)
    return finish(time_axes(fig, log_x, n), n, height=max(360, 300 * n + 90))


def top_neurons(neuron_norms: pd.DataFrame, step: int, n: int) -> list[tuple[int, int]]:
    """(layer, neuron) of the ``n`` largest norms at the checkpoint nearest ``step``, largest first."""
    steps = np.unique(neuron_norms["step"].to_numpy())
    near = int(steps[np.abs(steps - step).argmin()])
    t = neuron_norms[neuron_norms["step"] == near].nlargest(n, "norm")
    return [(int(a), int(b)) for a, b in zip(t["layer"], t["neuron"])]


def traces_caption(neuron_norms: pd.DataFrame | None, phases: pd.DataFrame | None, n: int = 5) -> str:
    """The traces' caption, with what this run's neurons did: how much of its norm each group kept or had."""
    text = "Solid blue: the neurons largest at the end; dashed orange: those largest when memorisation ended."
    mem = memorisation_end(phases)
    if neuron_norms is None or not len(neuron_norms) or mem is None:
        return text
    last = int(neuron_norms["step"].max())
    by = neuron_norms.pivot_table(index=["layer", "neuron"], columns="step", values="norm", aggfunc="mean")
    at_mem = by[by.columns[by.columns <= mem][-1]] if (by.columns <= mem).any() else by[by.columns[0]]
    final = by[last]
    top_end, top_mem = final.nlargest(n).index, at_mem.nlargest(n).index
    grown = float(np.median(at_mem[top_end] / final[top_end]))
    kept = float(np.median(final[top_mem] / at_mem[top_mem]))
    if grown > 1:
        final_text = f"were larger at step {mem} than at the end (a median {100 * grown:.0f} % of their final norm)"
    else:
        final_text = (f"had a median {100 * grown:.0f} % of their final norm at step {mem}"
                      + (": they grew from near zero" if grown < 0.2 else ""))
    return (text + f" In this run the memorisation neurons kept a median {100 * kept:.0f} % of their step-{mem} norm "
            f"at the end, and the final ones {final_text}.")


@figure("neuron_traces", section="neurons", title="Traces of the largest neurons",
        caption=lambda t: traces_caption(t.results.get("neuron_norms"), t.phases),
        needs=("neuron_norms",), inputs=lambda t: dict(neuron_norms=t.results["neuron_norms"], phases=t.phases))
def fig_neuron_traces(neuron_norms: pd.DataFrame, phases: pd.DataFrame | None = None, mem_step: int | None = None,
                      n: int = 5, log_x: bool = True) -> go.Figure:
    """Norm over training of the ``n`` neurons largest at the last checkpoint and of the ``n`` largest
    at ``mem_step`` (default: the end of memorisation in ``phases``; none when it never ended)."""
    if neuron_norms is None or not len(neuron_norms):
        return empty("no neuron norms in this table")
    last = int(neuron_norms["step"].max())
    mem_step = memorisation_end(phases) if mem_step is None else mem_step
    final = top_neurons(neuron_norms, last, n)
    at_mem = [k for k in top_neurons(neuron_norms, mem_step, n) if k not in final] if mem_step is not None else []
    groups = neuron_norms.groupby(["layer", "neuron"])
    fig = go.Figure()
    for keys, colours, dash, label in ((final, FINAL_COLOURS, None, "final top"),
                                       (at_mem, MEM_COLOURS, "dash", f"top at step {mem_step}")):
        for i, (layer, neuron) in enumerate(keys):
            t = groups.get_group((layer, neuron)).sort_values("step")
            fig.add_trace(curve(t["step"], t["norm"], f"L{layer} n{neuron} ({label})", colours[i % len(colours)],
                                dash=dash, log_x=log_x))
    fig.update_yaxes(title_text="‖W_in[:, i]‖·‖W_out[i, :]‖")
    if mem_step is None:
        note = "memorisation did not end: only the neurons largest at the end"
        fig.update_layout(title=dict(subtitle=dict(text=note)))
    add_phase_bands(fig, phases, last, log_x)
    return finish(time_axes(fig, log_x), 1, height=420)
