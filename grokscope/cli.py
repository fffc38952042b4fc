"""The grokscope command: the only argparse in the package, a thin shell that builds one config (or
names a run, a results folder, a sweep) and calls the API, one call per sub-command.

The train flags and the sweep axes come from the config schema (``config.flags``: each field's flag,
help and checks declared once beside its default); the other choices come from the registries
(operations, variants, presets, analyses, sweep presets). A GrokscopeError (bad input) prints one line
and exits with code 2.

Fast by construction: a sub-command's parser is built only when that sub-command is run (the others
get only their help line), and what it calls is imported only then, so listing the operations,
variants, presets and analyses and printing --help import neither torch nor TransformerLens.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

from .config import (PRESET_HELP, PRESETS, VARIANT_HELP, VARIANTS, Field, RunConfig, axes, flags, parse_values, preset,
                     set_flags, switch)
from .errors import GrokscopeError, TrainingInterrupted, printable

DESCRIPTION = ("Train the grokking transformer of Power et al. (2022) as a TransformerLens HookedTransformer, "
               "checkpoint it densely, analyse the checkpoints and report.")

def _dest(flag: str) -> str:
    return flag.replace("-", "_")


def _count(flag: str):
    """An argparse type for ``flag``: a whole number of at least 1, or one clear error naming the flag."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise argparse.ArgumentTypeError(f"{flag} takes a whole number of at least 1, got {text!r}")
        return n

    return parse


_thread_count = _count("--threads")


def _add_threads(p: argparse.ArgumentParser, what: str = "this process") -> None:
    """--threads, for the commands that compute (COMPUTING): torch's thread count, default one."""
    p.add_argument("--threads", type=_thread_count, default=1, metavar="N",
                   help=f"torch threads (intra-op and inter-op) for {what} (default 1: for models this small one "
                        "thread is faster, and far faster when anything else runs; see docs/speed.md)")


def _say(text: object = "", **kw) -> None:
    """print, with what could hide or rewrite text on a terminal (control and formatting characters in a
    path: a right-to-left override) escaped, line by line (see errors.printable)."""
    print("\n".join(printable(line) for line in str(text).split("\n")), **kw)


def _report_line(path: Path) -> str:
    return f"grokscope: report -> {path} ({path.stat().st_size / 1e6:.1f} MB)"


# --- train ------------------------------------------------------------------------------------------------
def _add_field(p: argparse.ArgumentParser, f: Field) -> None:
    """A config field's flag, as the schema declares it."""
    if f.option.switch:
        p.add_argument(f"--{f.flag}", action="store_true", default=None, help=f.help.replace("%", "%%"))
    elif f.type is bool:
        p.add_argument(f"--{f.flag}", type=switch, nargs="?", const=True, metavar="BOOL", default=None,
                       help=f.help.replace("%", "%%"))
    else:
        p.add_argument(f"--{f.flag}", type=f.type, default=None, help=f.help.replace("%", "%%"))


def _add_train(sub, help_: str) -> None:
    from .tensorboard import RESTRICTED_EVERY  # (a light module: pandas and torch only on use)

    p = sub.add_parser("train", help=help_, description="Train the paper's transformer on a binary-operation table.")
    # argparse %-formats help strings: the presets' "50 %" must reach it as "%%"
    p.add_argument("--preset", help="; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()).replace("%", "%%"),
                   metavar="NAME")
    p.add_argument("--config", metavar="FILE", help="a RunConfig JSON file (a run's config.json works)")
    p.add_argument("--variant", metavar="NAME",
                   help=("Figure 2 (left) optimiser variant: " + "; ".join(f"{k} ({v})" for k, v in VARIANT_HELP.items()))
                   .replace("%", "%%"))
    fields = flags()
    _add_field(p, fields["full-batch"])
    p.add_argument("--out", metavar="DIR", help="run directory (default checkpoints/<op>_p<p>_f<frac>_s<seed>, e.g. checkpoints/xdivy_p97_f0.5_s0)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (with --steps: a new budget)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", nargs="?", const=True, default=False, metavar="DIR",
                   help="write TensorBoard scalars while training (losses, accuracies, weight norm, collapse; the "
                        "restricted loss every --tensorboard-every steps) into DIR (default "
                        "<results folder>/tensorboard/live); needs pip install 'grokscope[tensorboard]'")
    p.add_argument("--tensorboard-every", type=int, default=None, metavar="N",
                   help=f"steps between two live restricted losses (default {RESTRICTED_EVERY})")
    p.add_argument("--no-forecast", action="store_true", help="no live forecast of whether and when the run groks "
                                                              "(on the bar and in metrics.csv; docs/forecast.md)")
    _add_field(p, fields["compile"])
    _add_threads(p)
    for f in axes().values():
        _add_field(p, f)
    p.set_defaults(func=cmd_train)


