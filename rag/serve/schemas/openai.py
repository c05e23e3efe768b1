"""OpenAI wire models for the routes under ``/v1`` (pydantic only, no engine imports).

Extensions to OpenAI's schema are marked: request fields ``top_k``, ``filters`` and ``input_type``, and on
replies a top-level ``sources`` list (the official client keeps unknown fields) and, in a stream, Open WebUI's
``event`` objects of type ``source`` that it renders as citation cards.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str = "text"
    text: str = ""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class SourceFilter(BaseModel):
    """Extension: restrict retrieval to sources matching a glob and/or a page range."""

    model_config = ConfigDict(extra="forbid")
    source: str | None = None
    page_min: int | None = Field(None, ge=1)
    page_max: int | None = Field(None, ge=1)


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send temperature, user, n, ...: accepted and ignored
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1, max_length=100)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    top_k: int | None = Field(None, ge=1, le=50)  # extension: passages retrieved
    filters: SourceFilter | None = None  # extension


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "document"] = "query"  # extension: which side of the e5 prompts


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class StreamChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[StreamChoice] = []
    usage: Usage | None = None
    sources: list[dict] | None = None  # extension, on the final chunk
    answer: dict | None = None  # extension, on the final chunk: the text with citations checked, unsupported sentences
    event: dict | None = None  # extension: Open WebUI source events

    def wire(self) -> dict:
        """As OpenAI sends it: ``finish_reason`` always present (null until the end), empty delta fields and unused
        optional fields left out."""
        out = self.model_dump()
        for key in ("usage", "sources", "answer", "event"):
            if out[key] is None:
                del out[key]
        for choice in out["choices"]:
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        return out


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = "stop"


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    sources: list[dict] = []  # extension
    unsupported: list[str] = []  # extension: answer sentences no passage supports (left uncited)


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rag-kb"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
