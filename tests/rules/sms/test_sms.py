"""Customer SMS: sink, durable queue, templates and the HTTP provider.

No real SMS provider can run here: a local aiohttp server stands in for the SMS gateway
(the seam is HttpSmsProvider's HTTP API, documented in rules/sms/provider.py). It records
every request, can answer errors on demand, and reports delivery status. CustomerAlerts
go through the real Mosquitto fixture.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from aquavolt.clock import RealClock
from aquavolt.config import load_field
from aquavolt.harness.servers import Mosquitto
from aquavolt.mqtt import Recorder, make_client
from aquavolt.rulecfg import SmsConfig
from aquavolt.rules.api import Condition
from aquavolt.rules.sms import DryRunProvider, HttpSmsProvider, SmsSink, build_customer_sink
from aquavolt.rules.sms.queue import SmsQueue
from aquavolt.rules.sms.templates import TEMPLATES, render
from aquavolt.wire import CustomerAlert, Topics, decode

ROOT = Path(__file__).resolve().parents[3]
LOADED = load_field(ROOT / "examples/demo-town.yaml")
CFG = SmsConfig(retry_base_s=0.05, status_poll_s=0.05)


class Gateway:
    """The stand-in SMS gateway: POST /messages, GET /messages/{id}."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.fail_next: list[int] = []
        self.auth: list[str] = []
        self.app = web.Application()
        self.app.add_routes([web.post("/messages", self.post), web.get("/messages/{id}", self.get)])

    async def post(self, req: web.Request) -> web.Response:
        self.auth.append(req.headers.get("Authorization", ""))
        if self.fail_next:
            return web.Response(status=self.fail_next.pop(0), text="try later")
        body = await req.json()
        self.posts.append(body)
        return web.json_response({"id": f"m{len(self.posts)}"}, status=201)

    async def get(self, req: web.Request) -> web.Response:
        return web.json_response({"id": req.match_info["id"], "status": "delivered"})

    async def __aenter__(self) -> str:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def over(customer: str, period: str = "2026-03-01", ts: int = 1_773_500_000_000) -> Condition:
    return Condition(customer, "over_consumption", True, ts, audience="customer", customer=customer,
                     value=1.458, details={"basis": "same_period_last_year", "period_start": period,
                                           "period_end": "2026-03-14", "this_l_per_day": 312.0,
                                           "ref_l_per_day": 214.0, "ratio": 1.458})


def outage(active: bool, ts: int, restored: bool = False) -> Condition:
    cust = [c.id for c in LOADED.field.customers if c.transformer == "tx-1a"]
    d: dict[str, Any] = {"start_ms": 1_775_466_000_000, "customers": cust, "classification": "sustained"}
    if restored:
        d["restored"] = True
    return Condition("tx-1a", "outage", active, ts, audience="customer", details=d)


