"""Commands: write a point on a signed request of a trusted issuer (the rules engine's operator API).

Every command is answered on the reply topic with ``done`` (written and read back equal),
``refused`` (nothing written; the reason says which check) or ``failed`` (the write or its
verification failed). The checks, in order, each refusing with its reason:

1. not retained: a retained command was published before this agent subscribed;
2. signed by an issuer the gateway trusts (``command_issuers``), over the command and its
   topic's gateway and device (:mod:`aquavolt.signing`);
3. fresh: issued within ``command_max_age_s`` of the gateway's clock, either way;
4. never seen: the id is recorded durably (the queue's SQLite) before anything is written,
   so a replay is refused after a restart too;
5. the device and point exist, the profile marks the point writable and the gateway
   allow-lists it (``device.point`` in ``writable_points``);
6. the value is of the point's type (true/false for a bool point, a number for any other,
   never one for the other), finite, and inside the profile's range;
7. rate: at most one command per point every ``command_min_interval_s``.

A malformed payload is dead-lettered AND answered when its id can be read. An unexpected
error while executing is answered ``failed``: a command never goes unanswered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aquavolt.codec import Value
from aquavolt.errors import CodecError, DeviceError, WireError
from aquavolt.signing import SignatureError, public_key_from_text, verify
from aquavolt.wire import Command, CommandOutcome, CommandReply, DeadLetter, decode, encode

if TYPE_CHECKING:
    from aquavolt.edge.agent import Agent
    from aquavolt.profiles import PointBase

log = logging.getLogger("aquavolt.edge.commands")
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_POINT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
Outcome = tuple[CommandOutcome, str, Value | None]


def same(written: Value, read: Value | None, tolerance: float) -> bool:
    if isinstance(written, bool) or isinstance(read, bool):
        return bool(written) == bool(read) if read is not None else False
    if isinstance(written, int | float) and isinstance(read, int | float):
        return math.isclose(float(written), float(read), rel_tol=1e-6, abs_tol=tolerance)
    return written == read


def value_problem(point: PointBase, value: object) -> str | None:
    """Why ``value`` cannot be written to ``point`` (type, finiteness, range), or None."""
    kind = str(getattr(point, "type", ""))
    if kind == "bool":
        if not isinstance(value, bool):
            return f"{point.name} is a bool point: the value must be true or false, not {value!r}"
        return None
    if kind == "string":
        return f"{point.name} is a string point: commands write numbers and bools only"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{point.name} is a number point: the value must be a number, not {value!r}"
    if not math.isfinite(value):
        return f"the value must be finite, not {value!r}"
    if point.min_value is not None and value < point.min_value:
        return f"{value} is below the minimum {point.min_value}"
    if point.max_value is not None and value > point.max_value:
        return f"{value} is above the maximum {point.max_value}"
    return None


class CommandHandler:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        s = agent.settings
        self.trusted: dict[str, Ed25519PublicKey] = {
            k: public_key_from_text(v) for k, v in s.command_issuers.items()}
        self.max_age_ms = int(s.command_max_age_s * 1000)
        self.min_interval_ms = int(s.command_min_interval_s * 1000)
        self._last_write_ms: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.handled = 0
        self.refused = 0
        if not self.trusted:
            log.warning("gateway %s trusts no command issuer (command_issuers): every command is refused",
                        agent.gw.id)

    def on_message(self, topic: str, payload: bytes, retained: bool = False) -> None:
        task = asyncio.create_task(self.handle(topic, payload, retained))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _reply(self, cmd_id: str, device: str, point: str, outcome: CommandOutcome, reason: str,
               read: Value | None = None) -> None:
        agent = self.agent
        reply = CommandReply(id=cmd_id, gateway=agent.gw.id, device=device, point=point, outcome=outcome,
                             reason=reason, value_read=read if isinstance(read, int | float | bool) else None,
                             ts_ms=agent.clock.now_ms())
        agent.link.publish(agent.topics.reply(agent.gw.id, device), encode(reply))

    def _malformed(self, topic: str, device: str, payload: bytes, why: str) -> None:
        agent = self.agent
        log.error("rejected command on %s: %s", topic, why)
        self.refused += 1
        agent.link.publish(agent.topics.deadletter("edge"), encode(DeadLetter(
            component="edge", topic=topic, reason=why,
            payload=payload.decode("utf-8", "replace"), ts_ms=agent.clock.now_ms())))
        try:  # the standard library reads NaN and Infinity: enough to find the id to answer
            raw = json.loads(payload)
        except ValueError:
            return
        cmd_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(cmd_id, str) and _IDENT.match(cmd_id) and _IDENT.match(device):
            point = raw.get("point")
            name = point if isinstance(point, str) and _POINT.match(point) else "unknown"
            self._reply(cmd_id, device, name, CommandOutcome.REFUSED, f"malformed command: {why}")

    async def handle(self, topic: str, payload: bytes, retained: bool = False) -> None:
        agent = self.agent
        try:
            _kind, _gw, device_id = agent.topics.parse(topic)
        except WireError as exc:
            self._malformed(topic, "unknown", payload, str(exc))
            return
        device_id = device_id or "unknown"
        try:
            cmd = decode(payload, Command)
        except WireError as exc:
            self._malformed(topic, device_id, payload, str(exc))
            return
        try:
            outcome, reason, read = await self.execute(device_id, cmd, retained)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # answered, never a dead task
            log.exception("command %s failed unexpectedly", cmd.id)
            why = f"internal error: {type(exc).__name__}: {exc}"
            outcome, reason, read = CommandOutcome.FAILED, why, None
        self.handled += 1
        if outcome is CommandOutcome.REFUSED:
            self.refused += 1
        log.info("command %s by %r (issuer %r): %s.%s := %r -> %s %s", cmd.id, cmd.operator, cmd.issuer,
                 device_id, cmd.point, cmd.value, outcome.value, reason)
        self._reply(cmd.id, device_id, cmd.point, outcome, reason, read)

    def check(self, device_id: str, cmd: Command, retained: bool) -> str | None:
        """Every check before the write (synchronous: commands are checked in arrival order)."""
        agent = self.agent
        if retained:
            return "retained command: published before the gateway subscribed, never executed"
        try:
            verify(cmd, agent.gw.id, device_id, self.trusted)
        except SignatureError as exc:
            return str(exc)
        now = agent.clock.now_ms()
        if abs(now - cmd.ts_ms) > self.max_age_ms:
            return (f"stale: issued at {cmd.ts_ms}, {(now - cmd.ts_ms) / 1000:.1f} s from the gateway's "
                    f"clock (window {self.max_age_ms / 1000:g} s)")
        forget = now - 2 * self.max_age_ms
        if not agent.store.claim_command(cmd.id, cmd.ts_ms, forget, agent.settings.command_seen_max):
            return f"command id {cmd.id} was already received: a replay is never executed"
        return self.check_target(device_id, cmd.point, cmd.value)

    def check_target(self, device_id: str, point_name: str, value: object) -> str | None:
        """Checks 5 to 7 (allow-list, value, rate): every write passes them, an aquavolt
        command or a Sparkplug DCMD (edge/sparkplug.py)."""
        agent = self.agent
        now = agent.clock.now_ms()
        rt = agent.devices.get(device_id)
        if rt is None:
            return f"no device {device_id!r} on gateway {agent.gw.id}"
        point = rt.profile.by_name.get(point_name)
        if point is None:
            return f"profile {rt.profile.id} has no point {point_name!r}"
        if not point.writable:
            return f"{point_name} is not writable in profile {rt.profile.id}"
        if f"{device_id}.{point_name}" not in agent.gw.writable_points:
            return f"{device_id}.{point_name} is not in the gateway's writable_points"
        problem = value_problem(point, value)
        if problem is not None:
            return problem
        key = (device_id, point_name)
        last = self._last_write_ms.get(key)
        if last is not None and now - last < self.min_interval_ms:
            return (f"rate limit: {device_id}.{point_name} was commanded {(now - last) / 1000:.1f} s ago "
                    f"(at most one command every {self.min_interval_ms / 1000:g} s)")
        self._last_write_ms[key] = now
        return None

    async def execute(self, device_id: str, cmd: Command, retained: bool = False) -> Outcome:
        refusal = self.check(device_id, cmd, retained)
        if refusal is not None:
            return CommandOutcome.REFUSED, refusal, None
        return await self.write_verified(device_id, cmd.point, cmd.value)

    async def write_verified(self, device_id: str, point_name: str, value: Value) -> Outcome:
        """Write a point that passed the checks, then read it back and compare."""
        agent = self.agent
        rt = agent.devices[device_id]
        point = rt.profile.by_name[point_name]
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
