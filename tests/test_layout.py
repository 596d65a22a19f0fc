"""Who may import whom: the layering the architecture page describes, checked on the source."""

from __future__ import annotations

import ast
import pathlib

import pytest

FRISKY = pathlib.Path(__file__).resolve().parent.parent / "frisky"


def _imports(package: str) -> dict[str, set[str]]:
    """Module path -> every module name it imports (at top level or inside functions)."""
    out = {}
    for path in (FRISKY / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        out[str(path.relative_to(FRISKY.parent))] = names
    return out


def test_deploy_never_imports_the_client():
    # the client starts a LocalCluster; the cluster reaches the client only by its public name
    for module, names in _imports("deploy").items():
        bad = {n for n in names if n.startswith("frisky.client")}
        assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("forbidden", ["pickle", "cloudpickle", "frisky.data.serialize"])
def test_the_scheduler_never_unpickles(forbidden):
    for module, names in _imports("scheduler").items():
        assert forbidden not in names, f"{module} imports {forbidden}"
