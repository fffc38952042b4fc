"""What keeps a run's files trustworthy: one writer per folder, checks on everything read, sizes.

- ``FolderLock``: an exclusive ``fcntl.flock`` on ``<folder>/.grokscope.lock``, held by whoever writes
  the folder (``train``, ``train --resume``, ``analyze`` on its results folder, ``sweep`` on the sweep
  folder). A second writer is refused with one line naming the holder (pid and command). The lock is
  re-entrant within a process and is released by the kernel when the process dies (kill -9 included).
- ``die_with_parent``: a pool worker gets SIGTERM when the process that started it dies.
- ``read_text``: a text file that must be a regular, UTF-8 file of bounded size (not ``/dev/zero``).
- ``check_*``: the checks applied when a resume state, a checkpoint or a dataset is read.
- ``estimate`` / ``check_fits``: memory and disk a config needs, refused up front when they do not fit.
"""
from __future__ import annotations

import json
import math
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import GrokscopeError

LOCK_FILE = ".grokscope.lock"
TEXT_LIMIT = 16 << 20  # config, grid and sweep files: at most 16 MB


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
                raise GrokscopeError(f"{_short(folder)} exists and is not a folder")
            self._made = []  # the folders this lock creates, the deepest last
            p = folder
            while not p.exists() and p != p.parent:
                self._made.insert(0, p)
                p = p.parent
            self.created = bool(self._made)
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GrokscopeError(f"cannot create the folder {_short(folder)}: {e.strerror}") from None
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
                raise GrokscopeError(f"cannot lock {_short(folder)} for writing: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(fd)
                os.close(fd)
                raise GrokscopeError(f"{_short(folder)} is being written by another grokscope process ({holder}); "
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
        raise GrokscopeError(f"cannot lock {_short(folder)}: its lock file keeps changing")

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


def _short(path: Path | str, n: int = 120) -> str:
    text = str(path)
    return text if len(text) <= n else text[: n // 2] + "..." + text[-n // 2:]


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


# --- reading files -------------------------------------------------------------------------------------
def read_text(path: str | Path, what: str, limit: int | None = TEXT_LIMIT) -> str:
    """The text of a regular UTF-8 file of at most ``limit`` bytes, or one clear error."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise GrokscopeError(f"{what} {_short(path)} does not exist") from None
    except OSError as e:
        raise GrokscopeError(f"cannot read {what} {_short(path)}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise GrokscopeError(f"{what} {_short(path)} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise GrokscopeError(f"{what} {_short(path)} is not a regular file")
    if limit is not None and st.st_size > limit:
        raise GrokscopeError(f"{what} {_short(path)} is too large ({fmt_bytes(st.st_size)}; at most {fmt_bytes(limit)})")
    try:
        with open(path, "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
    except OSError as e:
        raise GrokscopeError(f"cannot read {what} {_short(path)}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GrokscopeError(f"{what} {_short(path)} is not UTF-8 text (byte {e.start}): binary or damaged") from None
    if "\x00" in text:
        raise GrokscopeError(f"{what} {_short(path)} holds NUL bytes: binary or damaged")
    return text


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return ""


# --- what is read must match --------------------------------------------------------------------------
def check_finite_tensors(tensors: dict, what: str) -> None:
    import torch

    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise GrokscopeError(f"{what}: {k} holds inf or NaN")


def check_weights(state: dict, model, what: str) -> None:
    """Keys, shapes and dtypes of a state dict against a model's own; every parameter finite, every
    buffer (the attention's mask and IGNORE value) equal to the model's."""
    import torch

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    bad_dtype = [k for k in expected if k in state and k not in bad_shape and state[k].dtype != expected[k].dtype]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:3])}")
    if bad_shape:
        k = bad_shape[0]
        parts.append(f"{k} has shape {tuple(state[k].shape)}, config gives {tuple(expected[k].shape)}")
    if bad_dtype:
        k = bad_dtype[0]
        parts.append(f"{k} is {str(state[k].dtype).replace('torch.', '')}, the model's is "
                     f"{str(expected[k].dtype).replace('torch.', '')}")
    if parts:
        raise GrokscopeError(f"{what} does not match the run's config: {'; '.join(parts)}")
    params = {n for n, _ in model.named_parameters()}
    check_finite_tensors({k: state[k] for k in expected if k in params}, what)
    for k in expected:
        if k not in params and not torch.equal(state[k], expected[k]):
            raise GrokscopeError(f"{what}: the buffer {k} differs from the model's own")


def check_resume_state(t: dict, step: int, total: int, model, train_names: list[str], what: str) -> None:
    """A resume state against the model it will be loaded into: its step, keys, shapes, dtypes, values."""
    if not (0 <= step <= total):
        raise GrokscopeError(f"{what}: its step {step} is outside the run's 0..{total}")
    check_weights({k[6:]: v for k, v in t.items() if k.startswith("model.")}, model, what)
    params = dict(model.named_parameters())
    known = {f"model.{k}" for k in model.state_dict()} | {"rng", "grokfast_ma_count"}  # the keys a state may hold
    opt_steps: set[float] = set()  # the optimiser's step counts (one per parameter, all equal)
    for n in train_names:
        opt_steps |= _check_optimiser_state(t, n, params[n], what, known)
        _check_per_parameter_tensors(t, n, params[n], what, known)
    _check_grokfast_ma_count(t, train_names, what)
    extra = sorted(set(t) - known)
    if extra:
        raise GrokscopeError(f"{what}: unexpected tensor {extra[0]}")
    _check_rng_state(t, what)
    if len(opt_steps) > 1 or (opt_steps and not all(math.isfinite(s) and s == step for s in opt_steps)):
        raise GrokscopeError(f"{what}: its step {step} disagrees with the optimiser's own count "
                             f"({', '.join(f'{s:g}' for s in sorted(opt_steps)[:3])})")
    if step > 0 and not opt_steps:
        raise GrokscopeError(f"{what}: step {step} but no optimiser state")


def _check_optimiser_state(t: dict, n: str, p, what: str, known: set) -> set[float]:
    """AdamW's ``opt.<n>.exp_avg``, ``exp_avg_sq`` (shaped like the parameter, finite, the second moment
    >= 0) and ``step`` (a scalar count, returned) for parameter ``n``; their keys go into ``known``."""
    import torch

    steps = set()
    for kind in ("exp_avg", "exp_avg_sq", "step"):
        key = f"opt.{n}.{kind}"
        known.add(key)
        if key not in t:
            continue
        v = t[key]
        if kind == "step":
            if v.numel() != 1 or not v.is_floating_point() and v.dtype not in (torch.int64, torch.int32):
                raise GrokscopeError(f"{what}: {key} is not a scalar step count")
            steps.add(float(v.reshape(())))
            continue
        if tuple(v.shape) != tuple(p.shape) or v.dtype != p.dtype:
            raise GrokscopeError(f"{what}: {key} has shape {tuple(v.shape)} and dtype "
                                 f"{str(v.dtype).replace('torch.', '')}; the parameter's are {tuple(p.shape)}, "
                                 f"{str(p.dtype).replace('torch.', '')}")
        if not bool(torch.isfinite(v).all()) or (kind == "exp_avg_sq" and bool((v < 0).any())):
            raise GrokscopeError(f"{what}: {key} holds inf, NaN or a negative second moment")
    return steps


def _check_per_parameter_tensors(t: dict, n: str, p, what: str, known: set) -> None:
    """The other tensors kept per parameter ``n``: the Grokfast EMA (``grokfast.<n>``), the initial
    weights (``init.<n>``, for decay to the initialisation) and Grokfast-MA's ring of the last gradients
    (``grokfast_ma.<n>``: (window, *shape)). Shaped like the parameter and finite; keys into ``known``."""
    import torch

    for prefix in ("grokfast", "init"):
        key = f"{prefix}.{n}"
        known.add(key)
        if key in t:
            v = t[key]
            if tuple(v.shape) != tuple(p.shape) or v.dtype != p.dtype or not bool(torch.isfinite(v).all()):
                raise GrokscopeError(f"{what}: {key} does not match the parameter (shape, dtype) or is not finite")
    key = f"grokfast_ma.{n}"
    known.add(key)
    if key in t:
        v = t[key]
        if tuple(v.shape[1:]) != tuple(p.shape) or v.dim() != p.dim() + 1 or v.dtype != p.dtype \
                or not bool(torch.isfinite(v).all()):
            raise GrokscopeError(f"{what}: {key} does not match the parameter (shape, dtype) or is not finite")


def _check_grokfast_ma_count(t: dict, train_names: list[str], what: str) -> None:
    """Grokfast-MA's count of gradients in its ring: a count, with a ring for every trained parameter."""
    import torch

    if "grokfast_ma_count" in t:
        v = t["grokfast_ma_count"]
        if v.numel() != 1 or v.dtype not in (torch.int64, torch.int32) or int(v.reshape(())) < 0:
            raise GrokscopeError(f"{what}: grokfast_ma_count is not a count")
        missing = [n for n in train_names if f"grokfast_ma.{n}" not in t]
        if missing:
            raise GrokscopeError(f"{what}: missing grokfast_ma.{missing[0]}")


def _check_rng_state(t: dict, what: str) -> None:
    """The random generator's state: uint8 bytes of a CPU generator's length, or 16 (CUDA, Philox)."""
    import torch

    if "rng" not in t or t["rng"].dtype != torch.uint8 or t["rng"].dim() != 1 \
            or t["rng"].numel() not in (torch.Generator().get_state().numel(), 16):
        raise GrokscopeError(f"{what}: the random generator's state is missing or damaged")


def check_dataset(data, cfg, meta: dict, what: str) -> None:
    """A run's saved equations, split and outliers against its config and against themselves."""
    import torch

    t = cfg.task
    if meta.get("op") not in (None, t.op) or meta.get("p") not in (None, str(t.p)):
        raise GrokscopeError(f"{what} was made for op {meta.get('op')!r}, p {meta.get('p')}; config.json says "
                             f"op {t.op!r}, p {t.p}")
    n_el = data.n_elements
    if n_el < 1:
        raise GrokscopeError(f"{what}: no elements")
    for name in ("all_x", "all_y", "train_idx", "val_idx", "train_y", "outlier_pos"):
        if getattr(data, name).dtype != torch.long:
            raise GrokscopeError(f"{what}: {name} is not an integer tensor")
    x, y = data.all_x, data.all_y
    n = len(y)
    if x.dim() != 2 or x.shape[1] != 4 or x.shape[0] != n or n < 2:
        raise GrokscopeError(f"{what}: the equations have shape {tuple(x.shape)} for {n} answers; expected ({n}, 4)")
    if bool((x[:, [0, 2]] < 0).any() | (x[:, [0, 2]] >= n_el).any()) or bool((x[:, 1] != n_el).any()) \
            or bool((x[:, 3] != n_el + 1).any()):
        raise GrokscopeError(f"{what}: a token is out of range (elements 0..{n_el - 1}, op {n_el}, = {n_el + 1})")
    for name, v, hi in (("all_y", y, n_el), ("train_y", data.train_y, n_el), ("train_idx", data.train_idx, n),
                        ("val_idx", data.val_idx, n)):
        if v.dim() != 1 or bool((v < 0).any() | (v >= hi).any()):
            raise GrokscopeError(f"{what}: {name} is out of range (0..{hi - 1})")
    tr, va = data.train_idx, data.val_idx
    if len(data.train_y) != len(tr):
        raise GrokscopeError(f"{what}: {len(data.train_y)} training answers for {len(tr)} training equations")
    seen = torch.zeros(n, dtype=torch.long)
    seen.index_add_(0, torch.cat([tr, va]), torch.ones(len(tr) + len(va), dtype=torch.long))
    if len(tr) == 0 or len(va) == 0 or bool((seen != 1).any()):
        raise GrokscopeError(f"{what}: the training and validation sets are not a split of the equations "
                             f"(they overlap, repeat or miss some)")
    op_ = data.outlier_pos
    if op_.dim() != 1 or bool((op_ < 0).any() | (op_ >= len(tr)).any()) or len(op_) != t.outliers:
        raise GrokscopeError(f"{what}: its {len(op_)} outliers do not match config.json's {t.outliers}")
    clean = torch.ones(len(tr), dtype=torch.bool)
    clean[op_] = False
    if not bool((data.train_y[clean] == y[tr][clean]).all()):
        raise GrokscopeError(f"{what}: training answers differ from the equations' answers outside the outliers")
    if len(tr) != int(round(t.frac * n)):
        raise GrokscopeError(f"{what}: {len(tr)} of {n} equations train; config.json's fraction {t.frac} gives "
                             f"{int(round(t.frac * n))}")
    from .tasks import OPERATIONS, equation_table

    if t.op in OPERATIONS and n <= 1_000_000:  # the table must be the operation's own
        elements, ex, ey = equation_table(t.op, t.p)
        if elements != data.elements or not torch.equal(ex, x) or not torch.equal(ey, y):
            raise GrokscopeError(f"{what}: its equations are not those of op {t.op!r} with p {t.p} (config.json)")


# --- sizes ------------------------------------------------------------------------------------------------
@dataclass
class Estimate:
    n_equations: int
    n_params: int
    batch: int
    memory: int  # bytes of RAM (or device memory) at the peak, roughly
    disk: int  # bytes written by the whole schedule
    n_ckpts: int
    ckpt_bytes: int


def _n_elements(op, p: int) -> int:
    if not op.uses_p:
        return len(op.elements(p))
    if op.kind in ("modular", "multiplicative") or p > 1_000_000:
        return p
    return len(op.elements(p))


def n_params(m, d_vocab: int, n_out: int, n_ctx: int = 4) -> int:
    """Parameters of the HookedTransformer that ``model.build_model`` makes (LN/biases included)."""
    d = m.d_model
    per_layer = 4 * d * d + 3 * d + d + 2 * d * m.d_mlp + m.d_mlp + d + (4 * d if m.norm != "none" else 0)
    return d_vocab * d + n_ctx * d + m.n_layers * per_layer + (2 * d if m.norm != "none" else 0) + d * n_out + n_out


def schedule_len(total: int, every: int, log_points: int) -> int:
    return min(log_points, min(every, total)) + total // max(1, every) + 2


def estimate(cfg, start: int = 0) -> Estimate:
    """Memory and disk that training ``cfg`` (from ``start``) needs, from the config alone."""
    from .tasks import get_operation

    t, m, tr, s = cfg.task, cfg.model, cfg.train, cfg.schedule
    op = get_operation(t.op)
    n_el = _n_elements(op, t.p)
    N = n_el * n_el
    P = n_params(m, n_el + 2, n_el)
    n_train = max(1, int(round(t.frac * N)))
    B = n_train if tr.full_batch else (min(tr.batch_size, n_train) if tr.batch_size > 0 else max(1, min(512, n_train // 2)))
    copies = 6 + (tr.wd_target == "init") + (tr.grokfast_lambda > 0) + (tr.weight_noise > 0)
    per_row = 4 * (m.n_layers * (12 * m.d_model + 3 * m.d_mlp + 12 * m.n_heads) + 3 * n_el) * 4
    evals = schedule_len(tr.steps, s.eval_every, s.eval_log_points)
    ckpts = schedule_len(tr.steps, s.ckpt_every, s.ckpt_log_points)
    memory = (300 * N  # building the equation table (Python objects), then its tensors
              + 4 * P * copies
              + per_row * (B + min(1024, N))
              + 80 * (evals + ckpts))  # the schedules
    ckpt_bytes = 4 * P + 8192
    remaining = ckpts if start == 0 else max(0, ckpts - schedule_len(start, s.ckpt_every, s.ckpt_log_points) + 2)
    disk = ckpt_bytes * remaining + 4 * P * 4 + 200 * evals + 48 * N
    return Estimate(N, P, B, memory, disk, remaining, ckpt_bytes)


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path: Path) -> int | None:
    import shutil

    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def check_fits(cfg, run_dir: Path, start: int = 0) -> Estimate:
    """Refuse, with the estimate in the line, a run whose memory or disk cannot fit on this machine."""
    e = estimate(cfg, start)
    mem = available_memory()
    if mem is not None and e.memory > mem:
        raise GrokscopeError(f"this run needs about {fmt_bytes(e.memory)} of memory ({e.n_equations:,} equations, "
                             f"{e.n_params:,} parameters, batch {e.batch:,}); {fmt_bytes(mem)} is available")
    free = free_disk(run_dir)
    if free is not None and e.disk > free:
        raise GrokscopeError(f"this run needs about {fmt_bytes(e.disk)} of disk ({e.n_ckpts:,} checkpoints x "
                             f"{fmt_bytes(e.ckpt_bytes)}); {fmt_bytes(free)} is free at {_short(run_dir)}")
    return e


def json_dumps_model(m) -> str:
    import dataclasses

    return json.dumps(dataclasses.asdict(m), sort_keys=True)
