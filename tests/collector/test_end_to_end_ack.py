"""Nothing lost even when the broker dies: an edge agent (a real process polling a real
pymodbus server) and the collector (a real process) around the real Mosquitto and InfluxDB.
Mosquitto acknowledges before it persists (``autosave_interval 5`` here), so a SIGKILL loses
what it acknowledged since; the edge keeps every batch until the collector's stored mark.

Counting: the device serves one changing point in the default group (``level_m``) and
unchanging ones, so every batch the edge store wrote holds one ``level_m`` reading or one
``temperature_c`` reading (the slow group, sent once; ``sensor_ok`` rides once with the first
level): the edge's ``next_seq`` (batches written) equals the two counts in InfluxDB."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

from aquavolt.harness.servers import Mosquitto, free_port
from aquavolt.settings import InfluxSettings
from aquavolt.wire import Batch, Reading, Topics, encode

ROOT = Path(__file__).resolve().parents[2]
GW = "gw-ack"
LEVEL_Q = f"SELECT count(\"quality\") FROM \"telemetry\" WHERE gateway = '{GW}' AND point != 'sensor_ok'"


class Sensor(ModbusServerContext):
    """An av_level1 sensor at unit 1: input registers and one discrete input (sensor_ok)."""

    def __init__(self) -> None:  # no super().__init__: its own storage
        self.inputs = [0] * 10
        self.simdevices = []
        self.old_simulator = True

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1) -> Any:
        if func_code == 2:
            return [True] * count
        return self.inputs[address:address + count]

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: Any) -> None:
        return None

    def device_ids(self) -> list[int]:
        return [1]


class Device:
    """A pymodbus TCP server serving :class:`Sensor`; ``tick()`` moves the level."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sensor = ctx = Sensor()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="modbus", daemon=True)
        self.thread.start()

        async def serve() -> ModbusTcpServer:
            server = ModbusTcpServer(ctx, address=("127.0.0.1", self.port), ignore_missing_devices=True)
            await server.serve_forever(background=True)
            return server

        self.server = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        self.level = 0

    def tick(self) -> None:
        self.level += 50  # mm: past the 10 mm deadband every time
        lo, hi = self.level & 0xFFFF, self.level >> 16
        self.sensor.inputs[0:2] = [lo, hi]  # CDAB: low word first

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Ticker:
    def __init__(self, device: Device, period_s: float = 0.05) -> None:
        self.device, self.period_s = device, period_s
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self.thread = threading.Thread(target=self._run, name="ticker")
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.device.tick()

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(5)


