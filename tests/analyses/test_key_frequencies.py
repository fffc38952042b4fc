"""Key frequencies from the gap in the spectrum, fixed from the run's last checkpoint (known answers)."""
import math
import shutil

import pytest
import torch

from grokscope.analyses import fourier as fo
from grokscope.analyze import analyze
from grokscope.errors import GrokscopeError

P = 31
K = (P - 1) // 2


def spectrum(energies: dict[int, float], floor: float = 0.0, seed: int = 0) -> torch.Tensor:
    """(K+1,) frequency norms with the given energies (norm²) on some frequencies and ``floor`` × a
    random factor in [0.5, 1.5] on the others; frequency 0 (the constant) gets a large value that
    must be ignored."""
    g = torch.Generator().manual_seed(seed)
    e = floor * (0.5 + torch.rand(K + 1, generator=g, dtype=torch.float64))
    for k, v in energies.items():
        e[k] = v
    e[0] = 100.0
    return e.sqrt()


def test_gap_rule_finds_the_planted_count():
    # five key frequencies holding ~20 % each, a tail 100x smaller: five keys, a gap of ~ 100
    norms = spectrum({14: 0.21, 3: 0.20, 9: 0.19, 11: 0.18, 7: 0.17}, floor=0.002)
    n, gap = fo.key_gap(norms)
    assert n == 5 and gap > 50
    assert fo.key_frequencies(norms) == [14, 3, 9, 11, 7]  # largest first
    assert fo.key_frequencies(norms, n_key=2) == [14, 3]  # a forced count


def test_gap_rule_one_and_two_frequencies():
    assert fo.key_gap(spectrum({4: 1.0}, floor=1e-4))[0] == 1
    assert fo.key_frequencies(spectrum({4: 0.6, 12: 0.4}, floor=1e-4)) == [4, 12]


def test_a_gap_in_the_negligible_tail_does_not_set_the_count():
    # five keys, then a stray frequency at 4 % (under twice a uniform 1/15 share: not a candidate)
    norms = spectrum({1: 0.2, 3: 0.2, 9: 0.19, 12: 0.19, 13: 0.14, 5: 0.04}, floor=0.0005)
    assert fo.key_gap(norms)[0] == 5
    # a 10^4 ratio deep in a tail of ~1e-7 (larger than the keys' own gap of ~10^5 / 10^-7 ... it is not:
    # the tail's ratio would win without the share rule)
    norms = spectrum({1: 0.2, 3: 0.2, 9: 0.19, 12: 0.19, 13: 0.14}, floor=1e-4)
    norms[6], norms[2] = math.sqrt(1e-4), math.sqrt(1e-12)  # 1e-4 / 1e-12: a 10^8 gap among the negligible
    assert fo.key_gap(norms)[0] == 5


def test_a_flat_spectrum_has_no_clear_gap():
    for seed in range(5):
        n, gap = fo.key_gap(spectrum({}, floor=1.0, seed=seed))
        assert gap < fo.CLEAR_GAP


@pytest.mark.slow
def test_final_key_frequencies_are_fixed_over_the_run(grokked_run, tmp_path):
    """analyze resolves key_freqs="final" to the last checkpoint's keys and uses them at every step."""
    out = tmp_path / "an"
    tables = analyze(grokked_run, only="fourier", steps=grokked_run.steps[::10] + grokked_run.steps[-1:], out=out,
                     progress=False)
    f = tables["fourier"]
    import json
    params = json.loads((out / "fourier.json").read_text())["params"]
    assert fo.final_key_freqs(grokked_run, params)[1] == grokked_run.steps[-1]
    # the keys are the last checkpoint's own, by the gap rule, for every row
    last = fo.fourier(grokked_run.model_at(grokked_run.steps[-1]), grokked_run.data)
    assert params["key_freqs"] == last["key_freqs"] and set(f.key_freqs) == {last["key_freqs"]}
    assert params["key_step"] is None  # not in the cache key: a growing run with the same keys keeps its rows
    assert (f.n_key == last["n_key"]).all() and last["key_gap"] >= fo.CLEAR_GAP
    # an explicit key_step takes that checkpoint's keys; one without a checkpoint is one clear error
    mid = grokked_run.steps[len(grokked_run.steps) // 2]
    again = fo.resolve_key_freqs(grokked_run, {"key_freqs": "final", "key_step": mid, "key_from": "unembed",
                                               "n_key": None})
    assert again["key_step"] == mid
    assert again["key_freqs"] == fo.fourier(grokked_run.model_at(mid), grokked_run.data)["key_freqs"]
    assert fo.final_key_freqs(grokked_run, again | {"key_freqs": "final"})[1] == mid
    with pytest.raises(GrokscopeError, match="has no checkpoint"):
        fo.resolve_key_freqs(grokked_run, {"key_freqs": "final", "key_step": 7, "key_from": "unembed", "n_key": None})


@pytest.mark.slow
def test_a_truncated_last_checkpoint_is_skipped(grokked_run, tmp_path):
    from grokscope.run import Run

    copy = tmp_path / "run"
    shutil.copytree(grokked_run.path, copy)
    last, before = grokked_run.steps[-1], grokked_run.steps[-2]
    path = copy / "ckpt" / f"step_{last:08d}.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    keys, step = fo.final_key_freqs(Run(copy), {"key_freqs": "final", "key_step": None, "key_from": "unembed",
                                               "n_key": None})
    assert step == before
    assert ",".join(map(str, keys)) == fo.fourier(grokked_run.model_at(before), grokked_run.data)["key_freqs"]
    with pytest.raises(GrokscopeError, match="cannot read the key frequencies' checkpoint"):
        fo.resolve_key_freqs(Run(copy), {"key_freqs": "final", "key_step": last, "key_from": "unembed", "n_key": None})
