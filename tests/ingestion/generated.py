"""Generators of (hostile) test documents shared by the parser, sandbox and upload tests."""

from __future__ import annotations

import io
import zipfile

MIB = 1024 * 1024


def pdf_of(objects: list[bytes]) -> bytes:
    """A PDF with the given objects (1 is the catalog) and a correct xref table."""
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


def deflated_docx(megabytes: int) -> bytes:
    """A "DOCX" whose word/document.xml is ``megabytes`` MiB of zeros, streamed through
    DEFLATE (about 1/1000 of that compressed): a ZIP bomb."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as entry:
            chunk = bytes(MIB)
            for _ in range(megabytes):
                entry.write(chunk)
    return buffer.getvalue()
