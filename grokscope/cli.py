"""The grokscope command: a thin shell that builds one config and calls the API.

Each sub-command's choices come from the registries (operations, variants, presets, analyses).
A GrokscopeError (bad input) prints one line and exits with code 2.

Fast by construction: listing the operations, variants, presets and analyses and printing --help
import neither torch nor TransformerLens. The sub-commands defined in other modules (analyze, report,
sweep, ...) are imported only when one of them is run; ``LAZY_COMMANDS`` names their modules and
one-line help (a test checks it against the modules).
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from .config import PRESET_HELP, PRESETS, VARIANT_HELP, VARIANTS, RunConfig, apply_variant, preset
from .errors import GrokscopeError, TrainingInterrupted

DESCRIPTION = ("Train the grokking transformer of Power et al. (2022) as a TransformerLens HookedTransformer, "
               "checkpoint it densely, analyse the checkpoints and report.")


def switch(text) -> bool:
    """A boolean flag's value: ``--orthograd`` alone is true; ``--orthograd false`` (or 0, no, off)."""
    if isinstance(text, bool):
        return text
    value = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
             "off": False}.get(str(text).lower())
    if value is None:
        raise ValueError(text)
    return value


# Flags of `grokscope train` that set a config field: flag -> (section, field, type, help).
TRAIN_FLAGS = {
    "op": ("task", "op", str, "operation (list them: grokscope ops)"),
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
    "grokfast-lambda": ("train", "grokfast_lambda", float, "Grokfast amplification; 0 = off (Lee et al.: 2 EMA, 5 MA)"),
    "grokfast-filter": ("train", "grokfast_filter", str, "ema (default) or ma: mean of the last --grokfast-window gradients"),
    "grokfast-window": ("train", "grokfast_window", int, "Grokfast-MA window (default 100)"),
    "softmax": ("train", "softmax", str, "softmax (default) or stablemax (Prieto et al. 2025) in the loss"),
    "orthograd": ("train", "orthograd", switch, "⊥Grad: gradient minus its component along each weight tensor"),
    "orthograd-rescale": ("train", "orthograd_rescale", switch, "⊥Grad: back to the gradient's norm (default true)"),
    "seed": ("train", "seed", int, "seed of initialisation, batches and noise"),
    "stop-val-acc": ("train", "stop_val_acc", float, "end the run once validation accuracy reaches this (0: off)"),
    "stop-margin": ("train", "stop_margin", float, "with --stop-val-acc reached at step T, train on until T*(1+margin)"),
    "loss-dtype": ("train", "loss_dtype", str, "float64 (default; Nanda et al.) or float32 log-softmax of the loss"),
    "device": ("train", "device", str, "auto (CUDA when present), cpu, cuda"),
    "eval-every": ("schedule", "eval_every", int, "metrics every N steps (plus log-spaced early steps)"),
    "eval-log-points": ("schedule", "eval_log_points", int, "log-spaced early evaluations (default 20)"),
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
    p.add_argument("--out", metavar="DIR", help="run directory (default checkpoints/<op>_p<p>_f<frac>_s<seed>, e.g. checkpoints/xdivy_p97_f0.5_s0)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (with --steps: a new budget)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the training step: faster steps after a one-time compile (for long runs)")
    for flag, (_, _, typ, help_) in TRAIN_FLAGS.items():
        extra = {"nargs": "?", "const": True, "metavar": "BOOL"} if typ is switch else {}
        p.add_argument(f"--{flag}", type=typ, default=None, help=help_, **extra)
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
    try:
        if args.resume:
            run = train(resume=args.resume, steps=args.steps, progress=not args.no_progress)
        else:
            cfg = build_config(args)
            get_operation(cfg.task.op)  # unknown operation: fail before touching the disk
            run = train(cfg, out=args.out, progress=not args.no_progress)
    except TrainingInterrupted:  # saved; the loop printed the command that continues the run
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


def cmd_figures(args) -> int:
    from .figures.export import export_report_figures

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    paths = export_report_figures(args.source, args.out, formats=formats, results=args.results, log_x=not args.linear)
    print(f"grokscope: {len(paths)} files -> {args.out}")
    return 0


def _add_figures(sub) -> None:
    p = sub.add_parser("figures", help="save the report's figures as files (PNG, SVG, PDF or HTML)",
                       description="Save every figure of a run's report as files, one per figure and format: "
                                   "HTML (interactive, self-contained) or, through kaleido and a Chrome or "
                                   "Chromium on the machine, PNG, SVG, PDF.")
    p.add_argument("source", metavar="RUN_OR_RESULTS", help="a run directory or its results folder (analyses/<run>)")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder for the files")
    p.add_argument("--format", default="png", metavar="F1,F2", help="png, svg, pdf, jpeg, webp, html (default png)")
    p.add_argument("--results", metavar="DIR", help="the results folder, when it is not analyses/<run dir name>")
    p.add_argument("--linear", action="store_true", help="linear step axes (default logarithmic)")
    p.set_defaults(func=cmd_figures)


def cmd_tensorboard(args) -> int:
    from .tensorboard import to_tensorboard

    folder = to_tensorboard(args.source, args.logdir, args.results)
    print(f"grokscope: TensorBoard scalars -> {folder} (tensorboard --logdir {folder.parent})")
    return 0


def _add_tensorboard(sub) -> None:
    p = sub.add_parser("tensorboard", help="write a run's curves as TensorBoard scalars (offline)",
                       description="Write a run's metrics and its stored analysis measures as TensorBoard "
                                   "scalars (needs pip install grokscope[tensorboard]); nothing is recomputed.")
    p.add_argument("source", metavar="RUN_OR_RESULTS", help="a run directory or its results folder (analyses/<run>)")
    p.add_argument("--logdir", metavar="DIR", help="where to write (default <results folder>/tensorboard)")
    p.add_argument("--results", metavar="DIR", help="the results folder, when it is not analyses/<run dir name>")
    p.set_defaults(func=cmd_tensorboard)


def analysis_catalog() -> list[dict]:
    """name, summary, kind, default_steps and expensive of every analysis, in the registry's order.

    The live registry when ``grokscope.analyses`` is already imported (analyses registered in this
    process included). Otherwise read from the ``@register(...)`` calls in grokscope/analyses/*.py
    without importing them (that loads torch, scipy and scikit-learn: seconds); a call whose
    arguments are not literals makes it import the registry after all."""
    if "grokscope.analyses" not in sys.modules:
        try:
            return _static_catalog(Path(__file__).parent / "analyses")
        except (OSError, SyntaxError, ValueError):
            pass
    from .analyses import REGISTRY

    return [{"name": a.name, "summary": a.summary, "kind": a.kind, "default_steps": a.default_steps,
             "expensive": a.expensive} for a in REGISTRY.values()]


def _static_catalog(folder: Path) -> list[dict]:
    """The analyses' registration calls, read with ``ast``: modules in name order (as the package
    imports them), calls in source order. ValueError when an argument is not a literal."""
    found, trees, order = [], {}, []
    for path in sorted(folder.glob("*.py"), key=lambda p: p.stem):
        if path.stem != "base" and not path.stem.startswith("_"):
            trees[path.stem] = ast.parse(path.read_text(encoding="utf-8"))

    seen: set[str] = set()

    def visit(stem: str) -> None:  # as Python imports them: a module's sibling imports register first
        if stem in seen or stem not in trees:
            return
        seen.add(stem)  # (a cycle stops here, as a partial import would)
        for node in ast.walk(trees[stem]):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                visit(node.module.split(".")[0])
        order.append(stem)

    for stem in trees:
        visit(stem)
    for stem in order:
        for node in trees[stem].body:
            for deco in getattr(node, "decorator_list", []):
                func = getattr(deco, "func", None)
                if getattr(func, "id", getattr(func, "attr", None)) != "register":
                    continue
                keywords = {k.arg: k.value for k in deco.keywords}
                entry = {"name": ast.literal_eval(deco.args[0]), "summary": ast.literal_eval(keywords["summary"]),
                         "kind": "checkpoint", "default_steps": "all", "expensive": False}
                for key in ("kind", "default_steps", "expensive"):
                    if key in keywords:
                        entry[key] = ast.literal_eval(keywords[key])
                found.append(entry)
    if not found:
        raise ValueError("no analyses found")
    return found


def cmd_analyses(args) -> int:
    catalog = analysis_catalog()
    width = max((len(a["name"]) for a in catalog), default=0)
    for a in catalog:
        tags = [t for t, on in (("run", a["kind"] == "run"), ("few checkpoints", a["default_steps"] == "few"),
                                ("20 checkpoints", a["default_steps"] == "slider"),
                                ("expensive: only with --only", a["expensive"])) if on]
        print(f"{a['name']:<{width}}  {a['summary']}{' [' + '; '.join(tags) + ']' if tags else ''}")
    return 0


class _Version(argparse.Action):
    """--version: the installed package's version (read only when asked for)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from . import __version__

        print(f"grokscope {__version__}")
        parser.exit(0)


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (exit code 2), like every other bad input."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Sub-commands defined in other modules (each has add_parsers(sub), which adds all of that module's
# commands): command -> (module, the help line shown by grokscope --help). The module is imported only
# when one of its commands is given.
LAZY_COMMANDS = {
    "analyze": ("grokscope.analyze", "analyse a run's checkpoints into analyses/<run>/"),
    "report": ("grokscope.report", "build the HTML report of a run (or compare runs) from stored results"),
    "sweep-report": ("grokscope.sweep.commands", "build the HTML report of a sweep (a grid of runs)"),
    "sweep": ("grokscope.sweep.commands", "train a grid of runs (the paper's figures: --preset)"),
    "sweeps": ("grokscope.sweep.commands", "list the sweep presets (the paper's figures)"),
}


def _command(argv: list[str]) -> str | None:
    """The sub-command named on the command line (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; the module that defines ``command`` (when it is a lazy one) is imported and adds its
    real sub-parser, the other lazy commands get a placeholder that only carries their help line."""
    import importlib

    parser = Parser(prog="grokscope", description=DESCRIPTION)
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    sub.add_parser("ops", help="list the operations").set_defaults(func=cmd_ops)
    sub.add_parser("variants", help="list the Figure 2 (left) optimiser variants").set_defaults(func=cmd_variants)
    sub.add_parser("presets", help="list the presets").set_defaults(func=cmd_presets)
    sub.add_parser("analyses", help="list the analyses").set_defaults(func=cmd_analyses)
    _add_figures(sub)
    _add_tensorboard(sub)
    wanted = LAZY_COMMANDS[command][0] if command in LAZY_COMMANDS else None
    done: set[str] = set()
    for name, (module, help_) in LAZY_COMMANDS.items():
        if module == wanted:
            if module not in done:
                importlib.import_module(module).add_parsers(sub)
                done.add(module)
        else:
            sub.add_parser(name, help=help_, add_help=False)
    return parser


# Commands that compute: the process is grokscope's own, so it gets the process-wide CPU settings
# (subnormal floats flushed, the heap kept between steps; see train.configure_cpu) that a call from
# Python only gets for its duration (flushing) or not at all (the heap).
COMPUTING = ("train", "analyze", "sweep")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = make_parser(_command(argv))
    args = parser.parse_args(argv)
    try:
        if args.command in COMPUTING:
            from .train import configure_cpu

            configure_cpu()
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
