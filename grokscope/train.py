"""The training loop: the paper's recipe, its Figure 2 (left) variants, Grokfast, checkpoints, resume.

One update, top to bottom:
    batch  <- min(512, N/2) training equations without replacement (or all of them: full batch)
    W      <- W + weight_noise * eps                  (forward/backward at the noisy weights)
    g      <- grad of the answer-token cross-entropy  (softmax or StableMax; residual dropout: hooks)
    W      <- the clean weights again
    g      <- g - (<g,W>/<W,W>) W, per tensor, rescaled    (⊥Grad, with --orthograd)
    g      <- g + lambda * EMA(g) or lambda * mean(last w g) (Grokfast EMA or MA, when lambda > 0)
    W      <- W - lr * wd * (W - W0)                    (weight decay towards the init, when chosen)
    W      <- AdamW(W, g)                               (weight decay towards the origin inside AdamW)
    W      <- W + lr * update_noise * eps
All randomness after initialisation comes from one torch.Generator whose state is saved with the
resume state, so a resumed run repeats an uninterrupted one bit for bit (on the CPU).
"""
from __future__ import annotations

import contextlib
import math
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import SOFTMAXES, RunConfig
from .errors import GrokscopeError, TrainingInterrupted
from .model import answer_logits, build_model
from .guard import FolderLock
from .guard import fmt_bytes as _fmt_bytes
from .run import CONFIG_FILE, STATE_FILE, Run, is_run_dir, load_weights, read_state_step
from .run import Prepared, RunWriter, default_run_dir, disk_estimate, prepare, schedule  # noqa: F401 (moved to run.py)
from .progress import tqdm
from .provenance import record_session
from .tasks import Dataset

EVAL_CHUNK = 1024  # rows per evaluation forward: small enough for the cache (8192: 25 % slower)


# --- schedules ---------------------------------------------------------------------------------
def lr_scale(step: int, warmup: int) -> float:
    """Linear warm-up over the first ``warmup`` updates, then constant (no annealing)."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GrokscopeError(f"unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GrokscopeError("device 'cuda' asked for, but no CUDA device is available")
    return dev


def batch_size(cfg: RunConfig, n_train: int) -> int:
    if cfg.train.full_batch:
        return n_train
    if cfg.train.batch_size > 0:
        return min(cfg.train.batch_size, n_train)
    return max(1, min(512, n_train // 2))


# --- the loss ------------------------------------------------------------------------------------
LOSS_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """StableMax's s(x) (Prieto et al. 2025): x + 1 for x >= 0, 1 / (1 - x) for x < 0 (continuous,
    with slope 1, at 0; positive everywhere). The negative branch sees only x <= 0, so neither branch
    nor its gradient is ever infinite (torch.where would otherwise pass 0 * inf = nan back at x = 1)."""
    return torch.where(x >= 0, x + 1, 1 / (1 - x.clamp(max=0)))


def log_stablemax(x: torch.Tensor) -> torch.Tensor:
    """log p_i with p_i = s(x_i) / sum_j s(x_j) over the last axis."""
    s = stablemax_s(x)
    return s.log() - s.sum(-1, keepdim=True).log()


def answer_logprob(logits: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.float64,
                   softmax: str = "softmax") -> torch.Tensor:
    """(N,) log-probability of the answer token under ``softmax`` ("softmax" or "stablemax"), in ``dtype``."""
    x = logits.to(dtype)
    lp = torch.log_softmax(x, -1) if softmax == "softmax" else log_stablemax(x)
    return lp.gather(-1, y[..., None])[..., 0]


def answer_loss(logits: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.float64,
                reduction: str = "mean", softmax: str = "softmax") -> torch.Tensor:
    """Cross-entropy of the answer token with the log-softmax computed in ``dtype``.

    float64 is the default (Nanda et al. do the same): late in training the float32 log-probability
    of most training answers rounds to exactly 0 ("softmax collapse", Prieto et al. 2025), their
    gradient vanishes, the update follows the few rows left and the loss spikes. The logits come from
    the float32 model; only the log-softmax and its backward run in ``dtype``.

    ``softmax="stablemax"``: -log p_answer with StableMax's p_i = s(x_i) / sum_j s(x_j) (see
    ``stablemax_s``) instead of softmax's exp, also in ``dtype``. s is increasing, so the argmax, and
    with it every accuracy, is the same as softmax's; only the loss and its gradient differ."""
    if softmax == "softmax":
        return F.cross_entropy(logits.to(dtype), y, reduction=reduction)
    if softmax != "stablemax":
        raise GrokscopeError(f"softmax must be one of {', '.join(SOFTMAXES)}, got {softmax!r}")
    loss = -answer_logprob(logits, y, dtype, softmax)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def collapsed(logits: torch.Tensor, y: torch.Tensor, softmax: str = "softmax") -> torch.Tensor:
    """(N,) bool: rows whose float32 log-probability of the answer is exactly 0 (softmax collapse),
    under the run's own softmax (StableMax's p_answer rounds to 1 only for enormous logits)."""
    return answer_logprob(logits, y, torch.float32, softmax) == 0


