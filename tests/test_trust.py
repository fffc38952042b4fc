"""Results you can trust: run identity, results tied to their run and checkpoints, one writer per folder,
everything checked when read, sizes refused up front, write errors as one line."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import grokscope
from grokscope.analyze import analyze
from grokscope.cli import main
from grokscope.config import RunConfig
from grokscope.errors import GrokscopeError
from grokscope.guard import LOCK_FILE, FolderLock, estimate
from grokscope.results import default_out_dir, load_results
from grokscope.run import Run, atomic_save, ckpt_name

from conftest import QUIET, TINY_RUN

QUIET = dict(**QUIET)
REPO = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (but the lock file) -> a hash of its bytes."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and p.name != LOCK_FILE:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(argv, capsys) -> tuple[int, list[str]]:
    """Run the CLI in this process: (exit code, stderr lines). Any exception but SystemExit fails the test."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def one_error_line(rc, err) -> bool:
    return rc == 2 and len(err) == 1 and err[0].startswith("grokscope: error: ") and "Traceback" not in err[0]


@pytest.fixture
def run(tiny_run, tmp_path):
    shutil.copytree(tiny_run.path, tmp_path / "checkpoints" / "tiny")
    return Run(tmp_path / "checkpoints" / "tiny")


def tiny(**over) -> RunConfig:
    cfg = RunConfig().update(json.loads(json.dumps(TINY_RUN)))
    return cfg.update(over)


# --- run identity ----------------------------------------------------------------------------------------
def test_a_run_gets_an_identity_and_an_old_run_a_stable_derived_one(run, tmp_path):
    rid = json.loads((run.path / "config.json").read_text())["run_id"]
    assert len(rid) == 32 and run.run_id == rid
    other = grokscope.train(tiny(), out=tmp_path / "other", **QUIET)
    assert other.run_id != rid  # the same config trained again is another run
    cfg = json.loads((run.path / "config.json").read_text())
    del cfg["run_id"]
    (run.path / "config.json").write_text(json.dumps(cfg))
    legacy = Run(run.path).run_id
    assert legacy.startswith("legacy-") and Run(run.path).run_id == legacy
    # a checkpoint that names another run is refused
    with pytest.raises(GrokscopeError, match="belongs to another run"):
        Run(run.path).state_dict_at(5)


def test_sidecars_record_the_run_and_the_checkpoint_files(run, tmp_path):
    out = tmp_path / "res"
    analyze(run, only="weight_norms", out=out, progress=False)
    meta = json.loads((out / "weight_norms.json").read_text())
    assert meta["run_id"] == run.run_id and Path(meta["run"]) == run.path.resolve()
    st = os.stat(run.checkpoint_path(10))
    assert meta["checkpoints"]["10"] == f"{st.st_size}:{st.st_mtime_ns}"
    assert meta["columns"][0] == "step"


def test_a_changed_checkpoint_file_is_analysed_again(run, tmp_path, monkeypatch):
    out = tmp_path / "res"
    first = analyze(run, only="weight_norms", out=out, progress=False)["weight_norms"]
    loads = []
    original = Run.model_at
    monkeypatch.setattr(Run, "model_at", lambda self, s, device="cpu": loads.append(s) or original(self, s, device))
    path = run.checkpoint_path(10)
    state = load_file(str(path))
    state = {k: (v * 2 if v.is_floating_point() and v.dim() > 0 else v) for k, v in state.items()}
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    atomic_save(state, path, meta)  # re-saved with its digest recomputed
    again = analyze(run, only="weight_norms", out=out, progress=False)["weight_norms"]
    assert loads == [10]
    t1 = first[(first.step == 10) & (first.group == "total")].norm.item()
    t2 = again[(again.step == 10) & (again.group == "total")].norm.item()
    assert t2 == pytest.approx(2 * t1, rel=1e-5)
    loads.clear()
    analyze(run, only="weight_norms", out=out, progress=False)
    assert loads == []


