"""The training forward: the logits at ``=`` computed cheaply, for one run or K, and ``--compile``.

Everything here is an optimisation of something simpler that the tests compare it against:

- ``answer_logits`` computes exactly what the HookedTransformer computes at the ``=`` position, from
  the model's own parameter tensors (gradients flow into them), but skips the work whose result the
  loss never reads: the last block's query, attention output and MLP at the first three positions,
  and the unembedding of those positions. Tested against ``model(tokens)[:, -1]`` for every model
  option (tests/test_model.py). Hook-based interventions (dropout, analyses) use the
  HookedTransformer forward itself. ``answer_rows``: what it reads off the tokens, made once for
  many forwards of the same tokens (the LLC's full-batch SGLD steps).
- ``batched_answer_logits``: the same forward for K runs at once, from parameters stacked along a
  leading run axis (tests/test_batched_forward.py). It is not a drop-in for K = 1: on the CPU one run
  through it costs about 1.5x ``answer_logits`` (it recomputes the first block per (position, token)
  pair of the whole vocabulary and gathers with a run axis), so a single run keeps its own forward.
- ``compiled_answer_logits`` / ``compiled_mode``: ``answer_logits`` through torch.compile for
  ``--compile``; the dynamo and deterministic-mode settings it needs are set around each compiled
  call and put back after it, never left set.

The update is ``adamw.adamw_``; the process-wide CPU settings are ``cpu.configure_cpu``.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


# =============================================================================================
# The single-run forward
# =============================================================================================
_ACTS = {
    "relu": torch.relu_,  # in place on the matmul's fresh output (addmm keeps its inputs, not its output)
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
    return (q.unsqueeze(-3) * k.unsqueeze(-4)).sum(-1).div_(scale)


def _mix(scores: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """scores (..., Tq, T, H) with the mask already added, v (..., T, H, d_head) -> z (..., Tq, H, d_head)."""
    return (scores.softmax(-2).unsqueeze(-1) * v.unsqueeze(-4)).sum(-3)


def _mix_groups(q: torch.Tensor, groups: list, bias, scale) -> torch.Tensor:
    """Attention of q (..., Tq, H, d_head) over keys and values given in groups [(k, v), ...] of
    (..., T_g, H, d_head) each, in position order, without concatenating them: scores per group, one
    softmax over all of them (``bias``: the additive mask, (Tq, T, 1), or None), then the groups' sum."""
    scores = torch.cat([_scores(q, k, scale) for k, _ in groups], -2)
    if bias is not None:
        scores.add_(bias)
    pattern = scores.softmax(-2).split([k.shape[-3] for k, _ in groups], -2)
    z = None
    for p, (_, v) in zip(pattern, groups):
        part = (p.unsqueeze(-1) * v.unsqueeze(-4)).sum(-3)
        z = part if z is None else z.add_(part)
    return z


def _block_out(resid: torch.Tensor, z: torch.Tensor, block, kind, act, capture=None, layer=0) -> torch.Tensor:
    """resid (N, Tq, d_model) + attention output of z (N, Tq, H, d_head), then + the MLP.

    ``capture`` (a dict): the last position's ``hook_resid_mid``, ``mlp.hook_post`` and ``hook_resid_post``
    go into it under the HookedTransformer's hook names."""
    N, Tq, d = resid.shape
    a, m = block.attn, block.mlp
    # the residual adds go in place into each matmul's fresh output (not a view: autograd would copy)
    attn = torch.addmm(a.b_O, z.reshape(N * Tq, -1), a.W_O.reshape(-1, d))
    resid = attn.add_(resid.reshape(N * Tq, d)).view(N, Tq, d)
    h = _norm(resid, block.ln2, kind).reshape(N * Tq, d)
    hidden = act(torch.addmm(m.b_in, h, m.W_in))  # (N*Tq, d_mlp)
    out = torch.addmm(m.b_out, hidden, m.W_out).add_(resid.reshape(N * Tq, d)).view(N, Tq, d)
    if capture is not None:
        capture[f"blocks.{layer}.hook_resid_mid"] = resid[:, -1]
        capture[f"blocks.{layer}.mlp.hook_post"] = hidden.view(N, Tq, -1)[:, -1]
        capture[f"blocks.{layer}.hook_resid_post"] = out[:, -1]
    return out


