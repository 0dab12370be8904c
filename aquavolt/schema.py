"""The InfluxDB schema every component agrees on (written down in docs/influxdb-schema.md).

Raw telemetry: measurement ``telemetry``, one series per (gateway, device, point):

    telemetry,gateway=gw-north,device=inlet-a,point=flow_lps value=12.5,quality=192i 1764412345000

Numbers and booleans go to the float field ``value`` (true = 1.0), strings to ``text``;
``quality`` is the Sparkplug code (192 good, 64 uncertain, 0 bad, 500 stale). Timestamps
are the source timestamps, in milliseconds. Never a value, sequence number or timestamp
as a tag: tag cardinality stays bounded by the field's devices and points.
"""

from __future__ import annotations

from typing import Final

from aquavolt.wire import Quality

DATABASE: Final = "aquavolt"
PRECISION: Final = "ms"

TELEMETRY: Final = "telemetry"
DEVICE_STATUS: Final = "device_status"
GATEWAY_STATUS: Final = "gateway_status"
GATEWAY_HEALTH: Final = "gateway_health"
DEVICE_HEALTH: Final = "device_health"
ALARM_EVENT: Final = "alarm_event"
CUSTOMER_ALERT: Final = "customer_alert"
WATER_BALANCE: Final = "water_balance"
NIGHT_FLOW: Final = "night_flow"
OUTAGE: Final = "outage"
RELIABILITY: Final = "reliability"
COLLECTOR_STATS: Final = "collector_stats"
DATA_LOSS: Final = "data_loss"
"""A gap of a gateway's data messages that its store could no longer fill (lost for good)."""
ASSET_LOCATION: Final = "asset_location"
"""Where each asset of the field sits (tags asset, kind; fields latitude_deg, longitude_deg):
written from the field file by ``aquavolt dashboards assets``, read by the overview map."""

MEASUREMENTS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # measurement: (tags, fields). Fields are floats unless listed in FIELD_TYPES.
    TELEMETRY: (("gateway", "device", "point"), ("value", "text", "quality")),
    GATEWAY_STATUS: (("gateway",), ("state", "online", "bd_seq", "devices", "software", "reason")),
    DEVICE_STATUS: (("gateway", "device"), ("state", "online", "profile", "reason", "points")),
    GATEWAY_HEALTH: (("gateway",), ("uptime_s", "readings_per_s", "devices", "buffer_depth",
                                    "buffer_bytes", "buffer_oldest_age_s", "buffer_dropped")),
    DEVICE_HEALTH: (("gateway", "device"), ("state", "online", "polls", "errors", "poll_latency_ms",
                                            "last_good_ms", "last_error")),
    ALARM_EVENT: (("asset", "condition", "priority"), ("alarm_id", "state", "transition", "active",
                                                      "message", "value", "value_text", "by",
                                                      "comment")),
    CUSTOMER_ALERT: (("customer", "kind", "status"), ("id", "language", "text")),
    COLLECTOR_STATS: (("collector",), ("messages_total", "readings_total", "points_written_total",
                                       "batches_total", "write_retries_total", "deadletters_total",
                                       "backlog_messages", "pending_points", "messages_per_s",
                                       "points_per_s", "batch_latency_ms_mean",
                                       "batch_latency_ms_max")),
    DATA_LOSS: (("gateway",), ("messages", "first_seq", "last_seq")),
}
"""What the collector writes: tags and fields per measurement (docs/influxdb-schema.md)."""