def test_two_runs_with_the_same_folder_name_never_share_results(run, tmp_path, capsys):
    # a run deleted and retrained under the same name: its default results are recomputed, not reused
    first = analyze(run.path, only="weight_norms", progress=False)["weight_norms"]
    assert default_out_dir(run.path) == tmp_path / "analyses" / "tiny"
    shutil.rmtree(run.path)
    retrained = grokscope.train(tiny(train={"seed": 7}), out=run.path, **QUIET)
    second = analyze(retrained.path, only="weight_norms", progress=False)["weight_norms"]
    assert "earlier run that no longer exists" in capsys.readouterr().err
    norm = lambda t: t[(t.group == "total") & (t.step == 20)].norm.item()  # noqa: E731
    assert norm(second) != norm(first)
    assert norm(second) == pytest.approx(float(retrained.metrics.weight_norm.iloc[-1]), rel=1e-5)
    # two sweeps with the same cell name: their results folders differ
    a = tmp_path / "sweepA" / "runs" / "x+y_f0.5"
    b = tmp_path / "sweepB" / "runs" / "x+y_f0.5"
    assert default_out_dir(a) != default_out_dir(b) and default_out_dir(a) == tmp_path / "sweepA" / "analyses" / "x+y_f0.5"
    # pointing --out at another living run's results is refused, and nothing there changes
    other = grokscope.train(tiny(), out=tmp_path / "checkpoints" / "other", **QUIET)
    results = default_out_dir(retrained.path)
    before = snapshot(results)
    rc, err = cli(["analyze", "--ckpt-dir", other.path, "--only", "weight_norms", "--out", results,
                   "--no-progress"], capsys)
    assert one_error_line(rc, err) and "another run" in err[0]
    assert snapshot(results) == before
    # a report of a run never shows another run's tables, and says so
    from grokscope.report import load_report_run
    shutil.copytree(results, tmp_path / "elsewhere")
    r = load_report_run(other.path, results=tmp_path / "elsewhere")
    assert not r.tables.results and any("computed for another run" in n for n in r.notes)
    # load_results of a run never returns another run's tables
    with pytest.raises(GrokscopeError, match="another run"):
        shutil.copytree(results, default_out_dir(other.path))
        load_results(other.path)


def test_results_are_found_from_any_working_folder(run, tmp_path, monkeypatch):
    analyze(run.path, only="sparsity", progress=False)
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert set(load_results("../../checkpoints/tiny")) == {"sparsity"}
    assert set(load_results(run.path)) == {"sparsity"}
    from grokscope.report import build_report
    page = build_report("../../checkpoints/tiny")
    assert Path(page).resolve() == (tmp_path / "analyses" / "tiny" / "report.html")


# --- one writer at a time -----------------------------------------------------------------------------------
def _grokscope(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "grokscope.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_holder(run, tmp_path):
    before = snapshot(run.path)
    with FolderLock(run.path, "train"):
        r = _grokscope("train", "--resume", run.path, "--steps", 40, "--no-progress")
        assert r.returncode == 2 and r.stderr.count("\n") == 1
        assert "being written by another grokscope process" in r.stderr and f"pid {os.getpid()}" in r.stderr
        r = _grokscope("train", "--config", run.path / "config.json", "--out", tmp_path / "fresh")
        assert r.returncode == 0  # another folder: no conflict
    assert snapshot(run.path) == before
    res = default_out_dir(run.path)
    with FolderLock(res, "analyze"):
        r = _grokscope("analyze", "--ckpt-dir", run.path, "--only", "weight_norms", "--no-progress")
        assert r.returncode == 2 and "being written" in r.stderr and r.stderr.count("\n") == 1
    sweep = tmp_path / "sw"
    with FolderLock(sweep, "sweep"):
        r = _grokscope("sweep", "--out", sweep, "--op", "x+y", "--p", 5, "--fracs", "0.5,0.6", "--steps", 2)
        assert r.returncode == 2 and "being written" in r.stderr and r.stderr.count("\n") == 1
    assert [p.name for p in sweep.iterdir()] == [LOCK_FILE]


@pytest.mark.slow
def test_two_concurrent_trainings_on_one_folder(tmp_path):
    out = tmp_path / "same"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**TINY_RUN, "train": {"steps": 6000, "device": "cpu"},
                               "schedule": {"eval_every": 100, "ckpt_every": 500}}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "grokscope.cli", "train", "--config", str(cfg), "--out", str(out), "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 60
        while not (out / "config.json").exists() and time.time() < deadline:
            time.sleep(0.2)
        rid = json.loads((out / "config.json").read_text())["run_id"]
        second = subprocess.run(cmd[:-1] + ["--seed", "3", "--no-progress"], capture_output=True, text=True,
                                env=env, timeout=120)
        assert second.returncode == 2 and second.stderr.count("\n") == 1
        assert "being written by another" in second.stderr or "already holds a run" in second.stderr
        resume = subprocess.run(cmd[:3] + ["train", "--resume", str(out), "--no-progress"], capture_output=True,
                                text=True, env=env, timeout=120)
        if first.poll() is None:
            assert resume.returncode == 2 and f"pid {first.pid}" in resume.stderr
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0
    assert json.loads((out / "config.json").read_text())["run_id"] == rid
    r = Run(out)
    assert all(r.state_dict_at(s) is not None for s in r.steps)  # every checkpoint is this run's


