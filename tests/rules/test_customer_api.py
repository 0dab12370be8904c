"""The customer API against a real engine process, a real Mosquitto and a real InfluxDB: a
customer's token (hashed, Bearer only) shows that customer's figures and nobody else's.

What the engine reads is put where its producers put it:
- the daily rollups are written here into ``rp_1d.telemetry_1d`` as the collector writes
  them (``--event-time-rollups``: ``last`` of the ``volume_m3`` totaliser per UTC day);
- the alarm history (outages, over-consumption) and the SMS queue are written here into the
  engine's state folder, as an earlier run of the engine would have left them
  (``rules.store.Store.save``, ``rules.sms.queue.SmsQueue.enqueue``); the engine loads them
  at start. The SMS gateway is the engine's own ``dry-run`` provider (nothing is sent).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aquavolt.harness.servers import Mosquitto, free_port
from aquavolt.influx import Influx
from aquavolt.rules.cli import register
from aquavolt.rules.sms.queue import SmsQueue
from aquavolt.rules.store import Store
from aquavolt.schema import continuous_queries, line
from aquavolt.settings import InfluxSettings
from aquavolt.wire import AlarmEvent, AlarmState

CASES = Path(__file__).parent / "cases"
DAY = timedelta(days=1)
LAG = timedelta(days=364)


def _cli(*args: str) -> str:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    ns = parser.parse_args(["rules", *args])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert ns.func(ns) == 0
    return out.getvalue()


def _ms(d: date, hour: int = 0) -> int:
    return int(datetime(d.year, d.month, d.day, hour, tzinfo=UTC).timestamp() * 1000)


def _field(tmp_path: Path) -> Path:
    """The rules cases' field with a water meter per customer, and c2 on a second transformer
    of the same feeder."""
    text = (CASES / "field.yaml").read_text()
    text = text.replace("  - {id: em-2, profile: av_em1, bus: plc, unit_id: 4, poll_intervals_s: {default: 60.0}}\n",
                        "  - {id: em-2, profile: av_em1, bus: plc, unit_id: 4, poll_intervals_s: {default: 60.0}}\n"
                        "  - {id: wm-1, profile: av_wm1, bus: plc, unit_id: 5}\n"
                        "  - {id: wm-2, profile: av_wm1, bus: plc, unit_id: 6}\n", 1)
    text = text.replace("      - {id: tx-1, rating_kva: 250}\n",
                        "      - {id: tx-1, rating_kva: 250}\n      - {id: tx-2, rating_kva: 250}\n", 1)
    text = text.replace("- {id: c1, electricity_meter: em-1, transformer: tx-1}\n"
                        "- {id: c2, electricity_meter: em-2, transformer: tx-1}\n",
                        "- {id: c1, electricity_meter: em-1, transformer: tx-1, water_meter: wm-1, zone: zone-a}\n"
                        "- {id: c2, electricity_meter: em-2, transformer: tx-2, water_meter: wm-2, zone: zone-a}\n")
    assert "wm-2, zone" in text and "tx-2, rating" in text
    path = tmp_path / "field.yaml"
    path.write_text(text + "rules:\n  stale: {intervals: 100000}\n")
    return path


def _rollups(settings: InfluxSettings) -> None:
    """Daily rollups from 2025-02-20 to 2026-03-14: wm-1 uses 214 L a day, then 312 from
    2026-03-01; wm-2 uses 150 L a day throughout, with no rollup on 2026-03-05."""
    Influx(settings).execute(continuous_queries(settings.database))
    total = {"wm-1": 100.0, "wm-2": 500.0}
    lines = []
    d = date(2025, 2, 20)
    while d <= date(2026, 3, 14):
        for dev, before in total.items():
            total[dev] = before + ((0.312 if d >= date(2026, 3, 1) else 0.214) if dev == "wm-1" else 0.150)
            if dev == "wm-2" and d == date(2026, 3, 5):
                continue
            lines.append(line("telemetry_1d", {"gateway": "gw-1", "device": dev, "point": "volume_m3"},
                              {"last": round(total[dev], 6), "count": 96}, _ms(d)))
        d += DAY
    Influx(settings.model_copy(update={"retention_policy": "rp_1d"})).write(lines)


def _event(seq: int, asset: str, condition: str, transition: str, ts_ms: int, message: str,
           customer: str | None = None) -> AlarmEvent:
    details: dict[str, Any] = {"seq": seq, "count": 1, "raised_seq": seq}
    if customer:
        details.update(audience="customer", customer=customer)
    return AlarmEvent(alarm_id=f"{asset}/{condition}", asset=asset, condition=condition,
                      state=AlarmState.UNACK if transition == "raised" else AlarmState.NORMAL, transition=transition,
                      priority="high", ts_ms=ts_ms, message=message, details=details)


def _history(state: Path) -> None:
    """An earlier run's alarm history and SMS queue."""
    t = _ms(date(2026, 3, 10), 8)
    events = [
        _event(1, "tx-1", "outage", "raised", t, "Outage on transformer tx-1"),
        _event(2, "tx-1", "outage", "cleared", t + 1_800_000, "Outage on transformer tx-1"),
        _event(3, "c1", "over_consumption", "raised", t + 3_600_000, "c1 is 46 % above", "c1"),
        _event(4, "c2", "over_consumption", "raised", t + 3_600_000, "c2 is 30 % above", "c2"),
        _event(5, "feeder-1", "outage", "raised", t + 7_200_000, "Outage on feeder feeder-1"),
        _event(6, "feeder-1", "outage", "acknowledged", t + 7_300_000, "Outage on feeder feeder-1"),
    ]
    store = Store(state)
    store.save(events, {}, 6, t + 7_300_000)
    store.close()
    q = SmsQueue(state / "sms.sqlite3")
    for c in ("c1", "c2"):
        q.enqueue(f"over_consumption/{c}/2026-03-01", c, "over_consumption", "fr", "+212600000001",
                  f"Message to {c}", "delivered", t + 3_600_000, t + 3_600_000)
    q.close()


