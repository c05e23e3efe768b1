"""The OpenAI-compatible API: models (one per collection), chat completions with citations, embeddings."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import numpy as np
from fastapi import APIRouter, Depends, Request

from indexes.errors import ConfigError, RagError
from rag.answer.generation import count_tokens
from rag.retrieval import Filters
from rag.serve import answering
from rag.serve.deps import Services, allow, need, services
from rag.serve.errors import TooLarge, error_body, status_of
from rag.serve.keys import Principal
from rag.serve.schemas.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    Delta,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    Model,
    ModelList,
    StreamChoice,
    Usage,
    completion_id,
    now,
)
from rag.serve.webui_tasks import is_task_prompt, task_reply

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"])

MAX_QUESTION_CHARS = 4000  # as the REST ask and search
MAX_TOTAL_CHARS = 32_000  # every message together (only the last turns are read, but a client may send more)


@router.get("/models", response_model=ModelList)
def models(s: Services = Depends(services), who: Principal = Depends(need("read"))) -> ModelList:
    created = now()
    names = [name for name in s.collections.names() if who.may_use(name)]
    return ModelList(
        data=[Model(id=name, created=created) for name in names]
        + ([Model(id=answering.ALL, created=created)] if names else [])
    )


@router.get("/models/{model_id}", response_model=Model)
def model(model_id: str, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> Model:
    """One collection as a model (what the official client's ``models.retrieve`` asks)."""
    answering.targets(s, who, model_id)  # 404 for no such collection, 403 for one this key may not use
    return Model(id=model_id, created=now())


def _conversation(req: ChatCompletionRequest) -> tuple[list[tuple[str, str]], str]:
    """(earlier (user, assistant) pairs, the last user question) from an OpenAI ``messages`` list."""
    turns = [m for m in req.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user" or not turns[-1].text.strip():
        raise ConfigError("messages must end with a non-empty user message")
    total = sum(len(m.text) for m in req.messages)
    if total > MAX_TOTAL_CHARS:
        raise TooLarge(
            f"the messages hold {total:,} characters; at most {MAX_TOTAL_CHARS:,} are accepted: send fewer or "
            "shorter earlier turns"
        )
    if len(turns[-1].text) > MAX_QUESTION_CHARS and not is_task_prompt(turns[-1].text):
        raise TooLarge(
            f"the question has {len(turns[-1].text):,} characters; at most {MAX_QUESTION_CHARS:,} are accepted"
        )
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for m in turns[:-1]:
        if m.role == "user":
            pending = m.text
        elif pending is not None:
            history.append((pending, m.text))
            pending = None
    return history, turns[-1].text.strip()


def _filters(req: ChatCompletionRequest) -> Filters:
    f = req.filters
    return Filters(source=f.source, page_min=f.page_min, page_max=f.page_max) if f else Filters()


def _sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}, "description": "a completion, or a stream of chunks"}},
)
def chat_completions(req: ChatCompletionRequest, request: Request, s: Services = Depends(services),
                     who: Principal = Depends(need("read"))):
    history, question = _conversation(req)
    targets = answering.targets(s, who, req.model)
    if is_task_prompt(question):  # Open WebUI's title/tags/follow-ups: no retrieval, no LLM, no wait
        return _task(req, task_reply(question))
    max_tokens = req.max_completion_tokens or req.max_tokens
    if req.stream:
        return s.gate.stream(request, _stream(s, req, targets, history, question, max_tokens))
    prepared = answering.answer_now(s, targets, history, question, req.top_k, _filters(req), max_tokens)
    answer = prepared.stream.answer
    gen = s.collections.generator
    completion, finish = _completion(gen, prepared.stream)
    return ChatCompletion(
        id=completion_id(),
        created=now(),
        model=req.model,
        usage=_usage(gen, prepared.stream, completion),
        choices=[Choice(message=AssistantMessage(content=answer.text), finish_reason=finish)],
        sources=s.collections.public(prepared.sources()),
        unsupported=list(answer.unsupported),
    )


def _task(req: ChatCompletionRequest, text: str):
    if not req.stream:
        return ChatCompletion(
            id=completion_id(),
            created=now(),
            model=req.model,
            usage=Usage(),
            choices=[Choice(message=AssistantMessage(content=text))],
        )
    from starlette.responses import StreamingResponse

    cid, created = completion_id(), now()
    chunks = [
        ChatCompletionChunk(
            id=cid,
            created=created,
            model=req.model,
            choices=[StreamChoice(delta=Delta(role="assistant", content=text))],
        ),
        ChatCompletionChunk(
            id=cid, created=created, model=req.model, choices=[StreamChoice(delta=Delta(), finish_reason="stop")]
        ),
    ]
    if req.stream_options and req.stream_options.include_usage:
        chunks.append(ChatCompletionChunk(id=cid, created=created, model=req.model, usage=Usage()))
    body = [_sse(c.wire()) for c in chunks] + [_sse("[DONE]")]
    return StreamingResponse(iter(body), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _completion(gen, stream) -> tuple[int, str]:
    """The reply's tokens as the LLM wrote it (before citations were checked), never over the limit, and the finish
    reason: ``length`` when the reply used every token it was allowed."""
    written = count_tokens(gen, stream.reply)
    return min(written, stream.max_new_tokens), "length" if written >= stream.max_new_tokens else "stop"


def _usage(gen, stream, completion: int) -> Usage:
    """Usage as the LLM counted it: the prompt as it read it (compressed), the reply's ``completion`` tokens."""
    prompt = sum(count_tokens(gen, m["content"]) for m in stream.messages())
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _stream(s: Services, req: ChatCompletionRequest, targets: list[str], history, question: str,
            max_tokens) -> Iterator[str]:
    """role chunk, source events, content deltas, the final chunk (finish_reason, sources), usage if asked, [DONE];
    an error after the headers goes out as a ``data:`` error object."""
    cid, created = completion_id(), now()

    def chunk(**fields) -> str:
        return _sse(ChatCompletionChunk(id=cid, created=created, model=req.model, **fields).wire())

    try:
        yield chunk(choices=[StreamChoice(delta=Delta(role="assistant", content=""))])
        prepared = answering.prepare(s, targets, history, question, req.top_k, _filters(req), max_tokens)
        for hit in prepared.stream.hits:
            yield chunk(event=s.collections.public(answering.webui_source_event(hit)))
        for piece in prepared.stream:
            if piece:
                yield chunk(choices=[StreamChoice(delta=Delta(content=piece))])
        answer = prepared.stream.answer
        completion, finish = _completion(s.collections.generator, prepared.stream)
        yield chunk(
            choices=[StreamChoice(delta=Delta(), finish_reason=finish)],
            sources=s.collections.public(prepared.sources()),
            answer={"text": answer.text, "answered": answer.answered, "unsupported": list(answer.unsupported)},
        )
        if req.stream_options and req.stream_options.include_usage:
            yield chunk(usage=_usage(s.collections.generator, prepared.stream, completion))
    except RagError as exc:
        yield _sse(error_body(status_of(exc), str(exc)))
    except Exception as exc:  # headers are gone: the error travels in the stream
        log.exception("error while streaming an answer")
        yield _sse(error_body(500, f"internal error ({type(exc).__name__}); the server log has the details"))
    yield _sse("[DONE]")


@router.post("/embeddings", response_model=EmbeddingList)
def embeddings(req: EmbeddingRequest, s: Services = Depends(services),
               who: Principal = Depends(need("read"))) -> EmbeddingList:
    collection = allow(who, req.model)
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if not texts or len(texts) > 512 or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ConfigError("input must be a non-empty string or a list of 1 to 512 non-empty strings")
    with s.collections.reading(collection) as kb:
        embedder = kb.embedder
    if req.input_type == "query":
        vectors = np.vstack([embedder.embed_query(t) for t in texts])
    else:
        vectors = embedder.embed_documents(texts)
    tokens = sum(embedder.count_tokens(texts))
    return EmbeddingList(
        model=collection,
        usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
        data=[Embedding(index=i, embedding=_encode(v, req.encoding_format)) for i, v in enumerate(vectors)],
    )


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        import base64

        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return [float(x) for x in vector]
