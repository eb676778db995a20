"""Resource limits for parsing untrusted files, and the ZIP checks run before parsing.

DOCX and PPTX are ZIP archives, so a hostile upload can be a ZIP bomb: a few kilobytes that
declare gigabytes, millions of entries, nested archives or entry names that climb out of a
directory. :func:`check_zip` rejects those from the archive's directory alone, without
decompressing anything, so the rejection is cheap and happens before a parser process starts.

This is the only ZIP policy: the upload check and the sandbox's parent both call
:func:`check_zip` with the configured :class:`ParseLimits`, and the parsers have none of
their own, so a limit that is configured is the limit that is enforced.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass

from ragd.ingestion.parsers.base import ParseError

__all__ = ["ParseLimits", "check_zip"]

_MIB = 1024 * 1024

#: End of central directory record: signature, disk numbers, entry counts, directory size and
#: offset, comment length (APPNOTE.TXT 4.3.16).
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
#: ZIP64 end of central directory locator and record (APPNOTE.TXT 4.3.14, 4.3.15).
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIGNATURE = b"PK\x06\x06"
_MAX_COMMENT = 0xFFFF

#: Central directory bytes allowed per permitted entry. A real entry is 46 bytes plus its name
#: and extra fields; this bound keeps a lying directory from making ``zipfile`` build hundreds
#: of thousands of ``ZipInfo`` objects in the caller's process.
_DIRECTORY_BYTES_PER_ENTRY = 256
#: Compression ratios are judged only above these sizes: tiny, repetitive XML parts compress
#: very well and are harmless.
_RATIO_FLOOR_ENTRY = 1 * _MIB
_RATIO_FLOOR_TOTAL = 10 * _MIB
#: Archive formats nested inside the archive. Office embeddings (``.xlsx`` charts in a DOCX)
#: are allowed: our parsers never open them, so they cannot recurse.
_NESTED_ARCHIVE_SUFFIXES = (".zip", ".jar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".tar")


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Limits applied to one parse of one untrusted file.

    ``memory_mb`` caps the parser process's address space (``RLIMIT_AS``), ``cpu_seconds`` its
    CPU time (``RLIMIT_CPU``) and ``timeout_seconds`` the wall-clock time the caller waits.
    The ``zip_*`` limits are checked by :func:`check_zip` on the archive's directory.
    ``max_pages``, ``max_chars``, ``max_csv_rows`` and ``max_csv_columns`` do not refuse a
    document: the parser reads it up to the cap and says what it left out in a warning
    (:meth:`parser_options`).
    """

    timeout_seconds: float = 60.0
    memory_mb: int = 1024
    cpu_seconds: int = 120
    max_file_bytes: int = 50 * _MIB
    max_pages: int = 2000
    max_chars: int = 5_000_000
    max_csv_rows: int = 50_000
    max_csv_columns: int = 512
    zip_max_entries: int = 10_000
    zip_max_total_uncompressed: int = 500 * _MIB
    zip_max_ratio: float = 200.0

    def parser_options(self) -> dict[str, int]:
        """The caps a parser applies itself: keyword arguments of
        :func:`ragd.ingestion.parsers.parse` (sent to the sandbox's child as JSON)."""
        return {
            "max_pages": self.max_pages,
            "max_chars": self.max_chars,
            "max_csv_rows": self.max_csv_rows,
            "max_csv_columns": self.max_csv_columns,
        }


