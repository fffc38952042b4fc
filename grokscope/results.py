"""The results folder of a run: one plain table per analysis, with a JSON sidecar.

    analyses/<run>/<name>.csv    long format: a ``step`` column, then the analysis' own columns
    analyses/<run>/<name>.json   {"analysis", "kind", "version", "params", "steps", "run", "run_id",
                                  "checkpoints", "columns", "sha256", "updated"}

Where: a run's results folder is found from the run itself, not from the current folder:
``<run>/../../analyses/<run name>`` when the run sits in a ``checkpoints/`` or ``runs/`` folder (so
``checkpoints/quick`` -> ``analyses/quick``, and a sweep's ``runs/<cell>`` -> its ``analyses/<cell>``),
else ``<run>/../analyses/<run name>``.

Trust: the sidecar names the run (``run_id``, ``run``: its absolute path), holds the table's columns
and sha256 (a table changed since it was written is refused, or recomputed by analyze) and, for every step done,
the fingerprint (size and mtime) of the checkpoint file its rows came from. Cached rows are reused
only when the run, the analysis ``version``, its ``params`` and the checkpoint file are all the same;
anything else is computed again. A results folder that holds the results of another run that still
exists is refused (one line). Every file is written to a temporary name, fsynced and renamed into
place, so a file under its final name is always complete.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import GrokscopeError
from .files import atomic_write_bytes, atomic_write_text
from .run import is_run_dir

RESULTS_ROOT = Path("analyses")
TABLE_SUFFIX = ".csv"
SIDECAR_SUFFIX = ".json"
RUN_PARENTS = ("checkpoints", "runs")  # a run in such a folder has its results beside that folder
# floats read back exactly as written (pandas 3's default parser does it, and deprecates the option)
EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def default_out_dir(run_path: str | Path) -> Path:
    """The results folder of the run at ``run_path``, found from the run's own location:
    ``X/checkpoints/<run>`` and ``X/runs/<run>`` -> ``X/analyses/<run>``; ``X/<run>`` -> ``X/analyses/<run>``
    otherwise. Relative when ``run_path`` is relative, so it reads as the user typed it."""
    path = Path(run_path)
    if path.name in ("", ".", ".."):
        path = Path(path.resolve())
    parent = path.parent
    base = parent.parent if parent.name in RUN_PARENTS else parent
    return base / RESULTS_ROOT.name / path.name


def canonical(params: dict[str, Any]) -> dict[str, Any]:
    """Params as they read back from JSON (tuples become lists, keys sorted), for comparing."""
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def _fix_step(df: pd.DataFrame) -> pd.DataFrame:
    """Step columns (``step``, ``start_step``, ``end_step``, ...) as integers: int64, or pandas' nullable
    Int64 where some are missing (a phase that has not ended), never floats."""
    for col in [c for c in df.columns if c == "step" or str(c).endswith("_step")]:
        values = pd.to_numeric(df[col], errors="coerce")
        if values.notna().sum() != df[col].notna().sum() or not (values.dropna() % 1 == 0).all():
            continue  # not step numbers
        df[col] = values.astype("Int64" if values.isna().any() else "int64")
    return df


def csv_rows(table: pd.DataFrame) -> bytes:
    """A table's rows as ``ResultStore.write`` writes them: its CSV lines without the header, UTF-8 (so
    that the lines of parts of a table, rendered where they were computed, make up the table's file)."""
    return _fix_step(table.copy()).to_csv(index=False, header=False).encode("utf-8")