class Edge:
    def __init__(self, tmp: Path, device: Device, url: str) -> None:
        self.state = tmp / "edge-state"
        self.log = tmp / "edge.log"
        gw = {"id": GW, "site": "site-1", "poll_intervals_s": {"default": 0.1, "slow": 0.1},
              "buses": [{"kind": "modbus_tcp", "id": "plc", "host": "127.0.0.1", "port": device.port}],
              "devices": [{"id": "tank", "profile": "av_level1", "bus": "plc", "unit_id": 1}]}
        self.gw_file = tmp / "gw.yaml"
        self.gw_file.write_text(yaml.safe_dump(gw))
        self.env = {**os.environ, "AQUAVOLT_MQTT_URL": url}
        self.env.pop("AQUAVOLT_CLOCK", None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Edge:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aquavolt.cli", "edge", "run", str(self.gw_file), "--state-dir",
             str(self.state), "--health-interval-s", "1", "--max-silence-s", "3600"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),  # noqa: SIM115
            start_new_session=True)
        return self

    def _db(self, q: str) -> int:
        db = sqlite3.connect(self.state / "queue.sqlite", timeout=5)
        try:
            row = db.execute(q).fetchone()
            return int(row[0]) if row and row[0] is not None else 0
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def written(self) -> int:
        """Batches the edge store committed (seq 0 .. next_seq - 1)."""
        return self._db("SELECT value FROM meta WHERE key = 'next_seq'")

    def held(self) -> int:
        return self._db("SELECT COUNT(*) FROM q")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def until(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@pytest.fixture
def device() -> Iterator[Device]:
    d = Device()
    yield d
    d.close()


def _all_stored(edge: Edge, ticker: Ticker, influx: InfluxSettings, cx: Any) -> tuple[int, int]:
    """Stop the changes; wait until InfluxDB holds every batch the edge store wrote."""
    ticker.stop()
    until(lambda: cx.count(influx, LEVEL_Q) == edge.written(), 20)
    return cx.count(influx, LEVEL_Q), edge.written()


def test_broker_sigkill_while_collector_away_and_while_writing_loses_nothing(
        mosquitto: Mosquitto, influx_settings: InfluxSettings, topic_prefix: str, tmp_path: Path,
        collectors: list[Any], device: Device, cx: Any) -> None:
    url = mosquitto.url() + f"?prefix={topic_prefix}"
    c = cx.CollectorProcess(url, influx_settings, tmp_path / "c1").start()
    collectors.append(c)
    ticker = Ticker(device)
    ticker.start()
    edge = Edge(tmp_path, device, url).start()
    try:
        assert cx.wait_count(influx_settings, 10, 20, q=LEVEL_Q) >= 10, edge.log.read_text()[-2000:]
        # (1) the collector away (its session persists), Mosquitto killed with SIGKILL
        c.stop()
        away = edge.written()
        assert until(lambda: edge.written() >= away + 25, 15)
        mosquitto.kill()
        mosquitto.start()
        collectors.append(cx.CollectorProcess(url, influx_settings, tmp_path / "c1").start())
        assert until(lambda: edge.written() >= away + 40, 15)  # the edge is back on the broker
        got, n = _all_stored(edge, ticker, influx_settings, cx)
        assert got == n, (got, n, edge.log.read_text()[-2000:])
        assert until(lambda: edge.held() == 0, 10), edge.held()  # the mark let it forget them

        # (2) killed again while the collector is writing
        ticker.start()
        at = cx.count(influx_settings, LEVEL_Q)
        assert cx.wait_count(influx_settings, at + 15, 15, q=LEVEL_Q) >= at + 15
        mosquitto.kill()
        mosquitto.start()
        mark = edge.written()
        assert until(lambda: edge.written() >= mark + 15, 15)
        got, n = _all_stored(edge, ticker, influx_settings, cx)
        assert got == n, (got, n, edge.log.read_text()[-2000:])
        assert until(lambda: edge.held() == 0, 10), edge.held()
    finally:
        ticker.stop()
        edge.stop()
    assert edge.proc is not None and edge.proc.returncode == 0


def test_gap_filled_or_reported_lost(
        mosquitto: Mosquitto, influx_settings: InfluxSettings, topic_prefix: str, tmp_path: Path,
        collectors: list[Any], publisher: Any, cx: Any) -> None:
    """The collector's side of a gap (the edge's side: tests/edge/test_store_bounds.py). The
    test speaks for the gateway on the wire: seq 3 and 4 missing while 5..9 arrived; asked
    again, it sends 3 and answers that 4 was dropped from its store."""
    from aquavolt.wire import ResendResult
    topics = Topics(topic_prefix)
    url = mosquitto.url() + f"?prefix={topic_prefix}"
    c = cx.CollectorProcess(url, influx_settings, tmp_path / "c1").start()
    collectors.append(c)
    gw = "gw-gap"
    asked: list[bytes] = []
    got = threading.Event()

    def on_message(_c: object, _u: object, msg: Any) -> None:
        asked.append(bytes(msg.payload))
        got.set()

    publisher.client.on_message = on_message
    publisher.client.subscribe(topics.resend(gw), qos=1)

    def batch(seq: int) -> tuple[str, bytes]:
        b = Batch(gateway=gw, device="d", seq=seq, readings=[
            Reading(point="p", value=float(seq), ts_ms=cx.T0_MS + seq * 1000)])
        return topics.data(gw, "d"), encode(b)

    q = f"SELECT count(\"quality\") FROM \"telemetry\" WHERE gateway = '{gw}'"
    publisher.publish_many([batch(s) for s in (0, 1, 2, 5, 6, 7, 8, 9)])
    assert cx.wait_count(influx_settings, 8, 10, q=q) == 8
    assert got.wait(10), c.log()[-2000:]
    req = orjson.loads(asked[0])
    assert (req["from_seq"], req["to_seq"]) == (3, 4)
    publisher.publish_many([batch(3)])
    publisher.publish(topics.resent(gw), encode(ResendResult(
        gateway=gw, from_seq=3, to_seq=4, resent=1, lost=[(4, 4)], ts_ms=cx.T0_MS)))
    assert cx.wait_count(influx_settings, 9, 10, q=q) == 9
    assert until(lambda: c.metrics().get("aquavolt_collector_lost_messages_total") == 1, 10)
    m = c.metrics()
    assert m["aquavolt_collector_resend_requests_total"] >= 1
    assert m["aquavolt_collector_lost_gaps_total"] == 1
    assert "1 data messages lost for good (seq 4..4)" in c.log()
    # and in InfluxDB, for the gateways dashboard, stamped with the gateway's answer
    from aquavolt.influx import Influx
    loss = Influx(influx_settings).rows(f"SELECT * FROM \"data_loss\" WHERE gateway = '{gw}'")
    assert [(r["time"], r["messages"], r["first_seq"], r["last_seq"]) for r in loss] == [(cx.T0_MS, 1, 4, 4)]
    assert "data_loss" in cx.check_schema(influx_settings)
