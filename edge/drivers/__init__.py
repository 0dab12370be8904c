"""Field bus drivers, one module each, in an explicit registry keyed by the bus ``kind``.

The OPC-UA driver (asyncua and its cryptography: about 20 MB of memory) is imported only
when a gateway has an OPC-UA bus: a Modbus-only gateway never loads it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aquavolt.edge.drivers.base import Breaker, Driver, PointResult
from aquavolt.edge.drivers.modbus_rtu import ModbusRtuDriver
from aquavolt.edge.drivers.modbus_tcp import ModbusTcpDriver
from aquavolt.field import Device, Gateway, ModbusRtuBus, ModbusTcpBus, OpcuaBus
from aquavolt.profiles import ModbusProfile, OpcuaProfile

if TYPE_CHECKING:
    from aquavolt.edge.drivers.opcua import LinkState

__all__ = ["DRIVERS", "Breaker", "Driver", "LinkState", "PointResult", "make_driver"]

Profiles = dict[str, ModbusProfile | OpcuaProfile]
Factory = Callable[[Any, Profiles, list[Device], Gateway, Path, int, float], Driver]


def _tcp(bus: ModbusTcpBus, profiles: Profiles, devices: list[Device], _gw: Gateway, _state: Path,
         max_gap: int, _reconnect_max_s: float) -> Driver:
    mp = {k: v for k, v in profiles.items() if isinstance(v, ModbusProfile)}
    return ModbusTcpDriver(bus, mp, len(devices), max_gap)


def _rtu(bus: ModbusRtuBus, profiles: Profiles, _devices: list[Device], _gw: Gateway, _state: Path,
         max_gap: int, _reconnect_max_s: float) -> Driver:
    mp = {k: v for k, v in profiles.items() if isinstance(v, ModbusProfile)}
    return ModbusRtuDriver(bus, mp, max_gap)


def _opcua(bus: OpcuaBus, profiles: Profiles, devices: list[Device], gw: Gateway, state: Path,
           _max_gap: int, reconnect_max_s: float) -> Driver:
    from aquavolt.edge.drivers.opcua import OpcuaDriver

    op = {k: v for k, v in profiles.items() if isinstance(v, OpcuaProfile)}
    return OpcuaDriver(bus, op, devices, gw.id, state, reconnect_max_s)


DRIVERS: dict[str, Factory] = {"modbus_tcp": _tcp, "modbus_rtu": _rtu, "opcua": _opcua}


def make_driver(bus: ModbusTcpBus | ModbusRtuBus | OpcuaBus, profiles: Profiles, devices: list[Device],
                gateway: Gateway, state_dir: Path, max_gap: int, reconnect_max_s: float = 5.0) -> Driver:
    return DRIVERS[bus.kind](bus, profiles, devices, gateway, state_dir, max_gap, reconnect_max_s)


def __getattr__(name: str) -> Any:
    if name == "LinkState":  # from the OPC-UA driver, loaded on first use
        from aquavolt.edge.drivers.opcua import LinkState

        return LinkState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
