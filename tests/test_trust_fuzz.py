"""Property tests (Hypothesis): bad config values and damaged artefacts, through every command that reads
them. Each case must end with the right result (exit 0) or one `grokscope: error:` line and exit 2, never a
traceback, and a failed command leaves every file as it was.

The number of examples is small by default (the suite stays fast); GROKSCOPE_FUZZ_EXAMPLES=N raises it.
Each test adds its outcomes to FUZZ_LOG (a JSON file, when set), which is how the counts in the README were
taken."""
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from grokscope.analyze import analyze  # noqa: E402
from grokscope.config import SECTIONS, RunConfig  # noqa: E402
from grokscope.results import default_out_dir  # noqa: E402
from grokscope.sweep import SweepSpec  # noqa: E402
from grokscope.sweep.folder import write_spec  # noqa: E402

from conftest import TINY_RUN  # noqa: E402
from test_trust import cli, snapshot  # noqa: E402

N = int(os.environ.get("GROKSCOPE_FUZZ_EXAMPLES", "12"))
SETTINGS = settings(max_examples=N, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
OUTCOMES: dict[str, dict[str, int]] = {}


def record(test: str, outcome: str) -> None:
    OUTCOMES.setdefault(test, {}).setdefault(outcome, 0)
    OUTCOMES[test][outcome] += 1
    path = os.environ.get("FUZZ_LOG")
    if path:
        Path(path).write_text(json.dumps(OUTCOMES, indent=1))


def check(test: str, rc, err, before: dict, after: dict) -> None:
    """exit 0, or one error line (warnings before it allowed), exit 2 and nothing changed."""
    if rc == 0:
        record(test, "exit 0 (accepted)")
        return
    assert rc == 2, (rc, err)
    assert err and err[-1].startswith("grokscope: error: "), err
    assert all(e.startswith("grokscope: warning: ") for e in err[:-1]), err
    assert not any("Traceback" in e for e in err)
    assert after == before, "a failed command changed files"
    record(test, "one error line, exit 2, files unchanged")


# --- config fields ---------------------------------------------------------------------------------
FIELDS = [(s, f) for s, cls in SECTIONS.items() for f in cls.__dataclass_fields__] + [("name", None), ("run_id", None)]
VALUES = st.one_of(
    st.sampled_from([math.inf, -math.inf, math.nan, -1.0, 0.0, 0.5, 1.0, 2.0, 1e308, -1e-30]),
    st.sampled_from([-1, 0, 1, 2, 3, 2**63, 2**64, 10**12, -(2**70)]),
    st.sampled_from(["", "bogus", "x" * 300, "LN", "relu", "1e3", "inf", "nan", "\x00", "x+y"]),
    st.sampled_from([None, [], {}, True, False, [1, 2], {"a": 1}]),
)


@SETTINGS
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_any_config_value_is_trained_or_one_line(capsys, field, value):
    base = json.loads(json.dumps(TINY_RUN))
    base["train"]["steps"] = 2
    section, key = field
    if key is None:
        base[section] = value
    else:
        base[section][key] = value
    root = Path(tempfile.mkdtemp())
    try:
        f = root / "c.json"
        f.write_text(json.dumps(base, allow_nan=True))
        out = root / "run"
        rc, err = cli(["train", "--config", f, "--out", out, "--no-progress"], capsys)
        if rc == 2:
            assert not out.exists(), "a refused config left a folder behind"
        check("config fields -> train", rc, err, {}, {})
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- damaged artefacts --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template(tiny_run, tmp_path_factory):
    """A run, its default results folder (weight_norms, sparsity, phases) and a sweep folder."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(tiny_run.path, root / "checkpoints" / "tiny")
    analyze(root / "checkpoints" / "tiny", only="weight_norms,sparsity,phases", progress=False)
    spec = SweepSpec.make(fixed={"p": 5, "steps": 2, "d-model": 16, "d-mlp": 32, "n-heads": 2},
                          grid={"op": "x+y", "frac": [0.5, 0.6]})
    write_spec(root / "sweep", spec)
    return root


CORRUPTIONS = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 1000)),
    st.tuples(st.just("flip"), st.integers(0, 1000), st.integers(1, 255)),
    st.tuples(st.just("empty"), st.just(0)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("replace"), st.binary(min_size=0, max_size=200)),
    st.tuples(st.just("header"), st.integers(0, 1000), st.integers(1, 255)),  # a byte in the first 200
)


def corrupt(path: Path, how) -> None:
    data = bytearray(path.read_bytes())
    kind = how[0]
    if kind == "truncate":
        data = data[: how[1] * len(data) // 1000]
    elif kind in ("flip", "header") and data:
        span = len(data) if kind == "flip" else min(200, len(data))
        i = min(span - 1, how[1] * span // 1000)
        data[i] ^= how[2]
    elif kind == "empty":
        data = bytearray()
    elif kind == "append":
        data += how[1]
    elif kind == "replace":
        data = bytearray(how[1])
    path.write_bytes(bytes(data))


ARTEFACTS = {  # what is damaged -> the commands that read it (RUN, RES, SWEEP are filled in)
    "checkpoint": ("checkpoints/tiny/ckpt/step_00000010.safetensors",
                   [["analyze", "--ckpt-dir", "RUN", "--only", "weight_norms", "--steps", "10", "--no-progress"]]),
    "resume state": ("checkpoints/tiny/state.safetensors", [["train", "--resume", "RUN", "--steps", "30", "--no-progress"]]),
    "data": ("checkpoints/tiny/data.safetensors",
             [["train", "--resume", "RUN", "--steps", "30", "--no-progress"],
              ["analyze", "--ckpt-dir", "RUN", "--only", "weight_norms", "--steps", "10", "--no-progress"]]),
    "metrics": ("checkpoints/tiny/metrics.csv", [["train", "--resume", "RUN", "--steps", "30", "--no-progress"],
                                                 ["report", "RUN", "--out", "REPORT"]]),
    "config": ("checkpoints/tiny/config.json",
               [["train", "--resume", "RUN", "--steps", "30", "--no-progress"],
                ["analyze", "--ckpt-dir", "RUN", "--only", "weight_norms", "--steps", "10", "--no-progress"],
                ["report", "RUN", "--out", "REPORT"]]),
    "results table": ("analyses/tiny/sparsity.csv", [["report", "RUN", "--out", "REPORT"],
                                                     ["analyze", "--ckpt-dir", "RUN", "--only", "sparsity", "--no-progress"]]),
    "results sidecar": ("analyses/tiny/weight_norms.json", [["report", "RUN", "--out", "REPORT"],
                                                            ["analyze", "--ckpt-dir", "RUN", "--only", "weight_norms",
                                                             "--no-progress"]]),
    "sweep.json": ("sweep/sweep.json", [["sweep", "--out", "SWEEP", "--dry-run"], ["sweep-report", "SWEEP", "--out", "REPORT"]]),
}


@pytest.mark.parametrize("artefact", list(ARTEFACTS))
def test_damaged_artefacts_are_read_right_or_refused_in_one_line(template, capsys, artefact):
    rel, commands = ARTEFACTS[artefact]

    @SETTINGS
    @given(how=CORRUPTIONS, which=st.integers(0, len(commands) - 1))
    def case(how, which):
        root = Path(tempfile.mkdtemp())
        try:
            shutil.copytree(template, root / "t", symlinks=True)
            t = root / "t"
            corrupt(t / rel, how)
            argv = [{"RUN": str(t / "checkpoints" / "tiny"), "SWEEP": str(t / "sweep"),
                     "REPORT": str(root / "report.html")}.get(a, a) for a in commands[which]]
            before = snapshot(t)
            rc, err = cli(argv, capsys)
            after = snapshot(t)
            if rc != 0:
                assert not (root / "report.html").exists()
            check(f"{artefact} -> {argv[0]}", rc, err, before, after)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    case()


def test_default_results_folder_of_the_template(template):
    assert default_out_dir(template / "checkpoints" / "tiny") == template / "analyses" / "tiny"
    assert RunConfig.load(template / "checkpoints" / "tiny" / "config.json").run_id


# --- issue 26: checksums, argument values, printing ------------------------------------------------------
@pytest.mark.parametrize("artefact", ["checkpoint", "resume state", "data"])
def test_any_changed_byte_in_a_files_tensors_is_refused(template, artefact):
    """A content checksum: every flip of any bits of any byte of the tensor data is caught (never read
    as if it were the file written)."""
    from grokscope.errors import GrokscopeError
    from grokscope.files import read_safetensors_meta
    rel = ARTEFACTS[artefact][0]

    @SETTINGS
    @given(where=st.integers(0, 999_999), mask=st.integers(1, 255))  # (no float strategy: the CLI flushes subnormals)
    def case(where, mask):
        root = Path(tempfile.mkdtemp())
        try:
            f = root / "f.safetensors"
            shutil.copy(template / rel, f)
            raw = bytearray(f.read_bytes())
            start = 8 + int.from_bytes(raw[:8], "little")  # the tensor data follows the header
            raw[start + where * (len(raw) - start) // 1_000_000] ^= mask
            f.write_bytes(bytes(raw))
            with pytest.raises(GrokscopeError, match="checksum"):
                read_safetensors_meta(f, artefact)
            record(f"{artefact}: changed data byte", "refused (checksum)")
        finally:
            shutil.rmtree(root, ignore_errors=True)

    case()


STEP_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["inf", "-inf", "nan", "1e400", "1e3", "10", "0,5",
                                                              "5,,10", "2.5", "-1", "0x10", "१०"]))


@SETTINGS
@given(steps=STEP_TEXT)
def test_any_analyze_steps_value_is_analysed_or_one_line(template, capsys, steps):
    root = Path(tempfile.mkdtemp())
    try:
        shutil.copytree(template / "checkpoints", root / "checkpoints", symlinks=True)
        before = snapshot(root)
        rc, err = cli(["analyze", "--ckpt-dir", root / "checkpoints" / "tiny", "--only", "weight_norms", "--steps",
                       steps, "--out", root / "res", "--no-progress"], capsys)
        check("--steps text -> analyze", rc, err, before, snapshot(root) if rc else before)
    finally:
        shutil.rmtree(root, ignore_errors=True)


OUT_TEXT = st.one_of(  # one folder name (no "/", not "." or "..": nothing outside the test's folder)
    st.text(st.characters(blacklist_characters="/"), max_size=40).filter(lambda t: t.strip() not in (".", "..")),
    st.sampled_from(["", " ", "\udcff", "a\u202eb", "x" * 250, "a\nb", "\x1b[31mred", "nul\x00"]))


@SETTINGS
@given(out=OUT_TEXT)
def test_any_train_out_is_trained_or_one_line_and_printed_safely(capsys, out):
    import unicodedata
    root = Path(tempfile.mkdtemp())
    cwd = os.getcwd()
    try:
        os.chdir(root)
        rc, err = cli(["train", "--op", "x+y", "--p", "5", "--steps", "1", "--d-model", "16", "--d-mlp", "32",
                       "--n-heads", "2", "--device", "cpu", "--out", out, "--no-progress"], capsys)
        if rc == 2:
            assert not any(root.iterdir()), "a refused --out left something behind"
        check("--out text -> train", rc, err, {}, {})
        for line in err:  # nothing that can hide or rewrite text on the terminal
            assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in line), line
    finally:
        os.chdir(cwd)
        shutil.rmtree(root, ignore_errors=True)


@SETTINGS
@given(text=st.text())
def test_printable_escapes_exactly_what_cannot_be_shown(text):
    import unicodedata

    from grokscope.errors import printable
    out = printable(text)
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in out)
    if all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in text):
        assert out == text
