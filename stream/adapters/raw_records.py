"""The group consumer, able to read a record batch aiokafka cannot: header keys that are
not UTF-8.

Kafka header keys are bytes on the wire; aiokafka decodes each as UTF-8 while `getmany`
iterates a fetched batch, and one that is not UTF-8 raises `UnicodeDecodeError` out of
`getmany` on every call. Iterating a batch goes through every record before the wanted
one, so no record of that batch after the bad one can be read either. `read_raw` fetches
that batch itself and parses it here (record batch format v2, the only one Kafka 4 stores),
decoding header keys with backslash escapes (`\\xff`) so every record of the batch can be
processed; only the odd header key is changed, in copies published later.

It uses two parts of aiokafka that are not its documented API: the consumer's connected
client and the Fetch request (a Kafka protocol message, versioned by the broker). The
wire tests read a real broker's batch through it.
"""

from __future__ import annotations

import struct
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.util import decode_varint

__all__ = ["GroupConsumer", "parse_batch"]

_ISOLATION = {"read_uncommitted": 0, "read_committed": 1}
_HEADER = struct.Struct(">qiibIhiqqqhii")
"""base offset, length, leader epoch, magic, crc, attributes, last offset delta, first
timestamp, max timestamp, producer id, producer epoch, base sequence, record count."""
_DECOMPRESS = {1: gzip_decode, 2: snappy_decode, 3: lz4_decode, 4: zstd_decode}
_TIMESTAMP_TYPE_BIT = 0x08
_CONTROL_BIT = 0x20
FETCH_MAX_BYTES = 16 * 1024 * 1024
"""Enough for one batch of the largest default `max.message.bytes` (1 MiB) many times over."""


def parse_batch(
    tp: TopicPartition, data: bytes, start: int
) -> tuple[list[ConsumerRecord[bytes, bytes]], int]:
    """The records of the first batch in `data` with offsets from `start` on, and the
    offset after that batch. Raises ValueError for what is not a v2 data batch."""
    if len(data) < _HEADER.size:
        raise ValueError(f"no complete record batch at {tp.topic}-{tp.partition}@{start}")
    (base, length, _, magic, _, attributes, last_delta, first_ts, max_ts, *_, count) = (
        _HEADER.unpack_from(data)
    )
    if magic != 2 or attributes & _CONTROL_BIT:
        raise ValueError(f"batch at {tp.topic}-{tp.partition}@{base} is not a v2 data batch")
    body: Any = data[_HEADER.size : 12 + length]
    codec = attributes & 0x07
    if codec:
        body = _DECOMPRESS[codec](bytes(body))
    body = bytearray(body)
    log_append_time = bool(attributes & _TIMESTAMP_TYPE_BIT)
    records: list[ConsumerRecord[bytes, bytes]] = []
    pos = 0
    for _ in range(count):
        size, pos = decode_varint(body, pos)
        end = pos + size
        pos += 1  # record attributes: unused
        ts_delta, pos = decode_varint(body, pos)
        offset_delta, pos = decode_varint(body, pos)
        key, pos = _bytes(body, pos)
        value, pos = _bytes(body, pos)
        headers: list[tuple[str, bytes | None]] = []
        header_count, pos = decode_varint(body, pos)
        for _ in range(header_count):
            name, pos = _bytes(body, pos)
            header_value, pos = _bytes(body, pos)
            headers.append(((name or b"").decode("utf-8", "backslashreplace"), header_value))
        pos = end
        offset = base + offset_delta
        if offset < start:
            continue
        records.append(
            ConsumerRecord(
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
                timestamp=max_ts if log_append_time else first_ts + ts_delta,
                timestamp_type=int(log_append_time),
                key=key,
                value=value,
                checksum=None,
                serialized_key_size=-1 if key is None else len(key),
                serialized_value_size=-1 if value is None else len(value),
                headers=tuple(headers),
            )
        )
    return records, base + last_delta + 1


def _bytes(body: bytearray, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(body, pos)
    if size < 0:
        return None, pos
    return bytes(body[pos : pos + size]), pos + size


class GroupConsumer(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka is untyped
    """`AIOKafkaConsumer` with `read_raw` (the module docstring says why) and
    `read_position`, the engine's port (`stream.engine.ports.Consumer`)."""

    def __init__(self, *, isolation_level: str, **options: Any) -> None:
        super().__init__(isolation_level=isolation_level, **options)
        self._raw_isolation = _ISOLATION[isolation_level]

    async def read_position(self, partition: TopicPartition) -> int:
        """The offset the client reads next (the engine's name for `position`)."""
        position: int = await self.position(partition)
        return position

    async def read_raw(
        self, partition: TopicPartition, offset: int
    ) -> tuple[list[ConsumerRecord[bytes, bytes]], int]:
        """The records of the batch holding `offset`, from `offset` on, parsed here; and
        the offset after that batch. Raises KafkaError when the broker cannot answer."""
        client = self._client
        node = client.cluster.leader_for_partition(partition)
        if node is None or node < 0:
            raise KafkaError(f"no leader known for {partition.topic}-{partition.partition}")
        request = FetchRequest(
            0, 1, FETCH_MAX_BYTES, self._raw_isolation,
            [(partition.topic, [(partition.partition, offset, FETCH_MAX_BYTES)])],
        )
        response = await client.send(node, request)
        for _, partitions in response.topics:
            for _, error_code, _, *part_data in partitions:
                if error_code:
                    raise for_code(error_code)(f"fetching {partition} at {offset}")
                try:
                    return parse_batch(partition, part_data[-1] or b"", offset)
                except (ValueError, KeyError, IndexError, struct.error) as exc:
                    raise KafkaError(f"cannot parse the batch at {partition} {offset}: {exc}"
                                     ) from exc
        raise KafkaError(f"the broker returned nothing for {partition} at {offset}")
