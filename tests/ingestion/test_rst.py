"""reStructuredText read as structure (``ragd.ingestion.parsers.rst``): the Python FAQ's real
reST sources, Sphinx roles and directives, literal blocks, and nothing read from other files."""

from __future__ import annotations

import pytest

from ragd.ingestion.parsers import ParseError, detect_format, parse
from tests.shared_data import EVAL

FAQ = EVAL / "python-faq" / "source" / "faq-rst"


def test_rst_is_detected_by_name_and_declared_type() -> None:
    assert detect_format(b"Title\n=====\n\nText.\n", "guide.rst", None) == "rst"
    assert detect_format(b"Title\n=====\n\nText.\n", "general.rst.txt", None) == "rst"
    assert detect_format(b"Title\n=====\n\nText.\n", None, "text/x-rst") == "rst"
    assert detect_format(b"Title\n=====\n\nText.\n", "notes.txt", None) == "text"


def test_the_python_faq_has_heading_paths_and_roles_read_as_their_text() -> None:
    document = parse((FAQ / "general.rst.txt").read_bytes(), filename="general.rst.txt")
    assert document.format == "rst" and document.title == "General Python FAQ"
    assert document.warnings == ()
    what = next(s for s in document.sections if s.kind != "heading" and s.heading_path == (
        "General Python FAQ", "General Information", "What is Python?"))
    assert what.text.startswith("Python is an interpreted, interactive, object-oriented")
    text = document.text
    # :ref:`tutorial-index` and `Beginner's Guide to Python <https://...>`_ as their text.
    assert "start with tutorial-index. The Beginner's Guide to Python links to" in text
    assert ":ref:" not in text and "`_" not in text and "<https://" not in text
    assert ":tocdepth:" not in text and "tocdepth" not in text  # file metadata, not shown


def test_literal_blocks_stay_code_with_their_indentation() -> None:
    document = parse((FAQ / "programming.rst.txt").read_bytes(), filename="p.rst.txt")
    code = [s.text for s in document.sections if s.kind == "code"]
    assert "def linear(a, b):\n    def result(x):\n        return a * x + b\n    return result" \
        in code
    assert any(block.startswith(">>> ") for block in code)


def test_sphinx_directives_keep_their_text() -> None:
    source = b"""\
Module
======

.. function:: spam(eggs, *, ham=None)

   Return the :func:`spam` of *eggs* (see :class:`~pkg.mod.Ham` and :pep:`8`).

   .. versionadded:: 3.2
      The *ham* argument.

.. code-block:: python

   print("spam")

.. note:: Notes are docutils' own admonitions.

.. seealso:: :rfc:`the spec <5424#section-6>` and :mod:`json`.

.. class:: Counter(iterable=None)

   A dict subclass for counting.

.. only:: html

   Only in HTML builds.

.. toctree::

   other

.. index:: single: spam
"""
    document = parse(source, filename="m.rst")
    text = document.text
    for expected in [
        "spam(eggs, *, ham=None)", "Return the spam of eggs (see Ham and PEP 8).", "3.2",
        "The ham argument.", 'print("spam")', "Notes are docutils' own admonitions.",
        "the spec and json.", "Counter(iterable=None)", "A dict subclass for counting.",
        "Only in HTML builds.",
    ]:
        assert expected in text, expected
    assert "html" not in text.split() and "other" not in text and "single" not in text
    assert ('print("spam")', "code") in [(s.text, s.kind) for s in document.sections]
    assert document.warnings == ()


@pytest.mark.parametrize("construct", [
    b".. include:: /etc/passwd\n",
    b".. literalinclude:: /etc/passwd\n",
    b".. raw:: html\n   :file: /etc/passwd\n",
    b".. csv-table:: Users\n   :file: /etc/passwd\n",
    b".. raw:: html\n\n   <script>alert(1)</script>\n",
])
def test_nothing_is_read_from_other_files_and_what_is_refused_is_named(
    construct: bytes,
) -> None:
    document = parse(b"Title\n=====\n\nBefore.\n\n" + construct + b"\nAfter.\n",
                     filename="x.rst")
    assert "root:" not in document.text and "alert(1)" not in document.text
    assert "Before." in document.text and "After." in document.text
    assert document.warnings, document


def test_an_empty_document_is_refused() -> None:
    with pytest.raises(ParseError):
        parse(b".. a comment only\n", filename="x.rst")
