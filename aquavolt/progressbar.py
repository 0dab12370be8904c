"""A progress bar on standard error for long commands (``sim backfill``, ``replay``).

On a terminal: one line redrawn in place, at most ``REDRAW_S`` apart, with the bar, done and
total, the rate and the time left::

    backfill [##########..........]  1,234,560/2,469,120 points  50%  412k points/s  ETA 0:03

Not on a terminal (a log file, CI, a pipe): nothing while it runs, and one summary line when
it is closed (``backfill: 2,469,120 points in 6.0 s (412k points/s)``). Disabled
(``--no-progress``): nothing at all. The clock is injected, so that tests drive it without
sleeping (tests/kernel/test_progressbar.py). Not to be confused with :mod:`aquavolt.progress`,
the components' progress messages on MQTT.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

REDRAW_S = 0.2
"""Wall seconds between two redraws on a terminal, at least (five a second at most)."""
WIDTH = 20
"""Characters of the bar itself."""

Format = Callable[[float], str]


def count(v: float) -> str:
    """``1,234,567``: a count of things."""
    return f"{round(v):,}"


def si(v: float) -> str:
    """``412k``, ``1.3M``, ``87``: a rate, in three significant figures at most."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            x = v / div
            return f"{x:.1f}{suffix}" if x < 10 else f"{x:.0f}{suffix}"
    return f"{v:.1f}" if abs(v) < 10 else f"{v:.0f}"


def clock_time(s: float) -> str:
    """``0:03``, ``12:07``, ``2:05:09``: a wall duration, for the time left."""
    s = max(0, round(s))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def sim_time(s: float) -> str:
    """``1d02h00m``, ``3h07m``, ``42s``: a span of simulated time."""
    s = max(0, int(s))
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{d}d{h:02d}h{m:02d}m"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{sec:02d}s"
    return f"{sec}s"


def _columns(stream: TextIO) -> int:
    """The width of the terminal the stream writes to (standard error's own, not standard
    output's); else ``$COLUMNS`` or 100."""
    try:
        width = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        width = 0
    return width or shutil.get_terminal_size((100, 24)).columns


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` (also ``--quiet``) for a command that shows a bar."""
    parser.add_argument("--no-progress", "--quiet", dest="progress", action="store_false",
                        help="no progress on standard error (default: a bar on a terminal, "
                             "one summary line otherwise)")


class ProgressBar:
    """``done`` out of ``total`` units (``unit``), shown on ``stream`` (standard error).

    ``rate_unit`` follows the rate (default `` {unit}/s``; ``x`` gives ``320x``); ``fmt``
    formats done and total (default: a count with thousands separators). ``tty`` overrides
    ``stream.isatty()``. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, label: str, total: float, unit: str = "", *, enabled: bool = True,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None, fmt: Format = count, rate_unit: str | None = None,
                 redraw_s: float = REDRAW_S, width: int = WIDTH, columns: int | None = None) -> None:
        self.label = label
        self.total = float(total)
        self.unit = unit
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty()) if isatty is not None else False
        self.tty = tty
        self.fmt = fmt
        self.rate_unit = rate_unit if rate_unit is not None else (f" {unit}/s" if unit else "/s")
        self.redraw_s = redraw_s
        self.width = width
        self.columns = columns if columns is not None else _columns(self.stream)
        self._phase = ""
        self._done_phases: list[str] = []
        self.done = 0.0
        self.started = clock()
        self._drawn_at: float | None = None
        self._drawn_len = 0
        self._drawn = ""
        self.closed = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what the command says -------------------------------------------------------------
    def advance(self, n: float = 1) -> None:
        self.update(self.done + n)

    def update(self, done: float) -> None:
        self.done = float(done)
        if not (self.enabled and self.tty) or self.closed:
            return
        now = self.clock()
        if self._drawn_at is not None and now - self._drawn_at < self.redraw_s:
            return
        self._draw(now)

    def phase(self, name: str, total: float, unit: str = "", *, fmt: Format = count,
              rate_unit: str | None = None) -> None:
        """A new stage of the same work (e.g. modelled hours, then points written): the bar
        starts again; the summary line says every stage."""
        if self._phase or self.done:
            self._done_phases.append(self._phase_summary(self.clock()))
        self._phase = name
        self.total = float(total)
        self.unit = unit
        self.fmt = fmt
        self.rate_unit = rate_unit if rate_unit is not None else (f" {unit}/s" if unit else "/s")
        self.done = 0.0
        self.started = self.clock()
        self._drawn_at = None
        self.update(0)

    def close(self, summary: str | None = None) -> None:
        """The last line: the bar at its end on a terminal, or the summary line."""
        if self.closed:
            return
        self.closed = True
        if not self.enabled:
            return
        now = self.clock()
        if self.tty:
            if self.line(now)[: max(10, self.columns - 1)] != self._drawn:
                self._draw(now)
            self.stream.write("\n")
        else:
            self.stream.write(self.summary(now, summary) + "\n")
        self.stream.flush()

    # -- what is shown ---------------------------------------------------------------------
    def _rate(self, now: float) -> float | None:
        elapsed = now - self.started
        return self.done / elapsed if elapsed > 0 and self.done > 0 else None

    def line(self, now: float) -> str:
        frac = min(1.0, self.done / self.total) if self.total > 0 else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        unit = f" {self.unit}" if self.unit else ""
        label = f"{self.label} {self._phase}" if self._phase else self.label
        parts = [f"{label} [{bar}]", f"{self.fmt(self.done)}/{self.fmt(self.total)}{unit}",
                 f"{frac * 100:3.0f}%"]
        rate = self._rate(now)
        if rate is not None:
            parts.append(f"{si(rate)}{self.rate_unit}")
            left = max(0.0, self.total - self.done)
            parts.append(f"ETA {clock_time(left / rate)}" if left else f"in {clock_time(now - self.started)}")
        else:
            parts.append("ETA -")
        return "  ".join(parts)

    def _phase_summary(self, now: float) -> str:
        unit = f" {self.unit}" if self.unit else ""
        name = f"{self._phase} " if self._phase else ""
        text = f"{name}{self.fmt(self.done)}{unit} in {now - self.started:.1f} s"
        rate = self._rate(now)
        return text + (f" ({si(rate)}{self.rate_unit})" if rate is not None else "")

    def summary(self, now: float, extra: str | None = None) -> str:
        parts = [*self._done_phases, self._phase_summary(now)] + ([extra] if extra else [])
        return f"{self.label}: " + "; ".join(parts)

    def _draw(self, now: float) -> None:
        text = self.line(now)[: max(10, self.columns - 1)]  # one line: \r cannot undo a wrap
        self._drawn_at = now
        if text == self._drawn:
            return
        pad = " " * max(0, self._drawn_len - len(text))  # a shorter line wipes the longer one
        self.stream.write("\r" + text + pad)
        self.stream.flush()
        self._drawn_len = len(text)
        self._drawn = text
