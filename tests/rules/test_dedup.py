"""A batch sent again after a broker restart or a resend request is known by (gateway,
bd_seq, seq) and not given to the rules twice; what is new always is."""

from aquavolt.rules.dedup import SeenSeqs


def test_a_batch_sent_again_is_seen_once() -> None:
    seen = SeenSeqs(window=64, boots=2)
    assert all(seen.first_time("gw", 0, s) for s in range(10))
    assert not any(seen.first_time("gw", 0, s) for s in range(10))  # resent after the mark
    assert seen.first_time("gw2", 0, 3) and seen.first_time("gw", 1, 3)  # other gateway, other boot
    assert seen.first_time("gw", 0, 200)  # far ahead: the window moves on
    assert seen.first_time("gw", 0, 5)  # older than the window: counted as new
    assert not seen.first_time("gw", 0, 200)
    assert seen.first_time("gw", 0, 199) and not seen.first_time("gw", 0, 199)
    seen.first_time("gw", 2, 0)  # a third boot: the oldest (0) is forgotten
    assert seen.first_time("gw", 0, 200)


def test_a_forgotten_seq_is_new_again_and_only_that_one():
    from aquavolt.rules.dedup import SeenSeqs

    s = SeenSeqs(window=64)
    assert s.first_time("gw", 1, 10) and s.first_time("gw", 1, 11)
    s.forget("gw", 1, 10)
    s.forget("gw", 2, 10)  # a boot never seen: nothing to forget
    assert s.first_time("gw", 1, 10) and not s.first_time("gw", 1, 11)
    assert not s.first_time("gw", 1, 10)
