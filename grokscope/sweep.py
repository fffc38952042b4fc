"""Sweeps: the paper's experiments as grids of ordinary runs, batched on one machine or spread on Ray.

    <sweep>/sweep.json          the grid: base config, fixed settings, swept axes, the cells (runs)
    <sweep>/runs/<cell>/        one ordinary run directory per cell (analyse and report it as any run)
    <sweep>/analyses/<cell>/    analyses the sweep computes itself (Figure 7: sharpness)
    <sweep>/results.csv         the results table (``load_sweep(path).table`` recomputes it)
    <sweep>/report.html         ``grokscope sweep-report``

An axis is any ``grokscope train`` flag (``op``, ``frac``, ``seed``, ``lr``, ``weight-decay``,
``outliers``, ``variant``, ...): one value fixes it, several sweep it. ``seed`` sets the seed of the
initialisation and, unless ``split-seed`` is given, of the split. A cell's config is: the preset's
base config, then its variant, then the fixed values, then its coordinates.

Running a sweep again skips finished runs and resumes unfinished ones. Runs that can share a batch
(``batched.batch_key``, and the same resume step) train together in one process, up to ``--batch``
runs per process; a local process pool (``--workers``, one torch thread each on the CPU) or Ray tasks
(``--ray ADDRESS``) run those jobs.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .config import RunConfig, _hint, apply_variant, preset
from .errors import GrokscopeError
from .sweep_presets import SWEEP_PRESETS
from .run import (METRICS_FILE, STATE_FILE, atomic_write_text, ckpt_name, first_reached, is_run_dir, read_metadata,
                  read_metrics, stop_step)

SWEEP_FILE = "sweep.json"
RUNS_DIR = "runs"
ANALYSES_DIR = "analyses"
RESULTS_FILE = "results.csv"
ALIASES = {"ops": "op", "fracs": "frac", "seeds": "seed", "variants": "variant"}


# --- axes ---------------------------------------------------------------------------------------------
def _train_flags() -> dict[str, tuple]:
    from .cli import TRAIN_FLAGS

    return TRAIN_FLAGS


def axis_name(name: str) -> str:
    """'weight_decay' / 'seeds' -> 'weight-decay' / 'seed'; unknown names are an error."""
    a = ALIASES.get(name, name).replace("_", "-")
    a = ALIASES.get(a, a)
    known = ["variant", *_train_flags()]
    if a not in known:
        raise GrokscopeError(f"unknown sweep axis {name!r}{_hint(a, known) or '.'} Axes: {', '.join(known)}")
    return a


def parse_values(axis: str, text: Any) -> list:
    """'0.3,0.5' -> [0.3, 0.5] with the axis's type (a list in a grid file is taken as is)."""
    items = text if isinstance(text, list) else [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise GrokscopeError(f"axis {axis}: no values")
    typ = str if axis == "variant" else _train_flags()[axis][2]
    out = []
    for v in items:
        try:
            out.append(typ(float(v)) if typ is int and isinstance(v, str) else typ(v))
        except (TypeError, ValueError):
            raise GrokscopeError(f"axis {axis}: bad value {v!r}") from None
    if len(set(out)) != len(out):
        raise GrokscopeError(f"axis {axis}: repeated values in {out}")
    return out


def apply_coords(base: RunConfig, coords: dict[str, Any]) -> RunConfig:
    """base <- variant <- every other axis (``seed`` also sets the split seed unless ``split-seed`` is set)."""
    cfg = base.copy()
    if "variant" in coords:
        apply_variant(cfg, coords["variant"])
    flags = _train_flags()
    for axis, value in coords.items():
        if axis == "variant":
            continue
        section, fld = flags[axis][:2]
        cfg.update({section: {fld: value}})
    if "seed" in coords and "split-seed" not in coords:
        cfg.task.seed = int(coords["seed"])
    return cfg


def _slug(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    text = text.replace("/", "div").replace("*", "mul").replace(" ", "")
    return "".join(c if c.isalnum() or c in "+-^.=" else "_" for c in text)


SHORT = {"op": "", "frac": "f", "seed": "s", "variant": "", "outliers": "k", "lr": "lr", "weight-decay": "wd"}


def cell_name(coords: dict[str, Any]) -> str:
    return "_".join(SHORT.get(a, a.replace("-", "") + "=") + _slug(v) for a, v in coords.items())


# --- the spec -----------------------------------------------------------------------------------------
@dataclass
class SweepSpec:
    """What a sweep is: a base config, fixed axis values and swept axes (in order)."""

    base: dict[str, Any] = field(default_factory=dict)  # a (partial) RunConfig dict
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    preset: str | None = None
    scale: str | None = None
    analyses: dict[str, dict] = field(default_factory=dict)  # analysis -> params, at each run's last step

    @classmethod
    def make(cls, base: dict | None = None, fixed: dict | None = None, grid: dict | None = None, **kw) -> "SweepSpec":
        fixed = {axis_name(k): (parse_values(axis_name(k), v)[0] if isinstance(v, str) else v)
                 for k, v in (fixed or {}).items()}
        grid = {axis_name(k): parse_values(axis_name(k), v) for k, v in (grid or {}).items()}
        if "device" in grid:
            raise GrokscopeError("the device can be fixed (--device cpu), not swept")
        both = set(fixed) & set(grid)
        if both:
            raise GrokscopeError(f"{', '.join(sorted(both))} is both fixed and swept")
        spec = cls(base=dict(base or {}), fixed=fixed, grid=grid, **kw)
        spec.cells()  # every cell must make a valid config
        return spec

    def cells(self) -> list["Cell"]:
        """Every combination of the swept values, in grid order (the last axis varies fastest)."""
        base = RunConfig().update(json.loads(json.dumps(self.base)))
        axes = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[a] for a in axes)):
            coords = dict(zip(axes, values))
            cfg = apply_coords(base, {**self.fixed, **coords})
            name = cell_name(coords) if coords else "run"
            cfg.name = name
            try:
                cfg.validate()
            except GrokscopeError as e:
                raise GrokscopeError(f"cell {name}: {e}") from None
            from .tasks import get_operation

            get_operation(cfg.task.op)
            out.append(Cell(name, coords, cfg))
        if len({c.name for c in out}) != len(out):
            raise GrokscopeError("two cells get the same name; make the axis values distinct")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "fixed": self.fixed, "grid": self.grid, "preset": self.preset,
                "scale": self.scale, "analyses": self.analyses}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepSpec":
        return cls(**{k: d.get(k) if d.get(k) is not None else v for k, v in cls().__dict__.items()})


