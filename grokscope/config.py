"""RunConfig: everything that defines a run (task, model, training recipe, schedule), JSON in and out.

The Figure 2 (left) optimiser variants and the presets are named sets of field values applied on top
of the defaults; the stored config always holds the resolved fields, so it alone rebuilds the run.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GrokscopeError


@dataclass
class TaskConfig:
    op: str = "x/y"
    p: int = 97
    frac: float = 0.5
    seed: int = 0  # seed of the split and of the outliers
    outliers: int = 0  # k training equations whose answer is replaced (appendix A.4)


@dataclass
class ModelConfig:
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    act_fn: str = "relu"
    pos_embed: str = "learned"  # "learned" or "sinusoidal" (fixed, not trained; as the paper's code)
    biases: str = "trained"  # "trained" or "zero" (frozen at zero; as the paper's code)
    norm: str = "LN"  # "LN", "RMS" or "none" (HookedTransformer is pre-norm; the paper's code was post-LN)


@dataclass
class TrainConfig:
    steps: int = 100_000
    variant: str = "adamw"  # the named recipe the fields below came from (informational)
    lr: float = 1e-3
    weight_decay: float = 1.0  # decoupled (AdamW); 0 gives Adam
    wd_target: str = "origin"  # "origin" or "init": decay towards the initial weights
    beta1: float = 0.9
    beta2: float = 0.98
    warmup: int = 10  # linear learning-rate warm-up over the first updates
    batch_size: int = 0  # 0: min(512, half the training set)
    full_batch: bool = False  # exact gradient on the whole training set
    update_noise: float = 0.0  # W <- W + lr * (dW + s * eps)
    weight_noise: float = 0.0  # forward/backward at W + s * eps
    resid_dropout: float = 0.0  # dropout on each block's attention and MLP outputs
    grokfast_alpha: float = 0.98
    grokfast_lambda: float = 0.0  # 0: Grokfast off; Lee et al. use 2 (EMA) and 5 (MA)
    grokfast_filter: str = "ema"  # "ema" (alpha) or "ma": the mean of the last grokfast_window gradients
    grokfast_window: int = 100  # Grokfast-MA window (Lee et al.'s default 100)
    softmax: str = "softmax"  # "softmax" or "stablemax" (Prieto et al. 2025) in the loss, training and evaluation
    orthograd: bool = False  # ⊥Grad: remove from each tensor's gradient its component along the tensor
    orthograd_rescale: bool = True  # ...then rescale it to the original norm (the authors' optimiser does)
    stop_val_acc: float = 0.0  # > 0: end the run at the first evaluation with val_acc >= this (0: whole budget)
    stop_margin: float = 0.0  # with stop_val_acc reached at step T: train on until step T * (1 + stop_margin)
    loss_dtype: str = "float64"  # log-softmax of the answer logits in float64 (Nanda et al.) or float32
    seed: int = 0  # initialisation, batch order, noise and dropout
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    compile: bool = False  # torch.compile the training forward and backward (single runs; not with dropout)


@dataclass
class ScheduleConfig:
    eval_every: int = 100  # metrics on the full sets every N steps...
    eval_log_points: int = 20  # ...plus this many log-spaced steps before the first multiple
    ckpt_every: int = 1000  # a checkpoint every N steps...
    ckpt_log_points: int = 30  # ...plus this many log-spaced early steps
    state_every: int = 1000  # how often the resume state (optimiser, RNG) is saved, at a checkpoint


@dataclass
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    name: str = ""
    run_id: str = ""  # given to a run when it is created (see guard.py); results name the run they came from

    # --- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        cfg = cls()
        cfg.update(d)
        return cfg

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise GrokscopeError(f"config is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise GrokscopeError("config must be a JSON object")
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path, stored: bool = False) -> "RunConfig":
        """Read a config file; ``stored``: a run's own config.json (fields it lacks take their
        ``LEGACY_DEFAULTS`` value: what the run was trained with)."""
        from .guard import read_text

        path = Path(path)
        text = read_text(path, "config")
        try:
            cfg = cls.from_json(text)
        except GrokscopeError as e:
            raise GrokscopeError(f"{path}: {e}") from None
        if stored:
            raw = json.loads(text)
            for (section, key), value in LEGACY_DEFAULTS.items():
                if key not in (raw.get(section) or {}):
                    setattr(getattr(cfg, section), key, value)
        return cfg

    def update(self, d: dict[str, Any]) -> "RunConfig":
        """Set fields from a (possibly partial) nested dict; unknown keys are an error."""
        for section, values in d.items():
            if section in ("name", "run_id"):
                if not isinstance(values, (str, int, float)) or isinstance(values, bool):
                    raise GrokscopeError(f"config field {section} must be a string, got {values!r}")
                setattr(self, section, str(values))
                continue
            if section in DERIVED:  # written beside the config in a run's config.json, recomputed from it
                continue
            if section not in SECTIONS:
                raise GrokscopeError(f"unknown config section {section!r}{_hint(section, [*SECTIONS, 'name', 'run_id'])}")
            if not isinstance(values, dict):
                raise GrokscopeError(f"config section {section!r} must be an object")
            sub = getattr(self, section)
            for key, value in values.items():
                set_field(sub, key, value, where=section)
        return self

    def copy(self) -> "RunConfig":
        return RunConfig.from_dict(self.to_dict())

    def validate(self) -> "RunConfig":
        t, m, tr, s = self.task, self.model, self.train, self.schedule
        for section in SECTIONS:  # inf and NaN nowhere; integers within what torch and the schedules take
            for f in dataclasses.fields(getattr(self, section)):
                value = getattr(getattr(self, section), f.name)
                if isinstance(value, float) and not math.isfinite(value):
                    raise GrokscopeError(f"{f.name} must be a finite number, got {value}")
                if isinstance(value, int) and not isinstance(value, bool) and not (-MAX_INT <= value <= MAX_INT):
                    raise GrokscopeError(f"{f.name} is out of range: {value} (at most {MAX_INT})")
        for key, value in (("seed", tr.seed), ("split seed (task.seed)", t.seed)):
            if not (0 <= value <= MAX_SEED):
                raise GrokscopeError(f"{key} must be in 0..{MAX_SEED} (2**63 - 2), got {value}")
        if t.p < 2:
            raise GrokscopeError(f"p must be at least 2, got {t.p}")
        if t.outliers < 0:
            raise GrokscopeError(f"outliers must not be negative, got {t.outliers}")
        if len(self.name) > 255 or len(self.run_id) > 100:
            raise GrokscopeError("the run's name (at most 255 characters) or run_id (at most 100) is too long")
        if not (0.0 < t.frac < 1.0):
            raise GrokscopeError(f"training fraction must be in (0, 1), got {t.frac}")
        for key, value in (("n_layers", m.n_layers), ("d_model", m.d_model), ("n_heads", m.n_heads), ("d_mlp", m.d_mlp)):
            if value < 1:
                raise GrokscopeError(f"{key} must be at least 1, got {value}")
        if m.d_model % m.n_heads:
            raise GrokscopeError(f"d_model {m.d_model} is not divisible by n_heads {m.n_heads}")
        for key, value, allowed in (("act_fn", m.act_fn, ACT_FNS), ("pos_embed", m.pos_embed, POS_EMBEDS), ("biases", m.biases, BIASES),
                                    ("norm", m.norm, NORMS), ("wd_target", tr.wd_target, WD_TARGETS)):
            if value not in allowed:
                raise GrokscopeError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        if tr.steps < 1:
            raise GrokscopeError(f"steps must be positive, got {tr.steps}")
        if not (0.0 <= tr.stop_val_acc <= 1.0):
            raise GrokscopeError(f"stop_val_acc must be in [0, 1], got {tr.stop_val_acc}")
        if not tr.stop_margin >= 0:
            raise GrokscopeError(f"stop_margin must not be negative, got {tr.stop_margin}")
        for key, value, allowed in (("softmax", tr.softmax, SOFTMAXES), ("grokfast_filter", tr.grokfast_filter, GROKFAST_FILTERS)):
            if value not in allowed:
                raise GrokscopeError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        if tr.grokfast_window < 1:
            raise GrokscopeError(f"grokfast_window must be at least 1, got {tr.grokfast_window}")
        if tr.loss_dtype not in LOSS_DTYPES:
            raise GrokscopeError(f"loss_dtype must be one of {', '.join(LOSS_DTYPES)}, got {tr.loss_dtype!r}")
        if not (0.0 <= tr.resid_dropout < 1.0):
            raise GrokscopeError(f"resid_dropout must be in [0, 1), got {tr.resid_dropout}")
        if not tr.lr > 0:
            raise GrokscopeError(f"lr must be positive, got {tr.lr}")
        for key in ("beta1", "beta2", "grokfast_alpha"):
            if not (0.0 <= getattr(tr, key) < 1.0):
                raise GrokscopeError(f"{key} must be in [0, 1), got {getattr(tr, key)}")
        for key in ("weight_decay", "warmup", "batch_size", "update_noise", "weight_noise", "grokfast_lambda"):
            if not getattr(tr, key) >= 0:
                raise GrokscopeError(f"{key} must not be negative, got {getattr(tr, key)}")
        for name in ("eval_every", "ckpt_every", "state_every"):
            if getattr(s, name) < 1:
                raise GrokscopeError(f"{name} must be at least 1, got {getattr(s, name)}")
        for name in ("eval_log_points", "ckpt_log_points"):
            if getattr(s, name) < 0:
                raise GrokscopeError(f"{name} must not be negative, got {getattr(s, name)}")
            if getattr(s, name) > MAX_LOG_POINTS:
                raise GrokscopeError(f"{name} must be at most {MAX_LOG_POINTS}, got {getattr(s, name)}")
        return self


MAX_INT = 2**63 - 1
MAX_SEED = 2**63 - 2  # training seeds the generator with seed + 1
MAX_LOG_POINTS = 1_000_000  # more log-spaced steps than that only repeat steps
SECTIONS = {"task": TaskConfig, "model": ModelConfig, "train": TrainConfig, "schedule": ScheduleConfig}
DERIVED = ("hooked_config",)  # keys of a run's config.json that follow from the config (see run.config_json)
ACT_FNS = ("relu", "gelu", "gelu_new", "silu")
POS_EMBEDS = ("learned", "sinusoidal")
BIASES = ("trained", "zero")
NORMS = ("LN", "RMS", "none")
WD_TARGETS = ("origin", "init")
LOSS_DTYPES = ("float64", "float32")
SOFTMAXES = ("softmax", "stablemax")
GROKFAST_FILTERS = ("ema", "ma")
# Fields a stored config.json written before the field existed gets instead of today's default, so an
# old run still means (and resumes as) what it trained with.
LEGACY_DEFAULTS = {("train", "loss_dtype"): "float32"}


def _hint(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def set_field(obj: Any, key: str, value: Any, where: str = "") -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if key not in fields:
        raise GrokscopeError(f"unknown config field {where + '.' if where else ''}{key}{_hint(key, fields)}")
    current = getattr(obj, key)
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[value.lower()]
            value = bool(value)
        elif isinstance(current, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            value = int(float(value)) if isinstance(value, str) else int(value)
        elif isinstance(current, float):
            value = float(value)
        elif isinstance(current, str):
            value = str(value)
    except (ValueError, KeyError, TypeError, OverflowError):
        raise GrokscopeError(f"config field {where + '.' if where else ''}{key}: bad value {value!r}") from None
    setattr(obj, key, value)


# --- Figure 2 (left) variants, in the paper's reading order -----------------------------------
_ADAM = {"weight_decay": 0.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "adam-fullbatch": {**_ADAM, "full_batch": True},
    "adam": dict(_ADAM),
    "adam-fullbatch-update-noise": {**_ADAM, "full_batch": True, "update_noise": 1.0},
    "adam-dropout": {**_ADAM, "resid_dropout": 0.1},
    "adamw": {"weight_decay": 1.0},
    "adamw-to-init": {"weight_decay": 1.0, "wd_target": "init"},
    "adam-lr3e-4": {**_ADAM, "lr": 3e-4},
    "adam-lr3e-3": {**_ADAM, "lr": 3e-3},
    "adam-weight-noise": {**_ADAM, "weight_noise": 0.01},
}
VARIANT_HELP = {
    "adam-fullbatch": "Adam, full batch",
    "adam": "Adam, minibatch",
    "adam-fullbatch-update-noise": "Adam, full batch, Gaussian noise on the update",
    "adam-dropout": "Adam with residual dropout 0.1",
    "adamw": "AdamW, weight decay 1 (the paper's default)",
    "adamw-to-init": "AdamW, weight decay 1 towards the initialisation",
    "adam-lr3e-4": "Adam, learning rate 3e-4",
    "adam-lr3e-3": "Adam, learning rate 3e-3",
    "adam-weight-noise": "Adam with Gaussian weight noise, std 0.01",
}


def apply_variant(cfg: RunConfig, name: str) -> RunConfig:
    """Reset the optimiser fields to the defaults, then apply the named variant."""
    if name not in VARIANTS:
        raise GrokscopeError(f"unknown variant {name!r}{_hint(name, VARIANTS) or '.'} Known: {', '.join(VARIANTS)}")
    base = TrainConfig()
    for key in ("lr", "weight_decay", "wd_target", "full_batch", "update_noise", "weight_noise", "resid_dropout"):
        setattr(cfg.train, key, getattr(base, key))
    for key, value in VARIANTS[name].items():
        setattr(cfg.train, key, value)
    cfg.train.variant = name
    return cfg


# --- Presets -------------------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's default recipe and model (A.1.2) on division mod 97 with half the data.
    "paper": {},
    # Figure 1 (left) / Figure 4: division mod 97, 50 %, Adam without weight decay, 1e6 steps.
    "fig1": {"train": {"steps": 1_000_000, "variant": "adam", "weight_decay": 0.0},
             "schedule": {"eval_every": 1000, "ckpt_every": 10000}},
    # The textbook story on a CPU in under a minute, in Nanda et al.'s kind of model (one layer, no
    # LayerNorm, full batch: restricted and excluded loss are faithful there): x+y mod 31 at 40 %,
    # d_model 32, AdamW lr 5e-3 and weight decay 2 to make it quick. Memorisation by step ~125, a long
    # plateau with validation loss above chance while restricted loss falls, a clean jump near step
    # ~2000, then clean-up; the run stops at twice the step where validation reached 99 %.
    "quick": {"task": {"op": "x+y", "p": 31, "frac": 0.4},
              "model": {"n_layers": 1, "d_model": 32, "n_heads": 4, "d_mlp": 128, "norm": "none"},
              "train": {"steps": 6000, "lr": 5e-3, "weight_decay": 2.0, "full_batch": True, "stop_val_acc": 0.99,
                        "stop_margin": 1.0},
              "schedule": {"eval_every": 25, "eval_log_points": 10, "ckpt_every": 50, "ckpt_log_points": 10,
                           "state_every": 500}},
    # Nanda et al. 2023 ("Progress measures for grokking"): x+y mod 113 at 30 %, one layer without
    # LayerNorm, full batch, AdamW lr 1e-3 wd 1, beta 0.9/0.98, float64 loss; until validation reaches
    # 99 % and as long again (clean-up ends after the validation jump), within 40 000 steps.
    "nanda": {"task": {"op": "x+y", "p": 113, "frac": 0.3},
              "model": {"n_layers": 1, "d_model": 128, "n_heads": 4, "d_mlp": 512, "norm": "none"},
              "train": {"steps": 40_000, "full_batch": True, "stop_val_acc": 0.99, "stop_margin": 1.0},
              "schedule": {"eval_every": 100, "ckpt_every": 100, "state_every": 1000}},
}
PRESET_HELP = {
    "paper": "the paper's model and recipe: x/y mod 97, 50 %, AdamW wd 1, 1e5 steps",
    "fig1": "Figure 1 left: x/y mod 97, 50 %, Adam without weight decay, 1e6 steps",
    "quick": "x+y mod 31, 40 %, one layer, d_model 32, full batch: groks on a CPU in under a minute, stops at 2x the grokking step",
    "nanda": "Nanda et al. 2023: x+y mod 113, 30 %, one layer, no LayerNorm, full batch; to 99 % validation and as long again",
}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise GrokscopeError(f"unknown preset {name!r}{_hint(name, PRESETS) or '.'} Known: {', '.join(PRESETS)}")
    return RunConfig().update(json.loads(json.dumps(PRESETS[name])))
