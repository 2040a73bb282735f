"""The adaptive limiter: its contract (unit tests), then scripted upstreams in virtual time.

The scenario tests run every scenario of `limiter_sim` over `SEEDS` and assert ranges on all
seeds. The runs are spread over the CPUs by one module fixture; `pytest -s` prints the
measured figures (min / mean / max over the seeds) of every scenario.
"""

from __future__ import annotations

import asyncio
import collections
import math
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ManualClock

from stream.devkit import limiter_sim as sim
from stream.processors.limiter import (
    BACKOFF_BASE_S,
    BETA_MAX,
    BETA_MIN,
    RESTART_FRACTION,
    AdaptiveLimiter,
    Permit,
    Quota,
)

SEEDS = range(10)


def fill(limiter: AdaptiveLimiter) -> list[Permit]:
    """Every permit the limiter grants right now."""
    permits = []
    while (permit := limiter.try_acquire()) is not None:
        permits.append(permit)
    return permits


async def settle() -> None:
    """Let every ready task run (zero-time yields, no sleeping)."""
    for _ in range(10):
        await asyncio.sleep(0)


# ---------------------------------------------------------------------------- the contract


def test_rejects_bounds_out_of_order() -> None:
    with pytest.raises(ValueError, match="min_limit"):
        AdaptiveLimiter(min_limit=5, initial_limit=4)
    with pytest.raises(ValueError, match="min_limit"):
        AdaptiveLimiter(initial_limit=300, max_limit=256)
    with pytest.raises(ValueError, match="rate_max"):
        AdaptiveLimiter(rate_max=-1)


def test_slow_start_doubles_per_round_trip_and_stops_at_the_maximum() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=4, max_limit=20, clock=clock)
    batch, seen = fill(limiter), []
    for _ in range(4):  # round trips of a backlog: each finished call is replaced at once
        clock.now += 1.0
        following = []
        for permit in batch:
            permit.success(1.0)
            following += fill(limiter)
        batch = following
        seen.append(limiter.state.limit)
    assert seen == [8, 16, 20, 20]
    assert limiter.state.in_flight == 20


def test_an_unused_limit_does_not_grow() -> None:
    limiter = AdaptiveLimiter(initial_limit=10, clock=ManualClock())
    for _ in range(100):
        permit = limiter.try_acquire()
        assert permit is not None
        permit.success(0.1)
    assert limiter.state.limit == 10


def test_latency_alone_never_shrinks_the_limit() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=8, clock=clock)
    for latency in (0.1, 5.0, 60.0, 600.0):
        clock.now += latency
        before = limiter.state.limit
        for permit in fill(limiter):
            permit.success(latency)
        assert limiter.state.limit >= before
    assert limiter.state.decreases == 0


def test_one_burst_of_drops_is_one_decrease() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=8, clock=clock)
    clock.now = 30.0  # long calm: the gentlest decrease
    permits = fill(limiter)
    for permit in reversed(permits):  # the last call to start is the first to fail
        permit.dropped()
    state = limiter.state
    assert (state.drops, state.decreases, state.in_flight) == (8, 1, 0)
    assert state.limit == pytest.approx(8 * BETA_MAX)


def test_drops_in_quick_succession_decrease_harder() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=16, clock=clock)
    fill(limiter)[-1].dropped()  # at t=0: no calm at all
    assert limiter.state.limit == pytest.approx(16 * BETA_MIN)


def test_an_outage_goes_to_the_floor_backs_off_and_recovers() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(min_limit=2, initial_limit=16, clock=clock)
    clock.now = 30.0
    for _ in range(3):  # every call fails; each round's calls started after the last decrease
        for permit in fill(limiter):
            permit.dropped()
    state = limiter.state
    assert state.limit == 2
    assert state.paused_until == pytest.approx(30.0 + BACKOFF_BASE_S)
    assert limiter.try_acquire() is None
    assert limiter.next_attempt_at() == pytest.approx(30.0 + BACKOFF_BASE_S)
    for pause in (2 * BACKOFF_BASE_S, 4 * BACKOFF_BASE_S):  # the backoff doubles
        clock.now = limiter.next_attempt_at() or math.inf
        probes = fill(limiter)
        assert len(probes) == 2  # probes at the floor
        for probe in probes:
            probe.dropped()
        assert limiter.state.paused_until == pytest.approx(clock.now + pause)
    clock.now = limiter.next_attempt_at() or math.inf
    fill(limiter)[0].success(0.1)  # the upstream answers again
    assert limiter.state.limit >= 16 * RESTART_FRACTION  # a share of the last good limit


