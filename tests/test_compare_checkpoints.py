"""compare_checkpoints: known answers from the checkpoints themselves and from the metrics file."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from conftest import QUIET, tiny_config

import grokscope
from grokscope import GrokscopeError



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = tiny_config(task={"p": 11, "frac": 0.6}, model={"n_layers": 1}, train={"steps": 40, "lr": 3e-3},
                      schedule={"eval_every": 20, "ckpt_every": 20})
    return grokscope.train(cfg, out=tmp_path_factory.mktemp("cmp") / "r", **QUIET)


def test_weights_table_is_the_difference_of_the_two_checkpoints(run):
    t = grokscope.compare_checkpoints(run, 0, 40)
    w = t["weights"].set_index("name")
    params = {n for n, _ in run.model_at(0).named_parameters()}  # the weights, not buffers (masks)
    sa = {k: v for k, v in run.state_dict_at(0).items() if k in params}
    sb = {k: v for k, v in run.state_dict_at(40).items() if k in params}
    assert set(w.index) == params
    for name in sa:
        a, b = sa[name].double(), sb[name].double()
        assert w.loc[name, "norm_a"] == pytest.approx(float(a.norm()))
        assert w.loc[name, "diff_norm"] == pytest.approx(float((b - a).norm()))
        if float(a.norm()) > 0 and float(b.norm()) > 0:
            cos = float((a.flatten() @ b.flatten()) / (a.norm() * b.norm()))
            assert w.loc[name, "cosine"] == pytest.approx(cos)
    total = math.sqrt(sum(float(v.double().pow(2).sum()) for v in sb.values()))
    s = t["summary"].set_index("quantity")
    assert s.loc["weight_norm", "b"] == pytest.approx(total)


def test_summary_losses_match_the_metrics_file_and_change_is_b_minus_a(run):
    t = grokscope.compare_checkpoints(run, 20, 40)
    s = t["summary"].set_index("quantity")
    m = run.metrics.set_index("step")
    for q in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert s.loc[q, "a"] == pytest.approx(m.loc[20, q], rel=1e-5, abs=1e-7)
        assert s.loc[q, "b"] == pytest.approx(m.loc[40, q], rel=1e-5, abs=1e-7)
    assert (s["change"] - (s["b"] - s["a"])).abs().max() == 0
    assert {"neuron_gini", "embed_gini", "restricted_loss", "excluded_loss"} <= set(s.index)


def test_key_freqs_long_table_matches_the_fourier_analysis(run):
    from grokscope.analyses.fourier import fourier

    t = grokscope.compare_checkpoints(run, 0, 40)
    k = t["key_freqs"]
    assert list(k.columns) == ["step", "rank", "freq"] and all(k.dtypes == "int64")
    row = fourier(run.model_at(40), run.data)
    keys = row["key_freqs"] if isinstance(row, dict) else row["key_freqs"].iloc[0]
    assert k[k.step == 40].sort_values("rank")["freq"].tolist() == [int(x) for x in str(keys).split(",")]


def test_same_step_changes_nothing_and_unknown_steps_are_one_clear_error(run):
    t = grokscope.compare_checkpoints(run.path, 20, 20)
    assert (t["weights"]["diff_norm"] == 0).all() and (t["summary"]["change"] == 0).all()
    with pytest.raises(GrokscopeError, match="no checkpoint at step 7"):
        grokscope.compare_checkpoints(run, 7, 40)


def test_s5_has_no_fourier_part(tmp_path):
    cfg = tiny_config(task={"op": "s4"}, model={"n_layers": 1, "d_mlp": 16}, train={"steps": 2},
                      schedule={"ckpt_every": 2})
    r = grokscope.train(cfg, out=tmp_path / "s4", **QUIET)
    t = grokscope.compare_checkpoints(r, 0, 2)
    assert t["key_freqs"].empty and "embed_gini" not in set(t["summary"]["quantity"])
    assert isinstance(t["summary"], pd.DataFrame)
