"""The expensive end-to-end runs, shared and scheduled together.

- One run of ``aquavolt demo`` (the demo town with its day of incidents), shared by the tests
  that check it (tests/e2e/test_demo.py) and the dashboards' queries against its data
  (tests/e2e/test_dashboards_live.py): the run is the expensive part, so it happens once.
- One ``aquavolt replay`` of every shipped scenario (tests/e2e/test_scenarios.py), whose
  reports test_determinism.py also takes as its reference runs.

They are subprocesses of one :class:`RunPool`, ``AQUAVOLT_E2E_JOBS`` (default 2) at a time,
started in test order as slots free up, the demo first (it is the longest): while a test
waits for its own run the others go on, so the demo no longer runs alone. Every run is in
lockstep simulated time, so running beside another changes its wall time, never its alarms
(test_determinism.py). The tests that time real processes on a paced clock (the e2e rules
test, the demo's Ctrl-C) are ordered before the first run starts
(:func:`pytest_collection_modifyitems`), so nothing of the pool runs beside them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIELD = ROOT / "examples" / "demo-town.yaml"
SCENARIOS_DIR = ROOT / "examples" / "scenarios"
DEMO_DAY = SCENARIOS_DIR / "demo-day.yaml"
WRONG_EXPECTATION = Path(__file__).parent / "scenarios" / "wrong-expectation.yaml"
"""A scenario whose expectation cannot be met: the replay must fail with a clear report."""
DEMO_SIM_DURATION = "1d2h"
"""The whole demo day, in lockstep: the same run on an idle or a busy machine, only slower."""
HISTORY_DAYS = 370
"""Enough meter history for the customer dashboard's same period last year (364 days back,
weekdays aligned): older days are written as daily rollups only, so this costs little more
than the scenario's 45 days."""
RUN_TIMEOUT_S = 1500
"""Tests using :func:`demo_day_run` mark themselves ``timeout(1600)``: the run is set up
within the first one's timeout (about 5 minutes idle, at most three times that loaded)."""
JOBS = max(1, int(os.environ.get("AQUAVOLT_E2E_JOBS", "2")))
DEMO = "demo-day"
POOL_FIXTURES = ("pool", "demo_day_run")
"""The fixtures that start pool runs: tests using them run after the other e2e tests."""


def replay_argv(scenario: Path, folder: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "aquavolt.cli", "replay", str(scenario), "--workdir", str(folder / "run"),
            "--report-dir", str(folder / "report"), *extra]


def demo_argv(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "aquavolt.cli", "demo", str(FIELD), "--scenario", str(DEMO_DAY),
            "--sim-duration", DEMO_SIM_DURATION, "--acceleration", "100000", "--plain", "--plain-every-s", "30",
            "--backfill-days", str(HISTORY_DAYS), "--workdir", str(workdir)]


@dataclass
class Run:
    """One subprocess of the pool: stdout to ``folder/replay.out`` (stderr too, unless
    ``split_stderr``: then ``folder/replay.err``)."""

    name: str
    argv: list[str]
    folder: Path
    split_stderr: bool = False
    proc: subprocess.Popen[bytes] | None = None
    t0: float = 0.0
    wall_s: float = 0.0
    rc: int | None = None

    @property
    def out_path(self) -> Path:
        return self.folder / "replay.out"

    @property
    def err_path(self) -> Path:
        return self.folder / ("replay.err" if self.split_stderr else "replay.out")

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.out_path, "wb") as out:
            err = open(self.err_path, "wb") if self.split_stderr else None  # noqa: SIM115
            try:
                self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err or subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=ROOT)
            finally:
                if err is not None:
                    err.close()
        self.t0 = time.monotonic()


