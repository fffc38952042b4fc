"""The training loop: the paper's recipe, its Figure 2 (left) variants, Grokfast, checkpoints, resume.

One update, top to bottom:
    batch  <- min(512, N/2) training equations without replacement (or all of them: full batch)
    W      <- W + weight_noise * eps                  (forward/backward at the noisy weights)
    g      <- grad of the answer-token cross-entropy  (softmax or StableMax; residual dropout: hooks)
    W      <- the clean weights again
    g      <- g - (<g,W>/<W,W>) W, per tensor, rescaled    (⊥Grad, with --orthograd)
    g      <- g + lambda * EMA(g) or lambda * mean(last w g) (Grokfast EMA or MA, when lambda > 0)
    g      <- g + wd * (W - W0)                         (coupled L2 weight decay, with --wd-mode l2)
    W      <- W - lr * wd * (W - W0)                    (weight decay towards the init, when chosen)
    W      <- AdamW(W, g)                               (weight decay towards the origin inside AdamW)
    W      <- W + lr * update_noise * eps
All randomness after initialisation comes from one torch.Generator whose state is saved with the
resume state, so a resumed run repeats an uninterrupted one bit for bit (on the CPU).

``Stepper.step`` is that update, once, for one run (``Trainer``: the model's own tensors, the single-run
forward) and for K runs (``batched.BatchedTrainer``: one flat buffer, the batched forward); AdamW is
``adamw.adamw_`` for both. ``fit`` is the loop around it (evaluations, checkpoints, resume states).
"""
from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

from .config import RunConfig, batch_size
from .errors import GrokscopeError, TrainingInterrupted
from .adamw import ADAM_EPS, adamw_, fused_adamw_available
from .forward import answer_logits, compile_failed, compiled_answer_logits, compiled_mode, inductor_cache_dir
from .cpu import restoring_cpu_settings
from .files import fmt_bytes
from .locks import FolderLock
from .loss import LOSS_DTYPES, answer_loss, evaluate
from .model import build_model, weight_norm
from .progress import tqdm
from .provenance import record_session
from .resume import read_state_step, resume_parts, resume_tensors
from .run import (CONFIG_FILE, FORECAST_COLUMNS, HOPELESS_PATIENCE, METRIC_COLUMNS, STATE_FILE, Prepared, Run,
                  RunWriter, disk_estimate, is_run_dir, prepare, schedule)
from .tasks import Dataset
from .tensorboard import RESTRICTED_EVERY, LiveScalars, live_folder, summary_writer
from .weights import load_weights


# --- schedules ---------------------------------------------------------------------------------
def lr_scale(step: int, warmup: int) -> float:
    """Linear warm-up over the first ``warmup`` updates, then constant (no annealing)."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def pick_device(name: str) -> torch.device:
    """The device a run trains on: "auto" (CUDA when present), "cpu", "cuda", "cuda:N" or "mps", the one
    asked for present on this machine; anything else (``meta``, a missing GPU) is one clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise GrokscopeError(f"unknown device {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GrokscopeError("device 'cuda' asked for, but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GrokscopeError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} "
                                 f"CUDA device(s)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise GrokscopeError("device 'mps' asked for, but this PyTorch has no MPS (Apple GPU) device here")
    elif dev.type != "cpu":
        raise GrokscopeError(f"device {name!r} cannot train a run: use auto, cpu, cuda, cuda:N or mps")
    return dev


# --- one update's pieces: one run (lists of the model's tensors, Python-float settings) or K runs
# ((K, n) flat buffers, one row per run, and (K, 1) columns of per-run settings), the same code ---------
def orthogonalize_(params: list[torch.Tensor], rescale: bool = True, eps: float = 1e-30) -> None:
    """⊥Grad (Prieto et al. 2025), in place on each ``p.grad``: per parameter tensor,
    g <- g - (<g, w> / <w, w>) w, which leaves g orthogonal to w (the update no longer scales the
    weights up along themselves, the "naive loss minimisation" that precedes softmax collapse).
    ``rescale`` then multiplies the result by ||g|| / ||g_perp||, back to the original gradient's norm,
    as the authors' released optimiser does (the paper's formula is the projection alone). The dot
    products run in float64; ``eps`` guards a zero tensor (a zero w leaves g as it is)."""
    for w in params:
        g = w.grad
        if g is None:
            continue
        w64, g64 = w.detach().double().reshape(-1), g.double().reshape(-1)
        ww = torch.dot(w64, w64)
        if ww <= 0:
            continue
        g_perp = g64 - (torch.dot(w64, g64) / ww) * w64
        if rescale:
            g_perp = g_perp * (g64.norm() / (g_perp.norm() + eps))
        g.copy_(g_perp.view_as(g))


