"""The runnable examples of README.md and docs/*.md, as a user would paste them.

Fenced blocks tagged `bash`, `sh` or `python` are examples; `text`, `json`, `toml`, `yaml` and
untagged blocks are files or output and never run. An example that needs more than a demo
gateway (Redis, Docker, several upstreams...) is run by the test named in an HTML comment on the
line just before its fence: `<!-- example-tested-by: tests/integration/test_x.py -->`; that test
runs it verbatim through `examples_in(...)`. Every other example runs against `--demo`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNNABLE = {"bash", "sh", "python"}
_FENCE = re.compile(r"^( *)```(\w*)\s*$")  # indented too: a fence inside a list item
_TESTED_BY = re.compile(r"^<!--\s*example-tested-by:\s*(\S+)\s*-->\s*$")


@dataclass(frozen=True)
class Example:
    path: Path  # the document, relative to the repository
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    tested_by: str | None  # the test file that runs it, when not the demo runner

    @property
    def name(self) -> str:
        return f"{self.path}:{self.line}"


def documents() -> list[Path]:
    return [Path("README.md"), *sorted(p.relative_to(REPO) for p in (REPO / "docs").glob("*.md"))]


def examples_in(path: str | Path) -> list[Example]:
    """Every runnable example of one document, in order."""
    rel = Path(path)
    lines = (REPO / rel).read_text().splitlines()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        indent = len(fence.group(1))
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].lstrip().startswith("```"):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        i += 1  # the closing fence
        lang = fence.group(2)
        if lang not in RUNNABLE:
            continue
        marker = _TESTED_BY.match(lines[start - 1].strip()) if start else None
        tested_by = marker.group(1) if marker else None
        found.append(Example(rel, start + 1, lang, "\n".join(body) + "\n", tested_by))
    return found


def all_examples() -> list[Example]:
    return [example for doc in documents() for example in examples_in(doc)]
