"""Text cut into token-sized chunks on natural boundaries, each with its file path and title.

Blocks first, then chunks: a file is cut into blocks where a reader would pause, and blocks are
joined greedily into chunks of at most ``max_tokens`` tokens (the header included).

- Prose (Markdown, reStructuredText, plain text): a heading (``#``..``######`` outside code fences,
  or an reST title underlined with ``= - ~ ^ " ' * + #``) starts a new section, and a new chunk once
  the current one holds ``MIN_TOKENS``; blank lines separate paragraphs.
- Code: a line that starts at column 0 after a blank line (a top-level ``def``, ``class``,
  ``function``, ``func``, ``fn``, ...) starts a block; indented paragraphs stay with their block.
- A block longer than a chunk is cut between lines; a line longer than a chunk between characters.

Each chunk keeps ``path``, its line range and a ``title``: for prose the heading path
("Install > Linux"), for code the first top-level definition in the chunk.

Token counts: ``count`` is the chosen model's tokenizer (``tokenizer_counter``), or
``estimate_tokens``: characters / ``CHARS_PER_TOKEN`` rounded up. 3 characters a token is a
cautious figure: English prose runs about 4 characters a token with the byte-level BPE vocabularies
of current models (OpenAI's tokenizer guide), code and other languages fewer; erring low keeps
chunks within the limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 3.0
MIN_TOKENS = 64
Counter = Callable[[str], int]

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'*+#])\1{2,}\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_DEFINITION = re.compile(
    r"^(?:export\s+|pub(?:\(\w+\))?\s+|public\s+|private\s+|static\s+|async\s+|default\s+)*"
    r"(def|class|function|func|fn|impl|struct|enum|trait|interface|type|module|object|const|let|var)\b"
)


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` by the documented estimate (characters / 3, rounded up)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def tokenizer_counter(tokenizer: Any) -> Counter:
    """A counter with a Hugging Face tokenizer: its token ids for the text, no special tokens."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class Chunk:
    """One chunk: ``body`` (the file's text), ``path`` (relative), 1-based inclusive line range,
    ``title`` (may be empty)."""

    path: str
    first_line: int
    last_line: int
    title: str
    body: str

    def header(self) -> str:
        """The context line(s) that precede the body in the dataset."""
        head = f"File: {self.path} (lines {self.first_line}-{self.last_line})"
        return head + (f"\nSection: {self.title}" if self.title else "")

    def text(self) -> str:
        """Header, a blank line, body."""
        return f"{self.header()}\n\n{self.body}"

    @property
    def source(self) -> str:
        """``path:first-last``."""
        return f"{self.path}:{self.first_line}-{self.last_line}"


@dataclass
class _Block:
    first_line: int  # 1-based
    lines: list[str]
    title: str
    starts_section: bool


def _prose_blocks(lines: list[str]) -> list[_Block]:
    blocks: list[_Block] = []
    trail: list[tuple[int, str]] = []  # the heading path: (level, heading)
    rst_marks: list[str] = []  # reST title levels in order of first use
    current: list[str] = []
    start, section, heading_only, in_fence, underline_next = 1, False, False, False, False

    def flush(next_start: int) -> None:
        nonlocal current, start, section
        if any(line.strip() for line in current):
            blocks.append(_Block(start, current, " > ".join(h for _, h in trail), section))
        current, start, section = [], next_start, False

    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
        if underline_next:  # an reST title's underline stays with its title
            current.append(line)
            underline_next = False
            continue
        md = None if in_fence else _MD_HEADING.match(line)
        rst = (
            not in_fence
            and bool(line.strip())
            and i + 1 < len(lines)
            and bool(_RST_UNDERLINE.match(lines[i + 1]))
            and len(lines[i + 1].rstrip()) >= len(line.rstrip())
        )
        if md or rst:
            if md:
                level, title = len(md.group(1)), md.group(2)
            else:
                mark = lines[i + 1].strip()[0]
                rst_marks += [] if mark in rst_marks else [mark]
                level, title = rst_marks.index(mark) + 1, line.strip()
                underline_next = True
            flush(i + 1)
            trail[:] = [(lv, h) for lv, h in trail if lv < level] + [(level, title)]
            section, heading_only = True, True
            current.append(line)
            continue
        current.append(line)
        if not line.strip() and not in_fence:
            if not heading_only:  # a heading stays with the paragraph after it
                flush(i + 2)
        elif line.strip():
            heading_only = False
    flush(len(lines) + 1)
    return blocks


