"""The operator API carries operators' tokens: over HTTPS (certificates a strict verifier
accepts) and never in plain HTTP on an address other than loopback, unless asked for
(behind a TLS proxy). Real engine process, real Mosquitto."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from aquavolt.harness.servers import Mosquitto, free_port
from aquavolt.pki import make_ca, make_cert

CASES = Path(__file__).parent / "cases"


def _rules(tmp_path: Path, mosquitto: Mosquitto, prefix: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "aquavolt.cli", "rules", "run", str(CASES / "field.yaml"),
            "--state-dir", str(tmp_path / "st"), "--mqtt", f"{mosquitto.url()}?prefix={prefix}",
            "--tick-ms", "0", *extra]


def test_plain_http_on_a_public_address_is_refused(tmp_path: Path, mosquitto: Mosquitto,
                                                   topic_prefix: str) -> None:
    done = subprocess.run(_rules(tmp_path, mosquitto, topic_prefix, "--api-host", "0.0.0.0",
                                 "--api-port", str(free_port())),
                          check=False, capture_output=True, text=True, timeout=60, env={**os.environ, "AQUAVOLT_CLOCK": "real"})
    assert done.returncode != 0
    err = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert any("--api-tls-cert" in line and "0.0.0.0" in line for line in err), done.stderr


@pytest.mark.parametrize("half", ["--api-tls-cert", "--api-tls-key"])
def test_half_a_tls_configuration_is_refused(tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str,
                                             half: str) -> None:
    done = subprocess.run(_rules(tmp_path, mosquitto, topic_prefix, half, str(tmp_path / "x.pem")),
                          check=False, capture_output=True, text=True, timeout=60, env={**os.environ, "AQUAVOLT_CLOCK": "real"})
    assert done.returncode != 0 and "give both" in done.stderr and "Traceback" not in done.stderr


def test_api_over_https_with_a_strictly_valid_certificate(tmp_path: Path, mosquitto: Mosquitto,
                                                          topic_prefix: str) -> None:
    ca = make_ca(tmp_path / "ca")
    cert = make_cert(ca, tmp_path / "api", "api")
    port = free_port()
    log = open(tmp_path / "rules.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(_rules(tmp_path, mosquitto, topic_prefix, "--api-port", str(port),
                                   "--api-tls-cert", str(cert.cert), "--api-tls-key", str(cert.key)),
                            stdout=log, stderr=log, env={**os.environ, "AQUAVOLT_CLOCK": "real"})
    try:
        ctx = ssl.create_default_context(cafile=str(ca.cert))
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=ctx, timeout=5) as r:
                    body = json.loads(r.read())
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert body is not None, (tmp_path / "rules.log").read_text()[-3000:]
        assert "mqtt_connected" in body
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP on the TLS port: no answer
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, (tmp_path / "rules.log").read_text()[-3000:]
