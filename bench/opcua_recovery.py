"""OPC-UA recovery against node-opcua (an independent stack): the server is stopped for
OUTAGE seconds and started again on the same port; prints how long after its return the
edge agent published fresh data (the goal: under 10 s whatever the outage).

Needs Node.js and ``npm install`` in bench/nodeua (not part of ./run setup). Default agent
settings (breakers 1..60 s), one transformer polled every POLL seconds, real Mosquitto.
Usage: .venv/bin/python bench/opcua_recovery.py [OUTAGE_S=60] [POLL_S=10]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "edge"), str(ROOT / "tests")]

from helpers import gateway, latest_values, make_agent, recorder, run_until  # noqa: E402

from aquavolt.edge.agent import Agent  # noqa: E402
from aquavolt.edge.config import EdgeSettings  # noqa: E402
from aquavolt.harness.servers import Mosquitto, free_port  # noqa: E402

NODEUA = ROOT / "bench" / "nodeua"


def node_server(port: int, oil: float) -> subprocess.Popen[str]:
    p = subprocess.Popen(["node", str(NODEUA / "server.js"), str(port), str(oil)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, cwd=NODEUA)
    assert p.stdout is not None
    while "ready" not in p.stdout.readline():
        if p.poll() is not None:
            raise SystemExit("node-opcua did not start: run npm install in bench/nodeua")
    return p


def main() -> None:
    outage_s = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    poll_s = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    work = Path(tempfile.mkdtemp(prefix="opcua-recovery-"))
    port = free_port()
    mq = Mosquitto(work / "mq")
    mq.start()
    srv = [node_server(port, 40.0)]
    gw = gateway([{"kind": "opcua", "id": "rtu", "endpoint": f"opc.tcp://127.0.0.1:{port}/aquavolt/rtu",
                   "timeout_s": 4.0}],
                 [{"id": "tr1", "profile": "av_rtu_transformer", "bus": "rtu", "node_prefix": "SS1.TR1"}],
                 poll_s=poll_s)
    back: list[float] = []
    try:
        with recorder(mq, "bench", "opcua-recovery") as rec:
            agent = make_agent(gw, mq, "bench", work / "state", EdgeSettings(health_interval_s=5))

            def value() -> object:
                return latest_values(rec).get("tr1", {}).get("oil_temperature_c", (None, ""))[0]

            async def scenario(_a: Agent) -> None:
                while value() != 40.0:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                srv[0].terminate()
                srv[0].wait()
                await asyncio.sleep(outage_s)
                srv[0] = await asyncio.to_thread(node_server, port, 77.5)
                back.append(time.monotonic())

            ok = run_until(agent, lambda: value() == 77.5, outage_s + 120, during=scenario)
            after = time.monotonic() - back[0]
    finally:
        srv[0].terminate()
        mq.stop()
    print(f"node-opcua down {outage_s:.0f} s, polls every {poll_s:g} s: "
          + (f"data {after:.1f} s after its return" if ok else f"no data {after:.0f} s after its return"))


if __name__ == "__main__":
    main()
