"""Phase boundaries and lead/lag on planted progress-measure trajectories (known change points, noise, spikes)."""
import math

import numpy as np
import pandas as pd
import pytest

from grokscope.analyses.phases import (COLUMNS, LEADLAG_COLUMNS, PHASES, boundary_steps, find_leadlag, find_phases,
                                       published_comparison, smooth)

N_ANS = 113
CHANCE = math.log(N_ANS)
STEPS = np.array(sorted({0, 1, 2, 3, 5, 8, 13, 20, 30, 50, 80} | set(range(100, 20001, 100))))
T_MEM, T_CLEAN, T_GROK, T_NORM, T_GINI = 1000, 8000, 10000, 11600, 10700
TOL = 200  # two evaluations


def interp(points, steps=STEPS, log=False):
    """Piecewise linear through (step, value) points (in log space when ``log``)."""
    xs, ys = zip(*points)
    ys = np.log(ys) if log else np.asarray(ys, dtype=float)
    out = np.interp(steps, xs, ys)
    return np.exp(out) if log else out


def planted(noise=0.02, seed=0, spikes=False):
    """Metrics, fourier and sparsity tables of a textbook grokking run with the boundaries above:
    train accuracy 99 % at T_MEM; validation loss above chance until T_CLEAN, below it after; the
    weight norm falls log-linearly from 50 at T_CLEAN to 29 at 12000 (90 % of its log-fall at T_NORM);
    the Fourier Gini rises 0.4 -> 0.8 from T_CLEAN to 11000 (90 % at T_GINI); validation accuracy 99 % at T_GROK."""
    rng = np.random.default_rng(seed)
    wiggle = lambda v: v * np.exp(noise * rng.standard_normal(len(v)))  # noqa: E731
    train_acc = np.clip(interp([(0, 0.01), (T_MEM, 0.995), (20000, 1.0)]), 0, 1)
    train_acc[STEPS >= T_MEM] = np.maximum(train_acc[STEPS >= T_MEM], 0.995)
    train_loss = wiggle(interp([(0, CHANCE), (T_MEM, 0.05), (3000, 1e-6), (20000, 1e-7)], log=True))
    val_loss = wiggle(interp([(0, CHANCE), (T_MEM, 15.0), (3000, 18.0), (T_CLEAN - 100, 5.5), (T_CLEAN, 4.6),
                              (T_GROK, 0.05), (20000, 1e-3)], log=True))
    val_acc = interp([(0, 0.01), (T_CLEAN, 0.03), (T_GROK - 100, 0.97), (T_GROK, 0.995), (20000, 1.0)])
    norm = interp([(0, 40), (T_MEM, 60), (T_CLEAN, 50), (12000, 29), (20000, 29)], log=True) * \
        np.exp(0.001 * rng.standard_normal(len(STEPS)))
    if spikes:  # float32-style loss spikes, a few evaluations wide, after clean-up began
        for at in (9000, 14000, 17000):
            hit = (STEPS >= at) & (STEPS < at + 300)
            val_loss[hit] = 9.0
            train_loss[hit] = 2.0
            train_acc[hit] = 0.6
    metrics = pd.DataFrame({"step": STEPS, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                            "val_acc": val_acc, "weight_norm": norm, "collapse": 0.0})
    ck = STEPS[(STEPS % 200 == 0) | (STEPS < 100)]  # checkpoints: sparser than evaluations
    fourier = pd.DataFrame({
        "step": ck,
        "embed_gini": interp([(0, 0.05), (T_MEM, 0.1), (T_CLEAN, 0.4), (11000, 0.8), (20000, 0.8)], ck),
        "unembed_gini": interp([(0, 0.05), (T_MEM, 0.1), (T_CLEAN, 0.3), (11000, 0.7), (20000, 0.7)], ck),
        "restricted_loss": interp([(0, 4.8), (T_MEM, 4.8), (4000, 2.0), (T_CLEAN, 0.3), (T_GROK, 0.01),
                                   (20000, 0.005)], ck, log=True),
        "excluded_loss": interp([(0, 4.8), (T_MEM, 0.05), (T_CLEAN, 10.0), (20000, 12.0)], ck, log=True),
        "losses_faithful": True})
    sparsity = pd.DataFrame({"step": ck, "scope": "all",
                             "gini": interp([(0, 0.2), (T_MEM, 0.25), (T_CLEAN, 0.35), (11000, 0.6), (20000, 0.6)], ck),
                             "effective_n": interp([(0, 300), (T_MEM, 280), (T_CLEAN, 200), (11000, 60), (20000, 60)],
                                                   ck, log=True)})
    return metrics, {"fourier": fourier, "sparsity": sparsity}


