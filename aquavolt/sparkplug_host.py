"""The centre's side of Sparkplug B 3.0: a third-party edge node's messages as aquavolt's own.

:class:`SparkplugHost` is a pure state machine (no I/O, no clock: the caller passes its
``now_ms``), used by the collector (to store) and by the rules engine (to judge), so both read
a Sparkplug edge node the same way. One message in, an :class:`Outcome` out:

- ``messages``: aquavolt wire messages (:class:`Batch`, :class:`DeviceStatus`,
  :class:`GatewayStatus`) with the aquavolt topic they would have come on, so the rest of each
  component handles them exactly as an aquavolt gateway's (same InfluxDB schema, same alarms);
- ``dead``: the reasons to dead-letter the message (unknown node, device, alias or metric, a
  payload that is not Sparkplug B, a message before its birth); the rest of a message is kept;
- ``commands``: ``NCMD`` messages to publish (``Node Control/Rebirth`` after a sequence gap,
  an unknown alias, or data before a birth), at most one per node per ``rebirth_holdoff_ms``;
- ``gaps``: sequence gaps seen (counted by the caller).

The field file maps each ``sparkplug`` gateway to an edge node (``group_id``, ``edge_node_id``)
and each of its devices to a Sparkplug device (or to the node's own metrics) with metric names
mapped to points of the device's profile (``docs/sparkplug.md``). Births drive the rest: the
aliases and datatypes of each metric come from the NBIRTH/DBIRTH, never from the field file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aquavolt import sparkplug
from aquavolt.field import FieldConfig, Gateway
from aquavolt.profiles import ModbusPoint, ModbusProfile, OpcuaProfile
from aquavolt.sparkplug import NAMESPACE, DataType, MessageType, Metric, Payload, SparkplugError
from aquavolt.wire import (
    MAX_READINGS,
    Batch,
    DeviceState,
    DeviceStatus,
    GatewayState,
    GatewayStatus,
    PointInfo,
    Quality,
    Reading,
    Topics,
    Wire,
)

SOFTWARE = "sparkplug"
# metrics an edge node may declare that carry no field data (never dead-lettered)
_CONTROL = (sparkplug.BDSEQ_METRIC, "Node Control/", "Node Info/", "Properties/")
_TEXT_TYPES = {DataType.String, DataType.Text, DataType.UUID}
_WIRE_TYPES = {DataType.Float: "float32", DataType.Double: "float64", DataType.Boolean: "bool",
               DataType.Int8: "int16", DataType.Int16: "int16", DataType.Int32: "int32",
               DataType.Int64: "int64", DataType.UInt8: "uint16", DataType.UInt16: "uint16",
               DataType.UInt32: "uint32", DataType.UInt64: "uint64", DataType.DateTime: "uint64",
               DataType.String: "string", DataType.Text: "string", DataType.UUID: "string"}
_TEXT_MAX = 1000


def rebirth_request(now_ms: int) -> bytes:
    """An NCMD payload asking an edge node to publish its births again."""
    return sparkplug.encode_payload(Payload(timestamp=now_ms, metrics=(
        Metric(name=sparkplug.REBIRTH_METRIC, timestamp=now_ms, datatype=DataType.Boolean, value=True),)))


@dataclass(frozen=True)
class _Source:
    """A field device fed by one Sparkplug device (or by the node's own metrics)."""

    device: str
    profile: str
    metrics: dict[str, str]  # metric name -> point


@dataclass
class _Birth:
    """What one NBIRTH or DBIRTH declared: alias -> name, name -> datatype, alias -> datatype."""

    names: dict[int, str] = field(default_factory=dict)
    types: dict[str, DataType] = field(default_factory=dict)
    alias_types: dict[int, DataType] = field(default_factory=dict)


@dataclass
class _Node:
    gateway: Gateway
    group: str
    node: str
    sources: dict[str | None, _Source]
    bd_seq: int | None = None  # of the current birth; None: not born, or dead
    seq: int | None = None  # of the last message of the session
    births: dict[str | None, _Birth] = field(default_factory=dict)  # None: the node's NBIRTH
    out_seq: int = 0  # seq of the Batches made from this node (never reused)
    rebirth_ms: int | None = None
    data_only: bool = False  # an aquavolt gateway's edge node: its status comes on aquavolt's wire


@dataclass
class Outcome:
    """What one Sparkplug message gives (see the module's docstring)."""

    messages: list[tuple[str, Wire]] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    commands: list[tuple[str, bytes]] = field(default_factory=list)
    gaps: int = 0
    sessions_changed: bool = False
    """A birth or a death changed what :meth:`SparkplugHost.snapshot` returns."""


class SparkplugHost:
    """A Sparkplug B host's view of the field's edge nodes (one per component)."""

    def __init__(self, fld: FieldConfig, topics: Topics, rebirth_holdoff_ms: int = 5000,
                 profiles: Mapping[str, ModbusProfile | OpcuaProfile] | None = None) -> None:
        """``profiles`` (the loaded field's) also make the host read aquavolt gateways with
        ``northbound: sparkplug``: their readings come on Sparkplug only (not with ``both``)."""
        self.topics = topics
        self.holdoff_ms = rebirth_holdoff_ms
        self.nodes: dict[tuple[str, str], _Node] = {}
        for gw in fld.gateways:
            key = gw.sparkplug_node(fld.id)
            if key is None:
                continue
            if gw.kind == "sparkplug":
                sources = {d.sparkplug.device_id: _Source(d.id, d.profile, dict(d.sparkplug.metrics))
                           for d in gw.devices if d.sparkplug is not None}
                self.nodes[key] = _Node(gw, *key, sources)
            elif gw.northbound == "sparkplug" and profiles is not None:
                sources = {d.id: _Source(d.id, d.profile, _metric_names(profiles[d.profile]))
                           for d in gw.devices if d.profile in profiles}
                self.nodes[key] = _Node(gw, *key, sources, data_only=True)

    @property
    def enabled(self) -> bool:
        return bool(self.nodes)

    def filters(self) -> list[str]:
        """The topic filters to subscribe to: the groups of the edge nodes read."""
        return [f"{NAMESPACE}/{group}/#" for group in sorted({g for g, _n in self.nodes})]

    def snapshot(self) -> dict[str, Any]:
        """The sessions (bdSeq and what each birth declared), as JSON-able data: a host that
        restarts with them reads the messages redelivered to it, and those that follow, without
        waiting for a rebirth. The ``seq`` is not kept: the first message after a restore is
        not judged a gap."""
        out: dict[str, Any] = {}
        for (group, node_id), n in self.nodes.items():
            if n.bd_seq is None:
                continue
            out[f"{group}/{node_id}"] = {
                "gateway": n.gateway.id, "bd_seq": n.bd_seq, "out_seq": n.out_seq,
                "births": {dev or "": {"names": {str(a): nm for a, nm in b.names.items()},
                                       "types": {nm: int(dt) for nm, dt in b.types.items()}}
                           for dev, b in n.births.items()}}
        return out

    def restore(self, data: dict[str, Any]) -> None:
        """Sessions from :meth:`snapshot` (of nodes the field file still maps to the same gateway)."""
        for n in self.nodes.values():
            s = data.get(f"{n.group}/{n.node}")
            if not isinstance(s, dict) or s.get("gateway") != n.gateway.id:
                continue
            try:
                births = {}
                for dev, b in s["births"].items():
                    types = {nm: DataType(dt) for nm, dt in b["types"].items()}
                    names = {int(a): nm for a, nm in b["names"].items()}
                    births[dev or None] = _Birth(names, types, {a: types[nm] for a, nm in names.items()
                                                                if nm in types})
                n.bd_seq, n.out_seq, n.births, n.seq = int(s["bd_seq"]), int(s["out_seq"]), births, None
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # a session not restored: the node's next message asks for a rebirth

    def handle(self, topic: str, payload: bytes, now_ms: int) -> Outcome:
        """One message of topic ``spBv1.0/...``; never raises on what an edge node sends."""
        out = Outcome()
        try:
            t = sparkplug.parse_topic(topic)
        except SparkplugError as exc:
            out.dead.append(str(exc))
            return out
        mtype = t.message_type
        if mtype in (MessageType.STATE, MessageType.NCMD, MessageType.DCMD):
            return out  # a host's STATE (ours too), commands to a node: not an edge node's data
        node = self.nodes.get((t.group_id, t.edge_node_id))
        where = f"{t.group_id}/{t.edge_node_id}" + (f"/{t.device_id}" if t.device_id else "")
        if node is None:
            out.dead.append(f"{mtype} from unknown edge node {t.group_id}/{t.edge_node_id}: "
                            "not in the field file")
            return out
        birth = None if mtype in (MessageType.NBIRTH, MessageType.DBIRTH) else node.births.get(t.device_id)
        try:
            msg = sparkplug.decode_payload(payload, birth.alias_types if birth else None)
        except SparkplugError as exc:
            out.dead.append(f"{mtype} from {where}: {exc}")
            return out
        if mtype is MessageType.NBIRTH:
            self._nbirth(node, msg, now_ms, out)
        elif mtype is MessageType.NDEATH:
            self._ndeath(node, msg, now_ms, out)
        elif node.bd_seq is None:
            out.dead.append(f"{mtype} from {where} before its edge node's NBIRTH: rebirth requested")
            self._rebirth(node, now_ms, out)
        elif not self._seq_ok(node, msg, where, mtype, now_ms, out):
            return out
        elif mtype is MessageType.DBIRTH:
            self._dbirth(node, t.device_id, msg, now_ms, out)
        elif mtype is MessageType.DDEATH:
            self._ddeath(node, t.device_id, now_ms, out)
        else:
            self._data(node, t.device_id, msg, now_ms, out)
        if node.data_only:  # its gateway and device status come on aquavolt's wire
            out.messages = [(tp, m) for tp, m in out.messages if isinstance(m, Batch)]
        return out

    # ---------------------------------------------------------------- sessions
    def _nbirth(self, node: _Node, msg: Payload, now_ms: int, out: Outcome) -> None:
        bd = _bd_seq(msg)
        if bd is None:
            out.dead.append(f"NBIRTH from {node.group}/{node.node} without an integer bdSeq metric")
            return
        node.bd_seq, node.seq, node.rebirth_ms, node.births = bd, msg.seq, None, {}
        out.sessions_changed = True
        ts = _ts(msg.timestamp, now_ms)
        out.messages.append((self.topics.gateway_status(node.gateway.id), GatewayStatus(
            gateway=node.gateway.id, ts_ms=ts, state=GatewayState.ONLINE, bd_seq=bd,
            devices=[s.device for s in node.sources.values()], software=SOFTWARE)))
        self._born(node, None, msg, ts, now_ms, out)

    def _dbirth(self, node: _Node, device_id: str | None, msg: Payload, now_ms: int, out: Outcome) -> None:
        if device_id not in node.sources:
            out.dead.append(f"DBIRTH of device {device_id!r} of {node.group}/{node.node}: "
                            "not in the field file")
            return
        self._born(node, device_id, msg, _ts(msg.timestamp, now_ms), now_ms, out)

    def _born(self, node: _Node, device_id: str | None, msg: Payload, ts: int, now_ms: int,
              out: Outcome) -> None:
        b = _Birth()
        units: dict[str, str] = {}
        for m in msg.metrics:
            if m.name is None or m.datatype is None:
                continue
            b.types[m.name] = m.datatype
            if m.alias is not None:
                b.names[m.alias] = m.name
                b.alias_types[m.alias] = m.datatype
            unit = m.properties.get(sparkplug.PROP_ENG_UNIT)
            if unit is not None and isinstance(unit.value, str):
                units[m.name] = unit.value[:64]
        node.births[device_id] = b
        out.sessions_changed = True
        src = node.sources.get(device_id)
        if src is None:
            return  # the node's own metrics, mapped to no device
        points = [PointInfo(name=point, unit=units.get(name, ""), type=_WIRE_TYPES.get(b.types[name], ""))
                  for name, point in src.metrics.items() if name in b.types]
        missing = sorted(set(src.metrics) - set(b.types))
        reason = f"the birth lacks metric(s) {', '.join(missing)}"[:200] if missing else ""
        out.messages.append((self.topics.device_status(node.gateway.id, src.device), DeviceStatus(
            gateway=node.gateway.id, device=src.device, ts_ms=ts, state=DeviceState.ONLINE,
            profile=src.profile, reason=reason, points=points)))
        self._data(node, device_id, msg, now_ms, out, in_birth=True)

    def _ndeath(self, node: _Node, msg: Payload, now_ms: int, out: Outcome) -> None:
        bd = _bd_seq(msg)
        if node.bd_seq is None or bd != node.bd_seq:
            return  # the will of another session, or of a node already dead: ignored (3.0)
        gw = node.gateway.id
        out.messages.append((self.topics.gateway_status(gw), GatewayStatus(
            gateway=gw, ts_ms=now_ms, state=GatewayState.OFFLINE, bd_seq=bd,
            reason="edge node death (NDEATH)", software=SOFTWARE)))
        for device_id, src in node.sources.items():
            if device_id in node.births:
                out.messages.append((self.topics.device_status(gw, src.device), DeviceStatus(
                    gateway=gw, device=src.device, ts_ms=now_ms, state=DeviceState.OFFLINE,
                    reason="edge node death (NDEATH)")))
        node.bd_seq = node.seq = None
        node.births = {}
        out.sessions_changed = True

    def _ddeath(self, node: _Node, device_id: str | None, now_ms: int, out: Outcome) -> None:
        src = node.sources.get(device_id)
        if src is None:
            out.dead.append(f"DDEATH of device {device_id!r} of {node.group}/{node.node}: "
                            "not in the field file")
            return
        node.births.pop(device_id, None)
        out.sessions_changed = True
        out.messages.append((self.topics.device_status(node.gateway.id, src.device), DeviceStatus(
            gateway=node.gateway.id, device=src.device, ts_ms=now_ms, state=DeviceState.COMM_FAIL,
            reason="device death (DDEATH)")))

    def _seq_ok(self, node: _Node, msg: Payload, where: str, mtype: MessageType, now_ms: int,
                out: Outcome) -> bool:
        seq = msg.seq
        if seq is None or not 0 <= seq < sparkplug.SEQ_MODULO:
            out.dead.append(f"{mtype} from {where} without a seq 0..255")
            return False
        if node.seq is not None and sparkplug.seq_gap(node.seq, seq):
            out.gaps += 1  # the message itself is good: kept
            self._rebirth(node, now_ms, out)
        node.seq = seq
        return True

    def _rebirth(self, node: _Node, now_ms: int, out: Outcome) -> None:
        if node.rebirth_ms is not None and 0 <= now_ms - node.rebirth_ms < self.holdoff_ms:
            return
        node.rebirth_ms = now_ms
        topic = sparkplug.topic(node.group, MessageType.NCMD, node.node)
        out.commands.append((topic, rebirth_request(now_ms)))

    # ---------------------------------------------------------------- data
    def _data(self, node: _Node, device_id: str | None, msg: Payload, now_ms: int, out: Outcome,
              in_birth: bool = False) -> None:
        """The readings of the mapped metrics; a birth's other metrics are only declared, a data
        message's are dead-lettered (an alias not in the birth also asks for a rebirth)."""
        where = f"{node.group}/{node.node}" + (f"/{device_id}" if device_id else "")
        src = node.sources.get(device_id)
        if device_id is not None and src is None:
            out.dead.append(f"data of device {device_id!r} of {node.group}/{node.node}: "
                            "not in the field file")
            return
        birth = node.births.get(device_id)
        if birth is None:
            out.dead.append(f"data from {where} before its birth: rebirth requested")
            self._rebirth(node, now_ms, out)
            return
        ts0 = _ts(msg.timestamp, now_ms)
        live: list[Reading] = []
        old: list[Reading] = []
        unknown: list[str] = []
        unknown_alias = False
        for m in msg.metrics:
            name = m.name if m.name is not None else birth.names.get(m.alias) if m.alias is not None else None
            if name is None:
                unknown.append(f"alias {m.alias}")
                unknown_alias = True
                continue
            point = src.metrics.get(name) if src is not None else None
            if point is None:
                if not in_birth and not name.startswith(_CONTROL):
                    unknown.append(name)
                continue
            if in_birth and (m.is_null or m.value is None):
                continue  # declared with no value yet (not read since the node started): no reading
            reading, why = _reading(point, m, birth.types.get(name, m.datatype), ts0)
            if reading is None:
                out.dead.append(f"{where}: metric {name}: {why}")
            else:
                (old if m.is_historical else live).append(reading)
        if unknown:
            out.dead.append(f"{where}: metric(s) neither in the field file nor in the birth: "
                            f"{', '.join(unknown[:20])}" + (" (rebirth requested)" if unknown_alias else ""))
            if unknown_alias:
                self._rebirth(node, now_ms, out)
        if src is None:
            return
        for readings, historical in ((live, False), (old, True)):
            for i in range(0, len(readings), MAX_READINGS):
                node.out_seq += 1
                out.messages.append((self.topics.data(node.gateway.id, src.device), Batch(
                    gateway=node.gateway.id, device=src.device, seq=node.out_seq, bd_seq=node.bd_seq or 0,
                    historical=historical, readings=readings[i:i + MAX_READINGS])))


def _metric_names(profile: ModbusProfile | OpcuaProfile) -> dict[str, str]:
    """An aquavolt edge node's metric names: its points' names, and each named bit of a
    bitfield (docs/sparkplug.md, Edge node)."""
    out = {p.name: p.name for p in profile.points}
    for p in profile.points:
        if isinstance(p, ModbusPoint):
            out.update({flag: flag for flag in p.bits.values() if flag not in out})
    return out


def _reading(point: str, m: Metric, datatype: DataType | None, ts0: int) -> tuple[Reading | None, str]:
    ts = m.timestamp if m.timestamp is not None else ts0
    if not 0 <= ts < 2**53:
        return None, f"timestamp {ts} is out of range"
    q = sparkplug.quality_of(m)
    quality = Quality(q) if q is not None else Quality.GOOD
    v = m.value
    if m.is_null or v is None:
        return Reading(point=point, value=None, ts_ms=ts,
                       quality=Quality.BAD if quality is Quality.GOOD else quality), ""
    if isinstance(v, bool):
        return Reading(point=point, value=v, ts_ms=ts, quality=quality), ""
    if isinstance(v, int | float):
        f = float(v)
        if not math.isfinite(f):
            return None, f"value {v} is not a finite number"
        return Reading(point=point, value=f, ts_ms=ts, quality=quality), ""
    if isinstance(v, str) and datatype in _TEXT_TYPES:
        return Reading(point=point, value=v[:_TEXT_MAX], ts_ms=ts, quality=quality), ""
    name = datatype.name if datatype is not None else "unknown"
    return None, f"datatype {name} is not supported here (numbers, booleans, strings)"


def _ts(ts: int | None, now_ms: int) -> int:
    return ts if ts is not None and 0 < ts < 2**53 else now_ms


def _bd_seq(msg: Payload) -> int | None:
    for m in msg.metrics:
        if m.name == sparkplug.BDSEQ_METRIC and isinstance(m.value, int) and not isinstance(m.value, bool):
            return m.value
    return None
