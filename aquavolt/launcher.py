"""``aquavolt demo``: a live simulated field, every component its own process.

Starts a local Mosquitto and InfluxDB under a work folder, then the simulator, one edge
agent per gateway, the collector and the rules engine, each as ``aquavolt <component> ...``
in its own process, all on the same simulated clock. Components that are not installed are
named and skipped. A process that dies is reported and restarted. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO

from aquavolt.clock import SimClock, parse_instant
from aquavolt.config import load_field
from aquavolt.services import InfluxDB, Mosquitto


def available_components() -> dict[str, str | None]:
    """Component name -> None when it loads, else why it does not."""
    out: dict[str, str | None] = {}
    for ep in entry_points(group="aquavolt.commands"):
        try:
            ep.load()
            out[ep.name] = None
        except ImportError as exc:
            out[ep.name] = str(exc)
    return out


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.log is not None:
            self.log.close()
            self.log = None


def plan(field_path: Path, workdir: Path, have: dict[str, str | None]) -> list[Child]:
    loaded = load_field(field_path)
    exe = [sys.executable, "-m", "aquavolt.cli"]
    children: list[Child] = []
    if have.get("sim") is None:
        children.append(Child("sim", [*exe, "sim", "run", str(field_path)], workdir / "sim.log"))
    if have.get("edge") is None:
        for gw in loaded.field.gateways:
            children.append(Child(
                f"edge:{gw.id}",
                [*exe, "edge", "run", str(field_path), "--gateway", gw.id,
                 "--state-dir", str(workdir / "edge" / gw.id)],
                workdir / f"edge-{gw.id}.log",
            ))
    if have.get("collector") is None:
        children.append(Child("collector", [*exe, "collector", "run"], workdir / "collector.log"))
    if have.get("rules") is None:
        children.append(Child("rules", [*exe, "rules", "run", str(field_path),
                                        "--state-dir", str(workdir / "rules")],
                              workdir / "rules.log"))
    return children


def run_demo(args: argparse.Namespace) -> int:
    field_path = Path(args.field).resolve()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    have = available_components()
    missing = sorted(n for n in ("sim", "edge", "collector", "rules") if have.get(n, "absent"))
    if missing:
        print(f"aquavolt demo: not yet available, skipped: {', '.join(missing)}")
    mosq = Mosquitto(workdir / "mosquitto")
    influx = InfluxDB(workdir / "influxdb")
    mosq.start()
    influx.start()
    clock = SimClock(parse_instant(args.start), args.acceleration)
    env = {**os.environ, "AQUAVOLT_MQTT_URL": mosq.url(), "AQUAVOLT_INFLUX_URL": influx.url + "/aquavolt",
           "AQUAVOLT_CLOCK": clock.spec()}
    print(f"aquavolt demo: Mosquitto on {mosq.url()}, InfluxDB on {influx.url} (database aquavolt)")
    print(f"aquavolt demo: simulated clock from {args.start} at {args.acceleration:g}x; logs in {workdir}")
    children = plan(field_path, workdir, have)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    for c in children:
        c.start(env)
        print(f"aquavolt demo: started {c.name} (pid {c.proc.pid if c.proc else '?'})")
    deadline = time.monotonic() + args.duration_s if args.duration_s else None
    try:
        while not stop and (deadline is None or time.monotonic() < deadline):
            for c in children:
                if c.proc is not None and c.proc.poll() is not None:
                    print(f"aquavolt demo: {c.name} exited with {c.proc.returncode}; restarting "
                          f"(see {c.log_path})")
                    c.stop()
                    c.restarts += 1
                    c.start(env)
            time.sleep(0.5)
    finally:
        for c in reversed(children):
            c.stop()
        influx.stop()
        mosq.stop()
    print(f"aquavolt demo: stopped. Data kept in {workdir}")
    return 0


def register_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run a live simulated field (every component its own process)")
    p.add_argument("field", help="field YAML file")
    p.add_argument("--workdir", default="var/demo", help="where servers keep data and logs")
    p.add_argument("--start", default="2026-06-01T00:00:00Z", help="simulated start instant")
    p.add_argument("--acceleration", type=float, default=120.0, help="simulated seconds per second")
    p.add_argument("--duration-s", type=float, default=0.0, help="stop after this many seconds")
    p.set_defaults(func=run_demo)
