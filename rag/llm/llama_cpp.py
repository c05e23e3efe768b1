"""A GGUF model run as it is by llama.cpp (``llama-cpp-python``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from indexes.errors import RagError, require
from rag.llm import llama_internals, prefix_cache
from rag.llm.lora_gguf import adapter_config, gguf_adapter, unsupported
from rag.llm.presets import gguf_path, is_gguf, physical_cores
from rag.types import Message

log = logging.getLogger(__name__)


def llama_cpp_adapter(spec: str) -> str | None:
    """The GGUF base of a LoRA adapter folder that llama.cpp can apply (``rag.llm.lora_gguf``), or None."""
    config = None if is_gguf(spec) else adapter_config(spec)
    base = (config or {}).get("base_model_name_or_path") or ""
    return base if config is not None and is_gguf(base) and unsupported(config) is None else None


class LlamaCppGenerator:
    """A GGUF model run as it is by llama.cpp (``llama-cpp-python``): 4-bit weights, the chat template from the
    file, greedy, streaming, one thread per physical core, every layer on the GPU when the build supports one.
    4-bit weights mean several times less memory traffic per token than transformers on a bf16 copy.

    The context is sized to the prompts it meets: it starts at ``n_ctx`` tokens and is rebuilt larger (up to the
    model's trained length) when a prompt needs more, since its KV cache and buffers grow with it. On a CPU the
    weights are read into memory rather than mapped: llama.cpp repacks most of them for its CPU kernels, so the
    mapped file would stay resident as a second copy (1.9 against 1.3 GB for the 1.5B preset, measured)."""

    STEP = 1024

    def __init__(self, spec: str, n_ctx: int = 2048, threads: int | None = None) -> None:
        """``spec``: a GGUF preset or file, or a LoRA adapter folder whose base is one (``llama_cpp_adapter``)."""
        self.name, self.n_ctx, self.threads = spec, n_ctx, threads
        base = llama_cpp_adapter(spec)
        self._base, self._adapter = (base, spec) if base else (spec, None)
        self._llm = None
        self._lora: Path | None = None  # the GGUF adapter file, once converted
        self._formatter = None  # the chat template in the GGUF file, compiled on first use
        self._lock = threading.RLock()  # loading and resizing the context; never held across a yield
        # The one llama context, held from a stream's first token to its end. A plain Lock, not an RLock: a server
        # pulls each token on whichever worker thread is free and may close the stream on yet another, and only a
        # Lock may be released by a thread other than the one that took it.
        self._context = threading.Lock()

    def load(self) -> None:
        """Load now rather than at the first reply: a server's warm-up, or a thread while `rag ask` retrieves (the
        load is native code that leaves the interpreter free, so the two overlap)."""
        self._load()

    def _load(self, n_ctx: int | None = None):
        """The model with a context of at least ``n_ctx`` tokens (rebuilt if the current one is smaller)."""
        with self._lock:  # a load in another thread finishes before this one looks
            return self._load_locked(n_ctx)

    def _load_locked(self, n_ctx: int | None):
        if n_ctx is not None and n_ctx > self.n_ctx:
            train = self.trained_context()
            if n_ctx > train:
                raise RagError(f"the prompt ({n_ctx} tokens) does not fit the model's {train}-token context: "
                               "retrieve fewer passages (-k) or raise retrieval.dedupe")
            self.close()
            self.n_ctx = min(-(-n_ctx // self.STEP) * self.STEP, train)
        if self._llm is None:
            llama_cpp = require("llama_cpp", "models", "llama-cpp-python")
            path = gguf_path(self._base)
            lora = None
            if self._adapter is not None:
                lora = self._lora = gguf_adapter(self._adapter, path)
            gpu = bool(getattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)())
            log.info("loading %s%s with llama.cpp (%s, %d-token context)", path.name, " + LoRA adapter" if lora else "",
                     "GPU" if gpu else f"{self.threads or physical_cores()} CPU threads", self.n_ctx)
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=self.n_ctx,
                n_threads=self.threads or physical_cores(),
                n_batch=512,
                n_gpu_layers=-1 if gpu else 0,
                use_mmap=gpu,
                verbose=False,
                lora_path=str(lora) if lora else None,
            )
            llama_internals.check(self._llm)
            import atexit

            # freed while the interpreter still works: its __del__ at shutdown prints a TypeError
            atexit.register(self.close)
        return self._llm

    def trained_context(self) -> int:
        """The longest context the model was trained for (its GGUF metadata)."""
        meta = self._load().metadata
        return int(meta.get(f"{meta.get('general.architecture', '')}.context_length", 0) or 32768)

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        with self._lock:  # other requests count tokens while one generates; a resize must not close the model meanwhile
            return self._load().tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        """The messages as the model reads them, through the chat template in the GGUF file."""
        if self._formatter is None:  # compiling the template takes about 11 ms: once per generator
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            llm = self._load()
            meta = llm.metadata

            def token(key: str) -> str:
                return llm.detokenize([int(meta[key])], special=True).decode("utf-8", "ignore") if key in meta else ""

            self._formatter = Jinja2ChatFormatter(
                meta["tokenizer.chat_template"],
                eos_token=token("tokenizer.ggml.eos_token_id"),
                bos_token=token("tokenizer.ggml.bos_token_id"),
            )
        return self._formatter(messages=list(messages)).prompt

    def next_token_logits(self, prefix: list[int], continuations: Sequence[list[int]]) -> list[np.ndarray]:
        """The logits of the token after ``prefix + c`` for each continuation, no decoding: the prefix is evaluated
        once and the KV cache is cut back to it between continuations."""
        out = []
        with self._context:  # one llama context: these passes and the answers take turns
            llm = self._load(len(prefix) + max((len(c) for c in continuations), default=0) + 1)
            llm.reset()
            llm.eval(prefix)
            for tokens in continuations:
                llama_internals.keep_tokens(llm, len(prefix))  # eval() drops the cache past this point
                llm.eval(tokens)
                out.append(llama_internals.last_logits(llm))
            llm.reset()  # the next answer starts from a clean cache
        return out

    def _start_from_opening(self, llm, messages: Sequence[Message], tokens: list[int]) -> None:
        """Where the context does not hold this prompt's opening (every message but the last: the system message,
        and a rewrite prompt's example turn), as in a new process or after a chat's rewrite prompt, start from the
        opening's state saved on disk (``rag.llm.prefix_cache``)."""
        if len(messages) < 2:
            return
        opening = prefix_cache.common_prefix(tokens, self.tokenize(self.chat_prompt(list(messages[:-1])), special=True))
        if (
            opening < prefix_cache.MIN_TOKENS
            or prefix_cache.common_prefix(llama_internals.evaluated_tokens(llm), tokens) >= opening
        ):
            return
        llm.reset()
        prefix_cache.start_from_prefix(
            llm, tokens[:opening], prefix_cache.state_path(gguf_path(self._base), self._lora, tokens[:opening])
        )

    def generate_batch(self, conversations: Sequence[Sequence[Message]], max_new_tokens: int = 64) -> list[str]:
        """One greedy reply per conversation, in turn (one llama context; on a CPU batching would not be faster)."""
        return ["".join(self.stream(c, max_new_tokens)) for c in conversations]

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 512) -> Iterator[str]:
        """The reply, piece by piece. Safe to drive from any thread and to abandon at any piece: the context is taken
        at the first ``next()`` and given back exactly once, when the reply ends, fails, or the stream is closed or
        dropped (an abandoned stream frees the LLM before its next token)."""
        self._context.acquire()
        parts = None
        try:
            tokens = self.tokenize(self.chat_prompt(messages), special=True)
            prompt = len(tokens)
            # room for the whole answer where the model allows it, and for at least 16 tokens (else: an error)
            llm = self._load(max(prompt + 16, min(prompt + max_new_tokens, self.trained_context())))
            self._start_from_opening(llm, messages, tokens)
            parts = llm.create_chat_completion(
                messages=list(messages),
                max_tokens=min(max_new_tokens, self.n_ctx - prompt),
                temperature=0.0,
                top_k=1,
                stream=True,
            )
            for part in parts:
                piece = part["choices"][0]["delta"].get("content")
                if piece:
                    yield piece
        finally:
            try:
                if parts is not None:
                    parts.close()
            finally:
                self._context.release()
