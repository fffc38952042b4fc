"""Key-frequency circles: planted circles, shares, the discrete-log order, the key-subspace t-SNE."""
import math

import numpy as np
import pytest
import torch

from grokscope.analyses import circles as cc
from grokscope.analyses import tsne as ts
from grokscope.analyses.fourier import cyclic_tokens, primitive_root
from grokscope.config import ModelConfig
from grokscope.errors import GrokscopeError
from grokscope.model import build_model
from grokscope.tasks import make_dataset

torch.set_num_threads(1)
D = 24


def tiny(data):
    return build_model(ModelConfig(n_layers=1, d_model=D, n_heads=2, d_mlp=16), data.d_vocab, data.n_elements)


def orthonormal(m: int, seed: int = 0) -> torch.Tensor:
    """(D, m) orthonormal columns: random directions of d_model."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(D, m, generator=g, dtype=torch.float64))[0]


def plant(model, data, weights: dict[int, float], seed: int = 0, offset: float = 0.0):
    """Embedding and unembedding rows in cyclic order j: sum_k w_k (cos(2 pi k j/n) u_k + sin(2 pi k j/n) v_k),
    plus a constant ``offset`` along another direction (which the circles ignore)."""
    tokens = cyclic_tokens(data)
    n = len(tokens)
    Q = orthonormal(2 * len(weights) + 1, seed)
    j = torch.arange(n, dtype=torch.float64)
    W = offset * Q[:, -1].expand(n, D).clone()
    for i, (k, w) in enumerate(weights.items()):
        W += w * (torch.cos(2 * math.pi * k * j / n)[:, None] * Q[:, 2 * i] + torch.sin(2 * math.pi * k * j / n)[:, None] * Q[:, 2 * i + 1])
    with torch.no_grad():
        model.embed.W_E.zero_()
        model.unembed.W_U.zero_()
        model.embed.W_E[tokens] = W.float()
        model.unembed.W_U[:, tokens] = 2 * W.float().T
    return W


def angles(points):
    return np.arctan2(points.y.to_numpy(), points.x.to_numpy())


def wrapped(a):
    return np.abs(np.angle(np.exp(1j * a)))


def test_one_planted_frequency_is_a_perfect_circle_and_nothing_elsewhere():
    p, k = 31, 5
    data = make_dataset("x+y", p, 0.5)
    model = tiny(data)
    plant(model, data, {k: 1.0}, offset=3.0)
    table = cc.circles(model, data, key_freqs=f"{k},2,11")
    for matrix in ("embed", "unembed"):
        t = table[table.matrix == matrix].set_index("freq")
        assert t.loc[k, "r2"] == pytest.approx(1.0, abs=1e-9)
        assert t.loc[k, "share"] == pytest.approx(1.0, abs=1e-9)
        assert t.loc[k, "angle_err"] == pytest.approx(0.0, abs=1e-6)
        assert t.loc[k, "aspect"] == pytest.approx(1.0, abs=1e-6)
        for other in (2, 11):  # nothing on the other frequencies: no norm, no plane, no points
            assert t.loc[other, "share"] == pytest.approx(0.0, abs=1e-12)
            assert math.isnan(t.loc[other, "r2"]) and t.loc[other, "radius"] == 0.0
    points = cc.circle_points(model, data, key_freqs=f"{k},2,11")
    assert list(points.columns) == cc.POINT_COLUMNS
    emb = points[(points.matrix == "embed") & (points.freq == k)]
    assert (emb.token.to_numpy() == np.arange(p)).all()  # additive: cyclic order is the residues
    theta = 2 * math.pi * k * np.arange(p) / p  # angle 2 pi k x / p, exactly (no rotation: axes from cos, sin)
    assert wrapped(angles(emb) - theta).max() < 1e-5
    assert np.hypot(emb.x, emb.y).to_numpy() == pytest.approx(np.full(p, math.sqrt(1.0)), abs=1e-5)
    assert (emb.colour.to_numpy() == np.arange(p) % 8).all() and (emb.next.to_numpy() == (np.arange(p) + 8) % p).all()
    other = points[(points.freq == 2)]
    assert np.abs(other[["x", "y"]].to_numpy()).max() == 0.0


def test_two_planted_frequencies_give_their_shares():
    p = 29
    data = make_dataset("x-y", p, 0.5)
    model = tiny(data)
    plant(model, data, {3: 2.0, 7: 1.0})  # squared weights 4 : 1
    table = cc.circles(model, data).set_index(["matrix", "freq"])  # own key frequencies: the gap rule finds both
    assert sorted(table.loc["embed"].index) == [3, 7] and table.loc[("embed", 3), "rank"] == 0
    for matrix in ("embed", "unembed"):
        assert table.loc[(matrix, 3), "share"] == pytest.approx(0.8, abs=1e-6)
        assert table.loc[(matrix, 7), "share"] == pytest.approx(0.2, abs=1e-6)
        assert table.loc[(matrix, 3), "r2"] == pytest.approx(1.0, abs=1e-9)  # planes orthogonal: no leak
        assert table.loc[(matrix, 7), "r2"] == pytest.approx(1.0, abs=1e-9)


def test_discrete_log_order_puts_g_to_the_j_at_angle_2_pi_k_j_over_p_minus_1():
    p, k = 13, 2
    data = make_dataset("x*y", p, 0.5)
    g = primitive_root(p)
    model = tiny(data)
    plant(model, data, {k: 1.0})
    points = cc.circle_points(model, data, key_freqs=str(k))
    emb = points[points.matrix == "unembed"]
    assert len(emb) == p - 1 and 0 not in set(emb.token)  # residue 0 is not in the cyclic group
    assert (emb.token.to_numpy() == [pow(g, j, p) for j in range(p - 1)]).all()
    assert wrapped(angles(emb) - 2 * math.pi * k * np.arange(p - 1) / (p - 1)).max() < 1e-5
    assert (emb.next.to_numpy() == [pow(g, j + 8, p) for j in range(p - 1)]).all()  # chords g^j -> g^(j+8)
    table = cc.circles(model, data, key_freqs=str(k))
    assert table.r2.to_numpy() == pytest.approx([1.0, 1.0], abs=1e-9)
    # the same rows read in residue order are no circle at frequency k
    scrambled = cc.circle_fit(emb.sort_values("token")[["x", "y"]].to_numpy(), k, p - 1)
    assert scrambled["r2"] < 0.6 and scrambled["angle_err"] > 20


def test_noise_lowers_r2_and_random_rows_are_no_circle():
    p, k = 31, 4
    data = make_dataset("x+y", p, 0.5)
    model = tiny(data)
    W = plant(model, data, {k: 1.0})
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(W.shape, generator=g, dtype=torch.float64)
    tokens = cyclic_tokens(data)
    with torch.no_grad():
        model.embed.W_E[tokens] = (W + 0.15 * noise).float()
        model.unembed.W_U[:, tokens] = noise.float().T  # no circle at all
    t = cc.circles(model, data, key_freqs=str(k)).set_index("matrix")
    assert 0.5 < t.loc["embed", "r2"] < 0.999 and t.loc["embed", "angle_err"] < 15
    assert t.loc["unembed", "angle_err"] > 30 and t.loc["unembed", "share"] < 0.3


def test_group_tasks_do_not_apply():
    data = make_dataset("s5", 0, 0.3)
    assert cc.circles.__name__ and cc.not_cyclic(data) is not None
    with pytest.raises(GrokscopeError):
        cc.circles(tiny(data), data)


def test_key_subspace_tsne_shows_each_planted_circle():
    """Planted on one frequency, the key-subspace map is one circle in cyclic order: each point's nearest
    neighbours are its neighbours on that circle; noise on the other frequencies blurs the full-space map."""
    p, k = 29, 3
    data = make_dataset("x+y", p, 0.5)
    model = tiny(data)
    W = plant(model, data, {k: 1.0})
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        model.embed.W_E[:p] = (W + 0.6 * torch.randn(W.shape, generator=g, dtype=torch.float64)).float()
    table = ts.tsne(model, data, subspace="keys", key_freqs=str(k))
    assert set(table.matrix) == {"embed", "unembed", "embed_keys", "unembed_keys"}
    assert list(table.columns) == ["matrix", "element", "token", "x", "y", "colour", "next"]

    def neighbour_is_cyclic(name):
        t = table[table.matrix == name].sort_values("token")
        xy = t[["x", "y"]].to_numpy()
        d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        step = (d.argmin(1) - np.arange(p)) % p
        inv = pow(k, -1, p)  # on the frequency-k circle, x's neighbours are x +- k^-1
        return np.isin(step, [inv, p - inv]).mean()

    assert neighbour_is_cyclic("unembed_keys") == 1.0  # no noise: an exact circle
    assert neighbour_is_cyclic("embed_keys") >= 0.9  # the noise's own part on frequency 3 stays
    assert neighbour_is_cyclic("embed") <= 0.5
    with pytest.raises(GrokscopeError):
        ts.tsne(model, data, subspace="everything")


def test_registered():
    from grokscope.analyses import get_analysis

    a, b = get_analysis("circles"), get_analysis("circle_points")
    assert a.default_steps == "all" and b.default_steps == "slider"
    assert a.params["key_freqs"] == b.params["key_freqs"] == "final" and a.resolve is not None
    assert get_analysis("tsne").params["subspace"] == "keys"


def test_figures_one_panel_per_matrix_and_key_frequency():
    import pandas as pd

    from grokscope.figures import fig_circles, fig_circularity

    p = 23
    data = make_dataset("x+y", p, 0.5)
    model = tiny(data)
    pts, nums = [], []
    for step, w in ((0, 0.1), (50, 1.0), (500, 3.0)):
        plant(model, data, {4: w, 9: 0.5 * w}, seed=step)
        pts.append(cc.circle_points(model, data, key_freqs="4,9").assign(step=step))
        nums.append(cc.circles(model, data, key_freqs="4,9").assign(step=step))
    points, table = pd.concat(pts, ignore_index=True), pd.concat(nums, ignore_index=True)
    fig = fig_circles(points)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["embedding, k = 4", "embedding, k = 9", "unembedding, k = 4", "unembedding, k = 9"]
    assert len(fig.data) == 8 and [f.name for f in fig.frames] == ["0", "50", "500"]
    assert fig.layout.yaxis.scaleanchor == "x"  # round circles
    last = points[(points.step == 500) & (points.matrix == "embed") & (points.freq == 4)]
    r = float(np.hypot(last.x, last.y).max())
    assert fig.frames[2].layout.xaxis.range[1] == pytest.approx(1.12 * r, rel=1e-5)  # each step its own scale
    curves = fig_circularity(table)
    assert len(curves.data) == 8  # (R², share) x (embed, unembed) x 2 frequencies
    assert np.allclose(curves.data[0].y, [1.0, 1.0, 1.0])


def test_circularity_joins_the_progress_measures():
    import pandas as pd

    from grokscope.analyses.phases import BY_KEY, Measures

    steps = [0, 10, 100, 1000, 2000, 4000]
    table = pd.DataFrame([(s, m, k, 0.1, r2) for i, s in enumerate(steps) for m in ("embed", "unembed") for k, r2 in
                          ((3, 0.5 + 0.08 * i if m == "unembed" else 0.5), (7, 0.6))],
                         columns=["step", "matrix", "freq", "share", "r2"])
    metrics = pd.DataFrame({"step": steps, "train_loss": 1.0, "val_loss": 2.0, "train_acc": 1.0, "val_acc": 0.5})
    ms = Measures(metrics, {"circles": table})
    assert ms.has("unembed_circle_r2") and ms.has("embed_circle_r2")
    assert ms.raw["unembed_circle_r2"].tolist() == pytest.approx([(0.5 + 0.08 * i + 0.6) / 2 for i in range(6)])
    assert ms.raw["embed_circle_r2"].tolist() == pytest.approx([0.55] * 6)  # the mean over the key frequencies
    assert BY_KEY["unembed_circle_r2"].direction == +1


def test_report_inputs_name_the_s5_subgroup():
    import pandas as pd

    from grokscope.figures import FIGURES, RunTables

    data = make_dataset("s5", 0, 0.3)
    table = ts.tsne(tiny(data), data, subgroup="A5", coset="right").assign(step=3)
    table.attrs["params"] = {"subgroup": "A5", "coset": "right", "subspace": "keys", "key_freqs": "final"}
    t = RunTables("s5", pd.DataFrame(), {"tsne": table}, None, "group")
    fig = FIGURES["tsne"].build(t)
    assert "right cosets Hg of H = the even permutations (A5) (order 60, 2 cosets)" in fig.layout.title.subtitle.text
    assert len(fig.data) == 4
