"""The daily over-consumption check, wired into the engine.

The schedule is pure (event time, field time zone). The engine runs as its own process
(``aquavolt rules run``) against the real Mosquitto and InfluxDB fixtures: a year and more
of daily rollups is written into ``rp_1d.telemetry_1d`` for one customer, event time moves
across local and UTC midnight through health messages, and the ``over_consumption`` alarm
and the customer SMS alert appear. No SMS provider can run here: a local HTTP server
stands in for the SMS gateway (the seam is ``rules.sms.provider.HttpSmsProvider``'s API).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aquavolt.harness.servers import Mosquitto, free_port
from aquavolt.influx import Influx
from aquavolt.mqtt import Recorder, make_client
from aquavolt.rules.daily import DailySchedule
from aquavolt.schema import continuous_queries, line
from aquavolt.settings import InfluxSettings, MqttSettings
from aquavolt.wire import AlarmEvent, BufferHealth, CustomerAlert, Health, Topics, decode, encode

FIELD = """
version: 1
id: daily-test
timezone: Africa/Casablanca
sites: [{id: s1}]
gateways:
- id: gw-1
  site: s1
  buses: [{kind: modbus_tcp, id: conc, host: 127.0.0.1, port: 15020}]
  devices:
  - {id: wm-1, profile: av_wm1, bus: conc, unit_id: 1}
  - {id: fm-1, profile: av_flow1, bus: conc, unit_id: 2}
water:
  zones: [{id: z1, site: s1, population: 3, connections: 1, mains_length_km: 0.1, inlet_meters: [fm-1]}]
customers:
- {id: c1, language: en, phone: '+212600000001', water_meter: wm-1, zone: z1}
rules:
  stale: {intervals: 100000}
  over_consumption: {check_delay_s: 600}
"""


def _utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_schedule_local_and_utc_midnight() -> None:
    # Casablanca is UTC+1 in June: local midnight 23:00 UTC, the UTC day ends an hour later
    s = DailySchedule("Africa/Casablanca", 600)
    assert s.due_ms(date(2026, 6, 15)) == _utc("2026-06-15T00:10:00")
    assert s.due(0) is None
    # a first watermark catches up with the latest due day
    assert s.due(_utc("2026-06-14T22:50:00")) == (date(2026, 6, 14), _utc("2026-06-14T00:10:00"))
    s.last = date(2026, 6, 14)
    assert s.due(_utc("2026-06-14T23:30:00")) is None  # local day 15 has begun, the UTC day not
    assert s.due(_utc("2026-06-15T00:09:59")) is None
    assert s.due(_utc("2026-06-15T00:10:00")) == (date(2026, 6, 15), _utc("2026-06-15T00:10:00"))
    s.last = date(2026, 6, 15)
    assert s.due(_utc("2026-06-18T12:00:00")) == (date(2026, 6, 18), _utc("2026-06-18T00:10:00"))
    # west of UTC the local midnight comes last
    w = DailySchedule("America/New_York", 0)
    assert w.due_ms(date(2026, 6, 15)) == _utc("2026-06-15T04:00:00")


class SmsGateway:
    """Stand-in SMS gateway (POST /messages, GET /messages/{id}) in a thread."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self._answer(201, {"id": f"m{len(posts)}"})

            def do_GET(self) -> None:
                self._answer(200, {"id": self.path.rsplit("/", 1)[-1], "status": "delivered"})

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SmsGateway:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _write_rollups(settings: InfluxSettings, first: date, last: date, litres: dict[date, float]) -> None:
    """Daily rollup rows as the collector's 1d continuous query writes them (``last`` of the
    volume totaliser, stamped at the UTC day's start)."""
    rollup = Influx(settings.model_copy(update={"retention_policy": "rp_1d"}))
    total, lines = 1000.0, []
    d = first
    while d <= last:
        total += litres.get(d, 200.0) / 1000
        ts = int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
        lines.append(line("telemetry_1d", {"gateway": "gw-1", "device": "wm-1", "point": "volume_m3"},
                          {"last": round(total, 6), "count": 96}, ts))
        d += timedelta(days=1)
    rollup.write(lines)


