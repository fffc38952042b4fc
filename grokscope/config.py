"""RunConfig: everything that defines a run (task, model, training recipe, schedule), JSON in and out.

The schema is written once: each field is declared with its default, its ``grokscope train`` flag, the
flag's help and the checks on its value (``opt(...)``). From that come the train flags and their help
(with the real defaults), the coercion of values from JSON, flags and grid files (``set_field``,
``parse_values``), ``RunConfig.validate``, the sweep axes (``axes``) and the seed rule (``set_flags``).
Adding a field: declare it here, use it in training; the CLI and the sweeps follow.

The Figure 2 (left) optimiser variants and the presets are data (name -> what it is, field values
over the defaults); the stored config always holds the resolved fields, so it alone rebuilds the run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import GrokscopeError, did_you_mean


# --- the schema: each field once, with its flag, help and checks ---------------------------------
MAX_INT = 2**63 - 1
MAX_SEED = 2**63 - 2  # training seeds the generator with seed + 1
MAX_LOG_POINTS = 1_000_000  # more log-spaced steps than that only repeat steps
ACT_FNS = ("relu", "gelu", "gelu_new", "silu")
POS_EMBEDS = ("learned", "sinusoidal", "none")
BIASES = ("trained", "zero")
NORMS = ("LN", "RMS", "none")
WD_TARGETS = ("origin", "init")
WD_MODES = ("decoupled", "l2")
LOSS_DTYPES = ("float64", "float32")
SOFTMAXES = ("softmax", "stablemax")
GROKFAST_FILTERS = ("ema", "ma")


@dataclass(frozen=True)
class Check:
    """One rule on a field's value: ``ok(value)``, else "<field> <says>, got <value>"."""

    ok: Callable[[Any], bool]
    says: str

    def __call__(self, label: str, value: Any) -> None:
        if not self.ok(value):
            raise GrokscopeError(f"{label} {self.says}, got {value!r}" if isinstance(value, str)
                                 else f"{label} {self.says}, got {value}")


def at_least(n: int) -> Check:
    return Check(lambda v: v >= n, f"must be at least {n}")


def at_most(n: int) -> Check:
    return Check(lambda v: v <= n, f"must be at most {n}")


def one_of(options: tuple[str, ...]) -> Check:
    return Check(lambda v: v in options, f"must be one of {', '.join(options)}")


def within(lo: float, hi: float, brackets: str = "[)") -> Check:
    """lo..hi, each end closed ("[", "]") or open ("(", ")")."""
    low = (lambda v: v >= lo) if brackets[0] == "[" else (lambda v: v > lo)
    high = (lambda v: v <= hi) if brackets[1] == "]" else (lambda v: v < hi)
    return Check(lambda v: low(v) and high(v), f"must be in {brackets[0]}{lo:g}, {hi:g}{brackets[1]}")


POSITIVE = Check(lambda v: v > 0, "must be positive")
NON_NEGATIVE = Check(lambda v: v >= 0, "must not be negative")
SEED = Check(lambda v: 0 <= v <= MAX_SEED, f"must be in 0..{MAX_SEED} (2**63 - 2)")
DEVICE = Check(lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]{1,4})?", v) is not None,
               "must be auto, cpu, cuda, cuda:N or mps")


@dataclass(frozen=True)
class Option:
    """What the schema says of a field besides its default (``dataclasses.field`` metadata).

    ``flag``: its ``grokscope train`` flag (and sweep axis), None for none; ``help``: the flag's help,
    where ``{default}`` stands for the default (``default_text`` when the number alone would not say
    it); ``checks``: what ``RunConfig.validate`` requires (``label`` names the field in the message);
    ``switch``: a plain on-switch (``--full-batch``), not a value and not a sweep axis; ``sweep``:
    False for a value every run of a sweep shares (it can be fixed, not swept)."""

    flag: str | None = None
    help: str = ""
    checks: tuple[Check, ...] = ()
    label: str | None = None
    default_text: str | None = None
    switch: bool = False
    sweep: bool = True


def opt(default: Any, flag: str | None = None, help: str = "", *checks: Check, **more: Any) -> Any:
    """A config field: its default, flag, help and checks, declared once (see ``Option``)."""
    return field(default=default, metadata={"option": Option(flag, help, checks, **more)})


