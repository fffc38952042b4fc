"""What the trust guarantees cost, measured side by side in one run (python benchmarks/bench_trust.py).

1. fsync: ``run.atomic_save`` of the quick preset's checkpoint with fsync (file and folder) and with
   fsync turned into a no-op, alternating, 3 rounds of 100 checkpoints each.
2. ``Run.steps`` read once: 20 000 checkpoint names, every step looked up through ``Run.has_step``
   (what ``state_dict_at`` does) against the previous behaviour, one folder scan per checkpoint read
   (timed for 1000 reads).
"""
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import grokscope.run as run
from grokscope.config import preset
from grokscope.model import build_model


def bench_fsync(rounds: int = 3, n: int = 100) -> dict:
    sd = build_model(preset("quick").model, 33, 31, device="cpu").state_dict()
    folder = Path(tempfile.mkdtemp(dir="."))
    real = os.fsync

    def one() -> float:
        t0 = time.perf_counter()
        for i in range(n):
            run.atomic_save(sd, folder / run.ckpt_name(i), {"step": str(i)})
        return (time.perf_counter() - t0) / n * 1e3

    out = {"fsync_ms": [], "no_fsync_ms": []}
    try:
        for _ in range(rounds):
            os.fsync = real
            out["fsync_ms"].append(round(one(), 2))
            os.fsync = lambda fd: None
            out["no_fsync_ms"].append(round(one(), 2))
    finally:
        os.fsync = real
        shutil.rmtree(folder)
    out["checkpoint_bytes"] = sum(v.numel() * v.element_size() for v in sd.values())
    return out


def bench_steps(n_ckpts: int = 20000, n_old: int = 1000) -> dict:
    root = Path(tempfile.mkdtemp())
    (root / "ckpt").mkdir()
    for i in range(n_ckpts):
        (root / "ckpt" / run.ckpt_name(10 * i)).touch()
    r = object.__new__(run.Run)
    r.path, r._steps, r._step_set = root, None, set()
    t0 = time.perf_counter()
    assert all(r.has_step(s) for s in r.steps)
    new = time.perf_counter() - t0

    def scan() -> list[int]:  # the previous Run.steps
        return sorted(int(m.group(1)) for e in os.scandir(root / "ckpt") if (m := run.CKPT_PATTERN.match(e.name)))

    t0 = time.perf_counter()
    assert all(10 * i in scan() for i in range(n_old))
    old = time.perf_counter() - t0
    shutil.rmtree(root)
    return {"checkpoints": n_ckpts, f"read_once_all_{n_ckpts}_lookups_s": round(new, 3),
            f"scan_per_read_{n_old}_lookups_s": round(old, 2)}


if __name__ == "__main__":
    print(json.dumps({"fsync": bench_fsync(), "steps": bench_steps()}, indent=1))
