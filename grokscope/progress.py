"""The progress bars: tqdm's automatic choice (a widget in a notebook that has ipywidgets, text in a
terminal), and in a Jupyter kernel without ipywidgets one text output updated in place (tqdm's text
bar would leave a separate stderr chunk in the saved notebook every half second), without the warning
tqdm prints there. Pass ``progress=False`` to ``train``/``analyze`` for no bar at all."""
from __future__ import annotations

import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "IProgress not found. Please update jupyter and ipywidgets."
    from tqdm.auto import tqdm as _auto_tqdm
    from tqdm.autonotebook import tqdm as _chosen
from tqdm.std import tqdm as _text_tqdm

TEXT = _chosen is _text_tqdm  # tqdm chose its text bar (a terminal, or a kernel without ipywidgets)


def in_kernel_without_widgets() -> bool:
    """Running in a Jupyter kernel (IPython already imported by it) that cannot show tqdm's widget."""
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:
        return False
    if shell is None or "IPKernelApp" not in getattr(shell, "config", {}):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return True
    return False


class _Sink:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class DisplayTqdm(_text_tqdm):
    """tqdm's text bar drawn into one notebook output (an IPython display updated in place)."""

    def __init__(self, *args, **kwargs):
        self._handle = None
        kwargs.update(file=_Sink(), dynamic_ncols=False, ncols=kwargs.get("ncols") or 100)
        kwargs.setdefault("ascii", False)
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        from IPython.display import display

        bundle = {"text/plain": self.__str__() if msg is None else msg}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
        return True


def tqdm(*args, **kwargs):
    """A progress bar (see the module docstring); tqdm's arguments."""
    if not kwargs.get("disable") and TEXT and in_kernel_without_widgets():
        return DisplayTqdm(*args, **kwargs)
    return _auto_tqdm(*args, **kwargs)


tqdm.write = _auto_tqdm.write  # analyze's warnings: tqdm.write(...)

__all__ = ["tqdm", "DisplayTqdm"]
