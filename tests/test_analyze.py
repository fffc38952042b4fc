"""The analysis framework: step selection, per-checkpoint caching, unreadable checkpoints, the CLI."""
import dataclasses
import json
import shutil

import pandas as pd
import pytest

from grokscope.analyses import REGISTRY, Analysis
from grokscope.analyze import analyze, few_steps
from grokscope.cli import main
from grokscope.errors import GrokscopeError
from grokscope.results import load_results
from grokscope.run import Run


@pytest.fixture
def run(tiny_run, tmp_path):
    shutil.copytree(tiny_run.path, tmp_path / "run")
    return Run(tmp_path / "run")


@pytest.fixture
def calls(monkeypatch):
    """Two registered checkpoint analyses that record which model objects they saw at which step."""
    seen = {"a": [], "b": []}

    def make(key):
        def fn(model, data, scale=1.0):
            seen[key].append(id(model))
            return {"value": scale * float(model.embed.W_E.detach().sum())}
        return fn

    monkeypatch.setitem(REGISTRY, "probe_a", Analysis("probe_a", make("a"), "test probe", params={"scale": 1.0}))
    monkeypatch.setitem(REGISTRY, "probe_b", Analysis("probe_b", make("b"), "test probe"))
    return seen


def count_model_loads(monkeypatch):
    """The steps whose checkpoint is read (``Run.state_dict_at``: ``model_at`` reads through it, and
    analyze loads each checkpoint after the first into the model it built)."""
    loads = []
    original = Run.state_dict_at

    def state_dict_at(self, step):
        loads.append(step)
        return original(self, step)

    monkeypatch.setattr(Run, "state_dict_at", state_dict_at)
    return loads


def test_tables_sidecars_and_load_results(run, tmp_path):
    out = tmp_path / "res"
    tables = analyze(run, only="weight_norms,sparsity", out=out, progress=False)
    assert set(tables) == {"weight_norms", "sparsity"}
    for name, table in tables.items():
        assert table.columns[0] == "step" and sorted(table.step.unique()) == run.steps
        meta = json.loads((out / f"{name}.json").read_text())
        assert meta["version"] == 1 and meta["steps"] == run.steps and meta["kind"] == "checkpoint"
    assert json.loads((out / "sparsity.json").read_text())["params"] == {}
    loaded = load_results(out)
    assert set(loaded) == set(tables)
    for name in tables:
        pd.testing.assert_frame_equal(loaded[name], tables[name], check_dtype=False)
    assert not list(out.glob("*.tmp-*"))


def test_model_loaded_once_per_step_and_only_new_steps_computed(run, tmp_path, calls, monkeypatch):
    loads = count_model_loads(monkeypatch)
    held = {s: run.checkpoint_path(s).read_bytes() for s in run.steps[-2:]}
    for s in held:
        run.checkpoint_path(s).unlink()  # the run is "still training": two checkpoints to come
    out = tmp_path / "res"
    analyze(run, only=["probe_a", "probe_b"], out=out, progress=False)
    first = run.steps
    assert loads == first and len(calls["a"]) == len(first) == len(calls["b"])
    assert calls["a"] == calls["b"]  # both analyses got the same model object at each step
    for s, blob in held.items():
        run.checkpoint_path(s).write_bytes(blob)
    loads.clear()
    tables = analyze(run, only=["probe_a", "probe_b"], out=out, progress=False)
    assert loads == sorted(held)  # only the new checkpoints were loaded
    assert list(tables["probe_a"].step) == run.steps
    loads.clear()
    analyze(run, only=["probe_a", "probe_b"], out=out, progress=False)
    assert loads == []


def test_new_version_or_params_recompute(run, tmp_path, calls, monkeypatch):
    out = tmp_path / "res"
    analyze(run, only="probe_a,probe_b", out=out, progress=False)
    n = len(run.steps)
    monkeypatch.setitem(REGISTRY, "probe_b", dataclasses.replace(REGISTRY["probe_b"], version=2))
    analyze(run, only="probe_a,probe_b", out=out, progress=False)
    assert (len(calls["a"]), len(calls["b"])) == (n, 2 * n)
    tables = analyze(run, only="probe_a", out=out, progress=False, params={"probe_a": {"scale": 2.0}})
    assert len(calls["a"]) == 2 * n
    assert json.loads((out / "probe_a.json").read_text())["params"] == {"scale": 2.0}
    assert len(tables["probe_a"]) == n  # the old rows were dropped, not kept beside the new ones


