"""t-SNE: planted clusters stay apart, Figure 3 colours, S5 cosets."""
import numpy as np
import pandas as pd
import pytest
import torch

from grokscope.config import ModelConfig
from grokscope.errors import GrokscopeError
from grokscope.model import build_model
from grokscope.tasks import S5, compose, inverse, make_dataset
from grokscope.analyses import tsne as ts

torch.set_num_threads(1)


def tiny(data):
    return build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=16), data.d_vocab, data.n_elements)


def nn_agreement(xy, labels):
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return (labels[d.argmin(1)] == labels).mean()


def test_planted_clusters_are_separated():
    p = 29
    data = make_dataset("x+y", p, 0.5)
    model = tiny(data)
    g = torch.Generator().manual_seed(0)
    cluster = torch.arange(p) % 4  # the planted label of each element
    centres = 10 * torch.randn(4, 16, generator=g)
    with torch.no_grad():
        model.embed.W_E[:p] = centres[cluster] + 0.01 * torch.randn(p, 16, generator=g)
        model.unembed.W_U[:] = (centres[(cluster + 1) % 4] + 0.01 * torch.randn(p, 16, generator=g)).T
    table = ts.tsne(model, data)
    assert list(table.columns) == ["matrix", "element", "token", "x", "y", "colour", "next"]
    for name in ("embed", "unembed"):
        t = table[table.matrix == name]
        assert len(t) == p and (t.token.to_numpy() == np.arange(p)).all()
        assert nn_agreement(t[["x", "y"]].to_numpy(), cluster.numpy()) == 1.0
    assert (table.colour.to_numpy()[:p] == np.arange(p) % 8).all()
    assert (table.next.to_numpy()[:p] == (np.arange(p) + 8) % p).all()
    again = ts.tsne(model, data)
    assert np.array_equal(again[["x", "y"]].to_numpy(), table[["x", "y"]].to_numpy())  # deterministic


def test_tiny_task_clips_perplexity():
    data = make_dataset("x-y", 5, 0.5)
    table = ts.tsne(tiny(data), data, perplexity=30, subspace="none")
    assert len(table) == 10 and np.isfinite(table[["x", "y"]].to_numpy()).all()


def test_discrete_log_colours():
    p = 13  # g = 2
    data = make_dataset("x/y", p, 0.5)
    colour, nxt = ts.colours(data, by="log")
    assert colour[0] == -1 and nxt[0] == -1
    assert colour[2] == 1 and colour[pow(2, 9, p)] == 9 % 8
    assert nxt[1] == pow(2, 8, p) and nxt[3] == 3 * 256 % p
    with pytest.raises(GrokscopeError):
        ts.colours(make_dataset("x+y", 7, 0.5), by="log")