def by_phase(table):
    assert list(table.columns) == COLUMNS
    assert list(table.phase) == list(PHASES)
    return table.set_index("phase")


def bounds(table):
    t = by_phase(table)
    return [(t.loc[p, "start_step"], t.loc[p, "end_step"]) for p in PHASES]


def test_planted_boundaries_are_found():
    metrics, results = planted()
    t = by_phase(find_phases(metrics, results, n_answers=N_ANS))
    assert t.present.all(), t.description.tolist()
    mem, circ, clean, grok = (t.loc[p] for p in PHASES)
    assert (mem.start_step, mem.end_step) == (0, T_MEM)
    assert mem.end_step == circ.start_step and circ.end_step == clean.start_step and clean.end_step == grok.start_step
    assert abs(circ.end_step - T_CLEAN) <= TOL
    assert abs(clean.end_step - T_NORM) <= TOL  # the weight norm sets the end (it finishes last)
    assert pd.isna(grok.end_step)
    # every boundary is stored with the quantity and level that set it
    assert (circ.marker, circ.threshold) == ("train_acc", 0.99)
    assert (clean.marker, clean.threshold) == ("val_loss", pytest.approx(CHANCE))
    assert clean.end_marker == "weight_norm"
    assert clean.end_threshold == pytest.approx(math.exp(math.log(50) + 0.9 * (math.log(29) - math.log(50))), rel=0.02)
    # steps are integers
    assert str(t["start_step"].dtype) == "Int64" and str(t["end_step"].dtype) == "Int64"
    assert boundary_steps(find_phases(metrics, results, n_answers=N_ANS)) == sorted(
        {0, T_MEM, int(circ.end_step), int(clean.end_step)})


def test_circuit_formation_names_the_markers_that_moved_with_their_values():
    metrics, results = planted()
    t = by_phase(find_phases(metrics, results, n_answers=N_ANS))
    text = t.loc["circuit_formation", "description"]
    for label in ("restricted loss falls 4.8", "excluded loss rises", "Fourier Gini of the embedding rises 0.1",
                  "total weight norm falls", "validation loss stays above chance"):
        assert label in text, text
    ev = t.loc["circuit_formation", "evidence"]
    assert "restricted_loss: 4.8 →" in ev and "excluded_loss" in ev
    clean = t.loc["clean_up", "description"]
    assert "validation loss below chance (4.73) for good" in clean and "validation accuracy reaches 99 % at step" in clean


def test_loss_spikes_and_noise_do_not_move_a_boundary():
    base = bounds(find_phases(*planted(), n_answers=N_ANS))
    for seed in range(3):
        metrics, results = planted(noise=0.05, seed=seed, spikes=True)
        spiky = bounds(find_phases(metrics, results, n_answers=N_ANS))
        for (a0, a1), (b0, b1) in zip(base, spiky):
            assert (pd.isna(a0) and pd.isna(b0)) or abs(a0 - b0) <= TOL
            assert (pd.isna(a1) and pd.isna(b1)) or abs(a1 - b1) <= TOL


