"""Tables from the API: DataFrames everywhere, key frequencies as a long table, integer steps."""
from __future__ import annotations

import pandas as pd
import pytest

import grokscope
from grokscope.analyses import REGISTRY, compute
from grokscope.analyses.fourier_keys import key_freq_list
from grokscope.results import load_results


@pytest.fixture(scope="module")
def analysed(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("tables") / "res"
    tables = grokscope.analyze(tiny_run, only="fourier,fourier_keys,phases", out=out, progress=False)
    return tables, out


def test_every_checkpoint_analysis_gives_a_dataframe_through_compute(tiny_run):
    model, data = tiny_run.model_at(20), tiny_run.data
    for name, a in REGISTRY.items():
        if a.kind != "checkpoint" or a.expensive or a.applies(data) is not None:
            continue
        table = compute(name, model, data)
        assert isinstance(table, pd.DataFrame) and len(table), name
    one = compute("fourier", model, data, n_key=2)
    direct = REGISTRY["fourier"].fn(model, data, n_key=2)
    direct = direct.iloc[0].to_dict() if isinstance(direct, pd.DataFrame) else direct
    assert len(one) == 1 and one.iloc[0]["key_freqs"] == direct["key_freqs"]
    assert one.iloc[0]["embed_gini"] == direct["embed_gini"]


def test_key_frequencies_as_a_long_table(analysed):
    tables, out = analysed
    keys, fourier = tables["fourier_keys"], tables["fourier"]
    assert list(keys.columns) == ["step", "rank", "freq"] and all(keys.dtypes == "int64")
    for step, value in zip(fourier["step"], fourier["key_freqs"]):
        got = keys[keys.step == step].sort_values("rank")["freq"].tolist()
        assert got == key_freq_list(value) and len(got) >= 1
    assert load_results(out)["fourier_keys"].equals(keys)


def test_key_freq_list_reads_every_stored_form():
    assert key_freq_list("7,11,5") == [7, 11, 5]
    assert key_freq_list(7.0) == [7]  # a single key frequency reads back from CSV as a number
    assert key_freq_list([3, 4]) == [3, 4]
    assert key_freq_list(float("nan")) == [] and key_freq_list(None) == []


def test_steps_are_integers_everywhere(analysed):
    tables, out = analysed
    for source in (tables, load_results(out)):
        for name, table in source.items():
            for col in [c for c in table.columns if c == "step" or c.endswith("_step")]:
                assert pd.api.types.is_integer_dtype(table[col]), (name, col, table[col].dtype)
    phases = tables["phases"]
    assert {"start_step", "end_step"} <= set(phases.columns)
    text = (out / "phases.csv").read_text()  # on disk too: 125, not 125.0
    assert not any(f",{int(s)}.0," in text for s in phases["start_step"].dropna())


def test_fourier_keys_does_not_apply_to_s5():
    data = grokscope.make_dataset("s4", 0, 0.5)
    assert REGISTRY["fourier_keys"].applies(data) is not None
