"""Batched training: K runs of one model shape trained together, as one batched model, in one process.

The K HookedTransformers are built as ``train`` builds them (each from its own seed), then every
trainable parameter is stacked along a leading run axis into one flat ``(K, n_params)`` buffer; each
named parameter is a view of it. The forward is ``forward.batched_answer_logits`` (``answer_logits``
with a run axis in front: one ``baddbmm`` per projection for all K runs), the loss is the sum over
runs of each run's mean answer-token cross-entropy (so run k's gradient is exactly its own), and the
update is ``train.Stepper.step``, the one a single run takes: the same Grokfast-EMA, weight decay
(towards the origin or the initialisation) and AdamW (``adamw.adamw_``, written out) on the flat
buffer, with per-run learning rate, weight decay, betas and warm-up as (K, 1) columns. Each run keeps its own ``torch.Generator`` seeded as ``Trainer`` seeds it, and draws
from it in the same order (minibatch permutation, then update noise), so a batched run follows the
same trajectory as the run trained alone, up to floating-point reassociation.

What may differ inside one batch: everything in the task (operation, p, fraction, split seed,
outliers) as long as the number of elements is the same, and the optimiser (lr, weight decay and its
target, betas, warm-up, batch size, full batch, update noise, Grokfast, seed). What must be shared:
the model shape and options, the budget, the schedule, the device, the loss dtype and the softmax
(softmax or StableMax; ``batch_key``). Runs with residual dropout or weight noise use hooks on the
HookedTransformer forward and train alone; so do runs with ⊥Grad or Grokfast's MA filter (not written
for the flat buffer).

Each run writes its own run directory through ``run.RunWriter``, in exactly the format (and resume
state) of a run trained alone: ``grokscope train --resume`` continues a batched run, and vice versa.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .config import RunConfig, batch_size
from .errors import GrokscopeError, TrainingInterrupted
from .forward import batched_answer_logits
from .cpu import restoring_cpu_settings
from .files import fmt_bytes
from .loss import LOSS_DTYPES, answer_loss, collapsed
from .model import build_model, weight_norm
from .provenance import record_session
from .resume import read_state_step, resume_parts, resume_tensors
from .run import STATE_FILE, Prepared, Run, RunWriter, disk_estimate, prepare
from .tasks import Dataset
from .train import AdamW, Stepper, add_noise_, check_forecast, fit, lr_scale, pick_device
from .weights import load_weights

EVAL_ROWS = 32768  # rows (all runs together) per evaluation chunk


def batch_key(cfg: RunConfig, n_elements: int) -> tuple | None:
    """Runs with equal keys can train in one batch; None: this run trains alone."""
    tr = cfg.train
    if tr.resid_dropout > 0 or tr.weight_noise > 0 or tr.compile or tr.orthograd:
        return None
    if tr.grokfast_lambda > 0 and tr.grokfast_filter != "ema" or tr.wd_mode == "l2" and tr.weight_decay > 0:
        return None
    m, s = cfg.model, cfg.schedule
    return (n_elements, tuple(vars(m).items()), tr.steps, tuple(vars(s).items()), tr.device, tr.loss_dtype,
            tr.softmax, tr.adam_eps)


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
class BatchedTrainer(Stepper):
    """K runs in one batched model; ``step()`` (``train.Stepper``'s, the one a single run takes) does one
    update of all of them, with per-run settings as (K, 1) columns on the flat buffer (the ``fit``
    interface)."""

    def __init__(self, cfgs: list[RunConfig], datas: list[Dataset], device: torch.device):
        keys = {batch_key(c, d.n_elements) for c, d in zip(cfgs, datas)}
        if None in keys or len(keys) != 1:
            raise GrokscopeError("these runs cannot train in one batch (different model, budget, schedule, "
                                 "number of elements, device, loss dtype or softmax, or dropout / weight noise / ⊥Grad / Grokfast-MA)")
        self.cfgs, self.datas, self.device, self.K = cfgs, datas, device, len(cfgs)
        self.loss_dtype = LOSS_DTYPES[cfgs[0].train.loss_dtype]  # one per batch (batch_key)
        self.softmax = cfgs[0].train.softmax  # one per batch (batch_key)
        self.n = datas[0].n_elements
        self._stack_models([build_model(c.model, d.d_vocab, d.n_elements, seed=c.train.seed, device=device)
                            for c, d in zip(cfgs, datas)])
        self._per_run_settings([c.train for c in cfgs])
        self._training_rows(cfgs, datas)
        self._evaluation_rows(datas)

    def _stack_models(self, models) -> None:
        """Every parameter of the K models, flattened, side by side: trainable ones in ``flat`` (K, n),
        fixed ones (sinusoidal positions, zero biases) in ``frozen``; ``where[name]``: (trainable, offset, numel)."""
        K, device = self.K, self.device
        self.template = models[0]
        self.hcfg = self.template.cfg
        self.attn_scale = float(self.template.blocks[0].attn.attn_scale)
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
        self.params = [self.flat]  # what Stepper.step updates

    def _per_run_settings(self, trs) -> None:
        """The optimiser's settings as (K, 1) columns, each run's generator, its AdamW state."""
        device = self.device
        self.lr0 = [t.lr for t in trs]
        self.warmups = [t.warmup for t in trs]
        self.wd_origin = _col([t.weight_decay if t.wd_target == "origin" else 0.0 for t in trs], device)
        self.wd_init = _col([t.weight_decay if t.wd_target == "init" else 0.0 for t in trs], device)
        self.decays_to_init = True
        self.beta1, self.beta2 = _col([t.beta1 for t in trs], device), _col([t.beta2 for t in trs], device)
        self.update_noise = [t.update_noise for t in trs]
        self.gf_on = [t.grokfast_lambda > 0 for t in trs]
        self.grokfast_on = any(self.gf_on)
        self.gf_alpha = _col([t.grokfast_alpha for t in trs], device)
        self.gf_lambda = _col([t.grokfast_lambda for t in trs], device)
        self.init = [self.flat.detach().clone()] if any(t.wd_target == "init" for t in trs) else None
        self.adam = AdamW([self.flat], self.beta1, self.beta2, self.wd_origin, trs[0].adam_eps)  # one per batch (batch_key)
        self.ema: list[torch.Tensor] | None = None
        self.step_count = 0
        self.gens = [torch.Generator(device=device).manual_seed(t.seed + 1) for t in trs]

    def _training_rows(self, cfgs, datas) -> None:
        """Training sets, padded to the longest; each run's loss weights its own B_k rows by 1/B_k."""
        K, device = self.K, self.device
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

    def _evaluation_rows(self, datas) -> None:
        """Every equation of each run, labelled as training sees it (outliers included)."""
        labels = []
        for d in datas:
            lab = d.all_y.clone()
            lab[d.train_idx] = d.train_y
            labels.append(lab)
        self.all_tok = _pad([d.all_x for d in datas]).to(self.device)  # (K, R_max, 4)
        self.all_lab = _pad(labels).to(self.device)
        self.train_mask = _pad([_mask(len(d.all_y), d.train_idx) for d in datas]).to(self.device)
        self.val_mask = _pad([_mask(len(d.all_y), d.val_idx) for d in datas]).to(self.device)

    @property
    def exp_avg(self) -> torch.Tensor:
        return self.adam.exp_avg[0]  # (K, n_trainable)

    @property
    def exp_avg_sq(self) -> torch.Tensor:
        return self.adam.exp_avg_sq[0]

    @property
    def adam_steps(self) -> int:
        return self.adam.n_steps

    # --- parameters ---
    def params_by_name(self, detach: bool = False) -> dict[str, torch.Tensor]:
        """name -> (K, *shape) view of the flat buffers."""
        flat = self.flat.detach() if detach else self.flat
        out = {}
        for n, (trainable, off, numel) in self.where.items():
            src = flat if trainable else self.frozen
            out[n] = src[:, off:off + numel].view(self.K, *self.shapes[n])
        return out

    def run_views(self, k: int) -> list[torch.Tensor]:
        """Run k's trainable tensors, in training order, as views of its row of the flat buffer."""
        return [self.flat[k, off:off + numel].view(self.shapes[n])
                for n in self.train_names for _, off, numel in [self.where[n]]]

    def logits(self, tokens: torch.Tensor, detach: bool = False) -> torch.Tensor:
        return batched_answer_logits(self.params_by_name(detach), tokens, self.hcfg, self.n, self.attn_scale)

    # --- what Stepper.step asks of K runs ---
    def lr_now(self) -> torch.Tensor:
        return _col([lr * lr_scale(self.step_count, w) for lr, w in zip(self.lr0, self.warmups)], self.device)

    _lr_now = lr_now

    def minibatch(self) -> tuple[torch.Tensor, torch.Tensor]:
        for k in range(self.K):
            if self.batch[k] < self.n_train[k]:
                self.idx[k, :self.batch[k]] = torch.randperm(self.n_train[k], generator=self.gens[k],
                                                             device=self.device)[:self.batch[k]]
        return self.train_tok[self.kidx, self.idx], self.train_lab[self.kidx, self.idx]  # (K, B, 4), (K, B)

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        logits = self.logits(x)
        ce = answer_loss(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), self.loss_dtype, "none",
                         self.softmax).view(self.K, -1)
        (ce * self.row_w).sum().backward()  # the sum of each run's mean: run k's gradient is its own

    def add_update_noise(self, lr: torch.Tensor) -> None:
        for k, s in enumerate(self.update_noise):
            if s > 0:
                add_noise_([v.detach() for v in self.run_views(k)], self.gens[k], float(lr[k]) * s)

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
        return [weight_norm((self.flat[k], self.frozen[k])) for k in range(self.K)]

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Run k's weights under the HookedTransformer's state-dict names (buffers from the template)."""
        P = self.params_by_name(detach=True)
        return {name: (P[name][k].clone() if name in P else v) for name, v in self.template.state_dict().items()}

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        return [self.state_dict(k) for k in range(self.K)]

    @torch.no_grad()
    def model_of(self, k: int):
        """Run k as a HookedTransformer (read-only use, until the next call: its live forecast): the
        template model, which training does not read, with run k's weights copied in."""
        self.template.load_state_dict(self.state_dict(k))
        return self.template

    def _row(self, buf: torch.Tensor, k: int) -> list[torch.Tensor]:
        """Run k's row of a (K, n_trainable) buffer as one tensor per trained parameter (copies)."""
        return [buf[k, off:off + numel].view(self.shapes[n]).clone()
                for n in self.train_names for _, off, numel in [self.where[n]]]

    def resume_state(self, k: int) -> dict[str, torch.Tensor]:
        """Run k's resume state, in the format of a run trained alone (``train.resume_tensors``)."""
        n = len(self.train_names)
        adam = None
        if self.adam_steps > 0:
            adam = ([torch.tensor(float(self.adam_steps)) for _ in range(n)], self._row(self.exp_avg, k),
                    self._row(self.exp_avg_sq, k))
        return resume_tensors(self.state_dict(k), self.train_names, self.gens[k].get_state(), adam=adam,
                              ema=self._row(self.ema[0], k) if self.ema is not None and self.gf_on[k] else None,
                              init=self._row(self.init[0], k) if self.cfgs[k].train.wd_target == "init" else None)

    def resume_states(self) -> list[dict[str, torch.Tensor]]:
        return [self.resume_state(k) for k in range(self.K)]

    def load_resume_state(self, k: int, t: dict[str, torch.Tensor], step: int, what: str) -> None:
        parts = resume_parts(t, self.train_names)
        load_weights(self.template, parts["weights"], what)
        steps = {float(v) for v in parts["step"] or () if v is not None}
        if len(steps) > 1 or (self.adam_steps and steps and steps != {float(self.adam_steps)}):
            raise GrokscopeError(f"{what}: optimiser steps differ from the rest of the batch")
        with torch.no_grad():
            for n, (trainable, off, numel) in self.where.items():
                dst = self.flat if trainable else self.frozen
                dst.data[k, off:off + numel] = parts["weights"][n].reshape(-1).to(self.device)
            if parts["grokfast"] is not None and self.ema is None:
                self.ema = [torch.zeros_like(self.exp_avg)]
            for buf, part in ((self.exp_avg, "exp_avg"), (self.exp_avg_sq, "exp_avg_sq"),
                              (self.ema[0] if self.ema else None, "grokfast"), (self.init[0] if self.init else None, "init")):
                for n, v in zip(self.train_names, parts[part] or ()):
                    if buf is not None and v is not None:
                        _, off, numel = self.where[n]
                        buf[k, off:off + numel] = v.reshape(-1).to(self.device)
        self.adam.steps[0].fill_(int(steps.pop()) if steps else 0)
        self.gens[k].set_state(parts["rng"])
        self.step_count = step