def build_config(args) -> RunConfig:
    """Defaults <- --preset <- --config <- --variant <- the other flags (--seed also sets the split seed,
    unless --split-seed or --config is given)."""
    cfg = preset(args.preset) if args.preset is not None else RunConfig()
    if args.config is not None:
        cfg.update(_config_file(args.config).to_dict())
    values = {"variant": args.variant, **{flag: getattr(args, _dest(flag)) for flag in flags()}}
    return set_flags(cfg, values, seed_sets_split=not args.config).validate()


def _config_file(path: str) -> RunConfig:
    """A --config file, checked on its own: a bad value in it is refused even when a flag replaces it."""
    cfg = RunConfig.load(path)
    try:
        return cfg.validate()
    except GrokscopeError as e:
        raise GrokscopeError(f"{path}: {e}") from None


def cmd_train(args) -> int:
    from .tasks import get_operation
    from .train import train

    if args.resume:
        fixed = [f for f in ("preset", "config", "variant", "out") if getattr(args, f) is not None]
        fixed += [f for f in flags() if f != "steps" and getattr(args, _dest(f)) is not None]
        if fixed:
            raise GrokscopeError(f"--resume continues a run with its own config; drop --{', --'.join(fixed)}")
    try:
        live = {"tensorboard": args.tensorboard}
        if args.tensorboard_every is not None:
            if args.tensorboard is False:
                raise GrokscopeError("--tensorboard-every needs --tensorboard")
            live["tensorboard_every"] = args.tensorboard_every
        if args.resume:
            run = train(resume=args.resume, steps=args.steps, progress=not args.no_progress, log=_say,
                        forecast=not args.no_forecast, **live)
        else:
            cfg = build_config(args)
            get_operation(cfg.task.op)  # unknown operation: fail before touching the disk
            run = train(cfg, out=args.out, progress=not args.no_progress, log=_say,
                        forecast=not args.no_forecast, **live)
    except TrainingInterrupted:  # saved; the loop printed the command that continues the run
        return 130
    m = run.metrics
    if len(m):
        last = m.iloc[-1]
        _say(f"grokscope: done at step {int(last.step)}: train acc {last.train_acc:.3f}, val acc {last.val_acc:.3f}; "
              f"run in {run.path}")
    return 0


# --- listings -------------------------------------------------------------------------------------------
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


def cmd_sweeps(args) -> int:
    from .sweep.presets import SWEEP_PRESETS

    for name, p in SWEEP_PRESETS.items():
        print(f"{name:<11}  {p['help']}")
        print(f"{'':<11}  --scale small: {p['small_note']}")
    return 0


def cmd_reproductions(args) -> int:
    from . import reproductions

    print(reproductions.markdown() if args.markdown else reproductions.text(), end="")
    return 0


