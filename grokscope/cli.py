"""The ``grokscope`` command: a thin shell that builds one config and calls the API.

Each sub-command's choices come from the registries (operations, variants, presets, analyses).
A GrokscopeError (bad input) prints one line and exits with code 2.
"""
from __future__ import annotations

import argparse
import sys

from .config import PRESET_HELP, PRESETS, VARIANT_HELP, VARIANTS, RunConfig, apply_variant, preset
from .errors import GrokscopeError

# Flags of `grokscope train` that set a config field: flag -> (section, field, type, help).
TRAIN_FLAGS = {
    "op": ("task", "op", str, "operation (see `grokscope ops`)"),
    "p": ("task", "p", int, "modulus / prime p (default 97)"),
    "frac": ("task", "frac", float, "training fraction, in (0, 1)"),
    "split-seed": ("task", "seed", int, "seed of the split and outliers (default: --seed)"),
    "outliers": ("task", "outliers", int, "k training equations with a wrong answer (appendix A.4)"),
    "n-layers": ("model", "n_layers", int, "transformer blocks (default 2)"),
    "d-model": ("model", "d_model", int, "width (default 128)"),
    "n-heads": ("model", "n_heads", int, "attention heads (default 4)"),
    "d-mlp": ("model", "d_mlp", int, "MLP width (default 512)"),
    "act-fn": ("model", "act_fn", str, "relu, gelu, gelu_new, silu"),
    "pos-embed": ("model", "pos_embed", str, "learned or sinusoidal (fixed)"),
    "biases": ("model", "biases", str, "trained or zero (frozen at zero)"),
    "norm": ("model", "norm", str, "LN, RMS or none"),
    "steps": ("train", "steps", int, "optimisation budget (default 1e5)"),
    "lr": ("train", "lr", float, "learning rate (default 1e-3)"),
    "weight-decay": ("train", "weight_decay", float, "decoupled weight decay (default 1)"),
    "wd-target": ("train", "wd_target", str, "origin or init"),
    "beta1": ("train", "beta1", float, "Adam beta1 (default 0.9)"),
    "beta2": ("train", "beta2", float, "Adam beta2 (default 0.98)"),
    "warmup": ("train", "warmup", int, "linear warm-up updates (default 10)"),
    "batch-size": ("train", "batch_size", int, "minibatch (default min(512, half the training set))"),
    "update-noise": ("train", "update_noise", float, "Gaussian noise on the update, times lr"),
    "weight-noise": ("train", "weight_noise", float, "std of Gaussian weight noise in the forward pass"),
    "dropout": ("train", "resid_dropout", float, "residual dropout rate"),
    "grokfast-alpha": ("train", "grokfast_alpha", float, "Grokfast EMA decay (default 0.98)"),
    "grokfast-lambda": ("train", "grokfast_lambda", float, "Grokfast amplification; 0 = off (Lee et al.: 2)"),
    "seed": ("train", "seed", int, "seed of initialisation, batches and noise"),
    "stop-val-acc": ("train", "stop_val_acc", float, "end the run once validation accuracy reaches this (0: off)"),
    "device": ("train", "device", str, "auto (CUDA when present), cpu, cuda"),
    "eval-every": ("schedule", "eval_every", int, "metrics every N steps (plus log-spaced early steps)"),
    "ckpt-every": ("schedule", "ckpt_every", int, "checkpoint every N steps (plus log-spaced early steps)"),
    "ckpt-log-points": ("schedule", "ckpt_log_points", int, "log-spaced early checkpoints (default 30)"),
    "state-every": ("schedule", "state_every", int, "save the resume state every N steps"),
}


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a run (or continue one with --resume)",
                       description="Train the paper's transformer on a binary-operation table.")
    # argparse %-formats help strings: the presets' "50 %" must reach it as "%%"
    p.add_argument("--preset", help="; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()).replace("%", "%%"),
                   metavar="NAME")
    p.add_argument("--config", metavar="FILE", help="a RunConfig JSON file (a run's config.json works)")
    p.add_argument("--variant", metavar="NAME",
                   help=("Figure 2 (left) optimiser variant: " + "; ".join(f"{k} ({v})" for k, v in VARIANT_HELP.items()))
                   .replace("%", "%%"))
    p.add_argument("--full-batch", action="store_true", default=None, help="exact gradient on the whole training set")
    p.add_argument("--out", metavar="DIR", help="run directory (default checkpoints/<op>_p<p>_f<frac>_s<seed>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (with --steps: a new budget)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the training step: faster steps after a one-time compile (for long runs)")
    for flag, (_, _, typ, help_) in TRAIN_FLAGS.items():
        p.add_argument(f"--{flag}", type=typ, default=None, help=help_)
    p.set_defaults(func=cmd_train)