def _health(ts: int) -> bytes:
    return encode(Health(gateway="gw-1", ts_ms=ts, uptime_s=1.0, buffer=BufferHealth(depth=0, bytes=0, oldest_age_s=0, dropped=0)))


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def _wait(pred: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_engine_runs_the_daily_check_across_midnight(
        tmp_path: Path, mosquitto: Mosquitto, influx_settings: InfluxSettings, topic_prefix: str) -> None:
    influx = Influx(influx_settings)
    influx.execute(continuous_queries(influx_settings.database))
    # 420 days of 200 L/day up to 13 June; 14 June (a burst pipe behind the meter) comes later
    _write_rollups(influx_settings, date(2025, 4, 20), date(2026, 6, 13), {})
    field = tmp_path / "field.yaml"
    field.write_text(FIELD)
    t = Topics(topic_prefix)
    api = free_port()
    influx_url = f"{influx_settings.url}/{influx_settings.database}"
    log = open(tmp_path / "rules.log", "wb")  # noqa: SIM115
    with SmsGateway() as sms, Recorder(mosquitto.settings(), [t.alarm_events, t.customer_alerts], "rec") as rec:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aquavolt.cli", "rules", "run", str(field), "--state-dir",
             str(tmp_path / "state"), "--mqtt", f"{mosquitto.url()}?prefix={topic_prefix}",
             "--influx", influx_url, "--api-port", str(api), "--tick-ms", "0"],
            stdout=log, stderr=log, env={**os.environ, "AQUAVOLT_CLOCK": "real", "AQUAVOLT_SMS_URL": sms.url,
                                         "AQUAVOLT_SMS_TOKEN": "sms-token"})
        pub = make_client(mosquitto.settings(), f"pub-{time.monotonic_ns()}")
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        try:
            def health() -> Any:
                try:
                    return _get(api, "/health")
                except OSError:
                    return {}

            assert _wait(lambda: proc.poll() is not None or health().get("mqtt_connected"), 20)
            assert proc.poll() is None, (tmp_path / "rules.log").read_text()
            # 23:50 local on 14 June: the catch-up check of 14 June finds nothing unusual
            pub.publish(t.health("gw-1"), _health(_utc("2026-06-14T22:50:00")), qos=1)
            assert _wait(lambda: health().get("daily_last_day") == "2026-06-14", 10)
            assert health()["daily_checks"] == 1
            # the 1d continuous query writes 14 June just after UTC midnight: 5,000 L that day
            _write_rollups(influx_settings, date(2025, 4, 20), date(2026, 6, 14), {date(2026, 6, 14): 5000.0})
            # local midnight has passed, the UTC day not, nor the margin: no check yet
            for ts in ("2026-06-14T23:30:00", "2026-06-15T00:09:00"):
                pub.publish(t.health("gw-1"), _health(_utc(ts)), qos=1)
            assert _wait(lambda: health().get("watermark_ms") == _utc("2026-06-15T00:09:00"), 10)
            time.sleep(0.3)
            assert health()["daily_checks"] == 1
            pub.publish(t.health("gw-1"), _health(_utc("2026-06-15T00:12:00")), qos=1)
            assert _wait(lambda: health().get("daily_last_day") == "2026-06-15", 10)

            def alarms() -> list[AlarmEvent]:
                return [decode(m.payload, AlarmEvent) for m in rec.snapshot() if m.topic == t.alarm_events]

            def alerts() -> list[CustomerAlert]:
                return [decode(m.payload, CustomerAlert) for m in rec.snapshot() if m.topic == t.customer_alerts]

            assert _wait(lambda: any(a.status == "delivered" for a in alerts()), 15), alerts()
            raised = [e for e in alarms() if e.condition == "over_consumption"]
            assert [(e.alarm_id, e.transition, e.ts_ms) for e in raised] == [
                ("c1/over_consumption", "raised", _utc("2026-06-15T00:10:00"))]
            assert raised[0].details["audience"] == "customer" and raised[0].details["customer"] == "c1"
            assert "above the same period last year" in raised[0].message
            assert [a.status for a in alerts()] == ["queued", "sent", "delivered"]
            assert {a.id for a in alerts()} == {"over_consumption/c1/2026-06-01"}
            assert len(sms.posts) == 1 and sms.posts[0]["to"] == "+212600000001"
            assert "Please check your installation for leaks" in sms.posts[0]["text"]
        finally:
            pub.disconnect()
            pub.loop_stop()
            proc.terminate()
            rc = proc.wait(15)
            log.close()
        assert rc == 0, (tmp_path / "rules.log").read_text()[-3000:]
        assert "over-consumption check of 2026-06-15: 1 change(s)" in (tmp_path / "rules.log").read_text()


