"""What a run's figures draw from, read from disk: ``load_report_run`` -> ``ReportRun`` (its ``RunTables``,
config and where they came from), and ``report_figures``, the run report's figures by name.

    checkpoints/<run> (config, metrics) + analyses/<run>/*.csv  ->  load_report_run()  ->  ReportRun

Nothing is computed but the phases when their table is missing (cheap, from the metrics). The run page
(``grokscope.report``) and the figure files (``grokscope.figures.export``) both read through here, so
neither imports the other.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from ..config import RunConfig
from ..errors import GrokscopeError
from ..results import RUN_PARENTS, ResultStore, default_out_dir
from ..run import Run, is_run_dir
from ..tasks import chance_loss, get_operation
from .common import RunTables, figures_on

FEW_CHECKPOINTS = 5  # fewer analysed checkpoints than this: the page says the curves are coarse


@dataclass
class ReportRun:
    """A run's inputs to the report: its tables, config and where they came from."""

    tables: RunTables
    config: RunConfig | None
    run_path: Path | None
    results_path: Path
    not_applicable: dict[str, str] = field(default_factory=dict)  # analysis -> why it does not apply
    notes: list[str] = field(default_factory=list)  # plain text, shown in the summary


def _find_run(folder: Path, store: ResultStore) -> Path | None:
    """The run directory of a results folder: the ``run`` its sidecars name, else ../../checkpoints/<name>."""
    candidates = []
    for name in store.names():
        run = (store.meta(name) or {}).get("run")
        if run:
            candidates += [Path(run), folder.parent.parent / run]
    candidates += [folder.parent.parent / parent / folder.name for parent in RUN_PARENTS]
    candidates.append(folder.parent.parent / folder.name)  # where results.default_out_dir puts a run's results
    return next((c for c in candidates if is_run_dir(c)), None)


def locate(source: Run | str | Path, results: str | Path | None = None) -> tuple[Path | None, Path]:
    """(run directory or None, results folder) of a run directory, a ``Run`` or a results folder."""
    if isinstance(source, Run):
        return source.path, Path(results) if results is not None else default_out_dir(source.path)
    path = Path(source)
    if not path.exists():
        raise GrokscopeError(f"{path} does not exist: give a run directory or its results folder (analyses/<run>)")
    if is_run_dir(path):
        return path, Path(results) if results is not None else default_out_dir(path)
    if not path.is_dir():
        raise GrokscopeError(f"{path} is not a run directory or a results folder")
    store = ResultStore(path)
    if not store.names():
        inside = sorted(p.name for p in path.iterdir() if p.is_dir() and (is_run_dir(p) or ResultStore(p).names()))
        hint = f"; it holds {', '.join(str(path / n) for n in inside[:3])}: pass one of them" if inside else ""
        raise GrokscopeError(f"{path} is neither a run directory (no config.json) nor a results folder "
                             f"(no analysis tables){hint}")
    return _find_run(path, store), Path(results) if results is not None else path


def load_report_run(source: Run | str | Path, results: str | Path | None = None) -> ReportRun:
    """Read everything the report needs; never computes an analysis."""
    from ..analyses.base import REGISTRY
    from ..analyses.fourier import op_kind
    from ..analyses.phases import find_phases, run_facts

    run_path, folder = locate(source, results)
    run = Run(run_path) if run_path is not None else None
    store = ResultStore(folder)
    copy = store.copy_of(run) if run is not None else None  # results of a copy of this run, elsewhere
    tables = store.load_all(run_id=run.run_id if run is not None else None) if copy is None else {}  # this run's only
    for name, table in tables.items():  # the params a table was computed with (e.g. t-SNE's subgroup), for captions
        table.attrs["params"] = dict((store.meta(name) or {}).get("params") or {})
    others = [n for n in store.names() if n not in tables] if copy is None else []
    notes, not_applicable, kind, config = [], {}, "custom", None
    metrics = run.metrics if run is not None else pd.DataFrame()
    if run is not None:
        config = run.config
        try:
            data = run.data
            kind = op_kind(data)
            not_applicable = {n: why for n, a in REGISTRY.items() if (why := a.applies(data)) is not None}
        except GrokscopeError as e:
            notes.append(f"the run's dataset could not be read ({e})")
        mismatch = run.model_mismatch()
        if mismatch:
            notes.append(f"config.json's model settings differ from those the checkpoints were trained with "
                         f"({mismatch}: checkpoints vs config.json); the model described here is config.json's, "
                         f"and analyze refuses those checkpoints")
    else:
        notes.append(f"the run directory of {folder} was not found: no metrics, config or accuracy curves")
    if copy is not None:
        notes.append(f"the tables in {folder} were computed from {copy}, a copy of this run in another folder "
                     f"(the same run id), and are not shown; `grokscope analyze` this run into a folder of its own")
    if run is not None and others:
        notes.append(f"{len(others)} table{'s' if len(others) > 1 else ''} in {folder} ({', '.join(others[:4])}) "
                     f"{'were' if len(others) > 1 else 'was'} computed for another run (or before runs had an "
                     f"identity) and {'are' if len(others) > 1 else 'is'} not shown; `grokscope analyze` recomputes them")
    name = (config.name or run_path.name) if run is not None else folder.name
    phases = tables.pop("phases", None)
    if phases is None and len(metrics):
        phases = find_phases(metrics, tables, **(run_facts(run) if run is not None else {}))
        notes.append("the phases were derived from the metrics for this page (`grokscope analyze` stores them)")
    analysed = sorted({int(s) for t in tables.values() if "step" in t.columns for s in t["step"].dropna()})
    if tables and len(analysed) < FEW_CHECKPOINTS:
        n_ckpts = len(run.steps) if run is not None else 0
        more = (f"analyse more of its {n_ckpts} checkpoints" if n_ckpts > len(analysed)
                else "train with a smaller --ckpt-every for more")
        notes.append(f"only {len(analysed)} checkpoint{'s' if len(analysed) != 1 else ''} analysed: the curves "
                     f"from the analyses are coarse ({more})")
    if not tables:
        notes.append(f"no analysis has been run yet: only the training curves are shown; "
                     f"`grokscope analyze --ckpt-dir {run_path or 'checkpoints/<run>'}` computes them")
    chance = None
    if config is not None:
        with contextlib.suppress(GrokscopeError):  # an operation this process does not know
            chance = chance_loss(len(get_operation(config.task.op).elements(config.task.p)))
    return ReportRun(RunTables(name, metrics, tables, phases, kind, chance), config, run_path, folder, not_applicable,
                     notes)


def report_figures(source: Run | str | Path | ReportRun, results: str | Path | None = None,
                   log_x: bool = True) -> dict[str, go.Figure]:
    """The run report's figures by name (``FIGURES``, in its order), for a notebook."""
    r = source if isinstance(source, ReportRun) else load_report_run(source, results)
    return {spec.name: spec.build(r.tables, log_x) for spec in figures_on("run") if spec.drawable(r.tables)}


__all__ = ["ReportRun", "load_report_run", "locate", "report_figures", "FEW_CHECKPOINTS"]