@dataclass
class TaskConfig:
    op: str = opt("x/y", "op", "operation (list them: grokscope ops)")
    p: int = opt(97, "p", "modulus / prime p (default {default})", at_least(2))
    frac: float = opt(0.5, "frac", "training fraction, in (0, 1)", within(0, 1, "()"), label="training fraction")
    # seed of the split and of the outliers
    seed: int = opt(0, "split-seed", "seed of the split and outliers (default: {default})", SEED,
                    label="split seed (task.seed)", default_text="--seed")
    # k training equations whose answer is replaced (appendix A.4)
    outliers: int = opt(0, "outliers", "k training equations with a wrong answer (appendix A.4)", NON_NEGATIVE)


@dataclass
class ModelConfig:
    n_layers: int = opt(2, "n-layers", "transformer blocks (default {default})", at_least(1))
    d_model: int = opt(128, "d-model", "width (default {default})", at_least(1))
    n_heads: int = opt(4, "n-heads", "attention heads (default {default})", at_least(1))
    d_mlp: int = opt(512, "d-mlp", "MLP width (default {default})", at_least(1))
    act_fn: str = opt("relu", "act-fn", ", ".join(ACT_FNS), one_of(ACT_FNS))
    # "learned", "sinusoidal" (fixed, not trained; as the paper's code) or "none" (frozen at zero: no position
    # information, as Prieto et al.'s nn.TransformerEncoder)
    pos_embed: str = opt("learned", "pos-embed", "learned, sinusoidal (fixed) or none (zero)", one_of(POS_EMBEDS))
    # "trained" or "zero" (frozen at zero; as the paper's code)
    biases: str = opt("trained", "biases", "trained or zero (frozen at zero)", one_of(BIASES))
    # "LN", "RMS" or "none" (HookedTransformer is pre-norm; the paper's code was post-LN)
    norm: str = opt("LN", "norm", "LN, RMS or none", one_of(NORMS))


