"""reStructuredText with docutils: sections build the heading path, literal blocks stay code,
roles are read as the text they show.

Documentation sources use Sphinx's roles (``:ref:``, ``:func:``) and directives
(``.. function::``, ``.. code-block::``, ``.. versionadded::``) that plain docutils does not
know. Rather than lose their text, every unknown role is read as its text (a title before
``<target>``, the last name of a ``~`` target; code-like roles as code) and every unknown
directive as its arguments plus its content parsed as reST (``code-block``, ``doctest`` and
the like as code; ``toctree``, ``index``, ``literalinclude``, ``highlight``, ``only``-less
bookkeeping directives have no text of their own). Nothing is read from other files: file
insertion (``include``, ``:file:`` options) and ``raw`` are disabled, and each refused
construct is named in the document's warnings, as is a reST error whose text was kept as
written.

docutils is imported at module level: the sandbox's fork server imports the parsers once,
so a parse does not pay for it.
"""

from __future__ import annotations

import io
import re
from typing import Any, ClassVar, cast

from docutils import nodes
from docutils.core import publish_doctree
from docutils.parsers.rst import Directive, directives, roles

from ragd.ingestion.parsers.base import ParsedDocument, ParseError, Section, SectionKind
from ragd.ingestion.parsers.text import clean_block, clean_inline, clean_preformatted, decode

__all__ = ["parse_rst"]

#: Roles whose text is code (shown as a literal).
_CODE_ROLES = frozenset(
    "func meth class mod data attr exc const obj file program option envvar samp kbd "
    "keyword command makevar macro member type var expr texpr cfunction cmacro ctype "
    "cdata cmember".split()
)
#: Directives whose content is code.
_CODE_DIRECTIVES = frozenset(
    "code-block sourcecode doctest testcode testoutput productionlist highlight-block "
    "parsed-literal".split()
)
#: Directives with no text of their own: bookkeeping, or content from other files.
_SILENT_DIRECTIVES = frozenset(
    "toctree index highlight currentmodule module moduleauthor sectionauthor tabularcolumns "
    "testsetup testcleanup literalinclude include codeauthor default-role default-domain "
    "autosummary automodule autoclass autofunction contents".split()
)
_CLASS_NAMES = re.compile(r"^[\w-]+(?:\s+[\w-]+)*$")
#: Directives whose arguments are a signature (Sphinx's Python and C domains, options).
_SIGNATURES = frozenset(
    "function method class classmethod staticmethod data attribute exception decorator "
    "decoratormethod coroutinefunction coroutinemethod abstractmethod describe object opcode "
    "cmdoption option envvar program pdbcommand module currentmodule".split()
)
#: Directives whose arguments are conditions, not text: only their content is read.
_CONTENT_ONLY = frozenset("only ifconfig container tab tabs".split())
#: Directives that read another file; refused, and named in the warnings.
_FILE_DIRECTIVES = frozenset("literalinclude include".split())
_ROLE = re.compile(r":((?:[\w.+-]+:)*[\w.+-]+):`")
_REFUSED = re.compile(r"directive disabled|access deactivated|insertion disabled", re.I)
_TARGET = re.compile(r"^(.*?)\s*<[^<>]*>$", re.DOTALL)
_SETTINGS = {
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "_disable_config": True,
    "report_level": 5,  # nothing printed
    "halt_level": 5,  # never raise for the document's own errors
    "doctitle_xform": False,  # the top title stays a section: it heads the heading path
    "sectsubtitle_xform": False,
    "smart_quotes": False,
    "syntax_highlight": "none",
    "input_encoding": "unicode",
    "line_length_limit": 100_000,
    "tab_width": 4,
}


