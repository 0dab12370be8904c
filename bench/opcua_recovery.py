"""OPC-UA recovery against node-opcua (an independent stack): the server is stopped for
OUTAGE seconds and started again on the same port; prints how long after its return the
edge agent published fresh data (the goal: under 10 s whatever the outage).

The server is the tests' node-opcua peer (tests/opcua/node/server.js, installed by ./run
setup). Default agent settings (breakers 1..60 s), one transformer polled every POLL seconds,
real Mosquitto.
Usage: .venv/bin/python bench/opcua_recovery.py [OUTAGE_S=60] [POLL_S=10]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "edge"), str(ROOT / "tests")]

from conftest import OPCUA_PROFILES  # noqa: E402
from helpers import gateway, latest_values, make_agent, recorder, run_until  # noqa: E402
from opcua_node_peer import NodeOpcuaPeer  # noqa: E402

from aquavolt.edge.agent import Agent  # noqa: E402
from aquavolt.edge.config import EdgeSettings  # noqa: E402
from aquavolt.harness.servers import Mosquitto, free_port  # noqa: E402


def main() -> None:
    outage_s = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    poll_s = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    work = Path(tempfile.mkdtemp(prefix="opcua-recovery-"))
    port = free_port()
    mq = Mosquitto(work / "mq")
    mq.start()
    srv = NodeOpcuaPeer([("SS1.TR1", OPCUA_PROFILES["av_rtu_transformer"])], port, work / "node", salt=0)
    gw = gateway([{"kind": "opcua", "id": "rtu", "endpoint": srv.endpoint, "timeout_s": 4.0}],
                 [{"id": "tr1", "profile": "av_rtu_transformer", "bus": "rtu", "node_prefix": "SS1.TR1"}],
                 poll_s=poll_s)
    back: list[float] = []
    try:
        with recorder(mq, "bench", "opcua-recovery") as rec:
            agent = make_agent(gw, mq, "bench", work / "state", EdgeSettings(health_interval_s=5))

            def value() -> object:
                return latest_values(rec).get("tr1", {}).get("oil_temperature_c", (None, ""))[0]

            async def scenario(_a: Agent) -> None:
                while value() != 231.25:  # noqa: ASYNC110 - the sample value of salt 0
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(srv.stop)
                down = time.monotonic()
                await asyncio.to_thread(srv.prepare, 1)  # serves 232.25, once it listens
                await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - down)))
                await asyncio.to_thread(srv.listen)
                back.append(srv.ready_at)

            ok = run_until(agent, lambda: value() == 232.25, outage_s + 120, during=scenario)
            after = time.monotonic() - back[0]
    finally:
        srv.close()
        mq.stop()
    print(f"node-opcua down {outage_s:.0f} s, polls every {poll_s:g} s: "
          + (f"data {after:.1f} s after its return" if ok else f"no data {after:.0f} s after its return"))


if __name__ == "__main__":
    main()
