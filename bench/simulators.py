"""Simulator benchmark: Modbus reads one simulator process serves, and the wall time of one
simulated day (demo field, generated 5,000-customer field) at full acceleration.

    .venv/bin/python bench/simulators.py [--seconds 8] [--clients 4]

- ``reads_per_s``: Modbus requests per second (10 holding registers each, rotating over
  the unit ids of the demo's biggest concentrator) that one ``aquavolt sim run`` process
  answers to ``--clients`` pymodbus clients on loopback; ``ceiling_reads_per_s`` is the
  same load against a bare pymodbus server with a static datastore, in the same run.
- ``demo_day_s`` / ``field5000_day_s``: wall seconds to step the model through 24 h at the
  live 10 s step and encode every Modbus device's registers once per simulated hour (what
  serving an hourly meter poll costs; a read costs what ``reads_per_s`` says). Goal: under
  86.4 s (1000x). ``*_model_day_s``: the model steps alone.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aquavolt.clock import SimClock, parse_instant  # noqa: E402
from aquavolt.config import load_field  # noqa: E402
from aquavolt.harness.relocate import relocate_file  # noqa: E402
from aquavolt.harness.servers import free_port  # noqa: E402
from aquavolt.profiles import ModbusProfile  # noqa: E402
from aquavolt.simulators.generate import generate  # noqa: E402
from aquavolt.simulators.sim import Simulation  # noqa: E402

START = "2026-06-01T00:00:00Z"

_BARE = """
import asyncio, sys
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncTcpServer
devs = {u: ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, list(range(100)))) for u in range(1, 121)}
asyncio.run(StartAsyncTcpServer(ModbusServerContext(devices=devs, single=False),
                                address=("127.0.0.1", int(sys.argv[1]))))
"""


async def _hammer(port: int, seconds: float, clients: int, units: list[int]) -> int:
    from pymodbus.client import AsyncModbusTcpClient

    done = 0
    stop = time.monotonic() + seconds

    async def one(k: int) -> None:
        nonlocal done
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        for _ in range(100):
            if await c.connect():
                break
            await asyncio.sleep(0.1)
        i = k
        while time.monotonic() < stop:
            r = await c.read_holding_registers(0, count=10, device_id=units[i % len(units)])
            if not r.isError():
                done += 1
            i += clients
        c.close()

    await asyncio.gather(*(one(k) for k in range(clients)))
    return done


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(port)


def reads(tmp: Path, seconds: float, clients: int) -> tuple[float, float]:
    field = relocate_file(ROOT / "examples" / "demo-town.yaml", tmp / "demo.yaml")
    data = yaml.safe_load(field.read_text())
    gw = next(g for g in data["gateways"] if g["id"] == "gw-meters-b")
    port = next(b["port"] for b in gw["buses"] if b["id"] == "conc-b-water")
    units = list(range(1, 121))
    sim = subprocess.Popen([sys.executable, "-m", "aquavolt.cli", "sim", "run", str(field), "--start", START,
                            "--acceleration", "1000", "--state-dir", str(tmp / "state")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, sim)
        n = asyncio.run(_hammer(port, seconds, clients, units))
    finally:
        sim.terminate()
        sim.wait(20)
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", _BARE, str(bare_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(bare_port, bare)
        m = asyncio.run(_hammer(bare_port, seconds, clients, units))
    finally:
        bare.terminate()
        bare.wait(20)
    return n / seconds, m / seconds


def day(path: Path) -> tuple[float, float]:
    """(with hourly encoding of every Modbus device, model steps alone) in wall seconds."""
    loaded = load_field(path)
    t0 = parse_instant(START)
    modbus = [d for d in loaded.field.devices if isinstance(loaded.profile_of(d), ModbusProfile)]
    out = []
    for serve in (True, False):
        began = time.monotonic()
        sim = Simulation(loaded, 1, t0, SimClock(t0, 1e-6), step_s=10.0)
        for k in range(1, 25):
            sim.model.advance(t0 + k * 3600)
            if serve:
                for d in modbus:
                    sim.image(d)
        out.append(time.monotonic() - began)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rps, ceiling = reads(tmp, args.seconds, args.clients)
        print(f"reads: {rps:.0f}/s (bare pymodbus {ceiling:.0f}/s)", flush=True)
        demo_s, demo_model_s = day(ROOT / "examples" / "demo-town.yaml")
        print(f"demo day: {demo_s:.1f} s (model alone {demo_model_s:.1f} s)", flush=True)
        big = tmp / "f5000.yaml"
        big.write_text(yaml.safe_dump(generate(5000, pumps=4, substations=2)))
        big_s, big_model_s = day(big)
        print(f"5000-customer day: {big_s:.1f} s (model alone {big_model_s:.1f} s)", flush=True)
    print(json.dumps({"reads_per_s": round(rps), "ceiling_reads_per_s": round(ceiling),
                      "reads_vs_ceiling": round(rps / ceiling, 3) if ceiling else None,
                      "demo_day_s": round(demo_s, 2), "field5000_day_s": round(big_s, 2),
                      "demo_model_day_s": round(demo_model_s, 2),
                      "field5000_model_day_s": round(big_model_s, 2),
                      "goal_day_s": 86.4, "clients": args.clients, "seconds": args.seconds}))


if __name__ == "__main__":
    main()
