"""The official Kafka Java client as a test producer (tests/java/JavaProducer.java).

Built once with `javac` against the stack's cached Kafka jars; the classes are cached
under the stack cache, keyed by the source and the jars, so later runs only start a JVM.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from stream.devkit.stack import default_cache_dir
from stream.devkit.stack.kafka import install

SOURCE = Path(__file__).parent / "java" / "JavaProducer.java"
JARS = ("kafka-clients-", "lz4-java-", "snappy-java-", "zstd-jni-", "slf4j-api-")
"""The client and what it loads: the three codecs and its logging API (no binding: silent)."""
ANSWER_S = 60.0
"""A command answers in milliseconds; a JVM starting on a busy machine takes seconds."""

Headers = list[tuple[str, bytes | None]]


def classpath() -> str:
    """The compiled producer and its jars, compiling on first use."""
    lib = install(default_cache_dir())
    jars = sorted(str(jar) for jar in lib.glob("*.jar") if jar.name.startswith(JARS))
    assert len(jars) == len(JARS), f"expected {JARS} in {lib}, found {jars}"
    digest = hashlib.sha256(SOURCE.read_bytes() + "\n".join(jars).encode()).hexdigest()[:16]
    classes = default_cache_dir() / f"java-producer-{digest}"
    if not (classes / "JavaProducer.class").exists():
        javac = shutil.which("javac")
        assert javac is not None, "javac is needed to build the Java test producer"
        staging = Path(tempfile.mkdtemp(prefix="java-producer-", dir=default_cache_dir()))
        subprocess.run(
            [javac, "-cp", ":".join(jars), "-d", str(staging), str(SOURCE)], check=True
        )
        try:
            staging.rename(classes)
        except OSError:  # another process built it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    return ":".join([str(classes), *jars])


def send_line(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None = None,
    *,
    partition: int | None = None,
    timestamp_ms: int | None = None,
) -> str:
    fields = [
        "send",
        topic,
        "-" if partition is None else str(partition),
        "-" if timestamp_ms is None else str(timestamp_ms),
        _field(key),
        _field(value),
        *(f"{_field(k.encode())}={_field(v)}" for k, v in headers or ()),
    ]
    return " ".join(fields)


def _field(data: bytes | None) -> str:
    """Hex; `-` for null, `.` for empty."""
    return "-" if data is None else data.hex() or "."


class JavaProducer:
    """One JVM running the producer; `await run(*commands)` returns once each answered."""

    def __init__(self, bootstrap: str, **config: str) -> None:
        self._args = [f"bootstrap.servers={bootstrap}", *(f"{k}={v}" for k, v in config.items())]
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> JavaProducer:
        java = shutil.which("java")
        assert java is not None
        cp = await asyncio.to_thread(classpath)
        self._proc = await asyncio.create_subprocess_exec(
            java, "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", cp, "JavaProducer",
            *self._args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return self

    async def run(self, *commands: str) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        assert proc.stdout is not None
        for command in commands:
            proc.stdin.write(command.encode() + b"\n")
        await proc.stdin.drain()
        for command in commands:
            answer = await asyncio.wait_for(proc.stdout.readline(), ANSWER_S)
            assert answer == b"ok\n", f"{command[:80]!r} answered {answer!r}"

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        proc.stdin.close()
        code = await asyncio.wait_for(proc.wait(), ANSWER_S)
        if kind is None:
            assert code == 0, f"the Java producer exited {code}"
