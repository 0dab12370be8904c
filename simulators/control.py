"""Live fault injection: an HTTP endpoint (aiohttp, 127.0.0.1) and an MQTT topic.

HTTP::

    GET    /health            {"t": simulated now, "tick": n, "iso": "..."}
    GET    /faults            {"now": t, "faults": [fault, ...]}
    POST   /faults            a FaultSpec object (or a list): 201 with the created fault(s)
    DELETE /faults/{id}       ends the fault now: 200 with the fault
    GET    /devices/{id}      the device's current values by point name

MQTT: ``{prefix}/sim/fault`` carries a FaultSpec object to add, or ``{"end": "<id>"}``.
Offsets (``at``, ``duration``) count from now.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from aquavolt.faults import FaultError, FaultSpec
from aquavolt.mqtt import Inbound, Transport
from aquavolt.progress import ProgressReporter
from aquavolt.settings import MqttSettings
from aquavolt.simulators.sim import Simulation
from aquavolt.wire import Topics

log = logging.getLogger("aquavolt.sim.control")
_SPECS = TypeAdapter(FaultSpec | list[FaultSpec])


def apply_message(sim: Simulation, data: Any) -> list[dict[str, Any]]:
    """Add the fault(s) of a decoded JSON message, or end one (``{"end": id}``)."""
    if isinstance(data, dict) and set(data) == {"end"}:
        return [sim.faults.end(str(data["end"]), sim.now()).to_json(sim.now())]
    parsed = _SPECS.validate_python(data)
    specs = parsed if isinstance(parsed, list) else [parsed]
    return [sim.add_fault(s) for s in specs]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(sim: Simulation) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        t = sim.sync()
        return web.json_response({"t": t, "tick": sim.model.tick,
                                  "iso": datetime.fromtimestamp(t, UTC).isoformat()})

    async def list_faults(_: web.Request) -> web.Response:
        now = sim.now()
        return web.json_response({"now": now, "faults": [f.to_json(now) for f in sim.faults.faults.values()]})

    async def post_fault(request: web.Request) -> web.Response:
        try:
            data = await request.json()
            out = apply_message(sim, data)
        except json.JSONDecodeError as exc:
            return _error(400, f"not JSON: {exc}")
        except ValidationError as exc:
            return _error(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        except FaultError as exc:
            return _error(400, str(exc))
        log.info("fault(s) added over HTTP: %s", [f["id"] for f in out])
        return web.json_response(out if isinstance(data, list) else out[0], status=201)

    async def delete_fault(request: web.Request) -> web.Response:
        try:
            fault = sim.faults.end(request.match_info["id"], sim.now())
        except FaultError as exc:
            return _error(404, str(exc))
        return web.json_response(fault.to_json(sim.now()))

    async def device(request: web.Request) -> web.Response:
        dev = request.match_info["id"]
        if dev not in sim.loaded.field.devices:
            return _error(404, f"no device {dev!r}")
        sim.sync()
        return web.json_response(sim.values(dev))

    app = web.Application()
    app.add_routes([web.get("/health", health), web.get("/faults", list_faults),
                    web.post("/faults", post_fault), web.delete("/faults/{id}", delete_fault),
                    web.get("/devices/{id}", device)])
    return app


async def start_http(sim: Simulation, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    runner = web.AppRunner(make_app(sim), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


class MqttFaults:
    """Subscribes to ``{prefix}/sim/fault``; messages are applied on the event loop."""

    def __init__(self, sim: Simulation, settings: MqttSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.sim = sim
        self.topic = f"{settings.prefix}/sim/fault"
        self.loop = loop
        self.settings = settings
        self.transport = Transport(settings, f"aquavolt-sim-{uuid.uuid4().hex[:8]}",
                                   subscriptions=[(self.topic, 1)], max_inbox=1000, name="sim.mqtt")
        self.transport.on_message = self._apply
        self.transport.on_subscribed.append(self._subscribed)
        self.subscribed = asyncio.Event()
        self.progress = ProgressReporter("sim", Topics(settings.prefix),
                                         lambda t, p: self.transport.publish(t, p, qos=1), sim.clock.now_ms)

    def _subscribed(self) -> None:
        self.subscribed.set()
        # started once every server serves: subscribed means ready (said again on a reconnect);
        # on the CONNACK alone, a fault published at once could reach the broker before the
        # subscription and be lost
        self.progress.ready()

    def _apply(self, m: Inbound) -> None:
        try:
            out = apply_message(self.sim, json.loads(m.payload))
        except (ValueError, ValidationError, FaultError) as exc:
            log.error("rejected fault message on %s: %s", self.topic, exc)
            return
        log.info("fault(s) from MQTT: %s", [f["id"] for f in out])

    def start(self) -> None:
        self.transport.start(self.loop)

    def stop(self) -> None:
        self.transport.stop()
