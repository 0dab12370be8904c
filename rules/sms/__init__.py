"""Customer alerts by SMS (docs/detection.md, "Customer SMS").

``build_customer_sink(loaded, args)`` gives the engine an :class:`SmsSink` when an SMS
gateway is configured, else None. Settings, from ``args`` attributes when present, else
the environment:

    sms_url    / AQUAVOLT_SMS_URL     base URL of the gateway's JSON API (required); ``dry-run``
                                      sends nothing and logs each message (demos, rehearsals)
    sms_token  / AQUAVOLT_SMS_TOKEN   bearer token (or sms_token_file / AQUAVOLT_SMS_TOKEN_FILE)
    sms_sender / AQUAVOLT_SMS_SENDER  sender id (default AQUAVOLT)
    sms_db     / AQUAVOLT_SMS_DB      queue file (default {state_dir}/sms.sqlite3)

It uses ``args.publish(topic, payload, retain)``, ``args.topics`` and ``args.clock`` that the
engine sets before calling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aquavolt.config import LoadedField
from aquavolt.rules.sms.provider import DryRunProvider, HttpSmsProvider, SmsError, SmsProvider
from aquavolt.rules.sms.sink import SmsSink

__all__ = ["DryRunProvider", "HttpSmsProvider", "SmsError", "SmsProvider", "SmsSink", "build_customer_sink"]


def _setting(args: Any, name: str, default: str | None = None) -> str | None:
    v = getattr(args, name, None)
    return str(v) if v else os.environ.get(f"AQUAVOLT_{name.upper()}", default)


def build_customer_sink(loaded: LoadedField, args: Any) -> SmsSink | None:
    url = _setting(args, "sms_url")
    if not url:
        return None
    token = _setting(args, "sms_token")
    token_file = _setting(args, "sms_token_file")
    if not token and token_file:
        token = Path(token_file).read_text().strip()
    state_dir = Path(getattr(args, "state_dir", None) or ".")
    db = _setting(args, "sms_db") or str(state_dir / "sms.sqlite3")
    provider: SmsProvider = DryRunProvider() if url == "dry-run" else HttpSmsProvider(
        url, token or "", _setting(args, "sms_sender", "AQUAVOLT") or "AQUAVOLT")
    return SmsSink(loaded, provider, db, clock=getattr(args, "clock", None),
                   publish=getattr(args, "publish", None), topics=getattr(args, "topics", None))
