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
- ``data_loss`` (tag gateway): ``messages`` (int) lost for good in one gap the gateway could no
  longer fill, ``first_seq``, ``last_seq`` (written by the collector);
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


RANGE_MS = "${__to} - ${__from}"
"""The dashboard's range in milliseconds, as Grafana substitutes it: two integer literals that
InfluxDB folds, so a condition on it is true or false for the whole query."""
RAW_MAX_MS = 86_400_000
"""Raw telemetry is read for ranges up to one day; longer ranges read the rollups."""
HOURLY_MAX_MS = 92 * 86_400_000
"""The hourly rollup serves ranges up to three months; longer ones read the daily rollup."""
_HOURLY = next((rp, meas) for rp, _d, i, meas in schema.ROLLUPS if i == "1h")
_DAILY = next((rp, meas) for rp, _d, i, meas in schema.ROLLUPS if i == "1d")
BANDS: tuple[tuple[str, str, str], ...] = (
    # (refId suffix, source, condition on the range)
    ("", f'"{T}"', f"({RANGE_MS} <= {RAW_MAX_MS})"),
    ("-hourly", f'"{_HOURLY[0]}"."{_HOURLY[1]}"',
     f"({RANGE_MS} > {RAW_MAX_MS}) AND ({RANGE_MS} <= {HOURLY_MAX_MS})"),
    ("-daily", f'"{_DAILY[0]}"."{_DAILY[1]}"', f"({RANGE_MS} > {HOURLY_MAX_MS})"),
)
"""One target per band: only the band whose condition holds reads anything (the others are
false as a whole and return at once), so a panel reads raw data over a day at most."""
_FROM_ROLLUP = {
    # raw aggregate of "value" -> the same figure from a rollup's fields
    "mean": 'sum("sum") / sum("count")',
    "max": 'max("max")',
    "min": 'min("min")',
    "last": 'last("last")',
    "first": 'first("first")',
    "spread": 'max("max") - min("min")',
    "count": 'sum("count")',
}


class Banded(tuple[str, ...]):
    """The targets of one logical query, one per band (raw, hourly, daily): ``targets()`` gives
    them refIds ``A``, ``A-hourly``, ``A-daily`` (or ``suffixes``)."""

    suffixes: tuple[str, ...] = tuple(b[0] for b in BANDS)

    def __new__(cls, items: Iterable[str], suffixes: tuple[str, ...] | None = None) -> Banded:
        self = super().__new__(cls, items)
        if suffixes is not None:
            self.suffixes = suffixes
        return self


def banded(agg: str, scale: str, where: str, group: str, bands: tuple[int, ...] = (0, 1, 2)) -> Banded:
    """``SELECT agg("value"){scale} ... WHERE {where} AND $timeFilter GROUP BY {group}``, for
    each band: raw telemetry for a day at most, the hourly rollup up to three months, the daily
    rollup beyond (``bands`` picks fewer; the last one chosen takes every longer range)."""
    out = []
    chosen = [BANDS[i] for i in bands]
    for k, (_suffix, source, band) in enumerate(chosen):
        # the last band chosen takes every longer range
        cond = band.split(" AND ")[0] if k == len(chosen) - 1 and len(chosen) < len(BANDS) else band
        select = f'{agg}("value")' if source == f'"{T}"' else _FROM_ROLLUP[agg]
        out.append(f'SELECT {select}{scale} AS "{agg}" FROM {source} WHERE {where} AND $timeFilter '
                   f"AND {cond} GROUP BY {group}")
    return Banded(out, suffixes=tuple(b[0] for b in chosen))


def point_mean(devices: Iterable[str], point: str, scale: str = "", agg: str = "mean") -> Banded:
    """One series per device: the mean (or another aggregate) of a point per interval."""
    return banded(agg, scale, f"{_in('device', devices)} AND \"point\" = '{point}'",
                  'time($__interval), "device" fill(none)')


def points_of(device: str, points: Iterable[str], agg: str = "mean") -> Banded:
    """One series per point of one device."""
    return banded(agg, "", f"\"device\" = '{device}' AND {_in('point', points)}",
                  'time($__interval), "point" fill(none)')


def local_days(tz: str) -> str:
    """InfluxQL's time zone clause: days start at the utility's midnight (the field's ``timezone``)."""
    return f" tz('{tz}')"


# ---------------------------------------------------------------- water


def night_flow(zone: str, tz: str = "UTC") -> str:
    return (
        f'SELECT mean("mnf_m3h") AS "minimum night flow", mean("nnf_m3h") AS "net night flow", '
        f'mean("rise_m3h") AS "leak estimate" '
        f"FROM \"{schema.NIGHT_FLOW}\" WHERE \"zone\" = '{zone}' AND $timeFilter GROUP BY time(1d) fill(none)"
        + local_days(tz)
    )