def check_zip(data: bytes, limits: ParseLimits) -> None:
    """Reject a ZIP archive that is a bomb or unsafe, reading only its central directory.

    Raises :class:`ParseError` with code ``archive_too_large`` (too many entries, too much
    declared uncompressed data) or ``archive_bomb`` (compression ratio, nested archives, entry
    names with ``..`` or absolute paths, a directory that contradicts its entry count) and
    ``parse_failed`` when the bytes are not a readable archive. Nothing is decompressed.
    """
    declared_entries, directory_size = _directory_extent(data)
    if declared_entries > limits.zip_max_entries:
        raise ParseError(
            f"the archive has {declared_entries} entries, more than the limit of "
            f"{limits.zip_max_entries}",
            code="archive_too_large",
        )
    if directory_size > max(declared_entries, 1) * _DIRECTORY_BYTES_PER_ENTRY + 64 * 1024:
        raise ParseError(
            "the archive's directory is much larger than its entry count explains",
            code="archive_bomb",
        )
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as exc:
        raise ParseError(
            "the file looks like a ZIP archive (DOCX/PPTX) but is damaged", code="parse_failed"
        ) from exc

    if len(infos) > limits.zip_max_entries:
        raise ParseError(
            f"the archive has {len(infos)} entries, more than the limit of "
            f"{limits.zip_max_entries}",
            code="archive_too_large",
        )
    total_uncompressed = 0
    total_compressed = 0
    for info in infos:
        _check_entry_name(info.filename)
        total_uncompressed += info.file_size
        total_compressed += info.compress_size
        if total_uncompressed > limits.zip_max_total_uncompressed:
            raise ParseError(
                f"the archive expands to more than {limits.zip_max_total_uncompressed // _MIB} MB",
                code="archive_too_large",
            )
        if info.file_size >= _RATIO_FLOOR_ENTRY and info.file_size > limits.zip_max_ratio * max(
            info.compress_size, 1
        ):
            raise ParseError(
                f"the archive entry {info.filename[:100]!r} is compressed more than "
                f"{limits.zip_max_ratio:g} to 1 (a ZIP bomb)",
                code="archive_bomb",
            )
    if total_uncompressed >= _RATIO_FLOOR_TOTAL and total_uncompressed > (
        limits.zip_max_ratio * max(total_compressed, 1)
    ):
        raise ParseError(
            f"the archive is compressed more than {limits.zip_max_ratio:g} to 1 (a ZIP bomb)",
            code="archive_bomb",
        )


def _directory_extent(data: bytes) -> tuple[int, int]:
    """Return (declared entry count, central directory size) from the end records, in O(1)."""
    start = max(0, len(data) - _EOCD.size - _MAX_COMMENT)
    position = data.rfind(_EOCD_SIGNATURE, start)
    if position < 0 or position + _EOCD.size > len(data):
        raise ParseError(
            "the file looks like a ZIP archive (DOCX/PPTX) but is damaged", code="parse_failed"
        )
    _, _, _, _, entries, size, offset, _ = _EOCD.unpack_from(data, position)
    if entries != 0xFFFF and size != 0xFFFFFFFF and offset != 0xFFFFFFFF:
        return int(entries), int(size)
    # ZIP64: the real counts are in the ZIP64 record, found through the locator just before.
    locator = position - _EOCD64_LOCATOR.size
    record = locator - _EOCD64.size
    if record < 0 or data[locator : locator + 4] != _EOCD64_LOCATOR_SIGNATURE:
        return int(entries), int(size)
    fields = _EOCD64.unpack_from(data, record)
    if fields[0] != _EOCD64_SIGNATURE:
        raise ParseError(
            "the file looks like a ZIP archive (DOCX/PPTX) but is damaged", code="parse_failed"
        )
    return int(fields[7]), int(fields[8])


def _check_entry_name(name: str) -> None:
    normalised = name.replace("\\", "/")
    parts = normalised.split("/")
    unsafe = (
        normalised.startswith("/")
        or "\x00" in name
        or ".." in parts
        or (len(parts[0]) >= 2 and parts[0][1] == ":")  # a Windows drive: C:/...
    )
    if unsafe:
        raise ParseError(
            f"the archive contains an unsafe entry name {name[:100]!r}", code="archive_bomb"
        )
    if normalised.lower().endswith(_NESTED_ARCHIVE_SUFFIXES):
        raise ParseError(
            f"the archive contains another archive ({name[:100]!r}); nested archives are "
            "not accepted",
            code="archive_bomb",
        )
