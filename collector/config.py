"""The collector's settings: a frozen model, from an optional YAML file (``--config``) with
command-line flags on top. Connection URLs come from ``aquavolt.settings``.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aquavolt.wire import MAX_PAYLOAD_BYTES


class CollectorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mqtt_url: str | None = Field(None, description="Default: AQUAVOLT_MQTT_URL, else mqtt://127.0.0.1:1883")
    influx_url: str | None = Field(None, description="Default: AQUAVOLT_INFLUX_URL, else 1.x on :8086")
    state_dir: Path = Field(Path("var/collector"), description="Client id and dead letters")
    client_id: str | None = Field(None, description="Default: made once and kept in state_dir")
    share_group: str | None = Field(None, description="MQTT 5 shared subscription group")
    metrics_port: int = Field(9108, ge=0, le=65535, description="0: no /metrics endpoint")
    batch_points: int = Field(5000, ge=1, le=100_000, description="Write when a batch holds this many")
    flush_interval_ms: int = Field(200, ge=1, le=60_000, description="...or once this old")
    max_concurrent_writes: int = Field(4, ge=1, le=16, description="HTTP writes in flight at once")
    gzip_level: int | None = Field(
        None, ge=0, le=9, description="0: send uncompressed; default: 0 to an InfluxDB on this "
        "machine (loopback: compressing costs CPU on both sides for no transfer saved), else 1")
    max_backoff_s: float = Field(10.0, gt=0, le=300)
    session_expiry_s: int = Field(7 * 86400, ge=60, description="Broker keeps the session this long")
    receive_maximum: int = Field(1000, ge=1, le=65535, description="MQTT 5 Receive Maximum")
    max_inbox_messages: int = Field(2000, ge=10, description="Backpressure threshold (memory bound)")
    stats_interval_s: float = Field(10.0, gt=0, description="collector_stats period")
    deadletter_max_bytes: int = Field(50_000_000, ge=1000)
    shutdown_timeout_s: float = Field(10.0, ge=0)
    stuck_after_s: float = Field(30.0, gt=0, le=3600,
                                 description="/health fails when work has waited this long (wall s) "
                                 "with nothing written")
    max_future_s: float = Field(
        300.0, gt=0, le=10 * 365 * 86400,
        description="Refuse (dead-letter) data stamped more than this many event seconds ahead "
        "of the collector's clock (the wall clock; in a simulated run, the simulated time when "
        "it is ahead of the wall)")
    max_payload_bytes: int = Field(
        MAX_PAYLOAD_BYTES, ge=1024, le=MAX_PAYLOAD_BYTES,
        description="Refuse (dead-letter) a larger payload before parsing it")
    field: Path | None = Field(
        None, description="Field file: its sparkplug gateways' edge nodes are read too (spBv1.0), "
        "and the collector publishes its STATE as their primary host application")
    sparkplug_host_id: str = Field("aquavolt", pattern=r"^[^/+#]{1,64}$",
                                   description="Host id of spBv1.0/STATE/{host_id}")
    event_time_rollups: bool = Field(
        False, description="Make the hourly and daily rollups on event time, once written "
        "(simulated fields, whose timestamps the wall-clock continuous queries never see)")

    @field_validator("share_group", "client_id")
    @classmethod
    def _no_wildcards(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v):
            raise ValueError("letters, digits, '_', '.', '-' only (1 to 64)")
        return v
