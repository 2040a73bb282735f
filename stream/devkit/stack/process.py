"""Background processes of the dev-stack: spawn, recognise, stop (Linux `/proc` based).

A pid alone is not an identity: after a reboot or a long pause it may belong to anything.
A `Proc` therefore also records the process start time (field 22 of `/proc/<pid>/stat`)
and a `needle`, an argument only our process has (its config file or data dir), and
`stop` signals a pid only while both still match.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stream.errors import StackError

__all__ = [
    "Proc",
    "default_cache_dir",
    "file_lock",
    "free_port",
    "locked",
    "log_tail",
    "port_accepts",
    "port_is_free",
    "run_tool",
    "spawn",
    "stop",
    "wait_ready",
]

# How often `stop` re-checks whether a signalled process has exited.
_EXIT_POLL_S = 0.05
# Bounds the moment after Popen in which the child's argv is not readable yet (microseconds
# on an idle machine; generous for a loaded one).
_EXEC_SETTLE_S = 5.0
# How often a starting service is probed; start-up takes seconds, a probe milliseconds.
_READY_POLL_S = 0.2
# Lines of a service's log quoted in an error, enough to show a Java stack trace's head.
_LOG_TAIL_LINES = 40

# Popen objects of the services this interpreter started: kept so they are not garbage
# collected while running (a ResourceWarning, an error under pytest) and so `stop` can
# reap them instead of leaving zombies behind in a long-lived test process.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Proc:
    """A process we started: pid, its start time, and an argument only it has."""

    pid: int
    start_ticks: int
    needle: str

    def cmdline(self) -> list[str] | None:
        """The process's argv while it is still ours and not a zombie, else None."""
        child = _CHILDREN.get(self.pid)
        if child is not None and child.poll() is not None:
            # Reaped now; /proc below decides. poll() alone can be wrong: if anyone else
            # reaps children, it sees ECHILD and reports a live process as exited.
            del _CHILDREN[self.pid]
        try:
            state, start_ticks = _stat(self.pid)
            raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:  # no such process
            return None
        if state == "Z" or start_ticks != self.start_ticks:
            return None
        argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        return argv if self.needle in argv else None

    def running(self) -> bool:
        return self.cmdline() is not None


def _stat(pid: int) -> tuple[str, int]:
    """(state letter, start time in clock ticks) of a pid; OSError if there is no such pid."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may itself contain spaces.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def spawn(argv: Sequence[str], *, log: Path, needle: str, cwd: Path | None = None) -> Proc:
    """Start a service in its own session (a Ctrl-C in the terminal does not reach it),
    with stdout and stderr appended to `log`."""
    if needle not in argv:
        raise ValueError(f"needle {needle!r} is not an argument of {argv!r}")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        child = subprocess.Popen(  # noqa: S603 - argv is built by this package, never by input
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    _CHILDREN[child.pid] = child
    # An unreaped child always has its /proc entry, even if it exited at once.
    proc = Proc(pid=child.pid, start_ticks=_stat(child.pid)[1], needle=needle)
    # Popen returns while the kernel may still be setting up the new program (vfork):
    # /proc/<pid>/cmdline reads empty for a moment, which would pass for "not ours".
    deadline = time.monotonic() + _EXEC_SETTLE_S
    while not proc.running() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(_EXIT_POLL_S)
    return proc


def stop(proc: Proc, *, grace_s: float) -> bool:
    """Stop `proc` if it is still ours: SIGTERM, up to `grace_s` to exit, then SIGKILL.

    `grace_s=0` is a hard stop (SIGKILL at once). Returns whether a signal was sent;
    stopping a process that is gone or no longer ours is a no-op, so this is idempotent.
    """
    if not proc.running():
        return False
    sig = signal.SIGTERM if grace_s > 0 else signal.SIGKILL
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    if not _wait_exit(proc, grace_s) and sig is signal.SIGTERM:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    if not _wait_exit(proc, 10.0):
        raise StackError(f"pid {proc.pid} ({proc.needle}) survived SIGKILL")
    return True


def _wait_exit(proc: Proc, timeout_s: float) -> bool:
    """Wait until `proc` has finished exiting, so its ports and files are released.

    `running()` turns False as soon as the exit starts (the argv goes with the memory); a
    JVM's sockets stay open for another ~100 ms, and a restart would find its ports busy.
    """
    deadline = time.monotonic() + timeout_s
    while proc.running() or _exiting(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_EXIT_POLL_S)
    return True


def _exiting(proc: Proc) -> bool:
    """Whether `proc` is still releasing its resources: not yet a zombie, or a zombie main
    thread whose other threads still run."""
    child = _CHILDREN.get(proc.pid)
    if child is not None:
        # waitpid reaps a process only once its whole thread group has exited.
        return child.poll() is None
    try:
        state, start_ticks = _stat(proc.pid)
        threads = len(os.listdir(f"/proc/{proc.pid}/task"))
    except OSError:  # gone, and reaped by its parent
        return False
    return start_ticks == proc.start_ticks and (state != "Z" or threads > 1)


def default_cache_dir() -> Path:
    """Where fetched jars and built binaries live: `$XDG_CACHE_HOME/stream` or `~/.cache/stream`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stream"


async def wait_ready(what: str, probe: Callable[[], Awaitable[bool]], *, timeout_s: float,
                     proc: Proc | None = None, log: Path | None = None) -> None:
    """Poll `probe` until it answers True; StackError with the log tail when `proc` exits
    or `timeout_s` passes first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await probe():
        tail = "" if log is None else f"; log {log}:\n{log_tail(log)}"
        if proc is not None and not proc.running():
            raise StackError(f"{what} exited during start-up{tail}")
        if loop.time() >= deadline:
            raise StackError(f"{what} did not answer within {timeout_s:g} s{tail}")
        await asyncio.sleep(_READY_POLL_S)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` of 127.0.0.1 now.

    Binds with SO_REUSEADDR, as Kafka and Mongo servers do: connections of a killed server
    linger in TIME_WAIT, which does not stop them binding again, and restarting on the same
    port is what lets connected clients reconnect.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def port_accepts(host: str, port: int) -> bool:
    """Whether a TCP connect succeeds: a cheap, silent check before a protocol probe."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def log_tail(log: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def run_tool(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None,
             what: str) -> str:
    """Run a build or admin tool to completion; StackError with its output tail on failure."""
    result = subprocess.run(  # noqa: S603 - argv is built by this package
        list(argv), cwd=cwd, env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-_LOG_TAIL_LINES:])
        raise StackError(f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{output}")
    return result.stdout


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock file (blocking): serialises builds into a shared cache."""
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.asynccontextmanager
async def locked(path: Path) -> AsyncIterator[None]:
    """Hold an exclusive lock file, so two `stack up` (a shell and a test run) serialise.

    The wait runs in a thread: the other holder may be busy for a minute building.
    """
    fd = _open_lock(path)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
