"""The analysis and figure registries: a name is registered once; an analysis's parameters are its signature's."""
from __future__ import annotations

import inspect

import pandas as pd
import pytest

from grokscope.analyses import flatness
from grokscope.analyses.base import REGISTRY, register, signature_params
from grokscope.errors import GrokscopeError
from grokscope.figures.common import REGISTRY as FIGURES
from grokscope.figures.common import figure
from grokscope.figures.compare import COMPARISONS, comparison


def test_a_second_analysis_of_a_taken_name_is_refused_and_the_first_kept():
    first = REGISTRY["weight_norms"]
    with pytest.raises(GrokscopeError, match=r"analysis 'weight_norms' is already registered \(by "
                                              r"grokscope\.analyses\.weight_norms\.weight_norms\)"):
        @register("weight_norms", summary="a second one")
        def weight_norms(model, data) -> dict:
            return {}
    assert REGISTRY["weight_norms"] is first


@pytest.mark.parametrize("page,name", [("run", "accuracy"), ("compare", "weight_norm")])
def test_a_second_figure_of_a_taken_name_is_refused_and_the_first_kept(page, name):
    first = FIGURES[page][name]
    with pytest.raises(GrokscopeError, match=f"figure '{name}' is already registered on the {page} page"):
        @figure(name, page=page, title="x", caption="x.", inputs=dict)
        def fig_again(metrics: pd.DataFrame):
            return None
    assert FIGURES[page][name] is first


def test_a_second_comparison_of_a_taken_name_is_refused():
    n = len(COMPARISONS)
    with pytest.raises(GrokscopeError, match="figure 'weight_norm' is already registered on the compare page"):
        @comparison("weight_norm", title="x", caption="x.", y_title="x")
        def again(t):
            return pd.Series(dtype=float)
    assert len(COMPARISONS) == n


def test_every_analysis_takes_its_parameters_and_defaults_from_its_signature():
    for a in REGISTRY.values():
        sig = list(inspect.signature(a.fn).parameters.values())[2:]
        assert a.params == {p.name: p.default for p in sig}, a.name
    assert REGISTRY["sharpness"].params["eps"] == (1e-3, 5e-4) and REGISTRY["phases"].params == {"acc": 0.99, "done": 0.9}
    assert not hasattr(flatness, "SHARPNESS_PARAMS")  # no second copy


def test_a_new_analysis_gets_its_signatures_parameters(monkeypatch):
    monkeypatch.setattr("grokscope.analyses.base.REGISTRY", dict(REGISTRY))  # the planted one goes with the test
    from grokscope.analyses import base

    @base.register("planted_params", summary="planted")
    def planted(model, data, alpha: float = 0.5, *, names=("a", "b")) -> dict:
        return {"alpha": alpha}

    assert base.REGISTRY["planted_params"].params == {"alpha": 0.5, "names": ("a", "b")}
    assert "planted_params" not in REGISTRY


def test_a_parameter_without_a_default_is_refused():
    def needs_k(model, data, k) -> dict:
        return {}

    with pytest.raises(GrokscopeError, match="its parameter 'k' has no default"):
        signature_params(needs_k)
