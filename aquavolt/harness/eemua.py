"""Alarm-system performance figures after EEMUA 191, from the alarms an operator was shown.

Pure: annunciations (time, alarm id, priority) and the run's span in, :class:`Figures` out.

- **Windows** are *fixed* 10-minute windows from the scenario's start (00:00-00:10,
  00:10-00:20, ... of simulated time), not sliding ones: the figures are reproducible and
  each annunciation belongs to exactly one window. The last window is cut at the run's end.
- **Flood**: a window with more than 10 annunciations (EEMUA 191: more than 10 alarms in
  10 minutes for one operator). The share of time in flood adds up the flooded windows'
  lengths over the run's length.
- **Chattering**: an alarm id annunciated 3 or more times within 60 s (sliding, per alarm,
  the alarm manager's own rule, rules/alarms.py ``CHATTER_COUNT``/``CHATTER_WINDOW_MS``).
- **Averages**: annunciations per 10 minutes and per hour over the whole run (EEMUA 191:
  about 1 per 10 minutes is very likely acceptable, 2 manageable; 6 an hour in steady
  operation). **Priority mix**: counts per priority (EEMUA's guide for operator alarms is
  about 5 % high, 15 % medium, 80 % low).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

from aquavolt.profiles import Frozen
from aquavolt.scenario import Limits

WINDOW_MS = 600_000
FLOOD_ABOVE = 10
CHATTER_WINDOW_MS = 60_000
CHATTER_COUNT = 3
PRIORITIES = ("critical", "high", "medium", "low")


def iso(ts_ms: int | None) -> str | None:
    if ts_ms is None:
        return None
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Annunciation(Frozen):
    ts_ms: int
    alarm_id: str
    priority: str


class Figures(Frozen):
    annunciated: int
    hours: float
    per_hour: float
    per_10min_avg: float
    windows: int = 0
    peak_10min: int = 0
    peak_10min_start: str | None = None
    flood_windows: int = 0
    flood_starts: list[str] = []
    flood_share: float = 0.0
    chattering: list[str] = []
    priority: dict[str, int] = {}

    def lines(self) -> list[str]:
        """The figures in two lines of text."""
        peak = (f"peak {self.peak_10min} in the 10 min from {self.peak_10min_start}"
                if self.peak_10min_start else "peak 0")
        chat = f"{len(self.chattering)} chattering" + (
            f" ({', '.join(self.chattering[:3])}{', ...' if len(self.chattering) > 3 else ''})"
            if self.chattering else "")
        mix = ", ".join(f"{self.priority.get(p, 0)} {p}" for p in PRIORITIES)
        shares = " / ".join(f"{100 * self.priority.get(p, 0) / self.annunciated:.0f} %"
                            for p in PRIORITIES) if self.annunciated else "-"
        return [f"EEMUA 191: {self.per_10min_avg:.1f} per 10 min on average ({self.per_hour:.1f} per hour); "
                f"{peak}; {self.flood_windows} of {self.windows} fixed 10-min windows in flood "
                f"(>{FLOOD_ABOVE}), {100 * self.flood_share:.0f} % of the time; {chat}",
                f"priority mix: {mix} ({shares})"]


class LimitResult(Frozen):
    name: str
    limit: float
    value: float
    ok: bool
    detail: str


def chattering(anns: Iterable[Annunciation]) -> list[str]:
    """Alarm ids annunciated ``CHATTER_COUNT`` or more times within ``CHATTER_WINDOW_MS``."""
    times: dict[str, list[int]] = {}
    for a in anns:
        times.setdefault(a.alarm_id, []).append(a.ts_ms)
    out = []
    for aid, ts in times.items():
        ts.sort()
        k = CHATTER_COUNT - 1
        if any(ts[i + k] - ts[i] < CHATTER_WINDOW_MS for i in range(len(ts) - k)):
            out.append(aid)
    return sorted(out)


def figures(anns: list[Annunciation], start_ms: int, end_ms: int) -> Figures:
    span = max(end_ms - start_ms, 1)
    n = len(anns)
    windows = max(1, math.ceil(span / WINDOW_MS))
    counts = Counter(min((a.ts_ms - start_ms) // WINDOW_MS, windows - 1) for a in anns)
    peak_i, peak = max(sorted(counts.items()), key=lambda kv: kv[1], default=(0, 0))
    flooded = sorted(i for i, c in counts.items() if c > FLOOD_ABOVE)
    flood_ms = sum(min(WINDOW_MS, end_ms - (start_ms + i * WINDOW_MS)) for i in flooded)
    prio = Counter(a.priority for a in anns)
    return Figures(
        annunciated=n, hours=round(span / 3_600_000, 3),
        per_hour=round(n * 3_600_000 / span, 2), per_10min_avg=round(n * WINDOW_MS / span, 2),
        windows=windows, peak_10min=peak,
        peak_10min_start=iso(start_ms + peak_i * WINDOW_MS) if peak else None,
        flood_windows=len(flooded), flood_starts=[iso(start_ms + i * WINDOW_MS) or "" for i in flooded],
        flood_share=round(flood_ms / span, 4), chattering=chattering(anns),
        priority={p: prio.get(p, 0) for p in PRIORITIES})


def check(fig: Figures, limits: Limits) -> list[LimitResult]:
    """One result per limit the scenario sets, in the order of :class:`Limits`."""
    value = {"max_per_10min": fig.peak_10min, "max_floods": fig.flood_windows,
             "max_chattering": len(fig.chattering), "max_per_hour": fig.per_hour}
    what = {"max_per_10min": f"peak 10-min window {fig.peak_10min}"
                             + (f" from {fig.peak_10min_start}" if fig.peak_10min_start else ""),
            "max_floods": f"{fig.flood_windows} flood window(s)"
                          + (f" from {', '.join(fig.flood_starts[:3])}" if fig.flood_starts else ""),
            "max_chattering": f"{len(fig.chattering)} chattering alarm(s)"
                              + (f": {', '.join(fig.chattering[:5])}" if fig.chattering else ""),
            "max_per_hour": f"{fig.per_hour:g} alarms per hour"}
    return [LimitResult(name=k, limit=lim, value=value[k], ok=value[k] <= lim,
                        detail=f"{what[k]} (limit {lim:g})") for k, lim in limits.checked()]
