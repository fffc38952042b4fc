"""The paper's figures as sweeps: ``grokscope sweep --preset NAME --scale small|paper``.

Each preset has a ``paper`` grid (spec section 2: the figure's operation, fractions, seeds, budget)
and a ``small`` grid with the same shape that finishes on a 2-core CPU in about half an hour. What
``small`` shrinks, everywhere: the model (d_model 64, d_mlp 256, 4 heads, 2 layers, as the ``quick``
preset), the modulus (p = 23, 529 equations instead of 9,409), S5 (14,400 equations) replaced by S4
(576), the budget (a few thousand steps instead of 1e5 to 5e5), and the numbers of fractions and
seeds; ``grokfast`` keeps Lee et al.'s setting and cuts only the budget. Each preset's ``small_note`` says
exactly what it keeps and shrinks.

Values are plain JSON: ``base`` is a partial RunConfig, ``fixed`` and ``grid`` use the axis names of
``grokscope train`` flags (``op``, ``frac``, ``seed``, ``variant``, ``outliers``, ...), ``analyses``
are computed at each run's last checkpoint.
"""
from __future__ import annotations

import json

from ..config import PRESETS, VARIANTS
from ..errors import GrokscopeError, did_you_mean
from .spec import SweepSpec

SMALL_MODEL = {"d_model": 64, "n_heads": 4, "d_mlp": 256}
SMALL_SCHEDULE = {"eval_every": 50, "eval_log_points": 10, "ckpt_every": 1000, "ckpt_log_points": 10,
                  "state_every": 1000}
PAPER_SCHEDULE = {"eval_every": 200, "eval_log_points": 20, "ckpt_every": 10000, "ckpt_log_points": 20,
                  "state_every": 10000}
MODULAR = ["x+y", "x-y", "x/y", "x/y if y odd else x-y", "x^2+y^2", "x^2+xy+y^2", "x^2+xy+y^2+x", "x^3+xy", "x^3+xy^2+y"]
# Figure 7's three measures (analyses.flatness.sharpness_fig7) at the registered defaults: eps 1e-3, 10-d subspace
FIG7_SHARPNESS = {"sharpness_fig7": {}}
TINY_MODEL = {"d_model": 32, "n_heads": 4, "d_mlp": 128}


def _small(steps: int, **task) -> dict:
    return {"task": {"p": 23, **task}, "model": dict(SMALL_MODEL), "train": {"steps": steps},
            "schedule": dict(SMALL_SCHEDULE)}


def _paper(steps: int, **task) -> dict:
    return {"task": {"p": 97, **task}, "train": {"steps": steps}, "schedule": dict(PAPER_SCHEDULE)}


# Grokfast (Lee et al. 2024): their README's two commands and the baseline, as cases (a method and its settings);
# their optimiser is torch.optim.Adam, whose weight_decay is an L2 term in the gradient (--wd-mode l2)
GROKFAST_CASES = {
    "baseline": {"weight-decay": 0.0, "grokfast-lambda": 0.0},
    "ma": {"weight-decay": 0.01, "grokfast-filter": "ma", "grokfast-window": 100, "grokfast-lambda": 5.0},
    "ema": {"weight-decay": 0.005, "grokfast-filter": "ema", "grokfast-alpha": 0.98, "grokfast-lambda": 2.0},
}
# their main.py: x*y mod 97 at 50 %, 2 layers x 128 x 4 heads, GELU, batch 512, Adam lr 1e-3, beta (0.9, 0.98),
# warm-up 10 updates; validation accuracy on the whole validation set every epoch (10 updates at p = 97)
GROKFAST_BASE = {"task": {"op": "x*y", "p": 97, "frac": 0.5}, "model": {"act_fn": "gelu"},
                 "train": {"batch_size": 512, "wd_mode": "l2", "stop_val_acc": 0.95},
                 "schedule": {"eval_every": 10, "eval_log_points": 0, "ckpt_every": 1000, "ckpt_log_points": 10,
                              "state_every": 1000}}
NANDA_BASE = PRESETS["nanda"]
NANDA_FRACTIONS = [0.25, 0.28, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]  # their training-fraction sweep

# stability: one task, the loss in float32 (where softmax collapse happens), until 99 % validation; as in
# Prieto et al.'s transformer, no positional embedding and Adam's epsilon 1e-25
STABILITY_SMALL = {"task": {"op": "x+y", "p": 31, "frac": 0.4},
                   "model": {"n_layers": 1, "d_model": 32, "n_heads": 4, "d_mlp": 128, "norm": "none",
                             "pos_embed": "none"},
                   "train": {"steps": 3000, "lr": 5e-3, "full_batch": True, "stop_val_acc": 0.99, "adam_eps": 1e-25},
                   "schedule": {"eval_every": 100, "eval_log_points": 5, "ckpt_every": 1000, "ckpt_log_points": 0,
                                "state_every": 1000}}
