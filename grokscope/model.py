"""The one place that builds the model: a TransformerLens HookedTransformer from a ModelConfig.

The training forward (``answer_logits``, the same logits at ``=`` computed cheaper) lives in
``fastpath``, with every other speed trick.
"""
from __future__ import annotations

import math
import warnings

import torch

from .config import ModelConfig
from .tasks import N_CTX

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

# TransformerLens 3.x warns on every HookedTransformer(...) that 4.0 removes it; we pin <4 and
# silence that one warning here, where every model is built.
_DEPRECATION = r".*HookedTransformer is deprecated.*"

NORM_TYPES = {"LN": "LN", "RMS": "RMS", "none": None}


def sinusoidal_positions(n_ctx: int, d_model: int) -> torch.Tensor:
    """Vaswani et al.'s fixed encoding: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...)."""
    pos = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = pos / (10000.0 ** (i / d_model))
    pe = torch.zeros(n_ctx, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)[:, : d_model // 2]
    return pe.float()


def hooked_config_dict(cfg: ModelConfig, d_vocab: int, d_vocab_out: int) -> dict:
    """The HookedTransformerConfig of a run as TransformerLens' own keyword arguments (plain JSON; float32,
    the device left to TransformerLens): ``HookedTransformer(HookedTransformerConfig.from_dict(d))``
    builds the model, and a checkpoint loads into it with ``load_state_dict(strict=True)``. Fixed
    sinusoidal positions and zero biases are ordinary parameters there, stored in every checkpoint.
    A run stores it in config.json under "hooked_config"."""
    return dict(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_model // cfg.n_heads,
        d_mlp=cfg.d_mlp, d_vocab=d_vocab, d_vocab_out=d_vocab_out, n_ctx=N_CTX, act_fn=cfg.act_fn,
        normalization_type=NORM_TYPES[cfg.norm], positional_embedding_type="standard",
        default_prepend_bos=False,
    )


def hooked_config(cfg: ModelConfig, d_vocab: int, d_vocab_out: int, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32):
    return HookedTransformerConfig(**hooked_config_dict(cfg, d_vocab, d_vocab_out), device=str(device), dtype=dtype)


def frozen_names(model: HookedTransformer, cfg: ModelConfig) -> list[str]:
    """Parameters that are not trained under this config (fixed positions, zero biases)."""
    names = []
    for name, _ in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if cfg.pos_embed == "sinusoidal" and name == "pos_embed.W_pos":
            names.append(name)
        elif cfg.biases == "zero" and (leaf.startswith("b_") or leaf == "b"):
            names.append(name)
    return names


def build_model(cfg: ModelConfig, d_vocab: int, d_vocab_out: int, seed: int = 0,
                device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> HookedTransformer:
    """A freshly initialised HookedTransformer; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
            model = HookedTransformer(hooked_config(cfg, d_vocab, d_vocab_out, "cpu", dtype))
    with torch.no_grad():
        if cfg.pos_embed == "sinusoidal":
            model.pos_embed.W_pos.copy_(sinusoidal_positions(N_CTX, cfg.d_model))
        frozen = set(frozen_names(model, cfg))
        for name, param in model.named_parameters():
            if name in frozen:
                if name != "pos_embed.W_pos":
                    param.zero_()
                param.requires_grad_(False)
    return model.to(device, print_details=False)


@torch.no_grad()
def squared_norm(t: torch.Tensor) -> float:
    """Σ w² of one tensor, summed in float64: the one definition behind every weight norm grokscope
    reports (the metrics' ``weight_norm``, the ``weight_norms`` analysis, the batched runs')."""
    return float(t.detach().double().pow(2).sum())


def weight_norm(tensors) -> float:
    """The L2 norm of all these tensors together (a model's ``parameters()``: its total weight norm)."""
    return math.sqrt(sum(squared_norm(t) for t in tensors))


def n_params(model: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["build_model", "hooked_config", "hooked_config_dict", "frozen_names", "weight_norm", "squared_norm", "n_params",
           "sinusoidal_positions"]
