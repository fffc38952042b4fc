"""What a sweep is: a base config, fixed axis values and swept axes, expanded into cells (runs).

An axis is any ``grokscope train`` flag (``op``, ``frac``, ``seed``, ``lr``, ``weight-decay``,
``outliers``, ``variant``, ...): one value fixes it, several sweep it. ``seed`` sets the seed of the
initialisation and, unless ``split-seed`` is given, of the split. A cell's config is: the preset's
base config, then its variant, then the fixed values, then its coordinates.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig, axes, parse_values, set_flags
from ..errors import GrokscopeError, did_you_mean
from ..run import slug

ALIASES = {"ops": "op", "fracs": "frac", "seeds": "seed", "variants": "variant"}
GRID_KEYS = ("preset", "scale", "base", "fixed", "grid", "analyses")  # the keys of a grid file


# --- axes: the config schema's flags (``config.axes``), typed and coerced there -----------------------
def axis_name(name: str) -> str:
    """'weight_decay' / 'seeds' -> 'weight-decay' / 'seed'; unknown names are an error."""
    a = ALIASES.get(name, name).replace("_", "-")
    a = ALIASES.get(a, a)
    known = ["variant", *axes()]
    if a not in known:
        raise GrokscopeError(f"unknown sweep axis {name!r}{did_you_mean(a, known) or '.'} Axes: {', '.join(known)}")
    return a


def apply_coords(base: RunConfig, coords: dict[str, Any]) -> RunConfig:
    """base <- variant <- every other axis (``seed`` also sets the split seed unless ``split-seed`` is set:
    ``config.set_flags``, the rule ``grokscope train`` follows)."""
    return set_flags(base.copy(), coords)


SHORT = {"op": "", "frac": "f", "seed": "s", "variant": "", "outliers": "k", "lr": "lr", "weight-decay": "wd"}


def cell_name(coords: dict[str, Any]) -> str:
    return "_".join(SHORT.get(a, a.replace("-", "") + "=") + slug(v) for a, v in coords.items())


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
            from ..tasks import get_operation

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


# --- grid files -----------------------------------------------------------------------------------------
def read_grid_file(path: str | Path) -> dict[str, Any]:
    """A grid file (JSON, or YAML when PyYAML is installed): {preset, scale, base, fixed, grid, analyses}."""
    from ..files import read_text

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
    unknown = set(d) - set(GRID_KEYS)
    if unknown:
        raise GrokscopeError(f"grid file {path}: unknown key {sorted(unknown)[0]!r} (keys: {', '.join(GRID_KEYS)})")
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
