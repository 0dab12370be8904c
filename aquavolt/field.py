"""The field model: one YAML file describes a whole supervised field.

It is the single source of truth: the simulators serve its devices, each edge agent polls
its gateway's part, the rules engine takes its topology and thresholds, and the dashboards
draw it. Units are in the field names. Load a file with :func:`aquavolt.config.load_field`,
which also checks cross-references.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from aquavolt.profiles import Frozen
from aquavolt.rulecfg import RulesConfig

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
Fingerprint = Annotated[str, Field(pattern=r"^(?:[0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$",
                                   description="SHA-256 of the DER certificate, hex, colons allowed")]


class Located(Frozen):
    latitude_deg: float | None = Field(None, ge=-90, le=90)
    longitude_deg: float | None = Field(None, ge=-180, le=180)


class Site(Located):
    id: Id
    name: str = ""


# ---------------------------------------------------------------- buses and devices


class ModbusTcpBus(Frozen):
    """A Modbus TCP server: a device, or a TCP-to-RTU converter with several unit ids."""

    kind: Literal["modbus_tcp"] = "modbus_tcp"
    id: Id
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    timeout_s: float = Field(1.0, gt=0)
    max_concurrent_requests: int = Field(4, ge=1, le=64)


class ModbusRtuBus(Frozen):
    """A serial line (RS-485) with one or more Modbus RTU devices."""

    kind: Literal["modbus_rtu"] = "modbus_rtu"
    id: Id
    serial_port: str = Field(description="Device path, e.g. /dev/ttyUSB0")
    baud_rate: int = Field(9600, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stop_bits: Literal[1, 2] = 1
    byte_size: Literal[7, 8] = 8
    timeout_s: float = Field(0.5, gt=0)
    inter_frame_delay_s: float | None = Field(
        None, ge=0, description="Silence between frames; 3.5 characters when unset"
    )
    retries: int = Field(
        0, ge=0, le=5, description="Requests repeated after a timeout before the device counts as "
        "not answering: a late answer of a slow unit can garble the next unit's exchange on a shared line"
    )


class SecurityPolicy(StrEnum):
    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"


class SecurityMode(StrEnum):
    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class OpcuaBus(Frozen):
    """An OPC-UA server, e.g. a substation RTU."""

    kind: Literal["opcua"] = "opcua"
    id: Id
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="opc.tcp://host:port/path")
    security_policy: SecurityPolicy = SecurityPolicy.NONE
    security_mode: SecurityMode = SecurityMode.NONE
    username: str | None = None
    password: str | None = None
    certificate: str | None = Field(None, description="Client certificate (PEM/DER path)")
    private_key: str | None = Field(None, description="Client private key (PEM path)")
    server_certificates: list[str] = Field(
        [], description="Trusted server certificates (DER or PEM paths): the server must present one")
    server_fingerprints: list[Fingerprint] = Field(
        [], description="Trusted server certificates by SHA-256 fingerprint")
    trust_on_first_use: bool = Field(
        False, description="With nothing listed: trust the first certificate seen, record it in the "
        "state folder (opcua/trusted/<bus>.der) and require it from then on")
    namespace_uri: str = "urn:aquavolt:sim"
    timeout_s: float = Field(4.0, gt=0)
    subscribe: bool = Field(True, description="Subscribe (else poll) when the server can")


Bus = Annotated[ModbusTcpBus | ModbusRtuBus | OpcuaBus, Field(discriminator="kind")]


SparkplugId = Annotated[str, Field(pattern=r"^[^/+#]+$", max_length=64,
                                     description="A Sparkplug id: no '/', '+' or '#'")]


class SparkplugDevice(Frozen):
    """Where a device of a ``sparkplug`` gateway gets its data: a Sparkplug device (or the edge
    node itself) and the names of its metrics, each mapped to a point of the device's profile."""

    device_id: SparkplugId | None = Field(
        None, description="Sparkplug device id (DBIRTH/DDATA/DDEATH); unset: the edge node's own "
        "metrics (NBIRTH/NDATA)")
    metrics: dict[Annotated[str, Field(min_length=1, max_length=256)], str] = Field(
        min_length=1, description="Sparkplug metric name -> point of the device's profile")