# Prieto et al.'s transformer runs (their repository's Figure 6 commands): x+y mod 113 at 40 %, one
# nn.TransformerEncoderLayer (d_model 128, 4 heads, feed-forward 2048, ReLU, dropout 0.1, post-LN, no positions,
# no mask, the answer read at y of the two tokens x, y), full batch, AdamW lr 1e-3, beta2 0.99, eps 1e-25, float32
# loss, 5000 steps; weight decay 0 or 1.5, ⊥Grad. Taken here: all of it but the block (docs/reproductions.md lists
# what remains: pre-LN, causal attention over x, op, y, "=", dropout on the two residual outputs only).
STABILITY_PAPER = {"task": {"op": "x+y", "p": 113, "frac": 0.4},
                   "model": {"n_layers": 1, "d_model": 128, "n_heads": 4, "d_mlp": 2048, "norm": "LN",
                             "pos_embed": "none"},
                   "train": {"steps": 5000, "full_batch": True, "beta2": 0.99, "adam_eps": 1e-25,
                             "resid_dropout": 0.1, "stop_val_acc": 0.99},
                   "schedule": {"eval_every": 100, "ckpt_every": 1000, "state_every": 1000}}

SWEEP_PRESETS: dict[str, dict] = {
    "fig1-center": {
        "help": "Figure 1 (center): steps until validation accuracy reaches 99 % vs training fraction, S5 product, "
                "median of 7 seeds, budget 5e5; each run ends when it reaches 99 % (all the figure needs)",
        "small_note": "S4 product instead of S5, 5 fractions 0.55-0.9 x 3 seeds, budget 12000 steps, small model",
        "paper": {"base": {**_paper(500_000), "schedule": {**PAPER_SCHEDULE, "eval_every": 500},
                           "train": {"steps": 500_000, "stop_val_acc": 0.99}},
                  "fixed": {"op": "s5"},
                  "grid": {"frac": [0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8], "seed": list(range(7))}},
        "small": {"base": {**_small(12000), "train": {"steps": 12000, "stop_val_acc": 0.99}}, "fixed": {"op": "s4"},
                  "grid": {"frac": [0.55, 0.6, 0.7, 0.8, 0.9], "seed": [0, 1, 2]}},
    },
    "fig2-left": {
        "help": "Figure 2 (left): best validation accuracy vs training fraction for the 9 optimiser variants, "
                "S5 product, 3 seeds, budget 1e5",
        "small_note": "S4 product instead of S5, 3 fractions 0.7-0.9 x 1 seed, budget 8000 steps, small model",
        "paper": {"base": _paper(100_000), "fixed": {"op": "s5"},
                  "grid": {"variant": list(VARIANTS), "frac": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                           "seed": [0, 1, 2]}},
        "small": {"base": _small(8000), "fixed": {"op": "s4", "seed": 0},
                  "grid": {"variant": list(VARIANTS), "frac": [0.7, 0.8, 0.9]}},
    },
    "fig2-right": {
        "help": "Figure 2 (right): best validation accuracy within 1e5 steps for 12 operations x 9 fractions, "
                "mean of 3 seeds",
        "small_note": "p = 23 and S4 instead of 97 and S5, 4 fractions x 1 seed, budget 6000 steps, small model",
        "paper": {"base": _paper(100_000),
                  "grid": {"op": MODULAR + ["s5", "s5conj", "s5aba"],
                           "frac": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], "seed": [0, 1, 2]}},
        "small": {"base": _small(6000), "fixed": {"seed": 0},
                  "grid": {"op": MODULAR + ["s4", "s4conj", "s4aba"], "frac": [0.3, 0.5, 0.7, 0.9]}},
    },
    "fig6": {
        "help": "Figure 6: data efficiency with k outlier equations (k = 0, 10, 100, 1000, 2000, 3000), "
                "x/y mod 97, 3 seeds, budget 1e5",
        "small_note": "x+y mod 23 (x/y groks too late at this size), k scaled to the smaller training set "
                      "(0, 2, 10, 40, 80), 3 fractions x 2 seeds, budget 5000 steps, small model",
        "paper": {"base": _paper(100_000), "fixed": {"op": "x/y"},
                  "grid": {"outliers": [0, 10, 100, 1000, 2000, 3000], "frac": [0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                           "seed": [0, 1, 2]}},
        "small": {"base": _small(5000), "fixed": {"op": "x+y"},
                  "grid": {"outliers": [0, 2, 10, 40, 80], "frac": [0.5, 0.7, 0.9], "seed": [0, 1]}},
    },
    "fig7": {
        "help": "Figure 7 by the authors' design (their released scripts/compute_sharpness.py): one configuration "
                "(S5, 70 % of the data, 2 layers, 4 heads, width 128, no dropout, warm-up 10) x 20 seeds, one "
                "checkpoint per seed at the budget's last step; per seed three sharpness measures (sharpness_fig7: "
                "the maximum in a random 10-d subspace, the default; the full-space maximum; the released code's "
                "computation, a minimum) against validation accuracy, correlated across seeds (paper: Spearman -0.80)",
        "small_note": "the quick preset's task and model (x+y mod 31 at 40 %, one layer, d_model 32, no LayerNorm, "
                      "full batch, lr 5e-3, weight decay 2: S4 and S5 do not grok on a CPU in minutes), 20 seeds, "
                      "the fixed step 2500 (a quarter of the seeds have grokked there); the same three measures",
        "paper": {"base": _paper(20_000), "fixed": {"op": "s5", "frac": 0.7},
                  "grid": {"seed": list(range(20))}, "analyses": FIG7_SHARPNESS},
        "small": {"base": {"task": {"op": "x+y", "p": 31, "frac": 0.4},
                           "model": {"n_layers": 1, **TINY_MODEL, "norm": "none"},
                           "train": {"steps": 2500, "lr": 5e-3, "weight_decay": 2.0, "full_batch": True},
                           "schedule": {"eval_every": 50, "eval_log_points": 5, "ckpt_every": 250,
                                        "ckpt_log_points": 0, "state_every": 2500}},
                  "grid": {"seed": list(range(20))}, "analyses": FIG7_SHARPNESS},
    },
    "stability": {
        "help": "Prieto et al. 2025 on a transformer: weight decay 0 or 1.5 and ⊥Grad (--orthograd) off or on, "
                "float32 loss, their transformer setting (x+y mod 113 at 40 %, one layer, d_model 128, feed-forward "
                "2048, dropout 0.1, no positions, full batch, beta2 0.99, Adam epsilon 1e-25, 5000 steps); softmax vs StableMax is our extension: "
                "their StableMax-without-weight-decay result is on an MLP (x+y mod 113 at 40 %, one-hot inputs "
                "concatenated, hidden [200, 200], ReLU, no bias, AdamW lr 0.01, beta (0.9, 0.999), eps 1e-25, "
                "80k full-batch steps, StableMax in float64), which grokscope's transformer does not reproduce",
        "small_note": "the quick preset's task and model (x+y mod 31 at 40 %, one layer, d_model 32, no LayerNorm, "
                      "full batch, lr 5e-3, weight decay 0 or 2) with their no positions and Adam epsilon 1e-25, "
                      "budget 3000 steps: 8 runs, a few minutes",
        "paper": {"base": STABILITY_PAPER, "fixed": {"loss-dtype": "float32"},
                  "grid": {"weight-decay": [0.0, 1.5], "softmax": ["softmax", "stablemax"], "orthograd": [False, True]}},
        "small": {"base": STABILITY_SMALL, "fixed": {"loss-dtype": "float32"},
                  "grid": {"weight-decay": [0.0, 2.0], "softmax": ["softmax", "stablemax"], "orthograd": [False, True]}},
    },
    "grokfast": {
        "help": "Lee et al. 2024 (Grokfast), their algorithmic-data setting (ironjr/grokfast main.py): x*y mod 97, "
                "50 %, 2 layers, width 128, 4 heads, GELU, batch 512, Adam lr 1e-3, beta (0.9, 0.98), warm-up 10, "
                "weight decay as Adam's L2 term (--wd-mode l2); baseline (no weight decay), Grokfast-MA (window 100, "
                "lambda 5, weight decay 0.01) and Grokfast-EMA (alpha 0.98, lambda 2, weight decay 0.005); steps to "
                "95 % validation accuracy (theirs: 39890, 790, 910). What remains of theirs: their block is "
                "LayerNorm(x) + attention(LayerNorm(x)) (the residual stream itself normalised), PyTorch's default "
                "init (embeddings N(0, 1)), epochs of shuffled batches (the tenth of 48 rows), x*y with x = 0 kept",
        "small_note": "their setting, the budget cut to 2000 steps: the MA and EMA runs end at 95 % (about 800-900 "
                      "steps), the baseline (theirs: 39890 steps) stops at 2000 without a step to 95 %",
        "paper": {"base": {**GROKFAST_BASE, "train": {**GROKFAST_BASE["train"], "steps": 100_000},
                           "schedule": {**GROKFAST_BASE["schedule"], "ckpt_every": 10000, "state_every": 10000}},
                  "fixed": {"seed": 0}, "cases": GROKFAST_CASES},
        "small": {"base": {**GROKFAST_BASE, "train": {**GROKFAST_BASE["train"], "steps": 2000}},
                  "fixed": {"seed": 0}, "cases": GROKFAST_CASES},
    },
    "nanda-fractions": {
        "help": "Nanda et al. 2023, the training-fraction sweep on their setting (the nanda preset: x+y mod 113, one "
                "layer, no LayerNorm, full batch, AdamW lr 1e-3, wd 1): fractions 0.25-0.95, one seed each; per run "
                "the first steps at which validation loss falls below ln 113, below 1 and below 0.1",
        "small_note": "the quick preset's task and model (x+y mod 31, one layer, d_model 32, lr 5e-3, wd 2, full "
                      "batch), the ten fractions, budget 3000 steps",
        "paper": {"base": {**NANDA_BASE, "train": {**NANDA_BASE["train"], "stop_val_acc": 0.0, "stop_margin": 0.0}},
                  "fixed": {"seed": 0},
                  "grid": {"frac": NANDA_FRACTIONS}},
        "small": {"base": {"task": {"op": "x+y", "p": 31},
                           "model": {"n_layers": 1, "d_model": 32, "n_heads": 4, "d_mlp": 128, "norm": "none"},
                           "train": {"steps": 3000, "lr": 5e-3, "weight_decay": 2.0, "full_batch": True},
                           "schedule": {"eval_every": 25, "eval_log_points": 10, "ckpt_every": 1000,
                                        "ckpt_log_points": 0, "state_every": 3000}},
                  "fixed": {"seed": 0}, "grid": {"frac": NANDA_FRACTIONS}},
    },
}

