"""Edge agent benchmark: one agent polling 200 Modbus TCP devices of 40 points each at 1 s.

Starts its own Mosquitto and two pymodbus server processes (100 devices each, every value
changing at every read, so every poll sends every point: the worst case for report by
exception), then runs ``aquavolt edge run`` as a process and measures:

1. the nominal load (1 s polls, 8,000 readings/s): the agent's CPU share of one core (CPU
   time of the agent process, not wall time), the CPU microseconds per reading polled and
   published (``cpu_us_per_reading``), its peak RSS, and whether every device was polled
   every second (``poll_period_held``); then, after that window, where the agent's time goes
   (py-spy samples of the agent at the same load, ``profile_pct``);
2. the most readings per second one agent sustains (polls every 0.1 s: 80,000/s asked;
   counted as received by a subscriber);
3. the replay rate after a 10 s broker outage.

The broker listens with TLS (certificates of a local CA), as on a real gateway's link.
The ceiling measured in the same run: requests/s of one bare pymodbus client against the
same servers, and what 200 devices at 1 s need of it. Last line: one JSON object.
Usage: .venv/bin/python bench/edge.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
N_DEVICES = 200
N_POINTS = 40
PER_SERVER = 100
GOAL_CPU_PCT = 8  # of one core here: about 25 % of a Raspberry Pi 4 core
GOAL_RSS_MB = 60
GOAL_US_PER_READING = 10  # 8 % of a core over 8,000 readings/s

PROFILE = {
    "id": "bench_meter40", "protocol": "modbus", "vendor": "bench", "address_base": 0,
    "points": [{"name": f"p{i:02d}", "address": i, "table": "holding", "type": "uint16", "scale": 0.1}
               for i in range(N_POINTS)],
}


def serve(first_port: int, count: int) -> None:
    """A process serving ``count`` devices on consecutive ports; values change each second."""
    from pymodbus.datastore import ModbusServerContext
    from pymodbus.server import ModbusTcpServer

    regs = [0] * N_POINTS
    reads = [0]

    class Ctx(ModbusServerContext):
        def __init__(self) -> None:
            self.simdevices = []
            self.old_simulator = True

        async def async_getValues(self, device_id: int, fc: int, address: int, count: int = 1) -> Any:
            reads[0] += 1  # every read sees new values: every poll sends every point
            return [(r + reads[0]) % 60000 for r in regs[address: address + count]]

        async def async_setValues(self, device_id: int, fc: int, address: int, values: Any) -> Any:
            return None

        def device_ids(self) -> list[int]:
            return [1]

    async def main() -> None:
        servers = []
        for k in range(count):
            s = ModbusTcpServer(Ctx(), address=("127.0.0.1", first_port + k))
            await s.serve_forever(background=True)
            servers.append(s)
        print("ready", flush=True)
        t = 0
        while True:
            t += 1
            for i in range(N_POINTS):
                regs[i] = (t * 7 + i) % 60000
            await asyncio.sleep(1.0)

    asyncio.run(main())


def free_ports(n: int) -> int:
    """A base port with n free consecutive ports."""
    import socket

    for base in range(21000, 60000, 500):
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def baseline(port: int, seconds: float = 2.0) -> float:
    from pymodbus.client import AsyncModbusTcpClient

    async def run() -> float:
        c = AsyncModbusTcpClient("127.0.0.1", port=port)
        await c.connect()
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            await c.read_holding_registers(0, count=N_POINTS, device_id=1)
            n += 1
        c.close()
        return n / (time.monotonic() - t0)

    return asyncio.run(run())


# Where a sample's time goes: the innermost frame whose file matches, from the leaf up;
# the standard library's plumbing (asyncio, selectors, threading, ...) is charged to the
# caller that matches, and to "event loop" only when nothing else does.
CATEGORIES = (
    ("modbus_client", ("/pymodbus/",)),
    ("tls", ("/ssl.py",)),
    ("publish", ("/paho/", "edge/link.py", "/orjson")),
    ("store", ("edge/store.py", "/sqlite3/")),
    ("report_by_exception", ("edge/report.py",)),
    ("decode", ("edge/planner.py", "aquavolt/codec.py")),
    ("health", ("edge/agent.py:health", "edge/agent.py:_health")),
    ("poll_loop", ("edge/agent.py", "edge/drivers/")),
)


def categorise(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, marks in CATEGORIES:
            if any(m in frame for m in marks):
                return name
    if any("/asyncio/" in f or "selectors.py" in f for f in stack):
        return "event_loop"
    return "other"


def profile(pid: int, out: Path, seconds: int = 10) -> dict[str, Any]:
    """Samples the agent with py-spy at 200 Hz (GIL holders and running threads only) and
    returns the share of samples per category; without py-spy (or ptrace), says so."""
    spy = Path(sys.executable).with_name("py-spy")
    try:
        subprocess.run([str(spy), "record", "--pid", str(pid), "--duration", str(seconds),
                        "--rate", "200", "--nonblocking", "--format", "raw", "--full-filenames",
                        "--output", str(out)], check=True, capture_output=True, timeout=seconds + 30)
    except (OSError, subprocess.SubprocessError) as e:
        return {"profile_error": str(e)[:200]}
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = []  # "function (path:line)" -> "path:function"
        for f in stack.split(";"):
            func, _, where = f.partition(" (")
            frames.append(where.rsplit(":", 1)[0] + ":" + func)
        cat = categorise(frames)
        counts[cat] = counts.get(cat, 0) + int(n)
    total = sum(counts.values()) or 1
    return {"profile_samples": total,
            "profile_pct": {k: round(100 * v / total, 1)
                            for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}}


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak_rss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            try:
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system


def main() -> None:
    from aquavolt.harness.servers import Mosquitto
    from aquavolt.mqtt import Recorder
    from aquavolt.wire import decode_batch

    work = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    (work / "profiles").mkdir()
    (work / "profiles" / "bench_meter40.yaml").write_text(yaml.safe_dump(PROFILE))
    base = free_ports(N_DEVICES)
    servers = [subprocess.Popen([sys.executable, __file__, "--serve", str(base + k), str(PER_SERVER)],
                                stdout=subprocess.PIPE, text=True)
               for k in range(0, N_DEVICES, PER_SERVER)]
    for s in servers:
        assert s.stdout is not None and s.stdout.readline().strip() == "ready"
    broker = Mosquitto(work / "mosquitto", tls=True)
    broker.start()
    ceiling = baseline(base)
    agent: subprocess.Popen[bytes] | None = None
    result: dict[str, Any] = {}

    def gateway_file(poll_s: float) -> Path:
        gw = {"id": "gw-bench", "site": "bench", "poll_intervals_s": {"default": poll_s},
              "buses": [{"kind": "modbus_tcp", "id": f"b{i}", "host": "127.0.0.1", "port": base + i}
                        for i in range(N_DEVICES)],
              "devices": [{"id": f"d{i:03d}", "profile": "bench_meter40", "bus": f"b{i}", "unit_id": 1}
                          for i in range(N_DEVICES)]}
        path = work / f"gw-{poll_s}.yaml"
        path.write_text(yaml.safe_dump(gw))
        return path

    def start_agent(poll_s: float, state: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "AQUAVOLT_MQTT_URL": broker.url(), "AQUAVOLT_LOG_LEVEL": "WARNING"}
        env.pop("AQUAVOLT_CLOCK", None)
        return subprocess.Popen(
            [sys.executable, "-m", "aquavolt.cli", "edge", "run", str(gateway_file(poll_s)),
             "--profiles-dir", str(work / "profiles"), "--state-dir", str(work / state),
             "--health-interval-s", "2"], cwd=ROOT, env=env, stderr=open(work / "agent.log", "ab"))

    def health_polls(rec: Recorder) -> dict[str, int] | None:
        hs = [m for m in rec.snapshot() if m.topic.endswith("/health")]
        return {d: v["polls"] for d, v in json.loads(hs[-1].payload)["devices"].items()} if hs else None

    def readings(rec: Recorder, historical: bool | None = None) -> int:
        n = 0
        for m in rec.snapshot():
            if m.topic.endswith("/data"):
                b = decode_batch(m.payload)
                if historical is None or b.historical == historical:
                    n += len(b.readings)
        return n

    try:
        # 1. nominal load
        with Recorder(broker.settings(), ["aquavolt/v1/gw/#"], client_id="bench-sub") as rec:
            agent = start_agent(1.0, "s1")
            sampler = Sampler(agent.pid)
            sampler.start()
            started = time.monotonic()  # a loaded machine may take several seconds to start it
            while health_polls(rec) is None and time.monotonic() - started < 60:
                time.sleep(0.25)
            time.sleep(4.0)  # warm up: connections, first polls
            p0, c0, t0 = health_polls(rec), sampler.cpu(), time.monotonic()
            r0 = readings(rec)
            time.sleep(20.0)
            p1, c1, t1 = health_polls(rec), sampler.cpu(), time.monotonic()
            r1 = readings(rec)
            window = t1 - t0
            assert p0 and p1
            worst = min(p1[d] - p0.get(d, 0) for d in p1)
            result.update(
                cpu_pct_of_one_core=round(100 * (c1 - c0) / window, 1),
                cpu_us_per_reading=round(1e6 * (c1 - c0) / max(r1 - r0, 1), 2),
                peak_rss_mb=round(sampler.peak_rss / 2**20, 1),
                poll_period_held=worst >= int(window / 1.0) - 2,
                nominal_readings_per_s=round((r1 - r0) / window),
                nominal_worst_device_polls=worst, nominal_window_s=round(window, 1),
            )
            result.update(profile(agent.pid, work / "profile.txt"))
            agent.terminate()
            agent.wait(20)
            sampler.stop.set()
        # 2. as fast as it goes: polls asked every 0.1 s
        with Recorder(broker.settings(), ["aquavolt/v1/gw/+/dev/+/data"], client_id="bench-sub2") as rec:
            agent = start_agent(0.1, "s2")
            sampler = Sampler(agent.pid)
            sampler.start()
            time.sleep(5.0)
            r0, c0, t0 = readings(rec), sampler.cpu(), time.monotonic()
            time.sleep(12.0)
            r1, c1, t1 = readings(rec), sampler.cpu(), time.monotonic()
            result.update(max_readings_per_s=round((r1 - r0) / (t1 - t0)),
                          max_load_cpu_pct_of_one_core=round(100 * (c1 - c0) / (t1 - t0), 1),
                          max_load_peak_rss_mb=round(sampler.peak_rss / 2**20, 1))
            agent.terminate()
            agent.wait(20)
            sampler.stop.set()
        # 3. replay after a 10 s outage at the nominal load
        agent = start_agent(1.0, "s3")
        time.sleep(4.0)
        broker.stop()
        time.sleep(10.0)
        with_backlog = time.monotonic()
        broker.start()
        with Recorder(broker.settings(), ["aquavolt/v1/gw/+/dev/+/data"], client_id="bench-sub3") as rec:
            deadline = time.monotonic() + 40
            last_n, last_change = -1, time.monotonic()
            while time.monotonic() < deadline:
                n = readings(rec, historical=True)
                if n != last_n:
                    last_n, last_change = n, time.monotonic()
                elif n > 0 and time.monotonic() - last_change > 2.0:
                    break
                time.sleep(0.25)
            hist = [m.received for m in rec.snapshot() if b'"historical":true' in m.payload]
            span = (hist[-1] - hist[0]) if len(hist) > 1 else float("nan")
            result.update(replay_readings_per_s=round(last_n / span) if span == span and span > 0 else 0,
                          replayed_readings=last_n, outage_s=10.0,
                          replay_drain_s=round(span, 2),
                          reconnect_after_s=round(time.monotonic() - with_backlog, 1))
        agent.terminate()
        agent.wait(20)
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        for s in servers:
            s.terminate()
            s.wait(10)
        broker.stop()
    result.update(ceiling_modbus_requests_per_s_one_client=round(ceiling),
                  needed_requests_per_s=N_DEVICES, tls=True, goal_cpu_pct=GOAL_CPU_PCT,
                  goal_rss_mb=GOAL_RSS_MB, goal_cpu_us_per_reading=GOAL_US_PER_READING)
    result["goals_met"] = bool(result["cpu_pct_of_one_core"] < GOAL_CPU_PCT
                               and result["peak_rss_mb"] < GOAL_RSS_MB and result["poll_period_held"])
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