def test_calls_sent_before_an_outage_began_do_not_lower_the_last_good_limit() -> None:
    # When the upstream dies, calls in flight from before it still succeed between the first
    # drops. Each such success took the (already cut) limit as the last good one: over real
    # HTTP 79 became 3.7 within a second, and the restart at half of it never recovered.
    clock = ManualClock()
    limiter = AdaptiveLimiter(min_limit=1, initial_limit=40, clock=clock)
    clock.now = 30.0
    old = fill(limiter)  # 40 calls in flight when the upstream dies
    while old:  # old calls keep answering; every new call is refused
        clock.now += 0.01
        for _ in range(10):
            old.pop().success(0.05)
        for permit in fill(limiter):
            permit.dropped()
    for _ in range(3):
        clock.now = max(clock.now, limiter.next_attempt_at() or math.inf)
        for permit in fill(limiter):
            permit.dropped()
    assert limiter.state.limit == 1  # an outage
    clock.now = limiter.next_attempt_at() or math.inf
    fill(limiter)[0].success(0.05)  # the upstream answers again
    assert limiter.state.limit >= 40 * RESTART_FRACTION * BETA_MIN


def test_an_answer_overtaken_by_later_ones_is_not_a_new_quota_window() -> None:
    # A slow answer arrives after answers to calls sent later, with a higher "remaining"
    # and a Reset rounded up a second later. Taken for a new window, it would move the
    # window's end out and under-spend every 10 s window by ~3 % (482 of 500).
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=8, clock=clock)
    slow, *later = fill(limiter)
    clock.now = 0.1
    for n, permit in enumerate(later, start=1):
        permit.success(0.05, Quota(remaining=100 - n, reset_s=5.0, limit=100, window_s=10.0))
    clock.now = 0.2
    slow.success(0.15, Quota(remaining=100, reset_s=6.0, limit=100, window_s=10.0))
    assert limiter.state.paced_rate == pytest.approx((100 - len(later)) / 4.9)


def test_a_retry_after_pause_holds_back_new_calls_only() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=8, clock=clock)
    first, second = limiter.try_acquire(), limiter.try_acquire()
    assert first is not None
    assert second is not None
    first.dropped(retry_after_s=2.0)
    state = limiter.state
    assert (state.paused_until, state.pauses) == (2.0, 1)
    assert limiter.try_acquire() is None  # slots are free, but the pause holds
    assert limiter.next_attempt_at() == 2.0
    clock.now = 1.0
    second.success(1.0)  # a call in flight finishes as usual
    clock.now = 1.999
    assert limiter.try_acquire() is None
    clock.now = 2.0
    assert limiter.try_acquire() is not None
    assert limiter.state.paused_until is None


def test_the_rate_gauge_counts_successes_per_second() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=64, clock=clock)
    for _ in range(600):  # 20 successes per second for 30 s
        clock.now += 0.05
        permit = limiter.try_acquire()
        assert permit is not None
        permit.success(0.05)
    assert limiter.state.rate == pytest.approx(20.0, rel=0.05)


def test_the_limit_stays_within_its_bounds() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(min_limit=3, initial_limit=3, max_limit=5, clock=clock)
    for _ in range(20):
        clock.now += 1.0
        for permit in fill(limiter):
            permit.success(0.5)
        assert 3 <= limiter.state.limit <= 5
    for _ in range(20):
        clock.now += 1.0
        for permit in fill(limiter):
            permit.dropped()
        assert 3 <= limiter.state.limit <= 5


def test_only_the_first_report_counts() -> None:
    limiter = AdaptiveLimiter(clock=ManualClock())
    permit = limiter.try_acquire()
    assert permit is not None
    permit.success(0.1)
    permit.dropped(5.0)
    permit.ignore()
    permit.success(0.1)
    state = limiter.state
    assert (state.in_flight, state.drops, state.paused_until) == (0, 0, None)
    assert permit.reported


