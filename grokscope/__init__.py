"""grokscope: train the grokking transformer of Power et al. (2022) and see what changes inside it.

    import grokscope
    run = grokscope.train(grokscope.preset("quick"), out="checkpoints/quick")
    model = run.model_at(run.steps[-1])        # a HookedTransformer
    run.metrics                                 # step, train/val loss and accuracy
    tables = grokscope.analyze(run)             # analysis name -> DataFrame with a step column
    grokscope.compare_checkpoints(run, 100, run.steps[-1])   # what changed between two checkpoints
    sweep = grokscope.run_sweep(grokscope.SweepSpec.make(grid={"op": "x+y,x-y", "seed": "0,1"}), "sweeps/demo")
    sweep.table                                 # one row per run: steps to 99 %, best val acc, ...

The names below are imported on first use, so that ``import grokscope`` (and the ``grokscope``
command's --help and listings) does not load torch and TransformerLens until something needs them.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from .config import (PRESETS, VARIANTS, ModelConfig, RunConfig, ScheduleConfig, TaskConfig, TrainConfig, apply_variant,
                     preset)
from .errors import GrokscopeError, TrainingInterrupted

# name -> the submodule that defines it (imported when the name is first used)
_LAZY = {
    "build_model": "model", "answer_logits": "forward",
    "Run": "run", "load_run": "run",
    "Dataset": "tasks", "make_dataset": "tasks", "register_operation": "tasks", "OPERATIONS": "tasks",
    "train": "train",
    "analyze": "analyze",
    "load_results": "results",
    "train_many": "batched",
    "SweepSpec": "sweep.spec", "load_sweep": "sweep.folder", "run_sweep": "sweep.runner",
    "provenance": "provenance",
    "compare_checkpoints": "compare",
    "to_tensorboard": "tensorboard",
}

__all__ = [
    "RunConfig", "ModelConfig", "TaskConfig", "TrainConfig", "ScheduleConfig", "preset", "apply_variant",
    "PRESETS", "VARIANTS", "GrokscopeError", "TrainingInterrupted", "build_model", "answer_logits", "Run", "load_run", "Dataset",
    "make_dataset", "register_operation", "OPERATIONS", "train", "analyze", "load_results",
    "train_many", "SweepSpec", "load_sweep", "run_sweep", "provenance", "compare_checkpoints", "to_tensorboard", "__version__",
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grokscope")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        value = _version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'grokscope' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``grokscope.train``, ``analyze`` and ``provenance`` are functions that live in submodules of the same
    name. Importing such a submodule makes Python set the package attribute to the module; this keeps
    the function there instead (the module stays in ``sys.modules``, where ``from grokscope.train
    import ...`` finds it)."""

    def __setattr__(self, name: str, value) -> None:
        if name in ("train", "analyze", "provenance") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .analyze import analyze
    from .batched import train_many
    from .compare import compare_checkpoints
    from .forward import answer_logits
    from .model import build_model
    from .provenance import provenance
    from .results import load_results
    from .run import Run, load_run
    from .sweep.folder import load_sweep
    from .sweep.runner import run_sweep
    from .sweep.spec import SweepSpec
    from .tensorboard import to_tensorboard
    from .tasks import OPERATIONS, Dataset, make_dataset, register_operation
    from .train import train

    __version__: str
