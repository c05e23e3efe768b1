"""``create_app``: the FastAPI app of ``rag serve``. It takes its dependencies, so tests build it with fakes.

The lifespan loads the models once (readiness turns true when they are warm), resumes unfinished jobs and
stops the job workers at shutdown. Every request is timed into the metrics and written to the access log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path

from indexes.errors import require
from ingest.embed import Embedder
from rag.serve.settings import ServeSettings
from rag.types import Generator

log = logging.getLogger(__name__)
access = logging.getLogger("rag.serve.access")


def create_app(settings: ServeSettings, *, generator: Generator | None = None,
               embedder_factory: Callable[[str], Embedder] | None = None, runner=None, warm: bool = True,
               on_stuck: Callable[[], None] | None = None):
    """``generator``/``embedder_factory`` default to the configured models; ``runner`` to the subprocess ingest worker;
    ``on_stuck`` to ending the process when the LLM is stuck beyond recovery (``_end_process``)."""
    fastapi = require("fastapi", "server")
    from fastapi.middleware.cors import CORSMiddleware

    from rag.serve import errors, mcp
    from rag.serve.routers import chats, collections, documents, health, openai, search

    if generator is None:
        from rag.llm import load_generator

        llm = settings.config.llm
        generator = load_generator(llm.name, model=llm.server_model, device=llm.device or settings.config.device,
                                   backend=llm.backend)
    services = _services(settings, generator, embedder_factory, runner)
    lifespan = _lifespan(services, generator, warm, on_stuck or _end_process)
    app = fastapi.FastAPI(
        title="rag-kb",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        description="Knowledge-base search and cited answers: an OpenAI-compatible API under /v1, "
        "and REST resources for collections, documents, jobs, search, ask and chats.",
    )
    app.state.services = services
    errors.install(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"], allow_headers=["*"]
        )

    app.add_middleware(_BodyLimit)
    app.add_middleware(_Timing, metrics=services.metrics)

    for module in (health, openai, collections, documents, search, chats):
        app.include_router(module.router)
    app.state.mcp_sessions = mcp.mount(app, services)
    _offline_docs(app)
    _web_page(app)
    return app


def _services(settings: ServeSettings, generator: Generator, embedder_factory, runner):
    """The server's state: its database, collections, ingest jobs, LLM gate and metrics."""
    from rag.serve.collections import Collections
    from rag.serve.db import ServerDB
    from rag.serve.deps import Services
    from rag.serve.gate import LLMGate
    from rag.serve.jobs import Jobs, subprocess_runner
    from rag.serve.metrics import Metrics

    root = settings.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    db = ServerDB(root, settings.config.db)
    metrics = Metrics()
    cols = Collections(root, settings.config, generator, embedder_factory)
    jobs = Jobs(
        db,
        root,
        settings.config,
        runner or subprocess_runner,
        on_commit=lambda name: metrics.jobs.labels("committed").inc(),
    )
    gate = LLMGate(settings.llm_slots, settings.llm_queue, settings.llm_wait_s, settings.llm_stall_s)
    return Services(settings, db, cols, jobs, gate, metrics)


def _lifespan(services, generator: Generator, warm: bool, on_stuck: Callable[[], None]):
    """Start: resume unfinished jobs, start the watchers of folder-bound collections, load the models in the
    background (``/readyz`` turns true once they are), start the LLM watchdog and the MCP sessions. Stop: the MCP
    sessions, the watchdog, the watchers, then the jobs."""
    from rag.serve.folders import FolderBindings

    def warm_up() -> None:
        try:
            for name in services.collections.names():
                with services.collections.reading(name) as kb:
                    getattr(kb.embedder, "model", None)
            if hasattr(generator, "load"):
                generator.load()
            services.ready = True
        except Exception:
            log.exception("loading the models failed; /readyz stays false")

    @asynccontextmanager
    async def lifespan(app):
        resumed = services.jobs.resume()
        if resumed:
            log.warning("resumed %d unfinished job(s)", resumed)
        folders = FolderBindings(services.collections, services.settings.watch)
        folders.start()
        if warm:
            threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
        else:
            services.ready = True
        stop = threading.Event()
        threading.Thread(
            target=_watchdog, args=(services.gate, stop, on_stuck), name="llm-watchdog", daemon=True
        ).start()
        if services.db.shared:
            threading.Thread(target=services.jobs.adopt_orphans, args=(10.0, stop), name="orphan-jobs",
                             daemon=True).start()
        async with app.state.mcp_sessions or nullcontext():
            yield
        stop.set()
        folders.stop()
        services.jobs.stop()

    return lifespan


