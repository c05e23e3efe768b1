"""Embedding without torch: a float32 ONNX export of an e5-family model, fused for onnxruntime's CPU kernels.

A question then pays neither torch's and sentence-transformers' import (6.4 s and about 500 MB on 2 cores) nor the
Hugging Face Unigram tokenizer (about 300 MB for e5's 250k pieces): the pieces go to sentencepiece (55 MB), after
the model's own normalizer. The weights are written as external data, which onnxruntime maps instead of copying,
so a query reads only the word vectors it uses. The graph is exported with eager attention, which onnxruntime's
transformer optimizer fuses (attention, embedding and layer norms, bias and GELU): documents run 1.4-1.5x faster
than on torch in float32 on 2 cores, with the same vectors, so a CPU without bf16 hardware embeds documents here
too (``SentenceTransformerEmbedder``); GPUs, bf16 and training stay on torch.

The export is made once per model folder, into the cache, and checked before it is used: the token ids and the
vectors of probe texts must match torch's. A new export removes those whose model folder is gone or was trained
again (``prune_exports``). A model this does not cover (another tokenizer, pooling or layout)
gets ``None`` from ``onnx_encoder``, and torch embeds for it as before.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from indexes.files import atomic_write, build_once, cache_dir
from ingest.embed.models import load_sentence_transformer

log = logging.getLogger(__name__)

_PROBES = ("query: how often should the air filter be cleaned?", "passage: 压缩机保修期延长至十年。",
           " leading space, trailing space ", "emoji 🧿 and ligature ﬁ, full-width ？", "HTML <s>struck</s>", "x")
_MIN_COSINE = 0.99999
_FORMAT = "fused-1"  # part of the cache key: a new export format replaces earlier ones
SOURCE_FILE = "source.txt"  # in each export: the model folder it was made from (prune_exports)


class OnnxEncoder:
    """Embeds texts (prefixes included) as the sentence-transformers model would: tokens, encoder, mean pooling,
    unit length, float32."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort
        import sentencepiece
        from tokenizers import Tokenizer

        self.folder = folder
        meta = json.loads((folder / "encoder.json").read_text())
        self.dim: int = meta["dim"]
        self.prompts: dict[str, str] = meta["prompts"]
        self._bos, self._eos, self._pad, self._max = meta["bos"], meta["eos"], meta["pad"], meta["max_tokens"]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self._normalizer = Tokenizer.from_file(str(folder / "normalizer.json")).normalizer
        self._pieces = sentencepiece.SentencePieceProcessor(model_file=str(folder / "pieces.model"))
        self._specials: dict[str, int] = meta["specials"]
        self._split = re.compile("(" + "|".join(map(re.escape, sorted(self._specials, key=len, reverse=True))) + ")")

    def ids(self, text: str) -> list[int]:
        """Content token ids, as the model's transformers tokenizer gives them: special tokens written in the text
        (``<s>``) are split out first, and each piece between them is normalised and cut into words on its own."""
        out: list[int] = []
        for part in self._split.split(text) if self._specials else [text]:
            if part in self._specials:
                out.append(self._specials[part])
            elif part:
                out += self._segment(part)
        return out

    def _segment(self, text: str) -> list[int]:
        normal = self._normalizer.normalize_str(text)
        if normal == " ":  # Metaspace prepends nothing to a text that starts with a space; sentencepiece always does
            return [self._pieces.piece_to_id("\u2581")]
        return self._pieces.encode(normal[1:] if normal.startswith(" ") else normal)

    def embed(self, texts: Sequence[str], batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """Unit vectors, in batches of texts of similar length (little padding), as sentence-transformers does."""
        out = np.zeros((len(texts), self.dim), np.float32)
        for batch, hidden, mask in self._hidden(texts, batch_size, progress):
            weights = mask[..., None].astype(np.float32)
            out[batch] = (hidden * weights).sum(1) / weights.sum(1)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def token_vectors(self, texts: Sequence[str], batch_size: int = 16) -> list[np.ndarray]:
        """Each text's token vectors at unit length, ``<s>`` and ``</s>`` left out: what late interaction compares."""
        out: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        for batch, hidden, mask in self._hidden(texts, batch_size, False):
            for j, i in enumerate(batch):
                tokens = hidden[j, 1 : int(mask[j].sum()) - 1]
                out[i] = tokens / np.maximum(np.linalg.norm(tokens, axis=1, keepdims=True), 1e-12)
        return out

    def _hidden(self, texts: Sequence[str], batch_size: int, progress: bool):
        """(text indices, last hidden states, attention mask) per batch of texts of similar length (little padding)."""
        from tqdm.auto import tqdm

        rows = [[self._bos, *self.ids(t)[: self._max - 2], self._eos] for t in texts]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        for start in tqdm(range(0, len(order), batch_size), desc="embedding", unit="batch", disable=not progress):
            batch = order[start : start + batch_size]
            width = max(len(rows[i]) for i in batch)
            ids = np.full((len(batch), width), self._pad, np.int64)
            mask = np.zeros((len(batch), width), np.int64)
            for j, i in enumerate(batch):
                ids[j, : len(rows[i])] = rows[i]
                mask[j, : len(rows[i])] = 1
            yield batch, self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0], mask


