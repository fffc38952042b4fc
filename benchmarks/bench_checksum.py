"""What the content checksum costs per checkpoint of the default model (python benchmarks/bench_checksum.py).

A checkpoint of the default model (2 layers, d_model 128, d_mlp 512, p 97: 1.7 MB) is written with
``files.atomic_save`` and read back with ``files.read_safetensors_meta`` (both as grokscope does it, the
digest included), and its digest (``files.tensor_digest``, xxHash XXH3-128, what each of them adds) is
timed alone on the same tensors, interleaved, ``rounds`` rounds of ``n`` files; with fsync (the default)
and without (GROKSCOPE_FSYNC=0). The ratios are the digest's time over the rest of the write (goal
<= 5 %, fsync on) and over the rest of the read; medians of the rounds.
"""
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import grokscope.files as files
from grokscope.run import ckpt_name
from grokscope.config import RunConfig
from grokscope.model import build_model


def bench(rounds: int = 7, n: int = 30) -> dict:
    sd = build_model(RunConfig().model, 99, 97, device="cpu").state_dict()
    meta = {"step": "1000", "run_id": "x" * 32}
    folder = Path(tempfile.mkdtemp(dir="."))
    out: dict = {"checkpoint_bytes": sum(v.numel() * v.element_size() for v in sd.values())}

    def timed(f) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            f(i)
        return (time.perf_counter() - t0) / n * 1e3

    saved = files.FSYNC
    try:
        for fsync in (True, False):
            files.FSYNC = fsync
            t = {"write": [], "read": [], "digest": []}
            for _ in range(rounds):
                t["write"].append(timed(lambda i: files.atomic_save(sd, folder / ckpt_name(i), meta)))
                t["read"].append(timed(lambda i: files.read_safetensors_meta(folder / ckpt_name(i), "checkpoint")))
                t["digest"].append(timed(lambda i: files.tensor_digest(sd, meta)))
            m = {k: statistics.median(v) for k, v in t.items()}
            out["fsync" if fsync else "no_fsync"] = {
                **{f"{k}_ms": round(v, 3) for k, v in m.items()},
                "digest_over_write": round(m["digest"] / (m["write"] - m["digest"]), 4),
                "digest_over_read": round(m["digest"] / (m["read"] - m["digest"]), 4)}
    finally:
        files.FSYNC = saved
        shutil.rmtree(folder)
    return out


if __name__ == "__main__":
    print(json.dumps(bench(), indent=1))
