"""Parsers on the real FAQ files of ../shared/eval, on generated office files, and on
hostile input."""

from __future__ import annotations

import csv as stdlib_csv
import io
import json
import logging
import os
import re
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragd.ingestion.parsers import ParsedDocument, ParseError, detect_format, parse
from ragd.ingestion.parsers.base import Section, cut_to_chars, document_title
from tests.ingestion.generated import pdf_of
from tests.shared_data import EVAL

DEBIAN = EVAL / "debian-faq"
PYTHON = EVAL / "python-faq"
MIN_COVERAGE = 0.90

logger = logging.getLogger(__name__)
#: The test reads the shared eval data; without it the test fails (never skips).
needs_eval = pytest.mark.usefixtures("eval_data")

_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _parse_file(path: Path) -> ParsedDocument:
    return parse(path.read_bytes(), filename=path.name)


def _answers(dataset: Path) -> dict[str, tuple[list[str], str]]:
    """query id -> (source files relative to the dataset, gold answer). A merged question
    ("What is Python?") lists several source files; its answer comes from one of them."""
    sources: dict[str, list[str]] = defaultdict(list)
    with (dataset / "source/query_sources.tsv").open(encoding="utf-8") as handle:
        for row in stdlib_csv.DictReader(handle, delimiter="\t"):
            sources[row["query-id"]].append(row["source_file"])
    answers: dict[str, tuple[list[str], str]] = {}
    with (dataset / "answers.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            answers[record["query_id"]] = (sources[record["query_id"]], record["answer"])
    return answers


def _coverage(answer: str, vocabulary: set[str]) -> float:
    words = _words(answer)
    return sum(word in vocabulary for word in words) / len(words) if words else 1.0


@pytest.fixture(scope="module")
def parsed() -> Iterator[Callable[[Path], ParsedDocument]]:
    """Parses each real file once per module; the cache is dropped when the module ends."""
    cache: dict[Path, ParsedDocument] = {}

    def get(path: Path) -> ParsedDocument:
        if path not in cache:
            cache[path] = _parse_file(path)
        return cache[path]

    yield get
    cache.clear()


def _alternative(dataset: Path, html_source: str, fmt: str) -> Path:
    """The file holding the same FAQ as ``html_source`` in format ``fmt``."""
    if fmt == "html":
        return dataset / html_source
    if dataset == DEBIAN:
        return DEBIAN / {"pdf": "source/faq/pdf/debian-faq.en.pdf",
                         "text": "source/faq/txt/debian-faq.en.txt"}[fmt]  # fmt: skip
    stem = Path(html_source).stem
    return PYTHON / f"source/faq-rst/{stem}.rst.txt"


COVERAGE_CASES = [
    ("debian", "html"),
    ("debian", "pdf"),
    ("debian", "text"),
    ("python", "html"),
    ("python", "rst"),
]


@needs_eval
@pytest.mark.parametrize(("dataset_name", "fmt"), COVERAGE_CASES)
def test_every_gold_answer_is_in_the_parsed_faq(
    dataset_name: str,
    fmt: str,
    parsed: Callable[[Path], ParsedDocument],
    record_property: Callable[[str, object], None],
) -> None:
    dataset = DEBIAN if dataset_name == "debian" else PYTHON
    vocabularies: dict[Path, set[str]] = {}
    coverage: dict[str, float] = {}
    for query_id, (sources, answer) in _answers(dataset).items():
        best = 0.0
        for source in sources:
            path = _alternative(dataset, source, fmt)
            if path not in vocabularies:
                document = parsed(path)
                assert document.format == fmt
                vocabularies[path] = set(_words(document.text))
            best = max(best, _coverage(answer, vocabularies[path]))
        coverage[query_id] = best
    worst = min(coverage, key=coverage.__getitem__)
    record_property("min_coverage", round(coverage[worst], 3))
    logger.info(
        "%s/%s: %d answers, min coverage %.3f", dataset_name, fmt, len(coverage), coverage[worst]
    )
    assert coverage[worst] >= MIN_COVERAGE, (worst, coverage[worst])


@needs_eval
def test_debian_html_keeps_heading_paths(parsed: Callable[[Path], ParsedDocument]) -> None:
    document = parsed(DEBIAN / "source/faq/html/basic-defs.en.html")
    assert document.format == "html"
    assert document.title == "Chapter 1. Definitions and overview"
    paths = {section.heading_path for section in document.sections}
    assert ("Chapter 1. Definitions and overview", "1.2. What is Debian GNU/Linux?") in paths
    body = [s for s in document.sections if s.kind != "heading"]
    assert len(body) > 20
    assert all(s.heading_path for s in body)
    assert "<" not in document.text
    # Site navigation is dropped.
    assert not any(s.text.startswith("Prev") for s in document.sections)


@needs_eval
def test_python_html_headings_code_and_no_chrome(parsed: Callable[[Path], ParsedDocument]) -> None:
    document = parsed(PYTHON / "source/faq/programming.html")
    kinds = defaultdict(int)
    for section in document.sections:
        kinds[section.kind] += 1
    assert kinds["heading"] > 50 and kinds["code"] > 20 and kinds["paragraph"] > 100
    assert any(
        path[-1] == "How do I share global variables across modules?"
        for path in (s.heading_path for s in document.sections)
        if path
    )
    assert "¶" not in document.text
    assert "var _" not in document.text  # no script content


@needs_eval
def test_debian_pdf_keeps_page_numbers(parsed: Callable[[Path], ParsedDocument]) -> None:
    document = parsed(DEBIAN / "source/faq/pdf/debian-faq.en.pdf")
    assert document.format == "pdf" and document.pages is not None and document.pages > 50
    pages = [section.page for section in document.sections]
    assert all(page is not None for page in pages)
    assert pages == sorted(pages) and len(set(pages)) == len(pages)
    # Justified TeX output has no space glyphs; word gaps must still become spaces.
    assert "What is the latest version of Debian?" in document.text
    assert "Currently there are three versions of Debian" in document.text
    page_of = next(s.page for s in document.sections if "three versions of Debian" in s.text)
    assert page_of is not None and 5 < page_of < document.pages


@needs_eval
def test_pdf_max_pages_caps_the_pages_read() -> None:
    data = (DEBIAN / "source/faq/pdf/debian-faq.en.pdf").read_bytes()
    document = parse(data, filename="faq.pdf", max_pages=3)
    assert max(section.page or 0 for section in document.sections) <= 3
    assert document.warnings


@needs_eval
def test_debian_text_keeps_questions_with_answers_in_order(
    parsed: Callable[[Path], ParsedDocument],
) -> None:
    document = parsed(DEBIAN / "source/faq/txt/debian-faq.en.txt")
    assert document.format == "text" and len(document.sections) > 300
    text = document.text
    question = text.index("What is the latest version of Debian?", text.index("Chapter 2"))
    assert question < text.index("Currently there are three versions of Debian", question)


# --- generated office, markdown and CSV files -------------------------------------------


def _docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Handbook", level=0)
    document.add_heading("Installing", level=1)
    document.add_paragraph("Run   the\tinstaller from the USB stick.")
    document.add_paragraph("first step", style="List Bullet")
    document.add_paragraph("second step", style="List Bullet")
    document.add_heading("Disks", level=2)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Disk", "Size"
    table.cell(1, 0).text, table.cell(1, 1).text = "sda", "512 GB"
    document.add_heading("Support", level=1)
    document.add_paragraph("Ask on the mailing list.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_docx_headings_tables_and_lists() -> None:
    document = parse(_docx_bytes(), filename="handbook.docx")
    assert document.format == "docx" and document.title == "Handbook"
    by_text = {section.text: section for section in document.sections}
    run = by_text["Run the installer from the USB stick."]
    assert run.heading_path == ("Handbook", "Installing") and run.kind == "paragraph"
    assert by_text["- first step\n- second step"].kind == "list"
    table = by_text["Disk | Size\nsda | 512 GB"]
    assert table.kind == "table" and table.heading_path == ("Handbook", "Installing", "Disks")
    assert by_text["Ask on the mailing list."].heading_path == ("Handbook", "Support")


def _pptx_bytes() -> bytes:
    import pptx
    from pptx.util import Inches

    presentation = pptx.Presentation()
    first = presentation.slides.add_slide(presentation.slide_layouts[1])
    first.shapes.title.text = "Quarterly results"
    first.placeholders[1].text_frame.text = "Revenue grew 12 %"
    first.notes_slide.notes_text_frame.text = "Mention the new region."
    second = presentation.slides.add_slide(presentation.slide_layouts[5])
    second.shapes.title.text = "Numbers"
    shape = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1))
    cells = shape.table
    cells.cell(0, 0).text, cells.cell(0, 1).text = "Region", "Sales"
    cells.cell(1, 0).text, cells.cell(1, 1).text = "North", "42"
    group = second.shapes.add_group_shape()
    box = group.shapes.add_textbox(Inches(1), Inches(4), Inches(3), Inches(1))
    box.text_frame.text = "Grouped caption"
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def test_pptx_slides_tables_and_notes() -> None:
    document = parse(_pptx_bytes(), filename="deck.pptx")
    assert document.format == "pptx" and document.pages == 2
    slide1, notes1, slide2 = document.sections
    assert (slide1.kind, slide1.page, slide1.heading_path) == ("slide", 1, ("Quarterly results",))
    assert slide1.text == "Revenue grew 12 %"
    assert (notes1.kind, notes1.page, notes1.text) == ("notes", 1, "Mention the new region.")
    assert (slide2.page, slide2.heading_path) == (2, ("Numbers",))
    assert "Region | Sales\nNorth | 42" in slide2.text
    assert "Grouped caption" in slide2.text


