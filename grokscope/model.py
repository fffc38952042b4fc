"""The one place that builds the model, on TransformerLens 3 or 4, with HookedTransformer's interface.

- TransformerLens 3.x: a ``HookedTransformer``.
- TransformerLens 4.x (which removed ``HookedTransformer``): a ``TransformerBridge`` around TL's own native
  model (``boot_native``) in compatibility mode without weight processing, made to look like a
  HookedTransformer where grokscope and its users read it: every parameter is a leaf tensor in
  HookedTransformer's layout (``W_Q`` is (n_heads, d_model, d_head); the native ``nn.Linear`` weights are
  torch parametrizations of these leaves), ``named_parameters``, ``state_dict`` and ``load_state_dict`` use
  HookedTransformer's names and order, the unembedding bias ``b_U`` is a trained parameter (4.3 makes it a
  fixed zero buffer), and each attention has ``attn_scale``. Hook names, ``run_with_cache``, ``W_E``,
  ``W_U``, ``blocks[i].mlp.W_in`` and ``to_str_tokens`` are TransformerLens' own.

grokscope owns the initialisation on both (``init_weights``: TransformerLens 3's "gpt2" scheme), so a seed
gives bit-identical step-0 weights, and a checkpoint written under either major loads under either.

The training forward (``answer_logits``, the same logits at ``=`` computed cheaper) lives in
``forward``, with the other speed tricks in ``adamw`` and ``cpu``.
"""
from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from importlib.metadata import version

import torch

from .config import ModelConfig
from .tasks import N_CTX

TL_MAJOR = int(version("transformer-lens").split(".")[0])

if TL_MAJOR < 4:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformer_lens import HookedTransformer, HookedTransformerConfig

# TransformerLens 3.x warns on every HookedTransformer(...) that 4.0 removes it; grokscope runs on 4 too
# and silences that one warning here, where every model is built.
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
    """The model's config as TransformerLens' own keyword arguments (plain JSON; float32, the device left to
    TransformerLens). On TransformerLens 3, ``HookedTransformer(HookedTransformerConfig.from_dict(d))``
    builds the model and a checkpoint loads into it with ``load_state_dict(strict=True)``; on 4,
    ``TransformerBridge.boot_native`` takes it (docs/transformerlens.md has both). Fixed sinusoidal
    positions and zero biases are ordinary parameters there, stored in every checkpoint. A run stores it
    in config.json under "hooked_config"."""
    return dict(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_model // cfg.n_heads,
        d_mlp=cfg.d_mlp, d_vocab=d_vocab, d_vocab_out=d_vocab_out, n_ctx=N_CTX, act_fn=cfg.act_fn,
        normalization_type=NORM_TYPES[cfg.norm], positional_embedding_type="standard",
        default_prepend_bos=False,
    )


