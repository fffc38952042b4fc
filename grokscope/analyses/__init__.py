"""The analyses: one module per analysis in this folder, each registering itself with ``@register``.

Importing this package imports every module beside it (``pkgutil``), so adding an analysis is
writing one file; modules whose name starts with ``_`` are helpers and are not imported here.
``REGISTRY`` maps each name to its ``Analysis`` (see ``base.py`` for the contract).
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, Analysis, compute, get_analysis, register

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Analysis", "register", "get_analysis", "compute"]
