"""Provenance: per training session in provenance.json, per analysis in its sidecar, a line in the report."""
from __future__ import annotations

import json
import platform
import sys

import torch

from conftest import QUIET, tiny_config

import grokscope
from grokscope import RunConfig
from grokscope.provenance import describe, describe_run
from grokscope.run import PROVENANCE_FILE



def tiny(steps=4) -> RunConfig:
    return tiny_config(model={"n_layers": 1, "d_mlp": 16}, train={"steps": steps},
                       schedule={"eval_every": 2, "ckpt_every": 2, "state_every": 2})


def test_a_run_records_each_training_session(tmp_path):
    run = grokscope.train(tiny(), out=tmp_path / "r", **QUIET)
    [first] = run.provenance
    assert first["start_step"] == 0
    assert first["grokscope"] == grokscope.__version__ and first["torch"] == torch.__version__
    assert first["python"] == platform.python_version() and first["platform"] == platform.platform()
    from importlib.metadata import version

    assert first["transformer_lens"] == version("transformer-lens")
    assert first["device"] == "cpu" and first["gpu"] is None and first["torch_threads"] == torch.get_num_threads()
    assert first["flush_denormal"] is True  # training flushes subnormal floats
    assert first["loss_dtype"] == getattr(run.config.train, "loss_dtype", "float32")
    assert first["command"] == sys.argv and first["cpu"] and first["cpu_count"] >= 1
    json.dumps(first)  # plain JSON
    grokscope.train(resume=run.path, steps=8, **QUIET)
    sessions = grokscope.load_run(run.path).provenance
    assert [s["start_step"] for s in sessions] == [0, 4]
    assert describe_run(run.path) == describe(first)  # the same setup twice: one line


def test_batched_runs_record_it_too(tmp_path):
    runs = grokscope.train_many([tiny(), tiny()], [tmp_path / "a", tmp_path / "b"], **QUIET)
    assert all(len(r.provenance) == 1 and r.provenance[0]["device"] == "cpu" for r in runs)


def test_analysis_sidecars_and_report_show_it(tmp_path):
    run = grokscope.train(tiny(), out=tmp_path / "r", **QUIET)
    grokscope.analyze(run, only="weight_norms,phases", out=tmp_path / "a", progress=False)
    for name in ("weight_norms", "phases"):
        meta = json.loads((tmp_path / "a" / f"{name}.json").read_text())
        assert meta["provenance"]["torch"] == torch.__version__
        assert meta["provenance"]["grokscope"] == grokscope.__version__
    from grokscope.report import build_report

    page = build_report(run, results=tmp_path / "a").read_text()
    assert "trained with" in page and f"torch {torch.__version__}" in page


def test_a_run_without_provenance_still_reports(tmp_path):
    run = grokscope.train(tiny(), out=tmp_path / "r", **QUIET)
    (run.path / PROVENANCE_FILE).unlink()  # a run saved before provenance was recorded
    assert run.provenance == [] and describe_run(run.path) is None
    from grokscope.report import build_report

    assert "trained with" not in build_report(run, results=tmp_path / "a").read_text()


def test_describe_known_record():
    record = {"grokscope": "0.1.0", "grokscope_source": {"commit": "0123456789abcdef", "dirty": True},
              "torch": "2.13.0", "transformer_lens": "3.9.0", "python": "3.11.7", "platform": "Linux-x",
              "cpu": "AMD EPYC", "torch_threads": 1, "device": "cpu", "gpu": None, "loss_dtype": "float64"}
    assert describe(record) == ("grokscope 0.1.0 (0123456789, modified), torch 2.13.0, TransformerLens 3.9.0, "
                                "Python 3.11.7; Linux-x; cpu: AMD EPYC, 1 thread(s), loss in float64")
    gpu = dict(record, device="cuda:0", gpu={"name": "NVIDIA H200", "cuda": "12.8"}, grokscope_source=None)
    assert describe(gpu).endswith("; cuda:0: NVIDIA H200 (CUDA 12.8), loss in float64")
    assert grokscope.provenance()["grokscope"] == grokscope.__version__
