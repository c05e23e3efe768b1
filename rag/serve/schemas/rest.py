"""Bodies of the REST routes (collections, search and ask, chats); pydantic only, no engine imports beyond filters."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rag.retrieval import Filters


class Query_(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str | None = None  # glob, e.g. "*.pdf"
    page_min: int | None = Field(None, ge=1)
    page_max: int | None = Field(None, ge=1)

    @property
    def filters(self) -> Filters:
        return Filters(source=self.source, page_min=self.page_min, page_max=self.page_max)


class SearchRequest(Query_):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=100)
    mode: Literal["dense", "bm25", "hybrid"] | None = None


class AskRequest(Query_):
    question: str = Field(min_length=1, max_length=4000)
    k: int | None = Field(None, ge=1, le=50)
    stream: bool = False


class NewCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    embedder: str | None = None  # a preset, folder or hub id; default the server's (multilingual-e5-small)
    index: Literal["faiss", "chroma", "numpy"] | None = None


class NewChat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collection: str
    title: str = Field("", max_length=200)


class Message(Query_):
    question: str = Field(min_length=1, max_length=4000)
    k: int | None = Field(None, ge=1, le=50)
    stream: bool = False
