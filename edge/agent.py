"""The edge agent: polls a gateway's devices and publishes their readings.

One supervised task per device and poll group; a task that raises is counted, logged and
restarted, never lost. Each poll reads one group of one device through its bus driver,
keeps what report-by-exception says is worth sending, and submits one batch to the link
(store and forward). A device that stops answering gets its points sent once as ``bad``,
a retained ``comm_fail`` status, and a circuit breaker that keeps it from slowing anyone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from aquavolt import __version__
from aquavolt.clock import Clock
from aquavolt.edge.commands import CommandHandler
from aquavolt.edge.config import EdgeSettings, GatewayConfig
from aquavolt.edge.drivers import Breaker, Driver, make_driver
from aquavolt.edge.link import Link
from aquavolt.edge.report import Deadband, Reading, Sent, filter_readings
from aquavolt.edge.sparkplug import SparkplugNode
from aquavolt.edge.store import Store
from aquavolt.errors import DeviceError
from aquavolt.field import Device, OpcuaBus
from aquavolt.logs import OnceLogger
from aquavolt.profiles import ModbusPoint, ModbusProfile, OpcuaProfile, PointBase, PointClass
from aquavolt.progress import ProgressReporter
from aquavolt.sdnotify import Notifier
from aquavolt.settings import MqttSettings
from aquavolt.wire import (
    DeviceState,
    DeviceStatus,
    GatewayState,
    GatewayStatus,
    Health,
    PointInfo,
    Quality,
    Topics,
    encode,
)

log = logging.getLogger("aquavolt.edge")

_RANK = {PointClass.TELEMETRY: 0, PointClass.STATUS: 1, PointClass.ALARM: 2}
_CLASS_OF_RANK = {r: c for c, r in _RANK.items()}

PointLayout = tuple[str, tuple[str, ...], tuple[tuple[int, str], ...]]
"""A polled point: its name, the names of its bit flags (declaration order, sent ``bad``
with it) and its (bit, flag) pairs by bit (decoded from its value)."""


def point_layout(profile: ModbusProfile | OpcuaProfile, points: list[PointBase],
                 flags: bool) -> list[PointLayout]:
    out: list[PointLayout] = []
    for p in points:
        names: tuple[str, ...] = ()
        bits: tuple[tuple[int, str], ...] = ()
        if flags and isinstance(p, ModbusPoint):
            names = tuple(n for n in p.bits.values() if n not in profile.by_name)
            bits = tuple((b, n) for b, n in sorted(p.bits.items()) if n not in profile.by_name)
        out.append((p.name, names, bits))
    return out


@dataclass
class DeviceRuntime:
    device: Device
    profile: ModbusProfile | OpcuaProfile
    driver: Driver
    groups: dict[str, list[PointBase]]
    intervals_s: dict[str, float]
    deadbands: dict[str, Deadband]
    breaker: Breaker
    layouts: dict[str, list[PointLayout]] = field(default_factory=dict)
    rank_of: dict[str, int] = field(default_factory=dict)
    sent: dict[str, Sent] = field(default_factory=dict)
    comm_fail: bool = False
    polls: int = 0
    errors: int = 0
    overruns: int = 0
    latency_ms: float | None = None
    last_good_ms: int | None = None
    last_error: str = ""

    def state(self) -> DeviceState:
        return DeviceState.COMM_FAIL if self.comm_fail else DeviceState.ONLINE


def point_infos(profile: ModbusProfile | OpcuaProfile, flags: bool) -> list[PointInfo]:
    out = []
    for p in profile.points:
        out.append(PointInfo(name=p.name, unit=p.unit, type=str(p.type), writable=p.writable))
        if flags and isinstance(p, ModbusPoint):
            names = {q.name for q in profile.points}
            out += [PointInfo(name=n, type="bool") for n in p.bits.values() if n not in names]
    return out


class Agent:
    def __init__(self, cfg: GatewayConfig, settings: EdgeSettings, mqtt: MqttSettings, state_dir: Path,
                 clock: Clock, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.gw = cfg.gateway
        self.settings = settings
        self.clock = clock
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.topics = Topics(mqtt.prefix)
        self.notifier = notifier or Notifier()
        self.store = Store(self.state_dir / "queue.sqlite", int(settings.store_max_mb * 2**20),
                           settings.store_max_age_s, settings.store_synchronous)
        self.bd_seq = self.store.new_session()
        self.started = time.monotonic()
        self.link = Link(mqtt, f"aquavolt-edge-{self.gw.id}", self.store, clock,
                         (self.topics.gateway_status(self.gw.id), self._gateway_status(GatewayState.OFFLINE)),
                         settings.live_window, settings.replay_window, settings.replay_max_msgs_per_s,
                         settings.commit_interval_ms / 1000)
        self.link.birth = self._birth
        self.progress = ProgressReporter(f"edge-{self.gw.id}", self.topics,
                                         self.link.publish, clock.now_ms)
        self.link.on_connected.append(self.progress.ready)
        self.link.subscriptions = [f"{self.topics.prefix}/gw/{self.gw.id}/dev/+/cmd"]
        self.link.acknowledgements(self.gw.id, self.bd_seq, self.topics.stored(self.gw.id),
                                   self.topics.resend(self.gw.id), self.topics.resent(self.gw.id))
        self.drivers: dict[str, Driver] = {}
        self.devices: dict[str, DeviceRuntime] = {}
        self._build()
        self.commands = CommandHandler(self)
        self.link.on_message = self.commands.on_message
        self.sparkplug = SparkplugNode(self, mqtt) if self.gw.northbound != "aquavolt" else None
        self.sem = asyncio.Semaphore(settings.max_parallel_devices)
        self.once = OnceLogger(log)
        self.task_crashes = 0
        self.stopping = False
        self.readings_polled = 0
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ setup
    def _build(self) -> None:
        for bus in self.gw.buses:
            devs = [d for d in self.gw.devices if d.bus == bus.id]
            used = bus
            if self.clock.lockstep and isinstance(bus, OpcuaBus) and bus.subscribe:
                # a subscription's publishing cycle runs on wall time: in lockstep each poll
                # reads the server (Read service), which the simulator updated for this instant
                used = bus.model_copy(update={"subscribe": False})
            driver = make_driver(used, self.cfg.profiles, devs, self.gw, self.state_dir,
                                 self.settings.register_gap, self.settings.opcua_reconnect_max_s)
            if isinstance(bus, OpcuaBus):  # the OPC-UA driver: its session came back
                driver.on_connected.append(functools.partial(self._link_up, bus.id))
            self.drivers[bus.id] = driver
        for dev in self.gw.devices:
            profile = self.cfg.profiles[dev.profile]
            groups: dict[str, list[PointBase]] = {}
            for p in profile.points:
                groups.setdefault(p.group, []).append(p)
            intervals = {g: dev.poll_intervals_s.get(g) or self.gw.poll_intervals_s.get(g)
                         or self.gw.poll_intervals_s.get("default", 10.0) for g in groups}
            bands = {p.name: Deadband(p.deadband_abs, p.deadband_pct) for p in profile.points}
            flags = self.settings.bitfield_flags
            self.devices[dev.id] = DeviceRuntime(
                dev, profile, self.drivers[dev.bus], groups, intervals, bands,
                Breaker(self.settings.breaker_base_s, self.settings.breaker_max_s,
                        random.Random(f"{self.gw.id}/{dev.id}")),
                layouts={g: point_layout(profile, pts, flags) for g, pts in groups.items()},
                rank_of={p.name: _RANK[p.point_class] for p in profile.points})

    def _gateway_status(self, state: GatewayState, reason: str = "") -> bytes:
        return encode(GatewayStatus(gateway=self.gw.id, state=state, bd_seq=self.bd_seq,
                                    ts_ms=self.clock.now_ms(), devices=[d.id for d in self.gw.devices],
                                    software=f"aquavolt-edge {__version__}", reason=reason))

    def _device_status(self, rt: DeviceRuntime, reason: str = "") -> bytes:
        return encode(DeviceStatus(gateway=self.gw.id, device=rt.device.id, state=rt.state(),
                                   ts_ms=self.clock.now_ms(), profile=rt.profile.id, reason=reason,
                                   points=point_infos(rt.profile, self.settings.bitfield_flags)))

    def _birth(self) -> list[tuple[str, bytes]]:
        out = [(self.topics.gateway_status(self.gw.id), self._gateway_status(GatewayState.ONLINE))]
        out += [(self.topics.device_status(self.gw.id, rt.device.id), self._device_status(rt, rt.last_error))
                for rt in self.devices.values()]
        return out

    # ------------------------------------------------------------ run
    async def run(self, stop: asyncio.Event) -> None:
        for drv in self.drivers.values():
            await drv.start()
        await self.link.start()
        if self.sparkplug is not None:
            await self.sparkplug.start()
        n = max(1, sum(len(rt.groups) for rt in self.devices.values()))
        i = 0
        for rt in self.devices.values():
            for group in rt.groups:
                # in lockstep every poll of a period is due at one instant: no spreading needed
                # (no wall time passes within an instant), and fewer instants to grant
                wall = 0.0 if self.clock.lockstep else self.clock.to_wall(rt.intervals_s[group])
                offset = min(self.settings.stagger_s, wall) * i / n
                i += 1
                self._spawn(f"poll {rt.device.id}/{group}",
                            lambda rt=rt, g=group, o=offset: self._poll_loop(rt, g, o))
        self._spawn("health", self._health_loop)
        if self.notifier.enabled:
            self._spawn("watchdog", self._watchdog_loop)
        ready = getattr(self.clock, "ready", None)
        if ready is not None:  # a lockstep participant: every poll loop is asleep on the clock
            self.clock.drain = self.link.drained  # type: ignore[attr-defined]
            await asyncio.sleep(0)
            ready()
        self.notifier.ready(f"gateway {self.gw.id}: {len(self.devices)} devices")
        log.info("gateway %s: %d devices on %d buses, bd_seq %d, %d messages waiting in the store",
                 self.gw.id, len(self.devices), len(self.drivers), self.bd_seq, self.store.depth)
        await stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        log.info("gateway %s: stopping", self.gw.id)
        self.stopping = True
        self.notifier.stopping()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info("gateway %s: polls stopped", self.gw.id)
        await self.commands.close()
        if self.sparkplug is not None:
            await self.sparkplug.stop()
        await self.link.stop((self.topics.gateway_status(self.gw.id),
                              self._gateway_status(GatewayState.OFFLINE, "clean stop")))
        for drv in self.drivers.values():
            await drv.close()
        self.store.close()
        self.notifier.close()

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(self._supervised(name, factory), name=name))

    async def _supervised(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run a task for ever: a crash is counted, logged with its traceback, and restarted."""
        delay = 0.5
        while not self.stopping:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # supervisor boundary: counted and logged, the task restarts
                self.task_crashes += 1
                log.exception("task %s crashed (%d crashes so far); restarting in %.1f s", name,
                              self.task_crashes, delay)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    def _link_up(self, bus_id: str) -> None:
        """A link (OPC-UA session) is back: its devices' breakers close, and a device that
        lost its data is polled now rather than at the end of its breaker or its interval."""
        self._tasks = [t for t in self._tasks if not t.done()]
        for rt in self.devices.values():
            if rt.device.bus != bus_id:
                continue
            rt.breaker.success()
            if rt.comm_fail and not self.clock.lockstep and not self.stopping:
                for group in rt.groups:
                    self._tasks.append(asyncio.create_task(self.poll_once(rt, group),
                                                           name=f"poll {rt.device.id}/{group} (link up)"))

    # ------------------------------------------------------------ polling
    async def _poll_loop(self, rt: DeviceRuntime, group: str, offset_wall_s: float) -> None:
        if offset_wall_s > 0:
            await asyncio.sleep(offset_wall_s)
        interval = rt.intervals_s[group]
        next_t = self.clock.now()
        while not self.stopping:  # a cancel lost inside a library still ends the loop
            await self.clock.sleep_until(next_t)
            if self.stopping:
                return
            if rt.breaker.allow(self.clock.monotonic()):
                await self.poll_once(rt, group)
            next_t += interval
            now = self.clock.now()
            if next_t <= now:
                missed = int((now - next_t) // interval) + 1
                rt.overruns += missed
                next_t += missed * interval

    async def poll_once(self, rt: DeviceRuntime, group: str) -> None:
        points = rt.groups[group]
        async with self.sem:
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(60.0):  # not wait_for: on 3.11 it can swallow a cancel
                    values = await rt.driver.read(rt.device, group, points)
            except (DeviceError, TimeoutError) as exc:
                err = exc if isinstance(exc, DeviceError) else DeviceError(rt.device.id, "poll timed out")
                self._device_failed(rt, err)
                return
            finally:
                rt.polls += 1
                rt.latency_ms = (time.monotonic() - t0) * 1000
        ts = self.clock.now_ms()
        rt.breaker.success()
        readings: list[Reading] = []
        append = readings.append
        errors = []
        good, bad = Quality.GOOD, Quality.BAD
        for name, flag_names, bits in rt.layouts[group]:
            v = values.get(name)
            if v is None or isinstance(v, DeviceError):
                errors.append(f"{name}: {v.reason if isinstance(v, DeviceError) else 'no value'}")
                append((name, None, ts, bad))
                readings += [(n, None, ts, bad) for n in flag_names]
                continue
            append((name, v, ts, good))
            if bits and type(v) is int:
                readings += [(n, bool(v >> b & 1), ts, good) for b, n in bits]
        self.readings_polled += len(readings)
        if errors:
            rt.errors += 1
            rt.last_error = "; ".join(errors)[:300]
            self.once.failure(f"device {rt.device.id}", rt.last_error)
        else:
            rt.last_good_ms = ts
            self.once.recovered(f"device {rt.device.id}")
        if rt.comm_fail:
            rt.comm_fail = False
            log.info("device %s answers again", rt.device.id)
            self.link.publish(self.topics.device_status(self.gw.id, rt.device.id), self._device_status(rt),
                              retain=True)
            if self.sparkplug is not None:
                self.sparkplug.device_state(rt)
        self._send(rt, readings, ts)

    def _device_failed(self, rt: DeviceRuntime, exc: DeviceError) -> None:
        rt.errors += 1
        rt.last_error = exc.reason
        wait = rt.breaker.failure(self.clock.monotonic())
        self.once.failure(f"device {rt.device.id}", f"{exc.reason} (next try in {wait:.1f} s)")
        if rt.comm_fail:
            return
        rt.comm_fail = True
        ts = self.clock.now_ms()
        readings: list[Reading] = []
        for pts in rt.groups.values():
            for p in pts:
                readings.append((p.name, None, ts, Quality.BAD))
                if isinstance(p, ModbusPoint) and self.settings.bitfield_flags:
                    readings += [(n, None, ts, Quality.BAD) for n in p.bits.values()
                                 if n not in rt.profile.by_name]
        self._send(rt, readings, ts)
        self.link.publish(self.topics.device_status(self.gw.id, rt.device.id),
                          self._device_status(rt, exc.reason), retain=True)
        if self.sparkplug is not None:
            self.sparkplug.device_state(rt)

    def _send(self, rt: DeviceRuntime, readings: list[Reading], ts: int) -> None:
        keep = filter_readings(rt.sent, readings, rt.deadbands, self.clock.now(), self.settings.max_silence_s)
        if not keep:
            return
        if self.sparkplug is not None:
            self.sparkplug.readings(rt, keep)
            if self.gw.northbound == "sparkplug":
                return
        rank_of = rt.rank_of
        cls = _CLASS_OF_RANK[max([rank_of.get(r[0], 2) for r in keep])]  # a flag ranks as an alarm
        # orjson writes an enum as its value
        body = [{"point": n, "value": v, "ts_ms": t, "quality": q} for n, v, t, q in keep]
        gw, dev, bd = self.gw.id, rt.device.id, self.bd_seq

        def build(seq: int) -> bytes:
            return orjson.dumps({"v": 1, "gateway": gw, "device": dev, "seq": seq, "bd_seq": bd,
                                 "historical": False, "readings": body})

        self.link.submit(self.topics.data(gw, dev), build, cls, ts)

    # ------------------------------------------------------------ health and watchdog
    def health(self) -> Health:
        return Health.model_validate(orjson.loads(self.health_payload()))

    def health_payload(self) -> bytes:
        """The Health message, built as plain JSON: the model's fields, order and types without
        its cost per device (a test checks that the model reads it back)."""
        oldest = self.store.oldest_created_ms()
        age = max(0.0, (self.clock.now_ms() - oldest) / 1000) if oldest is not None else 0.0
        devices = {rt.device.id: {
            "state": rt.state(), "poll_latency_ms": rt.latency_ms, "polls": rt.polls, "errors": rt.errors,
            "last_good_ms": rt.last_good_ms, "last_error": rt.last_error} for rt in self.devices.values()}
        return orjson.dumps({
            "v": 1, "gateway": self.gw.id, "ts_ms": self.clock.now_ms(),
            "uptime_s": time.monotonic() - self.started, "devices": devices,
            "buffer": {"depth": self.store.depth, "bytes": self.store.bytes, "oldest_age_s": float(age),
                       "dropped": self.store.dropped},
            "readings_per_s": float(self._rate()),
        })

    def _rate(self) -> float:
        now = time.monotonic()
        last_t, last_n = getattr(self, "_rate_mark", (self.started, 0))
        self._rate_mark = (now, self.readings_polled)
        return (self.readings_polled - last_n) / max(1e-6, now - last_t)

    async def _health_loop(self) -> None:
        while not self.stopping:
            await self.clock.sleep(self.settings.health_interval_s, reads_field=False)
            # QoS 1 in lockstep: a gateway's health moves the engine's event time on
            self.link.publish(self.topics.health(self.gw.id), self.health_payload(),
                              qos=1 if self.clock.lockstep else 0)
            if self.task_crashes:
                log.warning("%d task crashes since start", self.task_crashes)

    async def _watchdog_loop(self) -> None:
        period = self.notifier.watchdog_s / 2 if self.notifier.watchdog_s else 5.0
        while not self.stopping:
            self.notifier.watchdog()
            self.notifier.status(f"{len(self.devices)} devices, {self.store.depth} buffered, "
                                 f"mqtt {'up' if self.link.connected else 'down'}")
            await asyncio.sleep(period)


STOP_DEADLINE_S = 20.0
"""Wall seconds a stop may take before the process ends anyway (exit status 3)."""


def _exit_late() -> None:
    log.error("stop took more than %.0f s: exiting now", STOP_DEADLINE_S)
    logging.shutdown()
    os._exit(3)


def run_agent(agent: Agent) -> Any:
    """Run until SIGTERM/SIGINT; returns when the agent has stopped cleanly."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if not stop.is_set():
                stop.set()
                # a stop must end: a library blocked on a dead peer does not keep the process
                watchdog = threading.Timer(STOP_DEADLINE_S, _exit_late)
                watchdog.daemon = True
                watchdog.start()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await agent.run(stop)

    asyncio.run(main())
