"""Every citation of the algorithm reference in the code and README resolves to a section of docs/algorithm.md."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "algorithm.md"
SOURCES = [*sorted((ROOT / "ppocma_jax").rglob("*.py")), *sorted((ROOT / "experiments").glob("*.py")),
           *sorted((ROOT / "notebooks").glob("*.ipynb")), ROOT / "README.md"]
CITATION = re.compile(r"algorithm\.md ((?:§[0-9]+(?:\.[0-9]+)?(?:-§?[0-9]+(?:\.[0-9]+)?)?)(?:, (?:§10 )?D[0-9]+)?)")


def _sections() -> tuple[set[str], set[str]]:
    text = DOC.read_text()
    numbers = set(re.findall(r"^#+ ([0-9]+(?:\.[0-9]+)?)\.? ", text, flags=re.M))
    items = set(re.findall(r"^- \*\*(D[0-9]+)\b", text, flags=re.M))
    return numbers, items


def test_every_citation_resolves():
    numbers, items = _sections()
    assert {"1", "3.4", "10"} <= numbers and "D1" in items  # the parser reads the document's headings
    cited = 0
    for path in SOURCES:
        text = path.read_text()
        for match in CITATION.finditer(text):
            cited += 1
            for number in re.findall(r"§?([0-9]+(?:\.[0-9]+)?)(?=[-,\s)\]`\"'.;:]|$)", match.group(1).split(",")[0]):
                assert number in numbers, f"{path.relative_to(ROOT)} cites algorithm.md §{number}, which has no heading"
            for item in re.findall(r"D[0-9]+", match.group(0)):
                assert item in items, f"{path.relative_to(ROOT)} cites {item}, which docs/algorithm.md lacks"
        for item in re.findall(r"§10 (D[0-9]+)", text):
            assert item in items, f"{path.relative_to(ROOT)} cites §10 {item}, which docs/algorithm.md lacks"
    assert cited > 40  # the code does cite it


def test_no_citation_of_documents_outside_the_repository():
    for path in SOURCES:
        stale = re.findall(r"spec §[0-9]|pitfalls? P[0-9]|ppocma_spec\.md", path.read_text())
        assert not stale, f"{path.relative_to(ROOT)} cites a document that is not in the repository: {stale}"
