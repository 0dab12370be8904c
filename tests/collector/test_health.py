"""The collector proves it is making progress: ``/health`` answers 503 with the reason when
work waits with nothing written (InfluxDB away), 200 again once it writes, and the systemd
watchdog is pinged over ``$NOTIFY_SOCKET`` while the loop runs. Real Mosquitto, InfluxDB and
collector process; the notify socket is a plain datagram socket, as systemd's is."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from aquavolt.harness.servers import InfluxDB, Mosquitto
from aquavolt.settings import InfluxSettings
from aquavolt.wire import Topics


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _until(pred: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_health_fails_while_nothing_is_written_and_the_watchdog_is_pinged(
        mosquitto: Mosquitto, influxdb: InfluxDB, influx_settings: InfluxSettings, topic_prefix: str,
        tmp_path: Path, collectors: list[Any], publisher: Any, cx: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    cfg = tmp_path / "collector.yaml"
    cfg.write_text("stuck_after_s: 1.0\nmax_backoff_s: 0.5\n")
    c = cx.CollectorProcess(mosquitto.url() + f"?prefix={topic_prefix}", influx_settings,
                            tmp_path / "c1", "--config", str(cfg)).start()
    collectors.append(c)
    try:
        got = []
        while not any(b"WATCHDOG=1" in m for m in got):
            got.append(sock.recv(4096))
        assert any(b"READY=1" in m for m in got), got
        topics = Topics(topic_prefix)
        batches = cx.make_batches("gw-h", devices=1, batches=4, readings=5)
        items = cx.batch_items(topics, batches)
        publisher.publish_many(items[:2])
        assert cx.wait_count(influx_settings, 10) == 10
        status, body = _health(c.metrics_port)
        assert status == 200 and body["ok"] and body["mqtt_connected"], body

        influxdb.stop()
        publisher.publish_many(items[2:])

        def failing() -> tuple[int, dict[str, Any]] | None:
            h = _health(c.metrics_port)
            return h if h[0] == 503 else None

        status, body = _until(failing, 30, "/health 503 while InfluxDB is away")
        assert "nothing written" in body["reason"] and body["waiting_without_write_s"] >= 1, body
        sock.recv(4096)  # the loop still runs: the watchdog is still pinged
        # nobody reads the notify socket from now on: once its queue is full, pings are
        # dropped and counted, and the collector goes on (a blocking send froze its loop)
        _until(lambda: c.metrics()["aquavolt_collector_notify_dropped_total"] > 0 or None, 60,
               "notify messages dropped once the socket is full")
        influxdb.start()
        # bounds a failure only: a loaded machine restarts InfluxDB slowly
        assert cx.wait_count(influx_settings, 20, timeout_s=120) == 20
        _until(lambda: _health(c.metrics_port)[0] == 200, 30, "/health 200 once written")
    finally:
        sock.close()