# --- evaluation ---------------------------------------------------------------------------------
@torch.inference_mode()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.float64,
             with_collapse: bool = False, softmax: str = "softmax") -> tuple[float, ...]:
    """Mean cross-entropy (log-softmax, or log-StableMax with ``softmax="stablemax"``, in ``dtype``)
    and accuracy on the whole set; with ``with_collapse`` also the softmax-collapse fraction (share
    of rows whose float32 log-probability of the answer is exactly 0)."""
    loss, correct, collapse = 0.0, 0, 0
    for i in range(0, len(y), EVAL_CHUNK):
        logits, yy = answer_logits(model, x[i:i + EVAL_CHUNK]), y[i:i + EVAL_CHUNK]
        loss += answer_loss(logits, yy, dtype, reduction="sum", softmax=softmax).item()
        correct += (logits.argmax(-1) == yy).sum().item()
        collapse += collapsed(logits, yy, softmax).sum().item()
    if with_collapse:
        return loss / len(y), correct / len(y), collapse / len(y)
    return loss / len(y), correct / len(y)


_COMPILED = None


def compiled_answer_logits():
    """``answer_logits`` through torch.compile (inductor), one per process, for ``--compile``.

    Training with it gives the same function of the weights, computed in another float order: a
    compiled run is reproducible and resumes bit-identically, but it is not bit-identical to an eager
    run of the same config (so the mode is part of the config). ``Trainer.compile_now`` compiles the
    forward and backward before training starts: for the default model on this CPU about 40 s the
    first time on a machine, about 12 s from inductor's cache on disk. Evaluation stays eager."""
    global _COMPILED
    if _COMPILED is None:
        import torch._dynamo

        torch._dynamo.config.capture_dynamic_output_shape_ops = True  # the sizes torch.unique returns
        _COMPILED = torch.compile(answer_logits, dynamic=True)
    return _COMPILED


def _compile_failed(e: Exception) -> GrokscopeError:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return GrokscopeError(f"compile: torch.compile failed ({type(e).__name__}: {first}); train without --compile")


# --- gradient transforms ----------------------------------------------------------------------------
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


