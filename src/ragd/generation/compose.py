"""Extractive answers that read as an answer: pure composition over the context blocks.

The extractive provider (:mod:`ragd.generation.providers.extractive`) scores paragraphs
against the question with the embedder; everything else is here, with no model and no I/O:

* :func:`paragraphs` splits a block into paragraphs and tells headings (a Markdown ``#``
  line, a reST title with its underline, a numbered title such as ``2.4. How do I ...?``, a
  lone question line, a short line without terminal punctuation, or one of the block's
  heading path), code (a fenced block, a ``>>>``/``$`` prompt, a paragraph indented deeper
  than the block's prose, or one dense with code symbols), lists and prose apart;
* :func:`compose` writes the answer: the section around the best prose paragraph (the
  paragraphs between the headings before and after it) in document order, prose cleaned of
  markup (reST roles, links and directives; Markdown emphasis and links) and cited as
  ``[n]``, code as fenced blocks with the marker outside them, within a character budget;
  then, if room is left, the best paragraph of another passage when it is nearly as relevant.
  A heading is never written (a question heading is the question, not its answer), and a
  paragraph that repeats one already written (the same text from another file or version) is
  written once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ragd.generation.base import ContextBlock
from ragd.generation.citations import content_words, find_markers

__all__ = [
    "BUDGET_CHARS",
    "Paragraph",
    "clean_prose",
    "compose",
    "paragraphs",
]

#: The longest answer body (characters, markers and fences excluded): about 200 words, a
#: screenful. The section is cut at a paragraph, else a sentence, boundary.
BUDGET_CHARS = 1200
#: A paragraph of another passage is added only when its score is at least this share of the
#: best paragraph's (and it shares a content word with the question).
SECOND_PASSAGE_SHARE = 0.9
#: Paragraphs whose word sets overlap this much (of the smaller one) are the same paragraph.
DUPLICATE_OVERLAP = 0.8

Kind = Literal["heading", "code", "list", "prose"]

_BLANK = re.compile(r"\n[ \t]*\n")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")
_NUMBERED = re.compile(r"^\s*\d+(?:\.\d+)*\.?\s+\S")
_NUMBERED_QUESTION = re.compile(r"^\s*\d+(?:\.\d+)+\.?\s+\S.{0,200}\?\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_PROMPT = re.compile(r"^\s*(?:>>>|\$ |# (?=[a-z]))")
_DIRECTIVE = re.compile(r"^\s*\.\. [\w:-]+::.*$|^\s*:[\w-]+:(?:\s.*)?$", re.MULTILINE)
_CODE_SYMBOLS = frozenset("=(){}[];<>_*/\\|&$@")
_HEADING_WORDS = 12
#: Chunks of one document this close (whitespace between them) are one passage, when their
#: ordinals are not known.
_TOUCHING = 4
_QUESTION_WORDS = 25
_NUMBERED_WORDS = 40


@dataclass(frozen=True, slots=True)
class Paragraph:
    """One paragraph of passage ``block`` (see :func:`passages`), starting in the context
    block numbered ``n``; ``index`` is its position in the passage, ``text`` what an answer
    writes (prose on one line, cleaned; list items one per line; code as it stands)."""

    block: int
    n: int
    index: int
    kind: Kind
    text: str


# -- paragraphs -------------------------------------------------------------------------------


def paragraphs(blocks: Sequence[ContextBlock]) -> list[Paragraph]:
    """The paragraphs of ``blocks``, passage by passage (see :func:`passages`), in the order
    of each passage's best block; ``Paragraph.block`` is the passage's index and ``n`` the
    block the paragraph starts in."""
    out: list[Paragraph] = []
    for index, run in enumerate(passages(blocks)):
        text, starts = _merged([blocks[i] for i in run])
        headings = {_normal(h) for i in run for h in blocks[i].heading_path if h.strip()}
        out.extend(_read(text, starts, index, headings))
    return out


def passages(blocks: Sequence[ContextBlock]) -> list[list[int]]:
    """The blocks grouped into passages: blocks of one document whose texts touch or overlap
    (a hit and the chunks after it) are one passage, in document order; passages come in the
    order of their first block in ``blocks`` (retrieval order)."""
    runs: list[list[int]] = []
    by_document: dict[str, list[int]] = {}
    for i, block in enumerate(blocks):
        if block.start is None or block.end is None:
            runs.append([i])
        else:
            by_document.setdefault(block.document_id, []).append(i)
    for indexes in by_document.values():
        ordered = sorted(indexes, key=lambda i: (blocks[i].start or 0, i))
        run = [ordered[0]]
        for i in ordered[1:]:
            if _continues(blocks[run[-1]], blocks[i]):
                run.append(i)
            else:
                runs.append(run)
                run = [i]
        runs.append(run)
    return sorted(runs, key=min)


def _continues(before: ContextBlock, after: ContextBlock) -> bool:
    """Whether ``after`` is the chunk right after ``before`` (by ordinal when known, else
    starting within or just after its text), any overlap being the same text in both."""
    assert before.end is not None and after.start is not None  # noqa: S101 - grouped so
    overlap = before.end - after.start
    if before.ordinal is not None and after.ordinal is not None:
        adjacent = after.ordinal == before.ordinal + 1
    else:
        adjacent = overlap >= -_TOUCHING
    if not adjacent or (after.end or 0) <= (before.end or 0):
        return False
    return overlap <= 0 or (
        overlap <= len(after.text) and before.text.endswith(after.text[:overlap])
    )


def _merged(run: Sequence[ContextBlock]) -> tuple[str, list[tuple[int, int]]]:
    """The passage's text, and where each block's new text starts in it (offset, n)."""
    text = run[0].text
    starts = [(0, run[0].n)]
    for before, block in zip(run, run[1:], strict=False):
        gap = (block.start or 0) - (before.end or 0)
        new = block.text[max(0, -gap):]
        # What lay between the chunks was whitespace: one character within a paragraph, more
        # between paragraphs (the chunker prefers to end a chunk at a paragraph).
        joint = "" if gap <= 0 else " " if gap == 1 else "\n\n"
        starts.append((len(text) + len(joint), block.n))
        text += joint + new
    return text, starts


def _read(
    text: str, starts: Sequence[tuple[int, int]], index: int, headings: set[str]
) -> list[Paragraph]:
    indent = _prose_indent(_BLANK.split(text))
    pieces: list[tuple[Kind, str, int]] = []
    lines: list[str] = []  # the paragraph (or fenced block) being read
    at = 0  # where it starts
    fence = ""  # the opening run of the fenced block being read
    offset = 0
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        run = _FENCE.match(bare)
        if fence:
            if run and run[1][0] == fence[0] and len(run[1]) >= len(fence):
                pieces.append(("code", _code_text(lines), at))
                lines, fence = [], ""
            else:
                lines.append(bare)
        elif run or not bare.strip():
            if lines:
                pieces.extend((k, t, at) for k, t in _classify("\n".join(lines), headings, indent))
            lines = []
            if run:
                fence, at = run[1], offset
        else:
            if not lines:
                at = offset
            lines.append(bare)
        offset += len(line)
    if fence:
        pieces.append(("code", "\n".join(lines).strip("\n"), at))
    elif lines:
        pieces.extend((k, t, at) for k, t in _classify("\n".join(lines), headings, indent))
    out: list[Paragraph] = []
    for kind, piece, at in pieces:
        if kind in ("prose", "list"):
            piece = clean_prose(piece) if kind == "prose" else _clean_list(piece)
        if not piece.strip():
            continue
        n = next(n for offset, n in reversed(starts) if offset <= at)
        if kind == "code" and out and out[-1].kind == "code" and out[-1].n == n:
            out[-1] = _with_text(out[-1], f"{out[-1].text}\n\n{piece}")  # one fence
        else:
            out.append(Paragraph(index, n, len(out), kind, piece))
    return out


def _classify(part: str, headings: set[str], indent: int) -> list[tuple[Kind, str]]:
    lines = [line for line in part.splitlines() if line.strip()]
    # A title line glued to its body ("2.4. How do I ...?" then the answer) is split off.
    first = lines[0].strip()
    if len(lines) > 1 and _UNDERLINE.match(lines[1]) and len(lines[1].strip()) >= len(first) - 2:
        rest = "\n".join(lines[2:])
        return [("heading", first), *(_classify(rest, headings, indent) if rest.strip() else [])]
    if _UNDERLINE.match(first):
        return [] if len(lines) == 1 else _classify("\n".join(lines[1:]), headings, indent)
    if _FENCE.match(first):
        return [("code", _unfenced(part))]
    if _is_heading(part, headings):
        return [("heading", " ".join(part.split()))]
    if len(lines) > 1 and _is_heading(first, headings) and not lines[1][:1].islower():
        return [("heading", first), *_classify("\n".join(lines[1:]), headings, indent)]
    # Text without blank lines (a PDF page) can hold the next question's numbered title.
    inner = next((i for i in range(1, len(lines)) if _NUMBERED_QUESTION.match(lines[i])), None)
    if inner is not None:
        return [*_classify("\n".join(lines[:inner]), headings, indent),
                *_classify("\n".join(lines[inner:]), headings, indent)]
    if _is_code(lines, indent):
        return [("code", _dedent(lines))]
    if _BULLET.match(lines[0]):
        return [("list", part)]
    return [("prose", part)]


def _is_heading(text: str, headings: set[str]) -> bool:
    flat = " ".join(text.split())
    if not flat:
        return False
    if _normal(flat) in headings or flat.startswith("#"):
        return True
    words = len(flat.split())
    if flat.endswith("?") and words <= _QUESTION_WORDS and "\n" not in text.strip():
        return True
    if _NUMBERED.match(flat) and words <= _NUMBERED_WORDS and (
        flat.endswith("?") or flat[-1] not in ".,;:"
    ) and len(text.strip().splitlines()) <= 3:  # noqa: PLR2004 - a title wraps to 3 lines
        return True
    return (
        words <= _HEADING_WORDS and "\n" not in text.strip() and flat[-1] not in ".!?,;:\"')"
        and (flat[0].isupper() or flat[0].isdigit())
    )


_KEYWORD = re.compile(
    r"^\s*(?:def|class|return|import|from|for|while|if|elif|else|try|except|finally|with|"
    r"raise|yield|lambda|async|await|print|sudo|apt|apt-get|dpkg|pip|cd|ls|make)\b(?![ -]\w+ \w)"
)
_ASSIGNMENT = re.compile(r"\s(?:=|==|\+=|-=|->|:=)\s|^\s*[\w.\[\]]+\s*=[^=]")


def _code_line(line: str) -> bool:
    """A line shaped like code (a statement, an assignment, a call) and not like prose."""
    stripped = line.strip()
    words = stripped.split()
    if stripped.endswith(".") and len(words) >= 6 and stripped[:1].isupper():  # noqa: PLR2004
        return False  # a sentence
    if _KEYWORD.match(stripped) or _ASSIGNMENT.search(stripped):
        return True
    closes = stripped.endswith((":", "{", "}", ";", ")", "]"))
    return closes and any(c in "=()[]{}" for c in stripped)


def _is_code(lines: list[str], indent: int) -> bool:
    if _PROMPT.match(lines[0]):
        return True
    if min(_indent(line) for line in lines) >= indent + 2 and not _BULLET.match(lines[0]):
        return True
    shaped = sum(_code_line(line) for line in lines)
    if _code_line(lines[0]) and 2 * shaped >= len(lines):
        return True
    chars = [c for line in lines for c in line if not c.isspace()]
    symbols = sum(c in _CODE_SYMBOLS for c in chars)
    sentences = sum(line.rstrip().endswith((".", "!", "?")) for line in lines)
    return bool(chars) and symbols / len(chars) >= 0.12 and sentences <= len(lines) // 3  # noqa: PLR2004


def _prose_indent(parts: Sequence[str]) -> int:
    """The indentation of the block's ordinary paragraphs (the most common one)."""
    counts: dict[int, int] = {}
    for part in parts:
        lines = [line for line in part.splitlines() if line.strip()]
        if lines:
            depth = min(_indent(line) for line in lines)
            counts[depth] = counts.get(depth, 0) + len(part)
    return max(counts, key=lambda depth: (counts[depth], -depth)) if counts else 0


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _dedent(lines: list[str]) -> str:
    depth = min(_indent(line) for line in lines)
    return "\n".join(line[depth:].rstrip() for line in lines)


