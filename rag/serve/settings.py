"""What a server is started with (``rag serve`` options); the models and retrieval come from the ``Config`` tree."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from rag.config import Config

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ServeSettings:
    root: Path
    config: Config = field(default_factory=Config)
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 100.0  # per file; larger uploads get 413
    llm_slots: int = 1  # generations at once (a CPU runs one well)
    llm_queue: int = 8  # requests waiting for the LLM before further ones get 429
    llm_wait_s: float = 120.0  # how long a queued request waits for the LLM before a 429
    llm_stall_s: float = 300.0  # an answer with no progress this long is stalled: /readyz 503, then recovered or exit
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are given
    watch: tuple[tuple[str, str], ...] = ()  # (collection, folder): kept in step by a `rag watch` child


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
