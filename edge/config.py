"""The agent's own settings (everything that is not the field): a frozen model with units in
the names, read from an optional YAML file (``--config``) and checked at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aquavolt.config import format_path, load_field, load_model, load_profiles
from aquavolt.errors import ConfigError, ConfigIssue
from aquavolt.field import FieldConfig, Gateway, Site
from aquavolt.fieldcheck import cross_check
from aquavolt.profiles import PROFILES_DIR, ModbusProfile, OpcuaProfile
from aquavolt.signing import public_key_from_text


class EdgeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    store_max_mb: float = Field(256.0, gt=0, description="Bound of the on-disk queue (payload bytes)")
    store_max_age_s: float = Field(7 * 86400.0, gt=0, description="Oldest message kept (clock seconds)")
    store_synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL", description="NORMAL survives a crash or kill -9; FULL also a power cut (fsync per commit)"
    )
    max_silence_s: float = Field(900.0, gt=0, description="Heartbeat: send a point unchanged after this")
    health_interval_s: float = Field(60.0, gt=0, description="Health period (clock seconds)")
    max_parallel_devices: int = Field(64, ge=1, description="Devices polled at the same time")
    stagger_s: float = Field(1.0, ge=0, description="Spread of the devices' first polls (wall s, at most)")
    register_gap: int = Field(8, ge=0, le=125, description="Largest hole merged into one Modbus read")
    breaker_base_s: float = Field(1.0, gt=0, description="First backoff of a failing device (wall s)")
    breaker_max_s: float = Field(60.0, gt=0, description="Longest backoff of a failing device (wall s)")
    # OPC-UA (server trust is per bus, in the field file: server_certificates, server_fingerprints,
    # trust_on_first_use)
    opcua_reconnect_max_s: float = Field(
        5.0, gt=0, le=10.0, description="Longest wait between reconnections to an OPC-UA server (wall s): "
        "a server back after any outage is polled again within it")
    live_window: int = Field(1000, ge=1, description="Live messages awaiting PUBACK at most")
    replay_window: int = Field(100, ge=1, description="Replayed messages awaiting PUBACK at most")
    replay_max_msgs_per_s: float = Field(0.0, ge=0, description="Replay pace limit; 0: window only")
    bitfield_flags: bool = Field(True, description="Also send each named bit of a bitfield as a bool")
    commit_interval_ms: float = Field(50.0, ge=0, le=1000,
                                      description="Batches polled within this share one queue commit")
    command_issuers: dict[str, str] = Field(
        default_factory=dict,
        description="Trusted command issuers: key id -> Ed25519 public key (base64, from "
                    "'aquavolt rules keygen'); no issuer: every command is refused")
    command_max_age_s: float = Field(30.0, gt=0, le=3600,
                                     description="Freshness window: a command issued further than this "
                                                 "from the gateway's clock (either way) is refused")
    command_min_interval_s: float = Field(2.0, ge=0, le=3600,
                                          description="Rate limit: at most one command per point in this "
                                                      "time (clock seconds)")
    command_seen_max: int = Field(100_000, ge=100,
                                  description="Command ids remembered (replay refusal) at most")

    @field_validator("command_issuers")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        for issuer, text in v.items():
            try:
                public_key_from_text(text)
            except ValueError as exc:
                raise ValueError(f"command_issuers.{issuer}: {exc}") from None
        return v


@dataclass(frozen=True)
class GatewayConfig:
    """One gateway with the profiles of its devices."""

    source: Path
    gateway: Gateway
    profiles: dict[str, ModbusProfile | OpcuaProfile]
    field_id: str = "gateway"  # the field's id: the default Sparkplug group id


def load_gateway(path: Path | str, gateway_id: str | None, profiles_dir: Path | None = None) -> GatewayConfig:
    """A gateway from a field file (``gateway_id`` given) or from a file holding one gateway.

    Raises ConfigError naming the file, the path inside it and the reason.
    """
    path = Path(path)
    if gateway_id is not None:
        loaded = load_field(path)
        ids = [g.id for g in loaded.field.gateways]
        if gateway_id not in ids:
            raise ConfigError([ConfigIssue(str(path), "gateways", f"no gateway {gateway_id!r} (has {ids})")])
        return GatewayConfig(path, loaded.field.gateway(gateway_id), loaded.profiles, loaded.field.id)
    gw = load_model(path, Gateway)
    dirs = [PROFILES_DIR] + ([profiles_dir] if profiles_dir else [])
    profiles = load_profiles(dirs)
    field = FieldConfig(id="gateway", sites=[Site(id=gw.site)], gateways=[gw])
    problems = [
        ConfigIssue(str(path), format_path(loc[2:]), why)
        for loc, why in cross_check(field, profiles) if loc[:2] == ("gateways", 0)
    ]
    if problems:
        raise ConfigError(problems)
    return GatewayConfig(path, gw, profiles)


def load_settings(path: Path | str | None) -> EdgeSettings:
    if path is None:
        return EdgeSettings()
    return load_model(path, EdgeSettings)


def example_settings() -> str:
    """The default settings as YAML (documented in edge/README.md)."""
    return yaml.safe_dump(EdgeSettings().model_dump(), sort_keys=False)
