"""Panels over long ranges read rollups, never raw data over more than a day.

Each telemetry query is three targets, one per band of range (``A`` raw telemetry up to a
day, ``A-hourly`` the hourly rollup up to three months, ``A-daily`` the daily rollup beyond),
guarded by a condition on ``${__to} - ${__from}`` that InfluxDB folds to true or false for
the whole statement; health reports (no rollup) are bounded to the range's last day.
bench/dashboards.py times them on 13 months of data.
"""

from __future__ import annotations

import re
from typing import Any

from aquavolt.dashboards import queries as q
from aquavolt.dashboards.macros import TimeRange, dashboard_queries, guards_hold, variable_values
from aquavolt.influx import Influx

_RAW = re.compile(r'FROM "(telemetry|gateway_health|device_health)"')
RAW_GUARD = f"({q.RANGE_MS} <= {q.RAW_MAX_MS})"


def _has_values(series: list[dict[str, Any]]) -> bool:
    return any(v is not None for s in series for row in s["values"] for v in row[1:])


def test_raw_reads_are_bounded_to_a_day(boards) -> None:
    unbounded = []
    for name, board in boards.items():
        for panel, target in dashboard_queries(board):
            query = target["query"]
            for m in _RAW.finditer(query):
                if RAW_GUARD not in query and not (m.group(1) != "telemetry" and q.LAST_DAY in query):
                    unbounded.append(f"{name} / {panel['title']} / {target['refId']}")
    assert not unbounded, "raw reads over any range:\n" + "\n".join(unbounded)


def test_one_band_per_range(boards) -> None:
    """At every range exactly one target of each banded query has its guard hold."""
    end = 1_796_083_200_000
    for days in (0.5, 1, 1.01, 30, 92, 93, 365):
        rng = TimeRange(int(end - days * 86_400_000), end)
        for board in boards.values():
            groups: dict[tuple[int, str], list[bool]] = {}
            for panel, target in dashboard_queries(board):
                sub = TimeRange(rng.start_ms, rng.end_ms, variable_values(board)).for_panel(panel)
                groups.setdefault((panel["id"], target["refId"].split("-")[0]), []).append(
                    guards_hold(sub.substitute(target["query"])))
            assert all(sum(g) == 1 for g in groups.values()), (days, board["uid"], groups)


def test_a_short_range_reads_raw_a_longer_one_the_rollups(filled, boards) -> None:
    ix = Influx(filled.settings)
    half_day = TimeRange(filled.end_ms - 43_200_000, filled.end_ms)
    two_days = TimeRange(filled.start_ms, filled.end_ms)
    for board in [boards["water"], boards["electricity"]]:
        for panel, target in dashboard_queries(board):
            ref = target["refId"]
            raw = _has_values(ix.query(half_day.for_panel(panel).substitute(target["query"])))
            rolled = _has_values(ix.query(two_days.for_panel(panel).substitute(target["query"])))
            if "FROM \"telemetry\"" in target["query"]:
                assert raw and not rolled, (panel["title"], ref)
            elif ref.endswith("-hourly"):
                assert rolled and not raw, (panel["title"], ref)
