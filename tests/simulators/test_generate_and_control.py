"""Generated scale fields pass the kernel's check; the live fault endpoints (HTTP, MQTT) and
the `sim run` command with a scenario."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import yaml

from aquavolt.config import load_field
from aquavolt.harness.servers import free_port
from aquavolt.mqtt import make_client
from aquavolt.simulators.control import MqttFaults, start_http
from aquavolt.simulators.generate import generate
from aquavolt.simulators.sim import Simulation


def test_generated_field_passes_check(tmp_path):
    data = generate(600, pumps=3, substations=2, seed=5)
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(data))
    loaded = load_field(path)
    f = loaded.field
    assert len(f.customers) == 600
    assert len(f.water.pumps) == 3 and len(f.electricity.substations) == 2
    for gw in f.gateways:
        for bus in gw.buses:
            units = [d.unit_id for d in gw.devices if d.bus == bus.id and d.unit_id is not None]
            assert len(units) == len(set(units)) and all(1 <= u <= 247 for u in units)
    out = subprocess.run([sys.executable, "-m", "aquavolt.cli", "check", str(path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr


def test_http_fault_endpoint(demo, h):
    clock = h.frozen_clock()
    sim = Simulation(demo, 1, clock.now(), clock)
    port = free_port()

    async def main():
        runner = await start_http(sim, port)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s:
            r = await s.post(f"{base}/faults", json={"kind": "pump_trip", "target": "pump-1", "id": "t1"})
            assert r.status == 201 and (await r.json())["active"] is True
            r = await s.post(f"{base}/faults", json={"kind": "zone_leak", "target": "nowhere"})
            assert r.status == 400 and "nowhere" in (await r.json())["error"]
            r = await s.post(f"{base}/faults", json={"kind": "sensor_drift", "target": "pump-1"})
            assert r.status == 400  # needs point
            listed = await (await s.get(f"{base}/faults")).json()
            assert [f["id"] for f in listed["faults"]] == ["t1"]
            clock.start += 20
            values = await (await s.get(f"{base}/devices/pump-1")).json()
            assert values["fault"] is True and values["fault_code"] == 17
            r = await s.delete(f"{base}/faults/t1")
            assert r.status == 200 and (await r.json())["active"] is False
            assert (await s.delete(f"{base}/faults/nope")).status == 404
        await runner.cleanup()

    asyncio.run(main())


async def _until(pred, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return False


def test_mqtt_fault_topic(demo, h, mosquitto, topic_prefix):
    clock = h.frozen_clock()
    sim = Simulation(demo, 1, clock.now(), clock)
    settings = mosquitto.settings().model_copy(update={"prefix": topic_prefix})

    async def main():
        mq = MqttFaults(sim, settings, asyncio.get_running_loop())
        mq.start()
        await asyncio.wait_for(mq.subscribed.wait(), 10)
        pub = make_client(settings, "test-sim-fault-pub")
        pub.connect(settings.host, settings.port)
        pub.loop_start()
        pub.publish(f"{topic_prefix}/sim/fault", json.dumps(
            {"kind": "customer_leak", "target": "c0002", "id": "leak", "rate_lph": 20}), qos=1).wait_for_publish(5)
        # bounded waits on the fault's arrival (generous: a loaded machine delivers late, never wrongly)
        await _until(lambda: "leak" in sim.faults.faults, 30)
        pub.publish(f"{topic_prefix}/sim/fault", json.dumps({"end": "leak"}), qos=1).wait_for_publish(5)
        await _until(lambda: bool(sim.faults.faults.get("leak")) and sim.faults.faults["leak"].end < float("inf"),
                     30)
        pub.loop_stop()
        pub.disconnect()
        mq.stop()

    asyncio.run(main())
    assert sim.faults.faults["leak"].params["rate_lph"] == 20
    assert sim.faults.faults["leak"].end < float("inf")


def test_sim_run_command_serves_a_scenario(demo_path, tmp_path):
    """`aquavolt sim run --scenario` in its own process: servers up, the fault on time, a clean
    stop on SIGTERM; and with ``--exit-at-end`` it ends by itself at the scenario's end. No
    result depends on the machine's speed: the run is long enough for the fault to be seen
    however late the test looks, and is then stopped."""
    port = free_port()

    def scenario(name: str, duration: str) -> Path:
        sc = tmp_path / name
        sc.write_text(yaml.safe_dump({
            "field": str(demo_path), "start": "2026-06-01T00:00:00Z", "duration": duration, "acceleration": 3600,
            "seed": 4, "faults": [{"kind": "pump_trip", "target": "pump-1", "at": "1h", "id": "trip"}]}))
        return sc

    def start(sc: Path, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "aquavolt.cli", "sim", "run", "--scenario", str(sc),
                                 "--http-port", str(port), "--state-dir", str(tmp_path / sc.stem), *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    proc = start(scenario("long.yaml", "1000h"))  # 1,000 s of wall time: stopped long before
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "ready" in line:
                break
        text = "".join(lines)
        assert "modbus_rtu gw-meters-a/rs485-a on" in text and "opcua gw-substation/rtu" in text
        deadline = time.monotonic() + 120  # the trip is 1 s of wall time in; a loaded machine answers late
        seen = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/devices/pump-1", timeout=10) as r:
                    seen = json.loads(r.read())
            except (TimeoutError, OSError):
                continue
            if seen["fault"]:
                break
            time.sleep(0.1)
        assert seen is not None and seen["fault"] is True and seen["fault_code"] == 17
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        # --exit-at-end: the same scenario an hour and a half long ends by itself
        proc = start(scenario("short.yaml", "90m"), "--exit-at-end")
        assert proc.wait(timeout=120) == 0, proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