async def settle(check: Any, limit_s: float = 5.0) -> None:
    for _ in range(int(limit_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    assert check()


def test_templates_every_kind_and_language() -> None:
    fields = {"utility": "U", "start": "01/03", "end": "14/03", "pct": "46", "basis": "b", "this": "312",
              "ref": "214", "hours": 24, "rate": "12", "time": "10:00", "minutes": "12"}
    for kind, langs in TEMPLATES.items():
        assert set(langs) == {"fr", "ar", "en"}, kind
        for lang in langs:
            text = render(kind, lang, **fields)
            assert "{" not in text
        assert re.search(r"[\u0600-\u06ff]", render(kind, "ar", **fields))


async def _test_one_message_per_event_with_retries_and_delivery(tmp_path: Path) -> None:
    gw = Gateway()
    gw.fail_next = [503, 503]
    published: list[tuple[str, bytes]] = []
    async with gw as url:
        sink = SmsSink(LOADED, HttpSmsProvider(url, "tok-1"), tmp_path / "sms.db", RealClock(),
                       publish=lambda t, p, r=False: published.append((t, p)), topics=Topics("t"), cfg=CFG)
        sink.handle(over("c0002"))  # French
        sink.handle(over("c0002"))  # the same event again
        await settle(lambda: any(r.status == "delivered" for r in sink.queue.all()))
        await sink.stop()
        # a restart on the same queue file never sends the event a second time
        sink2 = SmsSink(LOADED, HttpSmsProvider(url, "tok-1"), tmp_path / "sms.db", RealClock(), cfg=CFG)
        sink2.handle(over("c0002"))
        await asyncio.sleep(0.2)
        await sink2.stop()
    assert len(gw.posts) == 1
    post = gw.posts[0]
    assert post["to"] == "+212682569631" and post["reference"] == "over_consumption/c0002/2026-03-01"
    assert "supérieure de 46 %" in post["text"] and "312 L/jour contre 214 L/jour" in post["text"]
    assert set(gw.auth) == {"Bearer tok-1"} and len(gw.auth) == 3  # two 503s, then accepted
    rows = SmsQueue(tmp_path / "sms.db").all()
    assert [(r.status, r.attempts, r.provider_id) for r in rows] == [("delivered", 3, "m1")]
    statuses = [decode(p, CustomerAlert).status for t, p in published if t == "t/event/customer"]
    assert statuses == ["queued", "sent", "delivered"]


async def _test_permanent_failure_and_cooldown(tmp_path: Path) -> None:
    gw = Gateway()
    gw.fail_next = [400]
    async with gw as url:
        sink = SmsSink(LOADED, HttpSmsProvider(url, "t"), tmp_path / "q.db", RealClock(), cfg=CFG)
        sink.handle(over("c0001"))  # refused for good: failed, not retried
        await settle(lambda: sink.failed == 1)
        sink.handle(over("c0003", "2026-03-01"))
        sink.handle(over("c0003", "2026-03-02", ts=1_773_500_000_000 + 3_600_000))  # within 24 h
        await settle(lambda: sink.sent == 1)
        await sink.stop()
    rows = {(r.customer, r.event_id): r.status for r in SmsQueue(tmp_path / "q.db").all()}
    assert rows[("c0001", "over_consumption/c0001/2026-03-01")] == "failed"
    assert rows[("c0003", "over_consumption/c0003/2026-03-02")] == "suppressed"
    assert len(gw.posts) == 1 and "فحص" in gw.posts[0]["text"]  # c0003 reads Arabic


async def _test_outage_fan_out_and_restoration(tmp_path: Path) -> None:
    gw = Gateway()
    async with gw as url:
        sink = SmsSink(LOADED, HttpSmsProvider(url, "t"), tmp_path / "o.db", RealClock(), cfg=CFG)
        start = 1_775_466_000_000
        sink.handle(outage(True, start + 42_300))  # momentary: no SMS yet
        sink.handle(outage(True, start + 300_000))  # sustained: one SMS to each of the 40
        sink.handle(outage(True, start + 300_000))
        await settle(lambda: sink.sent == 40)
        sink.handle(outage(False, start + 720_000, restored=True))
        await settle(lambda: sink.sent == 80)
        await sink.stop()
    restorations = [p for p in gw.posts if p["reference"].startswith("restoration/tx-1a/")]
    assert len(restorations) == 40 and all("12" in p["text"] for p in restorations)
    langs = {c.language for c in LOADED.field.customers if c.transformer == "tx-1a"}
    assert len(langs) >= 2
    assert len({p["to"] for p in gw.posts[:40]}) == 40


async def _test_build_from_args_and_alerts_over_mqtt(tmp_path: Path, mosquitto: Mosquitto,
                                                    topic_prefix: str) -> None:
    class Args:
        pass

    assert build_customer_sink(LOADED, Args()) is None  # no gateway configured
    topics = Topics(topic_prefix)
    client = make_client(mosquitto.settings(), "sms-test-pub")
    client.connect(mosquitto.settings().host, mosquitto.settings().port)
    client.loop_start()
    gw = Gateway()
    try:
        with Recorder(mosquitto.settings(), [topics.customer_alerts], "sms-test-rec") as rec:
            async with gw as url:
                args = Args()
                args.sms_url, args.sms_token, args.state_dir = url, "tok", str(tmp_path)  # type: ignore[attr-defined]
                args.publish = lambda t, p, r=False: client.publish(t, p, qos=1, retain=r)  # type: ignore[attr-defined]
                args.topics, args.clock = topics, RealClock()  # type: ignore[attr-defined]
                sink = build_customer_sink(LOADED, args)
                assert sink is not None
                sink.cfg = CFG
                sink.handle(Condition("c0010", "continuous_flow", True, 1_775_600_000_000, audience="customer",
                                      customer="c0010", value=12.0, details={"leak_rate_lph": 12.0, "hours": 24}))
                await settle(lambda: any(r.status == "delivered" for r in sink.queue.all()))
                await sink.stop()
            assert rec.wait_for(lambda ms: len(ms) >= 3)
            payloads = [m.payload for m in rec.snapshot()]
            alerts = [json.loads(p) for p in payloads]
    finally:
        client.loop_stop()
        client.disconnect()
    assert [a["status"] for a in alerts] == ["queued", "sent", "delivered"]
    assert alerts[0]["kind"] == "continuous_flow" and alerts[0]["customer"] == "c0010"
    # the phone number stays in the SMS queue: the event names the customer only
    phone = next(c.phone for c in LOADED.field.customers if c.id == "c0010")
    assert phone and all("phone" not in a for a in alerts)
    assert not any(phone.encode() in p or phone[1:].encode() in p for p in payloads)
    assert (tmp_path / "sms.sqlite3").exists()


def test_one_message_per_event_with_retries_and_delivery(tmp_path: Path) -> None:
    asyncio.run(_test_one_message_per_event_with_retries_and_delivery(tmp_path))


def test_permanent_failure_and_cooldown(tmp_path: Path) -> None:
    asyncio.run(_test_permanent_failure_and_cooldown(tmp_path))


def test_outage_fan_out_and_restoration(tmp_path: Path) -> None:
    asyncio.run(_test_outage_fan_out_and_restoration(tmp_path))


def test_build_from_args_and_alerts_over_mqtt(tmp_path: Path, mosquitto: Mosquitto,
                                                    topic_prefix: str) -> None:
    asyncio.run(_test_build_from_args_and_alerts_over_mqtt(tmp_path, mosquitto, topic_prefix))


async def _test_dry_run_composes_and_announces_without_sending(tmp_path: Path) -> None:
    class Args:
        pass

    published: list[tuple[str, bytes]] = []
    args = Args()
    args.sms_url, args.state_dir = "dry-run", str(tmp_path)  # type: ignore[attr-defined]
    args.publish = lambda t, p, r=False: published.append((t, p))  # type: ignore[attr-defined]
    args.topics, args.clock = Topics("t"), RealClock()  # type: ignore[attr-defined]
    sink = build_customer_sink(LOADED, args)
    assert sink is not None and isinstance(sink.provider, DryRunProvider)
    sink.cfg = CFG
    sink.handle(over("c0002"))
    await settle(lambda: any(r.status == "sent" for r in sink.queue.all()))
    await sink.stop()
    alerts = [decode(p, CustomerAlert) for t, p in published if t == "t/event/customer"]
    assert [a.status for a in alerts] == ["queued", "sent"]
    assert alerts[0].customer == "c0002" and "312 L/jour contre 214 L/jour" in alerts[0].text
    assert sink.provider.count == 1


def test_dry_run_composes_and_announces_without_sending(tmp_path: Path) -> None:
    asyncio.run(_test_dry_run_composes_and_announces_without_sending(tmp_path))
