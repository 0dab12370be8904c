"""Sparkplug B 3.0: topics, datatypes and the payload codec (``docs/sparkplug.md``).

Pure functions and frozen values, shared by the edge (an aquavolt gateway as a Sparkplug
edge node) and the centre (Sparkplug edge nodes of other vendors feeding the collector).

The schema is the published one: Eclipse Tahu's ``sparkplug_b.proto``, committed beside this
module as ``sparkplug_b.proto``. ``sparkplug_b_pb2.py`` (and its ``.pyi``) were generated from
it by protoc, the one of grpcio-tools 1.85.1 (libprotoc 35.1)::

    cd aquavolt && python -m grpc_tools.protoc --proto_path=. --python_out=. --pyi_out=. sparkplug_b.proto

and are read at run time by the ``protobuf`` library (7.35 or newer, the generated code
checks it). Regenerate both when the ``.proto`` changes; nothing else here is generated.

Topics::

    spBv1.0/{group_id}/{NBIRTH|NDATA|NDEATH|NCMD}/{edge_node_id}
    spBv1.0/{group_id}/{DBIRTH|DDATA|DDEATH|DCMD}/{edge_node_id}/{device_id}
    spBv1.0/STATE/{host_id}                    JSON {"online": bool, "timestamp": ms}

Value encoding, as the specification and Tahu do it: Int8, Int16, Int32, UInt8 and UInt16 in
``int_value`` (signed ones as 32-bit two's complement), Int64 (64-bit two's complement),
UInt32, UInt64 and DateTime (milliseconds) in ``long_value``; Float, Double, Boolean, String
and Text in their own fields. UInt32 is read from either integer field (Tahu's Python writes
``int_value``, its Java and JavaScript ``long_value``).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Final

import orjson

from aquavolt import sparkplug_b_pb2 as pb
from aquavolt.errors import WireError

NAMESPACE: Final = "spBv1.0"
SEQ_MODULO: Final = 256
"""``seq`` and ``bdSeq`` both count 0..255 and wrap to 0."""
BDSEQ_METRIC: Final = "bdSeq"
REBIRTH_METRIC: Final = "Node Control/Rebirth"
PROP_ENG_UNIT: Final = "engUnit"
PROP_QUALITY: Final = "Quality"
PROP_READ_ONLY: Final = "readOnly"


class SparkplugError(WireError):
    """A Sparkplug topic or payload that does not follow the specification."""


class MessageType(StrEnum):
    NBIRTH = "NBIRTH"
    NDATA = "NDATA"
    NDEATH = "NDEATH"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDATA = "DDATA"
    DDEATH = "DDEATH"
    DCMD = "DCMD"
    STATE = "STATE"

    @property
    def is_device(self) -> bool:
        return self.value.startswith("D")


class DataType(IntEnum):
    """Sparkplug datatypes (the ``DataType`` enum of the .proto); the basic ones are encoded here."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21


_INT_RANGES: Final[dict[DataType, tuple[int, int]]] = {
    DataType.Int8: (-(2**7), 2**7 - 1),
    DataType.Int16: (-(2**15), 2**15 - 1),
    DataType.Int32: (-(2**31), 2**31 - 1),
    DataType.Int64: (-(2**63), 2**63 - 1),
    DataType.UInt8: (0, 2**8 - 1),
    DataType.UInt16: (0, 2**16 - 1),
    DataType.UInt32: (0, 2**32 - 1),
    DataType.UInt64: (0, 2**64 - 1),
    DataType.DateTime: (0, 2**64 - 1),
}
_IN_INT_VALUE: Final = {DataType.Int8, DataType.Int16, DataType.Int32, DataType.UInt8, DataType.UInt16}
_STRINGS: Final = {DataType.String, DataType.Text, DataType.UUID}


