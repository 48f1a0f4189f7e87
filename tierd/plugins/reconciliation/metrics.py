"""Prometheus metrics of the reconciliation module (on the daemon's /metrics; one set per
service, so per daemon: ``ReconciliationService.of(daemon).metrics``)."""

from __future__ import annotations

import prometheus_client


class Metrics:
    def __init__(self, registry):
        self.lines_imported = prometheus_client.Counter(
            "tierd_reconciliation_statement_lines_imported",
            "New statement lines stored by imports",
            ["format"],
            registry=registry,
        )
        self.duplicates = prometheus_client.Counter(
            "tierd_reconciliation_statement_lines_duplicate",
            "Statement lines skipped as already imported",
            registry=registry,
        )
        self.matches = prometheus_client.Counter(
            "tierd_reconciliation_matches", "Matches made automatically, by rule", ["rule"], registry=registry
        )
        self.run_seconds = prometheus_client.Histogram(
            "tierd_reconciliation_run_seconds",
            "Duration of reconciliation runs",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
