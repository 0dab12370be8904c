"""Rules engine benchmark.

1. Throughput of the pure core (one core, no I/O) with the demo field's whole rule set
   (generic rules and detectors): batches of every device's points, readings per second.
   Ceiling measured in the same run: the same loop building the samples without any rule.
2. Latency from a reading's publication to its alarm's publication, through a real
   Mosquitto, with the engine as its own process (``aquavolt rules run``) under a load of
   10,000 readings/s; a pump fault toggles every 100 ms. Ceiling: the broker's own
   publish-to-receive latency measured alongside (the raw data messages).

    .venv/bin/python bench/rules.py [--seconds 10] [--rate 10000]

Last line: one JSON object with readings_per_s, alarm_latency_p50_ms, alarm_latency_p99_ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # this file is bench/rules.py: keep it from shadowing the rules package

from aquavolt.config import LoadedField, load_field
from aquavolt.harness.servers import Mosquitto, free_port
from aquavolt.mqtt import make_client
from aquavolt.rules.api import Sample
from aquavolt.rules.core import Core
from aquavolt.rules.generic import build_generic_rules
from aquavolt.wire import AlarmEvent, Batch, Reading, Topics, decode, encode

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo-town.yaml"
NOMINAL = {"running": True, "fault": False, "breaker_closed": True, "door_open": False, "level_m": 3.0,
           "pressure_bar": 3.0, "flow_lps": 20.0, "motor_current_a": 30.0, "oil_temperature_c": 60.0,
           "sensor_ok": True}


def _value(point: Any) -> Any:
    if point.name in NOMINAL:
        return NOMINAL[point.name]
    t = str(getattr(point, "type", ""))
    if "bool" in t:
        return False
    if "string" in t:
        return "SN0001"
    if "voltage" in point.name:
        return 230.0
    return 1.0


def device_batches(loaded: LoadedField, ts: int, seq0: int = 0) -> list[Batch]:
    out = []
    for i, (dev, (gw, _d)) in enumerate(loaded.field.devices.items()):
        prof = loaded.profile_of(dev)
        readings = [Reading(point=p.name, value=_value(p), ts_ms=ts) for p in prof.points]
        out.append(Batch(gateway=gw.id, device=dev, seq=seq0 + i, readings=readings))
    return out


def bench_core(seconds: float, generic_only: bool = False) -> dict[str, Any]:
    loaded = load_field(DEMO)
    core = Core(loaded, rules=build_generic_rules(loaded) if generic_only else None)
    t0 = 1_780_000_000_000
    rounds = [device_batches(loaded, t0 + k * 30_000) for k in range(40)]  # 30 s polls, 20 minutes
    per_round = sum(len(b.readings) for b in rounds[0])
    # ceiling: building the samples only
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds / 3:
        for b in rounds[n % len(rounds)]:
            for r in b.readings:
                Sample(b.gateway, b.device, r.point, r.value, r.ts_ms, r.quality, b.historical)
        n += 1
    ceiling = n * per_round / (time.perf_counter() - start)
    # the core with every rule; later rounds are built (untimed) with times moved on
    elapsed = 0.0
    n = events = 0
    while elapsed < seconds:
        k = n % len(rounds)
        batches = rounds[k]
        if n >= len(rounds):
            shift = (n // len(rounds)) * 40 * 30_000
            batches = [Batch.model_construct(**{**b.__dict__, "readings": [
                Reading.model_construct(**{**r.__dict__, "ts_ms": r.ts_ms + shift}) for r in b.readings]})
                for b in batches]
        start = time.perf_counter()
        for b in batches:
            events += len(core.batch(b).events)
        elapsed += time.perf_counter() - start
        n += 1
    rate = n * per_round / elapsed
    return {"readings_per_s": round(rate), "samples_only_ceiling_per_s": round(ceiling),
            "core_vs_ceiling": round(rate / ceiling, 3), "rules": len(core.rules),
            "devices": len(loaded.field.devices), "alarm_events": events}


def _connected(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return bool(json.loads(resp.read())["mqtt_connected"])
    except OSError:
        return False


def bench_latency(seconds: float, rate: int) -> dict[str, Any]:
    loaded = load_field(DEMO)
    work = Path(tempfile.mkdtemp(prefix="bench-rules-"))
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    prefix = "bench/v1"
    t = Topics(prefix)
    url = f"{broker.url()}?prefix={prefix}"
    log = open(work / "rules.log", "wb")  # noqa: SIM115
    api = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aquavolt.cli", "rules", "run", str(DEMO), "--state-dir",
                             str(work / "state"), "--mqtt", url, "--api-port", str(api)],
                            stdout=log, stderr=log, env={**os.environ, "AQUAVOLT_CLOCK": "real"})
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    raw_got: dict[int, float] = {}
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        now = time.perf_counter()
        if msg.topic == t.alarm_events:
            e = decode(msg.payload, AlarmEvent)
            if e.alarm_id == "pump-1/fault" and e.transition in ("raised", "cleared"):
                with lock:
                    got.setdefault(e.ts_ms, now)
        else:  # pump-1's data: the broker's own latency for the same messages (ceiling)
            b = json.loads(msg.payload)
            if len(b["readings"]) == 1 and b["readings"][0]["point"] == "fault":
                with lock:
                    raw_got.setdefault(b["readings"][0]["ts_ms"], now)

    sub = make_client(broker.settings(), "bench-sub")
    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe([(t.alarm_events, 1), (t.data("gw-pumping", "pump-1"), 1)])
    sub.loop_start()
    pub = make_client(broker.settings(), "bench-pub")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        deadline = time.monotonic() + 30  # the engine loads the field, connects and subscribes
        while not _connected(api):
            if time.monotonic() > deadline:
                raise RuntimeError("engine did not start: " + (work / "rules.log").read_text()[-2000:])
            time.sleep(0.2)
        time.sleep(0.5)
        devices = list(loaded.field.devices.items())
        payloads: list[tuple[str, str, list[Any]]] = []
        for dev, (gw, _d) in devices:
            pts = [(p.name, _value(p)) for p in loaded.profile_of(dev).points]
            payloads.append((gw.id, dev, pts))
        per_msg = statistics.mean(len(p[2]) for p in payloads)
        msgs_per_s = rate / per_msg
        interval = 1.0 / msgs_per_s
        fault = False
        next_toggle = time.perf_counter() + 0.5
        start = time.perf_counter()
        wall0 = time.time()
        i = seq = readings = 0
        warm = 2.0
        while True:
            now = time.perf_counter()
            if now - start > seconds + warm:
                break
            ts = int(wall0 * 1000 + (now - start) * 1000)
            if now >= next_toggle:
                fault = not fault
                b = Batch(gateway="gw-pumping", device="pump-1", seq=seq,
                          readings=[Reading(point="fault", value=fault, ts_ms=ts)])
                seq += 1
                pub.publish(t.data("gw-pumping", "pump-1"), encode(b), qos=1)
                if now - start > warm:
                    sent[ts] = time.perf_counter()
                next_toggle += 0.1
            gw, dev, pts = payloads[i % len(payloads)]
            if dev == "pump-1":
                pts = [(n, v) for n, v in pts if n != "fault"]
            body = {"v": 1, "gateway": gw, "device": dev, "seq": seq, "bd_seq": 0, "historical": False,
                    "readings": [{"point": n, "value": v, "ts_ms": ts, "quality": "good"} for n, v in pts]}
            pub.publish(t.data(gw, dev), json.dumps(body).encode(), qos=1)
            seq += 1
            i += 1
            readings += len(pts)
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        achieved = readings / (time.perf_counter() - start)
        time.sleep(1.0)
        print("engine log tail:", (work / "rules.log").read_text()[-500:], file=sys.stderr)
        with lock:
            lat = sorted((got[ts] - sent[ts]) * 1000 for ts in sent if ts in got)
            lost = len([ts for ts in sent if ts not in got])
            via_broker = sorted((raw_got[ts] - sent[ts]) * 1000 for ts in sent if ts in raw_got)

        def p99(xs: list[float]) -> float:
            if len(xs) < 2:
                return float("nan")
            return round(statistics.quantiles(xs, n=100, method="inclusive")[98], 2)

        return {"load_readings_per_s": round(achieved), "alarms_measured": len(lat), "alarms_missing": lost,
                "alarm_latency_p50_ms": round(statistics.median(lat), 2) if lat else None,
                "alarm_latency_p99_ms": p99(lat), "alarm_latency_max_ms": round(lat[-1], 2) if lat else None,
                "broker_only_p50_ms": round(statistics.median(via_broker), 2) if via_broker else None,
                "broker_only_p99_ms": p99(via_broker)}
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.disconnect()
        sub.loop_stop()
        proc.terminate()
        proc.wait(15)
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=10_000)
    a = ap.parse_args()
    core = bench_core(min(a.seconds, 10.0))
    print("core:", core, file=sys.stderr)
    generic = bench_core(min(a.seconds, 10.0) / 2, generic_only=True)
    core["generic_rules_only_readings_per_s"] = generic["readings_per_s"]
    lat = bench_latency(a.seconds, a.rate)
    print("latency:", lat, file=sys.stderr)
    out = {**core, **lat, "goals": {"readings_per_s": 100_000, "alarm_latency_p99_ms": 100}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
