"""The peers' virtual environments: one per requirements file, built once, then reused.

Quix Streams pins confluent-kafka below 2.13 and arroyo needs 2.13.2 or later, so neither
can share a venv with the other, and neither belongs in ours: each job runs under
`bench/.venvs/<peer>-<hash>/bin/python` (git-ignored), with the repository on PYTHONPATH
for `stream.sms` and `bench.peers`. The directory name carries a hash of the requirements
file and the Python version, so a new pin builds a new venv. A venv is built in a
temporary directory and renamed into place once pip succeeded, so an interrupted build or
two benches building at once never leave a half-built one behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import BENCH_DIR

__all__ = ["REPO", "PeerUnavailable", "ensure_venv", "peer_env"]

REPO = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"
BUILD_TIMEOUT_S = 600.0
"""A cold build (confluent-kafka, rocksdict, pydantic wheels) takes about a minute here;
ten means the index is unreachable or hanging, and the peer is reported as not measured."""

LOG_LINE_CHARS = 300
"""pip's last line says why (no index, a pin not served); the bench's log dir is gone
after a run that measured everything else, so the reason is carried in the message."""


class PeerUnavailable(Exception):
    """A peer's venv could not be built (no registry, a pin no longer served)."""


def _venv_dir(peer: str) -> tuple[Path, Path]:
    requirements = BENCH_DIR / "peers" / f"requirements-{peer}.txt"
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(sys.version.encode())
    return requirements, VENVS_DIR / f"{peer}-{digest.hexdigest()[:12]}"


def _build(peer: str, log_path: Path) -> Path:
    requirements, target = _venv_dir(peer)
    python = target / "bin" / "python"
    if python.exists():
        return python
    VENVS_DIR.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{peer}-", dir=VENVS_DIR))
    try:
        with log_path.open("ab") as log:
            for argv in (
                [sys.executable, "-m", "venv", "--clear", str(staging)],
                [
                    str(staging / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                    str(requirements),
                ],
            ):
                done = subprocess.run(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=BUILD_TIMEOUT_S,
                    check=False,
                )
                if done.returncode:
                    raise PeerUnavailable(f"python -m {argv[2]} exited {done.returncode}")
        try:
            staging.rename(target)
        except OSError:  # another bench finished the same venv first: use that one
            if not python.exists():
                raise
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"building took over {BUILD_TIMEOUT_S:.0f}s") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return python


async def ensure_venv(peer: str, log_dir: Path) -> Path:
    """The python of `peer`'s venv (building it the first time, pip's output logged in
    `log_dir`); raises PeerUnavailable if it cannot be built."""
    log_path = log_dir / f"venv-{peer}.log"
    try:
        return await asyncio.to_thread(_build, peer, log_path)
    except PeerUnavailable as exc:
        last = log_path.read_text(errors="replace").strip().splitlines()[-1:]
        raise PeerUnavailable(f"{exc}: {' '.join(last)[:LOG_LINE_CHARS]}") from None


def peer_env() -> dict[str, str]:
    """The environment of a peer job: ours without STREAM_* or a venv, the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM_", "VIRTUAL_ENV"))}
    return env | {"PYTHONPATH": str(REPO)}