def _mask(n: int, idx: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[idx] = True
    return m


# --- the entry point -----------------------------------------------------------------------------------
@restoring_cpu_settings  # subnormal floats flushed for the duration; the caller's process as it was afterwards
def train_batched(preps: list[Prepared], *, progress: bool = True, log=print, desc: str = "",
                  forecast: bool = True) -> list[Run]:
    """Train prepared runs (``train.prepare``; new or resumed, all at one start step) as one batch;
    ``forecast``: each run's live forecast (see ``grokscope.train``)."""
    if not preps:
        return []
    check_forecast([p.cfg for p in preps], forecast)
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
        f"{writers[0].remaining_ckpts()} checkpoints each, {fmt_bytes(total)} on disk in all")
    interrupted = fit(trainer, writers, progress=progress, log=log, desc=desc or f"{len(preps)} runs", forecast=forecast)
    runs = [Run(p.run_dir) for p in preps]
    for r in runs:
        r.interrupted = interrupted
    return runs


def train_many(configs: list[RunConfig], outs: list[str | Path], *, progress: bool = True, log=print,
               forecast: bool = True) -> list[Run]:
    """Train new runs ``configs[i]`` into ``outs[i]`` as one batch (they must share ``batch_key``).
    Ctrl-C saves every run, then raises ``TrainingInterrupted`` (as ``grokscope.train``)."""
    if len(configs) != len(outs):
        raise GrokscopeError("one output folder per config")
    runs = train_batched([prepare(c, o) for c, o in zip(configs, outs)], progress=progress, log=log, forecast=forecast)
    if runs and runs[0].interrupted:  # saved: as grokscope.train, stop the caller (a notebook's "Run all")
        raise TrainingInterrupted(runs, read_state_step(runs[0].path / STATE_FILE))
    return runs


__all__ = ["BatchedTrainer", "batch_key", "train_batched", "train_many"]