MARKDOWN = """# Guide

Intro  text with **bold** and `code`.

## Install

- one
- two
  - nested

```sh
pip install ragd
```

| a | b |
|---|---|
| 1 | 2 |

> quoted words

# Other
Tail.
"""


def test_markdown_structure() -> None:
    document = parse(MARKDOWN.encode(), filename="guide.md")
    assert document.format == "markdown" and document.title == "Guide"
    found = {(s.kind, s.text): s.heading_path for s in document.sections}
    assert found[("paragraph", "Intro text with bold and code.")] == ("Guide",)
    assert found[("list", "- one\n- two\n  - nested")] == ("Guide", "Install")
    assert found[("code", "pip install ragd")] == ("Guide", "Install")
    assert found[("table", "a | b\n1 | 2")] == ("Guide", "Install")
    assert found[("quote", "quoted words")] == ("Guide", "Install")
    assert found[("paragraph", "Tail.")] == ("Other",)


def test_csv_rows_grouped_with_header_repeated() -> None:
    lines = ["name,city"] + [f"person{i},city{i}" for i in range(45)]
    document = parse("\n".join(lines).encode(), filename="people.csv")
    assert document.format == "csv"
    assert [s.kind for s in document.sections] == ["row", "row", "row"]
    for section in document.sections:
        assert section.text.startswith("name | city\n")
    assert document.sections[0].text.count("\n") == 20
    assert document.sections[2].text.endswith("person44 | city44")


