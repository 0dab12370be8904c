"""Bearer tokens kept as digests: what the operator API and the customer API share.

A token file never holds a token, only its SHA-256; a presented token is compared with every
digest in constant time, with no early exit, so the time taken does not depend on which entry
matched. ``add_token`` is the one way a file gains an entry: a fresh random token, its digest
written atomically after the file is validated as the service will load it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def token_digest(token: str) -> str:
    """The hex SHA-256 of a token, as token files store it."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_digest(value: object) -> bytes | None:
    """A stored ``sha256`` value as 32 bytes, or None when it is not 64 hex digits."""
    try:
        digest = bytes.fromhex(str(value))
    except ValueError:
        return None
    return digest if len(digest) == 32 else None


def match(token: str, entries: Iterable[tuple[T, bytes]]) -> T | None:
    """The entry whose digest is the token's, comparing with every one (constant time)."""
    digest = hashlib.sha256(token.encode()).digest()
    found = None
    for entry, stored in entries:  # no early exit: the time does not depend on which one matched
        if hmac.compare_digest(digest, stored):
            found = entry
    return found


def add_token(path: Path, key: str, entry: dict[str, Any], validate: Callable[[Path], object]) -> str | None:
    """Add ``key: {**entry, sha256: ...}`` with a fresh token to the YAML file at ``path`` and
    return the token, or None when ``key`` is already there (a token is replaced by removing
    its entry first). ``validate`` loads the new file as the service would (raising on an
    error) before it replaces the old one."""
    data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    if key in data:
        return None
    token = secrets.token_urlsafe(32)
    data[key] = {**entry, "sha256": token_digest(token)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=True))
    validate(tmp)  # never write a file the service would refuse
    tmp.replace(path)
    return token
