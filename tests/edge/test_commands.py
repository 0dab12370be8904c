"""Commands through a real Mosquitto to a real agent and a simulated Modbus pump.

An allowed, signed, fresh command is written and verified by reading back; every other one
is refused (nothing written) and answered on the reply topic with its reason: retained,
replayed (also after a restart), unsigned, forged, from an untrusted issuer, stale, of the
wrong type (``true`` for a number), not finite, out of range, not allowed, too frequent."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

from conftest import MODBUS_PROFILES, ModbusTcpPeer, Unit
from helpers import FAST, gateway, json_of, make_agent, messages, run_until

from aquavolt.edge.agent import Agent
from aquavolt.mqtt import Recorder
from aquavolt.profiles import RegisterType
from aquavolt.signing import generate_key, public_key_text, sign
from aquavolt.wire import Command, Topics, encode

PUMP = MODBUS_PROFILES["av_pump1"]
KEY = generate_key()
OTHER_KEY = generate_key()
ISSUER = "control-test"
SETTINGS = FAST.model_copy(update={"command_issuers": {ISSUER: public_key_text(KEY)},
                                   "command_max_age_s": 30.0, "command_min_interval_s": 60.0})
SETPOINT = 19  # holding 20 counted from 1


def _signed(cmd_id: str, point: str, value: Any, age_s: float = 0.0, key: Any = KEY,
            device: str = "pump-1") -> Command:
    cmd = Command(id=cmd_id, point=point, value=value, ts_ms=int((time.time() - age_s) * 1000),
                  operator="amina", issuer=ISSUER)
    return sign(cmd, "gw-test", device, key)


def _signed_unchecked(cmd_id: str, value: float) -> bytes:
    """A signed command whose value the wire model may refuse (NaN, Infinity): built unvalidated;
    its JSON says NaN/Infinity where orjson writes null."""
    cmd = Command.model_construct(v=1, id=cmd_id, point="speed_setpoint_pct", value=value,
                                  ts_ms=int(time.time() * 1000), operator="amina", reason="", issuer=ISSUER,
                                  sig="")
    text = "NaN" if math.isnan(value) else "Infinity"
    return encode(sign(cmd, "gw-test", "pump-1", KEY)).replace(b'"value":null', f'"value":{text}'.encode())


def _setup(peers: list[Any]) -> tuple[Unit, Any]:
    unit = Unit().fill(PUMP)
    peer = ModbusTcpPeer({1: unit, 2: Unit().fill(PUMP)})
    peers.append(peer)
    gw = gateway([{"kind": "modbus_tcp", "id": "plc", "port": peer.port}],
                 [{"id": "pump-1", "profile": "av_pump1", "bus": "plc", "unit_id": 1},
                  {"id": "pump-2", "profile": "av_pump1", "bus": "plc", "unit_id": 2}],
                 writable=["pump-1.speed_setpoint_pct", "pump-1.run_command"])
    return unit, gw


async def _subscribed(rec: Recorder, t: Topics) -> None:
    """Probe (an unsigned command, refused) until the agent answers: its subscription is live."""
    tag = f"probe-{time.monotonic_ns()}-"
    for i in range(200):
        rec.client.publish(t.command("gw-test", "pump-1"), encode(Command(id=f"{tag}{i}", point="x",
                                                                           value=0, ts_ms=0)), qos=1)
        for _ in range(4):
            if any(json_of(m)["id"].startswith(tag) for m in messages(rec, "/reply")):
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the agent never answered")


def _replies(rec: Recorder) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in map(json_of, messages(rec, "/reply")):
        out.setdefault(r["id"], []).append(r)
    return out


def test_commands_checked_refused_and_answered(mosquitto, topic_prefix, tmp_path: Path, peers) -> None:
    unit, gw = _setup(peers)
    t = Topics(topic_prefix)
    ok = _signed("c-ok", "speed_setpoint_pct", 75)
    forged = encode(_signed("c-forged", "speed_setpoint_pct", 40)).replace(b'"value":40', b'"value":95')
    nan, inf = _signed_unchecked("c-nan", math.nan), _signed_unchecked("c-inf", math.inf)
    payloads: list[bytes] = [
        encode(ok),
        encode(ok),  # the same id again: a replay
        encode(_signed("c-fast", "speed_setpoint_pct", 80)),  # valid, but 60 s have not passed
        encode(_signed("c-bool", "speed_setpoint_pct", True)),  # true on a number (min 30): not 0.1 %
        nan, inf,
        encode(_signed("c-range", "speed_setpoint_pct", 120)),
        encode(_signed("c-low", "speed_setpoint_pct", 10)),
        encode(_signed("c-coil-number", "run_command", 1)),
        encode(_signed("c-read-only", "flow_lps", 3.0)),
        encode(_signed("c-unknown", "no_such_point", 1)),
        encode(ok.model_copy(update={"id": "c-unsigned", "sig": ""})),
        forged,
        encode(_signed("c-untrusted", "speed_setpoint_pct", 50, key=OTHER_KEY)),
        encode(_signed("c-other-device", "speed_setpoint_pct", 50, device="pump-2")),  # signed for another
        encode(_signed("c-stale", "speed_setpoint_pct", 50, age_s=120)),
        encode(_signed("c-future", "speed_setpoint_pct", 50, age_s=-120)),
        b'{"v": 1, "id": "c-malformed"}',
    ]
    not_allowed = encode(_signed("c-not-allowed", "speed_setpoint_pct", 50, device="pump-2"))
    ids = {"c-ok", "c-fast", "c-bool", "c-nan", "c-inf", "c-range", "c-low", "c-coil-number", "c-not-allowed",
           "c-read-only", "c-unknown", "c-unsigned", "c-forged", "c-untrusted", "c-other-device", "c-stale",
           "c-future", "c-malformed"}
    with Recorder(mosquitto.settings(), [f"{topic_prefix}/gw/#", f"{topic_prefix}/deadletter/#"],
                  client_id=f"cmd-{topic_prefix[:11]}") as rec:
        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s", SETTINGS)

        async def send(_a: Agent) -> None:
            await _subscribed(rec, t)
            for p in payloads:
                rec.client.publish(t.command("gw-test", "pump-1"), p, qos=1)
            rec.client.publish(t.command("gw-test", "pump-2"), not_allowed, qos=1)

        def done() -> bool:
            r = _replies(rec)
            return ids <= set(r) and len(r["c-ok"]) >= 2

        assert run_until(agent, done, 20, during=send)
        replies = _replies(rec)
        dead = messages(rec, "deadletter/edge")

    def refused(cmd_id: str, why: str) -> None:
        r = replies[cmd_id][-1]
        assert r["outcome"] == "refused" and why in r["reason"], (cmd_id, r)

    # the replay is answered at once, the first only after its write and read-back
    first, replay = sorted(replies["c-ok"], key=lambda r: r["outcome"] != "done")
    assert first["outcome"] == "done" and first["value_read"] == 75.0 and first["device"] == "pump-1"
    assert first["reason"] == "written and verified"
    assert replay["outcome"] == "refused" and "already received" in replay["reason"]
    refused("c-fast", "rate limit")
    refused("c-bool", "must be a number, not True")
    refused("c-nan", "finite")
    refused("c-inf", "finite")
    refused("c-range", "maximum 100")
    refused("c-low", "minimum 30")
    refused("c-coil-number", "true or false")
    refused("c-not-allowed", "writable_points")
    refused("c-read-only", "not writable")
    refused("c-unknown", "no point")
    refused("c-unsigned", "not signed")
    refused("c-forged", "does not match")
    refused("c-untrusted", "does not match")
    refused("c-other-device", "does not match")
    refused("c-stale", "stale")
    refused("c-future", "stale")
    refused("c-malformed", "malformed")
    # only the one good command reached the device: 750 in the register (scale 0.1)
    assert unit.memory[RegisterType.HOLDING][SETPOINT] == 750
    assert unit.memory[RegisterType.COIL][0] == bool(1)  # sample value (True), not rewritten
    # the malformed command is dead-lettered too (so are NaN and Infinity by a wire model that
    # refuses them at decoding: answered all the same, with "finite" in the reason)
    lettered = {json.loads(json_of(m)["payload"])["id"] for m in dead}  # json reads NaN
    assert "c-malformed" in lettered and lettered <= {"c-malformed", "c-nan", "c-inf"}


def test_retained_refused_and_ids_remembered_across_restart(mosquitto, topic_prefix, tmp_path: Path,
                                                            peers) -> None:
    unit, gw = _setup(peers)
    before = unit.memory[RegisterType.HOLDING][SETPOINT]
    t = Topics(topic_prefix)
    topic = t.command("gw-test", "pump-1")
    once = encode(_signed("c-once", "speed_setpoint_pct", 55))
    with Recorder(mosquitto.settings(), [f"{topic_prefix}/gw/+/dev/+/reply"],
                  client_id=f"ret-{topic_prefix[:11]}") as rec:
        # published retained while no agent runs: valid in every other way
        rec.client.publish(topic, encode(_signed("c-retained", "speed_setpoint_pct", 65)), qos=1,
                           retain=True).wait_for_publish(5)

        async def send(_a: Agent) -> None:
            await _subscribed(rec, t)
            rec.client.publish(topic, once, qos=1)

        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s", SETTINGS)
        assert run_until(agent, lambda: {"c-retained", "c-once"} <= set(_replies(rec)), 15, during=send)
        assert unit.memory[RegisterType.HOLDING][SETPOINT] == 550
        unit.memory[RegisterType.HOLDING][SETPOINT] = before
        # a restart: the same command again is a replay
        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s", SETTINGS)
        assert run_until(agent, lambda: len(_replies(rec).get("c-once", [])) >= 2, 15, during=send)
        replies = _replies(rec)
        rec.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    retained = replies["c-retained"][0]
    assert retained["outcome"] == "refused" and "retained" in retained["reason"]
    assert replies["c-once"][0]["outcome"] == "done"
    assert replies["c-once"][1]["outcome"] == "refused" and "already received" in replies["c-once"][1]["reason"]
    assert unit.memory[RegisterType.HOLDING][SETPOINT] == before  # neither the retained nor the replay