def _code_blocks(lines: list[str]) -> list[_Block]:
    blocks: list[_Block] = []
    current: list[str] = []
    start = 1
    for i, line in enumerate(lines):
        top = line[:1] not in ("", " ", "\t", ")", "]", "}") and i > 0 and not lines[i - 1].strip()
        if top and current:
            blocks.append(_Block(start, current, "", False))
            current, start = [], i + 1
        current.append(line)
    if current:
        blocks.append(_Block(start, current, "", False))
    for block in blocks:
        definition = next((ln for ln in block.lines if _DEFINITION.match(ln)), "")
        block.title = definition.strip().rstrip(":{").strip()[:100]
    return [b for b in blocks if any(line.strip() for line in b.lines)]


def _pieces(block: _Block, budget: int, count: Counter) -> list[_Block]:
    """``block`` cut between lines (a line between characters) into pieces within ``budget``."""
    if count("\n".join(block.lines)) <= budget:
        return [block]
    out: list[_Block] = []
    current: list[str] = []
    start = block.first_line
    for offset, line in enumerate(block.lines):
        parts = [line]
        if count(line) > budget:  # e.g. a minified line: cut by characters
            width = max(1, int(budget * CHARS_PER_TOKEN) // 2)
            parts = [line[k : k + width] for k in range(0, len(line), width)]
        for part in parts:
            if current and count("\n".join([*current, part])) > budget:
                out.append(_Block(start, current, block.title, block.starts_section and not out))
                current, start = [], block.first_line + offset
            current.append(part)
    if current:
        out.append(_Block(start, current, block.title, block.starts_section and not out))
    return out


def split_text(text: str, path: str, kind: str, max_tokens: int, count: Counter) -> list[Chunk]:
    """``text`` of file ``path`` ('doc' or 'code' rules; converted documents are prose) as chunks
    of at most ``max_tokens`` tokens by ``count``, header included (see the module docstring)."""
    lines = text.split("\n")
    blocks = _code_blocks(lines) if kind == "code" else _prose_blocks(lines)
    # The header's room does not depend on the path below 120 characters, so copies of a file
    # under other names cut the same way (and are found as exact duplicates).
    room_path = path if len(path) > 120 else "x" * 120
    header_room = count(Chunk(room_path, 10**6, 10**6, "x" * 100, "").header()) + 2
    budget = max(16, max_tokens - header_room)
    chunks: list[Chunk] = []
    current: list[_Block] = []
    used = 0

    def emit() -> None:
        nonlocal current, used
        numbered = [(b.first_line + k, line) for b in current for k, line in enumerate(b.lines)]
        filled = [i for i, (_, line) in enumerate(numbered) if line.strip()]
        if filled:
            numbered = numbered[filled[0] : filled[-1] + 1]
            title = next((b.title for b in current if b.title), "") if kind == "code" else current[0].title
            body = "\n".join(line for _, line in numbered)
            chunks.append(Chunk(path, numbered[0][0], numbered[-1][0], title, body))
        current, used = [], 0

    for block in blocks:
        for piece in _pieces(block, budget, count):
            size = count("\n".join(piece.lines)) + 1
            if current and (used + size > budget or (piece.starts_section and used >= MIN_TOKENS)):
                emit()
            current.append(piece)
            used += size
    emit()
    return chunks
