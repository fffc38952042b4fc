"""Known answers for neuron_norms, sparsity (Gini, effective number) and neuron_ablation."""
import pytest
import torch

from grokscope.analyses._common import gini
from grokscope.analyses.neurons import count_correct, effective_number, neuron_ablation, neuron_norms, sparsity
from grokscope.config import ModelConfig
from grokscope.model import build_model
from grokscope.tasks import make_dataset


# --- Gini and effective number ------------------------------------------------------------------
def test_gini_known_values():
    assert gini([2.0, 2.0, 2.0, 2.0]) == pytest.approx(0.0, abs=1e-12)
    for n in (1, 2, 5, 100):
        assert gini([0.0] * (n - 1) + [3.0]) == pytest.approx(1 - 1 / n)
    assert gini([0.0, 0.0]) != gini([0.0, 0.0])  # NaN: no mass, no inequality to measure


def test_gini_equals_mean_absolute_difference_form():
    g = torch.Generator().manual_seed(0)
    for n in (3, 10, 57):
        x = torch.rand(n, generator=g, dtype=torch.float64) ** 3
        pairwise = (x[:, None] - x[None, :]).abs().sum() / (2 * n * n * x.mean())
        assert gini(x) == pytest.approx(float(pairwise), rel=1e-9)
        assert gini(x[torch.randperm(n, generator=g)] * 7.0) == pytest.approx(gini(x), rel=1e-9)  # order, scale


def test_effective_number():
    assert effective_number([1.0] * 8) == pytest.approx(8.0)
    assert effective_number([0.0, 5.0, 0.0]) == pytest.approx(1.0)
    assert effective_number([1.0, 2.0]) == pytest.approx(9 / 5)


# --- neuron norms and sparsity on planted weights -------------------------------------------------
def small_model(n_layers=2, d_mlp=8, norm="LN"):
    return build_model(ModelConfig(n_layers=n_layers, d_model=16, n_heads=2, d_mlp=d_mlp, norm=norm), 9, 7)


def test_neuron_norm_is_product_of_in_and_out_norms():
    model = small_model()
    with torch.no_grad():
        for layer, block in enumerate(model.blocks):
            block.mlp.W_in.zero_()
            block.mlp.W_out.zero_()
            for i in range(8):
                block.mlp.W_in[i % 16, i] = 3.0 + layer  # ‖W_in[:, i]‖ = 3 + layer
                block.mlp.W_out[i, :4] = 0.5 * (i + 1)  # ‖W_out[i, :]‖ = (i + 1)
    table = neuron_norms(model, None)
    assert list(table.columns) == ["layer", "neuron", "norm", "in_norm", "out_norm"]
    assert len(table) == 16
    for row in table.itertuples():
        assert row.in_norm == pytest.approx(3.0 + row.layer)
        assert row.out_norm == pytest.approx(row.neuron + 1)
        assert row.norm == pytest.approx((3.0 + row.layer) * (row.neuron + 1))


