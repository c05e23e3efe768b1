"""LLM generators and how one ``llm`` setting picks them.

The setting is one string:

* ``extractive`` (or ``none``): no model, see ``ExtractiveGenerator``;
* a preset (``qwen2.5-coder-1.5b-instruct``, ``qwen2.5-coder-0.5b-instruct``): a GGUF shipped
  in PyPI packages, joined, sha256-checked and converted once into the cache directory;
* a ``.gguf`` file: converted once into the cache directory;
* a folder holding a LoRA adapter (``adapter_config.json``): its base model (itself any of
  these) plus the adapter; on llama.cpp when the base is a GGUF (``rag.llm.lora_gguf``), else through peft;
* a Hugging Face id or model folder;
* an ``http(s)://.../v1`` address: an OpenAI-compatible server (llama.cpp, vLLM, Ollama).
"""

from __future__ import annotations

import importlib.util
import logging

from indexes.errors import ConfigError
from rag.answer.extractive import ExtractiveGenerator
from rag.llm.llama_cpp import LlamaCppGenerator, llama_cpp_adapter
from rag.llm.openai_compat import OpenAICompatibleGenerator
from rag.llm.presets import DEFAULT_LLM, LLM_PRESETS, gguf_path, is_gguf
from rag.llm.transformers import TransformersGenerator
from rag.types import Generator

__all__ = ["BACKENDS", "DEFAULT_LLM", "LLM_PRESETS", "LlamaCppGenerator", "OpenAICompatibleGenerator",
           "TransformersGenerator", "gguf_path", "load_generator", "runs_on_llama_cpp"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "llama.cpp", "transformers")


def runs_on_llama_cpp(spec: str, backend: str = "auto") -> bool:
    """Whether ``load_generator`` runs this ``llm`` setting on llama.cpp (a GGUF or a LoRA adapter of one, and
    llama-cpp-python installed or asked for)."""
    return ((is_gguf(spec) or llama_cpp_adapter(spec) is not None) and backend != "transformers"
            and (backend == "llama.cpp" or importlib.util.find_spec("llama_cpp") is not None))


def load_generator(spec: str, model: str = "default", device: str | None = None, backend: str = "auto") -> Generator:
    """The generator one ``llm`` setting names (see the module docstring). A preset or ``.gguf`` runs on llama.cpp
    when ``llama-cpp-python`` is installed (``backend`` auto) and on transformers otherwise, and so does a LoRA
    adapter of one; other adapters, model folders and hub ids run on transformers."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown llm.backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if spec.lower() in ("extractive", "none"):
        return ExtractiveGenerator()
    if spec.startswith(("http://", "https://")):
        return OpenAICompatibleGenerator(spec, model=model)
    if runs_on_llama_cpp(spec, backend):
        return LlamaCppGenerator(spec)
    if is_gguf(spec) and backend != "transformers":
        log.warning("llama-cpp-python is not installed: running %s on transformers, several times slower "
                    "(`pip install llama-cpp-python`)", spec)
    return TransformersGenerator(spec, device=device)
