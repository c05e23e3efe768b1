"""A causal LM through transformers: model folders, hub ids, LoRA adapters through peft, and GGUFs converted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from indexes.errors import ConfigError, RagError, require
from rag.llm.presets import LLM_PRESETS, resolve_llm_path
from rag.types import Message


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
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                    path if (Path(path) / "tokenizer_config.json").exists() else base
                )
                model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
                model = peft.PeftModel.from_pretrained(model, path)
            else:
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(path)
                model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except OSError as exc:
            raise ConfigError(
                f"cannot load LLM {self.name!r}: {exc}. Use a preset ({', '.join(LLM_PRESETS)}), "
                "a .gguf file, a model or adapter folder, a hub id (with a network), or an http(s) endpoint"
            ) from exc
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
            out = self._model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id or tok.eos_token_id,
            )
        return tok.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 512) -> Iterator[str]:
        self._load()
        transformers = require("transformers", "llm")
        import torch

        inputs = self._tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        inputs = {k: v.to(self._model.device) for k, v in inputs.items()}
        streamer = transformers.TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            streamer=streamer,
            pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
        )
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
