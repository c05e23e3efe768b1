"""An OpenAI-compatible server as the LLM (llama.cpp server, vLLM, Ollama)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

from indexes.errors import RagError
from rag.types import Message


class OpenAICompatibleGenerator:
    """Any server with an OpenAI-style ``/chat/completions`` (llama.cpp server, vLLM, Ollama), streamed."""

    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None, timeout: float = 300) -> None:
        self.name = base_url
        self.base_url, self.model, self.timeout = base_url.rstrip("/"), model, timeout
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "")

    def _request(self, body: dict):
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps({"model": self.model, "temperature": 0, **body}).encode()
        return urllib.request.Request(f"{self.base_url}/chat/completions", data=data, headers=headers)

    def complete(self, messages: Sequence[Message], **options) -> dict:
        """One non-streamed ``/chat/completions`` reply, as the server's JSON (``options``: e.g. ``logprobs``)."""
        import urllib.error
        import urllib.request

        req = self._request({"messages": list(messages), **options})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RagError(f"cannot get a reply from the LLM server at {self.base_url}: {exc}") from exc

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 512) -> Iterator[str]:
        import urllib.error
        import urllib.request

        req = self._request({"messages": list(messages), "max_tokens": max_new_tokens, "stream": True})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                for raw in resp:
                    line = raw.decode("utf-8").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                    if delta:
                        yield delta
        except (urllib.error.URLError, OSError) as exc:
            raise RagError(f"cannot reach the LLM server at {self.base_url}: {exc}") from exc