def test_ignore_frees_the_slot_and_changes_nothing_else() -> None:
    limiter = AdaptiveLimiter(initial_limit=2, clock=ManualClock())
    for permit in fill(limiter):
        permit.ignore()
    state = limiter.state
    assert (state.limit, state.in_flight, state.drops, state.decreases) == (2, 0, 0, 0)


def test_a_fractional_limit_is_kept_on_average() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=4, clock=clock)
    permits = fill(limiter)
    permits.pop().dropped()  # at t=0, with no calm at all: limit 4 * BETA_MIN (2.8)
    for permit in permits:
        permit.ignore()
    limit = limiter.state.limit
    assert limit == pytest.approx(4 * BETA_MIN)
    assert limit % 1 > 0.1
    running: list[tuple[float, Permit]] = []  # a backlog of 1 s calls, in virtual time
    busy = 0.0
    while clock.now < 200.0:
        running += [(clock.now + 1.0, permit) for permit in fill(limiter)]
        wake = limiter.next_attempt_at()
        step = min([end for end, _ in running] + ([wake] if wake is not None else []))
        step = max(step, clock.now + 1e-6)
        busy += len(running) * (step - clock.now)
        clock.now = step
        for done in [call for call in running if call[0] <= clock.now]:
            running.remove(done)
            done[1].ignore()
    assert busy / clock.now == pytest.approx(limit, abs=0.02)


def test_the_fractional_slot_reopens_after_its_debt_is_paid() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=4, clock=clock)
    permits = fill(limiter)
    permits.pop().dropped()  # limit 4 * BETA_MIN (2.8), three calls left in flight
    frac = limiter.state.limit % 1
    clock.now = 1.0
    permits.pop().ignore()  # two in flight: the third slot was over-used for 1 s
    assert limiter.try_acquire() is None
    reopens = 1.0 + (1 - frac) / frac  # the debt of (1 - frac) slot-seconds, paid at frac/s
    assert limiter.next_attempt_at() == pytest.approx(reopens)
    clock.now = reopens - 0.01
    assert limiter.try_acquire() is None
    clock.now = reopens
    assert limiter.try_acquire() is not None


def test_the_rate_cap_spaces_calls() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=64, rate_max=10.0, clock=clock)
    granted = 0
    while clock.now <= 10.0:
        permit = limiter.try_acquire()
        if permit is None:
            clock.now = limiter.next_attempt_at() or math.inf
        else:
            granted += 1
            permit.ignore()
    assert 100 <= granted <= 102  # one initial token, then ten per second


def test_a_timer_a_little_late_keeps_the_pace_on_schedule() -> None:
    # asyncio's timers fire up to a millisecond late: without keeping to the schedule, a
    # 100/s pace sent about 90/s.
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=64, rate_max=100.0, clock=clock)
    granted = 0
    while clock.now <= 10.0:
        permit = limiter.try_acquire()
        if permit is None:
            clock.now = (limiter.next_attempt_at() or math.inf) + 0.0009  # the timer, late
        else:
            granted += 1
            permit.ignore()
    assert granted >= 0.99 * 100.0 * 10.0


def test_a_call_late_for_a_slot_does_not_let_the_next_come_early() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=1, max_limit=1, rate_max=100.0, clock=clock)
    first = limiter.try_acquire()
    assert first is not None
    clock.now = 0.0105  # the slot frees after the call was due
    first.ignore()
    second = limiter.try_acquire()
    assert second is not None
    second.ignore()
    assert limiter.next_attempt_at() == pytest.approx(0.0205)  # 1/pace after the grant


def test_rare_refusals_at_a_rate_that_holds_keep_the_estimate() -> None:
    # A bare 503 per 200 calls is timing jitter (calls reach the upstream milliseconds off
    # their spacing), not a rate too high: trimming the estimate each time ratcheted a strict
    # 100/s down to half of it over real HTTP.
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=8, clock=clock)
    calls = 0
    while clock.now < 60.0:
        permit = limiter.try_acquire()
        if permit is None:
            clock.now = max(clock.now + 0.01, limiter.next_attempt_at() or 0.0)
            continue
        calls += 1
        if calls == 500 or (calls > 500 and calls % 200 == 0):
            permit.dropped(status=503)
        else:
            permit.success(0.05)
        if calls <= 500:
            clock.now += 0.01  # 100/s until the first refusal sets the estimate
    first = 500 / 5.0
    assert (limiter.state.estimated_rate or 0.0) >= 0.97 * first