def test_a_marker_that_did_not_move_is_not_named():
    metrics, results = planted()
    results["fourier"]["restricted_loss"] = 4.7  # flat
    results["fourier"]["excluded_loss"] = np.linspace(0.050, 0.055, len(results["fourier"]))  # a 10 % drift
    t = by_phase(find_phases(metrics, results, n_answers=N_ANS))
    for phase in ("circuit_formation", "clean_up"):
        assert "restricted loss" not in t.loc[phase, "description"]
        assert "excluded loss" not in t.loc[phase, "description"]
        assert "restricted_loss" not in t.loc[phase, "evidence"]
    assert "Fourier Gini of the embedding rises" in t.loc["circuit_formation", "description"]


def test_unfaithful_restricted_loss_is_not_used():
    metrics, results = planted()
    results["fourier"]["losses_faithful"] = False
    t = by_phase(find_phases(metrics, results, n_answers=N_ANS))
    assert "restricted loss" not in t.loc["circuit_formation", "description"]
    assert "restricted_loss" not in set(find_leadlag(metrics, results, n_answers=N_ANS).measure)


def test_operations_without_fourier_tables_still_get_phases():
    metrics, results = planted()
    del results["fourier"]
    t = by_phase(find_phases(metrics, results, n_answers=N_ANS, no_fourier="'s5' has no Fourier basis"))
    assert t.present.all()
    assert abs(t.loc["circuit_formation", "end_step"] - T_CLEAN) <= TOL
    text = t.loc["circuit_formation", "description"]
    assert "'s5' has no Fourier basis: the markers here are the neuron-norm Gini" in text
    assert "Gini of the MLP neuron norms rises" in text and "effective number of MLP neurons falls" in text
    # clean-up ends when the weight norm and the neuron Gini have done 90 % (norm last, as before)
    assert abs(t.loc["clean_up", "end_step"] - T_NORM) <= TOL


def test_never_groks():
    metrics, results = planted()
    metrics["val_loss"] = np.where(metrics.step < T_MEM, metrics.val_loss, 15.0)
    metrics["val_acc"] = 0.03
    t = by_phase(find_phases(metrics, results, n_answers=N_ANS))
    assert list(t.present) == [True, True, False, False]
    assert t.loc["circuit_formation", "start_step"] == T_MEM and pd.isna(t.loc["circuit_formation", "end_step"])
    assert "not finished" in t.loc["circuit_formation", "description"]
    assert "never fell below chance" in t.loc["clean_up", "description"]


def test_clean_up_not_finished_at_the_last_step():
    metrics, results = planted()
    cut = metrics.step <= 10500
    t = by_phase(find_phases(metrics[cut], {k: v[v.step <= 10500] for k, v in results.items()}, n_answers=N_ANS))
    assert list(t.present) == [True, True, True, False]
    assert pd.isna(t.loc["clean_up", "end_step"]) and "not finished" in t.loc["clean_up", "description"]


def test_no_delay_when_validation_loss_is_below_chance_at_memorisation():
    metrics, results = planted()
    metrics["val_loss"] = interp([(0, CHANCE), (T_MEM, 1.0), (20000, 0.001)], log=True)
    metrics["val_acc"] = np.clip(interp([(0, 0.01), (T_MEM, 0.9), (1500, 0.995), (20000, 1.0)]), 0, 1)
    t = by_phase(find_phases(metrics, results, n_answers=N_ANS))
    assert not t.loc["circuit_formation", "present"] and "no delay" in t.loc["circuit_formation", "description"]
    assert t.loc["clean_up", "start_step"] == T_MEM


def test_never_memorises_and_no_metrics():
    metrics, results = planted()
    metrics["train_acc"] = np.minimum(metrics.train_acc, 0.6)
    t = by_phase(find_phases(metrics, results, n_answers=N_ANS))
    assert list(t.present) == [True, False, False, False]
    assert "not finished" in t.loc["memorisation", "description"]
    empty = by_phase(find_phases(pd.DataFrame(columns=["step", "train_acc", "val_acc"])))
    assert not empty.present.any()