class _Rows:
    """What ``answer_logits`` reads off the tokens (B, T) before any weight: the distinct
    (position, token) pairs and the distinct ``x op`` prefixes, and where each row finds its own."""

    def __init__(self, cfg, tokens: torch.Tensor):
        self.kind, self.act = cfg.normalization_type, _ACTS[cfg.act_fn]
        self.H, self.dh, self.d = cfg.n_heads, cfg.d_head, cfg.d_model
        V = cfg.d_vocab
        self.B, T = tokens.shape
        self.S = S = T - 2  # prefix length
        dev = tokens.device
        # every distinct (position, token) pair: the first block's Q, K and V depend on nothing else
        self.pairs, self.tok = torch.unique(tokens + torch.arange(T, device=dev) * V, return_inverse=True)  # (U,), (B, T)
        key = tokens[:, 0]
        for i in range(1, S):  # one integer per prefix: unique over rows without torch.unique(dim=0)
            key = key * V + tokens[:, i]
        keys, self.inv = torch.unique(key, return_inverse=True)  # (P,), (B,)
        self.P = len(keys)
        self.pre_tok = self.tok.new_empty(self.P, S)
        self.pre_tok[self.inv] = self.tok[:, :S]  # (P, S): the pair of each prefix position
        self.neg = torch.full((T, T), float("-inf"), device=dev).triu(1)[..., None]  # (T, T, 1): additive causal mask


def _first_block(r: _Rows, emb: torch.Tensor, block, is_last: bool, capture):
    """Block 0 from the pairs' embeddings emb (U, d_model): its LayerNorm, Q, K and V once per pair, the
    attention scores as a (U*U, H) table of the pairs' dot products, gathered per row.
    Returns (prefix, suffix) residuals: (P, S, d_model) or None when it is the last block, (B, ., d_model)."""
    a, kind, act, tok, pre_tok, S = block.attn, r.kind, r.act, r.tok, r.pre_tok, r.S
    w, b = _qkv_weights(a, "QKV")  # (d_model, 3*H*d_head)
    q, k, v = torch.addmm(b, _norm(emb, block.ln1, kind), w).view(-1, 3, r.H, r.dh).unbind(1)  # (U, H, dh)
    U = len(r.pairs)
    qk = torch.bmm(q.transpose(0, 1), k.permute(1, 2, 0)).div_(a.attn_scale).permute(1, 2, 0).reshape(U * U, r.H)
    if is_last:
        z = _mix(_take(qk, tok[:, -1:, None] * U + tok[:, None, :]), _take(v, tok))  # (B, 1, H, dh)
        return None, _block_out(_take(emb, tok[:, -1:]), z, block, kind, act, capture, 0)
    z_p = _mix(_take(qk, pre_tok[:, :, None] * U + pre_tok[:, None, :]) + r.neg[:S, :S], _take(v, pre_tok))
    z_s = _mix(_take(qk, tok[:, S:, None] * U + tok[:, None, :]) + r.neg[S:], _take(v, tok))
    pre = _block_out(_take(emb, pre_tok), z_p, block, kind, act)  # (P, S, d_model)
    suf = _block_out(_take(emb, tok[:, S:]), z_s, block, kind, act, capture, 0)  # (B, 2, d_model)
    return pre, suf