def test_a_first_estimate_far_too_high_behind_a_window_falls_in_a_few_refusals() -> None:
    # Slow start's first burst makes the first estimate high (here 10x: a window's 100
    # calls accepted in 0.1 s). Cutting it by QUICK_CUT per refusal took 15 refusals, each
    # a whole-second Retry-After; the segments between refusals show the window's rate (its
    # quota per window) after a few.
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=8, clock=clock)
    window_start, used = 0.0, 0
    estimates: list[float] = []
    while clock.now < 30.0 and not (estimates and estimates[-1] <= 110.0):
        permit = limiter.try_acquire()
        if permit is None:
            clock.now = max(clock.now + 0.001, limiter.next_attempt_at() or 0.0)
            continue
        if clock.now >= window_start + 1.0:
            window_start, used = float(math.floor(clock.now)), 0
        if used < 100:
            used += 1
            permit.success(0.05)
        else:
            permit.dropped(float(math.ceil(window_start + 1.0 - clock.now)), status=429)
            estimates.append(limiter.state.estimated_rate or math.inf)
        if not estimates:
            clock.now += 0.001  # 1,000 calls/s until the first refusal
    assert estimates[0] >= 900.0
    assert len(estimates) <= 5
    assert 85.0 <= estimates[-1] <= 100.0


def test_a_burst_refused_in_the_instant_it_was_sent_leaves_the_rate_unknown() -> None:
    # The first refusal's rate is the calls accepted over the time since the start: with no
    # time passed (a coarse clock, or virtual time) that divided by zero inside the permit's
    # report, an exception out of the HTTP processor's call.
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=32, clock=clock)
    *accepted, refused = fill(limiter)
    for permit in accepted:
        permit.success(0.05)
    refused.dropped(1.0, status=429)
    assert limiter.state.estimated_rate is None
    clock.now = 1.0
    permit = limiter.try_acquire()
    assert permit is not None
    permit.success(0.05)
    assert limiter.state.estimated_rate is not None


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["acquire", "ok", "drop", "429", "ignore", "tick"]),
            st.integers(0, 1000),
        ),
        max_size=80,
    )
)
def test_invariants_hold_for_any_sequence_of_events(ops: list[tuple[str, int]]) -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(min_limit=2, initial_limit=4, max_limit=12, clock=clock)
    open_permits: list[Permit] = []
    drops = 0
    for op, n in ops:
        if op == "tick":
            clock.now += n / 100
        elif op == "acquire":
            permit = limiter.try_acquire()
            if permit is not None:
                open_permits.append(permit)
            else:
                at = limiter.next_attempt_at()
                assert at is None or at > clock.now - 1e-9
        elif open_permits:
            permit = open_permits.pop(n % len(open_permits))
            if op == "ok":
                permit.success(n / 100)
            elif op == "drop":
                permit.dropped()
                drops += 1
            elif op == "429":
                permit.dropped(n / 1000)
                drops += 1
            else:
                permit.ignore()
        state = limiter.state
        assert 2 <= state.limit <= 12
        assert state.in_flight == len(open_permits)
        assert state.in_flight <= math.ceil(state.limit) or state.decreases > 0
        assert state.drops == drops
        assert state.decreases <= state.drops
        assert state.paused_until is None or state.paused_until > clock.now
        assert state.rate >= 0


# ---------------------------------------------------------------------------- the asyncio wrapper


async def test_acquire_waits_for_a_slot_first_come_first_served() -> None:
    limiter = AdaptiveLimiter(min_limit=1, initial_limit=1, max_limit=1)
    first = await limiter.acquire()
    second = asyncio.create_task(limiter.acquire())
    third = asyncio.create_task(limiter.acquire())
    await settle()
    assert not second.done()
    assert not third.done()
    first.success(0.01)
    permit = await asyncio.wait_for(second, timeout=2.0)
    await settle()
    assert not third.done()
    permit.ignore()
    (await asyncio.wait_for(third, timeout=2.0)).ignore()
    assert limiter.state.in_flight == 0