def _unfenced(part: str) -> str:
    lines = part.splitlines()
    if lines and _FENCE.match(lines[0]):
        lines = lines[1:]
    if lines and _FENCE.match(lines[-1]):
        lines = lines[:-1]
    return _code_text(lines)


def _code_text(lines: Sequence[str]) -> str:
    """The lines of a code block as one text, without trailing spaces or blank ends."""
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def _normal(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


# -- markup -----------------------------------------------------------------------------------

_ROLE = re.compile(r":[\w.+-]+(?::[\w.+-]+)*:`([^`]*?)`")
_REST_LINK = re.compile(r"`([^`<]+?)\s*<[^>`]*>`__?")
_REST_REF = re.compile(r"`([^`]+)`__?")
_REST_LITERAL = re.compile(r"``([^`]+)``")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\((?:[^()\s]|\([^()]*\))*\)")
_MD_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_MD_EMPHASIS = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]+?)(?<=\S)\*(?![\w*])")
_MD_HEADING = re.compile(r"^#{1,6}\s+", re.MULTILINE)
_TITLED = re.compile(r"^(.*?)\s*<[^<>]*>$")


def _role_text(inner: str) -> str:
    """What a reST role shows: its title (``title <target>``), the last name of a ``~``
    target, else the target."""
    titled = _TITLED.match(inner)
    if titled and titled[1]:
        return titled[1]
    if inner.startswith("~"):
        return inner[1:].rsplit(".", 1)[-1]
    return inner.lstrip("!")


