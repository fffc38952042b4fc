"""Curves over training steps: accuracy and loss, weight norms, sparsity, restricted/excluded loss, flatness."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import PALETTE, TRAIN, VAL, add_phase_bands, by_step, curve, empty, esc, figure, finish, time_axes


def _rows(n: int, titles: list[str]) -> go.Figure:
    return make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.12 if n > 1 else 0.0,
                         subplot_titles=titles)


def _last(*tables) -> float | None:
    steps = [float(t["step"].max()) for t in tables if t is not None and len(t) and "step" in t.columns]
    return max(steps) if steps else None


def _accuracy_caption(t) -> str:
    """What the accuracy and loss curves of this run show: the delay, and whether validation loss climbed."""
    from .summary import key_steps, steps_text

    k = key_steps(t.metrics)
    if k.train is None:
        return "Train accuracy never reached 99 %: the run did not memorise its training set, so there is no delay to see."
    if k.val is None:
        text = (f"Train accuracy reached 99 % at step {steps_text(k.train)}; validation accuracy never did (best "
                f"{100 * k.best_val:.0f} %): no grokking in these steps.")
    else:
        text = (f"Train accuracy reached 99 % at step {steps_text(k.train)}, validation accuracy at step "
                f"{steps_text(k.val)}: the gap between the two curves is the grokking delay"
                f" ({steps_text(max(0, k.delay))} steps).")
    vloss = by_step(t.metrics, "val_loss")
    after = vloss[vloss.index >= k.train]
    if len(after) > 1 and after.max() > 1.5 * after.iloc[0]:
        text += (f" The validation loss climbed after memorisation, from {after.iloc[0]:.3g} to {after.max():.3g} "
                 f"at step {steps_text(int(after.idxmax()))}, before it fell.")
    return text


@figure("accuracy", section="training", title="Accuracy and loss",
        caption=_accuracy_caption,
        needs=("metrics",), inputs=lambda t: dict(metrics=t.metrics, phases=t.phases))
def fig_accuracy(metrics: pd.DataFrame, phases: pd.DataFrame | None = None, log_x: bool = True) -> go.Figure:
    """Train and validation accuracy (top) and loss (bottom, log scale) from a run's metrics."""
    fig = _rows(2, ["accuracy", "cross-entropy loss"])
    for row, column, unit in ((1, "acc", "accuracy"), (2, "loss", "loss")):
        for split, colour in (("train", TRAIN), ("val", VAL)):
            s = by_step(metrics, f"{split}_{column}")
            name = "train" if split == "train" else "validation"
            fig.add_trace(curve(s.index, s.values, name, colour, log_x=log_x, legendgroup=name,
                                showlegend=row == 1), row=row, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[-0.02, 1.04], row=1, col=1)
    fig.update_yaxes(title_text="loss (log scale)", type="log", row=2, col=1)
    add_phase_bands(fig, phases, _last(metrics), log_x, n_rows=2, labels=True)
    return finish(time_axes(fig, log_x, 2), 2)


@figure("weight_norms", section="weights", title="Weight norm: total and per block",
        caption="Look for the total norm to peak after memorisation and fall through clean-up, as weight decay "
                "removes the memorising weights; the per-block lines show which part of the model changes.",
        needs=("weight_norms",),
        inputs=lambda t: dict(weight_norms=t.results.get("weight_norms"), metrics=t.metrics, phases=t.phases))
