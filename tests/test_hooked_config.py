"""A run's checkpoints load in plain TransformerLens from config.json's "hooked_config" alone; token names."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from conftest import QUIET, tiny_config

import grokscope
from grokscope import GrokscopeError, RunConfig
from grokscope.run import CONFIG_FILE



def tiny(op="x+y", p=7, **model) -> RunConfig:
    return tiny_config(task={"op": op, "p": p}, model={"d_mlp": 16, **model}, train={"steps": 3},
                       schedule={"eval_every": 3, "ckpt_every": 3})


def plain_transformer_lens(config_json: str, checkpoint: str):
    """What a reader without grokscope does: TransformerLens, the stored dict, the safetensors file."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(HookedTransformerConfig.from_dict(json.loads(config_json)["hooked_config"]))
    model.load_state_dict(load_file(checkpoint), strict=True)
    return model.to("cpu").eval()


@pytest.mark.parametrize("model", [{}, {"norm": "RMS"}, {"norm": "none", "act_fn": "gelu"},
                                   {"pos_embed": "sinusoidal", "biases": "zero"}, {"n_layers": 1, "act_fn": "silu"}])
def test_plain_transformer_lens_loads_a_checkpoint_from_the_stored_config(tmp_path, model):
    run = grokscope.train(tiny(**model), out=tmp_path / "r", **QUIET)
    step = run.steps[-1]
    plain = plain_transformer_lens((run.path / CONFIG_FILE).read_text(), str(run.checkpoint_path(step)))
    ours = run.model_at(step)
    tokens = run.data.all_x
    with torch.no_grad():
        assert torch.equal(plain(tokens), ours(tokens))
    stored = json.loads((run.path / CONFIG_FILE).read_text())["hooked_config"]
    assert stored["d_vocab"] == 9 and stored["d_vocab_out"] == 7 and stored["n_ctx"] == 4
    assert run.hooked_config.to_dict() == ours.cfg.to_dict() | {"device": run.hooked_config.device}


def test_old_runs_derive_it_and_a_run_config_json_still_works_as_config(tmp_path):
    run = grokscope.train(tiny(op="x/y"), out=tmp_path / "r", **QUIET)
    path = run.path / CONFIG_FILE
    stored = json.loads(path.read_text())
    assert "hooked_config" in stored
    old = {k: v for k, v in stored.items() if k != "hooked_config"}  # as written before it was stored
    path.write_text(json.dumps(old, indent=2))
    again = grokscope.load_run(run.path)
    assert again.hooked_config.to_dict() == run.model_at(3).cfg.to_dict() | {"device": again.hooked_config.device}
    assert RunConfig.load(path).to_dict() == RunConfig.from_dict(stored).to_dict()  # the key is accepted
    resumed = grokscope.train(resume=run.path, steps=6, **QUIET)  # resuming writes it
    assert json.loads(path.read_text())["hooked_config"] == stored["hooked_config"]
    assert resumed.config.train.steps == 6


def test_decode_names_tokens_and_answers(tmp_path):
    run = grokscope.train(tiny(op="x-y", p=5), out=tmp_path / "r", **QUIET)
    assert run.token_names == ["0", "1", "2", "3", "4", "x-y", "="]
    x, y = run.data.train_x, run.data.train_y
    rows = run.decode(x)
    assert len(rows) == len(x) and all(len(r) == 4 for r in rows)
    for (a, op, b, eq), answer in zip(rows, run.decode(y)):
        assert (op, eq) == ("x-y", "=") and int(answer) == (int(a) - int(b)) % 5
    assert run.decode(6) == "=" and run.decode(torch.tensor(2)) == "2" and run.decode([[0, 1]]) == [["0", "1"]]
    for bad in (7, -1, 1.5):
        with pytest.raises(GrokscopeError, match="not a token id"):
            run.decode(bad)
    model = run.model_at(3)
    assert model.to_str_tokens(x[0]) == rows[0]
    with pytest.raises(GrokscopeError, match="no text tokenizer"):
        model.to_str_tokens("1 - 2 =")


def test_decode_s5_elements(tmp_path):
    data = grokscope.make_dataset("s5", 0, 0.5)
    names = data.token_names
    assert len(names) == 122 and names[0] == "(0, 1, 2, 3, 4)" and names[-2:] == ["s5", "="]
    a, _, b, _ = data.decode(data.train_x[0])
    from grokscope.tasks import compose

    answer = data.decode(data.train_y[0])
    assert answer == str(compose(eval(a), eval(b)))
