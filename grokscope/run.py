"""A run directory: its file names, its schedule, its sizes, and ``Run``/``load_run`` to read it.

    <run>/config.json                 RunConfig: rebuilds the model and the data
    <run>/data.safetensors            the exact equations, split and outliers of the run
    <run>/metrics.csv                 step, train/val loss and accuracy, lr, weight norm, wall time
    <run>/ckpt/step_00001000.safetensors   weights; keys are the HookedTransformer's state-dict names
    <run>/state.safetensors           the latest resume state (weights, optimiser, RNG, Grokfast EMA)
    <run>/provenance.json             versions, machine, device, precision of each training session

Every file is written atomically (``files.atomic_save``: a temporary name in the same folder, renamed
into place), so a file under its final name is always complete. Weights are only ever read with
safetensors. The resume state's format and checks are ``resume``'s.

This module owns the folder: its file names, ``schedule`` (which steps get metrics and checkpoints),
``estimate``/``check_fits`` (the memory and disk a config needs, from the real parameter count, batch
size and schedule), ``prepare`` (a new run checked, or a run to resume with its resume state read and
checked, before anything is written), ``RunWriter`` (the files while it trains) and ``Run``/``load_run``
(reading it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .config import RunConfig, batch_size
from .errors import GrokscopeError
from .files import (DIGEST_KEY, atomic_save, atomic_write_text, fmt_bytes, read_metadata, read_safetensors_meta, read_text,
                    remove_stale_temporaries, short_path)
from .resume import read_resume_state, read_state_step
from .tasks import Dataset, check_dataset, make_dataset
from .weights import load_weights

CONFIG_FILE = "config.json"
DATA_FILE = "data.safetensors"
PROVENANCE_FILE = "provenance.json"  # each training session: versions, machine, precision (grokscope.provenance)
METRICS_FILE = "metrics.csv"
STATE_FILE = "state.safetensors"
CKPT_DIR = "ckpt"
CKPT_PATTERN = re.compile(r"^step_(\d+)\.safetensors$")
# the live forecast (grokscope.forecast.LiveForecaster) at the evaluations where one was made, else empty:
# p_grok, the predicted grok step and its 80 % interval
FORECAST_COLUMNS = ["forecast_p", "forecast_step", "forecast_lo", "forecast_hi"]
METRIC_COLUMNS = ["step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "weight_norm", "elapsed_s",
                  "collapse", *FORECAST_COLUMNS]
# headers of runs written before a column existed (read with the missing columns NaN), newest first
OLDER_METRIC_HEADERS = [METRIC_COLUMNS[:-len(FORECAST_COLUMNS)],  # before the forecast columns
                        METRIC_COLUMNS[:-len(FORECAST_COLUMNS) - 1]]  # before the softmax-collapse column


def ckpt_name(step: int) -> str:
    return f"step_{step:08d}.safetensors"


def read_metrics(path: Path) -> pd.DataFrame:
    """The metrics CSV, checked: its columns, numbers, steps increasing. A half-written last line (a
    run killed mid-write) is dropped; anything else damaged is one clear error."""
    from io import StringIO

    if not path.exists():
        return pd.DataFrame(columns=METRIC_COLUMNS)
    text = read_text(path, "metrics file", limit=None)
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]
    if not lines:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    header = lines[0].split(",")
    if header != METRIC_COLUMNS and header not in OLDER_METRIC_HEADERS:
        raise GrokscopeError(f"metrics file {path} is damaged: its header is not {','.join(METRIC_COLUMNS)}")
    try:
        df = pd.read_csv(StringIO("\n".join(lines) + "\n"), dtype=float)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise GrokscopeError(f"metrics file {path} is damaged: {' '.join(str(e).split())[:150]}") from None
    step = df["step"]
    if len(df) and (step.isna().any() or not step.apply(float.is_integer).all() or (step < 0).any()
                    or not step.is_monotonic_increasing or not step.is_unique):
        raise GrokscopeError(f"metrics file {path} is damaged: its steps are not increasing whole numbers")
    for column in METRIC_COLUMNS[len(header):]:  # a run written before the column existed
        df[column] = float("nan")
    return df.astype({"step": "int64"}).reset_index(drop=True)


def stop_step(reached: int, margin: float) -> int:
    """The step at which a run that first reached ``stop_val_acc`` at step ``reached`` ends: the first
    evaluation at or after ``reached * (1 + stop_margin)`` (margin 0: at once)."""
    return int(math.ceil(reached * (1.0 + margin)))


def first_reached(metrics, level: float, column: str = "val_acc", *, count_step0: bool = False) -> int | None:
    """The first evaluated step whose ``column`` of the metrics (validation accuracy by default) is at
    least ``level``, or None. Step 0, the initial weights, counts only with ``count_step0``: early
    stopping waits for training (``stop_step``); a sweep's steps to 99 % count it, as the run report does."""
    m = metrics if count_step0 else metrics[metrics["step"] > 0]
    hit = m.loc[m[column] >= level, "step"]
    return int(hit.iloc[0]) if len(hit) else None


