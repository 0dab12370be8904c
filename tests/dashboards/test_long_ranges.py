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

from aquavolt import schema
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


def test_alarm_panels_open_one_shard_per_year_of_the_journal(influx_settings, boards) -> None:
    """The alarm panels read the journal since its beginning (latest state) or over the range:
    with 13 months of alarms where the collector writes them (``rp_events``, yearly shards),
    each query opens at most two shards, not one per week of the journal as on ``autogen``.
    Counted by InfluxDB itself (``EXPLAIN``), not timed: bench/dashboards.py times them."""
    ix = Influx(influx_settings)
    ix.execute(schema.continuous_queries(influx_settings.database))
    end = 1_796_083_200_000
    week = 7 * 86_400_000
    lines = []
    for k in range(57):  # one alarm raised and cleared a week, for 13 months
        tags = {"asset": f"pump-{k % 3}", "condition": "trip", "priority": "high"}
        lines.append(schema.line(schema.ALARM_EVENT, tags, {"state": "unack", "transition": "raised",
                                                             "active": 1, "message": "trip"}, end - k * week))
        lines.append(schema.line(schema.ALARM_EVENT, tags, {"state": "normal", "transition": "cleared",
                                                             "active": 0, "message": "trip"},
                                 end - k * week + 600_000))
    Influx(influx_settings.model_copy(update={"retention_policy": schema.RP_EVENTS})).write(lines)
    year = TimeRange(end - 365 * 86_400_000, end + 3_600_000)
    opened: dict[str, int] = {}
    for name, board in boards.items():
        for panel, target in dashboard_queries(board):
            if schema.ALARM_EVENT not in target["query"]:
                continue
            sub = TimeRange(year.start_ms, year.end_ms, variable_values(board)).for_panel(panel)
            query = sub.substitute(target["query"])
            plan = [row[0] for s in ix.query("EXPLAIN " + query) for row in s["values"]]
            shards = [int(r.split(":")[1]) for r in plan if r.startswith("NUMBER OF SHARDS")]
            assert shards, (name, panel["title"], plan)
            opened[f"{name} / {panel['title']} / {target['refId']}"] = max(shards)
    assert len(opened) >= 8, opened  # every alarm panel of every board was looked at
    assert all(n <= 2 for n in opened.values()), opened
    in_range = [ln for ln in lines if year.start_ms <= int(ln.rsplit(" ", 1)[1]) <= year.end_ms]
    assert len(ix.rows(year.substitute(q.alarm_history()))) == len(in_range) > 100  # they read it
