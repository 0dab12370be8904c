"""Data messages sent again (``historical``) after the rules already had them.

End-to-end acknowledgement makes a gateway send again everything after the collector's
stored mark on every reconnection, and a range on the collector's request: the rules
engine may see a batch twice. It is known by ``(gateway, bd_seq, seq)``; this remembers,
per gateway and boot, which of the last ``window`` seqs were handled (one bit each), for
the last ``boots`` boots of each gateway. A seq older than the window counts as new.
Bounded: ``window / 8`` bytes per boot kept.
"""

from __future__ import annotations

from collections import OrderedDict


class SeenSeqs:
    def __init__(self, window: int = 1 << 16, boots: int = 4) -> None:
        if window < 8 or window % 8:
            raise ValueError(f"window {window} must be a positive multiple of 8")
        self.window = window
        self.boots = boots
        self._by_boot: dict[str, OrderedDict[int, list[object]]] = {}  # gw -> bd_seq -> [high, bits]

    def first_time(self, gateway: str, bd_seq: int, seq: int) -> bool:
        """Record ``seq``; False when it was recorded before (a message sent again)."""
        boots = self._by_boot.setdefault(gateway, OrderedDict())
        entry = boots.get(bd_seq)
        w = self.window
        if entry is None:
            entry = boots[bd_seq] = [seq, bytearray(w // 8)]
            while len(boots) > self.boots:
                boots.popitem(last=False)
        high: int = entry[0]  # type: ignore[assignment]
        bits: bytearray = entry[1]  # type: ignore[assignment]
        if seq > high:
            if seq - high >= w:
                bits[:] = bytes(w // 8)
            else:
                for s in range(high + 1, seq + 1):  # the window moves on: forget what falls out
                    i = s % w
                    bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
            entry[0] = seq
        elif seq <= high - w:
            return True
        i = seq % w
        mask = 1 << (i & 7)
        if bits[i >> 3] & mask:
            return False
        bits[i >> 3] |= mask
        return True

    def forget(self, gateway: str, bd_seq: int, seq: int) -> None:
        """Undo ``first_time`` for a batch whose processing round was rolled back: when the
        gateway sends it again it is new, not a duplicate (the window is not moved back)."""
        entry = self._by_boot.get(gateway, {}).get(bd_seq)
        if entry is None or seq <= entry[0] - self.window:  # type: ignore[operator]
            return
        bits: bytearray = entry[1]  # type: ignore[assignment]
        i = seq % self.window
        bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
