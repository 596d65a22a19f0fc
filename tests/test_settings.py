"""Every setting is documented in the README's configuration table, and nothing else is."""

from __future__ import annotations

import pathlib
import re

from frisky import config

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_table_lists_every_setting_with_its_variable():
    rows = re.findall(r"^\| `([a-z_0-9]+)` \| `(FRISKY_[A-Z_0-9]+)` \|", README.read_text(), re.M)
    assert rows, "no configuration table in README.md"
    assert all(var == "FRISKY_" + name.upper() for name, var in rows)
    documented = [name for name, _ in rows]
    assert sorted(documented) == sorted(config.DEFAULTS), "README's table and config.DEFAULTS differ"


def test_environment_overrides_and_keyword_wins(monkeypatch):
    monkeypatch.setenv("FRISKY_HEARTBEAT_INTERVAL", "2.5")
    assert config.get("heartbeat_interval") == 2.5
    assert config.get("heartbeat_interval", 0.5) == 0.5
    monkeypatch.setenv("FRISKY_VALIDATE", "1")
    assert config.get("validate") is True
