"""Every relative link in the README and docs/ reaches a file, and its ``#anchor`` a heading.

The docs link into each other's sections (docs/replication.md into
docs/performance.md's "Replication log", the README into docs/pov.md's
rules); a page restructured without its links would send a reader to the
top of the wrong page.  Anchors are made as GitHub makes them: the heading
lower-cased, punctuation other than ``-`` and ``_`` dropped, spaces as
``-``, and ``-1``, ``-2`` … after repeated headings.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)


def anchors(page: Path) -> set[str]:
    """The ``#anchor`` of every heading of ``page`` (headings in code blocks are not headings)."""
    seen: Counter[str] = Counter()
    found = set()
    for title in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        found.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file or anchor does not exist."""
    broken = []
    for link in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", link):
            continue  # http:, https:, mailto: are not checked here
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no such heading in {target.name}")
    return broken


def test_the_anchor_rule_on_known_headings():
    found = anchors(ROOT / "docs" / "performance.md")
    assert "replication-log" in found
    assert "where-a-workers-cpu-goes-profiles-of---workers-1-issue-20" in found


def test_every_relative_link_resolves():
    assert len(PAGES) > 5, "README.md or docs/ moved?"
    broken = {page.name: found for page in PAGES if (found := broken_links(page))}
    assert broken == {}