def test_csv_rows_and_columns_past_the_caps_are_cut_with_a_warning() -> None:
    wide = ",".join(f"h{i}" for i in range(1000))
    lines = [wide] + [",".join(str(i % 10) for i in range(1000)) for _ in range(30)]
    document = parse("\n".join(lines).encode(), filename="wide.csv",
                     max_csv_rows=25, max_csv_columns=10)
    assert document.warnings == (
        "only the first 10 of 1,000 columns were read",
        "only the first 25 of 30 rows were read",
    )
    assert document.sections[0].text.splitlines()[0] == " | ".join(f"h{i}" for i in range(10))
    body = [line for s in document.sections for line in s.text.splitlines()[1:]]
    assert len(body) == 25 and all(line.count("|") == 9 for line in body)
    # Within the caps: nothing cut, nothing said.
    within = parse("\n".join(lines).encode(), filename="wide.csv",
                   max_csv_rows=30, max_csv_columns=1000)
    assert within.warnings == ()
    assert within.text == parse("\n".join(lines).encode(), filename="wide.csv").text


def test_the_parsed_text_is_cut_at_max_chars_with_a_warning() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 50 for i in range(100)]
    data = "\n\n".join(paragraphs).encode()
    full = parse(data, filename="long.txt")
    document = parse(data, filename="long.txt", max_chars=1000)
    assert len(document.text) == 1000 and full.text.startswith(document.text)
    warning = f"only the first 1,000 of {len(full.text):,} characters were read"
    assert document.warnings == (warning,)
    assert parse(data, filename="long.txt", max_chars=len(full.text)).warnings == ()


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=30), max_size=8), max_chars=st.integers(1, 120))
def test_cut_to_chars_keeps_a_prefix_of_the_text(texts: list[str], max_chars: int) -> None:
    document = ParsedDocument(format="text", sections=tuple(Section(t) for t in texts))
    cut = cut_to_chars(document, max_chars)
    if len(document.text) <= max_chars:
        assert cut == document
    else:
        assert document.text.startswith(cut.text) and len(cut.text) <= max_chars
        assert len(cut.text) >= max_chars - 2  # at most a joining blank line short
        assert cut.warnings[-1].endswith(f"of {len(document.text):,} characters were read")


