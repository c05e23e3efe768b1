"""API keys: random tokens shown once, stored as SHA-256 digests, each with scopes and optionally a list of collections.

A key is 32 random bytes, so a plain SHA-256 is enough to make a stolen database useless (no password to brute-force).
``admin`` includes ``ingest``, which includes ``read``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from indexes.errors import ConfigError
from rag.serve.db import ServerDB

SCOPES = ("read", "ingest", "admin")
_IMPLIES = {"admin": {"admin", "ingest", "read"}, "ingest": {"ingest", "read"}, "read": {"read"}}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's id and what it may do (``key_id`` "" when the server runs without keys)."""

    key_id: str
    scopes: frozenset[str]
    collections: tuple[str, ...] = ()  # empty: every collection

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    def may_use(self, collection: str) -> bool:
        return not self.collections or collection in self.collections


OPEN = Principal("", frozenset(SCOPES))


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(db: ServerDB, name: str, scopes: list[str], collections: list[str] = ()) -> tuple[str, str]:
    """A new key: (key id, the token, which is shown this once and never stored)."""
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ConfigError(f"unknown scope(s) {', '.join(bad) or '(none given)'}: choose from {', '.join(SCOPES)}")
    token = "rk-" + secrets.token_urlsafe(32)
    return db.add_key(name, digest(token), sorted(scopes), list(collections)), token


def principal_for(db: ServerDB, token: str) -> Principal | None:
    row = db.key_by_digest(digest(token))
    if row is None:
        return None
    scopes = frozenset().union(*(_IMPLIES[s] for s in row["scopes"] if s in _IMPLIES))
    return Principal(row["id"], scopes, tuple(row["collections"]))
