"""Sparkplug B northbound: a real agent polling a real Modbus server, publishing to a real
Mosquitto, read by Eclipse Tahu's JavaScript ``sparkplug-payload`` (npm, in
tests/sparkplug/node: ``npm ci --prefix tests/sparkplug/node``, which ``./run setup`` does).

Births with every metric, DDATA by exception with aliases, seq 0..255 across the node's
messages and its wrap, rebirth on NCMD, NDEATH as the will with the NBIRTH's bdSeq, DDEATH
and DBIRTH as a device stops and answers again, readings held while the primary host is
offline and replayed flagged ``is_historical``, DCMD through the allow-list and read-back."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from conftest import MODBUS_PROFILES, ModbusTcpPeer, Unit, expected_value
from helpers import FAST, batches, make_agent, run_until

from aquavolt.edge.agent import Agent
from aquavolt.edge.config import EdgeSettings
from aquavolt.field import Gateway
from aquavolt.harness.servers import Mosquitto
from aquavolt.mqtt import Message, Recorder
from aquavolt.profiles import RegisterType
from aquavolt.sparkplug import HostState, Payload, decode_payload, encode_state, state_topic

NODE_DIR = Path(__file__).resolve().parents[1] / "sparkplug" / "node"
PUMP = MODBUS_PROFILES["av_pump1"]
SETPOINT = 19  # holding 20 counted from 1
TAHU_TYPES = {"speed_pct": "Double", "flow_lps": "Float", "running": "Boolean", "run_hours_h": "UInt32",
              "fault_code": "UInt16", "speed_setpoint_pct": "Double", "run_command": "Boolean"}


def tahu(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run Tahu's library (decode.js) over these requests; fails without node or the package."""
    node = shutil.which("node")
    assert node is not None, "node is not installed (Node 20 is a requirement of the test suite)"
    assert (NODE_DIR / "node_modules" / "sparkplug-payload").is_dir(), \
        "sparkplug-payload is not installed: npm ci --prefix tests/sparkplug/node (./run setup does it)"
    out = subprocess.run([node, str(NODE_DIR / "decode.js")], input="\n".join(map(json.dumps, lines)),
                         capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def decoded(msgs: list[Message]) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(message type, device, payload as Tahu decodes it) of every message the node published."""
    sp = [m for m in msgs if m.topic.startswith("spBv1.0/") and m.topic.split("/")[1] != "STATE"
          and m.topic.split("/")[2] not in ("NCMD", "DCMD")]
    out = tahu([{"topic": m.topic, "payload": base64.b64encode(m.payload).decode()} for m in sp])
    rows = []
    for m, d in zip(sp, out, strict=True):
        assert "error" not in d, d
        parts = m.topic.split("/")
        rows.append((parts[2], parts[4] if len(parts) > 4 else None, d["payload"]))
    return rows


def tahu_encode(*payloads: dict[str, Any]) -> list[bytes]:
    """Payloads encoded by Tahu's library (one run of node for all)."""
    return [base64.b64decode(r["encoded"]) for r in tahu([{"topic": "", "encode": p} for p in payloads])]


def spb_gateway(ports: list[int], group: str, writable: list[str] | None = None, poll_s: float = 0.2,
                **sparkplug: Any) -> Gateway:
    return Gateway.model_validate({
        "id": "gw-test", "site": "site-1",
        "buses": [{"kind": "modbus_tcp", "id": f"plc{i}", "port": p} for i, p in enumerate(ports)],
        "devices": [{"id": f"pump-{i + 1}", "profile": "av_pump1", "bus": f"plc{i}", "unit_id": 1}
                    for i in range(len(ports))],
        "poll_intervals_s": {"default": poll_s, "slow": poll_s},
        "writable_points": writable or [],
        "northbound": "sparkplug",
        "sparkplug": {"group_id": group, **sparkplug},
    })


def _group() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


def _count(rec: Recorder, mtype: str) -> int:
    return sum(1 for m in rec.snapshot() if f"/{mtype}/" in m.topic)


async def _until(cond: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _agent(gw: Gateway, broker: Mosquitto, prefix: str, tmp: Path, settings: EdgeSettings = FAST) -> Agent:
    return make_agent(gw, broker, prefix, tmp / "state", settings)


def _seqs_follow(rows: list[tuple[str, str | None, dict[str, Any]]]) -> int:
    """Every node message's seq is the one after the previous, NBIRTH restarting at 0 (NDEATH
    has none); returns how many times seq wrapped from 255 to 0."""
    wraps, prev = 0, None
    for mtype, _dev, p in rows:
        if mtype == "NDEATH":
            assert "seq" not in p
            continue
        seq = int(p["seq"])
        if mtype == "NBIRTH":
            assert seq == 0
        else:
            assert prev is not None and seq == (prev + 1) % 256, (mtype, prev, seq)
            wraps += prev == 255
        prev = seq
    return wraps


def test_births_and_data_as_tahu_reads_them(mosquitto: Mosquitto, topic_prefix: str, peers: list[Any],
                                            tmp_path: Path) -> None:
    peer = ModbusTcpPeer({1: Unit().fill(PUMP)})
    peers.append(peer)
    group = _group()
    agent = _agent(spb_gateway([peer.port], group), mosquitto, topic_prefix, tmp_path)
    with Recorder(mosquitto.settings(), [f"spBv1.0/{group}/#", f"{topic_prefix}/gw/#"], "spb-a") as rec:
        assert run_until(agent, lambda: _all_points_sent(rec))
        assert rec.wait_for(lambda ms: any("/NDEATH/" in m.topic for m in ms))  # a clean stop says it
        rows = decoded(rec.snapshot())
        assert not [m for m in rec.snapshot() if m.topic.endswith("/data")]  # northbound: sparkplug only
    kinds = [r[0] for r in rows]
    assert kinds[:2] == ["NBIRTH", "DBIRTH"] and kinds[-1] == "NDEATH"
    _seqs_follow(rows)
    nbirth = {m["name"]: m for m in rows[0][2]["metrics"]}
    assert nbirth["bdSeq"]["type"] == "Int64" and nbirth["bdSeq"]["value"] == "0"
    assert nbirth["Node Control/Rebirth"] == {"name": "Node Control/Rebirth", "type": "Boolean", "value": False,
                                              "timestamp": nbirth["Node Control/Rebirth"]["timestamp"]}
    assert {m["name"]: m for m in rows[-1][2]["metrics"]}["bdSeq"]["value"] == "0"  # NDEATH: same bdSeq
    assert rows[1][1] == "pump-1"
    birth = {m["name"]: m for m in rows[1][2]["metrics"]}
    assert set(birth) == {p.name for p in PUMP.points}
    assert len({m["alias"] for m in birth.values()}) == len(birth)
    for name, t in TAHU_TYPES.items():
        assert birth[name]["type"] == t, name
    assert birth["speed_pct"]["properties"]["engUnit"] == {"type": "String", "value": "%"}
    assert birth["speed_setpoint_pct"]["properties"]["readOnly"] == {"type": "Boolean", "value": False}
    assert birth["flow_lps"]["properties"]["readOnly"]["value"] is True
    assert "engUnit" not in birth["running"]["properties"]
    # DDATA: aliases only; every value as the edge read it from the Modbus server
    name_of = {m["alias"]: n for n, m in birth.items()}
    got: dict[str, Any] = {}
    for mtype, dev, p in rows:
        if mtype == "DDATA":
            assert dev == "pump-1"
            for m in p["metrics"]:
                assert "name" not in m
                got[name_of[m["alias"]]] = m
    assert set(got) == set(birth)
    for p in PUMP.points:
        want, m = expected_value(PUMP, p), got[p.name]
        assert m["type"] == birth[p.name]["type"]
        if isinstance(want, float):
            assert math.isclose(float(m["value"]), want, rel_tol=1e-6), p.name
        else:
            assert m["value"] == want, p.name
        assert m["properties"]["Quality"]["value"] == 192  # first value after the birth's


def test_rebirth_on_ncmd_and_seq_wrap(mosquitto: Mosquitto, topic_prefix: str, peers: list[Any],
                                      tmp_path: Path) -> None:
    ps = [ModbusTcpPeer({1: Unit().fill(PUMP)}) for _ in range(2)]
    peers.extend(ps)
    group = _group()
    # a heartbeat every poll: one DDATA per device and poll, enough to wrap seq in seconds
    settings = FAST.model_copy(update={"max_silence_s": 0.001})
    agent = _agent(spb_gateway([p.port for p in ps], group, poll_s=0.02), mosquitto, topic_prefix, tmp_path,
                   settings)
    [rebirth] = tahu_encode({"timestamp": int(time.time() * 1000),
                           "metrics": [{"name": "Node Control/Rebirth", "type": "Boolean", "value": True}]})
    with Recorder(mosquitto.settings(), [f"spBv1.0/{group}/#"], "spb-b") as rec:
        async def during(_a: Agent) -> None:
            await _until(lambda: len(rec.snapshot()) >= 300, 30)
            rec.client.publish(f"spBv1.0/{group}/NCMD/gw-test", rebirth, qos=1)
            await _until(lambda: _count(rec, "NBIRTH") >= 2 and _count(rec, "DBIRTH") >= 4)

        assert run_until(agent, lambda: True, 60, during)
        rows = decoded([m for m in rec.snapshot() if "/NDEATH/" not in m.topic])
    assert _seqs_follow(rows) >= 1
    births = [i for i, r in enumerate(rows) if r[0] == "NBIRTH"]
    assert len(births) == 2
    second = births[1]
    assert [r[0] for r in rows[second:second + 3]] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert {r[1] for r in rows[second + 1:second + 3]} == {"pump-1", "pump-2"}
    bd = [{m["name"]: m for m in rows[i][2]["metrics"]}["bdSeq"]["value"] for i in births]
    assert bd[0] == bd[1]  # a rebirth is the same session


def test_will_is_ndeath_with_the_births_bdseq(mosquitto: Mosquitto, topic_prefix: str, peers: list[Any],
                                              tmp_path: Path) -> None:
    peer = ModbusTcpPeer({1: Unit().fill(PUMP)})
    peers.append(peer)
    group = _group()
    settings = FAST.model_copy(update={"max_silence_s": 0.1})  # readings flow while the session is down
    agent = _agent(spb_gateway([peer.port], group), mosquitto, topic_prefix, tmp_path, settings)
    held: list[int] = []
    with Recorder(mosquitto.settings(), [f"spBv1.0/{group}/#"], "spb-c") as rec:
        async def during(a: Agent) -> None:
            node = a.sparkplug
            assert node is not None
            await _until(lambda: _count(rec, "DBIRTH") >= 1)
            sock = node.transport.client.socket()
            assert isinstance(sock, socket.socket)
            sock.shutdown(socket.SHUT_RDWR)  # the connection dies without a DISCONNECT
            await _until(lambda: node.depth > 0)
            held.append(node.depth)
            await _until(lambda: _count(rec, "NBIRTH") >= 2 and node.depth == 0)

        assert run_until(agent, lambda: True, 30, during)
        rows = decoded(rec.snapshot())
    kinds = [r[0] for r in rows]
    first, death, second = kinds.index("NBIRTH"), kinds.index("NDEATH"), kinds.index("NBIRTH", 1)
    assert first < death < second

    def bd(i: int) -> str:
        return str({m["name"]: m for m in rows[i][2]["metrics"]}["bdSeq"]["value"])

    assert bd(death) == bd(first) == "0"
    assert bd(second) == "1"  # the next session's
    # the readings polled while the session was down came after the new birth, as history
    historical = [r for r in rows[second:] if r[0] == "DDATA" and all(m.get("isHistorical") for m in r[2]["metrics"])]
    assert held and len(historical) >= held[0]


def test_ddeath_when_a_device_stops_answering(mosquitto: Mosquitto, topic_prefix: str, peers: list[Any],
                                              tmp_path: Path) -> None:
    ps = [ModbusTcpPeer({1: Unit().fill(PUMP)}) for _ in range(2)]
    peers.extend(ps)
    group = _group()
    agent = _agent(spb_gateway([p.port for p in ps], group), mosquitto, topic_prefix, tmp_path)
    with Recorder(mosquitto.settings(), [f"spBv1.0/{group}/#"], "spb-d") as rec:
        async def during(_a: Agent) -> None:
            await _until(lambda: _count(rec, "DBIRTH") >= 2)
            await asyncio.to_thread(ps[1].stop)
            await _until(lambda: _count(rec, "DDEATH") >= 1)
            await asyncio.to_thread(ps[1].start)
            await _until(lambda: _count(rec, "DBIRTH") >= 3)

        assert run_until(agent, lambda: True, 30, during)
        rows = decoded(rec.snapshot())
    deaths = [(i, r) for i, r in enumerate(rows) if r[0] == "DDEATH"]
    assert [r[1] for _, r in deaths] == ["pump-2"]
    rebirths = [i for i, r in enumerate(rows) if r[0] == "DBIRTH" and r[1] == "pump-2"]
    assert rebirths[0] < deaths[0][0] < rebirths[1]
    # before its death the device's points went out as nulls of bad quality
    last_data = [r for r in rows[:deaths[0][0]] if r[0] == "DDATA" and r[1] == "pump-2"][-1]
    assert all(m["value"] is None and m["properties"]["Quality"]["value"] == 0 for m in last_data[2]["metrics"])
    _seqs_follow(rows)


def test_state_offline_holds_data_and_online_replays_it_as_historical(
        mosquitto: Mosquitto, topic_prefix: str, peers: list[Any], tmp_path: Path) -> None:
    peer = ModbusTcpPeer({1: Unit().fill(PUMP)})
    peers.append(peer)
    group, host = _group(), f"scada-{uuid.uuid4().hex[:8]}"
    settings = FAST.model_copy(update={"max_silence_s": 0.1})
    agent = _agent(spb_gateway([peer.port], group, primary_host_id=host), mosquitto, topic_prefix, tmp_path,
                   settings)

    def state(online: bool) -> None:
        rec.client.publish(state_topic(host), encode_state(HostState(online, int(time.time() * 1000))),
                           qos=1, retain=True)

    marks: dict[str, Any] = {}
    with Recorder(mosquitto.settings(), [f"spBv1.0/{group}/#", state_topic(host)], "spb-e") as rec:
        state(False)

        async def during(a: Agent) -> None:
            node = a.sparkplug
            assert node is not None
            await _until(lambda: node.connected and node.depth >= 3)  # held: the host is offline
            assert _count(rec, "NBIRTH") == 0  # no birth before the primary host is online
            marks["held_1"] = node.depth
            state(True)
            await _until(lambda: node.depth == 0 and _count(rec, "DDATA") > marks["held_1"])
            await _until(lambda: any(not m.is_historical for p in _ddata(rec) for m in p.metrics))  # live
            state(False)
            await _until(lambda: not node.live)
            bd_before = node.bd_seq
            marks["offline_ms"] = a.clock.now_ms()  # every reading polled from now on is held
            await _until(lambda: node.depth >= 3 and node.connected and node.bd_seq == bd_before + 1)
            marks["held_2"] = node.depth
            state(True)
            await _until(lambda: node.depth == 0 and _count(rec, "NBIRTH") >= 2)

        assert run_until(agent, lambda: True, 40, during)
        rec.client.publish(state_topic(host), b"", qos=1, retain=True)
        rows = decoded(rec.snapshot())
    births = [i for i, r in enumerate(rows) if r[0] == "NBIRTH"]
    assert len(births) == 2
    # the host offline ended the session: NDEATH, then a new session (bdSeq + 1) born once it is back
    deaths = [i for i, r in enumerate(rows) if r[0] == "NDEATH"]
    assert births[0] < deaths[0] < births[1]

    def bd(i: int) -> int:
        return int({m["name"]: m for m in rows[i][2]["metrics"]}["bdSeq"]["value"])

    assert bd(deaths[0]) == bd(births[0]) and bd(births[1]) == bd(births[0]) + 1
    # nothing polled while the host was offline went out live before the host came back
    live_before = [m for r in rows[:births[1]] if r[0] == "DDATA" for m in r[2]["metrics"]
                   if not m.get("isHistorical")]
    assert live_before and all(int(m["timestamp"]) <= marks["offline_ms"] for m in live_before)
    for n, start in enumerate(births):
        end = births[1] if n == 0 else len(rows)
        data = [r for r in rows[start:end] if r[0] == "DDATA"]
        historical = [r for r in data if all(m.get("isHistorical") for m in r[2]["metrics"])]
        # every held message came after the birth, flagged historical, older than the birth
        assert len(historical) >= marks[f"held_{n + 1}"]
        birth_ts = int(rows[start][2]["timestamp"])
        assert all(int(m["timestamp"]) <= birth_ts for r in historical for m in r[2]["metrics"])
        assert rows[start + 1][0] == "DBIRTH"
    _seqs_follow(rows)


def test_dcmd_through_the_allow_list_and_read_back(mosquitto: Mosquitto, topic_prefix: str, peers: list[Any],
                                                   tmp_path: Path) -> None:
    unit = Unit().fill(PUMP)
    peer = ModbusTcpPeer({1: unit})
    peers.append(peer)
    group = _group()
    agent = _agent(spb_gateway([peer.port], group, writable=["pump-1.speed_setpoint_pct"], accept_dcmd=True),
                   mosquitto, topic_prefix, tmp_path)
    topic = f"spBv1.0/{group}/DCMD/gw-test/pump-1"
    allowed, out_of_range, not_listed = tahu_encode(
        {"metrics": [{"name": "speed_setpoint_pct", "type": "Double", "value": 55.5}]},
        {"metrics": [{"name": "speed_setpoint_pct", "type": "Double", "value": 120.0}]},
        {"metrics": [{"name": "run_command", "type": "Boolean", "value": False}]})
    before_coil = unit.memory[RegisterType.COIL][0]
    with Recorder(mosquitto.settings(), [f"spBv1.0/{group}/#"], "spb-f") as rec:
        async def during(a: Agent) -> None:
            node = a.sparkplug
            assert node is not None
            await _until(lambda: _count(rec, "DBIRTH") >= 1)
            rec.client.publish(topic, not_listed, qos=1)
            rec.client.publish(topic, out_of_range, qos=1)
            await _until(lambda: node.dcmd_refused >= 2)
            rec.client.publish(topic, allowed, qos=1)
            await _until(lambda: unit.memory[RegisterType.HOLDING][SETPOINT] == 555)
            await _until(lambda: any(m.value == 55.5 for p in _ddata(rec) for m in p.metrics))

        assert run_until(agent, lambda: True, 30, during)
        rows = decoded(rec.snapshot())
    assert unit.memory[RegisterType.COIL][0] == before_coil  # never written: not allow-listed
    birth = {m["name"]: m["alias"] for r in rows if r[0] == "DBIRTH" for m in r[2]["metrics"]}
    read_back = [m for r in rows if r[0] == "DDATA" for m in r[2]["metrics"]
                 if m["alias"] == birth["speed_setpoint_pct"] and m["value"] == 55.5]
    assert read_back  # the value read back after the write, as Tahu reads it


def _all_points_sent(rec: Recorder) -> bool:
    """Every point of the pump went out in DDATA (its poll groups are polled apart)."""
    return len({m.alias for p in _ddata(rec) for m in p.metrics}) == len(PUMP.points)


def _ddata(rec: Recorder) -> list[Payload]:
    """DDATA payloads as aquavolt's codec reads them (cheap enough to poll)."""
    out = []
    for m in rec.snapshot():
        if "/DDATA/" in m.topic:
            p = decode_payload(m.payload)
            out.append(p)
    return out


def test_dcmd_refused_unless_accepted(mosquitto: Mosquitto, topic_prefix: str, peers: list[Any],
                                      tmp_path: Path) -> None:
    unit = Unit().fill(PUMP)
    peer = ModbusTcpPeer({1: unit})
    peers.append(peer)
    group = _group()
    agent = _agent(spb_gateway([peer.port], group, writable=["pump-1.speed_setpoint_pct"]),
                   mosquitto, topic_prefix, tmp_path)
    before = unit.memory[RegisterType.HOLDING][SETPOINT]
    [cmd] = tahu_encode({"metrics": [{"name": "speed_setpoint_pct", "type": "Double", "value": 55.5}]})
    with Recorder(mosquitto.settings(), [f"spBv1.0/{group}/#"], "spb-g") as rec:
        async def during(a: Agent) -> None:
            await _until(lambda: _count(rec, "DBIRTH") >= 1)
            rec.client.publish(f"spBv1.0/{group}/DCMD/gw-test/pump-1", cmd, qos=1)
            await _until(lambda: a.sparkplug is not None and a.sparkplug.dcmd_refused == 1)

        assert run_until(agent, lambda: True, 20, during)
    assert unit.memory[RegisterType.HOLDING][SETPOINT] == before


def test_both_northbounds_carry_the_same_readings(mosquitto: Mosquitto, topic_prefix: str, peers: list[Any],
                                                  tmp_path: Path) -> None:
    peer = ModbusTcpPeer({1: Unit().fill(PUMP)})
    peers.append(peer)
    group = _group()
    gw = spb_gateway([peer.port], group).model_copy(update={"northbound": "both"})
    agent = _agent(gw, mosquitto, topic_prefix, tmp_path)
    with Recorder(mosquitto.settings(), [f"spBv1.0/{group}/#", f"{topic_prefix}/gw/#"], "spb-h") as rec:
        assert run_until(agent, lambda: _all_points_sent(rec) and len(
            {r.point for b in batches(rec) for r in b.readings}) == len(PUMP.points))
        wire = {r.point: r.value for b in batches(rec) for r in b.readings}
        births = [decode_payload(m.payload) for m in rec.snapshot() if "/DBIRTH/" in m.topic]
        name_of = {m.alias: m.name for m in births[0].metrics}
        spb = {name_of[m.alias]: m.value for p in _ddata(rec) for m in p.metrics}
    assert set(wire) == set(spb) == {p.name for p in PUMP.points}
    for name, value in wire.items():
        assert spb[name] == value or math.isclose(float(spb[name]), float(value), rel_tol=1e-6), name


def test_every_shipped_modbus_point_has_a_datatype_its_values_fit(mosquitto: Mosquitto, topic_prefix: str,
                                                                   tmp_path: Path) -> None:
    """Each point of each shipped Modbus profile (sample values of every type, scaled or not,
    bitfield flags) encodes as its metric's datatype, and Tahu reads it back."""
    from aquavolt.edge.sparkplug import fit
    from aquavolt.sparkplug import Metric, encode_payload

    gw = Gateway.model_validate({
        "id": "gw-test", "site": "site-1", "buses": [{"kind": "modbus_tcp", "id": "plc"}],
        "devices": [{"id": f"d{i}", "profile": name, "bus": "plc", "unit_id": i + 1}
                    for i, name in enumerate(sorted(MODBUS_PROFILES))],
        "northbound": "sparkplug",
    })
    agent = _agent(gw, mosquitto, topic_prefix, tmp_path)
    node = agent.sparkplug
    assert node is not None and node.group_id == "gateway"  # a file of one gateway: no field id
    try:
        requests, want = [], []
        for i, name in enumerate(sorted(MODBUS_PROFILES)):
            profile, defs = MODBUS_PROFILES[name], node.defs[f"d{i}"]
            for p in profile.points:
                value = fit(defs[p.name].datatype, expected_value(profile, p))
                payload = encode_payload(Payload(metrics=[Metric(name=p.name, datatype=defs[p.name].datatype,
                                                                 value=value)]))  # type: ignore[arg-type]
                requests.append({"topic": "", "payload": base64.b64encode(payload).decode()})
                want.append((p.name, defs[p.name].datatype.name, value))
        assert len({d.alias for defs in node.defs.values() for d in defs.values()}) == sum(
            len(defs) for defs in node.defs.values())  # aliases unique across the node
        for (name, dtype, value), got in zip(want, tahu(requests), strict=True):
            m = got["payload"]["metrics"][0]
            assert m["type"] == dtype, name
            if isinstance(value, float):
                assert math.isclose(float(m["value"]), value, rel_tol=1e-6), name
            else:
                assert m["value"] == value or m["value"] == str(value), name  # 64-bit: a decimal string
    finally:
        node.store.close()
        agent.store.close()
