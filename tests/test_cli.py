"""The command line: one parser, one convention, shared options, one-line errors."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rolypoly
from rolypoly.cli import GROUPS, build_parser, main
from rolypoly.paths import DEMO_SCORE

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("rolypoly", "realtime", "pretrain", "lab")
COMMANDS = ("demo", "play", "simulate", "serve",
            "session new", "session pattern", "session list", "session revert", "session export", "session run",
            "finetune", "plot",
            "humanize", "groove humanize", "groove drumify", "groove infill", "groove transfer", "groove learn",
            "grooves list", "grooves subset",
            "pretrain timing", "pretrain groove", "pretrain continuation", "pretrain fill", "pretrain onsets",
            "evaluate timing", "evaluate groove", "evaluate live-groove", "data gmd", "devices", "calibrate", "onsets",
            "bench decide", "bench generate",
            "bench onsets", "bench finetune", "bench output", "bench service", "bench soak", "bench jack",
            "experiment")


def _subcommands(parser, path=()):
    """(command words, parser) of every command that runs something."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, path + (name,))
            return
    yield path, parser


def test_every_command_has_a_handler_named_after_it_in_its_group_module():
    modules = {g.__name__: g for g in GROUPS}
    commands = list(_subcommands(build_parser()))
    assert {" ".join(words) for words, _ in commands} == set(COMMANDS)
    for words, parser in commands:
        run = parser.get_default("run")
        assert callable(run), words
        assert run.__name__.startswith("run_") and run.__module__ in modules, (words, run)
        assert getattr(modules[run.__module__], run.__name__) is run


def test_agent_options_offer_the_agent_kinds():
    from rolypoly.agents import AGENT_KINDS

    assert AGENT_KINDS is rolypoly.AGENT_KINDS
    seen = 0
    for words, parser in _subcommands(build_parser()):
        for action in parser._actions:
            if "--agent" in action.option_strings:
                assert tuple(action.choices) == AGENT_KINDS, words
                seen += 1
    assert seen >= 5


def test_no_parser_outside_the_command_line_package():
    found = []
    for floor in FLOORS:
        for path in sorted((ROOT / floor).rglob("*.py")):
            if path.is_relative_to(ROOT / "rolypoly" / "cli"):
                continue
            text = path.read_text()
            if re.search(r"^\s*(import argparse|from argparse )", text, re.M) or "__main__" in text:
                found.append(str(path.relative_to(ROOT)))
    assert found == []


def test_help_imports_no_torch():
    code = ("import sys; from rolypoly.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'matplotlib', 'librosa', 'sounddevice') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("osc", ["nohost", "127.0.0.1:70000", "127.0.0.1:port"])
def test_a_bad_address_is_one_line_and_status_2(osc, tmp_path, capsys):
    status = main(["simulate", str(DEMO_SCORE), "--partner-file", str(tmp_path / "none.wav"), "--osc", osc,
                   "--session", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert status == 2 and err == f"rolypoly: --osc {osc}: expected HOST:PORT, e.g. 127.0.0.1:9101\n"
    assert not (tmp_path / "s").exists()


def test_sessions_are_found_by_name_in_the_sessions_folder(tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    assert main(["session", "new", "gig", "--sessions", str(store), "--score", str(DEMO_SCORE)]) == 0
    assert (store / "gig" / "session.json").is_file()
    capsys.readouterr()
    # From another folder: by --sessions, and by $ROLYPOLY_SESSIONS.
    monkeypatch.chdir(tmp_path)
    assert main(["session", "list", "gig", "--sessions", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["session"] == str(store / "gig")
    monkeypatch.setenv("ROLYPOLY_SESSIONS", str(store))
    assert main(["session", "list", "gig", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["session"] == str(store / "gig")
    assert not (tmp_path / "gig").exists()