def _children(pid: int) -> set[int]:
    kids = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids |= {int(k) for k in (task / "children").read_text().split()}
        except OSError:
            pass
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.slow
def test_killed_sweep_parent_takes_its_workers_with_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "sw"
    parent = subprocess.Popen([sys.executable, "-m", "grokscope.cli", "sweep", "--out", str(out), "--op", "x+y",
                               "--p", "7", "--fracs", "0.5,0.6", "--steps", "200000", "--d-model", "16",
                               "--d-mlp", "32", "--n-heads", "2", "--workers", "2", "--device", "cpu",
                               "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 240
        workers: set[int] = set()
        while time.time() < deadline and (len(workers) < 2 or len(list((out / "runs").glob("*/config.json"))) < 2):
            time.sleep(0.5)
            workers = {k for k in _children(parent.pid) if _alive(k) and "spawn_main" in _cmdline(k)}
        assert len(workers) == 2 and len(list((out / "runs").glob("*/config.json"))) == 2
        parent.kill()
        parent.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(k) for k in workers):
            time.sleep(0.2)
        assert not any(_alive(k) for k in workers)
    finally:
        if parent.poll() is None:
            parent.kill()
    # a restarted sweep is not refused by the dead parent's or workers' locks
    deadline = time.time() + 30
    while True:
        try:
            with FolderLock(out, "sweep"):
                for d in (out / "runs").iterdir():
                    with FolderLock(d, "sweep worker"):
                        pass
            break
        except GrokscopeError as e:
            if time.time() > deadline:
                holders = [p for p in Path("/proc").glob("[0-9]*") if str(out) in _cmdline(int(p.name))
                           or "spawn_main" in _cmdline(int(p.name))]
                raise AssertionError(f"{e}; processes: {[(p.name, _cmdline(int(p.name))[:80]) for p in holders]}")
            time.sleep(0.5)


# --- everything checked when read ----------------------------------------------------------------------------
def _resave(path: Path, fn=None, meta=None):
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        old_meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if fn is not None:
        tensors = fn(tensors)
    # a consistent edit: the digest is recomputed (atomic_save), so that the checks behind it are what answers
    atomic_save(tensors, path, {**old_meta, **(meta or {})})


def resume_cases():
    def shape(t):
        k = next(k for k in t if k.endswith(".exp_avg"))
        t[k] = t[k][..., :1].contiguous() if t[k].dim() else t[k]
        return t

    def nan(t):
        k = next(k for k in t if k.endswith(".exp_avg_sq"))
        t[k] = t[k].clone()
        t[k].view(-1)[0] = float("nan")
        return t

    def dtype(t):
        k = next(k for k in t if k.startswith("model.") and t[k].is_floating_point() and t[k].dim() > 0)
        t[k] = t[k].double()
        return t

    return {
        "step -50": (None, {"step": "-50"}, "outside"),
        "step 7 (not its own)": (None, {"step": "7"}, "disagrees"),
        "step text": (None, {"step": "abc"}, "no valid step"),
        "adam moment shape": (shape, None, "shape"),
        "NaN moment": (nan, None, "NaN"),
        "float64 weights": (dtype, None, "float64"),
        "rng missing": (lambda t: {k: v for k, v in t.items() if k != "rng"}, None, "random generator"),
    }


@pytest.mark.parametrize("case", list(resume_cases()))
def test_a_damaged_resume_state_is_one_line_and_nothing_changes(run, capsys, case):
    fn, meta, msg = resume_cases()[case]
    state = run.path / "state.safetensors"
    _resave(state, fn, meta)
    before = snapshot(run.path)
    rc, err = cli(["train", "--resume", run.path, "--steps", 40, "--no-progress"], capsys)
    assert one_error_line(rc, err) and msg in err[0], err
    assert snapshot(run.path) == before


def test_resume_never_shrinks_the_budget_and_a_damaged_metrics_file_changes_nothing(run, capsys):
    before = snapshot(run.path)
    rc, err = cli(["train", "--resume", run.path, "--steps", 10, "--no-progress"], capsys)
    assert one_error_line(rc, err) and "only extend" in err[0]
    assert snapshot(run.path) == before
    m = run.path / "metrics.csv"
    for bad in (b"\xff\xfe garbage\n", b"step,oops\n1,2\n", m.read_bytes().replace(b"\n5,", b"\nfive,", 1),
                m.read_bytes().replace(b"\n10,", b"\n3,", 1)):
        m.write_bytes(bad)
        before = snapshot(run.path)
        rc, err = cli(["train", "--resume", run.path, "--steps", 40, "--no-progress"], capsys)
        assert one_error_line(rc, err) and "metrics" in err[0], err
        assert snapshot(run.path) == before


def _ckpt(run, step):
    return run.checkpoint_path(step)


def ckpt_cases():
    def as_dtype(dt):
        return lambda t: {k: (v.to(dt) if v.is_floating_point() and v.dim() > 0 else v) for k, v in t.items()}

    def nan(t):
        k = next(k for k, v in t.items() if k.endswith("W_E"))
        t[k] = t[k].clone()
        t[k][0, 0] = float("nan")
        return t

    return {"int64": (as_dtype(torch.int64), None, "int64"), "float16": (as_dtype(torch.float16), None, "float16"),
            "another step's file": (None, {"step": "1"}, "holds step"), "NaN weight": (nan, None, "NaN"),
            "truncated": ("truncate", None, "unreadable")}


@pytest.mark.parametrize("case", list(ckpt_cases()))
def test_mismatched_checkpoints_are_refused(run, tmp_path, capsys, case):
    fn, meta, msg = ckpt_cases()[case]
    for s in run.steps:
        p = _ckpt(run, s)
        if fn == "truncate":
            p.write_bytes(p.read_bytes()[:100])
        else:
            _resave(p, fn, meta)
    with pytest.raises(GrokscopeError, match=msg):
        Run(run.path).model_at(10)
    before = snapshot(tmp_path)
    rc, err = cli(["analyze", "--ckpt-dir", run.path, "--only", "weight_norms,tsne", "--no-progress"], capsys)
    # every checkpoint bad: a warning per skipped step, then one error; no table written
    assert rc == 2 and err[-1].startswith("grokscope: error: none of the") and msg in err[-1]
    assert all(e.startswith("grokscope: warning: skipping step") for e in err[:-1])
    assert snapshot(tmp_path) == before and not default_out_dir(run.path).exists()


def data_cases():
    def shift(t):
        t["all_y"] = (t["all_y"] + 1) % 7
        t["train_y"] = (t["train_y"] + 1) % 7
        return t

    def same_sets(t):
        t["val_idx"] = t["train_idx"].clone()
        return t

    def token(t):
        t["all_x"] = t["all_x"].clone()
        t["all_x"][0, 0] = 99
        return t

    return {"shifted labels": (shift, None, "not those of op"), "validation = training": (same_sets, None, "not a split"),
            "token out of range": (token, None, "out of range"), "other op": (None, {"op": "x-y"}, "made for op"),
            "float labels": (lambda t: {**t, "all_y": t["all_y"].float()}, None, "not an integer")}


@pytest.mark.parametrize("case", list(data_cases()))
def test_mismatched_data_is_refused_by_every_command(run, capsys, case):
    fn, meta, msg = data_cases()[case]
    _resave(run.path / "data.safetensors", fn, meta)
    before = snapshot(run.path.parent.parent)
    for argv in (["train", "--resume", run.path, "--steps", 40, "--no-progress"],
                 ["analyze", "--ckpt-dir", run.path, "--only", "weight_norms", "--no-progress"]):
        rc, err = cli(argv, capsys)
        assert one_error_line(rc, err) and msg in err[0], (argv, err)
    assert snapshot(run.path.parent.parent) == before


@pytest.mark.parametrize("field,value,msg", [("task.op", "x-y", "made for op"), ("task.p", 11, "made for"),
                                             ("model.act_fn", "gelu", "act_fn")])
def test_a_config_that_no_longer_matches_is_refused(run, capsys, field, value, msg):
    cfg = json.loads((run.path / "config.json").read_text())
    section, key = field.split(".")
    cfg[section][key] = value
    (run.path / "config.json").write_text(json.dumps(cfg))
    rc, err = cli(["analyze", "--ckpt-dir", run.path, "--only", "weight_norms", "--no-progress"], capsys)
    assert rc == 2 and msg in err[-1], err


# --- sizes and numbers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,msg", [
    (["--p", "100003"], "of memory"),
    (["--lr", "inf"], "finite"), (["--update-noise", "nan"], "finite"), (["--weight-decay", "inf"], "finite"),
    (["--grokfast-alpha=-inf"], "finite"), (["--seed", str(2**64)], "seed"),
    (["--ckpt-log-points", "1000000000"], "at most"), (["--d-model", "1000000", "--n-heads", "1"], "of memory"),
    (["--n-layers", "1000000"], "of memory"), (["--out", "x" * 300], "too long"),
])
def test_sizes_and_non_finite_numbers_are_refused_up_front(tmp_path, capsys, monkeypatch, argv, msg):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    rc, err = cli(["train", "--op", "x+y", "--p", "7", "--steps", "10", "--device", "cpu", *argv], capsys)
    assert one_error_line(rc, err) and msg in err[0], err
    assert time.perf_counter() - t0 < 10 and not any(tmp_path.iterdir())


