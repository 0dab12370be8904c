"""Every InfluxQL statement the dashboards send, in one place, against ``aquavolt/schema.py``.

Queries use Grafana's InfluxDB macros: ``$timeFilter`` (the dashboard's time range),
``$__interval`` (the panel's resolution), ``${__from}``/``${__to}`` (the range ends in
epoch milliseconds) and template variables (``$customer``). :mod:`dashboards.macros`
substitutes them the way Grafana does, for the tests and the static rendering.

Fields of the event and health measurements read here (see docs/influxdb-schema.md):

- ``alarm_event`` (tags asset, condition, priority): ``state``, ``transition``, ``message``,
  ``active`` (1 while unack or acked);
- ``gateway_status`` (tag gateway): ``state`` (online/offline), ``online`` (1/0);
- ``gateway_health`` (tag gateway): ``buffer_depth``, ``buffer_dropped``, ``readings_per_s``, ``uptime_s``
  (a report about every minute while the gateway is online);
- ``device_health`` (tags gateway, device): ``online`` (1/0), ``errors``, ``poll_latency_ms``;
- ``night_flow`` (tag zone): ``mnf_m3h``, ``nnf_m3h``, ``rise_m3h`` (written by the night-flow detector);
- ``water_balance`` (tag zone): ``input_m3``, ``consumption_m3``, ``losses_m3``;
- ``outage`` (tags feeder, transformer): ``duration_s``, ``customers``, ``classification``
  (one point per restoration, written by the outage detector);
- ``reliability`` (tag feeder): ``saidi_min``, ``saifi``, ``maifi`` (IEEE 1366, daily).
"""

from __future__ import annotations

from collections.abc import Iterable

from aquavolt import schema

T = schema.TELEMETRY
ACTIVE_STATES = ("unack", "acked", "rtn_unack")
"""Alarm states an operator must still see (ISA-18.2): active, or returned but unacknowledged."""


def _in(tag: str, values: Iterable[str]) -> str:
    vals = sorted(set(values))
    if len(vals) == 1:
        return f"\"{tag}\" = '{vals[0]}'"
    return "(" + " OR ".join(f"\"{tag}\" = '{v}'" for v in vals) + ")"


def point_mean(devices: Iterable[str], point: str, scale: str = "", agg: str = "mean") -> str:
    """One series per device: the mean (or another aggregate) of a point per interval."""
    return (
        f'SELECT {agg}("value"){scale} FROM "{T}" WHERE {_in("device", devices)} '
        f"AND \"point\" = '{point}' AND $timeFilter GROUP BY time($__interval), \"device\" fill(none)"
    )


def points_of(device: str, points: Iterable[str], agg: str = "mean") -> str:
    """One series per point of one device."""
    return (
        f'SELECT {agg}("value") FROM "{T}" WHERE "device" = \'{device}\' AND {_in("point", points)} '
        f'AND $timeFilter GROUP BY time($__interval), "point" fill(none)'
    )


def latest(devices: Iterable[str], point: str) -> str:
    """The last value of a point per device (stat and gauge panels)."""
    return (
        f'SELECT last("value") FROM "{T}" WHERE {_in("device", devices)} '
        f"AND \"point\" = '{point}' AND $timeFilter GROUP BY \"device\""
    )


# ---------------------------------------------------------------- water


def night_flow(zone: str) -> str:
    return (
        f'SELECT mean("mnf_m3h") AS "minimum night flow", mean("nnf_m3h") AS "net night flow", '
        f'mean("rise_m3h") AS "leak estimate" '
        f"FROM \"{schema.NIGHT_FLOW}\" WHERE \"zone\" = '{zone}' AND $timeFilter GROUP BY time(1d) fill(none)"
    )


def water_balance(zones: Iterable[str]) -> str:
    return (
        f'SELECT sum("input_m3") AS "input", sum("consumption_m3") AS "consumption", '
        f'sum("losses_m3") AS "losses" FROM "{schema.WATER_BALANCE}" WHERE {_in("zone", zones)} '
        f'AND $timeFilter GROUP BY time(1d), "zone" fill(none)'
    )


# ---------------------------------------------------------------- alarms

A = schema.ALARM_EVENT
_UNTIL_END = "time <= ${__to}ms"
"""Latest-state queries look back past the range start: an alarm raised, or a gateway born,
before the range and not changed since is still in that state."""
_ACTIVE = "(" + " OR ".join(f"\"state\" = '{s}'" for s in ACTIVE_STATES) + ")"
_LAST_STATE = (
    f'SELECT last("state") AS "state", last("message") AS "message" FROM "{A}" '
    f'WHERE {_UNTIL_END} GROUP BY "asset", "condition", "priority"'
)


def active_alarms() -> str:
    """Alarms whose latest state is active or unacknowledged, one row each (table)."""
    return f"SELECT * FROM ({_LAST_STATE}) WHERE {_ACTIVE}"


def active_by_priority() -> str:
    """Active alarms (``active`` = 1: unack or acked) per priority; 0 once all have cleared."""
    return (
        f'SELECT sum("active") FROM (SELECT last("active") AS "active" FROM "{A}" WHERE {_UNTIL_END} '
        f'GROUP BY "asset", "condition", "priority") GROUP BY "priority"'
    )


def active_per_asset() -> str:
    """Active alarms per asset (the map's marker colour); assets that never alarmed: no row."""
    return (
        f'SELECT sum("active") AS "active_alarms" FROM (SELECT last("active") AS "active" FROM "{A}" '
        f'WHERE {_UNTIL_END} GROUP BY "asset", "condition") GROUP BY "asset"'
    )


def alarm_history() -> str:
    return (
        f'SELECT "asset", "condition", "priority", "state", "transition", "message" FROM "{A}" '
        f"WHERE $timeFilter ORDER BY time DESC LIMIT 500"
    )


