"""The register planner: which Modbus requests read a device's points.

Adjacent points of one table are merged into one request while the hole between them is at
most ``max_gap`` registers and the request stays within ``max_size`` registers (the
profile's ``max_registers_per_read``, 125 by default). A device that answers "illegal data
address" to a merged request gets it split (:meth:`Plan.split`), and the split is kept for
every later poll of that device.

Pure functions and a small mutable plan: no I/O here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aquavolt.codec import ByteOrder, DataType, Value, apply_scale, decode_raw
from aquavolt.errors import CodecError
from aquavolt.profiles import ModbusPoint, ModbusProfile, RegisterType

MAX_REGISTERS = 125
MAX_BITS = 2000
DEFAULT_MAX_GAP = 8


@dataclass(frozen=True)
class Request:
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``."""

    table: RegisterType
    start: int
    count: int
    points: tuple[ModbusPoint, ...]

    @property
    def end(self) -> int:
        return self.start + self.count


def plan_requests(
    profile: ModbusProfile,
    points: Iterable[ModbusPoint],
    max_gap: int = DEFAULT_MAX_GAP,
    max_size: int | None = None,
) -> list[Request]:
    """Merge the points into as few requests as the gap and size limits allow."""
    size = min(max_size or MAX_REGISTERS, profile.max_registers_per_read)
    by_table: dict[RegisterType, list[tuple[int, ModbusPoint]]] = {}
    for p in points:
        by_table.setdefault(p.table, []).append((profile.protocol_address(p), p))
    out: list[Request] = []
    for table in sorted(by_table, key=lambda t: t.value):
        items = sorted(by_table[table], key=lambda ap: ap[0])
        limit = MAX_BITS if table.is_bit else size
        start, end, members = -1, -1, list[ModbusPoint]()
        for addr, p in items:
            p_end = addr + p.count
            if members and addr - end <= max_gap and max(end, p_end) - start <= limit:
                end = max(end, p_end)
                members.append(p)
                continue
            if members:
                out.append(Request(table, start, end - start, tuple(members)))
            start, end, members = addr, p_end, [p]
        if members:
            out.append(Request(table, start, end - start, tuple(members)))
    return out


def split_request(profile: ModbusProfile, req: Request) -> list[Request]:
    """Split a refused request into two halves by points (one point: nothing to split)."""
    if len(req.points) <= 1:
        return [req]
    half = len(req.points) // 2
    parts = []
    for group in (req.points[:half], req.points[half:]):
        parts.extend(plan_requests(profile, group, max_gap=0, max_size=req.count))
    return parts


@dataclass
class Plan:
    """A device's current requests for one poll group; remembers splits."""

    profile: ModbusProfile
    requests: list[Request]
    splits: int = 0
    history: list[tuple[int, int, str]] = field(default_factory=list)
    _decoders: dict[int, tuple[Request, Decoder]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, profile: ModbusProfile, points: Sequence[ModbusPoint], max_gap: int = DEFAULT_MAX_GAP,
              max_size: int | None = None) -> Plan:
        return cls(profile, plan_requests(profile, points, max_gap, max_size))

    def split(self, req: Request) -> list[Request]:
        """Replace ``req`` by smaller requests (kept for later polls); return them."""
        parts = split_request(self.profile, req)
        if parts == [req]:
            return parts
        i = self.requests.index(req)
        self.requests[i : i + 1] = parts
        self.splits += 1
        self.history.append((req.start, req.count, req.table.value))
        return parts

    def decoder(self, req: Request) -> Decoder:
        """The compiled decoder of one of this plan's requests (made on first use)."""
        hit = self._decoders.get(id(req))
        if hit is None or hit[0] is not req:
            hit = self._decoders[id(req)] = (req, compile_request(self.profile, req))
        return hit[1]


def decode_request(profile: ModbusProfile, req: Request, raw: Sequence[int | bool]) -> dict[str, Value | str]:
    """Decode each point of a request from its raw registers or bits.

    A point whose registers cannot be decoded maps to an error string prefixed ``!``.
    """
    out: dict[str, Value | str] = {}
    for p in req.points:
        off = profile.protocol_address(p) - req.start
        if req.table.is_bit:
            out[p.name] = bool(raw[off])
            continue
        regs = [int(r) for r in raw[off : off + p.count]]
        try:
            value = decode_raw(regs, p.type, profile.order_of(p), p.length)
        except CodecError as exc:
            out[p.name] = f"!{exc}"
            continue
        out[p.name] = apply_scale(value, p.scale, p.offset)
    return out


_FAST_FORMAT = {
    DataType.INT16: "h", DataType.UINT16: "H", DataType.INT32: "i", DataType.UINT32: "I",
    DataType.INT64: "q", DataType.UINT64: "Q", DataType.FLOAT32: "f", DataType.FLOAT64: "d",
    DataType.BOOL: "H", DataType.BITFIELD: "H",
}

Decoder = Callable[[Sequence[int | bool]], dict[str, Value | str]]


def compile_request(profile: ModbusProfile, req: Request) -> Decoder:
    """A decoder for one request's answers, equal to :func:`decode_request` but cheaper.

    Registers are packed once per answer and each point is unpacked in place with a
    precompiled struct (big-endian words, i.e. ABCD, or any order of a one-register value);
    anything else (strings, word or byte swaps) and any answer the fast path cannot take
    (a register outside 16 bits) goes through :func:`decode_request` and the kernel's codec.
    """
    if req.table.is_bit:
        offsets = [(p.name, profile.protocol_address(p) - req.start) for p in req.points]

        def bits(raw: Sequence[int | bool]) -> dict[str, Value | str]:
            return {name: bool(raw[off]) for name, off in offsets}
        return bits

    fast: list[tuple[str, Callable[[bytes, int], tuple[Any, ...]], int, bool, float, float, bool]] = []
    slow: list[ModbusPoint] = []
    for p in req.points:
        fmt = _FAST_FORMAT.get(p.type)
        order = profile.order_of(p)
        if fmt is None or not (order is ByteOrder.ABCD or (p.count == 1 and order is ByteOrder.CDAB)):
            slow.append(p)
            continue
        byte_offset = 2 * (profile.protocol_address(p) - req.start)
        fast.append((p.name, struct.Struct(">" + fmt).unpack_from, byte_offset, p.type is DataType.BOOL,
                     p.scale, p.offset, p.scale != 1 or p.offset != 0))
    pack = struct.Struct(f">{req.count}H").pack
    rest = Request(req.table, req.start, req.count, tuple(slow)) if slow else None

    def registers(raw: Sequence[int | bool]) -> dict[str, Value | str]:
        try:
            buf = pack(*raw)
        except struct.error:
            return decode_request(profile, req, raw)
        out: dict[str, Value | str] = {}
        for name, unpack, off, is_bool, scale, offset, scaled in fast:
            value = unpack(buf, off)[0]
            if is_bool:
                out[name] = bool(value)
            elif scaled:
                out[name] = value * scale + offset
            else:
                out[name] = value
        if rest is not None:
            out.update(decode_request(profile, rest, raw))
            return {p.name: out[p.name] for p in req.points}  # the points' order, as decode_request
        return out
    return registers


def bit_flags(point: ModbusPoint, value: Value) -> dict[str, bool]:
    """The named flags of a bitfield point's value."""
    if not point.bits or not isinstance(value, int) or isinstance(value, bool):
        return {}
    return {name: bool(value >> bit & 1) for bit, name in sorted(point.bits.items())}
