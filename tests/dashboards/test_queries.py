"""Every query of every panel, with Grafana's macros and variables substituted as Grafana
does, runs against a real InfluxDB and returns data.

The data here are points written per ``aquavolt/schema.py`` for every device and point of
the demo field (see conftest.py), not a simulated run.
"""

from __future__ import annotations

from typing import Any

from aquavolt.dashboards.macros import TimeRange, dashboard_queries, variable_values
from aquavolt.influx import Influx


def _has_values(series: list[dict[str, Any]]) -> bool:
    return any(v is not None for s in series for row in s["values"] for v in row[1:])


def _logical(board: dict[str, Any]) -> dict[tuple[int, str], list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Targets grouped per panel and logical query: ``A``, ``A-hourly`` and ``A-daily`` are the
    bands (raw, hourly, daily rollup) of one query, of which one reads data at any range."""
    out: dict[tuple[int, str], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for panel, target in dashboard_queries(board):
        out.setdefault((panel["id"], target["refId"].split("-")[0]), []).append((panel, target))
    return out


def test_every_panel_query_returns_data(filled, boards) -> None:
    """Over two days: one band of each query (the hourly rollup, for telemetry) has data."""
    ix = Influx(filled.settings)
    empty, ran = [], 0
    for name, board in boards.items():
        rng = TimeRange(filled.start_ms, filled.end_ms, variable_values(board))
        for group in _logical(board).values():
            answered = []
            for panel, target in group:
                query = rng.for_panel(panel).substitute(target["query"])
                assert "$timeFilter" not in query and "${" not in query and "$__" not in query, query
                answered.append(_has_values(ix.query(query)))
            ran += 1
            if sum(answered) != 1:
                empty.append(f"{name} / {panel['title']} / {target['refId']}: {answered}")
    assert ran > 60
    assert not empty, "queries without data, or more than one band with data:\n" + "\n".join(empty)


def test_a_query_for_a_missing_point_is_caught(filled, boards) -> None:
    """The check above can fail: a panel on a point nobody writes returns nothing."""
    ix = Influx(filled.settings)
    rng = TimeRange(filled.start_ms, filled.end_ms)
    q = next(t["query"] for _p, t in dashboard_queries(boards["water"])
             if "flow_lps" in t["query"] and t["refId"].endswith("-hourly"))  # two days: the hourly rollup
    assert _has_values(ix.query(rng.substitute(q)))
    assert not _has_values(ix.query(rng.substitute(q.replace("flow_lps", "flow_gpm"))))


def test_customer_variable_picks_the_customer(filled, boards, demo) -> None:
    """Another customer (no history last year in the fill) has this year's data only."""
    ix = Influx(filled.settings)
    board = boards["customer"]
    groups = [[(p, t["query"]) for p, t in g] for g in _logical(board).values()
              if any("364d" in t["query"] or p.get("timeShift") == "364d" for p, t in g)]
    assert len(groups) == 4  # water and electricity: the daily series and the total
    other = demo.field.customers[1]
    rng = TimeRange(filled.start_ms, filled.end_ms, {"customer": f"{other.water_meter}|{other.electricity_meter}"})
    assert not any(_has_values(ix.query(rng.for_panel(p).substitute(q))) for g in groups for p, q in g)
    rng_first = TimeRange(filled.start_ms, filled.end_ms, variable_values(board))
    assert all(any(_has_values(ix.query(rng_first.for_panel(p).substitute(q))) for p, q in g) for g in groups)


def test_data_lost_for_good_shows_each_gateways_loss(filled, boards, demo) -> None:
    """The gateways dashboard's "Data lost for good": the messages of every data_loss point
    of a gateway in the range, summed (12 + 3 in the fill), red from 1; 0 where none."""
    panel, target = next((p, t) for p, t in dashboard_queries(boards["gateways"])
                         if p["title"] == "Data lost for good")
    assert panel["type"] == "stat" and target.get("alias") == "$tag_gateway"
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["value"], s["color"]) for s in steps] == [(None, "green"), (1, "red")]
    assert panel["fieldConfig"]["defaults"]["noValue"] == "0"
    ix = Influx(filled.settings)
    gw0 = demo.field.gateways[0].id

    def lost(rng: TimeRange) -> dict[str, float]:
        return {s["tags"]["gateway"]: row[1] for s in ix.query(rng.for_panel(panel).substitute(target["query"]))
                for row in s["values"]}

    assert lost(TimeRange(filled.start_ms, filled.end_ms)) == {gw0: 15}
    assert lost(TimeRange(filled.end_ms - 7_200_000, filled.end_ms)) == {gw0: 3}
    assert lost(TimeRange(filled.start_ms + 10_800_000, filled.start_ms + 20_000_000)) == {}
