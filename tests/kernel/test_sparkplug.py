"""The Sparkplug B codec: topics, datatypes, payload round trips, seq/bdSeq, STATE."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aquavolt import sparkplug_b_pb2 as pb
from aquavolt.sparkplug import (
    BDSEQ_METRIC,
    DataType,
    HostState,
    MessageType,
    Metric,
    Payload,
    PropertyValue,
    SparkplugError,
    Topic,
    bd_seq_metric,
    datatype_for_point,
    decode_payload,
    decode_state,
    encode_payload,
    encode_state,
    next_bd_seq,
    next_seq,
    parse_topic,
    point_properties,
    quality_of,
    seq_gap,
    state_topic,
    topic,
)


def test_topics() -> None:
    assert topic("town", MessageType.NBIRTH, "gw1") == "spBv1.0/town/NBIRTH/gw1"
    assert topic("town", MessageType.DDATA, "gw1", "pump1") == "spBv1.0/town/DDATA/gw1/pump1"
    assert state_topic("centre") == "spBv1.0/STATE/centre"
    assert parse_topic("spBv1.0/town/DCMD/gw1/pump1") == Topic(MessageType.DCMD, "town", "gw1", "pump1")
    assert parse_topic("spBv1.0/town/NCMD/gw1") == Topic(MessageType.NCMD, "town", "gw1")
    assert parse_topic("spBv1.0/STATE/centre") == Topic(MessageType.STATE, host_id="centre")
    for t in ("spBv1.0/town/DDATA/gw1/pump1", "spBv1.0/town/NDEATH/gw1", "spBv1.0/STATE/h"):
        assert str(parse_topic(t)) == t


@pytest.mark.parametrize(
    "bad",
    [
        "spAv1.0/town/NBIRTH/gw1",
        "spBv1.0/town/NBIRTH/gw1/dev",
        "spBv1.0/town/DDATA/gw1",
        "spBv1.0/town/XDATA/gw1",
        "spBv1.0/town/NBIRTH/",
        "spBv1.0/STATE/a/b",
        "spBv1.0/town",
    ],
)
def test_bad_topics(bad: str) -> None:
    with pytest.raises(SparkplugError):
        parse_topic(bad)


def test_topic_ids_are_checked() -> None:
    with pytest.raises(SparkplugError):
        topic("a/b", MessageType.NDATA, "gw")
    with pytest.raises(SparkplugError):
        topic("town", MessageType.DDATA, "gw")  # a device message needs a device
    with pytest.raises(SparkplugError):
        topic("town", MessageType.NDATA, "gw", "dev")
    with pytest.raises(SparkplugError):
        state_topic("a+b")


def test_point_datatypes() -> None:
    assert datatype_for_point("uint16") is DataType.UInt16
    assert datatype_for_point("int32") is DataType.Int32
    assert datatype_for_point("uint64") is DataType.UInt64
    assert datatype_for_point("float32") is DataType.Float
    assert datatype_for_point("double") is DataType.Double
    assert datatype_for_point("bool") is DataType.Boolean
    assert datatype_for_point("string") is DataType.String
    assert datatype_for_point("uint16", scaled=True) is DataType.Double  # 1234 * 0.1
    assert datatype_for_point("float32", scaled=True) is DataType.Float
    assert datatype_for_point("") is DataType.Double


def test_seq_and_bd_seq_wrap() -> None:
    assert next_seq(0) == 1
    assert next_seq(254) == 255
    assert next_seq(255) == 0
    assert next_bd_seq(255) == 0
    assert not seq_gap(255, 0)
    assert seq_gap(3, 5)
    with pytest.raises(SparkplugError):
        encode_payload(Payload(seq=256))
    with pytest.raises(SparkplugError):
        bd_seq_metric(256)


INT_CASES = [
    (DataType.Int8, -128),
    (DataType.Int8, 127),
    (DataType.Int16, -32768),
    (DataType.Int32, -(2**31)),
    (DataType.Int32, 2**31 - 1),
    (DataType.Int64, -(2**63)),
    (DataType.Int64, 2**63 - 1),
    (DataType.UInt8, 255),
    (DataType.UInt16, 65535),
    (DataType.UInt32, 2**32 - 1),
    (DataType.UInt64, 2**64 - 1),
    (DataType.DateTime, 1_764_547_200_000),
]


@pytest.mark.parametrize(("dt", "value"), INT_CASES)
def test_integer_round_trip(dt: DataType, value: int) -> None:
    out = decode_payload(encode_payload(Payload(metrics=[Metric(name="x", datatype=dt, value=value)])))
    assert out.metrics[0].value == value
    assert out.metrics[0].datatype is dt


def test_integer_fields_follow_the_specification() -> None:
    """Signed 8..32-bit in int_value as 32-bit two's complement; 64-bit, UInt32 and DateTime
    in long_value (as Tahu's Java and JavaScript write them)."""
    msg = pb.Payload()
    msg.ParseFromString(
        encode_payload(
            Payload(
                metrics=[
                    Metric(name="a", datatype=DataType.Int16, value=-2),
                    Metric(name="b", datatype=DataType.Int64, value=-2),
                    Metric(name="c", datatype=DataType.UInt32, value=7),
                ]
            )
        )
    )
    assert msg.metrics[0].WhichOneof("value") == "int_value" and msg.metrics[0].int_value == 2**32 - 2
    assert msg.metrics[1].long_value == 2**64 - 2
    assert msg.metrics[2].WhichOneof("value") == "long_value"
    # UInt32 written in int_value (Tahu's Python) is read too
    msg = pb.Payload()
    m = msg.metrics.add()
    m.name, m.datatype, m.int_value = "c", DataType.UInt32, 4_000_000_000
    assert decode_payload(msg.SerializeToString()).metrics[0].value == 4_000_000_000


@pytest.mark.parametrize(
    ("dt", "value"),
    [
        (DataType.Int8, 128),
        (DataType.UInt16, -1),
        (DataType.UInt32, 2**32),
        (DataType.Int16, 1.5),
        (DataType.Int32, True),
        (DataType.Boolean, 1),
        (DataType.String, 3),
        (DataType.Double, "3"),
        (DataType.DataSet, 1),
    ],
)
def test_values_outside_their_datatype_are_refused(dt: DataType, value: object) -> None:
    with pytest.raises(SparkplugError):
        encode_payload(Payload(metrics=[Metric(name="x", datatype=dt, value=value)]))  # type: ignore[arg-type]


def test_full_metric_round_trip() -> None:
    props = point_properties("m3/h", "good", writable=True)
    payload = Payload(
        timestamp=1_764_547_200_123,
        seq=7,
        metrics=(
            Metric(
                name="flow_m3h",
                alias=3,
                timestamp=1_764_547_200_000,
                datatype=DataType.Double,
                value=12.5,
                properties=props,
            ),
            Metric(name="float_v", alias=4, datatype=DataType.Float, value=0.1),
            Metric(name="running", alias=5, datatype=DataType.Boolean, value=False),
            Metric(name="label", alias=6, datatype=DataType.String, value="é pump"),
            Metric(
                name="gone",
                alias=7,
                datatype=DataType.Double,
                is_null=True,
                is_historical=True,
                properties=point_properties("", "bad"),
            ),
        ),
    )
    out = decode_payload(encode_payload(payload))
    assert out.timestamp == payload.timestamp and out.seq == 7
    flow, flt, running, label, gone = out.metrics
    assert flow == payload.metrics[0]
    assert flow.properties["engUnit"] == PropertyValue(DataType.String, "m3/h")
    assert flow.properties["Quality"] == PropertyValue(DataType.Int32, 192)
    assert flow.properties["readOnly"] == PropertyValue(DataType.Boolean, False)
    assert flt.value == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert running.value is False and label.value == "é pump"
    assert gone.is_null and gone.value is None and gone.is_historical
    assert quality_of(flow) == "good" and quality_of(gone) == "bad" and quality_of(running) is None


def test_data_messages_resolve_datatypes_by_alias() -> None:
    data = encode_payload(
        Payload(seq=1, metrics=[Metric(alias=3, timestamp=5, datatype=None, value=None, is_null=True)])
    )
    assert decode_payload(data).metrics[0].is_null
    msg = pb.Payload()
    m = msg.metrics.add()
    m.alias, m.int_value = 3, 2**32 - 1
    raw = msg.SerializeToString()
    with pytest.raises(SparkplugError):
        decode_payload(raw)  # a value whose datatype nobody said
    assert decode_payload(raw, {3: DataType.Int32}).metrics[0].value == -1
    assert decode_payload(raw, {3: DataType.UInt32}).metrics[0].value == 2**32 - 1
    with pytest.raises(SparkplugError):
        decode_payload(raw, {3: DataType.UInt16})  # 2^32-1 is no UInt16


def test_a_value_in_the_wrong_field_is_refused() -> None:
    msg = pb.Payload()
    m = msg.metrics.add()
    m.name, m.datatype, m.string_value = "x", DataType.Double, "3.5"
    with pytest.raises(SparkplugError):
        decode_payload(msg.SerializeToString())


def test_garbage_is_refused() -> None:
    with pytest.raises(SparkplugError):
        decode_payload(b"\xff\xff\xff")
    with pytest.raises(SparkplugError):
        encode_payload(Payload(metrics=[Metric(datatype=DataType.Double, value=1.0)]))  # no name, no alias


def test_birth_and_death_metrics() -> None:
    death = decode_payload(encode_payload(Payload(timestamp=1, metrics=[bd_seq_metric(42)])))
    assert death.metric(BDSEQ_METRIC).value == 42
    assert death.metric(BDSEQ_METRIC).datatype is DataType.Int64
    assert death.seq is None  # an NDEATH has no seq
    with pytest.raises(KeyError):
        death.metric("nope")


def test_state() -> None:
    assert decode_state(encode_state(HostState(True, 17))) == HostState(True, 17)
    assert decode_state(b'{"online": false, "timestamp": 5}') == HostState(False, 5)
    for bad in (b"nope", b'{"online": "yes"}', b'{"online": true, "timestamp": -1}', b"[]"):
        with pytest.raises(SparkplugError):
            decode_state(bad)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just(DataType.Int32), st.integers(-(2**31), 2**31 - 1)),
            st.tuples(st.just(DataType.Int64), st.integers(-(2**63), 2**63 - 1)),
            st.tuples(st.just(DataType.UInt64), st.integers(0, 2**64 - 1)),
            st.tuples(st.just(DataType.Double), st.floats(allow_nan=False)),
            st.tuples(st.just(DataType.Boolean), st.booleans()),
            st.tuples(st.just(DataType.String), st.text(max_size=20)),
        ),
        max_size=8,
    ),
    st.integers(0, 255),
)
def test_round_trip_property(values: list[tuple[DataType, object]], seq: int) -> None:
    metrics = tuple(
        Metric(name=f"m{i}", alias=i, datatype=dt, value=v)  # type: ignore[arg-type]
        for i, (dt, v) in enumerate(values)
    )
    assert decode_payload(encode_payload(Payload(seq=seq, metrics=metrics))) == Payload(
        seq=seq, metrics=metrics
    )
