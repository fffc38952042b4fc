"""The report's opening: the phases table (what changed inside, per phase), the sortable lead/lag table,
the train-loss spikes named in the summary, and figure titles and captions that say what this run shows."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from grokscope.analyses.phases import find_leadlag, find_phases
from grokscope.figures import FIGURES, SECTIONS, fig_key_frequencies, fig_sparsity
from grokscope.figures.common import PHASE_COLOURS
from grokscope.figures.inputs import ReportRun
from grokscope.figures.neurons import traces_caption
from grokscope.figures.summary import TOP_MOVES, loss_spikes, phase_rows, spike_text
from grokscope.report import _summary

from test_report import tables


def planted_metrics(spike_at: int | None = 1600, spike: float = 0.1) -> pd.DataFrame:
    """Train accuracy 100 % from step 100; train loss falls to 1e-6 and stays there, except a
    planted spike to ``spike`` at ``spike_at`` (3 e^(-step/70) reaches 1e-6 at step 1 050; two evaluations: up, then half-way down)."""
    steps = np.arange(0, 3001, 50)
    acc = np.clip(steps / 100, 0.05, 1.0)
    loss = np.maximum(3.0 * np.exp(-steps / 70.0), 1e-6)
    if spike_at is not None:
        loss[steps == spike_at] = spike
        loss[steps == spike_at + 50] = spike / 2
    val = np.where(steps >= 2000, 1.0, 0.05)
    return pd.DataFrame({"step": steps, "train_loss": loss, "train_acc": acc, "val_loss": 3 * (1.01 - val),
                         "val_acc": val, "weight_norm": 30.0})


def test_a_planted_train_loss_spike_after_memorisation_is_found_once_at_its_peak():
    m = planted_metrics()
    phases = find_phases(m)
    spikes = loss_spikes(m, phases)
    assert len(spikes) == 1
    s = spikes[0]
    assert s.step == 1600 and s.peak == 0.1 and s.low == 1e-6 and s.low_step < 1600
    assert s.phase == "circuit_formation"  # the planted validation loss falls below chance at step 2000
    assert spike_text(s) == ("the train loss spiked after memorisation: 1.0e-06 (step 1\u202f050) → 0.1 at step "
                             "1\u202f600, in circuit formation")
    assert loss_spikes(planted_metrics(spike_at=None)) == []  # a smooth run has none
    assert loss_spikes(planted_metrics(spike=5e-5)) == []  # a wobble far below any meaningful loss is not one
    before = planted_metrics(spike_at=None)
    before.loc[before.step == 50, "train_loss"] = 2.9  # before memorisation (step 100): not a spike after it
    assert loss_spikes(before) == []


def test_the_summary_names_the_spike_and_opens_with_one_row_per_phase(tmp_path):
    t = tables()
    m = t.metrics.copy()
    m.loc[m.step == 1500, "train_loss"] = 1.0  # memorised at 200 (loss 0.03): a planted spike at 1500
    t.metrics, t.phases = m, find_phases(m, t.results)
    t.results["phases_leadlag"] = find_leadlag(m, t.results)
    html = _summary(ReportRun(t, None, None, Path(tmp_path)))
    assert "<dt>train-loss spike</dt><dd>the train loss spiked after memorisation" in html
    assert "→ 1 at step 1\u202f500" in html
    table = re.search(r'<table class="phase-summary">.*?</table>', html, re.S).group(0)
    rows = re.findall(r"<tbody>.*</tbody>", table, re.S)[0].split("</tr>")[:-1]
    assert len(rows) == 4 == len(t.phases)
    for row, (phase, colour) in zip(rows, PHASE_COLOURS.items()):
        assert colour in row
    expected = phase_rows(t.phases, m, t.results)
    for row, want in zip(rows, expected):
        shown = re.findall(r"<li>(.*?)</li>", row.split("<details>")[0])
        if want.moves:
            assert shown == [x.replace("'", "&#x27;") for x in want.moves[:TOP_MOVES]]  # the largest first
        assert want.steps.replace("\u202f", "\u202f") in row and "starts: " in row and "<details>" in row
    # the moves are ranked by size and leave out the losses and accuracy (what the network does)
    circuit = next(r for r in expected if r.phase == "circuit_formation")
    assert circuit.moves and not any(x.startswith(("train loss", "validation")) for x in circuit.moves)
    assert "train accuracy reached 99 %" in circuit.bounds and "validation loss below chance" in circuit.bounds
    # the lead/lag: a table whose header sorts, the validation loss the reference
    ll = re.search(r'<table class="runs sortable leadlag">.*?</table>', html, re.S).group(0)
    assert ll.count("<tr>") == len(t.results["phases_leadlag"]) + 1 and "the reference" in ll
    steps = [int(x) for x in re.findall(r'<td data-sort="(\d+)">[\d\u202f]+</td>', ll)]
    assert steps == sorted(steps) and steps  # in the order they moved


def test_phase_moves_rank_by_size_in_units_of_a_meaningful_change():
    """Planted: between steps 100 and 1000 the weight norm halves (ln 2 / ln(1/0.95) ≈ 13.5 units) and the
    neuron Gini rises 0.2 (4 units); the Fourier Gini rises 0.15 (1.5 units); nothing else moves."""
    steps = np.arange(0, 2001, 100)
    late = steps >= 1000
    m = pd.DataFrame({"step": steps, "train_loss": 0.01, "train_acc": np.where(steps >= 100, 1.0, 0.1),
                      "val_loss": 3.0, "val_acc": 0.1, "weight_norm": np.where(late, 10.0, 20.0)})
    sparsity = pd.DataFrame({"step": steps, "scope": "all", "gini": np.where(late, 0.5, 0.3), "effective_n": 100.0})
    fourier = pd.DataFrame({"step": steps, "embed_gini": np.where(late, 0.35, 0.2), "unembed_gini": 0.2})
    phases = find_phases(m, {"sparsity": sparsity, "fourier": fourier})
    rows = phase_rows(phases, m, {"sparsity": sparsity, "fourier": fourier})
    circuit = next(r for r in rows if r.phase == "circuit_formation")
    assert [x.split(" rises")[0].split(" falls")[0] for x in circuit.moves] == [
        "total weight norm", "Gini of the MLP neuron norms", "Fourier Gini of the embedding"]
    assert circuit.moves[0] == "total weight norm falls 20.0 → 10.0"


def test_figure_titles_and_captions_say_what_this_run_shows():
    t = tables()
    assert not any(s.title.startswith("Figure") for s in SECTIONS)
    fig = fig_key_frequencies(t.results["fourier"], t.phases)
    keys = t.results["fourier"]["key_freqs"].astype(str).iloc[-1]
    assert fig.layout.title.text.endswith(f"k = {', '.join(keys.split(','))}")  # named, not drawn as constant dots
    assert len([k for k in fig.layout.to_plotly_json() if k.startswith("yaxis")]) == 1
    assert fig.layout.yaxis.range[1] > 1.0  # a share of 1 is drawn, not clipped
    varying = t.results["fourier"].copy()
    varying["key_freqs"] = ["1,2" if s < 1000 else keys for s in varying.step]
    assert fig_key_frequencies(varying, t.phases).layout.yaxis2.title.text == "frequency k"  # then they are shown
    # the neuron traces' caption states what the norms did: planted, the final top neurons grow from 0.1 to 1
    # while the neurons largest at memorisation (step 200) fall from 2 to 1 (medians: 0.98 / 1.98 kept, and the
    # final ones had 0.12 / 1.02 of their final norm at step 200)
    rows = []
    for s, grow, fade in ((0, 0.1, 0.5), (200, 0.1, 2.0), (2000, 1.0, 1.0)):
        rows += [(s, 0, i, grow + 0.01 * i) for i in range(5)] + [(s, 0, 5 + i, fade - 0.01 * i) for i in range(5)]
    norms = pd.DataFrame(rows, columns=["step", "layer", "neuron", "norm"])
    text = traces_caption(norms, t.phases)
    assert "kept a median 49 % of their step-200 norm" in text
    assert "had a median 12 % of their final norm at step 200: they grew from near zero" in text
    assert "Expect" not in FIGURES["neuron_traces"].caption_for(t)


def test_one_layer_sparsity_draws_no_block_line_under_all_layers_and_bands_reach_the_axis():
    t = tables()
    sp = t.results["sparsity"]
    one = sp[sp.scope.isin(["all", sp.scope[sp.scope != "all"].iloc[0]])]
    fig = fig_sparsity(one, phases=t.phases)
    assert {tr.name for tr in fig.data} == {"all layers"}
    several = fig_sparsity(sp, phases=t.phases)
    assert len({tr.name for tr in several.data}) == sp.scope.nunique()
    lo, hi = 10 ** np.array(fig.layout.xaxis.range)
    bands = [s for s in fig.layout.shapes if s.type == "rect"]
    assert np.isclose(min(s.x0 for s in bands), lo) and np.isclose(max(s.x1 for s in bands), hi)
