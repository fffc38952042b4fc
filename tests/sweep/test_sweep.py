"""grokscope sweep: grid expansion, presets, batched training against single runs, resume, the table, Ray."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import grokscope as g
from grokscope.batched import BatchedTrainer, batch_key, train_many
from grokscope.errors import GrokscopeError
from grokscope.sweep import SWEEP_PRESETS, SweepSpec, load_sweep, plan_jobs, preset_spec, run_sweep
from grokscope.sweep.folder import write_spec
from grokscope.tasks import make_dataset

TINY = {"p": 11, "d-model": 32, "d-mlp": 64, "n-heads": 4, "eval-every": 10, "ckpt-every": 20,
        "state-every": 20, "steps": 40}


def quiet(*a, **k):
    pass


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "grokscope.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


# --- grid expansion -----------------------------------------------------------------------------------------
def test_grid_expands_every_combination_in_order():
    spec = SweepSpec.make(fixed={"p": 11}, grid={"ops": "x+y,x-y", "fracs": [0.3, 0.5], "seeds": "0,1"})
    cells = spec.cells()
    assert len(cells) == 8
    assert [c.name for c in cells[:3]] == ["x+y_f0.3_s0", "x+y_f0.3_s1", "x+y_f0.5_s0"]
    assert cells[-1].coords == {"op": "x-y", "frac": 0.5, "seed": 1}
    c = cells[5]  # x-y, 0.3, seed 1
    assert (c.config.task.op, c.config.task.p, c.config.task.frac) == ("x-y", 11, 0.3)
    assert c.config.train.seed == 1 and c.config.task.seed == 1  # seed sets the split seed too
    assert c.config.name == c.name


def test_split_seed_axis_and_variant_then_overrides():
    spec = SweepSpec.make(fixed={"split-seed": 7, "lr": 3e-3}, grid={"variant": "adam,adamw-to-init", "seed": [1, 2]})
    for c in spec.cells():
        assert c.config.task.seed == 7 and c.config.train.seed == c.coords["seed"]
        assert c.config.train.lr == 3e-3  # fixed values apply after the variant
        assert c.config.train.variant == c.coords["variant"]
    adam, init = spec.cells()[0].config.train, spec.cells()[2].config.train
    assert adam.weight_decay == 0.0 and init.wd_target == "init" and init.weight_decay == 1.0


@pytest.mark.parametrize("kw,msg", [
    ({"grid": {"opz": "x+y"}}, "unknown sweep axis 'opz'; did you mean 'op'"),
    ({"grid": {"frac": "0.5,1.5"}}, r"cell .*training fraction must be in \(0, 1\)"),
    ({"grid": {"op": "x+y,x^5"}}, r"unknown operation 'x\^5'"),
    ({"grid": {"seed": "0,x"}}, "axis seed: bad value 'x'"),
    ({"grid": {"seed": "0,0"}}, "repeated values"),
    ({"fixed": {"seed": 1}, "grid": {"seed": "0,1"}}, "both fixed and swept"),
    ({"grid": {"device": "cpu,cuda"}}, "the device can be fixed"),
])
def test_bad_grids_are_one_clear_error(kw, msg):
    with pytest.raises(GrokscopeError, match=msg):
        SweepSpec.make(**kw)


# --- presets --------------------------------------------------------------------------------------------------
def test_paper_presets_match_the_paper():
    f1 = preset_spec("fig1-center", "paper")
    assert f1.fixed["op"] == "s5" and len(f1.grid["seed"]) == 7 and f1.base["train"]["steps"] == 500_000
    assert all(c.config.train.stop_val_acc == 0.99 for c in f1.cells())  # the figure needs only the step of 99 %
    f2l = preset_spec("fig2-left", "paper")
    assert f2l.grid["variant"] == list(g.VARIANTS) and f2l.fixed["op"] == "s5" and len(f2l.grid["seed"]) == 3
    f2r = preset_spec("fig2-right", "paper")
    cells = f2r.cells()
    assert len(cells) == 12 * 9 * 3 and len(f2r.grid["op"]) == 12 and "x*y" not in f2r.grid["op"]
    assert f2r.grid["frac"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert all(c.config.train.steps == 100_000 and c.config.model.d_model == 128 for c in cells)
    assert {c.config.task.p for c in cells} == {97}
    f6 = preset_spec("fig6", "paper")
    assert f6.grid["outliers"] == [0, 10, 100, 1000, 2000, 3000]
    f7 = preset_spec("fig7", "paper")
    # the authors' design: one configuration (S5 at 70 %) x 20 seeds, their three sharpness measures
    assert "sharpness_fig7" in f7.analyses and f7.grid == {"seed": list(range(20))}
    assert f7.fixed == {"op": "s5", "frac": 0.7}


@pytest.mark.parametrize("name", list(SWEEP_PRESETS))
def test_small_presets_keep_the_shape_and_shrink_the_cost(name):
    small, paper = preset_spec(name, "small"), preset_spec(name, "paper")
    assert set(small.grid) <= set(paper.grid) and small.analyses.keys() == paper.analyses.keys()
    cells, paper_cells = small.cells(), paper.cells()
    # a small scale is either shrunk (S4, p <= 31, d_model <= 64) or the paper's own setting, run after run,
    # with a shorter budget (grokfast: their filters reach 95 % in ~1000 steps)
    budget_cut = len(cells) == len(paper_cells) and all(
        (c.config.task, c.config.model) == (q.config.task, q.config.model) and c.config.train.steps < q.config.train.steps
        for c, q in zip(cells, paper_cells))
    for c in cells:
        t = c.config.task
        assert c.config.train.steps <= 12_000
        if not budget_cut:
            assert t.op.startswith("s4") or t.p <= 31  # S5 -> S4, p 97 -> small
            assert c.config.model.d_model <= 64
    # the whole grid: at most ~3e5 run-steps of a 64-wide model (a wider one counts (d_model / 64)^2 times),
    # about half an hour on 2 cores
    assert sum(c.config.train.steps * max(1.0, (c.config.model.d_model / 64) ** 2) for c in cells) <= 300_000
    if "variant" in paper.grid:
        assert small.grid["variant"] == paper.grid["variant"]
    if "op" in paper.grid:
        assert len(small.grid["op"]) == len(paper.grid["op"])


def test_unknown_preset_and_scale():
    with pytest.raises(GrokscopeError, match="did you mean 'fig6'"):
        preset_spec("fig66")
    with pytest.raises(GrokscopeError, match="scale must be small or paper"):
        preset_spec("fig6", "huge")


# --- batched training ------------------------------------------------------------------------------------------
def tiny_cfg(op="x+y", frac=0.5, seed=0, steps=40, **train):
    c = g.RunConfig()
    c.update({"task": {"op": op, "p": 11, "frac": frac, "seed": seed},
              "model": {"d_model": 32, "d_mlp": 64, "n_heads": 4},
              "train": {"steps": steps, "seed": seed, **train},
              "schedule": {"eval_every": 10, "ckpt_every": 20, "state_every": 20}})
    return c


BATCH = [tiny_cfg("x+y", 0.5, 0),
         tiny_cfg("x-y", 0.3, 1, lr=5e-4, weight_decay=0.5, wd_target="init"),
         tiny_cfg("x/y", 0.7, 2, update_noise=0.5, grokfast_lambda=2.0, batch_size=16, beta2=0.99),
         tiny_cfg("x^2+y^2", 0.6, 3, full_batch=True, weight_decay=0.0, warmup=3)]


def close_weights(a: dict, b: dict, tol: float) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        if k.endswith("attn.b_K"):  # its gradient is zero in exact arithmetic: Adam amplifies the float noise
            continue
        if a[k].dtype == torch.bool or not torch.isfinite(a[k]).all():
            assert torch.equal(a[k], b[k]), k
            continue
        assert torch.allclose(a[k], b[k], atol=tol, rtol=0), (k, float((a[k] - b[k]).abs().max()))


@pytest.mark.slow
def test_batched_runs_match_runs_trained_alone(tmp_path):
    """Per-run op, fraction, seed, lr, weight decay (and its target), betas, warm-up, batch size, update
    noise and Grokfast in one batch: every run's metrics and weights are those of the run trained alone."""
    single = [g.train(c, out=tmp_path / f"s{i}", progress=False, log=quiet) for i, c in enumerate(BATCH)]
    batched = train_many(BATCH, [tmp_path / f"b{i}" for i in range(len(BATCH))], progress=False, log=quiet)
    for s, b in zip(single, batched):
        ms, mb = s.metrics, b.metrics
        assert list(ms.columns) == list(mb.columns) and list(ms.step) == list(mb.step)
        cols = ["train_loss", "train_acc", "val_loss", "val_acc", "lr", "weight_norm"]
        assert np.abs(ms[cols].to_numpy() - mb[cols].to_numpy()).max() < 1e-4
        assert s.steps == b.steps
        for step in (1, 20, 40):
            close_weights(s.state_dict_at(step), b.state_dict_at(step), 1e-4)
        assert json.loads((s.path / "config.json").read_text())["train"] == \
            json.loads((b.path / "config.json").read_text())["train"]
        m = b.model_at(40)  # a HookedTransformer, as for any run
        _, cache = m.run_with_cache(b.data.val_x[:3])
        assert "blocks.1.mlp.hook_post" in cache