@pytest.mark.parametrize("name,size", [("paper", 10), ("S4", 24), ("A5", 60), ("(0 1 2 3 4)", 5)])
@pytest.mark.parametrize("side", ["left", "right"])
def test_s5_cosets_partition_the_group(name, size, side):
    H = ts.named_subgroup(name, 5)
    assert len(H) == size and tuple(range(5)) in H
    assert all(compose(a, b) in H for a in H for b in H)  # closed
    labels = ts.coset_labels(S5, H, side)
    assert sorted(np.bincount(labels)) == [size] * (120 // size)  # equal-size blocks covering S5
    for i, g in enumerate(S5):  # same coset iff g^-1 h in H (left) or h g^-1 in H (right)
        for j in range(0, 120, 7):
            h = S5[j]
            rel = compose(inverse(g), h) if side == "left" else compose(h, inverse(g))
            assert (labels[i] == labels[j]) == (rel in H)


def test_paper_subgroup_is_dihedral_of_order_10():
    H = ts.named_subgroup("paper", 5)
    s, t = ts.parse_cycles("(0 3)(1 4)", 5), ts.parse_cycles("(0,3)(1,4)", 5)
    assert s == t == (3, 4, 2, 0, 1) and s in H
    orders = sorted(len(ts.generated_subgroup([h], 5)) for h in H)  # the order of each element
    assert orders == [1] + [2] * 5 + [5] * 4  # D5: identity, 5 reflections, 4 rotations


def test_s5_table_colours_are_cosets():
    data = make_dataset("s5", 0, 0.3)
    table = ts.tsne(tiny(data), data, subgroup="S4")
    emb = table[table.matrix == "embed"]
    assert len(emb) == 120 and sorted(np.bincount(emb.colour)) == [24] * 5
    assert (emb.next == -1).all()
    with pytest.raises(GrokscopeError):
        ts.parse_cycles("(0 1)(1 2)", 5)  # not a permutation written as disjoint cycles


def test_registered():
    from grokscope.analyses import get_analysis

    a = get_analysis("tsne")
    assert a.default_steps == "slider" and a.params["subgroup"] == "paper" and a.params["subspace"] == "keys"


@pytest.mark.parametrize("nxt", [[(i + 8) % 31 for i in range(31)], [(i + 8) % 16 for i in range(16)],
                                 [1, 2, -1, 4, -1], [1, 2, 0, -1], [1, 2, 1]])
def test_chord_polylines_draw_every_chord_once(nxt):
    from grokscope.figures.tsne import chord_order

    nxt = np.array(nxt)
    order = chord_order(nxt)
    drawn = [(a, b) for a, b in zip(order[:-1], order[1:]) if a >= 0 and b >= 0]
    assert sorted(drawn) == sorted((i, int(n)) for i, n in enumerate(nxt) if n >= 0)  # each once, no other
    if len(nxt) == 31:
        assert len(order) == 33  # 8 and 31 coprime: one cycle through every residue


def test_figure_has_full_and_key_maps_and_light_frames():
    from grokscope.figures import fig_tsne

    p = 13
    data = make_dataset("x+y", p, 0.5)
    model = tiny(data)
    parts = []
    for step in (0, 10, 100):
        torch.manual_seed(step)
        with torch.no_grad():
            model.embed.W_E.normal_()
        parts.append(ts.tsne(model, data, subspace="keys", key_freqs="2,5").assign(step=step))
    table = pd.concat(parts, ignore_index=True)
    fig = fig_tsne(table, "residue mod 8", key_freqs="2,5")
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:2] == ["embedding rows W_E", "unembedding rows W_U"] and "k = 2, 5" in titles[2]
    assert len(fig.data) == 8 and [f.name for f in fig.frames] == ["0", "10", "100"]
    assert fig.layout.sliders[0].active == 2
    for frame in fig.frames:  # only the coordinates travel with each step; colours and labels once
        assert len(frame.data) == 8 and all(tr.marker.color is None and tr.text is None for tr in frame.data)
    emb = table[(table.step == 0) & (table.matrix == "embed")].sort_values("token")
    assert np.allclose(np.asarray(fig.frames[0].data[1].x), emb.x.to_numpy(np.float32))


def test_s5_subtitle_names_the_subgroup_and_cosets():
    from grokscope.figures import fig_tsne
    from grokscope.figures.tsne import coset_text

    assert coset_text("paper", "left") == "left cosets gH of H = <(0 3)(1 4), (1 2)(3 4)> (order 10, 12 cosets)"
    assert coset_text("S4", "right") == "right cosets Hg of H = the stabiliser of 4 (S4) (order 24, 5 cosets)"
    data = make_dataset("s5", 0, 0.3)
    table = ts.tsne(tiny(data), data, subgroup="S4").assign(step=5)
    fig = fig_tsne(table, "coset of the chosen subgroup", subgroup="S4", coset="left")
    assert "left cosets gH of H = the stabiliser of 4 (S4) (order 24, 5 cosets)" in fig.layout.title.subtitle.text
    assert len(fig.data) == 4  # S5: the full-space maps only
