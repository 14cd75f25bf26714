"""README.md and docs/: short README, links that resolve, every page reachable, CI's command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]

# [text](target) and ![alt](target), the target without a title; not inside code
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")


def prose(text: str, spans: bool = False) -> str:
    """The text outside fenced code blocks, and outside inline code spans unless ``spans``."""
    kept, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            kept.append("")
            continue
        kept.append("" if fenced else line if spans else INLINE_CODE.sub("", line))
    return "\n".join(kept)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (repeats get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page.read_text(), spans=True).split("\n"):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text()))


def local(target: str) -> bool:
    return not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:, ...


def test_slugs_follow_github():
    assert slug("Noise estimators (`estimator`)") == "noise-estimators-estimator"
    assert slug("Your own sites: four real hospitals (`heart_disease`)") == (
        "your-own-sites-four-real-hospitals-heart_disease"
    )
    assert (
        slug("Real hospitals: `heart_disease`, seeds 0–4")
        == "real-hospitals-heart_disease-seeds-04"
    )


def test_the_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move detail to docs/ (at most 200)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in links(page):
        if not local(target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(
                f"{target}: no file {file.relative_to(ROOT) if ROOT in file.parents else file}"
            )
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme_or_another_page():
    linked = set()
    for page in PAGES:
        for target in links(page):
            path = target.partition("#")[0]
            if local(target) and path:
                linked.add((page.parent / path).resolve())
    orphans = [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"no page links to {orphans}"


def test_the_readme_starts_with_install_run_and_the_test_command_ci_runs():
    """The first code block: install, the default job, the tests; CI runs the same test command."""
    text = README.read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index(block.group(0)) < text.index("\n## "), "no command block on top"
    commands = [line.split("#")[0].strip() for line in block.group(1).strip().split("\n")]
    assert len(commands) == 3
    install, run, tests = commands
    assert "pip install" in install and '".[dev]"' in install
    assert shlex.split(run) == [".venv/bin/fedlr", "simulate"]
    ci = (ROOT / ".ci" / "run").read_text().strip().split("\n")
    assert shlex.split(tests)[1:] == shlex.split(ci[-1])[1:] == ["-q"]
    assert shlex.split(tests)[0].endswith("pytest") and shlex.split(ci[-1])[0] == "pytest"


@pytest.mark.parametrize(
    "example",
    [
        "examples/digits_cnn/task.py",
        "examples/heart_logreg/heart_model.py",
        "examples/extending/custom_rates.py",
    ],
)
def test_the_worked_examples_in_extending_are_the_files_the_tests_run(example: str):
    """docs/extending.md shows each example's code from its imports to its end, as it is."""
    import textwrap

    page = (ROOT / "docs" / "extending.md").read_text()
    shown = [textwrap.dedent(b).strip() for b in re.findall(r"```python\n(.*?)```", page, re.S)]
    source = (ROOT / example).read_text()
    tail = source[re.search(r"^(from|import) (?!__future__)", source, re.M).start() :].strip()
    assert tail in shown, f"docs/extending.md: copy {example} (from its imports on) into its page"
