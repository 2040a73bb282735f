"""The README stays true to the code: every metric, command and setting is documented."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from stream.cli import COMMANDS
from stream.config import markdown_table
from stream.observability import metrics

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_every_metric_is_in_the_readme_table() -> None:
    for name in metrics.__all__:
        metric = getattr(metrics, name)
        if not isinstance(metric, MetricWrapperBase):
            continue
        exposed = metric._name + ("_total" if isinstance(metric, Counter) else "")
        assert f"| `{exposed}` |" in README, exposed


def test_every_command_is_in_the_readme() -> None:
    for command in COMMANDS:
        assert f"`stream {command}" in _section("Commands"), command
    assert "`stream --version`" in _section("Commands")


def test_configuration_table_is_the_one_the_code_renders() -> None:
    """Regenerate the README's copy with the command the Configuration section gives."""
    assert markdown_table() in _section("Configuration")
