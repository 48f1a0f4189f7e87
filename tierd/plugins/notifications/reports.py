"""What notifications offers to reports: its source and the report it ships."""

from __future__ import annotations

from tierd.core.registry import Column, ReportDefinition, ReportSource

MESSAGES = ReportSource(
    name="notifications.messages",
    description="One row per notification: an event for one route and channel, a digest, a test or manual send",
    sql="""SELECT n.tenant_id AS tenant, n.id AS notification_id, n.kind AS kind, n.event_id AS event_id,
        n.event_type AS event_type, n.route AS route, n.channel AS channel, n.status AS status, n.reason AS reason,
        n.severity AS severity, n.subject AS subject, n.event_count AS event_count, n.attempts AS attempts,
        n.last_error AS last_error, n.digest_id AS digest_id, n.created_at AS created_at, n.sent_at AS sent_at,
        CASE WHEN n.status = 'pending' THEN n.next_attempt_at END AS next_attempt_at
    FROM notifications n""",
    columns=(
        Column("notification_id", "text", "The notification's id"),
        Column("kind", "text", "event, digest, test or manual"),
        Column("event_id", "text", "The event it is about"),
        Column("event_type", "text", "The event's type"),
        Column("route", "text", "The route that matched"),
        Column("channel", "text", "The channel it goes through"),
        Column(
            "status",
            "text",
            "pending, delivered, failed, muted, throttled, grouped (waiting in a group) or digested",
        ),
        Column("reason", "text", "Why muted or throttled"),
        Column("severity", "text", "info, warning, error or critical"),
        Column("subject", "text", "Its subject"),
        Column("event_count", "integer", "Events it carries (a digest carries many)"),
        Column("attempts", "integer", "Send attempts made"),
        Column("last_error", "text", "Error of the last attempt"),
        Column("digest_id", "text", "The digest that carried it (digested ones)"),
        Column("created_at", "instant", "When it was made"),
        Column("sent_at", "instant", "When it was delivered"),
        Column("next_attempt_at", "instant", "When it is tried next (pending ones)"),
    ),
)

SOURCES = (MESSAGES,)

NOTIFICATION_ACTIVITY = ReportDefinition(
    name="notification_activity",
    spec={
        "title": "Notification activity per channel and route",
        "description": "Notifications made in the period, per channel and route, by what became of them",
        "source": "notifications.messages",
        "parameters": {
            "from": {"type": "date", "default": "last_7_days", "description": "First day"},
            "to": {"type": "date", "default": "today", "description": "Last day (included)"},
            "channel": {"type": "text", "description": "Only this channel"},
            "route": {"type": "text", "description": "Only this route"},
        },
        "filters": ["created_at >= :from", "created_at <= :to", "channel = :channel", "route = :route"],
        "columns": [
            "channel",
            "route",
            {"name": "notifications", "expr": "count()", "description": "Notifications made"},
            {"name": "sent", "expr": "count(status = 'delivered')", "description": "Delivered"},
            {"name": "failed", "expr": "count(status = 'failed')", "description": "Gave up"},
            {"name": "muted", "expr": "count(status = 'muted')", "description": "Silenced"},
            {"name": "throttled", "expr": "count(status = 'throttled')", "description": "Held back by throttling"},
            {"name": "digested", "expr": "count(status = 'digested')", "description": "Sent as part of a digest"},
            {"name": "waiting", "expr": "count(status in ('pending', 'grouped'))", "description": "Not sent yet"},
            {"name": "retried", "expr": "count(attempts > 1)", "description": "Needed more than one attempt"},
        ],
        "group_by": ["channel", "route"],
        "order_by": ["channel", "route"],
        "chart": {"type": "bar", "x": "channel", "y": ["sent", "failed", "muted"]},
    },
)

REPORTS = (NOTIFICATION_ACTIVITY,)
