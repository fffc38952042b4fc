"""The resume state, its one owner: the format, reading it and its checks.

    <run>/state.safetensors   (metadata "step": the update it was saved after; "run_id" and "model", as a
                               checkpoint's; "ckpt_digest": the digest of the checkpoint at that step, the
                               one it belongs to; "digest": its own content's, see files.tensor_digest)
        model.<state-dict name>                      the weights
        opt.<name>.step / .exp_avg / .exp_avg_sq     AdamW's state, per trained tensor (after the first update)
        grokfast.<name>                              Grokfast-EMA's average
        init.<name>                                  the initial weights (weight decay towards them)
        grokfast_ma.<name>, grokfast_ma_count        Grokfast-MA's ring of the last gradients and its count
        rng                                          the generator's state

``resume_tensors`` writes one run's state (``train.Trainer`` and ``batched.BatchedTrainer`` both),
``resume_parts`` reads it back into its parts, ``read_resume_state`` reads the file and checks it
(``check_resume_state``: its step within the run, every key, shape, dtype and value against the model
the config builds), ``read_state_step`` reads the step alone.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .config import RunConfig
from .errors import GrokscopeError
from .files import read_metadata, read_safetensors_meta
from .tasks import Dataset
from .weights import check_weights


# --- the format ----------------------------------------------------------------------------------------
def resume_tensors(weights: dict[str, torch.Tensor], names: list[str], rng: torch.Tensor, *,
                   adam: tuple[list, list, list] | None = None, ema: list | None = None, init: list | None = None,
                   ma: list | None = None, ma_count: int = 0) -> dict[str, torch.Tensor]:
    """One run's resume state: ``model.<state-dict name>`` (weights), and per trained tensor, in ``names``
    order: ``opt.<name>.step`` / ``.exp_avg`` / ``.exp_avg_sq`` (``adam``: the three lists, as
    torch.optim.AdamW keeps them; None before the first update), ``grokfast.<name>`` (Grokfast-EMA),
    ``init.<name>`` (the weights weight decay pulls towards), ``grokfast_ma.<name>`` (Grokfast-MA's
    ring) with ``grokfast_ma_count``; and ``rng``, the generator's state."""
    out = {f"model.{k}": v for k, v in weights.items()}
    if adam is not None:
        for name, s, m, v in zip(names, *adam):
            out.update({f"opt.{name}.step": s, f"opt.{name}.exp_avg": m, f"opt.{name}.exp_avg_sq": v})
    for prefix, tensors in (("grokfast", ema), ("init", init), ("grokfast_ma", ma)):
        if tensors is not None:
            out.update({f"{prefix}.{n}": t for n, t in zip(names, tensors)})
    if ma is not None:  # the ring as it lies, and how many gradients came in (where it is)
        out["grokfast_ma_count"] = torch.tensor(ma_count, dtype=torch.int64)
    out["rng"] = rng
    return out


def resume_parts(t: dict[str, torch.Tensor], names: list[str]) -> dict:
    """``resume_tensors`` read back: "weights" (the state dict); per trained tensor, in ``names`` order,
    "step", "exp_avg", "exp_avg_sq", "grokfast", "init", "grokfast_ma" (a list whose entries are None
    where the state has none, or None where it has none at all); "grokfast_ma_count" (or None); "rng"."""
    def listed(prefix: str, suffix: str = ""):
        got = [t.get(f"{prefix}.{n}{suffix}") for n in names]
        return None if all(v is None for v in got) else got

    return {"weights": {k[6:]: v for k, v in t.items() if k.startswith("model.")},
            **{kind: listed("opt", f".{kind}") for kind in ("step", "exp_avg", "exp_avg_sq")},
            **{prefix: listed(prefix) for prefix in ("grokfast", "init", "grokfast_ma")},
            "grokfast_ma_count": int(t["grokfast_ma_count"]) if "grokfast_ma_count" in t else None, "rng": t["rng"]}


# --- reading and checking ------------------------------------------------------------------------------
def read_state_step(path: Path) -> int:
    """The step a resume state says it was saved at (its own metadata), or one clear error."""
    text = read_metadata(path).get("step")
    try:
        return int(text)
    except (TypeError, ValueError):
        raise GrokscopeError(f"resume state {path} has no valid step in its metadata (got {text!r})") from None


def read_resume_state(path: Path, cfg: RunConfig, data: Dataset, steps: int) -> tuple[int, dict[str, torch.Tensor]]:
    """The step and tensors of a resume state, checked: the step within the run's ``steps``, every
    tensor's shape, dtype and values against the model the config builds (one clear error otherwise)."""
    from .model import build_model

    start = read_state_step(path)
    state, _ = read_safetensors_meta(path, "resume state")
    ref = build_model(cfg.model, data.d_vocab, data.n_elements, device="cpu")
    names = [n for n, p in ref.named_parameters() if p.requires_grad]
    check_resume_state(state, start, steps, ref, names, f"resume state {path}")
    return start, state


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
    if "grokfast_ma_count" in t:
        v = t["grokfast_ma_count"]
        if v.numel() != 1 or v.dtype not in (torch.int64, torch.int32) or int(v.reshape(())) < 0:
            raise GrokscopeError(f"{what}: grokfast_ma_count is not a count")
        missing = [n for n in train_names if f"grokfast_ma.{n}" not in t]
        if missing:
            raise GrokscopeError(f"{what}: missing grokfast_ma.{missing[0]}")


def _check_rng_state(t: dict, what: str) -> None:
    """The random generator's state: uint8 bytes of a CPU generator's length, or 16 (CUDA, Philox)."""
    if "rng" not in t or t["rng"].dtype != torch.uint8 or t["rng"].dim() != 1 \
            or t["rng"].numel() not in (torch.Generator().get_state().numel(), 16):
        raise GrokscopeError(f"{what}: the random generator's state is missing or damaged")