async def test_a_retry_is_granted_before_the_calls_already_queued() -> None:
    # A retry's micro-batch is otherwise done and waits for it: queued behind every other
    # batch's calls, 1 % of calls failing held each batch for the whole queue (the HTTP
    # demo reached 0.72 of the allowed rate; with retries first, 0.86).
    limiter = AdaptiveLimiter(min_limit=1, initial_limit=1, max_limit=1)
    first = await limiter.acquire()
    queued = asyncio.create_task(limiter.acquire())
    await settle()
    retry = asyncio.create_task(limiter.acquire(first=True))
    await settle()
    first.success(0.01)
    permit = await asyncio.wait_for(retry, timeout=2.0)
    await settle()
    assert not queued.done()
    permit.ignore()
    (await asyncio.wait_for(queued, timeout=2.0)).ignore()
    assert limiter.state.in_flight == 0


async def test_paced_acquires_keep_the_pace_over_real_timers() -> None:
    # asyncio's timers fire 1-2 ms late (epoll waits in whole milliseconds): scheduling each
    # call from the last grant sent 86/s at a pace of 100/s; keeping to the schedule within
    # a fixed 1 ms of lateness, 93-95 %.
    limiter = AdaptiveLimiter(initial_limit=64, rate_max=200.0)
    grants: list[float] = []
    for _ in range(201):
        (await limiter.acquire()).ignore()
        grants.append(time.monotonic())
    assert 200 / (grants[-1] - grants[0]) >= 0.98 * 200.0


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    limiter = AdaptiveLimiter(min_limit=1, initial_limit=1, max_limit=1)
    first = await limiter.acquire()
    queued = asyncio.create_task(limiter.acquire())
    woken = asyncio.create_task(limiter.acquire())
    last = asyncio.create_task(limiter.acquire())
    await settle()
    queued.cancel()  # cancelled while parked
    first.ignore()  # wakes `woken`...
    woken.cancel()  # ...which is cancelled before it could run
    (await asyncio.wait_for(last, timeout=2.0)).ignore()
    assert queued.cancelled()
    assert woken.cancelled()
    assert limiter.state.in_flight == 0


async def test_the_context_manager_never_leaks_a_slot() -> None:
    limiter = AdaptiveLimiter(min_limit=1, initial_limit=1, max_limit=1)
    with pytest.raises(RuntimeError, match="boom"), await limiter.acquire():
        raise RuntimeError("boom")
    assert limiter.state.in_flight == 0

    entered = asyncio.Event()

    async def hang() -> None:
        with await limiter.acquire():
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await asyncio.wait_for(entered.wait(), timeout=2.0)
    assert limiter.state.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.state.in_flight == 0

    with await limiter.acquire() as permit:  # a report inside the block is the one that counts
        permit.dropped()
    assert limiter.state.drops == 1


async def test_a_retry_after_pause_holds_back_acquire_until_it_ends() -> None:
    limiter = AdaptiveLimiter(initial_limit=4)
    with await limiter.acquire() as permit:
        permit.dropped(retry_after_s=0.5)
    paused_until = limiter.state.paused_until
    assert paused_until is not None
    waiting = asyncio.create_task(limiter.acquire())
    await settle()
    assert not waiting.done()  # a slot is free, but the pause holds the call back
    permit = await asyncio.wait_for(waiting, timeout=5.0)  # woken by the pause-end timer
    assert time.monotonic() >= paused_until
    permit.ignore()
    assert limiter.state.paused_until is None


async def test_acquire_honours_the_rate_cap_without_polling() -> None:
    limiter = AdaptiveLimiter(initial_limit=64, rate_max=200.0)
    started = time.monotonic()
    for _ in range(30):
        (await asyncio.wait_for(limiter.acquire(), timeout=5.0)).ignore()
    # 10 tokens at once (50 ms of the cap), then one per 5 ms.
    assert time.monotonic() - started >= 19 / 200 * 0.9


# ---------------------------------------------------------------------------- scenarios

Figures = sim.Figures


