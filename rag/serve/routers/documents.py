"""Documents of a collection and the jobs that change them: upload (202 + a job), list, get, delete, re-index;
job status as JSON and as a server-sent event stream."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import unicodedata
from pathlib import Path

from fastapi import APIRouter, Depends, File, HTTPException, Request, Response, UploadFile
from fastapi.responses import StreamingResponse

from indexes.errors import NotFoundError
from ingest.loaders import DEFAULT_INCLUDE
from rag.serve.db import JOB_DONE, new_id
from rag.serve.deps import Services, allow, need, services
from rag.serve.jobs import UPLOADS
from rag.serve.keys import Principal

router = APIRouter(tags=["documents"])

SUFFIXES = tuple(sorted({p.lstrip("*").lower() for p in DEFAULT_INCLUDE}))


def doc_id(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()[:16]


def safe_name(raw: str | None) -> str:
    """The file's own name, never a path: ``../x``, ``/etc/x`` and ``C:\\x`` all become ``x``; odd names are refused."""
    name = unicodedata.normalize("NFC", (raw or "").replace("\\", "/").rsplit("/", 1)[-1]).strip()
    name = "".join(ch for ch in name if ch.isprintable())
    if not name or name in (".", "..") or name.startswith("."):
        raise HTTPException(422, f"invalid file name {raw!r}: give the file a plain name such as report.pdf")
    if not name.lower().endswith(SUFFIXES):
        raise HTTPException(415, f"{name}: unsupported file type; upload one of {', '.join(SUFFIXES)}")
    return name[:200]


@router.post("/collections/{name}/documents", status_code=202)
async def upload(name: str, request: Request, response: Response, files: list[UploadFile] = File(...),
                 s: Services = Depends(services), who: Principal = Depends(need("ingest"))) -> dict:
    """Save the files, queue one job for them and answer at once; the job's progress is at ``/jobs/{id}``."""
    store = s.collections.path(allow(who, name))
    names = [safe_name(f.filename) for f in files]
    if len(set(names)) != len(names):
        raise HTTPException(422, "two uploaded files have the same name; upload them separately or rename one")
    limit = int(s.settings.max_upload_mb * 1024 * 1024)
    hint = new_id("up")
    staging = s.jobs.staging(name, hint)
    saved: list[tuple[str, str, int]] = []
    try:
        for f, fname in zip(files, names):
            size = 0
            with open(staging / fname, "wb") as out:
                while block := await f.read(1 << 20):
                    size += len(block)
                    if size > limit:
                        raise HTTPException(
                            413, f"{fname} is larger than the {s.settings.max_upload_mb:g} MB limit per file"
                        )
                    out.write(block)
            saved.append((fname, str((store / UPLOADS / fname).resolve()), size))
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    job = s.jobs.submit(name, "ingest", saved, {"staging": str(staging)})
    response.headers["Location"] = f"/jobs/{job}"
    return s.collections.public(s.db.job(job))


@router.get("/collections/{name}/documents")
def list_documents(name: str, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    allow(who, name)
    with s.collections.reading(name) as kb:
        docs = kb.store.documents()
    return s.collections.public({"documents": [_doc(d) for d in sorted(docs.values(), key=lambda d: d.source)]})


def _doc(d) -> dict:
    return {
        "id": doc_id(d.source),
        "name": Path(d.source).name,
        "source": d.source,
        "chunks": d.n_chunks,
        "bytes": d.size,
        "ingested_at": d.ingested_at,
        "warnings": list(d.warnings),
    }


def _find(s: Services, name: str, document: str):
    with s.collections.reading(name) as kb:
        for d in kb.store.documents().values():
            if doc_id(d.source) == document:
                return d
    raise NotFoundError(
        f"collection {name!r} has no document {document!r}: GET /collections/{name}/documents lists them"
    )


@router.get("/collections/{name}/documents/{document}")
def get_document(name: str, document: str, s: Services = Depends(services),
                 who: Principal = Depends(need("read"))) -> dict:
    return s.collections.public(_doc(_find(s, allow(who, name), document)))


@router.delete("/collections/{name}/documents/{document}", status_code=202)
def delete_document(name: str, document: str, response: Response, s: Services = Depends(services),
                    who: Principal = Depends(need("ingest"))) -> dict:
    d = _find(s, allow(who, name), document)
    job = s.jobs.submit(name, "delete", [(Path(d.source).name, d.source, d.size)], {})
    response.headers["Location"] = f"/jobs/{job}"
    return s.collections.public(s.db.job(job))


@router.post("/collections/{name}/documents/{document}/reindex", status_code=202)
def reindex(name: str, document: str, response: Response, s: Services = Depends(services),
            who: Principal = Depends(need("ingest"))) -> dict:
    """Re-chunk and re-embed one document; its old chunks stay searchable until the new ones commit, in one step."""
    d = _find(s, allow(who, name), document)
    if not Path(d.source).is_file():
        raise NotFoundError(f"the file of {Path(d.source).name} is gone from the server; upload it again")
    job = s.jobs.submit(name, "reindex", [(Path(d.source).name, d.source, d.size)], {})
    response.headers["Location"] = f"/jobs/{job}"
    return s.collections.public(s.db.job(job))


@router.get("/collections/{name}/jobs")
def collection_jobs(name: str, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    s.collections.path(allow(who, name))
    return s.collections.public({"jobs": s.db.jobs(name)})


def _job(s: Services, who: Principal, job_id: str) -> dict:
    job = s.db.job(job_id)
    if job is None or not who.may_use(job["collection"]):
        raise NotFoundError(f"no job {job_id!r}")
    return s.collections.public(job)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    return _job(s, who, job_id)


@router.get("/jobs/{job_id}/events", responses={200: {"content": {"text/event-stream": {}}}})
def job_events(job_id: str, s: Services = Depends(services),
               who: Principal = Depends(need("read"))) -> StreamingResponse:
    """The job as a server-sent event each time it changes, until it is committed or failed (at most an hour).
    The stream is asynchronous, so many watchers hold no worker thread (each poll is one quick SQLite read)."""
    _job(s, who, job_id)

    async def events():
        last, deadline = None, time.monotonic() + 3600
        while time.monotonic() < deadline:
            job = s.collections.public(s.db.job(job_id))
            snapshot = json.dumps(job, ensure_ascii=False)
            if snapshot != last:
                yield f"event: job\ndata: {snapshot}\n\n"
                last = snapshot
            if job["status"] in JOB_DONE:
                return
            await asyncio.sleep(0.25)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
