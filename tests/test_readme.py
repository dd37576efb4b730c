"""The README stays true where a test can tell: its in-page links lead to headings, and the API's
`source` filter lists exactly the values the API accepts."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from store.keyword import UnitSource

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_in_page_links_lead_to_headings():
    anchors = {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", README, flags=re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", README))
    assert links, "the README links nowhere inside itself"
    assert links <= anchors, f"links to missing headings: {sorted(links - anchors)}"


def test_the_source_filter_lists_what_the_api_accepts():
    line = next(x for x in README.splitlines() if "`source` one of" in x)
    listed = re.findall(r"`([a-z_]+)`", line.split("`source` one of", 1)[1])
    assert set(listed) == set(typing.get_args(UnitSource))