class Device(Located):
    id: Id
    profile: str = Field(description="Device profile id")
    bus: Id | None = Field(None, description="Id of the gateway bus the device sits on "
                           "(required on an aquavolt gateway, none on a sparkplug one)")
    sparkplug: SparkplugDevice | None = Field(
        None, description="On a sparkplug gateway: its Sparkplug device and metric names")
    unit_id: int | None = Field(None, description="Modbus unit id (1..247)")
    node_prefix: str | None = Field(None, description="OPC-UA browse prefix of the device")
    poll_intervals_s: dict[str, float] = Field(
        default_factory=dict, description="Poll interval per point group (overrides gateway)"
    )
    name: str = ""


class GatewaySparkplug(Frozen):
    """How a gateway speaks Sparkplug B northbound (``docs/sparkplug.md``)."""

    group_id: SparkplugId | None = Field(None, description="Sparkplug group id; default: the field's id")
    edge_node_id: SparkplugId | None = Field(None, description="Edge node id; default: the gateway's id")
    primary_host_id: SparkplugId | None = Field(
        None, description="Primary host application: data is held while its STATE says offline")
    accept_dcmd: bool = Field(
        False, description="Execute DCMD writes (allow-listed points only; the broker ACL must let "
                           "only the centre publish DCMD)")


class Gateway(Located):
    id: Id
    site: Id
    name: str = ""
    kind: Literal["aquavolt", "sparkplug"] = Field(
        "aquavolt", description="aquavolt: an aquavolt edge agent polls its buses; sparkplug: a "
        "third-party Sparkplug B edge node, read by the centre from its births and data")
    buses: list[Bus] = Field(default_factory=list, description="At least one on an aquavolt gateway")
    devices: list[Device] = Field(default_factory=list)
    poll_intervals_s: dict[str, float] = Field(
        default_factory=lambda: {"default": 10.0},
        description="Poll interval per point group, in (simulated) seconds",
    )
    writable_points: list[str] = Field(
        default_factory=list, description="Allow-list of 'device.point' that commands may write"
    )
    northbound: Literal["aquavolt", "sparkplug", "both"] = Field(
        "aquavolt", description="What the gateway publishes: aquavolt's wire, Sparkplug B 3.0, or both")
    sparkplug: GatewaySparkplug | None = Field(
        None, description="Sparkplug B settings (kind sparkplug, or northbound sparkplug or both)")

    @model_validator(mode="after")
    def _sparkplug_needs_northbound(self) -> Gateway:
        if self.sparkplug is not None and self.northbound == "aquavolt" and self.kind == "aquavolt":
            raise ValueError("a sparkplug section needs northbound: sparkplug or both (or kind: sparkplug)")
        return self

    def sparkplug_node(self, field_id: str) -> tuple[str, str] | None:
        """(group id, edge node id) of the gateway as a Sparkplug edge node, None when it is
        not one: a ``sparkplug`` gateway, or an aquavolt one with northbound sparkplug or both."""
        if self.kind == "aquavolt" and self.northbound == "aquavolt":
            return None
        sp = self.sparkplug or GatewaySparkplug()
        return sp.group_id or field_id, sp.edge_node_id or self.id

    def bus(self, bus_id: str) -> ModbusTcpBus | ModbusRtuBus | OpcuaBus | None:
        return next((b for b in self.buses if b.id == bus_id), None)


# ---------------------------------------------------------------- water


class Zone(Located):
    """A district metered area (DMA)."""

    id: Id
    name: str = ""
    site: Id
    population: int = Field(ge=0)
    connections: int = Field(ge=0, description="Service connections in the zone")
    mains_length_km: float = Field(ge=0)
    inlet_meters: list[Id] = Field(min_length=1, description="Devices metering inflow")
    outlet_meters: list[Id] = Field(default_factory=list, description="Devices metering outflow")
    pressure_sensors: list[Id] = Field(default_factory=list)
    average_pressure_m: float = Field(40.0, gt=0, description="Average zone night pressure")


class Tank(Located):
    id: Id
    name: str = ""
    zone: Id
    device: Id = Field(description="Level sensor device")
    area_m2: float = Field(gt=0)
    height_m: float = Field(gt=0)
    low_level_m: float = Field(ge=0)
    high_level_m: float = Field(gt=0)
    initial_level_m: float | None = None


