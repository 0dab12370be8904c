"""Alarm-system performance per EEMUA 191: a pure function of the activations in a window
and the present alarms.

Targets (defaults, from EEMUA 191 and ISA-18.2): about 6 alarms per hour acceptable, 12
the most manageable; a flood is more than 10 alarms in 10 minutes and under 1 % of the time
should be in flood; chattering (3 or more activations in 60 s) should be zero; stale
alarms (active more than 24 h) fewer than 5; priority mix about 80 % low, 15 % medium,
5 % high (critical counts with high).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from aquavolt.rules.alarms import CHATTER_COUNT, CHATTER_WINDOW_MS, Alarm

TEN_MIN_MS = 600_000
FLOOD_COUNT = 10
STALE_MS = 24 * 3600 * 1000


def performance(raised: list[tuple[int, str, str]], alarms: Iterable[Alarm], since_ms: int,
                until_ms: int, top: int = 10) -> dict[str, Any]:
    """``raised``: (ts_ms, alarm_id, priority) of each activation in [since, until)."""
    span = max(1, until_ms - since_ms)
    buckets = Counter((ts - since_ms) // TEN_MIN_MS for ts, _a, _p in raised)
    n_buckets = max(1, -(-span // TEN_MIN_MS))
    flood_buckets = sorted(b for b, n in buckets.items() if n > FLOOD_COUNT)
    # chattering: an alarm with CHATTER_COUNT activations inside any 60 s window
    times: dict[str, list[int]] = {}
    for ts, aid, _p in raised:
        times.setdefault(aid, []).append(ts)
    chattering = sorted(aid for aid, ts in times.items()
                        if any(ts[i + CHATTER_COUNT - 1] - ts[i] < CHATTER_WINDOW_MS
                               for i in range(len(ts) - CHATTER_COUNT + 1)))
    stale = sorted(a.alarm_id for a in alarms
                   if a.active and a.active_since_ms is not None and until_ms - a.active_since_ms > STALE_MS)
    mix = Counter("high" if p == "critical" else p for _t, _a, p in raised)
    total = len(raised)
    return {
        "since_ms": since_ms,
        "until_ms": until_ms,
        "alarms": total,
        "alarms_per_hour": total * 3_600_000 / span,
        "alarms_per_10min": {"mean": total / n_buckets, "max": max(buckets.values(), default=0)},
        "floods": {"intervals": len(flood_buckets),
                   "pct_time_in_flood": 100.0 * len(flood_buckets) / n_buckets,
                   "target_pct": 1.0},
        "chattering": {"count": len(chattering), "alarms": chattering, "target": 0},
        "stale": {"count": len(stale), "alarms": stale, "target_max": 5},
        "top_bad_actors": [{"alarm_id": a, "activations": n}
                           for a, n in Counter(aid for _t, aid, _p in raised).most_common(top)],
        "priority_mix_pct": {p: 100.0 * mix.get(p, 0) / total if total else 0.0
                             for p in ("low", "medium", "high")},
        "priority_mix_target_pct": {"low": 80.0, "medium": 15.0, "high": 5.0},
    }
