"""The operator HTTP API (aiohttp, 127.0.0.1). One bearer token per operator; every action
is recorded in the store with who did it. The OpenAPI description is at ``/openapi.json``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from aquavolt.errors import ConfigError, ConfigIssue
from rules.alarms import AlarmError
from rules.perf import performance
from rules.service import Engine

MAX_SHELVE_S = 7 * 24 * 3600
DAY_MS = 24 * 3600 * 1000
ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
TOKENS: web.AppKey[dict[str, str]] = web.AppKey("tokens", dict)


def load_tokens(path: Path | str) -> dict[str, str]:
    """A YAML mapping ``operator: token``; returns token -> operator."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and len(v) >= 16
                                             for k, v in data.items()):
        raise ConfigError([ConfigIssue(str(path), "",
                                       "expected 'operator: token' lines, tokens of 16+ chars")])
    if len(set(data.values())) != len(data):
        raise ConfigError([ConfigIssue(str(path), "", "two operators share a token")])
    return {v: k for k, v in data.items()}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path in ("/openapi.json", "/health"):
        return await handler(request)  # type: ignore[no-any-return]
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    who = request.app[TOKENS].get(token)
    if who is None:
        return _json({"error": "missing or unknown bearer token"}, 401)
    request["operator"] = who
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except AlarmError as exc:
        return _json({"error": str(exc)}, 409)
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        return _json({"error": f"bad request: {exc}"}, 400)


def _alarm_view(a: Any) -> dict[str, Any]:
    d = asdict(a)
    d["state"] = str(a.state)
    d.pop("recent", None)
    return d


async def _body(request: web.Request) -> dict[str, Any]:
    data = orjson.loads(await request.read() or b"{}")
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


def _act(request: web.Request, action: str, target: str, body: dict[str, Any], result: dict[str, Any],
         events: list[Any]) -> web.Response:
    eng = request.app[ENGINE]
    eng.emit(events)
    eng.store.record_action(eng.clock.now_ms(), request["operator"], action, target, body, result)
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
    opt = {k: int(q[k]) for k in ("since_ms", "until_ms") if k in q}
    rows = request.app[ENGINE].store.events(alarm_id=q.get("alarm_id"), asset=q.get("asset"),
                                            priority=q.get("priority"),
                                            limit=min(int(q.get("limit", 500)), 5000),
                                            **opt)
    return _json({"events": rows})


async def ack(request: web.Request) -> web.Response:
    body = await _body(request)
    eng = request.app[ENGINE]
    ids = body.get("ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise ValueError("ids must be a list of alarm ids")
    seen = int(body["seen_seq"])
    events, skipped = eng.core.manager.acknowledge(ids, seen, request["operator"], eng.clock.now_ms(),
                                                   str(body.get("comment", "")))
    result = {"acknowledged": [e.alarm_id for e in events], "skipped": skipped}
    return _act(request, "acknowledge", ",".join(ids or ["*"]), body, result, events)


async def shelve(request: web.Request) -> web.Response:
    body = await _body(request)
    eng = request.app[ENGINE]
    aid = f"{request.match_info['asset']}/{request.match_info['condition']}"
    now = eng.clock.now_ms()
    until = int(body["until_ms"]) if "until_ms" in body else now + int(float(body["duration_s"]) * 1000)
    if until - now > MAX_SHELVE_S * 1000:
        raise AlarmError(f"shelving is limited to {MAX_SHELVE_S} s")
    events = eng.core.manager.shelve(aid, request["operator"], str(body.get("reason", "")), until, now)
    return _act(request, "shelve", aid, body, {"shelved_until_ms": until}, events)


async def unshelve(request: web.Request) -> web.Response:
    body = await _body(request)
    eng = request.app[ENGINE]
    aid = f"{request.match_info['asset']}/{request.match_info['condition']}"
    events = eng.core.manager.unshelve(aid, request["operator"], eng.clock.now_ms(),
                                       comment=str(body.get("comment", "")))
    return _act(request, "unshelve", aid, body, {}, events)


async def comment(request: web.Request) -> web.Response:
    body = await _body(request)
    eng = request.app[ENGINE]
    aid = f"{request.match_info['asset']}/{request.match_info['condition']}"
    events = eng.core.manager.comment(aid, request["operator"], str(body.get("text", "")), eng.clock.now_ms())
    return _act(request, "comment", aid, body, {}, events)


async def service(request: web.Request) -> web.Response:
    body = await _body(request)
    eng = request.app[ENGINE]
    aid = f"{request.match_info['asset']}/{request.match_info['condition']}"
    in_service = request.match_info["which"] == "in-service"
    events = eng.core.manager.set_in_service(aid, in_service, request["operator"],
                                             str(body.get("reason", "")), eng.clock.now_ms())
    return _act(request, request.match_info["which"], aid, body, {}, events)


async def perf(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    until = int(request.query.get("until_ms", eng.core.horizon_ms))
    since = int(request.query.get("since_ms", until - DAY_MS))
    return _json(performance(eng.store.raised_events(since, until), eng.core.manager.alarms.values(),
                             since, until))


async def actions(request: web.Request) -> web.Response:
    return _json({"actions": request.app[ENGINE].store.actions(int(request.query.get("limit", 200)))})


async def health(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    core = eng.core
    return _json({"mqtt_connected": eng.connected.is_set(),
                  **{k: v for k, v in asdict(eng.stats).items() if k != "extra"},
                  "watermark_ms": core.max_seen_ms, "horizon_ms": core.horizon_ms,
                  "late_messages": core.late_messages, "buffered_messages": core.pending_messages,
                  "backlog_messages": eng.backlog})


async def openapi(request: web.Request) -> web.Response:
    from rules.openapi import build

    return _json(build(request.app))


def build_app(engine: Engine, tokens: dict[str, str]) -> web.Application:
    app = web.Application(middlewares=[_auth])
    app[ENGINE] = engine
    app[TOKENS] = tokens
    a = "/alarms/{asset}/{condition}"
    app.add_routes([
        web.get("/openapi.json", openapi), web.get("/health", health),
        web.get("/alarms", list_alarms), web.get(a, get_alarm), web.get("/events", list_events),
        web.post("/ack", ack), web.post(a + "/shelve", shelve), web.post(a + "/unshelve", unshelve),
        web.post(a + "/comment", comment), web.post(a + "/{which:out-of-service|in-service}", service),
        web.get("/performance", perf), web.get("/actions", actions),
    ])
    return app


async def serve(engine: Engine, tokens: dict[str, str], host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_app(engine, tokens), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
