"""One file, read or written safely: atomic writes, safetensors reads, bounded text.

- ``atomic_write_bytes`` / ``atomic_write_text`` / ``atomic_save`` (safetensors): written to a
  temporary name in the same folder, fsynced and renamed into place, so a file under its final name is
  always complete (``GROKSCOPE_FSYNC=0`` skips the fsyncs: faster, not crash-safe).
- ``read_safetensors`` / ``read_safetensors_meta`` / ``read_metadata``: tensors and metadata, never
  unpickled, or one clear error; every safetensors file written carries the digest of its content
  (``tensor_digest``), checked on every read.
- ``remove_stale_temporaries``: the temporary files a killed writer left, removed by the folder's next writer.
- ``read_text``: a text file that must be a regular, UTF-8 file of bounded size (not ``/dev/zero``).
- ``fmt_bytes`` / ``short_path``: how a size and a path are written in a message.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import GrokscopeError

if TYPE_CHECKING:  # torch and safetensors are imported where a tensor is read or written, not with this module
    import torch

TEXT_LIMIT = 16 << 20  # config, grid and sweep files: at most 16 MB


# --- writing ----------------------------------------------------------------------------------------------
def _tmp(path: Path) -> Path:
    return path.with_name(f"{path.name[:200]}.tmp-{os.getpid()}")


TMP_PATTERN = re.compile(r"\.tmp-\d+$")  # what _tmp names: a write in progress, or one a killed process left


def remove_stale_temporaries(*folders: Path) -> None:
    """Remove the temporary files (``<name>.tmp-<pid>``) a killed writer left in ``folders``. Only
    for a folder whose lock this process holds: then no other writer can be using one."""
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if TMP_PATTERN.search(entry.name) and entry.is_file(follow_symlinks=False):
                _unlink_quietly(Path(entry.path))


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


FSYNC = os.environ.get("GROKSCOPE_FSYNC", "1") != "0"  # GROKSCOPE_FSYNC=0: skip fsync (faster, not crash-safe)


def _fsync(fd: int) -> None:
    if FSYNC:
        os.fsync(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    if not FSYNC:
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_error(path: Path, e: BaseException) -> GrokscopeError:
    reason = getattr(e, "strerror", None) or " ".join(str(e).split())[:200] or type(e).__name__
    return GrokscopeError(f"cannot write {path}: {reason}")


def atomic_write_bytes(path: Path, data: bytes | list[bytes]) -> None:
    """Write ``data`` (or its pieces, one after the other, never joined in memory) to a temporary file,
    fsync it, rename it into place and fsync the folder. On any error the temporary file is removed and
    the file under ``path`` is as it was."""
    path = Path(path)
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as f:
            for piece in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(piece)
            f.flush()
            _fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        raise _write_error(path, e) from None
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


DIGEST_KEY = "digest"  # the metadata entry of every safetensors file grokscope writes: see tensor_digest
DIGEST_KIND = "xxh3_128"  # xxHash's XXH3, 128 bits: ~6x sha256's speed (benchmarks/bench_checksum.py)


def tensor_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """"xxh3_128:<hex>" of a safetensors file's content: every metadata entry but the digest itself,
    then every tensor's name, dtype, shape and bytes, in name order. Written into the file's metadata
    by ``atomic_save`` and checked by ``read_safetensors_meta``: a changed bit anywhere is caught. An
    integrity check, not a signature: whoever edits a file on purpose can recompute it."""
    import torch
    import xxhash

    numpy_dtypes = {torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16, torch.int8,
                    torch.uint8, torch.bool}  # hashed through numpy's buffer as they are (the others as bytes)
    h = xxhash.xxh3_128()
    for k, v in sorted((metadata or {}).items()):
        if k != DIGEST_KEY:
            h.update(f"{len(k)}:{k}={len(v)}:{v};".encode())
    for k in sorted(tensors):
        v = tensors[k].detach()
        if v.device.type != "cpu" or not v.is_contiguous():
            v = v.contiguous().cpu()
        h.update(f"{len(k)}:{k}|{str(v.dtype)[6:]}|{tuple(v.shape)};".encode())
        if v.numel():
            h.update(v.numpy() if v.dtype in numpy_dtypes else v.reshape(-1).view(torch.uint8).numpy())
    return f"{DIGEST_KIND}:{h.hexdigest()}"


def check_digest(tensors: dict[str, torch.Tensor], meta: dict[str, str], what: str) -> None:
    """A file's tensors and metadata against the digest recorded in it (none recorded: nothing to check)."""
    if DIGEST_KEY not in meta:
        return
    if not meta[DIGEST_KEY].startswith(DIGEST_KIND + ":"):
        raise GrokscopeError(f"{what} records a checksum of a kind this grokscope does not know "
                             f"({meta[DIGEST_KEY].split(':')[0][:40]!r}; it writes {DIGEST_KIND})")
    if tensor_digest(tensors, meta) != meta[DIGEST_KEY]:
        raise GrokscopeError(f"{what} is damaged: its content does not match the checksum recorded when it was "
                             f"written (a changed byte, or an edit made outside grokscope)")


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors`` save with the guarantees of ``atomic_write_bytes``, its content's digest
    (``tensor_digest``) in its metadata."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    tmp = _tmp(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {**(metadata or {}), DIGEST_KEY: ""}
    metadata[DIGEST_KEY] = tensor_digest(tensors, metadata)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        if FSYNC:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        _unlink_quietly(tmp)
        raise _write_error(path, e) from None
    fsync_dir(path.parent)


