"""The sentence-transformers embedder: torch for documents and training, onnxruntime (``ingest.embed.onnx``) for
questions where it covers the model."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from ingest.embed import onnx
from ingest.embed.models import (
    DEFAULT_EMBEDDER,
    inference_dtype,
    load_model,
    load_tokenizer,
    resolve_model_path,
    torch_device,
)


class SentenceTransformerEmbedder:
    """A sentence-transformers model; loads on first use. Query/document prompts come from
    the model's own config (e5: ``query: `` / ``passage: ``) unless given. Where ``ingest.embed.onnx`` covers the
    model, questions, and documents in float32 on a CPU, are embedded by onnxruntime instead of torch.

    ``dtype`` is the type of its linear layers' products for documents (``inference_dtype``, ``_bf16_linear``), with
    the weights left float32: they stay mapped from the file and are read lazily, where bf16 weights would be a
    224 MB copy in memory. Vectors are float32 and unit length either way, and the embedding cache does not tell
    them apart (their cosine is above 0.9999). Batches of 16 ran 1.4x faster than 32 on 2 cores, in float32 and
    bfloat16 alike (e5-small, 384-token passages)."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str | None = None, batch_size: int = 16,
                 query_prompt: str | None = None, document_prompt: str | None = None, dtype: str = "auto") -> None:
        self.name = name
        self.device = device
        self.dtype = dtype
        inference_dtype(dtype, "cpu")  # a wrong name fails here, not at the first embedding
        self.batch_size = batch_size
        self._query_prompt, self._document_prompt = query_prompt, document_prompt
        self._model = None
        self._onnx = None  # None: not looked for yet; False: not available
        self.query_time = False

    def __getstate__(self) -> dict:
        """Pickled without the loaded models (e.g. sent to Ray workers, which load their own)."""
        return {**self.__dict__, "_model": None, "_onnx": None}

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.name, self.device)
            self._prompts(self._model.prompts or {})
        return self._model

    @property
    def _onnx_encoder(self):
        """The torch-free encoder (``ingest.embed.onnx``), or ``None`` where it does not apply; then torch does
        that work too."""
        if self._onnx is None:
            self._onnx = onnx.onnx_encoder(resolve_model_path(self.name)) or False  # None for a hub id: not a folder
            if self._onnx:
                self._prompts(self._onnx.prompts)
        return self._onnx or None

    def prepare_queries(self) -> bool:
        """Export the torch-free encoder now if it applies and is not made yet (once per model, 30-45 s on 2
        cores); whether queries run without torch."""
        return self._onnx_encoder is not None

    def _prompts(self, prompts: dict[str, str]) -> None:
        self._query_prompt = self._query_prompt if self._query_prompt is not None else prompts.get("query", "")
        self._document_prompt = (
            self._document_prompt if self._document_prompt is not None else prompts.get("document", "")
        )

    @property
    def dim(self) -> int:
        if self._model is None and self._onnx_encoder is not None:
            return self._onnx_encoder.dim
        return int(
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )

    @property
    def max_tokens(self) -> int:
        prompt = len(self.model.tokenizer(self._document_prompt or "", add_special_tokens=False)["input_ids"])
        specials = len(self.model.tokenizer("", add_special_tokens=True)["input_ids"])
        return int(self.model.max_seq_length) - prompt - specials

    @property
    def tokenizer(self):
        """The model's tokenizer; loaded alone (no weights) while the model is not, e.g. in a worker that only
        chunks."""
        return self._model.tokenizer if self._model is not None else load_tokenizer(self.name)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        enc = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in enc]

    def embed_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self.on_onnxruntime():
            return self._onnx_encoder.embed(
                [(self._document_prompt or "") + t for t in texts], self.batch_size, progress
            )
        # sentence-transformers sorts each call's texts by length, so padding stays small.
        with self._precision():
            vecs = self.model.encode(
                list(texts),
                prompt=self._document_prompt or None,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return _unit(vecs)

    @property
    def query_prompt(self) -> str:
        """What goes before a query ("query: " for the e5 family); known once the model is loaded."""
        return self._query_prompt or ""

    def embed_query(self, text: str) -> np.ndarray:
        """Always float32: for one short text, autocast's bf16 copies of the weights cost more than they save (dense
        search took a median 21-25 ms in float32 against 38-40 ms in bf16 on the development sets). On onnxruntime
        where the model is covered (``ingest.embed.onnx``), so a question never waits for torch."""
        return self.embed_queries([text])[0]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Several texts embedded as queries in one batch: e5's way to compare two texts of a kind (the citation
        check across languages, ``rag.answer.citations``)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self._onnx_encoder is not None:
            return self._onnx_encoder.embed([(self._query_prompt or "") + t for t in texts], self.batch_size)
        return _unit(self.model.encode(list(texts), prompt=self._query_prompt or None, batch_size=self.batch_size,
                                       convert_to_numpy=True))

    def embed_tokens(self, texts: Sequence[str], query: bool) -> list[np.ndarray]:
        """Each text's token vectors at unit length (its prompt's tokens included, ``<s>`` and ``</s>`` not), for
        late interaction (``rag.retrieval.distilled``); onnxruntime where it covers the model."""
        encoder = self._onnx_encoder or self.model  # loaded first: loading sets the model's prompts
        prompt = (self._query_prompt if query else self._document_prompt) or ""
        if encoder is self._onnx_encoder:
            return encoder.token_vectors([prompt + t for t in texts], self.batch_size)
        out = encoder.encode([prompt + t for t in texts], output_value="token_embeddings", convert_to_numpy=False,
                                batch_size=self.batch_size)
        return [_unit(e.float().cpu().numpy()[1:-1]) for e in out]

    def on_onnxruntime(self) -> bool:
        """Whether documents are embedded by onnxruntime: query-time work, and float32 on a CPU (the fused export
        is 1.4-1.5x torch's speed there, with the same vectors), where the model is covered."""
        if not self.query_time:
            device = torch_device(self.device)
            if not device.startswith("cpu") or inference_dtype(self.dtype, device) != "float32":
                return False
        return self._onnx_encoder is not None

    def _precision(self):
        if inference_dtype(self.dtype, self.model.device.type) == "bfloat16":
            return _bf16_linear()
        return contextlib.nullcontext()


def _bf16_linear():
    """Linear layers multiply in bf16 (inputs and weights cast per call, the result back to float32); attention
    scores, softmax, layer norms and residuals stay float32. Autocast, which also takes attention to bf16, lost one
    CTeX FAQ question's top passage (hybrid nDCG@10 0.917 against 0.927); this keeps 0.927, at 18.8 passages/s
    against autocast's 22.6 and float32's 12 (2 cores).
    A torch function mode, so it holds for this thread only: a query embedded meanwhile stays float32."""
    import torch
    from torch.overrides import TorchFunctionMode

    linear = torch.nn.functional.linear

    class Bf16Linear(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is linear and args[0].dtype == torch.float32:
                x, weight, *rest = args
                bias = rest[0] if rest else kwargs.get("bias")
                return linear(x.bfloat16(), weight.bfloat16(), None if bias is None else bias.bfloat16()).float()
            return func(*args, **kwargs)

    return Bf16Linear()


def _unit(vecs: np.ndarray) -> np.ndarray:
    """float32 rows of length 1, normalised in float32 (a bf16 model's own normalisation is off by up to 1e-3)."""
    vecs = vecs.astype(np.float32)
    return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
