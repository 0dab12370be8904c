"""MQTT payloads to InfluxDB line protocol, per the schema in ``aquavolt/schema.py``.

Telemetry is the hot path (one batch of ~100 readings per message, thousands of messages a
second): :func:`telemetry_fast` parses it with orjson and checks it by hand, and gives up
(returns None) on anything it does not recognise as plainly valid. The wire models then
judge the payload: they either accept it (the lines are built from the model) or raise
:class:`WireError` with the reason, which goes to the dead letter. The fast path accepts a
strict subset of what the models accept, so both paths agree on every valid payload.

Every other message (status, health, alarm events, customer alerts) is rare and goes
through the models.

The wire models are strict (docs/wire-format.md, "Limits"). A batch's envelope is judged as a
whole, each of its readings on its own: the bad readings are refused (the caller
dead-letters each with its index and reason), the others in the same message are written.
A payload larger than the limit is refused before it is parsed, and anything stamped more
than ``max_future_s`` ahead of the collector's clock is refused (a forged or broken clock
must not write the far future into the store).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import orjson

from aquavolt import schema
from aquavolt.errors import WireError
from aquavolt.wire import (
    MAX_PAYLOAD_BYTES,
    MAX_READINGS,
    MAX_TEXT_VALUE,
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
    check_size,
    decode,
    decode_batch_partial,
)

Fields = dict[str, float | int | bool | str]

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}").fullmatch
_POINT = re.compile(r"[a-z][a-z0-9_]{0,63}").fullmatch
_QCODE = {q.value: code for q, code in schema.QUALITY_CODE.items()}
_QUALITY_TAIL = {q: f",quality={code}i " for q, code in _QCODE.items()}
_BATCH_KEYS = frozenset(Batch.model_fields)
_READING_KEYS = frozenset({"point", "value", "ts_ms", "quality"})
_TS_LIMIT = 2**53
_INT_FLOAT = 2**1023  # an integer a float holds (its magnitude, not its precision)
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


def telemetry_fast(payload: bytes, gateway: str, device: str, ts_limit: int = _TS_LIMIT,
                   numeric: frozenset[str] = frozenset()) -> list[str] | None:
    """Lines of a plainly valid batch from ``gateway``/``device``, every reading stamped
    before ``ts_limit`` and none a string for a point in ``numeric``; None when unsure."""
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
            or type(readings) is not list or not 1 <= len(readings) <= MAX_READINGS):
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
        if type(ts) is not int or not 0 <= ts < ts_limit or type(q) is not str:
            return None
        qt = tail.get(q)
        if qt is None:
            return None
        tv = type(val)
        if tv is float:  # orjson refuses NaN and Infinity, but reads 1e400 as infinity
            if val - val != 0.0:
                return None
            append(f"{pre}{point} value={val!r}{qt}{ts}")
        elif tv is int:
            if not -_INT_FLOAT < val < _INT_FLOAT:
                return None
            append(f"{pre}{point} value={float(val)!r}{qt}{ts}")
        elif tv is bool:
            append(f"{pre}{point} value={1.0 if val else 0.0}{qt}{ts}")
        elif tv is str:
            if len(val) > MAX_TEXT_VALUE or point in numeric:
                return None
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


@dataclass
class Converted:
    """What one message gives: its kind, its lines, and the reasons of the readings refused
    (the others were kept)."""

    kind: Kind
    lines: list[str]
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    """(dead letter kind: 'malformed' or 'future', reason, the reading refused as JSON text)"""


class TooFarAhead(WireError):
    """A message stamped beyond the time window (dead-lettered, counted as 'future')."""


def _text(raw: object) -> str:
    """A refused reading as JSON text (NaN and Infinity written as JSON's extensions do)."""
    try:
        return json.dumps(raw, allow_nan=True)
    except (TypeError, ValueError):
        return repr(raw)


def _ahead(what: str, ts_ms: int, limit: int, max_future_ms: int) -> str:
    ahead_s = (ts_ms - (limit - max_future_ms)) / 1000
    return (f"{what}: {ts_ms} is {ahead_s:.0f} s ahead of the collector's clock "
            f"(max_future_s {max_future_ms / 1000:g})")


def _check_time(what: str, ts_ms: int, limit: int, max_future_ms: int) -> None:
    if ts_ms > limit:
        raise TooFarAhead(_ahead(what, ts_ms, limit, max_future_ms))


def _check_source(what: str, topic_gw: str | None, gw: str, topic_dev: str | None = None,
                  dev: str | None = None) -> None:
    if topic_gw is not None and topic_gw != gw:
        raise WireError(f"{what}: topic names gateway {topic_gw!r}, payload says {gw!r}")
    if topic_dev is not None and topic_dev != dev:
        raise WireError(f"{what}: topic names device {topic_dev!r}, payload says {dev!r}")


NUMERIC_TYPES = frozenset({"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32",
                           "float64", "bitfield", "double", "float"})
"""Point types (``PointInfo.type`` in a device's birth) whose values are numbers."""


def _data(payload: bytes, gw: str | None, dev: str | None, limit: int, max_future_ms: int,
          numeric: frozenset[str] = frozenset()) -> Converted:
    if gw is not None and dev is not None:
        fast = telemetry_fast(payload, gw, dev, limit + 1, numeric)
        if fast is not None:
            return Converted(Kind.DATA, fast)
    batch, bad = decode_batch_partial(payload)
    _check_source("Batch", gw, batch.gateway, dev, batch.device)
    refused = [("malformed", why, _text(raw)) for _i, why, raw in bad]
    good = []
    bad_index = {j for j, _, _ in bad}
    index = [i for i in range(len(batch.readings) + len(bad)) if i not in bad_index]
    for i, r in zip(index, batch.readings, strict=True):
        if r.ts_ms > limit:
            refused.append(("future", _ahead(f"Batch: readings.{i}.ts_ms", r.ts_ms, limit, max_future_ms),
                            _text(r.model_dump(mode="json"))))
        elif isinstance(r.value, str) and r.point in numeric:
            refused.append(("malformed", f"Batch: readings.{i}.value: a string for point {r.point}, a number "
                            "in the device's birth", _text(r.model_dump(mode="json"))))
        elif isinstance(r.value, int) and not isinstance(r.value, bool) \
                and not -_INT_FLOAT < r.value < _INT_FLOAT:
            refused.append(("malformed", f"Batch: readings.{i}.value: out of the float range",
                            _text(r.model_dump(mode="json"))))
        else:
            good.append(r)
    if not good:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        kind, why, _ = refused[0]
        raise (TooFarAhead if kind == "future" else WireError)(why + more)
    if len(good) < len(batch.readings):
        batch = Batch.model_construct(**{**dict(batch), "readings": good})
    return Converted(Kind.DATA, telemetry_lines(batch), refused)


def _gateway_status(payload: bytes, gw: str | None, _dev: str | None, limit: int,
                    max_future_ms: int) -> list[str]:
    m = decode(payload, GatewayStatus)
    _check_source("GatewayStatus", gw, m.gateway)
    _check_time("GatewayStatus: ts_ms", m.ts_ms, limit, max_future_ms)
    fields: Fields = {"state": m.state.value, "online": int(m.state is GatewayState.ONLINE),
                      "bd_seq": m.bd_seq, "devices": len(m.devices), "software": m.software,
                      "reason": m.reason}
    return [schema.line(schema.GATEWAY_STATUS, {"gateway": m.gateway}, fields, m.ts_ms)]


def _device_status(payload: bytes, gw: str | None, dev: str | None, limit: int,
                   max_future_ms: int) -> list[str]:
    m = decode(payload, DeviceStatus)
    _check_source("DeviceStatus", gw, m.gateway, dev, m.device)
    _check_time("DeviceStatus: ts_ms", m.ts_ms, limit, max_future_ms)
    fields: Fields = {"state": m.state.value, "online": int(m.state is DeviceState.ONLINE),
                      "profile": m.profile, "reason": m.reason, "points": len(m.points)}
    return [schema.line(schema.DEVICE_STATUS, {"gateway": m.gateway, "device": m.device}, fields,
                        m.ts_ms)]


def _health(payload: bytes, gw: str | None, _dev: str | None, limit: int,
            max_future_ms: int) -> list[str]:
    m = decode(payload, Health)
    _check_source("Health", gw, m.gateway)
    _check_time("Health: ts_ms", m.ts_ms, limit, max_future_ms)
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


def _alarm_event(payload: bytes, _gw: str | None, _dev: str | None, limit: int,
                 max_future_ms: int) -> list[str]:
    m = decode(payload, AlarmEvent)
    _check_time("AlarmEvent: ts_ms", m.ts_ms, limit, max_future_ms)
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


def _customer_alert(payload: bytes, _gw: str | None, _dev: str | None, limit: int,
                    max_future_ms: int) -> list[str]:
    m = decode(payload, CustomerAlert)
    _check_time("CustomerAlert: ts_ms", m.ts_ms, limit, max_future_ms)
    # The phone number is personal data and stays out of the time series.
    fields: Fields = {"id": m.id, "language": m.language, "text": m.text}
    tags = {"customer": m.customer, "kind": m.kind, "status": m.status}
    return [schema.line(schema.CUSTOMER_ALERT, tags, fields, m.ts_ms)]


_CONVERTERS: dict[Kind, Callable[[bytes, str | None, str | None, int, int], list[str]]] = {
    Kind.GATEWAY_STATUS: _gateway_status,
    Kind.DEVICE_STATUS: _device_status,
    Kind.HEALTH: _health,
    Kind.ALARM_EVENT: _alarm_event,
    Kind.CUSTOMER_ALERT: _customer_alert,
}


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Router:
    """Classifies a topic and turns its payload into lines; raises WireError on bad input.

    ``now_ms`` is the collector's clock (the wall clock in production): anything stamped
    more than ``max_future_s`` ahead of it is refused. ``max_payload_bytes`` bounds a
    payload before it is parsed."""

    def __init__(self, topics: Topics, max_future_s: float = 300.0,
                 now_ms: Callable[[], int] = wall_ms,
                 max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.topics = topics
        self.max_future_ms = int(max_future_s * 1000)
        self.now_ms = now_ms
        self.max_payload_bytes = max_payload_bytes
        self.numeric: dict[tuple[str, str], frozenset[str]] = {}
        """Numeric points of each device, from its birth (``DeviceStatus.points``)."""
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

    def convert(self, topic: str, payload: bytes) -> Converted:
        """The lines of a message and the reasons of its readings refused; WireError when
        nothing of it can be stored."""
        kind, gw, dev = self.classify(topic)
        check_size(payload, self.max_payload_bytes)
        limit = self.now_ms() + self.max_future_ms
        if kind is Kind.DATA:
            return _data(payload, gw, dev, limit, self.max_future_ms,
                         self.numeric.get((gw, dev), frozenset()) if gw and dev else frozenset())
        lines = _CONVERTERS[kind](payload, gw, dev, limit, self.max_future_ms)
        if kind is Kind.DEVICE_STATUS:  # accepted: a birth declares the points' types
            m = decode(payload, DeviceStatus)
            if m.points:
                if len(self.numeric) > 100_000:
                    self.numeric.clear()
                self.numeric[(m.gateway, m.device)] = frozenset(
                    p.name for p in m.points if p.type in NUMERIC_TYPES)
        return Converted(kind, lines)

    def lines(self, topic: str, payload: bytes) -> tuple[Kind, list[str]]:
        """Kind and lines of a message (the readings refused are left out)."""
        c = self.convert(topic, payload)
        return c.kind, c.lines
