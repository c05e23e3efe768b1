"""Chats kept by the server: created, listed, continued (each turn's question, answer and citations saved), deleted."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from indexes.errors import NotFoundError
from rag.serve import answering
from rag.serve.deps import Services, need, services
from rag.serve.keys import Principal
from rag.serve.schemas.rest import Message, NewChat

router = APIRouter(prefix="/chats", tags=["chats"])


def _may_see(who: Principal, owner: str) -> bool:
    """A chat is its key's; one made before keys existed (no owner) is an admin's to reach."""
    return not who.key_id or owner == who.key_id or (owner == "" and who.may("admin"))


def _owned(s: Services, who: Principal, chat_id: str) -> dict:
    chat = s.db.chat(chat_id)
    if chat is None or not _may_see(who, chat["owner"]):
        raise NotFoundError(f"no chat {chat_id!r}: GET /chats lists yours")
    return chat


@router.post("", status_code=201)
def create_chat(body: NewChat, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    answering.targets(s, who, body.collection)
    return s.db.chat(s.db.add_chat(body.collection, body.title, who.key_id))


@router.get("")
def list_chats(s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    return {"chats": s.db.chats(who.key_id or None, unowned=who.may("admin"))}


@router.get("/{chat_id}")
def get_chat(chat_id: str, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    return s.collections.public(_owned(s, who, chat_id))


@router.delete("/{chat_id}", status_code=204)
def delete_chat(chat_id: str, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> Response:
    _owned(s, who, chat_id)
    s.db.delete_chat(chat_id)
    return Response(status_code=204)


@router.post("/{chat_id}/messages")
def send(chat_id: str, body: Message, request: Request, s: Services = Depends(services),
         who: Principal = Depends(need("read"))):
    """Ask the next question; it is rewritten with the chat's earlier turns before retrieval, and saved with its
    answer."""
    chat = _owned(s, who, chat_id)
    collections = answering.targets(s, who, chat["collection"])
    history = [(t["question"], t["answer"]) for t in chat["turns"]]

    def save(prepared: answering.PreparedAnswer) -> None:
        a = prepared.stream.answer
        if not chat["title"] and not chat["turns"]:
            s.db.set_title(chat_id, body.question[:80])
        s.db.add_turn(
            chat_id, body.question, prepared.standalone, a.text, a.answered, s.collections.public(prepared.sources())
        )

    if body.stream:
        events = answering.stream_answer(s, collections, history, body.question, body.k, body.filters, on_answer=save)
        return s.gate.stream(request, events)
    prepared = answering.answer_now(s, collections, history, body.question, body.k, body.filters)
    save(prepared)
    return s.collections.public(prepared.stream.answer.to_dict() | {"standalone": prepared.standalone, "chat": chat_id})