@pytest.mark.slow
def test_a_batched_run_resumes_alone_and_matches(tmp_path):
    """The resume state of a batched run is the single trainer's: `train --resume` continues it."""
    cfgs = BATCH[:2]
    runs = train_many(cfgs, [tmp_path / "b0", tmp_path / "b1"], progress=False, log=quiet)
    alone = g.train(cfgs[1].copy(), out=tmp_path / "alone", steps=60, progress=False, log=quiet)
    cont = g.train(resume=runs[1].path, steps=60, progress=False, log=quiet)
    close_weights(alone.state_dict_at(60), cont.state_dict_at(60), 1e-4)
    assert list(alone.metrics.step) == list(cont.metrics.step)


def test_batch_key_separates_what_cannot_share_a_batch():
    d = make_dataset("x+y", 11, 0.5)
    k = batch_key(tiny_cfg(), d.n_elements)
    assert k == batch_key(tiny_cfg("x-y", 0.3, 5, lr=3e-3), d.n_elements)
    assert k != batch_key(tiny_cfg(steps=50), d.n_elements)
    assert k != batch_key(tiny_cfg(), 13)
    assert batch_key(tiny_cfg(resid_dropout=0.1), d.n_elements) is None
    assert batch_key(tiny_cfg(weight_noise=0.01), d.n_elements) is None
    with pytest.raises(GrokscopeError, match="cannot train in one batch"):
        BatchedTrainer([tiny_cfg(), tiny_cfg(resid_dropout=0.1)], [d, d], torch.device("cpu"))


