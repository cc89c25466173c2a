"""The documentation hangs together: README.md is at most 150 lines, every relative link of README.md and docs/
resolves (file and heading), and every page of docs/ is reachable from README.md by links."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
#: pages other issues add (reliability: issue 28, tracking: issue 29), linked from the index before they land
PENDING: set[str] = set()  # pages linked before they land (none now)


def _pages() -> list[Path]:
    """README.md and the pages of docs/ (not the grids' generated results under docs/results/)."""
    return [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md") if "results" not in p.parent.parts)]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def _links(page: Path) -> list[tuple[str, Path, str]]:
    """``(link as written, target file, anchor)`` of every relative link outside code blocks."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    out = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        out.append((target, (page.parent / path).resolve() if path else page, anchor))
    return out


def test_readme_is_read_in_five_minutes():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move details into a docs/ page and link it"


def test_every_relative_link_resolves_to_a_file_and_heading():
    broken = []
    for page in _pages():
        for written, target, anchor in _links(page):
            rel = target.relative_to(REPO).as_posix() if target.is_relative_to(REPO) else str(target)
            if not target.exists():
                if rel not in PENDING:
                    broken.append(f"{page.relative_to(REPO)}: {written} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
                broken.append(f"{page.relative_to(REPO)}: {written} (no such heading)")
    assert not broken, "broken links; fix the link or the heading:\n" + "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    seen, todo = set(), [(REPO / "README.md").resolve()]
    while todo:
        page = todo.pop()
        if page in seen or not page.is_file() or page.suffix != ".md":
            continue
        seen.add(page)
        todo += [target for _, target, _ in _links(page)]
    unreached = [p.relative_to(REPO).as_posix() for p in _pages() if p.resolve() not in seen]
    assert not unreached, f"docs pages no link from README.md reaches: {unreached}; list them in docs/README.md"


#: a page cited in prose, code comments and docstrings (``docs/methods.md``, ``README``), with the section when one is
#: named right after it: ``docs/results.md, "The label gap first"``, ``README's *Set-up*``, ``README.md` ("X")``
CITATION = re.compile(
    r"(?<![\w/.-])(?P<page>docs/[\w./-]*\w\.md|README(?:\.md)?)`{0,2}"
    r"(?:(?:,|'s| \(|`? \() ?(?:\"(?P<s1>[^\"\n]{2,80}?)\"|'(?P<s2>[^'\n]{2,80}?)'|\*(?P<s3>[^*\n]{2,80}?)\*))?"
)
#: where citations are checked: every tracked text file but the grids' generated results and this file's examples
CITING = (".py", ".md", ".yaml", ".yml", ".json", ".ipynb", ".toml", ".sh", ".conf", ".txt")


def _tracked() -> list[Path]:
    import subprocess

    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names
            if n.endswith(CITING) and not n.startswith("docs/results/") and n != "tests/test_docs.py"]


def _cited_heading(page: Path, section: str) -> bool:
    """``section`` begins a heading of ``page`` (code marks and emphasis aside, any case): ``"Several GPUs"`` cites
    ``## Several GPUs (torchrun)``."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = [re.sub(r"[`*]", "", h).strip().lower() for h in re.findall(r"^#+ (.+)$", text, re.M)]
    return any(h.startswith(section.strip().lower()) for h in headings)


def test_every_cited_page_and_section_exists():
    # docstrings, code comments, configs, the notebook and its generator name pages and sections in prose, which the
    # link check above does not see: "README, *Real data*" and "docs/benchmarks.md, "Label gap"" outlived their
    # sections when the README was cut down and the results moved to docs/results.md
    broken = []
    for path in _tracked():
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for m in CITATION.finditer(text):
            page, section = m["page"], m["s1"] or m["s2"] or m["s3"]
            if page == "README" and section is None:
                continue  # "the README" in prose
            target = REPO / ("README.md" if page.startswith("README") else page)
            where = f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
            if not target.is_file():
                broken.append(f"{where} (no such file)")
            elif section is not None and not _cited_heading(target, section):
                broken.append(f"{where} (no such section)")
    assert not broken, "citations of pages or sections that do not exist; point them at the page that has it:\n" + \
        "\n".join(broken)
