"""``aquavolt sim``: run, backfill and generate (registered through the entry point)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from aquavolt.progressbar import add_progress_option


def _run(args: argparse.Namespace) -> int:
    from aquavolt.config import load_field
    from aquavolt.scenario import load_scenario
    from aquavolt.simulators.runner import Runner, RunOptions

    scenario = None
    if not args.field and not args.scenario:
        print("aquavolt sim run: give a field file or --scenario")
        return 2
    if args.scenario:
        scenario = load_scenario(args.scenario, args.field)
        loaded = scenario.field
    else:
        loaded = load_field(args.field)
    opts = RunOptions(seed=args.seed, state_dir=Path(args.state_dir), http_port=args.http_port,
                      start=args.start, acceleration=args.acceleration, step_s=args.step_s,
                      exit_at_end=args.exit_at_end)

    async def main() -> None:
        await Runner(loaded, opts, scenario).run()

    asyncio.run(main())
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from aquavolt.simulators.backfill import backfill_cli

    return backfill_cli(args)


def _generate(args: argparse.Namespace) -> int:
    from aquavolt.simulators.generate import generate_cli

    return generate_cli(args)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("sim", help="simulated field: Modbus/OPC-UA servers, faults, history")
    sub = p.add_subparsers(dest="sim_command", metavar="SUBCOMMAND", required=True)

    r = sub.add_parser("run", help="serve every device of a field (Ctrl-C stops)")
    r.add_argument("field", help="field YAML file (with --scenario: overrides the scenario's field)",
                   nargs="?")
    r.add_argument("--scenario", help="scenario YAML: start, seed, faults")
    r.add_argument("--seed", type=int, default=None, help="random seed (default: scenario's, else 1)")
    r.add_argument("--state-dir", default="var/sim", help="OPC-UA certificates (default var/sim)")
    r.add_argument("--http-port", type=int, default=0, help="fault endpoint on 127.0.0.1 (0: off)")
    r.add_argument("--start", help="simulated start instant (ISO); else AQUAVOLT_CLOCK or scenario")
    r.add_argument("--acceleration", type=float, default=None, help="simulated seconds per second")
    r.add_argument("--step-s", type=float, default=10.0, help="model step, simulated seconds")
    r.add_argument("--exit-at-end", action="store_true", help="exit when the scenario's duration is over")
    r.set_defaults(func=_run)

    b = sub.add_parser("backfill", help="write months of meter history to InfluxDB")
    b.add_argument("field", help="field YAML file")
    b.add_argument("--influx", default=None, help="InfluxDB URL (default AQUAVOLT_INFLUX_URL)")
    b.add_argument("--end", required=True, help="end instant (ISO): where live data takes over")
    b.add_argument("--days", type=int, default=400, help="days of history (default 400)")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--step-s", type=int, default=3600, help="raw resolution (default 3600)")
    b.add_argument("--raw-days", type=int, default=28,
                   help="days of raw points before --end (default 28); older days: daily rollups only")
    add_progress_option(b)
    b.set_defaults(func=_backfill)

    g = sub.add_parser("generate", help="write a field file of N customers for scale tests")
    g.add_argument("--customers", type=int, required=True)
    g.add_argument("--pumps", type=int, default=2)
    g.add_argument("--substations", type=int, default=1)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--out", required=True, help="output YAML file")
    g.set_defaults(func=_generate)
