"""The facts at the top of a report, as plain text (the report escapes them): task, model, recipe, the
steps where train and validation accuracy reached 99 %, and a one-line verdict."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .common import by_step, first_at

LEVEL = 0.99


def steps_text(n: int | float) -> str:
    """1400 -> "1 400" (narrow no-break space between thousands)."""
    return f"{int(n):,}".replace(",", "\u202f")


def pct(v: float) -> str:
    text = f"{100 * v:.0f}"
    if (text == "100" and v < 1) or (text == "0" and v > 0):
        text = f"{100 * v:.1f}"
    return f"{text} %"


@dataclass
class KeySteps:
    train: int | None  # first step with train accuracy >= LEVEL
    val: int | None  # first step with validation accuracy >= LEVEL
    best_train: float
    best_val: float
    best_val_step: int | None
    last: int | None

    @property
    def delay(self) -> int | None:
        return self.val - self.train if self.val is not None and self.train is not None else None


def key_steps(metrics: pd.DataFrame | None, level: float = LEVEL) -> KeySteps:
    train, val = by_step(metrics, "train_acc"), by_step(metrics, "val_acc")

    last = int(max(train.index.max(), val.index.max())) if len(train) and len(val) else None
    return KeySteps(first_at(train, level), first_at(val, level), float(train.max()) if len(train) else float("nan"),
                    float(val.max()) if len(val) else float("nan"), int(val.idxmax()) if len(val) else None, last)


def reached_text(step: int | None, best: float, best_step: int | None = None) -> str:
    if step is not None:
        return f"step {steps_text(step)}"
    if best != best:  # NaN: no metrics
        return "unknown (no metrics)"
    where = f" at step {steps_text(best_step)}" if best_step is not None else ""
    return f"never (best {pct(best)}{where})"


def verdict(k: KeySteps) -> str:
    """One sentence on what happened in the run."""
    if k.last is None:
        return "No training metrics to judge the run by."
    if k.train is None:
        return (f"Not memorised: train accuracy never reached {pct(LEVEL)} in {steps_text(k.last)} steps "
                f"(best {pct(k.best_train)}), so there is nothing to grok yet.")
    if k.val is None:
        return (f"No grokking within {steps_text(k.last)} steps: the training set was memorised at step "
                f"{steps_text(k.train)} but validation accuracy never reached {pct(LEVEL)} "
                f"(best {pct(k.best_val)} at step {steps_text(k.best_val_step)}).")
    if k.val <= k.train:
        return (f"Generalised as it memorised: validation accuracy reached {pct(LEVEL)} at step "
                f"{steps_text(k.val)}, no later than training did; there was no grokking delay.")
    ratio = f", {k.val / k.train:.1f}× later" if k.train > 0 else ""
    return (f"Grokked: train accuracy reached {pct(LEVEL)} at step {steps_text(k.train)}, validation accuracy "
            f"{steps_text(k.delay)} steps later{ratio}, at step {steps_text(k.val)}.")


def task_text(cfg) -> str:
    t = cfg.task
    outliers = f"{t.outliers} outliers" if t.outliers else "no outliers"
    return f"{t.op} with p = {t.p}, {pct(t.frac)} of the equations for training, {outliers} (split seed {t.seed})"


def model_text(cfg) -> str:
    m = cfg.model
    layers = f"{m.n_layers} layer{'s' if m.n_layers != 1 else ''}"
    return (f"{layers}, d_model {m.d_model}, {m.n_heads} heads, d_mlp {m.d_mlp}, {m.act_fn}, norm {m.norm}, "
            f"{m.pos_embed} positions, biases {m.biases}")


def recipe_text(cfg) -> str:
    r = cfg.train
    opt = (f"AdamW, weight decay {r.weight_decay:g}" + (" towards the initialisation" if r.wd_target == "init" else "")
           if r.weight_decay else "Adam, no weight decay")
    batch = ("full batch" if r.full_batch else f"batch {r.batch_size}" if r.batch_size
             else "batch min(512, half the training set)")
    parts = [f"{r.variant}: {opt}", f"lr {r.lr:g}", f"β {r.beta1:g}/{r.beta2:g}", f"warm-up {r.warmup}", batch,
             f"{steps_text(r.steps)} steps", f"seed {r.seed}"]
    for value, text in ((r.resid_dropout, f"residual dropout {r.resid_dropout:g}"),
                        (r.update_noise, f"update noise {r.update_noise:g}"),
                        (r.weight_noise, f"weight noise {r.weight_noise:g}"),
                        (r.grokfast_lambda, f"Grokfast α {r.grokfast_alpha:g}, λ {r.grokfast_lambda:g}")):
        if value:
            parts.append(text)
    return ", ".join(parts)
