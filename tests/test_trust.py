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
from grokscope.locks import LOCK_FILE, FolderLock
from grokscope.results import default_out_dir, load_results
from grokscope.files import atomic_save
from grokscope.run import Run, ckpt_name, estimate

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
    # a checkpoint that names another run is refused
    _resave(run.checkpoint_path(5), meta={"run_id": "0" * 32})
    with pytest.raises(GrokscopeError, match="belongs to another run"):
        Run(run.path).state_dict_at(5)


def test_a_run_without_an_id_in_its_config_keeps_its_own(run, tmp_path, capsys):
    """Case 9: run_id deleted from config.json, or the file re-indented: the id is the data file's (written
    once, at creation), the run's own checkpoints stay its own, and a resume does not rewrite config.json."""
    rid = run.run_id
    cfg = json.loads((run.path / "config.json").read_text())
    del cfg["run_id"]
    (run.path / "config.json").write_text(json.dumps(cfg, indent=7))
    edited = (run.path / "config.json").read_bytes()
    assert Run(run.path).run_id == rid and all(Run(run.path).state_dict_at(s) is not None for s in run.steps)
    grokscope.train(resume=run.path, **QUIET)  # same budget: config.json untouched
    assert (run.path / "config.json").read_bytes() == edited
    grokscope.train(resume=run.path, steps=25, **QUIET)  # a new budget rewrites it, with the run's own id
    assert json.loads((run.path / "config.json").read_text())["run_id"] == rid
    assert Run(run.path).state_dict_at(25) is not None
    # config.json and the data file naming different runs: refused
    cfg = json.loads((run.path / "config.json").read_text())
    (run.path / "config.json").write_text(json.dumps({**cfg, "run_id": "f" * 32}))
    rc, err = cli(["analyze", "--ckpt-dir", run.path, "--only", "weight_norms", "--no-progress"], capsys)
    assert one_error_line(rc, err) and "was written for run" in err[0], err


def test_a_run_made_before_ids_gets_one_that_survives_re_indenting_and_a_new_budget(tmp_path, quiet):
    from safetensors.torch import save_file
    stored = Path(shutil.copytree(REPO / "tests" / "data" / "stored_run", tmp_path / "old"))
    cfg = json.loads((stored / "config.json").read_text())
    cfg.pop("run_id", None)
    (stored / "config.json").write_text(json.dumps(cfg))
    from grokscope.files import read_metadata
    for f in [stored / "data.safetensors", *(stored / "ckpt").iterdir()]:  # as written before runs had an id
        save_file(load_file(str(f)), str(f), metadata={k: v for k, v in read_metadata(f).items() if k != "run_id"})
    legacy = Run(stored).run_id
    assert legacy.startswith("legacy-")
    (stored / "config.json").write_text(json.dumps(cfg, indent=3))
    assert Run(stored).run_id == legacy
    again = grokscope.train(resume=stored, steps=25, **quiet)
    assert again.run_id == Run(stored).run_id == legacy and again.state_dict_at(25) is not None


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
    from grokscope.figures.inputs import load_report_run
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


@pytest.mark.parametrize("norm,n_layers", [("none", 1), ("LN", 2), ("RMS", 3)])
def test_estimate_counts_the_parameters_batch_and_checkpoints_exactly(norm, n_layers):
    """The estimate's parameter count and checkpoint size are the built model's, its batch the trainer's
    (``config.batch_size``), its checkpoints the schedule's (``run.schedule``)."""
    from grokscope.config import batch_size
    from grokscope.model import build_model
    from grokscope.run import disk_estimate, schedule
    cfg = tiny()
    cfg.model.norm, cfg.model.n_layers = norm, n_layers
    model = build_model(cfg.model, 9, 7, device="cpu")
    e = estimate(cfg)
    assert e.n_params == sum(p.numel() for p in model.parameters())
    assert e.n_equations == 49 and e.batch == batch_size(cfg, int(round(cfg.task.frac * 49)))
    s = cfg.schedule
    assert e.n_ckpts == len(schedule(cfg.train.steps, s.ckpt_every, s.ckpt_log_points))
    assert (e.ckpt_bytes, e.ckpt_bytes * e.n_ckpts) == disk_estimate(model, e.n_ckpts)


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
    import grokscope.run
    monkeypatch.setattr(grokscope.run, "free_disk", lambda path: None)  # the disk fills during training
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
    from grokscope.files import read_metadata, tensor_digest
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