def test_csv_is_detected_without_an_extension() -> None:
    data = b"id;label;score\n1;alpha;0.5\n2;beta;0.7\n3;gamma;0.9\n"
    assert detect_format(data, None, None) == "csv"
    assert parse(data, filename=None).sections[0].text.startswith("id | label | score")


def test_text_encodings_control_characters_and_nfc() -> None:
    latin1 = "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, d\u00e9j\u00e0 vu.\n\nNo\u00ebl".encode(
        "cp1252"
    )
    document = parse(latin1 + b"\x00\x07 end", filename="menu.txt")
    assert document.text.startswith("Café crème brûlée, déjà vu.")
    assert "\x00" not in document.text and "\x07" not in document.text
    decomposed = parse("Cafe\u0301   au\tlait".encode(), filename="a.txt")
    assert decomposed.text == "Caf\u00e9 au lait"
    broken = parse(b"valid \xff\xfe\xfd bytes \xc3", filename="b.txt")
    assert broken.text  # undecodable bytes are replaced, never fatal


def test_detect_format_from_content() -> None:
    assert detect_format(b"%PDF-1.7\n...", None, None) == "pdf"
    assert detect_format(b"<!DOCTYPE html><p>x</p>", None, None) == "html"
    assert detect_format(b"# Title\n\nbody\n", None, None) == "markdown"
    assert detect_format(b"just words\n", None, "text/plain") == "text"
    assert detect_format(b"A note on the %PDF-1.7 header.\n", "note.txt", None) == "text"
    assert detect_format(_docx_bytes(), "upload.bin".removesuffix(".bin"), None) == "docx"


def test_document_title_comes_from_the_document_then_its_first_heading_or_line() -> None:
    html = parse(b"<html><head><title>Guide  one</title></head><body><h1>Intro</h1><p>x.</p>"
                 b"</body></html>", filename="g.html")
    assert document_title(html) == "Guide one"
    untitled = parse(b"<html><body><h1>Intro</h1><p>Text.</p></body></html>", filename="g.html")
    assert document_title(untitled) == "Intro"
    assert document_title(parse(b"# Release notes\n\nBody.", filename="n.md")) == "Release notes"
    assert document_title(parse(b"\n  The Debian FAQ\n\nText.\n", filename="f.txt")) == (
        "The Debian FAQ"
    )
    assert document_title(parse(b"This is the first sentence.\nMore.", filename="f.txt")) is None
    assert document_title(parse(b"name,age\nann,3\nbob,4\n", filename="p.csv")) is None
    pdf = (DEBIAN / "source" / "faq" / "pdf" / "debian-faq.en.pdf").read_bytes()
    assert document_title(parse(pdf, filename="x.pdf")) == "The Debian GNU/Linux FAQ"


MAKEVARS = b"PKG_CPPFLAGS = -I../inst/include\nPKG_LIBS = -lz\n"


