"""Fetch the development corpora from Debian packages (not committed: licences vary).

    python benchmarks/fetch_data.py            # -> benchmarks/data/python-faq/*.html,
    benchmarks/data/ctex-faq/ctex-faq.pdf, benchmarks/data/python-howto/*.html

English: the Python FAQ pages from ``python3.11-doc``. Chinese: ``ctex-faq.pdf`` from
``texlive-lang-chinese``. Held out from development: eight Python HOWTO pages, also from ``python3.11-doc``.
Questions live in ``benchmarks/questions/`` (paraphrased, with verbatim gold phrases).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
HOWTOS = ("sockets", "sorting", "ipaddress", "urllib2", "unicode", "curses", "annotations", "pyporting")
SETS = {
    "python-faq": ("python3.11-doc", ("usr/share/doc/python3.11/html/faq/*.html",)),
    "ctex-faq": ("texlive-lang-chinese", ("**/ctex-faq.pdf",)),
    # held out from development: the adaptation benchmark's third corpus, questions written before any run on it
    "python-howto": ("python3.11-doc", tuple(f"usr/share/doc/python3.11/html/howto/{n}.html" for n in HOWTOS)),
}


def fetch(name: str) -> Path:
    package, patterns = SETS[name]
    target = DATA / name
    if target.exists() and any(target.iterdir()):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        print(f"fetching {package} ...", file=sys.stderr)
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        deb = next(Path(tmp).glob(f"{package}_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        files = sorted(f for pattern in patterns for f in (Path(tmp) / "x").glob(pattern))
        if not files:
            raise SystemExit(f"{package} holds no {', '.join(patterns)}")
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            if f.name != "index.html":
                shutil.copy(f, target / f.name)
    return target


def check_gold_unique(name: str) -> None:
    """Every gold phrase must occur in the corpus, and in exactly one place."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import logging

    logging.disable(logging.WARNING)
    from ingest.loaders import load, walk
    from rag.evaluation import _match_text, load_questions

    texts = [_match_text(load(p).text) for p in walk([DATA / name])]
    for q in load_questions(Path(__file__).resolve().parent / "questions" / f"{name}.jsonl"):
        n = sum(t.count(_match_text(q.gold)) for t in texts)
        if n != 1:
            print(f"{name}: gold phrase found {n} times: {q.gold!r}")


if __name__ == "__main__":
    for name in SETS:
        print(fetch(name))
        check_gold_unique(name)