def grokfast_ema_(ema: list[torch.Tensor] | None, grads: list[torch.Tensor], alpha, lam) -> list[torch.Tensor]:
    """Grokfast-EMA (Lee et al. 2024), in place on ``grads``: ema <- alpha ema + (1 - alpha) g, then
    g <- g + lam ema. The first call starts the average at g. ``alpha``, ``lam``: floats, or (K, 1)
    columns (0 turns it off for that run). Returns the average."""
    if ema is None:
        ema = [g.detach().clone() for g in grads]
    elif torch.is_tensor(alpha):
        for e, g in zip(ema, grads):
            e.lerp_(g, 1.0 - alpha)
    else:
        torch._foreach_lerp_(ema, grads, 1.0 - alpha)
    if torch.is_tensor(lam):
        for g, e in zip(grads, ema):
            g.add_(e * lam)
    else:
        torch._foreach_add_(grads, ema, alpha=lam)
    return ema


def l2_gradient_(params: list[torch.Tensor], targets: list[torch.Tensor] | None, wd: float) -> None:
    """g <- g + wd (W - W0), the gradient of wd/2 |W - W0|^2 (W0 = 0 when ``targets`` is None): weight decay
    coupled to the gradient, as torch.optim.Adam's ``weight_decay`` adds it inside ``step()`` (so after any
    filter of the gradient, and divided by Adam's sqrt(v) like the rest of it)."""
    for i, p in enumerate(params):
        p.grad.add_(p if targets is None else p - targets[i], alpha=wd)


def decay_towards_(params: list[torch.Tensor], targets: list[torch.Tensor], rate) -> None:
    """W <- W - rate (W - W0): weight decay towards the initialisation W0, ``rate`` = lr * wd (a float,
    or a (K, 1) column). Decay towards the origin is AdamW's own (``adamw.adamw_``)."""
    for p, p0 in zip(params, targets):
        if torch.is_tensor(rate):
            p.sub_((p - p0) * rate)
        else:
            p.sub_(p - p0, alpha=rate)


def add_noise_(tensors: list[torch.Tensor], gen: torch.Generator, scale: float) -> None:
    """t <- t + scale * N(0, 1), drawn from ``gen`` tensor by tensor (weight and update noise)."""
    for t in tensors:
        t.add_(torch.randn(t.shape, generator=gen, device=t.device), alpha=scale)


class AdamW:
    """AdamW's state of one run (a list of the model's tensors) or of K runs (one (K, n) buffer), and its
    update (``adamw.adamw_``). ``lr``, ``weight_decay`` (towards the origin), ``beta1``, ``beta2``:
    floats, or (K, 1) columns. ``steps``: the count of updates done, one float tensor per parameter, as
    torch.optim.AdamW keeps it (the resume state stores them as ``opt.<name>.step``)."""

    def __init__(self, params: list[torch.Tensor], beta1, beta2, weight_decay, eps: float = ADAM_EPS):
        self.params, self.beta1, self.beta2, self.weight_decay, self.eps = params, beta1, beta2, weight_decay, eps
        self.exp_avg = [torch.zeros_like(p, requires_grad=False) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p, requires_grad=False) for p in params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in params]
        self.fused = fused_adamw_available(params[0].device) if params else False

    @property
    def n_steps(self) -> int:
        return int(self.steps[0]) if self.steps else 0

    def step(self, lr) -> None:
        adamw_(self.params, [p.grad for p in self.params], self.exp_avg, self.exp_avg_sq, self.steps, lr=lr,
               beta1=self.beta1, beta2=self.beta2, weight_decay=self.weight_decay, eps=self.eps, fused=self.fused)


