"""The ``aquavolt`` command in one style: golden help and error lines. Global options work
after the subcommand too, choices are checked (one line, no traceback), defaults are shown,
subcommands are COMMAND everywhere, and a missing extra is one line (the real missing extra
is in tests/kernel/test_wheel.py, from a venv with only the edge extra)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from aquavolt import cli

ROOT = Path(__file__).resolve().parents[2]
FIELD = str(ROOT / "examples/demo-town.yaml")
LOUD = "argument --log-level: invalid choice: 'LOUD' (choose from DEBUG, INFO, WARNING, ERROR, CRITICAL)"


@pytest.fixture(autouse=True)
def _columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help to the terminal's width


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "prog"), [
    (["--log-level", "LOUD", "check", FIELD], "aquavolt"),
    (["check", "--log-level", "LOUD", FIELD], "aquavolt check"),
    (["sim", "backfill", FIELD, "--end", "2026-01-01", "--log-level", "LOUD"], "aquavolt sim backfill"),
])
def test_log_level_choices_checked_before_and_after_the_subcommand(capsys, argv, prog) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err.splitlines()[-1] == f"{prog}: error: {LOUD}"
    assert "Traceback" not in err


def test_log_level_after_the_subcommand_is_used(capsys) -> None:
    code, out, err = _run(capsys, "check", FIELD, "--log-level", "debug")
    assert code == 0 and ": ok: field demo-town" in out
    assert "DEBUG   aquavolt: logging at DEBUG" in err


def test_schemas_help_golden(capsys) -> None:
    code, out, _ = _run(capsys, "schemas", "--help")
    assert code == 0
    assert out == """\
usage: aquavolt schemas [-h] [-o PATH] [--log-level LEVEL]

options:
  -h, --help           show this help message and exit
  -o PATH, --out PATH  folder (default: docs/schemas)
  --log-level LEVEL    DEBUG, INFO, WARNING, ERROR, CRITICAL (default: $AQUAVOLT_LOG_LEVEL, else
                       INFO)
"""


def test_help_lines_of_component_commands(capsys) -> None:
    _, probe, _ = _run(capsys, "edge", "probe", "--help")
    for line in ("  --port PORT           (default: 502)", "  --address ADDRESS     protocol address (from 0) (default: 0)",
                 "  --parity {N,E,O}      (default: N)"):
        assert line in probe.splitlines()
    _, build, _ = _run(capsys, "dashboards", "build", "--help")
    assert "  -o PATH, --out PATH   output folder" in build.splitlines()
    assert "--influx URL" in build and "--influx-url" not in build  # the old name: a hidden alias
    _, sim, _ = _run(capsys, "sim", "--help")
    assert sim.startswith("usage: aquavolt sim [-h] [--log-level LEVEL] COMMAND ...")


def test_influx_url_is_a_hidden_alias_of_influx() -> None:
    parser = cli.build_parser()
    for flag in ("--influx", "--influx-url"):
        args = parser.parse_args(["dashboards", "build", FIELD, "-o", "x", flag, "http://grafana-sees:8086"])
        assert args.influx_url == "http://grafana-sees:8086"
    assert parser.parse_args(["dashboards", "build", FIELD, "-o", "x"]).influx_url == "http://influxdb:8086"


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            assert action.metavar == "COMMAND", parser.prog
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_command_in_one_style() -> None:
    for parser in _parsers(cli.build_parser()):
        assert "--log-level" in parser._option_string_actions, parser.prog
        help_text = parser.format_help()
        for action in parser._actions:
            if action.option_strings and action.help is not argparse.SUPPRESS and action.default not in (
                    None, False, argparse.SUPPRESS) and not isinstance(action.default, bool):
                assert "default" in (action.help or ""), (parser.prog, action.option_strings)
            if "--out" in action.option_strings:
                assert "-o" in action.option_strings, parser.prog
        assert "Traceback" not in help_text


def test_missing_extra_is_one_line(capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Hiding an installed module from the import system (None in sys.modules) stands for an
    # install without the dashboards extra; test_wheel.py runs the real one.
    for name in [m for m in sys.modules
                 if m.split(".")[0] == "grafana_foundation_sdk" or m.startswith("aquavolt.dashboards")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "grafana_foundation_sdk", None)
    code, _, err = _run(capsys, "dashboards", "build", FIELD, "-o", str(tmp_path))
    assert code == 2
    assert err == ("aquavolt dashboards build: needs the 'dashboards' extra "
                   "(pip install 'aquavolt[dashboards]'): no module grafana_foundation_sdk\n")


def test_unreachable_device_is_one_line(capsys) -> None:
    from aquavolt.harness.servers import free_port

    port = free_port()  # nothing listens there
    code, _, err = _run(capsys, "edge", "probe", "--port", str(port), "--timeout-s", "0.5")
    assert code == 1 and err.splitlines()[-1] == "probe failed: cannot connect"
    assert "Traceback" not in err  # before: 'RuntimeError: no running event loop' from pymodbus