def clean_prose(text: str) -> str:
    """``text`` as one line of plain prose: reST roles as their text (``:ref:`why <x>``` →
    ``why``), reST and Markdown links as their text, reST literals as Markdown code spans,
    emphasis marks and heading marks dropped, directive lines left out, whitespace runs as
    one space. Code spans stay code spans."""
    text = _DIRECTIVE.sub("", text)
    text = _MD_HEADING.sub("", text)
    text = _ROLE.sub(
        lambda m: f"`{_role_text(m[1])}`" if _is_code_role(m[0]) else _role_text(m[1]), text
    )
    text = _REST_LITERAL.sub(r"`\1`", text)
    text = _REST_LINK.sub(r"\1", text)
    text = _REST_REF.sub(lambda m: m[0] if m[0].endswith("``") else m[1], text)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_STRONG.sub(r"\2", text)
    text = _MD_EMPHASIS.sub(r"\1", text)
    text = " ".join(text.split())
    # reST's "::" ending a paragraph introduces a literal block: it reads as ":".
    return text[:-3] + ":" if text.endswith(" ::") else text[:-1] if text.endswith("::") else text


def _is_code_role(written: str) -> bool:
    return written.startswith((":func:", ":meth:", ":class:", ":mod:", ":data:", ":attr:",
                               ":exc:", ":const:", ":obj:", ":file:", ":program:",
                               ":option:", ":envvar:", ":samp:", ":kbd:"))


