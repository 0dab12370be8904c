"""The operator's web console, served by the operator API under ``/console``.

Server-rendered HTML pages and one small plain-JS module (no build step): sign-in with the
operator's own token (once, on the sign-in page) gives a session cookie; the live alarm list
follows server-sent events; actions and commands are the operator API's own handlers, mounted
under ``/console/api/`` behind the session instead of a Bearer token, with CSRF protection
and the same role table. See rules/console/README.md.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from aiohttp import web

from aquavolt.rules import http as api
from aquavolt.rules.alarms import AlarmError
from aquavolt.rules.console.i18n import LANG, LANGUAGES, RTL, choose, js_words, tr
from aquavolt.rules.perf import performance

PREFIX = "/console"
STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "av_session"
LOGIN_COOKIE = "av_login"
LANG_COOKIE = "av_lang"
SESSION_TTL_S = 8 * 3600  # one shift
SSE_KEEPALIVE_S = 15.0
GRAFANA_ENV = "AQUAVOLT_GRAFANA_URL"
STATE_LABELS = {
    "unack": "Unacknowledged",
    "acked": "Acknowledged",
    "rtn_unack": "Returned, unacknowledged",
    "shelved": "Shelved",
    "suppressed": "Suppressed",
    "out_of_service": "Out of service",
    "normal": "Normal",
}
PRIORITIES = ("critical", "high", "medium", "low")


@dataclass
class Session:
    operator: str
    role: api.Role
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Sessions in memory (a restart signs everyone out), each with its CSRF token and expiry."""

    ttl_s: float = SESSION_TTL_S
    by_id: dict[str, Session] = field(default_factory=dict)

    def open(self, operator: str, role: api.Role) -> tuple[str, Session]:
        self.purge()
        sid = secrets.token_urlsafe(32)
        s = Session(operator, role, secrets.token_urlsafe(32), time.monotonic() + self.ttl_s)
        self.by_id[sid] = s
        return sid, s

    def get(self, sid: str | None) -> Session | None:
        s = self.by_id.get(sid or "")
        if s is None:
            return None
        if time.monotonic() >= s.expires:
            del self.by_id[sid or ""]
            return None
        return s

    def close(self, sid: str | None) -> None:
        self.by_id.pop(sid or "", None)

    def purge(self) -> None:
        now = time.monotonic()
        for k in [k for k, s in self.by_id.items() if now >= s.expires]:
            del self.by_id[k]


SESSIONS: web.AppKey[Sessions] = web.AppKey("console_sessions", Sessions)
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("console_stopping", asyncio.Event)


# ---- request checks ------------------------------------------------------------------------------
def _session(request: web.Request) -> Session | None:
    return request.app[SESSIONS].get(request.cookies.get(SESSION_COOKIE))


def _public(request: web.Request) -> tuple[str, str]:
    """(scheme, host) the browser used: behind the TLS reverse proxy that publishes the API
    beyond 127.0.0.1 (docs/security.md), its ``X-Forwarded-Proto`` and ``X-Forwarded-Host``.
    A browser cannot add these headers to a cross-site request (they would need a CORS
    preflight the console never grants), so trusting them weakens neither check."""
    scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip().lower()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return scheme, host


def _secure(request: web.Request) -> bool:
    """Cookies are ``Secure`` whenever the browser reached the console over TLS."""
    return request.secure or _public(request)[0] == "https"