def test_text_that_merely_starts_like_a_signature_is_text() -> None:
    assert detect_format(MAKEVARS, "Makevars", None) == "text"
    assert detect_format(MAKEVARS, None, None) == "text"
    assert detect_format(MAKEVARS, "Makevars.txt", None) == "text"
    assert detect_format(MAKEVARS, None, "text/plain") == "text"
    assert detect_format(b"PK\x03\x04 is how a ZIP starts.\n", "notes.md", None) == "markdown"
    assert detect_format(b"%PDF-1.7 is the version we target.\n", "notes.txt", None) == "text"
    assert detect_format(b"%PDF-1.7 is the version.\n", None, "text/markdown") == "markdown"
    assert parse(MAKEVARS, filename="Makevars").text.startswith("PKG_CPPFLAGS = -I../inst")
    # A real archive or PDF named as text is still what its bytes are: refused as a mismatch.
    _assert_unsupported(_docx_bytes(), "letter.txt")
    _assert_unsupported(next((DEBIAN / "source" / "faq" / "pdf").glob("*.pdf")).read_bytes(),
                        "letter.txt")


# --- hostile input ------------------------------------------------------------------------


def _assert_unsupported(data: bytes, filename: str | None) -> None:
    with pytest.raises(ParseError) as caught:
        parse(data, filename=filename)
    assert caught.value.code == "unsupported_type"
    assert "application/pdf" in caught.value.message and "text/csv" in caught.value.message


def test_empty_file_is_refused() -> None:
    with pytest.raises(ParseError) as caught:
        parse(b"", filename="empty.pdf")
    assert caught.value.code == "empty"


def test_random_bytes_named_pdf_are_refused() -> None:
    _assert_unsupported(os.urandom(4096), "report.pdf")


def test_text_named_pdf_is_refused() -> None:
    _assert_unsupported(b"hello, I am not a PDF", "report.pdf")


def test_zip_named_docx_without_a_document_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "hi")
    _assert_unsupported(buffer.getvalue(), "letter.docx")


def test_pptx_named_docx_is_refused() -> None:
    _assert_unsupported(_pptx_bytes(), "letter.docx")


def test_images_and_executables_are_refused() -> None:
    _assert_unsupported(b"\x89PNG\r\n\x1a\n" + bytes(200), "picture.png")
    _assert_unsupported(b"\x7fELF\x02\x01\x01" + bytes(200), None)


def test_corrupt_pdf_fails_cleanly() -> None:
    with pytest.raises(ParseError):
        parse(
            b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n%%EOF", filename="x.pdf"
        )


def _pdf_with_content(stream: bytes, filters: bytes) -> bytes:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter %s >>\nstream\n%s\nendstream" % (len(stream), filters, stream),
    ]
    return pdf_of(objects)


