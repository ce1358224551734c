"""docs/architecture.md's layers, held against the code: which package may import which.

The table below is the one in the docs; a new import that crosses a layer the wrong way
fails here with the file and the import, before it turns into a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> the repedge packages it may import (docs/architecture.md).
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "edgemodel": {"common"},
    "broker": {"common", "edgemodel"},
    "provisioning": {"common", "edgemodel"},
    "trainer": {"common", "edgemodel"},
    "node": {"common", "edgemodel", "provisioning"},
    "dashboard": {"common", "edgemodel", "node"},
    "bench": {"common", "edgemodel", "broker", "node"},
    "harness": {"common", "edgemodel", "broker", "node", "provisioning", "trainer"},
}
# Narrower rules inside a package: (package, imported package) -> the only modules allowed.
ONLY_FROM = {
    # node/serve.py is the node's composition root; the rest sees node/updates.py's interface.
    ("node", "provisioning"): {"node/serve.py"},
    # The dashboard's Teach view and the history's tweets behind a point talk to a node
    # through the node's teach client only.
    ("dashboard", "node"): {
        "dashboard/cli.py",
        "dashboard/history_tweets.py",
        "dashboard/teach_term.py",
        "dashboard/teach_web.py",
    },
}
PACKAGES = set(ALLOWED) | {"tests", "benchmarks", "scripts"}


def imports_of(path: Path) -> set[str]:
    """Top-level repedge packages that ``path`` imports (at any depth in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & PACKAGES
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_the_layers_below(package: str) -> None:
    wrong = []
    for path in sorted((REPO / package).rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for imported in imports_of(path) - {package}:
            only = ONLY_FROM.get((package, imported))
            if imported not in ALLOWED[package] or (only is not None and rel not in only):
                wrong.append(f"{rel} imports {imported}")
    assert not wrong, "layer violations (docs/architecture.md):\n" + "\n".join(wrong)


def test_no_service_code_imports_tests_or_benchmarks() -> None:
    for package in ALLOWED:
        for path in (REPO / package).rglob("*.py"):
            assert not imports_of(path) & {"tests", "benchmarks", "scripts"}, path
