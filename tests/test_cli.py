"""The command line: fast listings, --version, plain help texts, default run names, the README's commands."""
from __future__ import annotations

import argparse
import importlib
import json
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import grokscope
from grokscope.cli import COMMANDS, _static_catalog, analysis_catalog, make_parser, main

from conftest import QUIET

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("argv", [["--help"], ["ops"], ["variants"], ["presets"], ["analyses"], ["--version"],
                                  ["train", "--help"]])
def test_listings_and_help_import_neither_torch_nor_transformer_lens(argv):
    """What makes them answer in a fraction of a second (5 to 11 s before): nothing heavy is imported."""
    code = (f"import sys\nfrom grokscope.cli import main\ntry:\n    rc = main({argv!r})\nexcept SystemExit as e:\n"
            f"    rc = e.code\nheavy = sorted(m for m in ('torch', 'transformer_lens', 'pandas', 'plotly', 'scipy', "
            f"'sklearn') if m in sys.modules)\nprint('HEAVY', ','.join(heavy), 'RC', rc, file=sys.stderr)")
    r = run_python(code)
    assert f"HEAVY  RC 0" in r.stderr, r.stderr[-2000:]
    assert r.stdout.strip()


@pytest.mark.slow
def test_import_grokscope_is_light_and_names_load_on_use():
    r = run_python("import sys, grokscope\nprint('torch' in sys.modules)\n"
                   "grokscope.train\nprint('torch' in sys.modules, callable(grokscope.train))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True", "True"]


@pytest.mark.slow
def test_train_and_analyze_stay_functions_when_their_submodules_are_imported():
    r = run_python("import grokscope.train, grokscope.analyze, grokscope.provenance, grokscope.batched, grokscope\n"
                   "from grokscope.loss import evaluate\n"
                   "print(grokscope.train.__module__, grokscope.analyze.__module__, grokscope.provenance.__module__,"
                   " callable(grokscope.train))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["grokscope.train", "grokscope.analyze", "grokscope.provenance", "True"]
    for name in grokscope.__all__:
        assert getattr(grokscope, name) is not None
    assert set(grokscope.__all__) <= set(dir(grokscope))
    with pytest.raises(AttributeError):
        grokscope.no_such_name


def test_version(capsys):
    assert grokscope.__version__ == version("grokscope")
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"grokscope {grokscope.__version__}"


def test_static_analysis_catalog_matches_the_registry():
    from grokscope.analyses import REGISTRY

    static = _static_catalog(ROOT / "grokscope" / "analyses")
    live = [{"name": a.name, "summary": a.summary, "kind": a.kind, "default_steps": a.default_steps,
             "expensive": a.expensive} for a in REGISTRY.values()]
    assert static == live
    assert analysis_catalog() == live  # the registry is imported here: the live one is used


def test_static_catalog_reads_a_new_analysis_file(tmp_path):
    (tmp_path / "base.py").write_text("def register(*a, **k): pass\n")
    (tmp_path / "_helper.py").write_text("@register('hidden', summary='no')\ndef f(): pass\n")
    (tmp_path / "mine.py").write_text("from .base import register\n\n"
                                      "@register('mine', summary='my analysis', kind='run', expensive=True)\n"
                                      "def mine(run, results):\n    pass\n")
    assert _static_catalog(tmp_path) == [{"name": "mine", "summary": "my analysis", "kind": "run",
                                          "default_steps": "all", "expensive": True}]
    (tmp_path / "dyn.py").write_text("S = 'x'\n@register('dyn', summary=S)\ndef f(): pass\n")
    with pytest.raises(ValueError):  # not a literal: analysis_catalog() then imports the registry
        _static_catalog(tmp_path)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _help_lines(parser: argparse.ArgumentParser) -> dict[str, str]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.help for a in action._choices_actions}


