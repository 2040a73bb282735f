"""The README stays true to the code: every metric and every command is documented."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import Counter

from stream.cli import COMMANDS
from stream.observability import metrics

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_metric_is_in_the_readme_table() -> None:
    for name in metrics.__all__:
        metric = getattr(metrics, name)
        exposed = metric._name + ("_total" if isinstance(metric, Counter) else "")
        assert f"| `{exposed}` |" in README, exposed


def test_every_command_is_in_the_readme() -> None:
    for command in COMMANDS:
        assert f"`stream {command}" in README, command
