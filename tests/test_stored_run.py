"""A run written by an earlier grokscope (tests/data/stored_run, made by tests/data/make_stored_run.py) still
loads, analyses and resumes with today's code. A refactor that changes a file name, a config field, a
safetensors key, a metrics column or the resume state without reading old runs fails here.

The stored folder is never written to: every test that writes works on a copy in tmp_path.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import grokscope
from grokscope import RunConfig, load_run
from grokscope.report import build_report
from grokscope.run import CKPT_DIR, CONFIG_FILE, DATA_FILE, METRICS_FILE, STATE_FILE

STORED = Path(__file__).resolve().parent / "data" / "stored_run"
STEPS = [0, 1, 10, 20]
COLUMNS = ["step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "weight_norm", "elapsed_s", "collapse"]
FORECAST = ["forecast_p", "forecast_step", "forecast_lo", "forecast_hi"]  # added since: read as NaN


def digest(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture
def copy(tmp_path) -> Path:
    """A writable copy of the stored run."""
    return Path(shutil.copytree(STORED, tmp_path / "stored_run"))


def test_the_stored_run_is_all_there():
    """The files the tests rely on are checked in (not lost to .gitignore or a clean-up)."""
    names = {CONFIG_FILE, DATA_FILE, METRICS_FILE, STATE_FILE, "provenance.json"}
    assert names <= {f.name for f in STORED.iterdir()}
    assert sorted(f.name for f in (STORED / CKPT_DIR).iterdir()) == [f"step_{s:08d}.safetensors" for s in STEPS]
    assert sum(f.stat().st_size for f in STORED.rglob("*") if f.is_file()) < 150_000


def test_loads_with_todays_code_and_reading_changes_nothing():
    before = digest(STORED)
    run = load_run(STORED)
    assert run.steps == STEPS
    cfg = run.config
    assert (cfg.task.op, cfg.task.p, cfg.task.frac, cfg.model.n_layers, cfg.model.d_model) == ("x+y", 7, 0.5, 1, 16)
    assert cfg.train.steps == 20 and cfg.name == "stored_run" and run.run_id
    m = run.metrics
    assert list(m.columns) == COLUMNS + FORECAST and m[FORECAST].isna().all().all()
    assert m.step.tolist() == [0, 5, 10, 15, 20]
    assert m[["train_loss", "val_loss"]].notna().all().all() and ((m.val_acc >= 0) & (m.val_acc <= 1)).all()
    assert m.lr.tolist()[0] == pytest.approx(1e-4) and m.lr.tolist()[-1] == pytest.approx(1e-3)  # 10-step warm-up
    data = run.data
    assert len(data.train_idx) + len(data.val_idx) == 49 and len(data.val_y) == len(data.val_idx)
    assert [s["start_step"] for s in run.provenance] == [0]
    assert digest(STORED) == before


def test_model_at_every_checkpoint_reproduces_the_stored_weights_and_metrics():
    run = load_run(STORED)
    data = run.data
    for step in STEPS:
        model = run.model_at(step)
        stored = load_file(str(STORED / CKPT_DIR / f"step_{step:08d}.safetensors"))
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in stored.items())
        params = {n for n, _ in model.named_parameters()}
        assert params <= set(stored)  # the checkpoint keys are the model's own state-dict names
        if step in run.metrics.step.values:
            row = run.metrics.set_index("step").loc[step]
            with torch.no_grad():
                logits = model(data.val_x)[:, -1].double()  # the hooked forward, the answer position
            val_loss = torch.nn.functional.cross_entropy(logits, data.val_y).item()
            assert val_loss == pytest.approx(row.val_loss, rel=1e-4)
            norm = sum(float(p.detach().double().pow(2).sum()) for n, p in model.named_parameters()) ** 0.5
            assert norm == pytest.approx(row.weight_norm, rel=1e-5)


def test_analyze_the_stored_run(tmp_path):
    before = digest(STORED)
    out = tmp_path / "res"
    tables = grokscope.analyze(STORED, out=out, progress=False)
    assert {"weight_norms", "sparsity", "fourier"} <= set(tables)
    norms = tables["weight_norms"]
    assert sorted(norms.step.unique()) == STEPS
    total = norms[norms.group == "total"].set_index("step").norm
    metrics = load_run(STORED).metrics.set_index("step").weight_norm
    assert total[10] == pytest.approx(metrics[10]) and total[20] == pytest.approx(metrics[20])
    assert any(out.iterdir())
    report = build_report(STORED, results=out, out=tmp_path / "report.html")
    assert Path(report).stat().st_size > 0
    assert digest(STORED) == before


def test_resume_from_the_stored_state_in_one_go_or_two_is_bit_identical(tmp_path, quiet):
    """Continue the stored run from its resume state (step 20) to 30, once straight and once in two hops."""
    straight = Path(shutil.copytree(STORED, tmp_path / "straight"))
    hops = Path(shutil.copytree(STORED, tmp_path / "hops"))
    a = grokscope.train(resume=straight, steps=30, **quiet)
    grokscope.train(resume=hops, steps=25, **quiet)
    b = grokscope.train(resume=hops, steps=30, **quiet)
    assert a.steps[-1] == b.steps[-1] == 30 and set(STEPS) <= set(a.steps)
    wa, wb = a.state_dict_at(30), b.state_dict_at(30)
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
    stored = load_run(STORED).metrics
    for run in (a, b):
        m = run.metrics
        assert list(m.columns) == COLUMNS + FORECAST and m.step.is_unique and m.step.max() == 30
        old = m[m.step <= 20].reset_index(drop=True)
        assert old.drop(columns="elapsed_s").equals(stored.drop(columns="elapsed_s"))  # history kept as it was
        for step in STEPS:  # the stored checkpoints are not rewritten
            assert all(torch.equal(x, y) for x, y in zip(run.state_dict_at(step).values(),
                                                          load_run(STORED).state_dict_at(step).values()))
    common = a.metrics.columns.drop("elapsed_s")
    mb = b.metrics[b.metrics.step.isin(a.metrics.step)].reset_index(drop=True)
    assert a.metrics[common].equals(mb[common])


def test_todays_training_retraces_the_stored_run(tmp_path, quiet):
    """The stored config trained again today gives the stored run: the same initialisation bit for bit, and
    the same trajectory up to float summation order (other CPUs may sum in another order)."""
    stored = load_run(STORED)
    stored_cfg = json.loads((STORED / CONFIG_FILE).read_text())
    cfg = RunConfig.from_dict({k: v for k, v in stored_cfg.items() if k not in ("name", "run_id")})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stored run was written
    try:
        again = grokscope.train(cfg, out=tmp_path / "again", **quiet)
    finally:
        torch.set_num_threads(threads)
    assert again.steps == STEPS
    w0, s0 = again.state_dict_at(0), stored.state_dict_at(0)
    assert set(w0) == set(s0) and all(torch.equal(w0[k], s0[k]) for k in w0)
    params = {n for n, _ in stored.model_at(0).named_parameters()}
    for step in STEPS[1:]:
        w, s = again.state_dict_at(step), stored.state_dict_at(step)
        for k in s:
            if k not in params:  # a buffer (masks): as stored
                assert torch.equal(w[k], s[k]), (step, k)
                continue
            moved = (s[k] - s0[k]).norm()
            assert (w[k] - s[k]).norm() <= 1e-2 * moved + 1e-7, (step, k)  # 1 % of what training moved it
    cols = ["train_loss", "val_loss", "train_acc", "val_acc", "lr", "weight_norm"]
    assert again.metrics.step.tolist() == stored.metrics.step.tolist()
    for c in cols:
        assert again.metrics[c].tolist() == pytest.approx(stored.metrics[c].tolist(), rel=1e-4), c


def test_files_written_before_digests_are_read_as_they_are_and_a_resume_adds_digests(copy, quiet):
    """The stored run's files carry no digest (written before grokscope recorded one): they are read
    unchecked by it (their other checks still apply); what a resume writes carries one."""
    from grokscope.files import read_metadata
    old = [copy / DATA_FILE, copy / STATE_FILE, *(copy / CKPT_DIR).iterdir()]
    assert not any("digest" in read_metadata(p) for p in old)
    run = grokscope.train(resume=copy, steps=25, **quiet)
    assert all(run.state_dict_at(s) is not None for s in run.steps)
    assert "digest" not in read_metadata(copy / CKPT_DIR / "step_00000020.safetensors")  # not rewritten
    assert "digest" in read_metadata(run.checkpoint_path(25)) and "digest" in read_metadata(copy / STATE_FILE)