class Stepper:
    """One update of one or K runs, top to bottom as in the module docstring: the one ``step()`` that
    ``Trainer`` (one run, the model's own tensors, the single-run forward) and
    ``batched.BatchedTrainer`` (K runs on a flat buffer, the batched forward) share. They supply the
    minibatch, the loss's backward, the tensors (``params``), the per-run settings (floats or (K, 1)
    columns) and the optimiser (``adam``)."""

    # what a subclass sets: the trained tensors and their optimiser
    params: list[torch.Tensor]  # the model's parameters (one run), or [the (K, n) flat buffer] (K runs)
    adam: AdamW
    gen: torch.Generator  # one run's generator (weight noise; K runs have one each, for update noise)
    init: list[torch.Tensor] | None = None  # the weights at initialisation (weight decay towards them)
    # the settings: floats (one run) or (K, 1) columns (K runs)
    weight_noise: float = 0.0
    orthograd, orthograd_rescale = False, True
    grokfast_on, grokfast_ma_window = False, 0  # Grokfast (EMA unless an MA window is set: one run only)
    gf_alpha = gf_lambda = wd_init = 0.0
    l2_decay = 0.0  # coupled L2 weight decay (--wd-mode l2; one run only), towards ``init`` when it is set
    decays_to_init = False
    # the state
    ema: list[torch.Tensor] | None = None  # Grokfast-EMA's average
    step_count: int = 0

    # what a subclass supplies
    def lr_now(self):
        """This update's learning rate (warm-up included): a float or a (K, 1) column."""
        raise NotImplementedError

    def minibatch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This update's rows and their answers (drawn from the generator(s) unless full batch)."""
        raise NotImplementedError

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The loss on (x, y) through the forward this trainer uses, and its backward into ``params``."""
        raise NotImplementedError

    def add_update_noise(self, lr) -> None:
        raise NotImplementedError

    def step(self) -> None:
        """One update of every run (the module docstring's recipe, in its order)."""
        lr = self.lr_now()
        x, y = self.minibatch()
        clean = None
        if self.weight_noise > 0:  # forward/backward at the noisy weights, then the clean ones again
            clean = [p.detach().clone() for p in self.params]
            with torch.no_grad():
                add_noise_(self.params, self.gen, self.weight_noise)
        for p in self.params:  # zero_grad(set_to_none=True)
            p.grad = None
        self.backward(x, y)
        with torch.no_grad():
            if clean is not None:
                for p, c in zip(self.params, clean):
                    p.copy_(c)
            if self.orthograd:
                orthogonalize_(self.params, rescale=self.orthograd_rescale)
            if self.grokfast_ma_window:
                self._grokfast_ma(self.grokfast_ma_window, self.gf_lambda)
            elif self.grokfast_on:
                self.ema = grokfast_ema_(self.ema, [p.grad for p in self.params], self.gf_alpha, self.gf_lambda)
            if self.l2_decay:
                l2_gradient_(self.params, self.init, self.l2_decay)
            if self.init is not None and self.decays_to_init:
                decay_towards_(self.params, self.init, lr * self.wd_init)
            self._adamw(lr)
            self.add_update_noise(lr)
        self.step_count += 1

    def _adamw(self, lr) -> None:
        # one method, not inlined: tests/test_train.py swaps it for torch.optim.AdamW's own step to
        # check adamw.adamw_ against it bit for bit
        self.adam.step(lr)


# --- the trainer of one run ------------------------------------------------------------------------
class Trainer(Stepper):
    """Holds the model, optimiser and RNG of one run; ``step()`` does one update."""

    def __init__(self, cfg: RunConfig, data: Dataset, device: torch.device):
        self.cfg, self.data, self.device = cfg, data, device
        tr = cfg.train
        self.model = build_model(cfg.model, data.d_vocab, data.n_elements, seed=tr.seed, device=device)
        self.model.train()
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.init = [p.detach().clone() for p in self.params] if tr.wd_target == "init" else None
        l2 = tr.wd_mode == "l2"
        self.adam = AdamW(self.params, tr.beta1, tr.beta2,
                          tr.weight_decay if tr.wd_target == "origin" and not l2 else 0.0, tr.adam_eps)
        self.gen = torch.Generator(device=device).manual_seed(tr.seed + 1)
        # the update's settings, as Stepper.step reads them
        self.weight_noise, self.orthograd, self.orthograd_rescale = tr.weight_noise, tr.orthograd, tr.orthograd_rescale
        self.grokfast_on = tr.grokfast_lambda > 0
        self.grokfast_ma_window = tr.grokfast_window if self.grokfast_on and tr.grokfast_filter != "ema" else 0
        self.gf_alpha, self.gf_lambda = tr.grokfast_alpha, tr.grokfast_lambda
        self.wd_init, self.decays_to_init = tr.weight_decay, tr.weight_decay > 0 and not l2
        self.l2_decay = tr.weight_decay if l2 else 0.0
        self.ema: list[torch.Tensor] | None = None
        # Grokfast-MA: a ring of the last ``grokfast_window`` gradients per parameter, and how many came in
        self.ma: list[torch.Tensor] | None = None
        self.ma_count = 0
        self.train_x = data.train_x.to(device)
        self.train_y = data.train_y.to(device)
        self.val_x = data.val_x.to(device)
        self.val_y = data.val_y.to(device)
        self.batch = batch_size(cfg, len(self.train_y))
        self.hooks = self._dropout_hooks() if tr.resid_dropout > 0 else []
        self.compiled = compiled_answer_logits() if tr.compile and not self.hooks else None
        self.loss_dtype = LOSS_DTYPES[tr.loss_dtype]
        self.softmax = tr.softmax
        self.step_count = 0

    @property
    def direct_adamw(self) -> bool:
        """Whether updates take torch's fused AdamW kernel (``adamw.adamw_``); False: the written-out formula."""
        return self.adam.fused

    @direct_adamw.setter
    def direct_adamw(self, on: bool) -> None:
        self.adam.fused = bool(on) and fused_adamw_available(self.device)

    def _dropout_hooks(self):
        rate = self.cfg.train.resid_dropout

        def drop(act, hook):
            keep = torch.rand(act.shape, generator=self.gen, device=act.device) >= rate
            return act * keep / (1.0 - rate)

        names = [f"blocks.{i}.hook_{k}_out" for i in range(self.cfg.model.n_layers) for k in ("attn", "mlp")]
        return [(n, drop) for n in names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hooks:
            with self.model.hooks(fwd_hooks=self.hooks):
                return self.model(x)[:, -1]
        if self.compiled is not None:
            try:
                return self.compiled(self.model, x)
            except Exception as e:  # a call may (re)compile: no C++ compiler, an unsupported torch, ...
                raise compile_failed(e) from None
        return answer_logits(self.model, x)

    # --- what Stepper.step asks of one run ---
    def lr_now(self) -> float:
        return self.cfg.train.lr * lr_scale(self.step_count, self.cfg.train.warmup)

    def minibatch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch < len(self.train_y):
            idx = torch.randperm(len(self.train_y), generator=self.gen, device=self.device)[: self.batch]
            return self.train_x[idx], self.train_y[idx]
        return self.train_x, self.train_y

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self.deterministic():
            answer_loss(self.forward(x), y, self.loss_dtype, softmax=self.softmax).backward()

    def add_update_noise(self, lr: float) -> None:
        if self.cfg.train.update_noise > 0:
            add_noise_(self.params, self.gen, lr * self.cfg.train.update_noise)

    def _grokfast_ma(self, window: int, lam: float) -> None:
        """Grokfast-MA (Lee et al. 2024): keep the last ``window`` gradients; once ``window`` have come
        in, g <- g + lam * (their mean, this one included). Before that the gradient is left as it is
        (their code's default ``warmup=True``)."""
        if self.ma is None:
            self.ma = [torch.zeros((window, *p.shape), dtype=p.dtype, device=p.device) for p in self.params]
        slot = self.ma_count % window
        for buf, p in zip(self.ma, self.params):
            buf[slot].copy_(p.grad)
        self.ma_count += 1
        if self.ma_count >= window:
            for buf, p in zip(self.ma, self.params):
                p.grad.add_(buf.mean(0), alpha=lam)

    def deterministic(self):
        """Around the compiled forward and backward: ``forward.compiled_mode()`` (deterministic
        scatter-adds, dynamo's dynamic output shapes), undone afterwards. A no-op for eager training."""
        return compiled_mode() if self.compiled is not None else contextlib.nullcontext()

    def compile_now(self) -> None:
        """Run the compiled forward and backward once (on the first training rows; no update, no RNG
        draw), so that compiling happens, or fails, here."""
        with self.deterministic():
            loss = answer_loss(self.forward(self.train_x[: self.batch]), self.train_y[: self.batch], self.loss_dtype,
                               softmax=self.softmax)
            try:
                loss.backward()
            except Exception as e:  # the backward compiles on its first call
                raise compile_failed(e) from None
        for p in self.params:
            p.grad = None

    def weight_norm(self) -> float:
        return weight_norm(self.model.parameters())

    def model_of(self, k: int):
        """The run's own model (read-only use: its live forecast)."""
        return self.model

    # --- the interface fit() drives (lists with one entry: this run) ---
    def eval_mode(self, on: bool) -> None:
        self.model.train(not on)

    def evaluate(self) -> list[tuple[float, float, float, float, float]]:
        tl, ta, collapse = evaluate(self.model, self.train_x, self.train_y, self.loss_dtype, with_collapse=True,
                                    softmax=self.softmax)
        vl, va = evaluate(self.model, self.val_x, self.val_y, self.loss_dtype, softmax=self.softmax)
        return [(tl, ta, vl, va, collapse)]

    def lrs(self, step: int) -> list[float]:
        return [self.cfg.train.lr * lr_scale(step, self.cfg.train.warmup)]

    def weight_norms(self) -> list[float]:
        return [self.weight_norm()]

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        return [self.model.state_dict()]

    def resume_states(self) -> list[dict[str, torch.Tensor]]:
        return [self.state_tensors()]

    # --- resume state (its format: resume_tensors) ---
    def state_tensors(self) -> dict[str, torch.Tensor]:
        a = self.adam
        return resume_tensors(self.model.state_dict(), self.names, self.gen.get_state(),
                              adam=(a.steps, a.exp_avg, a.exp_avg_sq) if a.n_steps > 0 else None,
                              ema=self.ema, init=self.init, ma=self.ma, ma_count=self.ma_count)

    def load_state_tensors(self, t: dict[str, torch.Tensor], step: int, what: str) -> None:
        parts = resume_parts(t, self.names)
        load_weights(self.model, parts["weights"], what)
        a = self.adam
        with torch.no_grad():
            for i in range(len(self.names)) if parts["exp_avg"] is not None else ():
                if parts["exp_avg"][i] is not None:
                    a.exp_avg[i].copy_(parts["exp_avg"][i])
                    a.exp_avg_sq[i].copy_(parts["exp_avg_sq"][i])
                    a.steps[i].fill_(float(parts["step"][i]))
        if parts["grokfast"] is not None:
            self.ema = [e.to(self.device) for e in parts["grokfast"]]
        if self.init is not None:
            self.init = [p0.to(self.device) for p0 in parts["init"]]
        if parts["grokfast_ma_count"] is not None:
            window = self.cfg.train.grokfast_window
            self.ma = [b.to(self.device).clone() for b in parts["grokfast_ma"]]
            if any(b.shape[0] != window for b in self.ma):
                raise GrokscopeError(f"{what}: its Grokfast-MA window is {self.ma[0].shape[0]}, the config's {window}")
            self.ma_count = parts["grokfast_ma_count"]
        self.gen.set_state(parts["rng"])
        self.step_count = step


@contextlib.contextmanager
def _sigint_sets_flag():
    """Ctrl-C (SIGINT) in the main thread sets ``flag["stop"]`` instead of raising, until the block ends;
    the handler before it is put back afterwards."""
    flag = {"stop": False}
    old_handler = None
    if threading_main():
        def on_sigint(signum, frame):
            flag["stop"] = True
        old_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield flag
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)


def early_stop_text(step: int, total: int, level: float, reached: int | None, margin: float, n_runs: int = 1,
                    hopeless: float = 0.0, n_hopeless: int = 0) -> str:
    """Why training ended before its budget, in one line; ``n_hopeless`` of the runs ended by the hopeless
    stop (their forecast's p_grok stayed below ``hopeless``), the others by validation accuracy."""
    who = "stopped early" if n_runs == 1 else f"all {n_runs} runs stopped early (the last"
    why = f"validation accuracy reached {level:g}" + (f" at step {reached}" if reached is not None and n_runs == 1 else "")
    if margin > 0:
        why += f", then trained on to {1 + margin:g}x that step (stop-margin {margin:g})"
    hopeless_why = (f"the forecast's p_grok stayed below {hopeless:g} ({HOPELESS_PATIENCE} forecasts in a row; "
                    f"stop-hopeless {hopeless:g})")
    if n_hopeless == n_runs:
        why = hopeless_why
    elif n_hopeless:
        why += f"; {n_hopeless} of them because {hopeless_why}"
    return f"{who} at step {step} of {total}{')' if n_runs > 1 else ''}: {why}"


@contextlib.contextmanager
def _seeded_aside(device: torch.device, seed: int):
    """Inside the block, torch's, numpy's and Python's global random generators seeded with ``seed``;
    after it, as they were before. A forecaster that draws (a permutation test) gets the same numbers
    for the same step in any process, and leaves no trace on anything else that reads them."""
    import random

    import numpy as np

    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class _Forecasts:
    """The live forecast of each of K runs (``grokscope.forecast.LiveForecaster``), asked at the
    evaluations that have a checkpoint, its ``every`` steps after the last one asked (``due``).

    A resumed run's forecasters are first given again, in order, what they were given before the resume
    point (the metrics rows at the due steps and the weights of those steps' checkpoints), so a run
    resumed at any moment forecasts as the uninterrupted run does; each call runs under its own step's
    seed (``_seeded_aside``) and under no_grad, reading the weights only: training is the same with or
    without the forecast, bit for bit."""

    def __init__(self, trainer, writers: list[RunWriter], on: bool):
        self.trainer, self.writers = trainer, writers
        self.forecasters = [_live_forecaster(w.prep.cfg) if on else None for w in writers]
        # the steps a forecast may be made at: evaluations with a checkpoint, but not the budget's last step
        # unless the schedule has it anyway (a run resumed with a larger budget forecasts as if it always had it)
        sch, total = writers[0].prep.cfg.schedule, writers[0].prep.cfg.train.steps
        big = total + sch.eval_every * sch.ckpt_every
        self.evals = set(schedule(big, sch.eval_every, sch.eval_log_points))
        self.allowed = {x for x in self.evals & set(schedule(big, sch.ckpt_every, sch.ckpt_log_points)) if x <= total}
        self.last: list[int | None] = [None] * len(writers)  # the last step each forecaster was asked
        self.line = ""  # the latest forecast of run 0, in words
        self.seconds = 0.0
        for k, w in enumerate(writers):
            if self.forecasters[k] is not None and not w.prep.new and w.prep.start > 0:
                self._replay(k, w)

    def due(self, k: int, step: int) -> bool:
        f, last = self.forecasters[k], self.last[k]
        return f is not None and step in self.allowed and (last is None or step - last >= max(1, int(f.every)))

    def ask(self, k: int, step: int, row: dict, model):
        """Run k's forecaster at ``step`` (due), with this step's metrics row and weights."""
        self.last[k] = step
        t0 = time.perf_counter()
        seed = (self.writers[k].prep.cfg.train.seed * 1_000_003 + step) % 2**63
        with torch.no_grad(), _seeded_aside(self.trainer.device, seed):
            out = self.forecasters[k].update(step, row, model)
        self.seconds += time.perf_counter() - t0
        return out

    def at(self, k: int, step: int, row: tuple):
        """Run k's live forecast at this evaluation, or None (none due, or the forecaster gave none); every
        evaluation's row goes to the forecaster (``LiveForecaster.observe``)."""
        if not self.due(k, step):
            if self.forecasters[k] is not None:
                self.forecasters[k].observe(step, dict(zip(METRIC_COLUMNS[1:], row)))
            return None
        out = self.ask(k, step, dict(zip(METRIC_COLUMNS[1:], row)), self.trainer.model_of(k))
        if k == 0 and out is not None:
            self.line = out.line()
        return out

    def _replay(self, k: int, w: RunWriter) -> None:
        """The forecaster of a resumed run given what it was given up to the resume point: each kept
        metrics row of a scheduled evaluation (``observe``; not the row an interrupt adds at the step it
        stopped at, which the uninterrupted run does not have), and at a due step with the weights of
        that step's checkpoint."""
        run, model = Run(w.run_dir), None
        for _, r in w.kept.iterrows():
            step = int(r["step"])
            if step > w.prep.start or step not in self.evals:
                continue
            row = {c: float(r[c]) for c in METRIC_COLUMNS[1:-len(FORECAST_COLUMNS)]}
            if not self.due(k, step):
                self.forecasters[k].observe(step, row)
                continue
            if not run.has_step(step):  # a checkpoint deleted since: that forecast cannot be repeated
                self.last[k] = step
                self.forecasters[k].observe(step, row)
                continue
            if model is None:
                with torch.random.fork_rng(devices=[]):
                    model = build_model(w.prep.cfg.model, w.prep.data.d_vocab, w.prep.data.n_elements,
                                        device=self.trainer.device).eval()
            load_weights(model, run.state_dict_at(step), f"checkpoint {run.checkpoint_path(step)}")
            out = self.ask(k, step, row, model)
            if k == 0 and out is not None:
                self.line = out.line()


class _Loop:
    """``fit``'s bookkeeping for K runs that step together: evaluate and record, checkpoint, early stop."""

    def __init__(self, trainer, writers: list[RunWriter], progress: bool, desc: str, log=print, forecast: bool = True,
                 live=None):
        self.trainer, self.writers, w0, self.log, self.live = trainer, writers, writers[0], log, live
        self.early = ""  # why every run ended before the budget (``stopped_early``)
        self.forecasts = _Forecasts(trainer, writers, forecast)  # the live forecast of each run
        self.eval_steps, self.ckpt_set = w0.eval_steps, set(w0.ckpt_steps)
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=w0.prep.cfg.train.steps, initial=w0.prep.start, disable=not progress, dynamic_ncols=True,
                        mininterval=0.5, desc=desc or w0.run_dir.name, unit="step", file=sys.stderr)

    def running(self) -> list[RunWriter]:
        return [w for w in self.writers if not w.stopped]

    def record(self, step: int) -> None:
        """Evaluate every run, forecast where due, write its metrics row; the runs that end here (early or
        hopeless stop) save and stop."""
        trainer, writers = self.trainer, self.writers
        trainer.eval_mode(True)
        results = trainer.evaluate()
        elapsed = time.perf_counter() - self.t0
        rows = [(tl, ta, vl, va, lr, wn, elapsed, collapse) for (tl, ta, vl, va, collapse), lr, wn
                in zip(results, trainer.lrs(step), trainer.weight_norms())]
        forecasts = [None if w.stopped else self.forecasts.at(k, step, row) for k, (w, row) in enumerate(zip(writers, rows))]
        trainer.eval_mode(False)
        ending = []
        for k, (w, row, f) in enumerate(zip(writers, rows, forecasts)):
            if w.stopped:
                continue
            w.record(step, row, None if f is None else (f.p_grok, f.grok_step, f.lo, f.hi))
            if self.live is not None:
                self.live.record(step, dict(zip(METRIC_COLUMNS[1:], row)), trainer)
            if w.ends(step, row[3]):
                ending.append(k)
        if ending:  # early stop: these runs end here, with a checkpoint and their resume state
            sds, states = trainer.state_dicts(), trainer.resume_states()
            for k in ending:
                writers[k].save_ckpt(step, sds[k])
                writers[k].save_state(step, states[k])
                writers[k].stopped = True
        if len(writers) == 1:
            self.bar.set_postfix(train_acc=f"{results[0][1]:.3f}", val_acc=f"{results[0][3]:.3f}", refresh=False)
            if self.forecasts.line:
                self.bar.set_postfix_str(f"{self.bar.postfix}, {self.forecasts.line}", refresh=False)
        else:
            self.bar.set_postfix(train_99=sum(r[1] >= 0.99 for r in results), val_99=sum(r[3] >= 0.99 for r in results),
                                 refresh=False)
        if ending and not self.running():
            self.stopped_early(step)

    def stopped_early(self, step: int) -> None:
        """Every run has ended before the budget: the bar completes at this step and says why."""
        w0, total = self.writers[0], self.writers[0].prep.cfg.train.steps
        n_hopeless = sum(w.hopeless_at is not None and w.stopped for w in self.writers)
        why = early_stop_text(step, total, w0.stop_at, w0.reached, w0.margin, len(self.writers), w0.hopeless, n_hopeless)
        self.bar.total = step
        self.bar.set_postfix_str(f"{self.bar.postfix}; {why}", refresh=False)
        self.bar.refresh()
        self.early = why  # said in the log once the bar is closed (not on the bar's line)

    def save(self, step: int, state: bool) -> None:
        """A checkpoint of every running run; with ``state`` its resume state too."""
        for w, sd in zip(self.writers, self.trainer.state_dicts()):
            if not w.stopped:
                w.save_ckpt(step, sd)
        if state:
            self.save_states(step)

    def save_states(self, step: int) -> None:
        for w, st in zip(self.writers, self.trainer.resume_states()):
            if not w.stopped:
                w.save_state(step, st)

    def interrupt(self, step: int, log) -> None:
        """Ctrl-C: metrics, a checkpoint and the resume state at this step, and how to continue."""
        if step not in self.eval_steps:
            self.record(step)
        if step not in self.ckpt_set:
            self.save(step, False)
        self.save_states(step)
        w0, one = self.writers[0], len(self.writers) == 1
        log(f"\ngrokscope: interrupted at step {step}; checkpoint saved. "
            f"Continue with: grokscope {'train --resume' if one else 'sweep --out'} "
            f"{w0.run_dir if one else w0.run_dir.parent}")

    def close(self) -> None:
        self.bar.close()
        if self.early:
            self.log(f"grokscope: {self.early}")
        fc = self.forecasts
        if fc.line:
            self.log(f"grokscope: forecast at step {fc.last[0]}: {fc.line} "
                     f"({fc.seconds:.2f} s of {time.perf_counter() - self.t0:.1f} s spent forecasting)")
        for w in self.writers:
            w.close()
        if self.live is not None:
            self.live.close()


