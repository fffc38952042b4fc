"""--compile: torch.compile'd training steps repeat bit for bit, resume bit-identically, and compute the
same function as the eager forward. One compile for the whole file (about a minute on a cold cache)."""
import json
import os
import subprocess
import sys

import pytest
import torch

import grokscope
from grokscope import RunConfig
from grokscope.forward import answer_logits, inductor_cache_dir
from grokscope.tasks import make_dataset
from grokscope.train import Trainer

from conftest import tiny_config

# conftest's tiny run, compiled, over 30 steps on 60 % of the table
TINY = {"task": {"frac": 0.6}, "train": {"steps": 30, "compile": True},
        "schedule": {"eval_every": 10, "eval_log_points": 4, "ckpt_every": 5, "ckpt_log_points": 3, "state_every": 10}}


def tiny(**train) -> RunConfig:
    cfg = tiny_config(**TINY)
    cfg.update({"train": train})
    return cfg


def quiet(*a):
    pass


@pytest.fixture
def two_threads():
    """Threads would reorder inductor's atomic scatter-adds; the deterministic mode must prevent it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_compiled_runs_repeat_and_resume_bit_identically(tmp_path, two_threads):
    lines = []
    a = grokscope.train(tiny(), out=tmp_path / "a", progress=False, log=lines.append)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["compile"] is True
    compiled = next(line for line in lines if line.startswith("grokscope: compiled in"))
    assert f"inductor's cache: {inductor_cache_dir()}" in compiled and "TORCHINDUCTOR_CACHE_DIR" in compiled
    again = grokscope.train(tiny(), out=tmp_path / "again", progress=False, log=quiet)
    grokscope.train(tiny(steps=20), out=tmp_path / "b", progress=False, log=quiet)
    b = grokscope.train(resume=tmp_path / "b", steps=30, progress=False, log=quiet)
    assert a.steps == again.steps == b.steps and a.steps[-1] == 30
    for step in a.steps:
        ref = a.state_dict_at(step)
        for other in (again, b):
            sd = other.state_dict_at(step)
            assert all(torch.equal(ref[k], sd[k]) for k in ref), (step, other.path)
    assert not torch.are_deterministic_algorithms_enabled()  # the mode is on only around compiled steps
    # an eager run of the same config follows nearly the same trajectory (the same function, other float order)
    eager = grokscope.train(tiny(compile=False), out=tmp_path / "eager", progress=False, log=quiet)
    w_c, w_e = a.state_dict_at(5)["embed.W_E"], eager.state_dict_at(5)["embed.W_E"]
    torch.testing.assert_close(w_c, w_e, atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_compiled_forward_and_gradients_equal_eager():
    cfg = tiny()
    data = make_dataset("x+y", 7, 0.6, seed=0)
    tr = Trainer(cfg, data, torch.device("cpu"))
    assert tr.compiled is not None
    x = data.all_x
    with tr.deterministic():
        fast = tr.forward(x)
        g_fast = torch.autograd.grad(fast.square().sum(), tr.params)
    ref = answer_logits(tr.model, x)
    g_ref = torch.autograd.grad(ref.square().sum(), tr.params)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    from torch._dynamo.utils import counters
    # torch.unique's sizes were traced (forward.compiled_mode), not a graph break; the setting was scoped
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert not torch._dynamo.config.capture_dynamic_output_shape_ops
    assert not torch.are_deterministic_algorithms_enabled()


def test_dropout_runs_do_not_compile():
    cfg = tiny(resid_dropout=0.1)
    tr = Trainer(cfg, make_dataset("x+y", 7, 0.6, seed=0), torch.device("cpu"))
    assert tr.compiled is None  # hooks need the HookedTransformer forward


@pytest.mark.slow
def test_cli_resume_refuses_compile(tmp_path):
    r = subprocess.run([sys.executable, "-m", "grokscope.cli", "train", "--resume", str(tmp_path), "--compile"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "drop --compile" in r.stderr


@pytest.mark.slow
def test_cli_compile_failure_is_one_line_and_writes_nothing(tmp_path):
    """No working C++ compiler: one error line, exit 2, no run folder left behind."""
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    env = {**os.environ, "CXX": "/bin/false", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "grokscope.cli", "train", "--config", str(cfg), "--out",
                        str(tmp_path / "run"), "--no-progress"], capture_output=True, text=True, env=env)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "torch.compile failed" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_later_compile_loads_from_the_disk_cache_in_one_trace():
    """What makes --compile pay in short runs: a later process (here, after dynamo's reset) traces the
    forward once and takes the compiled forward and backward from the disk caches, AOTAutograd's
    included. With dynamic shapes the first trace restarted and missed AOTAutograd's cache (12 s
    instead of 2 for the default model)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    cfg, data = tiny(), make_dataset("x+y", 7, 0.6, seed=0)
    Trainer(cfg, data, torch.device("cpu")).compile_now()  # fills the cache, if an earlier test has not
    torch._dynamo.reset()
    counters.clear()
    Trainer(cfg, data, torch.device("cpu")).compile_now()
    assert counters["aot_autograd"]["autograd_cache_hit"] == 1, dict(counters["aot_autograd"])
    assert not counters["aot_autograd"]["autograd_cache_miss"]
    assert counters["inductor"]["fxgraph_cache_hit"] == 2 and not counters["inductor"]["fxgraph_cache_miss"]
    assert counters["stats"]["unique_graphs"] == 1
