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


# --- live, while training (grokscope train --tensorboard) -----------------------------------------------
def test_live_scalars_equal_the_offline_ones_and_a_resume_appends(tmp_path):
    """A tiny run trained with live scalars, interrupted by its budget and resumed: every shared tag holds
    exactly the offline export's points (each step once), and the restricted loss is written at step 0
    and the first evaluation at or after each multiple of ``tensorboard_every``, with fourier's value."""
    from conftest import QUIET, tiny_config

    from grokscope.analyses.fourier import restricted_loss_own_keys
    from grokscope.run import FORECAST_COLUMNS
    from grokscope.tensorboard import RESTRICTED_TAG

    cfg = tiny_config(model={"n_layers": 1}, train={"steps": 20}, schedule={"eval_every": 3})
    live = tmp_path / "live"
    grokscope.train(cfg, out=tmp_path / "run", tensorboard=live, tensorboard_every=7, **QUIET)
    # a point the interrupted session wrote past the resume point, which the resumed session measures again
    from torch.utils.tensorboard import SummaryWriter

    stale = SummaryWriter(str(live), filename_suffix=".live")
    stale.add_scalar("loss/train", 123.0, global_step=21)
    stale.close()
    run = grokscope.train(resume=tmp_path / "run", steps=30, tensorboard=live, tensorboard_every=7, **QUIET)
    got = read_scalars(live)
    offline = read_scalars(grokscope.to_tensorboard(run, logdir=tmp_path / "offline"))
    shared = set(got) & set(offline)
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "weight_norm", "collapse"} <= shared
    for tag in shared:
        assert got[tag] == offline[tag], tag  # the same float32 values at the same steps
    steps = list(run.metrics.step)
    assert sorted(got["loss/train"]) == steps and len(steps) == len(set(steps))
    assert 123.0 not in got["loss/train"].values()
    # restricted loss: step 0, then the first evaluation at or after 7, 14, 21, 28 (evaluations every 3)
    assert sorted(got[RESTRICTED_TAG]) == [0, 9, 15, 21, 30]
    want = restricted_loss_own_keys(run.model_at(30), run.data)
    assert got[RESTRICTED_TAG][30] == pytest.approx(want, rel=1e-6)
    plain = grokscope.train(cfg, out=tmp_path / "plain", steps=30, **QUIET)  # training itself is not touched
    # the forecast columns depend on the budget (20, then 30, against 30), so they are left out here
    drop = ["elapsed_s", *FORECAST_COLUMNS]
    a = plain.metrics.drop(columns=drop).set_index("step")
    b = run.metrics.drop(columns=drop).set_index("step")  # (plus step 20, where the first budget ended)
    assert set(a.index) < set(b.index) and b.loc[a.index].equals(a)


def test_restricted_loss_own_keys_is_fouriers(tiny_run):
    from grokscope.analyses.fourier import fourier, restricted_loss_own_keys

    model = tiny_run.model_at(tiny_run.steps[-1])
    assert restricted_loss_own_keys(model, tiny_run.data) == pytest.approx(
        fourier(model, tiny_run.data, key_freqs="own")["restricted_loss"], rel=1e-12)


def test_live_without_a_fourier_basis_says_so_once(tmp_path):
    from conftest import tiny_config

    from grokscope.tensorboard import RESTRICTED_TAG

    lines = []
    cfg = tiny_config(task={"op": "s5", "p": 5, "frac": 0.3}, train={"steps": 4}, schedule={"eval_every": 2})
    grokscope.train(cfg, out=tmp_path / "run", tensorboard=tmp_path / "live", tensorboard_every=1, progress=False,
                    log=lines.append)
    said = [line for line in lines if "no restricted loss" in line]
    assert len(said) == 1 and "s5" in said[0]
    got = read_scalars(tmp_path / "live")
    assert RESTRICTED_TAG not in got and sorted(got["loss/train"]) == [0, 2, 4]


def test_cli_live_flags_and_a_missing_extra(tmp_path, monkeypatch, capsys):
    import sys

    from grokscope.cli import main
    from grokscope.tensorboard import live_folder

    run_dir = tmp_path / "checkpoints" / "r"
    args = ["train", "--op", "x+y", "--p", "5", "--frac", "0.5", "--steps", "4", "--d-model", "16", "--n-heads", "2",
            "--d-mlp", "16", "--n-layers", "1", "--eval-every", "2", "--no-progress", "--out", str(run_dir)]
    assert main(args + ["--tensorboard"]) == 0
    assert live_folder(run_dir) == tmp_path / "analyses" / "r" / "tensorboard" / "live"
    assert sorted(read_scalars(live_folder(run_dir))["loss/val"]) == list(grokscope.load_run(run_dir).metrics.step)
    capsys.readouterr()
    assert main(args[:-1] + [str(tmp_path / "r2"), "--tensorboard-every", "5"]) == 2
    assert capsys.readouterr().err.strip() == "grokscope: error: --tensorboard-every needs --tensorboard"
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the extra were not installed
    assert main(args[:-1] + [str(tmp_path / "r3"), "--tensorboard"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["grokscope: error: TensorBoard export needs the tensorboard package: pip install 'grokscope[tensorboard]'"]
    assert not (tmp_path / "r3").exists()  # nothing written
