"""A bounded run freezes its field (simulator, edge agents) while the collector and the rules
engine catch up: a frozen child stays alive and silent, and stopping it still ends it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

from aquavolt.launcher import Child


def test_a_paused_child_is_frozen_and_still_stops(tmp_path: Path) -> None:
    ticker = tmp_path / "ticks"
    code = ("import time, pathlib\n"
            f"p = pathlib.Path({str(ticker)!r})\n"
            "while True:\n    p.write_text(str(time.time())); time.sleep(0.05)\n")
    child = Child("edge:gw-test", [sys.executable, "-c", code], tmp_path / "child.log")
    child.start({})
    try:
        deadline = time.monotonic() + 10
        while not ticker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child.pause()
        assert child.paused and psutil.Process(child.proc.pid).status() == psutil.STATUS_STOPPED
        frozen = ticker.read_text()
        time.sleep(0.5)
        assert ticker.read_text() == frozen  # nothing happens while frozen
        assert child.alive
    finally:
        t0 = time.monotonic()
        child.stop(timeout_s=5)
    assert not child.alive and not child.paused
    assert time.monotonic() - t0 < 4  # SIGTERM handled at once, no SIGKILL wait
