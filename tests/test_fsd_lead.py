"""Known answers of benchmarks/fsd_lead.py's agreement diagnostic (top-k frequency sets of FSD's components)."""
import importlib.util
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location("fsd_lead", Path(__file__).parents[1] / "benchmarks" / "fsd_lead.py")
fsd_lead = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fsd_lead)


def shares(*peaks, K=10, base=0.01):
    """(C, K) shares: each component flat at ``base`` plus mass on its own peak frequencies."""
    out = np.full((len(peaks), K), base)
    for c, ks in enumerate(peaks):
        out[c, list(ks)] += 1.0
    return out / out.sum(1, keepdims=True)


def test_same_top_sets_score_one_whatever_their_concentration():
    weak = shares([1, 4], [1, 4], [1, 4], base=0.3)  # broad spectra, same two peaks
    sharp = shares([1, 4], [4, 1], [1, 4], base=0.0)
    assert fsd_lead.top_sets_jaccard(weak, 2) == 1.0
    assert fsd_lead.top_sets_jaccard(sharp, 2) == 1.0


def test_disjoint_and_partial_top_sets():
    assert fsd_lead.top_sets_jaccard(shares([1, 2], [1, 2], [7, 8]), 2) == 0.0
    assert fsd_lead.top_sets_jaccard(shares([1, 2], [1, 2], [1, 8]), 2) == 1 / 3  # {1} of {1, 2, 8}


def test_agreement_onset_needs_the_sets_to_stay_agreed():
    steps = [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100]
    assert fsd_lead.agree_from(steps, [0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]) == 400  # the blip at 100 does not count
    # one later lapse in 11 (91 % agreed) keeps the onset; none agreed: None
    assert fsd_lead.agree_from(steps, [0, 1, 1, 1, 1, 1, 0.5, 1, 1, 1, 1, 1]) == 100
    assert fsd_lead.agree_from(steps, [0.5] * 12) is None
