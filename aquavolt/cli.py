"""The ``aquavolt`` command. The kernel owns ``check`` and ``schemas``; every component
registers its own subcommands through the ``aquavolt.commands`` entry-point group::

    def register(subparsers: argparse._SubParsersAction) -> None:
        p = subparsers.add_parser("edge", help="...")
        ...
        p.set_defaults(func=run)   # run(args) -> int

The kernel imports none of them by name; the harness (``demo``, ``replay``) registers its
commands the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from aquavolt import __version__
from aquavolt.errors import ConfigError
from aquavolt.logs import setup_logging

log = logging.getLogger("aquavolt")

Register = Callable[[Any], None]


def _check(args: argparse.Namespace) -> int:
    from aquavolt.config import load_field

    status = 0
    for path in args.fields:
        try:
            loaded = load_field(path)
        except ConfigError as exc:
            for issue in exc.issues:
                print(issue, file=sys.stderr)
            print(f"{path}: {len(exc.issues)} error(s)", file=sys.stderr)
            status = 1
            continue
        f = loaded.field
        print(
            f"{path}: ok: field {f.id}, {len(f.gateways)} gateways, {len(f.devices)} devices, "
            f"{len(f.water.zones)} zones, {len(f.electricity.substations)} substations, "
            f"{len(f.customers)} customers, {len(loaded.profiles)} profiles"
        )
    return status


def _schemas(args: argparse.Namespace) -> int:
    from aquavolt.schemas import write_schemas

    for path in write_schemas(Path(args.out)):
        print(path)
    return 0


def _security_init(args: argparse.Namespace) -> int:
    from aquavolt.security import init_secrets

    try:
        made = init_secrets(Path(args.field), Path(args.out), prefix=args.prefix, harness=args.harness,
                            force=args.force)
    except FileExistsError as exc:
        print(f"aquavolt security init: {exc}", file=sys.stderr)
        return 1
    print(f"{made.folder}: {len(made.files)} files, {len(made.mqtt_passwords)} MQTT users "
          "(keep this folder secret and out of version control)")
    return 0


def _security_acl(args: argparse.Namespace) -> int:
    from aquavolt.config import load_field
    from aquavolt.security import acl_text

    text = acl_text(load_field(args.field).field, args.prefix, args.harness, source=Path(args.field).name)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _security_check(args: argparse.Namespace) -> int:
    from aquavolt.security import check_deployment

    findings = check_deployment(Path(args.field) if args.field else None,
                                [Path(c) for c in args.compose], [Path(m) for m in args.mosquitto_conf])
    for f in findings:
        print(f)
    print(f"{len(findings)} finding(s)" if findings else "no findings", file=sys.stderr)
    return 1 if findings else 0


def _add_security(sub: Any) -> None:
    from aquavolt.wire import DEFAULT_PREFIX

    p = sub.add_parser("security", help="deployment security: secrets, MQTT ACL, checks")
    s = p.add_subparsers(dest="security_command", metavar="COMMAND", required=True)
    q = s.add_parser("init", help="generate every secret of a deployment into a folder")
    q.add_argument("field", help="field YAML file")
    q.add_argument("--out", required=True, help="secrets folder (e.g. secrets; never commit it)")
    q.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")
    q.add_argument("--harness", action="store_true", help="also a 'harness' user (lockstep time keeper)")
    q.add_argument("--force", action="store_true", help="replace the secrets of an existing folder")
    q.set_defaults(func=_security_init)
    q = s.add_parser("acl", help="print the least-privilege Mosquitto ACL of a field")
    q.add_argument("field", help="field YAML file")
    q.add_argument("--out", help="file (default: standard output)")
    q.add_argument("--prefix", default=DEFAULT_PREFIX)
    q.add_argument("--harness", action="store_true")
    q.set_defaults(func=_security_acl)
    q = s.add_parser("check", help="list what in a deployment is not secure (exit 1 when any)")
    q.add_argument("field", nargs="?", help="field YAML file as deployed")
    q.add_argument("--compose", action="append", default=[], help="docker compose file (repeatable)")
    q.add_argument("--mosquitto-conf", action="append", default=[], help="mosquitto.conf (repeatable)")
    q.set_defaults(func=_security_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aquavolt", description="aquavolt: network supervision for water and electricity"
    )
    parser.add_argument("--version", action="version", version=f"aquavolt {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", help="validate field files with their device profiles")
    p.add_argument("fields", nargs="+", help="field YAML files")
    p.set_defaults(func=_check)

    p = sub.add_parser("schemas", help="write the wire contract's JSON Schemas")
    p.add_argument("--out", default="docs/schemas", help="folder (default docs/schemas)")
    p.set_defaults(func=_schemas)

    _add_security(sub)

    for ep in sorted(entry_points(group="aquavolt.commands"), key=lambda e: e.name):
        try:
            register: Register = ep.load()
        except ImportError as exc:
            # A component not installed, or broken: say so, keep the others usable.
            q = sub.add_parser(ep.name, help=f"(unavailable: {exc})")
            q.set_defaults(func=_unavailable(ep.name, str(exc)))
            continue
        register(sub)
    return parser


def _unavailable(name: str, why: str) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        print(f"aquavolt {name}: component unavailable: {why}", file=sys.stderr)
        return 2

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
