"""A run's curves as TensorBoard scalars, written offline from its files (``pip install 'grokscope[tensorboard]'``).

    grokscope.to_tensorboard("checkpoints/div97")    # -> analyses/div97/tensorboard
    # then: tensorboard --logdir analyses

Scalars, each against the training step: ``loss/train``, ``loss/val``, ``accuracy/train``,
``accuracy/val``, ``lr``, ``weight_norm``, ``collapse`` (the softmax-collapse fraction) from the metrics, and from the stored analysis tables the
one-number-per-step measures: ``sparsity/gini`` and ``sparsity/effective_frac`` (all neurons), and every
numeric column of ``fourier`` (``fourier/embed_gini``, ``fourier/restricted_loss``, ...). Nothing is
computed and training is not touched; run it again after ``grokscope analyze`` to refresh (the event
file grokscope wrote there before is replaced).

Live, while training (``grokscope train --tensorboard``, ``LiveScalars``): the metrics' scalars, under
the same tags, as each evaluation measures them, into ``<results folder>/tensorboard/live`` (a run of
its own beside the offline one, so ``tensorboard --logdir analyses`` shows both), and every
``RESTRICTED_EVERY`` steps the restricted loss with the current weights' own key frequencies
(``fourier/restricted_loss_own_keys``: the final checkpoint's keys, which ``fourier/restricted_loss``
uses, are not known while training). A resumed run appends: its writer hides what the interrupted
session wrote past the resume point (TensorBoard's purge step), which training measures again.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import GrokscopeError

if TYPE_CHECKING:
    import pandas as pd

METRIC_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
               "val_acc": "accuracy/val", "lr": "lr", "weight_norm": "weight_norm", "collapse": "collapse"}
EVENT_PREFIX = "events.out.tfevents."
LIVE_FOLDER = "live"  # the live scalars' folder, inside the offline one
LIVE_SUFFIX = ".live"  # their event files' suffix (``to_tensorboard`` replaces only its own, ``.grokscope``)
RESTRICTED_TAG = "fourier/restricted_loss_own_keys"
RESTRICTED_EVERY = 1000  # steps between two live restricted losses, by default
FLUSH_SECS = 10  # the live event file reaches the disk at least this often


def scalars(metrics: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Long table ``tag, step, value``: what ``to_tensorboard`` writes."""
    import pandas as pd  # (here: ``grokscope train --help`` reads this module's constants without it)

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


def summary_writer():
    """torch's SummaryWriter class, or one clear error naming the extra to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GrokscopeError("TensorBoard export needs the tensorboard package: pip install 'grokscope[tensorboard]'") from None
    return SummaryWriter


def to_tensorboard(source, logdir: str | Path | None = None, results: str | Path | None = None) -> Path:
    """Write the scalars of a run (a Run, its directory or its results folder) for TensorBoard into
    ``logdir`` (default ``<results folder>/tensorboard``); returns the folder."""
    SummaryWriter = summary_writer()
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


def live_folder(run_dir: str | Path) -> Path:
    """Where ``grokscope train --tensorboard`` writes by default: ``<results folder>/tensorboard/live``."""
    from .results import default_out_dir

    return default_out_dir(run_dir) / "tensorboard" / LIVE_FOLDER


class LiveScalars:
    """The scalars of one training run, written as training measures them (``fit`` calls ``record`` at
    every evaluation). ``start``: the step training starts from (a resumed run: what the interrupted
    session wrote after it is hidden, TensorBoard's purge step; a new run: everything an earlier run of
    that name left in the folder). ``every``: steps between two restricted losses (the first evaluation
    at or after each multiple of it, and step 0), none where the task has no Fourier basis (``log``
    says so once)."""

    def __init__(self, folder: str | Path, data, start: int, every: int = RESTRICTED_EVERY, log=print):
        from .analyses.fourier import not_cyclic, SIGN

        SummaryWriter = summary_writer()
        self.folder, self.data, self.every, self.last = Path(folder), data, int(every), int(start)
        self.no_restricted = not_cyclic(data) or (None if data.op in SIGN else
                                                   f"{data.op!r} is not a cyclic sum or difference")
        if self.no_restricted:
            log(f"grokscope: --tensorboard: no restricted loss for this run ({self.no_restricted})")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=start + 1 if start > 0 else 0,
                                    flush_secs=FLUSH_SECS, filename_suffix=LIVE_SUFFIX)

    def due(self, step: int) -> bool:
        return self.no_restricted is None and (step == 0 or step // self.every > self.last // self.every)

    def record(self, step: int, row: dict[str, float], trainer) -> None:
        """``row``: the metrics row (column -> value) of ``step``; ``trainer``: its model, for the
        restricted loss when one is due."""
        for col, tag in METRIC_TAGS.items():
            value = row.get(col)
            if value is not None and value == value:  # NaN: not measured (as the offline export drops it)
                self.writer.add_scalar(tag, value, global_step=step)
        if self.due(step):
            from .analyses.fourier import restricted_loss_own_keys

            trainer.eval_mode(True)
            try:
                value = restricted_loss_own_keys(trainer.model, self.data)
            finally:
                trainer.eval_mode(False)
            self.writer.add_scalar(RESTRICTED_TAG, value, global_step=step)
        self.last = step

    def close(self) -> None:
        self.writer.close()


__all__ = ["to_tensorboard", "scalars", "LiveScalars", "live_folder", "summary_writer"]
