"""What webhooks offers to reports: its sources (typed columns over its own
tables) and the reports it ships, written as builder definitions."""

from __future__ import annotations

from tierd.core.registry import Column, ReportDefinition, ReportSource

#: An endpoint's state as people read it.
_STATE = "CASE WHEN e.enabled = 0 THEN 'disabled' WHEN e.failing_since IS NOT NULL THEN 'failing' ELSE 'healthy' END"

DELIVERIES = ReportSource(
    name="webhooks.deliveries",
    description="One row per delivery (an event for one endpoint), with its endpoint",
    # Through the endpoint row, as every read of deliveries: a deleted endpoint's history
    # (being purged in the background) is not shown.
    sql=f"""SELECT d.tenant_id AS tenant, d.id AS delivery_id, d.endpoint_id AS endpoint_id,
        e.url AS endpoint_url, e.description AS endpoint_description, {_STATE} AS endpoint_state,
        e.failing_since AS endpoint_failing_since, d.event_id AS event_id, d.event_type AS event_type,
        d.status AS status, d.attempts AS attempts, d.created_at AS created_at,
        d.last_attempt_at AS last_attempt_at, d.last_status_code AS last_status_code, d.last_error AS last_error,
        d.finished_at AS finished_at, CASE WHEN d.status = 'pending' THEN d.due_at END AS next_attempt_at,
        CAST(ROUND(la.latency_ms) AS INTEGER) AS last_latency_ms
    FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
    -- The last attempt: one seek of (delivery_seq) each, and none when no column of it is read.
    LEFT JOIN webhook_attempts la
        ON la.id = (SELECT MAX(a.id) FROM webhook_attempts a WHERE a.delivery_seq = d.seq)""",
    columns=(
        Column("delivery_id", "text", "The delivery's id"),
        Column("endpoint_id", "text", "The endpoint it goes to"),
        Column("endpoint_url", "text", "The endpoint's URL"),
        Column("endpoint_description", "text", "The endpoint's description"),
        Column("endpoint_state", "text", "The endpoint now: healthy, failing or disabled"),
        Column(
            "endpoint_failing_since",
            "instant",
            "Since when the endpoint fails (its first failure after its last success)",
        ),
        Column("event_id", "text", "The event delivered"),
        Column("event_type", "text", "The event's type"),
        Column("status", "text", "pending, inflight, succeeded or failed (gave up)"),
        Column("attempts", "integer", "Attempts made so far"),
        Column("created_at", "instant", "When the event was accepted"),
        Column("last_attempt_at", "instant", "When it was last tried"),
        Column("last_status_code", "integer", "HTTP status of the last attempt (empty: no answer)"),
        Column("last_error", "text", "Error of the last attempt"),
        Column("finished_at", "instant", "When it succeeded or gave up"),
        Column("next_attempt_at", "instant", "When it is tried next (pending ones)"),
        Column("last_latency_ms", "integer", "Time the last attempt took, in milliseconds"),
    ),
)

ATTEMPTS = ReportSource(
    name="webhooks.attempts",
    description="One row per attempt to deliver (an HTTP request), with its delivery",
    sql="""SELECT a.tenant_id AS tenant, a.id AS attempt_id, d.id AS delivery_id, a.endpoint_id AS endpoint_id,
        d.event_id AS event_id, d.event_type AS event_type, a.attempted_at AS attempted_at,
        a.status_code AS status_code, CAST(ROUND(a.latency_ms) AS INTEGER) AS latency_ms, a.outcome AS outcome,
        CASE WHEN a.outcome = 'success' THEN 1 ELSE 0 END AS succeeded, a.error AS error
    FROM webhook_attempts a JOIN webhook_deliveries d ON d.seq = a.delivery_seq
    JOIN webhook_endpoints e ON e.id = a.endpoint_id""",
    columns=(
        Column("attempt_id", "integer", "The attempt's number in the history"),
        Column("delivery_id", "text", "The delivery tried"),
        Column("endpoint_id", "text", "The endpoint called"),
        Column("event_id", "text", "The event delivered"),
        Column("event_type", "text", "The event's type"),
        Column("attempted_at", "instant", "When the request was made"),
        Column("status_code", "integer", "HTTP status answered (empty: no answer)"),
        Column("latency_ms", "integer", "Time the request took, in milliseconds"),
        Column(
            "outcome",
            "text",
            "success, http_error, timeout, connect_error, refused, gone, internal_error or transform_error",
        ),
        Column("succeeded", "boolean", "The attempt delivered the event"),
        Column("error", "text", "What went wrong"),
    ),
)

