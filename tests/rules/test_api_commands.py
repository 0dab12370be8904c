"""The operator API against a real engine process and a real Mosquitto: tokens (hashed,
Bearer only), roles, 400 for every bad value, and commands: issued by an operator whose
identity comes from the token, signed with the engine's key, never retained, stored with
the gateway's reply in the command log that ``GET /commands`` lists.

The gateway's reply is published here, on the gateway's reply topic, as an edge agent does:
tests/edge/test_commands.py runs the real agent on the same signed commands."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from aquavolt.harness.servers import Mosquitto, free_port
from aquavolt.mqtt import Recorder
from aquavolt.rules.cli import register
from aquavolt.signing import public_key_from_text, verify
from aquavolt.wire import Command, CommandOutcome, CommandReply, Topics, decode, encode

CASES = Path(__file__).parent / "cases"


def _cli(*args: str) -> str:
    """``aquavolt rules ARGS`` in this process (its parser, its function): what it prints."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    ns = parser.parse_args(["rules", *args])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert ns.func(ns) == 0
    return out.getvalue()


class Api:
    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             header: str | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, data=data)
        if header is not None:
            req.add_header("Authorization", header)
        elif token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def setup(tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str) -> Any:
    key = tmp_path / "command.pem"
    printed = _cli("keygen", str(key), "--issuer", "control-1")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = printed.strip().splitlines()[-1].split(": ")[1]
    tokens_file = tmp_path / "operators.yaml"
    tokens = {name: _cli("token", "add", name, role, "--file", str(tokens_file)).strip()
              for name, role in (("amina", "operator"), ("vera", "viewer"), ("eric", "engineer"))}
    assert not any(t in tokens_file.read_text() for t in tokens.values())  # digests only
    field = tmp_path / "field.yaml"
    field.write_text((CASES / "field.yaml").read_text().replace(
        "  poll_intervals_s: {default: 10.0, slow: 600.0}\n",
        "  poll_intervals_s: {default: 10.0, slow: 600.0}\n  writable_points: [pump-1.speed_setpoint_pct]\n",
        1) + "rules:\n  stale: {intervals: 100000}\n")
    port = free_port()
    log = open(tmp_path / "rules.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "aquavolt.cli", "rules", "run", str(field), "--state-dir", str(tmp_path / "st"),
         "--mqtt", f"{mosquitto.url()}?prefix={topic_prefix}", "--api-port", str(port), "--tokens",
         str(tokens_file), "--command-key", str(key), "--command-issuer", "control-1", "--tick-ms", "0"],
        stdout=log, stderr=log, env={**os.environ, "AQUAVOLT_CLOCK": "real"})
    api = Api(port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if api.call("GET", "/health")[1]["mqtt_connected"]:
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError((tmp_path / "rules.log").read_text()[-3000:])
    yield api, tokens, pub
    proc.terminate()
    assert proc.wait(15) == 0, (tmp_path / "rules.log").read_text()[-3000:]


def test_tokens_roles_and_bad_values(setup: Any) -> None:
    api, tokens, _pub = setup
    amina, vera = tokens["amina"], tokens["vera"]
    # Bearer is required, and only a known token
    for header in (None, amina, f"Basic {amina}", "Bearer", f"Token {amina}", f"Bearer {amina}x"):
        status, body = api.call("GET", "/alarms", header=header)
        assert status == 401 and body["error"], header
    assert api.call("GET", "/alarms", header=f"bearer {amina}")[0] == 200  # the scheme is case-insensitive
    # a viewer reads, and may not act
    assert api.call("GET", "/commands", token=vera)[0] == 200
    cmd = {"gateway": "gw-1", "device": "pump-1", "point": "speed_setpoint_pct", "value": 50}
    status, body = api.call("POST", "/commands", cmd, token=vera)
    assert status == 403 and "viewer" in body["error"]
    assert api.call("POST", "/ack", {"seen_seq": 0}, token=vera)[0] == 403
    # out of service is an engineer's decision
    assert api.call("POST", "/alarms/pump-1/fault/out-of-service", {"reason": "x"}, token=amina)[0] == 403
    # every bad value is a 400 with the reason, never a 500
    bad = [("POST", "/alarms/pump-1/fault/shelve", {"reason": "r", "duration_s": "inf"}, "duration_s"),
           ("POST", "/alarms/pump-1/fault/shelve", {"reason": "r", "duration_s": 1e300}, "duration_s"),
           ("POST", "/alarms/pump-1/fault/shelve", {"reason": "r", "until_ms": 10**30}, "until_ms"),
           ("POST", "/ack", {"seen_seq": "many"}, "seen_seq"),
           ("GET", "/events?since_ms=" + "9" * 40, None, "since_ms"),
           ("GET", "/events?limit=-1", None, "limit"),
           ("GET", "/events?limit=0", None, "limit"),
           ("GET", "/events?limit=1000000", None, "limit"),
           ("GET", "/actions?limit=-1", None, "limit"),
           ("GET", "/commands?limit=-1", None, "limit"),
           ("GET", "/performance?since_ms=-5", None, "since_ms"),
           ("POST", "/commands", {**cmd, "value": True}, "does not take true or false"),
           ("POST", "/commands", {**cmd, "value": 10}, "range 30"),
           ("POST", "/commands", {**cmd, "operator": "mallory"}, "operator"),
           ("POST", "/commands", {**cmd, "value": "50"}, "value"),
           ("POST", "/commands", {**cmd, "device": "pump-9"}, "pump-9"),
           ("POST", "/commands", {**cmd, "point": "run_command"}, "writable_points"),
           ("POST", "/commands", {k: v for k, v in cmd.items() if k != "gateway"}, "gateway")]
    for method, path, body, why in bad:
        status, answer = api.call(method, path, body, token=amina)
        assert status == 400 and why in answer["error"], (path, body, status, answer)
    status, answer = api.call("POST", "/commands", token=amina, raw=b'{"gateway": "gw-1", "value": NaN}')
    assert status == 400 and "NaN" in answer["error"]


def test_command_signed_published_and_logged(setup: Any, mosquitto: Mosquitto, topic_prefix: str) -> None:
    api, tokens, pub = setup
    t = Topics(topic_prefix)
    with Recorder(mosquitto.settings(), [t.command("gw-1", "+")], client_id=f"gw-{topic_prefix[:11]}") as rec:
        status, res = api.call("POST", "/commands", {"gateway": "gw-1", "device": "pump-1",
                                                     "point": "speed_setpoint_pct", "value": 60,
                                                     "reason": "night tariff"}, token=tokens["amina"])
        assert status == 202, res
        assert rec.wait_for(lambda ms: any(m.topic.endswith("/cmd") for m in ms), 10)
        msg = next(m for m in rec.snapshot() if m.topic.endswith("/cmd"))
        assert not msg.retain
        sent = decode(msg.payload, Command)
        # the engine named the operator from the token, the id and the time, and signed it
        assert (sent.id, sent.operator, sent.issuer, sent.reason, sent.value) == (
            res["id"], "amina", "control-1", "night tariff", 60)
        verify(sent, "gw-1", "pump-1", {"control-1": public_key_from_text(pub)})
        # the gateway answers; the engine keeps the answer
        reply = CommandReply(id=sent.id, gateway="gw-1", device="pump-1", point=sent.point,
                             outcome=CommandOutcome.DONE, reason="written and verified", value_read=60.0,
                             ts_ms=sent.ts_ms + 50)
        rec.client.publish(t.reply("gw-1", "pump-1"), encode(reply), qos=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            row = api.call("GET", "/commands", token=tokens["vera"])[1]["commands"][0]
            if row["outcome"] is not None:
                break
            time.sleep(0.05)
    assert (row["id"], row["operator"], row["outcome"], row["value_read"], row["published"]) == (
        sent.id, "amina", "done", 60.0, True)
    one = api.call("GET", f"/commands?id={sent.id}", token=tokens["vera"])[1]
    assert [r["outcome"] for r in one["replies"]] == ["done"]
    acts = api.call("GET", "/actions", token=tokens["vera"])[1]["actions"]
    assert (acts[0]["operator"], acts[0]["action"]) == ("amina", "command")


def test_plaintext_tokens_and_readable_keys_refused(tmp_path: Path) -> None:
    from aquavolt.errors import ConfigError
    from aquavolt.rules.http import load_tokens
    from aquavolt.signing import generate_key, load_private_key, write_private_key

    f = tmp_path / "operators.yaml"
    f.write_text("amina: amina-token-0123456789\nomar: {role: admin, sha256: ab}\n")
    with pytest.raises(ConfigError) as err:
        load_tokens(f)
    text = str(err.value)
    assert "plaintext token" in text and "admin" in text
    key = tmp_path / "k.pem"
    write_private_key(generate_key(), key)
    load_private_key(key)
    key.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_private_key(key)
