"""Provenance: what software and machine produced a run, or an analysis's results.

``provenance()`` returns one record (plain JSON): the versions of grokscope (and its git commit when it
runs from a git checkout), torch, TransformerLens, numpy and Python; the platform, CPU model, logical
CPUs, GPU (name, CUDA) if any; torch's thread count, the device, the model and loss precision, whether
subnormal floats are flushed; the command line and the time (UTC). No host or user name.

A run keeps one record per training session in ``<run>/provenance.json`` (``{"sessions": [...]}``, the
first when it was created, one more for each resume, with the step it started from); each analysis's
JSON sidecar holds the record of the process that last wrote it, under "provenance".
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from .run import append_session, read_provenance



def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; macOS: sysctl), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Hardware", "cpu model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def source_commit() -> dict[str, Any] | None:
    """{"commit", "dirty"} of the git checkout grokscope runs from (an editable install), else None."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                 "grokscope"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def provenance(device: Any = None, loss_dtype: str | None = None, model_dtype: str | None = "float32") -> dict[str, Any]:
    """One provenance record (see the module docstring). ``device``: where the computation runs
    (default: CUDA when present, else the CPU); ``loss_dtype``: the precision of the loss."""
    import torch

    from .cpu import flush_denormal_enabled

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    gpu = None
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        gpu = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
               "count": torch.cuda.device_count()}
    from . import __version__

    return {
        "grokscope": __version__,
        "grokscope_source": source_commit(),
        "torch": torch.__version__,
        "transformer_lens": _version("transformer-lens") or _version("transformer_lens"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "model_dtype": model_dtype,
        "loss_dtype": loss_dtype,
        "flush_denormal": flush_denormal_enabled() if device.type == "cpu" else None,
        "command": list(sys.argv),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_provenance(cfg, device) -> dict[str, Any]:
    """The record of a training session of the run ``cfg`` on ``device``."""
    return provenance(device, loss_dtype=getattr(cfg.train, "loss_dtype", "float32"))


def record_session(run_dir: str | Path, cfg, device, start: int) -> None:
    """Add this training session (new run or resume at ``start``) to the run's provenance.json."""
    append_session(run_dir, {"start_step": int(start), **run_provenance(cfg, device)})


def describe(record: dict[str, Any]) -> str:
    """One line for people: versions, machine, device, threads, precision."""
    src = record.get("grokscope_source") or {}
    commit = f" ({src['commit'][:10]}{', modified' if src.get('dirty') else ''})" if src.get("commit") else ""
    gpu = record.get("gpu")
    where = f"{gpu['name']} (CUDA {gpu.get('cuda')})" if gpu else f"{record.get('cpu')}, {record.get('torch_threads')} thread(s)"
    loss = f", loss in {record['loss_dtype']}" if record.get("loss_dtype") else ""
    return (f"grokscope {record.get('grokscope')}{commit}, torch {record.get('torch')}, TransformerLens "
            f"{record.get('transformer_lens')}, Python {record.get('python')}; {record.get('platform')}; "
            f"{record.get('device')}: {where}{loss}")


def describe_run(run_dir: str | Path) -> str | None:
    """The report's line: each distinct training setup of the run, with the step it started from."""
    sessions = read_provenance(run_dir)
    if not sessions:
        return None
    lines, last = [], None
    for s in sessions:
        text = describe(s)
        if text != last:
            lines.append(text if not lines else f"from step {s.get('start_step')}: {text}")
        last = text
    return "; ".join(lines)


__all__ = ["provenance", "record_session", "describe", "describe_run"]
