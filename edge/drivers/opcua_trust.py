"""Which OPC-UA servers the edge trusts: pinned server certificates, trust on first use at most.

With Sign or SignAndEncrypt the client encrypts the user's password to the server's
certificate, so a man in the middle that presents its own certificate would receive it. The
bus therefore names what it trusts (``server_certificates``: DER or PEM files;
``server_fingerprints``: SHA-256 of the DER certificate) or, with ``trust_on_first_use``
and nothing listed, accepts the first certificate it sees, records it as
``STATE/opcua/trusted/<bus>.der`` (logged with its fingerprint) and requires it from then on.
Anything else is refused before the session is activated, with an error naming the bus, its
devices and the fingerprint presented.

With security None nothing is encrypted or signed, so nothing can be pinned: a password is
refused there (:func:`refusal`), and such a bus belongs on an isolated network segment only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aquavolt.field import OpcuaBus, SecurityMode

log = logging.getLogger("aquavolt.edge.opcua")


class UntrustedServer(Exception):
    """The server's certificate is not one the bus trusts (or nothing is trusted)."""


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as ``AB:CD:…`` (what ``openssl x509 -fingerprint -sha256`` shows)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _norm(fp: str) -> str:
    return fp.replace(":", "").lower()


def certificate_der(path: Path) -> bytes:
    """The DER bytes of a certificate file, DER or PEM."""
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)


def refusal(bus: OpcuaBus) -> str | None:
    """Why the bus must not connect at all, or None (the field check says the same)."""
    if bus.password and bus.security_mode is SecurityMode.NONE:
        return (f"OPC-UA bus {bus.id}: refusing to send a password with security_mode None "
                f"to {bus.endpoint} (set Sign or SignAndEncrypt and a trusted server certificate)")
    return None


class TrustList:
    """The certificates one bus trusts, read again at every check (a replaced file counts)."""

    def __init__(self, bus: OpcuaBus, devices: list[str], state_dir: Path) -> None:
        self.bus = bus
        self.devices = devices
        self.recorded = Path(state_dir) / "opcua" / "trusted" / f"{bus.id}.der"

    def _what(self) -> str:
        return f"OPC-UA bus {self.bus.id} ({self.bus.endpoint}; devices {', '.join(self.devices) or 'none'})"

    def pinned(self) -> set[str]:
        pins = {_norm(fp) for fp in self.bus.server_fingerprints}
        for name in self.bus.server_certificates:
            try:
                pins.add(_norm(fingerprint(certificate_der(Path(name)))))
            except (OSError, ValueError) as exc:
                raise UntrustedServer(f"{self._what()}: cannot read trusted server certificate {name}: {exc}"
                                      ) from exc
        if self.recorded.exists():
            pins.add(_norm(fingerprint(self.recorded.read_bytes())))
        return pins

    def check(self, der: bytes | None) -> None:
        """Accept the server certificate ``der`` or raise :class:`UntrustedServer`."""
        if not der:
            raise UntrustedServer(f"{self._what()}: the server presented no certificate")
        fp = fingerprint(der)
        pins = self.pinned()
        if not pins:
            if not self.bus.trust_on_first_use:
                raise UntrustedServer(
                    f"{self._what()}: no trusted server certificate configured; refusing certificate "
                    f"SHA-256 {fp} (set server_certificates, server_fingerprints or trust_on_first_use)")
            self._record(der)
            log.warning("%s: trusting the server certificate SHA-256 %s on first use; recorded in %s and "
                        "required from now on", self._what(), fp, self.recorded)
            return
        if _norm(fp) not in pins:
            raise UntrustedServer(
                f"{self._what()}: untrusted server certificate SHA-256 {fp}; refused (add it to "
                f"server_certificates or server_fingerprints if the server's certificate really changed"
                + (f", or remove {self.recorded}" if self.recorded.exists() else "") + ")")

    def _record(self, der: bytes) -> None:
        self.recorded.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.recorded.with_suffix(".tmp")
        tmp.write_bytes(der)
        os.replace(tmp, self.recorded)
