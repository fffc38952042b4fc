"""Batched training: K runs of one model shape trained together, as one batched model, in one process.

The K HookedTransformers are built as ``train`` builds them (each from its own seed), then every
trainable parameter is stacked along a leading run axis into one flat ``(K, n_params)`` buffer; each
named parameter is a view of it. The forward is ``model.answer_logits`` with a run axis in front (one
``baddbmm`` per projection for all K runs), the loss is the sum over runs of each run's mean
answer-token cross-entropy (so run k's gradient is exactly its own), and AdamW is written out on the
flat buffer with per-run learning rate, weight decay (towards the origin or the initialisation),
betas and warm-up. Each run keeps its own ``torch.Generator`` seeded as ``Trainer`` seeds it, and draws
from it in the same order (minibatch permutation, then update noise), so a batched run follows the
same trajectory as the run trained alone, up to floating-point reassociation.

What may differ inside one batch: everything in the task (operation, p, fraction, split seed,
outliers) as long as the number of elements is the same, and the optimiser (lr, weight decay and its
target, betas, warm-up, batch size, full batch, update noise, Grokfast, seed). What must be shared:
the model shape and options, the budget, the schedule, the device, the loss dtype and the softmax
(softmax or StableMax; ``batch_key``). Runs with residual dropout or weight noise use hooks on the
HookedTransformer forward and train alone; so do runs with ⊥Grad or Grokfast's MA filter (not written
for the flat buffer).

Each run writes its own run directory through ``train.RunWriter``, in exactly the format (and resume
state) of a run trained alone: ``grokscope train --resume`` continues a batched run, and vice versa.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import RunConfig
from .errors import GrokscopeError, TrainingInterrupted
from .model import _ACTS, _mix, _scores, build_model
from .run import STATE_FILE, Run, load_weights, read_metadata
from .provenance import record_session
from .tasks import Dataset
from .train import (LOSS_DTYPES, Prepared, RunWriter, _fmt_bytes, answer_loss, batch_size, collapsed, disk_estimate,
                    fit, lr_scale, pick_device, prepare, restoring_cpu_settings)

ADAM_EPS = 1e-8  # torch.optim.AdamW's default, as Trainer uses
EVAL_ROWS = 32768  # rows (all runs together) per evaluation chunk


def batch_key(cfg: RunConfig, n_elements: int) -> tuple | None:
    """Runs with equal keys can train in one batch; None: this run trains alone."""
    tr = cfg.train
    if tr.resid_dropout > 0 or tr.weight_noise > 0 or tr.compile or tr.orthograd:
        return None
    if tr.grokfast_lambda > 0 and tr.grokfast_filter != "ema":
        return None
    m, s = cfg.model, cfg.schedule
    return (n_elements, tuple(vars(m).items()), tr.steps, tuple(vars(s).items()), tr.device, tr.loss_dtype,
            tr.softmax)


# --- the batched forward ------------------------------------------------------------------------------
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
    W_E, W_pos = P["embed.W_E"], P["pos_embed.W_pos"]  # (K, d_vocab, d), (K, n_ctx, d)
    V = W_E.shape[1]
    pre = torch.stack([W_E[:, :n] + W_pos[:, None, 0],
                       (W_E[:, n] + W_pos[:, 1])[:, None].expand(K, n, d)], 2)  # (K, n, 2, d)
    # the first block's input at y and '=' is a token's embedding plus the position's: every
    # (position, token) pair's row once, (K, 2 * d_vocab, d), and the rows' pair indices (K, B, 2)
    emb_s = (W_E[:, None] + W_pos[:, 2:4, None]).reshape(K, 2 * V, d)
    rows = tokens[:, :, 2:] + torch.arange(2, device=tokens.device) * V
    suf = _btake(emb_s, rows)  # (K, B, 2, d)
    xi = tokens[:, :, 0]  # (K, B): the prefix of each row
    neg = torch.full((T, T), float("-inf"), device=tokens.device).triu(1)[..., None]  # additive causal mask
    Hd = H * dh
    last = cfg.n_layers - 1
    for layer in range(cfg.n_layers):
        pfx = f"blocks.{layer}."
        w = torch.cat([P[pfx + f"attn.W_{c}"] for c in "QKV"], 1)  # (K, 3H, d, d_head)
        w = w.permute(0, 2, 1, 3).reshape(K, d, 3 * Hd)
        b = torch.cat([P[pfx + f"attn.b_{c}"] for c in "QKV"], 1).reshape(K, 1, 3 * Hd)
        hp = _bnorm(pre, P, pfx + "ln1", kind, eps).reshape(K, n * 2, d)
        if layer == 0:  # y and '=': Q, K and V of the pairs' rows, gathered
            qkv_t = torch.baddbmm(b, _bnorm(emb_s, P, pfx + "ln1", kind, eps), w)  # (K, 2 * d_vocab, 3 * Hd)
            qkv_s = _btake(qkv_t, rows).view(K, B, 2, 3, H, dh)
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


def _pad(rows: list[torch.Tensor], fill: int = 0) -> torch.Tensor:
    """Stack tensors of different lengths along a new first axis, padding the second with ``fill``."""
    n = max(len(r) for r in rows)
    out = rows[0].new_full((len(rows), n) + tuple(rows[0].shape[1:]), fill)
    for k, r in enumerate(rows):
        out[k, :len(r)] = r
    return out


def _col(values, device) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)[:, None]  # (K, 1)


# --- the trainer ---------------------------------------------------------------------------------------
class BatchedTrainer:
    """K runs in one batched model; ``step()`` does one update of all of them (the ``fit`` interface)."""

    def __init__(self, cfgs: list[RunConfig], datas: list[Dataset], device: torch.device):
        keys = {batch_key(c, d.n_elements) for c, d in zip(cfgs, datas)}
        if None in keys or len(keys) != 1:
            raise GrokscopeError("these runs cannot train in one batch (different model, budget, schedule, "
                                 "number of elements, device, loss dtype or softmax, or dropout / weight noise / ⊥Grad / Grokfast-MA)")
        self.cfgs, self.datas, self.device, K = cfgs, datas, device, len(cfgs)
        self.K = K
        self.loss_dtype = LOSS_DTYPES[cfgs[0].train.loss_dtype]  # one per batch (batch_key)
        self.softmax = cfgs[0].train.softmax  # one per batch (batch_key)
        models = [build_model(c.model, d.d_vocab, d.n_elements, seed=c.train.seed, device=device)
                  for c, d in zip(cfgs, datas)]
        self.template = models[0]
        self.hcfg = self.template.cfg
        self.attn_scale = float(self.template.blocks[0].attn.attn_scale)
        self.n = datas[0].n_elements
        named = [dict(m.named_parameters()) for m in models]
        self.shapes = {n: tuple(p.shape) for n, p in named[0].items()}
        self.train_names = [n for n, p in named[0].items() if p.requires_grad]
        self.frozen_names = [n for n, p in named[0].items() if not p.requires_grad]
        self.where: dict[str, tuple[bool, int, int]] = {}  # name -> (trainable, offset, numel)
        for trainable, names in ((True, self.train_names), (False, self.frozen_names)):
            off = 0
            for n in names:
                numel = math.prod(self.shapes[n])
                self.where[n] = (trainable, off, numel)
                off += numel

        def flat(names):
            if not names:
                return torch.zeros(K, 0, device=device)
            return torch.stack([torch.cat([nm[n].detach().reshape(-1) for n in names]) for nm in named])

        self.flat = flat(self.train_names).requires_grad_(True)  # (K, n_trainable)
        self.frozen = flat(self.frozen_names)  # (K, n_frozen): fixed positions, zero biases
        trs = [c.train for c in cfgs]
        self.lr0 = [t.lr for t in trs]
        self.warmups = [t.warmup for t in trs]
        self.wd_origin = _col([t.weight_decay if t.wd_target == "origin" else 0.0 for t in trs], device)
        self.wd_init = _col([t.weight_decay if t.wd_target == "init" else 0.0 for t in trs], device)
        self.beta1, self.beta2 = _col([t.beta1 for t in trs], device), _col([t.beta2 for t in trs], device)
        self.update_noise = [t.update_noise for t in trs]
        self.gf_on = [t.grokfast_lambda > 0 for t in trs]
        self.gf_alpha = _col([t.grokfast_alpha for t in trs], device)
        self.gf_lambda = _col([t.grokfast_lambda for t in trs], device)
        self.init = self.flat.detach().clone() if any(t.wd_target == "init" for t in trs) else None
        self.exp_avg = torch.zeros_like(self.flat, requires_grad=False)
        self.exp_avg_sq = torch.zeros_like(self.exp_avg)
        self.ema: torch.Tensor | None = None
        self.adam_steps = 0
        self.step_count = 0
        self.gens = [torch.Generator(device=device).manual_seed(t.seed + 1) for t in trs]
        # training sets, padded to the longest; each run's loss weights its own B_k rows by 1/B_k
        self.n_train = [len(d.train_idx) for d in datas]
        self.batch = [batch_size(c, n) for c, n in zip(cfgs, self.n_train)]
        self.train_tok = _pad([d.train_x for d in datas]).to(device)  # (K, N_max, 4)
        self.train_lab = _pad([d.train_y for d in datas]).to(device)  # (K, N_max)
        B = max(self.batch)
        self.idx = torch.zeros(K, B, dtype=torch.long, device=device)
        self.row_w = torch.zeros(K, B, device=device)
        for k, (b, n) in enumerate(zip(self.batch, self.n_train)):
            self.row_w[k, :b] = 1.0 / b
            if b == n:
                self.idx[k, :n] = torch.arange(n, device=device)
        self.kidx = torch.arange(K, device=device)[:, None]
        # evaluation: every equation of each run, labelled as training sees it (outliers included)
        labels = []
        for d in datas:
            lab = d.all_y.clone()
            lab[d.train_idx] = d.train_y
            labels.append(lab)
        self.all_tok = _pad([d.all_x for d in datas]).to(device)  # (K, R_max, 4)
        self.all_lab = _pad(labels).to(device)
        self.train_mask = _pad([_mask(len(d.all_y), d.train_idx) for d in datas]).to(device)
        self.val_mask = _pad([_mask(len(d.all_y), d.val_idx) for d in datas]).to(device)

    # --- parameters ---
    def params(self, detach: bool = False) -> dict[str, torch.Tensor]:
        """name -> (K, *shape) view of the flat buffers."""
        flat = self.flat.detach() if detach else self.flat
        out = {}
        for n, (trainable, off, numel) in self.where.items():
            src = flat if trainable else self.frozen
            out[n] = src[:, off:off + numel].view(self.K, *self.shapes[n])
        return out

    def logits(self, tokens: torch.Tensor, detach: bool = False) -> torch.Tensor:
        return batched_answer_logits(self.params(detach), tokens, self.hcfg, self.n, self.attn_scale)

    def _lr_now(self) -> torch.Tensor:
        return _col([lr * lr_scale(self.step_count, w) for lr, w in zip(self.lr0, self.warmups)], self.device)

    def step(self) -> None:
        K = self.K
        for k in range(K):
            if self.batch[k] < self.n_train[k]:
                self.idx[k, :self.batch[k]] = torch.randperm(self.n_train[k], generator=self.gens[k],
                                                             device=self.device)[:self.batch[k]]
        x = self.train_tok[self.kidx, self.idx]  # (K, B, 4)
        y = self.train_lab[self.kidx, self.idx]  # (K, B)
        logits = self.logits(x)
        ce = answer_loss(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), self.loss_dtype, "none",
                         self.softmax).view(K, -1)
        loss = (ce * self.row_w).sum()
        self.flat.grad = None
        loss.backward()
        lr = self._lr_now()
        with torch.no_grad():
            g, p = self.flat.grad, self.flat
            if any(self.gf_on):
                if self.ema is None:
                    self.ema = g.clone()
                else:
                    self.ema.lerp_(g, 1.0 - self.gf_alpha)
                g.add_(self.ema * self.gf_lambda)
            if self.init is not None:
                p.sub_((p - self.init) * (lr * self.wd_init))
            p.mul_(1.0 - lr * self.wd_origin)
            self.adam_steps += 1
            t = self.adam_steps
            self.exp_avg.lerp_(g, 1.0 - self.beta1)
            self.exp_avg_sq.mul_(self.beta2).add_(g * g * (1.0 - self.beta2))
            bc1, bc2 = 1.0 - self.beta1 ** t, 1.0 - self.beta2 ** t
            denom = (self.exp_avg_sq.sqrt() / bc2.sqrt()).add_(ADAM_EPS)
            p.sub_(self.exp_avg / denom * (lr / bc1))
            for k, s in enumerate(self.update_noise):
                if s > 0:
                    scale = float(lr[k]) * s
                    for n in self.train_names:
                        _, off, numel = self.where[n]
                        noise = torch.randn(self.shapes[n], generator=self.gens[k], device=self.device)
                        p[k, off:off + numel].add_(noise.reshape(-1), alpha=scale)
        self.step_count += 1

    # --- the interface fit() drives ---
    def eval_mode(self, on: bool) -> None:
        pass  # no dropout in a batch

    @torch.no_grad()
    def evaluate(self) -> list[tuple[float, float, float, float, float]]:
        K, R = self.all_tok.shape[:2]
        sums = torch.zeros(5, K, dtype=torch.float64, device=self.device)  # train loss, acc, val loss, acc, collapse
        chunk = max(1, EVAL_ROWS // K)
        for i in range(0, R, chunk):
            tok, lab = self.all_tok[:, i:i + chunk], self.all_lab[:, i:i + chunk]
            logits = self.logits(tok, detach=True).float()
            ce = answer_loss(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1), self.loss_dtype, "none", self.softmax)
            ce = ce.view(K, -1).double()
            hit = (logits.argmax(-1) == lab).double()
            gone = collapsed(logits, lab, self.softmax).double()
            tm, vm = self.train_mask[:, i:i + chunk], self.val_mask[:, i:i + chunk]
            sums[0] += (ce * tm).sum(1)
            sums[1] += (hit * tm).sum(1)
            sums[2] += (ce * vm).sum(1)
            sums[3] += (hit * vm).sum(1)
            sums[4] += (gone * tm).sum(1)
        n_tr = self.train_mask.sum(1).double()
        n_va = self.val_mask.sum(1).double().clamp(min=1)
        out = torch.stack([sums[0] / n_tr, sums[1] / n_tr, sums[2] / n_va, sums[3] / n_va, sums[4] / n_tr], 1).cpu()
        return [tuple(float(v) for v in row) for row in out]

    def lrs(self, step: int) -> list[float]:
        return [lr * lr_scale(step, w) for lr, w in zip(self.lr0, self.warmups)]

    def weight_norms(self) -> list[float]:
        with torch.no_grad():
            sq = self.flat.detach().double().pow(2).sum(1) + self.frozen.double().pow(2).sum(1)
        return [math.sqrt(float(v)) for v in sq]

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Run k's weights under the HookedTransformer's state-dict names (buffers from the template)."""
        P = self.params(detach=True)
        return {name: (P[name][k].clone() if name in P else v) for name, v in self.template.state_dict().items()}

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        return [self.state_dict(k) for k in range(self.K)]

    def resume_state(self, k: int) -> dict[str, torch.Tensor]:
        """Run k's resume state, in ``Trainer.state_tensors``'s format."""
        out = {f"model.{n}": v for n, v in self.state_dict(k).items()}
        ema_on = self.ema is not None and self.gf_on[k]
        for n in self.train_names:
            _, off, numel = self.where[n]
            sl = slice(off, off + numel)
            if self.adam_steps > 0:
                out[f"opt.{n}.exp_avg"] = self.exp_avg[k, sl].view(self.shapes[n]).clone()
                out[f"opt.{n}.exp_avg_sq"] = self.exp_avg_sq[k, sl].view(self.shapes[n]).clone()
                out[f"opt.{n}.step"] = torch.tensor(float(self.adam_steps))
            if ema_on:
                out[f"grokfast.{n}"] = self.ema[k, sl].view(self.shapes[n]).clone()
            if self.cfgs[k].train.wd_target == "init":
                out[f"init.{n}"] = self.init[k, sl].view(self.shapes[n]).clone()
        out["rng"] = self.gens[k].get_state()
        return out

    def resume_states(self) -> list[dict[str, torch.Tensor]]:
        return [self.resume_state(k) for k in range(self.K)]

    def load_resume_state(self, k: int, t: dict[str, torch.Tensor], step: int, what: str) -> None:
        load_weights(self.template, {n[6:]: v for n, v in t.items() if n.startswith("model.")}, what)
        steps = {float(v) for n, v in t.items() if n.startswith("opt.") and n.endswith(".step")}
        if len(steps) > 1 or (self.adam_steps and steps and steps != {float(self.adam_steps)}):
            raise GrokscopeError(f"{what}: optimiser steps differ from the rest of the batch")
        with torch.no_grad():
            for n, (trainable, off, numel) in self.where.items():
                dst = self.flat if trainable else self.frozen
                dst.data[k, off:off + numel] = t[f"model.{n}"].reshape(-1).to(self.device)
                if not trainable:
                    continue
                if f"opt.{n}.exp_avg" in t:
                    self.exp_avg[k, off:off + numel] = t[f"opt.{n}.exp_avg"].reshape(-1).to(self.device)
                    self.exp_avg_sq[k, off:off + numel] = t[f"opt.{n}.exp_avg_sq"].reshape(-1).to(self.device)
                if f"grokfast.{n}" in t:
                    if self.ema is None:
                        self.ema = torch.zeros_like(self.exp_avg)
                    self.ema[k, off:off + numel] = t[f"grokfast.{n}"].reshape(-1).to(self.device)
                if self.init is not None and f"init.{n}" in t:
                    self.init[k, off:off + numel] = t[f"init.{n}"].reshape(-1).to(self.device)
        self.adam_steps = int(steps.pop()) if steps else 0
        self.gens[k].set_state(t["rng"])
        self.step_count = step