def test_every_command_is_defined_once_in_cli():
    """cli.py is the only argparse: each sub-command's full parser carries the help line that
    grokscope --help shows without building it, and no other module of the package uses argparse."""
    listed = _help_lines(make_parser())
    assert list(listed) == list(COMMANDS)
    for command in COMMANDS:
        full = make_parser(command)
        assert _help_lines(full) == listed, command
        assert any(a.option_strings for a in _subparsers(full)[command]._actions), command  # the real one: --help
    others = [p for p in (ROOT / "grokscope").rglob("*.py") if p.name != "cli.py"
              and ("import argparse" in p.read_text() or "add_parser(" in p.read_text())]
    assert not others, others


def test_analyze_does_not_import_report():
    """The CLI composes analyze and report; analyze knows nothing of the report (no import cycle)."""
    import ast as ast_

    tree = ast_.parse((ROOT / "grokscope" / "analyze.py").read_text())
    imported = {n.module for n in ast_.walk(tree) if isinstance(n, ast_.ImportFrom)}
    assert "report" not in imported and "cli" not in imported, imported


def test_help_texts_are_plain_text():
    for command in [None, *_subparsers(make_parser())]:
        parser = make_parser(command)
        texts = [parser.format_help()]
        if command:
            texts.append(_subparsers(parser)[command].format_help())
        for text in texts:
            assert "``" not in text, (command, text)


def test_default_run_names_differ_for_every_operation():
    from grokscope.tasks import BUILTIN_OPERATIONS
    from grokscope.run import default_run_dir

    names = {}
    for op in BUILTIN_OPERATIONS:
        cfg = grokscope.RunConfig()
        cfg.task.op = op
        names[op] = default_run_dir(cfg)
    assert len(set(names.values())) == len(names), names
    assert names["x+y"] == Path("checkpoints/x+y_p97_f0.5_s0")
    assert names["x/y"] == Path("checkpoints/xdivy_p97_f0.5_s0")
    assert names["x*y"] == Path("checkpoints/xmuly_p97_f0.5_s0")
    assert all("/" not in n.name and " " not in n.name for n in names.values())


def test_an_old_run_with_the_old_default_name_still_loads(tmp_path):
    """Runs are opened by their folder: a folder named by the old scheme (x_y_p97_...) loads."""
    cfg = grokscope.RunConfig()
    cfg.update({"task": {"op": "x+y", "p": 7}, "model": {"d_model": 16, "d_mlp": 16, "n_heads": 2, "n_layers": 1},
                "train": {"steps": 2}, "schedule": {"eval_every": 1, "ckpt_every": 1}})
    run = grokscope.train(cfg, out=tmp_path / "x_y_p7_f0.5_s0", **QUIET)
    assert grokscope.load_run(run.path).steps == [0, 1, 2]


def test_eval_log_points_flag_sets_the_schedule():
    from grokscope.cli import build_config

    args = make_parser("train").parse_args(["train", "--eval-log-points", "7", "--eval-every", "50"])
    cfg = build_config(args)
    assert (cfg.schedule.eval_log_points, cfg.schedule.eval_every) == (7, 50)


