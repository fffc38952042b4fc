"""The batched forward against each run's own HookedTransformer, for every model option."""
import pytest
import torch

from grokscope.forward import batched_answer_logits
from grokscope.config import ModelConfig
from grokscope.model import build_model

OPTIONS = [dict(), dict(norm="RMS"), dict(norm="none"), dict(biases="zero"), dict(pos_embed="sinusoidal"),
           dict(act_fn="gelu", n_layers=1), dict(n_layers=3, norm="none", biases="zero", pos_embed="sinusoidal")]


@pytest.mark.parametrize("opts", OPTIONS)
def test_batched_answer_logits_equal_each_runs_hooked_forward(opts):
    n, K, B = 7, 3, 20
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_heads=4, d_mlp=64, **opts)
    models = [build_model(cfg, n + 2, n, seed=k, dtype=torch.float64) for k in range(K)]
    with torch.no_grad():
        for m in models:
            for p in m.parameters():
                if p.requires_grad:
                    p.add_(0.2 * torch.randn_like(p))
    g = torch.Generator().manual_seed(0)
    tokens = torch.stack([torch.randint(0, n, (K, B), generator=g), torch.full((K, B), n),
                          torch.randint(0, n, (K, B), generator=g), torch.full((K, B), n + 1)], -1)  # x op y =
    params = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_()
              for name, _ in models[0].named_parameters()}
    fast = batched_answer_logits(params, tokens, models[0].cfg, n, float(models[0].blocks[0].attn.attn_scale))
    assert fast.shape == (K, B, n)
    for k, m in enumerate(models):
        torch.testing.assert_close(fast[k], m(tokens[k])[:, -1], atol=1e-8, rtol=1e-8)
    # the gradients of every run's parameters, against its own model's (float64: equal up to
    # reassociation, so within 1e-9 of the gradients' scale: the logits reach hundreds here, and
    # b_K's exact gradient is zero, so its float noise is measured against the others')
    fast.square().sum().backward()
    for k, m in enumerate(models):
        m(tokens[k])[:, -1].square().sum().backward()
        scale = max(float(p.grad.abs().max()) for p in m.parameters() if p.requires_grad)
        for name, p in m.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(params[name].grad[k], p.grad, atol=1e-9 * scale, rtol=1e-9, msg=name)