# --- sweeps on disk -----------------------------------------------------------------------------------------------
def tiny_spec(**grid):
    return SweepSpec.make(fixed=TINY, grid=grid or {"op": "x+y,x-y", "frac": "0.4,0.6"})


def test_plan_batches_compatible_runs_and_fills_the_workers(tmp_path):
    spec = SweepSpec.make(fixed=TINY, grid={"op": "x+y,x-y", "frac": "0.4,0.6", "variant": "adamw,adam-dropout"})
    sweep = write_spec(tmp_path / "sw", spec)
    jobs = plan_jobs(sweep, batch=16, workers=2)
    sizes = sorted(len(j) for j in jobs)
    assert sizes == [1, 1, 1, 1, 4]  # 4 dropout runs alone; the 4 AdamW runs, one worker's share, in one batch
    assert all(c.coords["variant"] == "adam-dropout" for j in jobs if len(j) == 1 for c in j)
    assert sorted(len(j) for j in plan_jobs(sweep, batch=1, workers=2)) == [1] * 8
    assert sorted(len(j) for j in plan_jobs(sweep, batch=3, workers=2)) == [1, 1, 1, 1, 2, 2]  # cut evenly
    assert sorted(len(j) for j in plan_jobs(sweep, batch=16, workers=4)) == [1, 1, 1, 1, 2, 2]
    # the Figure 2 (right) small grid, 36 modular runs and 12 in S4, on 2 workers: balanced loads
    f2r = write_spec(tmp_path / "f2r", preset_spec("fig2-right", "small"))
    assert sorted(len(j) for j in plan_jobs(f2r, batch=16, workers=2)) == [12, 12, 12, 12]


