"""A state dict checked against the model it goes into, then loaded: ``load_weights`` (checkpoints,
resume states, a batched run's template) and ``check_weights`` (keys, shapes, dtypes, finite values,
buffers equal to the model's own)."""
from __future__ import annotations

import torch

from .errors import GrokscopeError


def check_finite_tensors(tensors: dict, what: str) -> None:
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise GrokscopeError(f"{what}: {k} holds inf or NaN")


def check_weights(state: dict, model, what: str) -> None:
    """Keys, shapes and dtypes of a state dict against a model's own; every parameter finite, every
    buffer (the attention's mask and IGNORE value) equal to the model's."""
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


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``model`` after checking keys, shapes, dtypes, finite values and buffers."""
    check_weights(state, model, what)
    model.load_state_dict(state, strict=True)
