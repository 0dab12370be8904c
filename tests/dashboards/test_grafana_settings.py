"""Grafana settings of the built dashboards: edit settings consistent with the provisioning,
the utility's time zone (the field's ``timezone``) in every daily grouping, readable titles."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
import yaml

from aquavolt.config import load_field
from aquavolt.dashboards.build import build_all, dashboard_provisioning
from aquavolt.dashboards.macros import TimeRange, dashboard_queries, variable_values
from aquavolt.field import FieldConfig
from aquavolt.influx import Influx

from .conftest import DEMO


def test_dashboards_are_editable_only_if_the_provider_allows_ui_updates(boards) -> None:
    provider = dashboard_provisioning("/x")["providers"][0]
    for board in boards.values():
        assert board["editable"] is provider["allowUiUpdates"], board["uid"]


def test_every_daily_grouping_is_on_the_utilitys_days(boards, demo) -> None:
    tz = demo.field.timezone
    assert tz == "Africa/Casablanca"
    daily = 0
    for board in boards.values():
        assert board["timezone"] == tz, board["uid"]
        for panel, target in dashboard_queries(board):
            query = target["query"]
            days = query.count("GROUP BY time(1d)")
            daily += days
            assert len(re.findall(r"GROUP BY time\(1d\)[^()]*(?:fill\(\w+\))? tz\('" + tz + r"'\)", query)) == days, (
                board["uid"], panel["title"], target["refId"])
    assert daily >= 10


def test_a_daily_figure_starts_at_the_local_midnight(filled, boards, demo) -> None:
    board = boards["customer"]
    panel, target = next((p, t) for p, t in dashboard_queries(board)
                         if t["refId"] == "A-hourly" and "volume_m3" in t["query"] and not p.get("timeShift")
                         and "sum(" not in t["query"][:12])
    rng = TimeRange(filled.start_ms, filled.end_ms, variable_values(board))
    series = Influx(filled.settings).query(rng.for_panel(panel).substitute(target["query"]))
    stamps = [row[0] for row in series[0]["values"]]
    zone = ZoneInfo(demo.field.timezone)
    for ms in stamps:
        local = dt.datetime.fromtimestamp(ms / 1000, zone)
        assert (local.hour, local.minute) == (0, 0), local
    assert dt.datetime.fromtimestamp(stamps[0] / 1000, dt.UTC).hour == 23  # UTC+1 in June


def test_an_unknown_time_zone_is_refused() -> None:
    doc = yaml.safe_load(DEMO.read_text())
    FieldConfig.model_validate({**doc, "timezone": "Europe/Paris"})
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        FieldConfig.model_validate({**doc, "timezone": "Mars/Olympus"})


def test_customer_rows_and_choices_read_as_the_customer(boards, demo) -> None:
    board = boards["customer"]
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows and all("${customer:text}" in t for t in rows), rows
    var = board["templating"]["list"][0]
    first = demo.field.customers[0]
    assert var["current"]["text"] == f"{first.name} ({first.id})"
    assert var["current"]["value"] == f"{first.water_meter}|{first.electricity_meter}"
    assert all("|" not in o["text"] for o in var["options"])
    assert build_all(load_field(DEMO))["customer"] == board
