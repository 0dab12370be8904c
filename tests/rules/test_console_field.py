"""The operator's console in a real headless Chromium, end to end through a real field: the
simulator's own Modbus server for the pumping station (``aquavolt.simulators``, in this
process), the real edge agent (``aquavolt edge run``), the rules engine signing commands
and the collector, as processes on the real Mosquitto and InfluxDB fixtures.

An operator sends a speed setpoint to a pump from the page: the engine signs it, the agent
checks it, writes the simulator's register and reads it back, and the page shows "written
and verified" with the value read; the simulated pump runs at that setpoint. A pump trip in
the simulator raises an alarm that the page shows; acknowledged in the page, the engine's
transition reaches InfluxDB through the collector (measurement ``alarm_event``, by the
operator). Every wait is on the DOM, an MQTT message or a query that answers.

The browser plumbing (Debian's chromium driven by Playwright for Python's sync API) is
tests/rules/test_console_browser.py's."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aquavolt.clock import RealClock
from aquavolt.config import load_field
from aquavolt.faults import FaultSpec
from aquavolt.harness.servers import InfluxDB, Mosquitto, free_port
from aquavolt.influx import Influx
from aquavolt.mqtt import Recorder
from aquavolt.settings import InfluxSettings
from aquavolt.signing import generate_key, public_key_text, write_private_key
from aquavolt.simulators.modbus import start_tcp, units_of
from aquavolt.simulators.sim import Simulation
from aquavolt.wire import Progress, Topics, decode

sys.path.insert(0, str(Path(__file__).parent))
from test_console_browser import TOKENS, browser, sign_in, wait  # its browser plumbing

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "gw-pumping"
WAIT_S = 15.0


class FieldServer:
    """The simulated small town's pumping-station bus, served by the simulator's Modbus TCP
    server on an event loop of its own (a thread of this process), on the wall clock."""

    def __init__(self, field: Path) -> None:
        self.sim = Simulation(load_field(field), 7, time.time(), RealClock(), step_s=0.5)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sim-modbus", daemon=True)
        self.thread.start()
        gw = self.sim.loaded.field.gateway(GATEWAY)
        bus = gw.buses[0]
        self.server = self.call(start_tcp(self.sim, bus, units_of(self.sim, bus.id, GATEWAY)))  # type: ignore[arg-type]

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def values(self, device: str) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            self.sim.sync()
            return self.sim.values(device)

        return self.call(read())  # type: ignore[no-any-return]

    def trip(self, pump: str) -> None:
        async def add() -> None:
            self.sim.add_fault(FaultSpec(id=f"trip-{pump}", kind="pump_trip", target=pump, fault_code=17))

        self.call(add())

    def close(self) -> None:
        self.call(self.server.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _field(tmp: Path) -> Path:
    """The small town with its pumping station on a free port, polled every half second, and
    the engine's wait for late messages shortened to match (one gateway runs here: the other
    gateways' buses are never opened)."""
    data = yaml.load((ROOT / "examples/small-town.yaml").read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    gw = next(g for g in data["gateways"] if g["id"] == GATEWAY)
    gw["poll_intervals_s"] = {"default": 0.5, "slow": 600.0}
    data["rules"].setdefault("event_time", {})["allowed_lateness_s"] = 0.5
    (bus,) = gw["buses"]
    bus["port"] = free_port()
    field = tmp / "field.yaml"
    field.write_text(yaml.dump(data, Dumper=yaml.CSafeDumper, allow_unicode=True), encoding="utf-8")
    return field


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "aquavolt.cli", *argv], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return bool(json.loads(r.read())["mqtt_connected"])
    except OSError:
        return False


