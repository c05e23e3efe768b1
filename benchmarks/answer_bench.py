"""Answer quality and speed on the development questions with a real LLM: the answer's language, and whether a
citation points at a passage holding the gold phrase, before and after the change (the earlier prompt without the
language instruction, the model's own citations) and now (language named in the prompt, citations checked).
``compressed`` is what `rag ask` does: the shortened prompt, asked again over the whole passages where it gets
NOT_FOUND; its first token is timed from before the compression, whose own time is also given.

Each reply is cached in ``benchmarks/data/answers/`` (per set, prompt and LLM), so an interrupted run goes on
where it stopped and a finished one only prints its table.

    python benchmarks/fetch_data.py
    python benchmarks/answer_bench.py [--sets python-faq,ctex-faq] [--limit 20] [--prompts before,now,compressed]
                                      [--budget 360] [--llm PRESET] [--tag NEW_RUN]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from indexes.text import normalize  # noqa: E402
from rag.answer.compress import WHOLE  # noqa: E402
from rag.answer.generation import build_answer  # noqa: E402
from rag.answer.prompts import SYSTEM_PROMPT, answer_messages, context_block, is_chinese  # noqa: E402
from rag.config import Config, IndexConfig, LLMConfig  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402


def before_messages(question, hits):
    """The prompt as it was before the answer's language was named in it."""
    user = (f"Context passages:\n\n{context_block(hits)}\n\nQuestion: {question}\n\n"
            "Answer from the passages, in the language of the question, and cite them as [1], [2], ...")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


PROMPTS = {"before": before_messages, "now": answer_messages}


def holds(text: str, gold: str) -> bool:
    squash = lambda t: "".join(normalize(t).lower().split())  # noqa: E731
    return squash(gold) in squash(text)


def run(set_name: str, prompt: str, llm: str, limit: int, k: int, budget: int, tag: str = "") -> list[dict]:
    store = HERE / "data" / "stores" / set_name
    kb = KnowledgeBase.open(store, Config(index=IndexConfig(gpu=False), llm=LLMConfig(name=llm, context_tokens=budget)))
    kb.ingest([HERE / "data" / set_name], progress=False)
    questions = [
        json.loads(line) for line in (HERE / "questions" / f"{set_name}.jsonl").read_text().splitlines() if line.strip()
    ][:limit]
    label = (f"compressed{budget}w{WHOLE}retry" if prompt == "compressed" else prompt) + (f"-{tag}" if tag else "")
    cache = HERE / "data" / "answers" / f"{set_name}-{label}-{llm.replace('/', '_')}.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    done = {r["question"]: r for r in map(json.loads, cache.read_text().splitlines())} if cache.exists() else {}
    rows = []
    for i, q in enumerate(questions, 1):
        if q["question"] in done:
            rows.append(done[q["question"]])
            continue
        hits = kb.context(q["question"], k)
        start = time.perf_counter()
        first = None
        # what `rag ask` does: compress (timed), ask, ask again over whole passages on NOT_FOUND
        if (prompt == "compressed"):
            stream = kb.answer_stream(q["question"], hits)
            compress_s = time.perf_counter() - start
            messages = stream.messages()
            for _ in stream:
                first = first or time.perf_counter() - start
            reply, escalated = stream.reply, stream.asked_again
        else:
            messages = PROMPTS[prompt](q["question"], hits)
            parts = []
            for piece in kb.generator.stream(messages, kb.config.llm.max_new_tokens):
                first = first or time.perf_counter() - start
                parts.append(piece)
            reply, escalated, compress_s = "".join(parts), False, 0.0
        total = time.perf_counter() - start
        row = {
            "question": q["question"],
            "gold": q["gold"],
            "reply": reply,
            "ttft_s": first or total,
            "total_s": total,
            "prompt_tokens": kb.generator.count_tokens(messages[0]["content"] + messages[1]["content"])
            if hasattr(kb.generator, "count_tokens")
            else None,
            "escalated": escalated,
            "compress_s": compress_s,
            "passages": [h.chunk.text for h in hits],
        }
        with open(cache, "a") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        rows.append(row)
        print(
            f"  {set_name} {prompt} {i}/{len(questions)}: first token {row['ttft_s']:.1f} s, answer {total:.1f} s"
            + (" (asked again over whole passages)" if escalated else ""),
            file=sys.stderr,
            flush=True,
        )
    kb.close()
    return rows


def score(rows: list[dict], check: bool) -> dict:
    from indexes.types import Chunk
    from rag.types import Hit

    lang = seen = cited_gold = 0
    for r in rows:
        hits = [Hit(Chunk(i, "p", t, 0, len(t)), 1.0, i) for i, t in enumerate(r["passages"], 1)]
        answer = build_answer(r["question"], r["reply"], hits, check=check)
        lang += is_chinese(answer.text) == is_chinese(r["question"])
        gold_at = {h.rank for h in hits if holds(h.chunk.text, r["gold"])}
        if gold_at:
            seen += 1
            cited_gold += bool({c.number for c in answer.citations} & gold_at)
    return {
        "n": len(rows),
        "language": lang / max(1, len(rows)),
        "gold_seen": seen,
        "cited_gold": cited_gold / max(1, seen),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="python-faq,ctex-faq")
    ap.add_argument("--prompts", default="before,now")
    ap.add_argument("--llm", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--limit", type=int, default=51)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--budget", type=int, default=360, help="passage tokens of the compressed prompt")
    ap.add_argument("--tag", default="", help="a name for a new run: its replies are cached apart from earlier runs'")
    args = ap.parse_args()
    table = []
    for set_name in args.sets.split(","):
        for prompt in args.prompts.split(","):
            rows = run(set_name, prompt, args.llm, args.limit, args.k, args.budget, args.tag)
            for check in (False, True) if prompt in ("now", "compressed") else (False,):
                name = f"compressed {args.budget}" if prompt == "compressed" else prompt
                label = f"{name} prompt, " + ("citations checked" if check else "model's citations")
                table.append((set_name, label, score(rows, check), rows))
    print(
        f"\nLLM {args.llm}, k={args.k}, first {args.limit} questions per set; peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    print(
        f"{'set':11} {'configuration':38} {'n':>3} {'in language':>12} {'gold seen':>10} {'cites gold':>11} "
        f"{'ttft med':>9} {'answer med':>11} {'prompt tok':>11} {'compress':>9} {'again':>6}"
    )
    for set_name, label, m, rows in table:
        tok = [r["prompt_tokens"] for r in rows if r.get("prompt_tokens")]
        print(
            f"{set_name:11} {label:38} {m['n']:>3} {m['language']:>12.2f} {m['gold_seen']:>10} "
            f"{m['cited_gold']:>11.2f} "
            f"{statistics.median(r['ttft_s'] for r in rows):>8.1f}s "
            f"{statistics.median(r['total_s'] for r in rows):>10.1f}s "
            f"{statistics.median(tok) if tok else float('nan'):>11.0f} "
            f"{statistics.median(r.get('compress_s', 0.0) for r in rows):>8.2f}s "
            f"{sum(bool(r.get('escalated')) for r in rows):>6}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
