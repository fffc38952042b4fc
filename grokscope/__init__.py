"""grokscope: train the grokking transformer of Power et al. (2022) and see what changes inside it.

    import grokscope
    run = grokscope.train(grokscope.preset("quick"), out="checkpoints/quick")
    model = run.model_at(run.steps[-1])        # a HookedTransformer
    run.metrics                                 # step, train/val loss and accuracy
    tables = grokscope.analyze(run)             # analysis name -> DataFrame with a step column
    sweep = grokscope.run_sweep(grokscope.SweepSpec.make(grid={"op": "x+y,x-y", "seed": "0,1"}), "sweeps/demo")
    sweep.table                                 # one row per run: steps to 99 %, best val acc, ...
"""
from .config import RunConfig, ModelConfig, TaskConfig, TrainConfig, ScheduleConfig, preset, apply_variant, PRESETS, VARIANTS
from .errors import GrokscopeError
from .model import build_model, answer_logits
from .run import Run, load_run
from .tasks import Dataset, make_dataset, register_operation, OPERATIONS
from .train import train
from .analyze import analyze
from .results import load_results
from .batched import train_many
from .sweep import SweepSpec, load_sweep, run_sweep

__all__ = [
    "RunConfig", "ModelConfig", "TaskConfig", "TrainConfig", "ScheduleConfig", "preset", "apply_variant",
    "PRESETS", "VARIANTS", "GrokscopeError", "build_model", "answer_logits", "Run", "load_run", "Dataset",
    "make_dataset", "register_operation", "OPERATIONS", "train", "analyze", "load_results",
    "train_many", "SweepSpec", "load_sweep", "run_sweep",
]