def _live_forecaster(cfg: RunConfig):
    from .forecast import LiveForecaster

    return LiveForecaster(cfg, cfg.train.steps)


def check_forecast(cfgs: list[RunConfig], forecast: bool) -> None:
    """The hopeless stop reads the live forecast: refuse ``stop_hopeless`` without it (before anything is written)."""
    if not forecast and any(c.train.stop_hopeless > 0 for c in cfgs):
        raise GrokscopeError("stop_hopeless (--stop-hopeless) needs the live forecast; drop --no-forecast "
                             "(forecast=False) or set stop_hopeless to 0")


def fit(trainer, writers: list[RunWriter], *, progress: bool = True, desc: str = "", log=print,
        forecast: bool = True, live=None) -> bool:
    """Train until the (shared) budget: metrics, checkpoints and resume states of every run on schedule.

    ``trainer`` holds K runs that step together (``Trainer``: K = 1; ``BatchedTrainer``) and gives per
    run lists: ``evaluate()`` -> [(train_loss, train_acc, val_loss, val_acc, collapse)], ``weight_norms()``,
    ``lrs(step)``, ``state_dicts()``, ``resume_states()``, ``model_of(k)`` (run k as a model, for its live
    forecast; ``forecast=False``: none) and ``device``. Returns True when Ctrl-C stopped it (after
    saving a checkpoint and the resume state of every run). A run whose config sets ``stop_val_acc``
    ends (checkpoint and resume state at that step) at the first evaluation that reaches it (or, with
    ``stop_margin``, at the first evaluation at or after ``stop_step``); the
    others go on, and the loop ends when every run has ended or the budget is spent. ``live``: a
    ``tensorboard.LiveScalars`` that gets every metrics row as it is written (one run only)."""
    start, total = writers[0].prep.start, writers[0].prep.cfg.train.steps
    with _sigint_sets_flag() as flag:
        loop = _Loop(trainer, writers, progress, desc, log, forecast, live)
        try:
            if start == 0:
                loop.record(0)
                loop.save(0, False)
            step = start
            while step < total and loop.running():
                trainer.step()
                step += 1
                loop.bar.update(1)
                if step in loop.eval_steps:
                    loop.record(step)
                if step in loop.ckpt_set and loop.running():
                    loop.save(step, loop.running()[0].state_due(step))
                if flag["stop"] and loop.running():
                    loop.interrupt(step, log)
                    return True
        finally:
            loop.close()
    return False


