"""The operator's console in a real headless Chromium (Debian's ``chromium``, driven by
Playwright for Python with ``executable_path``: no browser is downloaded) against the real
rules engine process on a real Mosquitto: sign in, an alarm raised by a published reading
appears without a reload (the page follows server-sent events), acknowledging it in the
page changes its state (and the engine's), a POST without the CSRF token is refused, a
viewer's acknowledgement is refused (403), and signing out ends the session; shelve,
comment, a command and its reply; the Arabic page is right to left. Every wait is on the
DOM (re-checked on every animation frame) or a browser event, never a fixed sleep.

The engine runs as a subprocess, so the test body drives the browser with Playwright's
sync API (no asyncio loop runs here). A missing browser or Playwright fails the test:
``apt-get install chromium`` and ``pip install playwright`` (the ``dev`` extra)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright

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
# the flags Chromium runs with: headless on a fresh profile (Playwright's own), no sandbox
# (containers), no GPU, nothing fetched in the background
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-default-apps", "--disable-sync"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is required for the console tests: apt-get install chromium"
    return path


def wait(page: Page, condition: str, timeout_s: float = WAIT_S) -> Any:
    """The value of the JS ``condition`` once it is truthy, re-checked on every animation
    frame; on a timeout, the page's text in the failure."""
    try:
        return page.wait_for_function(f"() => ({condition})", polling="raf", timeout=timeout_s * 1000).json_value()
    except PlaywrightError as e:
        with contextlib.suppress(PlaywrightError):
            e.add_note(page.inner_text("body"))
        raise


@contextlib.contextmanager
def loaded(page: Page) -> Iterator[None]:
    """Wait, after the block's action (a click that navigates), for the new page's load event."""
    with page.expect_navigation(wait_until="load", timeout=WAIT_S * 1000):
        yield


def shot(page: Page, name: str, width: int = 1280, height: int = 720) -> None:
    """With ``$AQUAVOLT_CONSOLE_SHOTS`` set, a PNG of the page at that size into that folder
    (the README's screenshots come from this run); otherwise nothing."""
    folder = os.environ.get("AQUAVOLT_CONSOLE_SHOTS")
    if not folder:
        return
    size = page.viewport_size
    page.set_viewport_size({"width": width, "height": height})
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    Path(folder).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=Path(folder) / f"{name}.png")
    if size:
        page.set_viewport_size(size)


@contextlib.contextmanager
def browser(tmp: Path) -> Iterator[Page]:
    """One tab of Debian's headless Chromium, launched by Playwright (``executable_path``)."""
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True,
                                    timeout=30_000)
        try:
            page = chrome.new_page(viewport={"width": 1280, "height": 720})
            page.set_default_timeout(WAIT_S * 1000)
            yield page
        finally:
            chrome.close()


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


def sign_in(page: Page, base: str, who: str) -> None:
    page.goto(base + "/console/")
    assert page.evaluate("location.pathname") == "/console/login"  # not signed in: sent to sign in
    page.fill("#token", TOKENS[who][1])
    with loaded(page):
        page.evaluate("document.querySelector('form[action=\"/console/login\"]').submit()")
    wait(page, f"document.querySelector('.who')?.textContent.startsWith('{who}')")
    # the session cookie is HttpOnly: the page's scripts cannot read it
    assert "av_session" not in page.evaluate("document.cookie")


def _publisher(mosquitto: Mosquitto) -> Any:
    pub = make_client(mosquitto.settings(), f"pub-{time.monotonic_ns()}")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    return pub


def _fault(value: bool, ts: int, seq: int) -> bytes:
    return encode(Batch(gateway="gw-1", device="pump-1", seq=seq,
                        readings=[Reading(point="fault", value=value, ts_ms=ts)]))


ROW = "document.querySelector('tr[data-alarm=\"pump-1/fault\"]')"
ROW_CSS = 'tr[data-alarm="pump-1/fault"]'