def covered(folder: Path) -> bool:
    """Whether the export applies: a Unigram tokenizer with Metaspace words and ``<s> A </s>`` (the e5 family),
    a transformer then mean pooling, and onnxruntime, onnx and sentencepiece installed."""
    if not _installed():
        return False
    try:
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return False
    template = [next(iter(step)) for step in ((tokenizer.get("post_processor") or {}).get("single") or [])]
    return (
        modules[:2] == ["Transformer", "Pooling"]
        and set(modules[2:]) <= {"Normalize"}
        and _mean_pooling(pooling)
        and tokenizer["model"].get("type") == "Unigram"
        and not tokenizer["model"].get("byte_fallback")
        and (tokenizer.get("pre_tokenizer") or {}).get("type") == "Metaspace"
        and (tokenizer.get("pre_tokenizer") or {}).get("prepend_scheme") == "always"
        and template == ["SpecialToken", "Sequence", "SpecialToken"]
    )


def _mean_pooling(pooling: dict) -> bool:
    """Mean pooling over every token, the prompt's included, as the pooling config says it in either format:
    ``pooling_mode_mean_tokens`` (sentence-transformers < 5, and the e5 preset) or ``pooling_mode: mean`` (what
    newer releases write when they save a fine-tuned model)."""
    if "pooling_mode" in pooling:
        return pooling["pooling_mode"] == "mean" and pooling.get("include_prompt", True) is True
    return pooling.get("pooling_mode_mean_tokens") is True and not any(
        v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens")


def _installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "sentencepiece"))


@functools.lru_cache(maxsize=4)
def onnx_encoder(model_folder: str) -> OnnxEncoder | None:
    """The encoder for this sentence-transformers folder, exported into the cache the first time; ``None`` when the
    folder is not covered or its export failed or does not match torch (then torch embeds its queries; the failure
    is remembered in the cache, so it is not retried at every start)."""
    folder = Path(model_folder)
    if not folder.is_dir() or not _installed():
        return None
    target = cache_dir() / "models" / "onnx" / f"{folder.name}-{_fingerprint(folder)}"  # beside the converted models
    if (target / "unmatched").exists() or not ((target / ".complete").exists() or covered(folder)):
        return None
    try:
        if not (target / ".complete").exists():
            prune_exports(target.parent)
        build_once(target, lambda out: _export(folder, out))
    except Exception as exc:  # noqa: BLE001 - a model the export cannot handle still answers, through torch
        log.warning(
            "queries of %s stay on torch (the export to onnxruntime failed: %s); delete %s to try again",
            folder,
            exc,
            target,
        )
        target.mkdir(parents=True, exist_ok=True)
        (target / "unmatched").write_text(f"{exc}\n")
        return None
    if not (target / SOURCE_FILE).exists():  # made before sources were recorded: adopted, so it can be pruned
        with contextlib.suppress(OSError):  # a read-only cache still serves its export
            atomic_write(target / SOURCE_FILE, lambda tmp: tmp.write_text(f"{folder.resolve()}\n"))
    return OnnxEncoder(target)


def prune_exports(root: Path) -> list[Path]:
    """Remove the exports that no model can use any more: their source folder is gone (a deleted store or version),
    or it has since been trained again (a newer fingerprint). Each export is about as large as its model, so without
    this a machine that fine-tunes often fills its disk. Exports made before their source was recorded are kept
    until a model uses them again (``onnx_encoder`` then records it)."""
    removed = []
    for entry in root.glob("*/" + SOURCE_FILE):
        if ".partial-" in entry.parent.name:  # another process's export, still being written
            continue
        source = Path(entry.read_text().strip())
        if not source.is_dir() or entry.parent.name != f"{source.name}-{_fingerprint(source)}":
            shutil.rmtree(entry.parent, ignore_errors=True)
            removed.append(entry.parent)
    if removed:
        log.info("removed %d ONNX exports whose model folder is gone or was trained again", len(removed))
    return removed


def _fingerprint(folder: Path) -> str:
    """Changes when the weights or the tokenizer change (a re-trained version in the same folder)."""
    h = hashlib.sha1(f"{folder.resolve()}:{_FORMAT}".encode())
    for name in ("model.safetensors", "pytorch_model.bin", "tokenizer.json", "config.json"):
        path = folder / name
        if path.exists():
            st = path.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


