"""Shared fixtures of the harness tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from aquavolt.harness.relocate import relocate_file

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-town.yaml"


@pytest.fixture(scope="session")
def demo_path(tmp_path_factory) -> Path:
    """One relocated copy of the demo field for the session."""
    tmp = tmp_path_factory.mktemp("demo")
    return relocate_file(DEMO, tmp / "field.yaml", tmp / "serial")
