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
    opt = ((f"Adam, L2 weight decay {r.weight_decay:g}" if r.wd_mode == "l2" else f"AdamW, weight decay {r.weight_decay:g}")
           + (" towards the initialisation" if r.wd_target == "init" else "") if r.weight_decay else "Adam, no weight decay")
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


# --- the phases table at the top of the report ------------------------------------------------------------
TOP_MOVES = 3  # measures shown per phase; the rest behind a toggle
OUTSIDE = ("train_loss", "val_loss", "val_acc")  # what the network does, not what is inside it
SPIKE_FACTOR = 10.0  # a train-loss spike: at least this many times its lowest value since memorisation ...
SPIKE_MIN = 1e-2  # ... and at least this high (float noise at 1e-7 is not a spike)


@dataclass
class PhaseRow:
    """One phase of the report's opening table, as plain text."""

    phase: str
    present: bool
    steps: str  # "125 – 1 825", "from 3 575", or why the phase is absent
    bounds: str  # what set its start and end
    moves: list[str]  # the measures that moved, most first: "restricted loss 3.53 → 0.244"
    description: str  # the phases table's own sentence


def boundary_text(marker, threshold) -> str:
    """"train accuracy reached 99 %" from a phases row's marker and threshold ("" and NaN: none)."""
    from ..analyses.phases import BY_KEY, fmt

    if not isinstance(marker, str) or not marker:
        return ""
    level = float(threshold) if threshold is not None and not pd.isna(threshold) else float("nan")
    if marker == "train_acc":
        return f"train accuracy reached {pct(level)}"
    if marker == "val_acc":
        return f"validation accuracy reached {pct(level)}"
    if marker == "val_loss":
        return f"validation loss below chance ({level:.2f}) for good"
    m = BY_KEY.get(marker)
    label = m.label if m is not None else marker
    return f"{label} had made most of its change (at {fmt(m, level)})"


def phase_moves(metrics: pd.DataFrame, results: dict, start, end) -> list[str]:
    """Every measure of the inside of the network (not the losses and accuracy, ``OUTSIDE``) that changed
    by a meaningful amount (either way) from ``start`` to ``end``, the largest change (in units of the
    measure's meaningful change, ``Measure.min_change``) first."""
    from ..analyses.phases import MEASURES, Measures, _t, at, fmt

    ms = Measures(metrics, results)
    scored = []
    for m in MEASURES:
        if m.key in OUTSIDE or not ms.has(m.key):
            continue
        a, b = at(ms[m.key], start), at(ms[m.key], end)
        if a != a or b != b:
            continue
        size = abs(float(_t(m, b) - _t(m, a))) / m.min_change
        if size >= 1:
            verb = "falls" if b < a else "rises"
            scored.append((size, f"{m.label} {verb} {fmt(m, a)} → {fmt(m, b)}"))
    return [text for _, text in sorted(scored, key=lambda x: -x[0])]


def phase_rows(phases: pd.DataFrame | None, metrics: pd.DataFrame | None, results: dict) -> list[PhaseRow]:
    """The rows of the report's opening table, one per phase of the phases table."""
    if phases is None or not len(phases) or metrics is None or not len(metrics):
        return []
    last = int(pd.to_numeric(metrics["step"]).max())
    rows = []
    for _, r in phases.iterrows():
        phase = str(r["phase"])
        present = str(r.get("present", True)).strip().lower() == "true"
        start, end = pd.to_numeric(r.get("start_step"), errors="coerce"), pd.to_numeric(r.get("end_step"), errors="coerce")
        description = str(r.get("description", ""))
        if not present or pd.isna(start):
            why = description.split(": absent, ", 1)[-1]
            rows.append(PhaseRow(phase, False, "absent", why, [], description))
            continue
        start = int(start)
        steps = f"{steps_text(start)} – {steps_text(end)}" if not pd.isna(end) else f"from {steps_text(start)}"
        begin = boundary_text(r.get("marker"), r.get("threshold")) or "training began"
        finish = boundary_text(r.get("end_marker"), r.get("end_threshold"))
        if not finish:
            finish = "not over at the last step" if phase != "grokked" else f"runs to the last step ({steps_text(last)})"
        rows.append(PhaseRow(phase, True, steps, f"starts: {begin}; ends: {finish}",
                             phase_moves(metrics, results, start, last if pd.isna(end) else int(end)), description))
    return rows


@dataclass
class Spike:
    step: int  # where the train loss peaked
    low: float  # its lowest value since memorisation, before the peak
    low_step: int
    peak: float
    phase: str  # the phase it happened in ("" if none)


def loss_spikes(metrics: pd.DataFrame | None, phases: pd.DataFrame | None = None, level: float = LEVEL,
                factor: float = SPIKE_FACTOR, minimum: float = SPIKE_MIN) -> list[Spike]:
    """Spikes of the (raw) train loss after memorisation (train accuracy at ``level``): a stretch of
    evaluations where the loss is at least ``factor`` times its lowest value since memorisation (up
    to there) and at least ``minimum``; one ``Spike`` per stretch, at its highest point."""
    from .common import phase_spans

    loss, train = by_step(metrics, "train_loss"), by_step(metrics, "train_acc")
    t_mem = first_at(train, level)
    if t_mem is None or not len(loss):
        return []
    after = loss[loss.index >= t_mem]
    low = after.cummin()
    high = (after >= factor * low) & (after >= minimum)
    spans = phase_spans(phases, float(after.index[-1]))
    spikes, stretch = [], []
    for step, is_high in list(high.items()) + [(None, False)]:
        if is_high:
            stretch.append(step)
            continue
        if stretch:
            peak = int(after[stretch].idxmax())
            before = after[after.index < stretch[0]]
            phase = next((p for p, a, b in spans if a <= peak <= b), "")
            spikes.append(Spike(peak, float(before.min()), int(before.idxmin()), float(after[peak]), phase))
            stretch = []
    return spikes


def spike_text(s: Spike) -> str:
    from ..analyses.phases import fmt

    from .common import PHASE_LABELS

    where = f", in {PHASE_LABELS.get(s.phase, s.phase)}" if s.phase else ""
    return (f"the train loss spiked after memorisation: {fmt(None, s.low)} (step {steps_text(s.low_step)}) → "
            f"{fmt(None, s.peak)} at step {steps_text(s.step)}{where}")
