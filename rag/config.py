"""Configuration: one frozen dataclass tree, read from TOML, overridden with checked ``key=value``."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from indexes.errors import ConfigError
from ingest.loaders import DEFAULT_INCLUDE


@dataclass(frozen=True)
class IngestConfig:
    chunk_tokens: int = 384  # measured with `rag eval` on both dev sets: 128 < 192 < 256 < 384 ~ 480
    chunk_overlap: int = 48
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    commit_every: int = 2000
    ocr: bool = True  # PDF pages without a text layer are read by Tesseract when it is installed


@dataclass(frozen=True)
class IndexConfig:
    backend: str = "faiss"  # faiss | chroma | milvus | numpy
    faiss_type: str = "flat"  # flat | hnsw | ivf
    gpu: bool = True
    uri: str | None = None  # chroma, milvus: a server (http://host:port); None keeps the vectors in the store directory
    collection: str | None = None  # the server-side collection of a new store (default: a fresh unique name)


@dataclass(frozen=True)
class RetrievalConfig:
    k: int = 5
    mode: str = "hybrid"  # dense | bm25 | hybrid
    fusion: str = "rrf"  # rrf | weighted
    rrf_k: int = 60
    dense_weight: float = 0.5
    candidates: int = 50
    language_bias: float = 0.04  # cosine added to passages in the other language than the question (0: off)
    # auto (the store's trained reranker, if any) | none | llm | llm:MODEL | a cross-encoder folder or hub id
    rerank: str = "auto"
    rerank_top: int = 10
    dedupe: float = 0.8  # drop passages whose word overlap with a better one is at least this (1 = keep all)
    neighbours: int = 0  # widen each passage handed to the LLM by this many chunks either side


@dataclass(frozen=True)
class LLMConfig:
    name: str = "qwen2.5-coder-1.5b-instruct"
    backend: str = "auto"
    server_model: str = "default"  # the model name sent to an OpenAI-compatible server
    max_new_tokens: int = 384
    device: str | None = None
    check_citations: bool = True  # match each answer sentence to the passage that supports it (rag.answer.citations)
    compress: bool = True
    context_tokens: int = 360


@dataclass(frozen=True)
class Config:
    embedder: str | None = None  # None: the store's own, or multilingual-e5-small for a new store
    device: str | None = None
    embedder_dtype: str = "auto"  # auto | float32 | bfloat16 (auto: bfloat16 on a CPU with native bf16)
    db: str | None = None  # postgresql://...: stores live in that database, vectors on Milvus (the shared mode)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)


def _coerce(value, hint, key: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(i).strip() for i in items if str(i).strip())
    if hint is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint in (int, float):
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    return str(value)


def _replace(cfg, path: list[str], value, full: str):
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    if path[0] not in names:
        raise ConfigError(f"unknown setting {full!r}; known here: {', '.join(sorted(names))}")
    current = getattr(cfg, path[0])
    if len(path) == 1:
        if dataclasses.is_dataclass(current):
            raise ConfigError(
                f"{full!r} is a section; set one of its keys, e.g. {full}.{dataclasses.fields(current)[0].name}=..."
            )
        return dataclasses.replace(cfg, **{path[0]: _coerce(value, hints[path[0]], full)})
    if not dataclasses.is_dataclass(current):
        raise ConfigError(f"{'.'.join(path[:1])!r} has no sub-settings (in {full!r})")
    return dataclasses.replace(cfg, **{path[0]: _replace(current, path[1:], value, full)})


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        cfg = _replace(cfg, key.strip().split("."), value.strip(), key.strip())
    return cfg


def _flatten(table: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in table.items():
        if isinstance(v, dict):
            out.extend(_flatten(v, f"{prefix}{k}."))
        else:
            out.append((f"{prefix}{k}", v))
    return out


def load_config(path: Path | None = None, overrides: list[str] = ()) -> Config:
    cfg = Config()
    if path is not None:
        import tomllib

        try:
            table = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        cfg = config_from_dict(table)
    return apply_overrides(cfg, list(overrides))


def config_to_dict(cfg: Config) -> dict:
    """The tree as plain JSON-able data (the server hands it to its ingest workers)."""
    return dataclasses.asdict(cfg)


def config_from_dict(table: dict) -> Config:
    cfg = Config()
    for key, value in _flatten(table):
        cfg = _replace(cfg, key.split("."), value, key)
    return cfg
