"""mkdocs hook: one API page per module of the grokscope package, found when the site is built.

The pages are not files in docs/: they are generated from the modules that exist at build time, so a
module added, renamed or removed changes the API reference without any edit here. Each page is one
mkdocstrings directive (``::: grokscope.x``), which renders the module's docstrings.
"""
from __future__ import annotations

import ast
from pathlib import Path

from mkdocs.structure.files import File

PACKAGE = "grokscope"
ROOT = Path(__file__).resolve().parents[2]


def module_files() -> dict[str, Path]:
    """Dotted name -> file of the package's public modules and sub-packages (private `_x` modules left out)."""
    out = {}
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if not any(p.startswith("_") for p in parts):
            out[".".join(parts)] = path
    return dict(sorted(out.items()))


def summary(path: Path) -> str:
    """The first line of a module's docstring (read without importing it)."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def page_uri(module: str) -> str:
    return f"api/{module}.md"


def on_config(config):
    """Append the "API reference" section to the nav: an index, then one page per module."""
    pages = [{"Index": "api/index.md"}] + [{m: page_uri(m)} for m in module_files()]
    config["nav"] = [*(config["nav"] or []), {"API reference": pages}]
    return config


def on_files(files, config):
    """Add the generated pages to the site's files."""
    mods = module_files()
    index = ["# API reference", "",
             "Generated from the docstrings of every module when the site is built. "
             "Import each name from the module that defines it.", "",
             "| module | what it holds |", "|---|---|"]
    escaped = {m: summary(path).replace("|", "\\|") for m, path in mods.items()}  # a table cell
    index += [f"| [`{m}`]({m}.md) | {escaped[m]} |" for m in mods]
    files.append(File.generated(config, "api/index.md", content="\n".join(index) + "\n"))
    for m in mods:
        files.append(File.generated(config, page_uri(m), content=f"# `{m}`\n\n::: {m}\n"))
    return files
