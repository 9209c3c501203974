"""infra/README.md stays true to the files: every placeholder is explained, every path it names exists."""

from __future__ import annotations

import re

from .conftest import INFRA, REPO

README = (INFRA / "README.md").read_text()
PLACEHOLDER = re.compile(r"[\w-]+CHANGE_ME[\w-]*|CHANGE_ME[\w-]+")  # a bare CHANGE_ME is prose


def test_every_placeholder_is_in_the_table():
    used = {
        match
        for path in INFRA.rglob("*")
        if path.is_file() and path.suffix in {".yaml", ".sh", ""} and path.name != "README.md"
        for match in PLACEHOLDER.findall(path.read_text())
    }
    rows = [row.split("|") for row in README.splitlines() if row.startswith("| ")]
    table = {cells[1].strip().strip("`") for cells in rows}
    assert used, "no placeholders found: did the pattern break?"
    assert used <= table, f"explain these in 'What to change': {sorted(used - table)}"


def test_paths_it_names_exist():
    named = r"(?<![\w/])infra/(?:[\w./-]+\.(?:yaml|sh|py|txt)\b|[\w-]+/Dockerfile\b)"
    paths = set(re.findall(named, README))
    assert len(paths) > 10
    missing = sorted(path for path in paths if not (REPO / path).exists())
    assert not missing, missing
