"""Extractive answer composition (``ragd.generation.compose``): paragraphs, sections, markup,
code, duplicates, passages across chunks and the budget — hand examples and properties."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ragd.generation.base import ContextBlock
from ragd.generation.citations import find_markers, verify
from ragd.generation.compose import BUDGET_CHARS, clean_prose, compose, paragraphs, passages

FAQ = (
    "1.2. How do I install the tool?\n\n"
    "Download the installer and run it. It asks for a directory.\n\n"
    "Afterwards, restart the shell so the new path is found.\n\n"
    "1.3. How do I remove the tool?\n\n"
    "Run the uninstaller from the same directory."
)


def _block(n: int, text: str, **extra: object) -> ContextBlock:
    return ContextBlock(n, f"c{n}", str(extra.pop("document", f"d{n}")), f"t{n}", None, text,
                        **extra)  # type: ignore[arg-type]


def _answer(question: str, blocks: list[ContextBlock], best: str) -> str:
    """The answer when the paragraph containing ``best`` scores highest (1.0), every other
    prose paragraph 0.5."""
    found = paragraphs(blocks)
    scores = [
        float("-inf") if p.kind in ("heading", "code") else 1.0 if best in p.text else 0.5
        for p in found
    ]
    return compose(question, found, scores)


def test_the_section_around_the_best_paragraph_without_its_heading() -> None:
    answer = _answer("How do I install the tool?", [_block(1, FAQ)], "restart the shell")
    assert answer == (
        "Download the installer and run it. It asks for a directory.\n\n"
        "Afterwards, restart the shell so the new path is found [1]."
    )
    assert "How do I" not in answer and "uninstaller" not in answer


def test_headings_of_every_shape_are_never_written_and_end_a_section() -> None:
    text = (
        "Setup\n=====\n\nRun the setup script once.\n\n"
        "# Usage\n\nCall the tool with a file.\n\n"
        "Why is it slow?\n\nIt reads the whole file first.\n\n"
        "2.5. Why does the CD contain symlinks for frozen and\nunstable? I thought it was stable!"
        "\n\nThe symlinks are kept for old mirrors."
    )
    found = paragraphs([_block(1, text)])
    assert [p.kind for p in found] == ["heading", "prose"] * 4
    assert _answer("setup?", [_block(1, text)], "setup script") == "Run the setup script once [1]."
    assert _answer("slow?", [_block(1, text)], "whole file") == "It reads the whole file first [1]."


def test_a_numbered_question_inside_a_page_of_lines_starts_a_section() -> None:
    page = (
        "the end of the previous answer.\n9.5 Can I automatically update the system?\n"
        "Yes. You can use cron-apt; it updates the system\nat regular intervals.\n"
        "9.6 I have several machines; how can I download the updates only one time?\n"
        "Use apt-cacher."
    )
    assert _answer("update automatically?", [_block(1, page)], "cron-apt") == (
        "Yes. You can use cron-apt; it updates the system at regular intervals [1]."
    )


def test_markup_is_read_as_its_text() -> None:
    assert clean_prose(
        "See :ref:`why-self` and :term:`Parameters <parameter>`, :func:`os.path.join`, "
        ":meth:`~str.join`, `the guide <https://x.example/>`_, ``len(x)``, **bold**, *it*, "
        "[a link](https://y.example/(z)) and `code`. It looks like this::"
    ) == (
        "See why-self and Parameters, `os.path.join`, `join`, the guide, `len(x)`, bold, it, "
        "a link and `code`. It looks like this:"
    )
    text = ".. note::\n   :class: small\n\nThe *real* text [#]_ stays.\n\n.. seealso:: x"
    assert [p.text for p in paragraphs([_block(1, text)])] == ["The real text [#]_ stays."]


def test_code_is_a_fenced_block_and_the_marker_stays_outside() -> None:
    text = (
        "Index a list with a number:\n\n>>> x = ['a', 'b']\n>>> x[0]\n'a'\n\n"
        "def first(seq):\n    return seq[0]\n\nNegative numbers count from the end."
    )
    answer = _answer("How do I index a list?", [_block(1, text)], "Index a list")
    assert answer == (
        "Index a list with a number:\n\n"
        "```\n>>> x = ['a', 'b']\n>>> x[0]\n'a'\n\ndef first(seq):\n    return seq[0]\n```\n\n"
        "Negative numbers count from the end [1]."
    )
    verified = verify(answer, [_block(1, text)])
    assert verified.text == answer and verified.dropped == 0
    # Code alone is cited after its fence.
    alone = [_block(2, "Example\n\nUse this:\n\n    make install\n\nNothing else.")]
    found = paragraphs(alone)
    assert [p.kind for p in found] == ["heading", "prose", "code", "prose"]


def test_the_same_paragraph_from_two_files_is_written_once() -> None:
    html = _block(1, "How do I install the tool?\n\nDownload the installer and run it.")
    rst = _block(2, "How do I install the tool?\n==========================\n\n"
                    "Download the installer and run it!")
    answer = _answer("install?", [html, rst], "Download")
    assert answer.count("Download the installer") == 1


def test_chunks_that_continue_a_hit_are_read_as_one_passage() -> None:
    document = (
        "How do I install the tool?\n\nDownload the installer and run it. It asks for a "
        "directory.\n\nAfterwards, restart the shell. Then check the version.\n\nNext?\n\nNo."
    )
    cut = document.index("It asks")
    first = _block(1, document[:cut].rstrip(), document="doc", start=0, end=cut - 1)
    start = document.index("It asks")
    second = _block(7, document[start:], document="doc", start=start, end=len(document))
    other = _block(2, "Unrelated text about lava.", document="lava", start=0, end=26)
    assert passages([first, other, second]) == [[0, 2], [1]]
    answer = _answer("install?", [first, other, second], "restart the shell")
    # One paragraph across the chunk boundary, cited by the block it starts in.
    assert answer == (
        "Download the installer and run it. It asks for a directory.\n\n"
        "Afterwards, restart the shell. Then check the version [7]."
    ) or answer == (
        "Download the installer and run it. It asks for a directory [1].\n\n"
        "Afterwards, restart the shell. Then check the version [7]."
    )
    # Overlapping chunks: the overlap is read once.
    overlap = document.index("Download")
    third = _block(3, document[overlap:], document="doc", start=overlap, end=len(document))
    answer = _answer("install?", [first, third], "restart the shell")
    assert answer.count("Download the installer") == 1


def test_known_ordinals_decide_which_chunks_are_adjacent() -> None:
    first = _block(1, "Install it.", document="doc", start=0, end=11, ordinal=3)
    indented = _block(2, "Then restart.", document="doc", start=30, end=43, ordinal=4)
    skipped = _block(3, "Much later.", document="doc", start=60, end=71, ordinal=6)
    assert passages([first, indented, skipped]) == [[0, 1], [2]]


def test_a_long_section_is_cut_to_the_budget_at_a_sentence_end() -> None:
    sentence = "The installer copies every file into the chosen directory and checks it."
    text = "How do I install?\n\n" + " ".join([sentence] * 40)
    answer = _answer("install?", [_block(1, text)], "installer")
    body = answer.replace(" [1]", "")
    assert len(body) <= BUDGET_CHARS and body.endswith("checks it.")


def test_a_strong_paragraph_of_another_passage_is_added_a_weak_one_is_not() -> None:
    one = _block(1, "Setup\n\nRun the setup script once.")
    two = _block(2, "Setup again\n\nThe setup script needs root.")
    found = paragraphs([one, two])
    strong = compose("setup script?", found, [float("-inf"), 1.0, float("-inf"), 0.95])
    assert strong == "Run the setup script once [1].\n\nThe setup script needs root [2]."
    weak = compose("setup script?", found, [float("-inf"), 1.0, float("-inf"), 0.5])
    assert weak == "Run the setup script once [1]."


# -- properties -----------------------------------------------------------------------------

LINES = st.sampled_from([
    "How do I install the tool?", "Setup", "=====", "# Usage", "2.4. Why is it so?",
    "Run the setup script once.", "It reads the whole file first, then it stops.",
    ">>> x = [1, 2]", "    return seq[0]", "def f(x):", "```", "~~~", "- an item", "* another",
    "See :ref:`why` and ``len(x)`` [3].", "The *real* text stays.", "", "", "x[0] and [0]",
])
TEXTS = st.lists(LINES, min_size=1, max_size=14).map("\n".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=4), st.data())
def test_an_answer_cites_only_given_blocks_and_verifies_unchanged(
    texts: list[str], data: st.DataObject
) -> None:
    blocks = [_block(n, text) for n, text in enumerate(texts, start=1)]
    found = paragraphs(blocks)
    scores = [
        float("-inf") if p.kind in ("heading", "code")
        else data.draw(st.floats(min_value=0, max_value=1)) for p in found
    ]
    answer = compose("install setup?", found, scores)
    cited = {n for marker in find_markers(answer) for n in marker.numbers}
    assert cited <= {block.n for block in blocks}
    if answer:
        assert cited  # every answer says where it comes from
    verified = verify(answer, blocks)
    assert verified.text == answer and verified.dropped == 0
    headings = {p.text for p in found if p.kind == "heading"}
    prose = {p.text for p in found if p.kind != "heading"}
    for part in answer.split("\n\n"):
        bare = re.sub(r" \[\d+\]", "", part)
        assert part.startswith(("```", "~~~")) or bare not in headings or bare in prose
    assert _fences_closed(answer)


def _fences_closed(text: str) -> bool:
    fence = ""
    for line in text.splitlines():
        run = re.match(r"\s{0,3}(`{3,}|~{3,})", line)
        if run and not fence:
            fence = run[1]
        elif run and run[1][0] == fence[0] and len(run[1]) >= len(fence):
            fence = ""
    return not fence
