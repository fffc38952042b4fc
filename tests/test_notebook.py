"""examples/tour.ipynb runs top to bottom (nbclient), and its figures survive an export."""
from __future__ import annotations

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
PLOTLY_JSON = "application/vnd.plotly.v1+json"


def test_tour_notebook_runs_and_embeds_plotly_js_once(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it: one torch thread, as the other tests
    nb = nbformat.read(ROOT / "examples" / "tour.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # a cell that fails raises CellExecutionError, with its traceback
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], "progress bars or warnings"
    figures = [o for o in outputs if PLOTLY_JSON in o.get("data", {})]
    assert len(figures) == 2
    for o in figures:  # JupyterLab's renderer and, for an exported page, HTML that draws with plotly.js
        assert "Plotly.newPlot" in o["data"]["text/html"]
    library = [o for o in outputs if len(o.get("data", {}).get("text/html", "")) > 1_000_000]
    assert len(library) == 1, "plotly.js is embedded exactly once"
    assert (tmp_path / "checkpoints" / "tour" / "config.json").is_file()
    assert (tmp_path / "analyses" / "tour" / "phases.csv").is_file()
    text = "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in outputs)
    assert "blocks.0.mlp.hook_post" not in text and "torch.Size([6, 4, 128])" in text
