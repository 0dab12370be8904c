"""Connection settings for MQTT and InfluxDB, shared by every component.

Both come from a URL, on the command line or in the environment:

- ``AQUAVOLT_MQTT_URL``: ``mqtt://user:pass@127.0.0.1:1883`` or ``mqtts://…:8883``, with
  ``?ca=/path/ca.pem&cert=…&key=…&prefix=aquavolt/v1`` as needed;
- ``AQUAVOLT_INFLUX_URL``: InfluxDB 1.x ``http://user:pass@127.0.0.1:8086/aquavolt?rp=autogen``,
  or 2.x/3.x ``http://127.0.0.1:8086/?api=v2&org=utility&bucket=aquavolt&token=…``.

Secrets belong in files or the environment, not on command lines (``ps`` shows those): the
broker password comes from ``AQUAVOLT_MQTT_PASSWORD``, or from the file named by
``AQUAVOLT_MQTT_PASSWORD_FILE`` or by the URL's ``password_file`` parameter, before the URL's
own; InfluxDB's likewise (``AQUAVOLT_INFLUX_PASSWORD``, ``AQUAVOLT_INFLUX_PASSWORD_FILE``,
``password_file``; ``AQUAVOLT_INFLUX_TOKEN``). No URL is logged or put in an error with its
secrets: :func:`redact` (also applied to every log line by :mod:`aquavolt.logs`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from aquavolt.wire import DEFAULT_PREFIX

MQTT_ENV = "AQUAVOLT_MQTT_URL"
INFLUX_ENV = "AQUAVOLT_INFLUX_URL"
MQTT_PASSWORD_ENV = "AQUAVOLT_MQTT_PASSWORD"
INFLUX_PASSWORD_ENV = "AQUAVOLT_INFLUX_PASSWORD"
INFLUX_TOKEN_ENV = "AQUAVOLT_INFLUX_TOKEN"

_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^\s/?#]*@")
_SECRET_PARAM = re.compile(r"(?P<head>[?&](?:token|password|pass|secret)=)[^&\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it (``scheme://user:PASSWORD@``) and every
    ``token=``/``password=`` query value replaced by ``***``: a URL, an error or a log line."""
    return _SECRET_PARAM.sub(r"\g<head>***", _USERINFO.sub(r"\g<head>:***@", text))


def _secret(env: str, file: str | None, given: str | None) -> str | None:
    """A secret: the URL's own (``given``), else the file its ``password_file`` names, else
    ``$ENV``, else the file ``$ENV_FILE`` names."""
    if given:
        return given
    path = file or (None if os.environ.get(env) else os.environ.get(f"{env}_FILE"))
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the password file {path}: {exc.strerror}") from None
    return os.environ.get(env) or None


class MqttSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = Field(30, ge=5)
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def from_url(cls, url: str) -> MqttSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"MQTT URL {redact(url)!r}: scheme must be mqtt or mqtts")
        tls = parts.scheme in ("mqtts", "ssl")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(q) - {"ca", "cert", "key", "prefix", "keepalive", "password_file"}
        if unknown:
            raise ValueError(f"MQTT URL {redact(url)!r}: unknown parameters {sorted(unknown)}")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=_secret(MQTT_PASSWORD_ENV, q.get("password_file"),
                             unquote(parts.password) if parts.password else None),
            tls=tls,
            ca_file=q.get("ca"),
            cert_file=q.get("cert"),
            key_file=q.get("key"),
            prefix=q.get("prefix", DEFAULT_PREFIX),
            keepalive_s=int(q.get("keepalive", "30")),
        )

    @classmethod
    def from_env(cls, url: str | None = None) -> MqttSettings:
        url = url or os.environ.get(MQTT_ENV)
        return cls.from_url(url) if url else cls(password=_secret(MQTT_PASSWORD_ENV, None, None))

    def describe(self) -> str:
        """The broker as a URL without its password (for logs and errors)."""
        user = f"{self.username}:***@" if self.username and self.password else (
            f"{self.username}@" if self.username else "")
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


class InfluxSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field("http://127.0.0.1:8086", description="Base URL, no path")
    api: Literal["v1", "v2"] = "v1"
    database: str = "aquavolt"
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    org: str | None = None
    bucket: str | None = None
    token: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_url(cls, url: str) -> InfluxSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"InfluxDB URL {redact(url)!r}: scheme must be http or https")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(q) - {"api", "rp", "org", "bucket", "token", "timeout", "password_file"}
        if unknown:
            raise ValueError(f"InfluxDB URL {redact(url)!r}: unknown parameters {sorted(unknown)}")
        base = f"{parts.scheme}://{parts.hostname or '127.0.0.1'}:{parts.port or 8086}"
        api = q.get("api", "v1")
        if api not in {"v1", "v2"}:
            raise ValueError(f"InfluxDB URL {redact(url)!r}: api must be v1 or v2")
        db = parts.path.strip("/") or "aquavolt"
        return cls(
            url=base,
            api=api,
            database=db,
            retention_policy=q.get("rp"),
            username=unquote(parts.username) if parts.username else None,
            password=_secret(INFLUX_PASSWORD_ENV, q.get("password_file"),
                             unquote(parts.password) if parts.password else None),
            org=q.get("org"),
            bucket=q.get("bucket", db if api == "v2" else None),
            token=os.environ.get(INFLUX_TOKEN_ENV) or q.get("token"),
            timeout_s=float(q.get("timeout", "10")),
        )

    @classmethod
    def from_env(cls, url: str | None = None) -> InfluxSettings:
        url = url or os.environ.get(INFLUX_ENV)
        return cls.from_url(url) if url else cls()