@dataclass
class TrainConfig:
    steps: int = opt(100_000, "steps", "optimisation budget (default {default})", POSITIVE)
    variant: str = "adamw"  # the named recipe the fields below came from (informational; --variant applies one)
    lr: float = opt(1e-3, "lr", "learning rate (default {default})", POSITIVE)
    # decoupled (AdamW); 0 gives Adam
    weight_decay: float = opt(1.0, "weight-decay", "weight decay, decoupled unless --wd-mode l2 (default {default})",
                              NON_NEGATIVE)
    # "origin" or "init": decay towards the initial weights
    wd_target: str = opt("origin", "wd-target", "origin or init", one_of(WD_TARGETS))
    # "decoupled" (AdamW: W shrinks by lr * wd) or "l2": wd * W added to the gradient before Adam's moments
    # (torch.optim.Adam's weight_decay, what Lee et al.'s Grokfast code uses), after ⊥Grad and Grokfast
    wd_mode: str = opt("decoupled", "wd-mode", "{default} (default; AdamW) or l2: wd * W added to the gradient "
                       "before Adam's moments (torch.optim.Adam's weight_decay)", one_of(WD_MODES))
    beta1: float = opt(0.9, "beta1", "Adam beta1 (default {default})", within(0, 1))
    beta2: float = opt(0.98, "beta2", "Adam beta2 (default {default})", within(0, 1))
    # the epsilon in Adam's denominator (torch's default 1e-8; Prieto et al. use 1e-25)
    adam_eps: float = opt(1e-8, "adam-eps", "Adam epsilon (default {default})", POSITIVE)
    # linear learning-rate warm-up over the first updates
    warmup: int = opt(10, "warmup", "linear warm-up updates (default {default})", NON_NEGATIVE)
    batch_size: int = opt(0, "batch-size", "minibatch (default {default})", NON_NEGATIVE,
                          default_text="min(512, half the training set)")
    full_batch: bool = opt(False, "full-batch", "exact gradient on the whole training set", switch=True)
    # W <- W + lr * (dW + s * eps)
    update_noise: float = opt(0.0, "update-noise", "Gaussian noise on the update, times lr", NON_NEGATIVE)
    # forward/backward at W + s * eps
    weight_noise: float = opt(0.0, "weight-noise", "std of Gaussian weight noise in the forward pass", NON_NEGATIVE)
    # dropout on each block's attention and MLP outputs
    resid_dropout: float = opt(0.0, "dropout", "residual dropout rate", within(0, 1))
    grokfast_alpha: float = opt(0.98, "grokfast-alpha", "Grokfast EMA decay (default {default})", within(0, 1))
    # 0: Grokfast off; Lee et al. use 2 (EMA) and 5 (MA)
    grokfast_lambda: float = opt(0.0, "grokfast-lambda", "Grokfast amplification; 0 = off (Lee et al.: 2 EMA, 5 MA)",
                                 NON_NEGATIVE)
    # "ema" (alpha) or "ma": the mean of the last grokfast_window gradients
    grokfast_filter: str = opt("ema", "grokfast-filter", "{default} (default) or ma: mean of the last "
                               "--grokfast-window gradients", one_of(GROKFAST_FILTERS))
    # Grokfast-MA window (Lee et al.'s default 100)
    grokfast_window: int = opt(100, "grokfast-window", "Grokfast-MA window (default {default})", at_least(1))
    # "softmax" or "stablemax" (Prieto et al. 2025) in the loss, training and evaluation
    softmax: str = opt("softmax", "softmax", "{default} (default) or stablemax (Prieto et al. 2025) in the loss",
                       one_of(SOFTMAXES))
    # ⊥Grad: remove from each tensor's gradient its component along the tensor
    orthograd: bool = opt(False, "orthograd", "⊥Grad: gradient minus its component along each weight tensor")
    # ...then rescale it to the original norm (the authors' optimiser does)
    orthograd_rescale: bool = opt(True, "orthograd-rescale", "⊥Grad: back to the gradient's norm (default {default})")
    # > 0: end the run at the first evaluation with val_acc >= this (0: whole budget)
    stop_val_acc: float = opt(0.0, "stop-val-acc", "end the run once validation accuracy reaches this (0: off)",
                              within(0, 1, "[]"))
    # with stop_val_acc reached at step T: train on until step T * (1 + stop_margin)
    stop_margin: float = opt(0.0, "stop-margin", "with --stop-val-acc reached at step T, train on until T*(1+margin)",
                             NON_NEGATIVE)
    # > 0: end the run once its live forecast's p_grok stays below this (run.hopeless_step: 3 forecasts in a row,
    # at or after 25 % of the budget; needs the live forecast)
    stop_hopeless: float = opt(0.0, "stop-hopeless", "end the run once its live forecast's p_grok stays below this "
                               "(3 forecasts in a row, after a quarter of the budget; 0: off; docs/forecast.md)",
                               within(0, 1, "[)"))
    # log-softmax of the answer logits in float64 (Nanda et al.) or float32
    loss_dtype: str = opt("float64", "loss-dtype", "{default} (default; Nanda et al.) or float32 log-softmax of the loss",
                          one_of(LOSS_DTYPES))
    # initialisation, batch order, noise and dropout
    seed: int = opt(0, "seed", "seed of initialisation, batches and noise", SEED)
    # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    device: str = opt("auto", "device", "auto (CUDA when present), cpu, cuda, cuda:N or mps", DEVICE, sweep=False)
    # torch.compile the training forward and backward (single runs; not with dropout)
    compile: bool = opt(False, "compile", "torch.compile the training step: faster steps after a one-time compile "
                        "(for long runs)", switch=True)


@dataclass
class ScheduleConfig:
    # metrics on the full sets every N steps...
    eval_every: int = opt(100, "eval-every", "metrics every N steps (plus log-spaced early steps)", at_least(1))
    # ...plus this many log-spaced steps before the first multiple
    eval_log_points: int = opt(20, "eval-log-points", "log-spaced early evaluations (default {default})",
                               NON_NEGATIVE, at_most(MAX_LOG_POINTS))
    # a checkpoint every N steps...
    ckpt_every: int = opt(1000, "ckpt-every", "checkpoint every N steps (plus log-spaced early steps)", at_least(1))
    # ...plus this many log-spaced early steps
    ckpt_log_points: int = opt(30, "ckpt-log-points", "log-spaced early checkpoints (default {default})",
                               NON_NEGATIVE, at_most(MAX_LOG_POINTS))
    # how often the resume state (optimiser, RNG) is saved, at a checkpoint
    state_every: int = opt(1000, "state-every", "save the resume state every N steps", at_least(1))


@dataclass
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    name: str = ""
    run_id: str = ""  # given to a run when it is created (see run.prepare); results name the run they came from

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
        from .files import read_text

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
                raise GrokscopeError(f"unknown config section {section!r}{did_you_mean(section, [*SECTIONS, 'name', 'run_id'])}")
            if not isinstance(values, dict):
                raise GrokscopeError(f"config section {section!r} must be an object")
            sub = getattr(self, section)
            for key, value in values.items():
                set_field(sub, key, value, where=section)
        return self

    def copy(self) -> "RunConfig":
        return RunConfig.from_dict(self.to_dict())

    def validate(self) -> "RunConfig":
        """Every field's checks (declared with it), then the rules between fields; the first problem
        is a GrokscopeError."""
        for section, f, value in self._values():
            if isinstance(value, float) and not math.isfinite(value):  # inf and NaN nowhere
                raise GrokscopeError(f"{f.name} must be a finite number, got {value}")
            if isinstance(value, int) and not isinstance(value, bool) and not (-MAX_INT <= value <= MAX_INT):
                raise GrokscopeError(f"{f.name} is out of range: {value} (at most {MAX_INT})")  # what torch takes
        for section, f, value in self._values():
            option = f.metadata.get("option")
            for check in option.checks if option else ():
                check(option.label or f.name, value)
        if len(self.name) > 255 or len(self.run_id) > 100:
            raise GrokscopeError("the run's name (at most 255 characters) or run_id (at most 100) is too long")
        if self.model.d_model % self.model.n_heads:
            raise GrokscopeError(f"d_model {self.model.d_model} is not divisible by n_heads {self.model.n_heads}")
        return self

    def _values(self):
        for section in SECTIONS:
            obj = getattr(self, section)
            for f in dataclasses.fields(obj):
                yield section, f, getattr(obj, f.name)