# preset -> the paper figure its sweep reproduces (plain text, for the sweep report's summary)
SWEEP_PRESET_TEXT = {
    "fig1-center": "Figure 1 (center) of Power et al. 2022: the steps until validation accuracy reaches 99 % "
                   "grow steeply as the training fraction falls",
    "fig2-left": "Figure 2 (left) of Power et al. 2022: best validation accuracy against training fraction for "
                 "several optimisation interventions",
    "fig2-right": "Figure 2 (right) of Power et al. 2022: best validation accuracy against training fraction for "
                  "each operation",
    "fig6": "Figure 6 of Power et al. 2022: best validation accuracy against training fraction with outliers "
            "(training equations given a wrong answer)",
    "fig7": "Figure 7 of Power et al. 2022: the sharpness of one checkpoint per seed (one configuration, a fixed "
            "step) against validation accuracy, with Spearman's rank correlation across the seeds",
    "grokfast": "Lee et al. 2024 (Grokfast): the steps to 95 % validation accuracy without a filter and with the "
                "MA and EMA filters of the slow gradient (theirs: 39890, 790 and 910 steps; x50 and x44)",
    "nanda-fractions": "Nanda et al. 2023: the steps until validation loss falls below chance (ln N), 1 and 0.1, "
                       "against the training fraction",
    "stability": "Prieto et al. 2025 (grokking at the edge of numerical stability): softmax vs StableMax, ⊥Grad off "
                 "and on, weight decay off and on, loss in float32; whether and when each run reaches 99 % "
                 "validation accuracy (the runs table: no training fraction varies, so no curve)",
}


def preset_spec(name: str, scale: str | None = "small") -> SweepSpec:
    """The sweep of a paper figure (``SWEEP_PRESETS``) at ``scale`` "small" (CPU) or "paper"."""
    if name not in SWEEP_PRESETS:
        raise GrokscopeError(f"unknown sweep preset {name!r}{did_you_mean(name, SWEEP_PRESETS) or '.'} "
                             f"Known: {', '.join(SWEEP_PRESETS)}")
    scale = scale or "small"
    if scale not in ("small", "paper"):
        raise GrokscopeError(f"scale must be small or paper, got {scale!r}")
    p = json.loads(json.dumps(SWEEP_PRESETS[name][scale]))
    return SweepSpec.make(p.get("base"), p.get("fixed"), p.get("grid"), preset=name, scale=scale,
                          analyses=p.get("analyses") or {}, cases=p.get("cases") or {})
