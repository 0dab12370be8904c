"""Sparkplug B 3.0 northbound: the gateway as a Sparkplug edge node (``docs/sparkplug.md``).

A gateway with ``northbound: sparkplug`` (or ``both``) runs one :class:`SparkplugNode` beside
aquavolt's own link, on its own MQTT session (its will is the NDEATH):

- the gateway is the edge node ``spBv1.0/{group_id}/.../{edge_node_id}``, each device a
  Sparkplug device; metric names are point names, aliases are fixed by the field (1, 2, ...
  in device then profile order), datatypes come from the point types;
- on every connection (and on an NCMD ``Node Control/Rebirth``, and when the primary host
  comes back online): NBIRTH (``seq`` 0, ``bdSeq``, ``Node Control/Rebirth``), a DBIRTH per
  device with every metric (datatype, alias, last value, properties ``engUnit``,
  ``Quality``, ``readOnly``), the readings held meanwhile as DDATA flagged ``is_historical``,
  then a DDEATH for each device that is not answering;
- DDATA by exception (the agent's deadbands and heartbeat), aliases only; DDEATH when a
  device stops answering, DBIRTH when it answers again; ``seq`` 0..255 across every message
  of the node; NDEATH (the will, and sent before a clean stop) with the NBIRTH's ``bdSeq``;
- with a primary host: no birth before its STATE says online; when it says offline, NDEATH,
  disconnect and connect again (a new session), born again once the host is back;
- readings are held in a store of their own (``sparkplug.sqlite``) while the session is down
  or the primary host's STATE says offline, and replayed (QoS 1, deleted on the broker's
  PUBACK) after the next birth;
- DCMD writes go through the agent's command checks (allow-list, range, rate) and its
  read-back, only when ``accept_dcmd`` is set; the value read back goes out as DDATA.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from aquavolt.backoff import Backoff
from aquavolt.edge.store import Store
from aquavolt.errors import WireError
from aquavolt.field import GatewaySparkplug
from aquavolt.logs import OnceLogger
from aquavolt.mqtt import Inbound, Transport
from aquavolt.profiles import ModbusPoint, PointClass
from aquavolt.settings import MqttSettings
from aquavolt.sparkplug import (
    PROP_QUALITY,
    QUALITY_CODES,
    REBIRTH_METRIC,
    DataType,
    MessageType,
    Metric,
    Payload,
    PropertyValue,
    bd_seq_metric,
    datatype_for_point,
    decode_payload,
    decode_state,
    encode_payload,
    next_bd_seq,
    next_seq,
    parse_topic,
    point_properties,
    state_topic,
    topic,
)
from aquavolt.wire import Quality

if TYPE_CHECKING:
    from aquavolt.edge.agent import Agent, DeviceRuntime
    from aquavolt.edge.report import Reading

log = logging.getLogger("aquavolt.edge.sparkplug")

REPLAY_WINDOW = 50
"""Replayed (historical) messages awaiting their PUBACK at most."""
_RANK = {PointClass.TELEMETRY: 0, PointClass.STATUS: 1, PointClass.ALARM: 2}
_CLASS_OF_RANK = {r: c for c, r in _RANK.items()}


@dataclass(frozen=True)
class MetricDef:
    name: str
    alias: int
    datatype: DataType
    unit: str
    writable: bool


def metric_defs(agent: Agent) -> dict[str, dict[str, MetricDef]]:
    """device -> point -> its metric: every point of the profile (and each named bit of a
    bitfield, as the agent sends them), aliases 1, 2, ... in device then profile order."""
    out: dict[str, dict[str, MetricDef]] = {}
    alias = 0
    for dev in agent.gw.devices:
        profile = agent.cfg.profiles[dev.profile]
        defs: dict[str, MetricDef] = {}
        for p in profile.points:
            scaled = isinstance(p, ModbusPoint) and (p.scale != 1 or p.offset != 0)
            alias += 1
            defs[p.name] = MetricDef(p.name, alias, datatype_for_point(str(p.type), scaled), p.unit,
                                     p.writable)
            if agent.settings.bitfield_flags and isinstance(p, ModbusPoint):
                for flag in p.bits.values():
                    if flag not in profile.by_name and flag not in defs:
                        alias += 1
                        defs[flag] = MetricDef(flag, alias, DataType.Boolean, "", False)
        out[dev.id] = defs
    return out


_NOT_FIT = object()


def fit(datatype: DataType, value: object) -> object:
    """``value`` as a value of ``datatype`` (an integral float for an integer metric, a bool
    for a number), or ``_NOT_FIT``."""
    if value is None:
        return None
    if datatype is DataType.Boolean:
        return value if isinstance(value, bool) else _NOT_FIT
    if datatype in (DataType.Float, DataType.Double):
        return float(value) if isinstance(value, int | float) else _NOT_FIT
    if datatype is DataType.String:
        return value if isinstance(value, str) else _NOT_FIT
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else _NOT_FIT


class SparkplugNode:
    def __init__(self, agent: Agent, settings: MqttSettings) -> None:
        self.agent = agent
        self.mqtt_settings = settings
        cfg = agent.gw.sparkplug or GatewaySparkplug()
        self.cfg = cfg
        self.group_id = cfg.group_id or agent.cfg.field_id
        self.node_id = cfg.edge_node_id or agent.gw.id
        self.clock = agent.clock
        self.defs = metric_defs(agent)
        self.by_alias = {d.alias: (dev, d) for dev, defs in self.defs.items() for d in defs.values()}
        self.last: dict[str, dict[str, tuple[Any, int, str]]] = {d: {} for d in self.defs}
        self.sent_quality: dict[str, dict[str, str]] = {d: {} for d in self.defs}
        self.store = Store(Path(agent.state_dir) / "sparkplug.sqlite", agent.store.max_bytes,
                           agent.store.max_age_s, agent.settings.store_synchronous)
        self._bd_file = Path(agent.state_dir) / "sparkplug-bdseq"
        self.bd_seq = self._next_bd_seq()
        self.seq = 0
        self.connected = False
        self.host_online = cfg.primary_host_id is None
        self._host_ts = -1
        self.live = False  # born, and the primary host online: data goes out now
        self.born: set[str] = set()
        self.births = 0
        self.historical_sent = 0
        self.dcmd_refused = 0
        self._replay_inflight: dict[int, int] = {}  # mid -> store seq
        self._replay_wake = asyncio.Event()
        self._replay_restart = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._commands: set[asyncio.Task[None]] = set()
        self._once = OnceLogger(log)
        subs = [(self.topic(MessageType.NCMD), 1), (f"spBv1.0/{self.group_id}/DCMD/{self.node_id}/+", 1)]
        if cfg.primary_host_id is not None:
            subs.append((state_topic(cfg.primary_host_id), 1))
        self.transport = Transport(settings, f"aquavolt-spb-{agent.gw.id}", subscriptions=subs,
                                   will=self._will(), max_inbox=1000, backoff=Backoff(1.0, 30.0),
                                   name="edge.sparkplug")
        self.transport.next_will = self._next_session  # in paho's thread, before it reconnects
        self.transport.on_connected.append(lambda _session: self._connected())
        self.transport.on_lost.append(self._disconnected)
        self.transport.on_pubacks = self._pubacks
        self.transport.on_message = self._message

    # ------------------------------------------------------------ topics and sequence
    def topic(self, mtype: MessageType, device: str | None = None) -> str:
        return topic(self.group_id, mtype, self.node_id, device)

    def _take_seq(self) -> int:
        seq = self.seq
        self.seq = next_seq(seq)
        return seq

    def _next_bd_seq(self) -> int:
        try:
            last = int(self._bd_file.read_text())
        except (OSError, ValueError):
            last = -1
        bd = next_bd_seq(last) if last >= 0 else 0
        self._bd_file.write_text(str(bd))
        return bd

    def _death(self) -> bytes:
        return encode_payload(Payload(timestamp=self.clock.now_ms(), metrics=[bd_seq_metric(self.bd_seq)]))

    def _will(self) -> tuple[str, bytes, bool]:
        return self.topic(MessageType.NDEATH), self._death(), False

    def _next_session(self) -> tuple[str, bytes, bool]:
        """A session ended: the next one has the next bdSeq, and its will says so."""
        self.bd_seq = self._next_bd_seq()
        return self._will()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport.start(self._loop)
        self._tasks = [asyncio.create_task(self._replay(), name="sparkplug-replay")]
        log.info("gateway %s: Sparkplug edge node %s/%s, bdSeq %d, %d messages held", self.agent.gw.id,
                 self.group_id, self.node_id, self.bd_seq, self.store.depth)

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._commands]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._say_death()  # a clean stop says so itself: the will is for an unclean one
        # what paho hands over from now on is dropped: it never meets the closed store
        await asyncio.to_thread(self.transport.stop)
        self.store.close()
        self._loop = None

    def _connected(self) -> None:
        self.connected = True
        self._once.recovered("sparkplug")
        log.info("Sparkplug session up (bdSeq %d)%s", self.bd_seq,
                 "" if self.host_online else f"; waiting for primary host {self.cfg.primary_host_id}")
        if self.host_online:
            self.birth()

    def _disconnected(self, reason: str) -> None:
        if self.connected:
            log.warning("Sparkplug session lost (%s); holding readings", reason)
        self.connected = False
        self.live = False
        self.born.clear()
        self._replay_inflight.clear()  # still in the store: replayed after the next birth

    # ------------------------------------------------------------ births and deaths
    def birth(self) -> None:
        """NBIRTH, a DBIRTH per device, the held readings, a DDEATH per silent device."""
        if not self.connected:
            return
        now = self.clock.now_ms()
        self.seq = 0
        self.births += 1
        self._publish(MessageType.NBIRTH, None, Payload(timestamp=now, seq=self._take_seq(), metrics=[
            bd_seq_metric(self.bd_seq, now),
            Metric(name=REBIRTH_METRIC, timestamp=now, datatype=DataType.Boolean, value=False),
        ]))
        self.born.clear()
        for dev in self.defs:
            self._device_birth(dev, now)
        self.live = True
        self._replay_restart = True
        if self.store.depth:
            self._replay_wake.set()  # the replay ends with the DDEATHs
        else:
            self._deaths_after_replay()

    def _device_birth(self, dev: str, now: int) -> None:
        metrics = []
        for d in self.defs[dev].values():
            value, ts, quality = self.last[dev].get(d.name, (None, now, "bad"))
            fitted = fit(d.datatype, value)
            if fitted is _NOT_FIT:
                fitted, quality = None, "bad"
            metrics.append(Metric(name=d.name, alias=d.alias, timestamp=ts, datatype=d.datatype,
                                  value=fitted,  # type: ignore[arg-type]
                                  is_null=fitted is None,
                                  properties=point_properties(d.unit, quality, d.writable)))
            self.sent_quality[dev][d.name] = quality
        self._publish(MessageType.DBIRTH, dev, Payload(timestamp=now, seq=self._take_seq(), metrics=metrics))
        self.born.add(dev)

    def _deaths_after_replay(self) -> None:
        """A DDEATH for each device born silent (after its historical data)."""
        for rt in self.agent.devices.values():
            if rt.comm_fail and rt.device.id in self.born:
                self._device_death(rt.device.id)

    def _device_death(self, dev: str) -> None:
        self._publish(MessageType.DDEATH, dev, Payload(timestamp=self.clock.now_ms(), seq=self._take_seq()))
        self.born.discard(dev)

    def device_state(self, rt: DeviceRuntime) -> None:
        """The agent saw a device stop answering (DDEATH) or answer again (DBIRTH)."""
        dev = rt.device.id
        if not self.live:
            return  # the next birth says it
        if rt.comm_fail and dev in self.born:
            self._device_death(dev)
        elif not rt.comm_fail and dev not in self.born:
            self._device_birth(dev, self.clock.now_ms())
            if self.store.depth:  # its readings held meanwhile, if any
                self._replay_restart = True
                self._replay_wake.set()

    def _publish(self, mtype: MessageType, dev: str | None, payload: Payload, qos: int = 0) -> int | None:
        """The message id, None when paho refused it (not connected, or its queue full)."""
        return self.transport.publish(self.topic(mtype, dev), encode_payload(payload), qos=qos)

    # ------------------------------------------------------------ data
    def readings(self, rt: DeviceRuntime, readings: list[Reading]) -> None:
        """Readings the agent decided to report: DDATA now, or held for later."""
        dev = rt.device.id
        last = self.last[dev]
        for name, value, ts, quality in readings:
            last[name] = (value, ts, str(quality))
        if (self.live and dev in self.born
                and self._publish(MessageType.DDATA, dev, self._data(dev, readings, False)) is not None):
            return
        rank = max(_RANK[rt.profile.by_name[n].point_class] if n in rt.profile.by_name else 2
                   for n, *_ in readings)
        body = orjson.dumps([dev, [[n, v, t, str(q)] for n, v, t, q in readings]])
        self.store.add(self.store.take_seq(), dev, body, _CLASS_OF_RANK[rank], readings[0][2])
        self.store.commit()

    def _data(self, dev: str, readings: list[Reading] | list[list[Any]], historical: bool) -> Payload:
        defs = self.defs[dev]
        sent_q = self.sent_quality[dev]
        metrics = []
        for name, value, ts, q in readings:
            d = defs.get(name)
            if d is None:
                continue
            quality = str(q)
            fitted = fit(d.datatype, value)
            if fitted is _NOT_FIT:
                self._once.failure(f"metric {dev}/{name}", f"value {value!r} is no {d.datatype.name}")
                fitted, quality = None, "bad"
            props: dict[str, PropertyValue] = {}
            if not historical and (quality != "good" or sent_q.get(name) != "good"):
                props[PROP_QUALITY] = PropertyValue(DataType.Int32, int(QUALITY_CODES[quality]))
                sent_q[name] = quality
            elif historical and quality != "good":
                props[PROP_QUALITY] = PropertyValue(DataType.Int32, int(QUALITY_CODES[quality]))
            metrics.append(Metric(alias=d.alias, timestamp=ts, datatype=d.datatype,
                                  value=fitted,  # type: ignore[arg-type]
                                  is_null=fitted is None, is_historical=historical, properties=props))
        return Payload(timestamp=self.clock.now_ms(), seq=self._take_seq(), metrics=metrics)

    async def _replay(self) -> None:
        """Held readings, oldest first, as historical DDATA (QoS 1: deleted on the PUBACK);
        when none is left, the DDEATHs of the devices born silent."""
        cursor = -1
        while True:
            await self._replay_wake.wait()
            self._replay_wake.clear()
            if self._replay_restart:
                self._replay_restart, cursor = False, -1
            if not self.live:
                continue
            rows = self.store.scan(cursor, REPLAY_WINDOW)
            if not rows:
                if not self._replay_inflight:
                    self._deaths_after_replay()
                continue
            inflight = set(self._replay_inflight.values())
            for row in rows:
                if not self.live or len(self._replay_inflight) >= REPLAY_WINDOW:
                    break
                cursor = row.seq
                if row.seq in inflight:
                    continue
                dev, readings = orjson.loads(row.payload)
                if dev not in self.born:
                    continue  # a device silent since the birth: replayed after its next birth
                mid = self._publish(MessageType.DDATA, dev, self._data(dev, readings, True), qos=1)
                if mid is None:
                    break  # refused: the row stays in the store, replayed at the next wake-up
                self._replay_inflight[mid] = row.seq
                self.historical_sent += 1
            else:
                self._replay_wake.set()  # the whole scan went: look further
            await asyncio.sleep(0)

    def _pubacks(self, mids: list[int]) -> None:
        seqs = [s for s in (self._replay_inflight.pop(mid, None) for mid in mids) if s is not None]
        if seqs:
            self.store.delete(seqs)
        self._replay_wake.set()  # the window has room (or paho, after a refusal)

    # ------------------------------------------------------------ commands and STATE
    def _message(self, msg: Inbound) -> None:
        text, payload, retained = msg.topic, msg.payload, msg.retain
        try:
            t = parse_topic(text)
            if t.message_type is MessageType.STATE:
                self._state(payload)
                return
            p = decode_payload(payload)
        except WireError as exc:
            log.warning("Sparkplug message on %s refused: %s", text, exc)
            return
        if t.message_type is MessageType.NCMD:
            for m in p.metrics:
                if m.name == REBIRTH_METRIC and m.value is True:
                    log.info("rebirth requested (NCMD)")
                    self.birth()
        elif t.message_type is MessageType.DCMD and t.device_id is not None:
            if retained:
                log.warning("retained DCMD on %s ignored: published before the gateway subscribed", text)
                return
            for m in p.metrics:
                task = asyncio.create_task(self._dcmd(t.device_id, m))
                self._commands.add(task)
                task.add_done_callback(self._commands.discard)

    def _state(self, payload: bytes) -> None:
        state = decode_state(payload)
        if state.timestamp < self._host_ts:
            return  # an older STATE than one already seen
        self._host_ts = state.timestamp
        if state.online and not self.host_online:
            log.info("primary host %s online: rebirth, then the held readings", self.cfg.primary_host_id)
            self.host_online = True
            self.birth()
        elif not state.online and self.host_online:
            log.warning("primary host %s offline: session ended (NDEATH), readings held until it is back",
                        self.cfg.primary_host_id)
            self.host_online = False
            self.live = False
            task = asyncio.create_task(self._leave(), name="sparkplug-leave")
            self._commands.add(task)
            task.add_done_callback(self._commands.discard)

    async def _leave(self) -> None:
        """The primary host is offline: end this session (NDEATH first, as a clean stop does)
        and open a new one, which births once the host's STATE says online (Sparkplug 3.0:
        an edge node terminates its session while the primary host is offline)."""
        await self._say_death()
        await asyncio.to_thread(self.transport.stop)
        self._disconnected("left while the primary host is offline")
        self.transport.set_will(*self._next_session())
        assert self._loop is not None
        self.transport.start(self._loop)

    async def _say_death(self, timeout_s: float = 3.0) -> None:
        """NDEATH, waited for until the broker has it (or the session is gone)."""
        if not self.connected:
            return
        mid = self.transport.publish(self.topic(MessageType.NDEATH), self._death(), qos=1)
        deadline = time.monotonic() + timeout_s
        while (mid is not None and not self.transport.acknowledged(mid) and self.connected  # noqa: ASYNC110
               and time.monotonic() < deadline):
            await asyncio.sleep(0.02)

    async def _dcmd(self, dev: str, m: Metric) -> None:
        name = m.name
        if name is None and m.alias is not None and m.alias in self.by_alias:
            owner, d = self.by_alias[m.alias]
            name = d.name if owner == dev else None
        refusal: str | None
        if not self.cfg.accept_dcmd:
            refusal = "this gateway does not accept DCMD (sparkplug.accept_dcmd is false)"
        elif name is None:
            refusal = f"unknown metric (alias {m.alias})"
        else:
            refusal = self.agent.commands.check_target(dev, name, m.value)
        if refusal is not None or name is None:
            self.dcmd_refused += 1
            log.warning("DCMD %s/%s := %r refused: %s", dev, name or m.alias, m.value, refusal)
            return
        value = m.value
        if not isinstance(value, bool | int | float):
            return  # check_target refused every other type
        outcome, reason, read = await self.agent.commands.write_verified(dev, name, value)
        log.info("DCMD %s/%s := %r -> %s %s", dev, name, value, outcome.value, reason)
        if read is not None:
            self.readings(self.agent.devices[dev], [(name, read, self.clock.now_ms(), Quality.GOOD)])

    @property
    def depth(self) -> int:
        return int(self.store.depth)