def raised_per(interval: str, by_priority: bool = False) -> str:
    group = ', "priority"' if by_priority else ""
    return (
        f'SELECT count("transition") FROM "{A}" WHERE "transition" = \'raised\' AND $timeFilter '
        f"GROUP BY time({interval}){group} fill(0)"
    )


def priority_mix() -> str:
    return (f'SELECT count("transition") FROM "{A}" WHERE "transition" = \'raised\' AND $timeFilter '
            f'GROUP BY "priority"')


def chattering() -> str:
    """Most raises of one alarm within one minute (3 or more is chattering)."""
    return (
        f'SELECT max("n") FROM (SELECT count("transition") AS "n" FROM "{A}" WHERE "transition" = '
        f"'raised' AND $timeFilter GROUP BY time(1m), \"asset\", \"condition\")"
    )


def stale_alarms() -> str:
    """Alarms active for more than 24 h at the end of the range."""
    return (
        f'SELECT count("state") FROM (SELECT last("state") AS "state" FROM "{A}" '
        f'WHERE time <= ${{__to}}ms - 24h GROUP BY "asset", "condition") WHERE {_ACTIVE}'
    )


def outage_history(feeders: Iterable[str]) -> str:
    """Every restored outage of these feeders in the range: when, how long, whom, what class."""
    return (
        f'SELECT "duration_s", "customers", "classification" FROM "{schema.OUTAGE}" '
        f'WHERE {_in("feeder", feeders)} AND $timeFilter GROUP BY "feeder", "transformer"'
    )


def reliability(feeders: Iterable[str]) -> str:
    """IEEE 1366 indices per feeder and day (SAIDI in minutes, SAIFI, MAIFI)."""
    return (
        f'SELECT "saidi_min" AS "SAIDI (min)", "saifi" AS "SAIFI", "maifi" AS "MAIFI" '
        f'FROM "{schema.RELIABILITY}" WHERE {_in("feeder", feeders)} AND $timeFilter GROUP BY "feeder"'
    )


def outages(assets: Iterable[str]) -> str:
    return (
        f'SELECT last("state") AS "state", last("message") AS "message" FROM "{A}" '
        f"WHERE \"condition\" = 'outage' AND {_in('asset', assets)} AND $timeFilter GROUP BY \"asset\""
    )


# ---------------------------------------------------------------- gateways


def gateway_states() -> str:
    """1 (online) in each interval a gateway sent a health report, 0 (offline) in the others.

    ``gateway_status`` changes only at birth and death, often long before the range, and a
    per-interval ``last`` of it is empty then: the periodic health reports are what show a
    gateway alive within any range."""
    return (
        f'SELECT count("uptime_s") / count("uptime_s") AS "online" FROM "{schema.GATEWAY_HEALTH}" '
        f'WHERE $timeFilter GROUP BY time($__interval), "gateway" fill(0)'
    )


def gateways_online() -> str:
    return (
        f'SELECT sum("online") FROM (SELECT last("online") AS "online" FROM "{schema.GATEWAY_STATUS}" '
        f'WHERE {_UNTIL_END} GROUP BY "gateway")'
    )


def devices_online(gateway: str) -> str:
    """Devices of a gateway whose latest health state is online."""
    return (
        f'SELECT sum("online") FROM (SELECT last("online") AS "online" FROM "{schema.DEVICE_HEALTH}" '
        f"WHERE \"gateway\" = '{gateway}' AND $timeFilter GROUP BY \"device\")"
    )


def poll_errors() -> str:
    return (
        f'SELECT non_negative_difference(max("errors")) FROM "{schema.DEVICE_HEALTH}" WHERE $timeFilter '
        f'GROUP BY time($__interval), "gateway" fill(none)'
    )


def poll_latency() -> str:
    return (
        f'SELECT mean("poll_latency_ms") FROM "{schema.DEVICE_HEALTH}" WHERE $timeFilter '
        f'GROUP BY time($__interval), "gateway" fill(none)'
    )


def gateway_health(field: str, agg: str = "max") -> str:
    return (
        f'SELECT {agg}("{field}") FROM "{schema.GATEWAY_HEALTH}" WHERE $timeFilter '
        f'GROUP BY time($__interval), "gateway" fill(none)'
    )


# ---------------------------------------------------------------- customer


def consumption(point: str, shift: str = "", name: str = "spread", rollup: bool = False) -> str:
    """Daily consumption of the chosen customer's meter (``$customer`` = meter ids regex).

    ``shift`` (``364d``) moves the window back, weekdays aligned, for last year. ``rollup``
    reads the daily rollup (``rp_1d.telemetry_1d``: the day's min and max of the totaliser)
    instead of the raw readings: raw history is kept for weeks, rollups for ever, so last
    year's figures come from the rollup.
    """
    window = (f"time >= ${{__from}}ms - {shift} AND time <= ${{__to}}ms - {shift}" if shift
              else "$timeFilter")
    if rollup:
        rp, _dur, _interval, meas = schema.ROLLUPS[-1]
        select, source = f'max("max") - min("min") AS "{name}"', f'"{rp}"."{meas}"'
    else:
        select, source = f'spread("value") AS "{name}"', f'"{T}"'
    return (
        f'SELECT {select} FROM {source} WHERE "device" =~ /^(${{customer:raw}})$/ '
        f"AND \"point\" = '{point}' AND {window} GROUP BY time(1d) fill(none)"
    )


def consumption_total(point: str, shift: str = "") -> str:
    """Total over the range (or the shifted range: from the daily rollup) of the daily consumption."""
    return f'SELECT sum("spread") FROM ({consumption(point, shift, rollup=bool(shift))})'
