"""Known answers for the weight_norms analysis on a model whose weights are set by hand."""
import math

import pytest
import torch

from grokscope.analyses.weight_norms import block_of, weight_norms
from grokscope.config import ModelConfig
from grokscope.model import build_model


@pytest.fixture
def planted():
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32), 9, 7)
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            p.fill_(0.1 * (i + 1) * (-1) ** i)  # parameter i: every entry ±0.1(i+1)
    return model


def test_every_parameter_block_and_total(planted):
    table = weight_norms(planted, None)
    params = dict(planted.named_parameters())
    expected = {n: 0.1 * (i + 1) * math.sqrt(p.numel()) for i, (n, p) in enumerate(params.items())}
    got = table[table.group == "param"].set_index("name")["norm"]
    assert set(got.index) == set(planted.state_dict()) - {k for k in planted.state_dict() if k.endswith(("mask", "IGNORE"))}
    for name, norm in expected.items():
        assert got[name] == pytest.approx(norm, rel=1e-6)
    blocks = table[table.group == "block"].set_index("name")["norm"]
    assert set(blocks.index) == {"embed", "pos_embed", "blocks.0", "blocks.1", "ln_final", "unembed"}
    for block in blocks.index:
        sq = sum(v ** 2 for n, v in expected.items() if n == block or n.startswith(block + "."))
        assert blocks[block] == pytest.approx(math.sqrt(sq), rel=1e-6)
    total = table[table.group == "total"]["norm"].item()
    assert total == pytest.approx(math.sqrt(sum(v ** 2 for v in expected.values())), rel=1e-6)
    # the metrics' weight_norm column is computed the same way during training
    direct = torch.sqrt(sum(p.detach().double().pow(2).sum() for p in planted.parameters())).item()
    assert total == pytest.approx(direct, rel=1e-9)


def test_block_names():
    assert block_of("blocks.10.mlp.W_in") == "blocks.10"
    assert block_of("embed.W_E") == "embed"
    assert block_of("unembed.b_U") == "unembed"