def batch_size(cfg: RunConfig, n_train: int) -> int:
    """The minibatch of a run whose training set has ``n_train`` equations: all of them (full batch),
    ``batch_size`` (at most all), or by default min(512, half the training set)."""
    if cfg.train.full_batch:
        return n_train
    if cfg.train.batch_size > 0:
        return min(cfg.train.batch_size, n_train)
    return max(1, min(512, n_train // 2))


SECTIONS = {"task": TaskConfig, "model": ModelConfig, "train": TrainConfig, "schedule": ScheduleConfig}
DERIVED = ("hooked_config",)  # keys of a run's config.json that follow from the config (see run.config_json)
# Fields a stored config.json written before the field existed gets instead of today's default, so an
# old run still means (and resumes as) what it trained with.
LEGACY_DEFAULTS = {("train", "loss_dtype"): "float32"}


# --- what the schema drives: values from text, the flags, the sweep axes ---------------------------------
_BOOLS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def switch(text: Any) -> bool:
    """A boolean field's value: true/false, 1/0, yes/no, on/off (``--orthograd`` alone is true)."""
    if isinstance(text, bool):
        return text
    value = _BOOLS.get(str(text).lower())
    if value is None:
        raise ValueError(text)
    return value


def coerce(kind: type, value: Any) -> Any:
    """``value`` (from JSON, a flag or a grid) as a field of type ``kind``; ValueError or TypeError
    when it is not one (an integer field refuses 2.5 and "2.5" rather than rounding; "1e5" is 100000)."""
    if kind is bool:
        return switch(value) if isinstance(value, str) else bool(value)
    if kind is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                value = float(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    return kind(value)


@dataclass(frozen=True)
class Field:
    """One config field as the schema declares it: where it lives, its type, default and ``Option``."""

    section: str
    name: str
    type: type
    default: Any
    option: Option

    @property
    def flag(self) -> str:
        return self.option.flag or ""

    @property
    def help(self) -> str:
        """The flag's help with the real default in it."""
        o, d = self.option, self.default
        return o.help.format(default=o.default_text or (str(d).lower() if isinstance(d, bool) else _short(d)))


def _short(value: Any) -> str:
    """97, 0.98, 1e-3, 1e5: the shorter of the plain and the scientific spelling."""
    if not isinstance(value, (int, float)):
        return str(value)
    plain = f"{value:g}" if isinstance(value, float) else str(value)
    mantissa, _, exponent = f"{value:e}".partition("e")
    sci = f"{float(mantissa):g}e{int(exponent)}"
    return sci if len(sci) < len(plain) else plain


def schema() -> list[Field]:
    """Every field of the four sections, in declaration order."""
    out = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out.append(Field(section, f.name, type(f.default), f.default, f.metadata.get("option") or Option()))
    return out


def flags() -> dict[str, Field]:
    """flag -> field, for every field that has a ``grokscope train`` flag."""
    return {f.flag: f for f in schema() if f.flag}


def axes() -> dict[str, Field]:
    """The sweep axes (besides ``variant``): every flag that takes a value."""
    return {flag: f for flag, f in flags().items() if not f.option.switch}


def parse_values(axis: str, text: Any) -> list:
    """A sweep axis's values: '0.3,0.5' -> [0.3, 0.5] with the field's type (a list from a grid file
    is taken item by item)."""
    items = text if isinstance(text, list) else [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise GrokscopeError(f"axis {axis}: no values")
    if axis != "variant" and axis not in axes():
        raise GrokscopeError(f"unknown sweep axis {axis!r}{did_you_mean(axis, ['variant', *axes()]) or '.'}")
    kind = str if axis == "variant" else axes()[axis].type
    out = []
    for v in items:
        try:
            out.append(coerce(kind, v))
        except (TypeError, ValueError, OverflowError):
            raise GrokscopeError(f"axis {axis}: bad value {v!r}") from None
    if len(set(out)) != len(out):
        raise GrokscopeError(f"axis {axis}: repeated values in {out}")
    return out


def set_field(obj: Any, key: str, value: Any, where: str = "") -> None:
    """Set one field of a section from JSON, a flag or a grid, coerced to its declared type."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if key not in fields:
        raise GrokscopeError(f"unknown config field {where + '.' if where else ''}{key}{did_you_mean(key, fields)}")
    try:
        value = coerce(type(fields[key].default), value)
    except (ValueError, KeyError, TypeError, OverflowError):
        raise GrokscopeError(f"config field {where + '.' if where else ''}{key}: bad value {value!r}") from None
    setattr(obj, key, value)


def set_flags(cfg: RunConfig, values: dict[str, Any], seed_sets_split: bool = True) -> RunConfig:
    """Set fields by flag name (``grokscope train`` flags, a sweep cell's axes): ``variant`` first (it
    resets the optimiser fields), then the others in order. The seed rule: ``seed`` also sets the split
    seed (task.seed) unless ``split-seed`` is among the values (or ``seed_sets_split`` is False)."""
    if values.get("variant") is not None:
        apply_variant(cfg, values["variant"])
    by_flag = flags()
    for flag, value in values.items():
        if flag != "variant" and value is not None:
            f = by_flag[flag]
            set_field(getattr(cfg, f.section), f.name, value, where=f.section)
    if seed_sets_split and values.get("seed") is not None and values.get("split-seed") is None:
        cfg.task.seed = cfg.train.seed
    return cfg


# --- Figure 2 (left) variants, in the paper's reading order: name -> (what it is, fields over the defaults)
_ADAM = {"weight_decay": 0.0}
VARIANT_TABLE: dict[str, tuple[str, dict[str, Any]]] = {
    "adam-fullbatch": ("Adam, full batch", {**_ADAM, "full_batch": True}),
    "adam": ("Adam, minibatch", dict(_ADAM)),
    "adam-fullbatch-update-noise": ("Adam, full batch, Gaussian noise on the update",
                                    {**_ADAM, "full_batch": True, "update_noise": 1.0}),
    "adam-dropout": ("Adam with residual dropout 0.1", {**_ADAM, "resid_dropout": 0.1}),
    "adamw": ("AdamW, weight decay 1 (the paper's default)", {"weight_decay": 1.0}),
    "adamw-to-init": ("AdamW, weight decay 1 towards the initialisation", {"weight_decay": 1.0, "wd_target": "init"}),
    "adam-lr3e-4": ("Adam, learning rate 3e-4", {**_ADAM, "lr": 3e-4}),
    "adam-lr3e-3": ("Adam, learning rate 3e-3", {**_ADAM, "lr": 3e-3}),
    "adam-weight-noise": ("Adam with Gaussian weight noise, std 0.01", {**_ADAM, "weight_noise": 0.01}),
}
VARIANTS: dict[str, dict[str, Any]] = {name: fields for name, (_, fields) in VARIANT_TABLE.items()}
VARIANT_HELP: dict[str, str] = {name: help_ for name, (help_, _) in VARIANT_TABLE.items()}
# What a variant resets to the defaults before it applies its own values: every field some variant sets.
VARIANT_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if any(f.name in v for v in VARIANTS.values()))


def apply_variant(cfg: RunConfig, name: str) -> RunConfig:
    """Reset the optimiser fields (``VARIANT_FIELDS``) to the defaults, then apply the named variant."""
    if name not in VARIANTS:
        raise GrokscopeError(f"unknown variant {name!r}{did_you_mean(name, VARIANTS) or '.'} Known: {', '.join(VARIANTS)}")
    base = TrainConfig()
    for key in VARIANT_FIELDS:
        setattr(cfg.train, key, getattr(base, key))
    for key, value in VARIANTS[name].items():
        setattr(cfg.train, key, value)
    cfg.train.variant = name
    return cfg


# --- Presets: name -> (what it is, a partial RunConfig over the defaults) ---------------------------------
PRESET_TABLE: dict[str, tuple[str, dict[str, Any]]] = {
    # The paper's default recipe and model (A.1.2) on division mod 97 with half the data.
    "paper": ("the paper's model and recipe: x/y mod 97, 50 %, AdamW wd 1, 1e5 steps", {}),
    # Figure 1 (left) / Figure 4: division mod 97, 50 %, Adam without weight decay, 1e6 steps.
    "fig1": ("Figure 1 left: x/y mod 97, 50 %, Adam without weight decay, 1e6 steps",
             {"train": {"steps": 1_000_000, "variant": "adam", "weight_decay": 0.0},
              "schedule": {"eval_every": 1000, "ckpt_every": 10000}}),
    # The textbook story on a CPU in under a minute, in Nanda et al.'s kind of model (one layer, no
    # LayerNorm, full batch: restricted and excluded loss are faithful there): x+y mod 31 at 40 %,
    # d_model 32, AdamW lr 5e-3 and weight decay 2 to make it quick. Memorisation by step ~125, a long
    # plateau with validation loss above chance while restricted loss falls, a clean jump near step
    # ~2000, then clean-up; the run stops at twice the step where validation reached 99 %.
    "quick": ("x+y mod 31, 40 %, one layer, d_model 32, full batch: groks on a CPU in under a minute, "
              "stops at 2x the grokking step",
              {"task": {"op": "x+y", "p": 31, "frac": 0.4},
               "model": {"n_layers": 1, "d_model": 32, "n_heads": 4, "d_mlp": 128, "norm": "none"},
               "train": {"steps": 6000, "lr": 5e-3, "weight_decay": 2.0, "full_batch": True, "stop_val_acc": 0.99,
                         "stop_margin": 1.0},
               "schedule": {"eval_every": 25, "eval_log_points": 10, "ckpt_every": 50, "ckpt_log_points": 10,
                            "state_every": 500}}),
    # Nanda et al. 2023 ("Progress measures for grokking"): x+y mod 113 at 30 %, one layer without
    # LayerNorm, full batch, AdamW lr 1e-3 wd 1, beta 0.9/0.98, float64 loss; until validation reaches
    # 99 % and as long again (clean-up ends after the validation jump), within 40 000 steps.
    "nanda": ("Nanda et al. 2023: x+y mod 113, 30 %, one layer, no LayerNorm, full batch; to 99 % validation "
              "and as long again",
              {"task": {"op": "x+y", "p": 113, "frac": 0.3},
               "model": {"n_layers": 1, "d_model": 128, "n_heads": 4, "d_mlp": 512, "norm": "none"},
               "train": {"steps": 40_000, "full_batch": True, "stop_val_acc": 0.99, "stop_margin": 1.0},
               "schedule": {"eval_every": 100, "ckpt_every": 100, "state_every": 1000}}),
}
PRESETS: dict[str, dict[str, Any]] = {name: fields for name, (_, fields) in PRESET_TABLE.items()}
PRESET_HELP: dict[str, str] = {name: help_ for name, (help_, _) in PRESET_TABLE.items()}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise GrokscopeError(f"unknown preset {name!r}{did_you_mean(name, PRESETS) or '.'} Known: {', '.join(PRESETS)}")
    return RunConfig().update(json.loads(json.dumps(PRESETS[name])))
