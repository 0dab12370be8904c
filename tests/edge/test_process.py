"""The agent as a process: killed with SIGKILL and restarted it loses nothing; a bad
gateway config fails at start naming the file, the path and the reason; the sample
configs of edge/README.md load."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import MODBUS_PROFILES, ModbusTcpPeer, Unit
from helpers import batches, durable, gateway, seq_report, write_gateway_file

from aquavolt.edge.config import load_gateway, load_settings
from aquavolt.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
LEVEL = MODBUS_PROFILES["av_level1"]


def _agent(gw_file: Path, state: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AQUAVOLT_MQTT_URL": url}
    env.pop("AQUAVOLT_CLOCK", None)
    return subprocess.Popen(
        [sys.executable, "-m", "aquavolt.cli", "edge", "run", str(gw_file), "--state-dir", str(state),
         "--health-interval-s", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "ab"), start_new_session=True)


def _next_seq(state: Path) -> int:
    db = sqlite3.connect(state / "queue.sqlite")
    try:
        return int(db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])
    finally:
        db.close()


def test_sigkill_and_restart_loses_nothing(mosquitto, topic_prefix, tmp_path: Path, peers) -> None:
    unit = Unit().fill(LEVEL)
    peer = ModbusTcpPeer({1: unit})
    peers.append(peer)
    stop = threading.Event()

    def tick() -> None:
        n = 0
        while not stop.wait(0.05):
            n += 1
            unit.set_point(LEVEL, "level_m", n * 10)

    ticker = threading.Thread(target=tick, name="ticker")
    ticker.start()
    gw = gateway([{"kind": "modbus_tcp", "id": "plc", "port": peer.port}],
                 [{"id": "tank", "profile": "av_level1", "bus": "plc", "unit_id": 1}], poll_s=0.1)
    gw_file = write_gateway_file(gw, tmp_path / "gw.yaml")
    state = tmp_path / "state"
    url = f"{mosquitto.url()}?prefix={topic_prefix}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with durable(mosquitto, topic_prefix, "kill9") as sub:
            procs.append(_agent(gw_file, state, url, tmp_path / "agent.log"))
            assert sub.wait_for(lambda _m: len(batches(sub)) >= 5, 20), (tmp_path / "agent.log").read_text()
            mosquitto.stop()  # from now on, batches pile up in the agent's store
            time.sleep(1.5)
            os.kill(procs[0].pid, signal.SIGKILL)
            procs[0].wait(5)
            written = _next_seq(state)  # every seq the killed agent had committed
            mosquitto.start()
            procs.append(_agent(gw_file, state, url, tmp_path / "agent.log"))
            assert sub.wait_for(lambda _m: set(range(written + 5)) <= {b.seq for b in batches(sub)}, 30), \
                (written, seq_report(batches(sub))[1][:20])
            procs[1].send_signal(signal.SIGTERM)
            assert procs[1].wait(15) == 0
            data = batches(sub)
    finally:
        stop.set()
        ticker.join()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    seqs, missing = seq_report(data)
    assert missing == [] and seqs[0] == 0
    first_session = {b.bd_seq for b in data if b.seq < written}
    assert first_session == {0} and {b.bd_seq for b in data if b.seq >= written} == {1}
    assert any(b.historical for b in data if b.seq < written)  # replayed from the store
    levels = [r.value for b in sorted(data, key=lambda b: b.seq) for r in b.readings if r.point == "level_m"]
    assert levels == sorted(levels)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aquavolt.cli", "edge", "run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_bad_gateway_file_fails_at_start_with_file_path_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "gw.yaml"
    bad.write_text("id: gw-x\nsite: s\nbuses:\n  - {kind: modbus_tcp, id: plc, port: 502}\n"
                   "devices:\n  - {id: p1, profile: av_pump1, bus: plc, unit_id: 300}\n"
                   "  - {id: p2, profile: no_such_profile, bus: plc, unit_id: 2}\n")
    res = _run_cli(str(bad), "--state-dir", str(tmp_path / "s"))
    assert res.returncode == 1
    assert f"{bad}: devices[0].unit_id: unit id 300 is outside 1..247" in res.stderr
    assert f"{bad}: devices[1].profile" in res.stderr
    assert not (tmp_path / "s").exists()  # nothing started


def test_bad_field_file_fails_with_line_and_path(tmp_path: Path) -> None:
    src = (ROOT / "examples" / "demo-town.yaml").read_text()
    bad = tmp_path / "field.yaml"
    bad.write_text(src.replace("{kind: modbus_tcp, id: plc, host: 127.0.0.1, port: 15020}",
                               "{kind: modbus_tcp, id: plc, host: 127.0.0.1, port: 99999}"))
    res = _run_cli(str(bad), "--gateway", "gw-pumping")
    assert res.returncode == 1
    assert f"{bad}:24: gateways[0].buses[0].port" in res.stderr and "65535" in res.stderr
    res = _run_cli(str(ROOT / "examples" / "demo-town.yaml"), "--gateway", "gw-nowhere")
    assert res.returncode == 1 and "no gateway 'gw-nowhere'" in res.stderr


def test_readme_sample_configs_load() -> None:
    cfg = load_gateway(ROOT / "edge" / "examples" / "gateway.yaml", None)
    assert cfg.gateway.id == "gw-pumping" and len(cfg.gateway.devices) == 5
    settings = load_settings(ROOT / "edge" / "examples" / "edge-settings.yaml")
    assert settings.store_max_mb == 256
    with pytest.raises(ConfigError):
        load_settings(ROOT / "edge" / "examples" / "gateway.yaml")
