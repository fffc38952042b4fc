"""The analysis registry: every analysis is one file in this folder that registers itself here.

Two kinds:
- ``checkpoint``: ``fn(model, data, **params) -> pandas.DataFrame`` (or a dict of scalars, one row),
  computed on one HookedTransformer and the run's Dataset. Over a run, the framework calls it per
  checkpoint, adds the ``step`` column, caches the rows per step, and recomputes everything when
  ``version`` or the params change. Callable directly from a notebook on any model.
- ``run``: ``fn(run, results, **params) -> pandas.DataFrame``, computed from the run's metrics and
  the other analyses' results (``results``: name -> DataFrame); e.g. the phases.

``applies(data) -> str | None`` returns why the analysis does not apply to a task (None: it applies);
a ``MissingExtra`` reason (``extra_missing``) says it would apply once an optional extra is installed.
``default_steps``: ``"all"`` checkpoints, ``"few"`` (a handful, log-spaced plus the phase
boundaries: flatness), or ``"slider"`` (about 20 log-spaced plus the phase boundaries: the t-SNE
maps and key-frequency circles, one slider step each).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import GrokscopeError, did_you_mean


@dataclass(frozen=True)
class Analysis:
    name: str
    fn: Callable[..., Any]
    summary: str  # one line, shown by `grokscope analyses`
    version: int = 1
    kind: str = "checkpoint"  # or "run"
    default_steps: str = "all"  # or "few", "slider"
    needs: tuple[str, ...] = ()  # analyses whose results a "run" analysis reads
    params: dict[str, Any] = field(default_factory=dict)  # default keyword arguments of fn
    applies: Callable[[Any], str | None] = lambda data: None
    expensive: bool = False  # not run by default; asked for with --only
    # resolve(run, params) -> params: settle run-dependent params before a run's checkpoints are analysed
    # (e.g. fourier's key_freqs="final" -> the last checkpoint's key frequencies); None: as given
    resolve: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None


REGISTRY: dict[str, Analysis] = {}


class MissingExtra(str):
    """Why an analysis cannot run here that is not about the task: an optional extra is not installed."""


def extra_missing(analysis: str, extra: str, module: str) -> MissingExtra | None:
    """None if ``module`` imports, else the line that names the extra and its install command."""
    if importlib.util.find_spec(module) is not None:
        return None
    return MissingExtra(f"the {analysis} analysis needs the `{extra}` extra ({module}): pip install 'grokscope[{extra}]'")


def unavailable(name: str, why: str) -> str:
    """The one line that says why analysis ``name`` is not run: a missing extra, or a task it does not fit."""
    return why if isinstance(why, MissingExtra) else f"{name} does not apply to this task: {why}"


def register(name: str, *, summary: str, version: int = 1, kind: str = "checkpoint", default_steps: str = "all",
             needs: tuple[str, ...] = (), params: dict[str, Any] | None = None,
             applies: Callable[[Any], str | None] | None = None, expensive: bool = False,
             resolve: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None):
    """Decorator: ``@register("weight_norms", summary="...")`` above the analysis function."""
    if kind not in ("checkpoint", "run"):
        raise ValueError(f"kind must be 'checkpoint' or 'run', got {kind!r}")

    def deco(fn):
        REGISTRY[name] = Analysis(name, fn, summary, version, kind, default_steps, tuple(needs), dict(params or {}),
                                  applies or (lambda data: None), expensive, resolve)
        return fn

    return deco


def get_analysis(name: str) -> Analysis:
    try:
        return REGISTRY[name]
    except KeyError:
        raise GrokscopeError(f"unknown analysis {name!r}{did_you_mean(name, REGISTRY) or '.'} "
                             f"Known: {', '.join(REGISTRY)}") from None


def compute(name: str, *args, **params):
    """One registered analysis, from a notebook, as a DataFrame (an analysis whose function returns a
    dict gives one row): checkpoint analyses take ``(model, data)``, run analyses ``(run, results)``;
    the registered default params apply, overridden by ``params``.

        from grokscope.analyses import compute
        compute("fourier", run.model_at(1000), run.data, n_key=3)
    """
    import pandas as pd

    a = get_analysis(name)
    out = a.fn(*args, **{**a.params, **params})
    if isinstance(out, pd.DataFrame):
        return out
    if isinstance(out, dict):
        return pd.DataFrame([out])
    raise TypeError(f"analysis {name!r} returned {type(out).__name__}; expected a DataFrame or a dict")
