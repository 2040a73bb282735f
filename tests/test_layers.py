"""The folder tree is the architecture: each layer imports only the layers below it.

    devkit                         development tooling and doubles (may import anything)
    tools                          operator commands that ship
    app, cli                       the composition root
    engine | processors | adapters the stages (adapters implement engine's ports)
    sms, config, errors, observability   the domain and what every stage may use
    clock                          the one injected time source, below everything

Checked on the source (every `import`, also inside functions), so a violation fails here
before it becomes a cycle or drags devkit into the runtime image.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stream"

BASE = {"errors", "config", "sms", "observability", "clock"}
ALLOWED: dict[str, set[str]] = {
    "clock": set(),
    "errors": set(),
    "config": {"errors"},
    "sms": {"errors"},
    "observability": {"errors", "config", "clock"},
    "engine": BASE | {"engine"},
    "processors": BASE | {"processors"},
    "adapters": BASE | {"adapters", "engine"},
    "app": BASE | {"engine", "processors", "adapters", "app"},
    "cli": {"errors"},
    "__main__": {"cli"},
    "__init__": set(),
    "tools": BASE | {"engine", "adapters", "tools"},
    "devkit": BASE | {"engine", "processors", "adapters", "app", "tools", "devkit"},
}


def _layer(module: str) -> str:
    """`stream.engine.loop` -> `engine`; `stream.app` -> `app`."""
    return module.split(".")[1] if "." in module else "__init__"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "stream":
                found |= {f"stream.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("stream.")}


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_lower_layers(path: Path) -> None:
    module = ".".join(("stream", *path.relative_to(PACKAGE).with_suffix("").parts))
    layer = _layer(module)
    assert layer in ALLOWED, f"{module}: a new top-level module needs a place in ALLOWED"
    allowed = ALLOWED[layer] | {layer}
    wrong = sorted(m for m in _imports(path) if _layer(m) not in allowed)
    assert not wrong, f"{module} ({layer}) may not import {wrong}"


def test_nothing_outside_devkit_names_it_in_an_import() -> None:
    runtime = [p for p in MODULES if "devkit" not in p.relative_to(PACKAGE).parts]
    offenders = [str(p) for p in runtime if any("devkit" in m for m in _imports(p))]
    assert offenders == []
