"""AdamW's update for one run or K (``adamw_``): torch's fused kernel where it exists, else a tested fallback."""
from __future__ import annotations

import math

import torch


# =============================================================================================
# AdamW
# =============================================================================================
ADAM_EPS = 1e-8  # torch.optim.AdamW's default


def fused_adamw_available(device: torch.device) -> bool:
    """Whether ``adamw_`` can take torch's fused kernel on this device (a private API: checked, not assumed)."""
    return device.type in ("cpu", "cuda") and callable(getattr(torch, "_fused_adamw_", None))


def adamw_(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
           exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], *, lr, beta1, beta2, weight_decay,
           eps: float = ADAM_EPS, fused: bool = True) -> None:
    """One AdamW update in place (Loshchilov & Hutter; torch.optim.AdamW's formula), for each tensor i:

        step_i += 1;  t = step_i
        p   <- p * (1 - lr * weight_decay)                 (decoupled weight decay, towards the origin)
        m   <- beta1 m + (1 - beta1) g
        v   <- beta2 v + (1 - beta2) g^2
        p   <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    One run: ``lr``, ``beta1``, ``beta2``, ``weight_decay`` are Python floats. K runs on (K, n) buffers:
    each may be a (K, 1) column (one value per run) and broadcasts along the row. ``steps``: one float
    tensor per parameter (torch.optim.AdamW's ``state["step"]``), counted up here.

    ``fused`` and every hyperparameter a Python float: torch's fused AdamW kernel (what
    ``torch.optim.AdamW(fused=True).step()`` calls; bit-identical to it, tested), when this torch has
    it; otherwise the written-out formula below."""
    scalar = not any(torch.is_tensor(h) for h in (lr, beta1, beta2, weight_decay))
    torch._foreach_add_(steps, 1)
    if fused and scalar and params and fused_adamw_available(params[0].device):
        torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=lr, beta1=beta1,
                            beta2=beta2, weight_decay=weight_decay, eps=eps, maximize=False, grad_scale=None,
                            found_inf=None)
        return
    for p, g, m, v, s in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        t = float(s)
        bc1, bc2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t  # floats, or (K, 1) columns
        p.mul_(1.0 - lr * weight_decay)
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).add_(g * g * (1.0 - beta2))
        denom = (v.sqrt() / (bc2.sqrt() if torch.is_tensor(bc2) else math.sqrt(bc2))).add_(eps)
        p.sub_(m / denom * (lr / bc1))


__all__ = ["ADAM_EPS", "adamw_", "fused_adamw_available"]