# --- case 10: each a clear line, exit 2, nothing left behind ----------------------------------------------------
LONG_PATH = "/".join(["d" * 199] * 16) + "/" + "e" * 43  # 3,243 bytes, every name within the limit


@pytest.mark.parametrize("argv,msg", [
    (["--device", "meta"], "device must be auto, cpu, cuda, cuda:N or mps"),
    (["--device", "mps"], "mps"), (["--device", "cuda:x"], "device must be"),
    (["--out", ""], "--out is empty"), (["--out", " "], "--out is empty"), (["--preset", ""], "--preset is empty"),
    (["--out", "r\udcff"], "not UTF-8"), (["--out", LONG_PATH], "path is too long (3243 bytes; at most 3000)"),
    (["--out", "d" * 201], "name is too long (201 bytes; at most 200)"),
])
def test_bad_train_arguments_are_one_line_and_leave_nothing(tmp_path, capsys, monkeypatch, argv, msg):
    if "mps" in argv and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    monkeypatch.chdir(tmp_path)
    rc, err = cli(["train", "--op", "x+y", "--p", "7", "--steps", "2", "--d-model", "16", "--d-mlp", "32",
                   "--n-heads", "2", *argv], capsys)
    assert one_error_line(rc, err) and msg in err[0], err
    assert not any(tmp_path.iterdir())


def test_a_config_files_bad_value_is_refused_even_when_a_flag_replaces_it(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({**TINY_RUN, "train": {"lr": -1, "steps": 2}}))
    for command in (["train", "--config", f, "--lr", "0.1", "--out", tmp_path / "r"],
                    ["sweep", "--config", f, "--lr", "0.1,0.2", "--out", tmp_path / "s"]):
        rc, err = cli(command, capsys)
        assert one_error_line(rc, err) and f"{f}: lr must be positive" in err[0], err
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_a_number_written_as_text_in_a_config_file_is_read_as_on_the_command_line(tmp_path, capsys):
    """Documented (docs/trust.md): "1e3" is 1000 in a config file as after --steps; "2.5" is refused."""
    f = tmp_path / "c.json"
    f.write_text(json.dumps({**TINY_RUN, "train": {"steps": "1e3"}}))
    assert RunConfig.load(f).train.steps == 1000
    f.write_text(json.dumps({**TINY_RUN, "train": {"steps": "2.5"}}))
    rc, err = cli(["train", "--config", f, "--out", tmp_path / "r"], capsys)
    assert one_error_line(rc, err) and "train.steps: bad value '2.5'" in err[0]


def test_sweep_refuses_a_cell_that_cannot_fit_up_front(tmp_path, capsys):
    t0 = time.perf_counter()
    rc, err = cli(["sweep", "--out", tmp_path / "s", "--op", "x+y", "--p", "100003", "--steps", "2"], capsys)
    assert one_error_line(rc, err) and "of memory" in err[0] and "cell run" in err[0], err
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "s").exists()


@pytest.mark.parametrize("steps", ["inf", "1e400", "-1", "nan", "2.5", ",", "x"])
def test_analyze_steps_that_are_not_step_numbers_are_one_line(run, capsys, steps):
    before = snapshot(run.path.parent.parent)
    rc, err = cli(["analyze", "--ckpt-dir", run.path, "--steps", steps, "--no-progress"], capsys)
    assert one_error_line(rc, err) and "--steps takes whole step numbers" in err[0], err
    assert snapshot(run.path.parent.parent) == before


@pytest.mark.parametrize("where,msg", [(".", "inside the run"), ("ckpt", "inside the run"),
                                       ("ckpt/deeper", "inside the run"), ("SWEEP", "not in its analyses/"),
                                       ("SWEEP/runs/x", "not in its analyses/"), ("RESULTS/inner", "inside the results")])
def test_analyze_out_into_a_run_a_sweep_or_other_results_is_refused(run, tmp_path, capsys, where, msg):
    from grokscope.sweep import SweepSpec, write_spec
    write_spec(tmp_path / "sweep", SweepSpec.make(fixed={"p": 5, "steps": 2}, grid={"frac": [0.5, 0.6]}))
    analyze(run.path, only="weight_norms", progress=False)
    out = {"SWEEP": tmp_path / "sweep", "RESULTS": default_out_dir(run.path)}.get(where.split("/")[0], run.path / where.split("/")[0])
    out = out.joinpath(*where.split("/")[1:]) if "/" in where else out
    before = snapshot(tmp_path)
    rc, err = cli(["analyze", "--ckpt-dir", run.path, "--only", "sparsity", "--out", out, "--no-progress"], capsys)
    assert one_error_line(rc, err) and msg in err[0], err
    assert snapshot(tmp_path) == before and not (out.exists() and out.is_dir() and out.name in ("deeper", "x", "inner"))
    # the sweep's own analyses/ folder is where its results belong: accepted
    if where == "SWEEP":
        rc, err = cli(["analyze", "--ckpt-dir", run.path, "--only", "sparsity", "--out", out / "analyses" / "tiny",
                       "--no-progress"], capsys)
        assert rc == 0, err


