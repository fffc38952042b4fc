"""The forecast against what happened: p_grok and the predicted grok step (with its 80 % interval) at the
steps they were made, and the step where validation loss really fell below chance for good.

The forecasts are the live ones ``grokscope train`` wrote into the metrics (``run.FORECAST_COLUMNS``), or,
for a run trained without them, a stored ``forecast`` table (step, p_grok, grok_step, lo, hi). The
actual grok step is ``forecast.below_chance_since`` of the metrics at chance level (``RunTables.chance``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..run import FORECAST_COLUMNS
from .common import RunTables, VAL, add_phase_bands, curve, figure, finish, step_x, time_axes

FORECAST = "#8e5cc9"
TABLE_COLUMNS = ["step", "p_grok", "grok_step", "lo", "hi"]  # a forecast table's (grokscope.forecast.forecast_run)


def forecast_rows(t: RunTables) -> pd.DataFrame | None:
    """The run's forecasts (step, p_grok, grok_step, lo, hi), one row per step a forecast was made at: the
    metrics' live ones, else a stored ``forecast`` table's; None when it has neither."""
    m = t.metrics
    if m is not None and len(m) and "forecast_p" in m.columns and m["forecast_p"].notna().any():
        rows = m.loc[m["forecast_p"].notna(), ["step", *FORECAST_COLUMNS]]
        return rows.set_axis(TABLE_COLUMNS, axis=1).reset_index(drop=True)
    table = t.results.get("forecast")
    if table is not None and set(TABLE_COLUMNS) <= set(table.columns) and table["p_grok"].notna().any():
        return table.loc[table["p_grok"].notna(), TABLE_COLUMNS].sort_values("step").reset_index(drop=True)
    return None


def actual_grok_step(t: RunTables) -> int | None:
    """Where validation loss fell below chance for good after memorisation (``forecast.below_chance_since``,
    the same step as ``forecast_run``'s ``actual_grok_step``), or None (never, or unknown)."""
    if t.chance is not None and t.has("metrics"):
        from ..forecast import below_chance_since

        return below_chance_since(t.metrics, t.chance)
    table = t.results.get("forecast")
    if table is not None and "actual_grok_step" in table.columns and table["actual_grok_step"].notna().any():
        return int(table["actual_grok_step"].dropna().iloc[0])
    return None


def forecast_caption(t: RunTables) -> str:
    """How early the forecast saw it: the first step with p_grok ≥ 0.5 and the first whose interval held the
    actual grok step; or, for a run that did not grok, the last forecast's p_grok."""
    rows, actual = forecast_rows(t), actual_grok_step(t)
    if rows is None:
        return ""
    if actual is None:
        return (f"Validation loss never fell below chance for good in these steps; the last forecast (step "
                f"{int(rows['step'].iloc[-1]):,}) gave p_grok {rows['p_grok'].iloc[-1]:.2f}.")
    sure = rows.loc[rows["p_grok"] >= 0.5, "step"]
    held = rows.loc[(rows["lo"] <= actual) & (rows["hi"] >= actual) & (rows["step"] < actual), "step"]
    text = f"Validation loss fell below chance for good at step {actual:,} (the dashed line)"
    if len(sure) and sure.iloc[0] < actual:
        text += f"; the forecast first gave p_grok ≥ 0.5 at step {int(sure.iloc[0]):,}, {actual - int(sure.iloc[0]):,} steps ahead"
    else:
        text += "; the forecast gave p_grok ≥ 0.5 only once it had happened"
    if len(held):
        text += f", and its 80 % interval first held the actual step at step {int(held.iloc[0]):,}"
    return text + "."


@figure("forecast", section="forecast", title="Will it grok, and when: the forecast against what happened",
        caption=forecast_caption, applies=lambda t: forecast_rows(t) is not None,
        inputs=lambda t: dict(forecast=forecast_rows(t), actual=actual_grok_step(t), phases=t.phases,
                              last_step=t.last_step))
def fig_forecast(forecast: pd.DataFrame, actual: int | None = None, phases: pd.DataFrame | None = None,
                 last_step: float | None = None, log_x: bool = True) -> go.Figure:
    """The forecast made at each step (x): p_grok (top) and the predicted grok step with its 80 % interval
    (bottom); ``actual``, the step the run really grokked, as a dashed line in both."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=["P(grokking within the budget)", "predicted grok step, 80 % interval"])
    steps = forecast["step"].to_numpy()
    fig.add_trace(curve(steps, forecast["p_grok"], "p_grok", FORECAST, mode="lines+markers", log_x=log_x), row=1, col=1)
    has_step = forecast["grok_step"].notna().to_numpy()
    lo, hi = forecast["lo"].to_numpy(dtype=float), forecast["hi"].to_numpy(dtype=float)
    band = has_step & np.isfinite(lo) & np.isfinite(hi)
    fig.add_trace(go.Scatter(x=step_x(steps[band], log_x), y=hi[band], name="80 % interval (high)", mode="lines",
                             line=dict(width=0), showlegend=False, hoverinfo="skip"), row=2, col=1)
    fig.add_trace(go.Scatter(x=step_x(steps[band], log_x), y=lo[band], name="80 % interval", mode="lines",
                             line=dict(width=0), fill="tonexty", fillcolor="rgba(142,92,201,0.22)"), row=2, col=1)
    fig.add_trace(curve(steps[has_step], forecast["grok_step"].to_numpy(dtype=float)[has_step], "predicted grok step",
                        FORECAST, mode="lines+markers", log_x=log_x), row=2, col=1)
    if actual is not None:
        x = step_x([actual], log_x)[0]
        for row in (1, 2):
            fig.add_vline(x=x, line=dict(color=VAL, dash="dash", width=1.5), row=row, col=1)
        xs = step_x([steps.min(), steps.max()], log_x)
        fig.add_trace(go.Scatter(x=xs, y=[actual, actual], name=f"actual grok step ({actual:,})", mode="lines",
                                 line=dict(color=VAL, dash="dash", width=1.5)), row=2, col=1)
    fig.update_yaxes(title_text="p_grok", range=[-0.02, 1.04], tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="step", row=2, col=1)
    add_phase_bands(fig, phases, last_step, log_x, n_rows=2)
    return finish(time_axes(fig, log_x, 2, x_title="training step the forecast was made at"), 2)


__all__ = ["fig_forecast", "forecast_rows", "actual_grok_step", "forecast_caption"]
