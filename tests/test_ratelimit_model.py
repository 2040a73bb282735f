"""The rate-limiter models the simulator and the reference upstream share, on a manual clock."""

from __future__ import annotations

import math

import pytest

from stream.devkit.ratelimit import FixedWindow, TokenBucket, whole_seconds


def test_a_token_bucket_lets_a_burst_through_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(0.0)  # full, whatever its size
    assert [bucket.take(10.0, 3.0, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(10.0, 3.0, 0.0) == pytest.approx(0.1)  # the next token in 1/rate
    assert bucket.take(10.0, 3.0, 0.1) == 0.0
    assert bucket.take(10.0, 3.0, 10.0) == 0.0  # a long idle refills up to the size only
    assert bucket.tokens == pytest.approx(2.0)


def test_a_call_overtaken_on_its_way_refills_nothing() -> None:
    bucket = TokenBucket(0.0, tokens=0.0)
    bucket.refill(10.0, 5.0, 0.3)
    bucket.refill(10.0, 5.0, 0.2)  # arrived after one sent later
    assert bucket.tokens == pytest.approx(3.0)


def test_strict_spacing_is_a_bucket_of_one() -> None:
    bucket = TokenBucket(0.0, tokens=1.0)
    assert bucket.take(100.0, 1.0, 0.0) == 0.0
    assert bucket.take(100.0, 1.0, 0.005) > 0  # within 1/rate of the last one
    assert bucket.take(100.0, 1.0, 0.010) == 0.0


def test_no_rate_keeps_the_bucket_full_for_a_rate_set_later() -> None:
    bucket = TokenBucket(0.0, tokens=0.0)
    assert bucket.take(0.0, 4.0, 1.0) == 0.0
    assert bucket.tokens == 4.0


def test_a_fixed_window_counts_its_quota_and_tells_the_time_to_its_end() -> None:
    window = FixedWindow(0.0)
    assert window.take(2, 10.0, 1.0) == (True, 9.0, 1)
    assert window.take(2, 10.0, 2.0) == (True, 8.0, 0)
    assert window.take(2, 10.0, 3.5) == (False, 6.5, 0)
    assert window.take(2, 10.0, 25.0) == (True, 5.0, 1)  # windows stay aligned to the start


@pytest.mark.parametrize(("wait", "sent"), [(0.001, 1), (1.0, 1), (1.2, 2), (9.5, 10), (0.0, 1)])
def test_waits_are_sent_in_whole_seconds_rounded_up(wait: float, sent: int) -> None:
    assert whole_seconds(wait) == sent
    assert whole_seconds(wait) >= math.ceil(wait)