# --- the hopeless stop: a run whose forecast p_grok stays below stop_hopeless ends there -------------------
HOPELESS_MIN_FRACTION = 0.25  # never before this share of the budget
HOPELESS_PATIENCE = 3  # this many forecasts in a row below the level


def hopeless_step(steps, p_grok, level: float, budget: int) -> int | None:
    """The first step, at or after ``HOPELESS_MIN_FRACTION`` of the budget, whose forecast and the
    ``HOPELESS_PATIENCE - 1`` forecasts before it all gave p_grok below ``level``; None if there is none.
    ``steps``/``p_grok``: the evaluations in order, NaN where no forecast was made (skipped)."""
    if level <= 0:
        return None
    run = 0
    for step, p in zip(steps, p_grok):
        if p != p:  # NaN: no forecast at this evaluation
            continue
        run = run + 1 if p < level else 0
        if run >= HOPELESS_PATIENCE and step >= HOPELESS_MIN_FRACTION * budget:
            return int(step)
    return None


def _log_steps(total: int, every: int, log_points: int) -> set[int]:
    """The steps ``schedule`` adds to the multiples of ``every``: 0, ``total`` and the log-spaced ones."""
    steps = {0, total}
    if log_points > 0:
        hi = min(every, total)
        for i in range(log_points):
            steps.add(int(round(math.exp(math.log(hi) * i / max(1, log_points - 1)))))
    return {s for s in steps if 0 <= s <= total}


def schedule(total: int, every: int, log_points: int) -> list[int]:
    """Step 0, ``log_points`` log-spaced steps in [1, every], every multiple of ``every``, and ``total``."""
    steps = _log_steps(total, every, log_points)
    steps.update(range(every, total + 1, every))
    return sorted(steps)