def _clean_list(text: str) -> str:
    items: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if _BULLET.match(line) or not items:
            items.append(clean_prose(_BULLET.sub("", line, count=1)))
        else:
            items[-1] = f"{items[-1]} {clean_prose(line)}"
    return "\n".join(f"- {item}" for item in items if item)


# -- the answer -------------------------------------------------------------------------------


def compose(
    question: str,
    found: Sequence[Paragraph],
    scores: Sequence[float],
    *,
    budget: int = BUDGET_CHARS,
) -> str:
    """The answer body from ``found`` (every block's paragraphs, in block order) given each
    paragraph's relevance in ``scores`` (-inf for paragraphs that are not candidates: headings
    and code). Empty when no paragraph is a candidate."""
    candidates = [i for i, p in enumerate(found) if p.kind in ("prose", "list")
                  and scores[i] != float("-inf")]
    if not candidates:
        return ""
    anchor = max(candidates, key=lambda i: (scores[i], -i))
    section = _section(found, anchor)
    # From the section's start when the anchor fits in the budget from there, else from it.
    lead = sum(len(found[i].text) for i in section if i <= anchor)
    written: list[Paragraph] = []
    used = 0
    for i in section if lead <= budget else [i for i in section if i >= anchor]:
        paragraph = found[i]
        if _repeats(paragraph, written):
            continue
        room = budget - used
        if len(paragraph.text) > room:
            if paragraph.kind == "prose" and (not written or room >= budget // 4):
                written.append(_with_text(paragraph, _cut(paragraph.text, room)))
            break
        written.append(paragraph)
        used += len(paragraph.text)
    asked = set(content_words(question))
    best = scores[anchor]
    others = [i for i in candidates if found[i].block != found[anchor].block
              and scores[i] >= SECOND_PASSAGE_SHARE * best
              and asked.intersection(content_words(found[i].text))]
    for i in sorted(others, key=lambda i: (-scores[i], i))[:1]:
        if used + len(found[i].text) <= budget and not _repeats(found[i], written):
            written.append(found[i])
    return _render(written)


def _with_text(paragraph: Paragraph, text: str) -> Paragraph:
    return Paragraph(paragraph.block, paragraph.n, paragraph.index, paragraph.kind, text)


def _section(found: Sequence[Paragraph], anchor: int) -> list[int]:
    """The indexes of the anchor's section: its block's paragraphs between the headings
    around the anchor."""
    block = found[anchor].block
    start = anchor
    while start > 0 and found[start - 1].block == block and found[start - 1].kind != "heading":
        start -= 1
    end = anchor
    while end + 1 < len(found) and found[end + 1].block == block and (
        found[end + 1].kind != "heading"
    ):
        end += 1
    return list(range(start, end + 1))


def _repeats(paragraph: Paragraph, written: Sequence[Paragraph]) -> bool:
    words = set(content_words(paragraph.text))
    if not words:
        return False
    for other in written:
        theirs = set(content_words(other.text))
        smaller = min(len(words), len(theirs))
        if smaller and len(words & theirs) >= DUPLICATE_OVERLAP * smaller:
            return True
    return False


def _cut(text: str, room: int) -> str:
    """``text`` cut to at most ``room`` characters at a sentence end, else a word boundary
    (with an ellipsis)."""
    if len(text) <= room:
        return text
    window = text[:room]
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\u2019\u201d]*(?=\s)", window)]
    if ends and ends[-1] >= room // 3:
        return window[:ends[-1]]
    space = window.rfind(" ")
    return (window[:space] if space > 0 else window).rstrip(",;:") + " \u2026"


