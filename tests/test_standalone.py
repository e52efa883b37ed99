"""The repository stands alone: nothing in it points at files outside a clone (the design
notes and the paper's text lived beside the project while it was written)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Assembled so that this file does not match itself.
OUTSIDE = ["../" + "shared", "DESIGN" + ".md", "STYLE" + ".md", "shared/" + "paper"]
TREES = ["fpcost", "docs", "tests", "benchmarks", "scripts"]
FILES = ["README.md", "pyproject.toml"]


def _text_files():
    for name in FILES:
        yield ROOT / name
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".md", ".toml", ".json", ".txt", ".cfg"}:
                yield path


@pytest.mark.parametrize("needle", OUTSIDE)
def test_no_reference_outside_the_repository(needle):
    hits = [f"{path.relative_to(ROOT)}:{number}"
            for path in _text_files()
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if needle in line]
    assert hits == [], f"{needle!r} cited in {hits}"


def test_the_paper_is_cited_by_title_and_arxiv_id():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "https://arxiv.org/abs/2411.15446" in readme
    accounting = (ROOT / "docs" / "accounting.md").read_text(encoding="utf-8")
    assert "freePruner: A Training-free Approach for Large" in accounting
    assert "arXiv:2411.15446" in accounting
