"""Running a sweep: its unfinished runs planned into jobs, run by a local process pool or as Ray tasks.

Running a sweep again skips finished runs and resumes unfinished ones. Runs that can share a batch
(``batched.batch_key``, and the same resume step) train together in one process, up to ``--batch``
runs per process; a local process pool (``--workers``, one torch thread each on the CPU) or Ray tasks
(``--ray ADDRESS``) run those jobs.

``--ray ADDRESS``: each job is one Ray task on an existing cluster that calls ``run_job``; every task
reads the sweep's ``sweep.json`` and writes its run directories under the sweep folder, so that folder
must be on storage every node sees (NFS, a shared volume). The nodes need grokscope installed (``pip
install grokscope[ray]``, the same version as here). A task asks Ray for one CPU (it trains with one
torch thread), or one GPU with ``gpus_per_task``.
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from ..errors import GrokscopeError
from ..files import remove_stale_temporaries
from ..pool import WorkerContext, pool_init
from ..run import CKPT_DIR, METRICS_FILE, Run, first_reached, is_run_dir, prepare, read_metrics, resume_step
from .folder import FINISHED, HOPELESS, LEVEL, RUNS_DIR, SWEEP_FILE, Sweep, enclosing, saved_text, write_spec
from .spec import Cell, SweepSpec


# --- the jobs -------------------------------------------------------------------------------------------
def plan_jobs(sweep: Sweep, batch: int, workers: int) -> list[list[Cell]]:
    """Unfinished cells in jobs: runs that can share a batch (same key and resume step) go together,
    at most ``batch`` per job, split so that ``workers`` processes all get work."""
    from ..batched import batch_key
    from ..tasks import equation_table

    groups: dict[Any, list[Cell]] = {}
    alone: list[list[Cell]] = []
    n_elems: dict[tuple, int] = {}
    for cell in sweep.cells:
        if sweep.status(cell) in FINISHED:
            continue
        t = cell.config.task
        if (t.op, t.p) not in n_elems:
            n_elems[(t.op, t.p)] = len(equation_table(t.op, t.p)[0])
        key = batch_key(cell.config, n_elems[(t.op, t.p)]) if batch > 1 else None
        if key is None:
            alone.append([cell])
        else:
            groups.setdefault((key, resume_step(sweep.run_dir(cell))), []).append(cell)
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
    from ..cpu import configure_cpu

    if threads is not None:  # a worker process of the sweep's own (in the caller's process: see cpu.cpu_settings)
        configure_cpu(threads)
    sweep = Sweep(sweep_path)
    cells = [c for c in sweep.cells if c.name in set(names)]
    quiet = (lambda *a, **k: None) if not progress else print
    locks = contextlib.ExitStack()
    try:
        _lock_runs(sweep, cells, locks)
        runs = _train_cells(sweep, cells, progress, quiet)
        out = {c.name: "interrupted" if r.interrupted else "ok" for c, r in zip(cells, runs)}
        if sweep.spec.analyses and not any(r.interrupted for r in runs):
            _analyse_cells(sweep, cells, runs)
    except GrokscopeError as e:
        out = {c.name: f"error: {e}" for c in cells}
    except KeyboardInterrupt:
        out = {c.name: "interrupted" for c in cells}
    finally:
        locks.close()
    return out


def _lock_runs(sweep: Sweep, cells: list[Cell], locks: contextlib.ExitStack) -> None:
    """One writer per run, even against a `grokscope train --resume` on it; a run folder the lock made
    and that never became a run is removed when the locks are released."""
    from ..locks import FolderLock

    for c in cells:
        lock = locks.enter_context(FolderLock(sweep.run_dir(c), "sweep worker"))
        locks.callback(lambda lk=lock, d=sweep.run_dir(c): None if is_run_dir(d) else lk.discard())


def _train_cells(sweep: Sweep, cells: list[Cell], progress: bool, log) -> list[Run]:
    """Train (new) or resume (started) the cells' runs: one alone as ``grokscope train`` does, several
    as one batch (``batched.train_batched``)."""
    from ..batched import train_batched
    from ..train import train

    preps = []
    for c in cells:
        d = sweep.run_dir(c)
        preps.append(prepare(resume=d, steps=c.config.train.steps) if is_run_dir(d) else prepare(c.config, d))
    if len(preps) == 1:
        p = preps[0]
        return [train(p.cfg if p.new else None, p.run_dir if p.new else None, resume=None if p.new else p.run_dir,
                      steps=p.cfg.train.steps, progress=progress, log=log)]
    return train_batched(preps, progress=progress, log=log, desc=f"{len(preps)} runs")


def _analyse_cells(sweep: Sweep, cells: list[Cell], runs: list[Run]) -> None:
    """The sweep's own analyses (``spec.analyses``) at each run's last checkpoint."""
    from ..analyze import analyze

    for c, r in zip(cells, runs):
        analyze(r, only=list(sweep.spec.analyses), steps=[r.steps[-1]], out=sweep.analyses_dir(c),
                progress=False, params=sweep.spec.analyses)


# --- the local pool -------------------------------------------------------------------------------------
def default_workers() -> int:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def progress_text(sweep: Sweep, cells: list[Cell]) -> str:
    """How far the given runs are, from their metrics files: share of their steps done, runs at 99 %."""
    done = total = val99 = 0
    for c in cells:
        total += c.config.train.steps
        d = sweep.run_dir(c)
        m = read_metrics(d / METRICS_FILE) if is_run_dir(d) else None
        if m is not None and len(m):
            done += int(m["step"].iloc[-1])
            val99 += first_reached(m, LEVEL, count_step0=True) is not None
    return f"{100 * done / max(1, total):.0f} % of the {len(cells)} runs' steps, {val99} at 99 % validation so far"


class _Tally:
    """Logs each finished job ("[3/8] f0.5_s1: ok (12 s)") and collects the runs that failed."""

    def __init__(self, n_jobs: int, log):
        self.n_jobs, self.log = n_jobs, log
        self.finished = 0
        self.failed: dict[str, str] = {}
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, result: dict[str, str]) -> None:
        self.finished += 1
        bad = {k: v for k, v in result.items() if v != "ok"}
        self.failed.update(bad)
        names = list(result)
        which = ", ".join(names) if len(names) <= 3 else f"{len(names)} runs ({names[0]} ... {names[-1]})"
        self.log(f"grokscope: [{self.finished}/{self.n_jobs}] {which}: "
                 f"{'ok' if not bad else next(iter(bad.values()))} ({self.elapsed():.0f} s)")


def _run_pool(sweep: Sweep, spath: str, jobs: list[list[Cell]], workers: int, threads: int | None,
              status_every: float, tally: _Tally, log) -> None:
    """The jobs on ``workers`` spawned processes; a line every ``status_every`` seconds says how far they are."""
    import concurrent.futures as cf

    import torch

    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=WorkerContext(),
                                initializer=pool_init, initargs=(threads or torch.get_num_threads(), os.getpid())) as pool:
        futures = {pool.submit(run_job, spath, [c.name for c in j], threads): [c.name for c in j] for j in jobs}
        todo = [c for j in jobs for c in j]
        try:
            pending = set(futures)
            while pending:
                done, pending = cf.wait(pending, timeout=status_every, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    try:
                        tally(f.result())
                    except Exception as e:  # a worker that died or a bug: the other jobs go on
                        tally({name: f"error: {type(e).__name__}: {e}" for name in futures[f]})
                if not done:
                    log(f"grokscope: {tally.elapsed():.0f} s: {progress_text(sweep, todo)}")
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            raise


# --- Ray ------------------------------------------------------------------------------------------------------
def _task(sweep_path: str, names: list[str], threads: int | None) -> dict[str, str]:
    return run_job(sweep_path, names, threads)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that takes no TCP connection fails at once, not after Ray's retries."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local", ...: Ray resolves those
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise GrokscopeError(f"cannot connect to the Ray cluster at {address}: {e.strerror or e}") from None


def run_on_ray(address: str, sweep_path: str, jobs: list[list[str]], gpus_per_task: float = 0.0) -> Iterator[dict[str, str]]:
    """Submit every job, then yield each job's {cell: outcome} as it finishes."""
    try:
        import ray
    except ImportError:
        raise GrokscopeError("--ray needs Ray: pip install 'grokscope[ray]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _check_reachable(address)
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, logging_level="ERROR",
                 include_dashboard=False)
    except Exception as e:  # ConnectionError, ValueError, RuntimeError, ...: all one line for the user
        raise GrokscopeError(f"cannot connect to the Ray cluster at {address}: {str(e).strip().splitlines()[0]}") from None
    try:
        options = {"num_cpus": 1} if not gpus_per_task else {"num_cpus": 1, "num_gpus": gpus_per_task}
        remote = ray.remote(**options)(_task)
        threads = None if gpus_per_task else 1
        refs = {remote.remote(sweep_path, names, threads): names for names in jobs}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    yield ray.get(ref)
                except Exception as e:  # a worker that died, a task that raised
                    msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                    yield {name: f"error: Ray task failed: {msg}" for name in refs[ref]}
    finally:
        ray.shutdown()


