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
from aquavolt.errors import AquavoltError, ConfigError
from aquavolt.logs import setup_logging

log = logging.getLogger("aquavolt")

Register = Callable[[Any], None]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# the extra that installs a module a command may import late (pyproject.toml)
EXTRAS = {"grafana_foundation_sdk": "dashboards", "grafana_client": "dashboards", "niquests": "dashboards",
          "matplotlib": "dashboards", "numpy": "sim", "aiohttp": "server", "pymodbus": "edge",
          "asyncua": "edge", "serial": "edge", "cryptography": "all", "psutil": "dev"}
# one placeholder per kind of value, whatever the command
METAVARS = {"mqtt": "URL", "influx": "URL", "influx_url": "URL", "url": "URL", "out": "PATH",
            "config": "FILE", "scenario": "FILE", "tokens": "FILE", "notify": "FILE", "state_dir": "DIR",
            "workdir": "DIR", "report_dir": "DIR", "profiles_dir": "DIR", "start": "INSTANT",
            "end": "INSTANT"}


def _show_default(action: argparse.Action) -> None:
    """Append the default to an option's help (unless None, False or already said)."""
    text = action.help or ""
    if (action.option_strings and action.help is not argparse.SUPPRESS
            and not any(action.default is v for v in (None, False, argparse.SUPPRESS))
            and "default" not in text):
        action.help = f"{text} (default: %(default)s)".strip()


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(LOG_LEVELS)})")
    return level


def _add_log_level(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--log-level", type=_log_level, default=default, metavar="LEVEL",
                        help=f"{', '.join(LOG_LEVELS)} (default: $AQUAVOLT_LOG_LEVEL, else INFO)")


def _one_style(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """Every command alike: defaults shown, one placeholder per kind of value, COMMAND for
    subcommands, ``--log-level`` accepted after the subcommand too, and ``-o`` for ``--out``."""
    if not top and "--log-level" not in parser._option_string_actions:
        _add_log_level(parser, argparse.SUPPRESS)  # SUPPRESS: given nowhere, the top level's stays
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.metavar = "COMMAND"
            for child in action.choices.values():
                _one_style(child, top=False)
            continue
        _show_default(action)
        if action.option_strings and action.metavar is None and action.dest in METAVARS \
                and action.nargs is None and action.const is None:
            action.metavar = METAVARS[action.dest]
        if "--out" in action.option_strings and "-o" not in parser._option_string_actions:
            action.option_strings = ["-o", *action.option_strings]
            parser._option_string_actions["-o"] = action


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


def command_of(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (its first word that is not an option or the top-level
    ``--log-level``'s value), or None."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--log-level":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command; with ``only`` naming a component's command, that component's alone
    (a long-running command, such as the gateway's agent, does not carry the imports of every
    other component: about 10 MB of memory)."""
    parser = argparse.ArgumentParser(
        prog="aquavolt", description="aquavolt: network supervision for water and electricity"
    )
    parser.add_argument("--version", action="version", version=f"aquavolt {__version__}")
    _add_log_level(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", help="validate field files with their device profiles")
    p.add_argument("fields", nargs="+", help="field YAML files")
    p.set_defaults(func=_check)

    p = sub.add_parser("schemas", help="write the wire contract's JSON Schemas")
    p.add_argument("--out", default="docs/schemas", help="folder")
    p.set_defaults(func=_schemas)

    _add_security(sub)

    eps = sorted(entry_points(group="aquavolt.commands"), key=lambda e: e.name)
    if only is not None and any(ep.name == only for ep in eps):
        eps = [ep for ep in eps if ep.name == only]
    for ep in eps:
        try:
            register: Register = ep.load()
        except ImportError as exc:
            # A component not installed, or broken: say so, keep the others usable.
            q = sub.add_parser(ep.name, help=f"(unavailable: {exc})")
            q.set_defaults(func=_unavailable(ep.name, str(exc)))
            continue
        register(sub)
    _one_style(parser)
    return parser


def _unavailable(name: str, why: str) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        print(f"aquavolt {name}: component unavailable: {why}", file=sys.stderr)
        return 2

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(command_of(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    name = " ".join(["aquavolt", args.command] + [str(v) for k, v in sorted(vars(args).items())
                                                   if k.endswith("_command") and v])
    try:
        return int(func(args) or 0)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:  # an optional dependency, imported when the command runs
        top = (exc.name or "").split(".")[0]
        extra = EXTRAS.get(top)
        if extra is None:
            raise
        print(f"{name}: needs the '{extra}' extra (pip install 'aquavolt[{extra}]'): no module {top}",
              file=sys.stderr)
        return 2
    except (AquavoltError, OSError) as exc:  # a missing server binary, an unreachable peer, ...
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
