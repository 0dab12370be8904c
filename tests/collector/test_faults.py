"""Nothing lost: InfluxDB stopped mid-stream, the collector killed with SIGKILL mid-stream,
and two collectors sharing one subscription. All against the real Mosquitto and InfluxDB,
with the collector as a real process."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from aquavolt.harness.servers import InfluxDB, Mosquitto
from aquavolt.settings import InfluxSettings
from aquavolt.wire import Topics


def _stream(publisher: Any, items: list[tuple[str, bytes]], per_s: float) -> threading.Thread:
    def run() -> None:
        step = 20
        for i in range(0, len(items), step):
            publisher.publish_many(items[i:i + step])
            time.sleep(step / per_s)

    t = threading.Thread(target=run, name="stream")
    t.start()
    return t


def test_influxdb_outage_mid_stream_loses_nothing(
        mosquitto: Mosquitto, influxdb: InfluxDB, influx_settings: InfluxSettings, topic_prefix: str,
        tmp_path: Path, collectors: list[Any], publisher: Any, cx: Any) -> None:
    topics = Topics(topic_prefix)
    # keepalive 5 s: the outage outlasts it, so the broker also drops the collector while
    # it holds back (backpressure), and the persistent session takes over the queuing
    url = mosquitto.url() + f"?prefix={topic_prefix}&keepalive=5"
    cfg = tmp_path / "collector.yaml"
    cfg.write_text("batch_points: 200\nmax_inbox_messages: 50\nmax_backoff_s: 1.0\n")
    c = cx.CollectorProcess(url, influx_settings, tmp_path / "c1", "--config", str(cfg)).start()
    collectors.append(c)
    batches = cx.make_batches("gw-a", devices=4, batches=150, readings=10)
    items = cx.batch_items(topics, batches)
    first, during, after = items[:200], items[200:500], items[500:]
    publisher.publish_many(first)
    assert cx.wait_count(influx_settings, 2000) == 2000

    influxdb.stop()
    publisher.publish_many(during)  # the broker takes them; InfluxDB is away
    time.sleep(6)
    m = c.metrics()
    assert m["aquavolt_collector_write_retries_total"] > 0
    # bounded: at most the inbox and the batches in flight are held; the broker keeps the rest
    assert m["aquavolt_collector_backlog_messages"] <= 50 + 3 * 20 + 5
    assert m["aquavolt_collector_messages_total"] < 500
    publisher.publish_many(after[:50])
    time.sleep(6)
    influxdb.start()
    publisher.publish_many(after[50:])

    n = len(batches) * 10
    assert cx.wait_count(influx_settings, n, timeout_s=40) == n, c.log()[-3000:]
    assert cx.telemetry(influx_settings) == cx.expected_points(batches)
    assert c.proc.poll() is None
    assert "InfluxDB" in c.log() or "unreachable" in c.log()


def test_sigkill_mid_stream_loses_nothing(
        mosquitto: Mosquitto, influx_settings: InfluxSettings, topic_prefix: str, tmp_path: Path,
        collectors: list[Any], publisher: Any, cx: Any) -> None:
    topics = Topics(topic_prefix)
    url = mosquitto.url() + f"?prefix={topic_prefix}"
    c = cx.CollectorProcess(url, influx_settings, tmp_path / "c1", "--batch-points", "500",
                            "--flush-interval-ms", "300").start()
    collectors.append(c)
    batches = cx.make_batches("gw-k", devices=10, batches=100, readings=10)
    stream = _stream(publisher, cx.batch_items(topics, batches), per_s=400)
    n = len(batches) * 10
    try:
        assert 0 < cx.wait_count(influx_settings, 2000, timeout_s=20) < n
        c.kill()  # mid-stream: some batches written but not acknowledged, some not written
        at_kill = cx.count(influx_settings)
        time.sleep(1.0)  # the stream goes on; the broker queues for the session
        again = cx.CollectorProcess(url, influx_settings, tmp_path / "c1", "--batch-points", "500")
        collectors.append(again.start())
        assert "session present: True" in again.log()
    finally:
        stream.join(30)
    assert at_kill < n
    assert cx.wait_count(influx_settings, n, timeout_s=30) == n
    assert cx.telemetry(influx_settings) == cx.expected_points(batches)


def test_two_collectors_share_the_load(
        mosquitto: Mosquitto, influx_settings: InfluxSettings, topic_prefix: str, tmp_path: Path,
        collectors: list[Any], publisher: Any, cx: Any) -> None:
    topics = Topics(topic_prefix)
    url = mosquitto.url() + f"?prefix={topic_prefix}"
    a = cx.CollectorProcess(url, influx_settings, tmp_path / "a", "--share-group", "ingest").start()
    collectors.append(a)
    b = cx.CollectorProcess(url, influx_settings, tmp_path / "b", "--share-group", "ingest").start()
    collectors.append(b)
    batches = cx.make_batches("gw-s", devices=8, batches=50, readings=10)
    publisher.publish_many(cx.batch_items(topics, batches))
    n = len(batches) * 10
    assert cx.wait_count(influx_settings, n) == n
    assert cx.telemetry(influx_settings) == cx.expected_points(batches)
    # each message went to one of them only (besides, they tell each other what they stored)
    ma = a.metrics()["aquavolt_collector_readings_total"] / 10
    mb = b.metrics()["aquavolt_collector_readings_total"] / 10
    assert ma + mb == len(batches)
    assert ma > len(batches) * 0.25 and mb > len(batches) * 0.25, (ma, mb)