@pytest.mark.slow
def test_tiny_real_sweep_table_and_resume(tmp_path):
    """A real sweep in a 2-process pool; the table against the runs' own metrics; resume skips finished runs
    and continues an unfinished one; the folder refuses another grid."""
    out = tmp_path / "sw"
    spec = tiny_spec()
    # one cell already started (as a killed sweep leaves it): trained to step 20 of 40
    partial = spec.cells()[3]
    write_spec(out, spec)
    g.train(partial.config, out=out / "runs" / partial.name, steps=20, progress=False, log=quiet)
    shutil.move(out / "runs" / partial.name, tmp_path / "keep")
    lines = []
    sweep = run_sweep(spec, out, workers=2, progress=False, log=lines.append, status_every=1.0)
    status = [x for x in lines if "runs' steps" in x]
    assert status and all(" at 99 % validation so far" in x for x in status)  # the pool says how far it is
    table = sweep.table
    assert len(table) == 4 and set(table.status) == {"done"}
    saved = pd.read_csv(out / "results.csv")
    assert list(saved.cell) == list(table.cell)
    for row in table.itertuples():
        m = g.load_run(row.run_dir).metrics
        first = lambda col: (m.loc[m[col] >= 0.99, "step"].tolist() or [None])[0]  # noqa: E731
        assert (None if pd.isna(row.steps_to_train_99) else int(row.steps_to_train_99)) == first("train_acc")
        assert (None if pd.isna(row.steps_to_val_99) else int(row.steps_to_val_99)) == first("val_acc")
        assert row.best_val_acc == pytest.approx(m.val_acc.max())
        assert row.final_val_loss == pytest.approx(m.val_loss.iloc[-1]) and row.last_step == 40
    for col in ("op", "frac", "seed", "steps_to_train_99", "steps_to_val_99", "best_val_acc", "run_dir"):
        assert col in table.columns
    assert load_sweep(out).table.equals(table)

    # resume: put the half-trained run back; the finished runs are not touched
    shutil.rmtree(out / "runs" / partial.name)
    shutil.move(tmp_path / "keep", out / "runs" / partial.name)
    assert load_sweep(out).status(partial) == "partial"
    others = {c.name: (out / "runs" / c.name / "metrics.csv").stat().st_mtime_ns for c in spec.cells() if c != partial}
    lines = []
    run_sweep(None, out, workers=1, progress=False, log=lines.append)
    assert "4 runs (3 done), 1 jobs" in lines[0]
    assert {c: (out / "runs" / c / "metrics.csv").stat().st_mtime_ns for c in others} == others
    resumed = g.load_run(out / "runs" / partial.name)
    assert resumed.steps[-1] == 40 and resumed.metrics.step.is_unique
    fresh = g.train(partial.config, out=tmp_path / "fresh", progress=False, log=quiet)
    close_weights(fresh.state_dict_at(40), resumed.state_dict_at(40), 0.0)  # resumed alone: bit-identical

    with pytest.raises(GrokscopeError, match="holds another sweep"):
        run_sweep(tiny_spec(op="x+y"), out, workers=1, progress=False, log=quiet)


