"""A sweep folder on disk: its file names, ``Sweep``/``load_sweep``, each run's status, the results table.

    <sweep>/sweep.json          the grid: base config, fixed settings, swept axes, the cells (runs)
    <sweep>/runs/<cell>/        one ordinary run directory per cell (analyse and report it as any run)
    <sweep>/analyses/<cell>/    analyses the sweep computes itself (Figure 7: sharpness), a results folder
    <sweep>/results.csv         the results table (``load_sweep(path).table`` recomputes it)
    <sweep>/report.html         ``grokscope sweep-report``

The files inside a run directory and a results folder are named by ``grokscope.run`` and
``grokscope.results``; this module names only the sweep's own.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..errors import GrokscopeError
from ..files import atomic_write_text
from ..results import RESULTS_ROOT, ResultStore, default_out_dir
from ..run import (METRICS_FILE, checkpoint_path, first_reached, hopeless_step, is_run_dir, read_metrics, stop_step,
                   stored_config)
from ..tasks import chance_loss, get_operation
from .spec import Cell, SweepSpec, check_spec_types

SWEEP_FILE = "sweep.json"
RUNS_DIR = "runs"
ANALYSES_DIR = RESULTS_ROOT.name  # <sweep>/analyses/<cell>: where grokscope.results puts the results of runs/<cell>
RESULTS_FILE = "results.csv"
REPORT_FILE = "report.html"
LEVEL = 0.99  # the 99 % of the table's steps_to_train_99 / steps_to_val_99
HOPELESS = "stopped-hopeless"  # the status of a run ended by the hopeless stop (``--stop-hopeless``)
FINISHED = ("done", HOPELESS)  # the statuses of a run that will train no more


class Sweep:
    """A sweep folder on disk (possibly still running)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        f = self.path / SWEEP_FILE
        if not os.path.isfile(f):  # os.path: a name too long is "not there", not a traceback
            raise GrokscopeError(f"{self.path} is not a sweep folder (no {SWEEP_FILE})")
        from ..files import read_text

        text = read_text(f, "sweep file")
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or not isinstance(d.get("spec"), dict):
                raise ValueError("no spec")
            check_spec_types(d["spec"], str(f))
            raw = SweepSpec.from_dict(d["spec"])
            # the grid is checked again as when it was made: axes, values, every cell a valid config
            self.spec = SweepSpec.make(raw.base, raw.fixed, raw.grid, preset=raw.preset, scale=raw.scale,
                                       analyses=raw.analyses, cases=raw.cases)
            self.cells = self.spec.cells()
        except GrokscopeError as e:
            raise GrokscopeError(f"{f}: {e}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise GrokscopeError(f"{f} is damaged: {' '.join(str(e).split())[:200]}") from None

    def __repr__(self) -> str:
        return f"Sweep({str(self.path)!r}, runs={len(self.cells)}, axes={self.axes})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def axes(self) -> list[str]:
        return self.spec.axes

    @property
    def fixed(self) -> dict[str, Any]:
        return dict(self.spec.fixed)

    @property
    def preset(self) -> str | None:
        return self.spec.preset

    @property
    def scale(self) -> str | None:
        return self.spec.scale

    def run_dir(self, cell: Cell) -> Path:
        return self.path / RUNS_DIR / cell.name

    def analyses_dir(self, cell: Cell) -> Path:
        """<sweep>/analyses/<cell>: the run's own results folder (``results.default_out_dir``), so that
        ``grokscope analyze`` and ``grokscope report`` on the run find what the sweep computed."""
        return default_out_dir(self.run_dir(cell))

    def status(self, cell: Cell) -> str:
        return run_status(self.run_dir(cell), cell.config.train.steps,
                          self.analyses_dir(cell) if self.spec.analyses else None, list(self.spec.analyses))

    @property
    def table(self) -> pd.DataFrame:
        """One row per run: the grid coordinates, how far it got, when it reached 99 %, final values."""
        rows = [result_row(c, self.run_dir(c), self.status(c), self.analyses_dir(c)) for c in self.cells]
        df = pd.DataFrame(rows)
        for col in ("last_step", "steps_to_train_99", "steps_to_val_99", "steps_saved"):
            df[col] = df[col].astype("Int64")
        return df

    def write_table(self) -> Path:
        path = self.path / RESULTS_FILE
        atomic_write_text(path, self.table.to_csv(index=False))
        return path


# --- what holds a path: refused places for a run, a results folder, a sweep ------------------------------
def enclosing(path: str | Path) -> list[tuple[str, Path]]:
    """The grokscope folders that hold ``path`` (itself included), nearest first, resolved through
    symbolic links: ("run", R) a run folder, ("sweep", S) a sweep folder, ("results", F) a folder of
    analysis results. What ``train --out``, ``analyze --out`` and ``sweep --out`` check before writing."""
    p = Path(os.path.realpath(path))
    found = []
    for q in [p, *p.parents]:
        try:
            if is_run_dir(q):
                found.append(("run", q))
            elif (q / SWEEP_FILE).is_file():
                found.append(("sweep", q))
            elif ResultStore(q).owner() is not None:  # a table with a sidecar naming its run
                found.append(("results", q))
        except OSError:  # a folder that cannot be listed holds nothing of ours
            continue
    return found


def check_results_folder(folder: str | Path) -> None:
    """Refuse (one line) a results folder inside a run (or its ``ckpt/``), inside another results
    folder, or in a sweep folder anywhere but its ``analyses/``."""
    real = Path(os.path.realpath(folder))
    for kind, where in enclosing(folder):
        if kind == "run":
            raise GrokscopeError(f"the results folder {folder} is inside the run {where}; results go beside runs "
                                 f"(the default: analyses/<run>), pick another --out")
        if kind == "results" and where != real:
            raise GrokscopeError(f"the results folder {folder} is inside the results folder {where}; pick another --out")
        if kind == "sweep" and not real.is_relative_to(where / ANALYSES_DIR):
            raise GrokscopeError(f"the results folder {folder} is in the sweep folder {where} but not in its "
                                 f"{ANALYSES_DIR}/ (where a sweep keeps its runs' results); pick another --out")


def load_sweep(path: str | Path) -> Sweep:
    """Open a sweep folder written by ``grokscope sweep`` / ``run_sweep``."""
    return Sweep(path)


def write_spec(path: Path, spec: SweepSpec) -> Sweep:
    """Create the sweep folder, or check that the one there holds this very sweep."""
    f = path / SWEEP_FILE
    if f.exists():
        old = Sweep(path)
        if json.loads(json.dumps(spec.to_dict())) != json.loads(json.dumps(old.spec.to_dict())):
            raise GrokscopeError(f"{path} holds another sweep (its grid differs); continue it with "
                                 f"`grokscope sweep --out {path}` and no grid, or pick another --out")
        return old
    from ..locks import LOCK_FILE

    if path.exists() and any(p.name != LOCK_FILE for p in path.iterdir()):
        raise GrokscopeError(f"{path} exists and is not a sweep folder; pick another --out")
    try:
        (path / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_text(f, json.dumps({"spec": spec.to_dict()}, indent=2))
    except OSError as e:
        raise GrokscopeError(f"cannot write the sweep folder {path}: {e.strerror}") from None
    return Sweep(path)


def run_status(run_dir: Path, steps: int, analyses_dir: Path | None = None, analyses: list[str] = ()) -> str:
    """'done' (trained to its budget or its early stop, analyses written), 'stopped-hopeless' (ended by the
    hopeless stop: its forecast's p_grok stayed below ``stop_hopeless``; ``run.hopeless_step``), 'partial'
    (a run dir), or 'pending'."""
    if not is_run_dir(run_dir):
        return "pending"
    m = read_metrics(run_dir / METRICS_FILE)
    if not len(m):
        return "partial"
    last = int(m["step"].iloc[-1])
    tr = stored_config(run_dir).train
    reached = first_reached(m, tr.stop_val_acc) if tr.stop_val_acc > 0 else None
    hopeless = hopeless_step(m["step"], m["forecast_p"], tr.stop_hopeless, steps)
    ended = last >= steps or (reached is not None and last >= stop_step(reached, tr.stop_margin))
    stopped = not ended and hopeless is not None and last >= hopeless
    if not (ended or stopped) or not checkpoint_path(run_dir, last).exists():
        return "partial"
    if analyses_dir is not None and any(not ResultStore(analyses_dir).table_path(a).exists() for a in analyses):
        return "partial"
    return HOPELESS if stopped else "done"


def saved_text(table: pd.DataFrame) -> str:
    """What the hopeless stop saved: "1,500 of 24,000 budgeted steps not trained (6 %)"."""
    saved = int(pd.to_numeric(table["steps_saved"], errors="coerce").fillna(0).sum()) if "steps_saved" in table else 0
    total = int(pd.to_numeric(table["steps"], errors="coerce").fillna(0).sum()) if "steps" in table else 0
    return f"{saved:,} of {total:,} budgeted steps not trained ({100 * saved / max(1, total):.0f} %)"


# --- the results table ---------------------------------------------------------------------------------------
def _sharpness_columns(table: pd.DataFrame) -> dict[str, float]:
    """sharpness: the first eps column (``sharpness_<eps>``) at the last step analysed."""
    cols = [c for c in table.columns if c.startswith("sharpness_") and c != "sharpness_evals"]
    if len(table) and cols:
        return {"sharpness": float(table.sort_values("step")[cols[0]].iloc[-1])}
    return {}


# analysis -> the columns its table (computed by the sweep at each run's last checkpoint, under
# <sweep>/analyses/<cell>/) adds to the run's row of the results table. A new column: one entry here.
def _fig7_columns(table: pd.DataFrame) -> dict[str, float]:
    """sharpness_fig7: ``sharpness`` (the default, the maximum in the 10-d subspace), ``sharpness_full`` and
    ``sharpness_released`` at the last step analysed."""
    if not len(table):
        return {}
    last = table.sort_values("step").iloc[-1]
    return {"sharpness": float(last["sharpness_subspace"]), "sharpness_full": float(last["sharpness_full"]),
            "sharpness_released": float(last["sharpness_released"])}


ANALYSIS_COLUMNS: dict[str, Callable[[pd.DataFrame], dict[str, Any]]] = {"sharpness": _sharpness_columns,
                                                                          "sharpness_fig7": _fig7_columns}


def val_loss_steps(metrics: pd.DataFrame, n_answers: int) -> dict[str, int | None]:
    """The first evaluated steps at which validation loss falls below ln N (chance: N possible answers),
    below 1 and below 0.1 (Nanda et al.'s training-fraction sweep): ``steps_to_val_loss_lnN``,
    ``steps_to_val_loss_1``, ``steps_to_val_loss_0.1``; None where it never does."""
    out = {}
    for key, level in (("lnN", chance_loss(n_answers)), ("1", 1.0), ("0.1", 0.1)):
        hit = metrics.loc[metrics["val_loss"] < level, "step"] if len(metrics) else []
        out[f"steps_to_val_loss_{key}"] = int(hit.iloc[0]) if len(hit) else None
    return out


def result_row(cell: Cell, run_dir: Path, status: str, analyses_dir: Path | None = None) -> dict[str, Any]:
    """A run's row of the results table: its coordinates, how far it got, when it reached 99 %, final
    values, then the columns of the analyses the sweep computed (``ANALYSIS_COLUMNS``)."""
    t = cell.config.task
    row: dict[str, Any] = {"op": t.op, "frac": t.frac, "seed": cell.config.train.seed}
    row.update(cell.coords)
    m = read_metrics(run_dir / METRICS_FILE) if status != "pending" else pd.DataFrame()
    last = m.iloc[-1] if len(m) else None
    row.update({
        "cell": cell.name, "status": status, "steps": cell.config.train.steps,
        "last_step": int(last.step) if last is not None else None,
        "steps_to_train_99": first_reached(m, LEVEL, "train_acc", count_step0=True) if len(m) else None,
        "steps_to_val_99": first_reached(m, LEVEL, "val_acc", count_step0=True) if len(m) else None,
        "steps_to_val_95": first_reached(m, 0.95, "val_acc", count_step0=True) if len(m) else None,
        **val_loss_steps(m, len(get_operation(t.op).elements(t.p))),
        "steps_saved": int(cell.config.train.steps - last.step) if status == HOPELESS else 0,
        "best_val_acc": float(m["val_acc"].max()) if len(m) else math.nan,
        "final_train_acc": float(last.train_acc) if last is not None else math.nan,
        "final_val_acc": float(last.val_acc) if last is not None else math.nan,
        "final_train_loss": float(last.train_loss) if last is not None else math.nan,
        "final_val_loss": float(last.val_loss) if last is not None else math.nan,
    })
    if analyses_dir is not None:
        store = ResultStore(analyses_dir)
        for name, columns in ANALYSIS_COLUMNS.items():
            path = store.table_path(name)
            if path.exists():
                row.update(columns(pd.read_csv(path)))
    row["run_dir"] = str(run_dir)
    return row
