"""`rag ask` as a user runs it: one new process per question, on a terminal (where it streams), timed from the
command's start to the first byte of the answer and to the command's exit, with the command's peak memory (its own
rusage, from wait4).
The first questions of each development set; the process loads both models every time, as a one-off command does.

    python benchmarks/fetch_data.py && python benchmarks/retrieval_bench.py   # builds the stores
    python benchmarks/ask_bench.py [--sets python-faq,ctex-faq] [--limit 5] [--compare-prefix] [-- --set
    llm.compress=false ...]

``--compare-prefix`` asks each question twice, alternated: once with the saved system-message state deleted
first (``rag.llm.prefix_cache``; every process reads the whole prompt, as before it existed) and once with it.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def ask(question: str, store: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "rag.cli", "ask", question, "--store", str(store), *extra]
    reader, terminal = pty.openpty()  # a terminal, as a user has: `rag ask` streams the answer only to one
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=terminal, stderr=subprocess.DEVNULL, cwd=HERE.parent)
    os.close(terminal)
    first, out = None, b""
    while True:
        try:
            chunk = os.read(reader, 4096)
        except OSError:  # the command closed its terminal
            break
        if not chunk:
            break
        if first is None and chunk.strip():
            first = time.perf_counter() - start
        out += chunk
    os.close(reader)
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"rag ask failed for {question!r} (exit {os.waitstatus_to_exitcode(status)})")
    return {
        "question": question,
        "first_output_s": first or total,
        "total_s": total,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "answer": out.decode("utf-8", "replace").replace("\r", "").split("\nSources:")[0].strip(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="python-faq,ctex-faq")
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument(
        "--compare-prefix", action="store_true", help="each question also without the saved system-message state"
    )
    ap.add_argument("extra", nargs="*", help="more `rag ask` options, after --")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from indexes.files import cache_dir

    kinds = ("no saved state", "saved state") if args.compare_prefix else ("",)
    rows: dict[str, list[dict]] = {k: [] for k in kinds}
    for set_name in args.sets.split(","):
        questions = [
            json.loads(line)["question"]
            for line in (HERE / "questions" / f"{set_name}.jsonl").read_text().splitlines()
            if line.strip()
        ][: args.limit]
        for q in questions:
            for kind in kinds:
                if kind == "no saved state":
                    shutil.rmtree(cache_dir() / "llama-prefix", ignore_errors=True)
                row = ask(q, HERE / "data" / "stores" / set_name, args.extra)
                rows[kind].append(row)
                print(
                    f"  {set_name} {kind}: first output {row['first_output_s']:.1f} s, done {row['total_s']:.1f} s, "
                    f"peak {row['peak_rss_mb']:.0f} MB: {row['answer'][:70]!r}",
                    file=sys.stderr,
                    flush=True,
                )
    print(
        f"`rag ask {' '.join(args.extra)}`, {len(questions)} questions per set ({args.sets}), {os.cpu_count()} CPU "
        "cores, "
        "a new process per question:"
    )
    for kind, done in rows.items():
        med = lambda key: statistics.median(r[key] for r in done)  # noqa: E731
        print(
            f"{kind + ': ' if kind else ''}median first answer byte {med('first_output_s'):.1f} s, median whole "
            "command "
            f"{med('total_s'):.1f} s, peak memory median {med('peak_rss_mb'):.0f} MB, max "
            f"{max(r['peak_rss_mb'] for r in done):.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
