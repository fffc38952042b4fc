"""The process-wide CPU settings of the commands that compute: torch threads, subnormal floats flushed, the heap kept
between steps (``configure_cpu``), and a scope that restores them for library calls."""
from __future__ import annotations

import contextlib
import functools
import sys

import torch


# =============================================================================================
# Process-wide CPU settings
# =============================================================================================
def configure_cpu(threads: int | None = None) -> None:
    """Process-wide settings for training and analysis on the CPU (idempotent), for a process
    grokscope owns (the ``grokscope`` command, a sweep's worker processes, a benchmark): they are
    not undone. A call from Python gets ``cpu_settings()`` instead.

    ``threads``: torch's intra-op and inter-op thread counts (the command's ``--threads``, default 1:
    for models this small one thread per process is faster, and far faster when anything else runs;
    docs/speed.md has the measurement). The inter-op count can be set only before the process's first
    inter-op work; later it stays as it was."""
    torch.set_flush_denormal(True)  # weight decay drives weights subnormal; slows the CPU many-fold
    if threads:
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already set, or inter-op work already started: torch allows it once
            pass
    _keep_heap()


def flush_denormal_enabled() -> bool:
    """Whether this thread flushes subnormal floats to zero (torch has a setter but no getter): half the
    smallest normal float32 is subnormal, and comes out 0 when they are flushed."""
    return float(torch.tensor(torch.finfo(torch.float32).tiny) / 2) == 0.0


@contextlib.contextmanager
def cpu_settings():
    """Subnormal floats flushed to zero for the duration (as ``configure_cpu``), then as they were: a
    call from Python (``train``, ``analyze``) leaves the caller's process as it found it. The kept
    heap (``mallopt``), which cannot be undone, is set only in processes grokscope owns: the
    ``grokscope`` command and a sweep's worker processes call ``configure_cpu``."""
    was = flush_denormal_enabled()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if not was:
            torch.set_flush_denormal(False)


def restoring_cpu_settings(fn):
    """Decorator: run ``fn`` inside ``cpu_settings()``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with cpu_settings():
            return fn(*args, **kwargs)

    return wrapper


_HEAP_KEPT = False


def _keep_heap() -> None:
    """Keep freed activation buffers in the heap instead of returning them to the kernel.

    glibc serves allocations above its mmap threshold (128 KB at first) with fresh mmaps and trims
    the heap top when it frees: every training step then page-faults its few-MB activations back
    in (about 450 minor faults a step on the default model, 0.8 ms of system time). Raising both
    thresholds keeps that memory mapped: the process keeps up to 512 MB of freed heap instead of
    returning it. Process-wide and permanent, so only ``configure_cpu`` calls it; a no-op where the C
    library is not glibc."""
    global _HEAP_KEPT
    if _HEAP_KEPT or not sys.platform.startswith("linux"):
        return
    _HEAP_KEPT = True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 512 << 20)
    except (OSError, AttributeError):
        pass


def heap_kept() -> bool:
    """Whether this process has set glibc's kept heap (``configure_cpu``)."""
    return _HEAP_KEPT


__all__ = ["configure_cpu", "cpu_settings", "restoring_cpu_settings", "flush_denormal_enabled"]
