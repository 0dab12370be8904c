"""Secrets stay out of logs, errors and command lines: URL redaction (one kernel helper, used by
every log line) and broker passwords from a file or the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from aquavolt.harness.servers import free_port
from aquavolt.settings import InfluxSettings, MqttSettings, redact

ROOT = Path(__file__).parents[2]
SECRET = "Top-Secret-42"


def test_redact_urls_in_any_text() -> None:
    text = (f"mqtt://gw-a:{SECRET}@broker:8883?ca=/etc/ca.pem failed; "
            f"http://admin:{SECRET}@influx:8086/db?rp=x&token={SECRET}; opc.tcp://127.0.0.1:4840/rtu")
    out = redact(text)
    assert SECRET not in out
    assert "mqtt://gw-a:***@broker:8883?ca=/etc/ca.pem" in out
    assert "http://admin:***@influx:8086/db?rp=x&token=***" in out
    assert out.endswith("opc.tcp://127.0.0.1:4840/rtu")
    assert redact("mqtt://gw@broker:1883") == "mqtt://gw@broker:1883"


def test_bad_url_error_does_not_show_the_password() -> None:
    with pytest.raises(ValueError) as exc:
        MqttSettings.from_url(f"http://gw:{SECRET}@broker:1883")
    assert SECRET not in str(exc.value) and "gw:***@broker" in str(exc.value)
    with pytest.raises(ValueError) as exc:
        InfluxSettings.from_url(f"ftp://u:{SECRET}@influx:8086")
    assert SECRET not in str(exc.value)


def test_broker_password_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = tmp_path / "mqtt-password"
    pw.write_text(SECRET + "\n")
    assert MqttSettings.from_url(f"mqtt://gw@broker:1883?password_file={pw}").password == SECRET
    monkeypatch.setenv("AQUAVOLT_MQTT_PASSWORD_FILE", str(pw))
    assert MqttSettings.from_url("mqtt://gw@broker:1883").password == SECRET
    monkeypatch.setenv("AQUAVOLT_MQTT_PASSWORD", "from-env")
    assert MqttSettings.from_url("mqtt://gw@broker:1883").password == "from-env"
    assert MqttSettings.from_url("mqtt://gw:in-url@broker:1883").password == "in-url"
    assert MqttSettings.from_env(None).password == "from-env"
    monkeypatch.setenv("AQUAVOLT_INFLUX_PASSWORD", "influx-env")
    assert InfluxSettings.from_url("http://u@influx:8086/db").password == "influx-env"
    with pytest.raises(ValueError, match="cannot read the password file"):
        MqttSettings.from_url(f"mqtt://gw@broker:1883?password_file={tmp_path / 'none'}")


def test_unreachable_broker_error_line_is_redacted(tmp_path: Path) -> None:
    gw = tmp_path / "gw.yaml"
    gw.write_text(f"""id: gw-redact
site: s1
poll_intervals_s: {{default: 1.0}}
buses: [{{kind: modbus_tcp, id: plc, port: {free_port()}, timeout_s: 0.2}}]
devices: [{{id: lvl, profile: av_level1, bus: plc, unit_id: 1}}]
""")
    url = f"mqtt://gw-redact:{SECRET}@127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "aquavolt.cli", "edge", "run", str(gw), "--state-dir",
                             str(tmp_path / "state"), "--mqtt", url], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "unreachable" in line and "mqtt" in line:
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert found.wait(20), "".join(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        reader.join(5)
    text = "".join(lines)
    assert SECRET not in text
    line = next(ln for ln in lines if "unreachable" in ln)
    assert "mqtt://gw-redact:***@127.0.0.1:" in line, line