def _add_reproductions(sub, help_: str) -> None:
    p = sub.add_parser("reproductions", help=help_,
                       description="The papers' published numbers beside grokscope's measured ones: claim, source, "
                                   "published, measured, command, scale, time, verdict (docs/reproductions.md).")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (the docs page's table)")
    p.set_defaults(func=cmd_reproductions)


def _listing(func):
    def add(sub, help_: str) -> None:
        sub.add_parser(func.__name__[4:], help=help_).set_defaults(func=func)

    return add


# --- analyze and report ---------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    """--steps "0,1e3,2000" -> [0, 1000, 2000]: whole, finite, non-negative step numbers, or one clear error."""
    from .config import MAX_INT, coerce

    try:
        steps = [coerce(int, s.strip()) for s in text.split(",") if s.strip()]
    except (ValueError, TypeError, OverflowError):
        steps = None
    if not steps or not all(0 <= s <= MAX_INT for s in steps):
        raise GrokscopeError(f"--steps takes whole step numbers (0 or more) separated by commas, got {text!r}")
    return steps


def _add_analyze(sub, help_: str) -> None:
    p = sub.add_parser("analyze", help=help_,
                       description="Run the registered analyses over a run's checkpoints. Results are "
                                   "cached per checkpoint: run it again as the run grows.")
    p.add_argument("--ckpt-dir", required=True, metavar="DIR", help="the run directory (checkpoints/<run>)")
    p.add_argument("--only", metavar="A,B", help="analyses to run, from: " + ", ".join(a["name"] for a in analysis_catalog())
                   + " (default: all but the expensive ones)")
    p.add_argument("--every", type=int, metavar="N", help="only checkpoints whose step is a multiple of N (and the last)")
    p.add_argument("--steps", metavar="S1,S2", help="only these checkpoint steps")
    p.add_argument("--out", metavar="DIR", help="results folder (default: analyses/<run dir name>, beside the run's checkpoints/ folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=_count("--workers"), metavar="N",
                   help="processes that analyse the checkpoints (default: one per core, when there are many "
                        "checkpoints to do; 1: all in this process)")
    _add_threads(p)
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args) -> int:
    """analyze, then the report of what is stored (the CLI composes the two; analyze knows no report)."""
    from .analyses.base import get_analysis
    from .analyze import analyze, open_run
    from .report import build_report
    from .results import default_out_dir

    steps = _int_list(args.steps) if args.steps is not None else None
    for name in (args.only or "").split(","):  # a misspelt analysis fails before the run is opened
        if name.strip():
            get_analysis(name.strip())
    run = open_run(args.ckpt_dir)
    out = Path(args.out) if args.out else default_out_dir(run.path)
    tables = analyze(run, only=args.only, steps=steps, every=args.every, out=out, progress=not args.no_progress,
                     workers=args.workers)
    for name, table in tables.items():
        n = table["step"].nunique() if "step" in table.columns else 0
        _say(f"grokscope: {name}: {len(table)} rows, {n} steps -> {out / (name + '.csv')}")
    if "phases" in tables:
        for text in tables["phases"]["description"]:
            _say(f"  {text}")
    _say(f"grokscope: report -> {build_report(run, results=out)}")
    return 0


