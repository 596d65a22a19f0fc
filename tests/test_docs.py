"""docs/architecture.md stays true to the code: the message table and the module map."""

from __future__ import annotations

import pathlib
import re

from frisky import protocol

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARCH = (ROOT / "docs" / "architecture.md").read_text()


def _table(heading: str) -> dict[str, str]:
    section = ARCH.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2 and not set(cells[0]) <= set("-"):
            rows[cells[0]] = cells[1]
    return rows


def test_message_table_lists_every_op_of_every_direction():
    rows = _table("Messages")
    rows.pop("direction")
    documented = {d: set(re.findall(r"`([a-z-]+)`", ops)) for d, ops in rows.items()}
    actual = {d: set(table) for d, table in protocol.DIRECTIONS.items()}
    assert documented == actual, "update the Messages table of docs/architecture.md to match protocol.DIRECTIONS"


def test_module_map_names_every_package():
    rows = _table("Module map")
    packages = {f"`frisky/{p.parent.relative_to(ROOT / 'frisky')}/`".replace("/./", "/")
                for p in (ROOT / "frisky").glob("*/__init__.py")}
    missing = packages - set(rows)
    assert not missing, f"docs/architecture.md's module map lacks {sorted(missing)}"


def test_readme_and_docs_link_only_inside_the_repository():
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = path.read_text()
        for target in re.findall(r"\]\(([^)]+)\)", text):
            assert not target.startswith(("..", "/")), f"{path.name} links outside the repository: {target}"
            if not target.startswith(("http://127.0.0.1", "http://localhost", "#")):
                assert not re.match(r"[a-z]+://", target), f"{path.name} links outside the repository: {target}"
                assert (path.parent / target.split("#")[0]).exists(), f"{path.name}: broken link {target}"
