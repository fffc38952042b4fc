"""The progress bars: tqdm's automatic choice (a widget in a notebook that has ipywidgets, text
elsewhere), without the warning that tqdm prints into a notebook lacking ipywidgets (it falls back to
the text bar there). Pass ``progress=False`` to ``train``/``analyze`` for no bar at all."""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "IProgress not found. Please update jupyter and ipywidgets."
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
