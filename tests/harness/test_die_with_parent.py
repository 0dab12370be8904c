"""A server started through harness.servers dies with the process that started it, even
when that process is killed with SIGKILL: a killed test run or replay leaves nothing behind."""

import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import sys, time
from pathlib import Path
from aquavolt.harness.servers import Mosquitto
m = Mosquitto(Path(sys.argv[1]))
m.start()
print(m.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers signal 0; its state says it is gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


def test_server_dies_when_its_starter_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "m")],
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait(5)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), f"mosquitto {child} outlived its starter"


def test_a_server_started_from_a_worker_thread_outlives_the_thread(tmp_path: Path) -> None:
    """The parent-death signal is the starting *thread*'s: a broker started from a worker
    thread that then ended (``asyncio.to_thread`` inside ``asyncio.run``) was killed with it,
    and the tests after it found the session's broker gone."""
    import asyncio

    from aquavolt.harness.servers import Mosquitto

    m = Mosquitto(tmp_path / "m")
    try:
        async def start_in_a_worker() -> None:
            await asyncio.to_thread(m.start)

        asyncio.run(start_in_a_worker())  # its thread pool, and the thread that started it, end here
        pid = m.pid
        assert pid is not None
        deadline = time.monotonic() + 3  # a signal, if one comes, comes at the thread's end
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(pid), "the broker died with the worker thread that started it"
    finally:
        m.stop()
