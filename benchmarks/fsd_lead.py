"""FSD's lead on grokking under two timing rules, beside restricted and excluded loss's and the circles' R².

    python benchmarks/fsd_lead.py RUN [RESULTS] [--every N]

RUN is a run folder; RESULTS its analysed tables (default: where ``grokscope analyze RUN`` writes them),
with at least the ``fourier`` table (and ``circles`` for the R²). For each measure it prints the step of:

- **half-way**: ``phases_leadlag``'s rule (half-way through its main change after memorisation; 1 nat for
  the losses), against validation loss's own step under that rule;
- **at its level**: the first step after memorisation by which the smoothed measure has done 90 % of its
  change to its extreme (``phases.done_step``), the reading of arXiv 2606.12966's "reaches its
  post-grokking level", against the first step validation accuracy reaches 95 % ("grokking").

A lead is the reference's step minus the measure's: positive when the measure moved first.

Then, on the checkpoints every ``--every`` steps, what FSD's three components (``fourier.fsd_components``)
agree on, apart from how concentrated their spectra are: the Jaccard index of their top-k frequency sets
(k: the final checkpoint's number of key frequencies), each component's share of squared norm on the
final unembedding's top-k frequencies, and FSD; and the first step from which the three top-k sets are
the same at >= 90 % of the later sampled checkpoints ("sets agree"). The paper's
anchor: FSD at its post-grokking level 500-3,000 steps before grokking (mean 1,722) and before
restricted-logit loss, in nine modular-addition configurations (p = 53 to 131); its abstract (v1) adds
that in a single-layer model FSD lags.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from grokscope.analyses.phases import BY_KEY, Measures, done_step, first_step, find_leadlag, series
from grokscope.results import default_out_dir
from grokscope.run import Run

KEYS = ("fsd", "restricted_loss", "excluded_loss", "unembed_circle_r2", "embed_gini", "weight_norm")


def leads(run: Run, tables: dict[str, pd.DataFrame], acc: float = 0.99, grok_acc: float = 0.95) -> pd.DataFrame:
    """One row per measure the run has: its step and lead under both rules (module docstring)."""
    metrics = run.metrics
    half = find_leadlag(metrics, tables, acc=acc).set_index("measure")
    ms = Measures(metrics, tables)
    t_mem = first_step(series(metrics, "train_acc"), lambda s: s >= acc)
    grok = first_step(series(metrics, "val_acc"), lambda s: s >= grok_acc, after=t_mem)
    rows = []
    for key in KEYS:
        if not ms.has(key):
            continue
        step, level, _ = done_step(ms[key], BY_KEY[key], t_mem if t_mem is not None else 0, 0.9)
        h = half.loc[key] if key in half.index else None
        rows.append({"measure": key,
                     "half_way_step": None if h is None else h["step"],
                     "half_way_lead": None if h is None else h["lead"],
                     "level_step": step, "level": level,
                     "level_lead": None if step is None or grok is None else grok - step})
    out = pd.DataFrame(rows)
    out.attrs.update(t_mem=t_mem, grok_step=grok, val_loss_step=half.loc["val_loss", "step"] if "val_loss" in half.index else None)
    return out


def top_sets_jaccard(shares, k: int) -> float:
    """Jaccard index of the components' top-``k`` frequency sets: |intersection| / |union| of the ``k``
    largest entries of each row of ``shares`` (C, K); ties go to the lower frequency."""
    import numpy as np

    tops = [set(np.argsort(-np.asarray(c), kind="stable")[:k].tolist()) for c in shares]
    return len(set.intersection(*tops)) / len(set.union(*tops))


def agree_from(steps: list[int], jaccard: list[float], share: float = 0.9) -> int | None:
    """The first step at which the sets agree (Jaccard 1) and agree at >= ``share`` of the sampled steps from
    there on (None: never)."""
    agree = [j == 1.0 for j in jaccard]
    for i, step in enumerate(steps):
        if agree[i] and sum(agree[i:]) >= share * (len(agree) - i):
            return int(step)
    return None


def agreement(run: Run, every: int, k: int) -> pd.DataFrame:
    """Per sampled checkpoint: FSD, the Jaccard index of the components' top-``k`` frequency sets, and each
    component's share on the final unembedding's top-``k`` frequencies (module docstring)."""
    import numpy as np
    import torch

    from grokscope.analyses.fourier import (cyclic_tokens, fourier_basis, frequency_norms, frequency_synchronisation,
                                            fsd_components)

    tokens = cyclic_tokens(run.data)
    basis, freqs = fourier_basis(len(tokens))
    steps = [s for s in run.steps if s % every == 0] + ([run.steps[-1]] if run.steps[-1] % every else [])
    rows, shares = [], []
    for step in steps:
        with torch.no_grad():
            norms = [frequency_norms(W, basis, freqs) for W in fsd_components(run.model_at(step), tokens).values()]
        sq = np.stack([n[1:].double().numpy() ** 2 for n in norms])
        shares.append(sq / sq.sum(1, keepdims=True))
        rows.append({"step": step, "fsd": frequency_synchronisation(norms)[0]})
    final_keys = np.argsort(-shares[-1][2])[:k]
    for row, sh in zip(rows, shares):
        row["jaccard"] = top_sets_jaccard(sh, k)
        row.update({f"share_{n}": float(c[final_keys].sum()) for n, c in zip(("embed", "neurons", "unembed"), sh)})
    out = pd.DataFrame(rows)
    out.attrs["sets_agree"] = agree_from(out["step"].tolist(), out["jaccard"].tolist())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("results", nargs="?")
    ap.add_argument("--every", type=int, default=500, help="sample a checkpoint every N steps for the agreement table")
    args = ap.parse_args()
    run = Run(args.run)
    folder = Path(args.results) if args.results else default_out_dir(args.run)
    tables = {name: pd.read_csv(folder / f"{name}.csv") for name in ("fourier", "circles", "sparsity", "weight_norms")
              if (folder / f"{name}.csv").exists()}
    t = leads(run, tables)
    a = t.attrs
    print(f"{run.path}: memorised at {a['t_mem']}; validation loss below 1 nat at {a['val_loss_step']}; "
          f"validation accuracy >= 95 % at {a['grok_step']}")
    print(t.to_string(index=False))
    keys = tables["fourier"]["n_key"].dropna()
    k = int(keys.iloc[-1]) if len(keys) else 5
    g = agreement(run, args.every, k)
    grok = a["grok_step"]
    lead = "" if g.attrs["sets_agree"] is None or grok is None else f", {grok - g.attrs['sets_agree']} steps before grokking"
    print(f"top-{k} frequency sets of the embedding, neuron inputs and unembedding agree from step "
          f"{g.attrs['sets_agree']}{lead}")
    print(g.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
