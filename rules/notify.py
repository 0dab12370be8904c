"""Operator notifications: email (SMTP) and webhook for alarms at or above a priority,
rate-limited, with escalation when an alarm stays unacknowledged.

Configuration (``--notify FILE``, YAML, :class:`NotifyConfig`)::

    min_priority: high
    max_per_minute: 10            # per channel; beyond it, one summary line is logged
    escalate_after_s: 900         # unacknowledged this long: notify the escalation list
    email: {host: 127.0.0.1, port: 25, sender: scada@utility.example, to: [duty@utility.example],
            escalate_to: [manager@utility.example]}
    webhook: {url: http://127.0.0.1:9000/hook, escalate_url: null, timeout_s: 5}

Escalation runs on the operator clock (the injected clock), not on event time.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from collections import deque
from email.message import EmailMessage

import aiohttp
import orjson
from pydantic import Field

from aquavolt.logs import OnceLogger
from aquavolt.profiles import Frozen
from aquavolt.rulecfg import Priority
from aquavolt.settings import redact
from aquavolt.wire import AlarmEvent, AlarmState

log = logging.getLogger("aquavolt.rules.notify")
RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class EmailConfig(Frozen):
    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    sender: str = "aquavolt@localhost"
    to: list[str] = Field(min_length=1)
    escalate_to: list[str] = Field(default_factory=list)
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout_s: float = Field(10.0, gt=0)


class WebhookConfig(Frozen):
    url: str
    escalate_url: str | None = None
    timeout_s: float = Field(5.0, gt=0)


class NotifyConfig(Frozen):
    min_priority: Priority = Priority.HIGH
    max_per_minute: int = Field(10, ge=1, description="Per channel")
    escalate_after_s: float | None = Field(900.0, gt=0, description="Unacknowledged this long")
    email: EmailConfig | None = None
    webhook: WebhookConfig | None = None


def _subject(e: AlarmEvent, escalated: bool) -> str:
    head = "ESCALATED " if escalated else ""
    return f"[{e.priority.upper()}] {head}{e.alarm_id} {e.transition}: {e.message or e.state}"


class Notifier:
    """Sends from the engine's event loop; SMTP runs in a worker thread."""

    def __init__(self, cfg: NotifyConfig) -> None:
        self.cfg = cfg
        self._sent: dict[str, deque[float]] = {"email": deque(), "webhook": deque()}
        self.suppressed = 0
        self.sent = 0
        self._pending: dict[str, tuple[AlarmEvent, float]] = {}  # unacked alarm -> (event, raised at)
        self._escalated: set[str] = set()
        self._once = OnceLogger(log)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def wants(self, e: AlarmEvent) -> bool:
        return RANK[e.priority] >= RANK[str(self.cfg.min_priority)]

    def _allow(self, channel: str, now_s: float) -> bool:
        q = self._sent[channel]
        while q and now_s - q[0] >= 60.0:
            q.popleft()
        if len(q) >= self.cfg.max_per_minute:
            self.suppressed += 1
            log.warning("%s: rate limit (%d/min) reached: notification dropped", channel, len(q))
            return False
        q.append(now_s)
        return True

    def on_events(self, events: list[AlarmEvent], now_s: float) -> None:
        for e in events:
            if e.state is AlarmState.UNACK and e.transition in ("raised", "unsuppressed", "unshelved",
                                                                "shelve_expired", "returned_to_service"):
                if self.wants(e):
                    self._pending.setdefault(e.alarm_id, (e, now_s))
                    self._send(e, now_s, escalated=False)
            elif e.state is not AlarmState.UNACK:
                self._pending.pop(e.alarm_id, None)
                self._escalated.discard(e.alarm_id)

    def escalate(self, now_s: float) -> None:
        after = self.cfg.escalate_after_s
        if after is None:
            return
        for aid, (e, since) in list(self._pending.items()):
            if aid not in self._escalated and now_s - since >= after:
                self._escalated.add(aid)
                self._send(e, now_s, escalated=True)

    def _send(self, e: AlarmEvent, now_s: float, escalated: bool) -> None:
        if self.cfg.email is not None and self._allow("email", now_s):
            self._spawn(self._email(e, escalated))
        if self.cfg.webhook is not None and self._allow("webhook", now_s):
            self._spawn(self._webhook(e, escalated))

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _email(self, e: AlarmEvent, escalated: bool) -> None:
        c = self.cfg.email
        assert c is not None
        to = (c.escalate_to or c.to) if escalated else c.to
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = c.sender, ", ".join(to), _subject(e, escalated)
        msg.set_content(orjson.dumps(e.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())

        def send() -> None:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout_s) as smtp:
                if c.starttls:
                    smtp.starttls()
                if c.username:
                    smtp.login(c.username, c.password or "")
                smtp.send_message(msg)

        try:
            await asyncio.to_thread(send)
            self.sent += 1
            self._once.recovered("email")
        except (OSError, smtplib.SMTPException) as exc:
            self._once.failure("email", f"{c.host}:{c.port}: {exc}")

    async def _webhook(self, e: AlarmEvent, escalated: bool) -> None:
        c = self.cfg.webhook
        assert c is not None
        url = (c.escalate_url or c.url) if escalated else c.url
        body = {"escalated": escalated, "event": e.model_dump(mode="json")}
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(url, data=orjson.dumps(body), timeout=aiohttp.ClientTimeout(
                    total=c.timeout_s), headers={"Content-Type": "application/json"}) as resp:
                resp.raise_for_status()
            self.sent += 1
            self._once.recovered("webhook")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._once.failure("webhook", redact(f"{url}: {exc}"))

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
