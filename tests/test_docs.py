"""The documentation a reader follows: the README stays a front door (the two commands, at most
~20 KB, the reference in docs/), and every relative link in the project's Markdown leads to a file
that exists and, with a `#fragment`, to a heading in it (GitHub's anchors). That every
configuration key is documented, and only those, is core/config/src/docs_tests.rs."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted([README, ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md"),
                *(ROOT / "deploy").glob("*.md"), *(ROOT / "wasmplugin").glob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lowercase, punctuation dropped, spaces to hyphens, repeats -1, -2."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def prose(page: Path) -> str:
    """The page without its fenced code blocks (a `#` there is a comment, a `](` is code)."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)


def test_the_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.encode()) <= 20_000, f"README.md is {len(text.encode())} bytes: move reference into docs/"
    for command in ("./build.sh demo", "./build.sh test"):
        assert command in text, f"the README shows `{command}`"
    for doc in ("configuration", "operations", "ambient", "performance", "architecture", "spans"):
        assert f"docs/{doc}.md" in text, f"the README points to docs/{doc}.md"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_leads_somewhere(page):
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)