def schedule_size(total: int, every: int, log_points: int, start: int = 0) -> int:
    """How many steps of ``schedule(total, every, log_points)`` are at or after ``start``, counted without
    listing them (a budget of 10^12 steps is refused by its estimate before any list of it is made)."""
    multiples = max(0, total // every - ((start - 1) // every if start > 0 else 0))
    return multiples + sum(1 for s in _log_steps(total, every, log_points)
                           if s >= start and not (s >= every and s % every == 0))


def config_json(cfg: RunConfig, data: Dataset) -> str:
    """A run's config.json: the RunConfig, and under "hooked_config" the model's config as TransformerLens'
    own dict (``HookedTransformerConfig.from_dict`` takes it on TL 3, ``TransformerBridge.boot_native`` on
    TL 4; see model.hooked_config_dict and docs/transformerlens.md)."""
    from .model import hooked_config_dict

    d = cfg.to_dict()
    d["hooked_config"] = hooked_config_dict(cfg.model, data.d_vocab, data.n_elements)
    return json.dumps(d, indent=2)


def slug(value: Any) -> str:
    """A value as a piece of a folder name: 0.5 -> "0.5", "x/y" -> "xdivy", "x*y" -> "xmuly"."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    text = text.replace("/", "div").replace("*", "mul").replace(" ", "")
    return "".join(c if c.isalnum() or c in "+-^.=" else "_" for c in text)


def default_run_dir(cfg: RunConfig) -> Path:
    """checkpoints/<op>_p<p>_f<frac>_s<seed>, the operation spelt as a sweep names its cells (x+y, x-y,
    xmuly, xdivy, x^2+y^2, ...): a different folder for every operation."""
    t = cfg.task
    return Path("checkpoints") / f"{slug(t.op) or 'op'}_p{t.p}_f{t.frac:g}_s{cfg.train.seed}"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / ckpt_name(step)


def stored_config(run_dir: str | Path) -> RunConfig:
    """A run's config.json as stored (not validated: ``Run`` does that)."""
    return RunConfig.load(Path(run_dir) / CONFIG_FILE, stored=True)


def resume_step(run_dir: str | Path) -> int:
    """The step a run resumes from: its resume state's own step, or 0 (no run, or no resume state yet)."""
    state = Path(run_dir) / STATE_FILE
    if is_run_dir(run_dir) and state.exists():
        return read_state_step(state)
    return 0


def is_run_dir(path: str | Path) -> bool:
    try:
        return (Path(path) / CONFIG_FILE).is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def legacy_run_id(path: Path) -> str:
    """The identity of a run made before runs had one: a hash of its config (as parsed: the same for the
    file re-indented; without its name, its budget ``train.steps``, which ``--resume --steps`` extends,
    and the derived "hooked_config") and of its data file's bytes."""
    import hashlib

    h = hashlib.sha256()
    try:
        cfg = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        for key in ("name", "run_id", "hooked_config"):
            cfg.pop(key, None)
        if isinstance(cfg.get("train"), dict):
            cfg["train"].pop("steps", None)
        h.update(json.dumps(cfg, sort_keys=True).encode())
    except (OSError, ValueError, AttributeError):
        h.update(b"-")
    try:
        h.update((path / DATA_FILE).read_bytes())
    except OSError:
        h.update(b"-")
    return "legacy-" + h.hexdigest()[:16]


def new_run_id() -> str:
    import uuid

    return uuid.uuid4().hex


def fingerprint(path: Path) -> str | None:
    """A cheap fingerprint of a checkpoint file: its size and modification time (ns)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def model_meta(cfg: RunConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg.model), sort_keys=True)


def model_diff(meta: dict[str, str], cfg: RunConfig) -> str:
    """The model settings a checkpoint's metadata records that ``cfg`` does not share ("act_fn 'relu' vs
    'gelu'", the checkpoint's first), or "" (the same, or none recorded: a checkpoint before they were)."""
    if "model" not in meta or meta["model"] == model_meta(cfg):
        return ""
    try:
        theirs = json.loads(meta["model"])
        diff = [f"{k} {theirs.get(k)!r} vs {v!r}" for k, v in dataclasses.asdict(cfg.model).items() if theirs.get(k) != v]
    except (ValueError, AttributeError):
        diff = []
    return "; ".join(diff[:3]) or "unreadable"


class Run:
    """A run directory on disk (possibly still being trained).

    ``steps`` is read from disk once (``refresh()`` reads it again, e.g. while the run grows)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not os.path.isdir(self.path):  # os.path: a name too long is "not there", not a traceback
            raise GrokscopeError(f"{self.path} is not a run directory (it does not exist)")
        if not is_run_dir(self.path):
            raise GrokscopeError(f"{self.path} is not a run directory (no {CONFIG_FILE})")
        self.config = stored_config(self.path)
        try:
            self.config.validate()
        except GrokscopeError as e:
            raise GrokscopeError(f"{self.path / CONFIG_FILE}: {e}") from None
        self.interrupted = False  # set by train() when Ctrl-C stopped it
        self._steps: list[int] | None = None
        self._step_set: set[int] = set()

    def __repr__(self) -> str:
        t = self.config.task
        return f"Run({str(self.path)!r}, op={t.op!r}, p={t.p}, frac={t.frac}, checkpoints={len(self.steps)})"

    @property
    def name(self) -> str:
        return self.config.name or self.path.name

    @cached_property
    def _data_meta(self) -> dict[str, str]:
        try:
            return read_metadata(self.path / DATA_FILE)
        except GrokscopeError:
            return {}  # missing or damaged: reading the data says so

    @property
    def stamped(self) -> bool:
        """Whether the run was made by a grokscope that stamps its files (digest and run id in each):
        its data file carries a digest. Then every checkpoint must carry both."""
        return DIGEST_KEY in self._data_meta

    @cached_property
    def run_id(self) -> str:
        """The run's identity, given when it was created: in config.json and in the data file (written
        once, at creation), which must agree; the data file's alone when config.json lost it; derived
        from the config and the data for runs made before runs had one (``legacy_run_id``)."""
        data_id = self._data_meta.get("run_id")
        if self.config.run_id and data_id and self.config.run_id != data_id:
            raise GrokscopeError(f"{self.path / CONFIG_FILE} names run {self.config.run_id} but {DATA_FILE} was "
                                 f"written for run {data_id}: one of them comes from another run")
        return self.config.run_id or data_id or legacy_run_id(self.path)

    @property
    def ckpt_dir(self) -> Path:
        return self.path / CKPT_DIR

    def refresh(self) -> "Run":
        """Read the checkpoint folder again at the next ``steps`` (a run may be growing)."""
        self._steps = None
        return self

    @property
    def steps(self) -> list[int]:
        """Sorted steps that have a checkpoint (read once; ``refresh()`` to read again)."""
        if self._steps is None:
            steps = []
            if self.ckpt_dir.is_dir():
                for entry in os.scandir(self.ckpt_dir):
                    m = CKPT_PATTERN.match(entry.name)
                    if m:
                        steps.append(int(m.group(1)))
            self._steps = sorted(steps)
            self._step_set = set(self._steps)
        return list(self._steps)

    def has_step(self, step: int) -> bool:
        if self._steps is None:
            self.steps
        return step in self._step_set

    def checkpoint_path(self, step: int) -> Path:
        return checkpoint_path(self.path, step)

    def fingerprints(self, steps) -> dict[int, str | None]:
        return {int(s): fingerprint(self.checkpoint_path(s)) for s in steps}

    @property
    def metrics(self) -> pd.DataFrame:
        return read_metrics(self.path / METRICS_FILE)

    @cached_property
    def data(self) -> Dataset:
        path = self.path / DATA_FILE
        tensors, meta = read_safetensors_meta(path, "dataset file")
        missing = [k for k in DATA_KEYS if k not in tensors]
        if missing:
            raise GrokscopeError(f"dataset file {path} is damaged: no {missing[0]}")
        bad = [k for k in DATA_KEYS if tensors[k].is_floating_point() or tensors[k].dtype == torch.bool
               or tensors[k].is_complex()]
        if bad:
            raise GrokscopeError(f"dataset file {path} is damaged: {bad[0]} is not an integer tensor")
        try:
            elements = json.loads(meta.get("elements", "[]"))
        except ValueError:
            elements = None
        if not isinstance(elements, list):
            raise GrokscopeError(f"dataset file {path} is damaged: its element list does not parse")
        t = self.config.task
        data = Dataset.from_tensors(t.op, t.p, [str(e) for e in elements], tensors)
        check_dataset(data, self.config, meta, f"dataset file {path}")
        return data

    @property
    def hooked_config(self):
        """The model's TransformerLens config (a ``HookedTransformerConfig`` on TransformerLens 3, a
        ``TransformerBridgeConfig`` on 4), from config.json's "hooked_config" (derived from the config and
        the data for runs saved before it was stored)."""
        from .model import hooked_config_dict, transformer_lens_config

        stored = json.loads((self.path / CONFIG_FILE).read_text()).get("hooked_config")
        if stored is None:
            stored = hooked_config_dict(self.config.model, self.data.d_vocab, self.data.n_elements)
        return transformer_lens_config(stored)

    @property
    def provenance(self) -> list[dict]:
        """One record per training session (versions, machine, device, threads, precision, command line),
        from provenance.json; [] for a run saved before it was recorded. See grokscope.provenance."""
        return read_provenance(self.path)

    @property
    def token_names(self) -> list[str]:
        """Name of every token: the elements (token i is element i; the answers are these), then the
        operation and "=". E.g. x+y mod 5: ["0", "1", "2", "3", "4", "x+y", "="]."""
        return self.data.token_names

    def decode(self, tokens):
        """Token ids (an int, a list or a tensor of any shape, such as ``run.data.train_x`` or the answers
        ``logits.argmax(-1)``) -> their names (``token_names``), in the same nesting."""
        return self.data.decode(tokens)

    def state_dict_at(self, step: int) -> dict[str, torch.Tensor]:
        if not self.has_step(step):
            near = self.steps
            hint = f"; it has {len(near)} checkpoints from {near[0]} to {near[-1]}" if near else "; it has none"
            raise GrokscopeError(f"run {self.path} has no checkpoint at step {step}{hint}")
        path = self.checkpoint_path(step)
        state, meta = read_safetensors_meta(path, "checkpoint")
        if meta.get("step") != str(step):
            raise GrokscopeError(f"checkpoint {path} holds step {meta.get('step')!r} by its own metadata, not {step}")
        self.check_belongs(meta, f"checkpoint {path}", "checkpoint")
        return state

    def check_belongs(self, meta: dict[str, str], what: str, kind: str) -> None:
        """A file's metadata against the run: the run id it names (and, in a stamped run, that it names one
        and carries a checksum, as everything grokscope writes does) and the model settings it records."""
        if meta.get("run_id") not in (None, self.run_id):
            raise GrokscopeError(f"{what} belongs to another run (id {meta['run_id']}, this run's is {self.run_id})")
        if self.stamped and ("run_id" not in meta or DIGEST_KEY not in meta):
            raise GrokscopeError(f"{what} carries no {'run id' if 'run_id' not in meta else 'checksum'}, as every "
                                 f"{kind} of this run does: it was re-saved outside grokscope")
        diff = model_diff(meta, self.config)
        if diff:
            raise GrokscopeError(f"{what} does not match the run's config: it was trained with other model settings "
                                 f"({diff}: {kind} vs config.json)")

    def model_mismatch(self) -> str | None:
        """How config.json's model settings differ from those the last checkpoint was trained with (its
        metadata; "act_fn 'relu' vs 'gelu'"), or None (they agree, or there is nothing to compare)."""
        for step in reversed(self.steps):
            try:
                return model_diff(read_metadata(self.checkpoint_path(step)), self.config) or None
            except GrokscopeError:
                continue
        return None

    def model_at(self, step: int, device: str | torch.device = "cpu"):
        """The model (HookedTransformer's interface on either TransformerLens major: ``model.build_model``)
        with the weights of ``step``, in eval mode."""
        from .model import build_model

        data = self.data
        model = build_model(self.config.model, data.d_vocab, data.n_elements, device="cpu")
        load_weights(model, self.state_dict_at(step), f"checkpoint {self.checkpoint_path(step)}")
        data.name_tokens(model)  # model.to_str_tokens(tokens) gives element names
        return model.to(device, print_details=False).eval()


DATA_KEYS = ("all_x", "all_y", "train_idx", "val_idx", "train_y", "outlier_pos")


def load_run(path: str | Path) -> Run:
    """Open a run directory written by ``grokscope.train``."""
    return Run(path)


# --- writing a run ------------------------------------------------------------------------------------
def disk_estimate(model, n_ckpts: int) -> tuple[int, int]:
    """Bytes of one checkpoint of ``model`` and of ``n_ckpts`` of them."""
    per = sum(v.numel() * v.element_size() for v in model.state_dict().values()) + 4096
    return per, per * n_ckpts


# --- sizes: refused up front when they cannot fit --------------------------------------------------------
@dataclass
class Estimate:
    n_equations: int
    n_params: int
    batch: int
    memory: int  # bytes of RAM (or device memory) at the peak, roughly
    disk: int  # bytes written by the whole schedule
    n_ckpts: int
    ckpt_bytes: int


def _n_elements(op, p: int) -> int:
    if not op.uses_p:
        return len(op.elements(p))
    if op.kind in ("modular", "multiplicative") or p > 1_000_000:
        return p
    return len(op.elements(p))


def _layout_sizes(m, n_elements: int) -> tuple[int, int]:
    """Parameters and checkpoint bytes of the model ``model.build_model`` makes for ``m``, from its state
    dict's layout (``model.hooked_state_layout``, the same on either TransformerLens major), with nothing
    built: float32 parameters, the attention's two buffers as HookedTransformer writes them, and the
    4096 bytes ``disk_estimate`` allows for a file's header."""
    from .model import attention_buffer, hooked_state_layout

    params = nbytes = 0
    for name, shape in hooked_state_layout(m, n_elements + 2, n_elements).items():
        if shape is None:
            buf = attention_buffer(name, torch.float32)
            nbytes += buf.numel() * buf.element_size()
        else:
            params += math.prod(shape)
            nbytes += math.prod(shape) * 4
    return params, nbytes + 4096


def model_size(m, n_elements: int) -> tuple[int, int]:
    """Parameters and checkpoint bytes of the model ``model.build_model`` makes for ``m``: those of the
    model's layout with one block and with two (every block is the same size), so that
    any depth is counted at once (remembered per model shape: a sweep's runs share a few)."""
    p1, b1, p2, b2 = _block_sizes(json.dumps(dataclasses.asdict(dataclasses.replace(m, n_layers=1)), sort_keys=True),
                                  n_elements)
    return p1 + (m.n_layers - 1) * (p2 - p1), b1 + (m.n_layers - 1) * (b2 - b1)


@functools.lru_cache(maxsize=64)
def _block_sizes(model_json: str, n_elements: int) -> tuple[int, int, int, int]:
    """Parameters and checkpoint bytes of the one-block model (``ModelConfig`` as JSON) and the two-block one."""
    from .config import ModelConfig

    m = ModelConfig(**json.loads(model_json))
    sizes = []
    for n_layers in (1, 2):
        sizes += list(_layout_sizes(dataclasses.replace(m, n_layers=n_layers), n_elements))
    return tuple(sizes)


def estimate(cfg: RunConfig, start: int = 0) -> Estimate:
    """Memory and disk that training ``cfg`` (from ``start``) needs, from the config alone: the real
    parameter count and checkpoint size (``model_size``), batch size (``config.batch_size``) and
    schedules (``schedule_size``)."""
    from .tasks import get_operation

    t, m, tr, s = cfg.task, cfg.model, cfg.train, cfg.schedule
    n_el = _n_elements(get_operation(t.op), t.p)
    N = n_el * n_el
    P, ckpt_bytes = model_size(m, n_el)
    B = batch_size(cfg, max(1, int(round(t.frac * N))))
    copies = 6 + (tr.wd_target == "init") + (tr.grokfast_lambda > 0) + (tr.weight_noise > 0)
    per_row = 4 * (m.n_layers * (12 * m.d_model + 3 * m.d_mlp + 12 * m.n_heads) + 3 * n_el) * 4
    evals = schedule_size(tr.steps, s.eval_every, s.eval_log_points)
    ckpts = schedule_size(tr.steps, s.ckpt_every, s.ckpt_log_points)
    memory = (300 * N  # building the equation table (Python objects), then its tensors
              + 4 * P * copies
              + per_row * (B + min(1024, N))
              + 80 * (evals + ckpts))  # the schedules
    remaining = schedule_size(tr.steps, s.ckpt_every, s.ckpt_log_points, start)
    disk = ckpt_bytes * remaining + 4 * P * 4 + 200 * evals + 48 * N
    return Estimate(N, P, B, memory, disk, remaining, ckpt_bytes)


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path: Path) -> int | None:
    import shutil

    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def check_fits(cfg, run_dir: Path, start: int = 0) -> Estimate:
    """Refuse, with the estimate in the line, a run whose memory or disk cannot fit on this machine."""
    e = estimate(cfg, start)
    mem = available_memory()
    if mem is not None and e.memory > mem:
        raise GrokscopeError(f"this run needs about {fmt_bytes(e.memory)} of memory ({e.n_equations:,} equations, "
                             f"{e.n_params:,} parameters, batch {e.batch:,}); {fmt_bytes(mem)} is available")
    free = free_disk(run_dir)
    if free is not None and e.disk > free:
        raise GrokscopeError(f"this run needs about {fmt_bytes(e.disk)} of disk ({e.n_ckpts:,} checkpoints x "
                             f"{fmt_bytes(e.ckpt_bytes)}); {fmt_bytes(free)} is free at {short_path(run_dir)}")
    return e


