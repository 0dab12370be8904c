"""Trust in OPC-UA servers, against real asyncua servers with their own self-signed
certificates: an unknown certificate is refused before the password leaves the gateway, a
pinned one (file or fingerprint) is accepted, trust on first use records and then enforces,
and a password is never sent without security."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from conftest import OPCUA_PROFILES
from cryptography.x509.oid import ExtendedKeyUsageOID
from opcua_peer import OpcuaPeer, Users

from aquavolt.edge.drivers import LinkState
from aquavolt.edge.drivers.opcua import OpcuaDriver
from aquavolt.edge.drivers.opcua_trust import certificate_der, fingerprint
from aquavolt.errors import DeviceError
from aquavolt.field import Device, OpcuaBus
from aquavolt.harness.servers import free_port

PROF = OPCUA_PROFILES["av_rtu_transformer"]
DEVICE = Device(id="tr1", profile="av_rtu_transformer", bus="rtu", node_prefix="SS1.TR1")
SECURE = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt",
          "username": "edge", "password": "s3cret"}


class RecordingUsers(Users):
    """The server's user manager, remembering every password it was sent."""

    def __init__(self, users: dict[str, str]) -> None:
        super().__init__(users)
        self.passwords: list[str | None] = []

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        if username is not None:
            self.passwords.append(password)
        return super().get_user(iserver, username, password, certificate)


def _peer(workdir: Path, port: int | None = None) -> tuple[OpcuaPeer, RecordingUsers]:
    workdir.mkdir(parents=True, exist_ok=True)
    peer = OpcuaPeer([("SS1.TR1", PROF)], port or free_port(), workdir, users={"edge": "s3cret"})
    users = RecordingUsers({"edge": "s3cret"})
    assert peer.server is not None
    peer.server.iserver.user_manager = users  # type: ignore[assignment]
    return peer, users


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpcuaPeer, RecordingUsers, Path]]:
    """One server for the tests that do not restart it; its users' record is emptied per test."""
    folder = tmp_path_factory.mktemp("ua-server")
    peer, users = _peer(folder)
    yield peer, users, folder / "server-cert.der"
    peer.close()


@pytest.fixture
def shared(server: tuple[OpcuaPeer, RecordingUsers, Path]) -> tuple[OpcuaPeer, RecordingUsers, Path]:
    server[1].passwords.clear()
    return server


def _other_certificate(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "other-cert.der", folder / "other-key.pem"
    asyncio.run(setup_self_signed_certificate(key, cert, "urn:aquavolt:test:other", socket.gethostname(),
                                              [ExtendedKeyUsageOID.SERVER_AUTH], {"organizationName": "other"}))
    return cert


def _driver(peer: OpcuaPeer, state: Path, **bus: Any) -> OpcuaDriver:
    b = OpcuaBus.model_validate({"kind": "opcua", "id": "rtu", "endpoint": peer.endpoint, "timeout_s": 2.0,
                                 **bus})
    return OpcuaDriver(b, {PROF.id: PROF}, [DEVICE], "gw-test", state)


async def _settle(drv: OpcuaDriver, timeout_s: float = 15.0) -> None:
    """Until the driver is connected, or refused (an attempt that ended in a refusal)."""
    await drv.start()
    async with asyncio.timeout(timeout_s):
        while not (drv.state is LinkState.CONNECTED or drv.state is LinkState.REFUSED
                   or (drv.refused is not None and drv.state is LinkState.BACKOFF)):
            await drv.state_changed.wait()


def _run(drv: OpcuaDriver) -> tuple[LinkState, str | None, object]:
    async def main() -> tuple[LinkState, str | None, object]:
        try:
            await _settle(drv)
            state, why = drv.state, drv.refused
            try:
                got: object = (await drv.read(DEVICE, "default", list(PROF.points)))["oil_temperature_c"]
            except DeviceError as exc:
                got = exc
            return state, why, got
        finally:
            await drv.close()

    return asyncio.run(main())


def test_unknown_server_certificate_is_refused_before_the_password_is_sent(tmp_path: Path, shared) -> None:
    peer, users, cert = shared
    other = _other_certificate(tmp_path / "other")
    presented = fingerprint(certificate_der(cert))
    state, why, got = _run(_driver(peer, tmp_path / "state", server_certificates=[str(other)], **SECURE))
    assert state is LinkState.BACKOFF
    assert why is not None and "untrusted server certificate" in why
    assert presented in why and "tr1" in why and "rtu" in why, why
    assert isinstance(got, DeviceError) and presented in got.reason
    assert users.passwords == []  # the server never saw the password


def test_pinned_certificate_by_file_or_fingerprint_is_accepted(tmp_path: Path, shared) -> None:
    peer, users, cert = shared
    state, why, got = _run(_driver(peer, tmp_path / "s1", server_certificates=[str(cert)], **SECURE))
    assert (state, why) == (LinkState.CONNECTED, None)
    assert isinstance(got, float)
    fp = fingerprint(certificate_der(cert))
    state, why, got = _run(_driver(peer, tmp_path / "s2", server_fingerprints=[fp.lower().replace(":", "")],
                                   **SECURE))
    assert (state, why) == (LinkState.CONNECTED, None)
    assert users.passwords and set(users.passwords) == {"s3cret"}


def test_trust_on_first_use_records_then_enforces(tmp_path: Path, peers,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    peer, _ = _peer(tmp_path / "server", port)
    peers.append(peer)
    state_dir = tmp_path / "state"
    first = fingerprint(certificate_der(tmp_path / "server" / "server-cert.der"))
    with caplog.at_level(logging.WARNING, "aquavolt.edge.opcua"):
        state, why, _ = _run(_driver(peer, state_dir, trust_on_first_use=True, **SECURE))
    assert (state, why) == (LinkState.CONNECTED, None)
    recorded = state_dir / "opcua" / "trusted" / "rtu.der"
    assert fingerprint(recorded.read_bytes()) == first
    assert any(first in r.getMessage() and "first use" in r.getMessage() for r in caplog.records)
    # the same server again: accepted without a new record
    state, why, _ = _run(_driver(peer, state_dir, trust_on_first_use=True, **SECURE))
    assert (state, why) == (LinkState.CONNECTED, None)
    # another server (another certificate) on the same endpoint: refused
    peer.stop()
    impostor, users = _peer(tmp_path / "impostor", port)
    peers.append(impostor)
    state, why, _ = _run(_driver(impostor, state_dir, trust_on_first_use=True, **SECURE))
    assert state is LinkState.BACKOFF and why is not None
    assert fingerprint(certificate_der(tmp_path / "impostor" / "server-cert.der")) in why
    assert str(recorded) in why
    assert users.passwords == []
    assert fingerprint(recorded.read_bytes()) == first  # the record is kept


def test_secure_bus_without_any_trusted_certificate_is_refused(tmp_path: Path, shared) -> None:
    peer, users, _ = shared
    state, why, _ = _run(_driver(peer, tmp_path / "state", **SECURE))
    assert state is LinkState.BACKOFF and why is not None and "no trusted server certificate" in why
    assert users.passwords == []


def test_password_without_security_is_refused_by_the_driver(tmp_path: Path, shared) -> None:
    peer, users, _ = shared
    state, why, got = _run(_driver(peer, tmp_path / "state", username="edge", password="s3cret"))
    assert state is LinkState.REFUSED and why is not None and "security_mode None" in why
    assert isinstance(got, DeviceError) and "password" in got.reason
    assert users.passwords == []