def _mask(n: int, idx: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[idx] = True
    return m


# --- the entry point -----------------------------------------------------------------------------------
@restoring_cpu_settings  # subnormal floats flushed for the duration; the caller's process as it was afterwards
def train_batched(preps: list[Prepared], *, progress: bool = True, log=print, desc: str = "") -> list[Run]:
    """Train prepared runs (``train.prepare``; new or resumed, all at one start step) as one batch."""
    if not preps:
        return []
    starts = {p.start for p in preps}
    if len(starts) != 1:
        raise GrokscopeError(f"runs resumed at different steps ({sorted(starts)}) cannot share a batch")
    device = pick_device(preps[0].cfg.train.device)
    trainer = BatchedTrainer([p.cfg for p in preps], [p.data for p in preps], device)
    for k, p in enumerate(preps):
        if p.state is not None:
            trainer.load_resume_state(k, p.state, p.start, f"resume state {p.run_dir / STATE_FILE}")
    writers = [RunWriter(p) for p in preps]
    for p in preps:
        record_session(p.run_dir, p.cfg, device, p.start)  # provenance.json: versions, machine, precision
    per, total = disk_estimate(trainer.template, writers[0].remaining_ckpts() * len(preps))
    cfg = preps[0].cfg
    log(f"grokscope: a batch of {len(preps)} runs on {device} ({cfg.task.op} ... {preps[-1].cfg.task.op}, "
        f"{trainer.n} elements), steps {preps[0].start}->{cfg.train.steps}; "
        f"{writers[0].remaining_ckpts()} checkpoints each, {_fmt_bytes(total)} on disk in all")
    interrupted = fit(trainer, writers, progress=progress, log=log, desc=desc or f"{len(preps)} runs")
    runs = [Run(p.run_dir) for p in preps]
    for r in runs:
        r.interrupted = interrupted
    return runs


def train_many(configs: list[RunConfig], outs: list[str | Path], *, progress: bool = True, log=print) -> list[Run]:
    """Train new runs ``configs[i]`` into ``outs[i]`` as one batch (they must share ``batch_key``).
    Ctrl-C saves every run, then raises ``TrainingInterrupted`` (as ``grokscope.train``)."""
    if len(configs) != len(outs):
        raise GrokscopeError("one output folder per config")
    runs = train_batched([prepare(c, o) for c, o in zip(configs, outs)], progress=progress, log=log)
    if runs and runs[0].interrupted:  # saved: as grokscope.train, stop the caller (a notebook's "Run all")
        raise TrainingInterrupted(runs, int(read_metadata(runs[0].path / STATE_FILE).get("step", "0")))
    return runs


__all__ = ["BatchedTrainer", "batched_answer_logits", "batch_key", "train_batched", "train_many"]
