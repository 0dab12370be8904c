"""Operator notifications against a real SMTP server (aiosmtpd, started here) and a real
local HTTP receiver (aiohttp): priority filter, rate limit, escalation of unacknowledged alarms."""

from __future__ import annotations

import asyncio
import email
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller

from aquavolt.harness.servers import free_port
from aquavolt.rules.notify import EmailConfig, Notifier, NotifyConfig, WebhookConfig
from aquavolt.wire import AlarmEvent


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content)
        msg["X-Rcpt"] = ",".join(envelope.rcpt_tos)
        self.messages.append(msg)
        return "250 OK"


def _ev(aid: str, transition: str, state: str, priority: str = "high") -> AlarmEvent:
    asset, cond = aid.split("/")
    return AlarmEvent(alarm_id=aid, asset=asset, condition=cond, state=state, transition=transition,
                      priority=priority, ts_ms=1_000, message="Pump tripped")


async def _wait(pred: Any, within_s: float = 5.0) -> bool:
    for _ in range(int(within_s / 0.02)):
        if pred():
            return True
        await asyncio.sleep(0.02)
    return bool(pred())


def test_email_webhook_rate_limit_and_escalation() -> None:
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    hooks: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        hooks.append(await request.json())
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application()
        app.add_routes([web.post("/hook", receive), web.post("/escalate", receive)])
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        cfg = NotifyConfig(
            min_priority="high", max_per_minute=2, escalate_after_s=300,
            email=EmailConfig(host="127.0.0.1", port=smtp.port, to=["duty@utility.example"],
                              escalate_to=["manager@utility.example"]),
            webhook=WebhookConfig(url=f"http://127.0.0.1:{port}/hook",
                                  escalate_url=f"http://127.0.0.1:{port}/escalate"))
        n = Notifier(cfg)
        try:
            n.on_events([_ev("pump-1/fault", "raised", "unack"),
                         _ev("tank-1/level_m_low", "raised", "unack", "medium")], now_s=0.0)
            assert await _wait(lambda: len(inbox.messages) == 1 and len(hooks) == 1)
            assert "pump-1/fault" in inbox.messages[0]["Subject"]
            assert hooks[0]["event"]["alarm_id"] == "pump-1/fault" and not hooks[0]["escalated"]
            # rate limit: 2 per minute per channel
            n.on_events([_ev("pump-2/fault", "raised", "unack"), _ev("feeder-1/outage", "raised", "unack")],
                        now_s=10.0)
            assert await _wait(lambda: len(inbox.messages) == 2 and len(hooks) == 2)
            await asyncio.sleep(0.2)
            assert len(inbox.messages) == 2 and n.suppressed == 2
            # pump-2 acknowledged; pump-1 left unacknowledged: escalated after 300 s, once
            n.on_events([_ev("pump-2/fault", "acknowledged", "acked"),
                         _ev("feeder-1/outage", "acknowledged", "acked")], now_s=100.0)
            n.escalate(now_s=200.0)
            await asyncio.sleep(0.2)
            assert len(inbox.messages) == 2
            n.escalate(now_s=301.0)
            n.escalate(now_s=400.0)
            assert await _wait(lambda: len(inbox.messages) == 3 and len(hooks) == 3)
            await asyncio.sleep(0.2)
            esc = inbox.messages[2]
            assert "ESCALATED" in esc["Subject"] and "pump-1/fault" in esc["Subject"]
            assert esc["X-Rcpt"] == "manager@utility.example"
            assert hooks[2]["escalated"] and hooks[2]["event"]["alarm_id"] == "pump-1/fault"
            assert len(inbox.messages) == 3 and len(hooks) == 3
        finally:
            await n.close()
            await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        smtp.stop()


def test_unreachable_peers_do_not_raise() -> None:
    async def main() -> None:
        cfg = NotifyConfig(email=EmailConfig(port=free_port(), to=["x@y.example"], timeout_s=1),
                           webhook=WebhookConfig(url=f"http://127.0.0.1:{free_port()}/hook", timeout_s=1))
        n = Notifier(cfg)
        n.on_events([_ev("pump-1/fault", "raised", "unack")], now_s=0.0)
        await n.close()
        assert n.sent == 0

    asyncio.run(main())
