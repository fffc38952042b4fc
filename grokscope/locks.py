"""One writer per folder, and pool workers that die with their parent.

- ``FolderLock``: an exclusive ``fcntl.flock`` on ``<folder>/.grokscope.lock``, held by whoever writes
  the folder (``train``, ``train --resume``, ``analyze`` on its results folder, ``sweep`` on the sweep
  folder). A second writer is refused with one line naming the holder (pid and command). The lock is
  re-entrant within a process and is released by the kernel when the process dies (kill -9 included).
- ``die_with_parent``: a pool worker gets SIGTERM when the process that started it dies.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import GrokscopeError
from .files import short_path

LOCK_FILE = ".grokscope.lock"


# --- one writer at a time -------------------------------------------------------------------------
_HELD: dict[str, list] = {}  # realpath -> [fd, count]


def _command() -> str:
    cmd = " ".join(sys.argv) if sys.argv and sys.argv[0] else "python"
    return " ".join(cmd.split())[:200]


class FolderLock:
    """``with FolderLock(folder, "train"):`` holds ``folder``'s lock (creating the folder if needed).

    ``created`` tells whether this lock created the folder (so that a failed start can remove it)."""

    def __init__(self, folder: str | Path, what: str = "write"):
        self.folder = Path(folder)
        self.what = what
        self.created = False
        self._made: list[Path] = []
        self._key: str | None = None

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        import fcntl

        folder = self.folder
        try:
            if folder.exists() and not folder.is_dir():
                raise GrokscopeError(f"{short_path(folder)} exists and is not a folder")
            self._made = []  # the folders this lock creates, the deepest last
            p = folder
            while not p.exists() and p != p.parent:
                self._made.insert(0, p)
                p = p.parent
            self.created = bool(self._made)
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GrokscopeError(f"cannot create the folder {short_path(folder)}: {e.strerror}") from None
        key = os.path.realpath(folder)
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return
        path = folder / LOCK_FILE
        for _ in range(5):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                if self.created:
                    _rmdir_quietly(folder)
                raise GrokscopeError(f"cannot lock {short_path(folder)} for writing: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(fd)
                os.close(fd)
                raise GrokscopeError(f"{short_path(folder)} is being written by another grokscope process ({holder}); "
                                     f"wait for it to finish or stop it") from None
            try:  # the file we locked must still be the one under that name
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n{self.what}\n{_command()}\n".encode())
            except OSError:
                pass  # the lock holds; only the holder's note is missing
            _HELD[key] = [fd, 1]
            self._key = key
            return
        raise GrokscopeError(f"cannot lock {short_path(folder)}: its lock file keeps changing")

    def discard(self) -> None:
        """Remove the lock file and the folders this lock created, when nothing else is in them
        (a start that failed before writing anything). Call it while holding the lock."""
        if not self.created:
            return
        try:
            (self.folder / LOCK_FILE).unlink()
        except OSError:
            return
        for p in reversed(self._made):
            try:
                p.rmdir()
            except OSError:
                return

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None or key not in _HELD:
            return
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            fd = _HELD.pop(key)[0]
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)


def held(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return os.path.realpath(folder) in _HELD


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        lines = os.read(fd, 1024).decode("utf-8", "replace").splitlines()
    except OSError:
        lines = []
    if len(lines) >= 3 and lines[0].isdigit():
        return f"pid {lines[0]}: {lines[2]}"
    return "its pid is not recorded yet"


def _rmdir_quietly(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


# --- pool workers die with their parent ---------------------------------------------------------------
def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask the kernel to send this process SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``);
    elsewhere a thread watches the parent. Called in each pool worker as it starts."""
    import signal

    parent = parent_pid if parent_pid is not None else os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before the request took effect
                    os.kill(os.getpid(), signal.SIGTERM)
                return
        except (OSError, AttributeError):
            pass
    import threading
    import time

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(143)
            time.sleep(1.0)

    threading.Thread(target=watch, name="grokscope-parent-watch", daemon=True).start()
