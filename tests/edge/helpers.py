"""Helpers of the edge tests: gateways built from the shipped profiles, an agent run in the
test's own event loop until a condition holds, and the batches a subscriber received."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from conftest import PROFILES

from aquavolt.clock import RealClock
from aquavolt.edge.agent import Agent
from aquavolt.edge.config import EdgeSettings, GatewayConfig
from aquavolt.field import Gateway
from aquavolt.harness.servers import Mosquitto
from aquavolt.mqtt import Message, Recorder
from aquavolt.settings import MqttSettings
from aquavolt.wire import Batch, Topics, decode_batch

FAST = EdgeSettings(health_interval_s=0.5, stagger_s=0.05, breaker_base_s=0.2, breaker_max_s=1.0,
                    max_silence_s=3600)
# A device breaker that, once open, stays open far longer than the 10 s the OPC-UA recovery
# tests allow (15 to 30 s after the first failure), and the long breaker cap that was once
# also the link's reconnect cap: recovery must not depend on either.
SLOW_BREAKERS = EdgeSettings(health_interval_s=0.5, stagger_s=0.05, breaker_base_s=30.0, breaker_max_s=60.0,
                             max_silence_s=3600)


def gateway(buses: list[dict[str, Any]], devices: list[dict[str, Any]], gw_id: str = "gw-test",
            poll_s: float = 0.2, writable: list[str] | None = None) -> Gateway:
    return Gateway.model_validate({
        "id": gw_id, "site": "site-1", "buses": buses, "devices": devices,
        "poll_intervals_s": {"default": poll_s, "slow": poll_s},
        "writable_points": writable or [],
    })


def make_agent(gw: Gateway, broker: Mosquitto, prefix: str, state_dir: Path,
               settings: EdgeSettings = FAST) -> Agent:
    mqtt = broker.settings().model_copy(update={"prefix": prefix})
    return Agent(GatewayConfig(Path("test.yaml"), gw, PROFILES), settings, mqtt, state_dir, RealClock())


def run_until(agent: Agent, done: Callable[[], bool], timeout_s: float = 20.0,
              during: Callable[[Agent], Any] | None = None) -> bool:
    """Run the agent in this thread's loop until ``done()`` or the timeout; then stop it."""

    async def main() -> bool:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        deadline = time.monotonic() + timeout_s
        ok = False
        try:
            if during is not None:
                await during(agent)
            while time.monotonic() < deadline:
                if task.done():
                    task.result()
                if done():
                    ok = True
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
        return ok

    return asyncio.run(main())


def batches(rec: Recorder) -> list[Batch]:
    return [decode_batch(m.payload) for m in rec.snapshot() if m.topic.endswith("/data")]


def latest_values(rec: Recorder) -> dict[str, dict[str, tuple[Any, str]]]:
    """device -> point -> (value, quality) of the last reading received."""
    out: dict[str, dict[str, tuple[Any, str]]] = {}
    for b in batches(rec):
        for r in b.readings:
            out.setdefault(b.device, {})[r.point] = (r.value, r.quality.value)
    return out


def recorder(broker: Mosquitto, prefix: str, name: str) -> Recorder:
    t = Topics(prefix)
    return Recorder(broker.settings(), [f"{prefix}/gw/#"], client_id=f"{name}-{t.prefix.split('/')[0]}")


def messages(rec: Recorder, suffix: str) -> list[Message]:
    return [m for m in rec.snapshot() if m.topic.endswith(suffix)]


def json_of(m: Message) -> Any:
    return orjson.loads(m.payload)


def write_gateway_file(gw: Gateway, path: Path) -> Path:
    path.write_text(yaml.safe_dump(gw.model_dump(mode="json", exclude_none=True), sort_keys=False))
    return path


class DurableSubscriber(Recorder):
    """A Recorder with a persistent session (clean_start false, session expiry), so the
    broker keeps its QoS 1 messages while it is disconnected or the broker restarts."""

    def __init__(self, settings: MqttSettings, filters: list[str], client_id: str) -> None:
        super().__init__(settings, filters, client_id, session_expiry_s=600)


def durable(broker: Mosquitto, prefix: str, name: str) -> DurableSubscriber:
    return DurableSubscriber(broker.settings(), [f"{prefix}/gw/+/dev/+/data"], client_id=f"{name}-{prefix[:11]}")


def seq_report(bs: list[Batch]) -> tuple[list[int], list[int]]:
    """(sorted distinct seqs, missing seqs between the first and the last)."""
    seqs = sorted({b.seq for b in bs})
    missing = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs)) if seqs else []
    return seqs, missing