def test_nested_flate_pdf_bomb_is_refused() -> None:
    inner = zlib.compressobj(9)
    chunk = b"0 0 m " * (1024 * 1024 // 6)
    compressed = b"".join(inner.compress(chunk) for _ in range(40)) + inner.flush()
    data = _pdf_with_content(zlib.compress(compressed, 9), b"[/FlateDecode /FlateDecode]")
    assert len(data) < 100_000
    with pytest.raises(ParseError) as caught:
        parse(data, filename="bomb.pdf")
    assert caught.value.code == "limit_exceeded"


def test_small_generated_pdf_is_read() -> None:
    content = zlib.compress(b"BT /F1 12 Tf 72 700 Td (Hello PDF) Tj ET")
    document = parse(_pdf_with_content(content, b"/FlateDecode"), filename="tiny.pdf")
    assert document.pages == 1


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE html [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<html><body><p>&lol9;</p><p>after</p></body></html>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE html [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<html><body><p>start &xxe; end</p></body></html>"""


@pytest.mark.parametrize("filename", ["bomb.html", "bomb.xhtml", None])
def test_billion_laughs_html_does_not_expand(filename: str | None) -> None:
    document = parse(BILLION_LAUGHS, filename=filename)
    assert len(document.text) < 10_000
    assert "lollol" not in document.text


@pytest.mark.parametrize("filename", ["xxe.html", "xxe.xhtml", None])
def test_xxe_html_does_not_resolve(filename: str | None) -> None:
    document = parse(XXE, filename=filename)
    passwd = Path("/etc/passwd").read_text(encoding="utf-8", errors="replace")
    first_line = passwd.splitlines()[0] if passwd else "root:x:0:0"
    assert first_line not in document.text and "root:" not in document.text


def test_xxe_in_docx_does_not_resolve() -> None:
    source = zipfile.ZipFile(io.BytesIO(_docx_bytes()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "word/document.xml":
                content = content.replace(
                    b"?>",
                    b'?><!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
                    1,
                ).replace(b"Ask on the mailing list.", b"Ask &xxe; here.")
            target.writestr(item, content)
    document = parse(buffer.getvalue(), filename="xxe.docx")
    assert "Ask" in document.text  # parsed, with the entity left unresolved
    assert "root:" not in document.text


def test_deeply_nested_html_is_refused_not_crashed() -> None:
    depth = 100_000
    data = "<html><body>" + "<div>" * depth + "deep text" + "</div>" * depth + "</body></html>"
    with pytest.raises(ParseError) as caught:
        parse(data.encode(), filename="deep.html")
    assert caught.value.code == "limit_exceeded"


def test_moderately_nested_html_is_read() -> None:
    depth = 200
    data = "<p>top</p>" + "<div>" * depth + "deep text" + "</div>" * depth + "<p>after</p>"
    document = parse(data.encode(), filename="nested.html")
    assert document.text == "top\n\ndeep text\n\nafter"


def test_deeply_nested_markdown_does_not_crash() -> None:
    data = ("> " * 50_000 + "deep\n") + ("- " * 20_000 + "item\n")
    document = parse(data.encode(), filename="deep.md")
    assert isinstance(document, ParsedDocument)


SITE = b"""<!DOCTYPE html><html><head><title> Site  page </title>
<style>p { color: red }</style><script>var secret = 1;</script></head><body>
<header>Site banner</header><nav><a href="/">Home</a></nav>
<main>
<h1>Manual</h1><p>Intro&nbsp;text &amp; more.</p>
<h2>Setup</h2>
<ul><li>first <b>item</b></li><li><p>second item</p></li></ul>
<pre>  indented
    code</pre>
<table><tr><th>Key</th><th>Value</th></tr><tr><td>port</td><td>8000</td></tr></table>
<h2>Usage</h2><blockquote>quoted</blockquote><noscript>enable js</noscript>
</main>
<aside>related links</aside><footer>copyright footer</footer><form>login</form>
</body></html>"""


def test_html_main_content_structure() -> None:
    document = parse(SITE, filename=None, declared_type="text/html; charset=utf-8")
    assert document.format == "html" and document.title == "Site page"
    found = {(s.kind, s.text): s.heading_path for s in document.sections}
    assert found[("paragraph", "Intro text & more.")] == ("Manual",)
    assert found[("list", "- first item\n- second item")] == ("Manual", "Setup")
    assert found[("code", "  indented\n    code")] == ("Manual", "Setup")
    assert found[("table", "Key | Value\nport | 8000")] == ("Manual", "Setup")
    assert found[("quote", "quoted")] == ("Manual", "Usage")
    for chrome in ("banner", "Home", "secret", "color", "related", "footer", "login", "js"):
        assert chrome not in document.text


def test_text_with_an_unknown_extension_is_text_and_binary_is_refused() -> None:
    text = b"Files: *\nCopyright: 1997-2024 Software in the Public Interest\nLicense: GPL-2+\n"
    assert detect_format(text, "debian-faq.copyright", None) == "text"
    assert detect_format(b"<html><body><p>hi</p></body></html>", "page.tmpl", None) == "html"
    with pytest.raises(ParseError) as caught:
        detect_format(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + bytes(300), "setup.exe", None)
    assert caught.value.code == "unsupported_type" and "'.exe'" in caught.value.message
    with pytest.raises(ParseError) as caught:
        detect_format(b"\x00\x01\x02 not a document", "blob.bin", None)
    assert caught.value.code == "unsupported_type" and "'.bin'" in caught.value.message
