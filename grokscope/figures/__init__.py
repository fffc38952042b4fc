"""Plotly figures of a run's results: one public ``fig_*`` function per figure, each taking plain
DataFrames (the run's metrics, the analysis tables, the phases table) and returning a
``plotly.graph_objects.Figure``, the same picture the HTML report embeds::

    from grokscope.figures import fig_accuracy, fig_neuron_heatmap
    fig_accuracy(run.metrics, phases=results["phases"])      # in a notebook: displays itself
    fig_neuron_heatmap(results["neuron_norms"], log_x=False)

One registry for every page's figures (``common.py``): ``@figure(name, page=..., ...)`` above a
``fig_*`` function records its page ("run", "compare" or "sweep"), title, one-sentence caption, what it
needs and when it applies; ``REGISTRY[page]`` maps names to ``FigureSpec`` and each page draws its own,
in registration order. ``FIGURES`` is ``REGISTRY["run"]``; ``SECTIONS`` lists the run report's sections
in order, with the analyses that feed them (a new run figure names one; a new section is one line here).
Time axes are logarithmic by default (step 0 drawn at 0.5) and carry the phase bands; see ``common.py``.
Comparisons of several runs are in ``compare.py``; the figures of a sweep (a grid of runs, one row per
run in its results table: Figures 1 center, 2, 6 and 7 of the paper) in ``sweep.py``. What a run's
figures draw from, read from disk, is ``inputs.py``; one HTML page of figures, ``page.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .circles import fig_circles, fig_circularity
from .common import (FIGURES, PAGES, PHASE_COLOURS, PHASE_LABELS, REGISTRY, STEP0, FigureSpec, RunTables, figure,
                     figures_on, phase_spans)
from .compare import COMPARISONS, comparison, fig_compare_accuracy, fig_compare_series, first_step_at
from .export import export_report_figures, notebook_mode, save_figure, save_figures
from .curves import fig_accuracy, fig_flatness, fig_llc, fig_restricted_loss, fig_sparsity, fig_weight_norms
from .forecast import fig_forecast
from .fourier import fig_fourier_neurons, fig_fourier_spectrum, fig_key_frequencies
from .neurons import fig_neuron_heatmap, fig_neuron_traces
from .sweep import (SweepTable, fig_best_val_vs_frac, fig_sharpness_vs_val, fig_steps_vs_frac, fig_sweep_heatmap,
                    spearman)
from .tsne import fig_tsne


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    analyses: tuple[str, ...]  # what `grokscope analyze --only` must compute for it ("" for the metrics)
    absent: str = ""  # what the page says when none of its figures applies and no analysis is missing


SECTIONS = [
    Section("training", "Accuracy and loss", ()),
    Section("forecast", "Will it grok, and when: the forecast", (),
            "No forecast in this run's metrics: it was trained with --no-forecast or before the live forecast "
            "existed. `grokscope forecast RUN --save` computes what the forecast would have been at each "
            "checkpoint and stores it for this section."),
    Section("weights", "Weight norms", ("weight_norms",)),
    Section("neurons", "Neuron norms", ("neuron_norms",)),
    Section("sparsity", "Sparsity of the neurons", ("sparsity", "neuron_ablation")),
    Section("fourier", "Fourier structure", ("fourier_spectrum", "fourier", "fourier_neurons")),
    Section("circuits", "Restricted and excluded loss", ("fourier",)),
    Section("tsne", "The rows' geometry: t-SNE maps and key-frequency circles", ("tsne", "circle_points", "circles")),
    Section("flatness", "Flatness: sharpness and Hessian", ("sharpness", "hessian")),
    Section("llc", "Local learning coefficient", ("llc",)),
]


def figures_in(section: str) -> list[FigureSpec]:
    """The run report's figures of one section."""
    return figures_on("run", section)


__all__ = [
    "REGISTRY", "PAGES", "figure", "figures_on", "comparison", "SweepTable", "save_figures",
    "FIGURES", "SECTIONS", "COMPARISONS", "FigureSpec", "RunTables", "Section", "figures_in", "phase_spans",
    "PHASE_COLOURS", "PHASE_LABELS", "STEP0", "fig_accuracy", "fig_weight_norms", "fig_neuron_heatmap",
    "fig_neuron_traces", "fig_sparsity", "fig_fourier_spectrum", "fig_key_frequencies", "fig_fourier_neurons",
    "fig_restricted_loss", "fig_forecast", "fig_tsne", "fig_circles", "fig_circularity", "fig_flatness", "fig_llc", "fig_compare_accuracy", "fig_compare_series",
    "first_step_at", "fig_steps_vs_frac", "fig_best_val_vs_frac", "fig_sweep_heatmap", "fig_sharpness_vs_val",
    "spearman", "save_figure", "export_report_figures", "notebook_mode",
]
