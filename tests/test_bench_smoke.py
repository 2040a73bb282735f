"""The benchmarks keep working: their smoke versions run end to end on the local stack and
render the performance page (into a scratch copy) through the writer full runs use."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE_WITHIN_S = 600


@pytest.mark.parametrize("module", ["bench", "bench.limiter_scenarios"])
async def test_bench_smoke_runs_and_prints_its_table(stack: Any, module: str) -> None:
    env = {"STREAM_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "STREAM_MONGO_URL": stack.mongo_url}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", module, "--smoke"],
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}, **env},
        capture_output=True,
        text=True,
        timeout=SMOKE_WITHIN_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "|---" in result.stdout
    written = re.search(r"^written: (\S+) \(smoke run", result.stdout, re.MULTILINE)
    assert written, "a smoke run renders the performance page into a scratch copy"
    page = await asyncio.to_thread(Path(written[1]).read_text)
    assert page.startswith("# Performance")
    assert "|---" in page
    assert "`python -m" in page, "every row names the command that measured it"


def test_a_recorded_command_runs_again_as_recorded() -> None:
    """The command in a row is quoted: `--only "shape window 10s"` stays one argument."""
    script = (
        "from bench.performance import command_line; "
        "print(command_line('python -m bench.limiter_scenarios', ['--only', 'shape window 10s']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert shlex.split(result.stdout) == [
        "python",
        "-m",
        "bench.limiter_scenarios",
        "--only",
        "shape window 10s",
    ]
