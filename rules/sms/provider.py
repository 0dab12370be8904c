"""SMS providers: the interface, and a generic JSON-over-HTTP gateway.

The HTTP API (the shape most SMS gateways offer)::

    POST {url}/messages          Authorization: Bearer {token}
         {"to": "+2126...", "from": "AQUAVOLT", "text": "...", "reference": "<event id>"}
      -> 200/201/202 {"id": "<provider message id>", ...}
    GET  {url}/messages/{id}     Authorization: Bearer {token}
      -> 200 {"id": "...", "status": "queued" | "sent" | "delivered" | "failed" | "undelivered"}

4xx answers other than 408 and 429 are permanent failures (bad number, refused text):
never retried. 5xx, 408, 429, timeouts and connection errors are temporary.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

import aiohttp

from aquavolt.errors import AquavoltError

log = logging.getLogger("aquavolt.rules.sms")

Delivery = Literal["queued", "sent", "delivered", "failed"]


class SmsError(AquavoltError):
    """The provider refused or could not take a message; ``permanent`` says whether to retry."""

    def __init__(self, message: str, permanent: bool) -> None:
        self.permanent = permanent
        super().__init__(message)


class SmsProvider(Protocol):
    async def send(self, to: str, text: str, reference: str) -> str:
        """Hand one message over; return the provider's message id, or raise SmsError."""

    async def status(self, message_id: str) -> Delivery:
        """Delivery status of a message handed over earlier."""

    async def close(self) -> None: ...


class HttpSmsProvider:
    def __init__(self, url: str, token: str, sender: str = "AQUAVOLT", timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.sender = sender
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, headers={"Authorization": f"Bearer {self.token}"})
        return self._session

    @staticmethod
    def _error(status: int, body: str) -> SmsError:
        permanent = 400 <= status < 500 and status not in (408, 429)
        return SmsError(f"SMS gateway answered {status}: {body[:200]}", permanent)

    async def send(self, to: str, text: str, reference: str) -> str:
        body = {"to": to, "from": self.sender, "text": text, "reference": reference}
        try:
            async with self._s().post(f"{self.url}/messages", json=body) as resp:
                if resp.status not in (200, 201, 202):
                    raise self._error(resp.status, await resp.text())
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SmsError(f"SMS gateway unreachable: {exc!r}", permanent=False) from None
        if not isinstance(data, dict) or not data.get("id"):
            raise SmsError(f"SMS gateway answered without a message id: {data!r}"[:200], permanent=False)
        return str(data["id"])

    async def status(self, message_id: str) -> Delivery:
        try:
            async with self._s().get(f"{self.url}/messages/{message_id}") as resp:
                if resp.status != 200:
                    raise self._error(resp.status, await resp.text())
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SmsError(f"SMS gateway unreachable: {exc!r}", permanent=False) from None
        st = str(data.get("status", "")) if isinstance(data, dict) else ""
        if st in ("queued", "sent", "delivered", "failed"):
            return st  # type: ignore[return-value]
        return "failed" if st in ("undelivered", "rejected", "expired") else "sent"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class DryRunProvider:
    """Sends nothing: every message is logged and counted as handed over (``sent``), so that a
    demo or a rehearsal shows the SMS that would go out (``AQUAVOLT_SMS_URL=dry-run``)."""

    def __init__(self) -> None:
        self.count = 0

    async def send(self, to: str, text: str, reference: str) -> str:
        self.count += 1
        # the number stays in the queue: the log shows only enough of it to tell messages apart
        log.info("SMS not sent (dry run) to %s…%s [%s]: %s", to[:4], to[-2:], reference, text)
        return f"dry-run-{self.count}"

    async def status(self, message_id: str) -> Delivery:
        return "sent"

    async def close(self) -> None:
        return None
