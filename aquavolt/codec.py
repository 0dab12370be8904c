"""Encoding and decoding of values to and from 16-bit Modbus registers.

One codec serves both ends: the simulators encode with it and the edge agents decode
with it, so a byte-order mistake cannot hide on one side.

Byte and word order for multi-register values, named as the bytes of a 32-bit value
``0xAABBCCDD`` appear on the wire:

=====  =========================  ================================
order  registers of 0xAABBCCDD    also called
=====  =========================  ================================
ABCD   [0xAABB, 0xCCDD]           big endian (Modbus default)
BADC   [0xBBAA, 0xDDCC]           big endian, byte swap
CDAB   [0xCCDD, 0xAABB]           little endian word order, "word swap"
DCBA   [0xDDCC, 0xBBAA]           little endian
=====  =========================  ================================

64-bit values extend the same rule to four registers (CDAB reverses the word order).
Single-register values honour the byte part of the order (BADC and DCBA swap bytes).
"""

from __future__ import annotations

import math
import struct
from enum import StrEnum
from typing import Final

from aquavolt.errors import CodecError


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOL = "bool"
    BITFIELD = "bitfield"
    STRING = "string"


class ByteOrder(StrEnum):
    ABCD = "ABCD"
    BADC = "BADC"
    CDAB = "CDAB"
    DCBA = "DCBA"


_STRUCT: Final[dict[DataType, str]] = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
    DataType.BOOL: ">H",
    DataType.BITFIELD: ">H",
}

_INT_RANGE: Final[dict[DataType, tuple[int, int]]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
    DataType.BITFIELD: (0, 2**16 - 1),
}

Value = bool | int | float | str


def register_count(dtype: DataType, length: int = 1) -> int:
    """Registers one value of ``dtype`` occupies (``length`` is the string's registers)."""
    if dtype is DataType.STRING:
        return length
    return struct.calcsize(_STRUCT[dtype]) // 2


def _to_registers(raw: bytes, order: ByteOrder) -> list[int]:
    """Big-endian bytes of a value to registers in the given order."""
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in (ByteOrder.CDAB, ByteOrder.DCBA):
        words.reverse()
    if order in (ByteOrder.BADC, ByteOrder.DCBA):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def _from_registers(registers: list[int], order: ByteOrder) -> bytes:
    """Registers in the given order back to the big-endian bytes of the value."""
    words = [r.to_bytes(2, "big") for r in registers]
    if order in (ByteOrder.BADC, ByteOrder.DCBA):
        words = [w[::-1] for w in words]
    if order in (ByteOrder.CDAB, ByteOrder.DCBA):
        words.reverse()
    return b"".join(words)


def encode_raw(
    value: Value, dtype: DataType, order: ByteOrder = ByteOrder.ABCD, length: int = 1
) -> list[int]:
    """Encode a raw (unscaled) value into registers."""
    if dtype is DataType.STRING:
        if not isinstance(value, str):
            raise CodecError(f"string point needs a str, got {type(value).__name__}")
        if not value.isascii():
            raise CodecError(f"string {value!r} is not ASCII")
        data = value.encode("ascii")
        if len(data) > 2 * length:
            raise CodecError(f"string {value!r} longer than {2 * length} bytes")
        data = data.ljust(2 * length, b"\x00")
        return _to_registers(data, ByteOrder.BADC if order in (ByteOrder.BADC, ByteOrder.DCBA)
                             else ByteOrder.ABCD)
    fmt = _STRUCT[dtype]
    if dtype is DataType.BOOL:
        value = 1 if value else 0
    if dtype in (DataType.FLOAT32, DataType.FLOAT64):
        if isinstance(value, str | bool):
            raise CodecError(f"{dtype} point needs a number, got {value!r}")
        fval = float(value)
        if dtype is DataType.FLOAT32 and math.isfinite(fval) and abs(fval) > 3.4028234663852886e38:
            raise CodecError(f"{fval} does not fit in float32")
        raw = struct.pack(fmt, fval)
    else:
        if isinstance(value, str) or (isinstance(value, float) and not value.is_integer()):
            raise CodecError(f"{dtype} point needs an integer, got {value!r}")
        ival = int(value)
        lo, hi = _INT_RANGE.get(dtype, (0, 1))
        if not lo <= ival <= hi:
            raise CodecError(f"{ival} out of range for {dtype} [{lo}, {hi}]")
        raw = struct.pack(fmt, ival)
    return _to_registers(raw, order)


def decode_raw(
    registers: list[int], dtype: DataType, order: ByteOrder = ByteOrder.ABCD, length: int = 1
) -> Value:
    """Decode registers into a raw (unscaled) value."""
    need = register_count(dtype, length)
    if len(registers) != need:
        raise CodecError(f"{dtype} needs {need} registers, got {len(registers)}")
    for r in registers:
        if not 0 <= r <= 0xFFFF:
            raise CodecError(f"register value {r} is not 16-bit")
    if dtype is DataType.STRING:
        data = _from_registers(
            registers, ByteOrder.BADC if order in (ByteOrder.BADC, ByteOrder.DCBA) else ByteOrder.ABCD
        )
        return data.rstrip(b"\x00 ").decode("ascii", errors="replace")
    value = struct.unpack(_STRUCT[dtype], _from_registers(registers, order))[0]
    if dtype is DataType.BOOL:
        return bool(value)
    return value  # type: ignore[no-any-return]


def apply_scale(raw: Value, scale: float, offset: float) -> Value:
    """Engineering value = raw * scale + offset (bools and strings pass through)."""
    if isinstance(raw, bool | str) or (scale == 1 and offset == 0):
        return raw
    return raw * scale + offset


def remove_scale(value: Value, dtype: DataType, scale: float, offset: float) -> Value:
    """Raw value for an engineering value: the inverse of :func:`apply_scale`."""
    if isinstance(value, bool | str) or (scale == 1 and offset == 0):
        return value
    raw = (float(value) - offset) / scale
    if dtype in (DataType.FLOAT32, DataType.FLOAT64):
        return raw
    return round(raw)


def all_interpretations(registers: list[int]) -> list[tuple[str, str, Value]]:
    """Every reading of the first registers: (type, order, value) for each type and order.

    For the field engineer with a new meter and no documentation (``aquavolt edge probe``).
    """
    out: list[tuple[str, str, Value]] = []
    for dtype in DataType:
        if dtype in (DataType.STRING, DataType.BOOL, DataType.BITFIELD):
            continue
        n = register_count(dtype)
        if len(registers) < n:
            continue
        for order in ByteOrder:
            if n == 1 and order in (ByteOrder.CDAB, ByteOrder.DCBA):
                continue
            out.append((dtype.value, order.value, decode_raw(registers[:n], dtype, order)))
    out.append(("string", "ABCD", decode_raw(registers, DataType.STRING, ByteOrder.ABCD,
                                              len(registers))))
    return out
