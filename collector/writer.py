"""An asynchronous InfluxDB line-protocol writer over HTTP (aiohttp), for InfluxDB 1.x
(``/write``: database, retention policy, user and password) and 2.x/3.x (``/api/v2/write``:
organisation, bucket, token). The ``influxdb-client`` library speaks only the v2 API, which
InfluxDB 1.6 lacks, hence this small writer.

:meth:`InfluxWriter.write` returns only when every line was either accepted or rejected:

- accepted (2xx): done;
- unreachable, 5xx, 429, 401/403, 404, timeouts: retried, with capped jittered exponential
  backoff, or after the ``Retry-After`` the server asked for; 404 (database not found)
  first re-creates the database. It never gives up on its own: the caller cancels it;
- rejected (400, 413, 422: a field type conflict, a line that does not parse, a body too
  large): the batch is split in halves, recursively, down to the single lines InfluxDB
  refuses, which are returned with InfluxDB's reason. The good lines are all written.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import ipaddress
import logging
import time
import zlib
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from aquavolt.backoff import Backoff
from aquavolt.logs import OnceLogger
from aquavolt.schema import PRECISION, RP_EVENTS, continuous_queries
from aquavolt.settings import InfluxSettings

log = logging.getLogger("aquavolt.collector.writer")

REJECT_STATUSES = frozenset({400, 413, 422})
MAX_RETRY_AFTER_S = 300.0


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER_S))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when - time.time(), MAX_RETRY_AFTER_S))


def gzip_level_for(url: str, level: int | None) -> int:
    """The gzip level to use: ``level`` when set, else 0 for an InfluxDB on a loopback
    address (on the same machine compressing only costs CPU, on both sides, that the
    database needs) and 1 for one across a network (bodies 16 times smaller)."""
    if level is not None:
        return level
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return 0
    try:
        return 0 if ipaddress.ip_address(host).is_loopback else 1
    except ValueError:
        return 1


class InfluxWriter:
    """One HTTP session to InfluxDB; ``on_retry`` is called for every retried request."""

    def __init__(self, settings: InfluxSettings, gzip_level: int = 1, max_backoff_s: float = 10.0,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.s = settings
        self.gzip_level = gzip_level
        self.max_backoff_s = max_backoff_s
        self.on_retry = on_retry or (lambda _reason: None)
        self._once = OnceLogger(log)
        self._session: aiohttp.ClientSession | None = None
        self._schema_ready = False
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.token:
            headers["Authorization"] = f"Token {settings.token}"
        elif settings.username:
            cred = f"{settings.username}:{settings.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(cred).decode()
        if gzip_level:
            headers["Content-Encoding"] = "gzip"
        self._headers = headers
        if settings.api == "v2":
            self._url = f"{settings.url}/api/v2/write"
            self._params = {"org": settings.org or "", "bucket": settings.bucket or settings.database,
                            "precision": PRECISION}
        else:
            self._url = f"{settings.url}/write"
            self._params = {"db": settings.database, "precision": PRECISION}
            if settings.retention_policy:
                self._params["rp"] = settings.retention_policy
        # The journals' lines (schema.EVENT_MEASUREMENTS) go to their own retention policy on
        # 1.x; a 2.x bucket holds everything, its admin's shard settings apply.
        self._journal_params = (self._params if settings.api == "v2"
                                else {**self._params, "rp": RP_EVENTS})

    async def __aenter__(self) -> InfluxWriter:
        timeout = aiohttp.ClientTimeout(total=self.s.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout,
                                              connector=aiohttp.TCPConnector(limit=8))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("InfluxWriter used outside 'async with'")
        return self._session

    async def ensure_schema(self) -> bool:
        """Create the database, retention policies and rollup continuous queries (1.x).

        Returns False when InfluxDB could not be reached (the caller tries again later).
        On 2.x/3.x the bucket and its downsampling tasks belong to the InfluxDB admin.
        """
        if self.s.api == "v2" or self._schema_ready:
            self._schema_ready = True
            return True
        headers = {k: v for k, v in self._headers.items() if k == "Authorization"}
        for stmt in continuous_queries(self.s.database):
            try:
                async with self.session.post(f"{self.s.url}/query", data={"q": stmt},
                                             headers=headers) as resp:
                    body = await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._once.failure("influxdb schema", f"{self.s.url} unreachable: {exc}")
                return False
            if resp.status >= 300 or '"error"' in body:
                # An existing policy or query with another definition: leave it, say so.
                log.warning("InfluxDB schema statement refused (%s): %s: %s", resp.status, stmt,
                            body.strip()[:300])
        self._once.recovered("influxdb schema")
        self._schema_ready = True
        log.info("InfluxDB database %s: retention policies and rollups in place", self.s.database)
        return True

    async def query(self, statement: str, timeout_s: float | None = None) -> str | None:
        """Run one InfluxQL statement (1.x ``/query``); None when it ran, else why not.
        ``timeout_s``: instead of the writes' timeout (a rollup's ``SELECT ... INTO`` reads
        an hour of the whole field, longer than a batch write takes on a busy machine)."""
        headers = {k: v for k, v in self._headers.items() if k == "Authorization"}
        own = {"timeout": aiohttp.ClientTimeout(total=timeout_s)} if timeout_s is not None else {}
        try:
            async with self.session.post(f"{self.s.url}/query", data={"q": statement, "db": self.s.database},
                                         headers=headers, **own) as resp:
                body = await resp.text()
        except TimeoutError:
            return f"{self.s.url}: no answer within {timeout_s or self.s.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            return f"{self.s.url} unreachable: {exc}"
        if resp.status >= 300 or '"error"' in body:
            return f"HTTP {resp.status}: {body.strip()[:300]}"
        return None

    def _body(self, lines: list[str]) -> bytes:
        body = "\n".join(lines).encode()
        if self.gzip_level:
            body = zlib.compress(body, self.gzip_level, wbits=31)  # gzip framing, in one call
        return body

    async def _post(self, body: bytes, params: dict[str, str]) -> tuple[int, str, str | None]:
        """(status, text, Retry-After); status 0 when InfluxDB could not be reached."""
        try:
            async with self.session.post(self._url, params=params, data=body,
                                         headers=self._headers) as resp:
                if resp.status < 300:
                    return resp.status, "", None
                return resp.status, (await resp.text()).strip(), resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, f"unreachable: {exc!r}", None

    async def write(self, lines: list[str], journal: bool = False) -> list[tuple[int, str]]:
        """Write lines (``journal``: to the journals' retention policy, ``schema.RP_EVENTS``);
        return the (index, reason) of the lines InfluxDB refuses."""
        if not lines:
            return []
        backoff = Backoff(0.1, max(0.1, self.max_backoff_s))
        # Compression releases the GIL: in a worker thread it runs beside the event loop's
        # decoding of the next messages, on the other core.
        body = await asyncio.to_thread(self._body, lines) if len(lines) > 64 else self._body(lines)
        params = self._journal_params if journal else self._params
        while True:
            status, text, retry_after = await self._post(body, params)
            if status < 300 and status != 0:
                self._once.recovered("influxdb write")
                return []
            if status in REJECT_STATUSES:
                self._once.recovered("influxdb write")
                return await self._split(lines, status, text, journal)
            if status == 404 and "database not found" in text:
                self._schema_ready = False
                await self.ensure_schema()
            reason = f"HTTP {status}: {text[:200]}" if status else text[:200]
            self._once.failure("influxdb write", reason)
            self.on_retry(reason)
            wait = retry_after_s(retry_after)
            await asyncio.sleep(wait if wait is not None else backoff.next())

    async def _split(self, lines: list[str], status: int, text: str,
                     journal: bool) -> list[tuple[int, str]]:
        if len(lines) == 1:
            return [(0, f"InfluxDB refused the point (HTTP {status}): {text[:500]}")]
        mid = len(lines) // 2
        left = await self.write(lines[:mid], journal)
        right = await self.write(lines[mid:], journal)
        return left + [(i + mid, why) for i, why in right]