@dataclass
class Prepared:
    """A run directory about to be trained: its config, data and where training starts."""

    run_dir: Path
    cfg: RunConfig
    data: Dataset
    start: int = 0
    state: dict[str, torch.Tensor] | None = None  # the resume state, when there is one
    new: bool = True
    metrics: "object | None" = None  # on resume: the metrics rows kept (checked when read)
    rewrite_config: bool = True  # on resume: only when --steps gives a new budget (config.json is never rewritten otherwise)


def prepare(config: RunConfig | None = None, out: str | Path | None = None, *, resume: str | Path | None = None,
            steps: int | None = None) -> Prepared:
    """Check everything about a new run (or a resumed one) before anything is written.

    On resume: the config, data, metrics and resume state are read and checked (the state's step
    within the run, its shapes, dtypes and values against the model); ``steps`` may only extend the
    run's budget. A new run gets its identity (``run_id``) here; sizes that cannot fit are refused."""
    if resume is not None:
        return _prepare_resume(Path(resume), steps)
    return _prepare_new(config, out, steps)


def _prepare_resume(run_dir: Path, steps: int | None) -> Prepared:
    if not is_run_dir(run_dir):
        raise GrokscopeError(f"cannot resume {run_dir}: not a run directory (no {CONFIG_FILE})")
    run = Run(run_dir)
    cfg = run.config
    old_steps = cfg.train.steps
    if steps is not None and steps != cfg.train.steps:
        if steps < cfg.train.steps:
            raise GrokscopeError(f"--steps can only extend a run's budget: {run_dir} has {cfg.train.steps} "
                                 f"steps, got {steps}")
        cfg.train.steps = steps
        cfg.validate()
    cfg.run_id = run.run_id  # a run made before runs had an identity keeps the one derived for it
    check_write_targets(run)
    mismatch = run.model_mismatch()
    if mismatch:
        raise GrokscopeError(f"cannot resume {run_dir}: config.json's model settings differ from those its checkpoints "
                             f"were trained with ({mismatch}: checkpoints vs config.json); put config.json back")
    prep = Prepared(run_dir, cfg, run.data, new=False, rewrite_config=cfg.train.steps != old_steps)
    metrics = read_metrics(run_dir / METRICS_FILE)
    state_path = run_dir / STATE_FILE
    if state_path.exists():  # else: killed before the first resume state: start over, same result
        prep.start, prep.state = read_resume_state(state_path, cfg, prep.data, old_steps)
        check_state_against_checkpoint(run, prep.start, prep.state, read_metadata(state_path),
                                       f"resume state {state_path}")
    prep.metrics = metrics[metrics["step"] <= prep.start] if prep.start > 0 else metrics.iloc[0:0]
    if cfg.train.steps > old_steps:
        check_fits(cfg, run_dir, prep.start)
    return prep