@dataclass
class Cell:
    name: str
    coords: dict[str, Any]
    config: RunConfig


def read_grid_file(path: str | Path) -> dict[str, Any]:
    """A grid file (JSON, or YAML when PyYAML is installed): {preset, scale, base, fixed, grid, analyses}."""
    from .guard import read_text

    path = Path(path)
    text = read_text(path, "grid file")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text)
        else:
            d = json.loads(text)
    except ImportError:
        raise GrokscopeError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or write JSON") from None
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        raise GrokscopeError(f"grid file {path} does not parse: {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise GrokscopeError(f"grid file {path} must hold a mapping")
    unknown = set(d) - {"preset", "scale", "base", "fixed", "grid", "analyses"}
    if unknown:
        raise GrokscopeError(f"grid file {path}: unknown key {sorted(unknown)[0]!r} "
                             f"(keys: preset, scale, base, fixed, grid, analyses)")
    check_spec_types(d, f"grid file {path}")
    return d


def check_spec_types(d: dict[str, Any], where: str) -> None:
    """The shapes of a grid: mappings where mappings go, scalars or lists of scalars as values."""
    scalar = (str, int, float, bool)
    for key in ("preset", "scale"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise GrokscopeError(f"{where}: {key} must be a name, got {d[key]!r}")
    for key in ("base", "fixed", "grid", "analyses"):
        if d.get(key) is not None and not isinstance(d[key], dict):
            raise GrokscopeError(f"{where}: {key} must be a mapping, got {type(d[key]).__name__}")
    for k, v in (d.get("fixed") or {}).items():
        if not isinstance(v, scalar):
            raise GrokscopeError(f"{where}: fixed value {k} must be a number or a name, got {v!r}")
    for k, v in (d.get("grid") or {}).items():
        if not isinstance(v, scalar) and not (isinstance(v, list) and all(isinstance(x, scalar) for x in v)):
            raise GrokscopeError(f"{where}: grid axis {k} must be a list of numbers or names, got {v!r}")
    for k, v in (d.get("analyses") or {}).items():
        if not isinstance(v, dict):
            raise GrokscopeError(f"{where}: analyses.{k} must be a mapping of parameters, got {v!r}")


# --- presets: the paper's figures ------------------------------------------------------------------------
def preset_spec(name: str, scale: str | None = "small") -> SweepSpec:
    """The sweep of a paper figure (``SWEEP_PRESETS``) at ``scale`` "small" (CPU) or "paper"."""
    if name not in SWEEP_PRESETS:
        raise GrokscopeError(f"unknown sweep preset {name!r}{_hint(name, SWEEP_PRESETS) or '.'} "
                             f"Known: {', '.join(SWEEP_PRESETS)}")
    scale = scale or "small"
    if scale not in ("small", "paper"):
        raise GrokscopeError(f"scale must be small or paper, got {scale!r}")
    p = json.loads(json.dumps(SWEEP_PRESETS[name][scale]))
    return SweepSpec.make(p.get("base"), p.get("fixed"), p.get("grid"), preset=name, scale=scale,
                          analyses=p.get("analyses") or {})


# --- the sweep folder ---------------------------------------------------------------------------------------
class Sweep:
    """A sweep folder on disk (possibly still running)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        f = self.path / SWEEP_FILE
        if not os.path.isfile(f):  # os.path: a name too long is "not there", not a traceback
            raise GrokscopeError(f"{self.path} is not a sweep folder (no {SWEEP_FILE})")
        from .guard import read_text

        text = read_text(f, "sweep file")
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or not isinstance(d.get("spec"), dict):
                raise ValueError("no spec")
            check_spec_types(d["spec"], str(f))
            raw = SweepSpec.from_dict(d["spec"])
            # the grid is checked again as when it was made: axes, values, every cell a valid config
            self.spec = SweepSpec.make(raw.base, raw.fixed, raw.grid, preset=raw.preset, scale=raw.scale,
                                       analyses=raw.analyses)
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
        return list(self.spec.grid)

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
        return self.path / ANALYSES_DIR / cell.name

    def status(self, cell: Cell) -> str:
        return run_status(self.run_dir(cell), cell.config.train.steps,
                          self.analyses_dir(cell) if self.spec.analyses else None, list(self.spec.analyses))

    @property
    def table(self) -> pd.DataFrame:
        """One row per run: the grid coordinates, how far it got, when it reached 99 %, final values."""
        rows = [result_row(c, self.run_dir(c), self.status(c), self.analyses_dir(c)) for c in self.cells]
        df = pd.DataFrame(rows)
        for col in ("last_step", "steps_to_train_99", "steps_to_val_99"):
            df[col] = df[col].astype("Int64")
        return df

    def write_table(self) -> Path:
        path = self.path / RESULTS_FILE
        atomic_write_text(path, self.table.to_csv(index=False))
        return path


def load_sweep(path: str | Path) -> Sweep:
    """Open a sweep folder written by ``grokscope sweep`` / ``run_sweep``."""
    return Sweep(path)


def run_status(run_dir: Path, steps: int, analyses_dir: Path | None = None, analyses: list[str] = ()) -> str:
    """'done' (trained to its budget, analyses written), 'partial' (a run dir), or 'pending'."""
    if not is_run_dir(run_dir):
        return "pending"
    m = read_metrics(run_dir / METRICS_FILE)
    if not len(m):
        return "partial"
    last = int(m["step"].iloc[-1])
    tr = RunConfig.load(run_dir / "config.json", stored=True).train
    reached = first_reached(m, tr.stop_val_acc) if tr.stop_val_acc > 0 else None
    ended = last >= steps or (reached is not None and last >= stop_step(reached, tr.stop_margin))
    if not ended or not (run_dir / "ckpt" / ckpt_name(last)).exists():
        return "partial"
    if analyses_dir is not None and any(not (analyses_dir / f"{a}.csv").exists() for a in analyses):
        return "partial"
    return "done"


def first_reach(m: pd.DataFrame, col: str, level: float = 0.99):
    hit = m.loc[m[col] >= level, "step"]
    return int(hit.iloc[0]) if len(hit) else None


def result_row(cell: Cell, run_dir: Path, status: str, analyses_dir: Path | None = None) -> dict[str, Any]:
    t = cell.config.task
    row: dict[str, Any] = {"op": t.op, "frac": t.frac, "seed": cell.config.train.seed}
    row.update(cell.coords)
    m = read_metrics(run_dir / METRICS_FILE) if status != "pending" else pd.DataFrame()
    last = m.iloc[-1] if len(m) else None
    row.update({
        "cell": cell.name, "status": status, "steps": cell.config.train.steps,
        "last_step": int(last.step) if last is not None else None,
        "steps_to_train_99": first_reach(m, "train_acc") if len(m) else None,
        "steps_to_val_99": first_reach(m, "val_acc") if len(m) else None,
        "best_val_acc": float(m["val_acc"].max()) if len(m) else math.nan,
        "final_train_acc": float(last.train_acc) if last is not None else math.nan,
        "final_val_acc": float(last.val_acc) if last is not None else math.nan,
        "final_train_loss": float(last.train_loss) if last is not None else math.nan,
        "final_val_loss": float(last.val_loss) if last is not None else math.nan,
    })
    sharp = analyses_dir / "sharpness.csv" if analyses_dir is not None else None
    if sharp is not None and sharp.exists():
        s = pd.read_csv(sharp)
        cols = [c for c in s.columns if c.startswith("sharpness_") and c != "sharpness_evals"]
        if len(s) and cols:
            row["sharpness"] = float(s.sort_values("step")[cols[0]].iloc[-1])
    row["run_dir"] = str(run_dir)
    return row


# --- running ------------------------------------------------------------------------------------------------
def _start_step(run_dir: Path) -> int:
    state = run_dir / STATE_FILE
    if is_run_dir(run_dir) and state.exists():
        return int(read_metadata(state).get("step", "0"))
    return 0


def plan_jobs(sweep: Sweep, batch: int, workers: int) -> list[list[Cell]]:
    """Unfinished cells in jobs: runs that can share a batch (same key and resume step) go together,
    at most ``batch`` per job, split so that ``workers`` processes all get work."""
    from .batched import batch_key
    from .tasks import equation_table

    groups: dict[Any, list[Cell]] = {}
    alone: list[list[Cell]] = []
    n_elems: dict[tuple, int] = {}
    for cell in sweep.cells:
        if sweep.status(cell) == "done":
            continue
        t = cell.config.task
        if (t.op, t.p) not in n_elems:
            n_elems[(t.op, t.p)] = len(equation_table(t.op, t.p)[0])
        key = batch_key(cell.config, n_elems[(t.op, t.p)]) if batch > 1 else None
        if key is None:
            alone.append([cell])
        else:
            groups.setdefault((key, _start_step(sweep.run_dir(cell))), []).append(cell)
    # Each worker's fair share of the runs; a group is cut into near-equal jobs of at most that many
    # (and at most ``batch``), so the workers finish together (48 runs of two shapes on 2 workers:
    # 12+12+12 and 12, not 16+16+4 and 6+6).
    share = max(1, math.ceil((sum(len(c) for c in groups.values()) + len(alone)) / max(1, workers)))
    jobs = []
    for cells in groups.values():
        n_jobs = math.ceil(len(cells) / max(1, min(batch, share)))
        cuts = [round(i * len(cells) / n_jobs) for i in range(n_jobs + 1)]
        jobs += [cells[a:b] for a, b in zip(cuts, cuts[1:])]
    return sorted(jobs + alone, key=len, reverse=True)  # the big jobs first


def run_job(sweep_path: str, names: list[str], threads: int | None = None, progress: bool = False) -> dict[str, str]:
    """Train (or resume) the named cells of a sweep as one batch, then their analyses.

    Returns {cell: "ok" | "interrupted" | error line}. Runs in a pool worker or a Ray task."""
    from .batched import train_batched
    from .train import configure_cpu, prepare, train

    import contextlib

    from .guard import FolderLock

    if threads is not None:  # a worker process of the sweep's own (in the caller's process: see train.cpu_settings)
        configure_cpu(threads)
    sweep = Sweep(sweep_path)
    cells = [c for c in sweep.cells if c.name in set(names)]
    quiet = (lambda *a, **k: None) if not progress else print
    out: dict[str, str] = {}
    locks = contextlib.ExitStack()
    try:
        for c in cells:  # one writer per run, even against a `grokscope train --resume` on it
            lock = locks.enter_context(FolderLock(sweep.run_dir(c), "sweep worker"))
            locks.callback(lambda lk=lock, d=sweep.run_dir(c): None if is_run_dir(d) else lk.discard())
        preps = []
        for c in cells:
            d = sweep.run_dir(c)
            preps.append(prepare(resume=d, steps=c.config.train.steps) if is_run_dir(d) else prepare(c.config, d))
        if len(preps) == 1:
            p = preps[0]
            runs = [train(p.cfg if p.new else None, p.run_dir if p.new else None, resume=None if p.new else p.run_dir,
                          steps=p.cfg.train.steps, progress=progress, log=quiet)]
        else:
            runs = train_batched(preps, progress=progress, log=quiet, desc=f"{len(preps)} runs")
        for c, r in zip(cells, runs):
            out[c.name] = "interrupted" if r.interrupted else "ok"
        if sweep.spec.analyses and not any(r.interrupted for r in runs):
            from .analyze import analyze

            for c, r in zip(cells, runs):
                analyze(r, only=list(sweep.spec.analyses), steps=[r.steps[-1]], out=sweep.analyses_dir(c),
                        progress=False, params=sweep.spec.analyses)
    except GrokscopeError as e:
        out = {c.name: f"error: {e}" for c in cells}
    except KeyboardInterrupt:
        out = {c.name: "interrupted" for c in cells}
    finally:
        locks.close()
    return out


def _pool_init(threads: int, parent: int | None = None) -> None:
    import signal

    import torch

    from .guard import die_with_parent

    die_with_parent(parent)  # a killed sweep leaves no worker training behind it
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool; runs keep their last state


def default_workers() -> int:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def write_spec(path: Path, spec: SweepSpec) -> Sweep:
    """Create the sweep folder, or check that the one there holds this very sweep."""
    f = path / SWEEP_FILE
    if f.exists():
        old = Sweep(path)
        if json.loads(json.dumps(spec.to_dict())) != json.loads(json.dumps(old.spec.to_dict())):
            raise GrokscopeError(f"{path} holds another sweep (its grid differs); continue it with "
                                 f"`grokscope sweep --out {path}` and no grid, or pick another --out")
        return old
    from .guard import LOCK_FILE

    if path.exists() and any(p.name != LOCK_FILE for p in path.iterdir()):
        raise GrokscopeError(f"{path} exists and is not a sweep folder; pick another --out")
    try:
        (path / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_text(f, json.dumps({"spec": spec.to_dict()}, indent=2))
    except OSError as e:
        raise GrokscopeError(f"cannot write the sweep folder {path}: {e.strerror}") from None
    return Sweep(path)


def progress_text(sweep: Sweep, cells: list[Cell]) -> str:
    """How far the given runs are, from their metrics files: share of their steps done, runs at 99 %."""
    done = total = val99 = 0
    for c in cells:
        total += c.config.train.steps
        d = sweep.run_dir(c)
        m = read_metrics(d / METRICS_FILE) if is_run_dir(d) else None
        if m is not None and len(m):
            done += int(m["step"].iloc[-1])
            val99 += bool((m["val_acc"] >= 0.99).any())
    return f"{100 * done / max(1, total):.0f} % of the {len(cells)} runs' steps, {val99} at 99 % validation so far"


def run_sweep(spec: SweepSpec | None, out: str | Path, *, workers: int | None = None, batch: int | None = None,
              ray_address: str | None = None, progress: bool = True, log=print, status_every: float = 60.0) -> Sweep:
    """Run (or continue: ``spec=None``) the sweep in ``out``; returns it with its table written.

    With a pool, a line every ``status_every`` seconds says how far the runs are."""
    for name, value in (("workers", workers), ("batch", batch)):
        if value is not None and value < 1:  # before anything is written
            raise GrokscopeError(f"--{name} must be at least 1, got {value}")
    from .guard import FolderLock

    path = Path(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise GrokscopeError(f"{path} exists and is not a folder; pick another --out")
    if spec is None:
        Sweep(path)  # a sweep to continue must be there (and readable) before anything is locked
    with FolderLock(path, "sweep") as lock:
        try:
            sweep = write_spec(path, spec) if spec is not None else Sweep(path)
        except BaseException:
            if not (path / SWEEP_FILE).exists():
                lock.discard()
            raise
        return _run_sweep(sweep, path, workers, batch, ray_address, progress, log, status_every)


def _run_sweep(sweep: Sweep, path: Path, workers, batch, ray_address, progress, log, status_every) -> Sweep:
    import torch

    gpu = torch.cuda.is_available()
    workers = workers or default_workers()
    batch = batch or (64 if gpu else 1)  # a batch is not cheaper per run on the CPU (see the README)
    jobs = plan_jobs(sweep, batch, workers)
    done = len(sweep.cells) - sum(len(j) for j in jobs)
    each = "one run at a time" if batch == 1 else f"batches of up to {batch} runs"
    where = f"Ray at {ray_address}" if ray_address else f"{workers} local worker(s)"
    log(f"grokscope: sweep {path}: {len(sweep.cells)} runs ({done} done), {len(jobs)} jobs ({each}) on {where}")
    failed: dict[str, str] = {}
    t0 = time.perf_counter()
    finished = 0

    def report(result: dict[str, str]) -> None:
        nonlocal finished
        finished += 1
        bad = {k: v for k, v in result.items() if v != "ok"}
        failed.update(bad)
        names = list(result)
        which = ", ".join(names) if len(names) <= 3 else f"{len(names)} runs ({names[0]} ... {names[-1]})"
        log(f"grokscope: [{finished}/{len(jobs)}] {which}: "
            f"{'ok' if not bad else next(iter(bad.values()))} ({time.perf_counter() - t0:.0f} s)")

    spath = str(path.resolve())
    if not jobs:
        pass
    elif ray_address:
        from .sweep_ray import run_on_ray

        for result in run_on_ray(ray_address, spath, [[c.name for c in j] for j in jobs]):
            report(result)
    elif workers == 1 or len(jobs) == 1:
        for j in jobs:
            report(run_job(spath, [c.name for c in j], None, progress))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        threads = 1 if not gpu else None
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                    initializer=_pool_init, initargs=(threads or torch.get_num_threads(), os.getpid())) as pool:
            futures = {pool.submit(run_job, spath, [c.name for c in j], threads): [c.name for c in j] for j in jobs}
            todo = [c for j in jobs for c in j]
            try:
                pending = set(futures)
                while pending:
                    done, pending = cf.wait(pending, timeout=status_every, return_when=cf.FIRST_COMPLETED)
                    for f in done:
                        try:
                            report(f.result())
                        except Exception as e:  # a worker that died or a bug: the other jobs go on
                            report({name: f"error: {type(e).__name__}: {e}" for name in futures[f]})
                    if not done:
                        log(f"grokscope: {time.perf_counter() - t0:.0f} s: {progress_text(sweep, todo)}")
            except KeyboardInterrupt:
                for f in futures:
                    f.cancel()
                raise
    table_path = sweep.write_table()
    t = sweep.table
    n_done = int((t.status == "done").sum())
    log(f"grokscope: {n_done}/{len(t)} runs done, {int(t.steps_to_val_99.notna().sum())} reached 99 % validation "
        f"accuracy; table -> {table_path}; figures: grokscope sweep-report {path}")
    if failed:
        raise GrokscopeError(f"{len(failed)} run(s) failed, e.g. {next(iter(failed))}: {next(iter(failed.values()))}")
    return sweep


# --- the CLI -------------------------------------------------------------------------------------------------
def spec_from_args(args) -> SweepSpec | None:
    """The grid from the flags (and --preset / --grid), or None when none is given (continue a sweep)."""
    d: dict[str, Any] = {}
    if args.grid:
        d = read_grid_file(args.grid)
    preset_name = args.preset or d.get("preset")
    scale = args.scale or d.get("scale") or ("small" if preset_name else None)
    if preset_name:
        spec = preset_spec(preset_name, scale)
        base, fixed, grid, analyses = spec.base, dict(spec.fixed), dict(spec.grid), dict(spec.analyses)
    else:
        base, fixed, grid, analyses = {}, {}, {}, {}
        if args.scale:
            raise GrokscopeError("--scale goes with --preset")
    if args.config:
        base = RunConfig.load(args.config).to_dict()
    base = {**base, **d.get("base", {})} if d.get("base") else base
    analyses.update(d.get("analyses") or {})
    for k, v in (d.get("fixed") or {}).items():
        fixed[axis_name(k)] = v
    for k, v in (d.get("grid") or {}).items():
        grid[axis_name(k)] = v
    for flag in [*_train_flags(), "variant"]:
        value = getattr(args, flag.replace("-", "_"), None)
        if value is None:
            continue
        values = parse_values(flag, value)
        target, other = (grid, fixed) if len(values) > 1 else (fixed, grid)
        other.pop(flag, None)
        target[flag] = values if len(values) > 1 else values[0]
    if not (grid or fixed or preset_name or args.config or d):
        return None
    return SweepSpec.make(base, fixed, grid, preset=preset_name, scale=scale if preset_name else None,
                          analyses=analyses)


def cmd_sweep(args) -> int:
    spec = spec_from_args(args)
    if spec is None and not os.path.exists(Path(args.out) / SWEEP_FILE):
        raise GrokscopeError(f"{args.out} holds no sweep yet: give a grid (--ops, --fracs, --seeds, ...), "
                             f"--preset or --grid")
    if args.dry_run:
        sweep_cells = spec.cells() if spec is not None else Sweep(args.out).cells
        for c in sweep_cells:
            print(f"{c.name}  " + " ".join(f"{k}={v}" for k, v in c.coords.items()))
        print(f"grokscope: {len(sweep_cells)} runs")
        return 0
    try:
        run_sweep(spec, args.out, workers=args.workers, batch=args.batch, ray_address=args.ray,
                  progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ngrokscope: interrupted; continue with: grokscope sweep --out {args.out}", file=sys.stderr)
        return 130
    return 0


def cmd_sweeps(args) -> int:
    for name, p in SWEEP_PRESETS.items():
        print(f"{name:<11}  {p['help']}")
        print(f"{'':<11}  --scale small: {p['small_note']}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("sweep", help="train a grid of runs (the paper's figures: --preset)",
                       description="Train every cell of a grid as an ordinary run under one sweep folder; "
                                   "started again, skip finished runs and resume the others.")
    p.add_argument("--out", required=True, metavar="DIR", help="the sweep folder (e.g. sweeps/fig2-right)")
    p.add_argument("--preset", metavar="NAME", help="a paper figure: " + ", ".join(SWEEP_PRESETS) +
                   " (see `grokscope sweeps`)")
    p.add_argument("--scale", choices=["small", "paper"], help="with --preset: small (CPU, ~30 min; default) or paper")
    p.add_argument("--grid", metavar="FILE", help="a grid file (JSON or YAML): preset, scale, base, fixed, grid, analyses")
    p.add_argument("--config", metavar="FILE", help="a RunConfig JSON as the base of every run")
    p.add_argument("--workers", type=int, metavar="N", help="local processes (default: one per CPU core, or per GPU)")
    p.add_argument("--batch", type=int, metavar="N", help="runs per batched process (default 64 on a GPU; 1, "
                                                         "no batching, on the CPU, where a batch is not cheaper per run)")
    p.add_argument("--ray", metavar="ADDRESS", help="run the jobs as tasks on this Ray cluster (pip install grokscope[ray]); "
                                                    "the --out folder must be shared with its nodes")
    p.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (with --workers 1)")
    p.add_argument("--variant", "--variants", dest="variant", metavar="LIST", help="Figure 2 (left) variants")
    for flag, (_, _, _, help_) in _train_flags().items():
        names = [f"--{flag}"] + [f"--{k}" for k, v in ALIASES.items() if v == flag]
        p.add_argument(*names, dest=flag.replace("-", "_"), metavar="LIST", default=None,
                       help=f"{help_}; " + ("one value, for every run" if flag == "device" else "a comma list sweeps it"))
    p.set_defaults(func=cmd_sweep)
    q = sub.add_parser("sweeps", help="list the sweep presets (the paper's figures)")
    q.set_defaults(func=cmd_sweeps)


__all__ = ["SweepSpec", "Sweep", "Cell", "load_sweep", "run_sweep", "run_job", "plan_jobs", "SWEEP_PRESETS",
           "preset_spec", "add_parsers"]
