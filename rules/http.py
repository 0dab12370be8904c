"""The operator HTTP API (aiohttp, 127.0.0.1).

Every call but ``/health`` and ``/openapi.json`` needs ``Authorization: Bearer <token>``
(the console under ``/console`` signs operators in itself; the customer API under
``/customer``, ``rules/customer.py``, takes customers' tokens instead).
Operators are configured in a YAML file of SHA-256 digests of their tokens, never the tokens
(``aquavolt rules token add NAME ROLE`` writes an entry and prints the token once)::

    amina: {role: operator, sha256: 6f1c...}

A presented token is hashed and compared with every digest in constant time. Roles, each
allowed what the one before is: ``viewer`` reads (alarms, events, performance, actions,
commands); ``operator`` also acknowledges, shelves, comments and issues commands;
``engineer`` also removes alarms from service and returns them. Every action is recorded with
who did it; every command issued (signed with the engine's key) and every reply is kept in
``commands.sqlite``. Every bad value is answered 400 with the reason. The OpenAPI
description is at ``/openapi.json``.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aquavolt import tokens
from aquavolt.errors import ConfigError, ConfigIssue
from aquavolt.rules.alarms import AlarmError
from aquavolt.rules.customer import Customers
from aquavolt.rules.perf import performance
from aquavolt.rules.service import Engine, NotStored
from aquavolt.signing import sign
from aquavolt.wire import AlarmEvent, Command, encode

MAX_SHELVE_S = 7 * 24 * 3600
DAY_MS = 24 * 3600 * 1000
MAX_TS_MS = 2**53 - 1
MAX_LIMIT = 5000
MAX_TEXT = 1000


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ENGINEER = 3


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role
    digest: bytes


@dataclass(frozen=True)
class Operators:
    """The configured operators; ``authenticate`` compares a token with every digest."""

    entries: tuple[Operator, ...] = ()

    def authenticate(self, token: str) -> Operator | None:
        return tokens.match(token, ((op, op.digest) for op in self.entries))

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class Signer:
    """The engine's command key and the key id (issuer) gateways know its public key by."""

    issuer: str
    key: Ed25519PrivateKey


ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
TOKENS: web.AppKey[Operators] = web.AppKey("tokens", Operators)
SIGNER: web.AppKey[Signer | None] = web.AppKey("signer")
ROLE_NEEDED: dict[str, Role] = {"GET": Role.VIEWER, "POST": Role.OPERATOR}
"""The role a method needs, unless the handler is in ``ROLE_OF``."""


def load_tokens(path: Path | str) -> Operators:
    """A YAML mapping ``name: {role: viewer|operator|engineer, sha256: HEX}``."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(str(path), "", "expected 'name: {role: ..., sha256: ...}' entries")])
    entries, issues = [], []
    for name, entry in data.items():
        if isinstance(entry, str):
            issues.append(ConfigIssue(str(path), str(name), "a plaintext token is not accepted: store its "
                                      "digest ('aquavolt rules token add NAME ROLE --file FILE')"))
            continue
        if not isinstance(entry, dict) or set(entry) != {"role", "sha256"}:
            issues.append(ConfigIssue(str(path), str(name), "expected exactly {role, sha256}"))
            continue
        role = str(entry["role"]).upper()
        if role not in Role.__members__:
            issues.append(ConfigIssue(str(path), f"{name}.role", f"{entry['role']!r} is not one of "
                                      "viewer, operator, engineer"))
            continue
        digest = tokens.parse_digest(entry["sha256"])
        if digest is None:
            issues.append(ConfigIssue(str(path), f"{name}.sha256", "not a SHA-256 digest (64 hex digits)"))
            continue
        entries.append(Operator(str(name), Role[role], digest))
    if len({e.digest for e in entries}) != len(entries):
        issues.append(ConfigIssue(str(path), "", "two operators share a token"))
    if issues:
        raise ConfigError(issues)
    return Operators(tuple(entries))


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        headers=headers)


class BadRequest(ValueError):
    """A query or body value is wrong: answered 400 with this reason."""


def _unauthorized(why: str) -> web.Response:
    return _json({"error": why}, 401, {"WWW-Authenticate": 'Bearer realm="aquavolt"'})


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    # the console (rules/console) signs its operators in itself: sessions, CSRF, the same roles;
    # the customer API (rules/customer) authenticates customers with their own tokens
    if request.path in ("/openapi.json", "/health") or request.path.split("/")[1] in ("console", "customer"):
        return await handler(request)  # type: ignore[no-any-return]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("'Authorization: Bearer <token>' is required")
    who = request.app[TOKENS].authenticate(token.strip())
    if who is None:
        return _unauthorized("unknown bearer token")
    name = getattr(request.match_info.handler, "__name__", "")
    needed = ROLE_OF.get(name, ROLE_NEEDED.get(request.method, Role.ENGINEER))
    if who.role < needed:
        why = f"{who.name} is {who.role.name.lower()}: this needs {needed.name.lower()}"
        return _json({"error": why}, 403)
    request["operator"] = who.name
    request["role"] = who.role
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except AlarmError as exc:
        return _json({"error": str(exc)}, 409)
    except NotStored as exc:
        return _json({"error": str(exc)}, 503)
    except (ValueError, KeyError, TypeError, OverflowError, orjson.JSONDecodeError) as exc:
        return _json({"error": f"bad request: {exc}"}, 400)


def _int(raw: Any, name: str, lo: int = 0, hi: int = MAX_TS_MS) -> int:
    """An integer in [lo, hi] from a query string or a JSON value, or BadRequest naming it."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise BadRequest(f"{name} must be an integer, not {raw!r}")
    try:
        v = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, not {raw!r}") from None
    if not lo <= v <= hi:
        raise BadRequest(f"{name} must be in {lo}..{hi}, not {v}")
    return v