@pytest.fixture
def field_run(tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB, influx_settings: InfluxSettings,
              topic_prefix: str) -> Iterator[dict[str, Any]]:
    field = _field(tmp_path)
    (tmp_path / "operators.yaml").write_text("".join(
        f"{n}: {{role: {role}, sha256: {hashlib.sha256(tok.encode()).hexdigest()}}}\n"
        for n, (role, tok) in TOKENS.items()))
    key = generate_key()
    write_private_key(key, tmp_path / "command.pem")
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump({
        "command_issuers": {"control-1": public_key_text(key)}, "stagger_s": 0.0,
        "breaker_base_s": 0.1, "breaker_max_s": 0.5}))  # the field's server starts meanwhile
    mqtt = f"{mosquitto.url()}?prefix={topic_prefix}"
    env = {**os.environ, "AQUAVOLT_CLOCK": "real"}
    api_port = free_port()
    server: FieldServer | None = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    t = Topics(topic_prefix)
    with Recorder(mosquitto.settings(), [t.all_progress], f"run-{topic_prefix[:11]}") as rec:
        try:
            procs["rules"] = _start(
                ["rules", "run", str(field), "--state-dir", str(tmp_path / "rules"), "--mqtt", mqtt,
                 "--api-port", str(api_port), "--tokens", str(tmp_path / "operators.yaml"),
                 "--command-key", str(tmp_path / "command.pem"), "--command-issuer", "control-1"],
                tmp_path / "rules.log", env)
            procs["collector"] = _start(
                ["collector", "run", "--mqtt", mqtt, "--influx", f"{influx_settings.url}/{influx_settings.database}",
                 "--state-dir", str(tmp_path / "collector"), "--metrics-port", "0"],
                tmp_path / "collector.log", env)
            procs["edge"] = _start(
                ["edge", "run", str(field), "--gateway", GATEWAY, "--state-dir", str(tmp_path / "edge"),
                 "--mqtt", mqtt, "--config", str(tmp_path / "edge.yaml")], tmp_path / "edge.log", env)
            server = FieldServer(field)  # while they start

            def said_ready(msgs: list[Any]) -> bool:
                said = {p.component for p in (decode(m.payload, Progress) for m in msgs) if p.ready}
                return {"rules", "collector", f"edge-{GATEWAY}"} <= said

            def logs() -> str:
                return "\n".join(f"--- {n}\n" + (tmp_path / f"{n}.log").read_text()[-2000:] for n in procs)

            def ready() -> None:
                """Every process has said on MQTT that it serves, and the engine's API answers."""
                assert rec.wait_for(said_ready, 60), logs()
                deadline = time.monotonic() + 10
                while not _health(api_port):  # the API listens moments after the engine says so
                    assert time.monotonic() < deadline, logs()
                    time.sleep(0.05)

            yield {"base": f"http://127.0.0.1:{api_port}", "server": server, "logs": logs, "ready": ready}
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if server is not None:
                server.close()


def test_pump_command_and_acknowledgement_through_a_real_field(field_run: dict[str, Any], tmp_path: Path,
                                                               influx_settings: InfluxSettings) -> None:
    base, server = field_run["base"], field_run["server"]
    before = server.values("pump-1")["speed_setpoint_pct"]
    assert before != 60

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = pool.submit(field_run["ready"])  # the browser starts meanwhile
        with browser(tmp_path) as page:
            started.result()
            sign_in(page, base, "amina")
            # a command from the page, with the current value read from the field
            page.goto(base + "/console/commands")
            card = f"document.querySelector('[data-command=\"{GATEWAY}/pump-1/speed_setpoint_pct\"]')"
            card_css = f'[data-command="{GATEWAY}/pump-1/speed_setpoint_pct"]'
            page.fill(f"{card_css} input", "60")
            page.click(f"{card_css} button[data-value=input]")
            text = wait(page, "document.getElementById('confirm-dialog').open"
                              " && document.getElementById('confirm-text').textContent")
            assert "speed_setpoint_pct" in text and "60" in text, text
            page.fill("#confirm-reason", "night tariff")
            page.click("#confirm-ok")
            # the agent wrote the simulator's register and read it back: the page says so
            wait(page, "document.querySelector('#command-log tbody tr .outcome')?.textContent === 'done'"
                       " && document.querySelector('#command-log tbody tr .why').textContent"
                       " === 'written and verified'", WAIT_S)
            wait(page, f"{card}.querySelector('.current').textContent === '60'")
            assert server.values("pump-1")["speed_setpoint_pct"] == 60
            # a trip in the field: the alarm appears in the open page; acknowledged there
            page.goto(base + "/console/")
            wait(page, "document.getElementById('alarms').dataset.live === '1'")
            server.trip("pump-2")
            row = "document.querySelector('tr[data-alarm=\"pump-2/fault\"]')"
            wait(page, f"{row}?.dataset.state === 'unack'", WAIT_S)
            page.click('tr[data-alarm="pump-2/fault"] button.ack')
            wait(page, f"{row}?.dataset.state === 'acked'")
    # the acknowledgement, as the collector wrote the engine's transition into InfluxDB
    influx = Influx(influx_settings)
    q = ('SELECT "transition", "by", "state" FROM "rp_events"."alarm_event" WHERE "alarm_id" = \'pump-2/fault\'')
    deadline = time.monotonic() + WAIT_S
    while not any(r["transition"] == "acknowledged" for r in influx.rows(q)):
        assert time.monotonic() < deadline, (influx.rows(q), field_run["logs"]())
        time.sleep(0.05)
    rows = influx.rows(q)
    assert [(r["transition"], r["by"], r["state"]) for r in rows] == [
        ("raised", "", "unack"), ("acknowledged", "amina", "acked")]
