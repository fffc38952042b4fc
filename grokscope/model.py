"""The one place that builds the model: a TransformerLens HookedTransformer from a ModelConfig.

Also ``answer_logits``, the training forward pass. It computes exactly what the HookedTransformer
computes at the ``=`` position, from the HookedTransformer's own parameter tensors (gradients flow
into them), but skips the work whose result the loss never reads: the last block's query, attention
output and MLP at the first three positions, and the unembedding of those positions. A test checks it
against ``model(tokens)[:, -1]`` for every model option. Hook-based interventions (dropout, analyses)
use the HookedTransformer forward itself.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .config import ModelConfig

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

# TransformerLens 3.x warns on every HookedTransformer(...) that 4.0 removes it; we pin <4 and
# silence that one warning here, where every model is built.
_DEPRECATION = r".*HookedTransformer is deprecated.*"

N_CTX = 4  # x op y =
NORM_TYPES = {"LN": "LN", "RMS": "RMS", "none": None}


def sinusoidal_positions(n_ctx: int, d_model: int) -> torch.Tensor:
    """Vaswani et al.'s fixed encoding: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...)."""
    pos = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = pos / (10000.0 ** (i / d_model))
    pe = torch.zeros(n_ctx, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)[:, : d_model // 2]
    return pe.float()


def hooked_config_dict(cfg: ModelConfig, d_vocab: int, d_vocab_out: int) -> dict:
    """The HookedTransformerConfig of a run as TransformerLens' own keyword arguments (plain JSON; float32,
    the device left to TransformerLens): ``HookedTransformer(HookedTransformerConfig.from_dict(d))``
    builds the model, and a checkpoint loads into it with ``load_state_dict(strict=True)``. Fixed
    sinusoidal positions and zero biases are ordinary parameters there, stored in every checkpoint.
    A run stores it in config.json under "hooked_config"."""
    return dict(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_model // cfg.n_heads,
        d_mlp=cfg.d_mlp, d_vocab=d_vocab, d_vocab_out=d_vocab_out, n_ctx=N_CTX, act_fn=cfg.act_fn,
        normalization_type=NORM_TYPES[cfg.norm], positional_embedding_type="standard",
        default_prepend_bos=False,
    )


def hooked_config(cfg: ModelConfig, d_vocab: int, d_vocab_out: int, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32):
    return HookedTransformerConfig(**hooked_config_dict(cfg, d_vocab, d_vocab_out), device=str(device), dtype=dtype)


def frozen_names(model: HookedTransformer, cfg: ModelConfig) -> list[str]:
    """Parameters that are not trained under this config (fixed positions, zero biases)."""
    names = []
    for name, _ in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if cfg.pos_embed == "sinusoidal" and name == "pos_embed.W_pos":
            names.append(name)
        elif cfg.biases == "zero" and (leaf.startswith("b_") or leaf == "b"):
            names.append(name)
    return names


def build_model(cfg: ModelConfig, d_vocab: int, d_vocab_out: int, seed: int = 0,
                device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> HookedTransformer:
    """A freshly initialised HookedTransformer; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
            model = HookedTransformer(hooked_config(cfg, d_vocab, d_vocab_out, "cpu", dtype))
    with torch.no_grad():
        if cfg.pos_embed == "sinusoidal":
            model.pos_embed.W_pos.copy_(sinusoidal_positions(N_CTX, cfg.d_model))
        frozen = set(frozen_names(model, cfg))
        for name, param in model.named_parameters():
            if name in frozen:
                if name != "pos_embed.W_pos":
                    param.zero_()
                param.requires_grad_(False)
    return model.to(device, print_details=False)


# ---------------------------------------------------------------------------------------------
_ACTS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda t: F.gelu(t, approximate="tanh"),
    "gelu_pytorch_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "silu": F.silu,
}


def _norm(x: torch.Tensor, mod, kind: str | None) -> torch.Tensor:
    if kind == "LN":
        return F.layer_norm(x, x.shape[-1:], mod.w, mod.b, mod.eps)
    if kind == "RMS":
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mod.eps) * mod.w
    return x


def _qkv_weights(a, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(d_model, n*H*d_head) weight and bias of the named projections (e.g. "QKV"), heads side by side."""
    W = torch.cat([getattr(a, f"W_{c}") for c in which], 0)  # (n*H, d_model, d_head)
    b = torch.cat([getattr(a, f"b_{c}") for c in which], 0)  # (n*H, d_head)
    return W.permute(1, 0, 2).reshape(W.shape[1], -1), b.reshape(-1)


def _take(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table[idx] along the first axis, through index_select (whose backward, index_add, is several
    times faster on the CPU than advanced indexing's accumulate)."""
    return torch.index_select(table, 0, idx.reshape(-1)).view(*idx.shape, *table.shape[1:])


def _scores(q: torch.Tensor, k: torch.Tensor, scale) -> torch.Tensor:
    """q (..., Tq, H, d_head), k (..., T, H, d_head) -> (..., Tq, T, H) dot products over ``scale``.

    With T = 4, broadcast products beat batched matmuls of 4x32 @ 32x4 by about 2x on the CPU."""
    return (q.unsqueeze(-3) * k.unsqueeze(-4)).sum(-1) / scale


def _mix(scores: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """scores (..., Tq, T, H) with the mask already added, v (..., T, H, d_head) -> z (..., Tq, H, d_head)."""
    return (scores.softmax(-2).unsqueeze(-1) * v.unsqueeze(-4)).sum(-3)


def _mix_groups(q: torch.Tensor, groups: list, bias, scale) -> torch.Tensor:
    """Attention of q (..., Tq, H, d_head) over keys and values given in groups [(k, v), ...] of
    (..., T_g, H, d_head) each, in position order, without concatenating them: scores per group, one
    softmax over all of them (``bias``: the additive mask, (Tq, T, 1), or None), then the groups' sum."""
    scores = torch.cat([_scores(q, k, scale) for k, _ in groups], -2)
    if bias is not None:
        scores = scores + bias
    pattern = scores.softmax(-2).split([k.shape[-3] for k, _ in groups], -2)
    z = None
    for p, (_, v) in zip(pattern, groups):
        part = (p.unsqueeze(-1) * v.unsqueeze(-4)).sum(-3)
        z = part if z is None else z + part
    return z


def _block_out(resid: torch.Tensor, z: torch.Tensor, block, kind, act, capture=None, layer=0) -> torch.Tensor:
    """resid (N, Tq, d_model) + attention output of z (N, Tq, H, d_head), then + the MLP.

    ``capture`` (a dict): the last position's ``hook_resid_mid`` and ``mlp.hook_post`` go into it under
    the HookedTransformer's hook names."""
    N, Tq, d = resid.shape
    a, m = block.attn, block.mlp
    resid = resid + torch.addmm(a.b_O, z.reshape(N * Tq, -1), a.W_O.reshape(-1, d)).view(N, Tq, d)
    h = _norm(resid, block.ln2, kind).reshape(N * Tq, d)
    hidden = act(torch.addmm(m.b_in, h, m.W_in))  # (N*Tq, d_mlp)
    if capture is not None:
        capture[f"blocks.{layer}.hook_resid_mid"] = resid[:, -1]
        capture[f"blocks.{layer}.mlp.hook_post"] = hidden.view(N, Tq, -1)[:, -1]
    return resid + torch.addmm(m.b_out, hidden, m.W_out).view(N, Tq, d)


def answer_logits(model: HookedTransformer, tokens: torch.Tensor, capture: dict | None = None) -> torch.Tensor:
    """Logits at the last position, (batch, d_vocab_out), as ``model(tokens)[:, -1]`` but cheaper.

    What it skips is work whose result the loss never reads or that repeats:
    - the first block's input at a position is the token's embedding plus the position's: its
      LayerNorm, Q, K and V are computed once per distinct (position, token) pair (a few hundred rows
      instead of batch x positions), and its attention scores are a table of those pairs' dot
      products, gathered per row;
    - with a causal mask the first T-2 positions (``x op``) depend only on their own tokens: later
      blocks compute them once per distinct prefix and gather;
    - the last block computes K and V at ``y``, and Q, the attention output and the MLP only at
      ``=``, whose logits are all the loss reads.
    ``capture``: a dict that receives every block's ``hook_resid_mid`` and ``mlp.hook_post`` at the
    last position, (batch, width) each, under the HookedTransformer's hook names (for analyses).
    """
    cfg = model.cfg
    kind = cfg.normalization_type
    B, T = tokens.shape
    S = T - 2  # prefix length
    if S < 1:
        if capture is not None:
            raise ValueError("capture needs at least 3 positions")
        return model(tokens)[:, -1]
    H, dh, d, V = cfg.n_heads, cfg.d_head, cfg.d_model, cfg.d_vocab
    Hd = H * dh
    act = _ACTS[cfg.act_fn]
    dev = tokens.device
    # every distinct (position, token) pair: the first block's Q, K and V depend on nothing else
    pairs, tok = torch.unique(tokens + torch.arange(T, device=dev) * V, return_inverse=True)  # (U,), (B, T)
    key = tokens[:, 0]
    for i in range(1, S):  # one integer per prefix: unique over rows without torch.unique(dim=0)
        key = key * V + tokens[:, i]
    keys, inv = torch.unique(key, return_inverse=True)  # (P,), (B,)
    P = len(keys)
    pre_tok = tok.new_empty(P, S)
    pre_tok[inv] = tok[:, :S]  # (P, S): the pair of each prefix position
    emb = _take(model.embed.W_E, pairs % V) + _take(model.pos_embed.W_pos, pairs // V)  # (U, d_model)
    neg = torch.full((T, T), float("-inf"), device=dev).triu(1)[..., None]  # (T, T, 1): additive causal mask
    last = len(model.blocks) - 1
    for layer, block in enumerate(model.blocks):
        a = block.attn
        w, b = _qkv_weights(a, "QKV")  # (d_model, 3*H*d_head)
        if layer == 0:
            q, k, v = torch.addmm(b, _norm(emb, block.ln1, kind), w).view(-1, 3, H, dh).unbind(1)  # (U, H, dh)
            U = len(pairs)
            qk = (torch.bmm(q.transpose(0, 1), k.permute(1, 2, 0)) / a.attn_scale).permute(1, 2, 0).reshape(U * U, H)
            if layer == last:
                z = _mix(_take(qk, tok[:, -1:, None] * U + tok[:, None, :]), _take(v, tok))  # (B, 1, H, dh)
                suf = _block_out(_take(emb, tok[:, -1:]), z, block, kind, act, capture, layer)
                break
            z_p = _mix(_take(qk, pre_tok[:, :, None] * U + pre_tok[:, None, :]) + neg[:S, :S], _take(v, pre_tok))
            z_s = _mix(_take(qk, tok[:, S:, None] * U + tok[:, None, :]) + neg[S:], _take(v, tok))
            pre = _block_out(_take(emb, pre_tok), z_p, block, kind, act)  # (P, S, d_model)
            suf = _block_out(_take(emb, tok[:, S:]), z_s, block, kind, act, capture, layer)  # (B, 2, d_model)
            continue
        hp = _norm(pre, block.ln1, kind).reshape(P * S, d)
        hs = _norm(suf, block.ln1, kind)  # (B, 2, d_model)
        if layer == last:  # prefix and y: K and V only; '=': Q, K and V
            hy, he = hs.unbind(1)
            kp, vp = torch.addmm(b[Hd:], hp, w[:, Hd:]).view(P, S, 2, H, dh).unbind(2)
            ky, vy = torch.addmm(b[Hd:], hy, w[:, Hd:]).view(B, 1, 2, H, dh).unbind(2)
            qe, ke, ve = torch.addmm(b, he, w).view(B, 1, 3, H, dh).unbind(2)
            z = _mix_groups(qe, [(_take(kp, inv), _take(vp, inv)), (ky, vy), (ke, ve)], None, a.attn_scale)
            suf = _block_out(suf[:, 1:], z, block, kind, act, capture, layer)  # (B, 1, d_model)
        else:
            qp, kp, vp = torch.addmm(b, hp, w).view(P, S, 3, H, dh).unbind(2)
            qs, ks, vs = torch.addmm(b, hs.reshape(B * 2, d), w).view(B, 2, 3, H, dh).unbind(2)
            z_p = _mix(_scores(qp, kp, a.attn_scale) + neg[:S, :S], vp)
            z_s = _mix_groups(qs, [(_take(kp, inv), _take(vp, inv)), (ks, vs)], neg[S:], a.attn_scale)
            pre = _block_out(pre, z_p, block, kind, act)
            suf = _block_out(suf, z_s, block, kind, act, capture, layer)
    resid = _norm(suf[:, -1], getattr(model, "ln_final", None), kind)  # (B, d_model)
    return torch.addmm(model.unembed.b_U, resid, model.unembed.W_U)


def answer_flops(cfg, batch: int, prefixes: int | None = None, pairs: int | None = None,
                 attention: bool = True) -> int:
    """FLOPs of one forward+backward of ``answer_logits`` (2 per multiply-add, backward 2x forward) on
    ``batch`` rows, counting its matmuls and (``attention``) the attention contractions it does by
    broadcasting, as it does them.

    ``prefixes``: distinct ``x op`` prefixes (default: min(batch, d_vocab_out)); ``pairs``: distinct
    (position, token) pairs (default: as ``x op y =`` rows, 2 * prefixes + 2)."""
    d, m, H, dh, L, V = cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.d_head, cfg.n_layers, cfg.d_vocab_out
    T, S = N_CTX, N_CTX - 2
    P = min(batch, V) if prefixes is None else prefixes
    U = 2 * P + 2 if pairs is None else pairs
    proj = 3 * d * H * dh  # Q, K, V of one position
    out_mlp = d * H * dh + 2 * d * m  # attention output and MLP of one position
    mix = H * T * dh if attention else 0  # one query's pattern times the values
    per_pos = proj + out_mlp + 2 * mix  # scores and mixing of one query against T keys (an upper bound)
    # first block: Q, K, V of the distinct pairs and their score table; then mixing, output and MLP per position
    first_rows = batch if L == 1 else batch * 2 + P * S
    macs = U * proj + H * U * U * dh + first_rows * (mix + out_mlp)
    macs += max(L - 2, 0) * (batch * 2 + P * S) * per_pos  # middle blocks
    if L > 1:  # last block: K and V of the prefixes and y; Q, K, V, attention, output and MLP at '='
        macs += P * S * 2 * d * H * dh + batch * (2 * d * H * dh + per_pos)
    macs += batch * d * V  # unembed
    return 3 * 2 * macs


def n_params(model: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["HookedTransformer", "build_model", "answer_logits", "answer_flops", "sinusoidal_positions", "N_CTX"]