FIELD_TYPES: Final[dict[str, str]] = {
    # field name: "integer" or "string" (every other field is a float)
    "text": "string", "quality": "integer", "state": "string", "online": "integer",
    "bd_seq": "integer", "devices": "integer", "software": "string", "reason": "string",
    "profile": "string", "points": "integer", "buffer_depth": "integer", "buffer_bytes": "integer",
    "buffer_dropped": "integer", "polls": "integer", "errors": "integer", "last_good_ms": "integer",
    "last_error": "string", "alarm_id": "string", "transition": "string", "active": "integer",
    "message": "string", "value_text": "string", "by": "string", "comment": "string",
    "id": "string", "language": "string", "messages_total": "integer", "readings_total": "integer",
    "points_written_total": "integer", "batches_total": "integer", "write_retries_total": "integer",
    "deadletters_total": "integer", "backlog_messages": "integer", "pending_points": "integer",
    "messages": "integer", "first_seq": "integer", "last_seq": "integer",
}
"""Line-protocol type of each non-float field, the same in every measurement that has it."""

# Retention policies and rollups (continuous queries on InfluxDB 1.x).
RP_RAW: Final = "autogen"
ROLLUPS: Final = (
    # (retention policy, duration, group by interval, measurement)
    ("rp_1m", "400d", "1m", "telemetry_1m"),
    ("rp_1h", "1100d", "1h", "telemetry_1h"),
    ("rp_1d", "INF", "1d", "telemetry_1d"),
)

RP_EVENTS: Final = "rp_events"
EVENTS_SHARD_DURATION: Final = "52w"
EVENT_MEASUREMENTS: Final = (ALARM_EVENT, CUSTOMER_ALERT, ASSET_LOCATION)
"""The journals (alarm transitions, customer alerts) and the asset register live in their own
retention policy, kept for ever in yearly shards: a few thousand points a year, read since
the beginning by the latest-state panels (active alarms, the map), which on ``autogen``'s
weekly shards opened every week of the journal's life (``docs/influxdb-schema.md``)."""

QUALITY_CODE: Final[dict[Quality, int]] = {
    Quality.GOOD: 192,
    Quality.UNCERTAIN: 64,
    Quality.BAD: 0,
    Quality.STALE: 500,
}
CODE_QUALITY: Final[dict[int, Quality]] = {v: k for k, v in QUALITY_CODE.items()}


def escape_tag(value: str) -> str:
    """Escape a tag key or value for line protocol."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_str(value: str) -> str:
    """Escape a string field value (without the quotes)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def field_value(value: float | int | bool | str) -> str:
    """Line-protocol rendering of a field value: floats, ``i`` integers, strings, booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return f'"{escape_str(value)}"'


def line(
    measurement: str,
    tags: dict[str, str],
    fields: dict[str, float | int | bool | str],
    ts_ms: int,
) -> str:
    """One line of line protocol (tags sorted, as InfluxDB prefers)."""
    tag_part = "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v)
    field_part = ",".join(f"{escape_tag(k)}={field_value(v)}" for k, v in fields.items())
    return f"{escape_tag(measurement)}{tag_part} {field_part} {ts_ms}"


def events_policy(database: str = DATABASE) -> str:
    """The statement creating the journals' retention policy (idempotent)."""
    return (f'CREATE RETENTION POLICY "{RP_EVENTS}" ON "{database}" DURATION INF REPLICATION 1 '
            f"SHARD DURATION {EVENTS_SHARD_DURATION}")


def continuous_queries(database: str = DATABASE) -> list[str]:
    """InfluxQL statements creating the retention policies and rollup CQs (idempotent)."""
    stmts = [f'CREATE DATABASE "{database}"', events_policy(database)]
    for rp, duration, interval, meas in ROLLUPS:
        stmts.append(
            f'CREATE RETENTION POLICY "{rp}" ON "{database}" DURATION {duration} REPLICATION 1'
        )
        stmts.append(
            f'CREATE CONTINUOUS QUERY "cq_{meas}" ON "{database}" BEGIN '
            f'SELECT mean("value") AS "mean", min("value") AS "min", max("value") AS "max", '
            f'sum("value") AS "sum", count("value") AS "count", last("value") AS "last" '
            f'INTO "{database}"."{rp}"."{meas}" FROM "{database}"."{RP_RAW}"."{TELEMETRY}" '
            f"GROUP BY time({interval}), * END"
        )
    return stmts
