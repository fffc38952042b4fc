"""Will it grok, and when: the forecast of a run (PLACEHOLDER of branch ``forecastui``).

This file implements the forecast contract (``Forecast``, ``LiveForecaster``, ``forecast_run``) from the
validation-loss trend alone, so that the plumbing around it (``grokscope forecast``, the live line in
``grokscope train``, the report's forecast figure, the sweeps' ``--stop-hopeless``) can be built and
tested; the forecaster proper (progress measures, a fitted model, its held-out benchmark) replaces it.

The placeholder's method: fit a straight line to log(validation loss) over the later half of the
evaluations so far (at least ``MIN_POINTS``); the step where that line crosses ln N (chance: N possible
answers) is the predicted grok step, its slope's standard error gives the 80 % interval (slope ± 1.2816
standard errors) and p_grok = P(crossing within the budget) under a normal slope. A validation loss below
chance at the last two evaluations is taken as grokked (p 1, the step where that stretch began).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

Z80 = 1.2816  # the 90 % quantile of the standard normal: an 80 % two-sided interval
MIN_POINTS = 4  # evaluations the trend needs


@dataclass(frozen=True)
class Forecast:
    step: int  # the step the forecast was made at (it uses data up to and including it)
    budget: int  # the run's last step (config.train.steps)
    p_grok: float  # P(val loss falls below chance for good within the budget), in [0, 1]
    grok_step: float | None  # the predicted step (None when p_grok < 0.5)
    lo: float | None  # its 80 % interval
    hi: float | None
    measures: tuple[str, ...]  # the measures the forecast used

    def line(self) -> str:
        """"grok expected near step 7,000, 80 % interval 6,200–8,100 (p 0.93)", "grok unlikely within
        15,800 steps (p 0.07)", or "grokked at 6,900" after the fact."""
        if self.grok_step is not None and self.grok_step <= self.step:
            return f"grokked at {self.grok_step:,.0f}"
        if self.grok_step is None:
            return f"grok unlikely within {max(0, self.budget - self.step):,} steps (p {self.p_grok:.2f})"
        interval = (f", 80 % interval {self.lo:,.0f}–{self.hi:,.0f}" if self.lo is not None and self.hi is not None
                    else "")
        return f"grok expected near step {self.grok_step:,.0f}{interval} (p {self.p_grok:.2f})"


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def trend_forecast(steps, val_loss, level: float, budget: int) -> Forecast | None:
    """The placeholder's forecast from the evaluations so far (see the module docstring); None before
    ``MIN_POINTS`` evaluations."""
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(val_loss, dtype=np.float64)
    keep = np.isfinite(v) & (v > 0)
    s, v = s[keep], v[keep]
    if len(s) < MIN_POINTS:
        return None
    step = int(s[-1])
    if v[-1] < level and v[-2] < level:
        above = np.nonzero(v >= level)[0]
        at = float(s[above[-1] + 1]) if len(above) else float(s[0])
        return Forecast(step, budget, 1.0, at, at, at, ("val_loss",))
    half = max(MIN_POINTS, len(s) // 2)
    x, y = s[-half:], np.log(v[-half:])
    (slope, icept), cov = np.polyfit(x, y, 1, cov="unscaled")
    resid = y - (slope * x + icept)
    se = math.sqrt(max(float(cov[0, 0]) * float(resid @ resid) / (len(x) - 2), 0.0))
    y_now, target, left = slope * step + icept, math.log(level), max(1, budget - step)
    need = (target - y_now) / left  # the slope that reaches chance exactly at the budget (< 0)
    p = _normal_cdf((need - slope) / se) if se > 0 else float(slope <= need)
    p = min(1.0, max(0.0, p))

    def crossing(b: float) -> float | None:
        return step + (target - y_now) / b if b < 0 else None

    if p < 0.5 or crossing(slope) is None:
        return Forecast(step, budget, p, None, None, None, ("val_loss",))
    lo, hi = crossing(slope - Z80 * se), crossing(slope + Z80 * se)
    return Forecast(step, budget, p, crossing(slope), lo, hi, ("val_loss",))


class LiveForecaster:
    """Fed during training (``grokscope train``): a forecast every ``every`` steps from the metrics rows."""

    def __init__(self, config, budget: int):
        from .run import chance_loss

        self.budget = int(budget)
        self.level = chance_loss(config)
        self.every = max(1, config.schedule.eval_every)
        self.steps: list[int] = []
        self.losses: list[float] = []

    def update(self, step: int, metrics: dict, model) -> Forecast | None:
        self.steps.append(int(step))
        self.losses.append(float(metrics["val_loss"]))
        return trend_forecast(self.steps, self.losses, self.level, self.budget)


def forecast_run(run, steps=None) -> pd.DataFrame:
    """What the forecast was at each checkpoint step (or ``steps``), from the data up to that step only:
    step, p_grok, grok_step, lo, hi, measures, actual_grok_step."""
    from .run import Run, chance_loss, grokked_at

    run = run if isinstance(run, Run) else Run(Path(run))
    m = run.metrics
    level, budget = chance_loss(run.config), run.config.train.steps
    rows = []
    for at in (run.steps if steps is None else sorted(int(s) for s in steps)):
        upto = m[m["step"] <= at]
        f = trend_forecast(upto["step"], upto["val_loss"], level, budget)
        rows.append({"step": at, "p_grok": f.p_grok if f else math.nan,
                     "grok_step": f.grok_step if f and f.grok_step is not None else math.nan,
                     "lo": f.lo if f and f.lo is not None else math.nan, "hi": f.hi if f and f.hi is not None else math.nan,
                     "measures": ";".join(f.measures) if f else ""})
    table = pd.DataFrame(rows, columns=["step", "p_grok", "grok_step", "lo", "hi", "measures"])
    actual = grokked_at(m, level)
    table["actual_grok_step"] = float(actual) if actual is not None else math.nan
    return table


__all__ = ["Forecast", "LiveForecaster", "forecast_run", "trend_forecast"]
