"""Every "reference \u00a7N" and quirk "QN" cited in the repository has a heading in docs/reference.md.

The code cites the technical reference of the original EGTR code by section ("reference \u00a74.2", lists such as
"reference \u00a74.1, \u00a74.2", ranges such as "reference \u00a75.1-5.6") and its quirks by number ("quirk Q5",
"(Q18)"). docs/reference.md has one heading per section and per quirk; these tests keep the two in step.
A section sign must belong to such a citation or cite the paper ("paper \u00a73.2"), so that a misspelt citation
cannot slip past the check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DOC = ROOT / "docs" / "reference.md"
SECTION = "\u00a7"  # written as an escape so that this file's own patterns are not citations

_NUMBER = r"\d+(?:\.\d+)*"
_ONE_SECTION = rf"{SECTION}\s?{_NUMBER}(?:\s?[-\u2013]\s?{SECTION}?{_NUMBER})?"
# "reference \u00a74.2", "Reference \u00a74.1, \u00a74.2", "reference \u00a74.2-4.3" (case-insensitive "reference").
CITATION = re.compile(rf"\b[Rr]eference\s+({_ONE_SECTION}(?:\s*(?:,|and|or)\s*{_ONE_SECTION})*)")
PAPER_SECTION = re.compile(rf"\bpaper\s+{SECTION}")
SECTION_NUMBERS = re.compile(rf"{SECTION}\s?({_NUMBER})(?:\s?[-\u2013]\s?{SECTION}?({_NUMBER}))?")
# A quirk number: "Q" + 1-2 digits as a whole word (not "Q10x", "Q_1", "IQ1", "Q123").
QUIRK = re.compile(r"(?<![\w.])Q(\d{1,2})(?![\w])")
HEADING = re.compile(rf"^#{{2,6}}\s+({SECTION}{_NUMBER}|Q\d{{1,2}})(?=\s|$)", re.MULTILINE)
# Repository paths named in the reference document, e.g. `src/egtr/postprocess.py` or `tests/fixtures/reference/`.
REPO_PATH = re.compile(r"`((?:src|tests|benchmarks|docs)/[\w./-]*)(?:::\w+)?`")


def cited_files(root: Path = ROOT) -> list[Path]:
    """The files whose citations must resolve: Python under src/, tests/, benchmarks/; docs/*.md; README.md."""
    files = [path for folder in ("src", "tests", "benchmarks") for path in sorted((root / folder).rglob("*.py"))]
    return files + sorted((root / "docs").glob("*.md")) + [root / "README.md"]


def reference_headings(text: str) -> set[str]:
    """The anchors of the reference document: "\u00a74.2", "Q5", ..."""
    return set(HEADING.findall(text))


def citations(text: str, is_reference_doc: bool = False) -> list[tuple[int, str]]:
    """(line, anchor) of every citation in a text; a range "\u00a75.1-5.6" gives both ends."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        # The document's own cross-references are bare "\u00a7N".
        spans = [line] if is_reference_doc else [match.group(1) for match in CITATION.finditer(line)]
        for span in spans:
            for start, end in SECTION_NUMBERS.findall(span):
                found += [(number, f"{SECTION}{start}")] + ([(number, f"{SECTION}{end}")] if end else [])
        found += [(number, f"Q{quirk}") for quirk in QUIRK.findall(line)]
    return found


def stray_section_signs(text: str) -> list[tuple[int, str]]:
    """(line, text) of section signs that are neither a reference citation nor a paper section."""
    stray = []
    for number, line in enumerate(text.splitlines(), start=1):
        remainder = PAPER_SECTION.sub("", CITATION.sub("", line))
        if SECTION in remainder:
            stray.append((number, line.strip()))
    return stray


def unresolved(files: list[Path], headings: set[str], root: Path = ROOT) -> list[str]:
    """ "path:line: anchor" for every citation without a heading."""
    problems = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for line, anchor in citations(text, is_reference_doc=path.name == REFERENCE_DOC.name):
            if anchor not in headings:
                problems.append(f"{path.relative_to(root)}:{line}: {anchor}")
    return problems


def test_every_citation_has_a_heading():
    headings = reference_headings(REFERENCE_DOC.read_text(encoding="utf-8"))
    problems = unresolved(cited_files(), headings)
    assert not problems, "citations without a heading in docs/reference.md:\n" + "\n".join(problems)


def test_the_repository_cites_the_reference():
    # Guards the check itself: if the patterns stopped matching, the test above would pass on nothing.
    anchors = {anchor for path in cited_files() for _, anchor in citations(path.read_text(encoding="utf-8"))}
    assert {f"{SECTION}4.2", f"{SECTION}6.1", "Q2", "Q18"} <= anchors and len(anchors) > 40


def test_every_quirk_has_a_heading():
    headings = reference_headings(REFERENCE_DOC.read_text(encoding="utf-8"))
    missing = [f"Q{number}" for number in range(1, 23) if f"Q{number}" not in headings]
    assert not missing, f"docs/reference.md has no heading for {missing}"


def test_section_signs_are_citations():
    stray = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for path in cited_files()
        if path != REFERENCE_DOC
        for line, text in stray_section_signs(path.read_text(encoding="utf-8"))
    ]
    assert not stray, (
        f'write "reference {SECTION}N" (the reference, docs/reference.md) or "paper {SECTION}N":\n' + "\n".join(stray)
    )


def test_paths_in_the_reference_exist():
    named = REPO_PATH.findall(REFERENCE_DOC.read_text(encoding="utf-8"))
    missing = sorted({path for path in named if not (ROOT / path).exists()})
    assert named and not missing, f"docs/reference.md names paths that do not exist: {missing}"


def test_removing_a_heading_is_caught(tmp_path):
    """The check fails when a cited heading disappears (here Q5, cited in src/egtr/data/)."""
    text = REFERENCE_DOC.read_text(encoding="utf-8")
    headings = reference_headings(text)
    assert "Q5" in headings and f"{SECTION}7.2" in headings
    without = reference_headings(re.sub(r"^### Q5 .*$", "", text, flags=re.MULTILINE))
    problems = unresolved(cited_files(), without)
    assert problems and all(problem.endswith(": Q5") for problem in problems)
    assert any(problem.startswith("src/egtr/data/") for problem in problems)


@pytest.mark.parametrize(
    "line, expected",
    [
        (f"see reference {SECTION}4.2 and quirk Q{18}.", [f"{SECTION}4.2", "Q18"]),
        (f"(Reference {SECTION}4.1, {SECTION}4.2)", [f"{SECTION}4.1", f"{SECTION}4.2"]),
        (f"main + x0.1 pass, reference {SECTION}4.2-4.3", [f"{SECTION}4.2", f"{SECTION}4.3"]),
        (f"(reference {SECTION}5.1\u20135.6).", [f"{SECTION}5.1", f"{SECTION}5.6"]),
        (f"paper {SECTION}3.2; a Q{123} or Q{1}0x or IQ{1} or Q_{1} or v1.Q{2} is no quirk", []),
        ("quirk Q9 fixed", ["Q9"]),
    ],
)
def test_citation_patterns(line, expected):
    assert [anchor for _, anchor in citations(line)] == expected


def test_stray_section_signs_are_found():
    assert stray_section_signs(f"data filters ({SECTION}4.5)") == [(1, f"data filters ({SECTION}4.5)")]
    assert stray_section_signs(f"egtr-reference.md {SECTION}3.1") != []
    assert stray_section_signs(f"reference {SECTION}3.1, {SECTION}3.3 and paper {SECTION}3.2") == []


def test_a_citation_without_heading_is_reported(tmp_path):
    cited = tmp_path / "module.py"
    cited.write_text(f'"""Uses reference {SECTION}99.1 and quirk Q{23}."""\n', encoding="utf-8")
    problems = unresolved([cited], {f"{SECTION}4.2"}, root=tmp_path)
    assert problems == [f"module.py:1: {SECTION}99.1", f"module.py:1: Q{23}"]
