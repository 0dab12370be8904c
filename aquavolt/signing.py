"""Signed commands: the bytes an issuer signs and a gateway verifies (Ed25519).

The signature covers the command's fields (all but ``sig``) AND the gateway and device of the
topic it is published on, so a command signed for one pump cannot be replayed to another.
The canonical bytes are JSON with sorted keys and no spaces (orjson ``OPT_SORT_KEYS``)::

    {"device":"pump-1","gateway":"gw-pumping","id":"...","issuer":"control-1",...,"v":1,"value":75}

Keys are raw 32-byte Ed25519 keys; a public key is written as URL-safe base64 in configs,
a private key as PKCS#8 PEM in a file only its owner can read (``aquavolt rules keygen``).

``cryptography`` is imported when a key is first used (about 7 MB of memory): a gateway that
trusts no issuer never loads it.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from aquavolt.wire import Command

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["SignatureError", "canonical_bytes", "generate_key", "load_private_key", "public_key_from_text",
           "public_key_text", "sign", "verify", "write_private_key"]


class SignatureError(Exception):
    """A command's signature is missing, malformed, from an unknown issuer or does not match."""


def canonical_bytes(cmd: Command, gateway: str, device: str) -> bytes:
    """What is signed: every field but ``sig``, plus the gateway and device of the topic."""
    fields = cmd.model_dump(mode="json", exclude={"sig"})
    return orjson.dumps({**fields, "gateway": gateway, "device": device}, option=orjson.OPT_SORT_KEYS)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(cmd: Command, gateway: str, device: str, key: Ed25519PrivateKey) -> Command:
    """The command with its ``sig`` set (``issuer`` must already name the key)."""
    sig = key.sign(canonical_bytes(cmd, gateway, device))
    return cmd.model_copy(update={"sig": _b64(sig)})


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A public key from its base64 text (32 raw bytes); ValueError when it is not one."""
    try:
        raw = _unb64(text.strip())
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this is {len(raw)}")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


def verify(cmd: Command, gateway: str, device: str, trusted: dict[str, Ed25519PublicKey]) -> None:
    """Raise SignatureError unless ``cmd.sig`` is a valid signature by the key of ``cmd.issuer``."""
    if not cmd.sig:
        raise SignatureError("the command is not signed")
    key = trusted.get(cmd.issuer)
    if key is None:
        raise SignatureError(f"issuer {cmd.issuer!r} is not trusted by this gateway")
    try:
        sig = _unb64(cmd.sig)
    except (binascii.Error, ValueError):
        raise SignatureError("the signature is not base64") from None
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(sig, canonical_bytes(cmd, gateway, device))
    except InvalidSignature:
        raise SignatureError(f"the signature does not match the command (issuer {cmd.issuer!r})") from None


def generate_key() -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as the base64 text a gateway's config lists."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return _b64(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def write_private_key(key: Ed25519PrivateKey, path: Path | str) -> None:
    """PKCS#8 PEM, created with mode 0600 (never readable by others, not even for an instant)."""
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """Raise ValueError when the file is not an Ed25519 private key or others can read it."""
    path = Path(path)
    if path.stat().st_mode & 0o077:
        raise ValueError(f"{path}: the private key must not be readable by others (chmod 600)")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key
