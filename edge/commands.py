"""Commands: write a point on an operator's (or the rules engine's) request.

Only points that the profile marks writable AND the gateway allow-lists (``device.point`` in
``writable_points``) are written; the value must lie in the profile's range. The agent
writes, reads the point back to verify, and answers on the reply topic with ``done``,
``refused`` (nothing written) or ``failed``. Every command is logged with its outcome.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

from aquavolt.codec import Value
from aquavolt.errors import CodecError, DeviceError, WireError
from aquavolt.wire import Command, CommandOutcome, CommandReply, DeadLetter, decode, encode

if TYPE_CHECKING:
    from edge.agent import Agent

log = logging.getLogger("aquavolt.edge.commands")


def same(written: Value, read: Value | None, tolerance: float) -> bool:
    if isinstance(written, bool) or isinstance(read, bool):
        return bool(written) == bool(read) if read is not None else False
    if isinstance(written, int | float) and isinstance(read, int | float):
        return math.isclose(float(written), float(read), rel_tol=1e-6, abs_tol=tolerance)
    return written == read


class CommandHandler:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._tasks: set[asyncio.Task[None]] = set()
        self.handled = 0

    def on_message(self, topic: str, payload: bytes) -> None:
        task = asyncio.create_task(self.handle(topic, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def handle(self, topic: str, payload: bytes) -> None:
        agent = self.agent
        try:
            _kind, _gw, device_id = agent.topics.parse(topic)
            cmd = decode(payload, Command)
        except WireError as exc:
            log.error("rejected command on %s: %s", topic, exc)
            agent.link.publish(agent.topics.deadletter("edge"), encode(DeadLetter(
                component="edge", topic=topic, reason=str(exc),
                payload=payload.decode("utf-8", "replace"), ts_ms=agent.clock.now_ms())))
            return
        outcome, reason, read = await self.execute(device_id or "", cmd)
        self.handled += 1
        log.info("command %s by %r: %s.%s := %r -> %s %s", cmd.id, cmd.operator, device_id, cmd.point,
                 cmd.value, outcome.value, reason)
        reply = CommandReply(id=cmd.id, gateway=agent.gw.id, device=device_id or "unknown", point=cmd.point,
                             outcome=outcome, reason=reason,
                             value_read=read if isinstance(read, int | float | bool) else None,
                             ts_ms=agent.clock.now_ms())
        agent.link.publish(agent.topics.reply(agent.gw.id, device_id or "unknown"), encode(reply))

    async def execute(self, device_id: str, cmd: Command) -> tuple[CommandOutcome, str, Value | None]:
        agent = self.agent
        rt = agent.devices.get(device_id)
        if rt is None:
            return CommandOutcome.REFUSED, f"no device {device_id!r} on gateway {agent.gw.id}", None
        point = rt.profile.by_name.get(cmd.point)
        if point is None:
            return CommandOutcome.REFUSED, f"profile {rt.profile.id} has no point {cmd.point!r}", None
        if not point.writable:
            return CommandOutcome.REFUSED, f"{cmd.point} is not writable in profile {rt.profile.id}", None
        if f"{device_id}.{cmd.point}" not in agent.gw.writable_points:
            why = f"{device_id}.{cmd.point} is not in the gateway's writable_points"
            return CommandOutcome.REFUSED, why, None
        value: Value = cmd.value
        if not isinstance(value, bool):
            if point.min_value is not None and value < point.min_value:
                return CommandOutcome.REFUSED, f"{value} is below the minimum {point.min_value}", None
            if point.max_value is not None and value > point.max_value:
                return CommandOutcome.REFUSED, f"{value} is above the maximum {point.max_value}", None
        driver = rt.driver
        try:
            async with agent.sem:
                async with asyncio.timeout(10.0):
                    await driver.write(rt.device, point, value)
                async with asyncio.timeout(10.0):
                    read = await driver.read_point(rt.device, point)
        except CodecError as exc:
            return CommandOutcome.REFUSED, f"value cannot be encoded: {exc}", None
        except (DeviceError, TimeoutError) as exc:
            return CommandOutcome.FAILED, f"write failed: {exc}", None
        if isinstance(read, DeviceError):
            return CommandOutcome.FAILED, f"read-back failed: {read.reason}", None
        tolerance = abs(getattr(point, "scale", 0.0)) / 2
        if not same(value, read, tolerance):
            return CommandOutcome.FAILED, f"read back {read!r}, not {value!r}", read
        return CommandOutcome.DONE, "written and verified", read
