"""``/api/v1/keywords``: KeyBERT-method keywords of a text, with the loaded embedder."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints

from ragd.api.deps import CurrentPrincipal, RuntimeDep, SettingsDep
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.fields import Input, NonBlank, WholeNumber
from ragd.api.routing import ApiRoute
from ragd.errors import InvalidInput

router = APIRouter(tags=["keywords"], responses=ERROR_RESPONSES, route_class=ApiRoute)


class KeywordsIn(Input):
    text: Annotated[str, StringConstraints(min_length=1), NonBlank]
    top_n: Annotated[int, Field(ge=1, le=50), WholeNumber] | None = None


class KeywordOut(BaseModel):
    keyword: str
    score: float = Field(description="Cosine similarity of the phrase to the whole text.")


class KeywordsOut(BaseModel):
    keywords: list[KeywordOut]
    model: str


@router.post("/keywords")
async def keywords(
    body: KeywordsIn, principal: CurrentPrincipal, settings: SettingsDep, runtime: RuntimeDep
) -> KeywordsOut:
    """Top phrases (1-2 words by default) ranked by similarity to the text, diversified
    with MMR. The first call loads the embedder."""
    limit = settings.models.keywords_max_chars
    if len(body.text) > limit:
        raise InvalidInput(f"text exceeds {limit} characters", code="text_too_long")
    if not body.text.strip():
        raise InvalidInput("text must not be blank", code="empty_text")
    found = await runtime.keywords(body.text, top_n=body.top_n)
    return KeywordsOut(
        keywords=[KeywordOut(keyword=k.keyword, score=round(float(k.score), 6)) for k in found],
        model=runtime.embedder_name,
    )