def test_a_scenario_scales_in_time() -> None:
    fast = sim.S2_STEP.scaled(10.0)
    assert fast.duration_s == pytest.approx(sim.S2_STEP.duration_s / 10)
    assert [p.at_s for p in fast.upstream.phases] == pytest.approx([0.0, 3.0, 7.5])
    assert fast.upstream.phases[1].rate_per_s == pytest.approx(sim.RATE / 2 * 10)
    assert fast.upstream.phases[0].latency.median_s == pytest.approx(0.005)
    assert fast.upstream.retry_after_s == pytest.approx(0.1)
    assert fast.client.timeout_s == pytest.approx(1.0)
    assert sim.S2_STEP.scaled(1.0) == sim.S2_STEP


@pytest.fixture(scope="module")
def figures() -> dict[str, list[Figures]]:
    """Every suite entry on every seed: name -> one dict of figures per seed.

    Spread over worker processes ("spawn": they import only the simulator and the limiter).
    """
    jobs = [(name, seed) for name in sim.SUITE for seed in SEEDS]
    workers = min(4, os.cpu_count() or 1)
    if workers > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            results = list(pool.map(sim.run_suite_job, jobs))
    else:
        results = [sim.run_suite_job(job) for job in jobs]
    out: dict[str, list[Figures]] = {name: [] for name in sim.SUITE}
    for name, _, figs in results:
        out[name].append(figs)
    return out


def _table(name: str, runs: list[Figures]) -> Figures:
    """Print min / mean / max of every figure over the seeds; return the worst-case dict."""
    print(f"\n{name} ({len(runs)} seeds)")
    for key in runs[0]:
        values = [run[key] for run in runs]
        print(
            f"  {key:28} min {min(values):9.3f}   mean {statistics.fmean(values):9.3f}"
            f"   max {max(values):9.3f}"
        )
    return {key: min(run[key] for run in runs) for key in runs[0]}


def _worst(runs: list[Figures], key: str) -> float:
    return max(run[key] for run in runs)


def test_s1_rate_limit(figures: dict[str, list[Figures]]) -> None:
    runs = figures["S1"]
    low = _table(sim.S1_RATE_LIMIT.name, runs)
    assert low["goodput/R"] >= 0.90
    assert _worst(runs, "429 share") <= 0.02
    assert _worst(runs, "sent in pause") == 0
    assert _worst(runs, "first 0.9R s") <= 30


def test_s2_capacity_step(figures: dict[str, list[Figures]]) -> None:
    runs = figures["S2"]
    low = _table(sim.S2_STEP.name, runs)
    assert _worst(runs, "drop: goodput +-15 % s") <= 15
    assert low["drop: goodput/cap"] >= 0.90
    assert _worst(runs, "drop: 429 share") <= 0.02
    assert _worst(runs, "rise: 0.9R s") <= 30
    assert low["rise: goodput/R next 10 s"] >= 0.85
    assert low["rise: goodput/R +30 s.."] >= 0.80  # overshoot corrections, no collapse
    assert _worst(runs, "sent in pause") == 0


def test_s3_latency_shift(figures: dict[str, list[Figures]]) -> None:
    runs = figures["S3"]
    low = _table(sim.S3_LATENCY_SHIFT.name, runs)
    assert _worst(runs, "0.9 cap s") <= 60
    assert low["throughput/cap"] >= 0.90
    assert low["mean in flight"] >= 58
    assert _worst(runs, "decreases w/o drop") == 0
    assert _worst(runs, "quiet windows w/ decrease") == 0
    for run in runs:  # latency went up 22-fold; without drops the limit did not move down
        if run["drops 30 s after shift"] == 0:
            assert run["limit kept"] >= 1.0


def test_s4_outage(figures: dict[str, list[Figures]]) -> None:
    for name, scenario in (("S4", sim.S4_OUTAGE), ("S4 slow", sim.S4_OUTAGE_SLOW)):
        runs = figures[name]
        low = _table(scenario.name, runs)
        assert _worst(runs, "outage calls/60 s pre") <= 0.05
        assert _worst(runs, "recovery s") <= 30
        assert low["throughput after/before"] >= 0.8  # not stuck at the floor
        assert low["min limit after"] > 1


def test_s5_light_load(figures: dict[str, list[Figures]]) -> None:
    runs = figures["S5"]
    low = _table(sim.S5_LIGHT_LOAD.name, runs)
    assert _worst(runs, "decreases") == 0
    assert _worst(runs, "drops") == 0
    assert low["goodput/offered"] >= 0.95


