"""aquavolt kernel: what every component shares.

The kernel holds the field model, device profiles and the register codec, the wire
contract, the clock, connection settings for MQTT and InfluxDB, and logging setup.
Components (edge, collector, rules, simulators, dashboards) import the kernel and never
each other.
"""

__version__ = "0.1.0"