ENDPOINTS = ReportSource(
    name="webhooks.endpoints",
    description="One row per endpoint, with its deliveries counted by status",
    sql=f"""SELECT e.tenant_id AS tenant, e.id AS endpoint_id, e.url AS url, e.description AS description,
        e.enabled AS enabled, {_STATE} AS state, e.disabled_reason AS disabled_reason, e.disabled_at AS disabled_at,
        e.failing_since AS failing_since, e.created_at AS created_at, COALESCE(c.pending, 0) AS pending,
        COALESCE(c.inflight, 0) AS inflight, COALESCE(c.succeeded, 0) AS succeeded, COALESCE(c.failed, 0) AS failed
    FROM webhook_endpoints e LEFT JOIN webhook_delivery_counts_now c ON c.endpoint_id = e.id""",
    columns=(
        Column("endpoint_id", "text", "The endpoint's id"),
        Column("url", "text", "Its URL"),
        Column("description", "text", "Its description"),
        Column("enabled", "boolean", "Deliveries are sent to it"),
        Column("state", "text", "healthy, failing or disabled"),
        Column("disabled_reason", "text", "Why it was disabled"),
        Column("disabled_at", "instant", "When it was disabled"),
        Column("failing_since", "instant", "Since when it fails"),
        Column("created_at", "instant", "When it was created"),
        Column("pending", "integer", "Deliveries waiting (first try or retry)"),
        Column("inflight", "integer", "Deliveries being sent"),
        Column("succeeded", "integer", "Deliveries that succeeded (kept by retention)"),
        Column("failed", "integer", "Deliveries that gave up (kept by retention)"),
    ),
)

SOURCES = (DELIVERIES, ATTEMPTS, ENDPOINTS)

_PERIOD = {
    "from": {"type": "date", "default": "last_7_days", "description": "First day (events accepted from then)"},
    "to": {"type": "date", "default": "today", "description": "Last day (included)"},
    "endpoint": {"type": "text", "description": "Only this endpoint (its id)"},
}
_PERIOD_FILTERS = ["created_at >= :from", "created_at <= :to", "endpoint_id = :endpoint"]

WEBHOOK_DELIVERIES = ReportDefinition(
    name="webhook_deliveries",
    spec={
        "title": "Webhook deliveries per endpoint",
        "description": (
            "Deliveries of the events accepted in the period, per endpoint: attempts, success rate, "
            "latency of the last attempt, failures, and the endpoint's state now"
        ),
        "source": "webhooks.deliveries",
        "parameters": _PERIOD,
        "filters": _PERIOD_FILTERS,
        "columns": [
            "endpoint_id",
            {"name": "url", "expr": "endpoint_url", "description": "The endpoint's URL"},
            {"name": "deliveries", "expr": "count()", "description": "Deliveries of the period's events"},
            {"name": "attempts", "expr": "sum(attempts)", "description": "Attempts made for them"},
            {"name": "succeeded", "expr": "count(status = 'succeeded')", "description": "Deliveries that succeeded"},
            {"name": "failed", "expr": "count(status = 'failed')", "description": "Deliveries that gave up"},
            {
                "name": "waiting",
                "expr": "count(status in ('pending', 'inflight'))",
                "description": "Deliveries not done yet (waiting for a first try or a retry)",
            },
            {
                "name": "failed_attempts",
                "expr": "sum(attempts) - count(status = 'succeeded')",
                "description": "Attempts that did not deliver",
            },
            {
                "name": "success_rate",
                "expr": "round(count(status = 'succeeded') / count(status in ('succeeded', 'failed')), 4)",
                "description": "Succeeded out of the finished deliveries (0 to 1)",
            },
            {
                "name": "latency_p50_ms",
                "expr": "p50(last_latency_ms)",
                "description": "Median latency (last attempt), ms",
            },
            {"name": "latency_p95_ms", "expr": "p95(last_latency_ms)", "description": "95th percentile latency, ms"},
            {"name": "state", "expr": "endpoint_state", "description": "The endpoint now: healthy, failing, disabled"},
            {"name": "failing_since", "expr": "endpoint_failing_since", "description": "Since when it fails"},
        ],
        "group_by": ["endpoint_id", "url", "state", "failing_since"],
        "order_by": ["endpoint_id"],
        "chart": {"type": "bar", "x": "endpoint_id", "y": ["succeeded", "failed"]},
    },
)

WEBHOOK_FAILURES = ReportDefinition(
    name="webhook_failures",
    spec={
        "title": "Failed webhook deliveries",
        "description": (
            "Each delivery of the period that gave up, or whose last attempt failed and that waits for a retry"
        ),
        "source": "webhooks.deliveries",
        "parameters": {
            **_PERIOD,
            "state": {"type": "text", "choices": ["gave_up", "retrying"], "description": "Only these"},
        },
        "filters": [
            *_PERIOD_FILTERS,
            "status = 'failed' or (status = 'pending' and attempts > 0)",
            "(case when status = 'failed' then 'gave_up' else 'retrying' end) = :state",
        ],
        "columns": [
            "delivery_id",
            "created_at",
            "event_id",
            "event_type",
            "endpoint_id",
            "endpoint_url",
            {
                "name": "state",
                "expr": "case when status = 'failed' then 'gave_up' else 'retrying' end",
                "description": "gave_up (no more tries) or retrying",
            },
            "attempts",
            "last_attempt_at",
            "last_status_code",
            "last_error",
            {"name": "next_retry_at", "expr": "next_attempt_at", "description": "When it is tried again"},
        ],
        "order_by": ["-last_attempt_at", "delivery_id"],
    },
)

REPORTS = (WEBHOOK_DELIVERIES, WEBHOOK_FAILURES)
