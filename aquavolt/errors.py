"""The exception tree of aquavolt, in one place.

::

    AquavoltError                 base of everything aquavolt raises on purpose
    +-- ConfigError               a file (field, profile, gateway, scenario) is wrong;
    |                             carries a list of ConfigIssue(file, path, reason)
    +-- CodecError                a value cannot be encoded to / decoded from registers
    +-- WireError                 an MQTT payload or topic breaks the wire contract
    +-- DeviceError               a field device failed (timeout, exception code, garbage)
    |   +-- DeviceTimeout         the device did not answer in time
    |   +-- DeviceException       the device answered a protocol exception (code kept)
    +-- ServiceError              a local server (Mosquitto, InfluxDB) could not start

Components catch these by class; nothing in aquavolt catches bare ``Exception`` except
at a supervisor boundary, where the failure is counted and logged.
"""

from __future__ import annotations

from dataclasses import dataclass


class AquavoltError(Exception):
    """Base of every error aquavolt raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file: which file, where inside it, and why."""

    file: str
    path: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.reason}"


class ConfigError(AquavoltError):
    """A configuration file is invalid. ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class CodecError(AquavoltError):
    """A value cannot be encoded to or decoded from Modbus registers."""


class WireError(AquavoltError):
    """A payload or topic does not follow the wire contract; the message says why."""


class DeviceError(AquavoltError):
    """A field device failed to answer properly."""

    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        self.reason = reason
        super().__init__(f"device {device}: {reason}")


class DeviceTimeout(DeviceError):
    """The device did not answer in time."""


class DeviceException(DeviceError):
    """The device answered with a protocol exception code."""

    def __init__(self, device: str, code: int, reason: str = "") -> None:
        self.code = code
        super().__init__(device, reason or f"exception code {code}")


class ServiceError(AquavoltError):
    """A local server (Mosquitto, InfluxDB) could not be started or stopped."""