def transformer_lens_config(d: dict, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """TransformerLens' config object of a ``hooked_config_dict``: a HookedTransformerConfig on 3, a
    TransformerBridgeConfig of the native architecture on 4 (without TL 4's own initialisation)."""
    if TL_MAJOR < 4:
        return HookedTransformerConfig.from_dict({**d, "device": str(device), "dtype": dtype})
    from transformer_lens import TransformerBridgeConfig

    return TransformerBridgeConfig.from_dict({**d, "architecture": "TransformerLensNative", "device": str(device),
                                              "dtype": dtype, "init_weights": False})


def hooked_config(cfg: ModelConfig, d_vocab: int, d_vocab_out: int, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32):
    return transformer_lens_config(hooked_config_dict(cfg, d_vocab, d_vocab_out), device, dtype)


def hooked_state_layout(cfg: ModelConfig, d_vocab: int, d_vocab_out: int) -> "OrderedDict[str, tuple]":
    """HookedTransformer's state dict for this config, in its order: name -> shape of every parameter,
    and None for the attention's two buffers (``mask``, empty, and ``IGNORE``, -inf)."""
    d, H, dh, m = cfg.d_model, cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.d_mlp
    norm = {"LN": ("w", "b"), "RMS": ("w",), "none": ()}[cfg.norm]
    out = OrderedDict([("embed.W_E", (d_vocab, d)), ("pos_embed.W_pos", (N_CTX, d))])
    for i in range(cfg.n_layers):
        b = f"blocks.{i}."
        out.update((f"{b}{ln}.{k}", (d,)) for ln in ("ln1", "ln2") for k in norm)
        out.update([(b + "attn.W_Q", (H, d, dh)), (b + "attn.W_O", (H, dh, d)), (b + "attn.b_Q", (H, dh)),
                    (b + "attn.b_O", (d,)), (b + "attn.W_K", (H, d, dh)), (b + "attn.W_V", (H, d, dh)),
                    (b + "attn.b_K", (H, dh)), (b + "attn.b_V", (H, dh)), (b + "attn.mask", None),
                    (b + "attn.IGNORE", None), (b + "mlp.W_in", (d, m)), (b + "mlp.b_in", (m,)),
                    (b + "mlp.W_out", (m, d)), (b + "mlp.b_out", (d,))])
    out.update((f"ln_final.{k}", (d,)) for k in norm)
    out.update([("unembed.W_U", (d, d_vocab_out)), ("unembed.b_U", (d_vocab_out,))])
    return out


def attention_buffer(name: str, dtype: torch.dtype) -> torch.Tensor:
    """HookedTransformer's (3.9) attention buffers, as its state dict holds them."""
    if name.endswith(".mask"):
        return torch.empty((0, 0), dtype=torch.bool)
    return torch.tensor(-math.inf, dtype=dtype)


def init_weights(cfg: ModelConfig, d_vocab: int, d_vocab_out: int, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> "OrderedDict[str, torch.Tensor]":
    """Step-0 parameters, by name: TransformerLens 3's "gpt2" initialisation, the same on every major.

    Every matrix (a name with ``W_``: W_E, W_pos, W_Q, W_O, W_K, W_V, W_in, W_out, W_U) is drawn from
    N(0, (0.8 / sqrt(d_model))^2), one after the other in HookedTransformer's parameter order, from a
    generator seeded with ``seed``; biases are 0 and LayerNorm/RMSNorm weights 1. Fixed positions and
    zero biases (``frozen_names``) are set by ``build_model`` afterwards."""
    gen = torch.Generator().manual_seed(seed)
    std = 0.8 / math.sqrt(cfg.d_model)
    out = OrderedDict()
    for name, shape in hooked_state_layout(cfg, d_vocab, d_vocab_out).items():
        if shape is None:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if "W_" in name:
            out[name] = torch.empty(shape, dtype=dtype).normal_(0.0, std, generator=gen)
        else:
            out[name] = (torch.ones if leaf == "w" else torch.zeros)(shape, dtype=dtype)
    return out


def frozen_names(model: torch.nn.Module, cfg: ModelConfig) -> list[str]:
    """Parameters that are not trained under this config (fixed positions, zero biases)."""
    names = []
    for name, _ in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if cfg.pos_embed != "learned" and name == "pos_embed.W_pos":
            names.append(name)
        elif cfg.biases == "zero" and (leaf.startswith("b_") or leaf == "b"):
            names.append(name)
    return names


def build_model(cfg: ModelConfig, d_vocab: int, d_vocab_out: int, seed: int = 0,
                device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A freshly initialised model (``init_weights``) with HookedTransformer's interface on either
    TransformerLens major; the global RNG is left as it was."""
    tl_cfg = hooked_config(cfg, d_vocab, d_vocab_out, "cpu", dtype)
    with torch.random.fork_rng(devices=[]):  # TL 4's native model draws torch's default init first
        if TL_MAJOR < 4:  # TL 3 draws its own init here (its config says so); init_weights overwrites it
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
                model = HookedTransformer(tl_cfg)
        else:
            model = _bridge(tl_cfg, hooked_state_layout(cfg, d_vocab, d_vocab_out), dtype)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in init_weights(cfg, d_vocab, d_vocab_out, seed, dtype).items():
            params[name].copy_(value)
        if cfg.pos_embed == "sinusoidal":
            params["pos_embed.W_pos"].copy_(sinusoidal_positions(N_CTX, cfg.d_model))
        for name in frozen_names(model, cfg):
            if name != "pos_embed.W_pos" or cfg.pos_embed == "none":
                params[name].zero_()
            params[name].requires_grad_(False)
    return model.to(device, print_details=False)


# --- TransformerLens 4: the bridge with HookedTransformer's parameters -------------------------------
class _Layout(torch.nn.Module):
    """A torch parametrization: the native module's tensor from the HookedTransformer-layout leaf."""

    def __init__(self, to_native, to_hooked):
        super().__init__()
        self.to_native, self.to_hooked = to_native, to_hooked

    def forward(self, hooked: torch.Tensor) -> torch.Tensor:
        return self.to_native(hooked)

    def right_inverse(self, native: torch.Tensor) -> torch.Tensor:
        return self.to_hooked(native)


def _native(module):
    """The native module a bridge component wraps (itself when it wraps none)."""
    while hasattr(module, "original_component") and module.original_component is not None:
        module = module.original_component
    return module


def _native_slots(native, name: str, H: int, dh: int, d: int):
    """(module, attribute, converters) of a HookedTransformer parameter name in TL 4's native model; the
    converters (to native, to HookedTransformer's layout) are None where the layouts agree."""
    parts = name.split(".")
    # contiguous, as the native weights are (a transposed view takes another matmul kernel: other roundings)
    t = (lambda w: w.T.contiguous(), lambda w: w.T.contiguous())
    heads_in = (lambda w: w.permute(0, 2, 1).reshape(H * dh, d), lambda w: w.view(H, dh, d).permute(0, 2, 1).contiguous())
    heads_out = (lambda w: w.reshape(H * dh, d).T.contiguous(), lambda w: w.T.reshape(H, dh, d).contiguous())
    heads_b = (lambda b: b.reshape(H * dh), lambda b: b.view(H, dh).clone())
    w_or_b = "weight" if parts[-1] in ("w", "W_E", "W_pos", "W_U") or parts[-1].startswith("W_") else "bias"
    if parts[0] == "embed":
        return _native(native.tok_embed), "weight", None
    if parts[0] == "pos_embed":
        return _native(native.pos), "weight", None
    if parts[0] == "unembed":
        return _native(native.head), w_or_b, t if w_or_b == "weight" else None
    if parts[0] == "ln_final":
        return _native(native.ln_out), w_or_b, None
    block, sub, leaf = _native(native.layers[int(parts[1])]), parts[2], parts[3]
    if sub in ("ln1", "ln2"):
        return _native(getattr(block, sub)), w_or_b, None
    if sub == "mlp":
        mlp = _native(block.mlp)
        mod = _native(getattr(mlp, "fc_in" if leaf.endswith("in") else "fc_out"))
        return mod, w_or_b, t if w_or_b == "weight" else None
    c = leaf[-1].lower()
    mod = _native(getattr(_native(block.attn), c))
    if w_or_b == "weight":
        return mod, "weight", heads_out if c == "o" else heads_in
    return mod, "bias", None if c == "o" else heads_b


def _bridge(tl_cfg, layout: dict, dtype: torch.dtype):
    """TL 4: ``boot_native`` in compatibility mode (no weight processing), its parameters turned into
    HookedTransformer's (``_HookedBridge``)."""
    from torch.nn.utils import parametrize
    from transformer_lens.model_bridge.sources import boot_native

    bridge = boot_native(tl_cfg, dtype=dtype, model_name=tl_cfg.model_name)
    bridge.enable_compatibility_mode(no_processing=True)
    native = bridge.original_model
    H, dh, d = tl_cfg.n_heads, tl_cfg.d_head, tl_cfg.d_model
    head = _native(native.head)  # TL 4.3 turns the unembedding bias into a fixed zero buffer: train it instead
    if "bias" in head._buffers:
        del head._buffers["bias"]
    head.bias = torch.nn.Parameter(torch.zeros(head.weight.shape[0], dtype=dtype))
    params = OrderedDict()
    for name, shape in layout.items():
        if shape is None:
            continue
        mod, attr, conv = _native_slots(native, name, H, dh, d)
        if conv is not None:
            parametrize.register_parametrization(mod, attr, _Layout(*conv), unsafe=True)
            params[name] = getattr(mod.parametrizations, attr).original
        else:
            params[name] = getattr(mod, attr)
        assert tuple(params[name].shape) == shape, (name, tuple(params[name].shape), shape)
    for component, names in _components(bridge, params).items():
        _expose(component, {n.rsplit(".", 1)[-1]: params[n] for n in names})
    for block in bridge.blocks:  # grokscope's fast path reads HookedTransformer's attribute
        block.attn.attn_scale = math.sqrt(dh)
    for module in bridge.modules():  # LayerNorm and RMSNorm as HookedTransformer computes them, in the model's
        if hasattr(module, "use_native_layernorm_autograd"):  # dtype (TL 4's native RMSNorm: float32 rsqrt)
            module.use_native_layernorm_autograd = False
    bridge.__class__ = _hooked_bridge_class()
    bridge._hooked_params, bridge._hooked_layout = params, layout
    return bridge


def _components(bridge, params: dict) -> dict:
    """Bridge component -> the HookedTransformer parameter names it shows (``blocks.0.attn`` -> W_Q, ...)."""
    out: dict = {}
    for name in params:
        component = bridge
        for part in name.split(".")[:-1]:
            component = component[int(part)] if part.isdigit() else getattr(component, part)
        out.setdefault(component, []).append(name)
    return out


_EXPOSING: dict = {}


def _expose(component, leaves: dict) -> None:
    """Make ``component.W_Q`` (and each name in ``leaves``) the HookedTransformer-layout leaf itself, as
    on HookedTransformer, instead of TL 4's view of the native weight (its strides take other matmul
    kernels, whose roundings would make training differ from TL 3's in the last bits)."""
    key = (type(component), tuple(sorted(leaves)))
    if key not in _EXPOSING:
        props = {n: property(lambda self, n=n: self.__dict__["_hooked_leaves"][n]) for n in leaves}
        _EXPOSING[key] = type(type(component).__name__, (type(component),), props)
    object.__setattr__(component, "_hooked_leaves", leaves)
    component.__class__ = _EXPOSING[key]


_HOOKED_BRIDGE = None


def _hooked_bridge_class():
    """``TransformerBridge`` with HookedTransformer's parameter names, order and state dict."""
    global _HOOKED_BRIDGE
    if _HOOKED_BRIDGE is not None:
        return _HOOKED_BRIDGE

    from transformer_lens.model_bridge import TransformerBridge

    class _HookedBridge(TransformerBridge):
        def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
            for name, p in self._hooked_params.items():
                yield prefix + name, p

        def parameters(self, recurse: bool = True):
            for _, p in self.named_parameters():
                yield p

        def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
            out = OrderedDict() if destination is None else destination
            dtype = self._hooked_params["embed.W_E"].dtype
            for name, shape in self._hooked_layout.items():
                if shape is None:
                    t = attention_buffer(name, dtype).to(self._hooked_params["embed.W_E"].device)
                else:
                    t = self._hooked_params[name]
                    t = t if keep_vars else t.detach()
                out[prefix + name] = t
            return out

        def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
            missing = [k for k in self._hooked_layout if k not in state_dict]
            unexpected = [k for k in state_dict if k not in self._hooked_layout]
            if strict and (missing or unexpected):
                raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}: "
                                   f"missing keys {missing}, unexpected keys {unexpected}")
            with torch.no_grad():
                for name, p in self._hooked_params.items():
                    if name in state_dict:
                        p.copy_(state_dict[name])
            return torch.nn.modules.module._IncompatibleKeys(missing, unexpected)

    _HOOKED_BRIDGE = _HookedBridge
    return _HOOKED_BRIDGE


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


__all__ = ["TL_MAJOR", "build_model", "init_weights", "hooked_config", "hooked_config_dict", "frozen_names",
           "weight_norm", "squared_norm", "n_params", "sinusoidal_positions"]
