"""Commands: an allowed write happens and is verified by reading back; a forbidden, not
writable, unknown or out-of-range one is refused (nothing written) and answered."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import MODBUS_PROFILES, ModbusTcpPeer, Unit
from helpers import gateway, json_of, make_agent, messages, run_until

from aquavolt.mqtt import Recorder
from aquavolt.profiles import RegisterType
from aquavolt.wire import Command, Topics, encode
from edge.agent import Agent

PUMP = MODBUS_PROFILES["av_pump1"]


def test_commands_allowed_refused_and_answered(mosquitto, topic_prefix, tmp_path: Path, peers) -> None:
    unit = Unit().fill(PUMP)
    peer = ModbusTcpPeer({1: unit})
    peers.append(peer)
    gw = gateway([{"kind": "modbus_tcp", "id": "plc", "port": peer.port}],
                 [{"id": "pump-1", "profile": "av_pump1", "bus": "plc", "unit_id": 1}],
                 writable=["pump-1.speed_setpoint_pct"])
    t = Topics(topic_prefix)
    cmds = [
        Command(id="c-ok", point="speed_setpoint_pct", value=75, ts_ms=1, operator="amina"),
        Command(id="c-range", point="speed_setpoint_pct", value=120, ts_ms=1),
        Command(id="c-not-allowed", point="run_command", value=True, ts_ms=1),
        Command(id="c-read-only", point="flow_lps", value=3.0, ts_ms=1),
        Command(id="c-unknown", point="no_such_point", value=1, ts_ms=1),
    ]
    with Recorder(mosquitto.settings(), [f"{topic_prefix}/gw/#", f"{topic_prefix}/deadletter/#"],
                  client_id=f"cmd-{topic_prefix[:11]}") as rec:
        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s")

        async def send(a: Agent) -> None:
            while not a.link.connected:  # noqa: ASYNC110 - the paho thread sets it
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # the agent's subscription is in place
            for c in cmds:
                rec.client.publish(t.command("gw-test", "pump-1"), encode(c), qos=1)
            rec.client.publish(t.command("gw-test", "pump-1"), b'{"v": 1, "id": "x"}', qos=1)

        assert run_until(agent, lambda: len(messages(rec, "/reply")) >= len(cmds), 15, during=send)
        replies = {r["id"]: r for r in map(json_of, messages(rec, "/reply"))}
        dead = messages(rec, "deadletter/edge")
    ok = replies["c-ok"]
    assert ok["outcome"] == "done" and ok["value_read"] == 75.0 and ok["device"] == "pump-1"
    # written in the device: 750 in the register (scale 0.1), holding 20 counted from 1
    assert unit.memory[RegisterType.HOLDING][19] == 750
    assert replies["c-range"]["outcome"] == "refused" and "maximum 100" in replies["c-range"]["reason"]
    assert replies["c-not-allowed"]["outcome"] == "refused"
    assert "writable_points" in replies["c-not-allowed"]["reason"]
    assert replies["c-read-only"]["outcome"] == "refused" and "not writable" in replies["c-read-only"]["reason"]
    assert replies["c-unknown"]["outcome"] == "refused"
    assert unit.memory[RegisterType.COIL][0] == bool(1)  # sample value (True), not rewritten
    assert len(dead) == 1  # the malformed command is rejected, not executed
