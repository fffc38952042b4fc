"""TensorBoard scalars written offline from a run's files, read back with TensorBoard's own reader."""
from __future__ import annotations

import pytest

pytest.importorskip("tensorboard")

import grokscope  # noqa: E402
from grokscope import GrokscopeError  # noqa: E402


def read_scalars(folder) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_metrics_and_analysis_scalars_read_back(tiny_run, tmp_path):
    res = tmp_path / "res"
    grokscope.analyze(tiny_run, only="sparsity,fourier", out=res, progress=False)
    folder = grokscope.to_tensorboard(tiny_run, results=res)
    assert folder == res / "tensorboard"
    got = read_scalars(folder)
    m = tiny_run.metrics
    assert got["loss/val"] == pytest.approx(dict(zip(m.step, m.val_loss)))
    assert got["accuracy/train"] == pytest.approx(dict(zip(m.step, m.train_acc)))
    tables = grokscope.load_results(res)
    every = tables["sparsity"][tables["sparsity"].scope == "all"]
    assert got["sparsity/gini"] == pytest.approx(dict(zip(every.step, every.gini)))
    assert got["fourier/embed_gini"] == pytest.approx(dict(zip(tables["fourier"].step, tables["fourier"].embed_gini)))
    grokscope.to_tensorboard(tiny_run, results=res)  # again: replaces its event file, no duplicate points
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    assert read_scalars(folder)["loss/val"] == got["loss/val"]


def test_cli_and_nothing_to_write(tiny_run, tmp_path, capsys):
    from grokscope.cli import main

    assert main(["tensorboard", str(tiny_run.path), "--logdir", str(tmp_path / "tb")]) == 0
    assert "loss/train" in read_scalars(tmp_path / "tb")
    assert main(["tensorboard", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(GrokscopeError):
        grokscope.to_tensorboard(tmp_path / "missing")