def _offline_engine(tmp_path: Path, monkeypatch) -> tuple[Any, list[int], int]:
    """A demo-town engine at 2026-06-01 00:00 with no broker or InfluxDB behind it, and its
    core's horizon set by the test (``horizon[0]``): (engine, horizon, start in ms)."""
    from aquavolt.clock import ManualClock
    from aquavolt.config import load_field
    from aquavolt.rules.service import Engine

    root = Path(__file__).resolve().parents[2]
    start = int(datetime(2026, 6, 1, 0, 0, tzinfo=UTC).timestamp() * 1000)
    engine = Engine(load_field(root / "examples/demo-town.yaml"), MqttSettings(), tmp_path / "r",
                    ManualClock(start / 1000), influx=Influx(InfluxSettings(url=f"http://127.0.0.1:{free_port()}")))
    horizon = [start]
    monkeypatch.setattr(type(engine.core), "horizon_ms", property(lambda _self: horizon[0]))
    return engine, horizon, start


def test_progress_waits_for_a_daily_check_due_in_the_run(tmp_path: Path, monkeypatch) -> None:
    """The engine says it has handled an instant only once the daily check due before it has
    given its verdict: a replay ending an hour after the check (the demo day) once stopped
    while the check still read InfluxDB on a loaded machine, and its alarm was never raised.
    A check of a day before the run (caught up at start), or one waiting for a rollup that may
    never come (a replay without history), is not waited for."""
    engine, horizon, start = _offline_engine(tmp_path, monkeypatch)
    try:
        assert engine._handled_ms() == start  # the check of May 31 was due before the run
        due = engine.schedule.due_ms(date(2026, 6, 2))
        horizon[0] = due + 3_600_000  # an hour past the check of June 2, not done yet
        assert engine._handled_ms() == due - 1
        engine._rollup_missing = date(2026, 6, 2)  # waiting for yesterday's rollup: no work held
        assert engine._handled_ms() == due + 3_600_000
        engine._rollup_missing = None
        assert engine._handled_ms() == due - 1
        engine.schedule.last = date(2026, 6, 2)  # its verdict
        assert engine._handled_ms() == due + 3_600_000
    finally:
        engine.transport.stop()
        engine.store.close()
        engine.commands.close()


def test_a_check_found_waiting_for_its_rollup_releases_the_progress_it_held(tmp_path: Path, monkeypatch) -> None:
    """A check at work holds the engine's progress; once it finds yesterday's rollup missing
    it holds nothing, and the engine says so at once. It did not: with no message left to
    process, ``progress/rules`` stayed a millisecond before the check, and a replay's end
    waited two minutes for it (the test pool's wrong-expectation replay, on a busy machine)."""
    import asyncio

    from aquavolt.rules.detectors.overconsumption import RollupNotReady

    engine, horizon, start = _offline_engine(tmp_path, monkeypatch)
    said: list[int | None] = []
    monkeypatch.setattr(engine.progress, "update", lambda event_ms, *_a, **_k: said.append(event_ms))

    def no_rollup(*_args: Any) -> Any:
        raise RollupNotReady(0, "no daily rollup of 2026-06-01 yet")

    try:
        assert engine.daily is not None
        monkeypatch.setattr(engine.daily, "check", no_rollup)
        assert engine._handled_ms() == start  # first horizon: this run's start
        day = date(2026, 6, 2)
        due = engine.schedule.due_ms(day)
        horizon[0] = due + 60_000  # the run's last instant, a minute past the check
        assert engine._handled_ms() == due - 1  # the check is pending: held

        async def run() -> None:
            engine._loop = asyncio.get_running_loop()
            await engine._run_daily(day, due)

        asyncio.run(run())
        assert engine._rollup_missing == day
        assert said and said[-1] == due + 60_000, said  # released, and said
    finally:
        engine.transport.stop()
        engine.store.close()
        engine.commands.close()
