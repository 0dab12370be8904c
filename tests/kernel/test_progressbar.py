"""The progress bar of long commands: golden output on a pseudo-terminal (the bar redrawn in
place, at most five times a second, rate and time left) and elsewhere (one summary line and
nothing else), driven by an injected clock: no sleeps. The commands that use it (``sim
backfill``, ``replay``) are checked in tests/simulators/test_backfill.py."""

from __future__ import annotations

import io
import os
import pty
import select
from pathlib import Path

from aquavolt.progressbar import ProgressBar, sim_time

GOLDEN = Path(__file__).parent / "cases" / "progressbar" / "terminal.txt"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _drive(bar: ProgressBar, clock: Clock) -> None:
    """800 points in 80 calls 1/16 s apart (5 s), then a second stage."""
    bar.phase("write", 800, "points")
    for _ in range(80):
        clock.t += 0.0625
        bar.advance(10)
    bar.phase("check", 2, "series")
    clock.t += 0.5
    bar.advance(2)
    bar.close()


def _read_all(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        out += chunk
    return out


def test_not_a_terminal_one_summary_line_and_nothing_else() -> None:
    clock = Clock()
    out = io.StringIO()  # not a tty
    _drive(ProgressBar("aquavolt sim backfill", 0, stream=out, clock=clock), clock)
    assert out.getvalue() == (
        "aquavolt sim backfill: write 800 points in 5.0 s (160 points/s); "
        "check 2 series in 0.5 s (4.0 series/s)\n")


def test_disabled_says_nothing_even_on_a_terminal() -> None:
    clock = Clock()
    out = io.StringIO()
    _drive(ProgressBar("x", 0, stream=out, clock=clock, tty=True, enabled=False), clock)
    assert out.getvalue() == ""


def test_terminal_bar_redrawn_in_place_at_most_five_times_a_second() -> None:
    master, slave = pty.openpty()
    try:
        with open(slave, "w", encoding="utf-8", closefd=False) as stream:
            assert stream.isatty()
            clock = Clock()
            _drive(ProgressBar("backfill", 0, stream=stream, clock=clock, columns=100), clock)
        text = _read_all(master).decode()
    finally:
        os.close(slave)
        os.close(master)
    assert text.endswith("\r\n")  # the terminal turns the final newline into CR LF
    assert "\n" not in text[:-2]  # one line, redrawn in place
    frames = text[:-2].split("\r")[1:]
    # 5 s of writing, redrawn 0.2 s apart at most (every 4th call here): 1 + 20 frames; the
    # second stage: its start, one redraw 0.5 s later, and close adds nothing new
    assert len(frames) == 1 + 20 + 1 + 1
    assert frames == GOLDEN.read_text(encoding="utf-8").splitlines()


def test_the_line_never_wraps_on_a_narrow_terminal() -> None:
    out = io.StringIO()
    clock = Clock()
    bar = ProgressBar("aquavolt replay", 86400 + 7200, stream=out, clock=clock, tty=True, columns=60,
                      fmt=sim_time, rate_unit="x")
    clock.t += 10
    bar.update(3600 * 5 + 60 * 7)
    bar.close()
    full = "aquavolt replay [###.................]  5h07m/1d02h00m   20%  1.8kx  ETA 0:41"
    assert bar.line(clock.t) == full
    assert out.getvalue() == "\r" + full[:59] + "\n"