def _watchdog(gate, stop: threading.Event, on_stuck: Callable[[], None]) -> None:
    """Every few seconds, free the LLM slots that stalled (``LLMGate.recover``); ``on_stuck`` when one cannot be."""
    while not stop.wait(max(0.5, min(5.0, gate.stall_s / 4))):
        gate.recover(on_stuck)


def _end_process() -> None:
    """SIGTERM to this process, so that a supervisor starts a working server: a thread stuck inside the LLM cannot be
    freed any other way. If the shutdown itself hangs, faulthandler's own native thread writes every thread's stack
    to the log and exits 30 s later (a Python thread may never run again at that point)."""
    import faulthandler
    import os
    import signal

    faulthandler.dump_traceback_later(30, exit=True)
    os.kill(os.getpid(), signal.SIGTERM)


class _BodyLimit:
    """413 for a request body over ``MAX_JSON_BYTES`` that is not a document upload (whose limit is per file,
    checked as it is saved): no route needs more, and a parser should not be handed megabytes. The body is counted
    as it arrives, so a chunked one without ``Content-Length`` is bounded too, and nothing past the limit is read."""

    MAX_JSON_BYTES = 1 << 20

    def __init__(self, app) -> None:
        from starlette.exceptions import HTTPException

        self.app, self._too_large = app, HTTPException

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"].endswith("/documents"):
            return await self.app(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.MAX_JSON_BYTES:  # reading the body fails; the error handler answers 413
                    raise self._too_large(
                        413, f"the request body is over the {self.MAX_JSON_BYTES >> 20} MiB accepted here"
                    )
            return event

        await self.app(scope, counted, send)


class _Timing:
    """Times each request to its first byte into the metrics and the access log. A plain ASGI middleware, not
    ``@app.middleware``: that one hides a client's disconnect from a streamed answer, which then runs on to its end."""

    def __init__(self, app, metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def timed_send(message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", "unmatched")
                seconds = time.perf_counter() - started
                status = message["status"]
                self.metrics.requests.labels(route, str(status)).inc()
                self.metrics.latency.labels(route).observe(seconds)
                if access.isEnabledFor(logging.INFO):
                    client = scope.get("client")
                    access.info(
                        json.dumps(
                            {
                                "ts": round(time.time(), 3),
                                "client": client[0] if client else None,
                                "method": scope["method"],
                                "path": scope["path"],
                                "route": route,
                                "status": status,
                                "ms": round(seconds * 1000, 1),
                            }
                        )
                    )
            await send(message)

        await self.app(scope, receive, timed_send)


STATIC = Path(__file__).parent / "static"
# The page and everything it loads come from this server: a browser refuses anything else.
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
               "frame-ancestors 'self'")


def _web_page(app) -> None:
    """The chat page at ``/`` (plain HTML, CSS and JavaScript from ``static/``, no build step, nothing from outside)."""
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(
            STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"}
        )


def _offline_docs(app) -> None:
    """The OpenAPI page at ``/docs`` with Swagger UI's files served from the ``swagger-ui-bundle`` package:
    FastAPI's default page loads them from a CDN and stays blank on a machine with no network. Where keys exist,
    ``/docs`` and ``/openapi.json`` need one, as every route but ``/healthz`` and ``/readyz`` does."""
    from fastapi import Depends
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    from rag.serve.deps import need

    swagger = require("swagger_ui_bundle", "server", "swagger-ui-bundle")
    app.mount("/docs-assets", StaticFiles(directory=swagger.swagger_ui_path), name="docs-assets")

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(need("read"))])
    def openapi() -> dict:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(need("read"))])
    def docs():
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="rag-kb API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )
