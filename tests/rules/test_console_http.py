"""The console's sessions, CSRF and roles at the HTTP level, on the real operator API app served
on 127.0.0.1 (aiohttp client): the sign-in form's double-submit token and Origin check, the
session cookie's attributes, CSRF and Origin on every POST, the role table server-side, expiry,
logout, the Bearer API untouched, and the event stream ending when the server stops."""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from aquavolt.clock import ManualClock
from aquavolt.config import load_field
from aquavolt.pki import make_ca, make_cert
from aquavolt.rules import console
from aquavolt.rules.http import Operator, Operators, Role, build_app
from aquavolt.rules.service import Engine
from aquavolt.settings import MqttSettings

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {"amina": (Role.OPERATOR, "amina-token-0123456789"), "vera": (Role.VIEWER, "vera-token-0123456789")}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(load_field(ROOT / "examples/demo-town.yaml"), MqttSettings(),
                  tmp_path_factory.mktemp("rules"), ManualClock(1_780_000_000))


def _operators() -> Operators:
    return Operators(tuple(Operator(n, role, hashlib.sha256(tok.encode()).digest())
                           for n, (role, tok) in TOKENS.items()))


Test = Callable[[web.Application, str, aiohttp.ClientSession], Awaitable[None]]


def serve(engine: Engine, test: Test, tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None) -> None:
    async def run() -> None:
        app = build_app(engine, _operators())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls[0] if tls else None).start()
        base = f"http{'s' if tls else ''}://127.0.0.1:{runner.addresses[0][1]}"
        connector = aiohttp.TCPConnector(ssl=tls[1]) if tls else None
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), connector=connector) as http:
                await test(app, base, http)
        finally:
            await runner.cleanup()

    asyncio.run(run())


async def sign_in(base: str, http: aiohttp.ClientSession, who: str) -> str:
    """Sign in as ``who``; the session's CSRF token, from the page's meta tag."""
    async with http.get(base + "/console/login") as r:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())[1]  # type: ignore[index]
    async with http.post(base + "/console/login", data={"csrf": csrf, "token": TOKENS[who][1]},
                         headers={"Origin": base}, allow_redirects=False) as r:
        assert r.status == 303, await r.text()
    async with http.get(base + "/console/") as r:
        assert r.status == 200 and who in await r.text()
        return re.search(r'name="csrf-token" content="([^"]+)"', await r.text())[1]  # type: ignore[index]


def test_sign_in_form(engine: Engine) -> None:
    async def test(app: web.Application, base: str, http: aiohttp.ClientSession) -> None:
        async with http.get(base + "/console/", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/console/login")
        async with http.get(base + "/console/login") as r:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())[1]  # type: ignore[index]
        good = {"csrf": csrf, "token": TOKENS["amina"][1]}
        # without the form's token, with another one, or from another site: refused
        for data, origin in (({"token": good["token"]}, base), ({**good, "csrf": "x" * 32}, base),
                             (good, "http://evil.example"), (good, None)):
            headers = {"Origin": origin} if origin else {}
            async with http.post(base + "/console/login", data=data, headers=headers,
                                 allow_redirects=False) as r:
                assert r.status == 403, (data, origin)
            async with http.get(base + "/console/login") as r:  # a fresh form
                csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())[1]  # type: ignore[index]
            good["csrf"] = csrf
        async with http.post(base + "/console/login", data={**good, "token": "wrong-token-000"},
                             headers={"Origin": base}, allow_redirects=False) as r:
            assert r.status == 401 and "Unknown token" in await r.text()
        async with http.get(base + "/console/login") as r:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())[1]  # type: ignore[index]
        async with http.post(base + "/console/login", data={**good, "csrf": csrf}, headers={"Origin": base},
                             allow_redirects=False) as r:
            assert r.status == 303
            cookie = next(v for v in r.headers.getall("Set-Cookie") if v.startswith("av_session="))
        attrs = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
        assert "httponly" in attrs and attrs["samesite"].strip() == "SameSite=Strict"
        assert attrs["path"].strip() == "Path=/console"
        assert "secure" not in attrs  # plain HTTP on 127.0.0.1; Secure whenever served over TLS
        assert len(app[console.SESSIONS].by_id) == 1

    serve(engine, test)


def test_session_cookie_is_secure_over_tls(engine: Engine, tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    leaf = make_cert(ca, tmp_path, "rules-api")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(leaf.cert, leaf.key)
    client = ssl.create_default_context(cafile=str(ca.cert))

    async def test(app: web.Application, base: str, http: aiohttp.ClientSession) -> None:
        async with http.get(base + "/console/login") as r:
            assert "Secure" in r.headers["Set-Cookie"]  # the sign-in form's token too
            csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())[1]  # type: ignore[index]
        async with http.post(base + "/console/login", data={"csrf": csrf, "token": TOKENS["amina"][1]},
                             headers={"Origin": base}, allow_redirects=False) as r:
            assert r.status == 303
            cookie = next(v for v in r.headers.getall("Set-Cookie") if v.startswith("av_session="))
        assert {a.strip().lower() for a in cookie.split(";")} >= {"secure", "httponly", "samesite=strict"}

    serve(engine, test, (server, client))


