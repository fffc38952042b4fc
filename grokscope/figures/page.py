"""One self-contained HTML page holding plotly figures: plotly.js inlined once, each figure as JSON.

Every figure is a ``<div class="figure">`` plus a ``<script type="application/json">`` holding its data,
layout and frames; one small script draws them all with ``Plotly.newPlot`` and wires the page-wide
"step axis: log / linear" button to every figure marked as a time plot. In the JSON, ``<``, ``>`` and
``&`` are written as ``\\u003c``, ``\\u003e``, ``\\u0026`` (still valid JSON), so no text from a run can
close the script element; every other run-derived string is passed through ``html.escape`` by the
caller (``esc``). Nothing is fetched from the network: the page works offline. ``Page.write`` writes
the page atomically (a full disk leaves no partial file) or says in one error line why it could not.
"""
from __future__ import annotations

import re
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from ..errors import GrokscopeError
from ..files import atomic_write_text
from .common import esc

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 24px 60px}
h1{font-size:1.5em;margin:.2em 0 .1em}h2{font-size:1.25em;margin:0 0 .5em;border-bottom:1px solid #ddd;padding-bottom:.2em}
section,header.summary{background:#fff;border:1px solid #e2e4e8;border-radius:6px;padding:14px 18px;margin:14px 0}
.verdict{font-size:1.1em;font-weight:600;margin:.4em 0 .7em}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:.3em 0}
dl.facts dt{color:#666}dl.facts dd{margin:0}
ul.phases{list-style:none;padding:0;margin:.4em 0}ul.phases li{margin:.25em 0;padding-left:1.5em;position:relative}
.chip{display:inline-block;width:.95em;height:.95em;border-radius:2px;vertical-align:-.1em;margin-right:.35em;opacity:.8}
ul.phases .chip{position:absolute;left:0;top:.2em}
.absent{color:#777}.note{color:#8a5300;background:#fff6e5;border-left:3px solid #e8a33d;padding:5px 10px;margin:6px 0}
.missing{color:#555;font-style:italic}.missing code,.note code{font-style:normal;background:#f0f0f0;padding:1px 4px;border-radius:3px}
p.caption{color:#444;margin:2px 0 16px;font-size:.95em}
nav.toc a{margin-right:12px;white-space:nowrap}
.controls{margin:.6em 0}.controls button{font:inherit;padding:3px 10px;border:1px solid #bbb;border-radius:4px;background:#fafafa;cursor:pointer}
.legend span{margin-right:14px;white-space:nowrap}
table.runs{border-collapse:collapse;margin:.4em 0}table.runs td,table.runs th{border-bottom:1px solid #e2e4e8;padding:3px 10px;text-align:left}
"""

SCRIPT = """
(function(){
  var config = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"]};
  var divs = document.querySelectorAll("div.figure[data-json]");
  window.grokscopeRendered = 0;
  divs.forEach(function(div){
    var fig = JSON.parse(document.getElementById(div.dataset.json).textContent);
    Plotly.newPlot(div, {data: fig.data, layout: fig.layout, frames: fig.frames || [], config: config})
      .then(function(){ window.grokscopeRendered += 1; });
  });
  var button = document.getElementById("xscale");
  if (!button) return;
  button.addEventListener("click", function(){
    var type = button.dataset.scale === "log" ? "linear" : "log";
    button.dataset.scale = type;
    button.textContent = "step axes: " + type + " (click for " + (type === "log" ? "linear" : "log") + ")";
    document.querySelectorAll("div.figure.time").forEach(function(gd){
      var update = {};
      Object.keys(gd.layout).forEach(function(key){
        if (!/^xaxis\\d*$/.test(key)) return;
        update[key + ".type"] = type;
        update[key + ".dtick"] = type === "log" ? 1 : null;
        update[key + ".autorange"] = true;
        var title = gd.layout[key].title && gd.layout[key].title.text;
        if (title) {
          update[key + ".title.text"] = title.replace(/ \\(log scale\\)$/, "") + (type === "log" ? " (log scale)" : "");
        }
      });
      Plotly.relayout(gd, update);
    });
  });
})();
"""


def figure_json(fig: go.Figure) -> str:
    """The figure as JSON that is safe inside a script element."""
    text = pio.to_json(fig, validate=False, remove_uids=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "figure"


class Page:
    """Collects HTML pieces and figures, then writes one page."""

    def __init__(self, title: str):
        self.title = title  # plain text; escaped here
        self.parts: list[str] = []
        self.data: list[str] = []
        self.n_figures = 0

    def add(self, html_text: str) -> None:
        self.parts.append(html_text)

    def figure(self, fig: go.Figure, name: str, caption: str | None = None, time_axis: bool = True) -> None:
        """A figure div (class ``time`` for step axes) with its caption; ``caption`` is plain text."""
        self.n_figures += 1
        fid = f"fig-{self.n_figures}-{slug(name)}"
        height = int(fig.layout.height or 450)
        cls = "figure time" if time_axis else "figure"
        self.parts.append(f'<div class="{cls}" id="{fid}" data-json="{fid}-json" style="min-height:{height}px"></div>')
        if caption:
            self.parts.append(f'<p class="caption">{esc(caption)}</p>')
        self.data.append(f'<script type="application/json" id="{fid}-json">{figure_json(fig)}</script>')

    def html(self) -> str:
        return "\n".join([
            "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(self.title)}</title>", f"<style>{CSS}</style>",
            f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head>", "<body>", "<main>",
            *self.parts, "</main>", *self.data, f"<script>{SCRIPT}</script>", "</body>", "</html>", ""])

    def write(self, path: str | Path) -> Path:
        """Write the page to ``path`` (its folder created) and return the path."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, self.html())  # no temporary file left behind on a full disk
        except OSError as e:
            raise GrokscopeError(f"cannot write the report {path}: {e.strerror}") from None
        return path


__all__ = ["Page", "figure_json", "slug"]
