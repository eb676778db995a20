"""Native-library compatibility of the index engines with the model runtime."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "order",
    [("usearch.index", "tantivy", "onnxruntime"), ("onnxruntime", "usearch.index", "tantivy")],
)
def test_index_engines_and_onnxruntime_import_in_any_order(order: tuple[str, ...]) -> None:
    # usearch 2.26 crashed (SIGSEGV) when onnxruntime was imported after it; the worker
    # imports them in either order depending on what it does first.
    code = "; ".join(f"import {name}" for name in order)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
