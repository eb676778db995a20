"""Field types shared by the request bodies of every route."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints

from ragd import hygiene

#: A single line of text (names, titles, emails, ids): no control characters. The pattern
#: documents the rule in the OpenAPI schema; the validator enforces it (with a clear message).
SingleLine = (AfterValidator(hygiene.check_label),
              Field(json_schema_extra={"pattern": hygiene.LABEL_PATTERN}))
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64), *SingleLine]
#: An aware time with a UTC value a database column can hold (no OverflowError later).
Timestamp = Annotated[AwareDatetime, AfterValidator(hygiene.utc_datetime)]
