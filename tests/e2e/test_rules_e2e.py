"""End to end, every component its own process: the simulator (``aquavolt sim run``), the
edge agent of the pumping station, the collector and the rules engine, on the Mosquitto
and InfluxDB fixtures, all on one simulated clock (``harness.stack.Stack``).

The field is a trimmed copy of examples/demo-town.yaml: the pumping-station gateway with
its devices, zones, tank and pumps, no customers and no electricity, the demo's rules for
the devices kept. At 300x the 30 s polls are 100 ms apart in wall time.

A pump trip (pump-1) and a pump stuck on (pump-2, the standby that takes over: the tank
overflows) are injected through the simulator's live fault endpoint. Bounds, in event
time after the fault's start: ``pump-1/fault`` within two poll intervals (60 s);
``tank-north-level/level_m_high`` within 30 min (from 5.5 m the stuck pump fills the
200 m2 tank at about 0.45 m/h: 0.1 m in ~13 min, then the 30 s on-delay and a poll). An
operator acknowledges the trip through the API: the acknowledgement shows on MQTT and, via
the collector, in InfluxDB (measurement ``alarm_event``).
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from aquavolt.clock import SimClock, parse_instant
from aquavolt.harness.servers import Mosquitto
from aquavolt.harness.stack import Stack, StackOptions
from aquavolt.influx import Influx, InfluxError
from aquavolt.mqtt import Recorder
from aquavolt.settings import InfluxSettings
from aquavolt.wire import AlarmEvent, Topics, decode

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "gw-pumping"
ACCELERATION = 300.0
POLL_S = 30.0
TOKEN = "amina-token-0123456789"
FAULT_BOUND_S = 2 * POLL_S
OVERFLOW_BOUND_S = 1800.0


def trimmed_field(dst: Path) -> Path:
    """The pumping station of the demo town alone (see the module docstring)."""
    demo = yaml.safe_load((ROOT / "examples" / "demo-town.yaml").read_text())
    gw = next(g for g in demo["gateways"] if g["id"] == GATEWAY)
    devices = {d["id"] for d in gw["devices"]}
    profiles = {d["profile"] for d in gw["devices"]}
    site_ids = {gw["site"]}
    water = demo["water"]
    water["zones"] = [z for z in water["zones"] if set(z["inlet_meters"]) <= devices]
    site_ids |= {z["site"] for z in water["zones"]}
    for t in water["tanks"]:
        t["initial_level_m"] = t["high_level_m"]  # full: a pump stuck on overflows it soon
    rules = demo["rules"]

    def kept(sel: dict[str, Any]) -> bool:
        return sel.get("device") in devices or sel.get("profile") in profiles

    for key in ("limits", "rates", "discrete"):
        rules[key] = [r for r in rules.get(key, []) if kept(r)]
    field = {"version": 1, "id": "e2e-pumping", "name": "pumping station", "timezone": demo["timezone"],
             "sites": [s for s in demo["sites"] if s["id"] in site_ids], "gateways": [gw], "water": water,
             "rules": rules}
    dst.write_text(yaml.safe_dump(field, sort_keys=False, allow_unicode=True))
    return dst


def _http(method: str, url: str, body: Any = None, token: str | None = None) -> Any:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _health_watermark(api: str) -> int:
    """The engine's watermark, 0 while its API is not listening yet (it opens after the
    engine has loaded its field and connected: later than the edge's first readings on a
    loaded machine)."""
    try:
        return int(_http("GET", f"{api}/health")["watermark_ms"] or 0)
    except (urllib.error.URLError, ConnectionError):
        return 0


def _wait(pred: Any, timeout_s: float, what: str, stack: Stack) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        dead = [c.name for c in stack.children if not c.alive]
        assert not dead, f"{dead} exited; logs in {stack.workdir / 'logs'}: " + _logs(stack)
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; logs in {stack.workdir / 'logs'}: " + _logs(stack))


def _logs(stack: Stack) -> str:
    return "".join(f"\n--- {c.name}\n" + c.log_path.read_text(errors="replace")[-1500:] for c in stack.children)


def test_pump_trip_and_overflow_raise_their_alarms_and_the_ack_reaches_influx(
        tmp_path: Path, mosquitto: Mosquitto, influx_settings: InfluxSettings, topic_prefix: str) -> None:
    t0 = time.monotonic()
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"amina: {{role: operator, sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}}}\n")
    influx_url = f"{influx_settings.url}/{influx_settings.database}"
    stack = Stack(StackOptions(
        field=trimmed_field(tmp_path / "pumping.yaml"), workdir=tmp_path / "stack", clock_spec="",
        mqtt_url=f"{mosquitto.url()}?prefix={topic_prefix}", influx_url=influx_url,
        extra_args={"rules": ["--tokens", str(tokens)]}))
    assert not stack.missing, stack.missing
    stack.prepare_field()
    start = parse_instant("2026-06-01T08:00:00Z")
    clock = SimClock(start, ACCELERATION, epoch=time.time() + 2.0)
    stack.opts.clock_spec = clock.spec()
    t = Topics(topic_prefix)
    api = f"http://127.0.0.1:{stack.api_port}"
    sim = f"http://127.0.0.1:{stack.sim_http_port}"

    with Recorder(mosquitto.settings(), [t.alarm_events, t.data(GATEWAY, "tank-north-level")], "e2e-rec") as rec:
        def events() -> list[AlarmEvent]:
            return [decode(m.payload, AlarmEvent) for m in rec.snapshot() if m.topic == t.alarm_events]

        def first(alarm_id: str, transition: str) -> AlarmEvent | None:
            return next((e for e in events() if e.alarm_id == alarm_id and e.transition == transition), None)

        try:
            stack.start_children()
            # the field runs: the tank's readings flow through the edge, and the engine sees them
            _wait(lambda: any(m.topic != t.alarm_events for m in rec.snapshot()), 40, "tank readings", stack)
            _wait(lambda: _health_watermark(api) > start * 1000, 60, "engine", stack)
            faults = _http("POST", f"{sim}/faults", [
                {"id": "trip-1", "kind": "pump_trip", "target": "pump-1"},
                {"id": "stuck-2", "kind": "pump_stuck_on", "target": "pump-2"}])
            fault_ms = int(min(f["start"] for f in faults) * 1000)

            trip = _wait(lambda: first("pump-1/fault", "raised"), 20, "pump-1/fault", stack)
            assert 0 <= trip.ts_ms - fault_ms <= FAULT_BOUND_S * 1000, (trip.ts_ms, fault_ms)
            assert trip.priority == "high" and trip.message == "Pump tripped"
            overflow = _wait(lambda: first("tank-north-level/level_m_high", "raised"),
                             OVERFLOW_BOUND_S / ACCELERATION + 10, "tank overflow alarm", stack)
            assert 0 < overflow.ts_ms - fault_ms <= OVERFLOW_BOUND_S * 1000, (overflow.ts_ms, fault_ms)
            assert overflow.priority == "high" and overflow.message == "level_m above 5.6"

            print(f"event-time delays after the faults: pump-1/fault {(trip.ts_ms - fault_ms) / 1000:.1f} s, "
                  f"level_m_high {(overflow.ts_ms - fault_ms) / 1000:.1f} s")
            # the operator acknowledges the trip they saw
            seen = _http("GET", f"{api}/alarms", token=TOKEN)["seq"]
            res = _http("POST", f"{api}/ack", {"ids": ["pump-1/fault"], "seen_seq": seen,
                                                "comment": "standby on duty"}, token=TOKEN)
            assert res["acknowledged"] == ["pump-1/fault"], res
            ack = _wait(lambda: first("pump-1/fault", "acknowledged"), 10, "ack on MQTT", stack)
            assert (str(ack.state), ack.by, ack.comment) == ("acked", "amina", "standby on duty")

            influx = Influx(influx_settings)

            def stored() -> list[dict[str, Any]]:
                try:
                    return influx.rows("SELECT * FROM rp_events.alarm_event WHERE alarm_id = 'pump-1/fault'")
                except InfluxError:
                    return []

            rows = _wait(lambda: [r for r in stored() if r.get("transition") == "acknowledged"] or None,
                         20, "the ack in InfluxDB", stack)
            assert rows[0]["by"] == "amina" and rows[0]["state"] == "acked" and rows[0]["time"] == ack.ts_ms
            assert any(r.get("transition") == "raised" and r["time"] == trip.ts_ms for r in stored())
            # both consumers report what they have not handled yet, and keep up with this field
            assert set(stack.backlogs()) == {"rules", "collector"}, stack.backlogs()
            assert stack.catch_up(timeout_s=20) == {}
        except urllib.error.URLError as exc:
            raise AssertionError(f"HTTP failed: {exc}; logs: {_logs(stack)}") from exc
        finally:
            stack.stop()
    assert time.monotonic() - t0 < 90
