import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aquavolt.codec import (
    ByteOrder,
    DataType,
    all_interpretations,
    apply_scale,
    decode_raw,
    encode_raw,
    register_count,
    remove_scale,
)
from aquavolt.errors import CodecError

INT_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
    DataType.BITFIELD: (0, 2**16 - 1),
}
orders = st.sampled_from(list(ByteOrder))


@pytest.mark.parametrize("dtype", list(INT_RANGES))
@given(data=st.data(), order=orders)
def test_integers_round_trip(dtype: DataType, data: st.DataObject, order: ByteOrder) -> None:
    lo, hi = INT_RANGES[dtype]
    value = data.draw(st.integers(lo, hi))
    regs = encode_raw(value, dtype, order)
    assert len(regs) == register_count(dtype)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode_raw(regs, dtype, order) == value


@given(value=st.floats(width=32, allow_nan=False), order=orders)
def test_float32_round_trip(value: float, order: ByteOrder) -> None:
    assert decode_raw(encode_raw(value, DataType.FLOAT32, order), DataType.FLOAT32, order) == value


@given(value=st.floats(allow_nan=False), order=orders)
def test_float64_round_trip(value: float, order: ByteOrder) -> None:
    assert decode_raw(encode_raw(value, DataType.FLOAT64, order), DataType.FLOAT64, order) == value


def test_nan_survives() -> None:
    regs = encode_raw(math.nan, DataType.FLOAT32, ByteOrder.CDAB)
    assert math.isnan(decode_raw(regs, DataType.FLOAT32, ByteOrder.CDAB))  # type: ignore[arg-type]


@given(value=st.booleans(), order=orders)
def test_bool_round_trip(value: bool, order: ByteOrder) -> None:
    assert decode_raw(encode_raw(value, DataType.BOOL, order), DataType.BOOL, order) is value


@given(value=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
       order=orders)
def test_string_round_trip(value: str, order: ByteOrder) -> None:
    regs = encode_raw(value, DataType.STRING, order, length=6)
    assert len(regs) == 6
    assert decode_raw(regs, DataType.STRING, order, length=6) == value


# Known vectors: 0xAABBCCDD as the orders are documented, and a float the SDM630 sends.
@pytest.mark.parametrize(
    ("order", "regs"),
    [
        (ByteOrder.ABCD, [0xAABB, 0xCCDD]),
        (ByteOrder.BADC, [0xBBAA, 0xDDCC]),
        (ByteOrder.CDAB, [0xCCDD, 0xAABB]),
        (ByteOrder.DCBA, [0xDDCC, 0xBBAA]),
    ],
)
def test_documented_orders(order: ByteOrder, regs: list[int]) -> None:
    assert encode_raw(0xAABBCCDD, DataType.UINT32, order) == regs
    assert decode_raw(regs, DataType.UINT32, order) == 0xAABBCCDD


def test_float32_230_volts_abcd() -> None:
    hi, lo = struct.unpack(">HH", struct.pack(">f", 230.0))
    assert encode_raw(230.0, DataType.FLOAT32, ByteOrder.ABCD) == [hi, lo] == [0x4366, 0x0000]
    # the classic garbage float: right bytes, wrong word order
    assert decode_raw([0x0000, 0x4366], DataType.FLOAT32, ByteOrder.ABCD) != 230.0
    assert decode_raw([0x0000, 0x4366], DataType.FLOAT32, ByteOrder.CDAB) == 230.0


def test_int64_cdab_reverses_all_words() -> None:
    regs = encode_raw(0x1122334455667788, DataType.INT64, ByteOrder.CDAB)
    assert regs == [0x7788, 0x5566, 0x3344, 0x1122]


@pytest.mark.parametrize(
    ("value", "dtype", "why"),
    [
        (70000, DataType.UINT16, "out of range"),
        (-1, DataType.UINT32, "out of range"),
        (1.5, DataType.INT16, "needs an integer"),
        ("x", DataType.FLOAT32, "needs a number"),
        (1e39, DataType.FLOAT32, "does not fit"),
        ("é", DataType.STRING, "not ASCII"),
    ],
)
def test_encode_rejects(value: object, dtype: DataType, why: str) -> None:
    with pytest.raises(CodecError, match=why):
        encode_raw(value, dtype, ByteOrder.ABCD)  # type: ignore[arg-type]


def test_decode_rejects_wrong_count_and_width() -> None:
    with pytest.raises(CodecError, match="needs 2 registers"):
        decode_raw([1], DataType.FLOAT32)
    with pytest.raises(CodecError, match="not 16-bit"):
        decode_raw([70000], DataType.UINT16)


@given(raw=st.integers(-32768, 32767), scale=st.sampled_from([0.1, 0.01, 0.001, 10.0]),
       offset=st.sampled_from([0.0, -40.0, 5.0]))
def test_scale_inverse(raw: int, scale: float, offset: float) -> None:
    value = apply_scale(raw, scale, offset)
    assert remove_scale(value, DataType.INT16, scale, offset) == raw


def test_all_interpretations_lists_every_type_and_order() -> None:
    regs = [*encode_raw(230.0, DataType.FLOAT32, ByteOrder.CDAB), 0, 0]
    found = {(t, o): v for t, o, v in all_interpretations(regs)}
    assert found[("float32", "CDAB")] == 230.0
    assert ("int64", "DCBA") in found and ("uint16", "BADC") in found
    assert ("uint16", "CDAB") not in found  # one register has no word order
