"""A MongoDB-wire server for the dev-stack: `mongod` when installed, else FerretDB.

MongoDB's own downloads are out of reach of CI machines and Debian packages no `mongod`,
so without one the stack builds FerretDB v1 (pure-Go SQLite backend) from the pinned Go
module in `stream/devkit/stack/ferretdb/`. It differs from MongoDB in ways code must allow for: an
update breaking a secondary unique index fails with code 1, not 11000; the first failing
update aborts the rest of a bulk; no transactions or change streams; no keys with `.` or a
leading `$`. Tests stay green against a real MongoDB too, via STREAM_MONGO_URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from stream.devkit.stack.process import (
    Proc,
    default_cache_dir,
    file_lock,
    free_port,
    port_accepts,
    run_tool,
    spawn,
    stop,
    wait_ready,
)
from stream.errors import StackError

__all__ = [
    "MongoBinary",
    "MongoServer",
    "answers",
    "find_binary",
    "start",
    "unavailable_reason",
    "url_for",
]

logger = logging.getLogger(__name__)

# The Go module pinning FerretDB (go.mod/go.sum); only present in a source checkout.
FERRETDB_SOURCE = Path(__file__).resolve().parent / "ferretdb"
_FERRETDB_FILES = ("go.mod", "go.sum", "main.go")
# One ping; a server that is up answers in milliseconds.
_PROBE_TIMEOUT_MS = 2000
# FerretDB starts in well under a second, mongod in a few; both are slower on a cold disk.
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class MongoBinary:
    """A server executable and how to start it on a data dir and port."""

    kind: Literal["mongod", "ferretdb"]
    path: str

    def command(self, data: Path, port: int) -> list[str]:
        if self.kind == "mongod":
            return [self.path, "--dbpath", str(data), "--bind_ip", "127.0.0.1",
                    "--port", str(port), "--quiet"]
        return [self.path, "-listen", f"127.0.0.1:{port}", "-data-dir", str(data),
                "-log-level", "error"]


def _ferretdb_target(cache_dir: Path) -> Path:
    """Build output path keyed by a hash of the module's files, so an edit rebuilds."""
    digest = hashlib.sha256()
    for name in _FERRETDB_FILES:
        digest.update(name.encode() + b"\0" + (FERRETDB_SOURCE / name).read_bytes())
    return cache_dir / f"ferretdb-{digest.hexdigest()[:16]}" / "ferretdb"


def unavailable_reason(cache_dir: Path) -> str | None:
    """Why no local server can be started here (None when one can): tests skip with it."""
    if shutil.which("mongod") is not None:
        return None
    if not (FERRETDB_SOURCE / "go.mod").exists():
        return f"no mongod on PATH and no FerretDB sources at {FERRETDB_SOURCE}"
    if _ferretdb_target(cache_dir).exists() or shutil.which("go") is not None:
        return None
    return "no mongod on PATH and no Go toolchain to build FerretDB"


def find_binary(cache_dir: Path) -> MongoBinary:
    """`mongod` from PATH, else FerretDB, built into `cache_dir` on first use.

    Raises StackError naming what to install when neither is possible.
    """
    mongod = shutil.which("mongod")
    if mongod is not None:
        return MongoBinary("mongod", mongod)
    if not (FERRETDB_SOURCE / "go.mod").exists():
        raise StackError(
            f"no mongod on PATH and no FerretDB sources at {FERRETDB_SOURCE}: install MongoDB "
            "or set STREAM_MONGO_URL"
        )
    target = _ferretdb_target(cache_dir)
    if target.exists():
        return MongoBinary("ferretdb", str(target))
    go = shutil.which("go")
    if go is None:
        raise StackError(
            "neither mongod nor go found: install Go 1.24+ (https://go.dev/dl/) so the stack "
            "can build FerretDB, or install MongoDB, or set STREAM_MONGO_URL"
        )
    with file_lock(cache_dir / "ferretdb.lock"):
        if not target.exists():  # else another process built it while we waited
            logger.info("building FerretDB into %s (first run only, about a minute)", target)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name("ferretdb.partial")
            # -mod=mod with the committed go.sum: modules come from GOPROXY, checked
            # against go.sum; -trimpath, no VCS stamp and no cgo keep the build reproducible.
            env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
            run_tool([go, "build", "-trimpath", "-buildvcs=false", "-o", str(partial), "."],
                     cwd=FERRETDB_SOURCE, env=env, what="building FerretDB with go")
            partial.rename(target)
    return MongoBinary("ferretdb", str(target))


def start(binary: MongoBinary, home: Path, port: int) -> Proc:
    """Start the server on `home/data`, logging to `home/mongo.log`."""
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    return spawn(binary.command(data, port), log=home / "mongo.log", needle=str(data), cwd=home)


def url_for(port: int) -> str:
    return f"mongodb://127.0.0.1:{port}/"


async def answers(url: str) -> bool:
    """Whether the server at `url` answers `ping`."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url, serverSelectionTimeoutMS=_PROBE_TIMEOUT_MS, connectTimeoutMS=_PROBE_TIMEOUT_MS
    )
    try:
        await client.admin.command("ping")
    except PyMongoError:
        return False
    finally:
        await client.close()
    return True


class MongoServer:
    """A server owned by one test, which can kill it and bring it back.

    Restarts keep the port and the data dir, so a client (and the code under test) sees the
    same database go away and come back. Use as `async with MongoServer(dir) as server:`.
    """

    def __init__(self, home: Path, cache_dir: Path | None = None) -> None:
        self._home = home
        self._cache_dir = default_cache_dir() if cache_dir is None else cache_dir
        self._port = free_port()
        self._proc: Proc | None = None

    @property
    def url(self) -> str:
        return url_for(self._port)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start (or restart) the server and wait until it answers `ping`."""
        if not self.running:
            binary = await asyncio.to_thread(find_binary, self._cache_dir)
            self._proc = start(binary, self._home, self._port)
        proc = self._proc
        await wait_ready(f"Mongo server at {self.url}", self._answers, timeout_s=timeout_s,
                         proc=proc, log=self._home / "mongo.log")

    async def _answers(self) -> bool:
        return await port_accepts("127.0.0.1", self._port) and await answers(self.url)

    def stop(self) -> None:
        """Kill the server at once (SIGKILL, as a crash would); safe to call twice."""
        if self._proc is not None:
            stop(self._proc, grace_s=0)
            self._proc = None

    async def __aenter__(self) -> MongoServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