class _AnyOptions(dict[str, Any]):
    """An option spec that takes every option as plain text (Sphinx adds many)."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> Any:
        return directives.unchanged


class _Generic(Directive):
    """Any directive docutils does not know: its arguments as a paragraph, its content
    parsed as reST (as code for code directives; nothing for bookkeeping ones)."""

    optional_arguments = 100
    final_argument_whitespace = True
    has_content = True
    option_spec: ClassVar[dict[str, Any]] = _AnyOptions()

    def run(self) -> list[nodes.Node]:
        name = self.name.rsplit(":", 1)[-1]
        if name in _FILE_DIRECTIVES:
            message = f"reST directive {self.name!r} (reads another file) was not read"
            return [nodes.comment(text=f"ragd-skipped: {message}")]
        if name in _SILENT_DIRECTIVES:
            return []
        if name == "class" and not self.content and _CLASS_NAMES.match(" ".join(self.arguments)):
            return []  # docutils' "class": style names for the next element, no text
        if name in _CODE_DIRECTIVES:
            return [nodes.literal_block(text="\n".join(self.content))]
        found: list[nodes.Node] = []
        if self.arguments and name not in _CONTENT_ONLY:
            found.append(self._arguments(name, " ".join(self.arguments)))
        if self.content:
            container = nodes.container()
            self.state.nested_parse(self.content, self.content_offset, container)
            found.extend(container.children)
        return found


    def _arguments(self, name: str, text: str) -> nodes.paragraph:
        """A signature as written; any other argument (a version and its note) as reST."""
        if name in _SIGNATURES or "(" in text:
            return nodes.paragraph(text=text)
        inline, messages = self.state.inline_text(text, self.lineno)
        return nodes.paragraph("", "", *inline, *messages)


def _text_role(
    name: str, rawtext: str, text: str, lineno: int, inliner: Any,
    options: dict[str, Any] | None = None, content: list[str] | None = None,
) -> tuple[list[nodes.Node], list[nodes.system_message]]:
    shown = text
    titled = _TARGET.match(text)
    if titled and titled[1].strip():
        shown = titled[1]
    elif text.startswith("~"):
        shown = text[1:].rsplit(".", 1)[-1]
    shown = shown.lstrip("!")
    base = name.rsplit(":", 1)[-1]
    if base in ("pep", "rfc") and shown == text:
        shown = f"{base.upper()} {text}"  # what docutils shows: "PEP 8", "RFC 5424"
    node: nodes.Node = nodes.literal(rawtext, shown) if base in _CODE_ROLES else nodes.Text(shown)
    return [node], []


#: docutils' own roles that render as docutils means them; every other role in a source is
#: read as its text (Sphinx's ``:ref:``, ``:func:``; also ``:pep:``/``:rfc:``, which Sphinx
#: lets take a title).
_DOCUTILS_ROLES = frozenset(
    "emphasis strong literal code math sub sup subscript superscript title-reference title "
    "t abbreviation ab acronym ac".split()
)
#: docutils' own directives kept as docutils means them; every other directive in a source
#: is read by :class:`_Generic` (Sphinx's, and docutils' ``contents``, ``class`` and
#: ``include``, which mean something else there or read other files).
_DOCUTILS_DIRECTIVES = frozenset(
    "attention caution danger error hint important note tip warning admonition image figure "
    "topic sidebar line-block parsed-literal code math rubric epigraph highlights pull-quote "
    "compound container table csv-table list-table replace unicode date raw role "
    "default-role title meta sectnum header footer target-notes".split()
)


def _register(source: str) -> None:
    """Make every role and directive the source uses readable (see the module docstring)."""
    for name in set(_ROLE.findall(source)):
        if name not in _DOCUTILS_ROLES:
            roles.register_local_role(name, cast(Any, _text_role))
    for name in set(re.findall(r"^\s*\.\.\s+([\w:.+-]+)::", source, flags=re.MULTILINE)):
        if name.lower() not in _DOCUTILS_DIRECTIVES:
            directives.register_directive(name.lower(), _Generic)


def parse_rst(data: bytes) -> ParsedDocument:
    source = decode(data).replace("\x00", "")
    _register(source)
    try:
        tree = publish_doctree(
            source, settings_overrides={**_SETTINGS, "warning_stream": io.StringIO()}
        )
    except Exception as exc:  # noqa: BLE001 - a docutils failure is the document's problem
        raise ParseError(f"The reStructuredText could not be read: {exc}") from exc
    reader = _Reader()
    reader.visit(tree, ())
    if not reader.sections:
        raise ParseError("The reStructuredText document is empty.", code="empty")
    title = next((s.text for s in reader.sections if s.kind == "heading"), None)
    return ParsedDocument(
        format="rst", sections=tuple(reader.sections), title=title,
        warnings=tuple(dict.fromkeys(reader.warnings)),
    )


class _Reader:
    """Walks a docutils tree into sections."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.warnings: list[str] = []

    def add(self, text: str, path: tuple[str, ...], kind: SectionKind) -> None:
        if kind == "code":
            text = clean_preformatted(text)
        elif kind in ("list", "table"):
            text = clean_block(text)
        else:
            text = clean_inline(text)  # a wrapped paragraph reads as one line
        if text:
            self.sections.append(Section(text=text, heading_path=path, kind=kind))

    def visit(self, node: nodes.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, nodes.section):
            title = next((c for c in node.children if isinstance(c, nodes.title)), None)
            heading = clean_inline(title.astext()) if title is not None else ""
            inner = (*path, heading) if heading else path
            if heading:
                self.add(heading, inner, "heading")
            for child in node.children:
                if child is not title:
                    self.visit(child, inner)
        elif isinstance(node, nodes.docinfo) or (
            isinstance(node, nodes.field_list) and isinstance(node.parent, nodes.document)
            and node.parent.index(node) == 0
        ):
            return  # file-wide metadata (":tocdepth: 2"), not shown
        elif isinstance(node, nodes.comment):
            text = node.astext()
            if text.startswith("ragd-skipped: "):
                self.warnings.append(text.removeprefix("ragd-skipped: "))
        elif isinstance(node, nodes.system_message):
            self._problem(node, path)
        elif isinstance(node, nodes.substitution_definition | nodes.target | nodes.raw):
            if isinstance(node, nodes.raw):
                self.warnings.append("a reST raw block was not read")
        elif isinstance(node, nodes.literal_block | nodes.doctest_block):
            self.add(node.astext(), path, "code")
        elif isinstance(node, nodes.title | nodes.rubric | nodes.subtitle):
            self.add(node.astext(), path, "heading")
        elif isinstance(node, nodes.bullet_list | nodes.enumerated_list):
            items = [_item_text(item) for item in node.children
                     if isinstance(item, nodes.list_item)]
            self.add("\n".join(f"- {item}" for item in items if item), path, "list")
        elif isinstance(node, nodes.table):
            self.add(_table_text(node), path, "table")
        elif isinstance(node, nodes.paragraph | nodes.line | nodes.term | nodes.field_name
                        | nodes.caption | nodes.attribution):
            kind: SectionKind = "quote" if _inside(node, nodes.block_quote) else "paragraph"
            self.add(node.astext(), path, kind)
        elif isinstance(node, nodes.Text):
            self.add(node.astext(), path, "paragraph")
        else:
            for child in node.children if isinstance(node, nodes.Element) else ():
                self.visit(child, path)

    def _problem(self, node: nodes.system_message, path: tuple[str, ...]) -> None:
        """A construct docutils could not read: a refused one (``raw``, file access) is named
        in the warnings; any other keeps its source text as written, and is named too.
        Notes about the markup's form (level 1, most of level 2) change no text."""
        level = node.get("level", 0)
        source = [c for c in node.children if isinstance(c, nodes.literal_block)]
        if level < 2 or (level == 2 and not source):  # noqa: PLR2004 - docutils' levels
            return
        message = " ".join(node.children[0].astext().split()) if node.children else "error"
        line = node.get("line")
        where = f" at line {line}" if line else ""
        if _REFUSED.search(message):
            self.warnings.append(f"reST{where} not read: {message}")
            return
        for block in source:
            self.add(block.astext(), path, "paragraph")
        self.warnings.append(f"reST error{where}, its text kept as written: {message}")


def _item_text(item: nodes.list_item) -> str:
    return " ".join(clean_inline(child.astext()) for child in item.children)


def _table_text(table: nodes.table) -> str:
    rows = []
    for row in table.findall(nodes.row):
        cells = [clean_inline(entry.astext()) for entry in row.children]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _inside(node: nodes.Node, kind: type[nodes.Element]) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, kind):
            return True
        parent = parent.parent
    return False
