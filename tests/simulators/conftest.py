"""Shared helpers of the simulator tests: a relocated demo field, a frozen clock, decoding."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from aquavolt.clock import SimClock, parse_instant
from aquavolt.codec import apply_scale, decode_raw
from aquavolt.config import LoadedField, load_field
from aquavolt.harness.relocate import relocate_file
from aquavolt.profiles import ModbusPoint, ModbusProfile

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-town.yaml"
START = "2026-06-01T00:00:00Z"


def demo_copy(tmp: Path) -> Path:
    """The demo field on free ports and private serial paths.

    Serial buses get parity N: this machine's kernel refuses PARENB on pseudo-terminals
    (tcsetattr EINVAL), so an even-parity line cannot be opened on a pty here."""
    dst = relocate_file(DEMO, tmp / "field.yaml")
    data = yaml.safe_load(dst.read_text())
    for gw in data["gateways"]:
        for bus in gw["buses"]:
            if bus["kind"] == "modbus_rtu":
                bus["parity"] = "N"
    dst.write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


def frozen_clock(start: str = START) -> SimClock:
    """Simulated time that barely moves (a tick lasts days of wall time)."""
    return SimClock(parse_instant(start), 1e-6)


def load_demo(tmp: Path) -> LoadedField:
    return load_field(demo_copy(tmp))


def decode(prof: ModbusProfile, p: ModbusPoint, words: list[int]):
    raw = decode_raw(words, p.type, prof.order_of(p), p.length)
    return apply_scale(raw, p.scale, p.offset)


def close(a, b, point: ModbusPoint | None = None) -> bool:
    """Equal after the register's own resolution (scale, float32 rounding)."""
    if isinstance(a, bool | str) or isinstance(b, bool | str):
        return a == b
    tol = abs(point.scale) / 2 + 1e-9 if point is not None and point.type.value not in (
        "float32", "float64") else 0.0
    if point is not None and point.type.value == "float32":
        tol = max(abs(float(b)) * 1e-6, 1e-6)
    if point is not None and point.type.value in ("uint16", "uint32", "int16", "int32") and point.scale == 1:
        tol = 0.5
    return abs(float(a) - float(b)) <= tol + 1e-9


@pytest.fixture
def h():
    """These helpers (pytest's importlib mode cannot import a sibling module)."""
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def demo_path(tmp_path_factory) -> Path:
    """One relocated copy of the demo field for the session (tests serve it one at a time)."""
    return demo_copy(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def demo(demo_path) -> LoadedField:
    return load_field(demo_path)