def test_steps_1e12_from_a_config_file_is_refused_with_the_estimate(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({**TINY_RUN, "train": {"steps": 10**12}}))
    rc, err = cli(["train", "--config", f, "--out", tmp_path / "r"], capsys)
    assert one_error_line(rc, err) and "needs about" in err[0]
    assert not (tmp_path / "r").exists()


def test_estimate_counts_the_parameters_exactly():
    from grokscope.model import build_model
    cfg = tiny()
    model = build_model(cfg.model, 9, 7, device="cpu")
    assert estimate(cfg).n_params == sum(p.numel() for p in model.parameters())
    assert estimate(cfg).n_equations == 49


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b"{\"task\": {\"p\": \"\xe9\"}}", b"[1, 2]"])
def test_binary_and_odd_config_files_are_one_line(tmp_path, capsys, content):
    f = tmp_path / "c.json"
    f.write_bytes(content)
    rc, err = cli(["train", "--config", f, "--out", tmp_path / "r"], capsys)
    assert one_error_line(rc, err)


def test_dev_zero_as_config_and_grid_is_one_line(tmp_path, capsys):
    rc, err = cli(["train", "--config", "/dev/zero", "--out", tmp_path / "r"], capsys)
    assert one_error_line(rc, err) and "not a regular file" in err[0]
    rc, err = cli(["sweep", "--grid", "/dev/zero", "--out", tmp_path / "s"], capsys)
    assert one_error_line(rc, err)


