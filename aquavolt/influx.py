"""A small synchronous InfluxDB client (HTTP, standard library) for queries, setup and
occasional writes: ``/query`` (InfluxQL) and ``/write`` on 1.x, ``/api/v2/write`` on 2.x.

High-rate writing is the collector's job; this serves the rules engine's history reads,
the simulator's backfill, the dashboards' checks and the tests.
"""

from __future__ import annotations

import base64
import gzip
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

from aquavolt.errors import AquavoltError
from aquavolt.schema import PRECISION
from aquavolt.settings import InfluxSettings


class InfluxError(AquavoltError):
    """InfluxDB refused a request; ``status`` is the HTTP status (0: unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"InfluxDB {status}: {message}")

    @property
    def missing_database(self) -> bool:
        """The database does not exist yet (the collector creates it on its first start)."""
        return "database not found" in str(self)


class Influx:
    def __init__(self, settings: InfluxSettings) -> None:
        self.s = settings

    def _headers(self) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.s.token:
            h["Authorization"] = f"Token {self.s.token}"
        elif self.s.username:
            cred = f"{self.s.username}:{self.s.password or ''}".encode()
            h["Authorization"] = "Basic " + base64.b64encode(cred).decode()
        return h

    def _request(self, path: str, params: dict[str, str], body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> bytes:
        url = f"{self.s.url}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, data=body, headers={**self._headers(), **(headers or {})},
                                     method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=self.s.timeout_s) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            raise InfluxError(exc.code, exc.read().decode(errors="replace").strip()) from None
        except OSError as exc:
            raise InfluxError(0, f"{self.s.url} unreachable: {exc}") from None

    def ping(self) -> bool:
        try:
            self._request("/ping", {})
            return True
        except InfluxError:
            return False

    def query(self, q: str, database: str | None = None, epoch: str = PRECISION) -> list[dict[str, Any]]:
        """Run InfluxQL; return the series of the first statement (name, tags, columns, values)."""
        params = {"q": q, "db": database or self.s.database, "epoch": epoch}
        body = urllib.parse.urlencode(params).encode()
        raw = self._request("/query", {}, body, {"Content-Type": "application/x-www-form-urlencoded"})
        data = json.loads(raw)
        results = data.get("results", [])
        for r in results:
            if "error" in r:
                raise InfluxError(400, f"{r['error']} in {q!r}")
        if not results:
            return []
        return list(results[0].get("series", []))

    def rows(self, q: str, database: str | None = None) -> list[dict[str, Any]]:
        """Query and flatten to one dict per row (tags merged in)."""
        out = []
        for s in self.query(q, database):
            cols = s["columns"]
            for v in s["values"]:
                row = dict(zip(cols, v, strict=True))
                row.update(s.get("tags", {}))
                out.append(row)
        return out

    def execute(self, statements: Iterable[str], database: str | None = None) -> None:
        for stmt in statements:
            self.query(stmt, database)

    def create_database(self, name: str | None = None) -> None:
        self.query(f'CREATE DATABASE "{name or self.s.database}"')

    def write(self, lines: Iterable[str], compress: bool = True) -> None:
        body = "\n".join(lines).encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if compress:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        if self.s.api == "v2":
            params = {"org": self.s.org or "", "bucket": self.s.bucket or self.s.database,
                      "precision": PRECISION}
            self._request("/api/v2/write", params, body, headers)
        else:
            params = {"db": self.s.database, "precision": PRECISION}
            if self.s.retention_policy:
                params["rp"] = self.s.retention_policy
            self._request("/write", params, body, headers)
