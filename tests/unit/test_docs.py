"""The front door stays one screen and every relative link in README.md and docs/ resolves."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_is_one_screen_with_a_short_headline_table():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300
    first = next(i for i, ln in enumerate(lines) if ln == "## Headline results")
    first = next(i for i in range(first, len(lines)) if lines[i].startswith("|"))
    table = []
    for ln in lines[first:]:
        if not ln.startswith("|"):
            break
        table.append(ln)
    rows = table[2:]  # header and rule excluded
    assert 1 <= len(rows) <= 12
    assert all(ln.count("`") >= 2 for ln in rows), "every headline row names its command"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    broken = [
        target
        for target in LINK.findall(doc.read_text(encoding="utf-8"))
        if not target.startswith(("http://", "https://", "mailto:")) and not (doc.parent / target).exists()
    ]
    assert broken == []
