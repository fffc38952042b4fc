"""The report as a reader sees it: a real small run's page opened in headless Chromium.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages ending
in a NUL byte on file descriptors 3 and 4), so no extra Python package is needed. With CI=true a
missing Chromium is a failure (``.ci/run`` installs Debian's ``chromium``); elsewhere the tests skip.
Screenshots go to the test's tmp dir and are copied to /tmp/grokscope-report-shots/.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import pandas as pd

from grokscope.analyze import analyze
from grokscope.report import build_report, compare_report

pytestmark = pytest.mark.slow
SHOTS = Path("/tmp/grokscope-report-shots")
LOCAL = ("file:", "data:", "about:", "blob:")  # anything else would need the network
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe"]


def chromium_path() -> str:
    """$GROKSCOPE_CHROMIUM, else chromium on the PATH; missing: a failure in CI, a skip elsewhere."""
    given = os.environ.get("GROKSCOPE_CHROMIUM")
    exe = shutil.which(given) if given else next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if exe is None:
        message = (f"Chromium is not installed{f' ({given} is not an executable)' if given else ''}: the report's "
                   "browser test needs it (apt-get update && apt-get install -y chromium, or set GROKSCOPE_CHROMIUM)")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return exe


class Browser:
    """A headless Chromium and one page, spoken to with DevTools protocol commands."""

    def __init__(self, exe: str, profile: Path, width: int = 1280, height: int = 900):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        args = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$@" 3<&{to_child_r} 4>&{from_child_w}', "chromium", *args],
                                     pass_fds=(to_child_r, from_child_w), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                self.messages.put(None)
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for raw in complete:
                self.messages.put(json.loads(raw))

    def call(self, method: str, session: bool = False, timeout: float = 60.0, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{method}: no answer from Chromium within {timeout} s") from None
            if reply is None:
                raise RuntimeError("Chromium closed the DevTools pipe")
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def pump(self, seconds: float) -> None:
        """Collect events for a while (nothing is sent)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                reply = self.messages.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                return
            if reply is not None and "method" in reply:
                self.events.append(reply)

    def js(self, expression: str):
        out = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def open(self, path: Path, timeout: float = 60.0) -> float:
        """Navigate to a file and wait until every figure on it has rendered; returns the seconds it took."""
        start = time.monotonic()
        self.call("Page.navigate", session=True, url=path.resolve().as_uri())
        while time.monotonic() - start < timeout:
            if self.js("document.readyState === 'complete' && window.grokscopeRendered !== undefined && "
                       "window.grokscopeRendered === document.querySelectorAll('div.figure').length"):
                return time.monotonic() - start
            self.pump(0.1)
        raise AssertionError(f"the figures of {path} did not all render within {timeout} s")

    def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path, clip: dict | None = None) -> Path:
        if clip is None:
            height = self.js("document.documentElement.scrollHeight")
            clip = {"x": 0, "y": 0, "width": self.js("document.documentElement.scrollWidth"), "height": height}
        data = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True,
                         clip={**clip, "scale": 1})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and requests that leave the machine."""
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('exception', {}).get('description') or p}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
            elif m == "Network.requestWillBeSent" and not p["request"]["url"].startswith(LOCAL):
                out.append(f"network request: {p['request']['url']}")
        return out

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_child)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = chromium_path()
    b = Browser(exe, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def report(grokked_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("analyses") / grokked_run.path.name
    analyze(grokked_run, out=out, progress=False)  # the default analyses
    analyze(grokked_run, only="hessian", steps=grokked_run.steps[::15], out=out, progress=False)
    return build_report(grokked_run, results=out)


def save(browser: Browser, tmp: Path, name: str, clip: dict | None = None) -> Path:
    path = browser.screenshot(tmp / name, clip)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / name)
    return path


def test_report_loads_renders_every_figure_and_the_slider_moves_the_map(browser, report, tmp_path, grokked_run):
    browser.events.clear()
    seconds = browser.open(report)
    assert seconds < 20, f"the page took {seconds:.1f} s to render"
    browser.pump(0.5)
    assert browser.problems() == []
    page = browser.js("""(() => {
        const sections = [...document.querySelectorAll('section')];
        return {sections: sections.map(s => ({id: s.id,
                    figures: s.querySelectorAll('div.figure').length,
                    plots: [...s.querySelectorAll('div.figure')].filter(d => d.querySelector('.main-svg')).length,
                    traces: [...s.querySelectorAll('div.figure')].map(d => (d.data || []).length),
                    missing: s.querySelectorAll('p.missing').length})),
                title: document.title, header: document.querySelector('header').innerText};
    })()""")
    sections = {s["id"]: s for s in page["sections"]}
    expected = {"training": 1, "weights": 1, "neurons": 2, "sparsity": 1, "fourier": 3, "circuits": 1, "tsne": 3,
                "flatness": 1, "llc": 0}
    expected["forecast"] = int(grokked_run.metrics["forecast_p"].notna().any())  # the live forecast's figure
    assert {k: v["figures"] for k, v in sections.items()} == expected
    for sid, s in sections.items():
        assert s["plots"] == s["figures"], f"section {sid}: {s['plots']} of {s['figures']} figures rendered"
        assert all(n > 0 for n in s["traces"]), f"section {sid} has an empty figure"
    assert sections["flatness"]["missing"] == 1  # sharpness was not computed: a line says how
    assert sections["llc"]["missing"] == 1  # nor the LLC (expensive, opt-in)
    # the phases table shows each phase's boundaries; its full sentence is behind the row's toggle
    assert "Grokked" in page["header"] and "circuit formation" in page["header"]
    assert "starts: train accuracy reached 99 %; ends: validation loss below chance" in page["header"]
    assert "circuit formation from step" not in page["header"]
    opened = browser.js("(() => { document.querySelectorAll('header details').forEach(d => d.open = true); "
                        "return document.querySelector('header').innerText; })()")
    assert "circuit formation from step" in opened

    save(browser, tmp_path, "report-full.png")
    browser.js("window.scrollTo(0, 0)")
    save(browser, tmp_path, "report-top.png", {"x": 0, "y": 0, "width": 1280, "height": 1400})

    # the slider: click its rail at the far left (the first checkpoint; the page opens at the last)
    state = """(() => {const gd = document.querySelector('#tsne div.figure');
        return {active: gd._fullLayout.sliders[0].active, x: Array.from(gd._fullData[1].x).slice(0, 5),
                label: gd.querySelector('.slider-group > .slider-label').textContent}})()"""
    before = browser.js(state)
    rail = browser.js("""(() => {const gd = document.querySelector('#tsne div.figure');
        gd.scrollIntoView(); const r = gd.querySelector('.slider-rail-rect').getBoundingClientRect();
        return {x: r.left, y: r.top + r.height / 2, width: r.width}})()""")
    browser.click(rail["x"] + 2, rail["y"])
    browser.pump(1.0)
    after = browser.js(state)
    assert before["active"] > 0 and after["active"] == 0, (before, after)
    assert after["x"] != before["x"] and after["label"] != before["label"]
    top = browser.js("document.querySelector('#tsne').getBoundingClientRect().top + window.scrollY")
    save(browser, tmp_path, "report-tsne-first-step.png", {"x": 0, "y": top, "width": 1280, "height": 700})
    assert browser.problems() == []


def test_key_frequency_circles_one_panel_per_key_frequency_and_their_slider_moves(browser, report, tmp_path):
    browser.events.clear()
    page = shutil.copy(report, tmp_path / "circles.html")  # a new address: the open page is surely replaced
    browser.open(Path(page))
    points = pd.read_csv(report.parent / "circle_points.csv")
    n_keys = points["freq"].nunique()
    steps = sorted(points["step"].unique())
    assert 1 <= n_keys <= 8 and len(steps) >= 10  # about 20 log-spaced checkpoints plus the phase boundaries
    fig = "[...document.querySelectorAll('#tsne div.figure')][1]"
    panels = browser.js(f"""(() => {{const gd = {fig};
        return {{titles: [...gd.querySelectorAll('.annotation-text')].map(a => a.textContent),
                 points: gd._fullData.filter(t => t.mode === 'markers').map(t => t.x.length),
                 axes: Object.keys(gd._fullLayout).filter(k => /^xaxis\\d*$/.test(k)).length,
                 steps: gd._fullLayout.sliders[0].steps.length}}}})()""")
    assert panels["axes"] == 2 * n_keys and len(panels["points"]) == 2 * n_keys
    assert sum(t.startswith("embedding, k = ") for t in panels["titles"]) == n_keys
    assert sum(t.startswith("unembedding, k = ") for t in panels["titles"]) == n_keys
    assert set(panels["points"]) == {points["token"].nunique()} and panels["steps"] == len(steps)
    assert browser.js(f"{fig}.getBoundingClientRect().height") < 900  # the whole figure fits the window
    state = f"""(() => {{const gd = {fig};
        return {{active: gd._fullLayout.sliders[0].active, x: Array.from(gd._fullData[1].x).slice(0, 5),
                 range: gd._fullLayout.xaxis.range, label: gd.querySelector('.slider-group > .slider-label').textContent}}}})()"""
    before = browser.js(state)
    rail = browser.js(f"""(() => {{const gd = {fig};
        gd.querySelector('.slider-rail-rect').scrollIntoView({{block: 'center'}});
        const r = gd.querySelector('.slider-rail-rect').getBoundingClientRect();
        return {{x: r.left, y: r.top + r.height / 2}}}})()""")
    browser.click(rail["x"] + 2, rail["y"])
    browser.pump(1.0)
    after = browser.js(state)
    assert before["active"] == len(steps) - 1 and after["active"] == 0, (before, after)
    assert after["x"] != before["x"] and after["label"] != before["label"]
    first = points[(points.step == steps[0]) & (points.matrix == "embed")]
    first = first[first.freq == first.freq.iloc[0]].sort_values("token")
    assert after["x"] == pytest.approx(first["x"].to_numpy()[:5], rel=1e-4, abs=1e-6)  # the first checkpoint's points
    top = browser.js(f"{fig}.getBoundingClientRect().top + window.scrollY")
    save(browser, tmp_path, "report-circles-first-step.png", {"x": 0, "y": top, "width": 1280, "height": 700})
    assert browser.problems() == []


def test_log_linear_switch_and_compare_page(browser, report, grokked_run, tiny_run, tmp_path):
    browser.events.clear()
    browser.open(report)
    types = "[...document.querySelectorAll('div.figure.time')].map(d => d._fullLayout.xaxis.type)"
    assert set(browser.js(types)) == {"log"}
    browser.js("document.getElementById('xscale').click()")
    browser.pump(1.0)
    assert set(browser.js(types)) == {"linear"}

    page = compare_report([report.parent, tiny_run.path], tmp_path / "compare.html")
    browser.events.clear()
    browser.open(page)
    browser.pump(0.3)
    assert browser.problems() == []
    n = browser.js("document.querySelectorAll('div.figure').length")
    rendered = "[...document.querySelectorAll('div.figure')].every(d => d.querySelector('.main-svg'))"
    assert n >= 2 and browser.js(rendered)
    save(browser, tmp_path, "compare-top.png", {"x": 0, "y": 0, "width": 1280, "height": 1300})


def test_the_lead_lag_table_sorts_by_the_column_clicked(browser, tmp_path):
    """Planted tables; the page's own script sorts: by step up, then down; blank cells (measures that did
    not move) stay last either way."""
    from grokscope.analyses.phases import find_leadlag
    from grokscope.figures import fig_accuracy
    from grokscope.figures.inputs import ReportRun
    from grokscope.figures.page import Page
    from grokscope.report import _leadlag_table

    from test_report import tables

    t = tables()
    t.results["phases_leadlag"] = find_leadlag(t.metrics, t.results)
    page = Page("lead/lag")
    page.add(_leadlag_table(ReportRun(t, None, None, tmp_path)))
    page.figure(fig_accuracy(t.metrics, t.phases), "accuracy")  # the page waits for its figures to render
    path = page.write(tmp_path / "leadlag.html")
    browser.events.clear()
    browser.open(path)
    column = ("[...document.querySelectorAll('table.leadlag tbody tr')]"
              ".map(r => r.cells[2].dataset.sort).map(v => v === '' ? null : Number(v))")
    start = browser.js(column)
    moved = [v for v in start if v is not None]
    assert moved == sorted(moved) and len(moved) >= 3
    header = "document.querySelectorAll('table.leadlag thead th')[2]"
    browser.js(f"{header}.click()")
    assert browser.js(column) == sorted(moved) + [None] * (len(start) - len(moved))
    browser.js(f"{header}.click()")
    assert browser.js(column) == sorted(moved, reverse=True) + [None] * (len(start) - len(moved))
    browser.js("document.querySelectorAll('table.leadlag thead th')[0].click()")  # by name
    names = "[...document.querySelectorAll('table.leadlag tbody tr')].map(r => r.cells[0].textContent)"
    assert browser.js(f"(n => n.every((x, i) => i === 0 || n[i - 1].localeCompare(x) <= 0))({names})")
    assert sorted(browser.js(names)) == sorted(t.results["phases_leadlag"]["label"])
    assert browser.problems() == []