def _middle_block(r: _Rows, pre: torch.Tensor, suf: torch.Tensor, block, capture, layer: int):
    """A block between the first and the last: the prefixes once each, y and '=' per row."""
    a, kind, P, S, B, H, dh = block.attn, r.kind, r.P, r.S, r.B, r.H, r.dh
    w, b = _qkv_weights(a, "QKV")
    hp = _norm(pre, block.ln1, kind).reshape(P * S, r.d)
    hs = _norm(suf, block.ln1, kind)  # (B, 2, d_model)
    qp, kp, vp = torch.addmm(b, hp, w).view(P, S, 3, H, dh).unbind(2)
    qs, ks, vs = torch.addmm(b, hs.reshape(B * 2, r.d), w).view(B, 2, 3, H, dh).unbind(2)
    z_p = _mix(_scores(qp, kp, a.attn_scale).add_(r.neg[:S, :S]), vp)
    z_s = _mix_groups(qs, [(_take(kp, r.inv), _take(vp, r.inv)), (ks, vs)], r.neg[S:], a.attn_scale)
    return (_block_out(pre, z_p, block, kind, r.act),
            _block_out(suf, z_s, block, kind, r.act, capture, layer))


def _last_block(r: _Rows, pre: torch.Tensor, suf: torch.Tensor, block, capture, layer: int) -> torch.Tensor:
    """The last block (not the first): K and V at the prefixes and y; Q, K and V, the attention output
    and the MLP only at '='. Returns (B, 1, d_model)."""
    a, kind, P, S, B, H, dh = block.attn, r.kind, r.P, r.S, r.B, r.H, r.dh
    Hd = H * dh
    w, b = _qkv_weights(a, "QKV")
    hp = _norm(pre, block.ln1, kind).reshape(P * S, r.d)
    hy, he = _norm(suf, block.ln1, kind).unbind(1)
    kp, vp = torch.addmm(b[Hd:], hp, w[:, Hd:]).view(P, S, 2, H, dh).unbind(2)
    ky, vy = torch.addmm(b[Hd:], hy, w[:, Hd:]).view(B, 1, 2, H, dh).unbind(2)
    qe, ke, ve = torch.addmm(b, he, w).view(B, 1, 3, H, dh).unbind(2)
    z = _mix_groups(qe, [(_take(kp, r.inv), _take(vp, r.inv)), (ky, vy), (ke, ve)], None, a.attn_scale)
    return _block_out(suf[:, 1:], z, block, kind, r.act, capture, layer)


def answer_rows(model, tokens: torch.Tensor) -> _Rows:
    """What ``answer_logits`` reads off ``tokens`` (B, T) before any weight (the distinct pairs and
    prefixes, a few ``torch.unique``): pass it as ``rows=`` to reuse it over many forwards of the same
    tokens (the LLC's SGLD steps)."""
    return _Rows(model.cfg, tokens)