@pytest.mark.parametrize("grid", [{"grid": {"op": {"a": 1}}}, {"fixed": [1, 2]}, {"base": "x"},
                                  {"analyses": {"sharpness": 3}}, {"grid": {"frac": ["a", "b"]}}])
def test_wrong_typed_grid_fields_are_one_line(tmp_path, capsys, grid):
    f = tmp_path / "g.json"
    f.write_text(json.dumps(grid))
    rc, err = cli(["sweep", "--grid", f, "--out", tmp_path / "s"], capsys)
    assert one_error_line(rc, err), err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("damage", [b"\x00\x01", b"{\"spec\": 3}", b"{\"spec\": {\"grid\": {\"op\": 5}}}",
                                    b"{\"spec\": {\"grid\": {\"nope\": [1, 2]}}}"])
def test_a_damaged_sweep_file_is_one_line(tmp_path, capsys, damage):
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_bytes(damage)
    for argv in (["sweep", "--out", out], ["sweep-report", out]):
        rc, err = cli(argv, capsys)
        assert one_error_line(rc, err), (argv, err)


def test_results_table_with_missing_columns_is_one_line(run, tmp_path, capsys):
    analyze(run.path, only="weight_norms,sparsity", progress=False)
    res = default_out_dir(run.path)
    (res / "sparsity.csv").write_text("step,scope\n0,all\n")
    rc, err = cli(["report", run.path], capsys)
    assert one_error_line(rc, err) and "sparsity.csv is damaged" in err[0]
    (res / "sparsity.csv").write_bytes(b"\xff\xfe\xfd")
    rc, err = cli(["report", run.path], capsys)
    assert one_error_line(rc, err) and "UTF-8" in err[0]


