"""Shared fixtures and helpers. Trained runs are session-scoped: each is trained once per test session.

Helpers a test file imports (``from conftest import QUIET, tiny_config``):
- ``QUIET``: keyword arguments of ``grokscope.train`` for no progress bar and no log lines (``silent``).
- ``TINY_RUN`` and ``tiny_config(**sections)``: the one tiny run config, with some fields replaced.
"""
import copy

import pytest
import torch

import grokscope
from grokscope.config import PRESETS, RunConfig

# A tiny run for the analysis framework: 20 steps, a checkpoint every 5.
TINY_RUN = {
    "task": {"op": "x+y", "p": 7, "frac": 0.5},
    "model": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_mlp": 32},
    "train": {"steps": 20, "device": "cpu"},
    "schedule": {"eval_every": 5, "eval_log_points": 0, "ckpt_every": 5, "ckpt_log_points": 0},
}



def silent(*args, **kwargs) -> None:
    """A ``log`` that prints nothing."""


QUIET = {"progress": False, "log": silent}  # grokscope.train(..., **QUIET): no bar, no log lines


def tiny_config(**sections) -> RunConfig:
    """``TINY_RUN`` with the given fields replaced, section by section, e.g.
    ``tiny_config(model={"n_layers": 1}, train={"steps": 12})``."""
    cfg = RunConfig().update(copy.deepcopy(TINY_RUN))
    for section, values in sections.items():
        cfg.update({section: values})
    return cfg


@pytest.fixture
def quiet() -> dict:
    """``QUIET`` as a fixture: ``grokscope.train(cfg, out=..., **quiet)``."""
    return dict(QUIET)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Do not modify it: copy it (shutil.copytree) first."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return grokscope.train(tiny_config(), out=out, **QUIET)


# The `quick` preset: a run that really groks on the CPU in under a minute (one thread): x+y mod 31 on 40 % of
# the table, a one-layer model without LayerNorm, AdamW lr 5e-3, weight decay 2, full batch. Train accuracy
# reaches 99 % near step 125, validation loss climbs far above chance while restricted loss falls, validation
# reaches 99 % near step 2000, and the run stops at twice that step (stop_margin 1), after clean-up.
GROKKING_RUN = {**PRESETS["quick"], "train": {**PRESETS["quick"]["train"], "seed": 0, "device": "cpu"}}


@pytest.fixture(scope="session")
def grokked_run(tmp_path_factory):
    """Do not modify it: copy it (shutil.copytree) first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count changes the float sums, hence the trajectory: pin it
    try:
        run = grokscope.train(RunConfig().update(GROKKING_RUN), out=tmp_path_factory.mktemp("runs") / "grokked", **QUIET)
    finally:
        torch.set_num_threads(threads)
    return run