def answer_logits(model, tokens: torch.Tensor, capture: dict | None = None, rows: _Rows | None = None) -> torch.Tensor:
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
    ``capture``: a dict that receives every block's ``hook_resid_mid``, ``mlp.hook_post`` and
    ``hook_resid_post`` at the last position, (batch, width) each, under the HookedTransformer's hook names (for analyses).
    ``rows``: ``answer_rows(model, tokens)`` computed before, for these same tokens.
    """
    if tokens.shape[1] < 3:
        if capture is not None:
            raise ValueError("capture needs at least 3 positions")
        return model(tokens)[:, -1]
    r = _Rows(model.cfg, tokens) if rows is None else rows
    resid = _norm(_last_stream(model, r, capture), getattr(model, "ln_final", None), r.kind)  # (B, d_model)
    return torch.addmm(model.unembed.b_U, resid, model.unembed.W_U)


def answer_activations(model, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """``answer_logits``'s ``capture`` without the logits: every block's ``hook_resid_mid``, ``mlp.hook_post``
    and ``hook_resid_post`` at the last position, (batch, width) each, the same values (it runs the same
    blocks and stops before ``ln_final`` and the unembedding, which analyses of the activations never read)."""
    if tokens.shape[1] < 3:
        raise ValueError("capture needs at least 3 positions")
    capture: dict[str, torch.Tensor] = {}
    _last_stream(model, _Rows(model.cfg, tokens), capture)
    return capture


def _last_stream(model, r: _Rows, capture: dict | None) -> torch.Tensor:
    """The residual stream after the last block at the last position, (B, d_model)."""
    V = model.cfg.d_vocab
    emb = torch.index_select(model.embed.W_E, 0, r.pairs % V)  # (U, d_model)
    emb.add_(torch.index_select(model.pos_embed.W_pos, 0, r.pairs // V))
    last = len(model.blocks) - 1
    pre = suf = None
    for layer, block in enumerate(model.blocks):
        if layer == 0:
            pre, suf = _first_block(r, emb, block, layer == last, capture)
        elif layer == last:
            suf = _last_block(r, pre, suf, block, capture, layer)
        else:
            pre, suf = _middle_block(r, pre, suf, block, capture, layer)
    return suf[:, -1]


def answer_flops(cfg, batch: int, prefixes: int | None = None, pairs: int | None = None,
                 attention: bool = True) -> int:
    """FLOPs of one forward+backward of ``answer_logits`` (2 per multiply-add, backward 2x forward) on
    ``batch`` rows, counting its matmuls and (``attention``) the attention contractions it does by
    broadcasting, as it does them.

    ``prefixes``: distinct ``x op`` prefixes (default: min(batch, d_vocab_out)); ``pairs``: distinct
    (position, token) pairs (default: as ``x op y =`` rows, 2 * prefixes + 2)."""
    from .tasks import N_CTX

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


# =============================================================================================
# The batched forward: K runs, parameters stacked along a leading run axis
# =============================================================================================
def _bnorm(x: torch.Tensor, P: dict, name: str, kind: str | None, eps: float) -> torch.Tensor:
    """LayerNorm / RMSNorm of x (K, ..., d) with per-run weights P[name.w], P[name.b] (K, d)."""
    if kind is None:
        return x
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    w = P[f"{name}.w"].view(shape)
    if kind == "LN":
        return F.layer_norm(x, x.shape[-1:], None, None, eps) * w + P[f"{name}.b"].view(shape)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _bblock_out(resid: torch.Tensor, z: torch.Tensor, P: dict, pfx: str, kind, eps, act) -> torch.Tensor:
    """resid (K, ..., Tq, d) + the attention output of z (K, ..., Tq, H, d_head), then + the MLP."""
    K, d = resid.shape[0], resid.shape[-1]
    R = resid[0].numel() // d
    attn = torch.baddbmm(P[pfx + "attn.b_O"][:, None], z.reshape(K, R, -1), P[pfx + "attn.W_O"].reshape(K, -1, d))
    resid = resid + attn.view(resid.shape)
    h = _bnorm(resid, P, pfx + "ln2", kind, eps).reshape(K, R, d)
    hidden = act(torch.baddbmm(P[pfx + "mlp.b_in"][:, None], h, P[pfx + "mlp.W_in"]))
    return resid + torch.baddbmm(P[pfx + "mlp.b_out"][:, None], hidden, P[pfx + "mlp.W_out"]).view(resid.shape)


def _btake(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table[k, idx[k]] for every run k: table (K, R, ...), idx (K, ...) -> (K, ..., *table.shape[2:]),
    through one index_select (its backward, index_add, is much faster on the CPU than indexing's)."""
    K, R = table.shape[:2]
    flat = (idx + torch.arange(K, device=idx.device).view(K, *[1] * (idx.dim() - 1)) * R).reshape(-1)
    return torch.index_select(table.reshape(K * R, *table.shape[2:]), 0, flat).view(*idx.shape, *table.shape[2:])


