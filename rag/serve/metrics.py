"""Prometheus metrics of one app (its own registry, so several apps in one process, as in tests, do not clash)."""

from __future__ import annotations

from indexes.errors import require


class Metrics:
    def __init__(self) -> None:
        prom = require("prometheus_client", "server", "prometheus-client")
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter("rag_requests_total", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = prom.Histogram(
            "rag_request_seconds",
            "HTTP request latency (to the last byte)",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.stage = prom.Histogram(
            "rag_stage_seconds",
            "time per retrieval and generation stage",
            ["stage"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120),
        )
        self.llm_waiting = prom.Gauge("rag_llm_queue_depth", "requests waiting for the LLM", registry=self.registry)
        self.llm_active = prom.Gauge("rag_llm_active", "generations running", registry=self.registry)
        self.jobs_queued = prom.Gauge("rag_jobs_queued", "ingest jobs waiting", registry=self.registry)
        self.jobs = prom.Counter("rag_jobs_total", "ingest jobs finished", ["status"], registry=self.registry)
        self._prom = prom

    def stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage.labels(stage).observe(ms / 1000)

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