# --- the README's command lines -----------------------------------------------------------------------
def readme_commands() -> tuple[list[str], list[str]]:
    """(command lines in the README's shell code blocks, inline `grokscope ...` spans in its prose)."""
    text = README.read_text()
    block_lines, prose, inside, lang = [], [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            inside, lang = not inside, line[3:].strip()
            continue
        if inside and lang in ("bash", "sh", "console", ""):
            block_lines.append(line)
        elif not inside:
            prose.append(line)
    inline = [s.replace("\n", " ") for s in re.findall(r"`([^`\n]+(?:\n[^`\n]+)?)`", "\n".join(prose))
              if s.startswith("grokscope ")]
    return block_lines, inline


def grokscope_argvs(line: str) -> list[list[str]]:
    """Each `grokscope ...` command of a shell line (pipes, && and comments understood)."""
    if not re.search(r"(^|[|&;]\s*)grokscope\s", line.strip()):
        return []
    out, seg = [], []
    for token in shlex.split(line, comments=True) + ["|"]:
        if token in ("|", "&&", "||", ";"):
            if seg and seg[0] == "grokscope":
                out.append(seg[1:])
            seg = []
        else:
            seg.append(token)
    return out


class ParseError(Exception):
    pass


def parse(argv: list[str]) -> None:
    from grokscope.cli import _command

    parser = make_parser(_command(argv))
    for p in [parser, *_subparsers(parser).values()]:
        p.error = lambda message: (_ for _ in ()).throw(ParseError(message))
        p.exit = lambda status=0, message=None: (_ for _ in ()).throw(SystemExit(status))
    try:
        parser.parse_args(argv)
    except SystemExit as e:  # --help
        assert e.code == 0


def option_names() -> dict[str, set[str]]:
    out = {"": {s for a in make_parser()._actions for s in a.option_strings}}  # grokscope --version
    for command in _subparsers(make_parser()):
        sub = _subparsers(make_parser(command))[command]
        out[command] = {s for a in sub._actions for s in a.option_strings}
    return out


def test_every_readme_command_line_parses():
    blocks, inline = readme_commands()
    options = option_names()
    checked = 0
    for line in blocks:
        for argv in grokscope_argvs(line):
            checked += 1
            if "[" in line:  # a synopsis: every option it names belongs to the command
                flags = set(re.findall(r"--[a-z][a-z0-9-]*", line))
                assert flags <= options[argv[0]], (line, flags - options[argv[0]])
                continue
            parse(argv)
    assert checked >= 15
    for span in inline:
        for argv in grokscope_argvs(span):
            if len(argv) < 2 and not argv[0].startswith("-"):
                assert argv[0] in options, span  # a command named in prose
                continue
            checked += 1
            try:
                parse(argv)
            except ParseError as e:  # prose may name a command without its required folder
                if "the following arguments are required" in str(e):
                    continue
                if "expected one argument" in str(e) and argv[-1].startswith("--"):
                    continue  # "`grokscope train --resume` continues ..."
                raise AssertionError(f"README: `{span}`: {e}") from None


def test_every_option_the_readme_names_exists():
    """Every --flag the README names, in a `grokscope ...` line or alone (`--eval-log-points`), is one."""
    blocks, inline = readme_commands()
    known = set().union(*option_names().values())
    alone = [s for s in re.findall(r"`([^`\n]+)`", README.read_text()) if s.startswith("--")]
    lines = [line for line in blocks if grokscope_argvs(line)] + inline + alone
    named = {m for s in lines for m in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", s)}
    assert named and named - known == set()


def test_bad_command_is_one_line():
    r = subprocess.run([sys.executable, "-m", "grokscope.cli", "trian"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def _import_graph(function_level: bool) -> dict[str, set[str]]:
    """grokscope module -> the grokscope modules it imports (at module level, or anywhere)."""
    import ast as ast_

    pkg = ROOT / "grokscope"
    names = {}
    for f in pkg.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for name, f in names.items():
        tree = ast_.parse(f.read_text(encoding="utf-8"))
        nodes = ast_.walk(tree) if function_level else (m for n in tree.body for m in ast_.walk(n)
                                                         if not isinstance(n, (ast_.FunctionDef, ast_.ClassDef)))
        here = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in nodes:
            if isinstance(node, ast_.ImportFrom) and node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                for alias in node.names:
                    deps.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in names else base)
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = {d for d in deps if d in names} - ancestors - {name}  # a package's own import is implicit
    return graph


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycles_at_module_level():
    graph = _import_graph(function_level=False)
    assert not [m for m in graph if m in _reaches(graph, m)]


def test_no_import_cycles_even_through_imports_inside_functions():
    """One owner per noun: no module needs another that needs it back, not even lazily."""
    graph = _import_graph(function_level=True)
    assert not [m for m in graph if m in _reaches(graph, m)]


def test_no_import_cycle_through_the_cli():
    """Nothing the CLI imports (even inside a function) imports the CLI back."""
    graph = _import_graph(function_level=True)
    assert "grokscope.cli" not in _reaches(graph, "grokscope.cli")
    assert "grokscope.report" not in _reaches({"grokscope.analyze": graph["grokscope.analyze"]}, "grokscope.analyze")
