"""The wire contract (version 1): MQTT topics and JSON payloads. Written down in
``docs/wire-format.md``; JSON Schemas in ``docs/schemas/`` are generated from these models.

Topics, under a prefix (``aquavolt/v1`` by default)::

    {prefix}/gw/{gateway}/status                 GatewayStatus, retained; the MQTT will
    {prefix}/gw/{gateway}/health                 Health, periodic
    {prefix}/gw/{gateway}/dev/{device}/data      Batch of readings, QoS 1
    {prefix}/gw/{gateway}/dev/{device}/status    DeviceStatus, retained (birth declares points)
    {prefix}/gw/{gateway}/dev/{device}/cmd       Command (write a point)
    {prefix}/gw/{gateway}/dev/{device}/reply     CommandReply
    {prefix}/gw/{gateway}/stored                 StoredMark, retained: stored in InfluxDB up to seq
    {prefix}/gw/{gateway}/resend                 ResendRequest: send a range of seq again
    {prefix}/gw/{gateway}/resent                 ResendResult: what the gateway sent again or lost
    {prefix}/collector/{group}/stored            GroupStored: what one collector of a share group stored
    {prefix}/alarm/{asset}/{condition}           AlarmEvent, retained current state
    {prefix}/event/alarm                         AlarmEvent, every transition
    {prefix}/event/customer                      CustomerAlert (SMS), every state change
    {prefix}/deadletter/{component}              DeadLetter
    {prefix}/sim/fault                           simulator fault injection
    {prefix}/progress/{component}                Progress: readiness and event time processed
    {prefix}/time/grant                          TimeGrant, retained (lockstep runs)
    {prefix}/time/done/{participant}             TimeDone (lockstep runs)

Ideas taken from Sparkplug B: a birth (retained status ``online`` declaring the points) and
a death (the will, ``offline``) tied by ``bd_seq``; a per-gateway ``seq`` on every
data message so a gap is visible; a ``historical`` flag on replayed data; quality on every
value, ``stale`` once a device or gateway is known dead.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator, model_validator

from aquavolt.errors import WireError

WIRE_VERSION = 1
DEFAULT_PREFIX = "aquavolt/v1"

# Limits of the contract (docs/wire-format.md, "Limits"): what a consumer accepts at most.
MAX_PAYLOAD_BYTES = 1_048_576
"""Largest payload of any message (1 MiB); the broker's ``message_size_limit``, and every
consumer refuses a larger one before parsing it."""
MAX_READINGS = 10_000
"""Readings in one batch."""
MAX_TEXT_VALUE = 1024
"""Characters of a string point value."""
MAX_TEXT = 1024
"""Characters of a free text: reason, message, comment, last error, software, operator."""
MAX_LABEL = 64
"""Characters of a unit, a point's data type, a profile name."""
MAX_DEVICES = 1000
"""Devices named in one gateway's status or health."""
MAX_POINTS = 10_000
"""Points declared in one device's birth."""
MAX_DEADLETTER_PAYLOAD = 131_072
"""Characters of the rejected payload kept in a dead letter (longer ones are truncated)."""

TsMs = Annotated[int, Field(ge=0, lt=2**53, description="Milliseconds since the Unix epoch, UTC")]
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
PointName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Label = Annotated[str, Field(max_length=MAX_LABEL)]
TextValue = Annotated[str, Field(max_length=MAX_TEXT_VALUE)]
PointValue = float | int | bool | TextValue


