"""Failures that must not cost data or stall collection: dead, slow and failing devices,
a broker outage, an OPC-UA server restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import MODBUS_PROFILES, OPCUA_PROFILES, ModbusRtuPeer, ModbusTcpPeer, Unit
from helpers import (
    FAST,
    batches,
    durable,
    gateway,
    json_of,
    latest_values,
    make_agent,
    messages,
    recorder,
    run_until,
    seq_report,
)
from opcua_peer import OpcuaPeer

from aquavolt.edge.agent import Agent
from aquavolt.edge.drivers import LinkState
from aquavolt.harness.servers import free_port
from aquavolt.mqtt import Recorder
from aquavolt.wire import DeviceStatus, decode

LEVEL = MODBUS_PROFILES["av_level1"]


def test_dead_and_slow_tcp_devices_do_not_delay_the_others(mosquitto, topic_prefix, tmp_path: Path,
                                                            peers) -> None:
    good = ModbusTcpPeer({1: Unit().fill(LEVEL), 2: Unit().fill(LEVEL)})
    slow = ModbusTcpPeer({1: Unit(delay_s=0.7).fill(LEVEL)})
    dead = ModbusTcpPeer({})  # the server is up, the device never answers
    peers += [good, slow, dead]
    gw = gateway(
        [{"kind": "modbus_tcp", "id": "good", "port": good.port, "timeout_s": 0.5},
         {"kind": "modbus_tcp", "id": "slow", "port": slow.port, "timeout_s": 3.0},
         {"kind": "modbus_tcp", "id": "dead", "port": dead.port, "timeout_s": 0.5}],
        [{"id": "a", "profile": "av_level1", "bus": "good", "unit_id": 1},
         {"id": "b", "profile": "av_level1", "bus": "good", "unit_id": 2},
         {"id": "slow", "profile": "av_level1", "bus": "slow", "unit_id": 1},
         {"id": "dead", "profile": "av_level1", "bus": "dead", "unit_id": 1}], poll_s=0.2)
    with recorder(mosquitto, topic_prefix, "deadslow") as rec:
        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s")
        a, b, slow_rt, dead_rt = (agent.devices[d] for d in ("a", "b", "slow", "dead"))
        # Counted, not timed (a loaded machine polls less, never differently): until the good
        # bus's devices have 24 polls each. Had they waited for the slow device's 0.7 s
        # answers or the dead one's timeouts, they would be polled no more often than those.
        assert run_until(agent, lambda: min(a.polls, b.polls) >= 24, timeout_s=120)
        statuses = [json_of(m) for m in messages(rec, "/dev/dead/status")]
        data = batches(rec)
    assert min(a.polls, b.polls) >= 2 * dead_rt.polls, (a.polls, b.polls, dead_rt.polls)  # the breaker
    assert min(a.polls, b.polls) > slow_rt.polls, (a.polls, b.polls, slow_rt.polls)
    for rt in (a, b):
        assert rt.errors == 0
    assert agent.devices["dead"].comm_fail and agent.devices["dead"].errors >= 2
    assert [s["state"] for s in statuses if s["state"] == "comm_fail"] == ["comm_fail"]  # once
    dead_batches = [b for b in data if b.device == "dead"]
    assert len(dead_batches) == 1 and all(r.quality.value == "bad" for r in dead_batches[0].readings)
    assert {r.point for r in dead_batches[0].readings} == {p.name for p in LEVEL.points}
    assert latest_values(rec)["slow"]["level_m"][1] == "good"  # slow but answering: good


def test_dead_unit_on_a_serial_bus_does_not_stall_the_bus(mosquitto, topic_prefix, tmp_path: Path,
                                                          peers) -> None:
    peer = ModbusRtuPeer({1: Unit().fill(LEVEL), 2: Unit().fill(LEVEL)}, baud=115200)
    peers.append(peer)
    link = tmp_path / "ttyRS485"
    link.symlink_to(peer.bridge.client_path)
    gw = gateway([{"kind": "modbus_rtu", "id": "rs485", "serial_port": str(link), "baud_rate": 115200,
                   "timeout_s": 0.3}],
                 [{"id": "a", "profile": "av_level1", "bus": "rs485", "unit_id": 1},
                  {"id": "b", "profile": "av_level1", "bus": "rs485", "unit_id": 2},
                  {"id": "gone", "profile": "av_level1", "bus": "rs485", "unit_id": 9}], poll_s=0.25)
    agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s")
    a, b, gone = (agent.devices[d] for d in ("a", "b", "gone"))
    # Counted, not timed (a loaded machine polls less, never differently): run until the live
    # units have 24 polls each. A bus that waited for the dead unit on every cycle would try
    # it as often as it polls the others; the breaker keeps it to rare probes.
    assert run_until(agent, lambda: min(a.polls, b.polls) >= 24, timeout_s=120)
    assert gone.polls * 3 <= min(a.polls, b.polls), (gone.polls, a.polls, b.polls)
    assert agent.devices["gone"].comm_fail


def _second_unit_answers(code: int, name: str, mosquitto, topic_prefix, tmp_path: Path,
                         peers) -> tuple[Agent, Recorder]:
    """Unit 1 answers, unit 2 (device ``name``) answers exception ``code`` to everything: the
    agent runs for 1.5 s; the agent and the recorder (its messages stay readable)."""
    peer = ModbusTcpPeer({1: Unit().fill(LEVEL), 2: Unit(exception=code).fill(LEVEL)})
    peers.append(peer)
    gw = gateway([{"kind": "modbus_tcp", "id": "plc", "port": peer.port}],
                 [{"id": "ok", "profile": "av_level1", "bus": "plc", "unit_id": 1},
                  {"id": name, "profile": "av_level1", "bus": "plc", "unit_id": 2}])
    with recorder(mosquitto, topic_prefix, f"exc{code}") as rec:
        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s")

        async def wait(_a: Agent) -> None:
            await asyncio.sleep(1.5)

        run_until(agent, lambda: False, timeout_s=0.1, during=wait)
    return agent, rec


def test_device_answering_exception_codes_is_bad_while_others_stay_good(mosquitto, topic_prefix,
                                                                        tmp_path: Path, peers) -> None:
    agent, rec = _second_unit_answers(4, "broken", mosquitto, topic_prefix, tmp_path, peers)
    got = latest_values(rec)
    data = batches(rec)
    assert all(q == "good" for _, q in got["ok"].values())
    assert set(got["broken"]) == {p.name for p in LEVEL.points}
    assert all(v is None and q == "bad" for v, q in got["broken"].values())
    # marked bad once per group, not on every poll
    assert len([b for b in data if b.device == "broken"]) == 2
    assert "exception code 4" in agent.devices["broken"].last_error


def test_gateway_exception_for_a_device_behind_it_is_a_comm_failure(mosquitto, topic_prefix,
                                                                      tmp_path: Path, peers) -> None:
    """A Modbus TCP gateway answers exception 11 for a unit it cannot reach: that unit has lost
    communication (its status says comm_fail), it does not answer garbage."""
    agent, rec = _second_unit_answers(11, "unreachable", mosquitto, topic_prefix, tmp_path, peers)
    got = latest_values(rec)
    statuses = [decode(m.payload, DeviceStatus) for m in rec.snapshot()
                if m.topic.endswith("/dev/unreachable/status") and m.payload]
    assert all(q == "good" for _, q in got["ok"].values())
    assert all(v is None and q == "bad" for v, q in got["unreachable"].values())
    assert statuses and statuses[-1].state == "comm_fail", statuses
    assert "gateway target device failed to respond" in agent.devices["unreachable"].last_error


def test_broker_outage_loses_nothing_and_replays_in_order(mosquitto, topic_prefix, tmp_path: Path,
                                                          peers) -> None:
    unit = Unit().fill(LEVEL)
    peer = ModbusTcpPeer({1: unit})
    peers.append(peer)
    gw = gateway([{"kind": "modbus_tcp", "id": "plc", "port": peer.port}],
                 [{"id": "tank", "profile": "av_level1", "bus": "plc", "unit_id": 1}], poll_s=0.1)
    counter = {"n": 0}

    async def scenario(agent: Agent) -> None:
        async def tick() -> None:
            while True:  # the level moves every poll, so every poll sends a batch
                counter["n"] += 1
                unit.set_point(LEVEL, "level_m", counter["n"] * 100)
                await asyncio.sleep(0.05)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(1.0)
        await asyncio.to_thread(mosquitto.stop)
        await asyncio.sleep(2.0)
        assert agent.store.depth > 10  # buffered on disk meanwhile
        await asyncio.to_thread(mosquitto.start)
        await asyncio.sleep(1.0)
        ticker.cancel()

    with durable(mosquitto, topic_prefix, "outage") as sub:
        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s")
        run_until(agent, lambda: agent.store.depth == 0 and agent.link.unacked == 0, 15, during=scenario)
        assert sub.wait_for(lambda _m: len({b.seq for b in batches(sub)}) >= agent.store.next_seq - 1, 10)
        data = batches(sub)
    seqs, missing = seq_report(data)
    assert missing == [] and seqs[0] == 0 and seqs[-1] == agent.store.next_seq - 1
    replayed = [b for b in data if b.historical]
    assert len(replayed) >= 10
    assert [b.seq for b in replayed] == sorted(b.seq for b in replayed)  # in order
    levels = [r.value for b in sorted(data, key=lambda b: b.seq) for r in b.readings if r.point == "level_m"]
    assert all(x is not None for x in levels)
    assert levels == sorted(levels)  # every reading, in the order it was taken


def test_opcua_server_restart_collection_resumes(mosquitto, topic_prefix, tmp_path: Path, peers) -> None:
    prof = OPCUA_PROFILES["av_rtu_transformer"]
    port = free_port()
    peer = OpcuaPeer([("SS1.TR1", prof)], port, tmp_path)
    peers.append(peer)
    gw = gateway([{"kind": "opcua", "id": "rtu", "endpoint": peer.endpoint, "timeout_s": 2.0}],
                 [{"id": "tr1", "profile": "av_rtu_transformer", "bus": "rtu", "node_prefix": "SS1.TR1"}])
    with recorder(mosquitto, topic_prefix, "uarestart") as rec:
        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "s", FAST)

        def value() -> object:
            return latest_values(rec).get("tr1", {}).get("oil_temperature_c", (None, ""))[0]

        async def scenario(a: Agent) -> None:
            while value() is None:  # noqa: ASYNC110 - polls another thread's record
                await asyncio.sleep(0.05)
            await asyncio.to_thread(peer.restart)
            await asyncio.to_thread(peer.set, "SS1.TR1.OilTemperature", 77.5)

        ok = run_until(agent, lambda: value() == 77.5, 30, during=scenario)
        drv = agent.drivers["rtu"]
    assert ok, latest_values(rec)
    assert drv.connections >= 2  # type: ignore[attr-defined]
    assert drv.state is LinkState.CLOSED  # type: ignore[attr-defined]