class Pump(Located):
    id: Id
    name: str = ""
    zone: Id
    device: Id = Field(description="Pump controller device")
    tank: Id | None = Field(None, description="Tank the pump fills; it runs on its level")
    rated_flow_lps: float = Field(gt=0)
    shutoff_head_m: float = Field(gt=0, description="Head at zero flow (pump curve)")
    rated_head_m: float = Field(gt=0)
    rated_current_a: float = Field(gt=0)


class Water(Frozen):
    zones: list[Zone] = Field(default_factory=list)
    tanks: list[Tank] = Field(default_factory=list)
    pumps: list[Pump] = Field(default_factory=list)


# ---------------------------------------------------------------- electricity


class Transformer(Located):
    id: Id
    name: str = ""
    rating_kva: float = Field(gt=0)
    device: Id | None = Field(None, description="LV-side monitoring meter")


class Feeder(Frozen):
    id: Id
    name: str = ""
    device: Id | None = Field(None, description="Feeder bay of the substation RTU")
    length_km: float = Field(5.0, gt=0)
    resistance_ohm_per_km: float = Field(0.2, gt=0)
    transformers: list[Transformer] = Field(default_factory=list)


class Substation(Located):
    id: Id
    name: str = ""
    site: Id
    device: Id | None = Field(None, description="Substation RTU device")
    rating_kva: float = Field(10000, gt=0)
    feeders: list[Feeder] = Field(min_length=1)


class Electricity(Frozen):
    nominal_voltage_v: float = Field(230.0, gt=0, description="Phase-to-neutral, LV")
    feeder_nominal_voltage_v: float = Field(11000.0, gt=0, description="MV feeders, line")
    substations: list[Substation] = Field(default_factory=list)


# ---------------------------------------------------------------- customers


class CustomerType(StrEnum):
    RESIDENTIAL = "residential"
    COMMERCIAL = "commercial"
    INDUSTRIAL = "industrial"


class Customer(Located):
    id: Id
    name: str = ""
    type: CustomerType = CustomerType.RESIDENTIAL
    language: Literal["fr", "ar", "en"] = "fr"
    phone: str | None = Field(None, pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164")
    water_meter: Id | None = None
    zone: Id | None = None
    electricity_meter: Id | None = None
    transformer: Id | None = None
    continuous_flow_expected: bool = Field(
        False, description="Factories, cooling towers: excluded from continuous-flow leaks"
    )
    night_user: bool = Field(False, description="Large metered night user (hotel, industry)")
    occupants: int = Field(3, ge=0)


# ---------------------------------------------------------------- the field


class FieldConfig(Frozen):
    """A whole supervised field."""

    version: Literal[1] = 1
    id: Id
    name: str = ""
    timezone: str = Field("UTC", description="The utility's IANA time zone (Africa/Casablanca): its "
                                             "days, in daily figures and dashboards")
    profiles_dir: str | None = Field(
        None, description="Extra profile folder, relative to the field file"
    )
    sites: list[Site] = Field(min_length=1)
    gateways: list[Gateway] = Field(default_factory=list)
    water: Water = Water()
    electricity: Electricity = Electricity()
    customers: list[Customer] = Field(default_factory=list)
    rules: RulesConfig = RulesConfig()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as Africa/Casablanca)") from None
        return v

    @cached_property
    def devices(self) -> dict[str, tuple[Gateway, Device]]:
        """Every device by id, with its gateway."""
        return {d.id: (g, d) for g in self.gateways for d in g.devices}

    def gateway(self, gateway_id: str) -> Gateway:
        for g in self.gateways:
            if g.id == gateway_id:
                return g
        raise KeyError(f"no gateway {gateway_id!r} in field {self.id}")

    @cached_property
    def transformers(self) -> dict[str, tuple[Substation, Feeder, Transformer]]:
        return {
            t.id: (s, f, t)
            for s in self.electricity.substations
            for f in s.feeders
            for t in f.transformers
        }

    @cached_property
    def feeders(self) -> dict[str, tuple[Substation, Feeder]]:
        return {f.id: (s, f) for s in self.electricity.substations for f in s.feeders}

