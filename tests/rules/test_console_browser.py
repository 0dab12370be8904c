"""The operator's console in a real headless Chromium (Debian's ``chromium``, driven over the
DevTools protocol with aiohttp's websocket client) against the real rules engine process on a
real Mosquitto: sign in, an alarm raised by a published reading appears without a reload (the
page follows server-sent events), acknowledging it in the page changes its state (and the
engine's), a POST without the CSRF token is refused, a viewer's acknowledgement is refused
(403), and signing out ends the session; shelve, comment, a command and its reply; the
Arabic page is right to left. Every wait is on the DOM or a browser event.

A missing browser fails the test: ``apt-get install chromium``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aquavolt.harness.servers import Mosquitto, free_port
from aquavolt.mqtt import Recorder, make_client
from aquavolt.signing import generate_key, write_private_key
from aquavolt.wire import (
    AlarmEvent,
    Batch,
    Command,
    CommandOutcome,
    CommandReply,
    GatewayStatus,
    Reading,
    Topics,
    decode,
    encode,
)

CASES = Path(__file__).parent / "cases"
FIELD_RULES = """
rules:
  discrete:
  - {profile: av_pump1, point: fault, priority: high, message: Pump tripped}
  stale: {intervals: 100000}
"""
TOKENS = {"amina": ("operator", "amina-token-0123456789abcdef"), "vera": ("viewer", "vera-token-0123456789abcdef")}
WAIT_S = 10.0


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is required for the console tests: apt-get install chromium"
    return path


class Page:
    """One browser tab over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.waiting:
                self.waiting.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.put_nowait(data)

    async def send(self, method: str, **params: Any) -> Any:
        i = next(self.ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[i] = fut
        await self.ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
        data = await asyncio.wait_for(fut, WAIT_S + 5)
        assert "error" not in data, data
        return data["result"]

    async def eval(self, expr: str) -> Any:
        res = await self.send("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in res, res["exceptionDetails"]
        return res["result"].get("value")

    async def wait(self, condition: str, timeout_s: float = WAIT_S) -> Any:
        """Resolves when the JS ``condition`` is truthy, re-checked on every DOM mutation."""
        js = f"""new Promise((resolve, reject) => {{
          const check = () => {{ try {{ const v = ({condition}); if (v) {{ obs.disconnect(); resolve(v); return true; }} }}
                                 catch (e) {{}} return false; }};
          const obs = new MutationObserver(check);
          if (check()) return;
          obs.observe(document, {{subtree: true, childList: true, attributes: true, characterData: true}});
          setTimeout(() => {{ obs.disconnect(); reject(new Error("timed out waiting for: " + {json.dumps(condition)}
                              + "\\n" + document.body.innerText)); }}, {int(timeout_s * 1000)});
        }})"""
        return await self.eval(js)

    async def loaded(self, action: str) -> None:
        """Run ``action`` (JS that navigates) and wait for the new page's load event."""
        while not self.events.empty():
            self.events.get_nowait()
        await self.eval(action)
        while True:
            ev = await asyncio.wait_for(self.events.get(), WAIT_S)
            if ev["method"] == "Page.loadEventFired":
                return

    async def goto(self, url: str) -> None:
        await self.loaded(f"location.assign({json.dumps(url)})")

    async def shot(self, name: str, width: int = 1280, height: int = 720, mobile: bool = False) -> None:
        """With ``$AQUAVOLT_CONSOLE_SHOTS`` set, a PNG of the page at that size into that folder
        (the README's screenshots come from this run); otherwise nothing."""
        folder = os.environ.get("AQUAVOLT_CONSOLE_SHOTS")
        if not folder:
            return
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=mobile)
        await self.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        png = await self.send("Page.captureScreenshot", format="png")
        _save(Path(folder) / f"{name}.png", base64.b64decode(png["data"]))
        await self.send("Emulation.clearDeviceMetricsOverride")


def launch(tmp: Path) -> subprocess.Popen[bytes]:
    """Headless Chromium on a fresh profile, its DevTools on a free port of 127.0.0.1."""
    return subprocess.Popen(
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={tmp / 'chromium'}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "chromium.log", "wb"))


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@contextlib.asynccontextmanager
async def browser(tmp: Path) -> Any:
    profile = tmp / "chromium"
    proc = launch(tmp)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp / "chromium.log").read_text()[-2000:]
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                tab = next(t for t in await r.json() if t["type"] == "page")
            async with http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.send("Page.enable")
                yield page
                page.reader.cancel()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def engine(tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str) -> Any:
    import hashlib

    (tmp_path / "operators.yaml").write_text("".join(
        f"{n}: {{role: {role}, sha256: {hashlib.sha256(tok.encode()).hexdigest()}}}\n"
        for n, (role, tok) in TOKENS.items()))
    field = tmp_path / "field.yaml"
    field.write_text((CASES / "field.yaml").read_text().replace(
        "  poll_intervals_s: {default: 10.0, slow: 600.0}\n",
        "  poll_intervals_s: {default: 10.0, slow: 600.0}\n"
        "  writable_points: [pump-1.run_command, pump-1.speed_setpoint_pct]\n", 1) + FIELD_RULES)
    key = tmp_path / "command.pem"
    write_private_key(generate_key(), key)
    port = free_port()
    log = open(tmp_path / "rules.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "aquavolt.cli", "rules", "run", str(field), "--state-dir", str(tmp_path / "st"),
         "--mqtt", f"{mosquitto.url()}?prefix={topic_prefix}", "--api-port", str(port),
         "--tokens", str(tmp_path / "operators.yaml"), "--tick-ms", "0", "--command-key", str(key),
         "--command-issuer", "control-1"],
        stdout=log, stderr=log, env={**os.environ, "AQUAVOLT_CLOCK": "real"})
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if json.loads(r.read())["mqtt_connected"]:
                    break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "rules.log").read_text()[-3000:]
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    assert proc.wait(15) == 0, (tmp_path / "rules.log").read_text()[-3000:]


