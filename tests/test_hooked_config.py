"""A run's checkpoints load in plain TransformerLens from config.json's "hooked_config" alone; token names."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import QUIET, tiny_config

import grokscope
from grokscope import GrokscopeError, RunConfig
from grokscope.model import TL_MAJOR
from grokscope.run import CONFIG_FILE



def tiny(op="x+y", p=7, **model) -> RunConfig:
    return tiny_config(task={"op": op, "p": p}, model={"d_mlp": 16, **model}, train={"steps": 3},
                       schedule={"eval_every": 3, "ckpt_every": 3})


DOC = Path(__file__).resolve().parent.parent / "docs" / "transformerlens.md"


def doc_snippet(major: int) -> str:
    """The Python block under "TransformerLens <major>:" in docs/transformerlens.md."""
    found = re.search(rf"^TransformerLens {major}:\n\n(?:<!--.*?-->\n)?```python\n(.*?)^```", DOC.read_text(), re.S | re.M)
    assert found, f"docs/transformerlens.md has no snippet for TransformerLens {major}"
    return found.group(1)


def plain_transformer_lens(run_dir: Path):
    """What a reader without grokscope does: the installed major's snippet of docs/transformerlens.md (the
    stored dict, the run's last safetensors file, TransformerLens alone), run on ``run_dir``."""
    code = doc_snippet(TL_MAJOR)
    assert 'run = "checkpoints/quick"' in code and "grokscope" not in code
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(code.replace('run = "checkpoints/quick"', f"run = {str(run_dir)!r}"), namespace)
    return namespace["model"].to("cpu")


@pytest.mark.parametrize("model", [{}, {"norm": "RMS"}, {"norm": "none", "act_fn": "gelu"},
                                   {"pos_embed": "sinusoidal", "biases": "zero"}, {"n_layers": 1, "act_fn": "silu"}])
def test_plain_transformer_lens_loads_a_checkpoint_from_the_stored_config(tmp_path, model):
    run = grokscope.train(tiny(**model), out=tmp_path / "r", **QUIET)
    step = run.steps[-1]
    plain = plain_transformer_lens(run.path)
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