@pytest.mark.slow
def test_cli_sweep_dry_run_and_bad_input(tmp_path):
    r = cli("sweep", "--ops", "x+y,x-y", "--fracs", "0.3,0.5", "--seeds", "0,1", "--steps", "100",
            "--out", str(tmp_path / "sw"), "--dry-run")
    assert r.returncode == 0 and "grokscope: 8 runs" in r.stdout and "x-y_f0.5_s1" in r.stdout
    assert not (tmp_path / "sw").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    bad_grid = tmp_path / "grid.json"
    bad_grid.write_text("{not json")
    for args, msg in [
        (["--ops", "x+y,x^5", "--out", str(tmp_path / "a")], "unknown operation 'x^5'"),
        (["--fracs", "0.3,1.5", "--out", str(tmp_path / "a")], "training fraction must be in (0, 1)"),
        (["--opz", "x+y", "--out", str(tmp_path / "a")], "unrecognized arguments"),
        (["--ops", "x+y", "--out", str(tmp_path / "taken")], "is not a sweep folder"),
        (["--out", str(tmp_path / "nothing")], "holds no sweep yet"),
        (["--grid", str(bad_grid), "--out", str(tmp_path / "a")], "does not parse"),
        (["--preset", "fig66", "--out", str(tmp_path / "a")], "unknown sweep preset"),
        (["--preset", "fig7", "--workers", "0", "--out", str(tmp_path / "a")], "--workers must be at least 1"),
        (["--preset", "fig7", "--batch", "-2", "--out", str(tmp_path / "a")], "--batch must be at least 1"),
    ]:
        r = cli("sweep", *args)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert not (tmp_path / "a").exists() and (tmp_path / "taken" / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_grid_file_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "grid.yaml"
    yaml_file.write_text("fixed:\n  p: 11\n  steps: 30\ngrid:\n  op: [x+y, x-y]\n  seed: [0, 1, 2]\n")
    r = cli("sweep", "--grid", str(yaml_file), "--out", str(tmp_path / "sw"), "--dry-run")
    assert r.returncode == 0 and "grokscope: 6 runs" in r.stdout, r.stderr
    json_file = tmp_path / "grid.json"
    json_file.write_text(json.dumps({"preset": "fig7", "fixed": {"steps": 100}}))
    r = cli("sweep", "--grid", str(json_file), "--out", str(tmp_path / "sw"), "--dry-run")
    assert r.returncode == 0 and "grokscope: 20 runs" in r.stdout, r.stderr  # fig7: 20 seeds, as Power et al.


# --- Ray -----------------------------------------------------------------------------------------------------------
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def need_ray():
    """Ray (the optional extra grokscope[ray]): missing is a failure in CI, a skip elsewhere."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("Ray is not installed: pip install -e '.[dev,ray]'")
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sweep_on_a_local_ray_cluster(tmp_path):
    need_ray()
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    temp = Path("/tmp") / f"gs-ray-{os.getpid()}"  # Ray's socket paths must stay short
    start = subprocess.run([ray_bin, "start", "--head", "--num-cpus", "2", "--port", str(port),
                            "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp)],
                           capture_output=True, text=True, env=env, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        r = cli("sweep", "--ops", "x+y,x-y", "--fracs", "0.4,0.6", "--p", "11", "--steps", "30", "--d-model", "32",
                "--d-mlp", "64", "--eval-every", "10", "--ckpt-every", "10", "--batch", "2",
                "--out", str(tmp_path / "sw"), "--ray", f"127.0.0.1:{port}")
        assert r.returncode == 0, r.stderr[-3000:]
        assert "on Ray at" in r.stdout and "4/4 runs done" in r.stdout
        t = load_sweep(tmp_path / "sw").table
        assert set(t.status) == {"done"} and (t.last_step == 30).all()
        assert all(g.load_run(d).steps[-1] == 30 for d in t.run_dir)
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_bad_address_is_one_line(tmp_path):
    need_ray()
    r = cli("sweep", "--ops", "x+y", "--p", "11", "--steps", "10", "--out", str(tmp_path / "sw"),
            "--ray", "127.0.0.1:1")
    assert r.returncode == 2 and "cannot connect to the Ray cluster" in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_sweep_analyses_fill_the_sharpness_column(tmp_path):
    """Figure 7's path: the sweep computes sharpness at each run's last checkpoint; the table reads it."""
    spec = SweepSpec.make(fixed={**TINY, "steps": 20}, grid={"seed": "0,1"},
                          analyses={"sharpness": {"eps": [1e-3], "budget": 2}})
    sweep = run_sweep(spec, tmp_path / "sw", workers=1, progress=False, log=quiet)
    t = sweep.table
    assert set(t.status) == {"done"} and t.sharpness.notna().all() and (t.sharpness >= 0).all()
    for cell in sweep.cells:
        s = pd.read_csv(sweep.analyses_dir(cell) / "sharpness.csv")
        assert list(s.step) == [20]
        assert float(t.loc[t.cell == cell.name, "sharpness"].iloc[0]) == pytest.approx(s["sharpness_0.001"].iloc[0])
    # a run whose analysis is missing is not finished: the next start computes it, without training
    (sweep.analyses_dir(sweep.cells[0]) / "sharpness.csv").unlink()
    assert load_sweep(tmp_path / "sw").status(sweep.cells[0]) == "partial"
    before = (sweep.run_dir(sweep.cells[0]) / "ckpt" / "step_00000020.safetensors").read_bytes()
    run_sweep(None, tmp_path / "sw", workers=1, progress=False, log=quiet)
    assert load_sweep(tmp_path / "sw").status(sweep.cells[0]) == "done"
    assert (sweep.run_dir(sweep.cells[0]) / "ckpt" / "step_00000020.safetensors").read_bytes() == before


def test_analysis_columns_of_the_table_on_planted_tables(tmp_path, monkeypatch):
    """An analysis adds its columns to the results table through one ANALYSIS_COLUMNS entry: sharpness is the
    first eps column at the last step analysed (rows in any order); a new analysis adds its own the same way."""
    from grokscope.sweep import folder

    cell = SweepSpec.make(fixed={"p": 11}, grid={"seed": "0,1"}).cells()[1]
    adir = tmp_path / "analyses" / cell.name
    adir.mkdir(parents=True)
    pd.DataFrame({"step": [30, 10], "sharpness_0.001": [0.25, 9.0], "sharpness_0.01": [7.0, 7.0],
                  "sharpness_evals": [5, 5]}).to_csv(adir / "sharpness.csv", index=False)
    pd.DataFrame({"step": [30], "llc_mean": [4.5]}).to_csv(adir / "llc.csv", index=False)
    monkeypatch.setitem(folder.ANALYSIS_COLUMNS, "llc", lambda t: {"llc": float(t["llc_mean"].iloc[-1])})
    row = folder.result_row(cell, tmp_path / "runs" / cell.name, "pending", adir)
    assert row["sharpness"] == 0.25 and row["llc"] == 4.5
    assert row["seed"] == 1 and row["status"] == "pending" and row["steps_to_val_99"] is None
    (adir / "llc.csv").unlink()
    assert "llc" not in folder.result_row(cell, tmp_path / "runs" / cell.name, "pending", adir)


@pytest.mark.slow
def test_early_stop_ends_one_run_of_a_batch(tmp_path):
    """stop_val_acc: a run ends (checkpoint, resume state, status done) at the first evaluation that reaches
    it; the run beside it in the batch goes on to its budget, as it would alone."""
    from grokscope.files import read_metadata
    from grokscope.sweep.folder import run_status

    base = tiny_cfg("x+y", 0.6, 0)
    alone = g.train(base, out=tmp_path / "alone", progress=False, log=quiet)
    m = alone.metrics
    theta = float(m.loc[m.step == 20, "val_acc"].iloc[0])
    s = int(m.loc[(m.step > 0) & (m.val_acc >= theta), "step"].iloc[0])  # where the stopping run must end
    stopping = base.copy()
    stopping.train.stop_val_acc = theta
    runs = train_many([base, stopping], [tmp_path / "on", tmp_path / "stop"], progress=False, log=quiet)
    on, st = runs[0].metrics, runs[1].metrics
    assert list(on.step) == list(m.step) and np.abs(on.val_acc.to_numpy() - m.val_acc.to_numpy()).max() < 1e-6
    assert list(st.step) == [x for x in m.step if x <= s] and st.val_acc.iloc[-1] >= theta
    assert runs[1].steps[-1] == s and int(read_metadata(runs[1].path / "state.safetensors")["step"]) == s
    assert run_status(runs[1].path, 40) == "done" and run_status(runs[0].path, 40) == "done"
    again = g.train(resume=runs[1].path, progress=False, log=quiet)  # an ended run has nothing left to do
    assert again.steps[-1] == s and list(again.metrics.step) == list(st.step)
    with pytest.raises(GrokscopeError, match=r"stop_val_acc must be in \[0, 1\]"):
        tiny_cfg(stop_val_acc=1.5).validate()


@pytest.mark.slow
def test_an_unguarded_script_runs_a_sweep_in_a_pool(tmp_path):
    """The docs' example as a plain script, without ``if __name__ == "__main__":``: the pool's spawned
    workers do not run the script again (they would start the sweep again and meet its folder lock)."""
    script = tmp_path / "sweep_script.py"
    script.write_text(
        "import grokscope\n"
        "spec = grokscope.SweepSpec.make(fixed={'p': 7, 'steps': 10, 'd-model': 16, 'd-mlp': 32, 'n-heads': 2,\n"
        "                                       'eval-every': 5, 'ckpt-every': 10, 'state-every': 10},\n"
        "                                grid={'op': 'x+y,x-y', 'frac': [0.5]})\n"
        "print('script body ran', flush=True)\n"
        "sweep = grokscope.run_sweep(spec, 'sweeps/mine', workers=2, progress=False)\n"
        "print(sweep.table[['cell', 'status']].to_string())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(g.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("script body ran") == 1  # the workers did not run the script
    assert "2/2 runs done" in r.stdout and "2 local worker(s)" in r.stdout
    assert set(load_sweep(tmp_path / "sweeps" / "mine").table.status) == {"done"}
