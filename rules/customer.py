"""The customer API: what the utility's customer app shows one customer (JSON, read only).

Customers are authenticated apart from operators: a YAML file of SHA-256 digests of their
tokens, keyed by customer id (``aquavolt rules customer-token add CUSTOMER_ID --file F``
writes an entry and prints the token once; ``aquavolt rules run --customer-tokens F`` loads
it)::

    c0001: {sha256: 6f1c...}

Every call needs ``Authorization: Bearer <token>`` (401 otherwise); the token says who the
customer is. A path without a customer (``/customer/consumption``) answers for the token's
customer; a path that names one (``/customer/{customer}/consumption``) must name the token's
customer (403 otherwise). Nothing is ever looked up from a query parameter.

- ``consumption?since=YYYY-MM-DD&until=YYYY-MM-DD``: the daily consumption of the customer's
  water meter, in litres, for each UTC day of the period (both ends included, at most
  :data:`MAX_DAYS` days; default the 30 days before today), beside the day ``lag_days``
  (364, weekdays aligned) earlier, from the InfluxDB daily rollups: the figures of the
  over-consumption check (``rules.detectors.overconsumption.daily_litres``). A day is
  ``comparable`` under the check's rule (both days plausible, neither a holiday); the
  period's ``ratio`` is the mean of this year's comparable days over last year's.
- ``alerts``: the customer-facing alarms (over-consumption, continuous flow: raised and
  cleared) and the SMS messages recorded for the customer, newest first.
- ``outages``: outages of the transformer or the feeder that supplies the customer, each with
  its start and end (None while it lasts), newest first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from aquavolt import tokens
from aquavolt.config import LoadedField
from aquavolt.errors import ConfigError, ConfigIssue
from aquavolt.field import Customer
from aquavolt.influx import InfluxError
from aquavolt.rules.detectors.overconsumption import daily_litres
from aquavolt.rules.service import Engine

MAX_DAYS = 400
"""The longest period one consumption request may ask for."""
DEFAULT_DAYS = 30
MAX_LIMIT = 1000
PREFIX = "/customer"


@dataclass(frozen=True)
class CustomerToken:
    customer: str
    digest: bytes


@dataclass(frozen=True)
class Customers:
    """The customers' token digests; ``authenticate`` compares a token with every one."""

    entries: tuple[CustomerToken, ...] = ()

    def authenticate(self, token: str) -> str | None:
        return tokens.match(token, ((e.customer, e.digest) for e in self.entries))

    def __len__(self) -> int:
        return len(self.entries)


CUSTOMERS: web.AppKey[Customers] = web.AppKey("customers", Customers)
ENGINE: web.AppKey[Engine] = web.AppKey("customer_engine", Engine)


