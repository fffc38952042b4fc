"""A run's curves as TensorBoard scalars, written offline from its files (``pip install 'grokscope[tensorboard]'``).

    grokscope.to_tensorboard("checkpoints/div97")    # -> analyses/div97/tensorboard
    # then: tensorboard --logdir analyses

Scalars, each against the training step: ``loss/train``, ``loss/val``, ``accuracy/train``,
``accuracy/val``, ``lr``, ``weight_norm`` from the metrics, and from the stored analysis tables the
one-number-per-step measures: ``sparsity/gini`` and ``sparsity/effective_frac`` (all neurons), and every
numeric column of ``fourier`` (``fourier/embed_gini``, ``fourier/restricted_loss``, ...). Nothing is
computed and training is not touched; run it again after ``grokscope analyze`` to refresh (the event
file grokscope wrote there before is replaced).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import GrokscopeError

METRIC_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
               "val_acc": "accuracy/val", "lr": "lr", "weight_norm": "weight_norm"}
EVENT_PREFIX = "events.out.tfevents."


def scalars(metrics: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Long table ``tag, step, value``: what ``to_tensorboard`` writes."""
    parts = []
    for col, tag in METRIC_TAGS.items():
        if col in metrics.columns:
            parts.append(pd.DataFrame({"tag": tag, "step": metrics["step"], "value": metrics[col]}))
    sparsity = tables.get("sparsity")
    if sparsity is not None and "scope" in sparsity.columns:
        every = sparsity[sparsity["scope"] == "all"]
        for col in ("gini", "effective_frac"):
            if col in every.columns:
                parts.append(pd.DataFrame({"tag": f"sparsity/{col}", "step": every["step"], "value": every[col]}))
    fourier = tables.get("fourier")
    if fourier is not None:
        for col in fourier.columns:
            if col != "step" and pd.api.types.is_numeric_dtype(fourier[col]) and not pd.api.types.is_bool_dtype(fourier[col]):
                parts.append(pd.DataFrame({"tag": f"fourier/{col}", "step": fourier["step"], "value": fourier[col]}))
    if not parts:
        return pd.DataFrame(columns=["tag", "step", "value"])
    out = pd.concat(parts, ignore_index=True).dropna()
    return out.astype({"step": "int64", "value": "float64"}).reset_index(drop=True)


def to_tensorboard(source, logdir: str | Path | None = None, results: str | Path | None = None) -> Path:
    """Write the scalars of a run (a Run, its directory or its results folder) for TensorBoard into
    ``logdir`` (default ``<results folder>/tensorboard``); returns the folder."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GrokscopeError("TensorBoard export needs the tensorboard package: pip install 'grokscope[tensorboard]'") from None
    from .figures.inputs import load_report_run

    r = load_report_run(source, results)
    table = scalars(r.tables.metrics, r.tables.results)
    if table.empty:
        raise GrokscopeError(f"nothing to write: {r.tables.name} has no metrics and no analysis tables")
    folder = Path(logdir) if logdir is not None else Path(r.results_path) / "tensorboard"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{EVENT_PREFIX}*.grokscope"):  # what this function wrote there before
        old.unlink()
    writer = SummaryWriter(log_dir=str(folder), filename_suffix=".grokscope")
    try:
        for row in table.itertuples(index=False):
            writer.add_scalar(row.tag, row.value, global_step=int(row.step))
    finally:
        writer.close()
    return folder


__all__ = ["to_tensorboard", "scalars"]
