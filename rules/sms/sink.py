"""The customer SMS sink: customer-facing conditions in, SMS out through a provider.

``handle(condition)`` (synchronous, called by the engine on its event loop) turns a
condition into messages, one per customer per event, and records them in the durable
queue; a background task (started on the first ``handle``, or by ``await start()``) sends
them with retries and polls their delivery status. Every status change is published as a
:class:`aquavolt.wire.CustomerAlert` when a publisher is given.

Which conditions give which message (event ids make "one message per event" exact):

- ``over_consumption`` active: event ``over_consumption/{customer}/{period_start}``
- ``continuous_flow`` active: event ``continuous_flow/{customer}/{ts_ms}``
- ``outage`` active and ``sustained`` (lasting ``notify_outage_after_s``): event
  ``outage/{asset}/{start_ms}`` to each of ``details.customers``
- ``outage`` cleared with ``restored``: event ``restoration/{asset}/{start_ms}``, only to
  customers who were told of that outage.

A customer who got a message of the same kind less than ``cooldown_s`` before (event time)
gets none (recorded as ``suppressed``); so does a customer without a phone number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aquavolt.clock import Clock, RealClock
from aquavolt.config import LoadedField
from aquavolt.logs import OnceLogger
from aquavolt.rulecfg import SmsConfig
from aquavolt.rules.api import Condition
from aquavolt.rules.sms.provider import SmsError, SmsProvider
from aquavolt.rules.sms.queue import Row, SmsQueue
from aquavolt.rules.sms.templates import BASIS, render
from aquavolt.wire import CustomerAlert, Topics, encode

log = logging.getLogger("aquavolt.rules.sms")
Publish = Callable[..., None]


class SmsSink:
    def __init__(self, loaded: LoadedField, provider: SmsProvider, db_path: Path | str,
                 clock: Clock | None = None, publish: Publish | None = None,
                 topics: Topics | None = None, cfg: SmsConfig | None = None) -> None:
        f = loaded.field
        self.cfg = cfg or f.rules.sms
        self.customers = {c.id: c for c in f.customers}
        self.utility = f.name or f.id
        self.tz = ZoneInfo(f.timezone)
        self.provider = provider
        self.queue = SmsQueue(db_path)
        self.clock: Clock = clock or RealClock()
        self.publish = publish
        self.topics = topics or Topics()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._once = OnceLogger(log)
        self.sent = 0
        self.failed = 0

    # ------------------------------------------------------------------ intake

    def handle(self, condition: Condition) -> None:
        """A customer-facing condition changed: queue the messages it calls for."""
        for customer, kind, event_id, fields in self._messages(condition):
            self._enqueue(customer, kind, event_id, fields, condition.ts_ms)
        self._ensure_task()
        self._wake.set()

    def _fmt_time(self, ts_ms: int) -> str:
        return datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(self.tz).strftime("%H:%M")

    def _messages(self, c: Condition) -> list[tuple[str, str, str, dict[str, Any]]]:
        d = c.details
        if c.condition == "over_consumption" and c.active and c.customer:
            fields = {"start": _day(d.get("period_start", "")), "end": _day(d.get("period_end", "")),
                      "pct": f"{((d.get('ratio') or 1) - 1) * 100:.0f}",
                      "this": f"{d.get('this_l_per_day', 0):.0f}", "ref": f"{d.get('ref_l_per_day', 0):.0f}",
                      "basis": d.get("basis", "same_period_last_year")}
            return [(c.customer, "over_consumption", f"over_consumption/{c.customer}/{d.get('period_start')}",
                     fields)]
        if c.condition == "continuous_flow" and c.active and c.customer:
            fields = {"hours": d.get("hours", 24), "rate": f"{d.get('leak_rate_lph', c.value or 0):.0f}"}
            return [(c.customer, "continuous_flow", f"continuous_flow/{c.customer}/{c.ts_ms}", fields)]
        if c.condition == "outage":
            start = int(d.get("start_ms", c.ts_ms))
            customers = [str(x) for x in d.get("customers", [])]
            if c.active and c.ts_ms - start >= self.cfg.notify_outage_after_s * 1000:
                fields = {"time": self._fmt_time(start)}
                return [(x, "outage", f"outage/{c.asset}/{start}", fields) for x in customers]
            if not c.active and d.get("restored"):
                told = [x for x in customers if (r := self.queue.get(f"outage/{c.asset}/{start}", x))
                        and r.status in ("queued", "sent", "delivered")]
                fields = {"time": self._fmt_time(c.ts_ms), "minutes": f"{(c.ts_ms - start) / 60000:.0f}"}
                return [(x, "restoration", f"restoration/{c.asset}/{start}", fields) for x in told]
        return []

    def _enqueue(self, customer_id: str, kind: str, event_id: str, fields: dict[str, Any],
                 event_ms: int) -> None:
        cust = self.customers.get(customer_id)
        if cust is None or self.queue.get(event_id, customer_id) is not None:
            return  # unknown customer, or this event was already recorded for them
        lang = cust.language
        if "basis" in fields:
            fields = {**fields, "basis": BASIS.get(fields["basis"], BASIS["same_period_last_year"])[lang]}
        text = render(kind, lang, utility=self.utility, **fields)
        status = "queued"
        if not cust.phone or (kind != "restoration" and self.queue.recent(customer_id, kind,
                                                         event_ms - int(self.cfg.cooldown_s * 1000))):
            status = "suppressed"
        row = self.queue.enqueue(event_id, customer_id, kind, lang, cust.phone, text, status, event_ms,
                                 self.clock.now_ms())
        if row is not None:
            self._announce(row)

    def _announce(self, row: Row) -> None:
        if self.publish is None:
            return
        alert = CustomerAlert.model_validate(
            {"id": row.event_id, "customer": row.customer, "kind": row.kind, "language": row.language,
             "text": row.text, "status": row.status, "ts_ms": row.updated_ms})
        self.publish(self.topics.customer_alerts, encode(alert), False)

    # ------------------------------------------------------------------ delivery

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sms-sink")

    async def start(self) -> None:
        self._ensure_task()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.provider.close()
        self.queue.close()

    async def _run(self) -> None:
        last_poll = 0
        while True:
            now = self.clock.now_ms()
            for row in self.queue.due(now):
                await self._send(row)
            if now - last_poll >= self.cfg.status_poll_s * 1000:
                last_poll = now
                for row in self.queue.awaiting_delivery():
                    await self._poll(row)
            nxt = self.queue.next_due_ms()
            wait_s = 0.5
            if nxt is not None:
                wait_s = min(wait_s, max(0.01, self.clock.to_wall(max(0, nxt - now) / 1000)))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait_s)

    async def _send(self, row: Row) -> None:
        now = self.clock.now_ms()
        assert row.phone is not None
        try:
            pid = await self.provider.send(row.phone, row.text, row.event_id)
        except SmsError as exc:
            self._once.failure("sms-gateway", str(exc))
            attempts = row.attempts + 1
            if exc.permanent or attempts > self.cfg.max_retries:
                self.failed += 1
                self._announce(self.queue.update(row.rowid, now, status="failed", attempts=attempts,
                                                 last_error=str(exc)))
            else:
                delay_ms = int(self.cfg.retry_base_s * 1000 * 2 ** (attempts - 1))
                self.queue.update(row.rowid, now, attempts=attempts, next_ms=now + delay_ms,
                                  last_error=str(exc))
            return
        self._once.recovered("sms-gateway")
        self.sent += 1
        self._announce(self.queue.update(row.rowid, now, status="sent", attempts=row.attempts + 1,
                                         provider_id=pid))

    async def _poll(self, row: Row) -> None:
        assert row.provider_id is not None
        try:
            st = await self.provider.status(row.provider_id)
        except SmsError as exc:
            self._once.failure("sms-status", str(exc))
            return
        if st in ("delivered", "failed") and st != row.status:
            self._announce(self.queue.update(row.rowid, self.clock.now_ms(), status=st))


def _day(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%d/%m")
    except ValueError:
        return iso