def _render(written: Sequence[Paragraph]) -> str:
    """The paragraphs as Markdown: code fenced, and one ``[n]`` per run of paragraphs from
    block ``n``, on the run's last prose paragraph (after its last code block when the run
    has no prose)."""
    runs: list[list[Paragraph]] = []
    for paragraph in written:
        if runs and runs[-1][-1].n == paragraph.n:
            runs[-1].append(paragraph)
        else:
            runs.append([paragraph])
    parts: list[str] = []
    for run in runs:
        prose = [i for i, p in enumerate(run) if p.kind != "code"]
        cite_at = prose[-1] if prose else len(run) - 1
        for i, paragraph in enumerate(run):
            if paragraph.kind == "code":
                inner = [len(m[1]) for m in map(_FENCE.match, paragraph.text.splitlines())
                         if m and m[1][0] == "`"]
                fence = "`" * max([3, *(length + 1 for length in inner)])
                parts.append(f"{fence}\n{paragraph.text}\n{fence}")
                if i == cite_at:
                    parts.append(f"[{paragraph.n}]")
            else:
                text = _defused(paragraph.text)
                parts.append(_cited(text, paragraph.n) if i == cite_at else text)
    return "\n\n".join(parts)


_TERMINAL = re.compile(r"(?:[.!?]+|:)[\"'\u2019\u201d)]*$")


def _cited(text: str, n: int) -> str:
    """``text`` with ``[n]`` before the terminal punctuation of its last line."""
    end = _TERMINAL.search(text)
    if end is None or end.start() == 0:
        return f"{text} [{n}]"
    return f"{text[:end.start()]} [{n}]{text[end.start():]}"


def _defused(text: str) -> str:
    """``text`` with any ``[n]``-like marker of the document itself (a bibliography
    reference) written as ``(n)``, so it cannot pass for a citation."""
    for marker in reversed(find_markers(text)):
        inner = text[marker.start + 1:marker.end - 1]
        text = text[:marker.start] + "(" + inner + ")" + text[marker.end:]
    return text