def _number(raw: Any, name: str, lo: float, hi: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise BadRequest(f"{name} must be a number, not {raw!r}")
    try:
        v = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {raw!r}") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise BadRequest(f"{name} must be a finite number in {lo:g}..{hi:g}, not {raw!r}")
    return v


def _text(raw: Any, name: str) -> str:
    if not isinstance(raw, str) or len(raw) > MAX_TEXT:
        raise BadRequest(f"{name} must be a string of at most {MAX_TEXT} characters")
    return raw


def _limit(q: Any, default: int, hi: int = MAX_LIMIT) -> int:
    return _int(q.get("limit", str(default)), "limit", 1, hi)


def _alarm_view(a: Any) -> dict[str, Any]:
    d = asdict(a)
    d["state"] = str(a.state)
    d.pop("recent", None)
    return d


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON (NaN and Infinity are not JSON): {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _act(request: web.Request, action: str, target: str, body: dict[str, Any],
         change: Callable[[], tuple[list[AlarmEvent], dict[str, Any]]]) -> web.Response:
    """The operator's change, stored with its audit row in one transaction, or not at all."""
    events, result = request.app[ENGINE].operator_action(request["operator"], action, target, body, change)
    return _json({**result, "events": [e.model_dump(mode="json") for e in events]})


async def list_alarms(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    q = request.query
    show_all = q.get("all") == "true"
    rows = []
    for a in eng.core.manager.alarms.values():
        if not show_all and str(a.state) == "normal":
            continue
        if any(q.get(k) and str(getattr(a, k)) != q[k] for k in ("state", "priority", "asset", "condition")):
            continue
        rows.append(_alarm_view(a))
    rows.sort(key=lambda r: r["version"], reverse=True)
    return _json({"seq": eng.core.manager.seq, "watermark_ms": eng.core.max_seen_ms,
                  "horizon_ms": eng.core.horizon_ms, "alarms": rows})


async def get_alarm(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    aid = f"{request.match_info['asset']}/{request.match_info['condition']}"
    a = eng.core.manager.alarms.get(aid)
    if a is None:
        return _json({"error": f"no alarm {aid}"}, 404)
    return _json({"alarm": _alarm_view(a), "events": eng.store.events(alarm_id=aid, limit=100)})


async def list_events(request: web.Request) -> web.Response:
    q = request.query
    opt = {k: _int(q[k], k) for k in ("since_ms", "until_ms") if k in q}
    rows = request.app[ENGINE].store.events(alarm_id=q.get("alarm_id"), asset=q.get("asset"),
                                            priority=q.get("priority"), limit=_limit(q, 500), **opt)
    return _json({"events": rows})


async def ack(request: web.Request) -> web.Response:
    body = await _body(request)
    eng = request.app[ENGINE]
    ids = body.get("ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise ValueError("ids must be a list of alarm ids")
    if "seen_seq" not in body:
        raise BadRequest("seen_seq is required: the seq of the alarm list you saw")
    seen = _int(body["seen_seq"], "seen_seq")

    def change() -> tuple[list[AlarmEvent], dict[str, Any]]:
        events, skipped = eng.core.manager.acknowledge(ids, seen, request["operator"], eng.clock.now_ms(),
                                                       str(body.get("comment", "")))
        return events, {"acknowledged": [e.alarm_id for e in events], "skipped": skipped}

    return _act(request, "acknowledge", ",".join(ids or ["*"]), body, change)


async def shelve(request: web.Request) -> web.Response:
    body = await _body(request)
    eng = request.app[ENGINE]
    aid = f"{request.match_info['asset']}/{request.match_info['condition']}"
    now = eng.clock.now_ms()
    if "until_ms" in body:
        until = _int(body["until_ms"], "until_ms")
    elif "duration_s" in body:
        until = now + int(_number(body["duration_s"], "duration_s", 1, MAX_SHELVE_S) * 1000)
    else:
        raise BadRequest("duration_s or until_ms is required")
    if until - now > MAX_SHELVE_S * 1000:
        raise AlarmError(f"shelving is limited to {MAX_SHELVE_S} s")
    return _act(request, "shelve", aid, body, lambda: (
        eng.core.manager.shelve(aid, request["operator"], str(body.get("reason", "")), until, now),
        {"shelved_until_ms": until}))


async def unshelve(request: web.Request) -> web.Response:
    body = await _body(request)
    eng = request.app[ENGINE]
    aid = f"{request.match_info['asset']}/{request.match_info['condition']}"
    return _act(request, "unshelve", aid, body, lambda: (
        eng.core.manager.unshelve(aid, request["operator"], eng.clock.now_ms(),
                                  comment=str(body.get("comment", ""))), {}))


async def comment(request: web.Request) -> web.Response:
    body = await _body(request)
    eng = request.app[ENGINE]
    aid = f"{request.match_info['asset']}/{request.match_info['condition']}"
    return _act(request, "comment", aid, body, lambda: (
        eng.core.manager.comment(aid, request["operator"], str(body.get("text", "")),
                                 eng.clock.now_ms()), {}))


async def service(request: web.Request) -> web.Response:
    body = await _body(request)
    eng = request.app[ENGINE]
    aid = f"{request.match_info['asset']}/{request.match_info['condition']}"
    in_service = request.match_info["which"] == "in-service"
    return _act(request, request.match_info["which"], aid, body, lambda: (
        eng.core.manager.set_in_service(aid, in_service, request["operator"], str(body.get("reason", "")),
                                        eng.clock.now_ms()), {}))


async def perf(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    until = _int(request.query.get("until_ms", str(eng.core.horizon_ms)), "until_ms")
    since = _int(request.query.get("since_ms", str(max(0, until - DAY_MS))), "since_ms", 0, until)
    return _json(performance(eng.store.raised_events(since, until), eng.core.manager.alarms.values(),
                             since, until))


async def actions(request: web.Request) -> web.Response:
    return _json({"actions": request.app[ENGINE].store.actions(_limit(request.query, 200))})


async def list_commands(request: web.Request) -> web.Response:
    """The command log, newest first; with ``id``, that command and every reply heard."""
    eng = request.app[ENGINE]
    q = request.query
    if "id" in q:
        rows = eng.commands.recent(1, cmd_id=q["id"])
        if not rows:
            return _json({"error": f"no command {q['id']}"}, 404)
        return _json({"command": rows[0], "replies": eng.commands.replies(q["id"])})
    since = _int(q["since_ms"], "since_ms") if "since_ms" in q else None
    return _json({"commands": eng.commands.recent(_limit(q, 200), since)})


async def post_command(request: web.Request) -> web.Response:
    """Issue a command: the engine names the operator (from the token), the id, the issue time,
    signs it and publishes it (QoS 1, never retained); the gateway's answer lands in the log."""
    eng = request.app[ENGINE]
    signer = request.app[SIGNER]
    if signer is None:
        return _json({"error": "commands are disabled: the engine has no --command-key"}, 503)
    body = await _body(request)
    unknown = set(body) - {"gateway", "device", "point", "value", "reason"}
    if unknown:
        raise BadRequest(f"unknown field(s) {sorted(unknown)}: send gateway, device, point, value, reason")
    for k in ("gateway", "device", "point"):
        if not isinstance(body.get(k), str):
            raise BadRequest(f"{k} is required (a string)")
    gw_id, dev_id, point = body["gateway"], body["device"], body["point"]
    field = eng.loaded.field
    gw = next((g for g in field.gateways if g.id == gw_id), None)
    if gw is None:
        raise BadRequest(f"no gateway {gw_id!r} in the field")
    if not any(d.id == dev_id for d in gw.devices):
        raise BadRequest(f"no device {dev_id!r} on gateway {gw_id}")
    if f"{dev_id}.{point}" not in gw.writable_points:
        raise BadRequest(f"{dev_id}.{point} is not in gateway {gw_id}'s writable_points")
    value: Any = body.get("value")
    finite = isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value))
    if not finite:
        raise BadRequest(f"value must be true, false or a finite number, not {value!r}")
    spec = eng.loaded.profile_of(dev_id).by_name.get(point)
    if spec is None or not spec.writable:
        raise BadRequest(f"{point} is not a writable point of {dev_id}'s profile")
    if (str(getattr(spec, "type", "")) == "bool") != isinstance(value, bool):
        kind = "true or false" if isinstance(value, bool) else "a number"
        raise BadRequest(f"{dev_id}.{point} does not take {kind}")
    lo = -math.inf if spec.min_value is None else float(spec.min_value)
    hi = math.inf if spec.max_value is None else float(spec.max_value)
    if not isinstance(value, bool) and not lo <= float(value) <= hi:
        raise BadRequest(f"{value} is outside {point}'s range {spec.min_value}..{spec.max_value}")
    cmd = Command(id=uuid.uuid4().hex, point=point, value=value, ts_ms=eng.clock.now_ms(),
                  operator=request["operator"], reason=_text(body.get("reason", ""), "reason"),
                  issuer=signer.issuer)
    cmd = sign(cmd, gw_id, dev_id, signer.key)
    eng.commands.issued(cmd, gw_id, dev_id)  # stored before it leaves
    if eng.transport.publish(eng.topics.command(gw_id, dev_id), encode(cmd), qos=1) is None:
        # logged as issued, never published: the gateway cannot get it, the operator must know
        return _json({"error": f"command {cmd.id} not published: the broker connection refuses "
                               "messages; nothing was sent", "id": cmd.id}, 503)
    eng.commands.published(cmd.id)
    eng.changes.notify()
    result = {"id": cmd.id, "issued_ms": cmd.ts_ms, "issuer": cmd.issuer, "operator": cmd.operator}
    eng.store.record_action(cmd.ts_ms, request["operator"], "command", f"{gw_id}/{dev_id}/{point}", body,
                            result)
    return _json({**result, "command": cmd.model_dump(mode="json")}, 202)


async def health(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    core = eng.core
    stuck = eng.stuck()  # 503 while the processing loop makes no progress with work pending
    return _json({"mqtt_connected": eng.connected.is_set(),
                  **{k: v for k, v in asdict(eng.stats).items() if k != "extra"},
                  "watermark_ms": core.max_seen_ms, "horizon_ms": core.horizon_ms,
                  "late_messages": core.late_messages, "stale_conditions": core.manager.stale_conditions,
                  "buffered_messages": core.pending_messages,
                  "backlog_messages": eng.backlog, "stuck": stuck}, 503 if stuck else 200)


async def openapi(request: web.Request) -> web.Response:
    from aquavolt.rules.openapi import build

    return _json(build(request.app))


ROLE_OF: dict[str, Role] = {"service": Role.ENGINEER}
"""Handlers that need more than their method's role (``ROLE_NEEDED``): out of service and
back is an engineering decision (ISA-18.2 maintenance), not a shift operator's."""


def build_app(engine: Engine, tokens: Operators, signer: Signer | None = None,
              customers: Customers | None = None) -> web.Application:
    app = web.Application(middlewares=[_auth])
    app[ENGINE] = engine
    app[TOKENS] = tokens
    app[SIGNER] = signer
    a = "/alarms/{asset}/{condition}"
    app.add_routes([
        web.get("/openapi.json", openapi), web.get("/health", health),
        web.get("/alarms", list_alarms), web.get(a, get_alarm), web.get("/events", list_events),
        web.post("/ack", ack), web.post(a + "/shelve", shelve), web.post(a + "/unshelve", unshelve),
        web.post(a + "/comment", comment), web.post(a + "/{which:out-of-service|in-service}", service),
        web.get("/performance", perf), web.get("/actions", actions),
        web.get("/commands", list_commands), web.post("/commands", post_command),
    ])
    from aquavolt.rules import console, customer

    customer.setup(app, engine, customers or Customers())  # the customer API under /customer
    console.setup(app)  # the operator's web console under /console (its routes and middleware)
    return app


async def serve(engine: Engine, tokens: Operators, host: str, port: int,
                signer: Signer | None = None, ssl_context: ssl.SSLContext | None = None,
                customers: Customers | None = None) -> web.AppRunner:
    """The operator API (and the customer API) on ``host:port``; HTTPS with ``ssl_context``."""
    runner = web.AppRunner(build_app(engine, tokens, signer, customers), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The API's server context: TLS 1.2 at least, the certificate chain and key given."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
