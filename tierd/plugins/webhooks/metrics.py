"""Prometheus metrics of the webhooks module (on the daemon's /metrics)."""

from __future__ import annotations

import prometheus_client


class WebhookMetrics:
    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        self.attempts = prometheus_client.Counter(
            "tierd_webhook_attempts",
            "Webhook delivery attempts by outcome "
            "(success, http_error, timeout, connect_error, refused, gone, internal_error, transform_error)",
            ["outcome"],
            registry=registry,
        )
        self.latency = prometheus_client.Histogram(
            "tierd_webhook_attempt_duration_seconds",
            "Duration of webhook requests (send to answer)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.first_attempt_delay = prometheus_client.Histogram(
            "tierd_webhook_first_attempt_delay_seconds",
            "From event accepted to the first delivery attempt",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
            registry=registry,
        )
        self.due = prometheus_client.Gauge(
            "tierd_webhook_deliveries_due",
            "Deliveries due now (pending, due time passed, endpoint enabled)",
            registry=registry,
        )
        self.oldest_due_age = prometheus_client.Gauge(
            "tierd_webhook_oldest_due_age_seconds", "Age of the oldest due delivery (0 when none)", registry=registry
        )
        self.disabled = prometheus_client.Gauge(
            "tierd_webhook_endpoints_disabled", "Disabled webhook endpoints", registry=registry
        )
        self.dispatch_errors = prometheus_client.Counter(
            "tierd_webhook_dispatch_errors",
            "Errors the dispatcher survived, by what they stopped: one delivery "
            "(delivery, tried again later) or what follows an attempt (follow_up)",
            ["stage"],
            registry=registry,
        )
        self.blocked = prometheus_client.Gauge(
            "tierd_webhook_endpoints_blocked",
            "Fifo webhook endpoints whose next delivery keeps failing (the ones after it wait)",
            registry=registry,
        )
        self.unusable = prometheus_client.Gauge(
            "tierd_webhook_endpoints_unusable",
            "Webhook endpoints whose stored row cannot be used (see the log)",
            registry=registry,
        )
        self._attempts_by_outcome: dict[str, prometheus_client.Counter] = {}

    def count_attempt(self, outcome: str) -> None:
        """One more attempt with this outcome (children cached: called per request)."""
        child = self._attempts_by_outcome.get(outcome)
        if child is None:
            child = self._attempts_by_outcome[outcome] = self.attempts.labels(outcome)
        child.inc()

    async def update(self, store, now: float) -> None:
        """Refresh the gauges read from the database (the 5-second job)."""
        due, oldest = await store.due_stats(now)
        self.due.set(due)
        self.oldest_due_age.set(max(0.0, now - oldest) if oldest is not None else 0)
        self.disabled.set(await store.count_disabled())
        self.blocked.set(await store.count_blocked())
