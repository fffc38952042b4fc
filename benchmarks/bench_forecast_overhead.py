"""What the live forecast costs training, measured side by side (the machines are shared and noisy).

    python benchmarks/bench_forecast_overhead.py [--preset quick] [--steps 1500] [--repeats 3]

Trains the preset's run (its own schedule: the forecaster is called at its evaluations, every ``every``
steps it asks for) with the live forecast and without it (``grokscope.train(..., forecast=False)``),
alternating in one process, ``--repeats`` times each, one torch thread, no progress bar. Prints each
pair's wall times, the median ratio with/without (the goal: at most 1.05), and the share of the
forecast runs' time the loop itself spent inside ``LiveForecaster.update`` (its own clock, not subject
to the other runs' noise). The forecaster measured is whichever ``grokscope.forecast`` ships.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import grokscope
from grokscope.config import preset
from grokscope.cpu import configure_cpu


def one(cfg, out: Path, forecast: bool) -> tuple[float, float | None]:
    """Wall seconds of one run, and the seconds the loop says it spent forecasting (None without)."""
    lines: list[str] = []
    t = time.perf_counter()
    grokscope.train(cfg.copy(), out=out, progress=False, log=lines.append, forecast=forecast)
    wall = time.perf_counter() - t
    shutil.rmtree(out)
    spent = [float(m.group(1)) for line in lines if (m := re.search(r"\(([\d.]+) s of [\d.]+ s spent forecasting", line))]
    return wall, (spent[0] if spent else (0.0 if forecast else None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    configure_cpu(1)
    cfg = preset(args.preset)
    cfg.train.steps, cfg.train.device, cfg.train.stop_val_acc = args.steps, "cpu", 0.0
    tmp = Path(tempfile.mkdtemp(prefix="bench_forecast_"))
    ratios, shares = [], []
    one(cfg, tmp / "warm", False)  # imports, allocator: not counted
    for i in range(args.repeats):
        order = (True, False) if i % 2 == 0 else (False, True)  # alternate who goes first
        walls, spent = {}, None
        for forecast in order:
            walls[forecast], s = one(cfg, tmp / f"r{i}_{forecast}", forecast)
            spent = s if forecast else spent
        ratios.append(walls[True] / walls[False])
        shares.append(spent / walls[True])
        print(f"pair {i + 1}: with the forecast {walls[True]:.2f} s, without {walls[False]:.2f} s, "
              f"ratio {ratios[-1]:.3f}; inside update: {spent:.3f} s ({100 * shares[-1]:.2f} %)")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.preset}, {args.steps} steps, eval every {cfg.schedule.eval_every}: median ratio with/without the "
          f"live forecast {statistics.median(ratios):.3f} (goal <= 1.05); median time inside "
          f"LiveForecaster.update {100 * statistics.median(shares):.2f} % of the run")


if __name__ == "__main__":
    main()
