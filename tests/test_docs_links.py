"""Every relative link in README.md and docs/ points at a file or folder that exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_relative_links_resolve():
    broken = []
    for page in pages():
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an in-page anchor
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "index.md").read_text()
    listed = {(ROOT / "docs" / t.split("#", 1)[0]).resolve() for t in LINK.findall(index)}
    others = [p for p in pages()[1:] if p != ROOT / "docs" / "index.md"]
    missing = [str(p.relative_to(ROOT)) for p in others if p.resolve() not in listed]
    assert not missing, f"add these pages to docs/index.md: {missing}"
