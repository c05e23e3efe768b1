"""Chats kept by the server: created, listed, continued (each turn's question, answer and citations saved), deleted."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from indexes.errors import NotFoundError
from rag.serve import answering
from rag.serve.deps import Services, need, services
from rag.serve.gate import answer_stream
from rag.serve.keys import Principal
from rag.serve.routers.search import Query_, stream_answer

router = APIRouter(prefix="/chats", tags=["chats"])


class NewChat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collection: str
    title: str = Field("", max_length=200)


class Message(Query_):
    question: str = Field(min_length=1, max_length=4000)
    k: int | None = Field(None, ge=1, le=50)
    stream: bool = False


def _owned(s: Services, who: Principal, chat_id: str) -> dict:
    chat = s.db.chat(chat_id)
    if chat is None or (who.key_id and chat["owner"] != who.key_id):
        raise NotFoundError(f"no chat {chat_id!r}: GET /chats lists yours")
    return chat


@router.post("", status_code=201)
def create_chat(body: NewChat, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    answering.targets(s, who, body.collection)
    return s.db.chat(s.db.add_chat(body.collection, body.title, who.key_id))


@router.get("")
def list_chats(s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    return {"chats": s.db.chats(who.key_id if who.key_id else None)}


@router.get("/{chat_id}")
def get_chat(chat_id: str, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    return _owned(s, who, chat_id)


@router.delete("/{chat_id}", status_code=204)
def delete_chat(chat_id: str, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> Response:
    _owned(s, who, chat_id)
    s.db.delete_chat(chat_id)
    return Response(status_code=204)


@router.post("/{chat_id}/messages")
def send(chat_id: str, body: Message, request: Request, s: Services = Depends(services), who: Principal = Depends(need("read"))):
    """Ask the next question; it is rewritten with the chat's earlier turns before retrieval, and saved with its answer."""
    chat = _owned(s, who, chat_id)
    collections = answering.targets(s, who, chat["collection"])
    history = [(t["question"], t["answer"]) for t in chat["turns"]]

    def save(prepared: answering.PreparedAnswer) -> None:
        a = prepared.stream.answer
        if not chat["title"] and not chat["turns"]:
            s.db.set_title(chat_id, body.question[:80])
        s.db.add_turn(chat_id, body.question, prepared.standalone, a.text, a.answered, prepared.sources())

    s.gate.acquire()
    if body.stream:
        events = stream_answer(s, collections, history, body.question, body.k, body.filters, on_answer=save)
        return answer_stream(request, events, s.gate.release)
    try:
        prepared = answering.prepare(s, collections, history, body.question, body.k, body.filters)
        for _ in prepared.stream:
            pass
        save(prepared)
    finally:
        s.gate.release()
    return prepared.stream.answer.to_dict() | {"standalone": prepared.standalone, "chat": chat_id}
