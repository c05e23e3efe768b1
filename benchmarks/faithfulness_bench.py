"""Is what the answer shows as supported really supported? The default LLM answers the faithfulness questions
(the example corpus with follow-ups, the first questions of the two development sets, and the first of each
cross-language set, where the check compares sentences with passages by meaning); each sentence of each
checked answer is either shown with a citation ("supported by [n]"), flagged as unsupported, or too short to
check. A gold list written by a person (``benchmarks/questions/faithfulness/gold.jsonl``: per question and
sentence, the numbers of the passages that really say it, ``[]`` for none, ``null`` for no claim such as a
fragment or the no-answer sentence) gives:

* of the sentences shown as supported, the share whose cited passage really says them (precision of the check),
  and how many of the others cite the wrong passage or are not in any passage at all;
* of the sentences no passage supports, the share the check flagged (its recall), and the true sentences it
  flagged.

The model's own replies and the passages it was given are cached in ``benchmarks/data/faithfulness/`` per LLM
(greedy decoding: the same reply each time), and the citation check runs on them at scoring time, so a change to
the check is measured without generating again. Sentences without a gold label are listed, for a person to
label, and left out of the figures.

    python benchmarks/fetch_data.py
    python benchmarks/faithfulness_bench.py [--llm PRESET] [--dev 8] [--crosslingual 8] [--rival 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import re  # noqa: E402

from indexes.text import normalize  # noqa: E402
from indexes.types import Chunk  # noqa: E402
from ingest.embed import DEFAULT_EMBEDDER, SentenceTransformerEmbedder, query_time  # noqa: E402
from rag.answer.citations import _MARK, _SENTENCE, terms  # noqa: E402
from rag.answer.generation import build_answer  # noqa: E402
from rag.config import Config, IndexConfig  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402
from rag.types import Hit  # noqa: E402

QUESTIONS = HERE / "questions" / "faithfulness"


def sentences(answer) -> list[dict]:
    """Each sentence of a checked answer: its text without markers, what the page shows, and the passages it cites."""
    flagged = {" ".join(s.split()) for s in answer.unsupported}
    out = []
    for m in _SENTENCE.finditer(answer.text):
        raw = m.group(0).strip()
        bare = " ".join(_MARK.sub("", raw).split())
        if not bare:
            continue
        cited = sorted({int(n) for mark in _MARK.findall(raw) for n in re.findall(r"\d+", mark)})
        shown = "supported" if cited else "flagged" if bare in flagged else "unchecked"
        out.append({"sentence": bare, "shown": shown, "cited": cited, "terms": len(terms(bare))})
    return out


def conversations(dev: int, crosslingual: int) -> list[tuple[str, list[str]]]:
    """(set, [question, follow-up, ...]) for every conversation to run."""
    out = []
    for line in (QUESTIONS / "example-corpus.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out.append(("example-corpus", [row["question"], *row.get("follow_ups", [])]))
    for name in ("python-faq", "ctex-faq"):
        rows = [json.loads(x) for x in (HERE / "questions" / f"{name}.jsonl").read_text().splitlines() if x.strip()][
            :dev
        ]
        out += [(name, [r["question"]]) for r in rows]
    for name in ("example-corpus", "python-faq", "ctex-faq"):  # questions in the other language than the corpus
        lines = (HERE / "questions" / "crosslingual" / f"{name}.jsonl").read_text().splitlines()
        out += [(name, [json.loads(x)["question"]]) for x in lines if x.strip()][:crosslingual]
    return out


def replies(llm: str | None, dev: int, crosslingual: int) -> list[dict]:
    cache = HERE / "data" / "faithfulness" / f"{(llm or 'default').replace('/', '_')}.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(x) for x in cache.read_text().splitlines()] if cache.exists() else []
    seen = {(r["set"], tuple(r["history"]), r["question"]) for r in done}
    kbs: dict[str, KnowledgeBase] = {}
    for set_name, turns in conversations(dev, crosslingual):
        if all((set_name, tuple(turns[:i]), q) in seen for i, q in enumerate(turns)):
            continue
        if set_name not in kbs:
            folder = HERE.parent / "examples" / "corpus" if set_name == "example-corpus" else HERE / "data" / set_name
            config = Config(index=IndexConfig(gpu=False))
            if llm:
                from dataclasses import replace

                config = replace(config, llm=replace(config.llm, name=llm))
            kbs[set_name] = KnowledgeBase.open(HERE / "data" / "stores" / f"faithfulness-{set_name}", config)
            kbs[set_name].ingest([folder], progress=False)
        chat = kbs[set_name].chat()
        for i, question in enumerate(turns):
            stream = chat.ask_stream(question)
            for _ in stream:
                pass
            row = {
                "set": set_name,
                "history": turns[:i],
                "question": question,
                "language": stream.language,
                "reply": stream.reply,
                "hits": [
                    {"rank": h.rank, "source": h.chunk.source, "text": h.chunk.text, "headings": list(h.chunk.headings)}
                    for h in stream.hits
                ],
            }
            done.append(row)
            with open(cache, "a") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(f"[{len(done)}] {question} -> {stream.answer.text[:100]!r}", file=sys.stderr, flush=True)
    for kb in kbs.values():
        kb.close()
    return done


def checked(row: dict, embedder):
    """The cached reply through today's citation check."""
    hits = [
        Hit(Chunk(h["rank"], h["source"], h["text"], 0, 0, headings=tuple(h["headings"])), 0.0, h["rank"])
        for h in row["hits"]
    ]
    return build_answer(row["question"], row["reply"], hits, True, row["language"], embedder)


