"""Every Python example of the README and of the docs pages runs on its own, in a fresh interpreter.

An example is a fenced ``python`` block. The line just above it may say how it runs:

    <!-- example: needs checkpoints/quick -->   a small trained run is put at that path first
    <!-- example: slow -->                      it trains a real run (left out by ``-m "not slow"``)
    <!-- example: skip, REASON -->              not run (keep this rare, and say why)
    <!-- example: transformer-lens 4 -->        runs only under that TransformerLens major (combine
                                                with the others: ``needs checkpoints/quick, transformer-lens 3``)

Each runs as a script (``python example.py``, so ``if __name__ == "__main__":`` works) in a fresh
interpreter with the working folder a new temporary one: it must import what it uses, and it may write
only there. Every example also gets a fast static check: it parses, and every name it reads is imported
or assigned in the block itself (the NameError of a block that leant on an earlier one).
"""
from __future__ import annotations

import ast
import builtins
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DIRECTIVE = re.compile(r"<!--\s*example:\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Example:
    page: str
    line: int  # of the opening fence
    code: str
    directive: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def needs(self) -> str | None:
        m = re.search(r"needs\s+([^\s,]+)", self.directive)
        return m.group(1) if m else None

    @property
    def slow(self) -> bool:
        return bool(re.search(r"\bslow\b", self.directive))

    @property
    def skip(self) -> str | None:
        m = re.match(r"skip\b,?\s*(.*)", self.directive)
        return m.group(1) if m else None

    @property
    def tl_major(self) -> int | None:
        m = re.search(r"transformer-lens\s+(\d+)", self.directive)
        return int(m.group(1)) if m else None


def examples() -> list[Example]:
    out = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() == "```python":
                end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
                above = DIRECTIVE.fullmatch(lines[i - 1].strip()) if i else None
                out.append(Example(str(page.relative_to(ROOT)), i + 1, "\n".join(lines[i + 1:end]) + "\n",
                                   above.group(1) if above else ""))
                i = end
            i += 1
    return out


EXAMPLES = examples()
TL_MAJOR = int(version("transformer-lens").split(".")[0])


def test_the_docs_have_examples_and_every_directive_is_known():
    assert len(EXAMPLES) >= 10 and {e.page for e in EXAMPLES} >= {"README.md", "docs/analyses.md"}
    for e in EXAMPLES:
        assert e.skip is None or e.skip, f"{e.id}: a skipped example says why"
        rest = re.sub(r"needs\s+[^\s,]+|\bslow\b|transformer-lens\s+\d+|skip\b.*", "", e.directive).strip(" ,")
        assert rest == "", f"{e.id}: unknown directive {e.directive!r}"


def unbound_names(code: str) -> set[str]:
    """Names a block reads that it neither imports, assigns, defines nor gets from builtins."""
    tree = ast.parse(code)
    bound, read = set(dir(builtins)) | {"__name__", "__file__"}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return read - bound


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_example_stands_on_its_own(example):
    assert unbound_names(example.code) == set(), f"{example.id} reads names it does not define"
    assert not any(isinstance(n, ast.Constant) and n.value is Ellipsis for n in ast.walk(ast.parse(example.code))), \
        f"{example.id}: a `...` body is not an example that runs"


def repo_state() -> set[str]:
    """What git sees as changed or new in the repository (to check that an example wrote nothing there)."""
    r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], capture_output=True, text=True,
                       cwd=ROOT)
    return set(r.stdout.splitlines()) if r.returncode == 0 else set()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A small trained run (x+y mod 7, one layer without LayerNorm, 20 steps) for the examples that need one."""
    import grokscope
    from conftest import QUIET, tiny_config

    cfg = tiny_config(model={"n_layers": 1, "norm": "none"})
    return grokscope.train(cfg, out=tmp_path_factory.mktemp("docs") / "run", **QUIET).path


def run_example(example: Example, cwd: Path, run_dir: Path | None) -> None:
    if example.needs:
        assert run_dir is not None
        shutil.copytree(run_dir, cwd / example.needs)
    (cwd / "example.py").write_text(example.code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    before = repo_state()
    r = subprocess.run([sys.executable, "example.py"], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{example.id} failed:\n{r.stderr[-3000:]}"
    assert repo_state() <= before, f"{example.id} wrote into the repository: {sorted(repo_state() - before)}"


def marked(example: Example):
    marks = [pytest.mark.slow]  # a subprocess each (the suite's rule for slow)
    if example.skip:
        marks.append(pytest.mark.skip(reason=f"{example.id}: {example.skip}"))
    if example.tl_major is not None and example.tl_major != TL_MAJOR:
        marks.append(pytest.mark.skip(reason=f"{example.id}: for TransformerLens {example.tl_major}, "
                                             f"{TL_MAJOR} is installed"))
    return pytest.param(example, id=example.id, marks=marks)


@pytest.mark.parametrize("example", [marked(e) for e in EXAMPLES])
def test_example_runs_in_a_fresh_interpreter(example, tmp_path, request):
    run_dir = request.getfixturevalue("small_run") if example.needs else None
    run_example(example, tmp_path, run_dir)


# --- what the pages name exists -------------------------------------------------------------------------
def page_text() -> str:
    return "\n".join(p.read_text() for p in PAGES)


def test_every_repository_path_the_pages_name_exists():
    """`grokscope/run.py`, `benchmarks/bench_train.py`, ... named in the README and docs are files of the repo."""
    named = {m.rstrip(".,:;)") for m in re.findall(r"(?<![\w/.-])(?:grokscope|tests|benchmarks|examples|docs)/[\w./-]*",
                                                    page_text())}
    assert len(named) >= 20
    assert sorted(n for n in named if not (ROOT / n).exists()) == []


def test_every_test_the_pages_name_exists():
    """The known-answer tests the pages cite by name are tests of the suite."""
    named = set(re.findall(r"`(test_\w+)`", page_text()))
    defined = {m for p in (ROOT / "tests").rglob("*.py") for m in re.findall(r"def (test_\w+)", p.read_text())}
    assert len(named) >= 30
    assert sorted(named - defined) == []
