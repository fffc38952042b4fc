"""Weight norms: the L2 norm of every parameter, of every top-level block, and of all of them.

One long table per checkpoint, ``group, name, norm``:

- ``group == "param"``: one row per parameter, ``name`` its state-dict name (``blocks.0.mlp.W_in``);
- ``group == "block"``: one row per top-level module (``embed``, ``pos_embed``, ``blocks.0``, ...,
  ``ln_final``, ``unembed``): the L2 norm of all its parameters together, sqrt(Σ ‖W‖²);
- ``group == "total"``: one row, ``name == "total"``, over every parameter.

Every parameter counts, frozen ones included (fixed sinusoidal positions, biases frozen at zero), as
in the ``weight_norm`` column of a run's metrics, which the total reproduces. Buffers (attention
masks) are not parameters and are left out.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from ..model import squared_norm
from .base import register


def block_of(name: str) -> str:
    """``blocks.1.attn.W_Q`` -> ``blocks.1``; ``embed.W_E`` -> ``embed``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" and len(parts) > 2 else parts[0]


@torch.no_grad()
def weight_norm_table(model: torch.nn.Module) -> pd.DataFrame:
    rows, blocks = [], {}
    for name, param in model.named_parameters():
        sq = squared_norm(param)
        rows.append(("param", name, math.sqrt(sq)))
        blocks[block_of(name)] = blocks.get(block_of(name), 0.0) + sq
    rows += [("block", b, math.sqrt(sq)) for b, sq in blocks.items()]
    rows.append(("total", "total", math.sqrt(sum(blocks.values()))))
    return pd.DataFrame(rows, columns=["group", "name", "norm"])


@register("weight_norms", summary="L2 norm of every parameter, every block and in total", version=1)
def weight_norms(model, data) -> pd.DataFrame:
    return weight_norm_table(model)
