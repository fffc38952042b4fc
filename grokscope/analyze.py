"""``analyze``: run the registered analyses over a run's checkpoints, caching results per checkpoint.

    run dir (checkpoints/<run>)  ->  analyze()  ->  analyses/<run>/<name>.csv + <name>.json

Checkpoint analyses first: each checkpoint that some chosen analysis has not done yet is loaded once
(its weights checked and loaded into one model that is built once, ``_Loader``) and handed to every
analysis that needs it, which share their common work (``sharing``: the grid forward); a checkpoint
that is missing, truncated or unreadable is skipped with one warning line. Many checkpoints are
spread over ``workers`` processes (one per core by default), in chunks of ``CHUNK_STEPS``, their
rows gathered here in step order. Then the run analyses (phases), from the metrics and the tables.
Tables are written every ``FLUSH_S`` seconds (less often when writing them takes long: at most
``1 / FLUSH_SHARE`` of the time) and at the end, so an interrupted analysis keeps what it did. (The
``grokscope analyze`` sub-command is in cli.py.)
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from .analyses.base import REGISTRY, Analysis, get_analysis
from .analyses._common import sharing
from .analyses.base import unavailable
from .errors import GrokscopeError, did_you_mean, printable
from .files import remove_stale_temporaries
from .results import ResultStore, csv_rows, default_out_dir
from .locks import FolderLock
from .run import Run, fingerprint, is_run_dir
from .weights import load_weights
from .provenance import provenance
from .cpu import restoring_cpu_settings

FLUSH_S = 60.0  # write the tables this often during a long analysis
FLUSH_SHARE = 10  # ... but wait at least this many times as long as the last write took
CHUNK_STEPS = 16  # checkpoints per job of a worker process
MIN_WORKER_STEPS = 64  # fewer checkpoints than this per worker: no worker processes (their start-up costs seconds)
FEW_LOG_STEPS = 5  # log-spaced checkpoints for default_steps="few", besides the phase boundaries
SLIDER_LOG_STEPS = 20  # for default_steps="slider" (the maps of Figure 3): log-spaced, besides the boundaries


def warn(message: str) -> None:
    from .progress import tqdm

    tqdm.write(f"grokscope: warning: {printable(' '.join(str(message).split()))}", file=sys.stderr)


def open_run(run_or_path: Run | str | Path) -> Run:
    if isinstance(run_or_path, Run):
        return run_or_path
    path = Path(run_or_path)
    if os.path.isdir(path) and not is_run_dir(path):
        inside = sorted(p.name for p in path.iterdir() if is_run_dir(p))
        if inside:
            more = f" (and {len(inside) - 3} more)" if len(inside) > 3 else ""
            raise GrokscopeError(f"{path} is not a run directory but holds runs: "
                                 f"{', '.join(str(path / n) for n in inside[:3])}{more}; pass one of them")
    return Run(path)


# --- what to compute --------------------------------------------------------------------------
def select(only: str | Iterable[str] | None, data) -> list[Analysis]:
    """The analyses to run: checkpoint ones first, then run ones (registry order within each)."""
    if only is None:
        chosen = [a for a in REGISTRY.values() if not a.expensive and a.applies(data) is None]
    else:
        names = [n.strip() for n in only.split(",")] if isinstance(only, str) else [str(n).strip() for n in only]
        names = [n for n in names if n]
        if not names:
            raise GrokscopeError("no analysis named; see `grokscope analyses`")
        chosen = []
        for name in names:
            a = get_analysis(name)
            why = a.applies(data)
            if why is not None:
                raise GrokscopeError(unavailable(name, why))
            chosen.append(a)
        for a in list(chosen):  # a run analysis brings the (cheap, applicable) tables it reads
            for need in a.needs:
                b = REGISTRY.get(need)
                if b is not None and not b.expensive and b.applies(data) is None:
                    chosen.append(b)
    order = list(REGISTRY)
    unique = {a.name: a for a in chosen}.values()
    return sorted(unique, key=lambda a: (a.kind == "run", order.index(a.name)))


def resolve_params(chosen: list[Analysis], params: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    given = dict(params or {})
    for name, values in given.items():
        a = get_analysis(name)
        if not isinstance(values, dict):
            raise GrokscopeError(f"params for {name!r} must be a dict of keyword arguments")
        for key in values:
            if key not in a.params:
                raise GrokscopeError(f"analysis {name!r} has no parameter {key!r}{did_you_mean(key, a.params)} "
                                     f"(it has: {', '.join(a.params) or 'none'})")
    return {a.name: {**a.params, **given.get(a.name, {})} for a in chosen}


def choose_steps(available: list[int], steps: Iterable[int] | None, every: int | None) -> list[int]:
    """The checkpoints asked for: ``steps`` (those that exist), or multiples of ``every`` plus the
    last checkpoint, or all of them."""
    if steps is not None and every is not None:
        raise GrokscopeError("give either steps or every, not both")
    if steps is not None:
        wanted = sorted({int(s) for s in steps})
        have = set(available)
        missing = [s for s in wanted if s not in have]
        if missing:
            warn(f"no checkpoint at step{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing[:10]))}"
                 f"{' ...' if len(missing) > 10 else ''}; skipped")
        found = [s for s in wanted if s in have]
        if not found:
            raise GrokscopeError(f"none of the steps asked for has a checkpoint; the run has {len(available)} "
                                 f"checkpoints" + (f" from {available[0]} to {available[-1]}" if available else ""))
        return found
    if every is not None:
        if every < 1:
            raise GrokscopeError(f"every must be at least 1, got {every}")
        return sorted({s for s in available if s % every == 0} | set(available[-1:]))
    return list(available)


def few_steps(available: list[int], boundaries: Iterable[int] = (), n_log: int = FEW_LOG_STEPS) -> list[int]:
    """A handful of checkpoints: ``n_log`` log-spaced ones (the first and last included) and the
    checkpoint nearest each phase boundary."""
    if not available:
        return []
    picked = {available[0], available[-1]}
    positive = [s for s in available if s > 0]
    if positive and n_log > 1:
        lo, hi = math.log(positive[0]), math.log(positive[-1])
        for i in range(n_log):
            target = math.exp(lo + (hi - lo) * i / (n_log - 1))
            picked.add(min(positive, key=lambda s: abs(math.log(s) - math.log(target))))
    for b in boundaries:
        picked.add(min(available, key=lambda s: abs(s - b)))
    return sorted(picked)


def _inputs(store: ResultStore, a: Analysis, tables: dict[str, pd.DataFrame], run_id: str | None = None
            ) -> dict[str, pd.DataFrame]:
    """The tables a run analysis reads: its ``needs`` (all tables when it names none), of this run only."""
    names = a.needs or tuple(store.names())
    out = {}
    for name in names:
        if name in tables:
            table = tables[name]
        elif run_id is None or (store.meta(name) or {}).get("run_id") == run_id:
            table = store.table(name)
        else:
            table = None
        if table is not None:
            out[name] = table
    return out


def _boundaries(run: Run, store: ResultStore) -> list[int]:
    from .analyses.phases import boundary_steps, find_phases, run_facts

    return boundary_steps(find_phases(run.metrics, _inputs(store, get_analysis("phases"), {}, run.run_id),
                                      **run_facts(run)))


# --- the work -------------------------------------------------------------------------------------
def _as_table(out, name: str) -> pd.DataFrame:
    if isinstance(out, pd.DataFrame):
        return out
    if isinstance(out, dict):
        return pd.DataFrame([out])
    raise TypeError(f"analysis {name!r} returned {type(out).__name__}; expected a DataFrame or a dict")


def _step_rows(out, name: str, step: int) -> pd.DataFrame:
    """An analysis's output for one checkpoint as its rows in the table: a ``step`` column first, floats
    as float64 (which the CSV keeps exactly: cached rows read back equal fresh ones)."""
    table = _as_table(out, name).copy()
    if "step" in table.columns:
        table = table.drop(columns="step")
    for c in table.columns:
        if pd.api.types.is_float_dtype(table[c].dtype) and table[c].dtype != "float64":
            table[c] = table[c].astype("float64")
    table.insert(0, "step", step)
    return table


def _joined_text(parts: list[pd.DataFrame], texts: list[list[bytes] | None], table: pd.DataFrame
                 ) -> list[bytes] | None:
    """The rows of ``table`` (the parts concatenated and sorted by step) as CSV lines in pieces, the parts'
    own lines in step order (not joined: a run's tables can be a GB of text): None unless every part has them, each part is sorted by step, their steps do not
    interleave, and every part's columns have the table's dtypes (an int column that another part
    made float is written "3.0" in the table, "3" in the part)."""
    if any(t is None for t in texts):
        return None
    dtypes = list(table.dtypes)
    order = sorted(range(len(parts)), key=lambda i: int(parts[i]["step"].iloc[0]) if len(parts[i]) else -1)
    last = None
    for i in order:
        part = parts[i]
        if not len(part):
            continue
        if list(part.columns) != list(table.columns) or list(part.dtypes) != dtypes \
                or not part["step"].is_monotonic_increasing or (last is not None and part["step"].iloc[0] <= last):
            return None
        last = part["step"].iloc[-1]
    return [piece for i in order for piece in texts[i]]


class _Pending:
    """One checkpoint analysis in progress: cached rows, new rows (with their CSV lines, rendered where
    they were computed: the worker processes), steps done."""

    def __init__(self, a: Analysis, params: dict[str, Any], store: ResultStore, run: Run,
                 fingerprints: dict[int, str | None]):
        self.a, self.params, self.store, self.run = a, params, store, run
        cached, self.done = store.cached(a.name, a.version, params, run.run_id, fingerprints)
        self.prints = {s: fingerprints[s] for s in self.done}  # step -> the checkpoint file its rows came from
        self.parts = [cached] if cached is not None else []
        self.texts: list[list[bytes] | None] = [None] * len(self.parts)  # each part's CSV lines (None: not rendered)
        meta = store.meta(a.name)
        # stale cache (another version, params, run, or changed checkpoint files): rewrite
        self.dirty = meta is not None and (cached is None or len(self.done) != len(meta.get("steps", [])))
        self.todo: set[int] = set()
        self.provenance: dict | None = None  # the record written in the sidecar (set by analyze)

    def add(self, prints: dict[int, str | None], rows: pd.DataFrame, text: bytes | None = None) -> None:
        """``rows``: ``_step_rows`` of the analysis's output at the steps of ``prints`` (step -> the
        checkpoint's fingerprint), concatenated; ``text``: their ``csv_rows`` CSV lines."""
        self.parts.append(rows)
        self.texts.append(None if text is None else [text])
        self.done.update(prints)
        self.prints.update(prints)
        self.dirty = True

    def table(self) -> pd.DataFrame:
        kept = [(p, t) for p, t in zip(self.parts, self.texts) if len(p.columns)]
        if not kept:
            return pd.DataFrame({"step": pd.Series(dtype="int64")})
        parts, texts = [p for p, _ in kept], [t for _, t in kept]
        table = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        text = _joined_text(parts, texts, table) if len(parts) > 1 else texts[0]
        table = table.sort_values("step", kind="stable").reset_index(drop=True)
        self.parts, self.texts = [table], [text]
        return table

    def flush(self) -> None:
        if self.dirty:
            table = self.table()
            if self.texts[0] is None:
                self.texts[0] = [csv_rows(table)]
            self.store.write(self.a.name, table, {
                "analysis": self.a.name, "kind": self.a.kind, "version": self.a.version, "params": self.params,
                "steps": sorted(self.done), "run": str(self.run.path.resolve()), "run_id": self.run.run_id,
                "checkpoints": {str(s): self.prints.get(s) for s in sorted(self.done)}, "provenance": self.provenance},
                rows=self.texts[0])
            self.dirty = False


@restoring_cpu_settings  # subnormal floats flushed, as in training (long-decayed weights are full of them)
def analyze(run_or_path: Run | str | Path, only: str | Iterable[str] | None = None,
            steps: Iterable[int] | None = None, every: int | None = None, out: str | Path | None = None,
            progress: bool = True, params: dict[str, dict[str, Any]] | None = None,
            workers: int | None = None) -> dict[str, pd.DataFrame]:
    """Run analyses over a run's checkpoints and return their tables (name -> DataFrame with ``step``).

    ``only``: analysis names (a list or "a,b"); default every analysis that is not ``expensive`` and
    applies to the task (see ``grokscope analyses``); a run analysis named here brings the tables it
    reads. ``steps``: these checkpoints only; ``every``: checkpoints whose step is a multiple of it,
    plus the last; default all of them. Analyses registered with ``default_steps="few"`` get a
    handful (log-spaced plus the phase boundaries) unless ``steps`` is given; ``"slider"`` ones (the
    maps of Figure 3) ``SLIDER_LOG_STEPS`` log-spaced plus the boundaries. ``out``: the results
    folder (default ``results.default_out_dir``: ``analyses/<run dir name>`` beside the run's
    ``checkpoints/`` folder, found from the run, not from the current folder). ``params``: {analysis: {keyword: value}} over the
    registered defaults. Results are cached per checkpoint: what was done with the same version and
    params is not computed again, for this run and the same checkpoint files (see ``results``). The
    results folder is locked while it is written: a second ``analyze`` on it is refused.
    ``workers``: processes that analyse the checkpoints (default: one per core this process may use,
    divided by torch's thread count, when there are at least ``MIN_WORKER_STEPS`` checkpoints per worker
    to do and every analysis is one of grokscope's; 1: all in this process). The tables are the same.
    """
    from .progress import tqdm

    run = open_run(run_or_path).refresh()  # the checkpoints there are now (a run may be growing)
    data = run.data
    chosen = select(only, data)
    all_params = resolve_params(chosen, params)
    store = ResultStore(Path(out) if out is not None else default_out_dir(run.path))
    if os.path.exists(store.folder) and not os.path.isdir(store.folder):
        raise GrokscopeError(f"the results folder {store.folder} exists and is not a folder; pick another --out")
    from .sweep.folder import check_results_folder

    check_results_folder(store.folder)  # where it writes, before anything is read or computed
    for a in chosen:
        if a.resolve is not None:
            all_params[a.name] = a.resolve(run, all_params[a.name])
    with FolderLock(store.folder, "analyze") as lock:
        remove_stale_temporaries(store.folder)  # what a killed analyze left
        try:
            return _analyze(run, data, chosen, all_params, store, steps, every, progress, workers)
        except BaseException:
            if not store.names():
                lock.discard()  # nothing was written: leave no empty results folder behind
            raise


def _analyze(run: Run, data, chosen: list[Analysis], all_params: dict, store: ResultStore,
             steps: Iterable[int] | None, every: int | None, progress: bool, workers: int | None
             ) -> dict[str, pd.DataFrame]:
    if store.check_owner(run):
        warn(f"{store.folder} held the results of an earlier run that no longer exists; they are replaced")
    available = run.steps
    if not available and steps is not None:
        raise GrokscopeError(f"run {run.path} has no checkpoints yet")
    asked = choose_steps(available, steps, every) if available else []
    prints = run.fingerprints(available)
    pending = [_Pending(a, all_params[a.name], store, run, prints) for a in chosen if a.kind == "checkpoint"]
    record = provenance("cpu")  # versions and machine, in each sidecar this call writes
    for p in pending:
        p.provenance = record
    _plan(run, store, pending, available, asked, few_default=steps is None)
    _checkpoint_analyses(run, data, pending, progress, workers)
    tables = {p.a.name: p.table() for p in pending}
    for a in chosen:
        if a.kind == "run":
            tables[a.name] = _run_analysis(run, a, all_params[a.name], store, tables, record)
    return tables


def _plan(run: Run, store: ResultStore, pending: list[_Pending], available: list[int], asked: list[int],
          few_default: bool) -> None:
    """Each pending analysis's ``todo``: the steps asked for, or (``default_steps`` "few" or "slider",
    no steps given) a handful around the phase boundaries; less what the cache already holds."""
    few: dict[int, list[int]] = {}
    for p in pending:
        if p.a.default_steps in ("few", "slider") and few_default:
            n_log = SLIDER_LOG_STEPS if p.a.default_steps == "slider" else FEW_LOG_STEPS
            if not few:
                few[-1] = _boundaries(run, store)
            if n_log not in few:
                few[n_log] = few_steps(available, few[-1], n_log)
            want = few[n_log]
        else:
            want = asked
        p.todo = {s for s in want if s not in p.done}


class _Loader:
    """One checkpoint after another into one model, built at the first: each state dict is read and
    checked as ``Run.model_at`` does (``state_dict_at``, ``load_weights``), without building a model per
    checkpoint. ``done()`` puts back what an analysis may have changed besides the weights (hooks,
    train mode, which parameters take gradients)."""

    def __init__(self, run: Run):
        self.run, self.model, self.grad = run, None, []

    def load(self, step: int):
        if self.model is None:
            self.model = self.run.model_at(step)
            self.grad = [p.requires_grad for p in self.model.parameters()]
            return self.model
        load_weights(self.model, self.run.state_dict_at(step), f"checkpoint {self.run.checkpoint_path(step)}")
        return self.model

    def done(self) -> None:
        self.model.reset_hooks()
        self.model.eval()
        for p, g in zip(self.model.parameters(), self.grad):
            p.requires_grad_(g)


def _analyse_step(loader: _Loader, data, step: int, jobs: list[tuple[str, Callable, dict]]):
    """(fingerprint, {name: rows}) of one checkpoint, or (fingerprint, the GrokscopeError's text) when
    it cannot be read. ``jobs``: (name, fn, params) of the analyses to run on it."""
    print_ = fingerprint(loader.run.checkpoint_path(step))
    try:
        model = loader.load(step)
    except GrokscopeError as e:
        return print_, str(e)
    try:
        with sharing():  # analyses of this checkpoint share their common work (the grid forward)
            return print_, {name: _step_rows(fn(model, data, **params), name, step) for name, fn, params in jobs}
    finally:
        loader.done()


def _analyse_steps(loader: _Loader, data, work: list[tuple[int, list[tuple[str, Callable, dict]]]]):
    """A batch of checkpoints, ``work``: (step, jobs) each. Returns ([(step, fingerprint, None or the
    GrokscopeError's text)], {name: ({step: fingerprint}, the rows of those steps, their CSV lines)}):
    the lines are rendered here, so that worker processes, not the parent, do it once per row."""
    entries, parts = [], {}
    for step, jobs in work:
        print_, rows = _analyse_step(loader, data, step, jobs)
        entries.append((step, print_, rows if isinstance(rows, str) else None))
        for name, r in ({} if isinstance(rows, str) else rows).items():
            prints, frames = parts.setdefault(name, ({}, []))
            prints[step] = print_
            frames.append(r)
    out = {}
    for name, (prints, frames) in parts.items():
        table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        out[name] = (prints, table, csv_rows(table))
    return entries, out


_WORKER: dict[str, _Loader] = {}  # in a worker process: run path -> its loader, kept between jobs


def _worker_init(threads: int, parent: int) -> None:
    from .cpu import configure_cpu
    from .pool import pool_init

    pool_init(threads, parent)
    configure_cpu(threads)


def _worker_job(path: str, work: list[tuple[int, list[str]]], params: dict[str, dict]) -> tuple[list, dict]:
    """In a worker process: ``_analyse_steps`` of ``work``, (step, analysis names) each."""
    loader = _WORKER.get(path)
    if loader is None:
        _WORKER.clear()
        loader = _WORKER[path] = _Loader(Run(path))
    return _analyse_steps(loader, loader.run.data,
                          [(step, [(n, get_analysis(n).fn, params[n]) for n in names]) for step, names in work])


def worker_count(n_steps: int) -> int:
    """One process per core this process may use (per ``torch.get_num_threads()`` cores), at most one
    per ``MIN_WORKER_STEPS`` checkpoints."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores // max(1, torch.get_num_threads()), n_steps // MIN_WORKER_STEPS))


def _results(run: Run, data, pending: list[_Pending], todo: list[int], workers: int):
    """``_analyse_steps`` of every step of ``todo``, in order, in chunks of ``CHUNK_STEPS``: here, or in
    ``workers`` processes (a few chunks ahead, so memory stays flat)."""
    work = [(step, [p.a.name for p in pending if step in p.todo]) for step in todo]
    if workers <= 1:
        loader = _Loader(run)
        jobs = {p.a.name: (p.a.name, p.a.fn, p.params) for p in pending}
        for i in range(0, len(work), CHUNK_STEPS):
            yield _analyse_steps(loader, data, [(step, [jobs[n] for n in names])
                                                for step, names in work[i:i + CHUNK_STEPS]])
        return
    import concurrent.futures as cf
    from collections import deque

    import torch

    from .pool import WorkerContext

    params = {p.a.name: p.params for p in pending}
    chunks = iter([work[i:i + CHUNK_STEPS] for i in range(0, len(work), CHUNK_STEPS)])
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=WorkerContext(), initializer=_worker_init,
                                  initargs=(torch.get_num_threads(), os.getpid()))
    try:
        ahead: deque = deque()
        for chunk in chunks:
            ahead.append(pool.submit(_worker_job, str(run.path), chunk, params))
            if len(ahead) >= 2 * workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
        pool.shutdown(wait=True)  # every job is done: the workers exit
    except cf.process.BrokenProcessPool:
        raise GrokscopeError(f"a worker process of analyze died (killed, or out of memory); what was done is "
                             f"kept: run it again, with fewer workers (now {workers})") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _checkpoint_analyses(run: Run, data, pending: list[_Pending], progress: bool, workers: int | None) -> None:
    """Load each checkpoint some analysis still needs once and hand it to them; tables flushed every
    ``FLUSH_S`` seconds and at the end (nothing written when no checkpoint could be read)."""
    from .progress import tqdm  # one output per bar in a notebook

    todo = sorted({s for p in pending for s in p.todo})
    ours = all(p.a.fn.__module__.startswith("grokscope.") for p in pending)  # a worker imports only these
    if workers is None:
        workers = worker_count(len(todo)) if ours else 1
    elif workers > 1 and not ours:
        raise GrokscopeError("workers > 1 runs only grokscope's own analyses (a worker process imports only "
                             "those); pass workers=1")
    next_flush = time.monotonic() + FLUSH_S
    skipped: list[str] = []
    ok = 0
    try:
        bar = tqdm(total=len(todo), disable=not progress or not todo, desc=f"analyze {run.path.name}", unit="ckpt",
                   dynamic_ncols=True, file=sys.stderr, mininterval=0.5)
        for entries, parts in _results(run, data, pending, todo, min(workers, max(1, len(todo)))):
            bar.update(len(entries))
            for step, _, error in entries:
                if error is None:
                    ok += 1
                    continue
                skipped.append(error)
                if len(skipped) < len(todo):
                    warn(f"skipping step {step}: {error}")
            for p in pending:
                if p.a.name in parts:
                    p.add(*parts[p.a.name])
            if time.monotonic() > next_flush:
                t = time.monotonic()
                for p in pending:
                    p.flush()
                next_flush = time.monotonic() + max(FLUSH_S, FLUSH_SHARE * (time.monotonic() - t))
        bar.close()
    finally:
        for p in pending if ok or not todo else ():  # nothing could be read: write nothing, say why
            p.flush()
    if todo and not ok:
        raise GrokscopeError(f"none of the {len(todo)} checkpoints to analyse could be read; the last: {skipped[-1]}")


def _run_analysis(run: Run, a: Analysis, params: dict, store: ResultStore, tables: dict[str, pd.DataFrame],
                  record: dict) -> pd.DataFrame:
    """A run analysis (phases) over the metrics and this run's tables; written, and read back."""
    results = _inputs(store, a, tables, run.run_id)
    table = _as_table(a.fn(run, results, **params), a.name)
    store.write(a.name, table, {"analysis": a.name, "kind": a.kind, "version": a.version, "params": params,
                                "inputs": sorted(results),
                                "steps": [int(s) for s in table["step"].dropna()] if "step" in table else [],
                                "run": str(run.path.resolve()), "run_id": run.run_id, "provenance": record})
    return store.table(a.name)


__all__ = ["analyze", "select", "choose_steps", "few_steps"]
