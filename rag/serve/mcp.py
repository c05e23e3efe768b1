"""The MCP tools of ``rag.mcp`` on ``rag serve``, over streamable HTTP at ``/mcp``: behind the server's API keys
(401 without a valid one), each key seeing only its collections, and answers taking their turn at the LLM gate like
every other answer (a full queue is a tool error that says when to retry)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

from rag.serve import answering
from rag.serve.deps import Services, caller
from rag.serve.gate import Busy
from rag.types import Answer

PATH = "/mcp"


class ServedLibrary:
    def __init__(self, services: Services) -> None:
        self.s = services

    def visible(self, headers: Mapping[str, str] | None) -> list[str]:
        headers = headers or {}
        who = caller(self.s, headers.get("authorization"), headers.get("x-api-key"))
        return [n for n in self.s.collections.names() if who.may_use(n)]

    def reading(self, name: str):
        return self.s.collections.reading(name)

    def ask(self, name: str, question: str, k: int | None) -> Answer:
        from mcp.server.mcpserver.exceptions import ToolError

        try:
            return answering.answer_now(self.s, [name], [], question, k).stream.answer
        except Busy as exc:
            raise ToolError(str(exc)) from None

    def public(self, obj):
        return self.s.collections.public(obj)


class _KeyCheck:
    """Answers 401 (in the API's error shape) before the MCP transport sees a request without a valid key."""

    path = PATH  # what the access log and metrics call the route

    def __init__(self, app, services: Services) -> None:
        self.app, self.s = app, services

    async def __call__(self, scope, receive, send) -> None:
        from fastapi.responses import JSONResponse
        from starlette.datastructures import Headers
        from starlette.exceptions import HTTPException

        from rag.serve.errors import error_body

        if scope["type"] == "http":
            scope["route"] = self
            headers = Headers(scope=scope)
            try:
                caller(self.s, headers.get("authorization"), headers.get("x-api-key"))
            except HTTPException as exc:
                answer = JSONResponse(error_body(exc.status_code, exc.detail), exc.status_code, exc.headers)
                return await answer(scope, receive, send)
        await self.app(scope, receive, send)


def mount(app, services: Services) -> AbstractAsyncContextManager | None:
    """Add ``/mcp`` to ``app``; returns what the app's lifespan must run (the MCP session manager), or None when the
    ``mcp`` package is missing (the rest of the server works without it)."""
    try:
        from rag.mcp import build_server
    except ImportError:
        import logging

        logging.getLogger(__name__).warning("no /mcp: the mcp package is missing (pip install 'rag-kb[mcp]')")
        return None
    from starlette.routing import Route

    server = build_server(ServedLibrary(services))
    transport = server.streamable_http_app(streamable_http_path=PATH, stateless_http=True, json_response=True,
                                           host=services.settings.host)
    endpoint = next(r.endpoint for r in transport.routes if getattr(r, "path", None) == PATH)
    app.router.routes.append(Route(PATH, endpoint=_KeyCheck(endpoint, services)))
    return server.session_manager.run()
