"""The limiter's parts, each on its own, on a manual clock (the whole: test_limiter.py)."""

from __future__ import annotations

import math

import pytest
from support import ManualClock

from stream.processors.limiter.admission import Admission
from stream.processors.limiter.concurrency import (
    BACKOFF_BASE_S,
    BETA_MAX,
    BETA_MIN,
    OUTAGE_STREAK,
    ConcurrencyLimit,
)
from stream.processors.limiter.estimator import (
    CRUISE_MARGIN,
    PROBE_MAX,
    PROBE_WAIT_MIN_S,
    RateEstimator,
    fit_refill,
)
from stream.processors.limiter.pacer import LATENESS_ALLOWANCE, TIMER_LATENESS_MAX_S, Pacer
from stream.processors.limiter.pause import Pauses
from stream.processors.limiter.quota import QUOTA_MIN_RATE, Quota, QuotaPace, parse_quota

# ---------------------------------------------------------------------------- quota headers


def test_quota_headers_in_each_format() -> None:
    assert parse_quota({}) is None
    assert parse_quota({"x-ratelimit-remaining": "7"}) is None  # no reset: nothing to pace to
    assert parse_quota(
        {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "7", "x-ratelimit-reset": "30"}
    ) == Quota(7, 30, 60, None)
    unix = {"x-ratelimit-remaining": "7", "x-ratelimit-reset": str(int(1e9 + 120))}
    assert parse_quota(unix, now_unix=1e9 + 100) == Quota(7, 20, None, None)
    assert parse_quota(
        {"ratelimit-limit": "100, 100;w=60", "ratelimit-remaining": "42", "ratelimit-reset": "9"}
    ) == Quota(42, 9, 100, 60)
    structured = {"ratelimit": '"default";r=50;t=30', "ratelimit-policy": '"default";q=100;w=60'}
    assert parse_quota(structured) == Quota(50, 30, 100, 60)
    assert parse_quota({"x-ratelimit-remaining": "many", "x-ratelimit-reset": "30"}) is None


def test_the_quota_left_is_spent_evenly_until_the_reset() -> None:
    quota = QuotaPace()
    assert quota.current(0.0) is None
    assert quota.on_answer(0.0, Quota(remaining=51, reset_s=5.0), overtaken=0, in_flight=1) is None
    assert quota.current(0.0) == pytest.approx(50 / 5.0)  # less the call in flight
    assert quota.current(5.0) is None  # the window ended and the headers named no limit


def test_an_exhausted_quota_asks_for_a_pause_until_the_reset() -> None:
    quota = QuotaPace()
    pause = quota.on_answer(1.0, Quota(0, 4.0, limit=100, window_s=10.0), 0, 0)
    assert pause == 5.0
    assert quota.current(1.0) == pytest.approx(100 / 10.0)  # the next window's rate
    assert quota.current(6.0) == pytest.approx(100 / 10.0)  # kept until a fresh header


def test_a_quota_with_nothing_spendable_paces_at_the_minimum() -> None:
    quota = QuotaPace()
    assert quota.on_answer(0.0, Quota(remaining=1, reset_s=3.0), 0, in_flight=1) is None
    assert quota.current(0.0) == QUOTA_MIN_RATE


# ---------------------------------------------------------------------------- pauses


def test_pauses_count_once_and_total_their_overlap_once() -> None:
    clock = ManualClock()
    pauses = Pauses(clock.monotonic)
    pauses.hold(2.0)
    clock.now = 1.0
    pauses.hold(3.0)  # extends the running one
    pauses.hold(2.5)  # within it: nothing
    assert (pauses.until, pauses.count, pauses.total, pauses.last) == (3.0, 1, 3.0, 1.0)
    clock.now = 4.0
    pauses.hold(5.0)
    assert (pauses.count, pauses.total) == (2, 4.0)


# ---------------------------------------------------------------------------- the pacer


def test_the_pacer_spaces_calls_and_keeps_to_its_schedule_when_timers_are_late() -> None:
    pacer = Pacer()
    assert not pacer.holds(0.0)
    pacer.grant(0.0, 100.0)
    assert pacer.holds(0.005)
    assert pacer.bound_at == 0.005
    late = 0.002
    for n in range(1, 50):  # every timer fires 2 ms late
        pacer.holds(n * 0.01 - 0.001)
        pacer.grant(n * 0.01 + late, 100.0)
    # Learnt lateness is made up: the schedule stays on the 10 ms grid, not 12 ms.
    assert pacer.next_send == pytest.approx(0.5, abs=late)


