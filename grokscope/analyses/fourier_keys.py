"""``fourier_keys``: the key Fourier frequencies of every analysed checkpoint as a long table.

The ``fourier`` table holds each checkpoint's key frequencies in one list-valued cell (``key_freqs``,
"7,11,5", largest first); this is the same information with one row per frequency, ready for pandas
(``pivot``, ``groupby("freq")``): ``step, rank, freq`` (rank 0 = the largest). It is derived from the
stored ``fourier`` table, so it follows whatever ``fourier`` chose (its params, its selection rule).
"""
from __future__ import annotations

import pandas as pd

from .base import register
from .fourier import not_cyclic


def key_freq_list(value) -> list[int]:
    """The frequencies of one ``key_freqs`` cell: "7,11,5", a list, or empty/NaN."""
    if isinstance(value, (list, tuple)):
        return [int(k) for k in value]
    if isinstance(value, (int, float)) and value == value:  # one frequency, read back from CSV as a number
        return [int(value)]
    if isinstance(value, str):
        return [int(float(k)) for k in value.split(",") if k.strip()]
    return []


@register("fourier_keys", kind="run", version=1, needs=("fourier",), applies=not_cyclic,
          summary="the key Fourier frequencies of each checkpoint as a long table (step, rank, freq)")
def fourier_keys(run, results) -> pd.DataFrame:
    table = results.get("fourier")
    rows = []
    if table is not None and "key_freqs" in table.columns:
        for step, value in zip(table["step"], table["key_freqs"]):
            rows += [(int(step), rank, k) for rank, k in enumerate(key_freq_list(value))]
    return pd.DataFrame(rows, columns=["step", "rank", "freq"]).astype("int64")
