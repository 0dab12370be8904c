"""Fixtures for the dashboard tests: the demo field, its dashboards, and an InfluxDB filled
with points written per ``aquavolt/schema.py`` (field names as the collector writes them) for every device and point of the demo field
(telemetry from the device profiles, last year's readings of the first customer's meters, the hourly and daily rollups, plus alarm events, gateway and device health, night
flow, water balance and asset positions), over two simulated days."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aquavolt import schema
from aquavolt.config import LoadedField, load_field
from aquavolt.dashboards.assets import location_lines
from aquavolt.dashboards.build import build_all
from aquavolt.influx import Influx
from aquavolt.settings import InfluxSettings

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-town.yaml"
START_MS = 1_780_272_000_000  # 2026-06-01T00:00:00Z
DAY_MS = 86_400_000
END_MS = START_MS + 2 * DAY_MS
YEAR_MS = 364 * DAY_MS

TYPICAL = {"voltage": 231.0, "current": 12.0, "power": 800.0, "flow_lps": 18.0, "flow_lph": 20.0,
           "pressure": 3.2, "level_m": 3.5, "temperature": 24.0, "energy": 1000.0, "volume": 100.0,
           "load_kva": 4200.0, "frequency": 50.0, "factor": 0.95, "pct": 80.0}


@dataclass(frozen=True)
class Filled:
    settings: InfluxSettings
    start_ms: int
    end_ms: int


@pytest.fixture(scope="session")
def demo() -> LoadedField:
    return load_field(DEMO)


@pytest.fixture(scope="session")
def boards(demo: LoadedField) -> dict[str, dict[str, Any]]:
    return build_all(demo)


def _value(point: str, kind: str, i: int) -> float:
    """A plausible value that moves: counters grow, analogs wave around a typical level."""
    if kind == "discrete":
        return float(i % 2) if point in ("running", "breaker_closed", "sensor_ok") else 0.0
    base = next((v for k, v in TYPICAL.items() if k in point), 10.0)
    if kind == "counter":
        return base + i * 0.05
    return base * (1 + 0.03 * math.sin(i / 7))


def telemetry_lines(lf: LoadedField, start_ms: int, end_ms: int, devices: list[str] | None = None) -> list[str]:
    out = []
    for dev_id, (gw, _dev) in lf.field.devices.items():
        if devices is not None and dev_id not in devices:
            continue
        metered = dev_id.startswith(("wm-", "em-"))
        step = 3_600_000 if metered else 600_000
        prof = lf.profile_of(dev_id)
        for i, ts in enumerate(range(start_ms, end_ms, step)):
            for p in prof.points:
                if getattr(p, "type", "") in ("string",) or getattr(p, "type", "") == "bitfield":
                    continue
                out.append(schema.line(schema.TELEMETRY, {"gateway": gw.id, "device": dev_id, "point": p.name},
                                       {"value": _value(p.name, p.kind, i), "quality": 192}, ts))
    return out


def event_lines(lf: LoadedField, start_ms: int, end_ms: int) -> list[str]:
    f = lf.field
    a = schema.ALARM_EVENT
    out = []

    def alarm(asset: str, cond: str, prio: str, state: str, transition: str, ts: int) -> None:
        out.append(schema.line(a, {"asset": asset, "condition": cond, "priority": prio},
                               {"state": state, "transition": transition, "message": f"{asset} {cond}",
                                "active": int(state in ("unack", "acked"))}, ts))

    alarm("tank-north-level", "level_m_high", "high", "unack", "raised", start_ms + 3_600_000)  # stale
    alarm("pressure-zone-a", "pressure_bar_low", "medium", "unack", "raised", end_ms - 7_200_000)
    alarm("pressure-zone-a", "pressure_bar_low", "medium", "acked", "acknowledged", end_ms - 7_000_000)
    alarm("tx-1a", "outage", "critical", "unack", "raised", end_ms - 3_600_000)
    alarm("feeder-2", "outage", "critical", "normal", "cleared", end_ms - 3_000_000)
    alarm("c0001", "over_consumption", "low", "unack", "raised", end_ms - 1_800_000)
    for k in range(3):  # a chattering door contact
        alarm("ss1-transformer", "door_open", "low", "unack", "raised", end_ms - 600_000 + k * 10_000)
        alarm("ss1-transformer", "door_open", "low", "normal", "cleared", end_ms - 595_000 + k * 10_000)
    for ts in range(start_ms, end_ms, 3_600_000):
        for gw in f.gateways:
            out.append(schema.line(schema.GATEWAY_STATUS, {"gateway": gw.id},
                                   {"state": "online", "online": 1, "bd_seq": 1}, ts))
            out.append(schema.line(schema.GATEWAY_HEALTH, {"gateway": gw.id},
                                   {"buffer_depth": 3, "buffer_dropped": 0, "readings_per_s": 12.5,
                                    "uptime_s": float((ts - start_ms) // 1000)}, ts))
            for d in gw.devices:
                out.append(schema.line(schema.DEVICE_HEALTH, {"gateway": gw.id, "device": d.id},
                                       {"state": "online", "online": 1, "polls": (ts - start_ms) // 60_000,
                                        "errors": (ts - start_ms) // 3_600_000, "poll_latency_ms": 35.0}, ts))
    for day in range(start_ms, end_ms, DAY_MS):
        for z in f.water.zones:
            out.append(schema.line(schema.NIGHT_FLOW, {"zone": z.id},
                                   {"mnf_m3h": 4.2, "nnf_m3h": 3.1, "rise_m3h": 0.4}, day + 3 * 3_600_000))
            out.append(schema.line(schema.WATER_BALANCE, {"zone": z.id},
                                   {"input_m3": 900.0, "consumption_m3": 720.0, "losses_m3": 180.0}, day))
        for s in f.electricity.substations:  # what the outage detector writes
            for k, fd in enumerate(s.feeders):
                out.append(schema.line(schema.RELIABILITY, {"feeder": fd.id},
                                       {"saidi_min": 25.0 * k, "saifi": 1.0 * k, "maifi": 0.5,
                                        "customers_served": 80, "sustained": k, "momentary": 1}, day))
                out.append(schema.line(schema.OUTAGE, {"feeder": fd.id},
                                       {"duration_s": 120.0, "customers": 80, "classification": "momentary",
                                        "started_ms": day + 36_000_000, "kind": "feeder"}, day + 36_120_000))
    # a gap the first gateway could no longer fill, in two answers (what the collector writes)
    gw0 = f.gateways[0].id
    out.append(schema.line(schema.DATA_LOSS, {"gateway": gw0},
                           {"messages": 12, "first_seq": 400, "last_seq": 411}, start_ms + 7_200_000))
    out.append(schema.line(schema.DATA_LOSS, {"gateway": gw0},
                           {"messages": 3, "first_seq": 900, "last_seq": 902}, end_ms - 3_600_000))
    out.extend(location_lines(f, start_ms))
    return out


@pytest.fixture
def filled(influx_settings: InfluxSettings, demo: LoadedField) -> Filled:
    """InfluxDB holding two days of schema-shaped points for the whole demo field."""
    ix = Influx(influx_settings)
    lines = telemetry_lines(demo, START_MS, END_MS)
    first = demo.field.customers[0]
    meters = [m for m in (first.water_meter, first.electricity_meter) if m]
    lines += telemetry_lines(demo, START_MS - YEAR_MS, END_MS - YEAR_MS, meters)
    lines += event_lines(demo, START_MS, END_MS)
    journal = tuple(f"{m}," for m in schema.EVENT_MEASUREMENTS)  # as the collector writes them
    ix.query(schema.events_policy(influx_settings.database))
    Influx(influx_settings.model_copy(update={"retention_policy": schema.RP_EVENTS})).write(
        [line for line in lines if line.startswith(journal)])
    lines = [line for line in lines if not line.startswith(journal)]
    for k in range(0, len(lines), 20_000):
        ix.write(lines[k : k + 20_000])
    # The hourly and daily rollups of both periods (what the collector's SELECT ... INTO writes),
    # which panels over more than a day read.
    # Only the devices some panel reads (the customer board shows the first customer), the days
    # from the hours as the collector makes them (collector/rollups.py).
    shown = "|".join(d for d in demo.field.devices if not d.startswith(("wm-", "em-"))) + "|" + "|".join(meters)
    (rp_h, dur_h, _ih, meas_h), (rp_d, dur_d, _id, meas_d) = schema.ROLLUPS[1:]
    db = influx_settings.database
    stmts = [f'CREATE RETENTION POLICY "{rp_h}" ON "{db}" DURATION {dur_h} REPLICATION 1',
             f'CREATE RETENTION POLICY "{rp_d}" ON "{db}" DURATION {dur_d} REPLICATION 1']
    for t0, t1 in ((START_MS, END_MS), (START_MS - YEAR_MS, END_MS - YEAR_MS)):
        stmts.append(f'SELECT mean("value") AS "mean", min("value") AS "min", max("value") AS "max", '
                     f'sum("value") AS "sum", count("value") AS "count", last("value") AS "last" '
                     f'INTO "{rp_h}"."{meas_h}" FROM "{schema.TELEMETRY}" WHERE "device" =~ /^({shown})$/ '
                     f"AND time >= {t0}ms AND time < {t1}ms GROUP BY time(1h), *")
        stmts.append(f'SELECT sum("sum") / sum("count") AS "mean", min("min") AS "min", max("max") AS "max", '
                     f'sum("sum") AS "sum", sum("count") AS "count", last("last") AS "last" '
                     f'INTO "{rp_d}"."{meas_d}" FROM "{rp_h}"."{meas_h}" WHERE time >= {t0}ms '
                     f"AND time < {t1}ms GROUP BY time(1d), *")
    slow = Influx(influx_settings.model_copy(update={"timeout_s": 120.0}))  # a loaded machine
    slow.execute(stmts)
    return Filled(influx_settings, START_MS, END_MS)
