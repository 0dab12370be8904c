"""aquavolt kernel: what every component shares.

The kernel holds the field model, device profiles and the register codec, the wire
contract, the clock (lockstep included), connection settings for MQTT and InfluxDB, the
scenario file and fault spec, and logging setup. Components (edge, collector, rules,
simulators, dashboards) import the kernel and never each other. The harness (``harness/``:
the demo and replays) runs them as processes through their ``aquavolt`` commands and
imports only the kernel too; the kernel imports neither.
"""

__version__ = "0.1.0"  # the only place: pyproject.toml reads it (tool.setuptools.dynamic)
