"""Helpers for the collector's tests: the collector as a real subprocess
(``python -m aquavolt.cli collector run``), a QoS 1 publisher, and InfluxDB polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from aquavolt.harness.servers import Mosquitto, free_port
from aquavolt.influx import Influx, InfluxError
from aquavolt.mqtt import make_client
from aquavolt.settings import InfluxSettings, MqttSettings
from aquavolt.wire import Batch, Reading, Topics, encode

ROOT = Path(__file__).resolve().parents[2]


class CollectorProcess:
    """``aquavolt collector run`` in its own process, known by its PID."""

    started = 0

    def __init__(self, mqtt_url: str, influx: InfluxSettings, state_dir: Path, *extra: str) -> None:
        self.metrics_port = free_port()
        self.state_dir = state_dir
        CollectorProcess.started += 1
        self.log_path = state_dir.parent / f"{state_dir.name}.{CollectorProcess.started}.log"
        influx_url = f"{influx.url}/{influx.database}"
        self.argv = [sys.executable, "-m", "aquavolt.cli", "collector", "run", "--mqtt", mqtt_url,
                     "--influx", influx_url, "--state-dir", str(state_dir),
                     "--metrics-port", str(self.metrics_port), "--stats-interval-s", "1", *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CollectorProcess:
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"collector exited: {self.log()}"
            if "connected to" in self.log():
                time.sleep(0.3)  # SUBACK
                return self
            time.sleep(0.05)
        raise AssertionError(f"collector did not connect: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


@pytest.fixture
def collectors(tmp_path: Path) -> Iterator[list[CollectorProcess]]:
    """Collectors started by the test; stopped at the end whatever happened."""
    started: list[CollectorProcess] = []
    yield started
    for c in started:
        c.stop()


class Publisher:
    """A QoS 1 paho publisher that waits for every PUBACK."""

    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        self.client = make_client(settings, client_id)
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def publish_many(self, items: Iterable[tuple[str, bytes]], window: int = 500) -> int:
        infos = []
        for topic, payload in items:
            infos.append(self.client.publish(topic, payload, qos=1))
            if len(infos) >= window:
                for i in infos:
                    i.wait_for_publish(20)
                infos.clear()
        for i in infos:
            i.wait_for_publish(20)
        return len(infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto: Mosquitto, topic_prefix: str) -> Iterator[Publisher]:
    p = Publisher(mosquitto.settings(), f"pub-{topic_prefix.split('/', maxsplit=1)[0]}")
    yield p
    p.close()


T0_MS = 1_764_412_800_000  # 2025-11-29T10:40:00Z


def make_batches(gateway: str, devices: int, batches: int, readings: int = 10,
                 t0_ms: int = T0_MS) -> list[Batch]:
    """Distinct, exactly known readings: value = seq * 1000 + index + 0.25."""
    out = []
    seq = 0
    for b in range(batches):
        for d in range(devices):
            rs = [Reading(point=f"p_{i}", value=seq * 1000 + i + 0.25, ts_ms=t0_ms + b * 1000)
                  for i in range(readings)]
            out.append(Batch(gateway=gateway, device=f"dev-{d}", seq=seq, readings=rs))
            seq += 1
    return out


def batch_items(topics: Topics, batches: list[Batch]) -> list[tuple[str, bytes]]:
    return [(topics.data(b.gateway, b.device), encode(b)) for b in batches]


def expected_points(batches: list[Batch]) -> dict[tuple[str, str, str, int], float]:
    return {(b.gateway, b.device, r.point, r.ts_ms): float(r.value)  # type: ignore[arg-type]
            for b in batches for r in b.readings}


def count(influx: InfluxSettings, q: str = 'SELECT count("quality") FROM "telemetry"') -> int:
    try:
        rows = Influx(influx).rows(q)
    except InfluxError:
        return 0
    return int(rows[0]["count"]) if rows else 0


def wait_count(influx: InfluxSettings, n: int, timeout_s: float = 30.0,
               q: str = 'SELECT count("quality") FROM "telemetry"') -> int:
    deadline = time.monotonic() + timeout_s
    got = count(influx, q)
    while got < n and time.monotonic() < deadline:
        time.sleep(0.2)
        got = count(influx, q)
    return got


def telemetry(influx: InfluxSettings) -> dict[tuple[str, str, str, int], float]:
    rows = Influx(influx).rows('SELECT "value" FROM "telemetry" GROUP BY *')
    return {(r["gateway"], r["device"], r["point"], r["time"]): r["value"] for r in rows}


@pytest.fixture
def cx() -> object:
    """These helpers, for the test modules (importlib mode: they cannot import conftest)."""
    return sys.modules[__name__]


def check_schema(influx: InfluxSettings) -> set[str]:
    """Every measurement written holds only the tags and fields aquavolt.schema declares,
    with the declared types; returns the measurements seen."""
    from aquavolt import schema

    ix = Influx(influx)
    seen = set()
    keys = [("autogen", s) for s in ix.query("SHOW FIELD KEYS")]
    keys += [(schema.RP_EVENTS, s) for s in ix.query(f'SHOW FIELD KEYS FROM "{schema.RP_EVENTS}"./.*/')]
    for rp, s in keys:
        name = s["name"]
        if name not in schema.MEASUREMENTS:
            continue
        # the journals live in their retention policy, everything else in autogen
        assert (rp == schema.RP_EVENTS) == (name in schema.EVENT_MEASUREMENTS), (rp, name)
        seen.add(name)
        tags, fields = schema.MEASUREMENTS[name]
        for field, ftype in s["values"]:
            assert field in fields, (name, field)
            assert ftype == schema.FIELD_TYPES.get(field, "float"), (name, field, ftype)
        tag_keys = ix.query(f'SHOW TAG KEYS FROM "{rp}"."{name}"')
        assert {v[0] for v in tag_keys[0]["values"]} <= set(tags), name
    return seen
