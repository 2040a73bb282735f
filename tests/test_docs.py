"""The README and docs/ stay true to the code, and to each other.

Every setting, metric and command has exactly one table row across the README and docs/
(settings and commands in the README, metrics in docs/operations.md); every relative link
resolves, anchors included; the README stays short; docs/performance.md is the rendering of
bench/results.json; and no text in the tree speaks of past work or issue numbers, except
CHANGELOG.md and the decision records, whose subject that is.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from stream.cli import COMMANDS
from stream.config import SETTINGS_DOC, markdown_table
from stream.observability import metrics

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [README, ROOT / "CHANGELOG.md", ROOT / "bench" / "README.md", *DOCS]
README_MAX_LINES = 300

HISTORY_ALLOWED = {ROOT / "CHANGELOG.md", *(ROOT / "docs" / "decisions").glob("*.md")}
HISTORY = re.compile(
    r"\bissues?\s+#?\d"
    r"|\bissue\s+#"
    r"|\b(?:last|next|previous|this|that)\s+session\b"
    r"|\b(?:this|last|next|previous|that)\s+round\b(?![\s-]+trip)"
    r"|\bthe\s+round\s+(?:after|before)\b"
    r"|\bonce\s+more\s+in\b"
    r"|\(was:?\s",
    re.IGNORECASE,
)
"""Talk of past work: issue numbers, sessions and rounds of work, "was X" histories."""

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _text(path: Path) -> str:
    return path.read_text()


def _section(title: str) -> str:
    return _text(README).split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _rows(first_cell: str) -> list[Path]:
    """The pages with a table row whose first cell is `first_cell`, once per row."""
    return [
        page
        for page in PAGES
        for line in _text(page).splitlines()
        if line.startswith(f"| {first_cell} |")
    ]


def _exposed_metrics() -> list[str]:
    names = []
    for name in metrics.__all__:
        metric = getattr(metrics, name)
        if isinstance(metric, MetricWrapperBase):
            names.append(metric._name + ("_total" if isinstance(metric, Counter) else ""))
    return names


def test_readme_is_short() -> None:
    assert len(_text(README).splitlines()) <= README_MAX_LINES


def test_every_metric_has_one_row_in_the_operations_table() -> None:
    for exposed in _exposed_metrics():
        assert _rows(f"`{exposed}`") == [ROOT / "docs" / "operations.md"], exposed


def test_every_setting_has_one_row_in_the_readme_table() -> None:
    for setting in SETTINGS_DOC:
        assert _rows(f"`{setting}`") == [README], setting


def test_every_command_has_its_rows_in_the_readme_commands_table() -> None:
    rows: dict[str, set[Path]] = {}
    for page in PAGES:
        for match in re.finditer(r"^\| `stream ([\w-]+)", _text(page), re.MULTILINE):
            rows.setdefault(match[1], set()).add(page)
    assert rows == {command: {README} for command in [*COMMANDS, "--version"]}
    for command in COMMANDS:
        assert f"| `stream {command}" in _section("Commands"), command


def test_configuration_table_is_the_one_the_code_renders() -> None:
    """Regenerate the README's copy with the command the Configuration section gives."""
    assert markdown_table() in _section("Configuration")


def test_performance_page_is_the_rendering_of_the_recorded_figures() -> None:
    """`make bench` records figures in bench/results.json and re-renders the page from them;
    `python -m bench.performance` re-renders it from the record alone."""
    check = subprocess.run(
        [sys.executable, "-m", "bench.performance", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for match in re.finditer(r"^#{1,6}\s+(.+)$", FENCE.sub("", _text(path)), re.MULTILINE):
        slug = _slug(match[1])
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", _text(page))):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or (
            anchor and (resolved.is_dir() or anchor not in _anchors(resolved))
        ):
            broken.append(target)
    assert broken == []


def test_no_text_speaks_of_past_work_outside_the_changelog_and_decisions() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    found = []
    for name in filter(None, listed):
        path = ROOT / name
        if path in HISTORY_ALLOWED or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [
            f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m[0]}"
            for m in HISTORY.finditer(text)
        ]
    assert found == []
