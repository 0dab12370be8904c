"""A simulated clock whose epoch a launcher writes once every process is up: held one
second before the start until then, then shared through the spec by every process."""

from __future__ import annotations

import time

from aquavolt.clock import SimClock, clock_from_spec, parse_instant, write_epoch_file

START = parse_instant("2026-06-01T00:00:00Z")


def test_clock_holds_until_the_epoch_file_is_written(tmp_path):
    path = str(tmp_path / "epoch")
    clock = SimClock(START, 600.0, epoch_file=path)
    other = clock_from_spec(clock.spec())
    assert isinstance(other, SimClock) and other.epoch_file == path
    assert clock.now() == START - 1.0 and other.now() == START - 1.0
    time.sleep(0.05)
    assert clock.now() == START - 1.0  # still held: nothing written
    write_epoch_file(path, time.time() - 1.0)  # started a wall second ago
    time.sleep(0.03)
    for c in (clock, other):
        assert 590.0 < c.now() - START < 700.0
        assert not c.pending and "epoch=" in c.spec() and "epoch_file" not in c.spec()


def test_a_given_epoch_wins_over_the_file(tmp_path):
    clock = SimClock(START, 10.0, epoch=time.time(), epoch_file=str(tmp_path / "never"))
    assert not clock.pending and abs(clock.now() - START) < 5.0
