"""A call from Python leaves the caller's process as it found it; Ctrl-C in grokscope.train saves and raises."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import QUIET, tiny_config

import grokscope
from grokscope import RunConfig, TrainingInterrupted
from grokscope.cpu import flush_denormal_enabled
from grokscope.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


def tiny(**over) -> RunConfig:
    """12 steps of a one-layer model, a checkpoint and the resume state every 4."""
    cfg = tiny_config(model={"n_layers": 1, "d_mlp": 16}, train={"steps": 12},
                      schedule={"eval_every": 4, "ckpt_every": 4, "state_every": 4})
    return cfg.update(over)


@pytest.fixture
def flush(request):
    """Set this thread's flush-denormal state for the test, and put back the one it had."""
    before = flush_denormal_enabled()
    torch.set_flush_denormal(request.param)
    yield request.param
    torch.set_flush_denormal(before)


def test_flush_denormal_detection():
    before = flush_denormal_enabled()
    try:
        torch.set_flush_denormal(True)
        assert flush_denormal_enabled()
        torch.set_flush_denormal(False)
        assert not flush_denormal_enabled()
    finally:
        torch.set_flush_denormal(before)


@pytest.mark.parametrize("flush", [False, True], indirect=True)
def test_train_and_analyze_restore_flush_denormal_and_flush_while_they_run(tmp_path, flush, monkeypatch):
    seen = []
    step = Trainer.step
    monkeypatch.setattr(Trainer, "step", lambda self: seen.append(flush_denormal_enabled()) or step(self))
    run = grokscope.train(tiny(), out=tmp_path / "r", **QUIET)
    assert seen and all(seen)  # flushed while training (the speed the README measures)
    assert flush_denormal_enabled() == flush

    from grokscope.analyses.base import REGISTRY, Analysis

    during = []
    monkeypatch.setitem(REGISTRY, "probe", Analysis("probe", lambda model, data: during.append(
        flush_denormal_enabled()) or {"x": 1.0}, "test probe"))
    grokscope.analyze(run, only="probe", out=tmp_path / "a", progress=False)
    assert during and all(during)
    assert flush_denormal_enabled() == flush


