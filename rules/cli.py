"""``aquavolt rules run FIELD.yaml --state-dir DIR``: the rules engine and alarm API.

``aquavolt rules keygen KEY.pem`` makes the engine's command key pair (the private key
written mode 0600, the public key printed for the gateways' ``command_issuers``);
``aquavolt rules token add NAME ROLE --file operators.yaml`` adds an operator and prints
their token once (the file keeps its SHA-256 digest only);
``aquavolt rules customer-token add CUSTOMER_ID --file customers.yaml`` does the same for a
customer of the customer API (``--customer-tokens``)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aquavolt.clock import clock_from_env
from aquavolt.config import load_field, load_model
from aquavolt.errors import ConfigError, ConfigIssue
from aquavolt.influx import Influx
from aquavolt.rules.api import CustomerSink
from aquavolt.settings import INFLUX_ENV, InfluxSettings, MqttSettings

log = logging.getLogger("aquavolt.rules")


def customer_sink(loaded: Any, args: argparse.Namespace) -> CustomerSink | None:
    """``rules.sms.build_customer_sink(loaded, args)`` when that module defines it."""
    try:
        sms = importlib.import_module("aquavolt.rules.sms")
    except ModuleNotFoundError as exc:
        if exc.name not in ("aquavolt.rules.sms",):
            raise
        return None
    build = getattr(sms, "build_customer_sink", None)
    return None if build is None else build(loaded, args)  # type: ignore[no-any-return]


async def _main(args: argparse.Namespace) -> int:
    from aquavolt.rules.customer import Customers, load_customer_tokens
    from aquavolt.rules.http import Operators, Signer, load_tokens, loopback, serve, tls_context
    from aquavolt.rules.notify import Notifier, NotifyConfig
    from aquavolt.rules.service import Engine
    from aquavolt.signing import load_private_key

    if bool(args.api_tls_cert) != bool(args.api_tls_key):
        raise ConfigError([ConfigIssue("--api-tls-cert/--api-tls-key", "", "give both, or neither")])
    ssl_context = tls_context(args.api_tls_cert, args.api_tls_key) if args.api_tls_cert else None
    if args.api_port and ssl_context is None and not loopback(args.api_host) and not args.api_plaintext:
        raise ConfigError([ConfigIssue("--api-host", args.api_host,
                                       "the operator API carries tokens: on an address other than "
                                       "loopback it needs --api-tls-cert and --api-tls-key (or "
                                       "--api-plaintext behind a TLS proxy)")])
    loaded = load_field(args.field)
    tokens = load_tokens(args.tokens) if args.tokens else Operators()
    if not tokens:
        log.warning("no --tokens file: every API call except /health and /openapi.json is refused")
    customers = load_customer_tokens(args.customer_tokens, loaded) if args.customer_tokens else Customers()
    signer = Signer(args.command_issuer, load_private_key(args.command_key)) if args.command_key else None
    if signer is None:
        log.info("no --command-key: the API issues no commands")
    notifier = Notifier(load_model(args.notify, NotifyConfig)) if args.notify else None
    settings = MqttSettings.from_env(args.mqtt)
    clock = clock_from_env()
    influx_url = args.influx or os.environ.get(INFLUX_ENV)
    influx = Influx(InfluxSettings.from_url(influx_url)) if influx_url else None
    engine = Engine(loaded, settings, Path(args.state_dir), clock, notifier, tick_every_ms=args.tick_ms,
                    influx=influx)
    def publish(topic: str, payload: bytes, retain: bool = False) -> None:
        engine.transport.publish(topic, payload, qos=1, retain=retain)

    args.publish = publish
    args.topics, args.clock = engine.topics, clock
    engine.customer_sink = customer_sink(loaded, args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(_sig: int, _frame: object) -> None:
        # a Python-level handler runs in the main thread even while a processing round runs
        # (loop.add_signal_handler's would wait for the loop): the watchdog thread ends the
        # process if the loop has not stopped a few seconds later
        engine.watchdog.request_stop()
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    async def api() -> Any:
        runner = await serve(engine, tokens, args.api_host, args.api_port, signer, ssl_context, customers)
        scheme = "https" if ssl_context else "http"
        log.info("operator API on %s://%s:%d (OpenAPI at /openapi.json)", scheme, args.api_host,
                 args.api_port)
        return runner

    await engine.run(stop, api if args.api_port else None)
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))


def keygen(args: argparse.Namespace) -> int:
    from aquavolt.signing import generate_key, public_key_text, write_private_key

    key = generate_key()
    try:
        write_private_key(key, args.key)
    except FileExistsError:
        print(f"{args.key} exists: a key is never overwritten")
        return 1
    print(f"private key written to {args.key} (mode 0600): give it to the rules engine as "
          f"--command-key {args.key} --command-issuer {args.issuer}")
    print("trust it on each gateway, in the edge settings (--config):")
    print(f"command_issuers:\n  {args.issuer}: {public_key_text(key)}")
    return 0


def _print_new_token(path: Path, key: str, entry: dict[str, str], validate: Callable[[Path], object]) -> int:
    from aquavolt.tokens import add_token

    token = add_token(path, key, entry, validate)
    if token is None:
        print(f"{key} is already in {path}: remove the entry first to replace the token")
        return 1
    print(token)
    return 0


def token_add(args: argparse.Namespace) -> int:
    from aquavolt.rules.http import Role, load_tokens

    if args.role.upper() not in Role.__members__:
        print(f"role {args.role!r} is not one of viewer, operator, engineer")
        return 2
    return _print_new_token(Path(args.file), args.name, {"role": args.role.lower()}, load_tokens)


def customer_token_add(args: argparse.Namespace) -> int:
    from aquavolt.rules.customer import load_customer_tokens

    return _print_new_token(Path(args.file), args.customer, {}, load_customer_tokens)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("rules", help="rules engine: alarms (ISA-18.2), detectors, operator API")
    sub = p.add_subparsers(dest="rules_command", metavar="COMMAND", required=True)
    r = sub.add_parser("run", help="consume telemetry from MQTT, raise and manage alarms")
    r.add_argument("field", help="field YAML file")
    r.add_argument("--state-dir", required=True,
                   help="folder for alarms.sqlite (alarm state, history, audit)")
    r.add_argument("--mqtt", default=None, help="MQTT URL (default $AQUAVOLT_MQTT_URL)")
    r.add_argument("--influx", default=None, help="InfluxDB URL where detector metrics are written "
                   "(default $AQUAVOLT_INFLUX_URL); alarm events reach InfluxDB through the collector")
    r.add_argument("--api-host", default="127.0.0.1",
                   help="address the operator API listens on; any but loopback needs --api-tls-cert")
    r.add_argument("--api-tls-cert", default=None, metavar="FILE",
                   help="serve the API over HTTPS with this certificate chain (PEM)")
    r.add_argument("--api-tls-key", default=None, metavar="FILE", help="private key of --api-tls-cert (PEM)")
    r.add_argument("--api-plaintext", action="store_true",
                   help="allow plain HTTP on an address other than loopback (behind a TLS proxy only)")
    r.add_argument("--api-port", type=int, default=8470, help="operator API port (0: no API)")
    r.add_argument("--tokens", default=None,
                   help="operators YAML 'name: {role, sha256}' ('aquavolt rules token add' writes it)")
    r.add_argument("--customer-tokens", default=None, metavar="FILE",
                   help="customers YAML 'customer_id: {sha256}' of the customer API under /customer "
                   "('aquavolt rules customer-token add' writes it)")
    r.add_argument("--command-key", default=None,
                   help="Ed25519 private key (PEM, mode 0600) that signs commands ('aquavolt rules keygen')")
    r.add_argument("--command-issuer", default="rules",
                   help="key id of --command-key, as the gateways' command_issuers name it")
    r.add_argument("--notify", default=None, help="notification config YAML (email, webhook)")
    r.add_argument("--tick-ms", type=int, default=None,
                   help="override the field's rules.event_time.tick_s: event milliseconds between "
                   "ticks of time-based rules (stale, delays); 0 is taken as 1")
    r.set_defaults(func=run)
    k = sub.add_parser("keygen", help="make the command signing key pair; print the public key")
    k.add_argument("key", help="private key file to create (mode 0600; never overwritten)")
    k.add_argument("--issuer", default="rules", help="key id the gateways will know it by")
    k.set_defaults(func=keygen)
    t = sub.add_parser("token", help="operator tokens of the API")
    tsub = t.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    ta = tsub.add_parser("add", help="add an operator; print the token once, store its digest")
    ta.add_argument("name")
    ta.add_argument("role", help="viewer, operator or engineer")
    ta.add_argument("--file", required=True, help="operators YAML (created if missing)")
    ta.set_defaults(func=token_add)
    ct = sub.add_parser("customer-token", help="customer tokens of the customer API")
    ctsub = ct.add_subparsers(dest="customer_token_command", metavar="COMMAND", required=True)
    cta = ctsub.add_parser("add", help="add a customer; print the token once, store its digest")
    cta.add_argument("customer", help="customer id, as in the field file")
    cta.add_argument("--file", required=True, help="customers YAML (created if missing)")
    cta.set_defaults(func=customer_token_add)
