"""End to end: a small model that really groks on the CPU, analysed; the phases come out in order."""
import math

import pandas as pd
import pytest

from grokscope.analyses import REGISTRY
from grokscope.analyze import analyze
from grokscope.results import load_results

pytestmark = pytest.mark.slow
NAMES = ["weight_norms", "neuron_norms", "sparsity", "neuron_ablation", "fourier", "phases", "phases_leadlag"]


@pytest.fixture(scope="module")
def analysed(grokked_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("analyses") / grokked_run.path.name
    return analyze(grokked_run, only=[n for n in NAMES if n in REGISTRY], out=out, progress=False), out


def first(m, column, threshold=0.99):
    return int(m.loc[m[column] >= threshold, "step"].iloc[0])


def test_phases_in_order_and_consistent_with_the_curves(grokked_run, analysed):
    tables, _ = analysed
    m = grokked_run.metrics
    ph = tables["phases"].set_index("phase")
    assert list(ph.index) == ["memorisation", "circuit_formation", "clean_up", "grokked"]
    assert ph.present.all(), ph.description.tolist()
    mem, circ, clean, grok = (ph.loc[p] for p in ph.index)
    # contiguous and strictly ordered: memorisation < circuit formation < clean-up < grokked
    assert mem.start_step == 0
    assert mem.end_step == circ.start_step < circ.end_step == clean.start_step < clean.end_step == grok.start_step
    # the boundaries sit where the curves say
    assert mem.end_step == first(m, "train_acc")
    at = m.set_index("step")
    chance = math.log(grokked_run.data.n_elements)
    # circuit formation: validation loss above chance throughout (smoothed: allow one evaluation of slack)
    during = at.loc[(at.index >= circ.start_step) & (at.index < circ.end_step), "val_loss"]
    assert (during.iloc[:-1] >= chance).mean() > 0.9
    assert at.val_acc[mem.end_step] < 0.5  # memorised, not generalised: a real delay
    # clean-up starts when validation loss falls below chance for good and ends after validation reaches 99 %
    assert (at.loc[at.index >= clean.start_step, "val_loss"] < chance).mean() > 0.95
    assert clean.end_step >= first(m, "val_acc")
    assert clean.marker == "val_loss" and clean.threshold == pytest.approx(chance)
    assert grok.start_step - mem.end_step >= 500
    assert ph.step.tolist() == ph.start_step.tolist()


def test_internal_picture(grokked_run, analysed):
    tables, _ = analysed
    ph = tables["phases"].set_index("phase")
    t_mem, t_clean = ph.loc["circuit_formation", ["start_step", "end_step"]]
    # the total of weight_norms is the metrics' weight_norm at the same steps
    wn = tables["weight_norms"]
    total = wn[wn.group == "total"].set_index("step")["norm"]
    metric = grokked_run.metrics.set_index("step")["weight_norm"]
    shared = total.index.intersection(metric.index)
    assert len(shared) > 20 and set(total.index) == set(grokked_run.steps)
    pd.testing.assert_series_equal(total[shared], metric[shared], check_names=False, rtol=1e-5)
    # Nanda et al.: with the final key frequencies, restricted loss falls and excluded loss rises in
    # circuit formation, and the phases name them (one layer, no LayerNorm: a faithful measure)
    f = tables["fourier"].set_index("step")
    assert f.losses_faithful.all() and f.key_freqs.nunique() == 1
    near = lambda s: f.index[abs(f.index - s).argmin()]  # noqa: E731
    assert f.restricted_loss[near(t_clean)] < f.restricted_loss[near(t_mem)] / 2
    assert f.excluded_loss[near(t_clean)] > f.excluded_loss[near(t_mem)] * 1.5
    text, evidence = ph.loc["circuit_formation", ["description", "evidence"]]
    assert "restricted loss falls" in text and "excluded loss rises" in text and "validation loss stays above chance" in text
    assert "restricted_loss" in evidence and "excluded_loss" in evidence
    ll = tables["phases_leadlag"].set_index("measure")
    assert ll.loc["restricted_loss", "moved"] and ll.loc["restricted_loss", "lead"] > 0
    ab = tables["neuron_ablation"]
    assert (ab.k <= ab.n_neurons).all() and (ab.kept_acc >= ab.train_acc - 0.01 - 1e-9).all()
    assert ab.step.iloc[-1] == grokked_run.steps[-1]


def test_analysing_again_is_cached(grokked_run, analysed, monkeypatch):
    tables, out = analysed
    loads = []
    original = type(grokked_run).model_at
    monkeypatch.setattr(type(grokked_run), "model_at", lambda self, *a, **k: loads.append(a) or original(self, *a, **k))
    again = analyze(grokked_run, only=list(tables), out=out, progress=False)
    assert loads == []  # nothing new: no checkpoint is even loaded
    loaded = load_results(out)
    for name in tables:
        pd.testing.assert_frame_equal(again[name], tables[name], check_dtype=False)
        pd.testing.assert_frame_equal(loaded[name], tables[name], check_dtype=False)