def test_train_out_inside_a_results_folder_or_a_run_is_refused(run, tmp_path, capsys):
    analyze(run.path, only="weight_norms", progress=False)
    for out in (default_out_dir(run.path) / "r", run.path / "ckpt" / "r"):
        rc, err = cli(["train", "--op", "x+y", "--p", "7", "--steps", "2", "--out", out], capsys)
        assert one_error_line(rc, err) and "is inside the" in err[0], err
        assert not out.exists()


def test_a_right_to_left_override_is_escaped_when_printed(tmp_path, capsys):
    rc, err = cli(["analyze", "--ckpt-dir", tmp_path / "run\u202ecod.exe"], capsys)
    assert one_error_line(rc, err) and "\u202e" not in err[0] and "run\\u202ecod.exe" in err[0]
    out = tmp_path / "r\u202eun"  # accepted as a name, never printed raw
    assert main(["train", "--op", "x+y", "--p", "5", "--steps", "2", "--d-model", "16", "--d-mlp", "32", "--n-heads",
                 "2", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "\u202e" not in printed.out + printed.err and "r\\u202eun" in printed.out


# --- case 11: small faults -----------------------------------------------------------------------------------
def test_temporary_files_a_killed_writer_left_are_removed_on_resume(run, tmp_path, capsys):
    stale = [run.path / "ckpt" / "step_00000025.safetensors.tmp-999999", run.path / "state.safetensors.tmp-12"]
    for p in stale:
        p.write_bytes(b"half a file")
    grokscope.train(resume=run.path, steps=25, **QUIET)
    assert not any(p.exists() for p in stale) and not list(run.path.rglob("*.tmp-*"))
    # a sweep started again cleans its finished runs too
    sweep = ["sweep", "--out", tmp_path / "sw", "--op", "x+y", "--p", "5", "--fracs", "0.5,0.6", "--steps", "2",
             "--d-model", "16", "--d-mlp", "32", "--n-heads", "2", "--device", "cpu", "--workers", "1", "--no-progress"]
    assert cli(sweep, capsys)[0] == 0
    left = [tmp_path / "sw" / "runs" / "f0.5" / "ckpt" / "step_00000002.safetensors.tmp-4242",
            tmp_path / "sw" / "results.csv.tmp-4243"]
    for p in left:
        p.write_bytes(b"x")
    assert cli(sweep, capsys)[0] == 0
    assert not list((tmp_path / "sw").rglob("*.tmp-*"))


def test_tsne_after_a_resumed_analyze_equals_one_done_in_one_go(run, tmp_path):
    whole = analyze(run.path, only="tsne", out=tmp_path / "whole", progress=False)["tsne"]
    analyze(run.path, only="tsne", steps=run.steps[:2], out=tmp_path / "parts", progress=False)
    parts = analyze(run.path, only="tsne", steps=run.steps, out=tmp_path / "parts", progress=False)["tsne"]
    key = ["step", "matrix", "token"]
    a, b = whole.sort_values(key).reset_index(drop=True), parts.sort_values(key).reset_index(drop=True)
    assert len(a) == 4 * 7 * len(run.steps) and a.x.dtype == b.x.dtype == "float64"
    import pandas as pd
    numbers = ["step", "token", "x", "y", "colour", "next"]  # bit for bit, whatever was cached
    pd.testing.assert_frame_equal(a[numbers], b[numbers], check_dtype=False, check_exact=True)
    assert a.element.astype(str).equals(b.element.astype(str))  # (names like "0" come back from the CSV as 0)


# --- identity: a run's files checked against each other (cases 1, 2, 3, 5, 6, 7) ----------------------------
def _resume_refused(run_path, capsys, msg, steps=40):
    before = snapshot(run_path.parent)
    rc, err = cli(["train", "--resume", run_path, "--steps", steps, "--no-progress"], capsys)
    assert one_error_line(rc, err) and msg in err[0], err
    assert snapshot(run_path.parent) == before


def test_case1_a_resume_state_edited_consistently_is_refused_and_nothing_is_overwritten(run, capsys):
    def rewind(t):
        return {k: (torch.full_like(v, 5) if k.startswith("opt.") and k.endswith(".step") else v) for k, v in t.items()}
    state = run.path / "state.safetensors"
    _resave(state, rewind, {"step": "5"})  # as the issue did it, the digest recomputed
    _resume_refused(run.path, capsys, "was saved with another step_00000005.safetensors")
    from grokscope.files import read_metadata
    _resave(state, meta={"ckpt_digest": read_metadata(run.checkpoint_path(5))["digest"]})  # consistent throughout
    _resume_refused(run.path, capsys, "does not hold the weights of the run's checkpoint step_00000005")


def test_case2_a_ckpt_folder_that_links_into_another_run_is_refused(run, tmp_path, capsys):
    b = tmp_path / "checkpoints" / "b"
    shutil.copytree(run.path, b)
    shutil.rmtree(b / "ckpt")
    (b / "ckpt").symlink_to(run.path / "ckpt")
    before = snapshot(run.path)
    _resume_refused(b, capsys, "outside the run folder")
    assert snapshot(run.path) == before


def test_case3_a_resume_state_copied_from_another_run_is_refused(run, tmp_path, capsys):
    other = grokscope.train(tiny(train={"seed": 7}), out=tmp_path / "other", **QUIET)
    state = run.path / "state.safetensors"
    shutil.copy(other.path / "state.safetensors", state)
    _resume_refused(run.path, capsys, "belongs to another run")
    from grokscope.files import read_metadata
    _resave(state, meta={"run_id": run.run_id, "ckpt_digest": read_metadata(run.checkpoint_path(20))["digest"]})
    _resume_refused(run.path, capsys, "does not hold the weights")  # even with this run's id and digests written in


def test_case5_the_results_of_a_copied_run_are_never_merged_with_the_original(run, tmp_path, capsys):
    a = run.path
    b = tmp_path / "checkpoints" / "b"
    shutil.copytree(a, b)  # cp -a: the same run id in two folders
    analyze(a, only="weight_norms", progress=False)
    grokscope.train(resume=b, steps=30, **QUIET)
    res_a = default_out_dir(a)
    before = snapshot(res_a)
    rc, err = cli(["analyze", "--ckpt-dir", b, "--only", "weight_norms", "--out", res_a, "--no-progress"], capsys)
    assert one_error_line(rc, err) and "a copy of" in err[0] and "never merged" in err[0], err
    assert snapshot(res_a) == before
    assert set(load_results(a)["weight_norms"].step) == set(Run(a).steps)  # report A shows A's steps only
    # B's own results folder works; pointing A's report at it shows nothing of B, and says why
    analyze(b, only="weight_norms", progress=False)
    from grokscope.report import load_report_run
    r = load_report_run(a, results=default_out_dir(b))
    assert not r.tables.results and any("a copy of this run" in n for n in r.notes)
    shutil.rmtree(res_a)
    shutil.copytree(default_out_dir(b), res_a)  # B's results put in A's folder by hand
    with pytest.raises(GrokscopeError, match="a copy of"):
        load_results(a)


def test_case6_a_config_edited_to_other_model_settings_is_refused_on_resume_and_flagged(run, tmp_path, capsys):
    cfg = json.loads((run.path / "config.json").read_text())
    cfg["model"]["act_fn"] = "gelu"
    (run.path / "config.json").write_text(json.dumps(cfg, indent=2))
    _resume_refused(run.path, capsys, "act_fn 'relu' vs 'gelu'")
    from grokscope.report import load_report_run
    r = load_report_run(run.path, results=tmp_path / "none")
    assert any("differ from those the checkpoints were trained with (act_fn 'relu' vs 'gelu'" in n for n in r.notes)


def test_case7_a_checkpoint_re_saved_without_its_run_id_is_refused(run):
    from safetensors.torch import save_file
    from grokscope.files import read_metadata
    path = run.checkpoint_path(10)
    meta = {k: v for k, v in read_metadata(path).items() if k != "run_id"}
    atomic_save(load_file(str(path)), path, meta)  # its digest recomputed
    with pytest.raises(GrokscopeError, match="carries no run id"):
        Run(run.path).model_at(10)
    save_file(load_file(str(path)), str(path), metadata={k: v for k, v in meta.items() if k != "digest"})
    with pytest.raises(GrokscopeError, match="carries no run id"):
        Run(run.path).model_at(10)
