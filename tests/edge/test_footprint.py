"""What the agent of a Modbus-only gateway loads: its own component and the kernel, not the
other components (the command line loads the command's component only), nor asyncua or
cryptography (imported when an OPC-UA bus or a command issuer needs them). Each is memory a
Raspberry Pi keeps for nothing (the budget is in edge/README.md, Benchmark)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from aquavolt import cli
import aquavolt.edge.agent
try:
    cli.main(["edge", "run", "--help"])
except SystemExit:
    pass
heavy = ("aquavolt.rules", "aquavolt.collector", "aquavolt.harness", "aquavolt.simulators",
         "aquavolt.dashboards", "asyncua", "cryptography")
print(" ".join(sorted({m.split(".")[0] if not m.startswith("aquavolt.") else ".".join(m.split(".")[:2])
                       for m in sys.modules if m.startswith(heavy)})))
"""


def test_a_modbus_gateway_agent_loads_only_what_it_uses() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.splitlines()[-1] == ""
