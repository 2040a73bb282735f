"""A batch the Kafka client cannot decode (a header key that is not UTF-8), over the
engine's fakes: getmany fails as aiokafka's does, after moving the positions of the
partitions it had already taken; every record is still processed once and committed."""

from __future__ import annotations

from test_engine import MAIN, RETRY_1, engine, eventually, sms


async def test_records_taken_before_the_failure_and_the_unreadable_batch_are_all_processed(
) -> None:
    async with engine() as e:
        for n in range(5):
            e.consumer.append(MAIN, sms(n))
        for n in range(5, 8):
            e.consumer.append(RETRY_1, sms(n))
        e.consumer.undecodable.add((RETRY_1, 1))
        await eventually(
            lambda: e.stored() == {f"sms-{n}" for n in range(8)}, what="all 8 stored"
        )
        await e.settled()
        assert e.topic("sms.dlq") == []
        assert e.committed(MAIN) == 5
        assert e.committed(RETRY_1) == 3