def check_write_targets(run: Run) -> None:
    """Refuse a run whose ``ckpt/`` is not a folder of its own inside the run folder (a symbolic link to
    another run's ``ckpt/``: a resume would write that run's checkpoints). The run folder itself is
    locked by its real path; every other file is replaced by a rename, which never writes through a link."""
    real_run = os.path.realpath(run.path)
    ckpt = run.ckpt_dir
    if os.path.lexists(ckpt) and (os.path.islink(ckpt) or os.path.realpath(ckpt) != os.path.join(real_run, CKPT_DIR)):
        raise GrokscopeError(f"{ckpt} resolves to {os.path.realpath(ckpt)}, outside the run folder: a resume would write "
                             f"its checkpoints there; make {ckpt} a folder of the run's own")


def check_state_against_checkpoint(run: Run, step: int, state: dict[str, torch.Tensor], meta: dict[str, str],
                                   what: str) -> None:
    """A resume state belongs to its run and to the run's checkpoint at its step: the run id, model
    settings and checkpoint digest its metadata records (states written before they were recorded have
    none), and the weights of that checkpoint (read with every check of ``Run.state_dict_at``). A state
    edited to another step, or copied from another run, is refused before anything is written. Without
    that checkpoint (removed by hand) only the metadata is compared."""
    run.check_belongs(meta, what, "resume state")
    if not run.has_step(step):
        return
    path = run.checkpoint_path(step)
    if meta.get("ckpt_digest") and meta["ckpt_digest"] != read_metadata(path).get(DIGEST_KEY):
        raise GrokscopeError(f"{what} (step {step}) was saved with another {path.name} than the one there now: "
                             f"the checkpoint or the state was replaced")
    weights = run.state_dict_at(step)
    differ = [k for k, v in weights.items() if f"model.{k}" not in state or not torch.equal(state[f"model.{k}"], v)]
    if differ:
        raise GrokscopeError(f"{what} (step {step}) does not hold the weights of the run's checkpoint "
                             f"{run.checkpoint_path(step).name} ({differ[0]} differs): it was edited or comes from "
                             f"another run; resuming from it would overwrite the run's later checkpoints")


