"""The knowledge base as tools for assistants and agents: an MCP server (``rag mcp`` over stdio, ``/mcp`` on
``rag serve`` over streamable HTTP), built on the official ``mcp`` SDK.

``rag.mcp.tools`` holds the tools and resources, written once against a ``Library`` (what the caller may read);
``rag.mcp.local`` is the library of one store opened by ``rag mcp``; the server's own is ``rag.serve.mcp``.
"""

from rag.mcp.tools import Library, build_server

__all__ = ["Library", "build_server"]
