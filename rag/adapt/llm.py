"""LoRA fine-tuning of the answer LLM on (question, retrieved context, answer) examples, with peft.

Examples come from a JSONL file (``question``, ``answer``, optional ``gold`` phrase) or are made from
the corpus: the cached synthetic questions, the passages the retriever returns for them, and as target
the sentence of the source chunk that best matches the question, cited with its passage number. The
adapter is saved as a folder that ``--llm FOLDER`` loads as base + adapter.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from indexes.errors import ConfigError, require
from indexes.text import words
from rag.adapt.synthetic import SyntheticQuestion, held_out
from rag.answer.generation import build_answer
from rag.answer.prompts import answer_messages
from rag.types import Hit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    gold: str  # phrase a correct answer contains
    gold_chunk: int | None = None  # chunk id a correct citation points at


@dataclass(frozen=True)
class LLMFinetuneOptions:
    base: str = "qwen2.5-coder-0.5b-instruct"
    examples: int = 120
    k: int = 3
    max_passage_chars: int = 600
    epochs: int = 1
    learning_rate: float = 2e-4
    lora_r: int = 8
    heldout: float = 0.25
    max_new_tokens: int = 96
    progress: bool = True


@dataclass(frozen=True)
class LLMFinetuneResult:
    adapter: str
    train_examples: int
    heldout_examples: int
    before: dict
    after: dict
    seconds: dict = field(default_factory=dict)


_STATEMENT = re.compile(r"[^.!?。！？\n]{15,}[.!。！]")
_ECHO = re.compile(r"\s*\[\d+\]\s*\(")


def answer_sentence(question: str, text: str) -> str:
    """The statement in ``text`` sharing most words with ``question``: the target answer. Never a question: a FAQ
    chunk opens with its heading, which shares the most words and taught the model to repeat the question."""
    q = words(question)
    sentences = _STATEMENT.findall(text) or [text[:200]]
    return max(sentences, key=lambda s: len(q & words(s))).strip()


def corpus_examples(kb, n: int) -> list[Example]:
    """Examples from the cached synthetic questions of ``rag finetune embedder`` (the question kind only)."""
    cached = sorted((kb.root / "finetune").glob("questions-*.jsonl"))
    rows = [
        SyntheticQuestion(**json.loads(line))
        for f in cached
        for line in f.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rows = [r for r in rows if r.ok and r.kind == "question"]  # keyword queries and statements are not asked
    rows = list({(r.chunk_id, r.question.strip().lower()): r for r in rows}.values())  # files may overlap
    if not rows:
        raise ConfigError("no cached questions: run `rag finetune embedder` first, or give --examples FILE.jsonl")
    random.Random(0).shuffle(rows)
    chunks = kb.store.chunks.get([r.chunk_id for r in rows[:n]])
    out = []
    for r in rows[:n]:
        c = chunks.get(r.chunk_id)
        if c is None:
            continue
        best = answer_sentence(r.question, c.text)
        out.append(Example(r.question, best, best[:40], c.id))
    return out


def file_examples(path: Path) -> list[Example]:
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
                out.append(Example(row["question"], row["answer"], row.get("gold") or row["answer"][:40]))
            except (ValueError, KeyError) as exc:
                raise ConfigError(f"{path}:{n}: expected question and answer ({exc})") from exc
    return out


def _messages(kb, ex: Example, options: LLMFinetuneOptions):
    hits = kb.search(ex.question, options.k)
    short = [Hit(replace(h.chunk, text=h.chunk.text[: options.max_passage_chars]), h.score, h.rank) for h in hits]
    return answer_messages(ex.question, short), short


def _target(ex: Example, hits) -> str:
    n = next((h.rank for h in hits if h.chunk.id == ex.gold_chunk), None)
    return f"{ex.answer} [{n}]" if n else ex.answer


def evaluate_answers(kb, generator, examples: list[Example], options: LLMFinetuneOptions,
                     desc: str = "answers") -> dict:
    """Shares of answers containing the gold phrase, citing the gold chunk (when known), and echoing the context
    (starting with a passage label such as ``[1] (faq.html)``: the context pasted back, not an answer)."""
    from tqdm.auto import tqdm

    contains = cites = with_gold_chunk = echoes = 0
    for ex in tqdm(examples, desc=desc, unit="answer", disable=not options.progress):
        messages, hits = _messages(kb, ex, options)
        reply = "".join(generator.stream(messages, options.max_new_tokens))
        answer = build_answer(ex.question, reply, hits, check=False)  # the model's own citations are what is measured
        contains += ex.gold.lower() in reply.lower()
        echoes += _ECHO.match(reply) is not None
        if ex.gold_chunk is not None and any(h.chunk.id == ex.gold_chunk for h in hits):
            with_gold_chunk += 1
            cites += any(c.chunk_id == format(ex.gold_chunk, "016x") for c in answer.citations)
    return {
        "examples": len(examples),
        "contains_gold": contains / max(1, len(examples)),
        "cites_gold_passage": cites / max(1, with_gold_chunk),
        "echoes_context": echoes / max(1, len(examples)),
    }


def _train_lora(kb, base, train: list[Example], options: LLMFinetuneOptions, report: Callable[[str], None]):
    """A LoRA adapter on the attention projections of ``base``'s model, trained in fp32 on the answers only."""
    from tqdm.auto import tqdm  # as everywhere here: imported where a bar is shown, not by every `rag` command

    torch = require("torch", None, "torch==2.13.0")
    peft = require("peft", "llm")
    model, tok = base.model_and_tokenizer()
    model = model.float()  # CPU training in fp32; LoRA weights are tiny
    config = peft.LoraConfig(r=options.lora_r, lora_alpha=2 * options.lora_r, lora_dropout=0.05,
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    lora = peft.get_peft_model(model, config)
    optim = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=options.learning_rate)
    lora.train()
    report(f"training a LoRA adapter on {len(train)} examples, {options.epochs} epoch(s)")
    steps = [(e, epoch) for epoch in range(options.epochs) for e in train]
    for ex, _ in tqdm(steps, desc="LoRA", unit="example", disable=not options.progress):
        messages, hits = _messages(kb, ex, options)
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = prompt + _target(ex, hits) + tok.eos_token
        ids = tok(full, return_tensors="pt").input_ids
        n_prompt = len(tok(prompt).input_ids)
        labels = ids.clone()
        labels[:, :n_prompt] = -100  # learn the answer only
        loss = lora(input_ids=ids, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    lora.eval()
    return lora


def _save_adapter(kb, lora, options: LLMFinetuneOptions) -> Path:
    """The adapter saved as the store's next ``models/llm-adapter-N``, naming its base by the preset name."""
    version = len(list((kb.root / "models").glob("llm-adapter-*"))) + 1 if (kb.root / "models").exists() else 1
    out = kb.root / "models" / f"llm-adapter-{version}"
    lora.save_pretrained(str(out))
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = options.base  # a preset name: resolved (and converted) again on load
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return out


def finetune_llm(kb, options: LLMFinetuneOptions = LLMFinetuneOptions(), examples_file: Path | None = None,
                 report: Callable[[str], None] = lambda msg: log.info(msg)) -> LLMFinetuneResult:
    require("torch", None, "torch==2.13.0")
    require("peft", "llm")  # missing extras are named before any work
    from rag.llm import TransformersGenerator

    seconds: dict[str, float] = {}
    examples = file_examples(examples_file) if examples_file else corpus_examples(kb, options.examples)
    test = [e for e in examples if held_out(e.question, options.heldout)]
    train = [e for e in examples if not held_out(e.question, options.heldout)]
    if len(train) < 8 or len(test) < 3:
        raise ConfigError(f"too few examples ({len(train)} train, {len(test)} held out)")
    report(
        f"{len(examples)} examples ({len(train)} train, {len(test)} held out); answering the held-out ones with "
        f"{options.base}"
    )
    base = TransformersGenerator(options.base, device=kb.config.device)
    t = time.perf_counter()
    before = evaluate_answers(kb, base, test, options, "held-out answers, before")
    seconds["eval_before"] = time.perf_counter() - t

    t = time.perf_counter()
    lora = _train_lora(kb, base, train, options, report)
    seconds["training"] = time.perf_counter() - t
    out = _save_adapter(kb, lora, options)

    report(f"adapter saved in {out}; answering the held-out examples with it")
    tuned = TransformersGenerator(str(out), device=kb.config.device)
    t = time.perf_counter()
    after = evaluate_answers(kb, tuned, test, options, "held-out answers, after")
    seconds["eval_after"] = time.perf_counter() - t
    return LLMFinetuneResult(str(out), len(train), len(test), before, after, seconds)