class Wire(BaseModel):
    """Strict: no coercion (``"4"`` is not an integer, ``true`` is not a number, ``"24.8"``
    stays a string), finite numbers only (JSON's ``NaN`` and ``Infinity`` literals, which the
    parser reads, are refused, and so is a number too large for a float), extra keys refused.
    Enumerations are read from their string values (JSON has no other way to write them)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class Quality(StrEnum):
    """Quality of a value (Sparkplug codes in brackets)."""

    GOOD = "good"  # 192
    UNCERTAIN = "uncertain"  # e.g. a value served from a substitute
    BAD = "bad"  # 0: the device failed to answer or answered garbage
    STALE = "stale"  # 500: last known value, its source is gone


class Reading(Wire):
    point: PointName
    value: PointValue | None = Field(
        description="Engineering value; null only when quality is not good"
    )
    ts_ms: TsMs = Field(description="Source timestamp")
    quality: Annotated[Quality, Field(strict=False)] = Quality.GOOD

    @model_validator(mode="after")
    def _null_needs_quality(self) -> Reading:
        if self.value is None and self.quality is Quality.GOOD:
            raise ValueError(f"point {self.point}: a null value cannot have good quality")
        return self


class Batch(Wire):
    """Readings of one device from one poll (or one replayed stretch)."""

    v: Literal[1] = 1
    gateway: Ident
    device: Ident
    seq: int = Field(ge=0, description="Per-gateway sequence number; +1 per data message")
    bd_seq: int = Field(0, ge=0, description="Birth/death session of the gateway")
    historical: bool = Field(False, description="Replayed after an outage, not live")
    readings: list[Reading] = Field(min_length=1, max_length=MAX_READINGS)


MAX_LOST_RANGES = 1000
"""Ranges of lost sequence numbers named in one ResendResult."""


class StoredMark(Wire):
    """The collector's acknowledgement to a gateway: every data message of the gateway up to
    ``seq`` is in InfluxDB (or dead-lettered, or reported lost); the gateway may forget them."""

    v: Literal[1] = 1
    gateway: Ident
    seq: int = Field(ge=-1, lt=2**63, description="Highest seq stored without a gap (-1: none)")
    bd_seq: int = Field(ge=0, lt=2**63, description="bd_seq of the message at seq (the boot it came from)")
    ts_ms: TsMs


class ResendRequest(Wire):
    """The collector asks a gateway for the data messages ``from_seq``..``to_seq`` again."""

    v: Literal[1] = 1
    gateway: Ident
    from_seq: int = Field(ge=0, lt=2**63)
    to_seq: int = Field(ge=0, lt=2**63)
    ts_ms: TsMs

    @model_validator(mode="after")
    def _ordered(self) -> ResendRequest:
        if self.to_seq < self.from_seq:
            raise ValueError(f"to_seq {self.to_seq} is before from_seq {self.from_seq}")
        return self


class ResendResult(Wire):
    """A gateway's answer to a ResendRequest: how many messages of the range it sends again,
    and the ranges it no longer holds (dropped under its store's bounds: lost for good)."""

    v: Literal[1] = 1
    gateway: Ident
    from_seq: int = Field(ge=0, lt=2**63)
    to_seq: int = Field(ge=0, lt=2**63)
    resent: int = Field(ge=0)
    lost: list[tuple[int, int]] = Field(default_factory=list, max_length=MAX_LOST_RANGES,
                                        description="[first, last] seq ranges dropped by the gateway")
    stored_seq: int = Field(-1, ge=-1, lt=2**63, description="The gateway's last stored mark")
    ts_ms: TsMs


MAX_GROUP_RANGES = 2000
"""Ranges of stored sequence numbers named in one GroupStored (about 80 kB at most)."""

MemberId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
"""A collector's MQTT client id."""


class GroupStored(Wire):
    """What one collector of a share group wrote to InfluxDB (or dead-lettered, or learnt
    from a gateway's answer to be lost) since its previous report: ``[gateway, first_seq,
    last_seq, bd_seq]`` ranges of data messages. The members of the group each add the
    others' ranges to their own, so that every member publishes the same stored marks. Sent
    at least every few seconds, empty if need be: it also says the member is alive."""

    v: Literal[1] = 1
    member: MemberId
    ranges: list[tuple[Ident, Annotated[int, Field(ge=0, lt=2**63)], Annotated[int, Field(ge=0, lt=2**63)],
                       Annotated[int, Field(ge=0, lt=2**63)]]] = Field(
        default_factory=list, max_length=MAX_GROUP_RANGES,
        description="[gateway, first_seq, last_seq, bd_seq]: data messages first_seq..last_seq "
                    "of that boot are handled")
    ts_ms: TsMs

    @model_validator(mode="after")
    def _ordered(self) -> GroupStored:
        for gw, first, last, _bd in self.ranges:
            if last < first:
                raise ValueError(f"range of {gw}: last_seq {last} is before first_seq {first}")
        return self


class GatewayState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class GatewayStatus(Wire):
    v: Literal[1] = 1
    gateway: Ident
    state: Annotated[GatewayState, Field(strict=False)]
    bd_seq: int = Field(ge=0)
    ts_ms: TsMs
    devices: list[Ident] = Field(default_factory=list, max_length=MAX_DEVICES)
    software: Text = ""
    reason: Text = ""


class DeviceState(StrEnum):
    ONLINE = "online"
    COMM_FAIL = "comm_fail"  # not answering: link or power unknown
    OFFLINE = "offline"  # gateway is down or device out of service


class PointInfo(Wire):
    name: PointName
    unit: Label = ""
    type: Label = ""
    writable: bool = False


class DeviceStatus(Wire):
    v: Literal[1] = 1
    gateway: Ident
    device: Ident
    state: Annotated[DeviceState, Field(strict=False)]
    ts_ms: TsMs
    profile: Label = ""
    reason: Text = ""
    points: list[PointInfo] = Field(default_factory=list, max_length=MAX_POINTS,
                                    description="Birth: every point")


class DeviceHealth(Wire):
    state: Annotated[DeviceState, Field(strict=False)]
    poll_latency_ms: float | None = None
    polls: int = 0
    errors: int = 0
    last_good_ms: TsMs | None = None
    last_error: Text = ""


class BufferHealth(Wire):
    depth: int = Field(ge=0, description="Messages waiting for the broker")
    bytes: int = Field(ge=0)
    oldest_age_s: float = Field(ge=0)
    dropped: int = Field(ge=0, description="Dropped since start (bounds hit)")


class Health(Wire):
    v: Literal[1] = 1
    gateway: Ident
    ts_ms: TsMs
    uptime_s: float = Field(ge=0)
    devices: dict[Ident, DeviceHealth] = Field(default_factory=dict, max_length=MAX_DEVICES)
    buffer: BufferHealth
    readings_per_s: float = 0.0


class Command(Wire):
    v: Literal[1] = 1
    id: Ident = Field(description="Issuer's unique id, echoed in the reply; a gateway executes an id once")
    point: PointName
    value: float | int | bool
    ts_ms: TsMs = Field(description="Issue time: the gateway refuses a command outside its freshness window")
    operator: str = Field("", description="Authenticated operator the issuer acted for (never from a client)")
    reason: str = Field("", description="Why, as the operator gave it")
    issuer: str = Field("", max_length=64, description="Key id of the issuer whose key signed the command")
    sig: str = Field("", max_length=128,
                     description="Ed25519 signature (URL-safe base64) of aquavolt.signing.canonical_bytes")


class CommandOutcome(StrEnum):
    DONE = "done"  # written and read back equal
    REFUSED = "refused"  # not allowed, unsigned, stale, replayed, mistyped or out of range: nothing written
    FAILED = "failed"  # write or verification failed


class CommandReply(Wire):
    v: Literal[1] = 1
    id: Ident
    gateway: Ident
    device: Ident
    point: PointName
    outcome: Annotated[CommandOutcome, Field(strict=False)]
    reason: Text = ""
    value_read: float | int | bool | None = None
    ts_ms: TsMs


class AlarmState(StrEnum):
    """ISA-18.2 states, plus the three kinds of not-shown."""

    NORMAL = "normal"
    UNACK = "unack"  # active, unacknowledged
    ACKED = "acked"  # active, acknowledged
    RTN_UNACK = "rtn_unack"  # returned to normal, unacknowledged
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"  # by design
    OUT_OF_SERVICE = "out_of_service"


class OutageClass(StrEnum):
    """IEEE 1366: an interruption is sustained once it lasts 5 minutes (``sustained_after_s``),
    momentary before."""

    MOMENTARY = "momentary"
    SUSTAINED = "sustained"


MAX_CUSTOMERS = 10_000_000
"""Customers one outage can affect (a bound, not a figure of any field)."""


class OutageInfo(Wire):
    """The story of one outage, carried by every event of its ``outage`` alarm: raised
    (``classification`` so far momentary, ``restored_ms`` null), ``sustained`` when it crosses
    the threshold (the same alarm, not a new one), cleared on restoration with the duration and
    the final class."""

    kind: Literal["feeder", "transformer"] = Field(description="The asset that lost supply")
    feeder: Ident = Field(description="The feeder the asset belongs to (itself for a feeder)")
    transformer: Ident | None = Field(None, description="The transformer, for a transformer outage")
    customers_affected: int = Field(ge=0, le=MAX_CUSTOMERS,
                                    description="Customers under the asset (field topology)")
    started_ms: TsMs = Field(description="Event time the supply was lost")
    restored_ms: int | None = Field(None, ge=0, lt=2**53,
                                    description="Event time the supply came back; null while out")
    duration_s: float = Field(ge=0, le=2**53 / 1000,
                              description="So far, or from start to restoration once restored")
    classification: Annotated[OutageClass, Field(strict=False)] = Field(
        description="momentary or sustained: final once restored_ms is set, else the class so far")
    evidence: Label = Field("", description="voltage, last_gasp or transformers")
    merged_into: Ident | None = Field(
        None, description="Closed because it became part of this feeder's outage (not a restoration)")


class AlarmEvent(Wire):
    v: Literal[1] = 1
    alarm_id: str = Field(max_length=129,
                          description="'{asset}/{condition}': one alarm per asset and condition")
    asset: Ident
    condition: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    state: Annotated[AlarmState, Field(strict=False)]
    transition: Label = Field(description="raised, cleared, acknowledged, shelved, ...")
    priority: Literal["low", "medium", "high", "critical"]
    ts_ms: TsMs = Field(description="Event time of the transition")
    message: Text = ""
    value: PointValue | None = None
    by: Label = Field("", description="Operator who acted, for operator transitions")
    comment: Text = ""
    details: dict[str, Any] = Field(default_factory=dict)
    outage: OutageInfo | None = Field(None, description="For an outage alarm: its story so far")
    parent: str | None = Field(
        None, max_length=129, description="Alarm id of the incident this alarm is grouped under "
        "(a feeder bay's breaker trip under its feeder's outage); a grouped alarm is not "
        "annunciated on its own while its parent is active")


class CustomerAlert(Wire):
    v: Literal[1] = 1
    id: Text = Field(description="Event id: one message per customer per event")
    customer: Ident
    kind: Literal["over_consumption", "continuous_flow", "outage", "restoration"]
    language: Literal["fr", "ar", "en"]
    text: Text
    status: Literal["queued", "sent", "delivered", "failed", "suppressed"]
    ts_ms: TsMs


class DeadLetter(Wire):
    v: Literal[1] = 1
    component: Label
    topic: Text
    reason: Text
    payload: str = Field(max_length=MAX_DEADLETTER_PAYLOAD,
                         description="The rejected payload (UTF-8, or base64 when binary)")
    ts_ms: TsMs


M = TypeVar("M", bound=BaseModel)


class Progress(Wire):
    """A component's readiness and how far it has processed, in event time. Published when it
    is ready (connected, serving) and then whenever its event time moves (at most every
    ``PROGRESS_EVERY_S`` of wall time, and when it has nothing left to do)."""

    v: Literal[1] = 1
    component: Ident = Field(description="sim, edge-{gateway}, collector, rules")
    ready: bool = Field(description="Connected and serving; false in a clean stop's last message")
    event_ms: int | None = Field(
        None, ge=0, lt=2**53, description="Event time up to which everything received is handled "
        "(collector: written to InfluxDB; rules: released to the rules), none before any data")
    backlog: int = Field(0, ge=0, description="Messages received and not handled yet")
    ts_ms: TsMs = Field(description="The component's clock when it published this")


class TimeStage(StrEnum):
    """A lockstep instant is granted in two stages: the field (simulator) first, then the
    gateways that read it."""

    FIELD = "field"
    EDGE = "edge"


class TimeGrant(Wire):
    """The time keeper lets the participants of one stage advance to ``t_ms``."""

    v: Literal[1] = 1
    run: Ident = Field(description="The run this grant belongs to")
    step: int = Field(ge=0, description="Counts the instants granted, from 0")
    stage: Annotated[TimeStage, Field(strict=False)]
    t_ms: TsMs = Field(description="Simulated instant granted")


class TimeDone(Wire):
    """A participant has finished with the instant of a grant (its messages acknowledged by
    the broker); ``step`` -1 announces a participant that is ready for the first grant."""

    v: Literal[1] = 1
    run: Ident
    participant: Ident
    step: int = Field(ge=-1)
    stage: Annotated[TimeStage, Field(strict=False)]
    t_ms: TsMs
    next_ms: int | None = Field(None, ge=0, lt=2**53,
                                description="Earliest instant the participant has work at, if any")
    next_read_ms: int | None = Field(
        None, ge=0, lt=2**53, description="Edge stage: earliest instant it reads the field at "
        "(a poll), if any; an instant nobody reads (a health report only) needs no field stage")


def encode(msg: BaseModel) -> bytes:
    """A message's JSON bytes."""
    return orjson.dumps(msg.model_dump(mode="json", exclude_defaults=False))


def check_size(payload: bytes | str, limit: int = MAX_PAYLOAD_BYTES) -> None:
    """Raise WireError for a payload larger than the contract allows (before parsing it)."""
    size = len(payload) if isinstance(payload, bytes) else len(payload.encode())
    if size > limit:
        raise WireError(f"payload: {size} bytes, larger than the limit of {limit} bytes")


_UNION_TAGS = frozenset({"float", "int", "bool", "str", "constrained-str", "none"})


def _reason(name: str, exc: ValidationError, prefix: str = "") -> str:
    errs = exc.errors(include_url=False)
    # a value fails every member of its union: say why it fails the member of its own type
    # (a number not finite, a string too long), not that it is not a boolean
    first = next((e for e in errs if not e["type"].endswith(("_type", "_parsing"))
                  and "loc" in e and any(str(p) in _UNION_TAGS for p in e["loc"])), errs[0])
    loc = [str(p) for p in first["loc"] if str(p) not in _UNION_TAGS]
    where = ".".join([prefix, *loc] if prefix else loc) or "payload"
    unions = {tuple(p for p in e["loc"] if str(p) not in _UNION_TAGS) for e in errs}
    more = f" (and {len(unions) - 1} more)" if len(unions) > 1 else ""
    return f"{name}: {where}: {first['msg']}{more}"


def decode(payload: bytes | str, model: type[M]) -> M:
    """Parse and validate a payload, or raise WireError saying what is wrong and where."""
    check_size(payload)
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise WireError(_reason(model.__name__, exc)) from None


def decode_batch(payload: bytes | str) -> Batch:
    return decode(payload, Batch)


class BadReading:
    """A reading of a batch that broke the contract (``exc`` says where and why; ``raw`` is
    the reading as parsed)."""

    __slots__ = ("exc", "raw")

    def __init__(self, exc: ValidationError, raw: Any) -> None:
        self.exc = exc
        self.raw = raw


def _each_reading(value: Any, handler: Any) -> Any:
    try:
        return handler(value)
    except ValidationError as exc:
        return BadReading(exc, value)


class _BatchEnvelope(Batch):
    """A batch whose envelope is judged strictly and each reading on its own."""

    readings: list[Annotated[Reading, WrapValidator(_each_reading)]] = Field(
        min_length=1, max_length=MAX_READINGS)


def decode_batch_partial(payload: bytes | str) -> tuple[Batch, list[tuple[int, str, Any]]]:
    """A batch with its valid readings, and the (index, reason, reading as parsed) of each
    reading that breaks the contract; WireError when the envelope itself is bad or no
    reading is valid."""
    check_size(payload)
    try:
        env = _BatchEnvelope.model_validate_json(payload)
    except ValidationError as exc:
        raise WireError(_reason("Batch", exc)) from None
    good: list[Reading] = []
    bad: list[tuple[int, str, Any]] = []
    for i, r in enumerate(env.readings):
        if isinstance(r, BadReading):
            bad.append((i, _reason("Batch", r.exc, f"readings.{i}"), r.raw))
        else:
            good.append(r)
    if not good:
        raise WireError(f"Batch: no valid reading; {bad[0][1]}"
                        + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    fields = {k: getattr(env, k) for k in Batch.model_fields if k != "readings"}
    return Batch.model_construct(**fields, readings=good), bad


class Topics:
    """Builds and parses the topic tree under one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or prefix.endswith("/") or "+" in prefix or "#" in prefix:
            raise ValueError(f"bad topic prefix {prefix!r}")
        self.prefix = prefix
        self._gw_parts = prefix.count("/") + 2

    def gateway_status(self, gw: str) -> str:
        return f"{self.prefix}/gw/{gw}/status"

    def health(self, gw: str) -> str:
        return f"{self.prefix}/gw/{gw}/health"

    def stored(self, gw: str) -> str:
        return f"{self.prefix}/gw/{gw}/stored"

    def resend(self, gw: str) -> str:
        return f"{self.prefix}/gw/{gw}/resend"

    def resent(self, gw: str) -> str:
        return f"{self.prefix}/gw/{gw}/resent"

    def group_stored(self, group: str) -> str:
        return f"{self.prefix}/collector/{group}/stored"

    @property
    def all_resent(self) -> str:
        return f"{self.prefix}/gw/+/resent"

    def data(self, gw: str, dev: str) -> str:
        return f"{self.prefix}/gw/{gw}/dev/{dev}/data"

    def device_status(self, gw: str, dev: str) -> str:
        return f"{self.prefix}/gw/{gw}/dev/{dev}/status"

    def command(self, gw: str, dev: str) -> str:
        return f"{self.prefix}/gw/{gw}/dev/{dev}/cmd"

    def reply(self, gw: str, dev: str) -> str:
        return f"{self.prefix}/gw/{gw}/dev/{dev}/reply"

    def alarm(self, asset: str, condition: str) -> str:
        return f"{self.prefix}/alarm/{asset}/{condition}"

    @property
    def alarm_events(self) -> str:
        return f"{self.prefix}/event/alarm"

    @property
    def customer_alerts(self) -> str:
        return f"{self.prefix}/event/customer"

    def deadletter(self, component: str) -> str:
        return f"{self.prefix}/deadletter/{component}"

    @property
    def sim_fault(self) -> str:
        return f"{self.prefix}/sim/fault"

    def progress(self, component: str) -> str:
        return f"{self.prefix}/progress/{component}"

    @property
    def all_progress(self) -> str:
        return f"{self.prefix}/progress/+"

    @property
    def time_grant(self) -> str:
        return f"{self.prefix}/time/grant"

    def time_done(self, participant: str) -> str:
        return f"{self.prefix}/time/done/{participant}"

    @property
    def all_time_done(self) -> str:
        return f"{self.prefix}/time/done/+"

    # subscription filters
    @property
    def all_data(self) -> str:
        return f"{self.prefix}/gw/+/dev/+/data"

    @property
    def all_device_status(self) -> str:
        return f"{self.prefix}/gw/+/dev/+/status"

    @property
    def all_gateway_status(self) -> str:
        return f"{self.prefix}/gw/+/status"

    @property
    def all_health(self) -> str:
        return f"{self.prefix}/gw/+/health"

    @property
    def all_alarms(self) -> str:
        return f"{self.prefix}/alarm/#"

    def parse(self, topic: str) -> tuple[str, str, str | None]:
        """'…/gw/g1/dev/d1/data' -> ('data', 'g1', 'd1'); '…/gw/g1/status' -> ('status', 'g1', None).

        Raises WireError for a topic outside the gateway tree.
        """
        head = self.prefix + "/gw/"
        if not topic.startswith(head):
            raise WireError(f"topic {topic!r} is not under {head}")
        parts = topic[len(head) :].split("/")
        if len(parts) == 2 and parts[1] in ("status", "health"):
            return parts[1], parts[0], None
        if len(parts) == 4 and parts[1] == "dev" and parts[3] in ("data", "status", "cmd", "reply"):
            return parts[3], parts[0], parts[2]
        raise WireError(f"topic {topic!r} does not follow the wire contract")


WIRE_MODELS: dict[str, type[BaseModel]] = {
    "batch": Batch,
    "gateway-status": GatewayStatus,
    "device-status": DeviceStatus,
    "health": Health,
    "command": Command,
    "command-reply": CommandReply,
    "alarm-event": AlarmEvent,
    "customer-alert": CustomerAlert,
    "dead-letter": DeadLetter,
    "progress": Progress,
    "time-grant": TimeGrant,
    "time-done": TimeDone,
    "stored-mark": StoredMark,
    "resend-request": ResendRequest,
    "resend-result": ResendResult,
    "group-stored": GroupStored,
}
"""Every payload of the contract, by the name of its JSON Schema file."""