def fig_weight_norms(weight_norms: pd.DataFrame | None, metrics: pd.DataFrame | None = None,
                     phases: pd.DataFrame | None = None, log_x: bool = True) -> go.Figure:
    """Total L2 weight norm (from the metrics when they have it: denser) and each block's norm."""
    total = by_step(metrics, "weight_norm")
    if total.empty and weight_norms is not None:
        total = by_step(weight_norms, "norm", {"group": "total"})
    if total.empty and (weight_norms is None or not len(weight_norms)):
        return empty("no weight norms in this table")
    fig = _rows(2, ["total weight norm", "weight norm per block"])
    fig.add_trace(curve(total.index, total.values, "total", "#333333", log_x=log_x), row=1, col=1)
    if weight_norms is not None and "group" in weight_norms.columns:
        blocks = weight_norms[weight_norms["group"] == "block"]
        for i, name in enumerate(dict.fromkeys(blocks["name"])):
            s = by_step(blocks, "norm", {"name": name})
            fig.add_trace(curve(s.index, s.values, esc(name), PALETTE[i % len(PALETTE)], log_x=log_x), row=2, col=1)
    fig.update_yaxes(title_text="‖θ‖₂", row=1, col=1)
    fig.update_yaxes(title_text="‖block‖₂", row=2, col=1)
    add_phase_bands(fig, phases, _last(metrics, weight_norms), log_x, n_rows=2)
    return finish(time_axes(fig, log_x, 2), 2)


@figure("sparsity", section="sparsity", title="Sparsity of the MLP neuron norms",
        caption="A rising Gini coefficient and a falling effective fraction mean that a few neurons take over; "
                "compare where that happens with the phase bands (the table at the top gives this run's changes "
                "per phase).",
        needs=("sparsity",), optional=("neuron_ablation",),
        inputs=lambda t: dict(sparsity=t.results.get("sparsity"), ablation=t.results.get("neuron_ablation"),
                              phases=t.phases))
def fig_sparsity(sparsity: pd.DataFrame, ablation: pd.DataFrame | None = None, phases: pd.DataFrame | None = None,
                 log_x: bool = True) -> go.Figure:
    """Gini coefficient and effective fraction of the neuron norms per scope; with ``ablation`` (the
    ``neuron_ablation`` table) also the fraction of top-norm neurons that keeps the train accuracy."""
    has_ablation = ablation is not None and len(ablation) > 0 and "k_frac" in ablation.columns
    titles = ["Gini coefficient of the neuron norms", "effective fraction (Σn)²/(N·Σn²)"]
    if has_ablation:
        titles.append("fewest top-norm neurons that keep train accuracy (fraction)")
    n = len(titles)
    fig = _rows(n, titles)
    scopes = list(dict.fromkeys(sparsity["scope"])) if "scope" in sparsity.columns else []
    if "all" in scopes and len(scopes) == 2:  # one layer: its line is the "all layers" line
        scopes = ["all"]
    for i, scope in enumerate(scopes):
        colour = "#333333" if scope == "all" else PALETTE[i % len(PALETTE)]
        name = "all layers" if scope == "all" else esc(scope)
        for row, column in ((1, "gini"), (2, "effective_frac")):
            s = by_step(sparsity, column, {"scope": scope})
            fig.add_trace(curve(s.index, s.values, name, colour, log_x=log_x, legendgroup=name, showlegend=row == 1),
                          row=row, col=1)
    if has_ablation:
        ab_scopes = list(dict.fromkeys(ablation["scope"]))
        for i, scope in enumerate(["all"] if "all" in ab_scopes and len(ab_scopes) == 2 else ab_scopes):
            s = by_step(ablation, "k_frac", {"scope": scope})
            colour = "#333333" if scope == "all" else PALETTE[i % len(PALETTE)]
            fig.add_trace(curve(s.index, s.values, f"k/N ({esc(scope)})", colour, mode="lines+markers", log_x=log_x),
                          row=3, col=1)
        fig.update_yaxes(title_text="k / N", tickformat=".0%", row=3, col=1)
    fig.update_yaxes(title_text="Gini", row=1, col=1)
    fig.update_yaxes(title_text="effective fraction", tickformat=".0%", row=2, col=1)
    add_phase_bands(fig, phases, _last(sparsity, ablation), log_x, n_rows=n)
    return finish(time_axes(fig, log_x, n), n)


