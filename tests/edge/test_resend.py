"""The gateway's side of end-to-end acknowledgement, against the real Mosquitto: the stored
mark lets the store forget, a resend request sends the range again from the store, and what
the store dropped under its byte bound is answered as lost, with its size."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from helpers import json_of, messages, recorder

from aquavolt.clock import RealClock
from aquavolt.edge.link import Link
from aquavolt.edge.store import Store
from aquavolt.mqtt import make_client
from aquavolt.profiles import PointClass
from aquavolt.settings import MqttSettings
from aquavolt.wire import ResendRequest, StoredMark, Topics, decode_batch, encode


async def _until(cond: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


def test_mark_forgets_resend_fills_and_dropped_is_reported(mosquitto, topic_prefix, tmp_path: Path) -> None:
    t = Topics(topic_prefix)
    gw = "gw-r"
    store = Store(tmp_path / "q.sqlite3", max_bytes=2_000)
    settings = mosquitto.settings().model_copy(update={"prefix": topic_prefix})
    link = Link(settings, "edge-resend", store, RealClock(), (t.gateway_status(gw), b"{}"))
    link.acknowledgements(gw, 0, t.stored(gw), t.resend(gw), t.resent(gw))
    collector = make_client(settings, "collector-resend")
    collector.connect(settings.host, settings.port)
    collector.loop_start()

    def batch(seq: int) -> bytes:
        return orjson.dumps({"v": 1, "gateway": gw, "device": "d", "seq": seq, "bd_seq": 0,
                             "historical": False, "readings": [
                                 {"point": "p", "value": seq, "ts_ms": 1_000 + seq, "quality": "good"}]})

    async def scenario() -> None:
        await link.start()
        try:
            await steps()
        finally:
            await link.stop()

    async def steps() -> None:
        assert await _until(lambda: link.connected)
        for _ in range(30):  # 30 messages of about 100 bytes: the bound keeps about 20
            link.submit(t.data(gw, "d"), batch, PointClass.TELEMETRY, RealClock().now_ms())
        await asyncio.wait_for(link.drained(), 10)
        assert store.depth == store.next_seq - store.dropped  # broker-acked, kept
        collector.publish(t.stored(gw), encode(StoredMark(gateway=gw, seq=4, bd_seq=0, ts_ms=1)), qos=1,
                          retain=True).wait_for_publish(5)
        assert await _until(lambda: store.stored_seq == 4)
        with recorder(mosquitto, topic_prefix, "resend") as rec:
            collector.publish(t.resend(gw), encode(ResendRequest(gateway=gw, from_seq=0, to_seq=29, ts_ms=1)),
                              qos=1).wait_for_publish(5)
            assert await _until(lambda: bool(messages(rec, "/resent")))
            answer = json_of(messages(rec, "/resent")[0])
            held = store.depth
            assert await _until(lambda: len(messages(rec, "/data")) >= held)
            again = sorted(decode_batch(m.payload).seq for m in messages(rec, "/data"))
        dropped = store.dropped
        assert dropped > 0
        # the store dropped the oldest: seq 0..dropped-1; 0..4 are below the mark, not lost
        assert answer["lost"] == [[5, dropped - 1]] and answer["stored_seq"] == 4
        assert answer["resent"] == held == 30 - dropped
        assert again == list(range(dropped, 30))
        assert all(decode_batch(m.payload).historical for m in messages(rec, "/data"))

    try:
        asyncio.run(scenario())
    finally:
        collector.publish(t.stored(gw), b"", qos=1, retain=True).wait_for_publish(5)
        collector.disconnect()
        collector.loop_stop()
        store.close()


def test_a_callback_posted_before_the_stop_runs_not_on_the_closed_store(tmp_path: Path) -> None:
    """paho's thread posts a stored mark just before the link stops; the loop runs it after the
    agent has closed the store: it is dropped ("Cannot operate on a closed database" before)."""
    store = Store(tmp_path / "q.sqlite3", max_bytes=2_000)
    link = Link(MqttSettings(), "edge-closed", store, RealClock(), ("t/status", b"{}"))
    link.acknowledgements("gw-c", 0, "t/stored", "t/resend", "t/resent")
    called: list[bytes] = []
    link._stored = called.append  # type: ignore[method-assign]  # the test's seam: what would touch the store

    class Msg:  # as paho's MQTTMessage
        topic, payload, mid, qos, retain = "t/stored", b"mark before the stop", 1, 1, True

    async def scenario() -> None:
        link.transport.attach(asyncio.get_running_loop())  # running, as after Link.start
        link.transport._on_message(None, None, Msg())  # paho's thread posts the mark...
        link.transport.stop()  # ...the stop ends (Link.stop's last step), and the store closes
        store.close()
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert called == []
