"""The results folder of a run: one plain table per analysis, with a JSON sidecar.

    analyses/<run>/<name>.csv    long format: a ``step`` column, then the analysis' own columns
    analyses/<run>/<name>.json   {"analysis", "kind", "version", "params", "steps", "run", "updated"}

``steps`` in the sidecar lists the checkpoints done (a step whose analysis gave no rows counts as done);
``version`` and ``params`` say what the rows were computed with: when either differs from what is
asked, the cached rows are dropped and the analysis is computed again. Every file is written to a
temporary name and renamed into place, so a file under its final name is always complete.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import GrokscopeError
from .run import atomic_write_text, is_run_dir

RESULTS_ROOT = Path("analyses")
TABLE_SUFFIX = ".csv"
SIDECAR_SUFFIX = ".json"


def default_out_dir(run_path: str | Path) -> Path:
    """``checkpoints/<run>`` -> ``analyses/<run>`` (relative to the current folder, as training's default)."""
    return RESULTS_ROOT / Path(run_path).resolve().name


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
            meta = json.loads(self.sidecar_path(name).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return meta if isinstance(meta, dict) else None

    def table(self, name: str) -> pd.DataFrame | None:
        try:
            return _fix_step(pd.read_csv(self.table_path(name)))
        except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
            return None

    def cached(self, name: str, version: int, params: dict[str, Any]) -> tuple[pd.DataFrame | None, set[int]]:
        """The stored rows and done steps, if they were computed with this version and these params."""
        meta = self.meta(name)
        if not meta or meta.get("version") != version or meta.get("params") != canonical(params):
            return None, set()
        table = self.table(name)
        if table is None or "step" not in table.columns:
            return None, set()
        done = {int(s) for s in meta.get("steps", [])}
        return table[table["step"].isin(done)].reset_index(drop=True), done  # rows the sidecar vouches for

    def write(self, name: str, table: pd.DataFrame, meta: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {**meta, "params": canonical(meta.get("params", {})),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            atomic_write_text(self.table_path(name), _fix_step(table.copy()).to_csv(index=False))  # steps as ints
            atomic_write_text(self.sidecar_path(name), json.dumps(meta, indent=1, default=_json_default) + "\n")
        except OSError as e:
            raise GrokscopeError(f"cannot write results to {self.folder}: {e.strerror}") from None

    def load_all(self) -> dict[str, pd.DataFrame]:
        out = {}
        for name in self.names():
            table = self.table(name)
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
    default results folder ``analyses/<run dir name>`` (relative to the current folder). The
    ``step`` column is int64, or nullable Int64 where a row has no step (an absent phase).
    """
    path = Path(path)
    folder = default_out_dir(path) if is_run_dir(path) else path
    if not folder.is_dir():
        hint = f" (the results folder of run {path})" if folder != path else ""
        raise GrokscopeError(f"no analysis results in {folder}{hint}; run `grokscope analyze` first")
    results = ResultStore(folder).load_all()
    if not results:
        raise GrokscopeError(f"no analysis results in {folder}; run `grokscope analyze` first")
    return results


__all__ = ["ResultStore", "load_results", "default_out_dir", "RESULTS_ROOT"]
