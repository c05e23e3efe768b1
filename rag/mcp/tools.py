"""The MCP tools and resources, written once against a ``Library``: the collections a caller may read, a reader for
each, and a cited answer.

Tools: ``list_collections``, ``search``, ``ask`` and ``get_passage``. Resources: each collection's document list
(``rag://COLLECTION/documents``) and each document's text (``rag://COLLECTION/documents/ID``, ID as that list gives
it). A mistake the caller can fix (an unknown collection, an empty question, a stale chunk id) comes back as
an MCP tool error with one sentence saying what to do; anything else is logged here and the client sees only that
the tool failed.
"""

import functools
import hashlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import Field

from indexes.errors import NotFoundError, RagError, require
from rag.types import Answer

require("mcp", "mcp")
from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ResourceError, ToolError  # noqa: E402

INSTRUCTIONS = (
    "A knowledge base of the user's documents. Use `search` to find passages (each with its source, page and "
    "heading path) and `ask` for an answer written from them with numbered citations; `get_passage` opens a "
    "passage with its neighbours. Name a collection when `list_collections` shows more than one."
)


class Library(Protocol):
    """What the tools read: the collections the caller (known by its request headers; none over stdio) may use."""

    def visible(self, headers: Mapping[str, str] | None) -> list[str]: ...

    def reading(self, name: str) -> AbstractContextManager[Any]:
        """The collection's ``KnowledgeBase``, held for reading."""

    def ask(self, name: str, question: str, k: int | None) -> Answer: ...

    def public(self, obj: Any) -> Any:
        """``obj`` with source paths as this caller may see them."""


def build_server(library: Library, name: str = "rag-kb") -> MCPServer:
    """An ``MCPServer`` whose tools and resources read ``library``; run it with ``.run("stdio")`` or mount its
    ``streamable_http_app``."""
    server = MCPServer(name, instructions=INSTRUCTIONS)
    _tools(server, library)
    _resources(server, library)
    return server


def choose(library: Library, headers: Mapping[str, str] | None, collection: str | None) -> str:
    """The collection named, or the only one the caller may use; a ``ToolError`` that lists them otherwise."""
    names = library.visible(headers)
    if collection is None and len(names) == 1:
        return names[0]
    if collection is not None and collection in names:
        return collection
    offer = f"choose one of: {', '.join(names)}" if names else "there are none this caller may use"
    if collection is None:
        raise ToolError(f"name a collection: {offer}")
    raise ToolError(f"no collection {collection!r} is visible here; {offer}")


def document_key(source: str) -> str:
    """A document's id in resource URIs: the source's path would put slashes (and the server's folders) there."""
    return hashlib.sha1(source.encode()).hexdigest()[:16]


def _safely(fn):
    """Project errors (not found, bad settings) become tool errors with their message."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RagError as exc:
            raise ToolError(str(exc)) from exc

    return run


def _question(text: str, what: str) -> str:
    text = text.strip()
    if not text:
        raise ToolError(f"the {what} is empty: give the words to look for")
    return text


def _hit(hit) -> dict:
    c = hit.chunk
    return {"rank": hit.rank, "score": round(hit.score, 6), "chunk_id": c.chunk_id, "source": c.source,
            "page": c.page, "page_end": c.page_end, "headings": list(c.headings), "text": c.text}


def _tools(server: MCPServer, library: Library) -> None:
    k_field = Field(ge=1, le=50, description="how many passages (1-50)")
    collection_field = Field(description="the collection to use; may be left out when there is only one")

    @server.tool()
    def list_collections(ctx: Context) -> list[dict]:
        """The collections this caller may search, each with its number of documents and passages."""
        out = []
        for name in library.visible(ctx.headers):
            with library.reading(name) as kb:
                out.append({"name": name, "documents": len(kb.store.documents()), "passages": kb.store.chunks.count()})
        return out

    @server.tool()
    @_safely
    def search(query: str, ctx: Context, collection: Annotated[str | None, collection_field] = None,
               k: Annotated[int, k_field] = 5) -> list[dict]:
        """The passages that best match `query` (hybrid dense + keyword retrieval), best first: each with its
        `chunk_id`, `source` file, `page`, `headings` (the section path) and `score`."""
        name = choose(library, ctx.headers, collection)
        with library.reading(name) as kb:
            hits = kb.search(_question(query, "query"), k)
        return library.public([_hit(h) for h in hits])

    @server.tool()
    @_safely
    def ask(question: str, ctx: Context, collection: Annotated[str | None, collection_field] = None,
            k: Annotated[int | None, Field(ge=1, le=50, description="passages given to the LLM")] = None) -> dict:
        """An answer to `question` written only from the collection's passages: `answer` (with [n] markers),
        `answered` (false when the passages do not hold it), `citations` (n, source, page, chunk_id, text) and
        `sources` (every passage the LLM was given)."""
        name = choose(library, ctx.headers, collection)
        answer = library.ask(name, _question(question, "question"), k)
        return library.public(answer.to_dict())

    @server.tool()
    @_safely
    def get_passage(chunk_id: str, ctx: Context, collection: Annotated[str | None, collection_field] = None,
                    window: Annotated[int, Field(ge=0, le=5, description="neighbours either side")] = 1) -> dict:
        """A passage by the `chunk_id` a search or citation gave, with `window` neighbouring passages either side
        (`before`, `after`), its source, pages and headings."""
        name = choose(library, ctx.headers, collection)
        try:
            cid = int(chunk_id, 16)
        except ValueError:
            raise ToolError(f"{chunk_id!r} is not a chunk id (16 hex digits, as search results give)") from None
        with library.reading(name) as kb:
            found = kb.store.chunks.get([cid]).get(cid)
            if found is None:
                raise NotFoundError(f"collection {name!r} has no passage {chunk_id} (it may have been re-indexed: "
                                    "search again)")
            around = kb.store.chunks.neighbours(cid, window)
        i = [c.id for c in around].index(cid)
        return library.public({"chunk_id": found.chunk_id, "source": found.source, "page": found.page,
                               "page_end": found.page_end, "headings": list(found.headings), "text": found.text,
                               "before": [c.text for c in around[:i]], "after": [c.text for c in around[i + 1 :]]})


def _resources(server: MCPServer, library: Library) -> None:
    def named(ctx: Context, collection: str) -> str:
        try:
            return choose(library, ctx.headers, collection)
        except ToolError as exc:
            raise ResourceError(str(exc)) from None

    @server.resource("rag://{collection}/documents", mime_type="application/json")
    def documents(collection: str, ctx: Context) -> list[dict]:
        """The collection's documents: source, URI of its text, size, passages and when it was indexed."""
        name = named(ctx, collection)
        with library.reading(name) as kb:
            docs = kb.store.documents()
        return library.public([
            {"source": s, "uri": f"rag://{name}/documents/{document_key(s)}", "name": Path(s).name,
             "bytes": d.size, "passages": d.n_chunks, "indexed_at": d.ingested_at} for s, d in sorted(docs.items())
        ])

    @server.resource("rag://{collection}/documents/{document_id}", mime_type="text/plain")
    def document(collection: str, document_id: str, ctx: Context) -> str:
        """One document's text as indexed: its passages in order."""
        name = named(ctx, collection)
        with library.reading(name) as kb:
            source = next((s for s in kb.store.documents() if document_key(s) == document_id), None)
            chunks = kb.store.chunks.chunks_of(source) if source is not None else []
        if not chunks:
            raise ResourceError(f"collection {name!r} has no document {document_id!r}: read "
                                f"rag://{name}/documents for the list")
        return "\n\n".join(c.text for c in chunks)