def test_console_in_a_real_browser(engine: str, tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str) -> None:
    base = engine
    t = Topics(topic_prefix)
    pub = _publisher(mosquitto)
    try:
        with browser(tmp_path) as page:
            sign_in(page, base, "amina")
            wait(page, "document.getElementById('alarms').dataset.live === '1'")  # the stream is open
            assert page.evaluate("document.querySelectorAll('#alarms tbody tr').length") == 0
            # a reading that raises an alarm: it appears in the open page, without a reload
            ts = 1_764_000_000_000
            batch = Batch(gateway="gw-1", device="pump-1", seq=1, readings=[Reading(point="fault", value=True, ts_ms=ts)])
            published = time.monotonic()
            pub.publish(t.data("gw-1", "pump-1"), encode(batch), qos=1)
            row = ROW
            wait(page, f"{row}?.dataset.state === 'unack'")
            assert time.monotonic() - published < 2.0
            text = page.inner_text(ROW_CSS)
            assert "Pump tripped" in text and "high" in text and "Unacknowledged" in text
            assert page.text_content("[data-count=high]") == "1"
            shot(page, "alarms")
            shot(page, "alarms-phone", 390, 760)
            # a POST without the CSRF token, from the signed-in page itself, is refused
            status = page.evaluate("fetch('/console/api/ack', {method: 'POST', headers: {'Content-Type': "
                                   "'application/json'}, body: JSON.stringify({seen_seq: 99})}).then(r => r.status)")
            assert status == 403
            assert _api(base, "/alarms", TOKENS["amina"][1])["alarms"][0]["state"] == "unack"
            # acknowledge it in the page: the state changes live, on MQTT and in the engine, by amina
            with Recorder(mosquitto.settings(), [t.alarm_events], f"rec-{topic_prefix[:11]}") as rec:
                page.click(f"{ROW_CSS} button.ack")
                wait(page, f"{row}?.dataset.state === 'acked'")

                def acked(msgs: list[Any]) -> bool:
                    return any((e.transition, e.by) == ("acknowledged", "amina")
                               for e in (decode(m.payload, AlarmEvent) for m in msgs))

                assert rec.wait_for(acked, 10)
            assert _api(base, "/alarms", TOKENS["amina"][1])["alarms"][0]["state"] == "acked"
            events = _api(base, "/events?alarm_id=pump-1/fault", TOKENS["amina"][1])["events"]
            assert any(e["transition"] == "acknowledged" and e["by"] == "amina" for e in events)
            # its history shows who did what
            with loaded(page):
                page.click(f'{ROW_CSS} a[href*="/console/alarms/"]')
            wait(page, "[...document.querySelectorAll('#history td')].some(td => td.textContent === 'amina')")
            # sign out: back to sign-in, the session is gone
            with loaded(page):
                page.click("#logout")
            assert page.evaluate("location.pathname") == "/console/login"
            assert page.evaluate("fetch('/console/api/alarms').then(r => r.status)") == 401
            # a viewer sees the alarm, has no button, and the server refuses an acknowledgement
            sign_in(page, base, "vera")
            wait(page, f"{row}?.dataset.state === 'acked'")
            assert page.locator("button.ack, #ack-visible").count() == 0
            pub.publish(t.data("gw-1", "pump-1"), encode(batch.model_copy(update={
                "seq": 2, "readings": [Reading(point="fault", value=False, ts_ms=ts + 1000)]})), qos=1)
            wait(page, f"!{row}")  # cleared while acknowledged: gone from the list, live
            status = page.evaluate(
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
            wait(page, f"{child}?.dataset.parent === 'gw-1/gateway_offline' && {child}.hidden"
                       f" && {parent}.querySelector('button.fold')")
            page.click('tr[data-alarm="gw-1/gateway_offline"] button.fold')
            wait(page, f"!{child}.hidden && {parent}.querySelector('button.fold')"
                       ".getAttribute('aria-expanded') === 'true'")
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_shelve_comment_and_command_in_a_real_browser(engine: str, tmp_path: Path, mosquitto: Mosquitto,
                                                      topic_prefix: str) -> None:
    base = engine
    t = Topics(topic_prefix)
    pub = _publisher(mosquitto)
    amina = TOKENS["amina"][1]
    try:
        with browser(tmp_path) as page:
            sign_in(page, base, "amina")
            wait(page, "document.getElementById('alarms').dataset.live === '1'")
            pub.publish(t.data("gw-1", "pump-1"), _fault(True, 1_764_000_000_000, 1), qos=1)
            wait(page, f"{ROW}?.dataset.state === 'unack'")
            # shelve it with a reason and an expiry: it leaves the list (shown on demand)
            page.click(f"{ROW_CSS} button.shelve")
            wait(page, "document.getElementById('shelve-dialog').open")
            page.fill("#shelve-reason", "sensor being replaced")
            page.fill("#shelve-hours", "2")
            page.click("#shelve-ok")
            wait(page, f"{ROW}?.dataset.state === 'shelved' && {ROW}.hidden")
            alarm = _api(base, "/alarms", amina)["alarms"][0]
            assert (alarm["state"], alarm["shelved_by"], alarm["shelve_reason"]) == (
                "shelved", "amina", "sensor being replaced")
            assert 7190_000 <= alarm["shelved_until_ms"] - alarm["last_change_ms"] <= 7210_000
            page.click("#show-hidden")
            wait(page, f"!{ROW}.hidden && {ROW}.innerText.includes('sensor being replaced')")
            page.click(f"{ROW_CSS} button.unshelve")
            wait(page, f"{ROW}?.dataset.state === 'unack'")  # back, annunciated again
            # a shelve's expiry brings the alarm back into the open page (1 s, through the console's API)
            status = page.evaluate(
                "fetch('/console/api/alarms/pump-1/fault/shelve', {method: 'POST', headers: {'Content-Type': "
                "'application/json', 'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}, "
                "body: JSON.stringify({reason: 'short', duration_s: 1})}).then(r => r.status)")
            assert status == 200
            wait(page, f"{ROW}?.dataset.state === 'shelved'")
            wait(page, f"{ROW}?.dataset.state === 'unack' && !{ROW}.hidden")
            # a comment, and the alarm's history with who did what
            with loaded(page):
                page.click(f'{ROW_CSS} a[href*="/console/alarms/"]')
            page.fill("#comment-text", "crew on site")
            with loaded(page):
                page.click("#comment-form button")
            history = wait(page, "document.getElementById('history').innerText.includes('crew on site')"
                                 " && document.getElementById('history').innerText")
            for what in ("shelved", "unshelved", "commented", "amina", "sensor being replaced"):
                assert what in history, (what, history)
            shot(page, "history")
            # a command: confirmed with the current value, its reply shown from the command log
            with Recorder(mosquitto.settings(), [t.command("gw-1", "+")], client_id=f"gw-{topic_prefix[:11]}") as rec:
                page.goto(base + "/console/commands")
                card = "document.querySelector('[data-command=\"gw-1/pump-1/speed_setpoint_pct\"]')"
                card_css = '[data-command="gw-1/pump-1/speed_setpoint_pct"]'
                page.fill(f"{card_css} input", "60")
                page.click(f"{card_css} button[data-value=input]")
                text = wait(page, "document.getElementById('confirm-dialog').open"
                                  " && document.getElementById('confirm-text').textContent")
                assert "speed_setpoint_pct" in text and "now unknown" in text and "60" in text
                page.fill("#confirm-reason", "night tariff")
                page.click("#confirm-ok")
                wait(page, "document.getElementById('status').textContent.includes('sent')")
                assert rec.wait_for(lambda ms: any(m.topic.endswith("/cmd") for m in ms), 10)
                sent = decode(next(m for m in rec.snapshot() if m.topic.endswith("/cmd")).payload, Command)
                assert (sent.operator, sent.value, sent.reason) == ("amina", 60, "night tariff")
                wait(page, "document.querySelector('#command-log tbody tr .outcome')?.textContent === 'waiting'")
                # the gateway answers (tests/edge/test_commands.py runs the real agent on such commands)
                reply = CommandReply(id=sent.id, gateway="gw-1", device="pump-1", point=sent.point,
                                     outcome=CommandOutcome.DONE, reason="written and verified",
                                     value_read=60.0, ts_ms=sent.ts_ms + 50)
                rec.client.publish(t.reply("gw-1", "pump-1"), encode(reply), qos=1)
                wait(page, "document.querySelector('#command-log tbody tr .outcome')?.textContent === 'done'"
                           " && document.querySelector('#command-log tbody tr .why').textContent"
                           " === 'written and verified'")
                wait(page, f"{card}.querySelector('.current').textContent === '60'")
                shot(page, "commands")
            # in Arabic, right to left, by the operator's choice (kept for the next pages); French too
            page.goto(base + "/console/?lang=ar")
            assert page.evaluate("[document.documentElement.lang, document.documentElement.dir,"
                                 " getComputedStyle(document.body).direction]") == ["ar", "rtl", "rtl"]
            wait(page, f"document.querySelector('h1').textContent === 'الإنذارات' && {ROW}"
                       "?.innerText.includes('غير مُقَرّ بها')")  # the live row, translated by the script
            shot(page, "alarms-ar")
            page.goto(base + "/console/commands")
            assert page.evaluate("document.documentElement.dir") == "rtl"
            page.goto(base + "/console/?lang=fr")
            wait(page, f"document.documentElement.dir === 'ltr' && {ROW}?.innerText.includes('Non acquittée')")
            # acknowledge what is shown: the visible unacknowledged alarms, as of the list's seq
            page.click("#ack-visible")
            wait(page, f"{ROW}?.dataset.state === 'acked'"
                       " && document.getElementById('status').textContent === '1 acquittée(s)'")
    finally:
        pub.loop_stop()
        pub.disconnect()