# --- the entry point ------------------------------------------------------------------------------------------
def run_sweep(spec: SweepSpec | None, out: str | Path, *, workers: int | None = None, batch: int | None = None,
              ray_address: str | None = None, progress: bool = True, log=print, status_every: float = 60.0,
              threads: int | None = None) -> Sweep:
    """Run (or continue: ``spec=None``) the sweep in ``out``; returns it with its table written.

    With a pool, a line every ``status_every`` seconds says how far the runs are; ``threads``: torch
    threads per pool worker (default one on the CPU; on a GPU torch's own)."""
    for name, value in (("workers", workers), ("batch", batch)):
        if value is not None and value < 1:  # before anything is written
            raise GrokscopeError(f"--{name} must be at least 1, got {value}")
    from ..locks import FolderLock

    path = Path(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise GrokscopeError(f"{path} exists and is not a folder; pick another --out")
    for kind, where in enclosing(path):
        if kind in ("run", "results"):
            raise GrokscopeError(f"{path} is inside the {kind} folder {where}; a sweep goes in a folder of its own")
    if spec is None:
        Sweep(path)  # a sweep to continue must be there (and readable) before anything is locked
    else:
        _check_cells_fit(spec, path)
    with FolderLock(path, "sweep") as lock:
        remove_stale_temporaries(path)  # what a killed sweep left
        try:
            sweep = write_spec(path, spec) if spec is not None else Sweep(path)
        except BaseException:
            if not (path / SWEEP_FILE).exists():
                lock.discard()
            raise
        for cell in sweep.cells:  # and in its runs, the finished ones too (a resumed run cleans its own again)
            run_dir = sweep.run_dir(cell)
            if os.path.isdir(run_dir):
                with contextlib.suppress(GrokscopeError), FolderLock(run_dir, "sweep"):  # (busy: its writer cleans it)
                    remove_stale_temporaries(run_dir, run_dir / CKPT_DIR)
        return _run_sweep(sweep, path, workers, batch, ray_address, progress, log, status_every, threads)


def _check_cells_fit(spec: SweepSpec, path: Path) -> None:
    """Refuse up front, as ``train`` does, a cell whose memory or disk cannot fit on this machine (before
    the sweep folder is written). Each cell alone: the workers' runs side by side need more."""
    from ..run import check_fits

    for cell in spec.cells():
        try:
            check_fits(cell.config, path / RUNS_DIR / cell.name)
        except GrokscopeError as e:
            raise GrokscopeError(f"cell {cell.name}: {e}") from None


def _run_sweep(sweep: Sweep, path: Path, workers, batch, ray_address, progress, log, status_every, threads) -> Sweep:
    import torch

    gpu = torch.cuda.is_available()
    workers = workers or default_workers()
    batch = batch or (64 if gpu else 1)  # a batch is not cheaper per run on the CPU (see the README)
    jobs = plan_jobs(sweep, batch, workers)
    done = len(sweep.cells) - sum(len(j) for j in jobs)
    each = "one run at a time" if batch == 1 else f"batches of up to {batch} runs"
    where = f"Ray at {ray_address}" if ray_address else f"{workers} local worker(s)"
    log(f"grokscope: sweep {path}: {len(sweep.cells)} runs ({done} done), {len(jobs)} jobs ({each}) on {where}")
    tally = _Tally(len(jobs), log)
    spath = str(path.resolve())
    if not jobs:
        pass
    elif ray_address:
        for result in run_on_ray(ray_address, spath, [[c.name for c in j] for j in jobs]):
            tally(result)
    elif workers == 1 or len(jobs) == 1:
        for j in jobs:
            tally(run_job(spath, [c.name for c in j], None, progress))
    else:
        _run_pool(sweep, spath, jobs, workers, threads or (1 if not gpu else None), status_every, tally, log)
    _finish(sweep, path, tally.failed, log)
    return sweep


def _finish(sweep: Sweep, path: Path, failed: dict[str, str], log) -> None:
    """Write the results table, say how many runs are done, and raise if any failed."""
    table_path = sweep.write_table()
    t = sweep.table
    n_done, n_hopeless = int((t.status == "done").sum()), int((t.status == HOPELESS).sum())
    hopeless = (f", {n_hopeless} stopped as hopeless ({saved_text(t)})" if n_hopeless else "")
    log(f"grokscope: {n_done}/{len(t)} runs done{hopeless}, {int(t.steps_to_val_99.notna().sum())} reached 99 % "
        f"validation accuracy; table -> {table_path}; figures: grokscope sweep-report {path}")
    if failed:
        raise GrokscopeError(f"{len(failed)} run(s) failed, e.g. {next(iter(failed))}: {next(iter(failed.values()))}")
