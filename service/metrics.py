"""Prometheus metrics: one registry per app, so several apps (tests, replicas) never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's counters and histograms; :meth:`observer` feeds them from a batcher."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "captioner_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "captioner_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "captioner_queue_depth", "items waiting for the model", ["model"], registry=r
        )
        self.queue_wait = Histogram(
            "captioner_queue_wait_seconds",
            "time an item waited before its batch ran",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "captioner_batch_size", "items per batch", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.compute = Histogram(
            "captioner_compute_seconds",
            "model time per batch",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "captioner_rejections", "requests refused, by reason", ["reason"], registry=r
        )
        self.ready = Gauge("captioner_ready", "1 once the models are loaded and warm", registry=r)

    def observer(self, model: str) -> BatcherMetrics:
        return BatcherMetrics(self, model)


class BatcherMetrics:
    """The batcher's observer hooks, bound to one model label."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self.m = metrics
        self.model = model

    def on_enqueue(self, depth: int) -> None:
        self.m.queue_depth.labels(self.model).set(depth)

    def on_reject(self, reason: str) -> None:
        self.m.rejections.labels(reason).inc()

    def on_batch(
        self, size: int, cost: int, queue_waits_s: list[float], compute_s: float, ok: bool
    ) -> None:
        self.m.batch_size.labels(self.model).observe(size)
        self.m.compute.labels(self.model).observe(compute_s)
        for wait in queue_waits_s:
            self.m.queue_wait.labels(self.model).observe(wait)