@figure("restricted_loss", section="circuits", title="Restricted and excluded loss",
        caption="Look for the restricted loss to fall and the excluded loss to rise before the validation loss "
                "falls: the generalising Fourier circuit forming inside a model that still looks memorised (the "
                "lead/lag table at the top gives the steps).",
        needs=("fourier",),
        inputs=lambda t: dict(fourier=t.results.get("fourier"), metrics=t.metrics, phases=t.phases))
def fig_restricted_loss(fourier: pd.DataFrame, metrics: pd.DataFrame | None = None,
                        phases: pd.DataFrame | None = None, log_x: bool = True,
                        show_unfaithful: bool = False) -> go.Figure:
    """Restricted (validation) and excluded (training) loss of the ``fourier`` table, with the run's train
    and validation loss for reference (log y). Where the table says they are not a faithful measure
    of the Fourier algorithm for this model (``losses_faithful`` False: several layers or LayerNorm),
    the figure says so instead of drawing them, unless ``show_unfaithful``."""
    restricted, excluded = by_step(fourier, "restricted_loss"), by_step(fourier, "excluded_loss")
    if restricted.empty and excluded.empty:
        return empty("restricted and excluded loss are not defined for this operation (see grokscope.analyses.fourier)")
    faithful = fourier.get("losses_faithful")
    if faithful is not None and not show_unfaithful and \
            not faithful.astype(str).str.lower().isin(["true", "1", "1.0"]).all():
        return empty("Not drawn: restricted and excluded loss measure the Fourier algorithm only in a one-layer "
                     "model without LayerNorm (Nanda et al.); this model has more layers or a LayerNorm "
                     "(see grokscope.analyses.fourier.losses_unfaithful). fig_restricted_loss(..., "
                     "show_unfaithful=True) draws them anyway.")
    fig = _rows(1, [""])
    fig.add_trace(curve(restricted.index, restricted.values, "restricted loss", "#2e9e6f", mode="lines+markers",
                        log_x=log_x))
    fig.add_trace(curve(excluded.index, excluded.values, "excluded loss", "#8e5cc9", mode="lines+markers", log_x=log_x))
    for split, colour, name in (("train", TRAIN, "train loss"), ("val", VAL, "validation loss")):
        s = by_step(metrics, f"{split}_loss")
        if len(s):
            fig.add_trace(curve(s.index, s.values, name, colour, dash="dot", log_x=log_x, opacity=0.6))
    fig.update_yaxes(title_text="cross-entropy (log scale)", type="log")
    add_phase_bands(fig, phases, _last(fourier, metrics), log_x)
    return finish(time_axes(fig, log_x), 1, height=380)


@figure("flatness", section="flatness", title="Sharpness and top Hessian eigenvalue",
        caption="Keskar ε-sharpness and the Hessian's top eigenvalue at the analysed checkpoints: look for lower "
                "values (a flatter region) after grokking than during memorisation.",
        needs=("sharpness", "hessian"), any_need=True,
        inputs=lambda t: dict(sharpness=t.results.get("sharpness"), hessian=t.results.get("hessian"),
                              phases=t.phases))
def fig_flatness(sharpness: pd.DataFrame | None = None, hessian: pd.DataFrame | None = None,
                 phases: pd.DataFrame | None = None, log_x: bool = True) -> go.Figure:
    """ε-sharpness per ε (columns ``sharpness_<eps>``) and ``hessian_top``, each in its own row."""
    rows = []
    if sharpness is not None and len(sharpness):
        cols = [c for c in sharpness.columns if c.startswith("sharpness_") and c != "sharpness_evals"]
        rows.append(("ε-sharpness φ", "φ (log scale)", [(by_step(sharpness, c), f"ε = {c[len('sharpness_'):]}")
                                                         for c in cols]))
    if hessian is not None and len(hessian) and "hessian_top" in hessian.columns:
        rows.append(("top eigenvalue of the training-loss Hessian", "λ_max (log scale)",
                     [(by_step(hessian, "hessian_top"), "λ_max")]))
    if not rows:
        return empty("neither sharpness nor hessian was computed")
    fig = _rows(len(rows), [r[0] for r in rows])
    colour = iter(PALETTE)
    for i, (_, ytitle, series) in enumerate(rows, start=1):
        for s, name in series:
            positive = s[s > 0]
            fig.add_trace(curve(positive.index, positive.values, name, next(colour), mode="lines+markers",
                                log_x=log_x), row=i, col=1)
        fig.update_yaxes(title_text=ytitle, type="log", row=i, col=1)
    add_phase_bands(fig, phases, _last(sharpness, hessian), log_x, n_rows=len(rows))
    note = climbing_note(sharpness)
    if note:
        fig.add_annotation(text=esc(note), showarrow=False, xref="paper", yref="paper", x=0, y=1.0, yshift=24,
                           xanchor="left", yanchor="bottom", font=dict(size=11, color="#b45309"))
    return finish(time_axes(fig, log_x, len(rows)), len(rows))