def build_config(args) -> RunConfig:
    """Defaults <- --preset <- --config <- --variant <- the other flags."""
    cfg = preset(args.preset) if args.preset else RunConfig()
    if args.config:
        cfg.update(RunConfig.load(args.config).to_dict())
    if args.variant:
        apply_variant(cfg, args.variant)
    explicit_split_seed = False
    for flag, (section, field, _, _) in TRAIN_FLAGS.items():
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            cfg.update({section: {field: value}})
            explicit_split_seed |= flag == "split-seed"
    if args.seed is not None and not explicit_split_seed and not args.config:
        cfg.task.seed = args.seed
    if args.full_batch:
        cfg.train.full_batch = True
    if args.compile:
        cfg.train.compile = True
    return cfg.validate()


def cmd_train(args) -> int:
    from .tasks import get_operation
    from .train import train

    if args.resume:
        fixed = [f for f in ("preset", "config", "variant", "out", "compile") if getattr(args, f)]
        fixed += [f for f in TRAIN_FLAGS if f != "steps" and getattr(args, f.replace("-", "_")) is not None]
        if fixed:
            raise GrokscopeError(f"--resume continues a run with its own config; drop --{', --'.join(fixed)}")
        run = train(resume=args.resume, steps=args.steps, progress=not args.no_progress)
    else:
        cfg = build_config(args)
        get_operation(cfg.task.op)  # unknown operation: fail before touching the disk
        run = train(cfg, out=args.out, progress=not args.no_progress)
    if run.interrupted:
        return 130
    m = run.metrics
    if len(m):
        last = m.iloc[-1]
        print(f"grokscope: done at step {int(last.step)}: train acc {last.train_acc:.3f}, val acc {last.val_acc:.3f}; "
              f"run in {run.path}")
    return 0


def cmd_ops(args) -> int:
    from .tasks import OPERATIONS

    width = max(len(n) for n in OPERATIONS)
    for name, op in OPERATIONS.items():
        note = " (needs a prime p)" if op.needs_prime else ""
        print(f"{name:<{width}}  {op.description or name}{note}")
    return 0


def cmd_variants(args) -> int:
    for name in VARIANTS:
        print(f"{name:<28}  {VARIANT_HELP[name]}")
    return 0


def cmd_presets(args) -> int:
    for name in PRESETS:
        print(f"{name:<8}  {PRESET_HELP[name]}")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (exit code 2), like every other bad input."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="grokscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    sub.add_parser("ops", help="list the operations").set_defaults(func=cmd_ops)
    sub.add_parser("variants", help="list the Figure 2 (left) optimiser variants").set_defaults(func=cmd_variants)
    sub.add_parser("presets", help="list the presets").set_defaults(func=cmd_presets)
    for extension in EXTENSIONS:
        extension(sub)
    return parser


def _extensions():
    """Sub-commands owned by other modules (analyze, report, ...): each has add_parsers(sub)."""
    found = []
    import importlib

    for module in ("grokscope.analyze", "grokscope.report", "grokscope.sweep"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        found.append(mod.add_parsers)
    return found


EXTENSIONS = _extensions()


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GrokscopeError as e:
        print(f"grokscope: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grokscope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # an environment error the checks did not turn into a GrokscopeError: still one line
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"grokscope: error: {e.strerror or e}{where}"[:400], file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
