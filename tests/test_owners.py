"""One owner per noun: every name is imported from the module that defines it (read from the source's AST).

Package code imports only from owners. Tests, benchmarks and examples may also use a package's
``__init__`` public API (the names in its ``__all__``: ``from grokscope import train``, ``from
grokscope.figures import fig_accuracy``), the surface a user sees."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "grokscope"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def defined_names(tree: ast.Module) -> set[str]:
    """Names a module defines: its top-level functions, classes and assignments (in ``if``/``try`` blocks
    too) and the names its functions declare ``global``; not the names it imports."""
    names: set[str] = set()

    def targets(node) -> None:
        for t in ast.walk(node):
            if isinstance(t, ast.Name):
                names.add(t.id)

    def scan(body) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    targets(t)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets(node.target)
            elif isinstance(node, (ast.For, ast.With)):
                targets(node.target) if isinstance(node, ast.For) else None
                scan(node.body)
            elif isinstance(node, ast.If):
                scan(node.body)
                scan(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                    scan(part)

    scan(tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            names.update(node.names)
    return names


def public_api(tree: ast.Module) -> set[str]:
    """The names in a module's ``__all__`` (a literal list)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


_TREES: dict[Path, ast.Module] = {}


def tree_of(path: Path) -> ast.Module:
    if path not in _TREES:
        _TREES[path] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return _TREES[path]


def source_trees(path: Path):
    """(where, AST) of a Python file, or of each code cell of a notebook."""
    if path.suffix == ".ipynb":
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] == "code":
                src = "".join(cell["source"])
                lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines()]
                yield f"{path.relative_to(ROOT)} cell {i}", ast.parse("\n".join(lines))
    else:
        yield str(path.relative_to(ROOT)), tree_of(path)


def imported_from_non_owners(path: Path, allow_public_api: bool) -> list[str]:
    """``where:line: from M import name`` for each grokscope name that ``path`` imports from a module M that
    does not define it (a submodule of a package counts as defined by it)."""
    here = module_name(path) if path.suffix == ".py" and PACKAGE in path.parents else ""
    return [bad for where, tree in source_trees(path)
            for bad in non_owner_imports(tree, where, here, path.name == "__init__.py", allow_public_api)]


def non_owner_imports(tree: ast.Module, where: str, here: str, is_package: bool, allow_public_api: bool) -> list[str]:
    """As ``imported_from_non_owners``, for the AST of module ``here`` (dotted; "" outside the package)."""
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = here.split(".") if is_package else here.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target.split(".")[0] != "grokscope":
            continue
        src = module_path(target)
        assert src is not None, f"{where}: no module {target}"
        defined = defined_names(tree_of(src))
        for alias in node.names:
            name = alias.name
            if name in defined or module_path(f"{target}.{name}") is not None:
                continue
            if allow_public_api and src.name == "__init__.py" and name in public_api(tree_of(src)):
                continue
            bad.append(f"{where}:{node.lineno}: from {target} import {name}")
    return bad


def files(folder: str, pattern: str = "*.py") -> list[Path]:
    return sorted((ROOT / folder).rglob(pattern)) if (ROOT / folder).is_dir() else []


def test_package_code_imports_every_name_from_its_owner():
    bad = [b for p in files("grokscope") for b in imported_from_non_owners(p, allow_public_api=False)]
    assert not bad, "imported from a module that does not define it:\n" + "\n".join(bad)


def test_tests_benchmarks_and_examples_import_from_owners_or_the_public_api():
    paths = files("tests") + files("benchmarks") + files("examples") + files("examples", "*.ipynb")
    bad = [b for p in paths for b in imported_from_non_owners(p, allow_public_api=True)]
    assert not bad, "imported from a module that does not define it:\n" + "\n".join(bad)


def test_the_check_finds_an_alias():
    """The check itself: a re-export is found; a definition, a submodule or a package's public API is not."""
    def check(code: str, allow_public_api: bool = False) -> list[str]:
        found = non_owner_imports(ast.parse(code), "probe", "grokscope.probe", False, allow_public_api)
        return [b.split(": ", 1)[1] for b in found]

    assert check("from .errors import GrokscopeError\nfrom .files import read_text as rt\nfrom . import files\n"
                 "from .analyses.base import REGISTRY\nfrom grokscope.config import RunConfig\n") == []
    assert check("from .train import Path\nfrom .run import RunConfig\nfrom .analyses import compute\n") == \
        ["from grokscope.train import Path", "from grokscope.run import RunConfig", "from grokscope.analyses import compute"]
    assert check("from grokscope.analyses import compute\nfrom grokscope import train\n", allow_public_api=True) == []


@pytest.mark.parametrize("name", ["guard"])
def test_no_module_named_for_a_role_rather_than_what_it_holds(name):
    assert not (PACKAGE / f"{name}.py").exists()


def test_a_modules_all_lists_only_what_it_defines():
    """``__all__`` of a module (not a package's ``__init__``, whose ``__all__`` is its public API) names only
    what the module defines: no name is offered from a second address."""
    bad = []
    for p in files("grokscope"):
        if p.name == "__init__.py":
            continue
        tree = tree_of(p)
        bad += [f"{p.relative_to(ROOT)}: {n}" for n in sorted(public_api(tree) - defined_names(tree))]
    assert not bad, "listed in __all__ but defined elsewhere:\n" + "\n".join(bad)
