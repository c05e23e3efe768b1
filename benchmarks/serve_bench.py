"""Load on a live ``rag serve`` (127.0.0.1): 8 clients searching, then asking with the extractive LLM, each for a
fixed time, first with the server idle and then while ingest jobs of a few hundred chunks run back to back.
Beside it, the same questions the way a script asks them without a server: one ``rag search`` process each.
The ``stop`` phase has half the clients press Stop (close a streamed answer at its first token) over and over
while the others ask whole answers: their errors, whether ``/readyz`` ever said the LLM stalled, and whether the
LLM gauge returns to 0 afterwards; clients told 429 wait as ``Retry-After`` says. Run it with a real LLM
(``--phases stop --llm qwen2.5-coder-0.5b-instruct``); the search and ask phases are meant for the extractive one.

    python benchmarks/serve_bench.py [--seconds 60] [--clients 8] [--cli-questions 3] [--phases search,ask,stop] [--llm
    NAME]

Bounded: every request has a timeout, each phase stops after ``--seconds``, the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    json.loads(line)["question"]
    for f in sorted((ROOT / "benchmarks" / "questions").glob("*.jsonl"))
    for line in f.read_text().splitlines()
    if line.strip()
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_job(url: str, job: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/jobs/{job}", timeout=30).json()
        if state["status"] in ("committed", "failed"):
            return state
        time.sleep(0.3)
    raise SystemExit(f"job {job} did not finish in {timeout} s")


def upload(url: str, collection: str, files: list[tuple[str, bytes]]) -> str:
    r = httpx.post(f"{url}/collections/{collection}/documents", files=[("files", f) for f in files], timeout=120)
    r.raise_for_status()
    return r.json()["id"]


def synthetic_doc(n: int, sections: int = 60) -> bytes:
    """Distinct text (about two chunks per section), so every job embeds new vectors (no cache hits)."""
    return "\n\n".join(
        f"## Part {n}.{i}\n\n"
        + " ".join(f"Batch {n} item {i}.{j} describes valve {j * i % 97} and seal {n}." for j in range(45))
        for i in range(sections)
    ).encode()


def summary(latencies: list[float], errors: list[str], seconds: float) -> dict:
    latencies.sort()
    n = len(latencies)
    return {"requests": n, "rps": n / seconds, "p50_ms": 1000 * statistics.median(latencies) if n else float("nan"),
            "p95_ms": 1000 * latencies[int(0.95 * (n - 1))] if n else float("nan"), "errors": len(errors),
            "error_examples": sorted(set(errors))[:3]}


def load(url: str, route: str, seconds: float, clients: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(offset: int) -> None:
        with httpx.Client(timeout=60) as http:
            i = offset
            while time.monotonic() < stop:
                q = QUESTIONS[i % len(QUESTIONS)]
                body = {"query": q, "k": 5} if route == "search" else {"question": q}
                t = time.perf_counter()
                try:
                    r = http.post(f"{url}/collections/bench/{route}", json=body)
                    ok = r.status_code == 200
                    why = "" if ok else f"{r.status_code} {r.text[:120]}"
                except httpx.HTTPError as exc:
                    ok, why = False, type(exc).__name__
                with lock:
                    (latencies.append(time.perf_counter() - t) if ok else errors.append(why))
                i += clients

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(latencies, errors, seconds)


def load_with_stops(url: str, seconds: float, clients: int) -> dict:
    """Half the clients stream an answer and hang up at its first token; the others ask whole answers."""
    latencies: list[float] = []
    errors: list[str] = []
    stopped, not_ready, busy = [0], [0], [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def stopper(offset: int) -> None:
        i = offset
        while time.monotonic() < stop:
            body = {"question": QUESTIONS[i % len(QUESTIONS)], "stream": True}
            try:
                with httpx.stream("POST", f"{url}/collections/bench/ask", json=body, timeout=600) as r:
                    if r.status_code == 429:  # the queue is full: wait as told, like any client
                        with lock:
                            busy[0] += 1
                        time.sleep(float(r.headers.get("retry-after", "5")))
                        continue
                    for line in r.iter_lines():
                        if line.startswith(("event: token", "event: answer", "event: error")):
                            break  # Stop: the connection closes here
                with lock:
                    stopped[0] += 1
            except httpx.HTTPError:
                pass
            i += clients

    def asker(offset: int) -> None:
        i = offset
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                r = httpx.post(
                    f"{url}/collections/bench/ask", json={"question": QUESTIONS[i % len(QUESTIONS)]}, timeout=600
                )
                ok, why = r.status_code == 200, f"{r.status_code} {r.text[:120]}"
            except httpx.HTTPError as exc:
                ok, why = False, type(exc).__name__
            if not ok and why.startswith("429"):
                with lock:
                    busy[0] += 1
                time.sleep(float(r.headers.get("retry-after", "5")))
                continue
            with lock:
                (latencies.append(time.perf_counter() - t) if ok else errors.append(why))
            i += clients

    def watch() -> None:
        while time.monotonic() < stop:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=30).status_code == 200
            except httpx.HTTPError:
                ready = False  # no answer in 30 s is not ready either
            if not ready:
                with lock:
                    not_ready[0] += 1
            time.sleep(1)

    threads = [threading.Thread(target=stopper if c % 2 else asker, args=(c,)) for c in range(clients)]
    threads.append(threading.Thread(target=watch))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t = time.monotonic()
    while "rag_llm_active 0.0" not in httpx.get(f"{url}/metrics", timeout=30).text:
        if time.monotonic() - t > 300:
            break
        time.sleep(0.2)
    freed = "rag_llm_active 0.0" in httpx.get(f"{url}/metrics", timeout=30).text
    return summary(latencies, errors, seconds) | {
        "stopped": stopped[0],
        "not_ready": not_ready[0],
        "busy": busy[0],
        "freed_s": time.monotonic() - t if freed else None,
    }


_DOCS = itertools.count(1)


def while_ingesting(url: str, fn) -> tuple[dict, dict]:
    """Run ``fn`` while ingest jobs of new text run one after another; returns its result and the ingest counts."""
    done = threading.Event()
    stats = {"jobs": 0, "chunks": 0, "job_seconds": []}

    def feed() -> None:
        while not done.is_set():
            n = next(_DOCS)  # new text every job, across phases too: a repeated file would be "unchanged"
            t = time.perf_counter()
            state = wait_job(url, upload(url, "bench", [(f"load-{n}.md", synthetic_doc(n))]))
            if state["status"] == "committed" and not done.is_set():
                stats["jobs"] += 1
                stats["job_seconds"].append(time.perf_counter() - t)

    stats["before"] = httpx.get(f"{url}/collections/bench", timeout=30).json()["chunks"]
    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(3)  # the first job's worker is up and embedding
    result = fn()
    # committed meanwhile
    stats["chunks"] = httpx.get(f"{url}/collections/bench", timeout=30).json()["chunks"] - stats["before"]
    done.set()
    feeder.join()
    return result, stats


def cli_search(store: Path, questions: list[str]) -> list[float]:
    out = []
    for q in questions:
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "rag.cli", "search", q, "--store", str(store), "--json"],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--cli-questions", type=int, default=3)
    ap.add_argument("--phases", default="search,ask,stop", help="which phases, comma-separated")
    ap.add_argument("--llm", default="extractive", help="the server's LLM (a preset for a real stop phase)")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root, port = Path(tmp) / "root", free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(Path(tmp) / "server.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rag.cli",
                "serve",
                "--root",
                str(root),
                "--port",
                str(port),
                "--set",
                f"llm.name={args.llm}",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the server did not start: " + (Path(tmp) / "server.log").read_text()[-2000:])
                time.sleep(0.5)
            httpx.post(f"{url}/collections", json={"name": "bench"}, timeout=120).raise_for_status()
            corpus = [p for p in sorted((ROOT / "examples" / "corpus").iterdir()) if p.is_file()]
            data = ROOT / "benchmarks" / "data"
            if data.is_dir():
                corpus += [p for p in sorted(data.rglob("*")) if p.suffix in (".html", ".pdf")]
            state = wait_job(url, upload(url, "bench", [(p.name, p.read_bytes()) for p in corpus]))
            base = httpx.get(f"{url}/collections/bench", timeout=30).json()
            print(
                f"collection: {base['documents']} documents, {base['chunks']} chunks "
                f"({sum(f['status'] == 'committed' for f in state['files'])} files committed); "
                f"{args.clients} clients, {args.seconds:g} s per phase, {os.cpu_count()} CPUs, LLM {args.llm}",
                flush=True,
            )
            rows = []
            for route in [r for r in ("search", "ask") if r in phases]:
                idle = load(url, route, args.seconds, args.clients)
                busy, ingest = while_ingesting(url, lambda: load(url, route, args.seconds, args.clients))
                rows.append((f"{route}, idle", idle, ""))
                secs = ingest["job_seconds"]
                rows.append(
                    (
                        f"{route}, during ingest",
                        busy,
                        f"{ingest['chunks']} chunks committed by {ingest['jobs']} jobs"
                        + (f", {statistics.median(secs):.1f} s per job" if secs else ""),
                    )
                )
            print(f"\n{'phase':24} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'errors':>7}")
            for name, r, note in rows:
                print(
                    f"{name:24} {r['requests']:>9} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
                    f"{r['errors']:>7}  {note}"
                )
                for e in r["error_examples"]:
                    print(f"    error: {e}")
            if "search" in phases:
                search_idle, search_busy = rows[0][1], rows[1][1]
                print(f"\nsearch p95 during ingest / idle: {search_busy['p95_ms'] / search_idle['p95_ms']:.2f}x")
            if "stop" in phases:
                r = load_with_stops(url, args.seconds, args.clients)
                freed = (
                    f"back to 0 {r['freed_s']:.1f} s after the phase"
                    if r["freed_s"] is not None
                    else "STUCK (not 0 after 300 s)"
                )
                print(
                    f"\nstop phase: {r['stopped']} answers stopped at their first token by {args.clients // 2} "
                    "clients; "
                    f"{args.clients - args.clients // 2} others: {r['requests']} whole answers, p50 {r['p50_ms']:.0f} "
                    "ms, "
                    f"p95 {r['p95_ms']:.0f} ms, {r['errors']} errors; {r['busy']} told to retry (429); /readyz not "
                    "ready "
                    f"{r['not_ready']} times; LLM gauge {freed}"
                )
                for e in r["error_examples"]:
                    print(f"    error: {e}")
        finally:
            problems = [
                line
                for line in (Path(tmp) / "server.log").read_text(errors="replace").splitlines()
                if line.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback"))
            ]
            if problems:
                print("\nserver log warnings and errors:\n  " + "\n  ".join(problems[-20:]))
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.cli_questions:
            store = Path(tmp) / "cli-store"
            subprocess.run(
                [sys.executable, "-m", "rag.cli", "ingest", str(ROOT / "examples" / "corpus"), "--store", str(store)],
                cwd=ROOT,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            times = cli_search(store, QUESTIONS[: args.cli_questions])
            print(
                f"without a server, one `rag search` process per question: {statistics.median(times):.1f} s median "
                f"({len(times)} questions, one at a time)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
