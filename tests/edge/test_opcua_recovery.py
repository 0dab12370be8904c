"""OPC-UA recovery: after the server comes back, data again within 10 s, whatever the outage
length and the devices' breaker settings (a real asyncua server stopped and restarted on the
same port; the agent publishes to the real Mosquitto of the fixtures)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import OPCUA_PROFILES
from helpers import SLOW_BREAKERS, gateway, latest_values, make_agent, recorder, run_until
from opcua_peer import OpcuaPeer

from aquavolt.edge.agent import Agent
from aquavolt.edge.drivers import LinkState
from aquavolt.edge.drivers.opcua import OpcuaDriver
from aquavolt.harness.servers import free_port
from aquavolt.mqtt import Recorder


def _value(rec: Recorder) -> object:
    return latest_values(rec).get("tr1", {}).get("oil_temperature_c", (None, ""))[0]


def test_data_within_10_s_of_the_server_return(mosquitto, topic_prefix, tmp_path: Path, peers) -> None:
    prof = OPCUA_PROFILES["av_rtu_transformer"]
    peer = OpcuaPeer([("SS1.TR1", prof)], free_port(), tmp_path)
    peers.append(peer)
    gw = gateway([{"kind": "opcua", "id": "rtu", "endpoint": peer.endpoint, "timeout_s": 2.0}],
                 [{"id": "tr1", "profile": "av_rtu_transformer", "bus": "rtu", "node_prefix": "SS1.TR1"}],
                 poll_s=0.5)
    back: list[float] = []
    with recorder(mosquitto, topic_prefix, "uarecover") as rec:
        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s", SLOW_BREAKERS)

        async def scenario(a: Agent) -> None:
            drv = a.drivers["rtu"]
            assert isinstance(drv, OpcuaDriver)
            rt = a.devices["tr1"]
            while _value(rec) is None:  # noqa: ASYNC110 - polls another thread's record
                await asyncio.sleep(0.05)
            await asyncio.to_thread(peer.stop)
            # the outage: the device failed (its breaker is open for 15 s at least) and the
            # link has failed to reconnect at least twice (its backoff grew)
            attempts = 0
            while not (rt.comm_fail and rt.breaker.is_open and attempts >= 2):
                changed = drv.state_changed
                await changed.wait()
                attempts += drv.state is LinkState.BACKOFF
            peer.vars.clear()
            await asyncio.to_thread(peer.start)
            back.append(time.monotonic())
            await asyncio.to_thread(peer.set, "SS1.TR1.OilTemperature", 77.5)

        ok = run_until(agent, lambda: _value(rec) == 77.5, 40, during=scenario)
        elapsed = time.monotonic() - back[0]
    assert ok, latest_values(rec)
    assert elapsed < 10.0, f"data {elapsed:.1f} s after the server came back"
    assert agent.devices["tr1"].breaker.failures == 0


def test_reconnect_backoff_is_not_the_device_breaker_cap(mosquitto, topic_prefix, tmp_path: Path) -> None:
    gw = gateway([{"kind": "opcua", "id": "rtu", "endpoint": "opc.tcp://127.0.0.1:9/none", "timeout_s": 2.0}],
                 [{"id": "tr1", "profile": "av_rtu_transformer", "bus": "rtu", "node_prefix": "SS1.TR1"}])
    agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s", SLOW_BREAKERS)
    drv = agent.drivers["rtu"]
    assert isinstance(drv, OpcuaDriver)
    assert drv.reconnect_max_s == SLOW_BREAKERS.opcua_reconnect_max_s <= 5.0
    agent.store.close()