def _add_report(sub, help_: str) -> None:
    p = sub.add_parser("report", help=help_,
                       description="Draw one self-contained HTML page from a run's metrics and stored analysis "
                                   "tables (nothing is recomputed).")
    p.add_argument("source", nargs="?", metavar="RUN_OR_RESULTS",
                   help="a run directory (checkpoints/<run>) or its results folder (analyses/<run>)")
    p.add_argument("--compare", nargs="+", metavar="RUN", help="overlay the curves of these runs on one page")
    p.add_argument("--results", metavar="DIR", help="the results folder, when it is not analyses/<run dir name>")
    p.add_argument("--out", metavar="FILE", help="the HTML file (default <results folder>/report.html; "
                                                 "with --compare analyses/compare.html)")
    p.add_argument("--linear", action="store_true", help="linear step axes at first (the page has a switch)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from .report import build_report, compare_report

    if args.compare and args.source:
        raise GrokscopeError("give one run, or --compare RUN_A RUN_B ..., not both")
    if args.compare:
        path = compare_report(args.compare, args.out or Path("analyses") / "compare.html", log_x=not args.linear)
    elif args.source:
        path = build_report(args.source, out=args.out, results=args.results, log_x=not args.linear)
    else:
        raise GrokscopeError("give a run directory or results folder, or --compare RUN_A RUN_B ...")
    _say(_report_line(path))
    return 0


# --- sweeps ---------------------------------------------------------------------------------------------
def _add_sweep(sub, help_: str) -> None:
    from .sweep.presets import SWEEP_PRESETS
    from .sweep.spec import ALIASES

    p = sub.add_parser("sweep", help=help_,
                       description="Train every cell of a grid as an ordinary run under one sweep folder; "
                                   "started again, skip finished runs and resume the others.")
    p.add_argument("--out", required=True, metavar="DIR", help="the sweep folder (e.g. sweeps/fig2-right)")
    p.add_argument("--preset", metavar="NAME", help="a paper figure: " + ", ".join(SWEEP_PRESETS) +
                   " (see `grokscope sweeps`)")
    p.add_argument("--scale", choices=["small", "paper"], help="with --preset: small (CPU, ~30 min; default) or paper")
    p.add_argument("--grid", metavar="FILE", help="a grid file (JSON or YAML): preset, scale, base, fixed, grid, analyses")
    p.add_argument("--config", metavar="FILE", help="a RunConfig JSON as the base of every run")
    p.add_argument("--workers", type=int, metavar="N", help="local processes (default: one per CPU core, or per GPU)")
    p.add_argument("--batch", type=int, metavar="N", help="runs per batched process (default 64 on a GPU; 1, "
                                                         "no batching, on the CPU, where a batch is not cheaper per run)")
    p.add_argument("--ray", metavar="ADDRESS", help="run the jobs as tasks on this Ray cluster (pip install grokscope[ray]); "
                                                    "the --out folder must be shared with its nodes")
    p.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (with --workers 1)")
    _add_threads(p, "the command and each of its local worker processes")
    p.add_argument("--variant", "--variants", dest="variant", metavar="LIST", help="Figure 2 (left) variants")
    for flag, f in axes().items():
        names = [f"--{flag}"] + [f"--{k}" for k, v in ALIASES.items() if v == flag]
        p.add_argument(*names, dest=_dest(flag), metavar="LIST", default=None,
                       help=f"{f.help}; " + ("a comma list sweeps it" if f.option.sweep else "one value, for every run"))
    p.set_defaults(func=cmd_sweep)


def sweep_spec(args):
    """The sweep's spec from --preset, --grid, --config and the axis flags (a flag's comma list sweeps
    that axis, one value fixes it), or None when none is given (continue the sweep in --out)."""
    from .sweep.presets import preset_spec
    from .sweep.spec import SweepSpec, axis_name, read_grid_file

    d = read_grid_file(args.grid) if args.grid else {}
    name = args.preset if args.preset is not None else d.get("preset")
    scale = args.scale or d.get("scale") or ("small" if name is not None else None)
    if args.scale and name is None:
        raise GrokscopeError("--scale goes with --preset")
    spec = preset_spec(name, scale) if name is not None else SweepSpec()
    base = _config_file(args.config).to_dict() if args.config is not None else spec.base
    base = {**base, **d["base"]} if d.get("base") else base
    analyses = {**spec.analyses, **(d.get("analyses") or {})}
    fixed = {**spec.fixed, **{axis_name(k): v for k, v in (d.get("fixed") or {}).items()}}
    grid = {**spec.grid, **{axis_name(k): v for k, v in (d.get("grid") or {}).items()}}
    for flag in [*axes(), "variant"]:
        text = getattr(args, _dest(flag), None)
        if text is not None:
            values = parse_values(flag, text)
            target, other = (grid, fixed) if len(values) > 1 else (fixed, grid)
            other.pop(flag, None)
            target[flag] = values if len(values) > 1 else values[0]
    if not (grid or fixed or name is not None or args.config is not None or d):
        return None
    cases = {**spec.cases, **(d.get("cases") or {})}
    return SweepSpec.make(base, fixed, grid, preset=name, scale=scale if name is not None else None,
                          analyses=analyses, cases=cases)


def cmd_sweep(args) -> int:
    from .sweep.folder import SWEEP_FILE, load_sweep
    from .sweep.runner import run_sweep

    spec = sweep_spec(args)
    if spec is None and not os.path.exists(Path(args.out) / SWEEP_FILE):
        raise GrokscopeError(f"{args.out} holds no sweep yet: give a grid (--ops, --fracs, --seeds, ...), "
                             f"--preset or --grid")
    if args.dry_run:
        cells = spec.cells() if spec is not None else load_sweep(args.out).cells
        for c in cells:
            print(f"{c.name}  " + " ".join(f"{k}={v}" for k, v in c.coords.items()))
        print(f"grokscope: {len(cells)} runs")
        return 0
    try:
        run_sweep(spec, args.out, workers=args.workers, batch=args.batch, ray_address=args.ray,
                  progress=not args.no_progress, threads=args.threads, log=_say)
    except KeyboardInterrupt:
        _say(f"\ngrokscope: interrupted; continue with: grokscope sweep --out {args.out}", file=sys.stderr)
        return 130
    return 0


def _add_sweep_report(sub, help_: str) -> None:
    p = sub.add_parser("sweep-report", help=help_,
                       description="Draw one self-contained HTML page from a sweep's results table: steps to 99 % "
                                   "and best validation accuracy against the training fraction, sharpness against "
                                   "validation accuracy, and every run (nothing is recomputed).")
    p.add_argument("sweep", metavar="SWEEP_DIR", help="the sweep folder (made by `grokscope sweep`)")
    p.add_argument("--out", metavar="FILE", help="the HTML file (default <sweep folder>/report.html)")
    p.set_defaults(func=cmd_sweep_report)


def cmd_sweep_report(args) -> int:
    from .sweep.report import sweep_report

    _say(_report_line(sweep_report(args.sweep, out=args.out)))
    return 0


# --- forecast ---------------------------------------------------------------------------------------------
def _add_forecast(sub, help_: str) -> None:
    p = sub.add_parser("forecast", help=help_,
                       description="What the forecast of whether and when the run groks (validation loss below "
                                   "chance for good, within its budget) was at each checkpoint, from the data up to "
                                   "that step only, beside the step where it really did (docs/forecast.md).")
    p.add_argument("run", metavar="RUN", help="a run directory (checkpoints/<run>)")
    p.add_argument("--steps", metavar="S1,S2", help="only these steps (default: every checkpoint)")
    p.add_argument("--csv", action="store_true", help="print the table as CSV")
    p.add_argument("--save", action="store_true", help="also store it as the run's forecast table "
                                                       "(analyses/<run>/forecast.csv), which its report draws")
    p.set_defaults(func=cmd_forecast)


def _num(v, fmt: str = ",.0f") -> str:
    return "–" if v is None or v != v else format(float(v), fmt)


FORECAST_TABLE = "forecast"  # the results table `grokscope forecast --save` writes (the report's forecast figure reads it)


def save_forecast(run, table) -> Path:
    """The forecast table in the run's results folder (analyses/<run>/forecast.csv, with its sidecar)."""
    from .forecast import results_store

    store = results_store(run)
    store.write(FORECAST_TABLE, table, {"analysis": FORECAST_TABLE, "kind": "run", "steps": [int(s) for s in table["step"]],
                                        "run": str(run.path.resolve()), "run_id": run.run_id})
    return store.table_path(FORECAST_TABLE)


def cmd_forecast(args) -> int:
    from .forecast import forecast_run
    from .run import Run

    run = Run(args.run)
    if not run.steps:
        raise GrokscopeError(f"run {run.path} has no checkpoints yet: nothing to forecast from")
    steps = _int_list(args.steps) if args.steps is not None else None
    if steps is not None:
        missing = [s for s in steps if not run.has_step(s)]
        if missing:
            raise GrokscopeError(f"run {run.path} has no checkpoint at step {missing[0]} (it has {len(run.steps)} "
                                 f"from {run.steps[0]} to {run.steps[-1]})")
    table = forecast_run(run, steps)
    if args.save:
        path = save_forecast(run, table)
        _say(f"grokscope: forecast table -> {path}", file=sys.stderr if args.csv else sys.stdout)
    if args.csv:
        _say(table.to_csv(index=False), end="")
        return 0
    rows = [["step", "p_grok", "grok step", "80 % interval", "measures"]]
    for _, r in table.iterrows():
        interval = f"{_num(r['lo'])}–{_num(r['hi'])}" if r["lo"] == r["lo"] and r["hi"] == r["hi"] else "–"
        rows.append([_num(r["step"]), _num(r["p_grok"], ".2f"), _num(r["grok_step"]), interval,
                     str(r["measures"]) if r["measures"] == r["measures"] and r["measures"] else "–"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _say("  ".join(c.rjust(w) if i < 4 else c for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    actual = table["actual_grok_step"].iloc[0] if "actual_grok_step" in table.columns and len(table) else float("nan")
    _say(f"actual grok step (validation loss below chance for good): "
         + (_num(actual) if actual == actual else f"none in the run's {len(run.metrics)} evaluations so far"))
    return 0


# --- figures and TensorBoard --------------------------------------------------------------------------------
def cmd_figures(args) -> int:
    from .figures.export import export_report_figures

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    steps = _int_list(args.steps) if args.steps else None
    paths = export_report_figures(args.source, args.out, formats=formats, results=args.results, log_x=not args.linear,
                                  steps=steps)
    _say(f"grokscope: {len(paths)} files -> {args.out}")
    return 0


def _add_figures(sub, help_: str) -> None:
    p = sub.add_parser("figures", help=help_,
                       description="Save every figure of a run's report as files, one per figure and format: "
                                   "HTML (interactive, self-contained) or, through kaleido and a Chrome or "
                                   "Chromium on the machine, PNG, SVG, PDF.")
    p.add_argument("source", metavar="RUN_OR_RESULTS", help="a run directory or its results folder (analyses/<run>)")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder for the files")
    p.add_argument("--format", default="png", metavar="F1,F2", help="png, svg, pdf, jpeg, webp, html (default png)")
    p.add_argument("--results", metavar="DIR", help="the results folder, when it is not analyses/<run dir name>")
    p.add_argument("--linear", action="store_true", help="linear step axes (default logarithmic)")
    p.add_argument("--steps", metavar="S1,S2", help="static files draw the slider figures (t-SNE, circles) at these "
                                                    "checkpoints, one file each (default: the last)")
    p.set_defaults(func=cmd_figures)


def cmd_tensorboard(args) -> int:
    from .tensorboard import to_tensorboard

    folder = to_tensorboard(args.source, args.logdir, args.results)
    _say(f"grokscope: TensorBoard scalars -> {folder} (tensorboard --logdir {folder.parent})")
    return 0


def _add_tensorboard(sub, help_: str) -> None:
    p = sub.add_parser("tensorboard", help=help_,
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
    from .analyses.base import REGISTRY

    return [{"name": a.name, "summary": a.summary, "kind": a.kind, "default_steps": a.default_steps,
             "expensive": a.expensive} for a in REGISTRY.values()]


def _static_catalog(folder: Path) -> list[dict]:
    """The analyses' registration calls, read with ``ast``: modules in the order the package imports
    them, calls in source order. ValueError when an argument is not a literal."""
    trees = {path.stem: ast.parse(path.read_text(encoding="utf-8"))
             for path in sorted(folder.glob("*.py"), key=lambda p: p.stem)
             if path.stem != "base" and not path.stem.startswith("_")}
    found = [entry for stem in _import_order(trees) for entry in _registrations(trees[stem])]
    if not found:
        raise ValueError("no analyses found")
    return found


def _import_order(trees: dict[str, ast.Module]) -> list[str]:
    """Modules in name order, as Python imports them: a module's sibling imports register first."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(stem: str) -> None:
        if stem in seen or stem not in trees:
            return
        seen.add(stem)  # (a cycle stops here, as a partial import would)
        for node in ast.walk(trees[stem]):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                visit(node.module.split(".")[0])
        order.append(stem)

    for stem in trees:
        visit(stem)
    return order


def _registrations(tree: ast.Module) -> list[dict]:
    """The catalog entries of a module's ``@register(name, summary=..., ...)`` decorators."""
    found = []
    for node in tree.body:
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


# Every sub-command, in the order grokscope --help lists them: name -> (its help line, what adds its parser).
COMMANDS = {
    "train": ("train a run (or continue one with --resume)", _add_train),
    "ops": ("list the operations", _listing(cmd_ops)),
    "variants": ("list the Figure 2 (left) optimiser variants", _listing(cmd_variants)),
    "presets": ("list the presets", _listing(cmd_presets)),
    "analyses": ("list the analyses", _listing(cmd_analyses)),
    "figures": ("save the report's figures as files (PNG, SVG, PDF or HTML)", _add_figures),
    "tensorboard": ("write a run's curves as TensorBoard scalars (offline)", _add_tensorboard),
    "analyze": ("analyse a run's checkpoints into analyses/<run>/", _add_analyze),
    "report": ("build the HTML report of a run (or compare runs) from stored results", _add_report),
    "sweep-report": ("build the HTML report of a sweep (a grid of runs)", _add_sweep_report),
    "sweep": ("train a grid of runs (the paper's figures: --preset)", _add_sweep),
    "sweeps": ("list the sweep presets (the paper's figures)", _listing(cmd_sweeps)),
    "forecast": ("what the forecast of whether and when a run groks was at each checkpoint", _add_forecast),
    "reproductions": ("list the papers' numbers beside grokscope's (docs/reproductions.md)", _add_reproductions),
}


def _command(argv: list[str]) -> str | None:
    """The sub-command named on the command line (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: ``command``'s sub-parser in full, every other sub-command only with its help line
    (what grokscope --help shows), so that nothing a sub-command needs is imported for another."""
    parser = Parser(prog="grokscope", description=DESCRIPTION)
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add) in COMMANDS.items():
        if name == command:
            add(sub, help_)
        else:
            sub.add_parser(name, help=help_, add_help=False)
    return parser


# Commands that compute: the process is grokscope's own, so it gets the process-wide CPU settings
# (subnormal floats flushed, the heap kept between steps, --threads torch threads, default one; see
# cpu.configure_cpu), set before any work, that a call from Python only gets for its duration
# (flushing) or not at all (the heap, the threads: a notebook keeps its own).
COMPUTING = ("train", "analyze", "sweep")


def check_arguments(args: argparse.Namespace) -> None:
    """What no sub-command may get: an empty value (``--out ""`` would mean the working folder, ``--preset ""``
    no preset) or bytes that are not UTF-8 (a path grokscope records in its JSON files must be text)."""
    for key, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if not isinstance(v, str) or key in ("command", "func"):
                continue
            name = key if key in ("source", "sweep", "run") else "--" + key.replace("_", "-")
            if not v.strip():
                raise GrokscopeError(f"{name} is empty")
            if "\x00" in v:
                raise GrokscopeError(f"{name} holds a NUL byte")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise GrokscopeError(f"{name} {v!r} holds bytes that are not UTF-8 text; grokscope records paths "
                                     f"in UTF-8 files: rename it") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = make_parser(_command(argv))
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
        if args.command in COMPUTING:
            from .cpu import configure_cpu

            configure_cpu(args.threads)
        return args.func(args)
    except GrokscopeError as e:
        print(f"grokscope: error: {printable(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grokscope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # an environment error the checks did not turn into a GrokscopeError: still one line
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(printable(f"grokscope: error: {e.strerror or e}{where}"[:400]), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
