"""``aquavolt sim run``: serve every device of a field until stopped.

Clock: ``--start``/``--acceleration`` if given, else ``AQUAVOLT_CLOCK``, else the
scenario's start and acceleration, else real time. The model starts at the scenario's start
(or the clock's now), so one seed and one scenario give one set of readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aquavolt.clock import ENV as CLOCK_ENV
from aquavolt.clock import Clock, RealClock, SimClock, clock_from_env, parse_instant
from aquavolt.config import LoadedField
from aquavolt.field import ModbusRtuBus, ModbusTcpBus, OpcuaBus
from aquavolt.scenario import LoadedScenario
from aquavolt.settings import MQTT_ENV, MqttSettings
from aquavolt.simulators.control import MqttFaults, start_http
from aquavolt.simulators.modbus import RtuLine, start_tcp, units_of
from aquavolt.simulators.opcua import OpcuaBusServer
from aquavolt.simulators.sim import Simulation

log = logging.getLogger("aquavolt.sim")


def _ranges(ids: list[int]) -> str:
    out: list[str] = []
    for i in ids:
        if out and out[-1].split("-")[-1] == str(i - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


def say(text: str) -> None:
    print(f"aquavolt sim: {text}", flush=True)


@dataclass
class RunOptions:
    seed: int | None = None  # default: the scenario's, else 1
    state_dir: Path = Path("var/sim")
    http_port: int = 0
    start: str | None = None
    acceleration: float | None = None
    step_s: float = 10.0
    exit_at_end: bool = False
    opcua_period_s: float = 0.5


def choose_clock(opts: RunOptions, scenario: LoadedScenario | None) -> Clock:
    if opts.start is not None:
        return SimClock(parse_instant(opts.start), opts.acceleration or 1.0)
    if os.environ.get(CLOCK_ENV):
        return clock_from_env("sim", "field")
    if scenario is not None:
        return SimClock(scenario.start, opts.acceleration or scenario.scenario.acceleration)
    if opts.acceleration:
        return SimClock(RealClock().now(), opts.acceleration)
    return RealClock()


class Runner:
    def __init__(self, loaded: LoadedField, opts: RunOptions, scenario: LoadedScenario | None = None) -> None:
        self.opts = opts
        self.scenario = scenario
        self.clock = choose_clock(opts, scenario)
        seed = opts.seed if opts.seed is not None else scenario.scenario.seed if scenario is not None else 1
        if scenario is not None:
            start = scenario.start
        else:
            start = math.floor(self.clock.now() / opts.step_s) * opts.step_s
        self.sim = Simulation(loaded, seed, start, self.clock, opts.step_s)
        if scenario is not None:
            for spec in scenario.scenario.faults:
                self.sim.faults.add(spec, scenario.start)
        self.stopping = asyncio.Event()
        self.closers: list[Any] = []
        self.opcua: list[OpcuaBusServer] = []

    async def start(self) -> None:
        sim, f = self.sim, self.sim.loaded.field
        for gw in f.gateways:
            for bus in gw.buses:
                if isinstance(bus, ModbusTcpBus):
                    units = units_of(sim, bus.id, gw.id)
                    srv = await start_tcp(sim, bus, units)
                    self.closers.append(srv.shutdown)
                    say(f"modbus_tcp {gw.id}/{bus.id} on {bus.host}:{bus.port} "
                        f"units {_ranges(sorted(units))}")
                elif isinstance(bus, ModbusRtuBus):
                    line = RtuLine(sim, bus, units_of(sim, bus.id, gw.id))
                    await line.start()
                    self.closers.append(line.stop)
                    say(f"modbus_rtu {gw.id}/{bus.id} on {bus.serial_port} -> {line.slave_name}")
                elif isinstance(bus, OpcuaBus):
                    ops = OpcuaBusServer(sim, bus, gw.id, self.opts.state_dir)
                    await ops.start()
                    self.opcua.append(ops)
                    self.closers.append(ops.stop)
                    say(f"opcua {gw.id}/{bus.id} on {bus.endpoint} namespace {bus.namespace_uri}")
        if self.opts.http_port:
            runner = await start_http(sim, self.opts.http_port)
            self.closers.append(runner.cleanup)
            say(f"faults on http://127.0.0.1:{self.opts.http_port}/faults")
        if os.environ.get(MQTT_ENV):
            mq = MqttFaults(sim, MqttSettings.from_env(), asyncio.get_running_loop())
            mq.start()
            self.closers.append(mq.stop)
            say(f"faults on MQTT topic {mq.topic}")
        spec = getattr(self.clock, "spec", lambda: "?")()
        say(f"clock {spec}; seed {sim.seed}; step {self.opts.step_s:g} s; ready")

    async def _on_grant(self) -> None:
        """Lockstep: the field at the instant granted, before the gateways read it."""
        self.sim.sync()
        for ops in self.opcua:
            await ops.update()

    async def run(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stopping.set)
        ready = getattr(self.clock, "ready", None)
        if ready is not None:  # lockstep: the model moves at each grant, nothing else to do
            self.clock.on_grant = self._on_grant  # type: ignore[attr-defined]
            ready()
            try:
                await self.stopping.wait()
            finally:
                await self.close()
            return
        last_ua = 0.0
        end = self.scenario.end if self.scenario is not None else math.inf
        try:
            while not self.stopping.is_set():
                t = self.sim.sync()
                if self.opcua and loop.time() - last_ua >= self.opts.opcua_period_s:
                    last_ua = loop.time()
                    for ops in self.opcua:
                        await ops.update()
                if self.opts.exit_at_end and t >= end:
                    say("scenario finished")
                    break
                wait = min(0.05, max(self.clock.to_wall(self.opts.step_s), 0.005))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), wait)
        finally:
            await self.close()

    async def close(self) -> None:
        for close in reversed(self.closers):
            res = close()
            if asyncio.iscoroutine(res):
                await res
        self.closers.clear()