def _api(base: str, path: str, token: str) -> Any:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


async def sign_in(page: Page, base: str, who: str) -> None:
    await page.goto(base + "/console/")
    assert await page.eval("location.pathname") == "/console/login"  # not signed in: sent to sign in
    await page.loaded(f"document.getElementById('token').value = {json.dumps(TOKENS[who][1])};"
                      "document.querySelector('form[action=\"/console/login\"]').submit()")
    await page.wait(f"document.querySelector('.who')?.textContent.startsWith('{who}')")
    # the session cookie is HttpOnly: the page's scripts cannot read it
    assert "av_session" not in await page.eval("document.cookie")


def _publisher(mosquitto: Mosquitto) -> Any:
    pub = make_client(mosquitto.settings(), f"pub-{time.monotonic_ns()}")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    return pub


def _fault(value: bool, ts: int, seq: int) -> bytes:
    return encode(Batch(gateway="gw-1", device="pump-1", seq=seq,
                        readings=[Reading(point="fault", value=value, ts_ms=ts)]))


ROW = "document.querySelector('tr[data-alarm=\"pump-1/fault\"]')"


def test_console_in_a_real_browser(engine: str, tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str) -> None:
    base = engine
    t = Topics(topic_prefix)
    pub = _publisher(mosquitto)

    async def run() -> None:
        async with browser(tmp_path) as page:
            await sign_in(page, base, "amina")
            await page.wait("document.getElementById('alarms').dataset.live === '1'")  # the stream is open
            assert await page.eval("document.querySelectorAll('#alarms tbody tr').length") == 0
            # a reading that raises an alarm: it appears in the open page, without a reload
            ts = 1_764_000_000_000
            batch = Batch(gateway="gw-1", device="pump-1", seq=1, readings=[Reading(point="fault", value=True, ts_ms=ts)])
            published = time.monotonic()
            pub.publish(t.data("gw-1", "pump-1"), encode(batch), qos=1)
            row = "document.querySelector('tr[data-alarm=\"pump-1/fault\"]')"
            await page.wait(f"{row}?.dataset.state === 'unack'")
            assert time.monotonic() - published < 2.0
            text = await page.eval(f"{row}.innerText")
            assert "Pump tripped" in text and "high" in text and "Unacknowledged" in text
            assert await page.eval("document.querySelector('[data-count=high]').textContent") == "1"
            await page.shot("alarms")
            await page.shot("alarms-phone", 390, 760, mobile=True)
            # a POST without the CSRF token, from the signed-in page itself, is refused
            status = await page.eval("fetch('/console/api/ack', {method: 'POST', headers: {'Content-Type': "
                                     "'application/json'}, body: JSON.stringify({seen_seq: 99})}).then(r => r.status)")
            assert status == 403
            assert _api(base, "/alarms", TOKENS["amina"][1])["alarms"][0]["state"] == "unack"
            # acknowledge it in the page: the state changes live, on MQTT and in the engine, by amina
            with Recorder(mosquitto.settings(), [t.alarm_events], f"rec-{topic_prefix[:11]}") as rec:
                await page.eval(f"{row}.querySelector('button.ack').click()")
                await page.wait(f"{row}?.dataset.state === 'acked'")

                def acked(msgs: list[Any]) -> bool:
                    return any((e.transition, e.by) == ("acknowledged", "amina")
                               for e in (decode(m.payload, AlarmEvent) for m in msgs))

                assert await asyncio.to_thread(rec.wait_for, acked, 10)
            assert _api(base, "/alarms", TOKENS["amina"][1])["alarms"][0]["state"] == "acked"
            events = _api(base, "/events?alarm_id=pump-1/fault", TOKENS["amina"][1])["events"]
            assert any(e["transition"] == "acknowledged" and e["by"] == "amina" for e in events)
            # its history shows who did what
            await page.loaded(f"{row}.querySelector('a[href*=\"/console/alarms/\"]').click()")
            await page.wait("[...document.querySelectorAll('#history td')].some(td => td.textContent === 'amina')")
            # sign out: back to sign-in, the session is gone
            await page.loaded("document.getElementById('logout').click()")
            assert await page.eval("location.pathname") == "/console/login"
            assert await page.eval("fetch('/console/api/alarms').then(r => r.status)") == 401
            # a viewer sees the alarm, has no button, and the server refuses an acknowledgement
            await sign_in(page, base, "vera")
            await page.wait(f"{row}?.dataset.state === 'acked'")
            assert await page.eval("document.querySelectorAll('button.ack, #ack-visible').length") == 0
            pub.publish(t.data("gw-1", "pump-1"), encode(batch.model_copy(update={
                "seq": 2, "readings": [Reading(point="fault", value=False, ts_ms=ts + 1000)]})), qos=1)
            await page.wait(f"!{row}")  # cleared while acknowledged: gone from the list, live
            status = await page.eval(
                "fetch('/console/api/ack', {method: 'POST', headers: {'Content-Type': 'application/json', "
                "'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}, "
                "body: JSON.stringify({seen_seq: 99})}).then(r => r.status)")
            assert status == 403
            # an incident folded: the gateway goes offline, then a point of its pump reports bad
            # quality; that alarm is suppressed by the gateway's and folded under it, shown on demand
            pub.publish(t.gateway_status("gw-1"), encode(GatewayStatus(
                gateway="gw-1", state="offline", bd_seq=0, ts_ms=ts + 2000)), qos=1)
            pub.publish(t.data("gw-1", "pump-1"), encode(batch.model_copy(update={"seq": 3, "readings": [
                Reading(point="fault", value=None, quality="bad", ts_ms=ts + 3000)]})), qos=1)
            parent = "document.querySelector('tr[data-alarm=\"gw-1/gateway_offline\"]')"
            child = "document.querySelector('tr[data-alarm=\"pump-1/bad_quality\"]')"
            await page.wait(f"{child}?.dataset.parent === 'gw-1/gateway_offline' && {child}.hidden"
                            f" && {parent}.querySelector('button.fold')")
            await page.eval(f"{parent}.querySelector('button.fold').click()")
            await page.wait(f"!{child}.hidden && {parent}.querySelector('button.fold')"
                            ".getAttribute('aria-expanded') === 'true'")

    try:
        asyncio.run(run())
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_shelve_comment_and_command_in_a_real_browser(engine: str, tmp_path: Path, mosquitto: Mosquitto,
                                                      topic_prefix: str) -> None:
    base = engine
    t = Topics(topic_prefix)
    pub = _publisher(mosquitto)
    amina = TOKENS["amina"][1]

    async def run() -> None:
        async with browser(tmp_path) as page:
            await sign_in(page, base, "amina")
            await page.wait("document.getElementById('alarms').dataset.live === '1'")
            pub.publish(t.data("gw-1", "pump-1"), _fault(True, 1_764_000_000_000, 1), qos=1)
            await page.wait(f"{ROW}?.dataset.state === 'unack'")
            # shelve it with a reason and an expiry: it leaves the list (shown on demand)
            await page.eval(f"{ROW}.querySelector('button.shelve').click()")
            await page.wait("document.getElementById('shelve-dialog').open")
            await page.eval("document.getElementById('shelve-reason').value = 'sensor being replaced';"
                            "document.getElementById('shelve-hours').value = '2';"
                            "document.getElementById('shelve-ok').click()")
            await page.wait(f"{ROW}?.dataset.state === 'shelved' && {ROW}.hidden")
            alarm = _api(base, "/alarms", amina)["alarms"][0]
            assert (alarm["state"], alarm["shelved_by"], alarm["shelve_reason"]) == (
                "shelved", "amina", "sensor being replaced")
            assert 7190_000 <= alarm["shelved_until_ms"] - alarm["last_change_ms"] <= 7210_000
            await page.eval("document.getElementById('show-hidden').click()")
            await page.wait(f"!{ROW}.hidden && {ROW}.innerText.includes('sensor being replaced')")
            await page.eval(f"{ROW}.querySelector('button.unshelve').click()")
            await page.wait(f"{ROW}?.dataset.state === 'unack'")  # back, annunciated again
            # a shelve's expiry brings the alarm back into the open page (1 s, through the console's API)
            status = await page.eval(
                "fetch('/console/api/alarms/pump-1/fault/shelve', {method: 'POST', headers: {'Content-Type': "
                "'application/json', 'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}, "
                "body: JSON.stringify({reason: 'short', duration_s: 1})}).then(r => r.status)")
            assert status == 200
            await page.wait(f"{ROW}?.dataset.state === 'shelved'")
            await page.wait(f"{ROW}?.dataset.state === 'unack' && !{ROW}.hidden")
            # a comment, and the alarm's history with who did what
            await page.loaded(f"{ROW}.querySelector('a[href*=\"/console/alarms/\"]').click()")
            await page.loaded("document.getElementById('comment-text').value = 'crew on site';"
                              "document.querySelector('#comment-form button').click()")
            history = await page.wait("document.getElementById('history').innerText.includes('crew on site')"
                                      " && document.getElementById('history').innerText")
            for what in ("shelved", "unshelved", "commented", "amina", "sensor being replaced"):
                assert what in history, (what, history)
            await page.shot("history")
            # a command: confirmed with the current value, its reply shown from the command log
            with Recorder(mosquitto.settings(), [t.command("gw-1", "+")], client_id=f"gw-{topic_prefix[:11]}") as rec:
                await page.goto(base + "/console/commands")
                card = "document.querySelector('[data-command=\"gw-1/pump-1/speed_setpoint_pct\"]')"
                await page.eval(f"{card}.querySelector('input').value = '60';"
                                f"{card}.querySelector('button[data-value=input]').click()")
                text = await page.wait("document.getElementById('confirm-dialog').open"
                                       " && document.getElementById('confirm-text').textContent")
                assert "speed_setpoint_pct" in text and "now unknown" in text and "60" in text
                await page.eval("document.getElementById('confirm-reason').value = 'night tariff';"
                                "document.getElementById('confirm-ok').click()")
                await page.wait("document.getElementById('status').textContent.includes('sent')")
                assert await asyncio.to_thread(
                    rec.wait_for, lambda ms: any(m.topic.endswith("/cmd") for m in ms), 10)
                sent = decode(next(m for m in rec.snapshot() if m.topic.endswith("/cmd")).payload, Command)
                assert (sent.operator, sent.value, sent.reason) == ("amina", 60, "night tariff")
                await page.wait("document.querySelector('#command-log tbody tr .outcome')?.textContent === 'waiting'")
                # the gateway answers (tests/edge/test_commands.py runs the real agent on such commands)
                reply = CommandReply(id=sent.id, gateway="gw-1", device="pump-1", point=sent.point,
                                     outcome=CommandOutcome.DONE, reason="written and verified",
                                     value_read=60.0, ts_ms=sent.ts_ms + 50)
                rec.client.publish(t.reply("gw-1", "pump-1"), encode(reply), qos=1)
                await page.wait("document.querySelector('#command-log tbody tr .outcome')?.textContent === 'done'"
                                " && document.querySelector('#command-log tbody tr .why').textContent"
                                " === 'written and verified'")
                await page.wait(f"{card}.querySelector('.current').textContent === '60'")
                await page.shot("commands")
            # in Arabic, right to left, by the operator's choice (kept for the next pages); French too
            await page.goto(base + "/console/?lang=ar")
            assert await page.eval("[document.documentElement.lang, document.documentElement.dir,"
                                   " getComputedStyle(document.body).direction]") == ["ar", "rtl", "rtl"]
            await page.wait(f"document.querySelector('h1').textContent === 'الإنذارات' && {ROW}"
                            "?.innerText.includes('غير مُقَرّ بها')")  # the live row, translated by the script
            await page.shot("alarms-ar")
            await page.goto(base + "/console/commands")
            assert await page.eval("document.documentElement.dir") == "rtl"
            await page.goto(base + "/console/?lang=fr")
            await page.wait(f"document.documentElement.dir === 'ltr' && {ROW}?.innerText.includes('Non acquittée')")
            # acknowledge what is shown: the visible unacknowledged alarms, as of the list's seq
            await page.eval("document.getElementById('ack-visible').click()")
            await page.wait(f"{ROW}?.dataset.state === 'acked'"
                            " && document.getElementById('status').textContent === '1 acquittée(s)'")

    try:
        asyncio.run(run())
    finally:
        pub.loop_stop()
        pub.disconnect()
