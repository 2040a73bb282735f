"""`stream produce` and its Python API: what lands in the topic, keyed by sender."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pipeline_support import read_topic

from stream.config import Settings
from stream.devkit.stack import StackEndpoints
from stream.errors import StreamError
from stream.tools.produce import file_records, produce_records, synthetic_records

NewTopicFactory = Callable[..., Awaitable[str]]

# Bounds on a CLI run and on reading a topic back; both take a second or two when healthy.
CLI_DEADLINE_S = 120.0
READ_DEADLINE_S = 30.0


async def _settings(stack: StackEndpoints, new_topic: NewTopicFactory) -> Settings:
    """Settings on a fresh main topic whose retry and DLQ topics exist too, so the CLI's
    `ensure_topics` creates nothing the test fixtures would not delete."""
    settings = Settings(kafka_bootstrap=stack.kafka_bootstrap, topic=await new_topic(3))
    for derived in (*settings.retry_topics, settings.dlq_topic):
        await new_topic(1, name=derived)
    return settings


async def _produce_cli(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream", "produce", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    async with asyncio.timeout(CLI_DEADLINE_S):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _env(settings: Settings | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without STREAM_* settings, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    if settings is not None:
        env |= {"STREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "STREAM_TOPIC": settings.topic}
    return env | extra


async def _records(settings: Settings) -> list[Any]:
    async with asyncio.timeout(READ_DEADLINE_S):
        return await read_topic(settings.kafka_bootstrap, settings.topic)


def test_synthetic_records_mix_malformed_and_duplicates_at_random() -> None:
    def mix() -> list[tuple[bytes | None, bytes]]:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        rng = random.Random(7)
        return list(synthetic_records(rng, count=200, malformed=9, duplicates=13, start=start))

    records = mix()

    assert len(records) == 222
    assert sum(key is None for key, _ in records) == 9
    seen: set[str] = set()
    repeats = 0
    for key, value in records:
        if key is None:
            continue
        sms = orjson.loads(value)
        assert key == sms["sender"].encode()
        repeats += sms["id"] in seen
        seen.add(sms["id"])
    assert (len(seen), repeats) == (200, 13)
    malformed_at = [i for i, (key, _) in enumerate(records) if key is None]
    assert malformed_at != list(range(9)), "malformed records should be spread, not first"
    assert mix() == records, "the same seed and start give the same records"


def test_file_records_check_json_objects_unless_raw() -> None:
    lines = [b'{"id": "a", "sender": "+254700000001"}\n', b"\n", b'{"id": "b"}\r\n', b"[1, 2]\n"]

    checked = file_records(iter(lines), name="sms.jsonl")
    assert next(checked) == (b"+254700000001", b'{"id": "a", "sender": "+254700000001"}')
    assert next(checked) == (None, b'{"id": "b"}')
    with pytest.raises(StreamError, match=r"sms\.jsonl:4: not a JSON object"):
        next(checked)

    raw = list(file_records(iter(lines), name="sms.jsonl", raw=True))
    assert [value for _, value in raw] == [line.rstrip(b"\r\n") for line in lines]
    assert [key for key, _ in raw] == [b"+254700000001", None, None, None]


async def test_cli_produces_synthetic_sms_keyed_by_sender(
    stack: StackEndpoints, new_topic: NewTopicFactory
) -> None:
    settings = await _settings(stack, new_topic)

    code, out, err = await _produce_cli(
        "--count", "300", "--malformed", "7", "--duplicates", "11", "--seed", "5",
        env=_env(settings),
    )  # fmt: skip

    assert code == 0, err
    assert out.startswith(f"produced 318 records to {settings.topic} in "), out
    records = await _records(settings)
    assert len(records) == 318
    assert sum(r.key is None for r in records) == 7
    sms = [(r, orjson.loads(r.value)) for r in records if r.key is not None]
    assert all(r.key == s["sender"].encode() for r, s in sms)
    ids = Counter(s["id"] for _, s in sms)
    assert (len(ids), sum(ids.values())) == (300, 311)
    partitions_by_key: dict[bytes, set[int]] = {}
    for r, _ in sms:
        partitions_by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partitions_by_key.values()), "a sender spans partitions"


async def test_cli_produces_a_jsonl_file_as_is_and_raw_lines_on_request(
    stack: StackEndpoints, new_topic: NewTopicFactory, tmp_path: Path
) -> None:
    settings = await _settings(stack, new_topic)
    good = [
        b'{"id": "f-1", "sender": "VM-HDFCBK", "body": "Rs.20.00 debited", "received_at": "x"}',
        b'{"id":"f-2","sender":"+254711000222","body":"hi","received_at":"2026-01-01T00:00:00Z"}',
        b'{"id": "f-3", "body": "no sender"}',
    ]
    path = tmp_path / "sms.jsonl"
    path.write_bytes(b"\n".join(good) + b"\n")

    code, out, err = await _produce_cli("--file", str(path), env=_env(settings))

    assert code == 0, err
    assert out.startswith("produced 3 records"), out
    records = await _records(settings)
    assert sorted((r.key, r.value) for r in records if r.key) == [
        (b"+254711000222", good[1]),
        (b"VM-HDFCBK", good[0]),
    ]
    assert [r.value for r in records if r.key is None] == [good[2]]

    path.write_bytes(good[0] + b"\n" + good[1] + b"\n{truncated\n" + good[2] + b"\n")
    code, out, err = await _produce_cli("--file", str(path), env=_env(settings))
    assert (code, out) == (1, "")
    assert err == (
        f"stream produce: {path}:3: not a JSON object (use --raw to send it anyway); "
        f"stopped after 2 record(s) sent to {settings.topic}\n"
    )
    assert len(await _records(settings)) == 3 + 2

    code, out, err = await _produce_cli(
        "--file", "-", "--raw", env=_env(settings), stdin=b"{truncated\n\xff\xfe\n"
    )
    assert code == 0, err
    assert out.startswith("produced 2 records"), out
    raw = [r for r in await _records(settings) if r.value in (b"{truncated", b"\xff\xfe")]
    assert sorted((r.key, r.value) for r in raw) == [(None, b"{truncated"), (None, b"\xff\xfe")]


async def test_produce_records_paces_and_reports_progress(
    stack: StackEndpoints, new_topic: NewTopicFactory
) -> None:
    settings = await _settings(stack, new_topic)
    values = [(f"k{i % 5}".encode(), f'{{"n": {i}}}'.encode()) for i in range(60)]
    progress: list[int] = []

    started = time.monotonic()
    acked = await produce_records(settings, values, rate=150.0, progress=progress.append)
    elapsed = time.monotonic() - started

    assert acked == 60
    assert elapsed >= 59 / 150 - 0.05, "the rate was not held"
    assert progress == sorted(progress)
    assert progress[-1] == 60
    assert len(progress) > 1, "a paced run reports progress before it ends"
    assert sorted(r.value for r in await _records(settings)) == sorted(v for _, v in values)


async def test_cli_names_a_bad_setting_and_fails() -> None:
    code, out, err = await _produce_cli("--count", "1", env=_env(STREAM_BATCH_MAX="abc"))

    assert (code, out) == (2, "")
    assert err == "stream produce: configuration error: STREAM_BATCH_MAX: 'abc' is not an integer\n"


async def test_cli_says_which_file_and_which_kafka_it_could_not_use(tmp_path: Path) -> None:
    missing = tmp_path / "absent.jsonl"
    code, out, err = await _produce_cli(
        "--file", str(missing), env=_env(STREAM_KAFKA_BOOTSTRAP="127.0.0.1:1")
    )
    assert (code, out) == (1, "")
    assert err == f"stream produce: [Errno 2] No such file or directory: '{missing}'\n"

    path = tmp_path / "sms.jsonl"
    path.write_bytes(b'{"id": "a"}\n')
    code, out, err = await _produce_cli(
        "--file", str(path),
        env=_env(STREAM_KAFKA_BOOTSTRAP="127.0.0.1:1", STREAM_KAFKA_STARTUP_TIMEOUT_MS="0"),
    )
    assert (code, out) == (1, "")
    assert err.startswith("stream produce: cannot reach Kafka at 127.0.0.1:1 ("), err
    assert "Traceback" not in err