@dataclass
class RunPool:
    """Runs started ``jobs`` at a time (subprocesses known by PID, no threads), in order;
    the pool advances whenever a test waits for a result (:meth:`result`)."""

    base: Path
    jobs: int
    runs: dict[str, Run] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)

    def add(self, name: str, argv: list[str], split_stderr: bool = False) -> Run:
        run = Run(name, argv, self.base / name, split_stderr)
        self.runs[name] = run
        self.queue.append(name)
        return run

    def add_replay(self, scenario: Path, name: str | None = None, *extra: str) -> Run:
        name = name or scenario.stem
        return self.add(name, replay_argv(scenario, self.base / name, *extra))

    def _tick(self) -> None:
        running = [r for r in self.runs.values() if r.proc is not None and r.rc is None]
        for r in list(running):
            if r.proc is not None and r.proc.poll() is not None:
                r.rc, r.wall_s = r.proc.returncode, time.monotonic() - r.t0
                (r.folder / "wall_s").write_text(f"{r.wall_s:.0f}")
                running.remove(r)
        while self.queue and len(running) < self.jobs:
            r = self.runs[self.queue.pop(0)]
            r.start()
            running.append(r)

    def replay_now(self, scenario: Path, name: str) -> Run:
        """Start a replay at once, even with every slot taken: a run that must happen while
        the test holds a condition (the determinism test's load). It takes a slot while it
        runs, so no queued run starts until another ends."""
        run = Run(name, replay_argv(scenario, self.base / name), self.base / name)
        self.runs[name] = run
        run.start()
        return run

    def result(self, name: str, timeout_s: float = 880.0) -> Run:
        """Wait for run ``name`` (asked before its turn: it goes first); kill it (SIGKILL, its
        children then die with its servers' stop) ``timeout_s`` after it started."""
        run = self.runs[name]
        if run.proc is None and name in self.queue:
            self.queue.remove(name)
            self.queue.insert(0, name)
        while run.rc is None:
            self._tick()
            if run.proc is not None and run.rc is None and time.monotonic() - run.t0 > timeout_s:
                run.proc.kill()
                run.proc.wait()
                run.rc, run.wall_s = -9, time.monotonic() - run.t0
            time.sleep(0.2)
        return run

    def stop(self) -> None:
        """No run left: every one still running gets SIGTERM at once (a replay then stops its
        processes and servers), and SIGKILL if it has not ended 60 s later."""
        self.queue.clear()
        left = [r.proc for r in self.runs.values() if r.proc is not None and r.proc.poll() is None]
        for proc in left:
            proc.terminate()
        for proc in left:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _uses_pool(item: pytest.Item) -> bool:
    return any(f in getattr(item, "fixturenames", ()) for f in POOL_FIXTURES)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Among this folder's tests (in place in the session's order), those that use no pool
    run first, so the pool's runs never run beside them."""
    here = Path(__file__).parent
    at = [i for i, item in enumerate(items) if here in Path(str(item.path)).parents]
    mine = [items[i] for i in at]
    ordered = [it for it in mine if not _uses_pool(it)] + [it for it in mine if _uses_pool(it)]
    for i, item in zip(at, ordered, strict=True):
        items[i] = item


_POOLS: list[RunPool] = []


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last test that uses the pool, nothing of it goes on running beside the next
    tests (a run nobody waited for, after a failure, is stopped)."""
    if _POOLS and _uses_pool(item) and (nextitem is None or not _uses_pool(nextitem)):
        for p in _POOLS:
            p.stop()


@pytest.fixture(scope="session")
def pool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The session's pool: the demo day (if a selected test uses it), then every scenario a
    selected test asks for, in test order."""
    items = request.session.items
    p = RunPool(tmp_path_factory.mktemp("replays"), JOBS)
    if any("demo_day_run" in getattr(it, "fixturenames", ()) for it in items):
        p.add(DEMO, demo_argv(p.base / DEMO / "demo"), split_stderr=True)
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "pool" not in getattr(item, "fixturenames", ()):
            continue
        scenario = callspec.params.get("scenario") or callspec.params.get("name")
        if isinstance(scenario, str):
            scenario = SCENARIOS_DIR / f"{scenario}.yaml"
        if isinstance(scenario, Path) and scenario.stem not in p.runs:
            p.add_replay(scenario)
    if any(getattr(it, "originalname", "") == "test_wrong_expectation_fails_with_a_clear_report" for it in items):
        p.add_replay(WRONG_EXPECTATION, "wrong-expectation", "--grace-s", "60")
    _POOLS.append(p)
    yield p
    p.stop()
    _POOLS.remove(p)


@dataclass(frozen=True)
class DemoRun:
    returncode: int
    out: str
    err: str
    workdir: Path
    """The demo's work folder: InfluxDB's data stay in ``influxdb/`` once the demo stopped."""


@pytest.fixture(scope="session")
def demo_day_run(pool: RunPool) -> DemoRun:
    run = pool.result(DEMO, timeout_s=RUN_TIMEOUT_S)
    return DemoRun(run.rc if run.rc is not None else -1, run.out_path.read_text(errors="replace"),
                   run.err_path.read_text(errors="replace"), run.folder / "demo")