class _Mismatch(Exception):
    pass


def _export(folder: Path, out: Path) -> None:
    import onnx
    import torch

    log.info("preparing %s for onnxruntime: an ONNX export, once (under a minute)", folder.name)
    st = load_sentence_transformer(str(folder), "cpu")
    (out / SOURCE_FILE).write_text(f"{folder.resolve()}\n")
    _write_tokenizer(folder, st, out)

    class LastHidden(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    encoder = st[0].auto_model.eval()
    if hasattr(encoder, "set_attn_implementation"):
        encoder.set_attn_implementation("eager")  # the pattern onnxruntime's optimizer fuses (SDPA's is not)
    sample = st.tokenizer(["hello world"], return_tensors="pt")
    single = out / "single.onnx"
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it fixes: the check below is what counts
        torch.onnx.export(
            LastHidden(encoder),
            (sample["input_ids"], sample["attention_mask"]),
            str(single),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
            opset_version=17,
            dynamo=False,
        )
    onnx.save_model(
        _fused(single, encoder.config),
        str(out / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=1024,
    )
    single.unlink()
    _check(st, OnnxEncoder(out))


def _write_tokenizer(folder: Path, st, out: Path) -> None:
    """The tokenizer as the encoder reads it: the pieces for sentencepiece, the model's normalizer alone, and the
    special tokens, prompts and sizes."""
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    model = tokenizer["model"]
    _pieces_model(model["vocab"], model["unk_id"], out / "pieces.model")
    (out / "normalizer.json").write_text(
        json.dumps(
            {
                **tokenizer,
                "added_tokens": [],
                "post_processor": None,
                "model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]]},
            }
        )
    )
    template = tokenizer["post_processor"]["single"]
    specials = tokenizer["post_processor"]["special_tokens"]
    bos, eos = (specials[step["SpecialToken"]["id"]]["ids"][0] for step in (template[0], template[2]))
    pad = st.tokenizer.pad_token_id if st.tokenizer.pad_token_id is not None else 0
    (out / "encoder.json").write_text(
        json.dumps(
            {
                "dim": int(st[0].auto_model.config.hidden_size),
                "prompts": dict(st.prompts or {}),
                "bos": int(bos),
                "eos": int(eos),
                "pad": int(pad),
                "max_tokens": int(st.max_seq_length),
                "specials": {t: int(st.tokenizer.convert_tokens_to_ids(t)) for t in st.tokenizer.all_special_tokens},
            }
        )
    )


def _fused(path: Path, config):
    """The exported graph with onnxruntime's transformer fusions; the graph as exported where the optimizer is
    missing or fails (still checked against torch, only slower)."""
    try:
        from onnxruntime.transformers import optimizer

        fused = optimizer.optimize_model(
            str(path),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=1,
        )
        return fused.model
    except Exception as exc:  # noqa: BLE001 - an unfused graph gives the same vectors
        import onnx

        log.warning("onnxruntime's transformer optimizer did not run (%s): the export is not fused", exc)
        return onnx.load(str(path))


def _check(st, encoder: OnnxEncoder) -> None:
    for text in _PROBES:
        expected = st.tokenizer(text, add_special_tokens=False)["input_ids"]
        if encoder.ids(text) != expected:
            raise _Mismatch(f"token ids of {text!r} differ from the model's tokenizer")
    torch_vecs = st.encode(list(_PROBES), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    lowest = float(np.min(np.sum(torch_vecs * encoder.embed(_PROBES), axis=1)))
    if lowest < _MIN_COSINE:
        raise _Mismatch(f"vectors differ from torch's (lowest cosine {lowest:.6f})")


def _pieces_model(vocab: list, unk_id: int, path: Path) -> None:
    """A sentencepiece Unigram model with the tokenizer's pieces and scores. Normalisation is left to the
    tokenizer's own normalizer (identity here), so the two agree on every character. Special pieces never come
    from text here: ``OnnxEncoder.ids`` splits them out first."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    kind = pb.ModelProto.SentencePiece
    for i, (piece, score) in enumerate(vocab):
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, float(score)
        special = piece.startswith("<") and piece.endswith(">") and score == 0.0
        entry.type = kind.UNKNOWN if i == unk_id else kind.CONTROL if special else kind.NORMAL
    proto.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    proto.trainer_spec.vocab_size = len(vocab)
    proto.trainer_spec.unk_id = unk_id
    proto.trainer_spec.bos_id = proto.trainer_spec.eos_id = proto.trainer_spec.pad_id = -1
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    path.write_bytes(proto.SerializeToString())
