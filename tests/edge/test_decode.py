"""Every point of every shipped profile decoded right: over Modbus TCP, over Modbus RTU on a
serial line (a pseudo-terminal pair), and over OPC-UA with and without security."""

from __future__ import annotations

import math
from pathlib import Path

from conftest import (
    MODBUS_PROFILES,
    OPCUA_PROFILES,
    ModbusRtuPeer,
    ModbusTcpPeer,
    Unit,
    expected_value,
    sample_raw,
)
from helpers import gateway, latest_values, make_agent, recorder, run_until
from opcua_peer import OpcuaPeer

from aquavolt.edge.planner import bit_flags
from aquavolt.harness.servers import free_port
from aquavolt.profiles import ModbusProfile


def _expected_modbus(profile: ModbusProfile, salt: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in profile.points:
        v = expected_value(profile, p, salt)
        out[p.name] = v
        out.update({n: f for n, f in bit_flags(p, v).items() if n not in profile.by_name})
    return out


def _check(got: dict[str, tuple[object, str]], want: dict[str, object], device: str) -> None:
    assert set(got) == set(want), f"{device}: points {sorted(set(want) ^ set(got))}"
    for name, value in want.items():
        v, q = got[name]
        assert q == "good", f"{device}.{name}: quality {q}"
        if isinstance(value, float):
            assert isinstance(v, float) and math.isclose(v, value, rel_tol=1e-9), f"{device}.{name}: {v} != {value}"
        else:
            assert v == value and type(v) is type(value), f"{device}.{name}: {v!r} != {value!r}"


def _modbus_devices(bus: str) -> tuple[dict[int, Unit], list[dict[str, object]], dict[str, dict[str, object]]]:
    units, devices, want = {}, [], {}
    for i, (pid, profile) in enumerate(sorted(MODBUS_PROFILES.items()), start=1):
        units[i] = Unit(strict=True).fill(profile, salt=i)
        devices.append({"id": f"dev-{pid}".replace("_", "-"), "profile": pid, "bus": bus, "unit_id": i})
        want[f"dev-{pid}".replace("_", "-")] = _expected_modbus(profile, i)
    return units, devices, want


def test_every_modbus_point_over_tcp(mosquitto, topic_prefix, tmp_path: Path, peers) -> None:
    units, devices, want = _modbus_devices("plc")
    peer = ModbusTcpPeer(units)
    peers.append(peer)
    gw = gateway([{"kind": "modbus_tcp", "id": "plc", "port": peer.port}], devices)
    with recorder(mosquitto, topic_prefix, "dec-tcp") as rec:
        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "state")
        assert run_until(agent, lambda: len(latest_values(rec)) == len(devices)
                         and all(len(v) == len(want[d]) for d, v in latest_values(rec).items()))
        got = latest_values(rec)
    for dev, points in want.items():
        _check(got[dev], points, dev)
    # strict maps answer "illegal data address" for holes: the planner split and kept the split
    assert any(p.splits for p in agent.drivers["plc"].plans.values())  # type: ignore[attr-defined]


def test_every_modbus_point_over_serial_pty(mosquitto, topic_prefix, tmp_path: Path, peers) -> None:
    units, devices, want = _modbus_devices("rs485")
    peer = ModbusRtuPeer(units, baud=115200)
    peers.append(peer)
    link = tmp_path / "ttyUSB0"
    link.symlink_to(peer.bridge.client_path)
    gw = gateway([{"kind": "modbus_rtu", "id": "rs485", "serial_port": str(link), "baud_rate": 115200}], devices, poll_s=0.5)
    with recorder(mosquitto, topic_prefix, "dec-rtu") as rec:
        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "state")
        assert run_until(agent, lambda: len(latest_values(rec)) == len(devices)
                         and all(len(v) == len(want[d]) for d, v in latest_values(rec).items()), 30)
        got = latest_values(rec)
    for dev, points in want.items():
        _check(got[dev], points, dev)


def _opcua_run(mosquitto, topic_prefix, tmp_path: Path, peers, security: dict[str, str], users) -> None:
    devices = [(f"SS1.{pid.upper()}", prof) for pid, prof in sorted(OPCUA_PROFILES.items())]
    peer = OpcuaPeer(devices, free_port(), tmp_path, users=users, salt=3)
    peers.append(peer)
    bus = {"kind": "opcua", "id": "rtu", "endpoint": peer.endpoint, **security}
    if security.get("security_mode", "None") != "None":  # pinned: the peer's own certificate
        bus["server_certificates"] = [str(tmp_path / "server-cert.der")]
    gw = gateway([bus], [{"id": f"bay-{prof.id}".replace("_", "-"), "profile": prof.id, "bus": "rtu",
                          "node_prefix": prefix} for prefix, prof in devices])
    want = {f"bay-{prof.id}".replace("_", "-"): {p.name: sample_raw(p, 3) for p in prof.points}
            for _, prof in devices}
    with recorder(mosquitto, topic_prefix, "dec-ua") as rec:
        agent = make_agent(gw, mosquitto, topic_prefix, tmp_path / "state")
        assert run_until(agent, lambda: len(latest_values(rec)) == len(want)
                         and all(len(v) == len(want[d]) and all(q == "good" for _, q in v.values())
                                 for d, v in latest_values(rec).items()), 30)
        got = latest_values(rec)
    for dev, points in want.items():
        _check(got[dev], points, dev)
    if security.get("security_mode", "None") != "None":
        assert (tmp_path / "state" / "opcua" / "gw-test-cert.der").exists()  # generated on first start


def test_every_opcua_point_without_security(mosquitto, topic_prefix, tmp_path: Path, peers) -> None:
    _opcua_run(mosquitto, topic_prefix, tmp_path, peers, {}, None)


def test_every_opcua_point_basic256sha256_sign_and_encrypt_with_password(
        mosquitto, topic_prefix, tmp_path: Path, peers) -> None:
    _opcua_run(mosquitto, topic_prefix, tmp_path, peers,
               {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt",
                "username": "edge", "password": "s3cret"}, {"edge": "s3cret"})


def test_every_opcua_point_aes128_sign(mosquitto, topic_prefix, tmp_path: Path, peers) -> None:
    _opcua_run(mosquitto, topic_prefix, tmp_path, peers,
               {"security_policy": "Aes128_Sha256_RsaOaep", "security_mode": "Sign"}, None)
