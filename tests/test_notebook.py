"""examples/tour.ipynb runs top to bottom (nbclient), and its figures survive an export."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("CI") == "true":  # the dev extra installs them: CI runs these tests, never skips them
    import nbclient
    import nbformat
else:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
PLOTLY_JSON = "application/vnd.plotly.v1+json"


TOUR_SECONDS = 300  # "a few minutes on a busy machine", as the tour says


@pytest.mark.slow
def test_tour_notebook_runs_and_embeds_plotly_js_once(tmp_path, monkeypatch):
    """The tour, executed: it groks in the time it states, its printed answers are right, the phases it
    names are all present, it writes only into its scratch folder (under $TMPDIR) and says how much."""
    import re

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it: one torch thread, as the other tests
    scratch, cwd = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the kernel's tempfile.gettempdir(): a fresh run is trained
    nb = nbformat.read(ROOT / "examples" / "tour.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=TOUR_SECONDS, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
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
    home = scratch / "grokscope-tour"
    assert (home / "checkpoints" / "tour" / "config.json").is_file()
    assert (home / "analyses" / "tour" / "phases.csv").is_file()
    assert not any(cwd.iterdir())  # nothing written where the notebook runs
    text = "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in outputs)
    assert "blocks.0.mlp.hook_post" not in text and "torch.Size([6, 4, 128])" in text
    # it grokked, in the time it states
    steps, seconds = map(int, re.search(r"(\d+) steps, (\d+) s", text).groups())
    assert seconds < TOUR_SECONDS and "Grokked: train accuracy reached 99 %" in text
    import grokscope

    run = grokscope.load_run(home / "checkpoints" / "tour")
    assert run.steps[-1] == steps and run.metrics.val_acc.iloc[-1] >= 0.99
    # the six answers it prints ("0 x+y 2 = 2 (right)") are right
    answers = re.findall(r"^(\d+) x\+y (\d+) = (\d+) \((right|wrong: \d+)\)$", text, re.M)
    assert len(answers) == 6 and all(int(c) == (int(a) + int(b)) % 31 and v == "right" for a, b, c, v in answers)
    # the phases it names are all present, and the table it shows says so
    assert "phases present: memorisation, circuit_formation, clean_up, grokked" in text
    import pandas as pd

    phases = pd.read_csv(home / "analyses" / "tour" / "phases.csv")
    assert list(phases.phase) == ["memorisation", "circuit_formation", "clean_up", "grokked"]
    assert phases.present.astype(str).str.lower().eq("true").all()
    # it says how much disk it took, and that is what is there
    mb = int(re.search(r"grokscope-tour: (\d+) MB", text).group(1))
    assert mb == round(sum(f.stat().st_size for f in home.rglob("*") if f.is_file()) / 1e6)
    assert 5 <= mb <= 7  # "about 6 MB", as the tour says


@pytest.mark.slow
def test_progress_bars_in_a_notebook_are_one_output_each(tmp_path, monkeypatch):
    """Without ipywidgets, tqdm's text bar would leave a stderr chunk every half second in the saved
    notebook; grokscope's bar is one output, updated in place (and no tqdm warning)."""
    try:
        import ipywidgets  # noqa: F401
        pytest.skip("ipywidgets is installed: tqdm draws its widget")
    except ImportError:
        pass
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import grokscope\n"
        "cfg = grokscope.RunConfig().update({'task': {'op': 'x+y', 'p': 13}, 'model': {'n_layers': 1, 'd_model': 16,"
        " 'n_heads': 2, 'd_mlp': 16}, 'train': {'steps': 400}, 'schedule': {'ckpt_every': 100}})\n"
        "import time\n"
        "from grokscope.train import Trainer\n"
        "step = Trainer.step\n"
        "Trainer.step = lambda self: (time.sleep(0.005), step(self))  # a run long enough for many refreshes\n"
        "run = grokscope.train(cfg, out='r')\n"
        "tables = grokscope.analyze(run, only='weight_norms')")]
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    bars = [o["data"]["text/plain"] for o in outputs if o.output_type == "display_data"]
    assert len(bars) == 2 and "400/400" in bars[0] and "ckpt" in bars[1]