def test_chance_defaults_to_the_first_validation_loss():
    metrics, results = planted()
    with_n = bounds(find_phases(metrics, results, n_answers=N_ANS))
    assert bounds(find_phases(metrics, results)) == with_n  # val loss at step 0 is ln 113 here


def test_lead_lag_on_planted_curves():
    metrics, results = planted()
    table = find_leadlag(metrics, results, n_answers=N_ANS)
    assert list(table.columns) == LEADLAG_COLUMNS
    ll = table.set_index("measure")
    # validation loss falls below 1 nat between T_CLEAN (4.6) and T_GROK (0.05), log-linearly
    cross = lambda hi, lo, t0, t1: t0 + (math.log(hi) - 0.0) / (math.log(hi) - math.log(lo)) * (t1 - t0)  # noqa: E731
    ref = ll.loc["val_loss", "step"]
    assert abs(ref - cross(4.6, 0.05, T_CLEAN, T_GROK)) <= TOL
    assert "validation loss fell below 1 at step" in ll.loc["val_loss", "description"]
    # restricted loss: 2.0 at step 4000 -> 0.3 at T_CLEAN, log-linear: below 1 nat well before validation loss
    r = ll.loc["restricted_loss"]
    assert r.moved and abs(r.step - cross(2.0, 0.3, 4000, T_CLEAN)) <= TOL and r.lead == ref - r.step and r.lead > 3000
    assert r.description.startswith(f"restricted loss fell below 1 at step {r.step} (4.8 → ")
    assert r.description.endswith(f", {r.lead} steps before validation loss did")
    # the Fourier Gini of the embedding rises half-way (0.1 -> 0.8: past 0.45) between T_CLEAN and 11000
    g = ll.loc["embed_gini"]
    assert g.moved and abs(g.step - (T_CLEAN + (0.45 - 0.4) / 0.4 * 3000)) <= TOL
    # the excluded loss rises above 1 nat during circuit formation
    e = ll.loc["excluded_loss"]
    assert e.moved and T_MEM < e.step < T_CLEAN
    assert not ll.loc["collapse", "moved"] and "did not move" in ll.loc["collapse", "description"]


def test_smoothing_removes_spikes_and_keeps_steps():
    s = pd.Series(np.ones(200), index=np.arange(0, 20000, 100))
    s.iloc[100:103] = 50.0
    out = smooth(s)
    assert (out == 1.0).all() and list(out.index) == list(s.index)
    ramp = pd.Series(np.arange(200.0), index=np.arange(0, 20000, 100))
    assert (smooth(ramp) == ramp).iloc[1:-1].all()  # a monotone series is its own running median inside
    end = pd.Series(np.ones(50), index=np.arange(0, 5000, 100))
    end.iloc[-1] = 50.0
    assert (smooth(end) == 1.0).all()  # a spike at the last evaluation too


def test_published_comparison_gives_the_papers_phase_ends():
    """Nanda et al.'s text: memorisation 0-1.4k, circuit formation 1.4k-9.4k, clean-up 9.4k-14k epochs
    (not a demo notebook's own run); each row sets our end beside theirs."""
    metrics, results = planted()
    table = find_phases(metrics, results, n_answers=N_ANS)
    rows = {what: (ours, theirs) for what, ours, theirs in published_comparison(table, None)}
    assert [rows[f"{p} ends"][1] for p in ("memorisation", "circuit formation", "clean-up")] == \
        ["~1400 epochs", "~9400 epochs", "~14000 epochs"]
    assert rows["clean-up ends"][0] == f"step {int(table.set_index('phase').loc['clean_up', 'end_step'])}"
    assert rows["key frequencies"] == ("not analysed", "5: 14, 35, 41, 42, 52 (their seed)")