def load_customer_tokens(path: Path | str, loaded: LoadedField | None = None) -> Customers:
    """A YAML mapping ``customer_id: {sha256: HEX}``; with ``loaded``, every id must be a
    customer of the field."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(str(path), "", "expected 'customer_id: {sha256: ...}' entries")])
    known = None if loaded is None else {c.id for c in loaded.field.customers}
    entries, issues = [], []
    for cid, entry in data.items():
        if not isinstance(entry, dict) or set(entry) != {"sha256"}:
            issues.append(ConfigIssue(str(path), str(cid), "expected exactly {sha256} (a plaintext token is "
                                      "not accepted: 'aquavolt rules customer-token add ID --file FILE')"))
            continue
        digest = tokens.parse_digest(entry["sha256"])
        if digest is None:
            issues.append(ConfigIssue(str(path), f"{cid}.sha256", "not a SHA-256 digest (64 hex digits)"))
            continue
        if known is not None and str(cid) not in known:
            issues.append(ConfigIssue(str(path), str(cid), "no such customer in the field"))
            continue
        entries.append(CustomerToken(str(cid), digest))
    if len({e.digest for e in entries}) != len(entries):
        issues.append(ConfigIssue(str(path), "", "two customers share a token"))
    if issues:
        raise ConfigError(issues)
    return Customers(tuple(entries))


class BadRequest(ValueError):
    """A query value is wrong: answered 400 with this reason."""


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        headers=headers)


def _unauthorized(why: str) -> web.Response:
    return _json({"error": why}, 401, {"WWW-Authenticate": 'Bearer realm="aquavolt-customer"'})


Handler = Callable[[web.Request, Customer], Awaitable[web.Response]]


def _customer_route(fn: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The customer from the token (401 without one), the path's customer checked against it
    (403), bad query values answered 400."""

    async def handler(request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("'Authorization: Bearer <customer token>' is required")
        who = request.app[CUSTOMERS].authenticate(token.strip())
        if who is None:
            return _unauthorized("unknown customer token")
        named = request.match_info.get("customer")
        if named is not None and named != who:
            return _json({"error": "this token is not that customer's"}, 403)
        customer = next((c for c in request.app[ENGINE].loaded.field.customers if c.id == who), None)
        if customer is None:
            return _json({"error": f"customer {who} is not in the field"}, 403)
        try:
            return await fn(request, customer)
        except BadRequest as exc:
            return _json({"error": str(exc)}, 400)

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


def _day(q: Any, name: str, default: date) -> date:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        d = date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a date YYYY-MM-DD, not {raw!r}") from None
    if len(raw) != 10 or d.year < 1971:
        raise BadRequest(f"{name} must be a date YYYY-MM-DD after 1970, not {raw!r}")
    return d


def _limit(q: Any, default: int) -> int:
    raw = q.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer in 1..{MAX_LIMIT}, not {raw!r}")
    return int(raw)


def _no_unknown(q: Any, allowed: set[str]) -> None:
    unknown = set(q) - allowed
    if unknown:
        raise BadRequest(f"unknown query parameter(s) {sorted(unknown)}: this takes {sorted(allowed)}")


async def consumption(request: web.Request, customer: Customer) -> web.Response:
    """Daily litres of the period beside the same days last year, and their ratio."""
    eng = request.app[ENGINE]
    q = request.query
    _no_unknown(q, {"since", "until"})
    today = datetime.fromtimestamp(eng.clock.now_ms() / 1000, UTC).date()
    until = _day(q, "until", today - timedelta(days=1))
    since = _day(q, "since", until - timedelta(days=DEFAULT_DAYS - 1))
    if since > until:
        raise BadRequest(f"since ({since}) is after until ({until})")
    n = (until - since).days + 1
    if n > MAX_DAYS:
        raise BadRequest(f"the period is {n} days: at most {MAX_DAYS}")
    if customer.water_meter is None:
        return _json({"error": f"customer {customer.id} has no water meter"}, 404)
    if eng.influx is None:
        return _json({"error": "the engine has no InfluxDB (--influx): no consumption figures"}, 503)
    cfg = eng.loaded.field.rules.over_consumption
    lag = timedelta(days=cfg.lag_days)
    meter = customer.water_meter
    try:
        data = await asyncio.to_thread(daily_litres, eng.influx, [meter], since - lag, until)
    except InfluxError as exc:
        return _json({"error": f"the consumption figures are unavailable: {exc}"}, 503)
    daily = data.get(meter, {})
    holidays = {date.fromisoformat(h) for h in cfg.holidays}

    def ok(d: date, v: float | None) -> bool:
        return v is not None and 0 < v <= cfg.max_plausible_daily_l and d not in holidays

    days, this_used, ref_used = [], [], []
    for i in range(n):
        d = since + timedelta(days=i)
        this, ref = daily.get(d), daily.get(d - lag)
        comparable = ok(d, this) and ok(d - lag, ref)
        if comparable:
            this_used.append(this or 0.0)
            ref_used.append(ref or 0.0)
        days.append({"day": d.isoformat(), "litres": _round(this), "last_year_day": (d - lag).isoformat(),
                     "last_year_litres": _round(ref),
                     "ratio": round(this / ref, 3) if this is not None and ref else None,
                     "comparable": comparable})
    t = sum(this_used) / len(this_used) if this_used else None
    r = sum(ref_used) / len(ref_used) if ref_used else None
    return _json({"customer": customer.id, "meter": meter, "since": since.isoformat(),
                  "until": until.isoformat(), "lag_days": cfg.lag_days, "unit": "L",
                  "days_comparable": len(this_used), "this_l_per_day": _round(t),
                  "last_year_l_per_day": _round(r),
                  "ratio": round(t / r, 3) if t is not None and r else None, "days": days})


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _prefix(asset: str) -> tuple[str, str]:
    """Bounds of the alarm ids ``{asset}/...`` for a range scan (``'/'`` sorts just before ``'0'``)."""
    return asset + "/", asset + "0"


async def alerts(request: web.Request, customer: Customer) -> web.Response:
    """The customer's alarms (raised, cleared) and the SMS recorded for them, newest first."""
    eng = request.app[ENGINE]
    q = request.query
    _no_unknown(q, {"limit"})
    limit = _limit(q, 100)
    lo, hi = _prefix(customer.id)
    rows = eng.store.db.execute(
        "SELECT payload FROM events WHERE alarm_id >= ? AND alarm_id < ? AND transition IN ('raised', "
        "'cleared') ORDER BY seq DESC LIMIT ?", (lo, hi, limit)).fetchall()
    events = []
    for (payload,) in rows:
        e = orjson.loads(payload)
        d = e.get("details", {})
        mine = e.get("asset") == customer.id and d.get("customer") == customer.id
        if not mine or d.get("audience") != "customer":
            continue
        events.append({"alarm_id": e["alarm_id"], "condition": e["condition"], "transition": e["transition"],
                       "ts_ms": e["ts_ms"], "message": e.get("message", ""), "value": e.get("value")})
    sms: list[dict[str, Any]] = []
    queue = getattr(eng.customer_sink, "queue", None)
    if queue is not None:
        for event_id, kind, language, text, status, event_ms, updated_ms in queue.db.execute(
                "SELECT event_id, kind, language, text, status, event_ms, updated_ms FROM sms "
                "WHERE customer = ? ORDER BY event_ms DESC, rowid DESC LIMIT ?", (customer.id, limit)):
            sms.append({"id": event_id, "kind": kind, "language": language, "text": text, "status": status,
                        "event_ms": event_ms, "updated_ms": updated_ms})
    return _json({"customer": customer.id, "alerts": events, "sms": sms})


def supply(loaded: LoadedField, customer: Customer) -> list[tuple[str, str]]:
    """(asset, kind) of what supplies the customer: their transformer, then its feeder."""
    out: list[tuple[str, str]] = []
    tx = customer.transformer
    if tx is not None and tx in loaded.field.transformers:
        _s, feeder, _t = loaded.field.transformers[tx]
        out += [(tx, "transformer"), (feeder.id, "feeder")]
    return out


async def outages(request: web.Request, customer: Customer) -> web.Response:
    """Outages of the transformer or feeder supplying the customer, newest first."""
    eng = request.app[ENGINE]
    q = request.query
    _no_unknown(q, {"limit"})
    limit = _limit(q, 100)
    assets = dict(supply(eng.loaded, customer))
    if not assets:
        return _json({"customer": customer.id, "supplied_by": [], "outages": []})
    ids = [f"{a}/outage" for a in assets]
    marks = ",".join("?" * len(ids))
    rows = eng.store.db.execute(
        f"SELECT payload FROM events WHERE alarm_id IN ({marks}) AND transition IN ('raised', 'cleared') "
        "ORDER BY seq", ids).fetchall()
    found: list[dict[str, Any]] = []
    open_: dict[str, dict[str, Any]] = {}
    for (payload,) in rows:
        e = orjson.loads(payload)
        asset = e["asset"]
        if e["transition"] == "raised":
            o = {"asset": asset, "kind": assets[asset], "start_ms": e["ts_ms"], "end_ms": None,
                 "duration_s": None, "message": e.get("message", "")}
            open_[asset] = o
            found.append(o)
        elif asset in open_:
            o = open_.pop(asset)
            o["end_ms"] = e["ts_ms"]
            o["duration_s"] = round((e["ts_ms"] - o["start_ms"]) / 1000, 3)
    found.reverse()
    return _json({"customer": customer.id,
                  "supplied_by": [{"asset": a, "kind": k} for a, k in assets.items()],
                  "outages": found[:limit]})


def setup(app: web.Application, engine: Engine, customers: Customers) -> None:
    """Add the customer routes to the operator API app (the operator middleware lets
    :data:`PREFIX` through: these handlers authenticate customers themselves)."""
    app[CUSTOMERS] = customers
    app[ENGINE] = engine
    routes = []
    for name, fn in (("consumption", consumption), ("alerts", alerts), ("outages", outages)):
        h = _customer_route(fn)
        routes += [web.get(f"{PREFIX}/{name}", h), web.get(f"{PREFIX}/{{customer}}/{name}", h)]
    app.add_routes(routes)