class Quality(IntEnum):
    """Values of the ``Quality`` property (the specification's 0, 192 and 500; 64 is the
    OPC code for uncertain, which aquavolt uses for substituted values)."""

    BAD = 0
    UNCERTAIN = 64
    GOOD = 192
    STALE = 500


# aquavolt quality names (aquavolt.wire.Quality values) to Sparkplug codes and back
QUALITY_CODES: Final[dict[str, Quality]] = {
    "good": Quality.GOOD,
    "uncertain": Quality.UNCERTAIN,
    "bad": Quality.BAD,
    "stale": Quality.STALE,
}
QUALITY_NAMES: Final[dict[int, str]] = {int(code): name for name, code in QUALITY_CODES.items()}

# aquavolt point types (device profiles: Modbus data types and OPC-UA types) to Sparkplug
_POINT_TYPES: Final[dict[str, DataType]] = {
    "int16": DataType.Int16,
    "uint16": DataType.UInt16,
    "int32": DataType.Int32,
    "uint32": DataType.UInt32,
    "int64": DataType.Int64,
    "uint64": DataType.UInt64,
    "float32": DataType.Float,
    "float": DataType.Float,
    "float64": DataType.Double,
    "double": DataType.Double,
    "bool": DataType.Boolean,
    "bitfield": DataType.UInt16,
    "string": DataType.String,
}


def datatype_for_point(point_type: str, scaled: bool = False) -> DataType:
    """The Sparkplug datatype of an aquavolt point: its profile type, except that an integer
    register read through a scale or an offset is a Double (its engineering value is not an
    integer). An unknown or empty type is a Double (analog values are)."""
    dt = _POINT_TYPES.get(point_type, DataType.Double)
    if scaled and dt in _INT_RANGES:
        return DataType.Double
    return dt


# ---------------------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class Topic:
    """A parsed Sparkplug topic. For STATE only ``host_id`` is set."""

    message_type: MessageType
    group_id: str = ""
    edge_node_id: str = ""
    device_id: str | None = None
    host_id: str = ""

    def __str__(self) -> str:
        if self.message_type is MessageType.STATE:
            return state_topic(self.host_id)
        return topic(self.group_id, self.message_type, self.edge_node_id, self.device_id)


def _check_id(kind: str, value: str) -> None:
    if not value or any(c in value for c in "/+#"):
        raise SparkplugError(f"{kind} {value!r}: must be non-empty without '/', '+' or '#'")


def topic(group_id: str, message_type: MessageType, edge_node_id: str, device_id: str | None = None) -> str:
    """``spBv1.0/{group_id}/{type}/{edge_node_id}[/{device_id}]``; a device id exactly for D* types."""
    if message_type is MessageType.STATE:
        raise SparkplugError("STATE topics are spBv1.0/STATE/{host_id}: use state_topic()")
    _check_id("group id", group_id)
    _check_id("edge node id", edge_node_id)
    if message_type.is_device:
        if device_id is None:
            raise SparkplugError(f"a {message_type} topic needs a device id")
        _check_id("device id", device_id)
        return f"{NAMESPACE}/{group_id}/{message_type}/{edge_node_id}/{device_id}"
    if device_id is not None:
        raise SparkplugError(f"a {message_type} topic has no device id")
    return f"{NAMESPACE}/{group_id}/{message_type}/{edge_node_id}"


def state_topic(host_id: str) -> str:
    """``spBv1.0/STATE/{host_id}`` (Sparkplug 3.0; retained, QoS 1)."""
    _check_id("host id", host_id)
    return f"{NAMESPACE}/STATE/{host_id}"


