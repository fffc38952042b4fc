"""The analysis registry: every analysis is one file in this folder that registers itself here.

Two kinds:
- ``checkpoint``: ``fn(model, data, **params) -> pandas.DataFrame`` (or a dict of scalars, one row),
  computed on one HookedTransformer and the run's Dataset. Over a run, the framework calls it per
  checkpoint, adds the ``step`` column, caches the rows per step, and recomputes everything when
  ``version`` or the params change. Callable directly from a notebook on any model.
- ``run``: ``fn(run, results, **params) -> pandas.DataFrame``, computed from the run's metrics and
  the other analyses' results (``results``: name -> DataFrame); e.g. the phases.

An analysis's parameters and their defaults are its function's keyword parameters (everything after
``(model, data)`` or ``(run, results)``); each must have a default. A name is registered once: a second
``@register`` of a name is refused.

``applies(data) -> str | None`` returns why the analysis does not apply to a task (None: it applies).
``default_steps``: ``"all"`` checkpoints, ``"few"`` (a handful, log-spaced plus the phase
boundaries: flatness), or ``"slider"`` (about 20 log-spaced plus the phase boundaries: the t-SNE
maps and key-frequency circles, one slider step each).
"""
from __future__ import annotations

import inspect
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
    params: dict[str, Any] = field(default_factory=dict)  # fn's keyword parameters and defaults (``signature_params``)
    applies: Callable[[Any], str | None] = lambda data: None
    expensive: bool = False  # not run by default; asked for with --only
    # resolve(run, params) -> params: settle run-dependent params before a run's checkpoints are analysed
    # (e.g. fourier's key_freqs="final" -> the last checkpoint's key frequencies); None: as given
    resolve: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None


REGISTRY: dict[str, Analysis] = {}


def signature_params(fn: Callable[..., Any]) -> dict[str, Any]:
    """An analysis function's parameters and their defaults: its parameters after the first two
    (``model, data`` or ``run, results``), each of which must have a default."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    found = [p for p in inspect.signature(fn).parameters.values() if p.kind in kinds][2:]
    missing = [p.name for p in found if p.default is inspect.Parameter.empty]
    if missing:
        raise GrokscopeError(f"analysis function {fn.__name__}: its parameter {missing[0]!r} has no default")
    return {p.name: p.default for p in found}


def register(name: str, *, summary: str, version: int = 1, kind: str = "checkpoint", default_steps: str = "all",
             needs: tuple[str, ...] = (), applies: Callable[[Any], str | None] | None = None, expensive: bool = False,
             resolve: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None):
    """Decorator: ``@register("weight_norms", summary="...")`` above the analysis function. A name
    already registered is refused (one clear error), not replaced."""
    if kind not in ("checkpoint", "run"):
        raise ValueError(f"kind must be 'checkpoint' or 'run', got {kind!r}")
    if name in REGISTRY:
        raise GrokscopeError(f"analysis {name!r} is already registered (by {REGISTRY[name].fn.__module__}."
                             f"{REGISTRY[name].fn.__qualname__}); choose another name")

    def deco(fn):
        REGISTRY[name] = Analysis(name, fn, summary, version, kind, default_steps, tuple(needs), signature_params(fn),
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