@pytest.mark.parametrize("flush", [False], indirect=True)
def test_settings_restored_when_training_fails(tmp_path, flush, monkeypatch):
    def boom(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(Trainer, "step", boom)
    with pytest.raises(RuntimeError, match="boom"):
        grokscope.train(tiny(), out=tmp_path / "r", **QUIET)
    assert not flush_denormal_enabled()


@pytest.mark.slow
def test_a_fresh_process_is_left_as_it_was():
    """train() and analyze() from Python: no malloc settings (mallopt), threads and deterministic mode as
    they were, flush-denormal off again. (The grokscope command configures its own process.)"""
    code = """
import sys, tempfile, torch, grokscope
from grokscope.cpu import flush_denormal_enabled
cfg = grokscope.RunConfig().update({"task": {"op": "x+y", "p": 7}, "model": {"n_layers": 1, "d_model": 16,
    "n_heads": 2, "d_mlp": 16}, "train": {"steps": 5}, "schedule": {"ckpt_every": 5, "ckpt_log_points": 0}})
before = (flush_denormal_enabled(), torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
with tempfile.TemporaryDirectory() as d:
    run = grokscope.train(cfg, out=d + "/r", progress=False, log=lambda *a: None)
    grokscope.analyze(run, only="weight_norms", out=d + "/a", progress=False)
    run = grokscope.train_many([cfg], [d + "/b"], progress=False, log=lambda *a: None)
after = (flush_denormal_enabled(), torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
print(before == after, before[0], sys.modules['grokscope.cpu']._HEAP_KEPT)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["True", "False", "False"]


def test_the_command_configures_its_own_process(tmp_path, monkeypatch):
    calls = []
    import grokscope.cpu as cpu  # the owner of the process-wide settings, where the CLI takes them

    monkeypatch.setattr(cpu, "configure_cpu", lambda threads=None: calls.append(threads))
    from grokscope.cli import main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(tiny().to_json())
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert calls == [1]  # one torch thread unless --threads says otherwise
    assert main(["ops"]) == 0 and calls == [1]
    assert main(["train", "--resume", str(tmp_path / "r"), "--steps", "16", "--no-progress", "--threads", "3"]) == 0
    assert calls == [1, 3]


@pytest.mark.parametrize("command", ["train", "analyze", "sweep"])
def test_threads_flag_parses_with_a_default_of_one(command):
    from grokscope.cli import make_parser

    needed = {"train": [], "analyze": ["--ckpt-dir", "r"], "sweep": ["--out", "s"]}[command]
    parse = make_parser(command).parse_args
    assert parse([command, *needed]).threads == 1
    assert parse([command, *needed, "--threads", "4"]).threads == 4


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_count_is_one_line_and_exit_2(value, capsys):
    from grokscope.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--threads", value])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads" in err[0] and repr(value) in err[0], err


@pytest.mark.slow
@pytest.mark.parametrize("flag, expected", [([], 1), (["--threads", "2"], 2)])
def test_the_command_runs_with_one_torch_thread_unless_told(tmp_path, flag, expected):
    """The thread counts torch reports while the command trains (and after it), in a process whose
    OMP_NUM_THREADS asks for 3 (torch's default is then more than one): the command's setting wins,
    intra-op and inter-op."""
    import os

    cfg = tmp_path / "cfg.json"
    cfg.write_text(tiny().to_json())
    code = """
import sys, torch
from grokscope.cli import main
from grokscope.train import Trainer
before = torch.get_num_threads()
seen = set()
step = Trainer.step
Trainer.step = lambda self: seen.add((torch.get_num_threads(), torch.get_num_interop_threads())) or step(self)
rc = main(sys.argv[1:])
print(rc, before, sorted(seen), torch.get_num_threads(), torch.get_num_interop_threads())
"""
    env = {**os.environ, "OMP_NUM_THREADS": "3"}
    argv = ["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--no-progress", *flag]
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rc, before, seen = r.stdout.splitlines()[-1].split(" ", 2)
    assert rc == "0" and int(before) > 1  # torch's own default here is more than one thread
    assert seen == f"[({expected}, {expected})] {expected} {expected}", r.stdout


def interrupt_at(monkeypatch, at: int) -> None:
    """Send this process SIGINT (Ctrl-C) during update ``at``, as a user would."""
    step = Trainer.step

    def stepping(self):
        step(self)
        if self.step_count == at:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Trainer, "step", stepping)


def test_ctrl_c_in_train_saves_then_raises_keyboard_interrupt(tmp_path, monkeypatch):
    out = tmp_path / "my run"
    interrupt_at(monkeypatch, 6)
    lines = []
    with pytest.raises(KeyboardInterrupt) as info:
        grokscope.train(tiny(), out=out, progress=False, log=lines.append)
    e = info.value
    assert isinstance(e, TrainingInterrupted) and e.step == 6 and e.run.path == out
    message = str(e)
    assert f"grokscope.train(resume={str(out)!r})" in message
    assert f"grokscope train --resume '{out}'" in message  # quoted for the shell: the path has a space
    assert any("--resume" in line for line in lines)  # the loop's own line, as the CLI prints it
    run = grokscope.load_run(out)
    assert 6 in run.steps and run.metrics.step.max() == 6
    monkeypatch.undo()
    resumed = grokscope.train(resume=out, **QUIET)  # what the message says to do
    reference = grokscope.train(tiny(), out=tmp_path / "ref", **QUIET)
    a, b = resumed.state_dict_at(12), reference.state_dict_at(12)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


def test_ctrl_c_in_train_many_saves_every_run_then_raises(tmp_path, monkeypatch):
    from grokscope.batched import BatchedTrainer

    step = BatchedTrainer.step
    count = {"n": 0}

    def stepping(self):
        step(self)
        count["n"] += 1
        if count["n"] == 5:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(BatchedTrainer, "step", stepping)
    with pytest.raises(TrainingInterrupted) as info:
        grokscope.train_many([tiny(), tiny(train={"seed": 1})], [tmp_path / "a", tmp_path / "b"], **QUIET)
    assert [r.path for r in info.value.runs] == [tmp_path / "a", tmp_path / "b"]
    assert all(5 in grokscope.load_run(tmp_path / n).steps for n in "ab")


def test_only_processes_grokscope_owns_change_the_heap():
    """``configure_cpu`` (flush subnormals for good, and mallopt, which cannot be undone) is called only
    where grokscope owns the process: the ``grokscope`` command and a sweep's worker processes. Library
    calls use ``cpu_settings``, which puts the caller's settings back."""
    import ast

    callers = set()
    for path in (ROOT / "grokscope").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if name in ("configure_cpu", "_keep_heap"):
                    callers.add((path.relative_to(ROOT).as_posix(), name))
    assert callers == {("grokscope/cli.py", "configure_cpu"), ("grokscope/sweep/runner.py", "configure_cpu"),
                       ("grokscope/analyze.py", "configure_cpu"),  # analyze's worker processes, as the sweep's
                       ("grokscope/cpu.py", "_keep_heap")}, callers