def parse_topic(text: str) -> Topic:
    parts = text.split("/")
    if len(parts) < 3 or parts[0] != NAMESPACE:
        raise SparkplugError(f"topic {text!r}: not a {NAMESPACE} topic")
    if parts[1] == "STATE" and len(parts) == 3:
        _check_id("host id", parts[2])
        return Topic(MessageType.STATE, host_id=parts[2])
    try:
        mtype = MessageType(parts[2])
    except ValueError:
        raise SparkplugError(f"topic {text!r}: unknown message type {parts[2]!r}") from None
    want = 5 if mtype.is_device else 4
    if mtype is MessageType.STATE or len(parts) != want:
        raise SparkplugError(f"topic {text!r}: a {mtype} topic has {want} levels")
    for kind, value in zip(
        ("group id", "message type", "edge node id", "device id"), parts[1:], strict=False
    ):
        _check_id(kind, value)
    return Topic(mtype, parts[1], parts[3], parts[4] if mtype.is_device else None)


# -------------------------------------------------------------------------------------- sequence


def next_seq(seq: int) -> int:
    """The ``seq`` after ``seq``: 0..255, 255 wraps to 0."""
    return (seq + 1) % SEQ_MODULO


def next_bd_seq(bd_seq: int) -> int:
    """The ``bdSeq`` of the next MQTT session: 0..255, 255 wraps to 0."""
    return (bd_seq + 1) % SEQ_MODULO


def seq_gap(previous: int, received: int) -> bool:
    """Whether ``received`` is not the ``seq`` after ``previous`` (a lost or reordered message)."""
    return received != next_seq(previous)


# ---------------------------------------------------------------------------------------- values

MetricValue = int | float | bool | str | bytes | None


@dataclass(frozen=True)
class PropertyValue:
    datatype: DataType
    value: int | float | bool | str | None