# --- reading -----------------------------------------------------------------------------------------------
def read_safetensors_meta(path: Path, what: str = "file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, or one clear error (never unpickles). A file with a
    digest (every file grokscope writes) must match it; a file without one (written before digests were
    recorded) is read as it is."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        raise GrokscopeError(f"{what} {path} is a folder")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise GrokscopeError(f"{what} {path} does not exist") from None
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        first = " ".join(str(e).split())[:200]
        raise GrokscopeError(f"{what} {path} is unreadable (truncated or not safetensors): {first}") from None
    check_digest(tensors, meta, f"{what} {path}")
    return tensors, meta


def read_safetensors(path: Path, what: str = "file") -> dict[str, torch.Tensor]:
    return read_safetensors_meta(path, what)[0]


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except FileNotFoundError:
        raise GrokscopeError(f"{path} does not exist") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise GrokscopeError(f"{path} is unreadable (truncated or not safetensors): {' '.join(str(e).split())[:200]}") from None


def read_text(path: str | Path, what: str, limit: int | None = TEXT_LIMIT) -> str:
    """The text of a regular UTF-8 file of at most ``limit`` bytes, or one clear error."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise GrokscopeError(f"{what} {short_path(path)} does not exist") from None
    except OSError as e:
        raise GrokscopeError(f"cannot read {what} {short_path(path)}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise GrokscopeError(f"{what} {short_path(path)} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise GrokscopeError(f"{what} {short_path(path)} is not a regular file")
    if limit is not None and st.st_size > limit:
        raise GrokscopeError(f"{what} {short_path(path)} is too large ({fmt_bytes(st.st_size)}; at most {fmt_bytes(limit)})")
    try:
        with open(path, "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
    except OSError as e:
        raise GrokscopeError(f"cannot read {what} {short_path(path)}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GrokscopeError(f"{what} {short_path(path)} is not UTF-8 text (byte {e.start}): binary or damaged") from None
    if "\x00" in text:
        raise GrokscopeError(f"{what} {short_path(path)} holds NUL bytes: binary or damaged")
    return text


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return ""



def short_path(path: Path | str, n: int = 120) -> str:
    text = str(path)
    return text if len(text) <= n else text[: n // 2] + "..." + text[-n // 2:]