def _same_origin(request: web.Request) -> bool:
    """Origin (or, without it, Referer) must name this server: a cross-site form is refused."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin:
        return False
    scheme, host = _public(request)
    expected = f"{scheme}://{host}"
    return origin == expected or origin.startswith(expected + "/")


def _refused(why: str, status: int) -> web.Response:
    return web.json_response({"error": why}, status=status)


@web.middleware
async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """The language of every console page; session, Origin, CSRF and role for ``/console/api/``
    (the other console pages check their own)."""
    if request.path != PREFIX and not request.path.startswith(PREFIX + "/"):
        return await handler(request)  # type: ignore[no-any-return]
    asked = request.query.get("lang")
    LANG.set(choose(asked, request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language", "")))
    if not request.path.startswith(PREFIX + "/api/"):
        resp = await handler(request)
        if asked in LANGUAGES:  # the operator's choice, kept for the next pages
            resp.set_cookie(
                LANG_COOKIE,
                asked,
                path=PREFIX,
                samesite="Strict",
                secure=_secure(request),
                max_age=365 * 86400,
            )
        return resp  # type: ignore[no-any-return]
    s = _session(request)
    if s is None:
        return _refused("not signed in (or the session expired)", 401)
    if request.method not in ("GET", "HEAD"):
        if not _same_origin(request):
            return _refused("cross-origin request refused", 403)
        sent = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), s.csrf.encode()):
            return _refused("missing or wrong CSRF token", 403)
    name = getattr(request.match_info.handler, "__name__", "")
    needed = api.ROLE_OF.get(name, api.ROLE_NEEDED.get(request.method, api.Role.ENGINEER))
    if s.role < needed:
        return _refused(f"{s.operator} is {s.role.name.lower()}: this needs {needed.name.lower()}", 403)
    request["operator"] = s.operator
    request["role"] = s.role
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except AlarmError as exc:
        return _refused(str(exc), 409)
    except (ValueError, KeyError, TypeError, OverflowError, orjson.JSONDecodeError) as exc:
        return _refused(f"bad request: {exc}", 400)


# ---- the field: where an asset is ---------------------------------------------------------------
def places(loaded: Any) -> dict[str, dict[str, str]]:
    """asset -> {gateway, site, zone, feeder, transformer} from the field file."""
    f = loaded.field
    out: dict[str, dict[str, str]] = {}

    def put(asset: str | None, **kv: str) -> None:
        if asset:
            out.setdefault(asset, {}).update({k: v for k, v in kv.items() if v})

    for g in f.gateways:
        put(g.id, site=g.site)
        for d in g.devices:
            put(d.id, gateway=g.id, site=g.site)
            if d.bus is not None:
                put(f"{g.id}.{d.bus}", gateway=g.id, site=g.site)
    for z in f.water.zones:
        put(z.id, zone=z.id)
        for d in [*z.inlet_meters, *z.outlet_meters, *z.pressure_sensors]:
            put(d, zone=z.id)
    for t in [*f.water.tanks, *f.water.pumps]:
        put(t.device, zone=t.zone)
    for ss in f.electricity.substations:
        for fd in ss.feeders:
            put(fd.id, feeder=fd.id)
            put(fd.device, feeder=fd.id)
            for tx in fd.transformers:
                put(tx.id, feeder=fd.id, transformer=tx.id)
                put(tx.device, feeder=fd.id, transformer=tx.id)
    feeder_of = {
        tx.id: fd.id for ss in f.electricity.substations for fd in ss.feeders for tx in fd.transformers
    }
    for c in f.customers:
        put(c.water_meter, zone=c.zone or "")
        put(
            c.electricity_meter,
            transformer=c.transformer or "",
            feeder=feeder_of.get(c.transformer or "", ""),
        )
        put(c.id, zone=c.zone or "", transformer=c.transformer or "")
    return out


def customers_under(loaded: Any) -> dict[str, int]:
    """Transformer or feeder id -> customers it supplies (the customers an outage affects)."""
    f = loaded.field
    n: dict[str, int] = {}
    feeder_of = {
        tx.id: fd.id for ss in f.electricity.substations for fd in ss.feeders for tx in fd.transformers
    }
    for c in f.customers:
        if c.transformer:
            n[c.transformer] = n.get(c.transformer, 0) + 1
            fd = feeder_of.get(c.transformer)
            if fd:
                n[fd] = n.get(fd, 0) + 1
    return n


DASHBOARDS = {"water": "aquavolt-water/water", "electricity": "aquavolt-electricity/electricity",
              "gateways": "aquavolt-gateways/gateways", "customer": "aquavolt-customer/customer",
              "alarms": "aquavolt-alarms/alarms"}
"""uid/slug of the dashboards ``aquavolt dashboards build`` makes (dashboards/*.py UID)."""


def dashboard_of(loaded: Any, where: dict[str, dict[str, str]]) -> dict[str, tuple[str, dict[str, str]]]:
    """Asset id -> (dashboard, its variables) of the field's shipped dashboards: a customer or
    one of their meters the customer dashboard (``var-customer``: the customer's meters, as the
    dashboard's variable holds them), a feeder, transformer or their devices the electricity
    one, a zone and the water network's devices the water one, a gateway or a bus the gateways
    one. Any other asset (none in a valid field): the alarms dashboard. ``where``: the field's
    :func:`places`."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    f = loaded.field
    for asset, place in where.items():
        if place.get("feeder") or place.get("transformer"):
            out[asset] = ("electricity", {})
        elif place.get("zone"):
            out[asset] = ("water", {})
        elif place.get("gateway") or place.get("site"):
            out[asset] = ("gateways", {})
    for c in f.customers:
        meters = "|".join(m for m in (c.water_meter, c.electricity_meter) if m)
        for asset in (c.id, c.water_meter, c.electricity_meter):
            if asset:
                out[asset] = ("customer", {"var-customer": meters})
    return out


def grafana_link(asset: str, since_ms: int, until_ms: int,
                 boards: dict[str, tuple[str, dict[str, str]]] | None = None) -> str | None:
    """The dashboard of ``asset`` over [since, until]. ``$AQUAVOLT_GRAFANA_URL`` is either
    Grafana's address (``https://grafana.example:3000``): the shipped dashboard of the asset's
    kind (``boards``, from :func:`dashboard_of`) with ``from`` and ``to``; or a URL template with
    ``{asset}``, ``{from_ms}``, ``{to_ms}`` filled in (a dashboard of the utility's own)."""
    tpl = os.environ.get(GRAFANA_ENV, "").strip()
    if not tpl:
        return None
    if "{asset}" in tpl or "{from_ms}" in tpl:
        return (
            tpl.replace("{asset}", quote(asset, safe=""))
            .replace("{from_ms}", str(since_ms))
            .replace("{to_ms}", str(until_ms))
        )
    if boards is not None and "/d/" not in tpl:
        board, params = boards.get(asset, ("alarms", {}))
        return (tpl.rstrip("/") + "/d/" + DASHBOARDS[board] + "?"
                + urlencode({**params, "from": since_ms, "to": until_ms}))
    sep = "&" if "?" in tpl else "?"
    return tpl + sep + urlencode({"var-asset": asset, "from": since_ms, "to": until_ms})


# ---- the alarm list as the page and the event stream show it -----------------------------------
def alarm_rows(app: web.Application, asset: str | None = None) -> dict[str, Any]:
    eng = app[api.ENGINE]
    where = app[PLACES]
    under = app[CUSTOMERS]
    boards = app[BOARDS]
    now = eng.clock.now_ms()
    rows = []
    for a in eng.core.manager.alarms.values():
        state = str(a.state)
        if state == "normal" or a.audience != "operator" or (asset and a.asset != asset):
            continue
        row = {
            "id": a.alarm_id,
            "asset": a.asset,
            "condition": a.condition,
            "priority": a.priority,
            "state": state,
            "message": a.message,
            "value": a.value,
            "raised_ms": a.active_since_ms or a.first_ms,
            "last_change_ms": a.last_change_ms,
            "count": a.count,
            "version": a.version,
            "raised_seq": a.raised_seq,
            "place": where.get(a.asset, {}),
            "shelved_until_ms": a.shelved_until_ms,
            "shelve_reason": a.shelve_reason,
            "chattering": a.chattering,
        }
        if a.condition == "outage":
            row["customers"] = under.get(a.asset)
            if a.active and a.active_since_ms is not None:
                row["duration_s"] = max(0, (now - a.active_since_ms) // 1000)
        link = grafana_link(
            a.asset, (a.active_since_ms or a.first_ms) - 3_600_000, max(now, a.last_change_ms), boards
        )
        if link:
            row["grafana"] = link
        rows.append(row)
    order = {p: i for i, p in enumerate(PRIORITIES)}
    rows.sort(key=lambda r: (order.get(r["priority"], 9), -r["version"]))
    rows = _grouped(
        rows, {a.alarm_id: a.topo_suppr for a in eng.core.manager.alarms.values() if a.topo_suppr}
    )
    counts = {
        p: sum(1 for r in rows if r["priority"] == p and r["state"] in ("unack", "acked", "rtn_unack"))
        for p in PRIORITIES
    }
    return {"seq": eng.core.manager.seq, "now_ms": now, "counts": counts, "alarms": rows}


def _grouped(rows: list[dict[str, Any]], cause: dict[str, str]) -> list[dict[str, Any]]:
    """Incidents folded: an alarm suppressed by another alarm of the list (its cause upstream:
    the outage, the open breaker, the gateway offline) goes right after it with ``parent`` set,
    and the parent counts its ``consequences``."""
    listed = {r["id"] for r in rows}
    children: dict[str, list[dict[str, Any]]] = {}
    top = []
    for r in rows:
        parent = cause.get(r["id"], "")
        if parent and parent in listed and parent != r["id"]:
            r["parent"] = parent
            children.setdefault(parent, []).append(r)
        else:
            top.append(r)
    out: list[dict[str, Any]] = []

    def put(r: dict[str, Any]) -> None:
        out.append(r)
        kids = children.pop(r["id"], [])
        if kids:
            r["consequences"] = len(kids)
        for k in kids:
            put(k)

    for r in top:
        put(r)
    for kids in children.values():  # a cycle cannot happen (suppression goes upstream); kept anyway
        out.extend(k for k in kids if k not in out)
    return out


PLACES: web.AppKey[dict[str, dict[str, str]]] = web.AppKey("console_places", dict)
BOARDS: web.AppKey[dict[str, tuple[str, dict[str, str]]]] = web.AppKey("console_boards", dict)
CUSTOMERS: web.AppKey[dict[str, int]] = web.AppKey("console_customers", dict)


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the alarm list now, then again each time the alarms change."""
    if _session(request) is None:
        return _refused("not signed in (or the session expired)", 401)
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    eng = request.app[api.ENGINE]
    stopping = request.app[STOPPING]
    asset = request.query.get("asset") or None
    commands = request.query.get("commands") == "1"
    last: Any = None
    quiet_since = time.monotonic()
    version = -1
    while not stopping.is_set():
        s = _session(request)
        if s is None:  # logged out or expired: the stream ends
            await resp.write(b"event: signed-out\ndata: {}\n\n")
            break
        if commands:  # the command log: sent again when a command or a reply is added
            now: Any = orjson.dumps({"commands": eng.commands.recent(50)})
            kind = b"commands"
        else:
            now = eng.core.manager.seq
            kind = b"alarms"
        if now != last:
            last = now
            data = now if commands else orjson.dumps(alarm_rows(request.app, asset))
            await resp.write(b"event: " + kind + b"\ndata: " + data + b"\n\n")
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= SSE_KEEPALIVE_S:
            await resp.write(b": keep-alive\n\n")
            quiet_since = time.monotonic()
        # until the engine changes something (or sign-out, stop), the next keep-alive or expiry
        now_s = time.monotonic()
        version = await eng.changes.wait(version, min(quiet_since + SSE_KEEPALIVE_S, s.expires) - now_s)
    return resp


# ---- pages ---------------------------------------------------------------------------------------
def _page(title: str, body: str, s: Session | None = None, script: bool = False) -> str:
    lang = LANG.get()
    nav = ""
    if s is not None:
        nav = (
            f'<nav aria-label="{tr("Console")}"><a href="{PREFIX}/">{tr("Alarms")}</a> '
            f'<a href="{PREFIX}/commands">{tr("Commands")}</a> '
            f'<a href="{PREFIX}/performance">{tr("Performance")}</a>'
            f'<span class="who">{escape(s.operator)} ({s.role.name.lower()})</span>'
            f'<form method="post" action="{PREFIX}/logout" class="inline">'
            f'<input type="hidden" name="csrf" value="{escape(s.csrf)}">'
            f'<button type="submit" id="logout">{tr("Sign out")}</button></form></nav>'
        )
    langs = " ".join(
        f'<a href="?lang={code}" lang="{code}" hreflang="{code}"'
        f"{' aria-current=true' if code == lang else ''}>{name}</a>"
        for code, name in LANGUAGES.items()
    )
    meta = f'<meta name="csrf-token" content="{escape(s.csrf)}">' if s is not None else ""
    js = ""
    if script:
        words = escape(orjson.dumps(js_words()).decode(), quote=False)
        js = (
            f'<script type="application/json" id="i18n">{words}</script>'
            f'<script type="module" src="{PREFIX}/static/console.js"></script>'
        )
    direction = "rtl" if lang in RTL else "ltr"
    return (
        f'<!doctype html><html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
        f"<title>{escape(title)} · aquavolt</title>"
        f'<link rel="stylesheet" href="{PREFIX}/static/console.css">{js}</head>'
        f"<body><header><h1>{escape(title)}</h1>{nav}"
        f'<p class="langs" aria-label="{tr("Language")}">{langs}</p></header>'
        f"<main>{body}</main></body></html>"
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
        },
    )


def _signin_form(error: str = "", csrf: str = "") -> str:
    err = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return (
        f'{err}<form method="post" action="{PREFIX}/login" class="card">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<label for="token">{tr("Your operator token")}</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>'
        f'<button type="submit">{tr("Sign in")}</button></form>'
    )


def _login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    csrf = secrets.token_urlsafe(24)  # double submit: the cookie and the form field must match
    resp = _html(_page(tr("Sign in"), _signin_form(error, csrf)), status)
    resp.set_cookie(
        LOGIN_COOKIE,
        csrf,
        path=PREFIX,
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        max_age=3600,
    )
    return resp


async def to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(PREFIX + "/")


async def login_page(request: web.Request) -> web.StreamResponse:
    if _session(request) is not None:
        raise web.HTTPSeeOther(PREFIX + "/")
    return _login_page(request)


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    sent = str(form.get("csrf", ""))
    if not _same_origin(request) or not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
        why = tr("The sign-in form expired or came from another site: sign in again.")
        return _login_page(request, why, 403)
    who = request.app[api.TOKENS].authenticate(str(form.get("token", "")).strip())
    if who is None:
        return _login_page(request, tr("Unknown token."), 401)
    sid, _s = request.app[SESSIONS].open(who.name, who.role)
    resp = web.HTTPSeeOther(PREFIX + "/")
    resp.set_cookie(
        SESSION_COOKIE,
        sid,
        path=PREFIX,
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        max_age=int(request.app[SESSIONS].ttl_s),
    )
    resp.del_cookie(LOGIN_COOKIE, path=PREFIX)
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    s = _session(request)
    form = await request.post()
    if s is None:
        raise web.HTTPSeeOther(PREFIX + "/login")
    if not _same_origin(request) or not hmac.compare_digest(
        str(form.get("csrf", "")).encode(), s.csrf.encode()
    ):
        return _refused("missing or wrong CSRF token", 403)
    request.app[SESSIONS].close(request.cookies.get(SESSION_COOKIE))
    request.app[api.ENGINE].changes.notify()  # its open event streams end now
    resp = web.HTTPSeeOther(PREFIX + "/login")
    resp.del_cookie(SESSION_COOKIE, path=PREFIX)
    raise resp


def _signed_in(request: web.Request) -> Session:
    s = _session(request)
    if s is None:
        raise web.HTTPSeeOther(PREFIX + "/login")
    return s


def _place_text(place: dict[str, str]) -> str:
    return " · ".join(f"{k} {v}" for k, v in place.items() if k in ("zone", "feeder", "transformer", "site"))


def _state(state: str) -> str:
    return tr(STATE_LABELS.get(state, state))


def _th(*names: str) -> str:
    return "".join(f'<th scope="col">{tr(n)}</th>' for n in names)


async def alarms_page(request: web.Request) -> web.StreamResponse:
    s = _signed_in(request)
    asset = request.query.get("asset") or ""
    data = alarm_rows(request.app, asset or None)
    can_act = s.role >= api.Role.OPERATOR
    counts = "".join(
        f'<li class="p-{p}"><span>{tr(p)}</span> <b data-count="{p}">{data["counts"][p]}</b></li>'
        for p in PRIORITIES
    )
    rows = "".join(
        f'<tr data-alarm="{escape(r["id"])}" data-state="{r["state"]}" '
        f'class="p-{r["priority"]} s-{r["state"]}">'
        f"<td>{tr(r['priority'])}</td><td>{_state(r['state'])}</td>"
        f'<td><time data-ms="{r["raised_ms"]}">{r["raised_ms"]}</time></td>'
        f"<td>{escape(r['asset'])}</td><td>{escape(_place_text(r['place']))}</td>"
        f"<td>{escape(r['message'] or r['condition'])}</td><td></td><td></td></tr>"
        for r in data["alarms"]
    )
    filt = ""
    if asset:
        filt = f'<p>{tr("Alarms of")} <b>{escape(asset)}</b> · <a href="{PREFIX}/">{tr("all alarms")}</a></p>'
    ack_all = f'<button type="button" id="ack-visible">{tr("Acknowledge what is shown")}</button>'
    tools = (
        f'<p class="tools">{ack_all if can_act else ""}<label class="check">'
        f'<input type="checkbox" id="show-hidden"> {tr("Show shelved and suppressed")}</label>'
        '<span id="status" role="status" aria-live="polite"></span></p>'
    )
    body = (
        f'{filt}<ul class="counts" aria-label="{tr("Active alarms by priority")}">{counts}</ul>{tools}'
        f'<div class="scroll"><table id="alarms" data-seq="{data["seq"]}" data-asset="{escape(asset)}" '
        f'data-can-act="{int(can_act)}" data-live="0">'
        f"<caption>{tr('Alarms (live)')}</caption><thead><tr>"
        f"{_th('Priority', 'State', 'Raised', 'Asset', 'Place', 'Message', 'Outage', 'Actions')}</tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
        '<dialog id="shelve-dialog"><form method="dialog" id="shelve-form">'
        f'<h2>{tr("Shelve")} <span id="shelve-target"></span></h2>'
        f'<label for="shelve-reason">{tr("Reason")}</label>'
        '<input id="shelve-reason" required maxlength="1000">'
        f'<label for="shelve-hours">{tr("For (hours, at most 168)")}</label>'
        '<input id="shelve-hours" type="number" min="0.1" max="168" step="0.1" value="1" required>'
        f'<menu><button value="cancel" formnovalidate>{tr("Cancel")}</button>'
        f'<button value="ok" id="shelve-ok">{tr("Shelve")}</button></menu></form></dialog>'
    )
    return _html(_page(tr("Alarms"), body, s, script=True))


async def alarm_page(request: web.Request) -> web.StreamResponse:
    s = _signed_in(request)
    eng = request.app[api.ENGINE]
    aid = f"{request.match_info['asset']}/{request.match_info['condition']}"
    a = eng.core.manager.alarms.get(aid)
    if a is None:
        return _html(_page(tr("No such alarm"), f"<p>{escape(aid)}</p>", s), 404)
    events = eng.store.events(alarm_id=aid, limit=100)
    rows = "".join(
        f'<tr><td><time data-ms="{e["ts_ms"]}">{e["ts_ms"]}</time></td><td>{escape(e["transition"])}</td>'
        f"<td>{escape(_state(str(e['state'])))}</td>"
        f"<td>{escape(e.get('by') or '')}</td>"
        f"<td>{escape(e.get('comment') or (e.get('details') or {}).get('shelve_reason') or '')}</td></tr>"
        for e in events
    )
    form = ""
    if s.role >= api.Role.OPERATOR:
        form = (
            f'<form id="comment-form" data-alarm="{escape(aid)}">'
            f'<label for="comment-text">{tr("Comment")}</label>'
            '<input id="comment-text" required maxlength="1000">'
            f'<button type="submit">{tr("Add comment")}</button>'
            '<span id="status" role="status" aria-live="polite"></span></form>'
        )
    link = grafana_link(a.asset, (a.active_since_ms or a.first_ms) - 3_600_000, eng.clock.now_ms(),
                        request.app[BOARDS])
    glink = ""
    if link:
        glink = f'<p><a href="{escape(link)}" rel="noopener">{tr("Dashboard of")} {escape(a.asset)}</a></p>'
    body = (
        f"<p><b>{escape(aid)}</b>: {escape(a.message)} · {tr(a.priority)} · "
        f"{_state(str(a.state))}</p>{glink}{form}"
        f'<div class="scroll"><table id="history"><caption>{tr("History (newest first)")}</caption>'
        "<thead><tr>"
        f"{_th('When', 'What', 'State', 'Who', 'Comment')}</tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )
    return _html(_page(f"{tr('Alarm')} {aid}", body, s, script=True))


def _writable(app: web.Application) -> list[tuple[str, str, str, Any]]:
    eng = app[api.ENGINE]
    out = []
    for g in eng.loaded.field.gateways:
        for wp in g.writable_points:
            dev, _, point = wp.partition(".")
            spec = eng.loaded.profile_of(dev).by_name.get(point)
            out.append((g.id, dev, point, spec))
    return out


async def commands_page(request: web.Request) -> web.StreamResponse:
    s = _signed_in(request)
    eng = request.app[api.ENGINE]
    log = eng.commands.recent(50)
    last_read: dict[tuple[str, str, str], Any] = {}
    for c in reversed(log):
        if c.get("value_read") is not None:
            last_read[(c["gateway"], c["device"], c["point"])] = c["value_read"]
    can_act = s.role >= api.Role.OPERATOR
    items = []
    for gw, dev, point, spec in _writable(request.app):
        kind = "bool" if str(getattr(spec, "type", "")) == "bool" else "number"
        cur = last_read.get((gw, dev, point))
        lo = getattr(spec, "min_value", None)
        hi = getattr(spec, "max_value", None)
        ident = f"{gw}/{dev}/{point}"
        if kind == "bool":
            ctl = (
                f'<button type="button" data-value="true">{tr("Start / on")}</button>'
                f'<button type="button" data-value="false">{tr("Stop / off")}</button>'
            )
        else:
            fid = f"v-{gw}-{dev}-{point}"
            rng = f' min="{lo}"' if lo is not None else ""
            rng += f' max="{hi}"' if hi is not None else ""
            ctl = (
                f'<label for="{escape(fid)}">{tr("New value")} ({lo}..{hi})</label>'
                f'<input id="{escape(fid)}" type="number" step="any"{rng}>'
                f'<button type="button" data-value="input">{tr("Send")}</button>'
            )
        current = escape(str(cur)) if cur is not None else tr("unknown")
        items.append(
            f'<li class="card" data-command="{escape(ident)}" data-kind="{kind}" data-gateway="{escape(gw)}" '
            f'data-device="{escape(dev)}" data-point="{escape(point)}">'
            f"<h2>{escape(dev)} · {escape(point)}</h2><p>{tr('gateway')} {escape(gw)} · "
            f'{tr("last value read back")}: <b class="current">{current}</b></p>'
            f"{ctl if can_act else '<p>' + tr('Your role may not issue commands.') + '</p>'}</li>"
        )
    rows = "".join(
        f'<tr data-command-id="{escape(c["id"])}">'
        f'<td><time data-ms="{c["issued_ms"]}">{c["issued_ms"]}</time></td>'
        f"<td>{escape(c['operator'])}</td><td>{escape(c['device'])}.{escape(c['point'])} = "
        f"{escape(str(c['value']))}</td>"
        f'<td class="outcome">{escape(str(c.get("outcome") or tr("waiting")))}</td>'
        f'<td class="why">{escape(str(c.get("outcome_reason") or ""))}</td></tr>'
        for c in log
    )
    none = f"<li>{tr('The field allows no commands.')}</li>"
    body = (
        f'<ul class="cards" id="writable">{"".join(items) or none}</ul>'
        '<span id="status" role="status" aria-live="polite"></span>'
        f'<dialog id="confirm-dialog"><form method="dialog"><h2>{tr("Confirm the command")}</h2>'
        f'<p id="confirm-text"></p><label for="confirm-reason">{tr("Reason")}</label>'
        f'<input id="confirm-reason" maxlength="1000"><menu><button value="cancel">{tr("Cancel")}</button>'
        f'<button value="ok" id="confirm-ok">{tr("Send the command")}</button></menu></form></dialog>'
        f'<div class="scroll"><table id="command-log"><caption>{tr("Command log (newest first)")}</caption>'
        f"<thead><tr>{_th('Issued', 'Operator', 'Command', 'Reply', 'Why')}</tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )
    return _html(_page(tr("Commands"), body, s, script=True))


async def performance_page(request: web.Request) -> web.StreamResponse:
    s = _signed_in(request)
    eng = request.app[api.ENGINE]
    hours = api._number(request.query.get("hours", "24"), "hours", 1, 24 * 30)
    until = eng.core.horizon_ms
    since = max(0, until - int(hours * 3_600_000))
    figs = performance(eng.store.raised_events(since, until), eng.core.manager.alarms.values(), since, until)

    def alarm_link(aid: str) -> str:
        asset, _, cond = aid.partition("/")
        href = f"{PREFIX}/alarms/{quote(asset, safe='')}/{quote(cond, safe='')}"
        return f'<a href="{escape(href)}">{escape(aid)}</a>'

    def listed(ids: list[str]) -> str:
        return ", ".join(alarm_link(a) for a in ids)

    mix = figs["priority_mix_pct"]
    target_mix = figs["priority_mix_target_pct"]
    per_hour = figs["alarms_per_hour"]
    flood = figs["floods"]
    rows_spec: list[tuple[str, str, str, str, bool]] = [
        # (key, figure, value, target, within target)
        ("alarms", tr("Alarms raised"), str(figs["alarms"]), "", True),
        (
            "alarms_per_hour",
            tr("Alarms per hour"),
            f"{per_hour:.1f}",
            tr("about 6 acceptable, 12 at most"),
            per_hour <= 12,
        ),
        (
            "alarms_per_10min",
            tr("Alarms per 10 minutes (mean, peak)"),
            f"{figs['alarms_per_10min']['mean']:.1f} · {figs['alarms_per_10min']['max']}",
            "",
            True,
        ),
        (
            "pct_time_in_flood",
            tr("Time in flood (more than 10 alarms in 10 minutes)"),
            f"{flood['pct_time_in_flood']:.1f} % ({flood['intervals']})",
            f"< {flood['target_pct']:g} %",
            flood["pct_time_in_flood"] < flood["target_pct"],
        ),
        (
            "chattering",
            tr("Chattering alarms"),
            f"{figs['chattering']['count']} {listed(figs['chattering']['alarms'])}",
            "0",
            figs["chattering"]["count"] == 0,
        ),
        (
            "stale",
            tr("Stale alarms (active more than 24 h)"),
            f"{figs['stale']['count']} {listed(figs['stale']['alarms'])}",
            f"< {figs['stale']['target_max']}",
            figs["stale"]["count"] < figs["stale"]["target_max"],
        ),
        (
            "priority_mix",
            tr("Priority mix (low, medium, high)"),
            " · ".join(f"{mix[p]:.0f} %" for p in ("low", "medium", "high")),
            " · ".join(f"{target_mix[p]:.0f} %" for p in ("low", "medium", "high")),
            True,
        ),
    ]
    rows = "".join(
        f'<tr data-figure="{key}" class="{"ok" if ok else "over"}"><th scope="row">{name}</th>'
        f"<td>{value}</td><td>{escape(target)}</td>"
        f"<td>{tr('within target') if ok else tr('over target')}</td></tr>"
        for key, name, value, target, ok in rows_spec
    )
    bad = "".join(f"<li>{alarm_link(b['alarm_id'])}: {b['activations']}</li>" for b in figs["top_bad_actors"])
    pick = " ".join(f'<a href="?hours={h}">{h} h</a>' for h in (1, 8, 24, 168))
    body = (
        f"<p>{tr('EEMUA 191 figures of the last {hours} hours of event time.', hours=f'{hours:g}')} "
        f"{pick}</p>"
        '<div class="scroll"><table id="performance"><thead><tr>'
        f"{_th('Figure', 'Value', 'Target', 'Verdict')}"
        f"</tr></thead><tbody>{rows}</tbody></table></div>"
        f'<h2>{tr("Top bad actors")}</h2><ol id="bad-actors">{bad}</ol>'
    )
    return _html(_page(tr("Alarm system performance"), body, s))


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    if "/" in name or not path.is_file():
        raise web.HTTPNotFound()
    kind = {"js": "text/javascript", "css": "text/css"}.get(path.suffix[1:], "application/octet-stream")
    return web.Response(body=path.read_bytes(), content_type=kind, headers={"Cache-Control": "no-cache"})


async def _stopping(app: web.Application) -> None:
    app[STOPPING].set()  # the event streams end, so the server stops without waiting for them
    app[api.ENGINE].changes.notify()


def setup(app: web.Application) -> None:
    """Add the console's routes and middleware to the operator API app (``rules.http.build_app``)."""
    eng = app[api.ENGINE]
    app[SESSIONS] = Sessions()
    app[STOPPING] = asyncio.Event()
    app[PLACES] = places(eng.loaded)
    app[BOARDS] = dashboard_of(eng.loaded, app[PLACES])
    app[CUSTOMERS] = customers_under(eng.loaded)
    app.middlewares.insert(0, middleware)
    app.on_shutdown.append(_stopping)
    p, a = PREFIX, PREFIX + "/api"
    alarm = "/alarms/{asset}/{condition}"
    app.add_routes(
        [
            web.get(p, to_console),
            web.get(p + "/", alarms_page),
            web.get(p + "/login", login_page),
            web.post(p + "/login", login),
            web.post(p + "/logout", logout),
            web.get(p + alarm, alarm_page),
            web.get(p + "/commands", commands_page),
            web.get(p + "/performance", performance_page),
            web.get(p + "/static/{name}", static),
            web.get(p + "/events", stream),
            # the operator API's own handlers, behind the session (and CSRF) instead of a Bearer token
            web.get(a + "/alarms", api.list_alarms),
            web.get(a + alarm, api.get_alarm),
            web.post(a + "/ack", api.ack),
            web.post(a + alarm + "/shelve", api.shelve),
            web.post(a + alarm + "/unshelve", api.unshelve),
            web.post(a + alarm + "/comment", api.comment),
            web.get(a + "/commands", api.list_commands),
            web.post(a + "/commands", api.post_command),
            web.get(a + "/performance", api.perf),
        ]
    )
