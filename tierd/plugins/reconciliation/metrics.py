"""Prometheus metrics of the reconciliation module (on the daemon's /metrics)."""

from __future__ import annotations

import prometheus_client


class Metrics:
    def __init__(self, registry):
        self.lines_imported = prometheus_client.Counter(
            "tierd_reconciliation_statement_lines_imported", "New statement lines stored by imports",
            ["format"], registry=registry)
        self.duplicates = prometheus_client.Counter(
            "tierd_reconciliation_statement_lines_duplicate", "Statement lines skipped as already imported",
            registry=registry)
        self.matches = prometheus_client.Counter(
            "tierd_reconciliation_matches", "Matches made automatically, by rule", ["rule"], registry=registry)
        self.run_seconds = prometheus_client.Histogram(
            "tierd_reconciliation_run_seconds", "Duration of reconciliation runs",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=registry)


def install(daemon) -> None:
    # One set per daemon (tests run several daemons in one process).
    daemon.state["reconciliation.metrics"] = Metrics(daemon.metrics)


def of(daemon) -> Metrics | None:
    """The daemon's metrics, or None (a daemon started without this module's startup)."""
    state = getattr(daemon, "state", None)
    return state.get("reconciliation.metrics") if state is not None else None
