"""The harness's commands are wired through the ``aquavolt.commands`` entry points of
pyproject.toml (read from the file, not from the installed metadata), and the kernel's
parser no longer defines them itself."""

from __future__ import annotations

import argparse
import importlib
import tomllib
from pathlib import Path

from aquavolt import cli

ROOT = Path(__file__).resolve().parents[2]


def entry_points() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(data["project"]["entry-points"]["aquavolt.commands"])


def test_demo_and_replay_come_from_the_harness():
    eps = entry_points()
    assert eps["demo"] == "aquavolt.harness.demo:register"
    assert eps["replay"] == "aquavolt.harness.replay:register"


def test_every_entry_point_registers_its_command():
    parser = argparse.ArgumentParser(prog="aquavolt")
    sub = parser.add_subparsers(dest="command")
    for name, target in sorted(entry_points().items()):
        module, _, attr = target.partition(":")
        getattr(importlib.import_module(module), attr)(sub)
        assert name in sub.choices, f"{target} did not register {name}"
    args = parser.parse_args(["demo", "examples/demo-town.yaml", "--plain"])
    assert args.command == "demo" and callable(args.func)
    args = parser.parse_args(["replay", "examples/scenarios/burst.yaml"])
    assert args.command == "replay" and callable(args.func)


def test_kernel_parser_registers_no_harness_command_by_name(monkeypatch):
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"check", "schemas", "security"}
