"""The webhook tables, as numbered migrations (never edit a released one: append).

Three tables: endpoints (the subscriptions), deliveries (one per event and
endpoint; a pending row with a ``due_at`` *is* the scheduled retry, so
retries survive restarts) and attempts (the history).
"""

from __future__ import annotations

MIGRATIONS = [
    # 1: endpoints, deliveries, attempts.
    """
    CREATE TABLE webhook_endpoints (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        url TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        event_types TEXT NOT NULL DEFAULT '[]',
        headers TEXT NOT NULL DEFAULT '{}',
        metadata TEXT NOT NULL DEFAULT '{}',
        rate_limit REAL,
        enabled INTEGER NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        disabled_at REAL,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_secret_until REAL,
        failing_since REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints(tenant_id, created_at);
    CREATE TABLE webhook_deliveries (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at REAL,
        claimed_at REAL,
        created_at REAL NOT NULL,
        last_attempt_at REAL,
        last_status_code INTEGER,
        last_error TEXT,
        finished_at REAL,
        UNIQUE (endpoint_id, event_id)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(endpoint_id, due_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_due_all ON webhook_deliveries(due_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_inflight ON webhook_deliveries(status) WHERE status = 'inflight';
    CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, seq);
    CREATE INDEX webhook_deliveries_created ON webhook_deliveries(created_at);
    CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        delivery_seq INTEGER NOT NULL,
        tenant_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        attempted_at REAL NOT NULL,
        status_code INTEGER,
        latency_ms REAL,
        outcome TEXT NOT NULL,
        error TEXT,
        response_body TEXT
    );
    CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_seq);
    CREATE INDEX webhook_attempts_time ON webhook_attempts(attempted_at);
    """,
    # 2: fewer round trips on the hot paths. A claim marks its rows with a
    # claim id (one UPDATE, then one SELECT of that claim); an attempt row
    # carries the delivery's next state and a trigger applies it, so recording
    # a batch of results is one INSERT statement (atomic on its own).
    """
    ALTER TABLE webhook_deliveries ADD COLUMN claim_id INTEGER;
    ALTER TABLE webhook_attempts ADD COLUMN next_status TEXT;
    ALTER TABLE webhook_attempts ADD COLUMN next_due_at REAL;
    CREATE TRIGGER webhook_attempt_applied AFTER INSERT ON webhook_attempts
    WHEN NEW.next_status IS NOT NULL
    BEGIN
        UPDATE webhook_deliveries SET status=NEW.next_status, due_at=NEW.next_due_at, claimed_at=NULL,
            claim_id=NULL, attempts=attempts+1, last_attempt_at=NEW.attempted_at,
            last_status_code=NEW.status_code, last_error=NEW.error,
            finished_at=CASE WHEN NEW.next_status IN ('succeeded', 'failed') THEN NEW.attempted_at END
        WHERE seq=NEW.delivery_seq;
        -- The failure window of an endpoint starts at its first failure after its last success.
        UPDATE webhook_endpoints SET failing_since=NULL
        WHERE id=NEW.endpoint_id AND NEW.outcome='success' AND failing_since IS NOT NULL;
        UPDATE webhook_endpoints SET failing_since=NEW.attempted_at
        WHERE id=NEW.endpoint_id AND NEW.outcome!='success' AND failing_since IS NULL;
    END;
    """,
]