def test_behind_a_tls_reverse_proxy(engine: Engine) -> None:
    async def test(app: web.Application, base: str, http: aiohttp.ClientSession) -> None:
        proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "scada.example"}
        async with http.get(base + "/console/login", headers=proxy) as r:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())[1]  # type: ignore[index]
        form = {"csrf": csrf, "token": TOKENS["amina"][1]}
        async with http.post(base + "/console/login", data=form, headers={**proxy, "Origin": base},
                             allow_redirects=False) as r:
            assert r.status == 403  # the browser was on https://scada.example, not here
        async with http.get(base + "/console/login", headers=proxy) as r:
            form["csrf"] = re.search(r'name="csrf" value="([^"]+)"', await r.text())[1]  # type: ignore[index]
            assert "Secure" in r.headers["Set-Cookie"]
            login_cookie = r.cookies["av_login"].value
        # the Secure cookie travels over the browser's TLS to the proxy: given here by hand (this
        # client speaks plain HTTP to 127.0.0.1, where its jar withholds Secure cookies)
        headers = {**proxy, "Origin": "https://scada.example", "Cookie": f"av_login={login_cookie}"}
        async with http.post(base + "/console/login", data=form, headers=headers, allow_redirects=False) as r:
            assert r.status == 303
            cookie = r.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie

    serve(engine, test)