def test_a_stall_does_not_let_the_next_call_come_early() -> None:
    pacer = Pacer()
    pacer.grant(0.0, 100.0)
    pacer.grant(1.0, 100.0)  # granted long after it was due (a wait for a slot)
    slack = LATENESS_ALLOWANCE * TIMER_LATENESS_MAX_S
    assert pacer.next_send >= 1.01 - slack


def test_an_unpaced_grant_schedules_nothing() -> None:
    pacer = Pacer()
    pacer.grant(0.0, math.inf)
    assert not pacer.holds(0.0)


# ---------------------------------------------------------------------------- concurrency


def limit(initial: int = 8, *, clock: ManualClock | None = None) -> ConcurrencyLimit:
    return ConcurrencyLimit(1, 64, initial, Pauses((clock or ManualClock()).monotonic), 0.0)


def test_slow_start_adds_a_slot_per_success_in_use() -> None:
    concurrency = limit(4)
    started = 0
    while concurrency.slot_open():
        started += 1
        concurrency.take(started)
    for seq in range(1, 5):  # the first round trip of a backlog: every slot refilled at once
        in_use, _, _ = concurrency.on_success(1.0, seq, 0, 4)
        assert in_use
        concurrency.grow(1.0, 0.0)
        while concurrency.slot_open():
            started += 1
            concurrency.take(started)
    assert concurrency.limit == 8


def test_a_news_drop_decreases_by_beta_of_its_calm() -> None:
    concurrency = limit(16)
    concurrency.take(1)
    concurrency.release(1)
    assert not concurrency.on_news(0.0, 1)
    concurrency.decrease(16.0, concurrency.calm(0.0))
    assert concurrency.limit == pytest.approx(16 * BETA_MIN)
    calm = limit(16)
    calm.on_news(30.0, 1)
    calm.decrease(16.0, 30.0)
    assert calm.limit == pytest.approx(16 * BETA_MAX)


def test_a_pause_ending_counts_as_the_last_drop_for_calm() -> None:
    clock = ManualClock()
    pauses = Pauses(clock.monotonic)
    concurrency = ConcurrencyLimit(1, 64, 8, pauses, 0.0)
    pauses.hold(10.0)
    assert concurrency.calm(12.0) == 2.0


def test_drops_in_a_row_with_nothing_older_in_flight_are_an_outage() -> None:
    concurrency = limit(16)
    news = []
    for seq in range(1, OUTAGE_STREAK + 1):
        concurrency.take(seq)
        concurrency.release(seq)
        news.append(concurrency.on_news(float(seq), seq))
    assert news == [False] * (OUTAGE_STREAK - 1) + [True]
    assert concurrency.enter_outage() == BACKOFF_BASE_S
    assert concurrency.limit == 1


def test_the_fractional_slot_opens_for_its_share_of_the_time() -> None:
    concurrency = limit(4)
    concurrency.on_news(0.0, 0)
    concurrency.decrease(3.0, 100.0)  # after a long calm: 3 * 0.95
    assert 2 < concurrency.limit < 3
    for seq in range(1, 4):
        concurrency.take(seq)
    assert not concurrency.slot_open()  # all three in use, the third on credit
    concurrency.integrate(1.0)
    concurrency.release(3)
    assert not concurrency.slot_open()  # the fractional slot is in debt
    assert concurrency.open_at(1.0) is not None
    at = concurrency.open_at(1.0)
    assert at is not None
    concurrency.integrate(at)
    assert concurrency.slot_open()


# ---------------------------------------------------------------------------- the estimator


def test_the_first_refusal_measures_the_calls_accepted_per_second() -> None:
    estimator = RateEstimator(Pauses(ManualClock().monotonic), 0.0)
    assert estimator.pace(0.0, -math.inf) is None
    for n in range(100):
        estimator.on_grant(n * 0.02)  # 50/s for 2 s
    assert estimator.on_refusal(2.0, seq=101, at=2.0, pace=math.inf, paused=0.0)
    assert estimator.estimate == pytest.approx(50.0)
    assert estimator.pace(2.0, -math.inf) == pytest.approx(50.0 * (1 - CRUISE_MARGIN))


