"""Shared fixtures: real Mosquitto (plain, and TLS with passwords and an ACL) and a real
InfluxDB, started once per test session on free ports under a temporary folder; a leak
check that fails a test leaving threads behind.

A missing server binary fails the tests that need it (ServiceError): it never skips.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from aquavolt.harness.servers import InfluxDB, Mosquitto
from aquavolt.influx import Influx
from aquavolt.settings import InfluxSettings

# Property tests judge results, never speed: no per-example deadline and no "too slow" health
# check (a loaded CI machine once failed a codec round trip on hypothesis's 200 ms deadline).
settings.register_profile("aquavolt", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("aquavolt")

SECURE_USERS = {"edge-gw1": "gw1-secret", "collector": "collector-secret", "admin": "admin-secret"}
SECURE_ACL = """\
# gateways write only under their own branch and read their commands
pattern write aquavolt/v1/gw/%u/#
pattern read aquavolt/v1/gw/%u/+/+/cmd
user collector
topic read aquavolt/v1/#
user admin
topic readwrite #
"""


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def _mosquitto(servers_dir: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(servers_dir / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mosquitto(_mosquitto: Mosquitto) -> Mosquitto:
    """The session's plain broker, running (a test that stopped it gets it back)."""
    _mosquitto.resume()
    _mosquitto.start()
    return _mosquitto


@pytest.fixture(scope="session")
def _mosquitto_secure(servers_dir: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(servers_dir / "mosquitto-tls", tls=True, users=SECURE_USERS, acl=SECURE_ACL)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mosquitto_secure(_mosquitto_secure: Mosquitto) -> Mosquitto:
    """A TLS broker with passwords (SECURE_USERS) and an ACL (SECURE_ACL)."""
    _mosquitto_secure.start()
    return _mosquitto_secure


@pytest.fixture(scope="session")
def _influxdb(servers_dir: Path) -> Iterator[InfluxDB]:
    server = InfluxDB(servers_dir / "influxdb")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def influxdb(_influxdb: InfluxDB) -> InfluxDB:
    _influxdb.resume()
    _influxdb.start()
    return _influxdb


@pytest.fixture
def influx_settings(influxdb: InfluxDB) -> InfluxSettings:
    """A fresh, empty database for this test."""
    settings = influxdb.settings(f"t_{uuid.uuid4().hex[:12]}")
    Influx(settings).create_database()
    return settings


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix of this test's own, so tests never see each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}/v1"


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"test left threads running: {[t.name for t in leaked]}"