def water_balance(zones: Iterable[str], tz: str = "UTC") -> str:
    return (
        f'SELECT sum("input_m3") AS "input", sum("consumption_m3") AS "consumption", '
        f'sum("losses_m3") AS "losses" FROM "{schema.WATER_BALANCE}" WHERE {_in("zone", zones)} '
        f'AND $timeFilter GROUP BY time(1d), "zone" fill(none)' + local_days(tz)
    )


# ---------------------------------------------------------------- alarms

A = f'"{schema.RP_EVENTS}"."{schema.ALARM_EVENT}"'
"""The alarm journal, in its retention policy of yearly shards (``schema.RP_EVENTS``)."""
_UNTIL_END = "time <= ${__to}ms"
"""Latest-state queries look back past the range start: an alarm raised, or a gateway born,
before the range and not changed since is still in that state."""
_ACTIVE = "(" + " OR ".join(f"\"state\" = '{s}'" for s in ACTIVE_STATES) + ")"
_LAST_STATE = (
    f'SELECT last("state") AS "state", last("message") AS "message" FROM {A} '
    f'WHERE {_UNTIL_END} GROUP BY "asset", "condition", "priority"'
)


def active_alarms() -> str:
    """Alarms whose latest state is active or unacknowledged, one row each (table)."""
    return f"SELECT * FROM ({_LAST_STATE}) WHERE {_ACTIVE}"


def active_by_priority() -> str:
    """Active alarms (``active`` = 1: unack or acked) per priority; 0 once all have cleared."""
    return (
        f'SELECT sum("active") FROM (SELECT last("active") AS "active" FROM {A} WHERE {_UNTIL_END} '
        f'GROUP BY "asset", "condition", "priority") GROUP BY "priority"'
    )


def active_per_asset() -> str:
    """Active alarms per asset (the map's marker colour); assets that never alarmed: no row."""
    return (
        f'SELECT sum("active") AS "active_alarms" FROM (SELECT last("active") AS "active" FROM {A} '
        f'WHERE {_UNTIL_END} GROUP BY "asset", "condition") GROUP BY "asset"'
    )


def alarm_history() -> str:
    return (
        f'SELECT "asset", "condition", "priority", "state", "transition", "message" FROM {A} '
        f"WHERE $timeFilter ORDER BY time DESC LIMIT 500"
    )


def raised_per(interval: str, by_priority: bool = False) -> str:
    """The most alarms raised in one ``interval`` (1h, 10m) within each panel interval: the
    count itself when the panel's interval is ``interval`` (the panel's minimum), the worst
    one over longer ranges, without one row per empty ``interval`` of a year."""
    group = ', "priority"' if by_priority else ""
    return (
        f'SELECT max("n") AS "raised" FROM (SELECT count("transition") AS "n" FROM {A} '
        f"WHERE \"transition\" = 'raised' AND $timeFilter GROUP BY time({interval}){group} fill(none)) "
        f"WHERE $timeFilter GROUP BY time($__interval){group} fill(0)"
    )


def priority_mix() -> str:
    return (f'SELECT count("transition") FROM {A} WHERE "transition" = \'raised\' AND $timeFilter '
            f'GROUP BY "priority"')


def chattering() -> str:
    """Most raises of one alarm within one minute (3 or more is chattering)."""
    return (
        f'SELECT max("n") FROM (SELECT count("transition") AS "n" FROM {A} WHERE "transition" = '
        f"'raised' AND $timeFilter GROUP BY time(1m), \"asset\", \"condition\" fill(none))"
    )


def stale_alarms() -> str:
    """Alarms active for more than 24 h at the end of the range."""
    return (
        f'SELECT count("state") FROM (SELECT last("state") AS "state" FROM {A} '
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
        f'SELECT last("state") AS "state", last("message") AS "message" FROM {A} '
        f"WHERE \"condition\" = 'outage' AND {_in('asset', assets)} AND $timeFilter GROUP BY \"asset\""
    )


# ---------------------------------------------------------------- gateways


LAST_DAY = "time >= ${__to}ms - 1d"
"""Health reports (``gateway_health``, ``device_health``, about every minute per gateway and
device) have no rollup: panels read their last day of the range at most."""


