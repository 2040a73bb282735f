"""Bulk observations give exactly what one `observe` per value gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from stream.observability.metrics import observe_many

BUCKETS = (0.01, 0.1, 1.0, 10.0)


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in histogram.collect()
        for s in family.samples
    }


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False) | st.sampled_from(BUCKETS)))
def test_observe_many_equals_observe_per_value(values: list[float]) -> None:
    one, many = (
        Histogram("h", "h", buckets=BUCKETS, registry=CollectorRegistry()) for _ in range(2)
    )
    for value in values:
        one.observe(value)
    observe_many(many, values)
    assert _samples(one).keys() == _samples(many).keys()
    for key, value in _samples(one).items():
        assert abs(_samples(many)[key] - value) <= 1e-9 * max(1.0, abs(value)), key
