"""The demo's progress: records processed (not offsets committed), and no carriage returns
where stdout is not a terminal."""

from __future__ import annotations

import io

from prometheus_client import CollectorRegistry, Counter, Gauge
from support import ManualClock

from stream.devkit.demo import PLAIN_LINE_EVERY_S, Progress, goodput_line, processed_records


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_processed_records_count_every_final_outcome_and_nothing_else() -> None:
    registry = CollectorRegistry()
    Counter("stream_sms_stored", "", registry=registry).inc(40)
    Counter("stream_sms_already_stored", "", registry=registry).inc(5)
    dead = Counter("stream_sms_dead_lettered", "", ["reason"], registry=registry)
    dead.labels("invalid_json").inc(2)
    dead.labels("http_422").inc(1)
    Counter("stream_sms_retried", "", ["retry_level"], registry=registry).labels("1").inc(7)
    Gauge("stream_in_flight_sms", "", registry=registry).set(100)
    assert processed_records(registry) == 48


def test_without_a_terminal_progress_is_plain_lines_at_a_steady_pace() -> None:
    out, clock = io.StringIO(), ManualClock()
    progress = Progress(100, out, clock.monotonic)
    progress.update(0)
    clock.now = PLAIN_LINE_EVERY_S / 2
    progress.update(30)  # too soon after the last line
    clock.now = PLAIN_LINE_EVERY_S * 1.5
    progress.update(60)
    clock.now = PLAIN_LINE_EVERY_S * 3
    progress.update(60)  # nothing new to say
    clock.now = PLAIN_LINE_EVERY_S * 4
    progress.update(130)  # redelivered records count again: never show past the total
    progress.finish("every record processed and committed")
    text = out.getvalue()
    assert "\r" not in text
    assert text.splitlines() == [
        "  processing... 0 of 100 records processed",
        "  processing... 60 of 100 records processed",
        "  processing... 100 of 100 records processed",
        "  every record processed and committed",
    ]


def test_on_a_terminal_progress_redraws_one_line() -> None:
    out = _Terminal()
    progress = Progress(10, out, ManualClock().monotonic)
    for done in (0, 4, 10):
        progress.update(done)
    assert "\n" not in out.getvalue()
    progress.finish("every record processed and committed")
    redraws = out.getvalue().rstrip("\n").split("\r")[1:]
    assert [line.strip() for line in redraws] == [
        "processing... 0 of 10 records processed",
        "processing... 4 of 10 records processed",
        "processing... 10 of 10 records processed",
        "every record processed and committed",
    ]


def test_goodput_leaves_out_the_warm_up_and_the_tail_and_counts_idle_seconds() -> None:
    warm_up = [{"t": t, "ok": 50, "429": 3} for t in range(10)]
    steady = [{"t": t, "ok": 270} for t in range(10, 40) if t != 25]  # second 25: paused
    tail = [{"t": 40, "ok": 600}, {"t": 41, "ok": 40}]
    line = goodput_line([*warm_up, *steady, *tail], 300.0)
    assert f"{270 * 29 / 30:.0f} calls/s" in line  # 30 s, one of them with nothing accepted
    assert f"{270 * 29 / 30 / 300:.2f} of the 300/s" in line


def test_goodput_says_when_the_run_was_too_short() -> None:
    assert "too short" in goodput_line([{"t": t, "ok": 100} for t in range(12)], 300.0)
