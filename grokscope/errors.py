"""The one error type for bad input (the CLI prints its message on one line and exits with code 2), and
the "did you mean" hint every lookup of a name (operation, analysis, config field, variant...) gives."""
from __future__ import annotations

from typing import Iterable


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """"; did you mean 'x+y'?" for the closest of ``options`` to ``name``, or "" when none is close."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control and invisible formatting characters (a right-to-left
    override, a zero-width space, an escape sequence, a line break) and bytes that were not UTF-8 (read as
    lone surrogates) are written as Python escapes (``\\u202e``, ``\\x1b``, ``\\udcff``); the rest as it is."""
    import unicodedata

    out = []
    for c in str(text):
        if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(ascii(c)[1:-1])
        else:
            out.append(c)
    return "".join(out)


class GrokscopeError(ValueError):
    """A problem with what the user asked for (bad option, missing run, mismatched config...)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``grokscope.train`` (or ``train_many``) after it saved a checkpoint and the resume
    state. ``runs``: the runs (``run``: the first); the message says how to continue, from Python and
    from a shell. A KeyboardInterrupt, so that a notebook's "Run all" stops here."""

    def __init__(self, runs: list, step: int):
        self.runs, self.step = list(runs), step
        self.run = self.runs[0] if self.runs else None
        import shlex

        where = [str(r.path) for r in self.runs]
        python = " and ".join(f"grokscope.train(resume={w!r})" for w in where[:2]) + (" ..." if len(where) > 2 else "")
        shell = " and ".join(f"grokscope train --resume {shlex.quote(w)}" for w in where[:2]) + (" ..." if len(where) > 2 else "")
        super().__init__(f"training interrupted at step {step}; the checkpoint and resume state are saved. "
                         f"Continue in Python with {python}, or in a shell with {shell}")
