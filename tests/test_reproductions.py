"""The reproductions: the presets that hold the papers' settings (Grokfast's cases, Nanda et al.'s fractions,
Prieto et al.'s transformer), the sweep's cases, the validation-loss steps, and the one table the docs and
``grokscope reproductions`` show."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from grokscope.errors import GrokscopeError
from grokscope.sweep.folder import val_loss_steps
from grokscope.sweep.presets import SWEEP_PRESETS, preset_spec
from grokscope.sweep.spec import SweepSpec

ROOT = Path(__file__).resolve().parents[1]


def test_cases_set_axes_together_and_cross_the_grid():
    spec = SweepSpec.make(fixed={"p": 11, "steps": 5}, grid={"seed": [0, 1]},
                          cases={"plain": {"lr": 1e-3}, "fast": {"lr": 3e-3, "weight-decay": 0.5}})
    cells = spec.cells()
    assert [c.name for c in cells] == ["plain_s0", "plain_s1", "fast_s0", "fast_s1"]
    assert spec.axes == ["case", "seed"] and cells[2].coords == {"case": "fast", "seed": 0}
    assert (cells[2].config.train.lr, cells[2].config.train.weight_decay) == (3e-3, 0.5)
    assert (cells[1].config.train.lr, cells[1].config.train.weight_decay) == (1e-3, 1.0)
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).cases == spec.cases
    with pytest.raises(GrokscopeError, match="case fast: lr is also fixed or swept"):
        SweepSpec.make(fixed={"lr": 1e-3}, cases={"fast": {"lr": 3e-3}})
    with pytest.raises(GrokscopeError, match="unknown sweep axis"):
        SweepSpec.make(cases={"fast": {"learning-rate": 3e-3}})


def test_grokfast_preset_is_their_setting():
    """ironjr/grokfast main.py and README: x*y mod 97 at 50 %, 2 layers x 128 x 4 heads, GELU, batch 512, lr 1e-3,
    beta2 0.98, warm-up 10; baseline wd 0; MA window 100 lambda 5 wd 0.01; EMA alpha 0.98 lambda 2 wd 0.005."""
    cells = {c.name: c.config for c in preset_spec("grokfast", "paper").cells()}
    assert list(cells) == ["baseline", "ma", "ema"]
    for cfg in cells.values():
        t, m, tr = cfg.task, cfg.model, cfg.train
        assert (t.op, t.p, t.frac) == ("x*y", 97, 0.5)
        assert (m.n_layers, m.d_model, m.n_heads, m.act_fn) == (2, 128, 4, "gelu")
        assert (tr.batch_size, tr.lr, tr.beta1, tr.beta2, tr.warmup, tr.stop_val_acc) == (512, 1e-3, 0.9, 0.98, 10, 0.95)
        assert tr.wd_mode == "l2"  # their torch.optim.Adam(weight_decay=...): an L2 term, not AdamW's
    assert cells["baseline"].train.grokfast_lambda == 0 and cells["baseline"].train.weight_decay == 0
    ma, ema = cells["ma"].train, cells["ema"].train
    assert (ma.grokfast_filter, ma.grokfast_window, ma.grokfast_lambda, ma.weight_decay) == ("ma", 100, 5.0, 0.01)
    assert (ema.grokfast_filter, ema.grokfast_alpha, ema.grokfast_lambda, ema.weight_decay) == ("ema", 0.98, 2.0, 0.005)
    assert "L2" in SWEEP_PRESETS["grokfast"]["help"]


def test_nanda_fraction_sweep_preset():
    spec = preset_spec("nanda-fractions", "paper")
    assert spec.grid == {"frac": [0.25, 0.28, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]} and spec.fixed == {"seed": 0}
    assert preset_spec("nanda-fractions", "small").grid == spec.grid  # all ten fit the CPU at the small scale
    cfg = spec.cells()[0].config
    assert (cfg.task.op, cfg.task.p, cfg.model.n_layers, cfg.model.norm, cfg.train.full_batch) == ("x+y", 113, 1, "none", True)
    assert cfg.train.stop_val_acc == 0  # loss below 0.1 comes after 99 % accuracy: the whole budget


def test_stability_preset_says_where_stablemax_was_shown():
    p = SWEEP_PRESETS["stability"]
    assert "MLP" in p["help"] and "hidden [200, 200]" in p["help"] and "float64" in p["help"]
    cfg = preset_spec("stability", "paper").cells()[0].config
    assert (cfg.task.p, cfg.task.frac, cfg.model.d_mlp, cfg.train.beta2, cfg.train.steps) == (113, 0.4, 2048, 0.99, 5000)
    for scale in ("small", "paper"):  # their encoder has no positions; their Adam's epsilon is 1e-25
        cfg = preset_spec("stability", scale).cells()[0].config
        assert (cfg.model.pos_embed, cfg.train.adam_eps) == ("none", 1e-25)
    assert preset_spec("stability", "paper").grid["weight-decay"] == [0.0, 1.5]


def test_val_loss_steps_on_a_planted_curve():
    m = pd.DataFrame({"step": [0, 10, 20, 30, 40, 50], "val_loss": [3.5, 3.6, 3.3, 0.9, 0.2, 0.05]})
    assert val_loss_steps(m, 31) == {"steps_to_val_loss_lnN": 20, "steps_to_val_loss_1": 30, "steps_to_val_loss_0.1": 50}
    assert math.log(31) == pytest.approx(3.434, abs=1e-3)
    assert val_loss_steps(m.iloc[:3], 31)["steps_to_val_loss_1"] is None
    assert val_loss_steps(pd.DataFrame(columns=["step", "val_loss"]), 31) == dict.fromkeys(
        ["steps_to_val_loss_lnN", "steps_to_val_loss_1", "steps_to_val_loss_0.1"])


def test_val_loss_steps_figure_draws_the_medians_per_fraction():
    from grokscope.figures.sweep import SweepTable, _has_loss_steps, fig_val_loss_steps_vs_frac

    t = pd.DataFrame({"frac": [0.3, 0.3, 0.5], "seed": [0, 1, 0], "status": "done",
                      "steps_to_val_loss_lnN": [100, 300, 50], "steps_to_val_loss_1": [400, None, 80],
                      "steps_to_val_loss_0.1": [None, None, 120]})
    assert _has_loss_steps(SweepTable(t, ["frac", "seed"]))
    assert not _has_loss_steps(SweepTable(t.drop(columns=list(t.columns[4:]) + ["steps_to_val_loss_lnN"]), ["frac"]))
    fig = fig_val_loss_steps_vs_frac(t)
    lines = [tr for tr in fig.data if tr.mode == "lines+markers"]
    assert [list(tr.y) for tr in lines][0] == [200.0, 50.0]
    assert list(lines[1].y) == [400.0, 80.0] and math.isnan(lines[2].y[0]) and lines[2].y[1] == 120.0


def test_the_docs_table_is_the_modules_and_the_command_prints_it(capsys):
    """One source: docs/reproductions.md holds exactly ``reproductions.markdown()`` between its markers, and
    ``grokscope reproductions`` prints every claim."""
    from grokscope import reproductions
    from grokscope.cli import main

    page = (ROOT / "docs" / "reproductions.md").read_text()
    table = page.split("<!-- reproductions:begin -->\n")[1].split("<!-- reproductions:end -->")[0]
    assert table == reproductions.markdown()
    assert main(["reproductions"]) == 0
    out = capsys.readouterr().out
    assert all(r.claim in out for r in reproductions.REPRODUCTIONS)
    assert main(["reproductions", "--markdown"]) == 0 and capsys.readouterr().out == reproductions.markdown()
    for r in reproductions.REPRODUCTIONS:  # every row filled in: no placeholder left
        assert all(getattr(r, c).strip() and not getattr(r, c).isupper() for c in reproductions.COLUMNS), r


def test_grokfast_small_is_their_setting_with_a_shorter_budget():
    small, paper = preset_spec("grokfast", "small"), preset_spec("grokfast", "paper")
    assert small.cases == paper.cases and [c.name for c in small.cells()] == ["baseline", "ma", "ema"]
    for s, p in zip(small.cells(), paper.cells()):
        a, b = s.config.to_dict(), p.config.to_dict()
        assert a["task"] == b["task"] and a["model"] == b["model"]
        assert {k: v for k, v in a["train"].items() if k != "steps"} == {k: v for k, v in b["train"].items() if k != "steps"}
        assert s.config.train.steps < p.config.train.steps