@dataclass(frozen=True)
class Metric:
    """One metric. In a birth every metric has its ``name``, ``alias`` and ``datatype``; in a
    data message an aliased metric carries its ``alias`` only (``name`` None)."""

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: DataType | None = None
    value: MetricValue = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Payload:
    timestamp: int | None = None
    seq: int | None = None
    metrics: Sequence[Metric] = ()
    uuid: str | None = None
    body: bytes | None = None

    def metric(self, name: str) -> Metric:
        """The metric of that name (births, NCMD, NDEATH name their metrics)."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)


def _check_int(datatype: DataType, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SparkplugError(f"a {datatype.name} value must be an integer, not {value!r}")
    lo, hi = _INT_RANGES[datatype]
    if not lo <= value <= hi:
        raise SparkplugError(f"{value} is outside the range of {datatype.name} ({lo}..{hi})")
    return value


def _set_value(target: Any, datatype: DataType, value: object) -> None:
    """Set the value field of a protobuf Metric or PropertyValue for ``datatype``."""
    if datatype in _INT_RANGES:
        v = _check_int(datatype, value)
        if datatype in _IN_INT_VALUE:
            target.int_value = v & 0xFFFFFFFF
        else:
            target.long_value = v & 0xFFFFFFFFFFFFFFFF
    elif datatype in (DataType.Float, DataType.Double):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SparkplugError(f"a {datatype.name} value must be a number, not {value!r}")
        if datatype is DataType.Float:
            target.float_value = float(value)
        else:
            target.double_value = float(value)
    elif datatype is DataType.Boolean:
        if not isinstance(value, bool):
            raise SparkplugError(f"a Boolean value must be true or false, not {value!r}")
        target.boolean_value = value
    elif datatype in _STRINGS:
        if not isinstance(value, str):
            raise SparkplugError(f"a {datatype.name} value must be a string, not {value!r}")
        target.string_value = value
    elif datatype in (DataType.Bytes, DataType.File):
        if not isinstance(value, bytes):
            raise SparkplugError(f"a {datatype.name} value must be bytes, not {value!r}")
        target.bytes_value = value
    else:
        raise SparkplugError(f"datatype {datatype.name} is not supported")


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _get_value(source: Any, datatype: DataType) -> MetricValue:
    """The value of a protobuf Metric or PropertyValue read as ``datatype``."""
    which = source.WhichOneof("value")
    if which is None:
        return None
    raw = getattr(source, which)
    if datatype in _INT_RANGES:
        if which not in ("int_value", "long_value"):
            raise SparkplugError(f"a {datatype.name} value in {which}")
        v = int(raw)
        if datatype in (DataType.Int8, DataType.Int16, DataType.Int32):
            v = _signed(v, 32)
        elif datatype is DataType.Int64:
            v = _signed(v, 64)
        lo, hi = _INT_RANGES[datatype]
        if not lo <= v <= hi:
            raise SparkplugError(f"{v} is outside the range of {datatype.name}")
        return v
    expected = {
        DataType.Float: "float_value",
        DataType.Double: "double_value",
        DataType.Boolean: "boolean_value",
        DataType.String: "string_value",
        DataType.Text: "string_value",
        DataType.UUID: "string_value",
        DataType.Bytes: "bytes_value",
        DataType.File: "bytes_value",
    }.get(datatype)
    if expected is None:
        raise SparkplugError(f"datatype {datatype.name} is not supported")
    if which != expected:
        raise SparkplugError(f"a {datatype.name} value in {which}")
    if datatype is DataType.Float:
        return float(struct.unpack("<f", struct.pack("<f", raw))[0])
    if isinstance(raw, bool | int | float | str | bytes):
        return raw
    raise SparkplugError(f"unexpected {which}")


def _datatype(code: int) -> DataType:
    try:
        return DataType(code)
    except ValueError:
        raise SparkplugError(f"unknown datatype {code}") from None


# --------------------------------------------------------------------------------------- encode


def encode_payload(payload: Payload) -> bytes:
    """The protobuf bytes of ``payload``. A metric with a value needs a datatype; one with
    ``is_null`` (or a None value) is sent without a value, flagged ``is_null``."""
    msg = pb.Payload()
    if payload.timestamp is not None:
        msg.timestamp = payload.timestamp
    if payload.seq is not None:
        if not 0 <= payload.seq < SEQ_MODULO:
            raise SparkplugError(f"seq {payload.seq} is outside 0..255")
        msg.seq = payload.seq
    if payload.uuid is not None:
        msg.uuid = payload.uuid
    if payload.body is not None:
        msg.body = payload.body
    for m in payload.metrics:
        out = msg.metrics.add()
        if m.name is not None:
            out.name = m.name
        if m.alias is not None:
            if not 0 <= m.alias < 2**64:
                raise SparkplugError(f"alias {m.alias} is outside 0..2^64-1")
            out.alias = m.alias
        if m.name is None and m.alias is None:
            raise SparkplugError("a metric needs a name or an alias")
        if m.timestamp is not None:
            out.timestamp = m.timestamp
        if m.datatype is not None:
            out.datatype = int(m.datatype)
        if m.is_historical:
            out.is_historical = True
        if m.is_transient:
            out.is_transient = True
        if m.is_null or m.value is None:
            out.is_null = True
        else:
            if m.datatype is None:
                raise SparkplugError(f"metric {m.name or m.alias}: a value needs a datatype")
            _set_value(out, m.datatype, m.value)
        if m.properties:
            for key, prop in m.properties.items():
                out.properties.keys.append(key)
                pv = out.properties.values.add()
                pv.type = int(prop.datatype)
                if prop.value is None:
                    pv.is_null = True
                else:
                    _set_value(pv, prop.datatype, prop.value)
    return bytes(msg.SerializeToString())


# --------------------------------------------------------------------------------------- decode


def decode_payload(data: bytes, datatypes: Mapping[int, DataType] | None = None) -> Payload:
    """Decode protobuf bytes. A data message's metrics often carry neither name nor datatype:
    ``datatypes`` (alias to datatype, from the birth) says how to read their values; a value
    of unknown datatype raises :class:`SparkplugError`."""
    msg = pb.Payload()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError (and RuntimeWarning subclasses)
        raise SparkplugError(f"not a Sparkplug B payload: {exc}") from exc
    metrics = []
    for m in msg.metrics:
        alias = m.alias if m.HasField("alias") else None
        if m.HasField("datatype"):
            dt: DataType | None = _datatype(m.datatype)
        elif alias is not None and datatypes is not None and alias in datatypes:
            dt = datatypes[alias]
        else:
            dt = None
        is_null = m.is_null
        if is_null or m.WhichOneof("value") is None:
            value: MetricValue = None
        elif dt is None:
            raise SparkplugError(f"metric {m.name or alias}: a value without a known datatype")
        else:
            value = _get_value(m, dt)
        props: dict[str, PropertyValue] = {}
        if m.HasField("properties"):
            if len(m.properties.keys) != len(m.properties.values):
                raise SparkplugError(f"metric {m.name or alias}: property keys and values differ in number")
            for key, pv in zip(m.properties.keys, m.properties.values, strict=True):
                pdt = _datatype(pv.type)
                pval = None if pv.is_null else _get_value(pv, pdt)
                if isinstance(pval, bytes):
                    raise SparkplugError(f"property {key}: bytes are not a property value")
                props[key] = PropertyValue(pdt, pval)
        metrics.append(
            Metric(
                name=m.name if m.HasField("name") else None,
                alias=alias,
                timestamp=m.timestamp if m.HasField("timestamp") else None,
                datatype=dt,
                value=value,
                is_historical=m.is_historical,
                is_transient=m.is_transient,
                is_null=is_null,
                properties=props,
            )
        )
    return Payload(
        timestamp=msg.timestamp if msg.HasField("timestamp") else None,
        seq=msg.seq if msg.HasField("seq") else None,
        metrics=tuple(metrics),
        uuid=msg.uuid if msg.HasField("uuid") else None,
        body=msg.body if msg.HasField("body") else None,
    )


# ----------------------------------------------------------------------------------- STATE, misc


@dataclass(frozen=True)
class HostState:
    """A primary host application's STATE (Sparkplug 3.0: JSON, retained, QoS 1)."""

    online: bool
    timestamp: int


