"""The model layer on either TransformerLens major: grokscope's initialisation is TransformerLens 3's, b_U
trains, and (with GROKSCOPE_OTHER_PYTHON, a Python whose TransformerLens is the other major; .ci/run sets
it) a run written under the other major loads with identical logits and resumes bit for bit here."""
from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import QUIET, tiny_config

import grokscope
from grokscope.config import ModelConfig
from grokscope.model import TL_MAJOR, build_model, hooked_state_layout, init_weights

OTHER = os.environ.get("GROKSCOPE_OTHER_PYTHON")
ROOT = Path(__file__).resolve().parent.parent
OPTIONS = [dict(), dict(norm="RMS", n_layers=2), dict(norm="none", act_fn="gelu"),
           dict(pos_embed="sinusoidal", biases="zero")]


@pytest.mark.skipif(TL_MAJOR != 3, reason="HookedTransformer's own initialisation needs TransformerLens 3")
@pytest.mark.parametrize("opts", OPTIONS)
def test_the_initialisation_is_transformer_lens_3s(opts):
    from transformer_lens import HookedTransformer

    from grokscope.model import hooked_config

    cfg = ModelConfig(d_model=16, n_heads=2, d_mlp=32, **opts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = HookedTransformer(hooked_config(cfg, 9, 7)).state_dict()
    ours = init_weights(cfg, 9, 7, seed=7)
    assert list(ours) == [k for k in theirs if k in ours]  # HookedTransformer's order
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    layout = hooked_state_layout(cfg, 9, 7)
    assert list(layout) == list(theirs) and all(s is None or tuple(theirs[k].shape) == s for k, s in layout.items())


@pytest.mark.parametrize("opts", OPTIONS)
def test_the_state_dict_is_hooked_transformers(opts):
    cfg = ModelConfig(d_model=16, n_heads=2, d_mlp=32, **opts)
    m = build_model(cfg, 9, 7, seed=3)
    state = m.state_dict()
    layout = hooked_state_layout(cfg, 9, 7)
    assert list(state) == list(layout)
    assert [n for n, _ in m.named_parameters()] == [k for k, s in layout.items() if s is not None]
    assert state["blocks.0.attn.mask"].shape == (0, 0) and state["blocks.0.attn.IGNORE"].item() == float("-inf")
    again = build_model(cfg, 9, 7, seed=4)
    again.load_state_dict(state, strict=True)
    tokens = torch.tensor([[0, 7, 1, 8], [3, 7, 6, 8]])
    with torch.no_grad():
        assert torch.equal(again(tokens), m(tokens))
    with pytest.raises(RuntimeError):
        again.load_state_dict({k: v for k, v in state.items() if k != "unembed.W_U"}, strict=True)


def test_the_unembedding_bias_trains(tmp_path):
    m = build_model(ModelConfig(d_model=16, n_heads=2, d_mlp=32), 9, 7)
    assert dict(m.named_parameters())["unembed.b_U"].requires_grad
    run = grokscope.train(tiny_config(task={"p": 7}, model={"n_layers": 1}, train={"steps": 5}), out=tmp_path / "r", **QUIET)
    assert torch.count_nonzero(run.state_dict_at(5)["unembed.b_U"]) == 7
    assert torch.equal(run.model_at(5).unembed.b_U, run.state_dict_at(5)["unembed.b_U"])


WRITE = """
import sys, torch, grokscope
from safetensors.torch import save_file
from grokscope.model import TL_MAJOR
out = sys.argv[1]
torch.set_num_threads(1)
quiet = dict(progress=False, log=lambda *a, **k: None)
cfg = grokscope.RunConfig().update({"task": {"op": "x+y", "p": 7, "frac": 0.5},
    "model": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_mlp": 32, "norm": "RMS"},
    "train": {"steps": 20, "seed": 5}, "schedule": {"eval_every": 5, "eval_log_points": 0, "ckpt_every": 5,
    "ckpt_log_points": 0, "state_every": 10}})
run = grokscope.train(cfg, out=out + "/run", **quiet, steps=10)
import shutil; shutil.copytree(out + "/run", out + "/half")
grokscope.train(resume=out + "/run", steps=20, **quiet)
m = run.model_at(10)
with torch.no_grad():
    save_file({"logits": m(run.data.all_x)}, out + "/logits.safetensors", {"major": str(TL_MAJOR)})
"""


@pytest.mark.slow
@pytest.mark.skipif(not OTHER, reason="set GROKSCOPE_OTHER_PYTHON to a Python with the other TransformerLens major")
def test_a_run_of_the_other_major_loads_with_identical_logits_and_resumes_bit_for_bit(tmp_path):
    subprocess.run([OTHER, "-c", WRITE, str(tmp_path)], check=True, cwd=ROOT, timeout=600,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    theirs = load_file(str(tmp_path / "logits.safetensors"))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "logits.safetensors"), "pt") as f:
        assert int(f.metadata()["major"]) != TL_MAJOR  # it ran under the other major
    run = grokscope.load_run(tmp_path / "half")
    model = run.model_at(10)
    with torch.no_grad():
        assert torch.equal(model(run.data.all_x), theirs["logits"])
    cfg = run.config
    ours0 = build_model(cfg.model, run.data.d_vocab, run.data.n_elements, seed=cfg.train.seed).state_dict()
    assert all(torch.equal(ours0[k], v) for k, v in run.state_dict_at(0).items())  # same seed, same step 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = grokscope.train(resume=tmp_path / "half", steps=20, **QUIET)
    finally:
        torch.set_num_threads(threads)
    there = grokscope.load_run(tmp_path / "run")
    assert here.steps == there.steps
    for step in there.steps:
        a, b = here.state_dict_at(step), there.state_dict_at(step)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), step
    cols = ["train_loss", "val_loss", "train_acc", "val_acc", "weight_norm"]
    assert here.metrics[cols].equals(there.metrics[cols])