def _bqkv(P: dict, pfx: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-run Q, K, V weight (K, d_model, 3*H*d_head) and bias (K, 1, 3*H*d_head), heads side by side."""
    w = torch.cat([P[pfx + f"attn.W_{c}"] for c in "QKV"], 1)  # (K, 3H, d, d_head)
    K, _, d, _ = w.shape
    w = w.permute(0, 2, 1, 3).reshape(K, d, -1)
    b = torch.cat([P[pfx + f"attn.b_{c}"] for c in "QKV"], 1).reshape(K, 1, -1)
    return w, b


def _bembed(P: dict, tokens: torch.Tensor, n: int):
    """The residual stream before block 0: the prefixes ``x op`` of every element, (K, n, 2, d); every
    (position, token) pair's row at y and '=', (K, 2 * d_vocab, d); the rows' pair indices (K, B, 2)."""
    K = tokens.shape[0]
    W_E, W_pos = P["embed.W_E"], P["pos_embed.W_pos"]  # (K, d_vocab, d), (K, n_ctx, d)
    V, d = W_E.shape[1:]
    pre = torch.stack([W_E[:, :n] + W_pos[:, None, 0],
                       (W_E[:, n] + W_pos[:, 1])[:, None].expand(K, n, d)], 2)  # (K, n, 2, d)
    emb_s = (W_E[:, None] + W_pos[:, 2:4, None]).reshape(K, 2 * V, d)
    rows = tokens[:, :, 2:] + torch.arange(2, device=tokens.device) * V
    return pre, emb_s, rows


def batched_answer_logits(P: dict[str, torch.Tensor], tokens: torch.Tensor, cfg, n_prefixes: int,
                          attn_scale: float) -> torch.Tensor:
    """Logits at ``=`` of K runs, (K, B, d_vocab_out), from stacked parameters P[name] (K, *shape).

    tokens: (K, B, 4) rows ``x op y =`` whose op token is ``n_prefixes`` (the number of elements).
    The ``x op`` prefix depends only on x: its activations are computed for every element once and
    gathered; the first block's Q, K and V at ``y`` and ``=`` are computed once per (position, token)
    pair and gathered; the last block computes only what the ``=`` position needs (as ``answer_logits``).
    """
    K, B, T = tokens.shape
    H, dh, d, n = cfg.n_heads, cfg.d_head, cfg.d_model, n_prefixes
    kind, eps, act = cfg.normalization_type, cfg.eps, _ACTS[cfg.act_fn]
    kidx = torch.arange(K, device=tokens.device)[:, None]
    pre, emb_s, rows = _bembed(P, tokens, n)
    suf = _btake(emb_s, rows)  # (K, B, 2, d)
    xi = tokens[:, :, 0]  # (K, B): the prefix of each row
    neg = torch.full((T, T), float("-inf"), device=tokens.device).triu(1)[..., None]  # additive causal mask
    Hd = H * dh
    last = cfg.n_layers - 1
    for layer in range(cfg.n_layers):
        pfx = f"blocks.{layer}."
        w, b = _bqkv(P, pfx)
        hp = _bnorm(pre, P, pfx + "ln1", kind, eps).reshape(K, n * 2, d)
        if layer == 0:  # y and '=': Q, K and V of the pairs' rows, gathered
            qkv_s = _btake(torch.baddbmm(b, _bnorm(emb_s, P, pfx + "ln1", kind, eps), w), rows).view(K, B, 2, 3, H, dh)
        else:
            hs = _bnorm(suf, P, pfx + "ln1", kind, eps)  # (K, B, 2, d)
        if layer == last:  # prefix and y: K and V only; '=': Q, K and V
            kv_p = torch.baddbmm(b[..., Hd:], hp, w[..., Hd:]).view(K, n, 2, 2, H, dh)
            if layer == 0:
                kv_y, qkv_eq = qkv_s[:, :, :1, 1:], qkv_s[:, :, 1:]
            else:
                kv_y = torch.baddbmm(b[..., Hd:], hs[:, :, 0], w[..., Hd:]).view(K, B, 1, 2, H, dh)
                qkv_eq = torch.baddbmm(b, hs[:, :, 1], w).view(K, B, 1, 3, H, dh)
            kv = torch.cat([kv_p[kidx, xi], kv_y, qkv_eq[:, :, :, 1:]], 2)  # (K, B, T, 2, H, d_head)
            z = _mix(_scores(qkv_eq[:, :, :, 0], kv[:, :, :, 0], attn_scale), kv[:, :, :, 1])
            suf = _bblock_out(suf[:, :, 1:], z, P, pfx, kind, eps, act)  # (K, B, 1, d)
        else:
            qkv_p = torch.baddbmm(b, hp, w).view(K, n, 2, 3, H, dh)
            if layer > 0:
                qkv_s = torch.baddbmm(b, hs.reshape(K, B * 2, d), w).view(K, B, 2, 3, H, dh)
            kv = torch.cat([qkv_p[:, :, :, 1:][kidx, xi], qkv_s[:, :, :, 1:]], 2)  # (K, B, T, 2, H, d_head)
            z_p = _mix(_scores(qkv_p[:, :, :, 0], qkv_p[:, :, :, 1], attn_scale) + neg[:2, :2], qkv_p[:, :, :, 2])
            z_s = _mix(_scores(qkv_s[:, :, :, 0], kv[:, :, :, 0], attn_scale) + neg[2:], kv[:, :, :, 1])
            pre = _bblock_out(pre, z_p, P, pfx, kind, eps, act)
            suf = _bblock_out(suf, z_s, P, pfx, kind, eps, act)
    resid = _bnorm(suf[:, :, -1], P, "ln_final", kind, eps)  # (K, B, d)
    return torch.baddbmm(P["unembed.b_U"][:, None], resid, P["unembed.W_U"])


# =============================================================================================
# torch.compile (--compile)
# =============================================================================================
_COMPILED = None


def compiled_answer_logits():
    """``answer_logits`` through torch.compile (inductor), one per process, for ``--compile``. Call it
    (and run the backward) inside ``compiled_mode()``.

    Training with it gives the same function of the weights, computed in another float order: a
    compiled run is reproducible and resumes bit-identically, but it is not bit-identical to an eager
    run of the same config (so the mode is part of the config). ``Trainer.compile_now`` compiles the
    forward and backward before training starts: for the default model on this CPU about 40 s of
    CPU the first time on a machine, about 2 s from inductor's cache on disk (``TORCHINDUCTOR_CACHE_DIR``,
    by default ``/tmp/torchinductor_<user>``). Evaluation stays eager.

    Static shapes (``dynamic=False``): a run's minibatch has one size, so one graph serves every
    step; the sizes ``torch.unique`` returns stay symbolic. Dynamic shapes made dynamo trace the
    forward twice (a restart on a symbolic float) and missed AOTAutograd's cache on the first trace:
    about 12 s from a warm cache instead of 2. Another batch size in the same process compiles again."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(answer_logits, dynamic=False)
    return _COMPILED


