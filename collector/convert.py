"""MQTT payloads to InfluxDB line protocol, per the schema in ``aquavolt/schema.py``.

Telemetry is the hot path (one batch of ~100 readings per message, thousands of messages a
second): :func:`telemetry_fast` parses it with orjson and checks it by hand, and gives up
(returns None) on anything it does not recognise as plainly valid. The wire models then
judge the payload: they either accept it (the lines are built from the model) or raise
:class:`WireError` with the reason, which goes to the dead letter. The fast path accepts a
strict subset of what the models accept, so both paths agree on every valid payload.

Every other message (status, health, alarm events, customer alerts) is rare and goes
through the models.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum

import orjson

from aquavolt import schema
from aquavolt.errors import WireError
from aquavolt.wire import (
    AlarmEvent,
    AlarmState,
    Batch,
    CustomerAlert,
    DeviceState,
    DeviceStatus,
    GatewayState,
    GatewayStatus,
    Health,
    Topics,
    decode,
)

Fields = dict[str, float | int | bool | str]

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}").fullmatch
_POINT = re.compile(r"[a-z][a-z0-9_]{0,63}").fullmatch
_QCODE = {q.value: code for q, code in schema.QUALITY_CODE.items()}
_QUALITY_TAIL = {q: f",quality={code}i " for q, code in _QCODE.items()}
_BATCH_KEYS = frozenset(Batch.model_fields)
_READING_KEYS = frozenset({"point", "value", "ts_ms", "quality"})
_TS_LIMIT = 2**53
_MISSING = object()
_known_points: set[str] = set()


class Kind(StrEnum):
    DATA = "data"
    DEVICE_STATUS = "device_status"
    GATEWAY_STATUS = "gateway_status"
    HEALTH = "health"
    ALARM_EVENT = "alarm_event"
    CUSTOMER_ALERT = "customer_alert"


def subscriptions(topics: Topics) -> dict[str, Kind]:
    """The topic filters the collector subscribes to."""
    return {
        topics.all_data: Kind.DATA,
        topics.all_device_status: Kind.DEVICE_STATUS,
        topics.all_gateway_status: Kind.GATEWAY_STATUS,
        topics.all_health: Kind.HEALTH,
        topics.alarm_events: Kind.ALARM_EVENT,
        topics.customer_alerts: Kind.CUSTOMER_ALERT,
    }


def _num(value: float | int) -> str:
    try:
        return repr(float(value))
    except OverflowError:
        raise WireError(f"value {value} is out of the float range") from None


def telemetry_fast(payload: bytes, gateway: str, device: str) -> list[str] | None:
    """Lines of a plainly valid batch from ``gateway``/``device``; None when unsure."""
    try:
        d = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(d) is not dict or not d.keys() <= _BATCH_KEYS:
        return None
    if d.get("gateway") != gateway or d.get("device") != device:
        return None
    v = d.get("v", 1)
    seq = d.get("seq")
    readings = d.get("readings")
    if (type(v) is not int or v != 1 or type(seq) is not int or seq < 0
            or type(d.get("bd_seq", 0)) is not int or d.get("bd_seq", 0) < 0
            or type(d.get("historical", False)) is not bool
            or type(readings) is not list or not 1 <= len(readings) <= 10000):
        return None
    if not (_IDENT(gateway) and _IDENT(device)):
        return None
    pre = f"{schema.TELEMETRY},device={device},gateway={gateway},point="
    out: list[str] = []
    append = out.append
    known = _known_points
    tail = _QUALITY_TAIL
    for r in readings:
        if type(r) is not dict:
            return None
        if len(r) == 4:  # the usual reading: all four keys, and so no other
            try:
                point, ts, q, val = r["point"], r["ts_ms"], r["quality"], r["value"]
            except KeyError:
                return None
        elif r.keys() <= _READING_KEYS:
            point, ts, q = r.get("point"), r.get("ts_ms"), r.get("quality", "good")
            val = r.get("value", _MISSING)
        else:
            return None
        if point not in known:
            if type(point) is not str or not _POINT(point):
                return None
            if len(known) > 100_000:
                known.clear()
            known.add(point)
        if type(ts) is not int or not 0 <= ts < _TS_LIMIT or type(q) is not str:
            return None
        qt = tail.get(q)
        if qt is None:
            return None
        tv = type(val)
        if tv is float:  # JSON has no NaN or infinity: repr is the line protocol's float
            append(f"{pre}{point} value={val!r}{qt}{ts}")
        elif tv is int:
            append(f"{pre}{point} value={_num(val)}{qt}{ts}")
        elif tv is bool:
            append(f"{pre}{point} value={1.0 if val else 0.0}{qt}{ts}")
        elif tv is str:
            append(f'{pre}{point} text="{schema.escape_str(val)}"{qt}{ts}')
        elif val is None and q != "good":
            append(f"{pre}{point} quality={_QCODE[q]}i {ts}")
        else:
            return None
    return out


def telemetry_lines(batch: Batch) -> list[str]:
    """Lines of a batch the model accepted (the slow path)."""
    out = []
    tags = {"gateway": batch.gateway, "device": batch.device}
    for r in batch.readings:
        fields: Fields = {}
        if isinstance(r.value, bool):
            fields["value"] = 1.0 if r.value else 0.0
        elif isinstance(r.value, int | float):
            fields["value"] = float(_num(r.value))
        elif isinstance(r.value, str):
            fields["text"] = r.value
        fields["quality"] = schema.QUALITY_CODE[r.quality]
        out.append(schema.line(schema.TELEMETRY, {**tags, "point": r.point}, fields, r.ts_ms))
    return out


def _check_source(what: str, topic_gw: str | None, gw: str, topic_dev: str | None = None,
                  dev: str | None = None) -> None:
    if topic_gw is not None and topic_gw != gw:
        raise WireError(f"{what}: topic names gateway {topic_gw!r}, payload says {gw!r}")
    if topic_dev is not None and topic_dev != dev:
        raise WireError(f"{what}: topic names device {topic_dev!r}, payload says {dev!r}")


def _data(payload: bytes, gw: str | None, dev: str | None) -> list[str]:
    if gw is not None and dev is not None:
        fast = telemetry_fast(payload, gw, dev)
        if fast is not None:
            return fast
    batch = decode(payload, Batch)
    _check_source("Batch", gw, batch.gateway, dev, batch.device)
    return telemetry_lines(batch)


def _gateway_status(payload: bytes, gw: str | None, _dev: str | None) -> list[str]:
    m = decode(payload, GatewayStatus)
    _check_source("GatewayStatus", gw, m.gateway)
    fields: Fields = {"state": m.state.value, "online": int(m.state is GatewayState.ONLINE),
                      "bd_seq": m.bd_seq, "devices": len(m.devices), "software": m.software,
                      "reason": m.reason}
    return [schema.line(schema.GATEWAY_STATUS, {"gateway": m.gateway}, fields, m.ts_ms)]


def _device_status(payload: bytes, gw: str | None, dev: str | None) -> list[str]:
    m = decode(payload, DeviceStatus)
    _check_source("DeviceStatus", gw, m.gateway, dev, m.device)
    fields: Fields = {"state": m.state.value, "online": int(m.state is DeviceState.ONLINE),
                      "profile": m.profile, "reason": m.reason, "points": len(m.points)}
    return [schema.line(schema.DEVICE_STATUS, {"gateway": m.gateway, "device": m.device}, fields,
                        m.ts_ms)]


def _health(payload: bytes, gw: str | None, _dev: str | None) -> list[str]:
    m = decode(payload, Health)
    _check_source("Health", gw, m.gateway)
    b = m.buffer
    fields: Fields = {"uptime_s": float(m.uptime_s), "readings_per_s": float(m.readings_per_s),
                      "devices": len(m.devices), "buffer_depth": b.depth, "buffer_bytes": b.bytes,
                      "buffer_oldest_age_s": float(b.oldest_age_s), "buffer_dropped": b.dropped}
    out = [schema.line(schema.GATEWAY_HEALTH, {"gateway": m.gateway}, fields, m.ts_ms)]
    for name, d in m.devices.items():
        if not _IDENT(name):
            raise WireError(f"Health: devices: {name!r} is not a device identifier")
        df: Fields = {"state": d.state.value, "online": int(d.state is DeviceState.ONLINE),
                      "polls": d.polls, "errors": d.errors, "last_error": d.last_error}
        if d.poll_latency_ms is not None:
            df["poll_latency_ms"] = float(d.poll_latency_ms)
        if d.last_good_ms is not None:
            df["last_good_ms"] = d.last_good_ms
        out.append(schema.line(schema.DEVICE_HEALTH, {"gateway": m.gateway, "device": name}, df,
                               m.ts_ms))
    return out


_ACTIVE = {AlarmState.UNACK, AlarmState.ACKED}


def _alarm_event(payload: bytes, _gw: str | None, _dev: str | None) -> list[str]:
    m = decode(payload, AlarmEvent)
    fields: Fields = {"alarm_id": m.alarm_id, "state": m.state.value, "transition": m.transition,
                      "active": int(m.state in _ACTIVE), "message": m.message, "by": m.by,
                      "comment": m.comment}
    if isinstance(m.value, bool):
        fields["value"] = 1.0 if m.value else 0.0
    elif isinstance(m.value, int | float):
        fields["value"] = float(_num(m.value))
    elif isinstance(m.value, str):
        fields["value_text"] = m.value
    tags = {"asset": m.asset, "condition": m.condition, "priority": m.priority}
    return [schema.line(schema.ALARM_EVENT, tags, fields, m.ts_ms)]


def _customer_alert(payload: bytes, _gw: str | None, _dev: str | None) -> list[str]:
    m = decode(payload, CustomerAlert)
    # The phone number is personal data and stays out of the time series.
    fields: Fields = {"id": m.id, "language": m.language, "text": m.text}
    tags = {"customer": m.customer, "kind": m.kind, "status": m.status}
    return [schema.line(schema.CUSTOMER_ALERT, tags, fields, m.ts_ms)]


_CONVERTERS: dict[Kind, Callable[[bytes, str | None, str | None], list[str]]] = {
    Kind.DATA: _data,
    Kind.GATEWAY_STATUS: _gateway_status,
    Kind.DEVICE_STATUS: _device_status,
    Kind.HEALTH: _health,
    Kind.ALARM_EVENT: _alarm_event,
    Kind.CUSTOMER_ALERT: _customer_alert,
}


class Router:
    """Classifies a topic and turns its payload into lines; raises WireError on bad input."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self._events = {topics.alarm_events: Kind.ALARM_EVENT,
                        topics.customer_alerts: Kind.CUSTOMER_ALERT}
        self._gw_head = topics.prefix + "/gw/"

    def classify(self, topic: str) -> tuple[Kind, str | None, str | None]:
        kind = self._events.get(topic)
        if kind is not None:
            return kind, None, None
        if topic.startswith(self._gw_head):
            parts = topic[len(self._gw_head):].split("/")
            if len(parts) == 4 and parts[1] == "dev" and parts[3] == "data":
                return Kind.DATA, parts[0], parts[2]
        what, gw, dev = self.topics.parse(topic)
        if what == "status":
            return (Kind.GATEWAY_STATUS, gw, None) if dev is None else (Kind.DEVICE_STATUS, gw, dev)
        if what == "health":
            return Kind.HEALTH, gw, None
        raise WireError(f"topic {topic!r} is not one the collector stores")

    def lines(self, topic: str, payload: bytes) -> tuple[Kind, list[str]]:
        kind, gw, dev = self.classify(topic)
        return kind, _CONVERTERS[kind](payload, gw, dev)
