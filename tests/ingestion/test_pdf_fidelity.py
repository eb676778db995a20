"""The PDF parser's text is faithful: words are neither glued nor split, and page furniture
(running heads, page numbers, dot leaders) stays out of the text.

Measured on the real Debian FAQ PDF (XeTeX output, no space glyphs) against the plain-text
edition of the same FAQ, and on small generated PDFs whose geometry is known exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ragd.ingestion.parsers import ParsedDocument, parse
from tests.ingestion.generated import pdf_of
from tests.shared_data import EVAL, require

DEBIAN = EVAL / "debian-faq"
DEBIAN_PDF = DEBIAN / "source/faq/pdf/debian-faq.en.pdf"
DEBIAN_TXT = DEBIAN / "source/faq/txt/debian-faq.en.txt"

#: The test reads the shared eval data; without it the test fails (never skips).
needs_eval = pytest.mark.usefixtures("eval_data")

_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _parse(path: Path) -> ParsedDocument:
    return parse(path.read_bytes(), filename=path.name)


@pytest.fixture(scope="module")
def debian_pdf() -> ParsedDocument:
    return _parse(require(DEBIAN_PDF))


@pytest.fixture(scope="module")
def debian_vocabulary() -> set[str]:
    """The words of the plain-text edition of the FAQ."""
    return set(_words(_parse(require(DEBIAN_TXT)).text))


# --- The Debian FAQ -------------------------------------------------------------------------


@needs_eval
def test_words_are_not_glued(debian_pdf: ParsedDocument) -> None:
    words = set(_words(debian_pdf.text))
    # A word before a link or a change of font used to be glued to it.
    assert not {"thedebian", "theauthors", "seehttps", "athttps", "useapt"} & words
    text = debian_pdf.text
    assert re.search(r"the Debian\s+Social\s+Contract", text)
    assert "For each package the authors of the program(s)" in text
    assert "The Debian changelog, in /usr/share/doc/PACKAGE/changelog.Debian.gz" in text
    assert "A complete list is available from any of the Debian mirrors" in text


@needs_eval
def test_almost_no_glued_word_is_left(
    debian_pdf: ParsedDocument, debian_vocabulary: set[str]
) -> None:
    """A glued word: not a word of the text edition, but two of them run together. There were
    419 before word gaps were measured; the 5 left are glued in the PDF itself
    ("aptitudeupdate" is typeset without a gap) or are a URL cut at a line end."""
    glued = [
        word
        for word in _words(debian_pdf.text)
        if word not in debian_vocabulary
        and len(word) >= 4
        and not word.isdigit()
        and any(
            word[:cut] in debian_vocabulary and word[cut:] in debian_vocabulary
            for cut in range(1, len(word))
        )
    ]
    assert len(glued) <= 10, glued


@needs_eval
def test_footnote_marks_are_not_glued_to_words(debian_pdf: ParsedDocument) -> None:
    words = set(_words(debian_pdf.text))
    # "trees²," in the text and "¹The Linux Standard Base..." at the page foot.
    assert not {"trees2", "1the", "1use", "archives1from"} & words
    assert "1 The Linux Standard Base" in debian_pdf.text


@needs_eval
def test_hyphenated_words_are_joined_and_compounds_kept(
    debian_pdf: ParsedDocument, debian_vocabulary: set[str]
) -> None:
    words = set(_words(debian_pdf.text))
    assert not {"distri", "bution", "informa", "ation"} & words
    # Broken at their own hyphen: the document writes both parts as words elsewhere.
    assert "Debian-based" in debian_pdf.text
    assert "architecture-specific" in debian_pdf.text
    assert not {"debianbased", "architecturespecific", "shellcommand"} & words
    # No word is split in two at a line end.
    split = [
        (first, second)
        for first, second in re.findall(r"(\w+)\n(\w+)", debian_pdf.text)
        if (first + second).lower() in debian_vocabulary
        and not {first.lower(), second.lower()} <= debian_vocabulary
    ]
    assert len(split) <= 2, split


@needs_eval
def test_running_heads_and_page_numbers_are_removed(debian_pdf: ParsedDocument) -> None:
    lines = debian_pdf.text.splitlines()
    # "CHAPTER 3. CHOOSING A DEBIAN… 3.1. WHICH DEBIAN DISTRIBUTION…" headed 42 pages.
    assert [line for line in lines if re.match(r"CHAPTER \d+\. ", line)] == []
    # The title is printed on the two title pages only, and stays there.
    assert lines.count("The Debian GNU/Linux FAQ") == 2
    # Chapter titles are content: each chapter's first page keeps its "Chapter 3".
    assert sum(bool(re.fullmatch(r"Chapter \d+", line)) for line in lines) == 16
    for section in debian_pdf.sections:
        page_lines = section.text.splitlines()
        for line in (page_lines[0], page_lines[-1]):
            assert not re.fullmatch(r"\d+|[ivx]+", line), (section.page, line)


@needs_eval
def test_dot_leaders_are_collapsed(debian_pdf: ParsedDocument) -> None:
    text = debian_pdf.text
    assert ". . . ." not in text and "...." not in text
    contents = next(s.text for s in debian_pdf.sections if s.text.startswith("Contents"))
    assert "\n1.1 What is this FAQ? 1\n" in contents
    assert "\n2 Getting and installing Debian GNU/Linux 5\n" in contents
    # An entry number wider than its column is no longer glued to the title.
    assert "\n11.10 How can I have my locally-built package included" in text
    assert "11.10How" not in text


@needs_eval
def test_page_numbers_are_kept_per_section(debian_pdf: ParsedDocument) -> None:
    pages = [section.page or 0 for section in debian_pdf.sections]
    assert all(page > 0 for page in pages)
    assert pages == sorted(pages) and len(set(pages)) == len(pages)
    # 73 pages, 7 of them blank: removing page furniture emptied no page.
    assert debian_pdf.pages == 73 and len(pages) == 66
    page_of = next(
        s.page for s in debian_pdf.sections if "Currently there are three versions" in s.text
    )
    assert page_of == 13  # the PDF's 13th page, printed as page 5
    assert not debian_pdf.warnings


# --- Generated PDFs ------------------------------------------------------------------------

#: Every glyph of the test font is half an em wide, so positions are easy to work out.
_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /FirstChar 32 /LastChar 126 "
_FONT += b"/Widths [" + b" 500" * 95 + b" ] >>"


def _pdf(pages: list[bytes], font: bytes = _FONT, extra: list[bytes] | None = None) -> bytes:
    """A PDF of ``pages`` (content streams) sharing font /F1; ``extra`` objects are numbered
    from 4 on, before the pages."""
    extra = extra or []
    first_page = 4 + len(extra)
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        font,
        *extra,
    ]
    resources = (
        b"<< /Font << /F1 3 0 R >> /XObject << /X1 4 0 R >> >>"
        if extra
        else (b"<< /Font << /F1 3 0 R >> >>")
    )
    for index, content in enumerate(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources %s "
            b"/Contents %d 0 R >>" % (resources, first_page + 2 * index + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    return pdf_of(objects)


def _lines(*lines: str, top: int = 740, size: int = 10) -> bytes:
    """A content stream with one text object per line, 14 points apart."""
    return b"\n".join(
        b"BT /F1 %d Tf 72 %d Td (%s) Tj ET" % (size, top - 14 * i, line.encode())
        for i, line in enumerate(lines)
    )


def test_gaps_between_text_objects_and_in_tj_arrays_are_spaces() -> None:
    # 10 pt glyphs 5 pt wide. "As stated in the" is 13 glyphs and three 0.2 em gaps, so it
    # ends at 72 + 65 + 6 = 143; the next text object starts 0.2 em (2 pt) later. pypdf alone
    # wants a quarter of an em (half this font's space) and glued "theDebian".
    content = b"""
    BT /F1 10 Tf 72 700 Td [(As) -200 (stated) -200 (in) -200 (the)] TJ ET
    BT /F1 10 Tf 145 700 Td [(Deb) -30 (ian) -250 (Social) -190 (Contract)] TJ ET
    BT /F1 10 Tf 72 680 Td [(no) 0 (gap)] TJ ET
    BT /F1 10 Tf 97 680 Td [(here)] TJ ET
    """
    document = parse(_pdf([content]), filename="gaps.pdf")
    lines = document.text.splitlines()
    # Kerning (-30, 0.03 em) stays inside the word; 0.19 em and more is a word gap.
    assert lines[0] == "As stated in the Debian Social Contract"
    assert lines[1] == "nogaphere"


def test_footnote_mark_is_a_word_of_its_own() -> None:
    # "trees" ends at 72 + 25 = 97; the mark is raised by 3.5 pt and set at 7 pt.
    content = b"""
    BT /F1 10 Tf 72 700 Td [(trees)] TJ ET
    BT /F1 7 Tf 97 703.5 Td [(2)] TJ ET
    BT /F1 10 Tf 100.5 700 Td [(, there are three)] TJ ET
    """
    text = parse(_pdf([content]), filename="mark.pdf").text
    assert "trees2" not in text and "trees 2" in text


def test_generated_running_heads_and_page_numbers_are_removed() -> None:
    topics = ["", "getting", "installing", "using", "removing"]
    pages = [
        _lines(
            f"CHAPTER {n}. THE HANDBOOK {n}.1. {topics[n].upper()} IT",
            f"This page is about {topics[n]} the software.",
            f"Read it before {topics[n]} anything else.",
            "A line that repeats on every page but in the middle.",
            f"More words on {topics[n]}.",
            f"The last line on {topics[n]}.",
            f"- {n} -",
        )
        for n in range(1, 5)
    ]
    document = parse(_pdf(pages), filename="book.pdf")
    assert [section.page for section in document.sections] == [1, 2, 3, 4]
    for section, topic in zip(document.sections, topics[1:], strict=True):
        lines = section.text.splitlines()
        assert lines[0] == f"This page is about {topic} the software."
        assert lines[-1] == f"The last line on {topic}."
        assert "A line that repeats on every page but in the middle." in lines
    assert "CHAPTER" not in document.text and "-" not in document.text
    assert not document.warnings


def test_two_pages_keep_their_repeated_lines() -> None:
    pages = [_lines("Report", f"Text of page {n}.", "Report") for n in (1, 2)]
    document = parse(_pdf(pages), filename="short.pdf")
    assert document.text.count("Report") == 4


def test_a_page_of_nothing_but_repeated_lines_keeps_them() -> None:
    # Slides of one line each ("Step N of 5"): their shape repeats on every page, but they
    # are all each page says, so they are text, not furniture; only page numbers go.
    pages = [_lines(f"Step {n} of 5: tighten bolt {n}", f"{n}") for n in range(1, 6)]
    document = parse(_pdf(pages), filename="steps.pdf")
    assert [s.text for s in document.sections] == [
        f"Step {n} of 5: tighten bolt {n}" for n in range(1, 6)
    ]


def test_contents_entries_lose_their_dot_leaders() -> None:
    content = _lines(
        "Contents",
        "1.1 What is this FAQ? . . . . . . . . . . . . . 1",
        "1.2 Where is it?...............2",
        "11.10How can I build it? . . . . . . . . . . 49",
        "See the text... and then more text.",
    )
    lines = parse(_pdf([content]), filename="toc.pdf").text.splitlines()
    assert lines == [
        "Contents",
        "1.1 What is this FAQ? 1",
        "1.2 Where is it? 2",
        "11.10 How can I build it? 49",
        "See the text... and then more text.",
    ]


def test_hyphenated_line_ends_are_joined_unless_a_compound() -> None:
    content = _lines(
        "Debian is a distri-",
        "bution. Many distributions are Debian-",
        "based, and Debian is based on free software. A non-",
        "Linux kernel is an option.",
    )
    text = parse(_pdf([content]), filename="hyphen.pdf").text
    assert "Debian is a distribution. Many distributions are Debian-based, and" in text
    assert "A non-Linux kernel" in text


def test_text_in_a_form_xobject_gets_its_word_gaps() -> None:
    form = b"BT /F1 10 Tf 72 700 Td [(inside) -250 (a) -250 (form)] TJ ET"
    xobject = (
        b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources "
        b"<< /Font << /F1 3 0 R >> >> /Length %d >>\nstream\n%s\nendstream" % (len(form), form)
    )
    content = b"q /X1 Do Q " + _lines("After the form.", top=600)
    text = parse(_pdf([content], extra=[xobject]), filename="form.pdf").text
    assert "inside a form" in text and "After the form." in text


@pytest.mark.parametrize(
    "font",
    [
        # A CID font whose widths are garbage, or missing altogether.
        b"<< /Type /Font /Subtype /Type0 /BaseFont /X /Encoding /Identity-H "
        b"/DescendantFonts [<< /Type /Font /Subtype /CIDFontType2 /W [0 /x (y) 4 [1 2] 9] >>] >>",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /X /Encoding /Identity-H >>",
        # A simple font whose widths are not an array, or a Type3 font without a matrix.
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /FirstChar 32 /Widths 7 >>",
        b"<< /Type /Font /Subtype /Type3 /FirstChar 32 /Widths [500] >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /FirstChar /x /Widths [(a)] >>",
    ],
)
def test_malformed_fonts_do_not_stop_parsing(font: bytes) -> None:
    content = b"BT /F1 10 Tf 72 700 Td [(ab) -250 (cd)] TJ ET BT /F1 10 Tf 120 700 Td [(ef)] TJ ET"
    document = parse(_pdf([content], font=font), filename="font.pdf")
    assert document.pages == 1
