"""The collector's Sparkplug side without a broker (``collector.sparkplug``): a node's data
becomes the very lines an aquavolt gateway's would, and the sessions kept in the state folder
let a restarted collector read aliased data without a rebirth. The end-to-end tests against
Eclipse Tahu's edge node are in tests/sparkplug/."""

from __future__ import annotations

from pathlib import Path

from aquavolt.collector.convert import Router
from aquavolt.collector.sparkplug import SparkplugIntake
from aquavolt.config import load_field
from aquavolt.sparkplug import DataType, Metric, Payload, bd_seq_metric, encode_payload
from aquavolt.wire import Batch, Reading, Topics, encode

FIELD = Path(__file__).parents[1] / "sparkplug" / "field.yaml"
T0 = 1_790_000_000_000
G, N = "spBv1.0/Plant1", "PLC-7"


def _intake(state: Path) -> SparkplugIntake:
    topics = Topics("aquavolt/v1")
    return SparkplugIntake(load_field(FIELD), topics, Router(topics, now_ms=lambda: T0), "centre", state)


def _p(seq: int, *metrics: Metric) -> bytes:
    return encode_payload(Payload(timestamp=T0, seq=seq, metrics=metrics))


def test_same_lines_as_an_aquavolt_gateway_and_sessions_kept(tmp_path: Path) -> None:
    state = tmp_path / "sparkplug.json"
    a = _intake(state)
    assert a.filters == ["spBv1.0/Plant1/#"] and a.state_topic == "spBv1.0/STATE/centre"
    a.take(f"{G}/NBIRTH/{N}", _p(0, bd_seq_metric(0)), T0)
    got = a.take(f"{G}/DBIRTH/{N}/Meter1", _p(1, Metric(name="Flow/Rate", alias=4, datatype=DataType.Float,
                                                        value=2.5)), T0)
    assert got.lines[0].startswith("device_status,device=fm-1,gateway=gw-plc ")
    assert got.lines[1:] == ["telemetry,device=fm-1,gateway=gw-plc,point=flow_lps value=2.5,quality=192i "
                             f"{T0}"] and got.readings == 1
    assert state.exists()

    b = _intake(state)  # a restart
    got = b.take(f"{G}/DDATA/{N}/Meter1", _p(2, Metric(alias=4, datatype=DataType.Float, value=3.0)), T0 + 1)
    own = Router(Topics("aquavolt/v1")).convert("aquavolt/v1/gw/gw-plc/dev/fm-1/data", encode(Batch(
        gateway="gw-plc", device="fm-1", seq=1, readings=[Reading(point="flow_lps", value=3.0, ts_ms=T0)])))
    assert got.lines == own.lines and not got.dead and not got.commands and b.gaps == 0
    assert b.state(True) == b'{"online":true,"timestamp":%d}' % b.since_ms