def climbing_note(sharpness: pd.DataFrame | None) -> str:
    """A line saying at how many checkpoints the sharpness ascent was still rising when its budget ran out
    (columns ``climbing_<eps>``), or ''."""
    if sharpness is None or not len(sharpness):
        return ""
    cols = [c for c in sharpness.columns if c.startswith("climbing_")]
    hits = [f"ε = {c[len('climbing_'):]} at {int(n)} of {len(sharpness)} checkpoints"
            for c in cols if (n := sharpness[c].astype(str).str.lower().eq("true").sum())]
    if not hits:
        return ""
    return ("φ was still rising when the ascent's budget ran out (" + "; ".join(hits)
            + "): a lower bound of the maximum; a larger `budget` gives more")


@figure("llc", section="llc", title="Local learning coefficient",
        caption="The SGLD estimate of the local learning coefficient (devinterp) at the analysed checkpoints, "
                "with its stated error: it is expected to rise while the network memorises and fall as it "
                "generalises. Hollow markers: the estimate carries a warning (chains not settled, a negative "
                "estimate, divergence; see the llc table's warning column). Absolute values depend on the SGLD "
                "step size and localisation: compare checkpoints of one run, not runs.",
        needs=("llc",), inputs=lambda t: dict(llc=t.results.get("llc"), phases=t.phases))
def fig_llc(llc: pd.DataFrame | None, phases: pd.DataFrame | None = None, log_x: bool = True) -> go.Figure:
    """The ``llc`` table's estimate rows over steps, error bars ``llc_se``, warned estimates hollow."""
    if llc is None or not len(llc) or "llc" not in llc.columns:
        return empty("no LLC estimates in this table")
    est = llc[llc["kind"] == "estimate"] if "kind" in llc.columns else llc
    est = est.assign(llc=pd.to_numeric(est["llc"], errors="coerce")).dropna(subset=["llc"]).sort_values("step")
    if not len(est):
        return empty("no LLC estimates in this table")
    warned = est["warning"].fillna("").astype(str).str.len() > 0 if "warning" in est.columns else \
        pd.Series(False, index=est.index)
    se = pd.to_numeric(est["llc_se"], errors="coerce") if "llc_se" in est.columns else None
    fig = _rows(1, [""])
    for mask, name, symbol in ((~warned, "LLC estimate", "circle"), (warned, "LLC estimate (with a warning)",
                                                                        "circle-open")):
        part = est[mask]
        if len(part):
            fig.add_trace(curve(part["step"], part["llc"], name, "#8e5cc9", mode="markers", log_x=log_x,
                                marker=dict(symbol=symbol, size=9),
                                error_y=dict(type="data", array=se[mask].to_numpy(), visible=True)
                                if se is not None else None))
    fig.add_trace(curve(est["step"], est["llc"], "LLC", "#8e5cc9", mode="lines", log_x=log_x, showlegend=False,
                        opacity=0.5))
    fig.update_yaxes(title_text="λ̂ (LLC)")
    add_phase_bands(fig, phases, float(est["step"].max()), log_x)
    return finish(time_axes(fig, log_x), 1, height=380)