class ResultStore:
    """Reads and writes the tables and sidecars of one results folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def table_path(self, name: str) -> Path:
        return self.folder / f"{name}{TABLE_SUFFIX}"

    def sidecar_path(self, name: str) -> Path:
        return self.folder / f"{name}{SIDECAR_SUFFIX}"

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob(f"*{SIDECAR_SUFFIX}") if self.table_path(p.stem).is_file())

    def meta(self, name: str) -> dict[str, Any] | None:
        try:
            meta = json.loads(self.sidecar_path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            return None
        return meta if isinstance(meta, dict) else None

    def owner(self) -> dict[str, str] | None:
        """{"run_id", "run"} of the run whose results this folder holds (from its sidecars), if any."""
        for name in self.names():
            meta = self.meta(name) or {}
            if isinstance(meta.get("run_id"), str):
                return {"run_id": meta["run_id"], "run": str(meta.get("run", ""))}
        return None

    def copy_of(self, run) -> Path | None:
        """The other folder, when this folder's results were computed from a copy of ``run`` (``cp -a``:
        the same run id) that still exists elsewhere; None otherwise (a run moved away is not a copy).
        Two copies may each go on training: their results are never merged."""
        owner = self.owner()
        if owner is None or owner["run_id"] != run.run_id or not owner["run"]:
            return None
        other = Path(owner["run"])
        if not other.is_absolute() or Path(os.path.realpath(other)) == Path(os.path.realpath(run.path)):
            return None
        if not is_run_dir(other):
            return None
        try:
            from .run import Run

            return other if Run(other).run_id == run.run_id else None
        except GrokscopeError:
            return None

    def check_owner(self, run) -> bool:
        """Refuse (one line) a folder that holds the results of another run that still exists, or of
        a copy of this run in another folder. Returns True when it holds results of another run that
        is gone (they will be replaced)."""
        copy = self.copy_of(run)
        if copy is not None:
            raise GrokscopeError(f"{self.folder} holds the results of {copy}, a copy of {run.path} (the two share "
                                 f"run id {run.run_id}); the results of two copies are never merged: pick another --out")
        owner = self.owner()
        if owner is None or owner["run_id"] == run.run_id:
            return False
        other = Path(owner["run"]) if owner["run"] else None
        alive = False
        if other is not None and other.is_absolute() and is_run_dir(other):
            try:
                from .run import Run

                alive = Run(other).run_id == owner["run_id"]
            except GrokscopeError:
                alive = False
        if alive:
            raise GrokscopeError(f"{self.folder} holds the results of another run ({other}); "
                                 f"pick another --out for {run.path}")
        return True

    def table(self, name: str, strict: bool = False) -> pd.DataFrame | None:
        """The table, checked against its sidecar (columns, a whole-number step); None when missing or
        damaged, or one clear error with ``strict``."""
        path = self.table_path(name)
        try:
            from .files import read_text

            text = read_text(path, "results table", limit=None)
            from io import StringIO

            table = _fix_step(pd.read_csv(StringIO(text), **EXACT_FLOATS))
        except GrokscopeError:
            if strict:
                raise
            return None
        except (ValueError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            if strict:
                raise GrokscopeError(f"results table {path} is damaged: {' '.join(str(e).split())[:150]}") from None
            return None
        meta = self.meta(name) or {}
        want = meta.get("columns")
        problem = None
        if isinstance(meta.get("sha256"), str) and hashlib.sha256(text.encode("utf-8")).hexdigest() != meta["sha256"]:
            problem = "it changed since it was written (its sidecar's sha256 differs)"
        elif "step" not in table.columns:
            problem = "it has no step column"
        elif isinstance(want, list) and list(table.columns) != want:
            missing = [c for c in want if c not in table.columns]
            problem = f"its columns are not those its sidecar lists ({'missing ' + ', '.join(map(str, missing[:3])) if missing else 'they differ'})"
        if problem:
            if strict:
                raise GrokscopeError(f"results table {path} is damaged: {problem}")
            return None
        return table

    def cached(self, name: str, version: int, params: dict[str, Any], run_id: str | None = None,
               fingerprints: dict[int, str | None] | None = None) -> tuple[pd.DataFrame | None, set[int]]:
        """The stored rows and done steps that can be reused: computed for this run (``run_id``), with
        this version and these params, from the very checkpoint files (``fingerprints``: step -> the
        current file's fingerprint)."""
        meta = self.meta(name)
        if not meta or meta.get("version") != version or meta.get("params") != canonical(params):
            return None, set()
        if run_id is not None and meta.get("run_id") != run_id:
            return None, set()
        table = self.table(name)
        if table is None:
            return None, set()
        try:
            done = {int(s) for s in meta.get("steps", [])}
        except (TypeError, ValueError):
            return None, set()
        if fingerprints is not None:
            recorded = meta.get("checkpoints")
            if not isinstance(recorded, dict):
                return None, set()
            done = {s for s in done if recorded.get(str(s)) is not None and recorded.get(str(s)) == fingerprints.get(s)}
        return table[table["step"].isin(done)].reset_index(drop=True), done  # rows the sidecar vouches for

    def write(self, name: str, table: pd.DataFrame, meta: dict[str, Any], rows: list[bytes] | None = None) -> None:
        """``rows``: ``csv_rows`` of the table's rows in pieces, in order, when the caller has them already
        (the header is added here; the pieces are written one after the other, not joined)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GrokscopeError(f"cannot write results to {self.folder}: {e.strerror}") from None
        # the header, then the lines (steps as ints: ``csv_rows``)
        pieces = [table.iloc[:0].to_csv(index=False).encode("utf-8"), *(rows if rows is not None else [csv_rows(table)])]
        digest = hashlib.sha256()
        for piece in pieces:
            digest.update(piece)
        meta = {**meta, "params": canonical(meta.get("params", {})), "columns": [str(c) for c in table.columns],
                "sha256": digest.hexdigest(), "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_bytes(self.table_path(name), pieces)
        atomic_write_text(self.sidecar_path(name), json.dumps(meta, indent=1, default=_json_default) + "\n")

    def load_all(self, run_id: str | None = None, strict: bool = True) -> dict[str, pd.DataFrame]:
        """Every table, checked (a damaged one is one clear error with ``strict``, else left out);
        with ``run_id``, only the tables computed for that run."""
        out = {}
        for name in self.names():
            meta = self.meta(name)
            if meta is None and strict:
                raise GrokscopeError(f"results sidecar {self.sidecar_path(name)} is damaged (not a JSON object); "
                                     f"run `grokscope analyze` again")
            if run_id is not None and (meta or {}).get("run_id") != run_id:
                continue
            table = self.table(name, strict=strict)
            if table is not None:
                out[name] = table
        return out


def _json_default(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def load_results(path: str | Path) -> dict[str, pd.DataFrame]:
    """The tables of a results folder: analysis name -> DataFrame with a ``step`` column.

    ``path`` is a results folder (``analyses/<run>``), or a run directory, which stands for its
    results folder (``default_out_dir``: found from the run's location, from any working folder);
    then only the tables computed for that very run are returned. The ``step`` column is int64, or
    nullable Int64 where a row has no step (an absent phase). A damaged table is one clear error.
    """
    path = Path(path)
    run = None
    if is_run_dir(path):
        from .run import Run

        run = Run(path)
        folder = default_out_dir(path)
    else:
        folder = path
    if not folder.is_dir():
        hint = f" (the results folder of run {path})" if folder != path else ""
        raise GrokscopeError(f"no analysis results in {folder}{hint}; run `grokscope analyze` first")
    store = ResultStore(folder)
    copy = store.copy_of(run) if run is not None else None
    if copy is not None:
        raise GrokscopeError(f"the results in {folder} are of {copy}, a copy of {path} in another folder, not of "
                             f"{path}; run `grokscope analyze --ckpt-dir {path}`")
    results = store.load_all(run_id=run.run_id if run is not None else None)
    if not results:
        other = store.owner() if run is not None else None
        if other is not None and other["run_id"] != run.run_id:
            raise GrokscopeError(f"the results in {folder} are of another run ({other['run'] or other['run_id']}), "
                                 f"not of {path}; run `grokscope analyze --ckpt-dir {path}`")
        raise GrokscopeError(f"no analysis results in {folder}; run `grokscope analyze` first")
    return results


__all__ = ["ResultStore", "load_results", "default_out_dir", "RESULTS_ROOT"]
