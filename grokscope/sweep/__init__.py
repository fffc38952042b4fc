"""Sweeps: the paper's experiments as grids of ordinary runs, batched on one machine or spread on Ray.

    spec.py      SweepSpec, Cell: axes, values, cells, grid files
    presets.py   the paper's figures as sweeps (SWEEP_PRESETS, preset_spec)
    folder.py    a sweep folder on disk: Sweep, load_sweep, write_spec, run statuses, the results table
    runner.py    run_sweep: the unfinished runs in jobs, on a local process pool or Ray tasks
    report.py    sweep_report: the HTML page of a sweep and its figures

    <sweep>/sweep.json          the grid: base config, fixed settings, swept axes, the cells (runs)
    <sweep>/runs/<cell>/        one ordinary run directory per cell (analyse and report it as any run)
    <sweep>/analyses/<cell>/    analyses the sweep computes itself (Figure 7: sharpness)
    <sweep>/results.csv         the results table (``load_sweep(path).table`` recomputes it)
    <sweep>/report.html         ``grokscope sweep-report``

The names below are imported from their module on first use, so that importing one module of the
package (the report reads a sweep folder) does not import the others (the runner trains).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> the module of this package that defines it
_LAZY = {
    **dict.fromkeys(["SweepSpec", "Cell", "ALIASES", "axis_name", "apply_coords", "cell_name",
                     "read_grid_file", "check_spec_types"], "spec"),
    **dict.fromkeys(["SWEEP_PRESETS", "SWEEP_PRESET_TEXT", "preset_spec"], "presets"),
    **dict.fromkeys(["Sweep", "load_sweep", "write_spec", "run_status", "result_row", "ANALYSIS_COLUMNS",
                     "SWEEP_FILE", "RUNS_DIR", "ANALYSES_DIR", "RESULTS_FILE", "REPORT_FILE"], "folder"),
    **dict.fromkeys(["run_sweep", "run_job", "plan_jobs", "run_on_ray", "default_workers", "progress_text"], "runner"),
    **dict.fromkeys(["sweep_report", "sweep_figures"], "report"),
}

__all__ = ["SweepSpec", "Sweep", "Cell", "load_sweep", "run_sweep", "run_job", "plan_jobs", "SWEEP_PRESETS",
           "preset_spec", "sweep_report", "sweep_figures"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .folder import (ANALYSES_DIR, ANALYSIS_COLUMNS, REPORT_FILE, RESULTS_FILE, RUNS_DIR, SWEEP_FILE, Sweep,
                         load_sweep, result_row, run_status, write_spec)
    from .presets import SWEEP_PRESET_TEXT, SWEEP_PRESETS, preset_spec
    from .report import sweep_figures, sweep_report
    from .runner import default_workers, plan_jobs, progress_text, run_job, run_on_ray, run_sweep
    from .spec import (ALIASES, Cell, SweepSpec, apply_coords, axis_name, cell_name, check_spec_types,
                       read_grid_file)