def test_analyze_out_pointing_at_a_file_fails_before_computing(run, tmp_path, capsys, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    called = []
    monkeypatch.setattr(Run, "model_at", lambda *a, **k: called.append(1))
    rc, err = cli(["analyze", "--ckpt-dir", run.path, "--out", f, "--no-progress"], capsys)
    assert one_error_line(rc, err) and not called and f.read_text() == "x"


def test_a_read_only_run_on_resume_is_one_line(run, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes through read-only permissions")
    for p in [run.path, *run.path.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        rc, err = cli(["train", "--resume", run.path, "--steps", 40, "--no-progress"], capsys)
        assert one_error_line(rc, err)
    finally:
        for p in [run.path, *run.path.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


# --- disk full --------------------------------------------------------------------------------------------
@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_is_one_line_and_leaves_no_temporary_file(small_tmpfs, run, capsys, monkeypatch):
    import grokscope.guard
    monkeypatch.setattr(grokscope.guard, "free_disk", lambda path: None)  # the disk fills during training
    out = small_tmpfs / "r"
    cfg = small_tmpfs / "c.json"
    cfg.write_text(json.dumps({**TINY_RUN, "train": {"steps": 400, "device": "cpu"},
                               "schedule": {"ckpt_every": 1, "eval_every": 1}}))
    rc, err = cli(["train", "--config", cfg, "--out", out, "--no-progress"], capsys)
    assert rc == 2 and err[-1].startswith("grokscope: error: ") and ("No space left" in err[-1] or "disk" in err[-1])
    assert not list(small_tmpfs.rglob("*.tmp-*"))
    r = Run(out)  # what was written is complete and readable
    assert r.steps and all(r.state_dict_at(s) is not None for s in r.steps[-3:])
    # analyze and report into the full disk: one line, no temporary file
    filler = small_tmpfs / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass  # full
    rc, err = cli(["analyze", "--ckpt-dir", run.path, "--only", "weight_norms", "--out", small_tmpfs / "res",
                   "--no-progress"], capsys)
    assert rc == 2 and err[-1].startswith("grokscope: error: ")
    assert not list(small_tmpfs.rglob("*.tmp*"))


# --- Run.steps is read once ---------------------------------------------------------------------------------
def test_steps_are_read_once_per_run(run, monkeypatch):
    import grokscope.run as runmod
    scans = []
    real = os.scandir
    monkeypatch.setattr(runmod.os, "scandir", lambda p: scans.append(p) or real(p))
    r = Run(run.path)
    for s in r.steps:
        r.state_dict_at(s)
    assert len(scans) == 1
    (r.ckpt_dir / ckpt_name(20)).rename(r.ckpt_dir / ckpt_name(25))
    assert 25 not in r.steps and 25 in r.refresh().steps and len(scans) == 2


def test_a_300_character_out_is_one_line_for_every_command(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    for argv in (["analyze", "--ckpt-dir", run.path, "--only", "weight_norms", "--out", "x" * 300, "--no-progress"],
                 ["sweep", "--out", "y" * 300, "--op", "x+y", "--p", "5", "--steps", "2"],
                 ["train", "--resume", "z" * 300], ["report", "r" * 300], ["analyze", "--ckpt-dir", "a" * 300]):
        rc, err = cli(argv, capsys)
        assert one_error_line(rc, err), (argv[0], err)
    assert snapshot(tmp_path) == before


# --- content checksums (issue 26, case 4) -----------------------------------------------------------------------
def _flip_bit_in(path: Path, key: str, bit: int = 30) -> None:
    """Flip one bit of the first element of tensor ``key`` in a safetensors file, in place (bit 30 of a
    float32: the exponent's top bit, which turns a small weight into ~1e38)."""
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    start = 8 + n + json.loads(raw[8:8 + n])[key]["data_offsets"][0]
    raw[start + bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(raw))


def test_every_file_grokscope_writes_records_the_digest_of_its_content(run):
    from grokscope.run import read_metadata, tensor_digest
    for path in [run.path / "data.safetensors", run.path / "state.safetensors", *run.ckpt_dir.iterdir()]:
        tensors, meta = load_file(str(path)), read_metadata(path)
        assert meta["digest"].startswith("xxh3_128:") and meta["digest"] == tensor_digest(tensors, meta)


def test_a_bit_flip_in_a_checkpoint_is_caught_and_named(run, capsys):
    path = run.checkpoint_path(20)
    _flip_bit_in(path, "unembed.W_U")
    assert load_file(str(path))["unembed.W_U"].abs().max() > 1e30  # the flip is what the issue saw
    with pytest.raises(GrokscopeError, match="checksum"):
        Run(run.path).model_at(20)
    before = snapshot(run.path.parent.parent)
    rc, err = cli(["analyze", "--ckpt-dir", run.path, "--only", "weight_norms", "--steps", "20", "--no-progress"],
                  capsys)
    assert rc == 2 and str(path) in err[-1] and "checksum" in err[-1]
    assert snapshot(run.path.parent.parent) == before
    # among others, the damaged step is skipped with its warning and never recorded
    rc, err = cli(["analyze", "--ckpt-dir", run.path, "--only", "weight_norms", "--no-progress"], capsys)
    assert rc == 0 and any("skipping step 20" in e and "checksum" in e for e in err)
    norms = load_results(run.path)["weight_norms"]
    assert 20 not in set(norms.step) and norms.norm.max() < 1e3


@pytest.mark.parametrize("name,key", [("state.safetensors", "model.unembed.W_U"), ("data.safetensors", "all_y")])
def test_a_bit_flip_in_the_resume_state_or_data_is_one_line(run, capsys, name, key):
    _flip_bit_in(run.path / name, key, bit=0)
    before = snapshot(run.path.parent.parent)
    argvs = [["train", "--resume", run.path, "--steps", 40, "--no-progress"]]
    if name == "data.safetensors":
        argvs.append(["analyze", "--ckpt-dir", run.path, "--only", "weight_norms", "--no-progress"])
    for argv in argvs:
        rc, err = cli(argv, capsys)
        assert one_error_line(rc, err) and str(run.path / name) in err[0] and "checksum" in err[0], err
    assert snapshot(run.path.parent.parent) == before


# --- case 8: the key frequencies never come from a checkpoint analyze skips ----------------------------------
def test_key_frequencies_skip_a_non_finite_last_checkpoint(run, tmp_path):
    from grokscope.analyses import fourier as fo

    params = {"key_freqs": "final", "key_step": None, "key_from": "unembed", "n_key": None}
    before = fo.final_key_freqs(Run(run.path), params)
    assert before[1] == 20

    def nan(t):
        t["unembed.W_U"] = t["unembed.W_U"].clone()
        t["unembed.W_U"][0, 0] = float("nan")
        return t
    _resave(run.checkpoint_path(20), nan)
    keys, step = fo.final_key_freqs(Run(run.path), params)
    assert step == 15
    W = Run(run.path).state_dict_at(15)["unembed.W_U"][:, fo.cyclic_tokens(run.data)].T
    basis, freqs = fo.fourier_basis(7)
    assert keys == fo.key_frequencies(fo.frequency_norms(W, basis, freqs), None)
    with pytest.raises(GrokscopeError, match="inf or NaN"):
        fo.resolve_key_freqs(Run(run.path), {**params, "key_step": 20})
    table = analyze(run.path, only="fourier", out=tmp_path / "res", progress=False)["fourier"]
    assert 20 not in set(table.step) and set(table.key_freqs) == {",".join(map(str, keys))}