def test_unreadable_checkpoint_is_skipped_with_one_warning(run, tmp_path, calls, capsys):
    bad = run.steps[2]
    path = run.checkpoint_path(bad)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # truncated
    out = tmp_path / "res"
    tables = analyze(run, only="probe_a", out=out, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and f"step {bad}" in err[0]
    assert bad not in set(tables["probe_a"].step) and len(tables["probe_a"]) == len(run.steps) - 1
    assert bad not in json.loads((out / "probe_a.json").read_text())["steps"]
    path.write_bytes(blob)
    n = len(calls["a"])
    tables = analyze(run, only="probe_a", out=out, progress=False)
    assert len(calls["a"]) == n + 1 and list(tables["probe_a"].step) == run.steps


def test_step_selection(run, tmp_path, capsys):
    assert run.steps == [0, 5, 10, 15, 20]
    t = analyze(run, only="weight_norms", steps=[5, 15, 999], out=tmp_path / "a", progress=False)
    assert sorted(t["weight_norms"].step.unique()) == [5, 15]
    assert "999" in capsys.readouterr().err
    t = analyze(run, only="weight_norms", every=10, out=tmp_path / "b", progress=False)
    assert sorted(t["weight_norms"].step.unique()) == [0, 10, 20]
    with pytest.raises(GrokscopeError, match="none of the steps"):
        analyze(run, only="weight_norms", steps=[3], out=tmp_path / "c", progress=False)
    with pytest.raises(GrokscopeError, match="either"):
        analyze(run, only="weight_norms", steps=[5], every=5, out=tmp_path / "c", progress=False)


def test_few_steps():
    steps = [0, 1, 2, 3, 5, 8, 13, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
    assert few_steps(steps, n_log=5) == [0, 1, 8, 100, 1000, 10000]
    assert few_steps(steps, boundaries=[190, 4000], n_log=5) == [0, 1, 8, 100, 200, 1000, 5000, 10000]
    assert few_steps([]) == []


def test_few_analyses_get_a_handful_of_steps(run, tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, "probe_few", Analysis("probe_few", lambda m, d: {"x": 1}, "t", default_steps="few"))
    t = analyze(run, only="probe_few", out=tmp_path / "r", progress=False)
    assert set(t["probe_few"].step) <= set(run.steps) and {0, 20} <= set(t["probe_few"].step)


def test_run_analysis_runs_last_and_brings_its_inputs(run, tmp_path):
    tables = analyze(run, only="phases", out=tmp_path / "r", progress=False)
    assert list(tables)[-1] == "phases" and {"weight_norms", "sparsity"} <= set(tables)
    assert list(tables["phases"].phase) == ["memorisation", "circuit_formation", "clean_up", "grokked"]
    assert json.loads((tmp_path / "r" / "phases.json").read_text())["kind"] == "run"


def test_bad_input(run, tmp_path):
    with pytest.raises(GrokscopeError, match="did you mean 'weight_norms'"):
        analyze(run, only="weight_norm", out=tmp_path / "r")
    with pytest.raises(GrokscopeError, match="did you mean 'tolerance'"):
        analyze(run, only="neuron_ablation", params={"neuron_ablation": {"tolerence": 0.1}}, out=tmp_path / "r")
    with pytest.raises(GrokscopeError, match="not a run directory"):
        analyze(tmp_path / "nothing")
    with pytest.raises(GrokscopeError, match="holds runs"):
        analyze(tmp_path)
    with pytest.raises(GrokscopeError, match="no analysis results"):
        load_results(tmp_path / "nothing")


def test_load_results_of_a_run_dir_reads_its_default_folder(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    analyze(run.path, only="sparsity", progress=False)
    assert (tmp_path / "analyses" / "run" / "sparsity.csv").is_file()
    assert set(load_results(run.path)) == {"sparsity"}


def test_cli(run, tmp_path, capsys):
    assert main(["analyses"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == list(REGISTRY)
    out = tmp_path / "res"
    assert main(["analyze", "--ckpt-dir", str(run.path), "--only", "weight_norms,phases", "--every", "10",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "weight_norms" in printed and "memorisation from step 0" in printed
    assert sorted(pd.read_csv(out / "weight_norms.csv").step.unique()) == [0, 10, 20]
    for argv, message in ((["--ckpt-dir", str(tmp_path / "none")], "not a run directory"),
                          (["--ckpt-dir", str(run.path), "--only", "sparsty"], "did you mean 'sparsity'"),
                          (["--ckpt-dir", str(run.path), "--steps", "5,x"], "--steps")):
        assert main(["analyze", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2: worker processes start
def test_fast_path_gives_the_tables_of_a_fresh_model_per_analysis(run, tmp_path, workers):
    """analyze's path (each checkpoint loaded into one model, the analyses sharing the grid forward inside
    ``sharing()``, and with ``workers=2`` two worker processes) against the plain one: a model built
    afresh for every checkpoint and analysis, each analysis computed alone with the params its sidecar
    records. Every default table, every step it holds."""
    from grokscope.analyses import compute

    out = tmp_path / "res"
    tables = analyze(run, out=out, progress=False, workers=workers)
    checked = 0
    for name, table in tables.items():
        meta = json.loads((out / f"{name}.json").read_text())
        if meta["kind"] != "checkpoint":
            continue
        for step, rows in table.groupby("step"):
            ref = compute(name, run.model_at(int(step)), run.data, **meta["params"])
            got = rows.drop(columns="step").reset_index(drop=True)
            pd.testing.assert_frame_equal(got, ref.reset_index(drop=True), check_dtype=False, rtol=1e-9, atol=1e-12)
            checked += 1
    assert {"fourier", "fourier_neurons", "neuron_norms", "weight_norms", "tsne"} <= set(tables) and checked >= 30


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_bad_worker_count_is_one_line_and_exit_2(run, value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["analyze", "--ckpt-dir", str(run.path), "--workers", value])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workers" in err[0] and repr(value) in err[0], err


def test_workers_refused_for_an_analysis_a_worker_cannot_import(run, tmp_path, calls):
    with pytest.raises(GrokscopeError, match="workers=1"):
        analyze(run, only="probe_a", out=tmp_path / "res", progress=False, workers=2)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_tables_written_from_their_parts_lines_equal_the_whole_tables(run, tmp_path, monkeypatch, workers):
    """The CSV lines of each batch of checkpoints are rendered where they were computed (the workers) and
    joined in the parent: every file equals the one written from the whole table, byte for byte, when the
    batches are single checkpoints joined, when a cached table grows by steps after its own (joined) and
    between them (rendered whole), and (in this process) when an int column of one batch is float in
    another (the joined lines would say "3" where the table says "3.0": rendered whole)."""
    import sys

    from grokscope.results import ResultStore

    module = sys.modules["grokscope.analyze"]
    monkeypatch.setattr(module, "CHUNK_STEPS", 1)
    joined = []
    original = module._joined_text
    monkeypatch.setattr(module, "_joined_text", lambda *a: joined.append(original(*a)) or joined[-1])
    only = "weight_norms,sparsity,fourier_spectrum"
    if workers == 1:
        calls = []

        def odd(model, data):  # an int at every other call, NaN (a float column) at the others
            calls.append(1)
            return {"count": 3 if len(calls) % 2 else float("nan"), "label": "a,b"}

        monkeypatch.setitem(REGISTRY, "probe_odd", Analysis("probe_odd", odd, "test probe"))
        only += ",probe_odd"

    def check(out, tables):
        ref = ResultStore(tmp_path / "ref")
        for name, table in tables.items():
            ref.write(name, table, {})
            assert (out / f"{name}.csv").read_bytes() == ref.table_path(name).read_bytes(), name
        return sorted(tables)

    out = tmp_path / "res"
    s = run.steps
    assert len(s) >= 5
    for steps in (s[:2], s[:2] + s[3:4], s):  # single steps; then one after them; then the rest, between
        assert check(out, analyze(run, only=only, steps=steps, out=out, progress=False, workers=workers)) == sorted(only.split(","))
    assert sorted(pd.read_csv(out / "weight_norms.csv").step.unique()) == s
    assert any(t is not None for t in joined) and any(t is None for t in joined)