# --- the public entry point ----------------------------------------------------------------------
@restoring_cpu_settings
def train(config: RunConfig | None = None, out: str | Path | None = None, *, resume: str | Path | None = None,
          steps: int | None = None, progress: bool = True, log=print, forecast: bool = True,
          tensorboard: bool | str | Path = False, tensorboard_every: int = RESTRICTED_EVERY) -> Run:
    """Train a run (or continue one with ``resume=DIR``) and return it.

    ``out`` defaults to ``checkpoints/<op>_p<p>_f<frac>_s<seed>``. With ``resume``, the run's own
    config is used; ``steps`` may extend its budget. Ctrl-C saves a checkpoint and the resume state,
    then raises ``TrainingInterrupted`` (a KeyboardInterrupt; its ``run`` is the run), whose message
    says how to continue. The caller's process is left as it was (see ``cpu_settings``).

    ``tensorboard``: True (into ``<results folder>/tensorboard/live``) or a folder: TensorBoard scalars
    written while training (``tensorboard.LiveScalars``), the restricted loss every
    ``tensorboard_every`` steps.
    ``forecast``: the live forecast of whether and when the run groks (``grokscope.forecast``), on the
    progress bar and in the metrics' forecast columns; it leaves training unchanged bit for bit.
    """
    if tensorboard is not False and tensorboard is not None:
        summary_writer()  # the extra is missing: one error before anything is written
        if tensorboard_every < 1:
            raise GrokscopeError(f"--tensorboard-every must be at least 1, got {tensorboard_every}")
    live = (tensorboard, tensorboard_every)
    if resume is not None:
        run_dir = Path(resume)
        if not is_run_dir(run_dir):
            raise GrokscopeError(f"cannot resume {run_dir}: not a run directory (no {CONFIG_FILE})")
        with FolderLock(run_dir, "train --resume"):  # read and checked under the lock: no writer moves it
            return _train(prepare(resume=run_dir, steps=steps), progress, log, forecast, live)
    prep = prepare(config, out, steps=steps)
    from .sweep.folder import enclosing

    for kind, where in enclosing(prep.run_dir):
        if kind in ("run", "results"):
            raise GrokscopeError(f"{prep.run_dir} is inside the {kind} folder {where}; a run goes in a folder of its own")
    lock = FolderLock(prep.run_dir, "train")
    lock.acquire()
    try:
        if is_run_dir(prep.run_dir):  # made by another process since prepare() looked
            raise GrokscopeError(f"{prep.run_dir} already holds a run; continue it with --resume {prep.run_dir} "
                                 f"or pick another --out")
        return _train(prep, progress, log, forecast, live)
    except BaseException:
        if not is_run_dir(prep.run_dir):
            lock.discard()  # a run that never started leaves no folder behind (when the lock made it)
        raise
    finally:
        lock.release()


