"""The lockstep protocol itself, through a real Mosquitto: a time keeper, a field participant
and an edge participant (``aquavolt.lockstep``, ``aquavolt.harness.timekeeper``).

The edge polls every 15 minutes and reports its health every minute, as the meter line does:
the keeper grants only the instants something reads the field at (and the first and last);
the edge works its health-only instants within those grants, each at its own minute, and
every poll reads a field stepped to its own instant."""

from __future__ import annotations

import asyncio
import threading
import uuid

from aquavolt.harness.servers import Mosquitto
from aquavolt.harness.timekeeper import TimeKeeper, Watch
from aquavolt.lockstep import LockstepClock
from aquavolt.wire import TimeStage

START_S = 1_780_272_000  # 2026-06-01T00:00:00Z
HOUR_S = 3600


def test_the_field_is_stepped_only_at_instants_an_edge_reads(mosquitto: Mosquitto, topic_prefix: str) -> None:
    settings = mosquitto.settings().model_copy(update={"prefix": topic_prefix})
    run = f"r{uuid.uuid4().hex[:8]}"
    field_at: list[int] = []  # instants the field was stepped to
    reads: list[tuple[int, int]] = []  # (poll instant, field instant it read)
    health: list[int] = []
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop = asyncio.new_event_loop()

    async def participants() -> None:
        nonlocal stop
        stop = asyncio.Event()
        sim = LockstepClock(START_S, run, settings, participant="sim", stage=TimeStage.FIELD)
        edge = LockstepClock(START_S, run, settings, participant="edge-gw", stage=TimeStage.EDGE)

        async def stepped() -> None:
            assert sim.t_ms is not None
            field_at.append(sim.t_ms)

        sim.on_grant = stepped

        async def poller() -> None:
            t = float(START_S)
            while True:
                await edge.sleep_until(t)
                reads.append((edge.now_ms(), field_at[-1]))
                t += 900

        async def reporter() -> None:
            while True:
                await edge.sleep(60, reads_field=False)
                health.append(edge.now_ms())

        tasks = [asyncio.create_task(poller()), asyncio.create_task(reporter())]
        await asyncio.sleep(0)
        sim.ready()
        edge.ready()
        ready.set()
        await stop.wait()
        for task in tasks:
            task.cancel()
        sim.close()
        edge.close()

    watch = Watch(settings, f"keeper-{run}", run)
    watch.start()  # subscribed before the participants announce themselves (not retained)
    thread = threading.Thread(target=loop.run_until_complete, args=(participants(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(30)
        keeper = TimeKeeper(watch, run, START_S * 1000, {"sim": TimeStage.FIELD, "edge-gw": TimeStage.EDGE},
                            downstream=())
        keeper.wait_ready(60)
        keeper.run_until((START_S + HOUR_S) * 1000)
    finally:
        watch.stop()
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)
    polls = [(START_S + k * 900) * 1000 for k in range(5)]  # 00:00, 00:15, ... 01:00
    assert [t for t, _field in reads] == polls
    assert all(t == f for t, f in reads), reads  # each poll read the field at its own instant
    assert health == [(START_S + k * 60) * 1000 for k in range(1, 61)]
    # the health reports are worked within the grants of the polls, each at its own minute:
    # five grants (00:00, 00:15, ... 01:00), the field stepped at each of them
    assert keeper.stats.steps == 5
    assert field_at == polls and keeper.stats.field_steps == 5, field_at