def test_sparsity_rows():
    model = small_model()
    with torch.no_grad():
        model.blocks[0].mlp.W_in.fill_(1.0)  # layer 0: all neurons equal
        model.blocks[0].mlp.W_out.fill_(1.0)
        model.blocks[1].mlp.W_in.zero_()  # layer 1: one neuron
        model.blocks[1].mlp.W_out.zero_()
        model.blocks[1].mlp.W_in[:, 5] = 1.0
        model.blocks[1].mlp.W_out[5, :] = 1.0
    table = sparsity(model, None).set_index("scope")
    assert list(table.index) == ["blocks.0", "blocks.1", "all"]
    assert table.loc["blocks.0", "gini"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc["blocks.0", "effective_n"] == pytest.approx(8.0)
    assert table.loc["blocks.1", "gini"] == pytest.approx(1 - 1 / 8)
    assert table.loc["blocks.1", "effective_n"] == pytest.approx(1.0)
    n = torch.tensor([16.0] * 8 + [0.0] * 5 + [16.0] + [0.0] * 2)  # ‖W_in‖·‖W_out‖ = 4·4
    assert table.loc["all", "gini"] == pytest.approx(gini(n))
    assert table.loc["all", "effective_n"] == pytest.approx(9.0)
    assert table.loc["all", "n_neurons"] == 16


# --- ablation: a network whose answer is carried by exactly k* neurons ----------------------------
P, K_STAR, D_MLP = 7, 5, 32


def planted_network():
    """x op y = : uniform attention copies (e_x + e_op + e_y + e_eq)/4 to the last position; neuron j < K_STAR
    fires when j is x or y and writes code j, which the unembedding reads through a random matrix M; the
    other neurons are ~1e-4 in norm. The training labels are this network's own answers, so train
    accuracy is 100 % and removing any detector changes answers."""
    model = build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=D_MLP, norm="none"), P + 2, P, seed=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E.copy_(torch.eye(16)[: P + 2])  # token t -> e_t
        a = model.blocks[0].attn  # W_Q = W_K = 0: uniform causal attention
        for h in range(2):
            a.W_V[h] = torch.eye(16)[:, 8 * h: 8 * h + 8]
            a.W_O[h] = torch.eye(16)[8 * h: 8 * h + 8, :]
        m = model.blocks[0].mlp
        for j in range(K_STAR):
            m.W_in[j, j] = 4.0  # pre-activation: the number of times j is x or y
            m.b_in[j] = -0.5
            m.W_out[j, P + 2 + j] = 1.0  # code dimension 9 + j
        tiny = torch.randn(16, D_MLP - K_STAR, generator=g) * 1e-4
        m.W_in[:, K_STAR:] = tiny
        m.W_out[K_STAR:, :] = tiny.T
        model.unembed.W_U[P + 2: P + 2 + K_STAR, :] = torch.randn(K_STAR, P, generator=g)
        model.unembed.b_U.copy_(0.01 * torch.arange(P))  # no detector fired: answer P - 1, whatever the tiny ones do
    data = make_dataset("x+y", P, 0.6, seed=0)
    with torch.inference_mode():
        data.train_y = model(data.train_x)[:, -1].argmax(-1)
    return model, data


def test_planted_network_needs_each_detector():
    model, data = planted_network()
    n = len(data.train_y)
    assert count_correct(model, data.train_x, data.train_y) == n
    for j in range(K_STAR):  # every detector alone matters (more than the 1-point tolerance)
        keep = torch.ones(1, D_MLP, dtype=torch.bool)
        keep[0, j] = False
        assert count_correct(model, data.train_x, data.train_y, keep) < 0.99 * n
    keep = torch.zeros(1, D_MLP, dtype=torch.bool)
    keep[0, :K_STAR] = True  # the tiny neurons do not matter
    assert count_correct(model, data.train_x, data.train_y, keep) == n


def test_ablation_finds_k_star():
    model, data = planted_network()
    table = neuron_ablation(model, data, per_layer=True).set_index("scope")
    assert list(table.index) == ["all", "blocks.0"]
    for scope in table.index:
        assert table.loc[scope, "k"] == K_STAR
        assert table.loc[scope, "n_neurons"] == D_MLP
        assert table.loc[scope, "k_frac"] == pytest.approx(K_STAR / D_MLP)
        assert table.loc[scope, "train_acc"] == 1.0
        assert table.loc[scope, "kept_acc"] == 1.0
    # a looser tolerance can only need fewer neurons
    loose = neuron_ablation(model, data, tolerance=0.5).set_index("scope")
    assert loose.loc["all", "k"] <= K_STAR


def test_ablation_is_brute_force_minimum_on_a_small_case():
    model, data = planted_network()
    x, y = data.train_x, data.train_y
    n = len(y)
    from grokscope.analyses.neurons import neuron_norm_matrix

    order = neuron_norm_matrix(model).flatten().argsort(descending=True, stable=True)
    brute = next(k for k in range(D_MLP + 1)
                 if count_correct(model, x, y, torch.zeros(D_MLP, dtype=torch.bool).index_fill(0, order[:k], True)[None])
                 >= n - int(0.01 * n))
    assert neuron_ablation(model, data).loc[0, "k"] == brute == K_STAR
