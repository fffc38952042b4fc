"""A run directory: its file names, atomic safetensors writes, and ``Run``/``load_run`` to read it.

    <run>/config.json                 RunConfig: rebuilds the model and the data
    <run>/data.safetensors            the exact equations, split and outliers of the run
    <run>/metrics.csv                 step, train/val loss and accuracy, lr, weight norm, wall time
    <run>/ckpt/step_00001000.safetensors   weights; keys are the HookedTransformer's state-dict names
    <run>/state.safetensors           the latest resume state (weights, optimiser, RNG, Grokfast EMA)
    <run>/provenance.json             versions, machine, device, precision of each training session

Every file is written to a temporary name in the same folder and renamed into place, so a file under
its final name is always complete. Weights are only ever read with safetensors.
"""
from __future__ import annotations

import json
import math
import os
import re
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import RunConfig
from .errors import GrokscopeError
from .tasks import Dataset

CONFIG_FILE = "config.json"
DATA_FILE = "data.safetensors"
METRICS_FILE = "metrics.csv"
STATE_FILE = "state.safetensors"
CKPT_DIR = "ckpt"
CKPT_PATTERN = re.compile(r"^step_(\d+)\.safetensors$")
METRIC_COLUMNS = ["step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "weight_norm", "elapsed_s",
                  "collapse"]


def ckpt_name(step: int) -> str:
    return f"step_{step:08d}.safetensors"


def _tmp(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = _tmp(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tmp = _tmp(path)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_safetensors(path: Path, what: str = "file") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise GrokscopeError(f"{what} {path} does not exist") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise GrokscopeError(f"{what} {path} is unreadable (truncated or not safetensors): {e}") from None


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise GrokscopeError(f"{path} is unreadable (truncated or not safetensors): {e}") from None


def read_metrics(path: Path) -> pd.DataFrame:
    """The metrics CSV; a half-written last line (a run killed mid-write) is dropped."""
    if not path.exists():
        return pd.DataFrame(columns=METRIC_COLUMNS)
    text = path.read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]
    if not lines:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    from io import StringIO

    df = pd.read_csv(StringIO("\n".join(lines) + "\n"))
    for column in METRIC_COLUMNS:  # runs written before a column existed
        if column not in df.columns:
            df[column] = float("nan")
    return df.dropna(subset=["step"]).astype({"step": int}).reset_index(drop=True)


def stop_step(reached: int, margin: float) -> int:
    """The step at which a run that first reached ``stop_val_acc`` at step ``reached`` ends: the first
    evaluation at or after ``reached * (1 + stop_margin)`` (margin 0: at once)."""
    return int(math.ceil(reached * (1.0 + margin)))


def first_reached(metrics, level: float) -> int | None:
    """The first evaluated step after 0 whose validation accuracy is at least ``level``."""
    hit = metrics[(metrics["step"] > 0) & (metrics["val_acc"] >= level)]
    return int(hit["step"].iloc[0]) if len(hit) else None


def config_json(cfg: RunConfig, data: Dataset) -> str:
    """A run's config.json: the RunConfig, and under "hooked_config" the model's HookedTransformerConfig
    as TransformerLens' own dict (``HookedTransformerConfig.from_dict`` takes it; see model.hooked_config_dict)."""
    from .model import hooked_config_dict

    d = cfg.to_dict()
    d["hooked_config"] = hooked_config_dict(cfg.model, data.d_vocab, data.n_elements)
    return json.dumps(d, indent=2)


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


class Run:
    """A run directory on disk (possibly still being trained)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise GrokscopeError(f"{self.path} is not a run directory (it does not exist)")
        if not is_run_dir(self.path):
            raise GrokscopeError(f"{self.path} is not a run directory (no {CONFIG_FILE})")
        self.config = RunConfig.load(self.path / CONFIG_FILE, stored=True)
        self.interrupted = False  # set by train() when Ctrl-C stopped it

    def __repr__(self) -> str:
        t = self.config.task
        return f"Run({str(self.path)!r}, op={t.op!r}, p={t.p}, frac={t.frac}, checkpoints={len(self.steps)})"

    @property
    def name(self) -> str:
        return self.config.name or self.path.name

    @property
    def ckpt_dir(self) -> Path:
        return self.path / CKPT_DIR

    @property
    def steps(self) -> list[int]:
        """Sorted steps that have a checkpoint (re-read from disk each time: a run may be growing)."""
        if not self.ckpt_dir.is_dir():
            return []
        steps = []
        for entry in os.scandir(self.ckpt_dir):
            m = CKPT_PATTERN.match(entry.name)
            if m:
                steps.append(int(m.group(1)))
        return sorted(steps)

    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt_dir / ckpt_name(step)

    @property
    def metrics(self) -> pd.DataFrame:
        return read_metrics(self.path / METRICS_FILE)

    @cached_property
    def data(self) -> Dataset:
        path = self.path / DATA_FILE
        tensors = read_safetensors(path, "dataset file")
        meta = read_metadata(path)
        t = self.config.task
        return Dataset.from_tensors(t.op, t.p, json.loads(meta.get("elements", "[]")), tensors)

    @property
    def hooked_config(self):
        """The model's ``HookedTransformerConfig`` (TransformerLens), from config.json's "hooked_config"
        (derived from the config and the data for runs saved before it was stored)."""
        from .model import hooked_config_dict
        from transformer_lens import HookedTransformerConfig

        stored = json.loads((self.path / CONFIG_FILE).read_text()).get("hooked_config")
        if stored is None:
            stored = hooked_config_dict(self.config.model, self.data.d_vocab, self.data.n_elements)
        return HookedTransformerConfig.from_dict(stored)

    @property
    def provenance(self) -> list[dict]:
        """One record per training session (versions, machine, device, threads, precision, command line),
        from provenance.json; [] for a run saved before it was recorded. See grokscope.provenance."""
        from .provenance import read_provenance

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
        if step not in self.steps:
            near = self.steps
            hint = f"; it has {len(near)} checkpoints from {near[0]} to {near[-1]}" if near else "; it has none"
            raise GrokscopeError(f"run {self.path} has no checkpoint at step {step}{hint}")
        return read_safetensors(self.checkpoint_path(step), "checkpoint")

    def model_at(self, step: int, device: str | torch.device = "cpu"):
        """A HookedTransformer with the weights of ``step``, in eval mode."""
        from .model import build_model

        data = self.data
        model = build_model(self.config.model, data.d_vocab, data.n_elements, device="cpu")
        load_weights(model, self.state_dict_at(step), f"checkpoint {self.checkpoint_path(step)}")
        data.name_tokens(model)  # model.to_str_tokens(tokens) gives element names
        return model.to(device, print_details=False).eval()


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if bad:
            k = bad[0]
            parts.append(f"{k} has shape {tuple(state[k].shape)}, config gives {tuple(expected[k].shape)}")
        raise GrokscopeError(f"{what} does not match the run's config: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def load_run(path: str | Path) -> Run:
    """Open a run directory written by ``grokscope.train``."""
    return Run(path)
