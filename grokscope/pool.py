"""Process pools of grokscope's own workers (a sweep's runs, analyze's checkpoints): spawned processes
that do not run the user's script again, die with their parent and leave Ctrl-C to it."""
from __future__ import annotations

import contextlib
import sys
import types
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Iterator


def pool_init(threads: int, parent: int | None = None) -> None:
    """A pool worker's first call: torch's thread count, SIGTERM when the parent dies, Ctrl-C ignored."""
    import signal

    import torch

    from .locks import die_with_parent

    die_with_parent(parent)  # a killed parent leaves no worker computing behind it
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool; runs keep their last state


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """While a worker starts, ``__main__`` is a bare module: a spawned process runs the parent's main
    script again (as ``__mp_main__``) unless it names no file, and a script that calls ``run_sweep`` or
    ``analyze`` outside ``if __name__ == "__main__":`` would then start it again in every worker. The
    workers only run grokscope's functions, so they need nothing from the user's script."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is None:
            del sys.modules["__main__"]
        else:
            sys.modules["__main__"] = main


class _WorkerProcess(SpawnProcess):
    """A spawned pool worker that does not run the user's script again (``_main_hidden``)."""

    @staticmethod
    def _Popen(process_obj):
        with _main_hidden():
            return SpawnProcess._Popen(process_obj)


class WorkerContext(SpawnContext):
    """The multiprocessing context of grokscope's pools (``mp_context=WorkerContext()``)."""
    Process = _WorkerProcess


__all__ = ["WorkerContext", "pool_init"]
