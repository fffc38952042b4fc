"""Known-answer tests of FSD, the Frequency Synchronization Degree (grokscope.analyses.fourier), on planted weights."""
import math

import pytest
import torch

from grokscope.analyses import fourier as fo
from grokscope.config import ModelConfig
from grokscope.model import build_model
from grokscope.tasks import make_dataset

torch.set_num_threads(1)
P = 23


def planted(op: str, freqs: dict[str, list[int]], seed: int = 0):
    """A one-layer model whose embedding, neuron inputs and unembedding hold exactly the given frequencies
    (over the task's cyclic order), each frequency in its own pair of columns; W_in is the identity on them."""
    data = make_dataset(op, P, 0.5)
    model = build_model(ModelConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=32), data.d_vocab, data.n_elements, seed=seed)
    tokens = fo.cyclic_tokens(data)
    n = len(tokens)
    j = torch.arange(n, dtype=torch.float64)

    def waves(ks, width):
        W = torch.zeros(n, width, dtype=torch.float64)
        for i, k in enumerate(ks):
            W[:, 2 * i] = torch.cos(2 * math.pi * k * j / n)
            W[:, 2 * i + 1] = torch.sin(2 * math.pi * k * j / n)
        return W.float()

    with torch.no_grad():
        model.embed.W_E.zero_()
        model.embed.W_E[tokens] = waves(freqs["embed"], 32)
        model.unembed.W_U.zero_()
        model.unembed.W_U[:, tokens] = waves(freqs["unembed"], 32).T
        # neuron inputs = W_E[tokens] @ W_in: W_in the identity on the planted columns, so they are the
        # embedding's waves (set exactly: a least-squares solve of this rank-deficient system is not)
        assert freqs["neurons"] == freqs["embed"], "the neuron inputs are a linear map of the embedding"
        model.blocks[0].mlp.W_in.zero_()
        cols = torch.arange(2 * len(freqs["embed"]))
        model.blocks[0].mlp.W_in[cols, cols] = 1.0
    return model, data


@pytest.mark.parametrize("op", ["x+y", "x*y"])
def test_synchronised_circuit_scores_one(op):
    keys = [2, 5, 9]
    model, data = planted(op, {"embed": keys, "neurons": keys, "unembed": keys})
    value, p = fo.fsd(model, data)
    K = len(fo.cyclic_tokens(data)) // 2
    assert value == pytest.approx(1 - len(keys) * (1 / len(keys)) * (len(keys) / K) ** 2, abs=0.03)  # 1 - O_0
    assert value > 0.9
    assert p < 0.02  # no permutation of 11 labels matches by chance this often


def test_components_on_different_frequencies_score_zero():
    model, data = planted("x+y", {"embed": [1, 2, 3], "neurons": [1, 2, 3], "unembed": [7, 8, 9]})
    # the neuron inputs are a linear map of the embedding, so they share its frequencies; the unembedding does not
    assert fo.fsd(model, data)[0] == pytest.approx(0.0, abs=1e-6)


def test_random_weights_score_near_zero():
    data = make_dataset("x+y", P, 0.5)
    values = []
    for seed in range(5):
        model = build_model(ModelConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64), data.d_vocab, data.n_elements,
                            seed=seed)
        values.append(fo.fsd(model, data)[0])
    assert max(values) < 0.1 and sum(values) / len(values) < 0.05


def test_partial_overlap_is_in_between():
    model, data = planted("x+y", {"embed": [2, 5, 9, 10], "neurons": [2, 5, 9, 10], "unembed": [2, 5, 3, 4]})
    value = fo.fsd(model, data)[0]
    assert 0.35 < value < 0.55  # half the shares agree: O = 1/2, less the null's share


def test_fsd_is_a_column_of_the_fourier_table():
    keys = [3, 4]
    model, data = planted("x+y", {"embed": keys, "neurons": keys, "unembed": keys})
    row = fo.fourier(model, data)
    assert row["fsd"] > 0.9 and 0 < row["fsd_p"] < 0.05


def test_shares_and_null_by_hand():
    """Two components on one frequency each: the same one gives O = 1; the null's O averages the chance 1/K that
    a random relabelling puts them together."""
    K = 5
    one = torch.zeros(K + 1)
    one[2] = 1.0
    value, _ = fo.frequency_synchronisation([one, one.clone()], n_perm=4000)
    assert value == pytest.approx(1 - 1 / K, abs=0.02)  # O = 1; the null meets by chance 1/K of the time
    other = torch.zeros(K + 1)
    other[4] = 1.0
    assert fo.frequency_synchronisation([one, other], n_perm=4000)[0] == 0.0
