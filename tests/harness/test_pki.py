"""The local CA's certificates pass strict X.509 verification: OpenSSL's strict mode (on by
default in Python 3.13's ``ssl.create_default_context``) against a real Mosquitto TLS
listener, and cryptography's RFC 5280 verifier for the server and client leaves."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification as v
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from aquavolt.harness.pki import make_ca, make_cert
from aquavolt.harness.servers import Mosquitto


def _strict_context(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # as Python 3.13 does by default
    return ctx


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_strict_tls_handshake_with_mosquitto(mosquitto_secure: Mosquitto, host: str) -> None:
    assert mosquitto_secure.ca is not None
    ctx = _strict_context(mosquitto_secure.ca.cert)
    with socket.create_connection(("127.0.0.1", mosquitto_secure.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        peer = tls.getpeercert()
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert ("DNS", "localhost") in peer["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]


def test_leaves_pass_rfc5280_verification_for_server_and_client(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    leaf = make_cert(ca, tmp_path, "broker")
    root = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
    now = dt.datetime.now(dt.UTC)
    builder = v.PolicyBuilder().store(v.Store([root])).time(now)
    for subject in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = builder.build_server_verifier(subject).verify(cert, [])
        assert chain[-1] == root
    client = builder.build_client_verifier().verify(cert, [])
    assert client.chain[-1] == root

    ext = {e.oid: e for e in cert.extensions}
    assert ext[ExtensionOID.BASIC_CONSTRAINTS].critical and not ext[ExtensionOID.BASIC_CONSTRAINTS].value.ca
    usage = ext[ExtensionOID.KEY_USAGE].value
    assert ext[ExtensionOID.KEY_USAGE].critical and usage.digital_signature and usage.key_encipherment
    assert not usage.key_cert_sign
    assert set(ext[ExtensionOID.EXTENDED_KEY_USAGE].value) == {ExtendedKeyUsageOID.SERVER_AUTH,
                                                                ExtendedKeyUsageOID.CLIENT_AUTH}
    aki = ext[ExtensionOID.AUTHORITY_KEY_IDENTIFIER].value.key_identifier
    assert aki == root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ExtensionOID.SUBJECT_KEY_IDENTIFIER in ext
