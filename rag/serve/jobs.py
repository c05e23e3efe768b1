"""Upload, re-index and delete jobs: one writer per collection, jobs in order, readers never wait.

An upload's bytes are saved under the collection's ``.staging/JOB/`` before its job is queued; the job moves
each file into ``uploads/`` and ingests it. Job and file states live in the server database, so they survive a
restart, and a job left unfinished by a crash runs again when the server starts (ingestion is incremental:
what was committed is not done twice).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from indexes.errors import RagError
from indexes.files import atomic_write
from rag.config import Config, config_to_dict
from rag.serve.db import ServerDB
from rag.serve.worker import Emit

log = logging.getLogger(__name__)

Runner = Callable[[dict, Emit], dict]

STAGING = ".staging"
UPLOADS = "uploads"


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the server dies, so no orphan writes after a crash."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def subprocess_runner(spec: dict, emit: Emit) -> dict:
    """Run the job in ``python -m rag.serve.worker`` (lower priority, killed with the server)."""
    proc = subprocess.Popen([sys.executable, "-m", "rag.serve.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent,
                            env={**os.environ, "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"})
    stderr: list[str] = []
    drain = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    drain.start()
    try:
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()
    except BrokenPipeError:  # the worker died before it read the job: its stderr below says why
        pass
    result: dict | None = None
    error = ""
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if "done" in event:
            result = event["done"]
        elif "error" in event:
            error = event["error"]
        else:
            emit(event)
    proc.wait()
    drain.join(timeout=5)
    if result is None:
        lines = "".join(stderr).strip().splitlines()
        raise RagError(error or (lines[-1] if lines else f"the ingest worker exited with status {proc.returncode}"))
    return result


class Jobs:
    def __init__(self, db: ServerDB, root: Path, config: Config, runner: Runner = subprocess_runner,
                 on_commit: Callable[[str], None] = lambda name: None) -> None:
        self.db, self.root, self.config, self.runner, self.on_commit = db, Path(root), config, runner, on_commit
        self._queues: dict[str, queue.Queue[str | None]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def resume(self) -> int:
        """Queue again every job that no server is working on (one a stopped server left running, or, with
        replicas, one queued on a replica that is gone); returns how many."""
        pending = self.db.orphaned_jobs()
        for job in pending:
            if job["status"] == "running":
                self.db.set_job(job["id"], "queued")
                self.db.note_job(job["id"], "resumed after a server restart")
            self._enqueue(job["collection"], job["id"])
        return len(pending)

    def adopt_orphans(self, every_s: float, stop: threading.Event) -> None:
        """With replicas (a shared database): every ``every_s`` seconds, take over jobs whose replica is gone."""
        while not stop.wait(every_s):
            try:
                if adopted := self.resume():
                    log.warning("took over %d job(s) of a replica that is gone", adopted)
            except Exception:  # the database was unreachable for a moment: try again next time
                log.exception("looking for jobs of stopped replicas failed")

    def staging(self, collection: str, job_hint: str) -> Path:
        path = self.root / collection / STAGING / job_hint
        path.mkdir(parents=True, exist_ok=True)
        return path

    def submit(self, collection: str, kind: str, files: list[tuple[str, str, int]], spec: dict) -> str:
        uploads = None
        if self.db.shared and kind == "ingest":  # so that any replica can run the job, not only this one
            uploads = {name: (Path(spec["staging"]) / name).read_bytes() for name, _, _ in files}
        job = self.db.add_job(collection, kind, files, spec, uploads)
        self._enqueue(collection, job)
        return job

    def depth(self) -> int:
        return sum(q.qsize() for q in self._queues.values())

    def _enqueue(self, collection: str, job: str) -> None:
        with self._lock:
            q = self._queues.setdefault(collection, queue.Queue())
            q.put(job)
            thread = self._threads.get(collection)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(
                    target=self._work, args=(collection, q), name=f"jobs-{collection}", daemon=True
                )
                self._threads[collection] = thread
                thread.start()

    def stop(self) -> None:
        for q in self._queues.values():
            q.put(None)

    def _work(self, collection: str, q: queue.Queue) -> None:
        while (job := q.get()) is not None:
            try:
                self._run(collection, job)
            except Exception as exc:  # the job fails, the worker goes on with the next one
                log.exception("job %s failed", job)
                self.db.set_job(job, "failed", str(exc))

    def _place_uploads(self, job: dict, uploads: Path) -> dict[str, str]:
        """Move the job's files into ``uploads`` (this replica's): from the staging folder where this replica saved
        them, or, for a job another replica accepted, from the database. Returns {path here: source in the job}."""
        staged = Path(job["spec"]["staging"])
        uploads.mkdir(parents=True, exist_ok=True)
        here = {}
        for f in job["files"]:
            src, target = staged / f["name"], uploads / f["name"]
            if src.is_file():
                os.replace(src, target)  # atomic: the file is either staged or in uploads/
            elif self.db.shared and (data := self.db.upload(job["id"], f["name"])) is not None:
                atomic_write(target, lambda tmp, data=data: tmp.write_bytes(data))
            here[str(target.resolve())] = f["source"]
        return here

    def _run(self, collection: str, job_id: str) -> None:
        job = self.db.job(job_id, internal=True)
        if job is None or job["status"] in ("committed", "failed") or not self.db.claim_job(job_id):
            return  # done, or another replica runs it
        store = self.root / collection
        spec = {"store": collection if self.config.db else str(store), "kind": job["kind"],
                "config": config_to_dict(self.config)}
        here: dict[str, str] = {}  # a file's path on this replica -> its source in the job (where it was uploaded)
        if job["kind"] == "ingest":
            here = self._place_uploads(job, store / UPLOADS)
            spec["files"] = list(here)
        else:
            spec["sources"] = [f["source"] for f in job["files"]]

        before = {f["source"]: f["status"] for f in job["files"]}  # a resumed job's states from the last process

        def emit(event: dict) -> None:
            source = here.get(event["source"], event["source"])
            stage, reason = event["stage"], event.get("reason", "")
            if stage == "unchanged" and not reason and before.get(source) in ("embedding", "committed"):
                # this job's own work, not found unchanged
                stage, reason = "committed", "added before the server restarted"
            self.db.set_file(job_id, source, stage, reason)

        try:
            self.runner(spec, emit)
        except RagError as exc:
            self.db.set_job(job_id, "failed", str(exc))
            return
        finally:
            if job["kind"] == "ingest":
                shutil.rmtree(job["spec"]["staging"], ignore_errors=True)
                self.db.drop_uploads(job_id)
        for f in self.db.job(job_id)["files"]:
            if f["status"] not in ("committed", "unchanged", "failed"):  # e.g. a file the walk skipped
                self.db.set_file(job_id, f["source"], "failed", "not ingested: not a supported document type")
        self.db.set_job(job_id, "committed")
        self.on_commit(collection)
