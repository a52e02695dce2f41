"""CHANGELOG.md keeps Keep a Changelog 1.1.0's shape (https://keepachangelog.com/en/1.1.0/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CHANGELOG = Path(__file__).resolve().parents[1] / "CHANGELOG.md"

# Keep a Changelog's section names, in its order.
SECTIONS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
MAX_LINE = 200
RELEASE = re.compile(r"## \[(?P<version>Unreleased|\d+\.\d+\.\d+\S*)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?")
LINK_REFERENCE = re.compile(r"\[[^\]]+\]: \S+")


def changelog_problems(text: str) -> list[str]:
    """Every way `text` departs from the shape; empty when it keeps it."""
    problems: list[str] = []
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE:
            problems.append(f"line {number}: {len(line)} characters (at most {MAX_LINE}): {line[:60]}...")
    if not lines or lines[0] != "# Changelog":
        problems.append("line 1: the title must be '# Changelog'")
    first_release = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    intro = " ".join(lines[1:first_release])
    for needed in ("All notable changes to this project", "https://keepachangelog.com/en/1.1.0/",
                   "https://semver.org/"):
        if needed not in intro:
            problems.append(f"the header must contain {needed!r}")
    if first_release == len(lines) or lines[first_release] != "## [Unreleased]":
        problems.append("the first release section must be '## [Unreleased]'")

    versions: list[str] = []
    section = None            # the current ### heading's index in SECTIONS, None before one
    order: list[int] = []     # indices of the ### headings seen in the current release
    entries = 0               # bullets under the current ### heading
    links_started = False

    def end_section(number: int) -> None:
        if section is not None and entries == 0:
            problems.append(f"line {number}: '### {SECTIONS[section]}' has no entries")

    for number, line in enumerate(lines[first_release:], first_release + 1):
        if not line.strip():
            continue
        if links_started and not LINK_REFERENCE.fullmatch(line):
            problems.append(f"line {number}: only link references may follow the link references")
            continue
        if line.startswith("## "):
            end_section(number)
            match = RELEASE.fullmatch(line)
            if match is None:
                problems.append(f"line {number}: a release heading is '## [Unreleased]' or "
                                f"'## [X.Y.Z] - YYYY-MM-DD', not {line!r}")
            else:
                version = match["version"]
                if version in versions:
                    problems.append(f"line {number}: '{version}' appears twice")
                if version != "Unreleased" and match["date"] is None:
                    problems.append(f"line {number}: a released version needs its date: {line!r}")
                versions.append(version)
            section, order, entries = None, [], 0
        elif line.startswith("### "):
            end_section(number)
            name = line[4:]
            if name not in SECTIONS:
                problems.append(f"line {number}: section {name!r} is not one of {', '.join(SECTIONS)}")
                section = None
            else:
                section = SECTIONS.index(name)
                if order and section <= order[-1]:
                    problems.append(f"line {number}: '### {name}' is out of order or repeated "
                                    f"(the order is {', '.join(SECTIONS)})")
                order.append(section)
            entries = 0
        elif line.startswith("#"):
            problems.append(f"line {number}: only '## ' releases and '### ' sections are headings here")
        elif LINK_REFERENCE.fullmatch(line):
            end_section(number)
            section, links_started = None, True
        elif not line.startswith("- ") or not line[2:].strip():
            problems.append(f"line {number}: every entry is one '- ' bullet line: {line[:60]!r}")
        elif section is None:
            problems.append(f"line {number}: an entry must sit under a '### ' section")
        else:
            entries += 1
    end_section(len(lines))
    return problems


def test_changelog_keeps_its_shape():
    assert changelog_problems(CHANGELOG.read_text(encoding="utf-8")) == []


GOOD = """# Changelog

All notable changes to this project will be documented in this file.

The format is based on [Keep a Changelog](https://keepachangelog.com/en/1.1.0/),
and this project adheres to [Semantic Versioning](https://semver.org/spec/v2.0.0.html).

## [Unreleased]

### Added
- A thing.

### Fixed
- Another thing.

## [0.1.0] - 2026-12-01

### Added
- The first thing.

[Unreleased]: https://example.org/compare/v0.1.0...HEAD
"""


def test_a_good_changelog_passes():
    assert changelog_problems(GOOD) == []


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("# Changelog", "# Change log", "title"),
    ("All notable changes", "Some changes", "All notable changes"),
    ("https://keepachangelog.com/en/1.1.0/", "https://keepachangelog.com/", "keepachangelog"),
    ("## [Unreleased]\n\n### Added\n- A thing.\n\n### Fixed\n- Another thing.\n\n", "", "[Unreleased]"),
    ("### Fixed", "### Bugfixes", "not one of"),
    ("### Added\n- A thing.\n\n### Fixed\n- Another thing.",
     "### Fixed\n- Another thing.\n\n### Added\n- A thing.", "out of order"),
    ("### Fixed\n- Another thing.", "### Added\n- Another thing.", "out of order or repeated"),
    ("### Fixed\n- Another thing.\n", "### Fixed\n", "has no entries"),
    ("- A thing.", "- A thing\n  that wraps.", "one '- ' bullet line"),
    ("- A thing.", "* A thing.", "one '- ' bullet line"),
    ("- A thing.", "- " + "x" * 199, "characters"),
    ("## [0.1.0] - 2026-12-01", "## [0.1.0]", "needs its date"),
    ("## [0.1.0] - 2026-12-01", "## 0.1.0 (2026-12-01)", "release heading"),
    ("### Added\n- The first", "#### Added\n- The first", "headings"),
    ("## [Unreleased]\n\n### Added", "## [Unreleased]\n\n- Loose.\n\n### Added", "under a '### ' section"),
    ("https://example.org/compare/v0.1.0...HEAD", "https://example.org/x\n- Late.", "link references"),
])
def test_each_departure_is_reported(old, new, problem):
    assert old in GOOD
    problems = changelog_problems(GOOD.replace(old, new, 1))
    assert problems and any(problem in p for p in problems), problems
