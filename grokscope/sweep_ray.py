"""``grokscope sweep --ray ADDRESS``: the sweep's jobs as tasks on an existing Ray cluster.

Each job (a batch of runs, as the local pool would run it) is one Ray task that calls
``sweep.run_job``; every task reads the sweep's ``sweep.json`` and writes its run directories under
the sweep folder, so that folder must be on storage every node sees (NFS, a shared volume). The
nodes need grokscope installed (``pip install grokscope[ray]``, the same version as here). A task
asks Ray for one CPU (it trains with one torch thread), or one GPU with ``gpus_per_task``.
"""
from __future__ import annotations

import os
import socket
from typing import Iterator

from .errors import GrokscopeError


def _task(sweep_path: str, names: list[str], threads: int | None) -> dict[str, str]:
    from .sweep import run_job

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
