"""Stored marks with a shared subscription: two collector processes in one share group
(``$share/ingest/...``), the real Mosquitto and InfluxDB, and a gateway's real store and
link (``edge.link``, in the test's loop) publishing real seqs. The broker gives each data
message to one member only; the members tell each other what they stored, so the retained
mark reaches the last seq and the gateway forgets its data. One member killed with SIGKILL
mid-run: what it stored without reporting is asked again from the gateway and stored again,
nothing is lost, and the mark still reaches the end. A bad report is dead-lettered."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from aquavolt.clock import RealClock
from aquavolt.edge.link import Link
from aquavolt.edge.store import Store
from aquavolt.harness.servers import Mosquitto
from aquavolt.profiles import PointClass
from aquavolt.settings import InfluxSettings
from aquavolt.wire import Topics

T0_MS = 1_764_412_800_000


async def _until(cond: Callable[[], Any], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return True
        await asyncio.sleep(0.1)
    return False


def test_a_share_group_marks_the_union_even_when_a_member_is_killed(
        mosquitto: Mosquitto, influx_settings: InfluxSettings, topic_prefix: str, tmp_path: Path,
        collectors: list[Any], publisher: Any, cx: Any) -> None:
    t = Topics(topic_prefix)
    gw = "gw-group"
    url = mosquitto.url() + f"?prefix={topic_prefix}"
    tag = uuid.uuid4().hex[:8]
    ids = (f"{tag}-a", f"{tag}-b")  # the first asks the gateways for gaps

    def member(i: int) -> Any:
        c = cx.CollectorProcess(url, influx_settings, tmp_path / ids[i], "--share-group", "ingest",
                                "--client-id", ids[i], "--flush-interval-ms", "20")
        collectors.append(c)
        return c.start()

    with ThreadPoolExecutor(2) as pool:  # both start at once
        a, b = pool.map(member, (0, 1))
    store = Store(tmp_path / "gw.sqlite3")
    settings = mosquitto.settings().model_copy(update={"prefix": topic_prefix})
    link = Link(settings, f"edge-{tag}", store, RealClock(), (t.gateway_status(gw), b"{}"))
    link.acknowledgements(gw, 0, t.stored(gw), t.resend(gw), t.resent(gw))
    q = f"SELECT count(\"quality\") FROM \"telemetry\" WHERE gateway = '{gw}'"

    def batch(seq: int) -> bytes:
        return orjson.dumps({"v": 1, "gateway": gw, "device": "d", "seq": seq, "bd_seq": 0,
                             "historical": False, "readings": [
                                 {"point": "p", "value": float(seq), "ts_ms": T0_MS + seq * 1000,
                                  "quality": "good"}]})

    def stored() -> Callable[[], Any]:
        return lambda: asyncio.to_thread(cx.count, influx_settings, q)

    async def all_stored_and_marked(n: int, why: str) -> None:
        assert await _until(lambda: store.next_seq == n and store.stored_seq == n - 1, 20), \
            (why, store.next_seq, store.stored_seq, a.log()[-1500:], b.log()[-1500:])
        assert await stored()() == n, why
        assert store.depth == 0  # the gateway forgot everything: the mark let it

    async def scenario() -> None:
        await link.start()
        try:
            assert await _until(lambda: link.connected, 10)
            for _ in range(200):
                link.submit(t.data(gw, "d"), batch, PointClass.TELEMETRY, RealClock().now_ms())
            await all_stored_and_marked(200, "both members up")
            # a report that breaks the contract (a range ending before it starts): dead-lettered
            # by each member, the marks unchanged
            publisher.publish(t.group_stored("ingest"), b'{"v":1,"member":"x","ranges":[["' + gw.encode()
                              + b'",900,800,0]],"ts_ms":1}')
            bad = 'aquavolt_collector_deadletters_total{reason="malformed"}'
            assert await _until(lambda: a.metrics()[bad] == b.metrics()[bad] == 1, 10)
            ma = a.metrics()["aquavolt_collector_messages_total"]
            mb = b.metrics()["aquavolt_collector_messages_total"]
            assert ma > 20 and mb > 20, (ma, mb)  # each stored only part of the seqs

            # a stream; a member killed in the middle of it, and started again on its session
            for _ in range(150):
                link.submit(t.data(gw, "d"), batch, PointClass.TELEMETRY, RealClock().now_ms())
                await asyncio.sleep(0.004)
            a.kill()
            for _ in range(150):
                link.submit(t.data(gw, "d"), batch, PointClass.TELEMETRY, RealClock().now_ms())
                await asyncio.sleep(0.004)
            # while it is away its share waits in its session: the mark stays below it
            assert store.stored_seq < store.next_seq - 1
            await asyncio.to_thread(member, 0)
            await all_stored_and_marked(500, "a member killed and started again")
        finally:
            await link.stop()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
    assert cx.telemetry(influx_settings).keys() >= {
        (gw, "d", "p", T0_MS + s * 1000) for s in range(500)}