def test_versus_the_old_ways(figures: dict[str, list[Figures]]) -> None:
    ours, old, fixed = figures["ours"], figures["old way"], figures["fixed 4"]
    ratios = [
        {
            "ours calls/s": o["calls/s"],
            "old way calls/s": w["calls/s"],
            "fixed 4 calls/s": f["calls/s"],
            "x old way": o["calls/s"] / w["calls/s"],
            "x old way, after 60 s": o["calls/s after 60 s"] / w["calls/s"],
            "x fixed 4": o["calls/s"] / f["calls/s"],
            "0.9 cap limit s": o["0.9 cap limit s"],
        }
        for o, w, f in zip(ours, old, fixed, strict=True)
    ]
    low = _table(f"{sim.SLOW_BACKLOG.name}: ours vs the old ways", ratios)
    assert low["x fixed 4"] >= 10
    assert low["x old way"] >= 90  # a 300 s run, our slow start included
    assert low["x old way, after 60 s"] >= 100
    assert _worst(ratios, "0.9 cap limit s") <= 30  # 4 -> 58 in about four round trips


# ---------------------------------------------------------------------------- rate-limit shapes
# The shapes' goals, after a 10 s warm-up, on every seed: goodput >= 0.95 of the allowed rate
# with <= 1 % refused (strict spacing: >= 0.9, <= 2 %); quota headers >= 0.98 and no refusal
# after the first window. Where the simulator shows the limiter short of a goal, the bar is
# the floor it reaches, marked BELOW_GOAL, so a regression still fails.

SHAPE_BARS: dict[str, tuple[float, float]] = {
    "spacing 503": (0.85, 0.02),  # BELOW_GOAL 0.9: 1 ms jitter against a 10 ms spacing
    "bucket b1": (0.75, 0.01),  # BELOW_GOAL 0.95: jitter refusals cost a 1 s Retry-After each
    "bucket b10": (0.91, 0.01),  # BELOW_GOAL 0.95: each failed probe costs a 1 s Retry-After
    "bucket b100": (0.95, 0.01),
    "bucket b1000": (0.95, 0.01),
    "bucket 300/3000": (0.95, 0.01),
    "window 1s": (0.82, 0.01),  # BELOW_GOAL 0.95: a whole-second Retry-After skips a window
    "window 10s": (0.95, 0.01),
    "window 60s": (0.95, 0.01),
    "headers 10s": (0.98, 0.0),
    "headers 60s": (0.98, 0.0),
}


@pytest.mark.parametrize("key", list(SHAPE_BARS))
def test_rate_limit_shapes(figures: dict[str, list[Figures]], key: str) -> None:
    runs = figures[f"shape {key}"]
    low = _table(sim.SHAPES[key].name, runs)
    goodput, refused = SHAPE_BARS[key]
    assert low["goodput/allowed"] >= goodput
    assert _worst(runs, "refused share") <= refused
    assert _worst(runs, "sent in pause") == 0
    if "refused after 1st window" in low:
        assert _worst(runs, "refused after 1st window") == 0


def test_a_fixed_window_loses_no_calls_in_flight_after_its_first_window() -> None:
    # 500 per 10 s, Retry-After to the window's end: slow start's burst fills the first
    # window in half a second. Paced at that burst's rate, the next windows ran out early
    # with 6-8 calls sent while the refusal was on its way back (up to 16 over HTTP).
    for seed in range(3):
        trace = sim.simulate(sim.SHAPES["window 10s"], seed)
        refused = collections.Counter(
            int(c.sent_at // 10) for c in trace.calls if c.outcome != "ok"
        )
        assert max(n for window, n in refused.items() if window >= 1) <= 1


def test_rate_steps_down_and_up(figures: dict[str, list[Figures]]) -> None:
    runs = figures["shape steps"]
    _table(sim.SHAPES["steps"].name, runs)
    assert _worst(runs, "down: within 10 % s") <= 10
    assert _worst(runs, "up: within 10 % s") <= 40  # BELOW_GOAL 10: probes wait after failing
    assert _worst(runs, "refused share") <= 0.01
    assert _worst(runs, "sent in pause") == 0
