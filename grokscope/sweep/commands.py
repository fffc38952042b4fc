"""The sweep's sub-commands: ``grokscope sweep``, ``grokscope sweeps`` and ``grokscope sweep-report``.

Each builds its arguments into one API call (``run_sweep``, ``SWEEP_PRESETS``, ``sweep_report``).
The ``grokscope`` command imports this module only when one of these commands is given
(``cli.LAZY_COMMANDS``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import GrokscopeError
from .folder import SWEEP_FILE, Sweep
from .presets import SWEEP_PRESETS, preset_spec
from .runner import run_sweep
from .spec import ALIASES, SweepSpec, _train_flags, axis_name, parse_values, read_grid_file


def spec_from_args(args) -> SweepSpec | None:
    """The grid from the flags (and --preset / --grid), or None when none is given (continue a sweep)."""
    d: dict[str, Any] = {}
    if args.grid:
        d = read_grid_file(args.grid)
    preset_name = args.preset or d.get("preset")
    scale = args.scale or d.get("scale") or ("small" if preset_name else None)
    if preset_name:
        spec = preset_spec(preset_name, scale)
        base, fixed, grid, analyses = spec.base, dict(spec.fixed), dict(spec.grid), dict(spec.analyses)
    else:
        base, fixed, grid, analyses = {}, {}, {}, {}
        if args.scale:
            raise GrokscopeError("--scale goes with --preset")
    if args.config:
        base = RunConfig.load(args.config).to_dict()
    base = {**base, **d.get("base", {})} if d.get("base") else base
    analyses.update(d.get("analyses") or {})
    for k, v in (d.get("fixed") or {}).items():
        fixed[axis_name(k)] = v
    for k, v in (d.get("grid") or {}).items():
        grid[axis_name(k)] = v
    for flag in [*_train_flags(), "variant"]:
        value = getattr(args, flag.replace("-", "_"), None)
        if value is None:
            continue
        values = parse_values(flag, value)
        target, other = (grid, fixed) if len(values) > 1 else (fixed, grid)
        other.pop(flag, None)
        target[flag] = values if len(values) > 1 else values[0]
    if not (grid or fixed or preset_name or args.config or d):
        return None
    return SweepSpec.make(base, fixed, grid, preset=preset_name, scale=scale if preset_name else None,
                          analyses=analyses)


def cmd_sweep(args) -> int:
    spec = spec_from_args(args)
    if spec is None and not os.path.exists(Path(args.out) / SWEEP_FILE):
        raise GrokscopeError(f"{args.out} holds no sweep yet: give a grid (--ops, --fracs, --seeds, ...), "
                             f"--preset or --grid")
    if args.dry_run:
        sweep_cells = spec.cells() if spec is not None else Sweep(args.out).cells
        for c in sweep_cells:
            print(f"{c.name}  " + " ".join(f"{k}={v}" for k, v in c.coords.items()))
        print(f"grokscope: {len(sweep_cells)} runs")
        return 0
    try:
        run_sweep(spec, args.out, workers=args.workers, batch=args.batch, ray_address=args.ray,
                  progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ngrokscope: interrupted; continue with: grokscope sweep --out {args.out}", file=sys.stderr)
        return 130
    return 0


def cmd_sweeps(args) -> int:
    for name, p in SWEEP_PRESETS.items():
        print(f"{name:<11}  {p['help']}")
        print(f"{'':<11}  --scale small: {p['small_note']}")
    return 0


def cmd_sweep_report(args) -> int:
    from .report import sweep_report

    path = sweep_report(args.sweep, out=args.out)
    print(f"grokscope: report -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("sweep", help="train a grid of runs (the paper's figures: --preset)",
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
    p.add_argument("--variant", "--variants", dest="variant", metavar="LIST", help="Figure 2 (left) variants")
    for flag, (_, _, _, help_) in _train_flags().items():
        names = [f"--{flag}"] + [f"--{k}" for k, v in ALIASES.items() if v == flag]
        p.add_argument(*names, dest=flag.replace("-", "_"), metavar="LIST", default=None,
                       help=f"{help_}; " + ("one value, for every run" if flag == "device" else "a comma list sweeps it"))
    p.set_defaults(func=cmd_sweep)
    q = sub.add_parser("sweeps", help="list the sweep presets (the paper's figures)")
    q.set_defaults(func=cmd_sweeps)
    r = sub.add_parser("sweep-report", help="build the HTML report of a sweep (a grid of runs)",
                       description="Draw one self-contained HTML page from a sweep's results table: steps to 99 % "
                                   "and best validation accuracy against the training fraction, sharpness against "
                                   "validation accuracy, and every run (nothing is recomputed).")
    r.add_argument("sweep", metavar="SWEEP_DIR", help="the sweep folder (made by `grokscope sweep`)")
    r.add_argument("--out", metavar="FILE", help="the HTML file (default <sweep folder>/report.html)")
    r.set_defaults(func=cmd_sweep_report)


__all__ = ["add_parsers", "spec_from_args", "cmd_sweep", "cmd_sweeps", "cmd_sweep_report"]
