"""Write tests/data/stored_run/: a small run written by grokscope's own training code, checked in.

tests/test_stored_run.py loads it with today's code, so a change that stops old runs from loading (file
names, config fields, safetensors keys, metrics columns, the resume state) fails a test. Regenerate it
only on purpose, when the on-disk format changes with a migration for old runs:

    cd <repo> && OMP_NUM_THREADS=1 python tests/data/make_stored_run.py

The tests never run this script. The run: x+y mod 7 on half the table, one layer, d_model 16, 20 steps,
checkpoints at 0, 1, 10, 20 and the resume state at step 20; about 85 KB on disk.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # this checkout's grokscope, not an installed one

import grokscope  # noqa: E402
from grokscope import RunConfig  # noqa: E402

OUT = HERE / "stored_run"
CONFIG = {
    "task": {"op": "x+y", "p": 7, "frac": 0.5, "seed": 0},
    "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "d_mlp": 16},
    "train": {"steps": 20, "seed": 0, "device": "cpu"},
    "schedule": {"eval_every": 5, "eval_log_points": 0, "ckpt_every": 10, "ckpt_log_points": 2, "state_every": 10},
}


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    torch.set_num_threads(1)
    run = grokscope.train(RunConfig().update(CONFIG), out=OUT, progress=False, log=lambda *a: None)
    (OUT / ".grokscope.lock").unlink(missing_ok=True)  # the writer's lock file: not part of the run
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} (steps {run.steps}, {size / 1024:.0f} KB, grokscope {grokscope.__version__})")


if __name__ == "__main__":
    main()
