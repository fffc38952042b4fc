"""Model shape, options, hook names, and the training forward against HookedTransformer's own."""
import pytest
import torch

from grokscope.config import ModelConfig
from grokscope.forward import answer_activations, answer_logits
from grokscope.model import build_model, n_params, sinusoidal_positions


def test_default_model_is_the_papers():
    m = build_model(ModelConfig(), d_vocab=99, d_vocab_out=97)
    c = m.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp, c.n_ctx) == (2, 128, 4, 32, 512, 4)
    non_embedding = sum(p.numel() for n, p in m.named_parameters() if not n.startswith(("embed", "pos_embed", "unembed")))
    assert 3.5e5 < non_embedding < 4.5e5  # "about 4e5 non-embedding parameters"
    _, cache = m.run_with_cache(torch.randint(0, 97, (3, 4)))
    for name in ("blocks.0.mlp.hook_post", "blocks.1.attn.hook_pattern", "blocks.1.hook_resid_post", "hook_embed"):
        assert name in cache
    assert cache["blocks.0.attn.hook_pattern"].shape == (3, 4, 4, 4)
    assert cache["blocks.0.mlp.hook_post"].shape == (3, 4, 512)


OPTIONS = [dict(), dict(norm="RMS"), dict(norm="none"), dict(biases="zero"), dict(pos_embed="sinusoidal"),
           dict(act_fn="gelu", n_layers=1), dict(n_layers=3, norm="none", biases="zero", pos_embed="sinusoidal")]


@pytest.mark.parametrize("opts", OPTIONS)
def test_answer_logits_equals_hooked_forward(opts):
    cfg = ModelConfig(d_model=32, n_heads=4, d_mlp=64, **opts)
    model = build_model(cfg, 13, 11, seed=1, dtype=torch.float64)  # float64: exact up to reassociation
    torch.manual_seed(0)  # the perturbation and the tokens are the same on every run
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))
    tokens = torch.randint(0, 11, (9, 4))
    equations = torch.stack([torch.arange(24) % 3, torch.full((24,), 11), torch.arange(24) % 11,
                             torch.full((24,), 12)], 1)  # x op y =: 3 distinct prefixes shared by 24 rows
    tokens = torch.cat([tokens, equations])
    ref = model(tokens)[:, -1]
    fast = answer_logits(model, tokens)
    assert fast.shape == (33, 11)
    torch.testing.assert_close(fast, ref, atol=1e-8, rtol=1e-8)
    # the captured activations are the hooks' at the last position
    captured = {}
    answer_logits(model, tokens, capture=captured)
    _, cache = model.run_with_cache(tokens)
    assert len(captured) == 3 * cfg.n_layers  # hook_resid_mid, mlp.hook_post, hook_resid_post
    for name, act in captured.items():
        torch.testing.assert_close(act, cache[name][:, -1], atol=1e-8, rtol=1e-8)
    acts = answer_activations(model, tokens)  # the same blocks, without the logits: the very same values
    assert acts.keys() == captured.keys() and all(torch.equal(acts[k], captured[k]) for k in acts)
    # gradients agree too
    g_ref = torch.autograd.grad(ref.square().sum(), [p for p in model.parameters() if p.requires_grad])
    g_fast = torch.autograd.grad(fast.square().sum(), [p for p in model.parameters() if p.requires_grad])
    for a, b in zip(g_ref, g_fast):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8)


def test_frozen_options():
    m = build_model(ModelConfig(d_model=16, n_heads=2, d_mlp=32, biases="zero", pos_embed="sinusoidal"), 7, 5)
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert "pos_embed.W_pos" in frozen and "blocks.0.attn.b_Q" in frozen and "unembed.b_U" in frozen
    assert "blocks.0.attn.W_Q" not in frozen
    assert all(float(p.abs().max()) == 0 for n, p in m.named_parameters() if n in frozen and n != "pos_embed.W_pos")
    torch.testing.assert_close(m.pos_embed.W_pos.detach(), sinusoidal_positions(4, 16))
    assert sinusoidal_positions(4, 16)[1, 0] == pytest.approx(torch.sin(torch.tensor(1.0)).item())
    assert n_params(m) < n_params(m, trainable_only=False)
    # no positions (Prieto et al.'s encoder): W_pos frozen at zero, so the stream is the token embedding alone
    m = build_model(ModelConfig(d_model=16, n_heads=2, d_mlp=32, pos_embed="none"), 7, 5)
    assert not m.pos_embed.W_pos.requires_grad and float(m.pos_embed.W_pos.abs().max()) == 0
    assert m.embed.W_E.requires_grad and float(m.embed.W_E.detach().abs().max()) > 0


def test_seeded_init_is_reproducible_and_leaves_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(ModelConfig(d_model=16, n_heads=2, d_mlp=32), 7, 5, seed=5)
    after = torch.rand(1)
    b = build_model(ModelConfig(d_model=16, n_heads=2, d_mlp=32), 7, 5, seed=5)
    assert torch.equal(before, after)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_answer_flops_counts_the_matmuls_answer_logits_does(n_layers):
    """Known answer: torch's FLOP counter over one forward+backward, on rows with 5 prefixes and 12 pairs."""
    from torch.utils.flop_counter import FlopCounterMode

    from grokscope.forward import answer_flops

    model = build_model(ModelConfig(n_layers=n_layers, d_model=32, n_heads=4, d_mlp=64), 13, 11, seed=0)
    x = torch.arange(40) % 5  # 5 distinct x, so 5 prefixes
    tokens = torch.stack([x, torch.full((40,), 11), (torch.arange(40) // 8) % 5 + 3, torch.full((40,), 12)], 1)
    pairs = len(torch.unique(tokens + torch.arange(4) * 13))
    assert pairs == 12
    with FlopCounterMode(display=False) as counter:
        answer_logits(model, tokens).square().sum().backward()
    assert counter.get_total_flops() == answer_flops(model.cfg, 40, prefixes=5, pairs=12, attention=False)