NAME_MAX, PATH_MAX = 200, 3000  # bytes of a run folder's name and path (what the file system takes, with room)


def check_path_length(path: Path, what: str) -> None:
    if "\x00" in str(path):
        raise GrokscopeError(f"the {what}'s path holds a NUL byte")
    name, whole = len(path.name.encode("utf-8", "surrogateescape")), len(str(path).encode("utf-8", "surrogateescape"))
    if name > NAME_MAX:
        raise GrokscopeError(f"the {what}'s name is too long ({name} bytes; at most {NAME_MAX})")
    if whole > PATH_MAX:
        raise GrokscopeError(f"the {what}'s path is too long ({whole} bytes; at most {PATH_MAX})")


def _prepare_new(config: RunConfig | None, out: str | Path | None, steps: int | None) -> Prepared:
    cfg = (config or RunConfig()).copy()
    if steps is not None:
        cfg.train.steps = steps
    cfg.validate()
    if out is not None and not str(out).strip():
        raise GrokscopeError("the run folder (out) is empty; name a folder")
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    check_path_length(run_dir, "run folder")
    if is_run_dir(run_dir):
        raise GrokscopeError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise GrokscopeError(f"{run_dir} exists and is not a folder")
    check_fits(cfg, run_dir)
    data = make_dataset(cfg.task.op, cfg.task.p, cfg.task.frac, cfg.task.seed, cfg.task.outliers)
    if not cfg.name:
        cfg.name = run_dir.name
    cfg.run_id = new_run_id()
    return Prepared(run_dir, cfg, data)