# --- the trainer -----------------------------------------------------------------------------------
class Trainer:
    """Holds the model, optimiser and RNG of one run; ``step()`` does one update."""

    def __init__(self, cfg: RunConfig, data: Dataset, device: torch.device):
        self.cfg, self.data, self.device = cfg, data, device
        tr = cfg.train
        self.model = build_model(cfg.model, data.d_vocab, data.n_elements, seed=tr.seed, device=device)
        self.model.train()
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.init = [p.detach().clone() for p in self.params] if tr.wd_target == "init" else None
        fused = device.type in ("cpu", "cuda")
        self.opt = torch.optim.AdamW(self.params, lr=tr.lr, betas=(tr.beta1, tr.beta2),
                                     weight_decay=tr.weight_decay if tr.wd_target == "origin" else 0.0,
                                     fused=fused)
        self.direct_adamw = fused and hasattr(torch, "_fused_adamw_")
        self.gen = torch.Generator(device=device).manual_seed(tr.seed + 1)
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
                raise _compile_failed(e) from None
        return answer_logits(self.model, x)

    def step(self) -> None:
        tr = self.cfg.train
        lr = tr.lr * lr_scale(self.step_count, tr.warmup)
        if self.batch < len(self.train_y):
            idx = torch.randperm(len(self.train_y), generator=self.gen, device=self.device)[: self.batch]
            x, y = self.train_x[idx], self.train_y[idx]
        else:
            x, y = self.train_x, self.train_y
        clean = None
        if tr.weight_noise > 0:
            clean = [p.detach().clone() for p in self.params]
            with torch.no_grad():
                for p in self.params:
                    p.add_(torch.randn(p.shape, generator=self.gen, device=p.device), alpha=tr.weight_noise)
        for p in self.params:  # opt.zero_grad(set_to_none=True), without its per-call bookkeeping
            p.grad = None
        with self.deterministic():
            answer_loss(self.forward(x), y, self.loss_dtype, softmax=self.softmax).backward()
        with torch.no_grad():
            if clean is not None:
                for p, c in zip(self.params, clean):
                    p.copy_(c)
            if tr.orthograd:
                orthogonalize_(self.params, rescale=tr.orthograd_rescale)
            if tr.grokfast_lambda > 0 and tr.grokfast_filter == "ema":
                grads = [p.grad for p in self.params]
                if self.ema is None:
                    self.ema = [g.detach().clone() for g in grads]
                else:
                    torch._foreach_lerp_(self.ema, grads, 1.0 - tr.grokfast_alpha)
                torch._foreach_add_(grads, self.ema, alpha=tr.grokfast_lambda)
            elif tr.grokfast_lambda > 0:
                self._grokfast_ma(tr.grokfast_window, tr.grokfast_lambda)
            if self.init is not None and tr.weight_decay > 0:
                for p, p0 in zip(self.params, self.init):
                    p.sub_(p - p0, alpha=lr * tr.weight_decay)
            self._adamw(lr)
            if tr.update_noise > 0:
                for p in self.params:
                    p.add_(torch.randn(p.shape, generator=self.gen, device=p.device), alpha=lr * tr.update_noise)
        self.step_count += 1

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

    @contextlib.contextmanager
    def deterministic(self):
        """Around the compiled forward and backward: torch's deterministic mode, so that inductor
        lowers the gathers' backward (scatter-adds) to ATen's deterministic kernels instead of atomic
        adds, whose order varies between threads (runs would not repeat bit for bit otherwise). Dynamo
        guards on the flag, so it is on for every compiled call. A no-op for eager training."""
        if self.compiled is None:
            yield
            return
        was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was, warn_only=warn_only)

    def compile_now(self) -> None:
        """Run the compiled forward and backward once (on the first training rows; no update, no RNG
        draw), so that compiling happens, or fails, here."""
        with self.deterministic():
            loss = answer_loss(self.forward(self.train_x[: self.batch]), self.train_y[: self.batch], self.loss_dtype,
                               softmax=self.softmax)
            try:
                loss.backward()
            except Exception as e:  # the backward compiles on its first call
                raise _compile_failed(e) from None
        for p in self.params:
            p.grad = None

    def _adamw(self, lr: float) -> None:
        """``opt.step()`` at learning rate ``lr``: the same fused AdamW kernel, called directly once the
        optimiser's state exists (opt.step()'s grouping and checks cost about 0.5 ms a step on the CPU,
        and bit-identical results are tested). The first step, or a parameter without a gradient,
        goes through ``opt.step()``. The state stays in ``opt.state``, where resume reads it."""
        group = self.opt.param_groups[0]
        group["lr"] = lr
        states = [self.opt.state.get(p) for p in self.params]
        grads = [p.grad for p in self.params]
        if not self.direct_adamw or not all(states) or any(g is None for g in grads):
            self.opt.step()
            return
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(self.params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                            [], steps, amsgrad=False, lr=lr, beta1=beta1, beta2=beta2,
                            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                            grad_scale=None, found_inf=None)

    def weight_norm(self) -> float:
        with torch.no_grad():
            return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in self.model.parameters()))

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

    # --- resume state ---
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for name, p in zip(self.names, self.params):
            for k, v in self.opt.state.get(p, {}).items():
                out[f"opt.{name}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        if self.ema is not None:
            out.update({f"grokfast.{n}": e for n, e in zip(self.names, self.ema)})
        if self.init is not None:
            out.update({f"init.{n}": p0 for n, p0 in zip(self.names, self.init)})
        if self.ma is not None:  # the ring as it lies, and how many gradients came in (where it is)
            out.update({f"grokfast_ma.{n}": b for n, b in zip(self.names, self.ma)})
            out["grokfast_ma_count"] = torch.tensor(self.ma_count, dtype=torch.int64)
        out["rng"] = self.gen.get_state()
        return out

    def load_state_tensors(self, t: dict[str, torch.Tensor], step: int, what: str) -> None:
        load_weights(self.model, {k[6:]: v for k, v in t.items() if k.startswith("model.")}, what)
        for name, p in zip(self.names, self.params):
            st = {k.rsplit(".", 1)[-1]: v.to(self.device) for k, v in t.items()
                  if k.startswith(f"opt.{name}.") and k.count(".") == name.count(".") + 2}
            if st:
                if "step" in st:
                    st["step"] = st["step"].cpu() if self.device.type == "cpu" else st["step"]
                self.opt.state[p] = st
        if f"grokfast.{self.names[0]}" in t:
            self.ema = [t[f"grokfast.{n}"].to(self.device) for n in self.names]
        if self.init is not None:
            self.init = [t[f"init.{n}"].to(self.device) for n in self.names]
        if "grokfast_ma_count" in t:
            window = self.cfg.train.grokfast_window
            self.ma = [t[f"grokfast_ma.{n}"].to(self.device).clone() for n in self.names]
            if any(b.shape[0] != window for b in self.ma):
                raise GrokscopeError(f"{what}: its Grokfast-MA window is {self.ma[0].shape[0]}, the config's {window}")
            self.ma_count = int(t["grokfast_ma_count"])
        self.gen.set_state(t["rng"])
        self.step_count = step


def configure_cpu(threads: int | None = None) -> None:
    """Process-wide settings for training and analysis on the CPU (idempotent)."""
    torch.set_flush_denormal(True)  # weight decay drives weights subnormal; slows the CPU many-fold
    if threads:
        torch.set_num_threads(threads)
    _keep_heap()


def flush_denormal_enabled() -> bool:
    """Whether this thread flushes subnormal floats to zero (torch has a setter but no getter): half the
    smallest normal float32 is subnormal, and comes out 0 when they are flushed."""
    return float(torch.tensor(torch.finfo(torch.float32).tiny) / 2) == 0.0


@contextlib.contextmanager
def cpu_settings():
    """Subnormal floats flushed to zero for the duration (as ``configure_cpu``), then as they were: a
    call from Python (``train``, ``analyze``) leaves the caller's process as it found it. The kept
    heap (``mallopt``), which cannot be undone, is set only in processes grokscope owns: the
    ``grokscope`` command and a sweep's worker processes call ``configure_cpu``."""
    was = flush_denormal_enabled()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if not was:
            torch.set_flush_denormal(False)


def restoring_cpu_settings(fn):
    """Decorator: run ``fn`` inside ``cpu_settings()``."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with cpu_settings():
            return fn(*args, **kwargs)

    return wrapper


_HEAP_KEPT = False


def _keep_heap() -> None:
    """Keep freed activation buffers in the heap instead of returning them to the kernel.

    glibc serves allocations above its mmap threshold (128 KB at first) with fresh mmaps and trims
    the heap top when it frees: every training step then page-faults its few-MB activations back
    in (about 450 minor faults a step on the default model, 0.8 ms of system time). Raising both
    thresholds keeps that memory mapped: the process keeps up to 512 MB of freed heap instead of
    returning it. Process-wide; a no-op where the C library is not glibc."""
    global _HEAP_KEPT
    if _HEAP_KEPT or not sys.platform.startswith("linux"):
        return
    _HEAP_KEPT = True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 512 << 20)
    except (OSError, AttributeError):
        pass


def fit(trainer, writers: list[RunWriter], *, progress: bool = True, desc: str = "", log=print) -> bool:
    """Train until the (shared) budget: metrics, checkpoints and resume states of every run on schedule.

    ``trainer`` holds K runs that step together (``Trainer``: K = 1; ``BatchedTrainer``) and gives per
    run lists: ``evaluate()`` -> [(train_loss, train_acc, val_loss, val_acc, collapse)], ``weight_norms()``,
    ``lrs(step)``, ``state_dicts()`` and ``resume_states()``. Returns True when Ctrl-C stopped it (after
    saving a checkpoint and the resume state of every run). A run whose config sets ``stop_val_acc``
    ends (checkpoint and resume state at that step) at the first evaluation that reaches it (or, with
    ``stop_margin``, at the first evaluation at or after ``stop_step``); the
    others go on, and the loop ends when every run has ended or the budget is spent."""
    w0 = writers[0]
    start, total = w0.prep.start, w0.prep.cfg.train.steps
    eval_steps, ckpt_set = w0.eval_steps, set(w0.ckpt_steps)
    stop = {"flag": False}
    old_handler = None
    if threading_main():
        def on_sigint(signum, frame):
            stop["flag"] = True
        old_handler = signal.signal(signal.SIGINT, on_sigint)
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=start, disable=not progress, dynamic_ncols=True, mininterval=0.5,
               desc=desc or w0.run_dir.name, unit="step", file=sys.stderr)

    def record(step: int) -> None:
        trainer.eval_mode(True)
        results = trainer.evaluate()
        trainer.eval_mode(False)
        elapsed = time.perf_counter() - t0
        ending = []
        for k, (w, (tl, ta, vl, va, collapse), lr, wn) in enumerate(zip(writers, results, trainer.lrs(step),
                                                                         trainer.weight_norms())):
            if w.stopped:
                continue
            w.record(step, (tl, ta, vl, va, lr, wn, elapsed, collapse))
            if w.ends(step, va):
                ending.append(k)
        if ending:  # early stop: these runs end here, with a checkpoint and their resume state
            sds, states = trainer.state_dicts(), trainer.resume_states()
            for k in ending:
                writers[k].save_ckpt(step, sds[k])
                writers[k].save_state(step, states[k])
                writers[k].stopped = True
        if len(writers) == 1:
            bar.set_postfix(train_acc=f"{results[0][1]:.3f}", val_acc=f"{results[0][3]:.3f}", refresh=False)
        else:
            bar.set_postfix(train_99=sum(r[1] >= 0.99 for r in results), val_99=sum(r[3] >= 0.99 for r in results),
                            refresh=False)

    def save(step: int, state: bool) -> None:
        for w, sd in zip(writers, trainer.state_dicts()):
            if not w.stopped:
                w.save_ckpt(step, sd)
        if state:
            for w, st in zip(writers, trainer.resume_states()):
                if not w.stopped:
                    w.save_state(step, st)

    def running() -> list[RunWriter]:
        return [w for w in writers if not w.stopped]

    interrupted = False
    try:
        step = start
        if start == 0:
            record(0)
            save(0, False)
        while step < total and running():
            trainer.step()
            step += 1
            bar.update(1)
            if step in eval_steps:
                record(step)
            if step in ckpt_set and running():
                save(step, running()[0].state_due(step))
            if stop["flag"] and running():
                if step not in eval_steps:
                    record(step)
                if step not in ckpt_set:
                    save(step, False)
                for w, st in zip(writers, trainer.resume_states()):
                    if not w.stopped:
                        w.save_state(step, st)
                interrupted = True
                where = w0.run_dir if len(writers) == 1 else w0.run_dir.parent
                log(f"\ngrokscope: interrupted at step {step}; checkpoint saved. "
                    f"Continue with: grokscope {'train --resume' if len(writers) == 1 else 'sweep --out'} {where}")
                break
    finally:
        bar.close()
        for w in writers:
            w.close()
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    return interrupted


# --- the public entry point ----------------------------------------------------------------------
@restoring_cpu_settings
def train(config: RunConfig | None = None, out: str | Path | None = None, *, resume: str | Path | None = None,
          steps: int | None = None, progress: bool = True, log=print) -> Run:
    """Train a run (or continue one with ``resume=DIR``) and return it.

    ``out`` defaults to ``checkpoints/<op>_p<p>_f<frac>_s<seed>``. With ``resume``, the run's own
    config is used; ``steps`` may extend its budget. Ctrl-C saves a checkpoint and the resume state,
    then raises ``TrainingInterrupted`` (a KeyboardInterrupt; its ``run`` is the run), whose message
    says how to continue. The caller's process is left as it was (see ``cpu_settings``).
    """
    if resume is not None:
        run_dir = Path(resume)
        if not is_run_dir(run_dir):
            raise GrokscopeError(f"cannot resume {run_dir}: not a run directory (no {CONFIG_FILE})")
        with FolderLock(run_dir, "train --resume"):  # read and checked under the lock: no writer moves it
            return _train(prepare(resume=run_dir, steps=steps), progress, log)
    prep = prepare(config, out, steps=steps)
    lock = FolderLock(prep.run_dir, "train")
    lock.acquire()
    try:
        if is_run_dir(prep.run_dir):  # made by another process since prepare() looked
            raise GrokscopeError(f"{prep.run_dir} already holds a run; continue it with --resume {prep.run_dir} "
                                 f"or pick another --out")
        return _train(prep, progress, log)
    except BaseException:
        if not is_run_dir(prep.run_dir):
            lock.discard()  # a run that never started leaves no folder behind (when the lock made it)
        raise
    finally:
        lock.release()


def _train(prep: Prepared, progress: bool, log) -> Run:
    cfg, data = prep.cfg, prep.data
    device = pick_device(cfg.train.device)
    trainer = Trainer(cfg, data, device)
    if prep.state is not None:
        trainer.load_state_tensors(prep.state, prep.start, f"resume state {prep.run_dir / STATE_FILE}")
    if trainer.compiled is not None:  # compile before anything is written: a failure leaves no run behind
        log("grokscope: compiling the training step (torch.compile, once per process) ...")
        t0 = time.perf_counter()
        trainer.compile_now()
        log(f"grokscope: compiled in {time.perf_counter() - t0:.1f} s")
    writer = RunWriter(prep)
    record_session(prep.run_dir, cfg, device, prep.start)  # provenance.json: versions, machine, precision
    per, total_bytes = disk_estimate(trainer.model, writer.remaining_ckpts())
    state_bytes = sum(v.numel() * v.element_size() for v in trainer.state_tensors().values())
    log(f"grokscope: {prep.run_dir}: {cfg.task.op} p={cfg.task.p} frac={cfg.task.frac} on {device}; "
        f"{len(data.train_idx)} train / {len(data.val_idx)} val equations, batch {trainer.batch}, "
        f"steps {prep.start}->{cfg.train.steps}")
    log(f"grokscope: {writer.remaining_ckpts()} checkpoints x {_fmt_bytes(per)} = {_fmt_bytes(total_bytes)} on disk "
        f"(+ {_fmt_bytes(state_bytes)} resume state); free: {_fmt_bytes(shutil.disk_usage(prep.run_dir).free)}")
    run = Run(prep.run_dir)
    run.interrupted = fit(trainer, [writer], progress=progress, log=log)
    if run.interrupted:
        raise TrainingInterrupted([run], read_state_step(prep.run_dir / STATE_FILE))
    return run


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


__all__ = ["train", "Trainer", "RunWriter", "Prepared", "prepare", "fit", "schedule", "evaluate", "lr_scale", "batch_size",
           "answer_loss", "collapsed"]
