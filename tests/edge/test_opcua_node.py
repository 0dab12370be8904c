"""OPC-UA recovery against an independent stack: node-opcua's server (npm, a Node.js process)
serving a transformer and a feeder bay from their profiles is stopped (SIGTERM to its PID)
for 60 s and a new one listens again on the same port with new values; the edge agent, with breakers
that alone would keep the devices alone far longer, publishes the new values to the real
Mosquitto of the fixtures within 10 s of the server's ready line.

Needs Node.js and ``npm ci --prefix tests/opcua/node`` (``./run setup``): fails without.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from conftest import OPCUA_PROFILES, sample_raw
from helpers import SLOW_BREAKERS, gateway, latest_values, make_agent, recorder, run_until
from opcua_node_peer import NodeOpcuaPeer

from aquavolt.edge.agent import Agent
from aquavolt.edge.drivers import LinkState
from aquavolt.edge.drivers.opcua import OpcuaDriver
from aquavolt.harness.servers import free_port
from aquavolt.mqtt import Recorder

OUTAGE_S = 60.0  # the figure: the server is away this long (a deliberate duration)
DEVICES = [("tr1", "SS1.TR1", "av_rtu_transformer"), ("f1", "SS1.F1", "av_rtu_feeder")]


def _served(salt: int) -> dict[str, dict[str, tuple[Any, str]]]:
    """device -> point -> (value, quality) the agent publishes for what the server serves."""
    return {dev: {p.name: (sample_raw(p, salt), "good") for p in OPCUA_PROFILES[prof].points}
            for dev, _, prof in DEVICES}


def _shows(rec: Recorder, salt: int) -> bool:
    latest = latest_values(rec)
    return all(latest.get(dev) == points for dev, points in _served(salt).items())


def test_node_opcua_down_60_s_data_within_10_s_of_its_return(mosquitto, topic_prefix, tmp_path: Path) -> None:
    peer = NodeOpcuaPeer([(prefix, OPCUA_PROFILES[prof]) for _, prefix, prof in DEVICES], free_port(),
                         tmp_path / "node", salt=0)
    try:
        gw = gateway([{"kind": "opcua", "id": "rtu", "endpoint": peer.endpoint, "timeout_s": 2.0}],
                     [{"id": dev, "profile": prof, "bus": "rtu", "node_prefix": prefix}
                      for dev, prefix, prof in DEVICES],
                     poll_s=10.0)  # polls alone would bring data back up to 10 s late
        marks: dict[str, float] = {}
        with recorder(mosquitto, topic_prefix, "uanode") as rec:
            agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s", SLOW_BREAKERS)

            def fresh() -> bool:
                if "back" in marks and _shows(rec, 1):
                    marks.setdefault("data", time.monotonic())
                    return True
                return False

            async def scenario(a: Agent) -> None:
                drv = a.drivers["rtu"]
                assert isinstance(drv, OpcuaDriver)
                deadline = time.monotonic() + 20
                # every point of both devices, as node-opcua serves it (types, node ids, namespace)
                while not _shows(rec, 0):
                    assert time.monotonic() < deadline, latest_values(rec)
                    await asyncio.sleep(0.05)
                assert await asyncio.to_thread(peer.stop) == 0  # exits 0 on SIGTERM
                down = time.monotonic()
                # the outage as the agent sees it: both devices lost, their breakers open (15 s
                # at least), and the link has failed to reconnect at least twice
                rts = [a.devices[dev] for dev, _, _ in DEVICES]
                attempts = 0
                while not (all(rt.comm_fail and rt.breaker.is_open for rt in rts) and attempts >= 2):
                    changed = drv.state_changed
                    await asyncio.wait_for(changed.wait(), OUTAGE_S)
                    attempts += drv.state is LinkState.BACKOFF
                # the new server (new values: only it has them) loads while the old one is away
                await asyncio.to_thread(peer.prepare, 1)
                await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
                await asyncio.to_thread(peer.listen)
                marks["back"] = peer.ready_at
                marks["outage"] = peer.ready_at - down

            ok = run_until(agent, fresh, OUTAGE_S + 60, during=scenario)
    finally:
        peer.close()
    assert marks["outage"] >= OUTAGE_S
    assert ok, latest_values(rec)
    elapsed = marks["data"] - marks["back"]
    print(f"node-opcua down {marks['outage']:.0f} s: data {elapsed:.1f} s after its return")
    assert elapsed < 10.0, f"data {elapsed:.1f} s after node-opcua came back"
    assert all(agent.devices[dev].breaker.failures == 0 for dev, _, _ in DEVICES)
