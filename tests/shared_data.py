"""The shared evaluation data: ``../shared/eval`` beside the repository, found from this file.

``RAGD_EVAL_DIR`` points elsewhere (read once, at import, before the test fixtures clear the
``RAGD_*`` variables). A test that needs a data set that is not there fails and names the path
it looked at: it never skips, so a moved or missing directory cannot pass for green.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["DATA_SETS", "EVAL", "REPO_ROOT", "require"]

REPO_ROOT = Path(__file__).resolve().parents[1]
EVAL_ENV = "RAGD_EVAL_DIR"
_OVERRIDE = os.environ.get(EVAL_ENV)
EVAL = Path(_OVERRIDE or REPO_ROOT.parent / "shared" / "eval")
DATA_SETS = ("python-faq", "debian-faq")


def require(path: Path) -> Path:
    """``path`` (inside :data:`EVAL`), or fail the test that needs it."""
    if not path.exists():
        where = (f"{EVAL_ENV}={_OVERRIDE}" if _OVERRIDE
                 else f"../shared/eval beside the repository {REPO_ROOT}; {EVAL_ENV} overrides")
        pytest.fail(f"shared eval data missing: {path} does not exist ({where})", pytrace=False)
    return path