def test_a_refusal_with_nothing_accepted_since_the_last_asks_to_hold_back() -> None:
    estimator = RateEstimator(Pauses(ManualClock().monotonic), 0.0)
    estimator.on_refusal(2.0, seq=101, at=2.0, pace=math.inf, paused=0.0)
    assert not estimator.on_refusal(2.0, seq=102, at=2.0, pace=math.inf, paused=0.0)


def test_the_pace_probes_up_to_twice_the_estimate_after_the_probe_wait() -> None:
    estimator = RateEstimator(Pauses(ManualClock().monotonic), 0.0)
    for n in range(100):
        estimator.on_grant(n * 0.02)
    estimator.on_refusal(2.0, seq=101, at=2.0, pace=math.inf, paused=0.0)
    cruise = estimator.pace(2.0 + PROBE_WAIT_MIN_S, -math.inf)
    assert cruise == pytest.approx(50.0 * (1 - CRUISE_MARGIN))
    top = estimator.pace(2.0 + PROBE_WAIT_MIN_S + 7.0, -math.inf)  # not in use: no new rate
    assert top == pytest.approx(PROBE_MAX * cruise)
    assert estimator.estimate == pytest.approx(50.0)


@pytest.mark.parametrize(("retry_after_s", "rate"), [(9.5, 500 / 9.0), (1.0, 1000.0)])
def test_a_long_retry_after_bounds_the_first_estimate(retry_after_s: float, rate: float) -> None:
    # 500 calls in 0.5 s, then a Retry-After: to a fixed window's end (the window's rate,
    # less a second of rounding), or a bucket's usual second (no bound: the burst's rate).
    clock = ManualClock()
    pauses = Pauses(clock.monotonic)
    estimator = RateEstimator(pauses, 0.0)
    for n in range(500):
        estimator.on_grant(n * 0.001)
    clock.now = 0.5
    pauses.hold(0.5 + retry_after_s)
    estimator.on_refusal(0.5, seq=501, at=0.5, pace=math.inf, paused=0.0)
    assert estimator.estimate == pytest.approx(rate)


@pytest.mark.parametrize("rate", [40.0, 100.0, 300.0])
def test_the_refill_fit_finds_the_rate_behind_a_small_bucket(rate: float) -> None:
    # Each segment: the bucket (20 calls) refilled during the pause, then `rate` x sending.
    segments = [(20 + rate * s, s, 1.0) for s in (0.1, 0.3, 0.5)]
    fitted = fit_refill(segments)
    assert fitted == pytest.approx(rate, rel=0.02)


def test_the_refill_fit_declines_segments_sent_for_as_long() -> None:
    assert fit_refill([(50.0, 0.2, 1.0), (50.0, 0.2, 1.0)]) is None


# ---------------------------------------------------------------------------- admission


def test_admission_three_outcomes_free_the_slot_exactly_once() -> None:
    clock = ManualClock()
    admission = Admission(min_limit=1, max_limit=2, initial_limit=2, rate_max=0.0, clock=clock)
    ok, refused = admission.try_acquire(), admission.try_acquire()
    assert ok is not None
    assert refused is not None
    assert admission.try_acquire() is None
    ok.success(0.1)
    ok.dropped()  # only the first report counts
    refused.dropped(1.0, status=429)
    state = admission.state
    assert (state.in_flight, state.drops, state.refusals, state.paused_until) == (0, 1, 1, 1.0)
    assert admission.try_acquire() is None  # the Retry-After holds new calls
    clock.now = 1.0
    with admission.try_acquire() as permit:  # type: ignore[union-attr]
        pass
    assert permit.reported
    assert admission.state.in_flight == 0


def test_admission_paces_at_the_lowest_of_cap_quota_and_estimate() -> None:
    clock = ManualClock()
    admission = Admission(min_limit=1, max_limit=8, initial_limit=8, rate_max=20.0, clock=clock)
    assert admission.state.source == "configured"
    permit = admission.try_acquire()
    assert permit is not None
    assert admission.try_acquire() is None  # 1/20 s apart
    assert admission.next_attempt_at() == pytest.approx(0.05)
    permit.success(0.01, Quota(remaining=11, reset_s=1.0))
    assert admission.state.source == "headers"
    assert admission.state.paced_rate == pytest.approx(11.0)  # 11 left for 1 s, none in flight
