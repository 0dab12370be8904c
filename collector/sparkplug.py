"""Sparkplug B edge nodes of other vendors, stored as aquavolt's own gateways are.

With a field file (``--field``) that has ``sparkplug`` gateways, the collector also subscribes
to ``spBv1.0/{group}/#`` of their groups, on the same persistent session and with the same
manual acknowledgements as the rest: a Sparkplug message is acknowledged only once the lines
made from it were written (or dead-lettered with the reason), so at-least-once holds as for
aquavolt's own messages.

:class:`aquavolt.sparkplug_host.SparkplugHost` reads each message (births give the names,
aliases and datatypes; sequence checks; NDEATH with its bdSeq, DDEATH) into aquavolt wire
messages, and those go through the collector's own :class:`Router`: the same checks, the same
lines, the same InfluxDB schema (``telemetry``, ``gateway_status``, ``device_status``) as
an aquavolt gateway's messages. A sequence gap, an unknown alias or data before a birth
publishes ``NCMD`` ``Node Control/Rebirth`` (counted); whatever cannot be stored (unknown node,
device or metric, a payload that is not Sparkplug B) is dead-lettered as ``sparkplug`` with
the reason; the rest of the message is kept.

The collector is the primary host application (``docs/sparkplug.md``, "Centre"): it publishes
``spBv1.0/STATE/{host_id}`` retained, ``{"online": true, "timestamp": T}`` once connected, and
its MQTT will says ``{"online": false, "timestamp": T}`` with the same T.

The sessions (each node's bdSeq and what its births declared) are kept in the state folder
(``sparkplug.json``, written at each birth and death): a collector that restarts reads what the
broker delivers again with the aliases of its birth, instead of dead-lettering it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from aquavolt import sparkplug
from aquavolt.collector.convert import Router, TooFarAhead
from aquavolt.config import LoadedField
from aquavolt.errors import WireError
from aquavolt.logs import OnceLogger
from aquavolt.sparkplug_host import SparkplugHost
from aquavolt.wire import Topics, encode

DEADLETTER_KIND = "sparkplug"
log = logging.getLogger("aquavolt.collector.sparkplug")


@dataclass
class Intake:
    """What one Sparkplug message gives the collector."""

    lines: list[str] = field(default_factory=list)
    dead: list[tuple[str, str]] = field(default_factory=list)  # (dead letter kind, reason)
    commands: list[tuple[str, bytes]] = field(default_factory=list)  # NCMD to publish
    readings: int = 0


class SparkplugIntake:
    """The collector's Sparkplug B side: subscriptions, STATE, and messages to lines."""

    def __init__(self, loaded: LoadedField, topics: Topics, router: Router, host_id: str,
                 state_path: Path | None = None) -> None:
        self.host = SparkplugHost(loaded.field, topics, profiles=loaded.profiles)
        self.state_path = state_path
        self._once = OnceLogger(log)
        if state_path is not None and state_path.exists():
            try:
                data = orjson.loads(state_path.read_bytes())
                self.host.restore(data if isinstance(data, dict) else {})
            except (OSError, orjson.JSONDecodeError) as exc:
                log.warning("Sparkplug sessions not restored from %s (%s): rebirths will be asked",
                            state_path, exc)
        self.router = router
        self.host_id = host_id
        self.filters = self.host.filters()
        self.state_topic = sparkplug.state_topic(host_id)
        self.since_ms = int(time.time() * 1000)  # the timestamp of our STATE and of its will
        self.gaps = 0
        self.rebirths = 0

    def state(self, online: bool) -> bytes:
        return sparkplug.encode_state(sparkplug.HostState(online=online, timestamp=self.since_ms))

    def take(self, topic: str, payload: bytes, now_ms: int) -> Intake:
        """Lines, dead letters and commands of one ``spBv1.0/...`` message; never raises."""
        got = Intake()
        out = self.host.handle(topic, payload, now_ms)
        if out.sessions_changed:
            self._save()
        self.gaps += out.gaps
        self.rebirths += len(out.commands)
        got.commands = out.commands
        got.dead = [(DEADLETTER_KIND, reason) for reason in out.dead]
        for wire_topic, msg in out.messages:
            try:
                converted = self.router.convert(wire_topic, encode(msg))
            except WireError as exc:
                got.dead.append(("future" if isinstance(exc, TooFarAhead) else "malformed", str(exc)))
                continue
            got.lines.extend(converted.lines)
            for why, reason, _reading in converted.refused:
                got.dead.append((why, reason))
            if converted.kind.value == "data":
                got.readings += len(converted.lines)
        return got

    def _save(self) -> None:
        """The sessions, kept in the state folder: after a restart the messages the broker
        delivers again are read with the aliases of their birth (births are rare)."""
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(orjson.dumps(self.host.snapshot()))
            tmp.replace(self.state_path)
            self._once.recovered("sessions")
        except OSError as exc:
            self._once.failure("sessions", f"cannot save {self.state_path}: {exc}")