def encode_state(state: HostState) -> bytes:
    return orjson.dumps({"online": state.online, "timestamp": state.timestamp})


def decode_state(data: bytes) -> HostState:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SparkplugError(f"STATE payload is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("online"), bool):
        raise SparkplugError("STATE payload needs a boolean 'online'")
    ts = obj.get("timestamp", 0)
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise SparkplugError("STATE timestamp must be a non-negative integer (ms)")
    return HostState(online=obj["online"], timestamp=ts)


def bd_seq_metric(bd_seq: int, timestamp: int | None = None) -> Metric:
    """The ``bdSeq`` metric of an NBIRTH and of the NDEATH (the will) of one MQTT session."""
    if not 0 <= bd_seq < SEQ_MODULO:
        raise SparkplugError(f"bdSeq {bd_seq} is outside 0..255")
    return Metric(name=BDSEQ_METRIC, timestamp=timestamp, datatype=DataType.Int64, value=bd_seq)


def point_properties(unit: str, quality: str, writable: bool | None = None) -> dict[str, PropertyValue]:
    """The properties of an aquavolt point's metric: engineering unit (when it has one),
    quality (an aquavolt quality name) and, when given, whether it is read-only."""
    props: dict[str, PropertyValue] = {}
    if unit:
        props[PROP_ENG_UNIT] = PropertyValue(DataType.String, unit)
    props[PROP_QUALITY] = PropertyValue(DataType.Int32, int(QUALITY_CODES[quality]))
    if writable is not None:
        props[PROP_READ_ONLY] = PropertyValue(DataType.Boolean, not writable)
    return props


def quality_of(metric: Metric) -> str | None:
    """The aquavolt quality name of a metric's ``Quality`` property (None without one)."""
    prop = metric.properties.get(PROP_QUALITY)
    if prop is None or not isinstance(prop.value, int) or isinstance(prop.value, bool):
        return None
    return QUALITY_NAMES.get(prop.value, "bad")