def test_csrf_origin_roles_expiry_and_logout(engine: Engine) -> None:
    async def test(app: web.Application, base: str, http: aiohttp.ClientSession) -> None:
        async with http.get(base + "/console/api/alarms") as r:
            assert r.status == 401  # no session
        csrf = await sign_in(base, http, "amina")
        ok = {"X-CSRF-Token": csrf, "Origin": base}
        async with http.get(base + "/console/api/alarms") as r:
            seq = (await r.json())["seq"]
        for headers in ({"Origin": base}, {"X-CSRF-Token": "nope", "Origin": base},
                        {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}, {"X-CSRF-Token": csrf}):
            async with http.post(base + "/console/api/ack", json={"seen_seq": seq}, headers=headers) as r:
                assert r.status == 403, headers
        async with http.post(base + "/console/api/ack", json={"seen_seq": seq}, headers=ok) as r:
            assert r.status == 200 and (await r.json())["acknowledged"] == []
        async with http.post(base + "/console/api/ack", json={"seen_seq": "many"}, headers=ok) as r:
            assert r.status == 400 and "seen_seq" in (await r.json())["error"]  # the API's own checks
        async with http.post(base + "/console/api/alarms/x/y/comment", json={"text": "t"}, headers=ok) as r:
            assert r.status == 409  # the API's own refusal: no such alarm
        actions = engine.store.actions(5)
        assert (actions[0]["operator"], actions[0]["action"]) == ("amina", "acknowledge")
        # the Bearer API is untouched: no session cookie opens it
        async with http.get(base + "/alarms") as r:
            assert r.status == 401
        # logout needs the token too; then the session is gone
        async with http.post(base + "/console/logout", data={}, headers={"Origin": base},
                             allow_redirects=False) as r:
            assert r.status == 403
        async with http.post(base + "/console/logout", data={"csrf": csrf}, headers={"Origin": base},
                             allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/console/login")
        async with http.get(base + "/console/api/alarms") as r:
            assert r.status == 401
        assert app[console.SESSIONS].by_id == {}
        # a viewer reads, and is refused every action by the server
        csrf = await sign_in(base, http, "vera")
        ok = {"X-CSRF-Token": csrf, "Origin": base}
        async with http.get(base + "/console/api/performance") as r:
            assert r.status == 200
        for path, body in (("/ack", {"seen_seq": seq}), ("/alarms/x/y/shelve", {"reason": "r", "duration_s": 60}),
                           ("/alarms/x/y/comment", {"text": "t"}),
                           ("/commands", {"gateway": "g", "device": "d", "point": "p", "value": 1})):
            async with http.post(base + "/console/api" + path, json=body, headers=ok) as r:
                assert r.status == 403 and "viewer" in (await r.json())["error"], path
        # a session expires
        for s in app[console.SESSIONS].by_id.values():
            s.expires = time.monotonic() - 1
        async with http.get(base + "/console/api/alarms") as r:
            assert r.status == 401
        async with http.get(base + "/console/", allow_redirects=False) as r:
            assert r.status == 303

    serve(engine, test)


def test_event_stream_and_stop(engine: Engine) -> None:
    async def test(app: web.Application, base: str, http: aiohttp.ClientSession) -> None:
        async with http.get(base + "/console/events") as r:
            assert r.status == 401  # the stream needs a session too
        await sign_in(base, http, "amina")
        r = await http.get(base + "/console/events")
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert await r.content.readline() == b"event: alarms\n"
        assert (await r.content.readline()).startswith(b'data: {"seq":')
        app["open_stream"] = r

    started = time.monotonic()
    serve(engine, test)  # cleanup with the stream still open
    assert time.monotonic() - started < 5, "the server waited for the open event stream"


def test_pages_and_places(engine: Engine) -> None:
    async def test(app: web.Application, base: str, http: aiohttp.ClientSession) -> None:
        await sign_in(base, http, "vera")
        for path in ("/console/commands", "/console/performance", "/console/performance?hours=1",
                     "/console/static/console.js", "/console/static/console.css"):
            async with http.get(base + path) as r:
                assert r.status == 200, path
        async with http.get(base + "/console/static/..%2Frules.py") as r:
            assert r.status == 404
        async with http.get(base + "/console/commands") as r:
            page = await r.text()
            assert "may not issue commands" in page  # a viewer's page has no command buttons

    serve(engine, test)
    places = console.places(engine.loaded)
    customers = console.customers_under(engine.loaded)
    f = engine.loaded.field
    tx = f.electricity.substations[0].feeders[0].transformers[0]
    assert places[tx.id]["feeder"] == f.electricity.substations[0].feeders[0].id
    assert customers[tx.id] == sum(1 for c in f.customers if c.transformer == tx.id)


def test_grafana_link(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(console.GRAFANA_ENV, raising=False)
    assert console.grafana_link("pump-1", 1, 2) is None
    monkeypatch.setenv(console.GRAFANA_ENV, "http://grafana.local/d/assets?orgId=1")
    assert console.grafana_link("pump-1", 1, 2) == "http://grafana.local/d/assets?orgId=1&var-asset=pump-1&from=1&to=2"
    monkeypatch.setenv(console.GRAFANA_ENV, "http://g/d/{asset}?from={from_ms}&to={to_ms}")
    assert console.grafana_link("pump 1", 1, 2) == "http://g/d/pump%201?from=1&to=2"



def test_outage_row_shows_customers_duration_and_its_consequences(engine: Engine) -> None:
    from aquavolt.rules.alarms import Alarm
    from aquavolt.wire import AlarmState

    f = engine.loaded.field
    feeder = f.electricity.substations[0].feeders[0]
    tx = feeder.transformers[0]
    now = engine.clock.now_ms()
    a = Alarm(alarm_id=f"{tx.id}/outage", asset=tx.id, condition="outage", priority="high", active=True,
              acked=False, state=AlarmState.UNACK, active_since_ms=now - 754_000, first_ms=now - 754_000,
              message="Transformer outage")
    meter = next(c.electricity_meter for c in f.customers if c.transformer == tx.id and c.electricity_meter)
    # a consequence: the meter's comm_fail, suppressed by the outage upstream (rules/topology.py)
    dep = Alarm(alarm_id=f"{meter}/comm_fail", asset=meter, condition="comm_fail", priority="low", active=True,
                acked=False, state=AlarmState.SUPPRESSED, topo_suppr=a.alarm_id, active_since_ms=now - 1000,
                first_ms=now - 1000)
    other = Alarm(alarm_id="pump-x/fault", asset="pump-x", condition="fault", priority="critical", active=True,
                  acked=False, state=AlarmState.UNACK, active_since_ms=now, first_ms=now)
    for x in (dep, a, other):
        engine.core.manager.alarms[x.alarm_id] = x
    try:
        rows = console.alarm_rows(build_app(engine, _operators()))
    finally:
        for x in (dep, a, other):
            del engine.core.manager.alarms[x.alarm_id]
    ids = [r["id"] for r in rows["alarms"]]
    assert ids.index(dep.alarm_id) == ids.index(a.alarm_id) + 1  # folded right under its cause
    assert ids.index("pump-x/fault") < ids.index(a.alarm_id)  # critical first
    [row] = [r for r in rows["alarms"] if r["id"] == a.alarm_id]
    [child] = [r for r in rows["alarms"] if r["id"] == dep.alarm_id]
    assert (row["consequences"], child["parent"], "parent" in row) == (1, a.alarm_id, False)
    assert row["customers"] == sum(1 for c in f.customers if c.transformer == tx.id) > 0
    assert row["duration_s"] == 754
    assert (row["place"]["transformer"], row["place"]["feeder"]) == (tx.id, feeder.id)
    assert rows["counts"]["high"] >= 1


def test_languages() -> None:
    from aquavolt.rules.console import i18n

    assert i18n.choose(None, None, "ar-MA,ar;q=0.9,fr;q=0.8") == "ar"
    assert i18n.choose(None, "fr", "ar") == "fr"  # the operator's choice, kept in a cookie
    assert i18n.choose("en", "fr", "ar") == "en"
    assert i18n.choose("xx", None, "de-DE") == "en"
    assert set(i18n.FR) == set(i18n.AR) and set(i18n.JS) <= set(i18n.FR)  # every phrase in both
    token = i18n.LANG.set("ar")
    try:
        assert i18n.tr("Acknowledged {n}", n=3) == "تم الإقرار بـ 3"
    finally:
        i18n.LANG.reset(token)
    assert i18n.tr("Acknowledged {n}", n=3) == "Acknowledged 3"


def test_performance_page_shows_the_figures_against_their_targets(tmp_path: Path) -> None:
    from aquavolt.rules.api import Condition
    from aquavolt.rules.core import Output

    eng = Engine(load_field(ROOT / "examples/demo-town.yaml"), MqttSettings(), tmp_path, ManualClock(1_780_000_000))
    t0 = 1_780_000_000_000 - 3_600_000
    for i in range(12):  # 12 activations in 2 minutes: a flood, and a chattering alarm
        for active in (True, False):
            cond = Condition("pump-x", "fault", active, t0 + i * 10_000 + (0 if active else 5000))
            eng._manager_change(lambda c=cond: Output(events=eng.core.manager.apply(c)))
    eng.core.flush(t0 + 3_000_000)  # event time released up to there

    async def test(app: web.Application, base: str, http: aiohttp.ClientSession) -> None:
        await sign_in(base, http, "vera")
        async with http.get(base + "/console/performance?hours=2") as r:
            page = await r.text()
        rows = dict(re.findall(r'<tr data-figure="(\w+)" class="(ok|over)"', page))
        assert rows["alarms"] == "ok" and rows["pct_time_in_flood"] == "over" and rows["chattering"] == "over"
        assert rows["alarms_per_hour"] == "ok"  # 12 in 2 hours
        assert 'href="/console/alarms/pump-x/fault"' in page  # the bad actor links to its history

    serve(eng, test)


def test_event_streams_wait_on_the_engine_changes_not_a_timer():
    """``Changes``: a waiter wakes on ``notify`` (a commit, a command, a sign-out), sees at once a
    change it missed, and otherwise only at its own deadline (keep-alive or session expiry)."""
    from aquavolt.rules.service import Changes

    async def main() -> None:
        ch = Changes()
        assert await ch.wait(-1, 60) == 0  # a change it has not seen: no wait at all
        waiting = asyncio.ensure_future(ch.wait(0, 60))
        await asyncio.sleep(0)
        assert not waiting.done()
        ch.notify()
        assert await waiting == 1
        assert await ch.wait(1, 0.01) == 1  # nothing new: back at the deadline, same version
        assert not ch._waiters

    asyncio.run(main())


def test_grafana_link_opens_the_shipped_dashboard_of_the_assets_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """``AQUAVOLT_GRAFANA_URL`` set to Grafana's address: each alarm links to the dashboard
    that shows its asset (water, electricity, gateways, the customer's own), over its time; the
    dashboards linked are the ones ``aquavolt dashboards build`` provisions."""
    import json
    from urllib.parse import parse_qs, urlsplit

    from aquavolt.config import load_field

    root = Path(__file__).resolve().parents[2]
    built = {json.loads(f.read_text())["uid"] for f in (root / "docker/grafana/dashboards").glob("*.json")}
    assert {v.split("/")[0] for v in console.DASHBOARDS.values()} <= built
    loaded = load_field(root / "examples/demo-town.yaml")
    boards = console.dashboard_of(loaded, console.places(loaded))
    monkeypatch.setenv(console.GRAFANA_ENV, "https://grafana.example:3000/")

    def link(asset: str) -> tuple[str, dict[str, list[str]]]:
        url = console.grafana_link(asset, 1000, 2000, boards)
        assert url is not None
        parts = urlsplit(url)
        assert parts.netloc == "grafana.example:3000"
        return parts.path, parse_qs(parts.query)

    assert link("pump-1") == ("/d/aquavolt-water/water", {"from": ["1000"], "to": ["2000"]})
    assert link("zone-a")[0] == "/d/aquavolt-water/water"
    assert link("tx-1b")[0] == link("feeder-1")[0] == "/d/aquavolt-electricity/electricity"
    assert link("gw-pumping")[0] == "/d/aquavolt-gateways/gateways"
    path, q = link("wm-c0001")
    assert path == "/d/aquavolt-customer/customer" and q["var-customer"] == ["wm-c0001|em-c0001"]
    assert link("c0001") == (path, q)
    assert link("not-in-the-field")[0] == "/d/aquavolt-alarms/alarms"