def key(question: str, sentence: str) -> str:
    return normalize(question).strip() + " || " + " ".join(normalize(sentence).split())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", default=None, help="the LLM (default: the configured default)")
    ap.add_argument("--dev", type=int, default=8, help="questions from each development set")
    ap.add_argument("--crosslingual", type=int, default=8,
                    help="questions from each cross-language set (benchmarks/questions/crosslingual)")
    ap.add_argument(
        "--rival",
        type=float,
        default=None,
        help="score with another rag.answer.citations.RIVAL (0: the check before it)",
    )
    args = ap.parse_args()
    if args.rival is not None:
        from rag.answer import citations

        citations.RIVAL = args.rival
    rows = replies(args.llm, args.dev, args.crosslingual)
    gold_path = QUESTIONS / "gold.jsonl"
    gold = (
        {key(g["question"], g["sentence"]): g["passages"] for g in map(json.loads, gold_path.read_text().splitlines())}
        if gold_path.exists()
        else {}
    )
    tally = {
        k: 0
        for k in (
            "right",
            "wrong passage",
            "not in any",
            "flag right",
            "flag wrong",
            "unflagged false",
            "unflagged true",
            "no claim",
        )
    }
    unlabeled = []
    embedder = query_time(SentenceTransformerEmbedder(DEFAULT_EMBEDDER))  # what every store here uses
    for r in rows:
        r["sentences"] = sentences(checked(r, embedder))
        for s in r["sentences"]:
            k = key(r["question"], s["sentence"])
            if k not in gold:
                unlabeled.append((r["question"], s))
                continue
            says = gold[k]
            if says is None:
                tally["no claim"] += 1
            elif s["shown"] == "supported":
                tally["right" if set(s["cited"]) & set(says) else "wrong passage" if says else "not in any"] += 1
            elif s["shown"] == "flagged":
                tally["flag wrong" if says else "flag right"] += 1
            else:
                tally["unflagged true" if says else "unflagged false"] += 1
    shown = tally["right"] + tally["wrong passage"] + tally["not in any"]
    false = tally["not in any"] + tally["flag right"] + tally["unflagged false"]
    print(
        f"{len(rows)} answers, {sum(len(r['sentences']) for r in rows)} sentences, {len(unlabeled)} without a gold "
        "label, "
        f"{tally['no claim']} no claim"
    )
    print(
        f"shown as supported: {shown}; its passage says it: {tally['right']} ({tally['right'] / max(1, shown):.2f}); "
        f"another passage says it: {tally['wrong passage']}; no passage says it: {tally['not in any']}"
    )
    print(
        f"in no passage (gold): {false}; flagged: {tally['flag right']} ({tally['flag right'] / max(1, false):.2f}); "
        f"shown as supported: {tally['not in any']}; too short to check: {tally['unflagged false']}"
    )
    print(f"true sentences flagged as unsupported: {tally['flag wrong']}")
    for question, s in unlabeled:
        print(
            "  unlabeled: "
            + json.dumps({"question": question, "sentence": s["sentence"], "shown": s["shown"], "cited": s["cited"]},
                         ensure_ascii=False)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