def _get(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def engine(tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str, influx_settings: InfluxSettings) -> Any:
    customers_file = tmp_path / "customers.yaml"
    tokens = {c: _cli("customer-token", "add", c, "--file", str(customers_file)).strip() for c in ("c1", "c2")}
    assert not any(t in customers_file.read_text() for t in tokens.values())  # digests only
    operators_file = tmp_path / "operators.yaml"
    tokens["amina"] = _cli("token", "add", "amina", "viewer", "--file", str(operators_file)).strip()
    _rollups(influx_settings)
    _history(tmp_path / "st")
    port = free_port()
    log = open(tmp_path / "rules.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "aquavolt.cli", "rules", "run", str(_field(tmp_path)), "--state-dir",
         str(tmp_path / "st"), "--mqtt", f"{mosquitto.url()}?prefix={topic_prefix}", "--api-port", str(port),
         "--tokens", str(operators_file), "--customer-tokens", str(customers_file), "--influx",
         f"{influx_settings.url}/{influx_settings.database}", "--tick-ms", "0"],
        stdout=log, stderr=log, env={**os.environ, "AQUAVOLT_CLOCK": "real", "AQUAVOLT_SMS_URL": "dry-run"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if _get(port, "/health")[1]["mqtt_connected"]:
                break
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError((tmp_path / "rules.log").read_text()[-3000:])
    assert proc.poll() is None, (tmp_path / "rules.log").read_text()[-3000:]
    yield port, tokens
    proc.terminate()
    assert proc.wait(15) == 0, (tmp_path / "rules.log").read_text()[-3000:]


PERIOD = "since=2026-03-01&until=2026-03-07"


def test_a_customer_sees_their_own_figures_and_nobody_elses_and_bad_values_are_400(engine: Any) -> None:
    port, tokens = engine
    c1, c2, amina = tokens["c1"], tokens["c2"], tokens["amina"]
    # no customer token, or an operator's: refused; a customer's token is not an operator's
    for path in ("/customer/consumption", "/customer/alerts", "/customer/outages", "/customer/c1/alerts"):
        for token in (None, amina, c1 + "x"):
            status, body = _get(port, path, token)
            assert status == 401 and body["error"], (path, token)
    assert _get(port, "/alarms", c1)[0] == 401
    assert _get(port, "/alarms", amina)[0] == 200

    # c1: 312 L a day this March against 214 L on the same weekdays last year
    status, body = _get(port, f"/customer/consumption?{PERIOD}", c1)
    assert status == 200, body
    assert (body["customer"], body["meter"], body["lag_days"], body["days_comparable"]) == ("c1", "wm-1", 364, 7)
    first = body["days"][0]
    assert first == {"day": "2026-03-01", "litres": 312.0, "last_year_day": "2025-03-02",
                     "last_year_litres": 214.0, "ratio": round(312 / 214, 3), "comparable": True}
    assert [d["day"] for d in body["days"]] == [f"2026-03-0{i}" for i in range(1, 8)]
    assert body["ratio"] == pytest.approx(312 / 214, abs=1e-3)
    # the path may name the customer, only the token's own
    assert _get(port, f"/customer/c1/consumption?{PERIOD}", c1) == (200, body)
    for path in ("consumption", "alerts", "outages"):
        status, err = _get(port, f"/customer/c2/{path}", c1)
        assert status == 403 and err["error"], path
    # c2's token gives c2's figures: 150 L a day both years, 5 and 6 March unknown
    status, other = _get(port, f"/customer/consumption?{PERIOD}", c2)
    assert status == 200 and other["customer"] == "c2" and other["meter"] == "wm-2"
    assert {d["litres"] for d in other["days"]} == {150.0, None}
    assert [d["day"] for d in other["days"] if d["litres"] is None] == ["2026-03-05", "2026-03-06"]
    assert other["days_comparable"] == 5 and other["ratio"] == 1.0

    # alerts: c1's alarm and SMS only
    status, alerts = _get(port, "/customer/alerts", c1)
    assert status == 200
    assert [(a["alarm_id"], a["transition"]) for a in alerts["alerts"]] == [("c1/over_consumption", "raised")]
    assert [(s["id"], s["status"], s["text"]) for s in alerts["sms"]] == [
        ("over_consumption/c1/2026-03-01", "delivered", "Message to c1")]
    assert _get(port, "/customer/c2/alerts", c2)[1]["sms"][0]["text"] == "Message to c2"

    # outages: c1 is on tx-1 (an outage of 30 min) and feeder-1 (ongoing), c2 on tx-2 and feeder-1
    status, out = _get(port, "/customer/outages", c1)
    assert status == 200
    assert out["supplied_by"] == [{"asset": "tx-1", "kind": "transformer"}, {"asset": "feeder-1", "kind": "feeder"}]
    assert [(o["asset"], o["duration_s"], o["end_ms"] is None) for o in out["outages"]] == [
        ("feeder-1", None, True), ("tx-1", 1800.0, False)]
    status, out2 = _get(port, "/customer/outages", c2)
    assert [o["asset"] for o in out2["outages"]] == ["feeder-1"]

    # every bad value is a 400 with the reason (one engine for both: it takes seconds to start)
    for query, why in (("since=2026-13-01", "since must be a date"),
                       ("since=yesterday", "since must be a date"),
                       ("until=20260301", "until must be a date"),
                       ("since=2026-03-08&until=2026-03-01", "is after until"),
                       ("since=2025-01-01&until=2026-03-01", "at most 400"),
                       ("customer=c2", "unknown query parameter")):
        status, body = _get(port, f"/customer/consumption?{query}", c1)
        assert status == 400 and why in body["error"], (query, body)
    for query in ("limit=0", "limit=x", "limit=100000"):
        status, body = _get(port, f"/customer/alerts?{query}", c1)
        assert status == 400 and "limit" in body["error"], query


def test_customer_token_file_is_checked(tmp_path: Path) -> None:
    from aquavolt.config import load_field
    from aquavolt.errors import ConfigError
    from aquavolt.rules.customer import load_customer_tokens

    loaded = load_field(_field(tmp_path))
    path = tmp_path / "customers.yaml"
    token = _cli("customer-token", "add", "c1", "--file", str(path)).strip()
    assert load_customer_tokens(path, loaded).authenticate(token) == "c1"
    assert load_customer_tokens(path, loaded).authenticate(token + "x") is None
    digest = path.read_text().split("sha256: ")[1].strip()
    for text, why in (("c1: secret-token\n", "plaintext token is not accepted"),
                      ("c1: {sha256: abc}\n", "not a SHA-256 digest"),
                      (f"c9: {{sha256: {digest}}}\n", "no such customer"),
                      (f"c1: {{sha256: {digest}}}\nc2: {{sha256: {digest}}}\n", "two customers share a token")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=why):
            load_customer_tokens(path, loaded)