class RunWriter:
    """The files of one run while it trains: the metrics rows, the checkpoints and the resume state.

    Creating it writes a new run's folder (``config.json`` last: its presence marks a run) or, on
    resume, drops the metrics rows past the resume point (they are recomputed identically). Whoever
    creates it holds the run folder's lock (``locks.FolderLock``)."""

    def __init__(self, prep: Prepared):
        self.prep, self.run_dir, cfg = prep, prep.run_dir, prep.cfg
        self.ckpt_dir = self.run_dir / CKPT_DIR
        s = cfg.schedule
        self.eval_steps = set(schedule(cfg.train.steps, s.eval_every, s.eval_log_points))
        self.ckpt_steps = schedule(cfg.train.steps, s.ckpt_every, s.ckpt_log_points)
        self.ckpt_meta = {"run_id": cfg.run_id, "model": model_meta(cfg)}
        kept = self._create() if prep.new else self._reopen()
        self.kept = kept if kept is not None else read_metrics(self.run_dir / METRICS_FILE)  # the rows before the start
        try:
            self.metrics_f = open(self.run_dir / METRICS_FILE, "a", buffering=1)
        except OSError as e:
            raise GrokscopeError(f"cannot write {self.run_dir / METRICS_FILE}: {e.strerror}") from None
        self.last_state = prep.start
        # early stop: training ends at the first evaluation (after step 0) with val_acc >= stop_at, or
        # stop_margin later (see stop_step)
        self.stop_at, self.margin = cfg.train.stop_val_acc, cfg.train.stop_margin
        self.reached: int | None = None  # the first evaluation with val_acc >= stop_at
        self.stopped = False
        # the hopeless stop: the run ends where its forecasts' p_grok stays below ``hopeless`` (hopeless_step)
        self.hopeless, self.budget = cfg.train.stop_hopeless, cfg.train.steps
        self.forecasts: tuple[list[int], list[float]] = ([], [])  # (step, p_grok) of each forecast so far
        self.hopeless_at: int | None = None
        if not prep.new and prep.start > 0 and len(kept):
            made = kept[kept["forecast_p"].notna()]
            self.forecasts = ([int(v) for v in made["step"]], [float(v) for v in made["forecast_p"]])
            self.hopeless_at = hopeless_step(*self.forecasts, self.hopeless, self.budget)
            if self.stop_at > 0:
                self.reached = first_reached(kept, self.stop_at)
            self.stopped = int(kept.iloc[-1]["step"]) == prep.start and self.ends(prep.start, float(kept.iloc[-1]["val_acc"]))

    def _create(self) -> None:
        """A new run's folder: the data, an empty metrics file, then config.json (which marks a run)."""
        prep, cfg = self.prep, self.prep.cfg
        remove_stale_temporaries(self.run_dir, self.ckpt_dir)  # a start killed before config.json was written
        try:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            atomic_save(prep.data.tensors(), self.run_dir / DATA_FILE,
                        {"elements": json.dumps(prep.data.elements), "op": cfg.task.op, "p": str(cfg.task.p),
                         "run_id": cfg.run_id})
            atomic_write_text(self.run_dir / METRICS_FILE, ",".join(METRIC_COLUMNS) + "\n")
            atomic_write_text(self.run_dir / CONFIG_FILE, config_json(cfg, prep.data))
        except (OSError, GrokscopeError) as e:
            for name in (DATA_FILE, METRICS_FILE):  # nothing marks a run: config.json comes last
                with contextlib.suppress(OSError):
                    (self.run_dir / name).unlink()
            with contextlib.suppress(OSError):
                self.ckpt_dir.rmdir()
            if isinstance(e, GrokscopeError):
                raise
            raise GrokscopeError(f"cannot write run directory {self.run_dir}: {e.strerror}") from None

    def _reopen(self) -> pd.DataFrame:
        """A resumed run: config.json rewritten for a new budget only, the metrics rows up to the resume point
        kept (returned)."""
        prep = self.prep
        remove_stale_temporaries(self.run_dir, self.ckpt_dir)  # what a killed session (or sweep worker) left
        kept = prep.metrics if prep.metrics is not None else read_metrics(self.run_dir / METRICS_FILE).iloc[0:0]
        if prep.rewrite_config:  # a new --steps budget (and the run's id); else config.json stays as it is
            atomic_write_text(self.run_dir / CONFIG_FILE, config_json(prep.cfg, prep.data))
        atomic_write_text(self.run_dir / METRICS_FILE, kept[METRIC_COLUMNS].to_csv(index=False) if len(kept)
                          else ",".join(METRIC_COLUMNS) + "\n")
        return kept

    def ends(self, step: int, val_acc: float) -> bool:
        """Whether the run ends at this evaluation: early stop (see ``stop_step``) or the hopeless stop
        (see ``hopeless_step``; the forecasts up to this step are recorded)."""
        if self.hopeless_at is not None and step >= self.hopeless_at:
            return True
        if self.stop_at <= 0 or step <= 0:
            return False
        if self.reached is None and val_acc >= self.stop_at:
            self.reached = step
        return self.reached is not None and step >= stop_step(self.reached, self.margin)

    def remaining_ckpts(self) -> int:
        return sum(1 for c in self.ckpt_steps if c >= self.prep.start)

    def record(self, step: int, row: tuple, forecast: tuple | None = None) -> None:
        """row: train_loss, train_acc, val_loss, val_acc, lr, weight_norm, elapsed_s, collapse; ``forecast``:
        p_grok, grok step, interval low and high (None where not given), or None (no forecast here)."""
        cells = [repr(float(v)) for v in row]
        cells += ["" if v is None else repr(float(v)) for v in forecast or (None,) * len(FORECAST_COLUMNS)]
        if forecast is not None and self.hopeless_at is None:
            self.forecasts[0].append(step)
            self.forecasts[1].append(float(forecast[0]))
            self.hopeless_at = hopeless_step(*self.forecasts, self.hopeless, self.budget)
        try:
            self.metrics_f.write(f"{step}," + ",".join(cells) + "\n")
        except OSError as e:
            raise GrokscopeError(f"cannot write {self.run_dir / METRICS_FILE}: {e.strerror}") from None

    def save_ckpt(self, step: int, state_dict: dict[str, torch.Tensor]) -> None:
        atomic_save(state_dict, self.ckpt_dir / ckpt_name(step), {"step": str(step), **self.ckpt_meta})

    def save_state(self, step: int, tensors: dict[str, torch.Tensor]) -> None:
        """The resume state, saved at a step that has a checkpoint: its metadata names the run, the model
        settings and the checkpoint it belongs to (that file's digest; see check_state_against_checkpoint)."""
        meta = {"step": str(step), **self.ckpt_meta}
        with contextlib.suppress(GrokscopeError):
            meta["ckpt_digest"] = read_metadata(self.ckpt_dir / ckpt_name(step)).get(DIGEST_KEY, "")
        atomic_save(tensors, self.run_dir / STATE_FILE, meta)
        self.last_state = step

    def state_due(self, step: int) -> bool:
        return step - self.last_state >= self.prep.cfg.schedule.state_every or step == self.prep.cfg.train.steps

    def close(self) -> None:
        try:
            self.metrics_f.close()
        except OSError:
            pass


# --- provenance.json: each training session's record (what it holds: grokscope.provenance) ----------------
def read_provenance(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's training sessions, oldest first ([] for a run saved before provenance was recorded)."""
    try:
        d = json.loads((Path(run_dir) / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return []
    sessions = d.get("sessions") if isinstance(d, dict) else None
    return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []


def append_session(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Add one training session's record to ``<run_dir>/provenance.json`` (atomically)."""
    sessions = read_provenance(run_dir)
    sessions.append(record)
    atomic_write_text(Path(run_dir) / PROVENANCE_FILE, json.dumps({"sessions": sessions}, indent=1) + "\n")
