"""Saturate the cores: N CPU-bound processes for a bounded time, then stop by themselves.

    .venv/bin/python bench/load.py                  # 4 processes for 60 s
    .venv/bin/python bench/load.py --procs 4 --seconds 900

Used by the determinism test (tests/e2e/test_determinism.py) and bench/replay.py to run a
replay on a machine as busy as a shared CI host. Each worker spins on arithmetic (no I/O,
no network) until its deadline; the parent waits for them and kills any left (by PID) when
it is itself terminated. The last line is one JSON object: processes, seconds, loops done.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import signal
import sys
import time


def spin(deadline: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    n = 0
    x = 1.0
    while time.monotonic() < deadline:
        for _ in range(10_000):
            x = (x * 1.000001) % 7.0
        n += 1
    out.put(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0, help="stop after this long (at most 3600)")
    args = ap.parse_args(argv)
    seconds = min(max(args.seconds, 0.0), 3600.0)
    deadline = time.monotonic() + seconds
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    workers = [mp.Process(target=spin, args=(deadline, out), daemon=True) for _ in range(args.procs)]
    for w in workers:
        w.start()

    def stop(*_: object) -> None:
        for w in workers:
            if w.is_alive():
                w.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"load: {args.procs} CPU-bound processes for {seconds:g} s", flush=True)
    loops = sum(out.get() for _ in workers)
    for w in workers:
        w.join()
    print(json.dumps({"procs": args.procs, "seconds": seconds, "loops": loops}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
