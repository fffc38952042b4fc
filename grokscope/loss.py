"""The loss, its one owner: the answer-token cross-entropy (softmax or StableMax), softmax collapse, and
the evaluation of a model on a set of equations.

Both trainers (``train.Trainer``, ``batched.BatchedTrainer``) train on ``answer_loss``; the flatness
analyses (``sharpness``, ``hessian``), the ``llc`` and the restricted/excluded loss of ``fourier``
measure it, each with the run's own ``softmax`` (a StableMax run's sharpness is StableMax's).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import SOFTMAXES
from .errors import GrokscopeError
from .forward import answer_logits

EVAL_CHUNK = 1024  # rows per evaluation forward: small enough for the cache (8192: 25 % slower)


# --- the loss ------------------------------------------------------------------------------------
LOSS_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """StableMax's s(x) (Prieto et al. 2025): x + 1 for x >= 0, 1 / (1 - x) for x < 0 (continuous,
    with slope 1, at 0; positive everywhere). The negative branch sees only x <= 0, so neither branch
    nor its gradient is ever infinite (torch.where would otherwise pass 0 * inf = nan back at x = 1)."""
    return torch.where(x >= 0, x + 1, 1 / (1 - x.clamp(max=0)))


def log_stablemax(x: torch.Tensor) -> torch.Tensor:
    """log p_i with p_i = s(x_i) / sum_j s(x_j) over the last axis."""
    s = stablemax_s(x)
    return s.log() - s.sum(-1, keepdim=True).log()


def answer_logprob(logits: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.float64,
                   softmax: str = "softmax") -> torch.Tensor:
    """(N,) log-probability of the answer token under ``softmax`` ("softmax" or "stablemax"), in ``dtype``."""
    x = logits.to(dtype)
    lp = torch.log_softmax(x, -1) if softmax == "softmax" else log_stablemax(x)
    return lp.gather(-1, y[..., None])[..., 0]


def answer_loss(logits: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.float64,
                reduction: str = "mean", softmax: str = "softmax") -> torch.Tensor:
    """Cross-entropy of the answer token with the log-softmax computed in ``dtype``.

    float64 is the default (Nanda et al. do the same): late in training the float32 log-probability
    of most training answers rounds to exactly 0 ("softmax collapse", Prieto et al. 2025), their
    gradient vanishes, the update follows the few rows left and the loss spikes. The logits come from
    the float32 model; only the log-softmax and its backward run in ``dtype``.

    ``softmax="stablemax"``: -log p_answer with StableMax's p_i = s(x_i) / sum_j s(x_j) (see
    ``stablemax_s``) instead of softmax's exp, also in ``dtype``. s is increasing, so the argmax, and
    with it every accuracy, is the same as softmax's; only the loss and its gradient differ."""
    if softmax == "softmax":
        return F.cross_entropy(logits.to(dtype), y, reduction=reduction)
    if softmax != "stablemax":
        raise GrokscopeError(f"softmax must be one of {', '.join(SOFTMAXES)}, got {softmax!r}")
    loss = -answer_logprob(logits, y, dtype, softmax)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def collapsed(logits: torch.Tensor, y: torch.Tensor, softmax: str = "softmax") -> torch.Tensor:
    """(N,) bool: rows whose float32 log-probability of the answer is exactly 0 (softmax collapse),
    under the run's own softmax (StableMax's p_answer rounds to 1 only for enormous logits)."""
    return answer_logprob(logits, y, torch.float32, softmax) == 0


# --- evaluation ---------------------------------------------------------------------------------
@torch.inference_mode()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.float64,
             with_collapse: bool = False, softmax: str = "softmax") -> tuple[float, ...]:
    """Mean cross-entropy (log-softmax, or log-StableMax with ``softmax="stablemax"``, in ``dtype``)
    and accuracy on the whole set; with ``with_collapse`` also the softmax-collapse fraction (share
    of rows whose float32 log-probability of the answer is exactly 0)."""
    loss, correct, collapse = 0.0, 0, 0
    for i in range(0, len(y), EVAL_CHUNK):
        logits, yy = answer_logits(model, x[i:i + EVAL_CHUNK]), y[i:i + EVAL_CHUNK]
        loss += answer_loss(logits, yy, dtype, reduction="sum", softmax=softmax).item()
        correct += (logits.argmax(-1) == yy).sum().item()
        collapse += collapsed(logits, yy, softmax).sum().item()
    if with_collapse:
        return loss / len(y), correct / len(y), collapse / len(y)
    return loss / len(y), correct / len(y)