def gateway_states() -> Banded:
    """1 (online) in each interval a gateway sent a health report, 0 (offline) in the others;
    over more than a day, the gateway's last birth or death (``gateway_status``) per interval.

    ``gateway_status`` changes only at birth and death, often long before the range, and a
    per-interval ``last`` of it is empty then: the periodic health reports are what show a
    gateway alive within any range."""
    return Banded((
        f'SELECT count("uptime_s") / count("uptime_s") AS "online" FROM "{schema.GATEWAY_HEALTH}" '
        f'WHERE $timeFilter AND {BANDS[0][2]} GROUP BY time($__interval), "gateway" fill(0)',
        # longer ranges: births and deaths (``gateway_status``), carried forward
        f'SELECT last("online") AS "online" FROM "{schema.GATEWAY_STATUS}" '
        f"WHERE $timeFilter AND ({RANGE_MS} > {RAW_MAX_MS}) "
        f'GROUP BY time($__interval), "gateway" fill(previous)',
    ), suffixes=("", "-status"))


def gateways_online() -> str:
    return (
        f'SELECT sum("online") FROM (SELECT last("online") AS "online" FROM "{schema.GATEWAY_STATUS}" '
        f'WHERE {_UNTIL_END} GROUP BY "gateway")'
    )


def devices_online(gateway: str) -> str:
    """Devices of a gateway whose latest health state is online."""
    return (
        f'SELECT sum("online") FROM (SELECT last("online") AS "online" FROM "{schema.DEVICE_HEALTH}" '
        f"WHERE \"gateway\" = '{gateway}' AND $timeFilter AND {LAST_DAY} GROUP BY \"device\")"
    )


def poll_errors() -> str:
    return (
        f'SELECT non_negative_difference(max("errors")) FROM "{schema.DEVICE_HEALTH}" WHERE $timeFilter '
        f"AND {LAST_DAY} "
        f'GROUP BY time($__interval), "gateway" fill(none)'
    )


def poll_latency() -> str:
    return (
        f'SELECT mean("poll_latency_ms") FROM "{schema.DEVICE_HEALTH}" WHERE $timeFilter '
        f"AND {LAST_DAY} "
        f'GROUP BY time($__interval), "gateway" fill(none)'
    )


def data_lost() -> str:
    """Data messages lost for good per gateway over the range (gaps its store could no longer
    fill). An event series like ``alarm_event``: a point per such gap, rare, so read raw over
    the whole range; no row for a gateway that lost nothing."""
    return (f'SELECT sum("messages") AS "lost" FROM "{schema.DATA_LOSS}" WHERE $timeFilter '
            f'GROUP BY "gateway"')


def gateway_health(field: str, agg: str = "max") -> str:
    return (
        f'SELECT {agg}("{field}") FROM "{schema.GATEWAY_HEALTH}" WHERE $timeFilter '
        f'AND {LAST_DAY} GROUP BY time($__interval), "gateway" fill(none)'
    )


# ---------------------------------------------------------------- customer


def consumption(point: str, shift: str = "", name: str = "spread", tz: str = "UTC",
                last_year: bool = False) -> Banded:
    """Daily consumption of the chosen customer's meter (``$customer`` = meter ids regex), per
    local day (``tz``, the field's time zone).

    Ranges up to a day read the raw readings (the day's ``spread`` of the totaliser); longer
    ones the hourly rollup (max of the hours' max minus min of their min), kept 3 years, whose
    hours make exact local days (the daily rollup's days are UTC days).

    ``shift`` (``364d``) moves the window back, weekdays aligned, for last year; last year
    (``shift``, or ``last_year`` for a panel that shifts its own time range) reads the daily
    rollup at every range: the figures the over-consumption check compares (and that
    a customer's alert quotes), kept for ever; its UTC days are grouped in the local day that
    holds their start.
    """
    window = (f"time >= ${{__from}}ms - {shift} AND time <= ${{__to}}ms - {shift}" if shift
              else "$timeFilter")
    where = f'"device" =~ /^(${{customer:raw}})$/ AND "point" = \'{point}\''
    if shift or last_year:
        return Banded([f'SELECT {_FROM_ROLLUP["spread"]} AS "{name}" FROM "{_DAILY[0]}"."{_DAILY[1]}" '
                       f"WHERE {where} AND {window} GROUP BY time(1d) fill(none)" + local_days(tz)],
                      suffixes=("",))
    out = banded("spread", "", where, "time(1d) fill(none)" + local_days(tz), bands=(0, 1))
    return Banded((q.replace(' AS "spread"', f' AS "{name}"').replace("$timeFilter", window) for q in out),
                  suffixes=out.suffixes)


def consumption_total(point: str, shift: str = "", tz: str = "UTC") -> Banded:
    """Total over the range (or the shifted range) of the daily consumption."""
    daily = consumption(point, shift, tz=tz)
    return Banded((f'SELECT sum("spread") FROM ({q})' for q in daily), suffixes=daily.suffixes)