@contextlib.contextmanager
def compiled_mode():
    """Around a compiled forward and its backward, put back as they were afterwards:

    - dynamo's ``capture_dynamic_output_shape_ops`` (the sizes ``torch.unique`` returns are traced
      instead of breaking the graph);
    - torch's deterministic mode (warn only), so that inductor lowers the gathers' backward
      (scatter-adds) to ATen's deterministic kernels instead of atomic adds, whose order varies between
      threads (runs would not repeat bit for bit otherwise). Dynamo guards on the flag, so it is on for
      every compiled call."""
    import torch._dynamo

    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was, warn_only=warn_only)


def inductor_cache_dir() -> str:
    """Where inductor keeps its compiled graphs and kernels between processes, which makes a later
    ``--compile`` start in seconds: ``TORCHINDUCTOR_CACHE_DIR``, by default ``/tmp/torchinductor_<user>``."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return cache_dir()


def compile_failed(e: Exception):
    """The one-line error for a torch.compile failure (no C++ compiler, an unsupported torch, ...)."""
    from .errors import GrokscopeError

    first = (str(e).strip().splitlines() or [""])[0][:200]
    return GrokscopeError(f"compile: torch.compile failed ({type(e).__name__}: {first}); train without --compile")


__all__ = ["answer_logits", "answer_rows", "answer_flops", "batched_answer_logits", "compiled_answer_logits", "compiled_mode",
           "inductor_cache_dir"]