def _train(prep: Prepared, progress: bool, log, forecast: bool = True, live: tuple = (False, RESTRICTED_EVERY)) -> Run:
    cfg, data = prep.cfg, prep.data
    check_forecast([cfg], forecast)
    device = pick_device(cfg.train.device)
    trainer = Trainer(cfg, data, device)
    if prep.state is not None:
        trainer.load_state_tensors(prep.state, prep.start, f"resume state {prep.run_dir / STATE_FILE}")
    if trainer.compiled is not None:  # compile before anything is written: a failure leaves no run behind
        log("grokscope: compiling the training step (torch.compile, once per process) ...")
        t0 = time.perf_counter()
        trainer.compile_now()
        log(f"grokscope: compiled in {time.perf_counter() - t0:.1f} s (inductor's cache: {inductor_cache_dir()}, "
            f"set TORCHINDUCTOR_CACHE_DIR to move it)")
    scalars = None
    if live[0] is not False and live[0] is not None:
        folder = live_folder(prep.run_dir) if live[0] is True else Path(live[0])
        scalars = LiveScalars(folder, data, prep.start, live[1], log)
    writer = RunWriter(prep)
    record_session(prep.run_dir, cfg, device, prep.start)  # provenance.json: versions, machine, precision
    per, total_bytes = disk_estimate(trainer.model, writer.remaining_ckpts())
    state_bytes = sum(v.numel() * v.element_size() for v in trainer.state_tensors().values())
    log(f"grokscope: {prep.run_dir}: {cfg.task.op} p={cfg.task.p} frac={cfg.task.frac} on {device}; "
        f"{len(data.train_idx)} train / {len(data.val_idx)} val equations, batch {trainer.batch}, "
        f"steps {prep.start}->{cfg.train.steps}")
    log(f"grokscope: {writer.remaining_ckpts()} checkpoints x {fmt_bytes(per)} = {fmt_bytes(total_bytes)} on disk "
        f"(+ {fmt_bytes(state_bytes)} resume state); free: {fmt_bytes(shutil.disk_usage(prep.run_dir).free)}")
    if scalars is not None:
        log(f"grokscope: TensorBoard scalars while training -> {scalars.folder} (tensorboard --logdir {scalars.folder.parent})")
    run = Run(prep.run_dir)
    run.interrupted = fit(trainer, [writer], progress=progress, log=log, forecast=forecast, live=scalars)
    if run.interrupted:
        raise TrainingInterrupted([run], read_state_step(prep.run_dir / STATE_FILE))
    return run


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


__all__ = ["train", "Trainer", "Stepper", "AdamW", "fit", "lr_scale", "pick_device"]
